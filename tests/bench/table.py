"""Benchmark: the one table of issue 10's figures. Prints it; asserts nothing.

  python -m tests.bench.table [--real 16 100] [--sim 1000] [--storm-only 10000] [--minutes 10]
                              [--soak 600] [--loss 5] [--kills 5]

real: N daemons with the packaged intervals in network namespaces on one bridge (tests/bench/crash.py):
a join storm, one late joiner, the steady load, RSS and CPU, kill -9 KILLS times; for the largest N,
then SOAK seconds at LOSS% random loss (nftables on the bridge) with a node stalled 1 s every 30 s.
sim: the simulated LAN (tests/bench/sim.py): a storm and MINUTES of steady state, at 0% and LOSS%.
storm-only: simulated join storms at these sizes, without the steady state.
"""

from __future__ import annotations

import argparse

from tests.bench import crash, sim
from tests.bench.rows import HEADER, LEGEND, Row, line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real", type=int, nargs="*", default=[16, 100])
    p.add_argument("--sim", type=int, nargs="*", default=[1000])
    p.add_argument("--storm-only", type=int, nargs="*", default=[])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--soak", type=float, default=600.0)
    p.add_argument("--loss", type=int, default=5)
    p.add_argument("--kills", type=int, default=5)
    a = p.parse_args()
    rows: list[Row] = []
    for n in a.sim:
        for loss in (0.0, a.loss / 100):
            rows.append(sim.run(n, loss, n, a.minutes, seed=1))
            print(line(rows[-1]), f"   ({sim.wall(rows[-1])})", flush=True)
    for n in a.storm_only:
        rows.append(sim.run(n, 0.0, n, 0.0, seed=1))
        print(line(rows[-1]), f"   ({sim.wall(rows[-1])})", flush=True)
    for n in a.real:
        soak = a.soak if n == max(a.real) else 0.0
        rows += crash.run(n, a.kills, soak, a.loss)
    print(f"\n{sim.describe(a.minutes)}\nreal: daemons in network namespaces on one bridge, packaged intervals, "
          f"this machine's 2 cores; the loss row: {a.soak:g} s with a node stalled 1 s every 30 s\n"
          f"{LEGEND}\n{HEADER}")
    for r in sorted(rows, key=lambda r: (r.where != "real", r.n, r.loss)):
        print(line(r))


if __name__ == "__main__":
    main()
