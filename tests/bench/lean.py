"""Benchmark: what one daemon costs at idle, and what the map costs as the cluster grows. Prints
figures; asserts nothing.

  python -m tests.bench.lean [--seconds S]      (needs root: real daemons in lab namespaces)
  python -m tests.bench.lean feed IFACE COUNT [--every S]   (the feeder, run inside the lab by the bench)

1. A real daemon (default intervals: announce 10 s, dead 35 s) in a lab namespace, with no other node,
   and with 1,000 members kept alive by a feeder that announces each made-up node from an address of
   its own, every 10 s (today's steady load: 100 datagrams a second) and every 40 s (the 25 a second
   issue 10 allows; dead_interval 140 s then): its RSS, and its CPU over S seconds (default 30).
   Once with the project's venv python (the lab's), once as the Debian package runs it
   (debian/sbin/omdiscd: the system python3 with -S), when that one has the dependencies.
2. In this process, an Engine with 100, 1,000 and 4,096 members: bytes per member, and the cost of
   what the daemon does with them: one timer pass (next deadline + tick), the table build, the map
   write, state.json (render + write), and a SNAPSHOT's records.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import yaml

from omdisc.core.engine import Engine, LocalNode, Settings
from omdisc.core.protocol import Message, MsgType, encode
from omdisc.core.snapshots import records_for
from omdisc.shell.files import write_atomic
from omdisc.shell.sinks import STATE, AlphaSink
from omdisc.shell.statefile import encode_state
from tests.lab.inject import add_addresses, made_up
from tests.lab.netlab import PACKAGED_PROGRAM, REPO, Lab, Node, as_installed, require_root, wait_for

ANNOUNCE, DEAD = 10.0, 35.0  # the defaults
MEMBERS = 1000
# Each member announces every ANNOUNCE seconds today (100 datagrams a second at 1,000 members);
# issue 10 bounds what a node receives at 25 a second: a member every 40 s.
EVERY = (ANNOUNCE, 40.0)
SIZES = (100, 1000, 4096)
IP_PKTINFO = 8  # linux/in.h; Python's socket module does not name it


# --- the feeder (runs inside the lab) -------------------------------------------------------------

def announce(i: int, seq: int) -> bytes:
    """Made-up node i: ids two apart, so that no two share a range line (the table's worst case)."""
    return encode(Message(MsgType.ANNOUNCE, 1000 + 2 * i, 1, seq, (made_up(i),)))


def feed(iface: str, count: int, interval: float) -> None:
    """Announce `count` made-up nodes, each every `interval` seconds (the first round at once), each
    from its own address: one socket, the source chosen per datagram (IP_PKTINFO)."""
    addrs = [made_up(i) for i in range(count)]
    add_addresses(iface, addrs)
    index = socket.if_nametoindex(iface)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, struct.pack("=4s4si", bytes(4), bytes(4), index))
    dest = ("239.192.77.77", 7727)
    start = time.monotonic()
    for seq in range(1, 1 << 30):
        for i, addr in enumerate(addrs):
            # the first round at 5,000 a second (all join), then each node every `interval`, evenly spread
            due = start + (count / 5000 + (seq - 2 + i / count) * interval if seq > 1 else i / 5000)
            if (ahead := due - time.monotonic()) > 0:
                time.sleep(ahead)
            info = struct.pack("=i4s4s", index, addr.packed, bytes(4))
            sock.sendmsg([announce(i, seq)], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, dest)


# --- a real daemon ----------------------------------------------------------------------------------

def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def start(node: Node, program: tuple[str, ...], dead_interval: float) -> tuple[subprocess.Popen[bytes], Path]:
    d = node.lab.tmp / node.name
    (d / "alpha").mkdir(parents=True)
    cfg = {"alpha_dir": str(d / "alpha"), "pid_file": str(d / "pid"), "kernel": "alpha",
           "state_dir": str(d / "state"), "announce_interval": ANNOUNCE, "dead_interval": dead_interval}
    (d / "omdiscd.yaml").write_text(yaml.safe_dump(cfg))
    with open(d / "log", "wb") as log:
        proc = subprocess.Popen(["ip", "netns", "exec", node.ns, *program, "-n", "-c", str(d / "omdiscd.yaml")],
                                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    return proc, d / "alpha"


def members_in(alpha: Path) -> int:
    try:
        return len(json.loads((alpha / "state.json").read_text())["members"])
    except (OSError, ValueError, KeyError):
        return -1


def idle(program: tuple[str, ...], members: int, every: float, seconds: float) -> dict[str, float]:
    """RSS and CPU of one daemon, alone or with `members` made-up nodes announcing, each every
    `every` seconds (its dead_interval 3.5 times that, as the defaults are)."""
    with tempfile.TemporaryDirectory() as tmp, Lab(Path(tmp)) as lab:
        lan = lab.lan()
        node = lab.node("d", lan, "198.18.0.1/15")
        proc, alpha = start(node, program, max(DEAD, 3.5 * every))
        wait_for(lambda: members_in(alpha) == 0 or proc.poll() is not None, 20, what="the daemon to start")
        if proc.poll() is not None:
            raise SystemExit(f"omdiscd exited {proc.returncode}:\n{(alpha.parent / 'log').read_text()}")
        if members:
            feeder = lab.node("feed", lan, "198.18.0.2/15")
            cmd = [sys.executable, "-m", "tests.bench.lean", "feed", "eth0", str(members), "--every", str(every)]
            fed = subprocess.Popen(["ip", "netns", "exec", feeder.ns, *cmd], cwd=REPO,
                                   env={**os.environ, "PYTHONPATH": str(REPO)})
            wait_for(lambda: members_in(alpha) == members or fed.poll() is not None, 60, interval=0.2,
                     what=f"{members} members")
            if fed.poll() is not None:
                raise SystemExit(f"the feeder exited {fed.returncode}")
        time.sleep(5.0)  # the joins' map writes over
        rss = status_kib(proc.pid, "VmRSS")
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        return {"rss": rss, "rss_after": status_kib(proc.pid, "VmRSS"), "anon": status_kib(proc.pid, "RssAnon"),
                "cpu": cpu, "members": members_in(alpha)}


def runs(program: tuple[str, ...]) -> bool:
    """`program --version` works: its python has what omdiscd imports (the packaged one runs -S)."""
    return subprocess.run([*program, "--version"], capture_output=True, check=False, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}).returncode == 0


def real_daemons(seconds: float) -> None:
    as_installed()
    print(f"A real daemon, idle (default intervals); CPU over {seconds:.0f} s; RSS 5 s after the last join and "
          "at the end")
    print(f"{'run by':>16} {'members':>8} {'datagrams/s':>12} {'RSS MiB':>8} {'at end':>7} {'anon':>6} "
          f"{'CPU % of a core':>16}")
    programs = {"venv": (sys.executable, "-m", "omdisc.daemon")}
    if runs(PACKAGED_PROGRAM):
        programs["package"] = PACKAGED_PROGRAM
    for name, program in programs.items():
        for members, every in ((0, ANNOUNCE), *((MEMBERS, e) for e in EVERY)):
            r = idle(program, members, every, seconds)
            print(f"{name:>16} {r['members']:>8} {members / every:>12.0f} {r['rss'] / 1024:>8.1f} "
                  f"{r['rss_after'] / 1024:>7.1f} {r['anon'] / 1024:>6.1f} {r['cpu'] * 100:>16.2f}", flush=True)


# --- the map's work, in this process -------------------------------------------------------------

def engine_with(n: int) -> Engine:
    me = LocalNode(1, (IPv4Address("198.18.0.1"),))
    engine = Engine(me, 1, Settings(), random.Random(1), wall=lambda: 1.0)
    engine.start(0.0)
    for i in range(n):
        engine.receive(announce(i, 1), i / n, interface="eth0", source=made_up(i))
    assert len(engine.membership) == n, len(engine.membership)
    return engine


def timed(step: Callable[[], object], runs: int = 7) -> float:
    """Milliseconds of one call: the fastest of `runs` (the least disturbed by the rest of the machine)."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    return min(out) * 1000


def bytes_per_member(n: int) -> float:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    engine = engine_with(n)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del engine
    return used / n


def costs_at(n: int, sink: AlphaSink, state_dir: Path) -> list[float]:
    """Milliseconds: a timer pass, the table build, the map write, state.json, a SNAPSHOT's records."""
    engine = engine_with(n)
    now = 2.0  # everyone heard in the first second; nobody due to expire
    for _ in engine.settings.join_retries:  # our own JOIN's retries over
        engine.tick(now)

    def timer_pass() -> None:
        engine.next_deadline()
        engine.tick(now)
    table = engine.table()
    return [timed(timer_pass, 101), timed(engine.table), timed(lambda: sink.write(1, table)),
            timed(lambda: write_atomic(state_dir / STATE, encode_state(engine.state(now)))),
            timed(lambda: records_for(engine.membership, "eth0", False, now))]


def map_costs() -> None:
    print("\nThe map's work in one process (ms of one call, fastest of 7; ids two apart: one table line each)")
    print(f"{'members':>8} {'bytes/member':>13} {'timer pass':>11} {'table':>7} {'map write':>10} "
          f"{'state.json':>11} {'snapshot':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        sink = AlphaSink(Path(tmp))
        sink.prepare()
        for n in SIZES:
            per = bytes_per_member(n)
            costs = costs_at(n, sink, Path(tmp))
            print(f"{n:>8} {per:>13.0f} " + " ".join(f"{c:>{w}.3f}" for c, w in zip(costs, (11, 7, 10, 11, 9),
                                                                                       strict=True)), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", nargs="?", choices=["bench", "feed"], default="bench")
    p.add_argument("iface", nargs="?")
    p.add_argument("count", nargs="?", type=int, default=MEMBERS)
    p.add_argument("--seconds", type=float, default=30.0, help="how long the CPU of an idle daemon is measured")
    p.add_argument("--every", type=float, default=ANNOUNCE, help="feed: each made-up node announces this often")
    a = p.parse_args()
    if a.mode == "feed":
        feed(a.iface, a.count, a.every)
        return
    require_root()
    real_daemons(a.seconds)
    map_costs()


if __name__ == "__main__":
    main()
