"""The simulator itself (tests/sim): what the failure-detection tests and the bench rely on."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address

from omdisc.core.engine import Outgoing, Settings
from omdisc.core.protocol import Message, MsgType, encode
from tests.sim import Convergence, Departure, Removals, Sim, in_map

QUICK = Settings(announce_interval=1.0, dead_interval=3.0)
# every node heard every second whatever the size, for the tests that count what the wire carries
CHATTY = Settings(announce_interval=1.0, dead_interval=3.0, announce_rate=100.0)


def cluster(n: int, seed: int = 1, settings: Settings = QUICK, converge: bool = True, **kw: float) -> Sim:
    """n nodes started within 1 s, run until every map holds every node."""
    sim = Sim(settings, seed=seed, **kw)  # type: ignore[arg-type]
    for _ in range(n):
        sim.add(start=sim.rng.uniform(0.0, 1.0))
    conv = Convergence(sim, list(range(n)))
    sim.run_until(3.0)
    assert conv.at is not None or not converge, f"{len(conv.complete)} of {n} maps complete"
    conv.close()
    return sim


def fingerprint(sim: Sim) -> list[object]:
    return [(c, sorted(map(str, e.membership.members)), dict(e.stats)) for c, e in zip(sim.counters, sim.engines,
                                                                                     strict=True)]


def test_a_seed_gives_the_same_run_every_time_and_another_seed_another() -> None:
    def run(seed: int) -> list[object]:
        sim = cluster(20, seed=seed, converge=False, loss=0.05, jitter=0.001)
        sim.crash(3)
        sim.stall(4, 0.7)
        sim.run_for(5.0)
        return fingerprint(sim)

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_each_reception_is_lost_at_the_loss_rate() -> None:
    sim = cluster(30, loss=0.2, converge=False, settings=CHATTY)
    before = sim.totals()
    sim.run_for(20.0)
    t = sim.totals()
    lost, got = t.lost - before.lost, t.received - before.received
    assert lost + got > 10_000  # 30 nodes x 29 receivers x ~20 announces
    assert abs(lost / (lost + got) - 0.2) < 0.02


def tapped(sim: Sim, data: bytes) -> list[int]:
    """The nodes that will have been given `data`."""
    got: list[int] = []
    sim.tap = lambda i, d: got.append(i) if d == data else None
    return got


def a_datagram(sim: Sim, i: int) -> bytes:
    e = sim.engines[i]
    return encode(Message(MsgType.ANNOUNCE, e.local.node_id, e.incarnation, 10_000, e.local.addresses))


def test_a_unicast_reaches_only_its_destination() -> None:
    sim = cluster(20)
    data = a_datagram(sim, 2)
    got = tapped(sim, data)
    sent, unroutable = sim.counters[2].sent_unicast, sim.unroutable
    sim.send(2, [Outgoing(data, to=sim.engines[7].local.primary), Outgoing(data, to=IPv4Address("198.18.200.1"))])
    sim.run_for(0.01)
    assert got == [7]
    assert sim.counters[2].sent_unicast == sent + 2 and sim.unroutable == unroutable + 1  # nobody has .200.1


def test_a_crash_is_silent_and_a_stop_says_leave() -> None:
    sim = cluster(20)
    crashed, stopped = sim.engines[3].local.primary, sim.engines[4].local.primary
    sent = sim.counters[3].sent
    sim.crash(3)
    sim.stop(4)
    gone_stopped = Departure(sim, 4)
    gone_crashed = Departure(sim, 3)
    sim.run_for(0.01)
    assert gone_stopped.at is not None and gone_stopped.took is not None and gone_stopped.took < 0.01
    assert all(in_map(sim.engines[j], crashed) for j in sim.live())  # nothing said: still there
    sim.run_for(QUICK.dead_interval + QUICK.announce_interval * 1.1)
    assert sim.counters[3].sent == sent  # not a datagram since
    assert gone_crashed.at is not None and gone_crashed.resurrections == 0
    assert not any(in_map(sim.engines[j], a) for j in sim.live() for a in (crashed, stopped))


def run_until_true(sim: Sim, done: Callable[[], bool], limit: float) -> None:
    end = sim.now + limit
    while not done():
        assert sim.now < end, "not within the limit"
        sim.run_for(0.1)


def test_a_partition_cuts_both_ways_and_heals() -> None:
    sim = cluster(30)
    cut = set(range(10))
    removals = Removals(sim)
    sim.partition(cut)
    on_side = {sim.engines[i].local.primary: i in cut for i in range(30)}

    def apart() -> bool:  # each side lost the other and kept its own
        return all(set(e.membership.members) == {a for a, side in on_side.items() if side == (i in cut)}
                   - {e.local.primary} for i, e in enumerate(sim.engines))

    run_until_true(sim, apart, 60.0)
    assert sum(sim.counters[i].cut for i in cut) > 0
    assert {(j in cut) != (k in cut) for _, j, k in removals.false} == {True}  # only across the cut
    conv = Convergence(sim, list(range(30)))
    sim.heal()
    run_until_true(sim, lambda: conv.at is not None, 60.0)


def test_a_stalled_node_reads_its_queue_late_drops_what_overflows_and_its_timers_fire_late() -> None:
    sim = cluster(20, buffer=5, settings=CHATTY)
    k = 6
    sent, got = sim.counters[k].sent, sim.counters[k].received
    sim.stall(k, 2.0)
    sim.run_for(1.999)
    assert sim.counters[k].sent == sent and sim.counters[k].received == got  # not a datagram in or out
    sim.run_for(0.001)  # SIGCONT
    assert sim.counters[k].received == got + 5  # its socket buffer, read at once
    assert sim.counters[k].overflow > 10  # 19 nodes announce about twice in 2 s
    assert sim.counters[k].sent > sent  # the announce that fell due while stopped: sent late


def test_segments_joined_by_a_gateway_and_unicast_routed_between_them() -> None:
    for routed in (True, False):
        sim = Sim(QUICK, routed=routed)
        for _ in range(4):
            sim.add(segments=("east",))
            sim.add(segments=("west",))
        sim.add(segments=("east", "west"), route=True)
        conv = Convergence(sim, list(range(9)))
        sim.run_until(3.0)
        assert conv.at is not None  # multicast crosses only through the gateway: it forwards
        data = a_datagram(sim, 0)
        got = tapped(sim, data)
        unroutable = sim.unroutable
        sim.send(0, [Outgoing(data, to=sim.engines[1].local.primary)])  # east to west
        sim.run_for(0.01)
        assert (got, sim.unroutable - unroutable) == (([1], 0) if routed else ([], 1))
