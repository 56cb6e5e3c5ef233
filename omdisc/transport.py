"""Multicast sockets: one handler per interface, as wsdd does. No protocol knowledge here."""

from __future__ import annotations

import errno
import logging
import socket
import struct
from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address

from .protocol import MAX_DATAGRAM, IPAddress

log = logging.getLogger("omdisc.net")

IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux; absent from older Pythons
MAX_BATCH = 256  # datagrams drained per readiness event: bounded so timers still run under a flood
# Send errors that mean "this interface is down or lost its address for now": logged, not fatal.
TRANSIENT_SEND_ERRORS = {errno.ENETUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL, errno.ENODEV,
                         errno.EHOSTUNREACH, errno.ENOBUFS, errno.EPERM, errno.EAGAIN}


@dataclass(frozen=True)
class Endpoint:
    group: IPv4Address
    port: int
    ttl: int = 1


class MulticastHandler:
    """Receives and sends the group's datagrams on one interface only.

    IP_MULTICAST_ALL=0 plus a membership bound to this interface's index means the socket gets only
    what arrives on this interface, so the daemon always knows where a datagram came from.
    """

    def __init__(self, ifname: str, ifindex: int, endpoint: Endpoint, stats: Counter[str]) -> None:
        self.ifname = ifname
        self.ifindex = ifindex
        self.endpoint = endpoint
        self.stats = stats
        self.sock = self._open()

    def _open(self) -> socket.socket:
        ep = self.endpoint
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((str(ep.group), ep.port))
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            mreqn = struct.pack("=4s4si", ep.group.packed, bytes(4), self.ifindex)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ep.ttl)
            # Loop on: two daemons on one host (tests with -i lo) must hear each other; our own
            # datagrams are recognised by their origin and ignored.
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive_batch(self) -> list[tuple[bytes, IPAddress]]:
        """Every datagram waiting (up to MAX_BATCH), so a burst of joins is handled as one batch."""
        batch: list[tuple[bytes, IPAddress]] = []
        while len(batch) < MAX_BATCH:
            try:
                data, src = self.sock.recvfrom(MAX_DATAGRAM + 1)  # +1: oversize shows as oversize
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self.stats["receive_errors"] += 1
                log.debug("%s: receive failed: %s", self.ifname, e.strerror)
                break
            batch.append((data, ip_address(src[0])))
        return batch

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendto(data, (str(self.endpoint.group), self.endpoint.port))
        except OSError as e:
            self.stats["send_errors"] += 1
            level = logging.DEBUG if e.errno in TRANSIENT_SEND_ERRORS else logging.WARNING
            log.log(level, "%s: send failed: %s", self.ifname, e.strerror or e)
            return False
        return True

    def close(self) -> None:
        self.sock.close()
