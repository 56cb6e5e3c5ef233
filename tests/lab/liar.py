"""A hostile host for the failure-detection labs (docs/protocol.md, "Failure detection" and "Threats"):
it sends only from its own addresses, with no cluster key, and joins as a member like any host can
(binds the group port, ANNOUNCEs itself with FLAG_PROBES and FLAG_ROUNDS, answers the PINGs naming
it), then misbehaves in one way.

  python -m tests.lab.liar MODE IFACE ADDR [ADDR ...] [--status FILE] [--about NET] [--targets ADDR ...]

  lying-helper         answers every PING_REQ with its own ACK for the subject ("it answered me")
  ring-squatter        one member per ADDR (each announcing from its own address), placed just below
                       a victim on the address-ordered ring: they never probe anyone
  stranger-suspects    never announces; multicasts 4 SUSPECTs a second about every node whose life it
                       heard (announced, or in the ACK to its PING: --targets), number 0
  wrong-network-judge  answers every SUSPECT about a node in --about NET with a DEAD about it

It runs until SIGTERM; --status FILE holds what it learnt and sent (JSON, rewritten as it goes).
Tests start it in a lab node with Attacker.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_address
from pathlib import Path
from typing import Any

from omdisc.core.config import DEFAULT_GROUP
from omdisc.core.nodeid import node_id_for
from omdisc.core.protocol import (
    FLAG_PROBES,
    FLAG_ROUNDS,
    DecodeError,
    IPAddress,
    Message,
    MsgType,
    Subject,
    decode,
    encode,
)
from tests.lab.netlab import REPO, Node

MODES = ("lying-helper", "ring-squatter", "stranger-suspects", "wrong-network-judge")
ANNOUNCE_EVERY = 1.0  # seconds: as often as the labs' daemons announce, so it is never the one to expire
SUSPECT_EVERY = 0.25  # the stranger's rounds: 4 SUSPECTs a second about each node
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)


@dataclass
class Identity:
    """One member the attacker speaks for: one address (its UDP source too), its life, its seqs."""

    address: IPv4Address
    incarnation: int
    seq: int = 0

    def message(self, kind: MsgType, subject: Subject | None = None) -> bytes:
        """The next datagram of this identity: as today's daemon sends it (FLAG_PROBES and FLAG_ROUNDS on all)."""
        self.seq += 1
        return encode(Message(kind, node_id_for(self.address), self.incarnation, self.seq, (self.address,),
                              FLAG_PROBES | FLAG_ROUNDS, subject=subject))


Multicast = tuple[Identity, bytes]  # sent to the group from this identity's address


class Liar:
    """What the attacker sends in answer to what it hears, and on its own clock. Pure: the sockets
    and the clock are run()'s."""

    def __init__(self, mode: str, identities: list[Identity], about: IPv4Network | None = None,
                 targets: list[IPv4Address] | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.identities = identities
        self.about = about
        self.targets = targets or []  # the stranger asks these their lives (a PING: anybody gets the ACK)
        self._asked = 0.0
        self.lives: dict[IPAddress, int] = {}  # what the stranger heard: each node's announced life
        self.sent: Counter[str] = Counter()
        self._next = 0.0

    @property
    def member(self) -> bool:
        return self.mode != "stranger-suspects"

    def mine(self, address: IPAddress) -> Identity | None:
        return next((i for i in self.identities if i.address == address), None)

    def unicast(self, me: Identity, data: bytes) -> list[bytes]:
        """A datagram sent to `me`'s address: what goes back to its UDP source."""
        msg = _decoded(data)
        if msg is not None and msg.type is MsgType.ACK and not self.member:
            self.lives[msg.origin] = max(msg.incarnation, self.lives.get(msg.origin, 0))  # its header: its life
        if msg is None or msg.subject is None or not self.member:
            return []
        if msg.type is MsgType.PING and msg.subject.address == me.address:
            self.sent["ACK"] += 1  # alive: never suspected itself, so it stays a monitor and a helper
            return [me.message(MsgType.ACK, Subject(me.address, msg.subject.incarnation, msg.subject.number))]
        if msg.type is MsgType.PING_REQ and self.mode == "lying-helper":
            self.sent["lying ACK"] += 1  # without PINGing anyone: "the subject answered me"
            return [me.message(MsgType.ACK, msg.subject)]
        return []

    def multicast(self, data: bytes) -> list[Multicast]:
        """A datagram heard on the group (our own are not passed here)."""
        msg = _decoded(data)
        if msg is None:
            return []
        if msg.type is MsgType.ANNOUNCE:
            self.lives[msg.origin] = max(msg.incarnation, self.lives.get(msg.origin, 0))
        if msg.subject is None or msg.type not in (MsgType.SUSPECT, MsgType.DEAD) or not self.member:
            return []
        me = self.mine(msg.subject.address)
        if me is not None:  # as a real member does: announce ourselves, newer than what they named
            self.sent["ANNOUNCE"] += 1
            return [(me, me.message(MsgType.ANNOUNCE))]
        if (msg.type is MsgType.SUSPECT and self.mode == "wrong-network-judge" and self.about is not None
                and msg.subject.address in self.about):
            self.sent["DEAD"] += 1
            judge = self.identities[0]
            return [(judge, judge.message(MsgType.DEAD, msg.subject))]
        return []

    def asking(self, now: float) -> list[tuple[Identity, bytes, IPv4Address]]:
        """The stranger's PINGs, once a second, to the targets whose life it has not heard yet: nodes
        announce minutes apart, but answer a PING from anybody."""
        if self.member or now < self._asked:
            return []
        self._asked = now + 1.0
        me = self.identities[0]
        return [(me, me.message(MsgType.PING, Subject(t, 0, 1)), t) for t in self.targets if t not in self.lives]

    def due(self) -> float:
        return self._next

    def tick(self, now: float) -> list[Multicast]:
        """What is due at `now`: the members' ANNOUNCEs, or the stranger's round of SUSPECTs."""
        if now < self._next:
            return []
        if self.member:
            self._next = now + ANNOUNCE_EVERY
            self.sent["ANNOUNCE"] += len(self.identities)
            return [(i, i.message(MsgType.ANNOUNCE)) for i in self.identities]
        self._next = now + SUSPECT_EVERY
        me = self.identities[0]
        self.sent["SUSPECT"] += len(self.lives)
        return [(me, me.message(MsgType.SUSPECT, Subject(node, life, 0))) for node, life in sorted(self.lives.items())]

    def status(self) -> dict[str, object]:
        return {"mode": self.mode, "identities": [str(i.address) for i in self.identities],
                "lives": {str(a): life for a, life in self.lives.items()}, "sent": dict(self.sent)}


def _decoded(data: bytes) -> Message | None:
    try:
        return decode(data)
    except DecodeError:
        return None


# --- the sockets ------------------------------------------------------------------------------------


def group_socket(ifindex: int, port: int) -> socket.socket:
    """What arrives on the group on this interface only (as the daemon's own group socket)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((str(DEFAULT_GROUP), port))
    s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("=4s4si", DEFAULT_GROUP.packed, bytes(4),
                                                                          ifindex))
    return s


def identity_socket(address: IPv4Address, ifindex: int, port: int) -> socket.socket:
    """An identity's own: the PINGs and PING_REQs sent to its address come in here, and all it says goes
    out from here, so its UDP source is its address (one source, one node)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((str(address), port))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, struct.pack("=4s4si", bytes(4), bytes(4), ifindex))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    return s


class Status:
    """The status file, rewritten (renamed over) at most four times a second."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.written = 0.0

    def write(self, liar: Liar, now: float, force: bool = False) -> None:
        if self.path is None or (not force and now - self.written < 0.25):
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(liar.status()))
        os.replace(tmp, self.path)
        self.written = now


def run(liar: Liar, iface: str, port: int, status: Status) -> None:
    ifindex = socket.if_nametoindex(iface)
    group = (str(DEFAULT_GROUP), port)
    sel = selectors.DefaultSelector()
    sel.register(group_socket(ifindex, port), selectors.EVENT_READ, None)
    socks = {i.address: identity_socket(i.address, ifindex, port) for i in liar.identities}
    for ident in liar.identities:
        sel.register(socks[ident.address], selectors.EVENT_READ, ident)
    print(f"{liar.mode} on {iface} as {', '.join(map(str, socks))}", flush=True)
    while True:
        now = time.monotonic()
        for ident, data in liar.tick(now):
            socks[ident.address].sendto(data, group)
        for ident, data, to in liar.asking(now):
            socks[ident.address].sendto(data, (str(to), port))
        for key, _ in sel.select(max(0.0, min(liar.due() - now, 0.25))):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            data, src = sock.recvfrom(2048)
            if key.data is not None:
                for reply in liar.unicast(key.data, data):
                    sock.sendto(reply, src)
            elif liar.mine(ip_address(src[0])) is None:
                for ident, out in liar.multicast(data):
                    socks[ident.address].sendto(out, group)
        status.write(liar, time.monotonic())


class Attacker:
    """This program in a lab node's namespace, started from the test's side: its status, and a stop
    that says whether it was still running (an attacker that died proves nothing)."""

    def __init__(self, node: Node, mode: str, addresses: list[str], about: str | None = None,
                 targets: list[str] | None = None) -> None:
        self.node = node
        self.status_file = node.lab.tmp / f"liar-{node.name}.json"
        self.log_file = node.lab.tmp / f"liar-{node.name}.log"
        extra = (["--about", about] if about else []) + (["--targets", *targets] if targets else [])
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", node.ns, sys.executable, "-m", "tests.lab.liar", mode, node.legs[0],
                 *addresses, "--status", str(self.status_file), *extra],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def sent(self) -> dict[str, int]:
        return dict(self.status().get("sent", {}))

    @property
    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self) -> bool:
        """SIGTERM; True when it was running until then."""
        running = self.proc.poll() is None
        if running:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        return running


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=MODES)
    p.add_argument("iface")
    p.add_argument("addresses", nargs="+", type=IPv4Address, help="its own addresses: one member each")
    p.add_argument("--port", type=int, default=7727)
    p.add_argument("--about", type=IPv4Network, help="wrong-network-judge: the network whose nodes it declares dead")
    p.add_argument("--status", type=Path, help="JSON: what it learnt and sent so far")
    p.add_argument("--targets", nargs="+", type=IPv4Address, default=[],
                   help="stranger-suspects: the nodes whose lives it asks by PING")
    a = p.parse_args()
    life = time.time_ns() // 1000  # microseconds, as a daemon's incarnation
    liar = Liar(a.mode, [Identity(addr, life) for addr in a.addresses], a.about, a.targets)
    status = Status(a.status)

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        run(liar, a.iface, a.port, status)
    finally:
        status.write(liar, time.monotonic(), force=True)
        print(f"sent: {dict(liar.sent)}", flush=True)


if __name__ == "__main__":
    main()
