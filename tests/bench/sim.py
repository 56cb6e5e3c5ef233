"""Benchmark: the engines on the simulated LAN (tests/sim), default settings. Prints one table;
asserts nothing.

  python -m tests.bench.sim [--sizes 100 1000] [--storm-max N] [--minutes 10] [--loss 0 0.05]

For each size and loss rate, two runs:
- a join storm (sizes up to --storm-max): N nodes start within 1 s; how long after the last start
  every map is complete, and the multicast datagrams sent until the joins are over (3 s after the
  last start) per node;
- the steady state, `minutes` of simulated time from a settled cluster (Sim.add_settled: every
  node in every map, no join traffic): the load per node over the first 60% (datagrams received
  and sent a second); in the rest one node crashes (kill -9) every few seconds, each timed until
  it is out of every live map (p50, p99; "missed": not out when the run ends).
False removals (a node that is up dropped from a live map) are counted over both runs.
"""

from __future__ import annotations

import argparse
import time

from omdisc.core.engine import Settings
from tests.bench.rows import HEADER, LEGEND, Row, line, percentile
from tests.sim import Convergence, Departure, Removals, Sim

LATENCY, JITTER = 0.0002, 0.0003  # a switched LAN: 0.2-0.5 ms one way
STORM = 1.0  # every node starts within this many seconds
# after the last start, the join traffic is over: the last JOIN retry (Settings.join_retries: 1 s)
# and the answers to it (AnswerLimits: spread at most 1 s); the first periodic announce is 9 s on
JOINS_OVER = 3.0
STORM_LIMIT = 60.0  # a storm not converged this long after its last start is "never"


def network(loss: float, seed: int) -> Sim:
    return Sim(Settings(), seed=seed, latency=LATENCY, jitter=JITTER, loss=loss)


def storm(row: Row, seed: int) -> None:
    t0 = time.perf_counter()
    sim = network(row.loss, seed)
    starts = sorted(sim.rng.uniform(0.0, STORM) for _ in range(row.n))
    for t in starts:
        sim.add(start=t)
    conv = Convergence(sim, list(range(row.n)))
    removals = Removals(sim)
    last = starts[-1]
    sim.run_until(last + JOINS_OVER)
    row.per_join = sim.totals().sent_multicast / row.n  # probes (unicast) are not the joins' cost
    while conv.at is None and sim.now < last + STORM_LIMIT:
        sim.run_for(0.1)
    row.converge = None if conv.at is None else conv.at - last
    row.false_removals = (row.false_removals or 0) + len(removals.false)
    row.storm_wall = time.perf_counter() - t0


def late_join(sim: Sim) -> float | None:
    """One more node into the settled cluster: seconds from its start until it is in every map
    (and they all in its)."""
    t0 = sim.now
    sim.add()
    conv = Convergence(sim, [*sim.live()])
    while conv.at is None and sim.now < t0 + STORM_LIMIT:
        sim.run_for(0.01)
    return None if conv.at is None else conv.at - t0


def steady(row: Row, minutes: float, seed: int) -> None:
    sim = network(row.loss, seed)
    sim.add_settled(row.n)
    removals = Removals(sim)
    t0 = time.perf_counter()
    window = minutes * 60.0
    quiet = window * 0.6
    before = sim.totals()
    sim.run_for(quiet)
    after = sim.totals()
    row.dg_in = (after.received - before.received) / row.n / quiet
    row.dg_out = (after.sent - before.sent) / row.n / quiet
    row.late_join = late_join(sim)
    row.crashes = max(1, min(50, row.n // 10))
    spacing = (window - quiet) / 2 / row.crashes  # the last crash leaves half of the rest to find it
    watches: list[Departure] = []
    for k in sim.rng.sample(sim.live(), row.crashes):
        sim.crash(k)
        watches.append(Departure(sim, k))
        sim.run_for(spacing)
    sim.run_for(window - quiet - spacing * row.crashes)
    took = sorted(w.took for w in watches if w.took is not None)
    row.undetected = row.crashes - len(took)
    if took:
        row.p50, row.p99 = percentile(took, 50), percentile(took, 99)
    row.false_removals = (row.false_removals or 0) + len(removals.false)
    row.steady_wall = (time.perf_counter() - t0) / minutes


def run(n: int, loss: float, storm_max: int, minutes: float, seed: int) -> Row:
    row = Row(n, "sim", loss)
    if n <= storm_max:
        storm(row, seed)
    if minutes:
        steady(row, minutes, seed)
    return row


def wall(r: Row) -> str:
    """What the simulator itself cost: the proof that it is fast enough for the sizes asked."""
    parts = [f"storm {r.storm_wall:.1f}s" if r.storm_wall is not None else "",
             f"{r.steady_wall:.1f}s per simulated minute" if r.steady_wall is not None else ""]
    return "simulator: " + ", ".join(p for p in parts if p) + " of this machine"


def describe(minutes: float) -> str:
    return (f"sim: the simulated LAN (tests/sim), default settings, {LATENCY * 1e3:.1f} ms + up to "
            f"{JITTER * 1e3:.1f} ms jitter, storms within {STORM:.0f} s, {minutes:g} simulated minutes of steady "
            "state (crashes in its last 40%)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[100, 1000])
    p.add_argument("--storm-max", type=int, default=1000, help="join storms only up to this size")
    p.add_argument("--minutes", type=float, default=10.0, help="simulated minutes of steady state (0: none)")
    p.add_argument("--loss", type=float, nargs="*", default=[0.0, 0.05])
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    print(describe(a.minutes), LEGEND, HEADER, sep="\n", flush=True)
    for n in a.sizes:
        for loss in a.loss:
            row = run(n, loss, a.storm_max, a.minutes, a.seed)
            print(line(row), f"   ({wall(row)})", flush=True)


if __name__ == "__main__":
    main()
