from __future__ import annotations

from ipaddress import ip_address

import pytest

from omdisc.core import protocol
from omdisc.core.protocol import (
    FLAG_JOIN,
    MAX_DATAGRAM,
    DecodeError,
    MemberRecord,
    Message,
    MsgType,
    decode,
    encode,
    forwarded,
    snapshot_messages,
    with_hops,
)

A = ip_address("198.18.1.11")
B = ip_address("198.19.0.1")
V6 = ip_address("2001:db8::7")


def announce(**kw: object) -> Message:
    base: dict[str, object] = dict(type=MsgType.ANNOUNCE, node_id=267, incarnation=1_700_000_000_000_000, seq=3,
                                   addresses=(A, B, V6), flags=FLAG_JOIN)
    base.update(kw)
    return Message(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", [MsgType.ANNOUNCE, MsgType.LEAVE])
def test_roundtrip(kind: MsgType) -> None:
    msg = announce(type=kind, trailer=((1, b"x" * 32),))
    assert decode(encode(msg)) == msg


def test_snapshot_roundtrip_and_split_into_datagrams_that_fit() -> None:
    members = [MemberRecord(i, 5, 10 * i, (ip_address(f"198.18.{i // 250}.{i % 250 + 1}"), V6)) for i in range(1, 200)]
    msgs = snapshot_messages(announce(flags=0), A, 42, members)
    assert len(msgs) > 1
    datagrams = [encode(m) for m in msgs]
    assert all(len(d) <= MAX_DATAGRAM for d in datagrams)
    decoded = [decode(d) for d in datagrams]
    assert [m.snapshot.part for m in decoded] == list(range(1, len(msgs) + 1))  # type: ignore[union-attr]
    assert {m.snapshot.parts for m in decoded} == {len(msgs)}  # type: ignore[union-attr]
    assert [r for m in decoded for r in m.snapshot.members] == members  # type: ignore[union-attr]
    assert len({m.seq for m in decoded}) == len(msgs)  # each part is its own message


def test_with_hops_changes_only_the_hop_count() -> None:
    data = encode(announce())
    assert decode(with_hops(data, 3)) == announce(hops=3)


GOOD = encode(announce())


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", "truncated"),
        (GOOD[:27], "truncated"),
        (b"XXXX" + GOOD[4:], "bad magic"),
        (GOOD[:4] + b"\x03" + GOOD[5:], "unsupported version"),
        (GOOD[:4] + b"\x02" + GOOD[5:], "unknown message type"),  # an ANNOUNCE is a version 1 type
        (GOOD[:5] + b"\x09" + GOOD[6:], "unknown message type"),
        (with_hops(GOOD, 9), "too many hops"),
        (GOOD[:-1], "truncated"),
        (GOOD + b"\x01", "truncated"),  # a trailer TLV cut short
        (GOOD + bytes(MAX_DATAGRAM), "oversized"),
        (GOOD[:8] + b"\x00\x01\x00\x00" + GOOD[12:], "node id out of range"),
        (GOOD[:28] + b"\x00" + GOOD[29:], "bad address count"),
        (GOOD[:29] + b"\x05" + GOOD[30:], "bad address family"),
        (GOOD[:30] + bytes(4) + GOOD[34:], "bad node address"),
    ],
)
def test_malformed_datagrams_raise_decode_error_with_a_countable_kind(data: bytes, kind: str) -> None:
    with pytest.raises(DecodeError) as e:
        decode(data)
    assert e.value.kind == kind


def test_body_length_larger_than_content_is_rejected() -> None:
    body_len_at = protocol.HEADER_SIZE - 4
    bad = GOOD[:body_len_at] + (len(GOOD)).to_bytes(2, "big") + GOOD[body_len_at + 2 :]
    with pytest.raises(DecodeError, match="truncated"):
        decode(bad)


def test_trailing_bytes_inside_the_body_are_rejected() -> None:
    body_len_at = protocol.HEADER_SIZE - 4
    body_len = int.from_bytes(GOOD[body_len_at : body_len_at + 2], "big")
    bad = GOOD[:body_len_at] + (body_len + 3).to_bytes(2, "big") + GOOD[body_len_at + 2 :] + b"\x00\x00\x00"
    with pytest.raises(DecodeError, match="trailing bytes"):
        decode(bad)


def test_a_gateway_does_not_forward_what_its_via_trailer_would_grow_past_the_limit() -> None:
    msg = Message(MsgType.ANNOUNCE, 7, 1, 1, (A,), trailer=((9, bytes(MAX_DATAGRAM - 40)),))
    data = encode(msg)
    assert len(data) <= MAX_DATAGRAM
    assert forwarded(data, decode(data), ip_address("198.18.0.254")) is None
