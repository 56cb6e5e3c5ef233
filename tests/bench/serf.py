"""Benchmark: omdisc beside HashiCorp serf (Debian's `serf`), in one lab, each with its defaults.
Prints one table (omdisc | serf | ratio); asserts nothing.

  python -m tests.bench.serf [N] [--idle SECONDS] [--kills K] [--serf-mode auto|mdns|join]
      (default 16 nodes, 20 s idle, 3 kills; needs root)

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
- one newcomer: from its spawn until it is in every member list and every member is in its own;
- K kill -9s, a different victim each time, left out afterwards (so the cluster shrinks alike
  for both): from the kill until the victim is out of every other member's list.
omdisc is read on its map files (what the kernel is given) and on state.json (showmap --members);
serf on its log (its member list) and its event handler's runs (tests/bench/serfagent.py).
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
from tests.bench.serfagent import SerfAgent, finding
from tests.integration.test_faults import kernel_ids
from tests.lab.netlab import Daemon, Lab, Lan, Node, as_installed, bridge_counted, bridge_table, require_root, wait_for

SETTLE = 22.0  # seconds after convergence before the idle window: past the two early announcements
# after each JOIN (one and two announce_intervals, 10 s and 20 s, on): the steady state, for both systems
BETWEEN_KILLS = 3.0  # the last failure's gossip over before the next kill
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
    newcomer: float = 0.0  # spawn to every member list
    newcomer_seen: float = 0.0  # the same, as a user's tools see it
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


def omdisc_newcomer(node: Node, daemons: list[Daemon], fig: Figures) -> Daemon:
    n = len(daemons) + 1
    wall0, t0 = time.time(), time.monotonic()
    late = node.start(wait=False, **PACKAGED)
    took: dict[str, float] = {}

    def seen(what: str, count: Callable[[Daemon], int]) -> bool:
        if what not in took and all(count(x) == n for x in [late, *daemons]):
            took[what] = time.monotonic() - t0
        return what in took
    wait_for(lambda: seen("map", in_map) & seen("state", in_state), 30, interval=0.002,
             what="the omdisc newcomer everywhere")
    joined = wait_for(lambda: late.state().get("ready_at"), 5) - wall0
    fig.newcomer, fig.newcomer_seen = took["map"], took["state"]
    fig.extra = f"the omdisc newcomer's JOIN left {joined * 1000:.0f} ms after its spawn"
    return late


def run_omdisc(nodes: list[Node], idle: float, doomed: list[int], multicast: Callable[[], int]) -> Figures:
    fig = Figures("omdisc")
    n = len(nodes) - 1
    t0 = time.monotonic()
    daemons = [node.start(wait=False, **PACKAGED) for node in nodes[:n]]
    wait_for(lambda: all(in_map(d) == n for d in daemons), 120, interval=0.05, what="omdisc to converge")
    fig.converge = time.monotonic() - t0
    wait_for(lambda: all(in_state(d) == n for d in daemons), 10, what="state.json")
    time.sleep(SETTLE)
    idle_load([d.proc.pid for d in daemons], idle, fig, multicast)
    alive = [*daemons, omdisc_newcomer(nodes[n], daemons, fig)]
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
    wall0, t0 = time.time(), time.monotonic()
    late = serfagent.start(node, tmp, finding(seed))
    name, others = node.name, [a.node.name for a in agents]

    def everywhere() -> bool:
        check_running([late])
        return (all(late.joined_at(x) for x in others) and all(a.joined_at(name) for a in agents)
                and all(late.handler_at("member-join", x) for x in others)
                and all(a.handler_at("member-join", name) for a in agents))
    wait_for(everywhere, 60, interval=0.02, what="the serf newcomer everywhere")
    lists = [t for a in agents if (t := a.joined_at(name))] + [t for x in others if (t := late.joined_at(x))]
    seen = ([t for a in agents if (t := a.handler_at("member-join", name))]
            + [t for x in others if (t := late.handler_at("member-join", x))])
    fig.newcomer, fig.newcomer_seen = max(lists) - t0, max(seen) - wall0
    return late


def run_serf(nodes: list[Node], tmp: Path, idle: float, doomed: list[int], seed: str | None,
             multicast: Callable[[], int]) -> Figures:
    fig = Figures("serf")
    n = len(nodes) - 1
    t0 = time.monotonic()
    agents = serf_storm(nodes[:n], tmp, seed)
    fig.converge = time.monotonic() - t0
    time.sleep(SETTLE)
    idle_load([a.proc.pid for a in agents], idle, fig, multicast)
    alive = [*agents, serf_newcomer(nodes[n], tmp, agents, seed, fig)]
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
        ("newcomer: spawn to every member list", om.newcomer, serf.newcomer, ms),
        ("  as tools see it (state.json | handlers)", om.newcomer_seen, serf.newcomer_seen, ms),
        (f"kill -9: out of every list, median of {kills}", statistics.median(om.kills),
         statistics.median(serf.kills), s),
        ("  as tools see it (state.json | handlers)", statistics.median(om.kills_seen),
         statistics.median(serf.kills_seen), s),
    ]
    how = "-discover (mDNS)" if mode == "mdns" else f"-join {address(0)} (the first agent; not mDNS)"
    out = [f"omdisc beside serf: {n} nodes on one bridge (+1 newcomer), each system's defaults; serf with {how}",
           f"{'figure':<48} {'omdisc':>10} {'serf':>10} {'ratio':>6}"]
    for label, a, b, unit in rows:
        out.append(f"{label:<48} {unit(a):>10} {unit(b):>10} {f'{a / b:.2f}' if b else '-':>6}")
    rounds = ", ".join(f"{a:.2f}|{b:.2f}" for a, b in zip(om.kills, serf.kills, strict=True))
    out += [f"kill -9 rounds (omdisc|serf, s): {rounds}; cluster of {n + 1}, then one fewer each round",
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
    parser.add_argument("--serf-mode", choices=("auto", "mdns", "join"), default="auto")
    args = parser.parse_args()
    require_root()
    mode = args.serf_mode if args.serf_mode != "auto" else "join" if args.n > JOIN_ABOVE else "mdns"
    doomed = victims(args.n, args.kills)
    as_installed()
    with tempfile.TemporaryDirectory() as tmp, Lab(Path(tmp)) as lab:
        nodes = lab_nodes(lab, args.n + 1)
        multicast = multicast_counter(next(iter(lab.lans.values())))
        om = run_omdisc(nodes, args.idle, doomed, multicast)
        serf = run_serf(nodes, Path(tmp), args.idle, doomed, address(0) if mode == "join" else None, multicast)
    print("", *table(args.n, args.idle, mode, om, serf), sep="\n")


if __name__ == "__main__":
    main()
