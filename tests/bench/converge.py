"""Benchmark: real daemons in namespaces. Prints figures; asserts nothing.

  python -m tests.bench.converge [N ...]      (default: 4 8 16)

For each N: start N daemons at once and time convergence from the last start; then one more
node joins the converged cluster and every datagram sent for it is counted; RSS of one daemon.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from tests.lab.netlab import Daemon, Lab, require_root, wait_for

QUIET = {"announce_interval": 30.0, "dead_interval": 90.0}  # no periodic traffic during the counts


def sent(daemons: list[Daemon]) -> int:
    return sum(d.state().get("stats", {}).get("sent", 0) for d in daemons)


def rss_kib(d: Daemon) -> int:
    for line in Path(f"/proc/{d.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, Lab(Path(tmp)) as lab:
        lan = lab.lan()
        nodes = [lab.node(f"n{i}", lan, f"198.18.{i // 200}.{i % 200 + 1}/15") for i in range(n + 1)]
        daemons = [nodes[i].start(wait=False, **QUIET) for i in range(n)]
        last_start = time.monotonic()
        wait_for(lambda: all(len(d.state().get("members", [])) == n - 1 for d in daemons), 30, interval=0.01,
                 what=f"{n} nodes to converge")
        converge = time.monotonic() - last_start
        converge_ready = time.time() - max(d.state()["ready_at"] for d in daemons)
        time.sleep(1.5)  # join retries and answers over
        before = sent(daemons)
        t0 = time.monotonic()
        late = nodes[n].start(wait=False, **QUIET)
        wait_for(lambda: len(late.state().get("members", [])) == n
                 and all(len(d.state().get("members", [])) == n for d in daemons), 30, interval=0.01,
                 what="the late joiner")
        join_time = time.monotonic() - t0
        time.sleep(1.5)
        per_join = sent([*daemons, late]) - before
        return {"n": n, "converge_s": converge, "converge_ready_s": converge_ready, "join_s": join_time,
                "datagrams_per_join": per_join, "rss_kib": rss_kib(daemons[0])}


def main() -> None:
    require_root()
    sizes = [int(a) for a in sys.argv[1:]] or [4, 8, 16]
    print("converged: all maps complete, timed from the last daemon's spawn (Python start-up on 2 shared\n"
          "cores included) and from its first announce (the protocol alone); late join: from spawn")
    print(f"{'nodes':>5} {'from last spawn':>16} {'from last announce':>19} {'late join':>10} "
          f"{'datagrams/join':>15} {'RSS':>9}")
    for n in sizes:
        r = run(n)
        print(f"{r['n']:>5} {r['converge_s']:>15.3f}s {r['converge_ready_s']:>18.3f}s {r['join_s']:>9.3f}s "
              f"{r['datagrams_per_join']:>15} {r['rss_kib'] / 1024:>7.1f}MiB", flush=True)


if __name__ == "__main__":
    main()
