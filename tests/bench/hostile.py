"""Benchmark: what a hostile host costs three real daemons. Prints figures; asserts nothing.

  python -m tests.bench.hostile [COUNT]      (default 1,000,000 datagrams, at 5,000 a second)

A flood of made-up nodes (tests.lab.inject flood: fresh ids in ANNOUNCEs and SNAPSHOTs, a JOIN of
its own every 10,000) against 3 daemons: RSS idle, at the peak and after every made-up node
expired; the slowest batch and the slowest map write, at max_nodes members; bytes the real
nodes sent in SNAPSHOTs per JOIN of the attacker during the flood; whether any real node expired.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.integration.test_hostile import EVIL, IDS, REAL, cluster, rss_kib, wire_counter, wire_snapshots
from tests.lab.netlab import REPO, Lab, require_root, wait_for

RATE = 5000


def main() -> None:
    require_root()
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp, Lab(Path(tmp)) as lab:
        lan, _nodes, daemons, evil = cluster(lab)
        wire_counter(lan, REAL)
        time.sleep(2.0)
        base = [rss_kib(d) for d in daemons]
        snaps_before = wire_snapshots(lan)
        t0 = time.monotonic()
        sender = subprocess.Popen(["ip", "netns", "exec", evil.ns, sys.executable, "-m", "tests.lab.inject", "flood",
                                   "eth0", str(count), "--self", str(EVIL), "--rate", str(RATE)],
                                  cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        peak, lost = list(base), 0
        while sender.poll() is None:
            peak = [max(p, rss_kib(d)) for p, d in zip(peak, daemons, strict=True)]
            lost += sum(not d.ids() >= IDS for d in daemons)
            time.sleep(0.5)
        took = time.monotonic() - t0
        packets, size = (a - b for a, b in zip(wire_snapshots(lan), snaps_before, strict=True))
        joins = (count + 9_999) // 10_000
        stats = [d.state()["stats"] for d in daemons]
        wait_for(lambda: all(len(d.state()["members"]) == 2 for d in daemons), 30, what="the made-up nodes to expire")
        time.sleep(1.0)
        after = [rss_kib(d) for d in daemons]
        expired = sum("expired" in line for d in daemons for line in d.log.splitlines() if "198.18.1.1" in line)
    print(f"flood: {count:,} datagrams in {took:.0f}s ({count / took:,.0f}/s) against 3 daemons (max_nodes 4096)")
    print(f"{'':>22} {'n1':>9} {'n2':>9} {'n3':>9}")
    for name, row in (("RSS idle MiB", base), ("RSS peak MiB", peak), ("RSS after expiry MiB", after)):
        print(f"{name:>22} " + " ".join(f"{v / 1024:>9.1f}" for v in row))
    for key in ("slowest_batch_us", "slowest_flush_us"):
        print(f"{key.replace('_us', ' ms'):>22} " + " ".join(f"{s.get(key, 0) / 1000:>9.1f}" for s in stats))
    for key in ("replaced", "rejected:conflict", "rejected:full"):
        print(f"{key:>22} " + " ".join(f"{s.get(key, 0):>9}" for s in stats))
    print(f"JOINs of the attacker: {joins}; SNAPSHOTs the real nodes sent: {packets} datagrams, {size} bytes "
          f"({size / joins:.0f} bytes per JOIN)")
    print(f"real nodes missing from a map in a sample: {lost}; real nodes expired: {expired}")


if __name__ == "__main__":
    main()
