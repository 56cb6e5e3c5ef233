from __future__ import annotations

import pytest

from omdisc.engine import Settings
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
    lan.engines[1] = type(lan.engines[2])(lan.engines[1])  # a crash: silence, no LEAVE
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
