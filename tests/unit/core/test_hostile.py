"""Valid but hostile datagrams against one engine, built with the project's own encoder: what a
host on the LAN without IP spoofing can and cannot do (docs/protocol.md, "Threats")."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

from omdisc.core.engine import Engine, LocalNode, Settings
from omdisc.core.links import Links
from omdisc.core.protocol import (
    FLAG_GATEWAY,
    FLAG_JOIN,
    MAX_DATAGRAM,
    MAX_PARTS,
    MEMBER_GATEWAY,
    MEMBER_INDIRECT,
    IPAddress,
    MemberRecord,
    Message,
    MsgType,
    Snapshot,
    decode,
    encode,
    snapshot_messages,
)

NOW_WALL = 1_800_000_000.0  # seconds: the injected wall clock
INC = int(NOW_WALL * 1e6)
ME = ip_address("198.18.0.1")
N1 = ip_address("198.18.1.13")
EVIL = ip_address("198.18.0.66")
SETTINGS = Settings(announce_interval=10.0, dead_interval=30.0, max_nodes=64)


def engine(addr: IPAddress = ME, settings: Settings = SETTINGS) -> Engine:
    e = Engine(LocalNode(1, (addr,)), INC, settings, random.Random(1), wall=lambda: NOW_WALL)
    e.start(0.0)
    return e


def msg(kind: MsgType, origin: IPAddress, seq: int = 1, inc: int = INC, flags: int = 0,
        addresses: tuple[IPAddress, ...] = (), node_id: int = 7, **kw: object) -> bytes:
    return encode(Message(kind, node_id, inc, seq, addresses or (origin,), flags, **kw))  # type: ignore[arg-type]


def addr(i: int) -> IPv4Address:
    return IPv4Address(int(IPv4Address("198.19.0.0")) + i + 1)


def fake_snapshot(sender: IPAddress, reply_to: IPAddress, first: int, count: int, seq: int) -> bytes:
    recs = tuple(MemberRecord(1000 + i, INC, 0, (addr(i),)) for i in range(first, first + count))
    snap = Snapshot(reply_to, INC, 1, 1, recs)
    return encode(Message(MsgType.SNAPSHOT, 66, INC, seq, (sender,), snapshot=snap))


def answers(out: list, kind: MsgType = MsgType.SNAPSHOT) -> list[bytes]:  # type: ignore[type-arg]
    return [o.data for o in out if decode(o.data).type is kind]


def test_a_snapshot_flood_teaches_nothing_and_a_join_after_it_costs_little() -> None:
    e = engine()
    e.tick(10.0)  # joined long ago: a SNAPSHOT teaches it nothing now
    e.receive(msg(MsgType.ANNOUNCE, EVIL, flags=FLAG_JOIN), 10.0, "eth0", EVIL)  # the attacker's own JOIN
    for k in range(300):  # 300 x 50 = 15,000 made-up members, "answering" that JOIN
        e.receive(fake_snapshot(EVIL, EVIL, 50 * k, 50, k + 2), 10.01, "eth0", EVIL)
    assert list(e.membership.members) == [EVIL]  # an answer to another's JOIN teaches nobody else
    joiner = ip_address("198.18.0.9")
    e.receive(msg(MsgType.ANNOUNCE, joiner, flags=FLAG_JOIN), 11.0, "eth0", joiner)
    out = e.tick(13.0)
    sent = answers(out)  # one answer serves both JOINs waiting on eth0 (a joiner learns from any)
    told = {r.addresses[0] for d in sent for r in decode(d).snapshot.members}  # type: ignore[union-attr]
    assert told == {EVIL, joiner}
    assert sum(map(len, sent)) < MAX_DATAGRAM  # the attacker's JOIN and the joiner's: one small answer


def test_a_joiner_raced_with_made_up_answers_holds_at_most_max_nodes_and_tells_none_on() -> None:
    e = engine()
    for k in range(300):
        e.receive(fake_snapshot(EVIL, ME, 50 * k, 50, k + 2), 0.01, "eth0", EVIL)
    assert len(e.membership) == SETTINGS.max_nodes and e.stats["rejected:full"] > 14_000
    joiner = ip_address("198.18.0.9")
    e.receive(msg(MsgType.ANNOUNCE, joiner, flags=FLAG_JOIN), 1.0, "eth0", joiner)
    told = {r.addresses[0] for d in answers(e.tick(5.0)) for r in decode(d).snapshot.members}  # type: ignore[union-attr]
    assert told == {EVIL, joiner}  # hearsay is never told on


def test_one_host_puts_one_node_in_the_map_however_many_it_makes_up() -> None:
    e = engine()
    for i in range(10_000):
        e.receive(msg(MsgType.ANNOUNCE, addr(i), addresses=(addr(i), EVIL), node_id=i + 2), i * 1e-4, "eth0", EVIL)
    assert len(e.membership) == 1 and e.stats["replaced"] == 9_999
    assert e.membership.tombstones == 0


def test_a_datagram_whose_source_is_not_among_its_addresses_is_dropped() -> None:
    e = engine()
    assert e.receive(msg(MsgType.ANNOUNCE, N1), 0.0, "eth0", EVIL) == []
    assert len(e.membership) == 0 and e.stats["rejected:source"] == 1


def test_spoofed_leave_and_hijack_from_another_host_change_nothing() -> None:
    e = engine()
    e.receive(msg(MsgType.ANNOUNCE, N1, seq=1), 0.0, "eth0", N1)
    before = e.table()
    top = 2**64 - 1
    e.receive(msg(MsgType.LEAVE, N1, seq=2, inc=top, addresses=(N1, EVIL)), 1.0, "eth0", EVIL)
    e.receive(msg(MsgType.ANNOUNCE, N1, seq=3, inc=INC + 5, addresses=(N1, EVIL)), 1.0, "eth0", EVIL)
    assert e.table() == before and N1 in e.membership
    assert e.membership.members[N1].addresses == (N1,)
    assert e.stats["rejected:foreign"] == 1 and e.stats["rejected:future"] == 1
    assert e.receive(msg(MsgType.ANNOUNCE, N1, seq=4), 2.0, "eth0", N1) == []  # the real one still counts
    assert e.stats["stale"] == 0


def test_the_node_itself_speaking_beats_what_another_host_planted_in_its_name() -> None:
    e = engine()
    e.receive(msg(MsgType.ANNOUNCE, N1, inc=INC + 10**9, addresses=(N1, EVIL)), 0.0, "eth0", EVIL)
    e.receive(msg(MsgType.ANNOUNCE, N1, seq=1), 1.0, "eth0", N1)
    assert e.membership.members[N1].addresses == (N1,)


def test_a_claim_about_us_is_refuted_at_once_with_a_newer_incarnation() -> None:
    e = engine()
    out = e.receive(msg(MsgType.LEAVE, ME, seq=99, inc=INC + 7, addresses=(ME, EVIL)), 1.0, "eth0", EVIL)
    refutation = [decode(d) for d in answers(out, MsgType.ANNOUNCE)]
    assert len(refutation) == 1 and refutation[0].incarnation > INC + 7
    assert e.stats["refuted"] == 1
    for i in range(100):  # a flood of such claims is not echoed one for one
        e.receive(msg(MsgType.LEAVE, ME, seq=100 + i, inc=e.incarnation + 1), 1.0 + i * 1e-3, "eth0", EVIL)
    assert e.stats["refuted"] <= 3


def test_our_own_datagrams_looped_back_are_not_claims() -> None:
    e = engine()
    out = e.start(0.0)
    assert e.receive(out[0].data, 0.0, "eth0", ME) == []
    assert e.stats["own"] == 1 and e.stats["refuted"] == 0


def test_a_join_is_answered_once_per_incarnation_and_at_a_bounded_rate_per_source() -> None:
    e = engine()
    e.receive(msg(MsgType.ANNOUNCE, N1), 0.0, "eth0", N1)
    j = ip_address("198.18.0.9")
    join = msg(MsgType.ANNOUNCE, j, seq=1, flags=FLAG_JOIN)
    e.receive(join, 1.0, "eth0", j)
    assert len(answers(e.tick(3.0))) == 1
    e.receive(join, 4.0, "eth0", j)  # replayed: stale
    e.receive(msg(MsgType.ANNOUNCE, j, seq=2, flags=FLAG_JOIN), 4.0, "eth0", j)  # a retry: answered already
    assert answers(e.tick(8.0)) == []
    # fresh incarnations from one source: at most the burst, then one a second
    for i in range(50):
        e.receive(msg(MsgType.ANNOUNCE, j, seq=1, inc=INC + 1 + i, flags=FLAG_JOIN), 10.0, "eth0", j)
    assert len(answers(e.tick(13.0))) <= 3
    assert e.stats["join_unanswered:rate"] >= 47


def test_a_snapshot_that_answers_another_nodes_join_teaches_nothing() -> None:
    e = engine()
    e.tick(10.0)  # no longer joining
    e.receive(fake_snapshot(EVIL, ip_address("198.18.0.200"), 0, 10, 1), 10.0, "eth0", EVIL)
    assert list(e.membership.members) == [EVIL]


def test_a_node_still_joining_learns_from_any_snapshot_within_the_bounds() -> None:
    e = engine()  # joining: in a join storm one SNAPSHOT answers every joiner
    e.receive(fake_snapshot(EVIL, ip_address("198.18.0.200"), 0, 10, 1), 1.0, "eth0", EVIL)
    assert len(e.membership) == 11
    for k in range(100):
        e.receive(fake_snapshot(EVIL, ip_address("198.18.0.200"), 50 * k, 50, k + 2), 1.5, "eth0", EVIL)
    assert len(e.membership) == SETTINGS.max_nodes  # as a joiner raced with made-up answers: bounded
    assert all(not m.firsthand for m in e.membership.members.values() if m.primary != EVIL)  # never told on


def test_a_forwarded_message_is_taken_only_from_a_gateway_heard_on_that_interface() -> None:
    e = engine()
    gw = ip_address("198.18.0.254")
    far = ip_address("198.18.2.1")
    forwarded = msg(MsgType.ANNOUNCE, far, hops=1,
                    trailer=((2, bytes([4]) + gw.packed),))
    e.receive(forwarded, 0.0, "eth0", gw)
    assert far not in e.membership and e.stats["rejected:via"] == 1
    e.receive(msg(MsgType.ANNOUNCE, gw, flags=FLAG_GATEWAY), 0.1, "eth0", gw)
    e.receive(forwarded, 0.2, "eth1", gw)  # a gateway we heard, but on another interface
    assert far not in e.membership
    e.receive(forwarded, 0.3, "eth0", EVIL)  # from a host that is not the gateway
    assert far not in e.membership and e.stats["rejected:via"] == 3
    e.receive(forwarded, 0.4, "eth0", gw)
    assert e.membership.members[far].via == gw


def test_a_joiner_takes_no_forwards_from_a_gateway_it_knows_only_from_a_snapshot() -> None:
    """A host answers our JOIN with a record of the real gateway that lists the host's own address
    too, then forwards in the gateway's name from that address: nothing it forwards is taken
    until the gateway speaks for itself (a gateway ANNOUNCEs where a node JOINs)."""
    e = engine()  # joining: it learns from any SNAPSHOT
    gw = ip_address("198.18.0.254")
    far = ip_address("198.18.2.1")
    evil2 = ip_address("198.18.0.67")  # the host's second address
    rec = MemberRecord(254, INC, 0, (gw, evil2), MEMBER_GATEWAY)
    e.receive(encode(Message(MsgType.SNAPSHOT, 66, INC, 2, (EVIL,), snapshot=Snapshot(ME, INC, 1, 1, (rec,)))),
              0.01, "eth0", EVIL)
    assert gw in e.membership and not e.membership.members[gw].firsthand
    forwarded = msg(MsgType.ANNOUNCE, far, hops=1, trailer=((2, bytes([4]) + gw.packed),))
    e.receive(forwarded, 0.02, "eth0", evil2)
    assert far not in e.membership and e.stats["rejected:via"] == 1
    e.receive(msg(MsgType.ANNOUNCE, gw, seq=3, flags=FLAG_GATEWAY), 0.03, "eth0", gw)  # its greeting
    e.receive(forwarded, 0.04, "eth0", gw)
    assert e.membership.members[far].via == gw


def test_a_snapshot_from_a_gateway_tells_which_nodes_it_reaches() -> None:
    e = engine()
    gw = ip_address("198.18.0.254")
    e.receive(msg(MsgType.ANNOUNCE, gw, flags=FLAG_GATEWAY), 0.0, "eth0", gw)
    far = (ip_address("198.18.2.1"), ip_address("198.18.2.2"))
    recs = (*(MemberRecord(i, INC, 0, (a,), MEMBER_INDIRECT) for i, a in enumerate(far, 2)),
            MemberRecord(9, INC, 0, (ip_address("198.18.0.5"),)))
    snap = Snapshot(ME, INC, 1, 1, recs)
    e.receive(encode(Message(MsgType.SNAPSHOT, 254, INC, 2, (gw,), FLAG_GATEWAY, snapshot=snap)), 0.1, "eth0", gw)
    report = e.state(0.2)["gateways"]
    assert report == [{"id": 254, "address": str(gw), "addresses": [str(gw)], "reaches": [str(a) for a in far]}]


def test_incarnations_far_in_the_future_are_not_believed() -> None:
    e = engine()
    e.receive(msg(MsgType.ANNOUNCE, N1, inc=INC + int(2 * 86400e6)), 0.0, "eth0", N1)
    assert N1 not in e.membership and e.stats["rejected:future"] == 1


def test_a_snapshot_is_always_encodable_whatever_the_membership() -> None:
    big = [MemberRecord(i % 65535 + 1, INC, 0, tuple(IPv6Address(f"2001:db8:{i:x}::{k + 1}") for k in range(16)))
           for i in range(4096)]
    base = Message(MsgType.SNAPSHOT, 1, INC, 1, (ME,))
    parts = snapshot_messages(base, N1, INC, big)
    assert len(parts) == MAX_PARTS
    assert all(len(encode(m)) <= MAX_DATAGRAM for m in parts)


def test_leaves_for_unknown_nodes_leave_nothing_behind() -> None:
    e = engine()
    for i in range(1000):
        e.receive(msg(MsgType.LEAVE, addr(i), addresses=(addr(i), EVIL)), 0.0, "eth0", EVIL)
    assert e.membership.tombstones == 0 and len(e.membership) == 0


def test_a_gateway_does_not_carry_a_flood_of_made_up_nodes_to_its_other_networks() -> None:
    gw = Engine(LocalNode(510, (ip_address("198.18.0.254"), ip_address("198.18.2.254")), FLAG_GATEWAY), INC,
                SETTINGS, random.Random(1), wall=lambda: NOW_WALL)
    gw.route_between = frozenset({"legA", "legB"})
    forwarded = 0
    for i in range(1000):
        out = gw.receive(msg(MsgType.ANNOUNCE, addr(i), addresses=(addr(i), EVIL), node_id=i + 2), 0.001 * i,
                         "legA", EVIL)
        forwarded += len(out)
    assert forwarded == 1 and gw.stats["forward_refused:replaced"] == 999
    real = ip_address("198.18.0.5")
    for seq in (1, 2):  # a real node is carried on, every message
        assert len(gw.receive(msg(MsgType.ANNOUNCE, real, seq=seq), 2.0, "legA", real)) == 1


def test_a_host_posing_as_a_gateway_cannot_evict_or_take_over_a_node_heard_directly() -> None:
    e = engine()
    e.receive(msg(MsgType.ANNOUNCE, N1, seq=5), 0.1, "eth0", N1)
    e.receive(msg(MsgType.ANNOUNCE, EVIL, flags=FLAG_GATEWAY, node_id=66), 0.2, "eth0", EVIL)  # "I am a gateway"
    via_evil = ((2, bytes([4]) + EVIL.packed),)
    e.receive(msg(MsgType.LEAVE, N1, seq=6, hops=1, trailer=via_evil), 0.3, "eth0", EVIL)
    e.receive(msg(MsgType.ANNOUNCE, N1, seq=1, inc=INC + 3600 * 10**6, addresses=(N1, EVIL), hops=1,
                  trailer=via_evil), 0.4, "eth0", EVIL)
    assert e.membership.members[N1].addresses == (N1,) and e.stats["rejected:path"] == 2
    assert e.receive(msg(MsgType.ANNOUNCE, N1, seq=7), 0.5, "eth0", N1) == [] and e.stats["stale"] == 0


def test_a_node_cannot_take_another_nodes_address_as_its_own_later() -> None:
    e = engine()
    e.receive(msg(MsgType.ANNOUNCE, N1), 0.0, "eth0", N1)
    e.receive(msg(MsgType.ANNOUNCE, EVIL, seq=1, node_id=66), 0.1, "eth0", EVIL)
    e.receive(msg(MsgType.ANNOUNCE, EVIL, seq=2, node_id=66, addresses=(EVIL, N1)), 0.2, "eth0", EVIL)
    assert e.membership.members[EVIL].addresses == (EVIL,) and e.stats["rejected:conflict"] == 1


V1, V2, V3 = ip_address("198.18.1.13"), ip_address("198.18.9.13"), ip_address("198.18.7.13")  # one node's
V6 = ip_address("2001:db8:9::13")
MULTI_HOMED = (V1, V2, V3, V6)


def test_a_made_up_node_cannot_claim_any_address_of_a_known_node() -> None:
    """A multi-homed node sends from its first address; a host makes up a node listing another of
    them, first (as its primary) or after its own. Before, only a known node's primary address was
    looked at: the made-up node got in, and every message of the real one was then a conflict."""
    e = engine()
    e.receive(msg(MsgType.ANNOUNCE, V1, addresses=MULTI_HOMED, node_id=269), 0.0, "eth0", V1)
    before = e.table()
    fakes = [(V2, EVIL), (EVIL, V3), (V6, EVIL), (EVIL, V2)]
    for seq, fake in enumerate(fakes, 1):
        e.receive(msg(MsgType.ANNOUNCE, fake[0], seq=seq, addresses=fake, node_id=66), 0.1 * seq, "eth0", EVIL)
    assert list(e.membership.members) == [V1] and e.table() == before
    assert e.stats["rejected:conflict"] == len(fakes)
    for seq in (2, 3):  # the node's own announcements go on counting
        e.receive(msg(MsgType.ANNOUNCE, V1, seq=seq, addresses=MULTI_HOMED, node_id=269), 1.0 * seq, "eth0", V1)
    assert e.membership.members[V1].seq == 3 and e.stats["rejected:conflict"] == len(fakes)
    rec = MemberRecord(66, INC, 0, (V2, EVIL))  # nor second-hand, told a joiner
    joiner = engine(ip_address("198.18.0.2"))
    joiner.receive(encode(Message(MsgType.SNAPSHOT, 269, INC, 9, MULTI_HOMED,
                                  snapshot=Snapshot(ip_address("198.18.0.2"), INC, 1, 1, (rec,)))), 0.01, "eth0", V1)
    assert list(joiner.membership.members) == [V1] and joiner.stats["rejected:conflict"] == 1


def test_a_node_sending_from_an_address_a_made_up_node_listed_first_gets_in_and_the_fake_goes() -> None:
    """Planted before the real node is heard, with the address the real node sends from: that
    address is the real node's (a host without IP spoofing sends from its own addresses only)."""
    e = engine()
    e.receive(msg(MsgType.ANNOUNCE, EVIL, addresses=(EVIL, V1), node_id=66), 0.0, "eth0", EVIL)
    e.receive(msg(MsgType.ANNOUNCE, V1, addresses=MULTI_HOMED, node_id=269), 0.1, "eth0", V1)
    assert list(e.membership.members) == [V1] and e.stats["displaced"] == 1
    e.receive(msg(MsgType.ANNOUNCE, EVIL, seq=2, addresses=(EVIL, V1), node_id=66), 0.2, "eth0", EVIL)
    assert list(e.membership.members) == [V1] and e.stats["rejected:conflict"] == 1


def test_a_far_nodes_datagram_sent_on_this_link_from_its_own_forged_address_is_not_taken() -> None:
    """Without the key too: a host with a raw socket relays a node of another network, its source
    forged to match. None of the addresses it names is on this link: another host carried it."""
    e = engine(ip_address("198.18.2.1"))
    e.links = Links({"eth0": [ip_network("198.18.2.0/24")]})
    far = ip_address("198.18.1.1")
    assert e.receive(msg(MsgType.ANNOUNCE, far), 0.0, "eth0", far) == []
    assert far not in e.membership and e.stats["rejected:offlink"] == 1
    near = ip_address("198.18.2.7")
    e.receive(msg(MsgType.ANNOUNCE, near, addresses=(far, near)), 0.1, "eth0", near)  # one address here: taken
    assert far in e.membership
