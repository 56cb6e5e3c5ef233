"""Wire protocol, versions 1 and 2: bytes <-> messages. Pure; docs/protocol.md is the specification.

Decoding trusts nothing: every length is checked against what is really there, and any
mismatch raises DecodeError with a short reason that the caller counts.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address

from omdisc.core.records import field, record, replace

IPAddress = IPv4Address | IPv6Address
Order = tuple[int, int]  # (incarnation, seq): what a node says is newer when this is larger

MAGIC = b"OMDS"
VERSION = 1  # ANNOUNCE, LEAVE, SNAPSHOT: unchanged since version 1, so a version 1 node still reads them
PROBE_VERSION = 2  # the failure detector's messages (PING .. DEAD): a version 1 node drops them
MAX_DATAGRAM = 1400  # fits one Ethernet frame under IPv4 and IPv6 with room for a trailer
MAX_ADDRESSES = 16
MAX_HOPS = 8
MAX_NODE_ID = 0xFFFF  # openMosix node numbers are 16 bit

FLAG_JOIN = 0x01  # ANNOUNCE: the sender has just started and asks for a SNAPSHOT
FLAG_GATEWAY = 0x02  # the sender forwards announcements between networks
FLAG_PROBES = 0x04  # the sender speaks version 2: it answers probes and may be probed
FLAG_RESTART = 0x08  # ANNOUNCE: the sender is restarting (no LEAVE): its next life follows within seconds
FLAG_ROUNDS = 0x10  # the sender probes in rounds, the ring drawn anew each round (detection/ring.py)
NODE_FLAGS = FLAG_GATEWAY | FLAG_PROBES | FLAG_ROUNDS  # what a member is; JOIN is only what one message is

MEMBER_GATEWAY = 0x01
# The SNAPSHOT's sender reaches this member through a gateway or on another of its interfaces: it is
# not on the network the SNAPSHOT is sent to. Lets a receiver tell which gateway reaches whom.
MEMBER_INDIRECT = 0x02
MEMBER_PROBES = 0x04  # the member answers probes (FLAG_PROBES)
MEMBER_ROUNDS = 0x08  # the member probes in rounds (FLAG_ROUNDS)
MAX_PARTS = 255  # the `parts` byte: a SNAPSHOT never has more

TRAILER_AUTH = 1  # the originator's HMAC-SHA256 with the cluster key (auth.py)
TRAILER_VIA = 2  # set by a forwarding gateway: its primary address (the last gateway on the path)
TRAILER_FORWARD_AUTH = 3  # a forwarding gateway's HMAC over all it sends on (hops and VIA included)
TRAILER_RESERVE = 112  # room kept free in what we originate, for the trailers above

_HEADER = struct.Struct("!4sBBBBIQIHH")
HEADER_SIZE = _HEADER.size  # 28
_HOPS_OFFSET = 7
_MEMBER = struct.Struct("!IQIBB")
_SNAPSHOT = struct.Struct("!QBBH")
_TLV = struct.Struct("!BH")
_SUBJECT = struct.Struct("!QI")
_FAMILY_SIZE = {4: 4, 6: 16}
# family -> (size, class, shift, top bits of a multicast address): decoding tests the integer, not
# ipaddress's is_unspecified and is_multicast, which are slow and a SNAPSHOT has dozens of addresses
_FAMILY: dict[int, tuple[int, type[IPv4Address] | type[IPv6Address], int, int]] = {
    4: (4, IPv4Address, 28, 0xE),  # 224.0.0.0/4
    6: (16, IPv6Address, 120, 0xFF),  # ff00::/8
}


class MsgType(IntEnum):
    ANNOUNCE = 1
    LEAVE = 2
    SNAPSHOT = 3
    PING = 4  # unicast: are you alive? (subject: the receiver)
    ACK = 5  # unicast: the subject answered a PING (itself, or relayed by the helper a PING_REQ asked)
    PING_REQ = 6  # unicast: PING the subject for me, and relay its ACK
    SUSPECT = 7  # multicast: the subject did not answer probes; it refutes by announcing itself
    DEAD = 8  # multicast: the subject stayed silent while suspected; it is out of the map


def member_flags(node_flags: int) -> int:
    """A member's flags as a SNAPSHOT record says them (GATEWAY is bit 0 there, bit 1 in a header)."""
    return ((MEMBER_GATEWAY if node_flags & FLAG_GATEWAY else 0)
            | (MEMBER_PROBES if node_flags & FLAG_PROBES else 0)
            | (MEMBER_ROUNDS if node_flags & FLAG_ROUNDS else 0))


def node_flags(record_flags: int) -> int:
    """What a SNAPSHOT record's flags tell of the node itself (INDIRECT is about the path, not it)."""
    return ((FLAG_GATEWAY if record_flags & MEMBER_GATEWAY else 0)
            | (FLAG_PROBES if record_flags & MEMBER_PROBES else 0)
            | (FLAG_ROUNDS if record_flags & MEMBER_ROUNDS else 0))


PROBE_TYPES = frozenset({MsgType.PING, MsgType.ACK, MsgType.PING_REQ})  # unicast, never forwarded
SUBJECT_TYPES = PROBE_TYPES | {MsgType.SUSPECT, MsgType.DEAD}  # the version 2 types: a subject in the body


def version_of(kind: MsgType) -> int:
    return PROBE_VERSION if kind in SUBJECT_TYPES else VERSION


class DecodeError(ValueError):
    """A datagram that is not a valid omdisc message (VERSION or PROBE_VERSION).

    `kind` is a fixed short reason (what the daemon counts); str() adds the detail.
    """

    def __init__(self, kind: str, detail: object = None) -> None:
        super().__init__(kind if detail is None else f"{kind}: {detail}")
        self.kind = kind


@record(frozen=True)
class MemberRecord:
    """One node as the sender of a SNAPSHOT knows it."""

    node_id: int
    incarnation: int
    age_ms: int  # how long ago the snapshot's sender last heard from this node
    addresses: tuple[IPAddress, ...]
    flags: int = 0


@record(frozen=True)
class Snapshot:
    """The answer to a JOIN: (part of) the sender's membership."""

    reply_to: IPAddress  # primary address of the joining node
    reply_to_incarnation: int
    part: int
    parts: int
    members: tuple[MemberRecord, ...]


@record(frozen=True)
class Subject:
    """What a version 2 message is about: a node (its primary address and the incarnation the
    sender knows), and a number: the probe's nonce (PING, ACK, PING_REQ) or the subject's last
    seq the sender heard (SUSPECT, DEAD)."""

    address: IPAddress
    incarnation: int
    number: int


@record(frozen=True)
class Message:
    """One datagram's content, decoded or to be encoded."""

    type: MsgType
    node_id: int
    incarnation: int
    seq: int
    addresses: tuple[IPAddress, ...]
    flags: int = 0
    hops: int = 0
    snapshot: Snapshot | None = None
    trailer: tuple[tuple[int, bytes], ...] = field(default=())
    subject: Subject | None = None

    @property
    def origin(self) -> IPAddress:
        """The originating node's primary address: its identity on the wire."""
        return self.addresses[0]

    @property
    def message_id(self) -> tuple[IPAddress, int, int]:
        """Unique per originated message; gateways use it to forward each message once."""
        return (self.origin, self.incarnation, self.seq)


# --- encoding -------------------------------------------------------------------------------


def _encode_address(addr: IPAddress) -> bytes:
    return bytes([addr.version]) + addr.packed


def _encode_addresses(addrs: tuple[IPAddress, ...]) -> bytes:
    if not 1 <= len(addrs) <= MAX_ADDRESSES:
        raise ValueError(f"a node has 1 to {MAX_ADDRESSES} addresses, not {len(addrs)}")
    return bytes([len(addrs)]) + b"".join(_encode_address(a) for a in addrs)


def _encode_member(m: MemberRecord) -> bytes:
    head = _MEMBER.pack(m.node_id, m.incarnation, min(m.age_ms, 0xFFFFFFFF), m.flags, len(m.addresses))
    return head + b"".join(_encode_address(a) for a in m.addresses)


def _encode_snapshot(s: Snapshot) -> bytes:
    head = _encode_address(s.reply_to) + _SNAPSHOT.pack(s.reply_to_incarnation, s.part, s.parts, len(s.members))
    return head + b"".join(_encode_member(m) for m in s.members)


def _encode_subject(s: Subject) -> bytes:
    return _encode_address(s.address) + _SUBJECT.pack(s.incarnation, s.number)


def encode(msg: Message) -> bytes:
    body = _encode_addresses(msg.addresses)
    if msg.type is MsgType.SNAPSHOT:
        if msg.snapshot is None:
            raise ValueError("a SNAPSHOT message needs its snapshot")
        body += _encode_snapshot(msg.snapshot)
    elif msg.type in SUBJECT_TYPES:
        if msg.subject is None:
            raise ValueError(f"a {msg.type.name} message needs its subject")
        body += _encode_subject(msg.subject)
    header = _HEADER.pack(
        MAGIC, version_of(msg.type), msg.type, msg.flags, msg.hops, msg.node_id, msg.incarnation, msg.seq, len(body), 0
    )
    trailer = b"".join(_TLV.pack(t, len(v)) + v for t, v in msg.trailer)
    data = header + body + trailer
    if len(data) > MAX_DATAGRAM:
        raise ValueError(f"message of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    return data


def tlv(kind: int, value: bytes) -> bytes:
    return _TLV.pack(kind, len(value)) + value


def body_end(data: bytes) -> int:
    """Where the trailer of a (decoded, so valid) datagram starts."""
    return HEADER_SIZE + int.from_bytes(data[HEADER_SIZE - 4 : HEADER_SIZE - 2], "big")


def with_hops(data: bytes, hops: int) -> bytes:
    """The same datagram with another hop count."""
    return data[:_HOPS_OFFSET] + bytes([hops]) + data[_HOPS_OFFSET + 1 :]


def forwarded(data: bytes, msg: Message, gateway: IPAddress) -> bytes | None:
    """What a gateway sends on: header and body as received (so a future HMAC over them still
    holds) with hops + 1, and the trailer with VIA set to this gateway. None when the VIA trailer
    would grow it past MAX_DATAGRAM: every receiver would drop it as oversized."""
    kept = [(t, v) for t, v in msg.trailer if t not in (TRAILER_VIA, TRAILER_FORWARD_AUTH)]
    trailer = b"".join(tlv(t, v) for t, v in [*kept, (TRAILER_VIA, _encode_address(gateway))])
    out = with_hops(data[:body_end(data)], msg.hops + 1) + trailer
    return out if len(out) <= MAX_DATAGRAM else None


def via(msg: Message) -> IPAddress | None:
    """The gateway that forwarded this message last, if any."""
    for kind, value in msg.trailer:
        if kind == TRAILER_VIA:
            r = _Reader(value, 0, len(value))
            try:
                return r.address()
            except DecodeError:
                return None
    return None


def member_size(m: MemberRecord) -> int:
    return _MEMBER.size + sum(1 + _FAMILY_SIZE[a.version] for a in m.addresses)


def snapshot_messages(
    base: Message, reply_to: IPAddress, reply_to_incarnation: int, members: list[MemberRecord]
) -> list[Message]:
    """Split a membership into as few SNAPSHOT messages as fit MAX_DATAGRAM each, at most
    MAX_PARTS of them: members past what that holds are left out (the caller counts them), so a
    SNAPSHOT is always encodable whatever the membership.

    `base` gives the sender fields; each part takes the next sequence number.
    """
    fixed = HEADER_SIZE + len(_encode_addresses(base.addresses)) + 1 + reply_to.max_prefixlen // 8
    room = MAX_DATAGRAM - TRAILER_RESERVE - fixed - _SNAPSHOT.size
    chunks: list[list[MemberRecord]] = [[]]
    used = 0
    for m in members:
        size = member_size(m)
        if used + size > room and chunks[-1]:
            if len(chunks) == MAX_PARTS:
                break
            chunks.append([])
            used = 0
        chunks[-1].append(m)
        used += size
    parts = len(chunks)
    return [
        replace(
            base,
            type=MsgType.SNAPSHOT,
            seq=base.seq + i,
            snapshot=Snapshot(reply_to, reply_to_incarnation, i + 1, parts, tuple(chunk)),
        )
        for i, chunk in enumerate(chunks)
    ]


# --- decoding -------------------------------------------------------------------------------


class _Reader:
    """Bounds-checked cursor over a datagram."""

    def __init__(self, data: bytes, start: int, end: int) -> None:
        self.data = data
        self.pos = start
        self.end = end

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > self.end:
            raise DecodeError("truncated", what)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, st: struct.Struct, what: str) -> tuple[int, ...]:
        return st.unpack(self.take(st.size, what))

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def address(self) -> IPAddress:
        family = self.byte("address family")
        f = _FAMILY.get(family)
        if f is None:
            raise DecodeError("bad address family", family)
        size, make, shift, multicast = f
        value = int.from_bytes(self.take(size, "address"), "big")
        addr = make(value)
        if value == 0 or value >> shift == multicast:  # unspecified or multicast: no node's address
            raise DecodeError("bad node address", addr)
        return addr

    def addresses(self, count: int) -> tuple[IPAddress, ...]:
        if not 1 <= count <= MAX_ADDRESSES:
            raise DecodeError("bad address count", count)
        return tuple(self.address() for _ in range(count))


def _check_node_id(node_id: int) -> None:
    if node_id > MAX_NODE_ID:
        raise DecodeError("node id out of range", node_id)


def _decode_member(r: _Reader) -> MemberRecord:
    node_id, incarnation, age_ms, flags, count = r.unpack(_MEMBER, "member")
    _check_node_id(node_id)
    return MemberRecord(node_id, incarnation, age_ms, r.addresses(count), flags)


def _decode_snapshot(r: _Reader) -> Snapshot:
    reply_to = r.address()
    incarnation, part, parts, count = r.unpack(_SNAPSHOT, "snapshot")
    if not 1 <= part <= parts:
        raise DecodeError("bad snapshot part", f"{part}/{parts}")
    members = tuple(_decode_member(r) for _ in range(count))
    return Snapshot(reply_to, incarnation, part, parts, members)


def _decode_subject(r: _Reader) -> Subject:
    address = r.address()
    incarnation, number = r.unpack(_SUBJECT, "subject")
    return Subject(address, incarnation, number)


def _decode_trailer(data: bytes, start: int) -> tuple[tuple[int, bytes], ...]:
    r = _Reader(data, start, len(data))
    items: list[tuple[int, bytes]] = []
    while r.pos < r.end:
        kind, length = r.unpack(_TLV, "trailer")
        items.append((kind, r.take(length, "trailer value")))
    return tuple(items)


def decode(data: bytes) -> Message:
    if len(data) > MAX_DATAGRAM:
        raise DecodeError("oversized", len(data))
    if len(data) < HEADER_SIZE:
        raise DecodeError("truncated", "header")
    magic, version, mtype, flags, hops, node_id, incarnation, seq, body_len, _ = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DecodeError("bad magic")
    if version not in (VERSION, PROBE_VERSION):
        raise DecodeError("unsupported version", version)
    try:
        kind = MsgType(mtype)
    except ValueError:
        raise DecodeError("unknown message type", mtype) from None
    if version_of(kind) != version:
        raise DecodeError("unknown message type", f"{mtype} in version {version}")
    if hops > MAX_HOPS:
        raise DecodeError("too many hops", hops)
    _check_node_id(node_id)
    body_end = HEADER_SIZE + body_len
    if body_end > len(data):
        raise DecodeError("truncated", "body")
    r = _Reader(data, HEADER_SIZE, body_end)
    addresses = r.addresses(r.byte("address count"))
    snapshot = _decode_snapshot(r) if kind is MsgType.SNAPSHOT else None
    subject = _decode_subject(r) if kind in SUBJECT_TYPES else None
    if r.pos != body_end:
        raise DecodeError("trailing bytes in body")
    if kind in PROBE_TYPES and hops:
        raise DecodeError("forwarded probe")  # unicast between neighbours: never forwarded
    trailer = _decode_trailer(data, body_end)
    return Message(kind, node_id, incarnation, seq, addresses, flags, hops, snapshot, trailer, subject)
