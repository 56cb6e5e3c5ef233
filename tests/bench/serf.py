"""Benchmark: omdisc beside HashiCorp serf (Debian's `serf`), in one lab, each with its defaults.
Prints figures; asserts nothing.

  python -m tests.bench.serf [N] [--idle SECONDS]      (default 16 nodes, 20 s idle; needs root)

The same N+1 namespaces on one bridge serve both systems in turn. Neither is told its peers'
addresses: omdisc multicasts, serf runs with `-discover` (mDNS). For each system:
- N agents started at once, until every member list is complete;
- RSS (median and max over the N) and CPU over the idle seconds, per node;
- one newcomer: from its spawn until it is in every member list and every member is in its own.
  omdisc's is timed twice: on the map files (what the kernel is given) and on state.json (what
  `showmap --members` shows), with its JOIN's time after the spawn (its start-up).
serf's member lists are read from its event handler (member-join events, time-stamped when they
arrive), not by polling its RPC, which would load the agents being measured. serf's mDNS answers only
once the IPv6 link-local addresses are past duplicate address detection, so the lab's legs skip it.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.bench.converge import in_map
from tests.bench.crash import PACKAGED, in_state
from tests.bench.lean import cpu_seconds, status_kib
from tests.lab.netlab import Daemon, Lab, Node, require_root, wait_for

ON_JOIN = """#!/bin/sh
# serf member-join: one line per member on stdin ("name address role tags"), stamped on arrival
now=$(date +%s.%N)
while read -r name rest; do echo "$now $name" >> "$0.log"; done
"""


@dataclass
class Agent:
    """One member of either system: its process and how to read its member list."""

    node: Node
    proc: subprocess.Popen[bytes]
    members: Callable[[], int]  # members it knows, itself included
    seen_at: Callable[[str], float | None]  # when it first knew that node (wall clock), if it does


# --- omdisc ----------------------------------------------------------------------------------------

def omdisc_agent(node: Node) -> tuple[Agent, Daemon]:
    d = node.start(wait=False, **PACKAGED)
    return Agent(node, d.proc, lambda: in_map(d), lambda name: None), d


# --- serf ------------------------------------------------------------------------------------------

def serf_agent(node: Node, tmp: Path) -> Agent:
    handler = tmp / f"{node.name}-join"
    handler.write_text(ON_JOIN)
    handler.chmod(0o755)
    log = Path(f"{handler}.log")
    log.write_text("")
    out = open(tmp / f"{node.name}-serf.out", "wb")  # noqa: SIM115 - the agent writes it for its whole life
    proc = subprocess.Popen(
        ["ip", "netns", "exec", node.ns, "serf", "agent", f"-node={node.name}", "-iface=eth0",
         "-discover=omdbench", "-rpc-addr=127.0.0.1:7373", f"-event-handler=member-join={handler}",
         "-log-level=warn"], stdout=out, stderr=subprocess.STDOUT)
    out.close()

    def joined() -> dict[str, float]:
        seen: dict[str, float] = {}
        for line in log.read_text().splitlines():
            stamp, _, name = line.partition(" ")
            seen.setdefault(name, float(stamp))
        return seen
    return Agent(node, proc, lambda: len(joined()), lambda name: joined().get(name))


# --- the figures -----------------------------------------------------------------------------------

@dataclass
class Figures:
    system: str
    converge: float = 0.0
    rss_median: float = 0.0
    rss_max: float = 0.0
    cpu: float = 0.0  # percent of a core, per node
    newcomer: float = 0.0  # spawn to every member list
    extra: str = ""


def idle_load(agents: list[Agent], seconds: float, fig: Figures) -> None:
    rss = [status_kib(a.proc.pid, "VmRSS") / 1024 for a in agents]
    fig.rss_median, fig.rss_max = statistics.median(rss), max(rss)
    before = [cpu_seconds(a.proc.pid) for a in agents]
    time.sleep(seconds)
    busy = sum(cpu_seconds(a.proc.pid) - b for a, b in zip(agents, before, strict=True))
    fig.cpu = 100 * busy / seconds / len(agents)


def stop_all(agents: list[Agent]) -> None:
    for a in agents:
        if a.proc.poll() is None:
            a.proc.send_signal(signal.SIGTERM)
    for a in agents:
        try:
            a.proc.wait(10)
        except subprocess.TimeoutExpired:
            a.proc.kill()
            a.proc.wait(5)


def run_omdisc(nodes: list[Node], idle: float) -> Figures:
    fig = Figures("omdisc")
    n = len(nodes) - 1
    t0 = time.monotonic()
    pairs = [omdisc_agent(node) for node in nodes[:n]]
    agents, daemons = [a for a, _ in pairs], [d for _, d in pairs]
    wait_for(lambda: all(a.members() == n for a in agents), 120, interval=0.05, what="omdisc to converge")
    fig.converge = time.monotonic() - t0
    wait_for(lambda: all(len(d.state().get("members", [])) == n - 1 for d in daemons), 10, what="state.json")
    time.sleep(12)  # past the first announcements: the steady state
    idle_load(agents, idle, fig)
    wall0, t0 = time.time(), time.monotonic()
    late, d = omdisc_agent(nodes[n])
    took: dict[str, float] = {}

    def seen(what: str, count: Callable[[Daemon], int]) -> bool:
        if what not in took and all(count(x) == n + 1 for x in [d, *daemons]):
            took[what] = time.monotonic() - t0
        return what in took
    wait_for(lambda: seen("map", in_map) & seen("state", in_state), 30, interval=0.002,
             what="the omdisc newcomer everywhere")
    joined = wait_for(lambda: d.state().get("ready_at"), 5) - wall0
    fig.newcomer = took["map"]
    fig.extra = (f"newcomer in every state.json (showmap --members) {took['state'] * 1000:.0f} ms; "
                 f"its JOIN {joined * 1000:.0f} ms after its spawn")
    stop_all([*agents, late])
    return fig


def run_serf(nodes: list[Node], tmp: Path, idle: float) -> Figures:
    fig = Figures("serf")
    n = len(nodes) - 1
    t0 = time.monotonic()
    agents = [serf_agent(node, tmp) for node in nodes[:n]]
    wait_for(lambda: all(a.members() == n for a in agents), 120, interval=0.05, what="serf to converge")
    fig.converge = time.monotonic() - t0
    time.sleep(12)
    idle_load(agents, idle, fig)
    wall0 = time.time()
    late = serf_agent(nodes[n], tmp)
    name = nodes[n].name
    wait_for(lambda: late.members() == n + 1 and all(a.seen_at(name) for a in agents), 60, interval=0.02,
             what="the serf newcomer everywhere")
    everyone = [t for a in agents if (t := a.seen_at(name)) is not None]
    mine = max(t for x in agents if (t := late.seen_at(x.node.name)) is not None)
    fig.newcomer = max(*everyone, mine) - wall0
    stop_all([*agents, late])
    return fig


def lab_nodes(lab: Lab, count: int) -> list[Node]:
    """Nodes whose legs skip IPv6 duplicate address detection (serf's mDNS waits for it)."""
    lan = lab.lan()
    nodes = []
    for i in range(count):
        node = lab.node(f"n{i}")
        node.run("sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
        node.add_leg(lan, f"198.18.{i // 200}.{i % 200 + 1}/15")
        nodes.append(node)
    return nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=16)
    parser.add_argument("--idle", type=float, default=20.0)
    args = parser.parse_args()
    require_root()
    with tempfile.TemporaryDirectory() as tmp, Lab(Path(tmp)) as lab:
        nodes = lab_nodes(lab, args.n + 1)
        rows = [run_omdisc(nodes, args.idle), run_serf(nodes, Path(tmp), args.idle)]
    om, serf = rows
    print(f"\n{args.n} nodes, one bridge, each system's defaults (serf with -discover, mDNS):")
    print(f"{'':>7} {'converge':>9} {'RSS median':>11} {'RSS max':>8} {'idle CPU':>9} {'newcomer':>9}")
    for f in rows:
        print(f"{f.system:>7} {f.converge:>8.2f}s {f.rss_median:>8.1f}MiB {f.rss_max:>5.1f}MiB {f.cpu:>8.2f}% "
              f"{f.newcomer * 1000:>7.0f}ms")
    print(f"{'ratio':>7} {om.converge / serf.converge:>9.2f} {om.rss_median / serf.rss_median:>11.2f} "
          f"{om.rss_max / serf.rss_max:>8.2f} {om.cpu / serf.cpu if serf.cpu else float('nan'):>9.2f} "
          f"{om.newcomer / serf.newcomer:>9.2f}")
    print(f"omdisc: {om.extra}")
    print("newcomer: from its spawn until it is in every member list and every member in its own "
          "(omdisc: the map files)")


if __name__ == "__main__":
    main()
