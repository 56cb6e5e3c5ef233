"""Send test datagrams to the omdisc group from inside a lab namespace.

  python -m tests.lab.inject fuzz IFACE COUNT      random datagrams that omdisc must reject
  python -m tests.lab.inject send IFACE FILE       the datagrams in FILE (one hex string a line), paced
  python -m tests.lab.inject capture IFACE FILE    what arrives on the group for --seconds, as hex lines
  python -m tests.lab.inject flood IFACE COUNT     COUNT hostile datagrams from --self: made-up nodes
                                                   (each a fresh id) in ANNOUNCEs and SNAPSHOTs, and a
                                                   JOIN of its own every 10,000, at --rate
  python -m tests.lab.inject announce IFACE COUNT  valid ANNOUNCEs from COUNT made-up nodes, in one burst
                                                   each from an address of its own (added to IFACE:
                                                   a host speaks for one node), --repeat times
  python -m tests.lab.inject relay IFACE OUT       for --seconds, what --origin multicasts and IFACE hears,
                                                   sent once on interface OUT as its originator sent it:
                                                   hops 0, no trailer but its AUTH (a host without the key
                                                   carrying signed datagrams to another network)
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import subprocess
import time
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address, ip_address

from omdisc.core import protocol
from omdisc.core.config import DEFAULT_GROUP
from omdisc.core.protocol import PROBE_TYPES, TRAILER_AUTH, Message, MsgType, body_end, tlv, with_hops


def _valid(rng: random.Random) -> bytes:
    addr = ip_address(f"198.19.{rng.randrange(1, 250)}.{rng.randrange(1, 250)}")
    return protocol.encode(Message(MsgType.ANNOUNCE, rng.randrange(1, 65535), 1, 1, (addr,)))


def malformed(rng: random.Random) -> bytes:
    """One datagram that decode() rejects: noise, or a valid message broken in one of many ways."""
    while True:
        kind = rng.randrange(5)
        good = _valid(rng)
        if kind == 0:
            data = rng.randbytes(rng.randrange(0, 1600))
        elif kind == 1:
            data = good[: rng.randrange(0, len(good))]
        elif kind == 2:
            data = good + rng.randbytes(rng.randrange(1, 64)) if rng.random() < 0.5 else good + bytes(1500)
        elif kind == 3:
            pos = rng.randrange(4, len(good))
            data = good[:pos] + bytes([rng.randrange(256)]) + good[pos + 1 :]
        else:
            data = protocol.MAGIC + rng.randbytes(rng.randrange(0, 200))
        try:
            protocol.decode(data)
        except protocol.DecodeError:
            return data


def open_socket(iface: str, source: IPv4Address | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if source is not None:
        s.bind((str(source), 0))
    mreqn = struct.pack("=4s4si", bytes(4), bytes(4), socket.if_nametoindex(iface))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
    return s


def made_up(i: int) -> IPv4Address:
    return IPv4Address(f"198.19.{200 + i // 250}.{i % 250 + 1}")


def add_addresses(iface: str, addrs: list[IPv4Address]) -> None:
    """Give this host the made-up nodes' addresses, so each sends from its own (as a real one does)."""
    batch = "".join(f"addr replace {a}/32 dev {iface}\n" for a in addrs)
    subprocess.run(["ip", "-b", "-"], input=batch, text=True, check=True)


class SpoofingSocket:
    """Sends UDP from an address that is not ours (a raw socket, IP header written here): what a host
    that forges IP sources does, which only the cluster key stops."""

    def __init__(self, iface: str, source: IPv4Address, port: int) -> None:
        self.source = source
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())

    def sendto(self, data: bytes, dest: tuple[str, int]) -> None:
        udp = struct.pack("!HHHH", self.port, dest[1], 8 + len(data), 0) + data
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 1, socket.IPPROTO_UDP, 0,
                         self.source.packed, IPv4Address(dest[0]).packed)
        self.sock.sendto(ip + udp, (dest[0], 0))


def send_file(sock: socket.socket | SpoofingSocket, dest: tuple[str, int], path: str, rate: float) -> None:
    """At `rate` datagrams a second (0: as fast as it goes)."""
    with open(path) as f:
        send_all(sock, dest, (bytes.fromhex(line.strip()) for line in f), rate)


def listen(iface: str, port: int) -> socket.socket:
    """A socket that gets what arrives on the group on `iface` only."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((str(DEFAULT_GROUP), port))
    mreqn = struct.pack("=4s4si", DEFAULT_GROUP.packed, bytes(4), socket.if_nametoindex(iface))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
    return s


def received(s: socket.socket, seconds: float) -> Iterator[bytes]:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            yield s.recv(2048)
        except TimeoutError:
            return


def capture(iface: str, port: int, path: str, seconds: float) -> None:
    with open(path, "w") as out:
        for data in received(listen(iface, port), seconds):
            out.write(data.hex() + "\n")
            out.flush()


def as_sent_directly(data: bytes) -> bytes:
    """A (forwarded) signed datagram as its originator sent it: hops 0, and of its trailer only the
    originator's AUTH, which does not cover hops (a gateway's VIA and FORWARD_AUTH go)."""
    auth = [v for t, v in protocol.decode(data).trailer if t == TRAILER_AUTH]
    return with_hops(data[: body_end(data)], 0) + b"".join(tlv(TRAILER_AUTH, v) for v in auth)


def relay(iface: str, out: str, origin: str, port: int, seconds: float) -> None:
    sender, sent = open_socket(out), set()
    for data in received(listen(iface, port), seconds):
        try:
            msg = protocol.decode(data)
        except protocol.DecodeError:
            continue
        again = as_sent_directly(data)
        if str(msg.origin) == origin and msg.type not in PROBE_TYPES and again not in sent:
            sent.add(again)
            sender.sendto(again, (str(DEFAULT_GROUP), port))


def flood(self_addr: IPv4Address, count: int, now_us: int) -> Iterator[bytes]:
    """What a host without the key can send to grow the membership: fresh made-up nodes, each
    ANNOUNCE listing the sender's own address (so its source checks out), and SNAPSHOTs of 50
    made-up members answering a JOIN of its own (so they answer a JOIN the receivers saw)."""
    base = int(IPv4Address("198.19.0.0"))
    for i in range(count):
        if i % 10_000 == 0:
            yield protocol.encode(Message(MsgType.ANNOUNCE, 66, now_us + i, 1, (self_addr,), protocol.FLAG_JOIN))
        if i % 100 == 50:
            life = now_us + i - i % 10_000
            recs = tuple(protocol.MemberRecord(3000 + (i + k) % 60000, now_us, 0,
                                               (IPv4Address(base + 32768 + (i * 50 + k) % 32768),))
                         for k in range(50))
            snap = protocol.Snapshot(self_addr, life, 1, 1, recs)
            yield protocol.encode(Message(MsgType.SNAPSHOT, 66, life, 2 + i, (self_addr,), snapshot=snap))
        else:
            made = IPv4Address(base + 1 + i % 32767)
            yield protocol.encode(Message(MsgType.ANNOUNCE, 1000 + i % 60000, now_us, 1, (made, self_addr)))


def send_all(sock: socket.socket | SpoofingSocket, dest: tuple[str, int], datagrams: Iterable[bytes],
             rate: float) -> None:
    start = time.monotonic()
    every = 1 if rate < 100 else 20  # a slow rate is kept datagram by datagram, a fast one in bursts
    for i, data in enumerate(datagrams):
        sock.sendto(data, dest)
        if rate and i % every == every - 1 and (ahead := start + (i + 1) / rate - time.monotonic()) > 0:
            time.sleep(ahead)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["fuzz", "announce", "send", "capture", "flood", "relay"])
    p.add_argument("iface")
    p.add_argument("what", help="COUNT, or FILE for send and capture, or the interface to relay to")
    p.add_argument("--port", type=int, default=7727)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1, help="send the burst again (seq + 1): what was dropped is resent")
    p.add_argument("--pause", type=float, default=0.3, help="seconds between repeats")
    p.add_argument("--rate", type=float, default=20000, help="send: datagrams a second (0: unpaced)")
    p.add_argument("--seconds", type=float, default=5.0, help="capture: for this long")
    p.add_argument("--spoof", metavar="ADDR", help="send: forge this IPv4 source address (raw socket)")
    p.add_argument("--self", metavar="ADDR", help="flood: this host's own address")
    p.add_argument("--origin", metavar="ADDR", help="relay: what this node sends")
    a = p.parse_args()
    rng = random.Random(a.seed)
    s = open_socket(a.iface)
    dest = (str(DEFAULT_GROUP), a.port)
    if a.mode == "send":
        send_file(SpoofingSocket(a.iface, IPv4Address(a.spoof), a.port) if a.spoof else s, dest, a.what, a.rate)
    elif a.mode == "flood":
        send_all(s, dest, flood(IPv4Address(a.self), int(a.what), time.time_ns() // 1000), a.rate)
    elif a.mode == "capture":
        capture(a.iface, a.port, a.what, a.seconds)
    elif a.mode == "relay":
        relay(a.iface, a.what, a.origin, a.port, a.seconds)
    elif a.mode == "fuzz":
        for i in range(int(a.what)):
            s.sendto(malformed(rng), dest)
            if i % 50 == 49:
                time.sleep(0.002)  # paced: the receiver's socket buffer is not what is tested here
    else:
        addrs = [made_up(i) for i in range(int(a.what))]
        add_addresses(a.iface, addrs)
        socks = [open_socket(a.iface, addr) for addr in addrs]
        for seq in range(1, a.repeat + 1):
            # ids two apart: no two nodes share a range line, each is an entry of its own
            for i, (addr, sock) in enumerate(zip(addrs, socks, strict=True)):
                sock.sendto(protocol.encode(Message(MsgType.ANNOUNCE, 1000 + 2 * i, 1, seq, (addr,))), dest)
            if seq < a.repeat:
                time.sleep(a.pause)


if __name__ == "__main__":
    main()
