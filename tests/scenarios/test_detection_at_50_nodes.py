"""The failure detector at 50 nodes on the simulated LAN (tests/sim), default settings: what the
users of such a cluster notice (issue 10's bounds, at this size)."""

from __future__ import annotations

from omdisc.core.engine import Settings
from tests.sim import Convergence, Departure, Removals, Sim

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


def test_steady_load_per_node_is_at_most_2_2_datagrams_each_way_a_second() -> None:
    sim = cluster()
    before = sim.totals()
    sim.run_for(600.0)  # a PING and an ACK each way a second; 50 nodes announce every 320 s
    after = sim.totals()
    received = (after.received - before.received) / N / 600.0
    sent = (after.sent - before.sent) / N / 600.0
    assert received <= 2.2 and sent <= 2.2, (received, sent)


def test_a_newcomer_to_a_cluster_that_announces_seldom_learns_everyone_and_drops_nobody() -> None:
    """Past announce_rate x announce_interval nodes the announce period grows (here 8-fold: 40 nodes
    where 5 would do), so what a SNAPSHOT tells a newcomer can be minutes old; a newcomer still
    judging that by the dead_interval of its empty map dropped most of the cluster again."""
    sim = Sim(Settings(announce_rate=0.5), seed=4, latency=0.0002, jitter=0.0003)
    sim.add_settled(40)
    sim.run_for(200.0)  # the announces' ages spread over their 80 s period
    removals = Removals(sim)
    sim.add()
    joined = Convergence(sim, sim.live())
    sim.run_for(120.0)
    assert joined.at is not None and joined.at - 200.0 < 1.0
    assert removals.false == []


def test_a_node_that_lost_a_newcomers_join_and_first_announcement_learns_it_from_the_second() -> None:
    """At 5% loss 1 node in 400 loses both; the newcomer's second announcement comes one
    announce_interval after its first (20 s after its start), not a grown period later (160 s
    here, 41 nodes where 5 would do; 160 s at 1,000 nodes by default)."""
    sim = Sim(Settings(announce_rate=0.5), seed=5, latency=0.0002, jitter=0.0003)
    sim.add_settled(40)
    sim.run_for(200.0)
    deaf = sim.live()[7]
    t0 = sim.now
    newcomer = len(sim.engines)
    sim.drop_multicast = lambda sender, receiver: (sender, receiver) == (newcomer, deaf) and sim.now < t0 + 15.0
    removals = Removals(sim)
    sim.add()
    joined = Convergence(sim, sim.live())
    sim.run_for(15.0)
    assert joined.at is None and sim.engines[newcomer].local.primary not in sim.engines[deaf].membership
    sim.run_for(10.0)
    assert joined.at is not None and joined.at - t0 <= 23.0, joined.at and joined.at - t0
    assert removals.false == []
