"""Multicast routed between two networks and unicast not: TTL mode through a multicast router that
carries only the group (docs/protocol.md, "Through gateways", its last paragraph), on the simulated
LAN (tests/sim). The probes across fail every time and the far node refutes every SUSPECT, so
nobody is removed; no node takes that for its own slowness (local health), so a crash is still
found in normal time on either side, and so is the router's loss."""

from __future__ import annotations

import pytest

from omdisc.core.engine import Settings
from tests.sim import Departure, Removals, Sim

SEEDS = range(1, 21)
NORMAL = 6.0  # seconds: the protocol's worst case with the defaults is about 5.1 s
ACROSS = 1  # the node on the far network; 0 and 2 share the near one


def ttl_mode(seed: int) -> Sim:
    """Three nodes in each other's maps, whose unicast to or from node ACROSS has no way (20 s of
    it: the probes across failed about ten times each way)."""
    sim = Sim(Settings(), seed=seed, latency=0.0002, jitter=0.0003)
    sim.drop_unicast = lambda sender, receiver: (sender == ACROSS) != (receiver == ACROSS)
    sim.add_settled(3)
    sim.run_for(20.0)
    return sim


@pytest.mark.parametrize("seed", SEEDS)
def test_probes_that_cannot_cross_remove_nobody_and_slow_no_judgement(seed: int) -> None:
    sim = ttl_mode(seed)
    assert all(len(e.membership) == 2 for e in sim.engines), "a node unicast cannot reach was removed"
    assert sim.unroutable > 0 and sum(e.stats["refuted"] for e in sim.engines) > 0  # the probes across did fail
    assert [e.detection.ring.health for e in sim.engines if e.detection.ring] == [0, 0, 0]
    removals = Removals(sim)
    gone = Departure(sim, 2)
    sim.crash(2)
    sim.run_for(3 * NORMAL)
    assert gone.took is not None and gone.took <= NORMAL, f"a crash on the near network found after {gone.took}"
    assert removals.false == []


@pytest.mark.parametrize("seed", SEEDS)
def test_when_the_router_stops_each_side_takes_the_other_out_in_normal_time(seed: int) -> None:
    sim = ttl_mode(seed)
    t0 = sim.now
    sim.partition([ACROSS])
    left = {i: 0 if i == ACROSS else 1 for i in range(3)}  # members each keeps: its own side's
    out: dict[int, float] = {}
    while sim.now < t0 + 3 * NORMAL and len(out) < 3:
        sim.run_for(0.05)
        out.update({i: sim.now - t0 for i, e in enumerate(sim.engines)
                    if i not in out and len(e.membership) == left[i]})
    assert len(out) == 3 and max(out.values()) <= NORMAL, f"seconds until each map lost the other side: {out}"
