"""A settled node that missed a newcomer's JOIN: it learns the newcomer from the SNAPSHOT that
answers it, by PINGing the newcomer and taking its ACK (omdisc/introductions.py)."""

from __future__ import annotations

import random
from ipaddress import ip_address

from omdisc.engine import Engine, LocalNode, Outgoing, Settings
from omdisc.introductions import BURST, TRIES
from omdisc.protocol import FLAG_PROBES, MemberRecord, Message, MsgType, Snapshot, Subject, decode, encode
from tests.sim import Convergence, Sim

NOW_WALL = 1_800_000_000.0
INC = int(NOW_WALL * 1e6)
ME = ip_address("198.18.0.1")
PEER = ip_address("198.18.0.2")
JOINER = ip_address("198.18.0.9")


def settled() -> Engine:
    e = Engine(LocalNode(1, (ME,)), INC, Settings(), random.Random(1), wall=lambda: NOW_WALL)
    e.start(0.0)
    e.receive(encode(Message(MsgType.ANNOUNCE, 2, INC, 1, (PEER,), FLAG_PROBES)), 0.1, "eth0", PEER)
    e.tick(10.0)  # joined long ago: a SNAPSHOT's records teach it nothing now
    return e


def snapshot_for(joiner: object, seq: int = 2) -> bytes:
    recs = (MemberRecord(2, INC, 0, (PEER,)), MemberRecord(9, INC, 0, (joiner,)))  # type: ignore[arg-type]
    snap = Snapshot(joiner, INC, 1, 1, recs)  # type: ignore[arg-type]
    return encode(Message(MsgType.SNAPSHOT, 2, INC, seq, (PEER,), FLAG_PROBES, snapshot=snap))


def pings(out: list[Outgoing]) -> list[tuple[object, Message]]:
    return [(o.to, m) for o in out if (m := decode(o.data)).type is MsgType.PING]


def ack(ping: Message, seq: int = 3, origin: object = JOINER) -> bytes:
    assert ping.subject is not None
    return encode(Message(MsgType.ACK, 9, INC, seq, (origin,), FLAG_PROBES,  # type: ignore[arg-type]
                          subject=Subject(origin, INC, ping.subject.number)))  # type: ignore[arg-type]


def test_the_joiner_of_a_snapshot_we_did_not_know_is_pinged_and_its_ack_makes_it_a_member() -> None:
    e = settled()
    (to, ping), = pings(e.receive(snapshot_for(JOINER), 10.0, "eth0", PEER))
    assert to == JOINER and JOINER not in e.membership  # never taken from the SNAPSHOT's word
    e.receive(ack(ping), 10.01, "eth0", JOINER)
    m = e.membership.members[JOINER]
    assert m.firsthand and m.node_id == 9 and e.stats["introductions_answered"] == 1


def test_silence_costs_three_pings_and_adds_nobody() -> None:
    e = settled()
    sent = pings(e.receive(snapshot_for(JOINER), 10.0, "eth0", PEER))
    t = 10.0
    while t < 13.0:
        t = e.next_deadline()
        sent += pings(e.tick(t))
    assert len([to for to, _ in sent if to == JOINER]) == TRIES and JOINER not in e.membership
    assert e.stats["introductions_unanswered"] == 1


def test_an_ack_without_our_nonce_or_from_another_host_adds_nobody() -> None:
    e = settled()
    (_, ping), = pings(e.receive(snapshot_for(JOINER), 10.0, "eth0", PEER))
    assert ping.subject is not None
    wrong = Message(MsgType.PING, 1, INC, 1, (ME,), subject=Subject(JOINER, INC, ping.subject.number + 1))
    e.receive(ack(wrong), 10.01, "eth0", JOINER)
    evil = ip_address("198.18.0.66")
    e.receive(ack(ping), 10.02, "eth0", evil)  # its UDP source is not the joiner's: dropped by the guard
    e.receive(ack(ping, origin=evil), 10.03, "eth0", evil)  # an ACK in its own name, about itself
    assert JOINER not in e.membership and evil not in e.membership


def test_made_up_snapshots_make_a_bounded_number_of_pings() -> None:
    e = settled()
    sent = []
    for k in range(1000):  # a member naming a new made-up joiner in each
        sent += pings(e.receive(snapshot_for(ip_address(f"198.19.{k // 250}.{k % 250 + 1}"), seq=2 + k),
                                10.0 + k / 1000, "eth0", PEER))
    assert len(sent) <= BURST + 8 * 1.0 + 1  # a burst, then 8 a second
    assert e.stats["introductions_refused"] >= 1000 - len(sent)


def test_a_newcomer_is_in_every_map_within_two_seconds_at_five_percent_loss() -> None:
    """40 nodes announcing every 80 s (announce_rate 0.5), 5% loss: about two nodes miss each JOIN.
    They used to wait for the newcomer's first announcement, up to 80 s."""
    sim = Sim(Settings(announce_rate=0.5), seed=5, latency=0.0002, jitter=0.0003, loss=0.05)
    sim.add_settled(40)
    sim.run_for(100.0)
    took = []
    for _ in range(8):
        t0 = sim.now
        sim.add()
        joined = Convergence(sim, sim.live())
        sim.run_for(5.0)
        took.append(None if joined.at is None else round(joined.at - t0, 3))
        joined.close()
    assert all(t is not None and t < 2.0 for t in took), took
    assert sum(e.stats["introductions_answered"] for e in sim.engines) > 0
