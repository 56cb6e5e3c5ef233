"""Failure detection between real daemons (docs/protocol.md, "Failure detection"): a kill -9'd node
is out of every map in seconds, not after dead_interval; a node frozen for a second, or a LAN that
loses 5% of its datagrams, costs nobody their place.

Every daemon here runs with the packaged intervals (announce 10 s, dead 35 s): only the probes can
remove a node within the times asserted.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_faults import MARGIN, kernel_ids, maps_are, stats
from tests.lab.netlab import Daemon, Lab, Lan, bridge_counted, bridge_table, wait_for

PACKAGED: dict[str, Any] = {"announce_interval": 10.0, "dead_interval": 35.0}
DETECTION = 0.5 + 1.1 + 0.5 + 0.5 + 1.5 + 0.75  # probe phase and jitter, ACK, helpers, suspicion, DEAD lost once
LOSS_TABLE = "omdtloss"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Lab, Lan, list[Daemon]]]:
    with Lab(tmp_path) as lab:
        lan = lab.lan()
        daemons = [lab.node(f"n{i}", lan, f"198.18.0.{i}/24").start(**PACKAGED) for i in range(1, 7)]
        wait_for(lambda: maps_are(daemons, set(range(1, 7))), 15, what="six daemons to converge")
        yield lab, lan, daemons
        assert not lab.internal_errors()


def lossy(lan: Lan, percent: int) -> None:
    """Drop `percent`% of the UDP datagrams the LAN's bridge forwards, at random (no netem here)."""
    bridge_table(lan, LOSS_TABLE, [f"meta l4proto udp numgen random mod 100 < {percent} counter drop"])


def dropped(lan: Lan) -> int:
    return bridge_counted(lan, LOSS_TABLE)[0]


def watch_maps(daemons: list[Daemon], ids: set[int], seconds: float) -> dict[str, list[int]]:
    """Every map, polled for `seconds`: the first wrong one seen (empty: always right)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        wrong = {d.node.name: sorted(kernel_ids(d)) for d in daemons if kernel_ids(d) != ids}
        if wrong:
            return wrong
        time.sleep(0.05)
    return {}


def test_a_killed_node_is_out_of_every_map_within_seconds(cluster: tuple[Lab, Lan, list[Daemon]]) -> None:
    _, _, daemons = cluster
    victim, rest = daemons[2], daemons[:2] + daemons[3:]
    victim.proc.kill()  # kill -9: no LEAVE
    t0 = time.monotonic()
    gone_at: dict[str, float] = {}

    def all_dropped() -> bool:
        for d in rest:
            if d.node.name not in gone_at and 3 not in kernel_ids(d):
                gone_at[d.node.name] = time.monotonic() - t0
        return len(gone_at) == len(rest)

    wait_for(all_dropped, DETECTION + MARGIN, interval=0.02, what="every map to drop the killed node")
    times = sorted(gone_at.values())
    print(f"kill -9: out of {len(rest)} maps after {times[0]:.2f}..{times[-1]:.2f}s (dead_interval 35s)")
    assert maps_are(rest, {1, 2, 4, 5, 6})
    # the probes did it, not expiry (state.json follows the map within a quarter second)
    wait_for(lambda: sum(stats(d).get("failed", 0) for d in rest) >= 1, 2, what="the removals counted as failed")


def test_a_node_frozen_for_a_second_keeps_its_place(cluster: tuple[Lab, Lan, list[Daemon]]) -> None:
    _, _, daemons = cluster
    frozen = daemons[3]
    for _ in range(3):
        frozen.signal(signal.SIGSTOP)
        time.sleep(1.0)  # the fault itself: a second without scheduling
        frozen.signal(signal.SIGCONT)
        assert not watch_maps(daemons, set(range(1, 7)), 3.0)
    assert sum(stats(d).get("failed", 0) for d in daemons) == 0


def test_five_percent_loss_removes_nobody(cluster: tuple[Lab, Lan, list[Daemon]]) -> None:
    _, lan, daemons = cluster
    lossy(lan, 5)
    wrong = watch_maps(daemons, set(range(1, 7)), 60.0)
    lost = dropped(lan)
    suspected = sum(stats(d).get("suspected", 0) for d in daemons)
    print(f"60 s at 5% loss: {lost} datagrams dropped by the bridge, {suspected} suspicions, all refuted")
    assert not wrong, f"a map lost a live node: {wrong}"
    assert lost > 20  # the loss was real (about 2,000 frames cross the bridge a minute)
    assert sum(stats(d).get("failed", 0) for d in daemons) == 0
