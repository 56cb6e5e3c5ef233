"""Benchmark: the engines on the simulated LAN (tests/sim), default settings. Prints one table;
asserts nothing.

  python -m tests.bench.sim [--sizes 100 1000] [--storm-only 10000] [--minutes 10] [--loss 0 0.05]

For each size and loss rate: N nodes start within 1 s (a join storm): how long after the last
start every map is complete, and the multicast datagrams sent until the joins are over (3 s after
the last start) per node. Then `minutes` of simulated time: the load per node over the first 60% (datagrams in
and out a second), and in the rest one node crashed (kill -9) every few seconds, each timed until
it is out of every live map (p50, p99); false removals: a node that is up dropped from a live map,
counted over the whole run. --storm-only sizes run the join storm alone.
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


@dataclass
class Row:
    n: int
    loss: float
    converge: float | None = None  # seconds after the last start
    per_join: float = 0.0
    p50: float | None = None
    p99: float | None = None
    crashes: int = 0
    undetected: int = 0
    false_removals: int = 0
    dg_in: float | None = None
    dg_out: float | None = None
    sim_s: float = 0.0
    wall_s: float = 0.0


def storm(n: int, loss: float, seed: int) -> tuple[Sim, Row, Removals]:
    sim = Sim(Settings(), seed=seed, latency=LATENCY, jitter=JITTER, loss=loss)
    starts = sorted(sim.rng.uniform(0.0, STORM) for _ in range(n))
    for t in starts:
        sim.add(start=t)
    conv = Convergence(sim, list(range(n)))
    removals = Removals(sim)
    last = starts[-1]
    limit = last + 60.0
    sim.run_until(last + JOINS_OVER)
    joins = sim.totals().sent_multicast  # probes (unicast) are not the joins' cost
    while conv.at is None and sim.now < limit:
        sim.run_for(0.1)
    conv.close()
    row = Row(n, loss, None if conv.at is None else conv.at - last, joins / n)
    return sim, row, removals


def steady(sim: Sim, row: Row, minutes: float) -> None:
    n = len(sim.engines)
    window = minutes * 60.0
    quiet = window * 0.6
    before = sim.totals()
    sim.run_for(quiet)
    after = sim.totals()
    row.dg_in = (after.received - before.received) / n / quiet
    row.dg_out = (after.sent - before.sent) / n / quiet
    crashes = max(1, min(50, n // 10))
    spacing = (window - quiet) / 2 / crashes  # the last crash leaves half of the rest to be found
    watches: list[Departure] = []
    victims = sim.rng.sample(sim.live(), crashes)
    for k in victims:
        sim.crash(k)
        watches.append(Departure(sim, k))
        sim.run_for(spacing)
    sim.run_for(window - quiet - spacing * crashes)
    took = sorted(w.took for w in watches if w.took is not None)
    row.crashes, row.undetected = crashes, crashes - len(took)
    if took:
        row.p50 = took[len(took) // 2]
        row.p99 = took[min(len(took) - 1, math.ceil(0.99 * len(took)) - 1)]


def run(n: int, loss: float, minutes: float, seed: int) -> Row:
    t0 = time.perf_counter()
    sim, row, removals = storm(n, loss, seed)
    if minutes:
        steady(sim, row, minutes)
    row.false_removals = len(removals.false)
    row.sim_s, row.wall_s = sim.now, time.perf_counter() - t0
    return row


def fmt(x: float | None, spec: str, missing: str = "-") -> str:
    return missing if x is None else format(x, spec)


HEADER = (f"{'N':>6} {'loss':>5} {'storm conv':>11} {'dg/join':>8} {'crash p50':>10} {'p99':>8} {'missed':>7} "
          f"{'false rm':>8} {'dg/s in':>8} {'dg/s out':>8} {'sim s':>7} {'wall s':>7} {'wall/sim min':>12}")


def line(r: Row) -> str:
    missed = f"{r.undetected}/{r.crashes}" if r.crashes else "-"
    per_min = r.wall_s / (r.sim_s / 60.0) if r.sim_s else 0.0
    return (f"{r.n:>6} {r.loss:>5.0%} {fmt(r.converge, '.3f', 'never'):>10}s {r.per_join:>8.2f} "
            f"{fmt(r.p50, '.2f'):>9}s {fmt(r.p99, '.2f'):>7}s {missed:>7} {r.false_removals:>8} "
            f"{fmt(r.dg_in, '.2f'):>8} {fmt(r.dg_out, '.2f'):>8} {r.sim_s:>7.0f} {r.wall_s:>7.1f} {per_min:>11.1f}s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="*", default=[100, 1000])
    p.add_argument("--storm-only", type=int, nargs="*", default=[], metavar="N")
    p.add_argument("--minutes", type=float, default=10.0, help="simulated minutes after each storm")
    p.add_argument("--loss", type=float, nargs="*", default=[0.0, 0.05])
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    print(f"simulated LAN (tests/sim): default settings, latency {LATENCY * 1e3:.1f} ms + up to "
          f"{JITTER * 1e3:.1f} ms jitter, N nodes started within {STORM:.0f} s\n"
          "storm conv: every map complete, after the last start; dg/join: multicast datagrams until 3 s after "
          "the last start, per node\ncrash: until the killed node is out of every live map; false rm: a node "
          "up dropped from a map\ndg/s: datagrams per node a second, received and sent, at steady state")
    print(HEADER, flush=True)
    for n in a.sizes:
        for loss in a.loss:
            print(line(run(n, loss, a.minutes, a.seed)), flush=True)
    for n in a.storm_only:
        for loss in a.loss:
            print(line(run(n, loss, 0.0, a.seed)), flush=True)


if __name__ == "__main__":
    main()
