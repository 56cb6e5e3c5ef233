"""Two networks joined by a gateway, default (packaged) settings, on the simulated LAN: the lab's
test_gateways case, over many seeds, so that whichever node happens to answer a JOIN first is
covered (tests/sim)."""

from __future__ import annotations

import random

import pytest

from omdisc.core.engine import Engine, Settings
from tests.sim import Convergence, Departure, Removals, Sim

SEEDS = range(1, 41)


def two_lans(seed: int, settings: Settings | None = None) -> tuple[Sim, list[int]]:
    """A gateway on lanA and lanB, then two nodes on each side, 0.2 s apart (as the lab starts
    them). Returns the simulator and the four nodes."""
    sim = Sim(settings or Settings(), seed=seed, latency=0.0002, jitter=0.0003)
    # the lab's addresses: on the ring of lanA the gateway comes after a1 and a2, so a2 alone probes a1
    sim.add("198.18.1.254", segments=("lanA", "lanB"), route=True)
    nodes = []
    for k, (lan, addr) in enumerate([("lanA", "198.18.1.1"), ("lanA", "198.18.1.2"),
                                     ("lanB", "198.18.2.1"), ("lanB", "198.18.2.2")]):
        sim.add(addr, segments=(lan,), start=0.2 * (k + 1))
        nodes.append(k + 1)
    return sim, nodes


@pytest.mark.parametrize("seed", SEEDS)
def test_every_map_is_complete_within_a_second_of_the_last_start(seed: int) -> None:
    """A joiner answered by a neighbour knows the gateway only from that SNAPSHOT, and takes
    forwards only from a gateway it heard itself: the gateway's greeting (an ANNOUNCE where a node
    JOINs) lets it take the far side at once, not an announce period (10 s) later."""
    sim, nodes = two_lans(seed)
    done = Convergence(sim, [0, *nodes])
    sim.run_until(0.8 + 1.0)  # the last start is at 0.8 s
    assert done.at is not None, {i: len(sim.engines[i].membership) for i in range(5)}


@pytest.mark.parametrize("seed", SEEDS)
def test_a_node_killed_just_after_joining_leaves_both_sides_within_5_s(seed: int) -> None:
    """Killed before its new neighbour heard it speak (that neighbour knows it from a SNAPSHOT
    only): the neighbour's SUSPECT and DEAD are still believed by those who heard it itself."""
    sim, nodes = two_lans(seed)
    done = Convergence(sim, [0, *nodes])
    while done.at is None and sim.now < 2.0:
        sim.run_for(0.005)  # killed as soon as every map is complete (as the lab does)
    assert done.at is not None
    removals = Removals(sim)
    gone = Departure(sim, nodes[0])
    sim.crash(nodes[0])
    sim.run_for(8.0)
    assert gone.took is not None and gone.took <= 5.0, gone.took
    assert removals.false == []


def test_a_gateway_that_dies_takes_its_far_side_out_of_every_map_and_brings_it_back_when_it_returns() -> None:
    """Nobody else can tell the far side is gone: its own network's DEADs came through the gateway,
    and its announcements are minutes apart. When the gateway starts again, every node announces
    once (spread) so that it carries each side to the other."""
    sim, nodes = two_lans(1)
    sim.run_for(5.0)  # its start was seconds ago (the JOIN retries the nodes heard): its restart still counts
    assert all(len(sim.engines[i].membership) == 4 for i in nodes)
    removals = Removals(sim)
    sim.crash(0)
    sim.run_for(6.0)
    assert all(len(sim.engines[i].membership) == 1 for i in nodes), [len(sim.engines[i].membership) for i in nodes]
    side = {nodes[0]: "A", nodes[1]: "A", nodes[2]: "B", nodes[3]: "B"}
    assert [(t, j, k) for t, j, k in removals.false if side.get(j) == side.get(k)] == []  # neighbours stay
    removals.close()
    old = sim.engines[0]
    again = Engine(old.local, old.incarnation + 1, old.settings, random.Random(7), wall=old.wall)
    again.route_between = old.route_between  # a gateway again
    sim.restart(0, again)
    done = Convergence(sim, [0, *nodes])
    sim.run_for(8.0)
    assert done.at is not None, [len(sim.engines[i].membership) for i in [0, *nodes]]


@pytest.mark.parametrize("seed", SEEDS[:10])
def test_a_gateway_that_dies_just_after_a_join_it_did_not_answer_takes_its_far_side_along(seed: int) -> None:
    """The gateway is busy when the last node JOINs: a neighbour answers, and the joiner learns the
    far side from that SNAPSHOT, through a gateway it has not heard itself yet (the path unknown).
    The gateway dies as soon as every map is complete, before that far node's next announcement
    came through it: the joiner must still take the far side out with it. (The lab's intervals:
    with them the neighbour has heard the far side itself by then, and tells it.)"""
    sim, nodes = two_lans(seed, Settings(announce_interval=0.5, dead_interval=2.0))
    sim.stall(0, 0.3, at=0.8)  # the last start is at 0.8 s
    done = Convergence(sim, [0, *nodes])
    while done.at is None and sim.now < 3.0:
        sim.run_for(0.005)
    assert done.at is not None
    sim.crash(0)
    sim.run_for(6.0)
    assert all(len(sim.engines[i].membership) == 1 for i in nodes), [
        sorted(str(m.primary) for m in sim.engines[i].membership.members.values()) for i in nodes]
    # gone through the gateway, not as neighbours of ours: nothing to reconnect to on our network
    for i in nodes[2:]:
        ring = sim.engines[i].detection.ring
        assert ring is not None and not {str(a) for a in ring.fallen} & {"198.18.1.1", "198.18.1.2"}, ring.fallen
