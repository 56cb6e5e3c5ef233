"""The failure detector at 50 nodes on the simulated LAN (tests/sim), default settings: what the
users of such a cluster notice (issue 10's bounds, at this size)."""

from __future__ import annotations

from omdisc.engine import Settings
from tests.sim import Departure, Removals, Sim

N = 50


def cluster(loss: float = 0.0, seed: int = 1) -> Sim:
    """N nodes in every map, a switched LAN (0.2-0.5 ms), then a minute for probes and announces to
    find their pace."""
    sim = Sim(Settings(), seed=seed, latency=0.0002, jitter=0.0003, loss=loss)
    sim.add_settled(N)
    sim.run_for(60.0)
    return sim


def test_a_crashed_node_is_out_of_every_live_map_within_5_s() -> None:
    sim = cluster()
    removals = Removals(sim)
    took = []
    for k in sim.rng.sample(sim.live(), 5):
        gone = Departure(sim, k)
        sim.crash(k)
        sim.run_for(10.0)
        took.append(gone.took)
    assert all(t is not None and t <= 5.0 for t in took), took
    assert removals.false == []


def test_five_percent_loss_for_ten_minutes_removes_no_live_node() -> None:
    sim = cluster(loss=0.05, seed=2)
    removals = Removals(sim)
    sim.run_for(600.0)
    assert removals.false == [], f"{len(removals.false)} removals of live nodes, the first (time, map, node): " \
                                 f"{removals.false[:3]}"


def test_steady_load_per_node_is_at_most_25_datagrams_in_and_5_out_a_second() -> None:
    sim = cluster()
    before = sim.totals()
    sim.run_for(60.0)  # 50 nodes announce every 10 s (the period grows past 100 nodes)
    after = sim.totals()
    received = (after.received - before.received) / N / 60.0
    sent = (after.sent - before.sent) / N / 60.0
    assert received <= 25.0 and sent <= 5.0, (received, sent)
