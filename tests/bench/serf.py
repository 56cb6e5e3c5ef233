"""Benchmark: omdisc beside HashiCorp serf (Debian's `serf`), in one lab, each with its defaults.
Prints one table (omdisc | serf | ratio); asserts nothing.

  python -m tests.bench.serf [N] [--idle SECONDS] [--kills K] [--newcomers M] [--serf-mode auto|mdns|join]
      (default 16 nodes, 20 s idle, 3 kills, 5 newcomers; needs root)

The same N+1 namespaces on one bridge serve both systems in turn, with every node's neighbour (ARP)
entries filled in beforehand, so that address resolution costs neither system anything. omdisc
multicasts; serf runs with `-discover` (mDNS), or, above 32 nodes (where its mDNS may not converge
within 40 s), with `-join` and the first agent's address. For each system:
- N agents started at once, until every member list is complete;
- over the idle window, per node: RSS, CPU, and the UDP datagrams its namespace sent and took in
  (the namespace's own counters, /proc/PID/net/snmp and snmp6: every datagram of both families, as
  serf's mDNS uses IPv6 too, with nothing added to the path), the multicast ones among those sent
  (counted on the bridge, where UDP is told from IGMP and MLD), and the TCP segments sent (serf's
  push-pull runs on TCP). A multicast datagram is taken in by every node, its sender included (the
  loop back); serf's mDNS polls, at its start and every 60 s, fall in the window only if it is long;
- newcomers (5 unless told), one after the other into the settled cluster, each from its spawn
  until it is in every member list and every member is in its own; the median and the range;
- K kill -9s, a different victim each time, left out afterwards (so the cluster shrinks alike
  for both): from the kill until the victim is out of every other member's list.
omdisc is read on its map files (what the kernel is given) and on state.json (showmap --members);
serf on its log (its member list) and its event handler's runs (tests/bench/serfagent.py). Both
are stamped as they come (omdisc's files through inotify, tests/bench/mapwatch.py), not polled.
omdisc's daemons run as the package's /usr/sbin/omdiscd does (debian/sbin/omdiscd: python3 -S).
serf's mDNS answers only once the IPv6 link-local addresses are past duplicate address detection,
so the lab's legs skip it.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from tests.bench import serfagent
from tests.bench.converge import in_map
from tests.bench.crash import PACKAGED, in_state
from tests.bench.lean import cpu_seconds, status_kib
from tests.bench.mapwatch import MAP, STATE, MapWatch
from tests.bench.serfagent import SerfAgent, finding
from tests.integration.test_faults import kernel_ids
from tests.lab.netlab import (
    PACKAGED_PROGRAM,
    Daemon,
    Lab,
    Lan,
    Node,
    as_installed,
    bridge_counted,
    bridge_table,
    require_root,
    wait_for,
)

SETTLE = 22.0  # seconds after convergence before the idle window: past the two early announcements
# after each JOIN (one and two announce_intervals, 10 s and 20 s, on): the steady state, for both systems
BETWEEN_KILLS = 3.0  # the last failure's gossip over before the next kill
BETWEEN_NEWCOMERS = 2.0  # the last newcomer's answers and events over before the next one
JOIN_ABOVE = 32  # serf's mDNS may not converge within 40 s beyond this many nodes
M = TypeVar("M", Daemon, SerfAgent)  # a member of either system


@dataclass
class Figures:
    """One system's figures from one run; rates are per node, kill times one per round."""

    system: str
    converge: float = 0.0
    rss_median: float = 0.0
    rss_max: float = 0.0
    cpu: float = 0.0  # percent of a core
    sent: float = 0.0  # UDP datagrams a second
    multicast: float = 0.0  # of them to a group
    received: float = 0.0
    tcp: float = 0.0  # TCP segments sent a second
    newcomers: list[float] = field(default_factory=list)  # spawn to every member list, one per newcomer
    newcomers_seen: list[float] = field(default_factory=list)  # the same, as a user's tools see it
    kills: list[float] = field(default_factory=list)  # kill to out of every member list
    kills_seen: list[float] = field(default_factory=list)
    extra: str = ""


# --- the idle window -------------------------------------------------------------------------------

def mib(pid: int) -> dict[str, int]:
    """The counters of the network namespace `pid` lives in, named as netstat -s names them."""
    out: dict[str, int] = {}
    for table in ("snmp", "netstat"):  # pairs of lines: "Udp: InDatagrams ...", "Udp: 27607 ..."
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=True):
            proto, _, keys = names.partition(":")
            out |= {proto + k: int(v) for k, v in zip(keys.split(), values.partition(":")[2].split(), strict=True)}
    for line in Path(f"/proc/{pid}/net/snmp6").read_text().splitlines():
        key, value = line.split()
        out[key] = int(value)
    return out


def idle_load(pids: list[int], seconds: float, fig: Figures, multicast: Callable[[], int]) -> None:
    """RSS, then CPU and datagrams over `seconds`, per node; `multicast` counts the UDP datagrams to a
    group that crossed the bridge so far."""
    rss = [status_kib(pid, "VmRSS") / 1024 for pid in pids]
    fig.rss_median, fig.rss_max = statistics.median(rss), max(rss)
    before = [(cpu_seconds(pid), mib(pid)) for pid in pids]
    groups = multicast()
    time.sleep(seconds)
    after = [(cpu_seconds(pid), mib(pid)) for pid in pids]
    per_node = len(pids) * seconds
    fig.multicast = (multicast() - groups) / per_node

    def rate(*keys: str) -> float:
        return sum(a[1][k] - b[1][k] for a, b in zip(after, before, strict=True) for k in keys) / per_node
    fig.cpu = 100 * sum(a[0] - b[0] for a, b in zip(after, before, strict=True)) / per_node
    fig.sent = rate("UdpOutDatagrams", "Udp6OutDatagrams")
    fig.received = rate("UdpInDatagrams", "Udp6InDatagrams")
    fig.tcp = rate("TcpOutSegs")


def multicast_counter(lan: Lan) -> Callable[[], int]:
    """UDP datagrams to a group, counted on the bridge as they enter it (IGMP, MLD and the rest of
    ICMPv6 are not UDP: the namespaces' own multicast counters would mix them in)."""
    bridge_table(lan, "omdmcast", ["ip daddr 224.0.0.0/4 meta l4proto udp counter name dg",
                                   "ip6 daddr ff00::/8 meta l4proto udp counter name dg"],
                 hook="prerouting", counters=["dg"])
    return lambda: bridge_counted(lan, "omdmcast")[0]


def stop_all(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def victims(n: int, kills: int) -> list[int]:
    """Which of the first N nodes are killed, spread over them; never the first (serf's -join seed)."""
    return sorted({max(1, (k + 1) * n // (kills + 1)) for k in range(kills)})


def kill_rounds(doomed: list[M], alive: list[M], kill: Callable[[M, list[M]], tuple[float, float]],
                fig: Figures) -> None:
    """kill -9 each of `doomed` in turn, timed by `kill` (to every list, to every tool), and left out."""
    for victim in doomed:
        alive.remove(victim)
        lists, seen = kill(victim, alive)
        fig.kills.append(lists)
        fig.kills_seen.append(seen)
        time.sleep(BETWEEN_KILLS)


# --- omdisc ----------------------------------------------------------------------------------------

def ms_range(xs: list[float]) -> str:
    return f"{min(xs) * 1000:.0f}-{max(xs) * 1000:.0f} ms" if xs else "-"


def state_ids(d: Daemon) -> set[int]:
    return {m.get("id", -1) for m in d.state().get("members", [])}


def omdisc_kill(victim: Daemon, rest: list[Daemon]) -> tuple[float, float]:
    """kill -9: until the victim is out of every other map file, and out of every state.json."""
    vid = int(victim.state().get("node_id", 0))
    took: dict[str, float] = {}

    def out(what: str, ids: Callable[[Daemon], set[int]]) -> bool:
        if what not in took and all((held := ids(d)) and vid not in held for d in rest):  # empty: not read
            took[what] = time.monotonic() - t0
        return what in took
    t0 = time.monotonic()
    victim.proc.kill()
    wait_for(lambda: out("map", kernel_ids) & out("state", state_ids), 90, interval=0.02,
             what="every omdisc map to drop the killed node")
    victim.proc.wait(5)
    return took["map"], took["state"]


def start_omdisc(node: Node, run: Path) -> Daemon:
    """omdiscd as the package runs it: its program (Debian's python3 -S), the default intervals, and
    its map files and pid file on a tmpfs, as /run is on a Debian host (on a disk, each rename over
    a map file can wait milliseconds for the new file's data to be written: ext4's auto_da_alloc)."""
    where = run / node.name
    (where / "alpha").mkdir(parents=True)
    return node.start(wait=False, program=PACKAGED_PROGRAM, alpha_dir=str(where / "alpha"),
                      pid_file=str(where / "omdiscd.pid"), **PACKAGED)


def omdisc_newcomer(node: Node, daemons: list[Daemon], run: Path, watch: MapWatch,
                    fig: Figures) -> tuple[Daemon, float]:
    """One more node: from its spawn until it is in every map file and every state.json, and has
    them all in its own (stamped as the files arrive); and when its JOIN left."""
    everyone = len(daemons) + 1
    wall0, t0 = time.time(), time.monotonic()
    late = start_omdisc(node, run)
    watch.add(late)
    all_of = [late, *daemons]
    took = wait_for(lambda: (m := watch.everywhere(all_of, MAP, everyone, t0)) and (
        s := watch.everywhere(all_of, STATE, everyone, t0)) and (m, s), 30, interval=0.05,
        what="the omdisc newcomer everywhere")
    fig.newcomers.append(took[0] - t0)
    fig.newcomers_seen.append(took[1] - t0)
    return late, wait_for(lambda: late.state().get("ready_at"), 5) - wall0


def run_omdisc(nodes: list[Node], n: int, run: Path, idle: float, doomed: list[int],
               multicast: Callable[[], int]) -> Figures:
    """The first `n` nodes at once, the idle window, each of the rest as a newcomer, the kills."""
    fig = Figures("omdisc")
    t0 = time.monotonic()
    daemons = [start_omdisc(node, run) for node in nodes[:n]]
    wait_for(lambda: all(in_map(d) == n for d in daemons), 120, interval=0.05, what="omdisc to converge")
    fig.converge = time.monotonic() - t0
    wait_for(lambda: all(in_state(d) == n for d in daemons), 10, what="state.json")
    time.sleep(SETTLE)
    idle_load([d.proc.pid for d in daemons], idle, fig, multicast)
    alive, joined = [*daemons], []
    watch = MapWatch()
    try:
        for d in alive:
            watch.add(d)
        for node in nodes[n:]:
            late, join_left = omdisc_newcomer(node, alive, run, watch, fig)
            alive.append(late)
            joined.append(join_left)
            time.sleep(BETWEEN_NEWCOMERS)
    finally:
        watch.close()
    fig.extra = f"the omdisc newcomers' JOIN left {ms_range(joined)} after their spawn"
    kill_rounds([daemons[i] for i in doomed], alive, omdisc_kill, fig)
    stop_all([d.proc for d in alive])
    return fig


# --- serf ------------------------------------------------------------------------------------------

def check_running(agents: list[SerfAgent]) -> None:
    for a in agents:
        if a.proc.poll() is not None:
            raise RuntimeError(f"serf on {a.node.name} exited {a.proc.returncode}:\n" + "\n".join(a.log.tail))


def serf_storm(nodes: list[Node], tmp: Path, seed: str | None) -> list[SerfAgent]:
    """N agents at once; with -join, the first one first, the others once it runs."""
    first = serfagent.start(nodes[0], tmp, finding(None) if seed is None else [])
    if seed is not None:
        wait_for(lambda: first.log.running.is_set() or first.proc.poll() is not None, 10, what="the first serf")
    agents = [first, *(serfagent.start(node, tmp, finding(seed)) for node in nodes[1:])]
    n = len(agents)

    def converged() -> bool:
        check_running(agents)
        return all(a.members() == n for a in agents)
    wait_for(converged, 120, interval=0.05, what="serf to converge")
    return agents


def serf_kill(victim: SerfAgent, rest: list[SerfAgent]) -> tuple[float, float]:
    """kill -9: until every other member's list has it failed, and every member-failed handler ran."""
    name = victim.node.name
    wall0, t0 = time.time(), time.monotonic()
    victim.proc.kill()
    wait_for(lambda: all(a.failed_at(name, t0) and a.handler_at("member-failed", name, wall0) for a in rest),
             90, interval=0.02, what="every serf to fail the killed node")
    victim.proc.wait(5)
    lists = max(t for a in rest if (t := a.failed_at(name, t0)) is not None) - t0
    seen = max(t for a in rest if (t := a.handler_at("member-failed", name, wall0)) is not None) - wall0
    return lists, seen


def serf_newcomer(node: Node, tmp: Path, agents: list[SerfAgent], seed: str | None, fig: Figures) -> SerfAgent:
    """One more agent: from its spawn until every member list has it and it has them all, and every
    member-join handler ran (stamped as the log lines and the handler runs came)."""
    wall0, t0 = time.time(), time.monotonic()
    late = serfagent.start(node, tmp, finding(seed))
    name, others = node.name, [a.node.name for a in agents]

    def everywhere() -> bool:
        check_running([late])
        return (all(late.joined_at(x) for x in others) and all(a.joined_at(name) for a in agents)
                and all(late.handler_at("member-join", x) for x in others)
                and all(a.handler_at("member-join", name) for a in agents))
    wait_for(everywhere, 60, interval=0.05, what="the serf newcomer everywhere")
    lists = [t for a in agents if (t := a.joined_at(name))] + [t for x in others if (t := late.joined_at(x))]
    seen = ([t for a in agents if (t := a.handler_at("member-join", name))]
            + [t for x in others if (t := late.handler_at("member-join", x))])
    fig.newcomers.append(max(lists) - t0)
    fig.newcomers_seen.append(max(seen) - wall0)
    return late


def run_serf(nodes: list[Node], n: int, tmp: Path, idle: float, doomed: list[int], seed: str | None,
             multicast: Callable[[], int]) -> Figures:
    """As run_omdisc, with serf."""
    fig = Figures("serf")
    t0 = time.monotonic()
    agents = serf_storm(nodes[:n], tmp, seed)
    fig.converge = time.monotonic() - t0
    time.sleep(SETTLE)
    idle_load([a.proc.pid for a in agents], idle, fig, multicast)
    alive = [*agents]
    for node in nodes[n:]:
        alive.append(serf_newcomer(node, tmp, alive, seed, fig))
        time.sleep(BETWEEN_NEWCOMERS)
    kill_rounds([agents[i] for i in doomed], alive, serf_kill, fig)
    stop_all([a.proc for a in alive])
    return fig


# --- the lab and the table -------------------------------------------------------------------------

def address(i: int) -> str:
    return f"198.18.{i // 200}.{i % 200 + 1}"


def lab_nodes(lab: Lab, count: int) -> list[Node]:
    """Nodes whose legs skip IPv6 duplicate address detection (serf's mDNS waits for it), each with
    every other's IPv4 neighbour entry made permanent: no ARP during the run, for either system."""
    lan = lab.lan()
    nodes = []
    for i in range(count):
        node = lab.node(f"n{i}")
        node.run("sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
        node.add_leg(lan, f"{address(i)}/15")
        nodes.append(node)
    lab.fill_neighbours(nodes)
    return nodes


def table(n: int, idle: float, mode: str, om: Figures, serf: Figures) -> list[str]:
    def ms(x: float) -> str:
        return f"{x * 1000:.0f} ms"

    def s(x: float) -> str:
        return f"{x:.2f} s"
    kills = len(om.kills)
    rows: list[tuple[str, float, float, Callable[[float], str]]] = [
        (f"converge: {n} started at once, to every list full", om.converge, serf.converge, s),
        ("RSS per node, median", om.rss_median, serf.rss_median, lambda x: f"{x:.1f} MiB"),
        ("RSS per node, max", om.rss_max, serf.rss_max, lambda x: f"{x:.1f} MiB"),
        (f"idle CPU per node, % of a core ({idle:.0f} s)", om.cpu, serf.cpu, lambda x: f"{x:.2f}%"),
        ("UDP datagrams sent per node per s", om.sent, serf.sent, lambda x: f"{x:.2f}"),
        (f"  of them multicast (each to the {n - 1} others)", om.multicast, serf.multicast, lambda x: f"{x:.2f}"),
        ("UDP datagrams received per node per s", om.received, serf.received, lambda x: f"{x:.2f}"),
        ("TCP segments sent per node per s", om.tcp, serf.tcp, lambda x: f"{x:.2f}"),
        (f"newcomer: spawn to every member list, median of {len(om.newcomers)}", statistics.median(om.newcomers),
         statistics.median(serf.newcomers), ms),
        ("  as tools see it (state.json | handlers)", statistics.median(om.newcomers_seen),
         statistics.median(serf.newcomers_seen), ms),
        (f"kill -9: out of every list, median of {kills}", statistics.median(om.kills),
         statistics.median(serf.kills), s),
        ("  as tools see it (state.json | handlers)", statistics.median(om.kills_seen),
         statistics.median(serf.kills_seen), s),
    ]
    how = "-discover (mDNS)" if mode == "mdns" else f"-join {address(0)} (the first agent; not mDNS)"
    out = [f"omdisc beside serf: {n} nodes on one bridge (+{len(om.newcomers)} newcomers, one at a time), each "
           f"system's defaults; serf with {how}",
           f"{'figure':<48} {'omdisc':>10} {'serf':>10} {'ratio':>6}"]
    for label, a, b, unit in rows:
        out.append(f"{label:<48} {unit(a):>10} {unit(b):>10} {f'{a / b:.2f}' if b else '-':>6}")
    rounds = ", ".join(f"{a:.2f}|{b:.2f}" for a, b in zip(om.kills, serf.kills, strict=True))
    joins = ", ".join(f"{a * 1000:.0f}|{b * 1000:.0f}" for a, b in zip(om.newcomers, serf.newcomers, strict=True))
    out += [f"newcomers (omdisc|serf, ms, to every list): {joins}; the cluster one larger each time",
            f"kill -9 rounds (omdisc|serf, s): {rounds}; cluster of {n + len(om.newcomers)}, then one fewer each round",
            f"{om.extra}; lists: omdisc's map files, serf's log (its member list); tools: omdisc's state.json "
            "(showmap --members), serf's event handlers (run after its 1 s quiescent period)",
            "datagrams: each namespace's UDP counters (IPv4 and IPv6; received: a node's own multicast looped back "
            "included); multicast: counted on the bridge"]
    if mode == "mdns":
        out.append("serf's mDNS polls (each agent at its start, then every 60 s) fall outside the idle window "
                   "unless it reaches 60 s after the start")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=16)
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--newcomers", type=int, default=5)
    parser.add_argument("--serf-mode", choices=("auto", "mdns", "join"), default="auto")
    args = parser.parse_args()
    require_root()
    mode = args.serf_mode if args.serf_mode != "auto" else "join" if args.n > JOIN_ABOVE else "mdns"
    doomed = victims(args.n, args.kills)
    as_installed()
    with (tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir="/dev/shm") as run,
          Lab(Path(tmp)) as lab):
        nodes = lab_nodes(lab, args.n + args.newcomers)
        multicast = multicast_counter(next(iter(lab.lans.values())))
        om = run_omdisc(nodes, args.n, Path(run), args.idle, doomed, multicast)
        serf = run_serf(nodes, args.n, Path(tmp), args.idle, doomed, address(0) if mode == "join" else None,
                        multicast)
    print("", *table(args.n, args.idle, mode, om, serf), sep="\n")


if __name__ == "__main__":
    main()
