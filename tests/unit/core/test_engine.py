from __future__ import annotations

import itertools
import random
from ipaddress import ip_address

import pytest

from omdisc.core.engine import Engine, LocalNode, Settings
from omdisc.core.protocol import FLAG_JOIN, FLAG_PROBES, MAX_HOPS, Message, MsgType, decode, encode, via, with_hops
from tests.unit.sim import SimLan

FAST = Settings(announce_interval=10.0, dead_interval=30.0)


def converged(lan: SimLan, n: int) -> bool:
    return all(len(e.nodes()) == n for e in lan.engines)


@pytest.mark.parametrize("n", [4, 16, 64])
def test_a_join_gets_about_one_answer_whatever_the_cluster_size(n: int) -> None:
    lan = SimLan(FAST)
    for i in range(n):
        lan.add(f"198.18.0.{i + 1}")
        lan.run_until(lan.now + 2.0)  # staggered starts; every join is over before the next
    assert converged(lan, n)
    answers_before = sum(e.stats["snapshots"] for e in lan.engines)
    joins = 10
    for j in range(joins):
        lan.add(f"198.18.1.{j + 1}")
        lan.run_until(lan.now + 0.2)
        assert converged(lan, n + j + 1)  # everyone learnt within 200 ms of virtual time
        lan.run_until(lan.now + 2.0)
    answers = sum(e.stats["snapshots"] for e in lan.engines) - answers_before
    assert answers / joins <= 1.5  # suppression: not one answer per member


def test_in_a_settled_cluster_the_node_after_the_joiner_answers_at_once_and_alone() -> None:
    """Every node works out the same first answerer; a newcomer then knows the cluster within a few
    milliseconds, not the random delay's 10 ms a node / N on average."""
    lan = SimLan(FAST, seed=5)
    for i in range(16):
        lan.add(f"198.18.0.{(i * 37) % 200 + 2}")
        lan.run_until(lan.now + 2.0)
    assert converged(lan, 16)
    while any(e.membership.hearsay for e in lan.engines) and lan.now < 300:
        lan.run_until(lan.now + 1.0)  # every node has heard every other itself: none answers last
    for j, joiner in enumerate(("198.18.0.250", "198.18.0.121", "198.18.0.1")):  # each one's next: one of the 16
        before = [e.stats["snapshots"] for e in lan.engines]
        t0 = lan.now
        lan.add(joiner)
        while not converged(lan, 17 + j) and lan.now < t0 + 5:
            lan.run_until(lan.now + 0.001)
        took = lan.now - t0
        lan.run_until(lan.now + 2.0)
        answered = [e.local.primary for e, b in zip(lan.engines, before, strict=False) if e.stats["snapshots"] > b]
        others = sorted((e.local.primary for e in lan.engines[:-1]), key=int)
        after = next((a for a in others if int(a) > int(ip_address(joiner))), others[0])
        assert answered == [after], (joiner, answered)
        assert took <= 0.005, (joiner, took)  # at once: the LAN's latency twice


def test_simultaneous_start_of_sixteen_converges() -> None:
    lan = SimLan(FAST, seed=7)
    for i in range(16):
        lan.add(f"198.18.0.{i + 1}")
    lan.run_until(1.5)
    assert converged(lan, 16)
    assert all(e.table() == lan.engines[0].table() for e in lan.engines)


def test_leave_and_expiry() -> None:
    lan = SimLan(Settings(announce_interval=1.0, dead_interval=3.0))
    for i in range(3):
        lan.add(f"198.18.0.{i + 1}")
    lan.run_until(2.0)
    lan.stop(2)  # clean stop: LEAVE
    lan.run_until(2.01)
    assert all(len(e.nodes()) == 2 for e in lan.engines[:2])
    lan.crash(1)  # silence, no LEAVE
    lan.run_until(4.0)
    assert len(lan.engines[0].nodes()) == 2
    lan.run_until(6.5)
    assert len(lan.engines[0].nodes()) == 1


def test_periodic_announces_are_jittered_not_synchronised() -> None:
    lan = SimLan(Settings(announce_interval=1.0, dead_interval=3.5))
    for i in range(8):
        lan.add(f"198.18.0.{i + 1}", start=False)
    for e in lan.engines:
        e.start(0.0)
    deadlines = {round(e.next_announce, 3) for e in lan.engines}
    assert len(deadlines) > 1


def _gateway_engine() -> Engine:
    gw = Engine(LocalNode(510, (ip_address("198.18.1.254"), ip_address("198.18.2.254"))), 1, FAST,
                random.Random(1), wall=lambda: 1.0)
    gw.route_between = frozenset({"legA", "legB"})
    return gw


def test_a_gateway_forwards_each_message_once_to_its_other_networks_with_hops_and_via() -> None:
    gw = _gateway_engine()
    data = encode(Message(MsgType.ANNOUNCE, 257, 5, 1, (ip_address("198.18.1.1"),)))
    out = gw.receive(data, now=0.0, interface="legA")
    assert [o.interfaces for o in out] == [frozenset({"legB"})]
    fwd = decode(out[0].data)
    assert fwd.hops == 1 and via(fwd) == ip_address("198.18.1.254")
    assert out[0].data[:len(data)] == with_hops(data, 1)  # header and body untouched
    assert gw.receive(out[0].data, now=0.1, interface="legB") == []  # its own copy, back: VIA names no neighbour
    assert gw.stats["rejected:via"] == 1
    assert gw.receive(data, now=0.2, interface="legB") == []  # seen: never forwarded twice
    assert gw.stats["forward_duplicates"] == 1
    tired = encode(Message(MsgType.ANNOUNCE, 258, 5, 1, (ip_address("198.18.1.2"),), hops=MAX_HOPS))
    assert gw.receive(tired, now=0.3, interface="legA") == []  # the hop limit bounds what a cache could miss


def test_a_host_that_does_not_route_answers_a_join_only_with_what_it_heard_there() -> None:
    host = _gateway_engine()
    host.route_between = frozenset()
    host.receive(encode(Message(MsgType.ANNOUNCE, 257, 5, 1, (ip_address("198.18.1.1"),))), 0.0, "legA")
    join = encode(Message(MsgType.ANNOUNCE, 513, 5, 1, (ip_address("198.18.2.1"),), FLAG_JOIN))
    host.receive(join, 0.0, "legB")
    out = host.tick(5.0)
    snaps = [o for o in out if decode(o.data).type is MsgType.SNAPSHOT]
    assert [o.interfaces for o in snaps] == [frozenset({"legB"})]
    told = {r.addresses[0] for r in decode(snaps[0].data).snapshot.members}  # type: ignore[union-attr]
    assert told == {ip_address("198.18.2.1")}  # the joiner itself (for others joining with it); nothing from legA


def test_a_gateway_greets_a_network_where_a_node_joined_once_per_burst_and_bounded() -> None:
    """A joiner believes forwards only from a gateway it heard itself; the answer to its JOIN is
    often a neighbour's. The gateway's own ANNOUNCE follows each JOIN on that network (and only
    there), JOINs close together share it, and a flood of JOINs gets ten a second at most."""
    gw = _gateway_engine()
    gw.start(0.0)
    gw.tick(5.0)

    def join(k: int, at: float) -> None:
        joiner = ip_address(int(ip_address("198.18.4.1")) + k)
        data = encode(Message(MsgType.ANNOUNCE, 300 + k, 5, 1, (joiner,), FLAG_JOIN))
        gw.receive(data, now=at, interface="legA")

    def greetings(until: float) -> list[float]:
        sent = []
        while (t := gw.next_deadline()) <= until:
            for o in gw.tick(t):
                m = decode(o.data)
                if m.type is MsgType.ANNOUNCE and not m.flags & FLAG_JOIN:
                    assert o.interfaces == frozenset({"legA"})  # not on the far side: it knows us
                    sent.append(t)
        return sent

    join(0, 5.0)
    join(1, 5.005)
    assert greetings(5.05) == [5.01]  # 10 ms after the first JOIN, one for both
    sent = []
    for k in range(1000):  # a JOIN flood: a thousand made-up joiners in one second
        sent += greetings(6.0 + k / 1000)
        join(2 + k, 6.0 + k / 1000)
    sent += greetings(7.05)
    assert 9 <= len(sent) <= 11 and all(b - a >= 0.1 - 1e-9 for a, b in itertools.pairwise(sent))
    assert gw.stats["greetings"] == len(sent) + 1
    join(0, 9.0)  # a JOIN heard before (stale: a replay) is greeted no more than it is answered
    assert greetings(9.5) == []


def test_a_host_that_does_not_route_greets_nobody() -> None:
    host = _gateway_engine()
    host.route_between = frozenset()  # --no-route: it forwards nothing, so nobody needs its word
    host.start(0.0)
    while host.next_deadline() <= 5.0:  # the JOIN's retries
        host.tick(host.next_deadline())
    host.receive(encode(Message(MsgType.ANNOUNCE, 257, 5, 1, (ip_address("198.18.1.1"),), FLAG_JOIN)), 5.0, "legA")
    sent = []
    while (t := host.next_deadline()) <= 6.0:
        sent += [decode(o.data).type for o in host.tick(t)]
    assert MsgType.ANNOUNCE not in sent and host.stats["greetings"] == 0


def announce_times(engine: Engine, count: int) -> list[float]:
    """When this engine sends its next `count` periodic ANNOUNCEs, nothing else heard meanwhile."""
    times = []
    for _ in range(count):
        now = engine.next_announce
        assert any(decode(o.data).type is MsgType.ANNOUNCE for o in engine.tick(now))
        times.append(now)
    return times


def test_after_a_join_the_first_two_announcements_are_one_interval_apart_then_the_period_grows() -> None:
    """1,000 members: an announcement every 160 s (16 x 10 s, +-10%), but a node that lost the
    JOIN must not wait that long to hear of the newcomer: 10 s, 10 s more, then 160 s; the same
    after a rejoin (new addresses, sockets opened again)."""
    engine = Engine(LocalNode(1, (ip_address("198.18.0.1"),)), 1, Settings(), random.Random(1), wall=lambda: 1.0)
    engine.start(0.0)
    for i in range(1000):  # version 2 nodes (PROBES): beside a version 1 node the period stays 10 s
        addr = ip_address("198.19.0.0") + i
        engine.receive(encode(Message(MsgType.ANNOUNCE, 1000 + i, 1, 1, (addr,), FLAG_PROBES)), i / 1000,
                       interface="eth0", source=addr)
    for joined in (0.0, 200.0):
        if joined:
            engine.rejoin(joined)
        first, second, third = announce_times(engine, 3)
        assert 9.0 <= first - joined <= 11.0 and 9.0 <= second - first <= 11.0, (joined, first, second)
        assert 144.0 <= third - second <= 176.0, third - second


def test_a_joiner_takes_no_neighbour_it_shares_no_address_family_with() -> None:
    """An IPv4-only node on a LAN with an IPv6-only one: a dual-stack neighbour's SNAPSHOT names both,
    but the IPv4-only node could never hear the other, nor probe it: it would suspect it for ever."""
    from omdisc.core.protocol import MemberRecord, Snapshot

    me, dual, six = ip_address("198.18.0.4"), ip_address("198.18.0.1"), ip_address("2001:db8:1::6")
    e = Engine(LocalNode(4, (me,)), 5000, Settings(), random.Random(1), wall=lambda: 1_800_000_000.0)
    e.start(0.0)
    records = (MemberRecord(0, 7000, 10, (six,), 0x04), MemberRecord(9, 7001, 10, (ip_address("198.18.0.2"),), 0x04))
    answer = Message(MsgType.SNAPSHOT, 1, 6000, 1, (dual, ip_address("2001:db8:1::1")), FLAG_PROBES,
                     snapshot=Snapshot(me, 5000, 1, 1, records))
    e.receive(encode(answer), 0.01, source=dual)
    assert sorted(map(str, e.membership.members)) == ["198.18.0.1", "198.18.0.2"]
    assert e.stats["snapshot_unreachable"] == 1
