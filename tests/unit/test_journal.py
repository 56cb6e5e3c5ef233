"""What omdiscd sends to journald, read back by a socket standing in for journald: the native
protocol's fields, a multi-line message whole, one too big for a datagram through a memfd."""

from __future__ import annotations

import array
import logging
import os
import socket
import struct
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from omdisc import events
from omdisc.journal import JournalHandler


def parse(payload: bytes) -> dict[str, str]:
    """journald's side of the native protocol: NAME=value lines, or NAME, a 64-bit length, the value."""
    fields, pos = {}, 0
    while pos < len(payload):
        end = payload.index(b"\n", pos)
        line = payload[pos:end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            pos = end + 1
        else:
            name, (size,) = line, struct.unpack_from("<Q", payload, end + 1)
            value = payload[end + 9:end + 9 + size]
            assert payload[end + 9 + size:end + 10 + size] == b"\n"
            pos = end + 10 + size
        fields[name.decode()] = value.decode()
    return fields


class FakeJournald:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(5)

    def receive(self) -> dict[str, str]:
        fds = array.array("i")
        data, anc, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(fds.itemsize))
        for level, kind, cmsg in anc:
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
                fds.frombytes(cmsg[:fds.itemsize])
        if fds:  # a record too big for one datagram: the whole of it in the memfd, from its start
            assert not data
            data = os.pread(fds[0], os.fstat(fds[0]).st_size, 0)
            os.close(fds[0])
        return parse(data)


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[tuple[FakeJournald, logging.Logger]]:
    server = FakeJournald(tmp_path / "socket")
    handler = JournalHandler({"OMDISC_NODE_ID": "7"}, path=str(server.path))
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("omdisc.membership")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield server, logger
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)
        handler.close()
        server.sock.close()


def test_an_event_arrives_with_the_fields_journalctl_finds_it_by(journald: tuple[FakeJournald, logging.Logger]) -> None:
    server, logger = journald
    events.log_peer(logger, events.JOIN, "node #%d %s joined", 12, ip_address("198.18.0.12"), level=logging.WARNING)
    record = server.receive()
    assert record["MESSAGE"] == "node #12 198.18.0.12 joined"
    assert record["MESSAGE_ID"] == events.JOIN and record["OMDISC_PEER"] == "198.18.0.12"
    assert record["OMDISC_PEER_ID"] == "12" and record["OMDISC_NODE_ID"] == "7"
    assert record["PRIORITY"] == "4" and record["SYSLOG_IDENTIFIER"] == "omdiscd"
    assert record["OMDISC_CATEGORY"] == "membership" and record["CODE_FUNC"] == "log_peer"
    assert record["CODE_FILE"].endswith("events.py") and record["CODE_LINE"].isdigit()


def test_a_traceback_arrives_whole(journald: tuple[FakeJournald, logging.Logger]) -> None:
    server, logger = journald
    try:
        raise ValueError("line one\nline two")
    except ValueError:
        logger.error("it broke", exc_info=True)
    message = server.receive()["MESSAGE"]
    assert message.startswith("it broke\nTraceback") and message.endswith("ValueError: line one\nline two")


def test_a_record_too_big_for_a_datagram_arrives_through_a_memfd(journald: tuple[FakeJournald, logging.Logger]) -> None:
    server, logger = journald
    big = "x" * 400_000 + "\nthe end"  # past the default socket buffer (212,992 bytes)
    logger.info("%s", big)
    assert server.receive()["MESSAGE"] == big
