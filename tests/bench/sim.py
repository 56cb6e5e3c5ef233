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
import math
import time
from dataclasses import dataclass

from omdisc.engine import Settings
from tests.sim import Convergence, Departure, Removals, Sim

LATENCY, JITTER = 0.0002, 0.0003  # a switched LAN: 0.2-0.5 ms one way
STORM = 1.0  # every node starts within this many seconds
# after the last start, the join traffic is over: the last JOIN retry (Settings.join_retries: 1 s)
# and the answers to it (AnswerLimits: spread at most 1 s); the first periodic announce is 9 s on
JOINS_OVER = 3.0
STORM_LIMIT = 60.0  # a storm not converged this long after its last start is "never"


@dataclass
class Row:
    n: int
    loss: float
    converge: float | None = None  # seconds after the last start
    per_join: float | None = None
    p50: float | None = None
    p99: float | None = None
    crashes: int = 0
    undetected: int = 0
    false_removals: int = 0
    dg_in: float | None = None
    dg_out: float | None = None
    storm_wall: float | None = None
    steady_wall: float | None = None  # seconds per simulated minute


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
    row.false_removals += len(removals.false)
    row.storm_wall = time.perf_counter() - t0


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
        row.p50 = took[len(took) // 2]
        row.p99 = took[min(len(took) - 1, math.ceil(0.99 * len(took)) - 1)]
    row.false_removals += len(removals.false)
    row.steady_wall = (time.perf_counter() - t0) / minutes


def fmt(x: float | None, spec: str, missing: str = "-", unit: str = "") -> str:
    return missing if x is None else format(x, spec) + unit


HEADER = (f"{'N':>6} {'loss':>5} {'storm conv':>11} {'dg/join':>8} {'crash p50':>10} {'p99':>8} {'missed':>7} "
          f"{'false rm':>8} {'dg/s in':>8} {'dg/s out':>8} {'storm wall':>11} {'wall/sim min':>13}")


def line(r: Row) -> str:
    missed = f"{r.undetected}/{r.crashes}" if r.crashes else "-"
    conv = "-" if r.per_join is None else fmt(r.converge, ".3f", "never", "s")
    return (f"{r.n:>6} {r.loss:>5.0%} {conv:>11} {fmt(r.per_join, '.2f'):>8} "
            f"{fmt(r.p50, '.2f', unit='s'):>10} {fmt(r.p99, '.2f', unit='s'):>8} {missed:>7} {r.false_removals:>8} "
            f"{fmt(r.dg_in, '.2f'):>8} {fmt(r.dg_out, '.2f'):>8} {fmt(r.storm_wall, '.1f', unit='s'):>11} "
            f"{fmt(r.steady_wall, '.1f', unit='s'):>13}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[100, 1000])
    p.add_argument("--storm-max", type=int, default=1000, help="join storms only up to this size")
    p.add_argument("--minutes", type=float, default=10.0, help="simulated minutes of steady state (0: none)")
    p.add_argument("--loss", type=float, nargs="*", default=[0.0, 0.05])
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    print(f"simulated LAN (tests/sim), default settings, latency {LATENCY * 1e3:.1f} ms + up to "
          f"{JITTER * 1e3:.1f} ms jitter, {a.minutes:g} simulated minutes of steady state\n"
          f"storm conv: N nodes started within {STORM:.0f} s, every map complete, after the last start; "
          "dg/join: multicast datagrams until 3 s after the last start, per node\n"
          "crash: until the killed node is out of every live map (missed: not yet when the run ended); "
          "false rm: a node up dropped from a map\ndg/s: datagrams per node a second, received and sent, "
          "at steady state; wall: this machine's seconds (storm; per simulated minute of steady state)")
    print(HEADER, flush=True)
    for n in a.sizes:
        for loss in a.loss:
            row = Row(n, loss)
            if n <= a.storm_max:
                storm(row, a.seed)
            if a.minutes:
                steady(row, a.minutes, a.seed)
            print(line(row), flush=True)


if __name__ == "__main__":
    main()
