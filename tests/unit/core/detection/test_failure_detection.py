"""Failure detection (omdisc/core/detection): in the simulated LAN, a crash is noticed in seconds,
loss and stalls remove nobody, and the load stays what docs/protocol.md says; against one engine,
valid but hostile version 2 messages do no more than the threat table allows."""

from __future__ import annotations

import math
import random
from ipaddress import IPv4Address, ip_address

from omdisc.core.detection.rounds import JUDGE_ROUNDS, position
from omdisc.core.engine import Engine, LocalNode, Settings
from omdisc.core.protocol import (
    FLAG_JOIN,
    FLAG_PROBES,
    FLAG_ROUNDS,
    DecodeError,
    IPAddress,
    Message,
    MsgType,
    Subject,
    decode,
    encode,
    with_hops,
)
from tests.unit.sim import SimLan

NOW_WALL = 1_800_000_000.0
INC = int(NOW_WALL * 1e6)
ME = ip_address("198.18.0.10")


def lan_of(n: int, loss: float = 0.0, seed: int = 3) -> SimLan:
    lan = SimLan(Settings(), seed=seed, loss=loss)
    for i in range(n):
        lan.add(f"198.18.0.{i + 1}")
    lan.run_until(3.0)
    assert all(len(e.membership) == n - 1 for e in lan.engines)
    return lan


def removed_after(lan: SimLan, victim: int, limit: float) -> list[float]:
    """Seconds until each other engine dropped the victim (crashed now)."""
    addr = lan.engines[victim].local.primary
    t0 = lan.now
    lan.crash(victim)
    gone: dict[int, float] = {}
    while lan.now < t0 + limit and len(gone) < len(lan.engines) - 1:
        lan.run_until(lan.now + 0.05)
        for i, e in enumerate(lan.engines):
            if i != victim and i not in gone and addr not in e.membership:
                gone[i] = lan.now - t0
    return sorted(gone.values())


def failed(lan: SimLan) -> int:
    return sum(e.stats["failed"] for e in lan.engines)


def test_a_crashed_node_is_out_of_every_map_within_five_seconds() -> None:
    lan = lan_of(30)
    times = removed_after(lan, 17, 10.0)
    assert len(times) == 29, "some engine kept the crashed node"
    assert times[-1] <= 5.0, times  # dead_interval is 35 s: only the probes are this fast


def test_a_clean_leave_is_still_immediate() -> None:
    lan = lan_of(10)
    addr = lan.engines[4].local.primary
    lan.stop(4)
    lan.run_until(lan.now + 0.01)
    assert all(addr not in e.membership for i, e in enumerate(lan.engines) if i != 4)


def test_five_percent_loss_for_ten_minutes_removes_nobody() -> None:
    lan = lan_of(20, loss=0.05, seed=11)
    lan.run_until(lan.now + 600)
    assert failed(lan) == 0
    assert all(len(e.membership) == 19 for e in lan.engines)
    assert sum(e.stats["suspected"] for e in lan.engines) > 0  # loss did make suspects, and they refuted


def test_a_node_stalled_for_a_second_is_not_removed() -> None:
    lan = lan_of(10)
    for _ in range(5):
        lan.stall(6, 1.0)
        lan.run_until(lan.now + 5.0)
    assert failed(lan) == 0
    assert all(len(e.membership) == 9 for e in lan.engines)


def test_steady_load_per_node_is_about_two_datagrams_each_way_a_second() -> None:
    lan = lan_of(20)
    lan.run_until(lan.now + 25)  # past the early announcements after the JOINs (10 s and 20 s)
    sent, received = sum(lan.sent_by), sum(lan.received_by)
    lan.run_until(lan.now + 160)
    per_sent = (sum(lan.sent_by) - sent) / 20 / 160
    per_received = (sum(lan.received_by) - received) / 20 / 160
    # a PING and an ACK a second each way; an announcement every 160 s (20 nodes at 0.2 a second)
    assert 1.95 <= per_sent <= 2.2, per_sent
    assert 1.95 <= per_received <= 2.2, per_received


def test_the_announce_interval_grows_with_the_cluster_and_not_beside_older_nodes() -> None:
    e = Engine(LocalNode(1, (ME,)), INC, Settings(), random.Random(1), wall=lambda: NOW_WALL)
    e.start(0.0)
    for i in range(399):
        peer = IPv4Address(int(ME) + 1 + i)
        e.receive(announce(peer, flags=FLAG_PROBES | FLAG_ROUNDS), 0.1, source=peer)
    assert e.announce_scale() == 256  # 400 nodes: every 2,560 s keeps each node hearing 0.2 a second
    assert e.membership.dead_interval == 35.0  # until the next announcement is scheduled
    e.tick(e.next_announce)
    assert e.membership.dead_interval == 35.0 * 256
    older = ip_address("198.18.9.8")  # probes by the address-ordered ring: its dead_interval is 35 s x 4
    e.receive(announce(older, flags=FLAG_PROBES), 0.2, source=older)
    assert e.announce_scale() == 8  # 401 nodes at its 10 a second
    old = ip_address("198.18.9.9")
    e.receive(announce(old, flags=0), 0.2, source=old)  # a version 1 node expects us every 10 s
    assert e.announce_scale() == 1


def test_a_joiner_of_an_older_release_keeps_the_members_it_is_told_of_until_they_announce() -> None:
    """It drops a SNAPSHOT record older than its own dead_interval, and expires one it took unchecked
    (docs/protocol.md, "Nodes that probe by the address-ordered ring"). Our answer dates the
    members our probes hold alive from then, not from their last announcement, minutes ago; and
    our own announcement is brought forward as its JOIN comes in, not at our next tick."""
    e = engine_with(MANY)
    for _ in range(3):  # past the two early announcements after our JOIN
        e.tick(e.next_announce)
    now = e.next_announce - 300.0
    assert now > 30.0  # members last heard at 0.1
    victim, judge = judged_here(MANY)
    e.receive(judged(MsgType.SUSPECT, judge, victim), now, source=judge)
    older = ip_address("198.18.0.99")
    e.receive(encode(Message(MsgType.ANNOUNCE, 7, INC, 1, (older,), FLAG_PROBES | FLAG_JOIN)), now, source=older)
    assert e.next_announce <= now + 0.43  # spread over 10 ms a node; no tick in between
    due = e.joining.answers.next_due()
    assert due is not None
    answer = [m for o in e.tick(due) if (m := decode(o.data)).type is MsgType.SNAPSHOT]
    assert answer and answer[0].snapshot is not None
    ages = {rec.addresses[0]: rec.age_ms / 1000 for rec in answer[0].snapshot.members}
    assert set(ages) == {*MANY, older}
    assert max(a for p, a in ages.items() if p not in (victim, older)) <= 2.0  # two probe rounds
    assert ages[victim] > due - 0.11  # suspected: we know only when we last heard it


# --- hostile messages against one engine ------------------------------------------------------


def announce(origin: IPAddress, seq: int = 1, flags: int = FLAG_PROBES | FLAG_ROUNDS) -> bytes:
    return encode(Message(MsgType.ANNOUNCE, 7, INC, seq, (origin,), flags))


def judged(kind: MsgType, sender: IPAddress, subject: IPAddress, seq: int = 5, number: int = 1) -> bytes:
    return encode(Message(kind, 7, INC, seq, (sender,), subject=Subject(subject, INC, number)))


def engine_with(peers: list[IPAddress], settings: Settings | None = None) -> Engine:
    e = Engine(LocalNode(1, (ME,)), INC, settings or Settings(), random.Random(1), wall=lambda: NOW_WALL)
    e.start(0.0)
    for p in peers:
        e.receive(announce(p), 0.1, source=p)
    return e


PEERS = [ip_address(f"198.18.0.{i}") for i in (20, 30, 40, 50, 60, 70, 80)]
MANY = [ip_address(f"198.18.0.{i}") for i in range(20, 60)]


def judges_of(subject: IPAddress, peers: list[IPAddress]) -> list[IPAddress]:
    """The subject's probers in the rounds around NOW_WALL (probe_interval 1 s): who may judge it."""
    out = []
    for k in JUDGE_ROUNDS:
        round_no = math.floor(NOW_WALL) + k
        ring = sorted([ME, *peers], key=lambda a: position(a, round_no))
        out.append(ring[ring.index(subject) - 1])
    return out


def judged_here(peers: list[IPAddress]) -> tuple[IPAddress, IPAddress]:
    """A member and one of its judges, neither of them us."""
    for victim in peers:
        judge = next((j for j in judges_of(victim, peers) if j != ME), None)
        if judge is not None:
            return victim, judge
    raise AssertionError("no judge")


def test_only_a_recent_prober_of_a_node_may_declare_it_dead() -> None:
    e = engine_with(MANY)
    victim, judge = judged_here(MANY)
    far = next(p for p in MANY if p not in judges_of(victim, MANY) and p != victim)
    answering = set(MANY)  # all alive: the victim answers our own check
    e.receive(judged(MsgType.DEAD, far, victim), 1.0, source=far)
    run(e, 1.0, 8.0, answering)
    assert victim in e.membership
    assert e.stats["probe_ignored:dead:not_a_monitor"] == 1
    assert e.stats["doubts"] == 1  # its word got the victim checked (its ACK cleared the doubt), no more
    assert e.state(8.0)["members"][sorted(MANY).index(victim)]["state"] == "alive"
    e.receive(judged(MsgType.DEAD, judge, victim, seq=6), 8.0, source=judge)
    assert victim in e.membership  # not suspect here before: it has min_suspect to refute
    e.tick(8.0 + 0.76)
    assert victim not in e.membership and e.stats["failed"] == 1


def test_a_member_that_may_not_judge_removes_a_silent_node_only_after_our_own_check() -> None:
    e = engine_with(MANY)
    victim = MANY[3]
    far = next(p for p in MANY if p not in judges_of(victim, MANY) and p != victim)
    e.receive(judged(MsgType.SUSPECT, far, victim), 1.0, source=far)
    pings = [m for m in run(e, 1.0, 3.4, set(MANY) - {victim}, unicast=True) if m.type is MsgType.PING
             and m.subject is not None and m.subject.address == victim]
    assert victim in e.membership and pings == []  # its DEADs would still be due
    run(e, 3.4, 6.0, set(MANY) - {victim})
    assert victim not in e.membership and e.stats["probe_checks"] >= 1


def test_a_stranger_cannot_slow_our_judgement_nor_make_us_refute() -> None:
    e = engine_with(PEERS)
    stranger = ip_address("198.18.5.5")
    for i in range(40):
        out = e.receive(judged(MsgType.SUSPECT, stranger, ME, seq=i + 1), 1.0 + i / 4, source=stranger)
        assert out == []
    assert e.detection.ring is not None and e.detection.ring.health == 0


def test_a_suspect_that_speaks_is_cleared_and_a_late_dead_changes_nothing() -> None:
    e = engine_with(PEERS)
    victim, monitor = judged_here(PEERS)
    row = sorted(PEERS).index(victim)
    e.receive(judged(MsgType.SUSPECT, monitor, victim), 1.0, source=monitor)
    assert e.state(1.0)["members"][row]["state"] == "suspect"
    e.receive(announce(victim, seq=9), 1.2, source=victim)  # its refutation
    assert e.state(1.2)["members"][row]["state"] == "alive"
    e.receive(judged(MsgType.DEAD, monitor, victim, seq=6), 2.0, source=monitor)  # about what it said before
    e.tick(10.0)
    assert victim in e.membership
    assert e.stats["probe_ignored:dead:stale"] == 1


def test_a_suspicion_or_death_of_ours_is_refuted_at_once_but_not_echoed_without_bound() -> None:
    e = engine_with(PEERS)
    out = e.receive(judged(MsgType.SUSPECT, PEERS[0], ME), 1.0, source=PEERS[0])
    assert [decode(o.data).type for o in out] == [MsgType.ANNOUNCE]
    sent = 0
    for i in range(100):  # a flood from one member: a few refutations a second, not one each
        sent += len(e.receive(judged(MsgType.DEAD, PEERS[0], ME, seq=10 + i), 1.0 + i / 1000, source=PEERS[0]))
    assert sent <= 4


def test_only_a_judge_whose_pings_reach_us_makes_us_doubt_our_speed() -> None:
    """A judge's SUSPECT about us says our ACK came late once its PINGs reach us; while none has
    (unicast has no way from it to us: TTL mode), it says nothing of our speed, however often."""
    e = engine_with(PEERS)
    ring = e.detection.ring
    judge = next(j for j in judges_of(ME, PEERS) if j != ME)
    for i in range(5):
        e.receive(judged(MsgType.SUSPECT, judge, ME, seq=10 + i), 1.0 + i, source=judge)
    assert ring is not None and ring.health == 0 and e.stats["suspect_of_us"] == 5
    e.receive(judged(MsgType.PING, judge, ME, seq=20, number=77), 6.0, source=judge)
    for i in range(12):  # a burst after one PING counts once
        e.receive(judged(MsgType.SUSPECT, judge, ME, seq=21 + i), 6.8 + i / 1000, source=judge)
    assert ring.health == 1
    e.receive(judged(MsgType.PING, judge, ME, seq=40, number=78), 8.0, source=judge)
    e.receive(judged(MsgType.DEAD, judge, ME, seq=41), 8.8, source=judge)
    assert ring.health == 2


def test_pings_are_answered_once_each_up_to_a_rate_and_only_about_us() -> None:
    e = engine_with(PEERS)
    stranger = ip_address("198.18.5.5")
    acks = 0
    for i in range(200):
        out = e.receive(judged(MsgType.PING, stranger, ME, seq=i + 1, number=i), 1.0 + i / 1000, source=stranger)
        acks += len(out)
        for o in out:
            reply = decode(o.data)
            assert reply.type is MsgType.ACK and o.to == stranger and reply.subject is not None
            assert reply.subject.number == i  # the nonce, echoed
    assert 10 <= acks <= 25  # the burst, then 10 a second
    assert e.receive(judged(MsgType.PING, PEERS[0], PEERS[1], seq=999), 5.0, source=PEERS[0]) == []


def test_ping_requests_from_strangers_are_ignored_and_from_members_bounded() -> None:
    e = engine_with(PEERS)
    stranger = ip_address("198.18.5.5")
    assert e.receive(judged(MsgType.PING_REQ, stranger, PEERS[1]), 1.0, source=stranger) == []
    pings = 0
    for i in range(100):
        out = e.receive(judged(MsgType.PING_REQ, PEERS[0], PEERS[1], seq=i + 1, number=i), 1.0, source=PEERS[0])
        pings += sum(1 for o in out if decode(o.data).type is MsgType.PING and o.to == PEERS[1])
    assert pings <= 8  # a burst of eight per requester, then four a second


def test_an_ack_with_a_wrong_nonce_keeps_nobody_alive() -> None:
    lan = lan_of(5)
    victim = lan.engines[2]
    addr = victim.local.primary
    lan.crash(2)
    forger = ip_address("198.18.0.2")  # a member acking in the crashed node's name, nonce guessed
    t0 = lan.now
    while lan.now < t0 + 6:
        lan.run_until(lan.now + 0.1)
        for e in lan.engines[:2] + lan.engines[3:]:
            e.receive(judged(MsgType.ACK, forger, addr, seq=int(lan.now * 100), number=12345), lan.now, source=forger)
    assert all(addr not in e.membership for e in lan.engines[:2] + lan.engines[3:])


def test_a_forwarded_probe_is_malformed() -> None:
    data = with_hops(judged(MsgType.PING, PEERS[0], ME), 1)
    try:
        decode(data)
    except DecodeError as e:
        assert e.kind == "forwarded probe"
    else:
        raise AssertionError("a forwarded PING decoded")


def test_version_1_nodes_drop_the_new_types_but_read_announcements() -> None:
    assert judged(MsgType.PING, PEERS[0], ME)[4] == 2
    assert announce(PEERS[0])[4] == 1  # unchanged: a version 1 node keeps hearing us


def test_a_node_restarting_is_not_probed_until_its_next_life_and_keeps_its_place() -> None:
    lan = lan_of(10)
    node = lan.engines[4]
    addr = node.local.primary
    lan._emit(4, node.restarting())
    lan.crash(4)  # the old life is gone; the next one takes 8 s to come up (a slow restart)
    lan.run_until(lan.now + 8.0)
    assert all(addr in e.membership for i, e in enumerate(lan.engines) if i != 4)
    assert failed(lan) == 0
    again = Engine(LocalNode(node.local.node_id, (addr,)), node.incarnation + 1, lan.settings,
                   random.Random(5), wall=lambda: lan.now)
    lan.restart(4, again)
    lan.run_until(lan.now + 3.0)
    assert all(e.membership.members[addr].incarnation == node.incarnation + 1
               for i, e in enumerate(lan.engines) if i != 4)
    assert all(not e.detection.ring.timers.held for e in lan.engines if e.detection.ring)  # probed again


def test_a_restart_that_never_comes_back_is_detected_after_the_grace() -> None:
    lan = lan_of(6)
    node = lan.engines[2]
    addr = node.local.primary
    lan._emit(2, node.restarting())
    lan.crash(2)
    lan.run_until(lan.now + 14.0)
    assert all(addr in e.membership for i, e in enumerate(lan.engines) if i != 2)
    lan.run_until(lan.now + 6.0)  # grace 15 s, then a probe, its helpers and the suspicion
    assert all(addr not in e.membership for i, e in enumerate(lan.engines) if i != 2)


def test_local_health_slows_a_node_that_was_wrong_and_recovers_with_answers() -> None:
    from omdisc.core.detection.timers import ProbeSettings, Target, Timers

    d = Timers(ProbeSettings(), random.Random(1))
    peer = ip_address("198.18.0.2")
    target = Target(peer, INC)
    sends, _ = d.tick(-1.0, [target], lambda a: [])
    d.acked(peer, peer, sends[0].number, -0.9)  # it answers us: unicast between us works
    sends, _ = d.tick(0.0, [target], lambda a: [])
    ping = sends[0]
    d.tick(0.4, [], lambda a: [])  # no ACK: helpers (none here)
    d.tick(0.8, [], lambda a: [])  # still none: suspect
    assert peer in d.suspects and d.health == 0
    d.heard(peer, (INC, 50))  # it refutes: we were wrong
    assert peer not in d.suspects and d.health == 1
    sends, _ = d.tick(2.0, [target], lambda a: [])
    assert d.probes[peer].deadline == 2.0 + 2 * 0.4  # timeouts twice as long now
    d.acked(peer, peer, sends[0].number, 2.1)  # answered in time, directly
    assert d.health == 0
    assert ping.type is MsgType.PING


def test_a_member_our_unicast_never_reached_refutes_without_slowing_us() -> None:
    """Multicast routed, unicast not (TTL mode): every probe of it fails for the path, and each
    refutation, however many, says nothing of our speed."""
    from omdisc.core.detection.timers import ProbeSettings, Target, Timers

    d = Timers(ProbeSettings(), random.Random(1))
    peer = ip_address("198.18.0.2")
    for k in range(10):
        d.tick(2.0 * k, [Target(peer, INC)], lambda a: [])
        d.tick(2.0 * k + 0.45, [], lambda a: [])
        d.tick(2.0 * k + 0.9, [], lambda a: [])
        assert peer in d.suspects
        assert d.heard(peer, (INC, 50 + k))  # its refutation, by multicast
    assert d.health == 0


def test_a_path_that_worked_and_broke_slows_us_once_not_to_the_top() -> None:
    """A member that answered us, then whose unicast stopped reaching us (a route or a firewall
    changed): the first refuted suspicion may be our slowness, the ones after it are the path."""
    from omdisc.core.detection.timers import ProbeSettings, Target, Timers

    d = Timers(ProbeSettings(), random.Random(1))
    peer = ip_address("198.18.0.2")
    sends, _ = d.tick(-2.0, [Target(peer, INC)], lambda a: [])
    d.acked(peer, peer, sends[0].number, -1.9)
    for k in range(10):
        d.tick(2.0 * k, [Target(peer, INC)], lambda a: [])
        d.tick(2.0 * k + 0.45 * (1 + d.health), [], lambda a: [])
        d.tick(2.0 * k + 0.9 * (1 + d.health), [], lambda a: [])
        assert peer in d.suspects
        assert d.heard(peer, (INC, 50 + k))
    assert d.health == 1


def test_a_monitor_whose_timer_fires_late_judges_nobody_by_its_own_delay() -> None:
    from omdisc.core.detection.timers import ProbeSettings, Target, Timers

    d = Timers(ProbeSettings(), random.Random(1))
    peer = ip_address("198.18.0.2")
    target = Target(peer, INC)
    d.tick(0.0, [target], lambda a: [])
    sends, gone = d.tick(3.0, [], lambda a: [ip_address("198.18.0.3")])  # stopped for 3 s: the ACK may be unread
    assert sends == [] and gone == [] and not d.probes[peer].indirect and d.health == 1


# --- our own checks: before a member expires, and when a suspicion ends in silence ----------------


def ack(sender: IPAddress, ping: Message, seq: int) -> bytes:
    assert ping.subject is not None
    return encode(Message(MsgType.ACK, 7, INC, seq, (sender,), subject=Subject(sender, INC, ping.subject.number)))


def run(e: Engine, start: float, end: float, answering: set[IPAddress], unicast: bool = False) -> list[Message]:
    """Tick every 50 ms; the members in `answering` ACK every PING sent to them (their announces
    are lost). Returns what the engine multicast (and unicast too, if asked)."""
    multicast: list[Message] = []
    seq = 1000
    now = start
    while now < end:
        for o in e.tick(now):
            msg = decode(o.data)
            if o.to is None or unicast:
                multicast.append(msg)
            elif msg.type is MsgType.PING and o.to in answering:
                seq += 1
                e.receive(ack(o.to, msg, seq), now + 0.001, source=o.to)
        now += 0.05
    return multicast


def test_a_member_heard_only_through_its_answers_is_kept_past_dead_interval() -> None:
    e = engine_with(PEERS, Settings(announce_rate=10.0))  # heard at 0.1; dead_interval 35 s; none announces again
    alive = {PEERS[0], PEERS[1], PEERS[4]}  # they answer our checks before they would expire; the rest are silent
    run(e, 0.2, 35.0, alive)
    assert all(p in e.membership for p in PEERS[2:]), "removed before its dead_interval"
    run(e, 35.0, 40.0, alive)
    assert [p for p in PEERS if p in e.membership] == sorted(alive)
    assert e.stats["probe_checks"] >= 5 and e.stats["probe_checks_answered"] >= 1
    run(e, 40.0, 75.0, alive)
    assert PEERS[4] in e.membership  # each answer counts as hearing from it: checked again, kept again


def test_a_suspect_whose_dead_never_reached_us_goes_after_our_own_check() -> None:
    e = engine_with(PEERS)
    victim, monitor = judged_here(PEERS)
    answering = set(PEERS) - {victim}
    e.receive(judged(MsgType.SUSPECT, monitor, victim), 1.0, source=monitor)  # both its DEADs are lost
    run(e, 1.0, 3.4, answering)
    assert victim in e.membership  # the DEADs were still due
    run(e, 3.4, 5.6, answering)  # four PINGs 0.4 s apart, then the verdict
    assert victim not in e.membership and e.stats["failed"] == 1


def test_a_suspect_whose_refutation_we_missed_is_kept_when_it_answers_our_check() -> None:
    e = engine_with(PEERS)
    victim, monitor = judged_here(PEERS)
    e.receive(judged(MsgType.SUSPECT, monitor, victim), 1.0, source=monitor)
    run(e, 1.0, 10.0, set(PEERS))
    assert victim in e.membership
    assert e.state(10.0)["members"][sorted(PEERS).index(victim)]["state"] == "alive"
    assert e.stats["failed"] == 0


def test_a_refutation_is_said_twice() -> None:
    e = engine_with(PEERS)
    run(e, 0.2, 5.0, set(PEERS))  # past the JOIN's own repeats; the next announce is 9 s or more on
    first = e.receive(judged(MsgType.SUSPECT, PEERS[0], ME), 5.0, source=PEERS[0])
    later = run(e, 5.05, 5.6, set(PEERS))
    refutations = [decode(o.data) for o in first] + [m for m in later if m.type is MsgType.ANNOUNCE]
    assert [m.type for m in refutations] == [MsgType.ANNOUNCE] * 2
    assert refutations[1].seq > refutations[0].seq


def test_a_member_without_rounds_judges_nobody_and_only_gets_the_subject_checked() -> None:
    """A node of the address-ordered ring (no ROUNDS flag) was believed about the four after it in
    address order: a host claiming to be one would choose its victims by its address."""
    e = engine_with(PEERS)
    older = ip_address("198.18.0.65")  # just before .70: one of its monitors on an address-ordered ring
    e.receive(announce(older, flags=FLAG_PROBES), 0.5, source=older)
    victim = PEERS[5]
    e.receive(judged(MsgType.SUSPECT, older, victim), 1.0, source=older)
    e.receive(judged(MsgType.DEAD, older, victim, seq=6), 2.6, source=older)
    run(e, 2.6, 8.0, {*PEERS, older})  # a judge's DEAD would have removed it at 2.6: it answers our check
    assert victim in e.membership and e.stats["doubts"] == 1 and e.stats["failed"] == 0
    e.receive(judged(MsgType.SUSPECT, older, ME, seq=7), 8.0, source=older)
    assert e.detection.ring is not None and e.detection.ring.health == 0


def test_a_node_of_an_older_release_that_comes_hears_us_soon_not_at_our_grown_period() -> None:
    """It knows us only from a SNAPSHOT and expires us after its own dead_interval, unchecked."""
    e = engine_with(MANY)
    for _ in range(3):  # past the two early announcements after our JOIN
        e.tick(e.next_announce)
    now = e.next_announce - 300.0
    assert now > 30.0  # 41 nodes: every 320 s or so
    older = ip_address("198.18.0.99")
    e.receive(announce(older, flags=FLAG_PROBES), now, source=older)
    e.tick(now)
    assert e.next_announce <= now + 0.43  # spread over 10 ms a node
    assert e.announce_scale() == 1  # 42 nodes at its 10 a second: every announce_interval
