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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omdisc.core.detection.conductor import period_scale
from omdisc.core.engine import EARLY_ANNOUNCES, Settings
from tests.bench.converge import in_map, rss_kib
from tests.bench.rows import HEADER, LEGEND, Row, line, percentile
from tests.integration.test_failure_detection import dropped, lossy
from tests.integration.test_faults import kernel_ids
from tests.lab.netlab import Daemon, Lab, Node, require_root, wait_for

PACKAGED: dict[str, Any] = {"announce_interval": 10.0, "dead_interval": 35.0}
# seconds after a JOIN until its early announcements (announce_interval apart, +- the jitter) are
# over: the idle figures are of the steady state after that
EARLY_OVER = EARLY_ANNOUNCES * PACKAGED["announce_interval"] * (1 + Settings().announce_jitter) + 1.0


def counters(d: Daemon) -> tuple[int, int]:
    s = d.state().get("stats", {})
    return s.get("sent", 0), s.get("received", 0) - s.get("own", 0)


def cpu_ticks(d: Daemon) -> int:
    fields = Path(f"/proc/{d.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def multicast_sent(daemons: list[Daemon]) -> int:
    kinds = ("sent:ANNOUNCE", "sent:SNAPSHOT", "sent:LEAVE")
    return sum(sum(d.state().get("stats", {}).get(k, 0) for k in kinds) for d in daemons)


def steady_load(daemons: list[Daemon], seconds: float, row: Row) -> None:
    before = [counters(d) for d in daemons]
    ticks = [cpu_ticks(d) for d in daemons]
    time.sleep(seconds)  # the measurement window itself
    after = [counters(d) for d in daemons]
    cpu = [(cpu_ticks(d) - t) / 100 / seconds * 100 for d, t in zip(daemons, ticks, strict=True)]
    sent = [(a[0] - b[0]) / seconds for a, b in zip(after, before, strict=True)]
    received = [(a[1] - b[1]) / seconds for a, b in zip(after, before, strict=True)]
    rss = [rss_kib(d) / 1024 for d in daemons]
    row.dg_in, row.dg_out = statistics.mean(received), statistics.mean(sent)
    row.cpu, row.rss = statistics.mean(cpu), statistics.mean(rss)
    print(f"steady load over {seconds:.0f}s, per node: sent {row.dg_out:.2f}/s (max {max(sent):.2f}), "
          f"received {row.dg_in:.2f}/s (max {max(received):.2f}); CPU {row.cpu:.2f}% "
          f"of a core (max {max(cpu):.2f}%); RSS {row.rss:.1f} MiB (max {max(rss):.1f})", flush=True)


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


def soak(lab: Lab, daemons: list[Daemon], seconds: float, loss: int, rng: random.Random) -> Row:
    row = Row(len(daemons), "real", loss / 100)
    lan = next(iter(lab.lans.values()))
    lossy(lan, loss)
    ids = set().union(*(kernel_ids(d) for d in daemons))
    before = [counters(d) for d in daemons]
    started = time.monotonic()
    until = started + seconds
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
    took = time.monotonic() - started
    after = [counters(d) for d in daemons]
    row.dg_out = statistics.mean((a[0] - b[0]) / took for a, b in zip(after, before, strict=True))
    row.dg_in = statistics.mean((a[1] - b[1]) / took for a, b in zip(after, before, strict=True))
    row.false_removals = len(false_removals)
    stats = [d.state().get("stats", {}) for d in daemons]
    print(f"soak {seconds:.0f}s at {loss}% loss ({dropped(lan)} datagrams dropped by the bridge), a node stalled "
          f"1 s every 30 s: {len(false_removals)} live nodes missing from a map at some poll, "
          f"{sum(s.get('failed', 0) for s in stats)} removals by probes, "
          f"{sum(s.get('suspected', 0) for s in stats)} suspicions, {sum(s.get('probe_checks', 0) for s in stats)} "
          f"checks ({sum(s.get('probe_checks_answered', 0) for s in stats)} answered)", flush=True)
    return row


def storm(lab: Lab, nodes: list[Node], row: Row) -> list[Daemon]:
    """Every daemon spawned at once; converged: from the last one's first announce (the protocol),
    spawning and Python's start-up on 2 shared cores apart."""
    n = len(nodes)
    t0 = time.monotonic()
    daemons = [node.start(wait=False, **PACKAGED) for node in nodes]
    spawned = time.monotonic() - t0
    wait_for(lambda: all(in_map(d) == n for d in daemons), 180, interval=0.1, what=f"{n} nodes to converge")
    done = time.time()
    row.per_join = multicast_sent(daemons) / n
    last_ready = max(wait_for(lambda d=d: d.state().get("ready_at"), 5) for d in daemons)
    row.converge = max(0.0, done - last_ready)
    print(f"{n} daemons (announce 10 s, dead 35 s, probes 1 s): spawned in {spawned:.1f}s, every map complete "
          f"{time.monotonic() - t0 - spawned:.1f}s after the last spawn, {row.converge:.2f}s after the last "
          f"daemon's first announce; {row.per_join:.2f} multicast datagrams per node", flush=True)
    return daemons


def settle(daemons: list[Daemon]) -> None:
    """Until every node has heard every other itself (its first announcement, one announce period
    after the storm). Before that most nodes know part of the cluster from a SNAPSHOT only, and such
    a node answers a JOIN last (answers.py): a newcomer then waits for the few that heard everyone."""
    t0 = time.monotonic()
    n = len(daemons)
    interval = PACKAGED["announce_interval"]
    period = interval * period_scale(n, Settings().announce_rate * interval)  # docs/protocol.md, "Load"

    def heard_all(d: Daemon) -> bool:
        members = d.state().get("members", [])
        return len(members) == n - 1 and all(m.get("firsthand") for m in members)
    wait_for(lambda: all(heard_all(d) for d in daemons), 60 + 3 * period,
             interval=0.5, what="every member heard first-hand")
    print(f"settled: every member heard first-hand {time.monotonic() - t0:.1f} s after the storm", flush=True)


def in_state(d: Daemon) -> int:
    """Nodes in the daemon's state.json, itself included: what `showmap --members` shows."""
    return len(d.state().get("members", [])) + 1


def late_join(node: Node, daemons: list[Daemon]) -> tuple[Daemon, float]:
    """One more node: from its spawn until it is in every map and every node in its map, timed on
    the map files (what the kernel is given) and on state.json (what showmap --members shows)."""
    n = len(daemons) + 1
    t0, wall0 = time.monotonic(), time.time()
    late = node.start(wait=False, **PACKAGED)
    took: dict[str, float] = {}

    def seen(what: str, count: Callable[[Daemon], int]) -> bool:
        if what not in took and all(count(d) == n for d in [late, *daemons]):
            took[what] = time.monotonic() - t0
        return what in took
    wait_for(lambda: seen("map", in_map) & seen("state", in_state), 60, interval=0.005,
             what="the late joiner in every map and every state.json")
    # its JOIN went out at ready_at: before it, Python's start-up, imports and set-up; after it, the protocol
    joined = wait_for(lambda: late.state().get("ready_at"), 5) - wall0
    print(f"one more node: in every map {took['map'] * 1000:.0f} ms after its spawn, in every state.json "
          f"(showmap --members) {took['state'] * 1000:.0f} ms (its JOIN {joined * 1000:.0f} ms after the spawn, "
          f"then {(took['map'] - joined) * 1000:.0f} ms to every map)", flush=True)
    return late, took["map"]


def run(n: int, kills: int, soak_s: float, loss: int) -> list[Row]:
    rng = random.Random(7)
    row = Row(n, "real", 0.0)
    rows = [row]
    with tempfile.TemporaryDirectory() as tmp, Lab(Path(tmp)) as lab:
        lan = lab.lan()
        nodes = [lab.node(f"n{i}", lan, f"198.18.{i // 200}.{i % 200 + 1}/15") for i in range(n + 1)]
        lab.fill_neighbours(nodes)
        daemons = storm(lab, nodes[:n], row)
        storm_over = time.monotonic()
        settle(daemons)
        late, row.late_join = late_join(nodes[n], daemons)
        daemons.append(late)
        # the steady state: past every node's two early announcements after its JOIN
        time.sleep(max(3.0, storm_over + EARLY_OVER - time.monotonic()))
        steady_load(daemons, 30, row)
        times: list[float] = []
        for _ in range(kills):
            times += kill_one(daemons, rng)
            time.sleep(2)
        if times:
            row.crashes = kills
            row.p50, row.p99 = percentile(times, 50), percentile(times, 99)
            print(f"kill -9, {kills} times, {len(times)} maps timed: out of a map after p50 {row.p50:.2f}s, "
                  f"p99 {row.p99:.2f}s, max {max(times):.2f}s", flush=True)
        if soak_s:
            rows.append(soak(lab, daemons, soak_s, loss, rng))
    return rows


def main() -> None:
    require_root()
    args = [float(a) for a in sys.argv[1:]]
    n, kills, soak_s, loss = (int(args[0]) if args else 100), (int(args[1]) if len(args) > 1 else 5), \
        (args[2] if len(args) > 2 else 0.0), (int(args[3]) if len(args) > 3 else 5)
    rows = run(n, kills, soak_s, loss)
    print(LEGEND, HEADER, *(line(r) for r in rows), sep="\n")


if __name__ == "__main__":
    main()
