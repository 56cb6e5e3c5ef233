"""Benchmark: crash detection and steady load among real daemons in namespaces. Prints figures;
asserts nothing.

  python -m tests.bench.crash [N [KILLS [SOAK_SECONDS [LOSS_PERCENT]]]]   (default: 100 5 0 5)

N daemons with the packaged intervals on one bridge: time until every map is complete; idle load
per node (datagrams a second in and out, from each daemon's own counters), RSS and CPU; then KILLS
times a daemon is kill -9'd and every other map is polled until it is gone (p50/p99/max over all
maps and kills). With SOAK_SECONDS, the bridge then drops LOSS_PERCENT% of UDP at random (nftables)
for that long and every map is watched for a live node missing (false removals), and a node is
stopped for a second (SIGSTOP, SIGCONT) now and then.
"""

from __future__ import annotations

import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench.converge import in_map, rss_kib
from tests.integration.test_failure_detection import dropped, lossy
from tests.integration.test_faults import kernel_ids
from tests.lab.netlab import Daemon, Lab, require_root, wait_for

PACKAGED: dict[str, Any] = {"announce_interval": 10.0, "dead_interval": 35.0}


def counters(d: Daemon) -> tuple[int, int]:
    s = d.state().get("stats", {})
    return s.get("sent", 0), s.get("received", 0) - s.get("own", 0)


def cpu_ticks(d: Daemon) -> int:
    fields = Path(f"/proc/{d.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def steady_load(daemons: list[Daemon], seconds: float) -> None:
    before = [counters(d) for d in daemons]
    ticks = [cpu_ticks(d) for d in daemons]
    time.sleep(seconds)  # the measurement window itself
    after = [counters(d) for d in daemons]
    cpu = [(cpu_ticks(d) - t) / 100 / seconds * 100 for d, t in zip(daemons, ticks, strict=True)]
    sent = [(a[0] - b[0]) / seconds for a, b in zip(after, before, strict=True)]
    received = [(a[1] - b[1]) / seconds for a, b in zip(after, before, strict=True)]
    rss = [rss_kib(d) / 1024 for d in daemons]
    print(f"steady load over {seconds:.0f}s, per node: sent {statistics.mean(sent):.2f}/s (max {max(sent):.2f}), "
          f"received {statistics.mean(received):.2f}/s (max {max(received):.2f}); CPU {statistics.mean(cpu):.2f}% "
          f"of a core (max {max(cpu):.2f}%); RSS {statistics.mean(rss):.1f} MiB (max {max(rss):.1f})", flush=True)


def kill_one(daemons: list[Daemon], rng: random.Random) -> list[float]:
    victim = rng.choice(daemons)
    vid = in_map_id(victim)
    rest = [d for d in daemons if d is not victim]
    victim.proc.kill()
    t0 = time.monotonic()
    gone: dict[int, float] = {}

    def all_gone() -> bool:
        for i, d in enumerate(rest):
            if i not in gone and vid not in kernel_ids(d):
                gone[i] = time.monotonic() - t0
        return len(gone) == len(rest)

    wait_for(all_gone, 60, interval=0.02, what="every map to drop the killed node")
    daemons.remove(victim)
    return list(gone.values())


def in_map_id(d: Daemon) -> int:
    return int(d.state().get("node_id", 0))


def soak(lab: Lab, daemons: list[Daemon], seconds: float, loss: int, rng: random.Random) -> None:
    lan = next(iter(lab.lans.values()))
    lossy(lan, loss)
    ids = set().union(*(kernel_ids(d) for d in daemons))
    until = time.monotonic() + seconds
    false_removals: set[tuple[str, int]] = set()
    next_stall = time.monotonic() + 30
    while time.monotonic() < until:
        for d in daemons:
            missing = ids - kernel_ids(d)
            false_removals |= {(d.node.name, m) for m in missing}
        if time.monotonic() >= next_stall:
            frozen = rng.choice(daemons)
            frozen.signal(signal.SIGSTOP)
            time.sleep(1.0)  # the fault: a second without scheduling
            frozen.signal(signal.SIGCONT)
            next_stall = time.monotonic() + 30
        time.sleep(0.5)
    suspected = sum(d.state().get("stats", {}).get("suspected", 0) for d in daemons)
    failed = sum(d.state().get("stats", {}).get("failed", 0) for d in daemons)
    print(f"soak {seconds:.0f}s at {loss}% loss ({dropped(lan)} datagrams dropped by the bridge), a node stalled "
          f"1 s every 30 s: {len(false_removals)} live nodes missing from a map at some poll, {failed} removals "
          f"by probes, {suspected} suspicions (all refuted)", flush=True)


def main() -> None:
    require_root()
    args = [float(a) for a in sys.argv[1:]]
    n, kills, soak_s, loss = (int(args[0]) if args else 100), (int(args[1]) if len(args) > 1 else 5), \
        (args[2] if len(args) > 2 else 0.0), (int(args[3]) if len(args) > 3 else 5)
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp, Lab(Path(tmp)) as lab:
        lan = lab.lan()
        nodes = [lab.node(f"n{i}", lan, f"198.18.{i // 200}.{i % 200 + 1}/15") for i in range(n)]
        t0 = time.monotonic()
        daemons = [node.start(wait=False, **PACKAGED) for node in nodes]
        spawned = time.monotonic() - t0
        wait_for(lambda: all(in_map(d) == n for d in daemons), 120, interval=0.1, what=f"{n} nodes to converge")
        print(f"{n} daemons (announce 10 s, dead 35 s, probes 1 s): spawned in {spawned:.1f}s, every map complete "
              f"{time.monotonic() - t0 - spawned:.1f}s after the last spawn", flush=True)
        time.sleep(3)  # join answers and retries over
        steady_load(daemons, 30)
        times: list[float] = []
        for _ in range(kills):
            times += kill_one(daemons, rng)
            time.sleep(2)
        if times:
            print(f"kill -9, {kills} times, {len(times)} maps timed: out of a map after p50 "
                  f"{percentile(times, 50):.2f}s, p99 {percentile(times, 99):.2f}s, max {max(times):.2f}s", flush=True)
        if soak_s:
            soak(lab, daemons, soak_s, loss, rng)


if __name__ == "__main__":
    main()
