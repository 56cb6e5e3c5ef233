"""Faults against real daemons: a partition that heals, a hundred restarts, kill -9 while the map is
being written, and a node frozen (SIGSTOP) for longer than dead_interval.

Maps are read straight from the alpha files (om_config) while waiting, which costs far less than a
showmap process per poll; the final checks also go through showmap.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from ipaddress import IPv4Address
from itertools import pairwise
from pathlib import Path
from typing import Any

from omdisc.core.table import TableFormatError, decode_config, decode_mospe, node_ids
from tests.lab.netlab import REPO, Daemon, Lab, Lan, Node, bridge_counted, bridge_table, sh, wait_for

MARGIN = 1.0  # seconds allowed on top of the protocol's own bound (polling, a loaded machine)


# --- helpers ---------------------------------------------------------------------------------------


def alpha(d: Daemon) -> Path:
    return Path(d.config["alpha_dir"])


def kernel_ids(d: Daemon) -> set[int]:
    """The node ids in the om_config the daemon last wrote (range lines expanded, aliases left out)."""
    try:
        entries = decode_config((alpha(d) / "om_config").read_bytes())
    except (OSError, TableFormatError):
        return set()
    return set(node_ids(entries))


def own_state(d: Daemon) -> bool:
    try:
        return bool(json.loads((alpha(d) / "state.json").read_text()).get("pid") == d.proc.pid)
    except (OSError, ValueError):
        return False


def stats(d: Daemon) -> dict[str, int]:
    try:
        data: dict[str, Any] = json.loads((alpha(d) / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return dict(data.get("stats", {}))


def map_stamp(directory: Path) -> tuple[int, int] | None:
    """Which om_config is there: every write renames a new file over it, so a new inode."""
    try:
        st = (directory / "om_config").stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns)


def rewritten_or_gone(d: Daemon, before: tuple[int, int] | None) -> bool:
    now = map_stamp(alpha(d))
    return (now is not None and now != before and (alpha(d) / "om_mospe").exists()) or not d.alive()


def maps_are(daemons: Iterable[Daemon], ids: set[int]) -> bool:
    return all(kernel_ids(d) == ids for d in daemons)


def bridge_port(node: Node, lan: Lan, leg: str = "eth0") -> str:
    """The bridge port (in the LAN's namespace) that `node`'s veth `leg` is plugged into."""
    mine = json.loads(sh("ip", "-j", "link", "show", leg, ns=node.ns).stdout)[0]
    ports = json.loads(sh("ip", "-j", "link", "show", ns=lan.ns).stdout)
    return str(next(p["ifname"] for p in ports if p["ifindex"] == mine["link_index"]))


PARTITION_TABLE = "omdtpart"


def partition(lan: Lan, side_a: list[str], side_b: list[str]) -> None:
    """Drop every frame the bridge would forward between the two groups of ports (both ways)."""
    a = ", ".join(f'"{p}"' for p in side_a)
    b = ", ".join(f'"{p}"' for p in side_b)
    bridge_table(lan, PARTITION_TABLE, [f"iifname {{ {a} }} oifname {{ {b} }} counter drop",
                                        f"iifname {{ {b} }} oifname {{ {a} }} counter drop"])


def partition_drops(lan: Lan) -> int:
    return bridge_counted(lan, PARTITION_TABLE)[0]


def heal(lan: Lan) -> None:
    sh("nft", "delete", "table", "bridge", PARTITION_TABLE, ns=lan.ns)


def socket_inodes(pid: int) -> set[int]:
    """Inodes of every socket the process holds open."""
    out: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = (fd_dir / fd.name).readlink()
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", str(target))
        if m:
            out.add(int(m.group(1)))
    return out


def udp_inodes(pid: int) -> set[int]:
    """Inodes of the UDP sockets of the process's network namespace (/proc/<pid>/net shows it)."""
    out: set[int] = set()
    for name in ("udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
            out.add(int(line.split()[9]))
    return out


def udp_sockets_of(pid: int) -> int:
    return len(socket_inodes(pid) & udp_inodes(pid))


def ss_udp_sockets_of(node: Node, pid: int) -> int:
    """The same count as ss sees it, inside the node's namespace."""
    out = node.run("ss", "-uanp").stdout
    return sum(len(re.findall(rf"\bpid={pid},", line)) for line in out.splitlines())


def peer_events(log: str, node_id: int, ip: str) -> list[str]:
    """What a daemon's log says happened to one peer, in order: joined, left, expired."""
    pattern = re.compile(rf"node #{node_id} {re.escape(ip)} (joined|left|expired)\b")
    return [m.group(1) for m in pattern.finditer(log)]


def churn(iface: str, port: int, count: int) -> None:
    """Run inside a lab namespace (see start_churn): `count` made-up nodes, each announced from its
    own source address 198.19.7.<2k> (ids two apart: one map entry each), join and leave in turns,
    paced, until killed. Every map write of the daemon that hears them is a different table."""
    from omdisc.core import protocol
    from omdisc.core.config import DEFAULT_GROUP
    from omdisc.core.nodeid import node_id_for
    from omdisc.core.protocol import Message, MsgType

    addrs = [IPv4Address(f"198.19.7.{2 * k}") for k in range(1, count + 1)]
    mreqn = struct.pack("=4s4si", bytes(4), bytes(4), socket.if_nametoindex(iface))
    socks = []
    for addr in addrs:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((str(addr), 0))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        socks.append(s)
    incarnation, seq = time.time_ns() // 1000, 0
    dest = (str(DEFAULT_GROUP), port)
    while True:
        for kind in (MsgType.ANNOUNCE, MsgType.LEAVE):
            seq += 1
            for addr, s in zip(addrs, socks, strict=True):
                s.sendto(protocol.encode(Message(kind, node_id_for(addr), incarnation, seq, (addr,))), dest)
                time.sleep(0.004)


def start_churn(node: Node, count: int) -> subprocess.Popen[bytes]:
    for k in range(1, count + 1):
        node.run("ip", "addr", "add", f"198.19.7.{2 * k}/15", "dev", "eth0")
    code = f"from tests.integration.test_faults import churn; churn('eth0', {node.lab.port}, {count})"
    return subprocess.Popen(
        ["ip", "netns", "exec", node.ns, sys.executable, "-c", code],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


@dataclass
class Reader:
    """Reads om_mospe then om_config in a loop, as a kernel-side consumer would, and checks each
    pair is a whole table: decodes, holds our own node, only ids that can exist, no id twice."""

    directory: Path
    own_id: int
    possible: set[int]
    reads: int = 0
    failures: list[str] = field(default_factory=list)
    tables: set[bytes] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def check_once(self) -> None:
        try:
            mospe = decode_mospe((self.directory / "om_mospe").read_bytes())
            raw = (self.directory / "om_config").read_bytes()
            entries = decode_config(raw)
        except (OSError, TableFormatError) as e:
            self.failures.append(f"read {self.reads}: {type(e).__name__}: {e}")
            return
        ids = [e.node_id + i for e in entries if not e.alias for i in range(e.count)]
        problem = ""
        if mospe != self.own_id:
            problem = f"om_mospe says {mospe}, expected {self.own_id}"
        elif self.own_id not in ids:
            problem = f"our node {self.own_id} is missing from a table of {len(ids)} nodes ({len(raw)} bytes)"
        elif not set(ids) <= self.possible:
            problem = f"ids that no node has: {sorted(set(ids) - self.possible)}"
        elif len(ids) != len(set(ids)):
            problem = "an id listed twice"
        if problem:
            self.failures.append(f"read {self.reads}: {problem}")
        elif len(self.tables) < 100_000:
            self.tables.add(raw)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check_once()
            self.reads += 1
            time.sleep(0.0005)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alpha-reader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


# --- the tests -------------------------------------------------------------------------------------


PROBE_ROUND = 1.0  # probe_interval's default


def test_partition_then_heal_merges_within_a_few_probe_rounds(lab: Lab) -> None:
    ai, dead = 0.5, 2.5
    lan = lab.lan()
    nodes = [lab.node(f"n{i}", lan, f"198.18.{i}.{10 + i}/15") for i in range(1, 5)]
    daemons = [n.start(announce_interval=ai, dead_interval=dead) for n in nodes]
    ids = [256 * i + 10 + i for i in range(1, 5)]  # 198.18.1.11 -> 267, ...
    everyone, left, right = set(ids), set(ids[:2]), set(ids[2:])
    wait_for(lambda: maps_are(daemons, everyone), 10, what="4 nodes in every map")
    ports = [bridge_port(n, lan) for n in nodes]

    t0 = time.monotonic()
    partition(lan, ports[:2], ports[2:])
    wait_for(lambda: maps_are(daemons[:2], left) and maps_are(daemons[2:], right), dead + 2 * ai + 8,
             what="each side of the partition to expire the other")
    split = time.monotonic() - t0
    assert partition_drops(lan) > 0
    # nodes go only once dead_interval has passed since they were last heard (at most ~1.1 x ai
    # before the cut)
    assert split >= dead - 1.1 * ai - 0.1, f"split after {split:.2f}s, before dead_interval"
    assert all(d.alive() for d in daemons)

    t1 = time.monotonic()
    heal(lan)
    wait_for(lambda: maps_are(daemons, everyone), 10, what="the maps to merge after the heal")
    merge = time.monotonic() - t1
    print(f"partition: split after {split:.2f}s (dead_interval {dead}s); "
          f"merged {merge:.2f}s after the heal (announce_interval {ai}s)")
    # a reconnect PING crosses within a probe round or two (each node sends one a round with odds
    # 1/(members + 1), 1/2 here: four nodes all miss 1 round in 16), then every node announces
    # once, spread over 10 ms a node: three rounds cover all but 1 heal in 4,000
    assert merge <= 3 * PROBE_ROUND + MARGIN, f"merge took {merge:.2f}s"
    maps = [d.map() for d in daemons]
    assert all(m["entries"] == maps[0]["entries"] for m in maps)
    assert sorted(m["node_id"] for m in maps) == ids


def sockets_are(pid: int, count: int) -> bool:
    return len(socket_inodes(pid)) == count


def test_a_hundred_restarts_each_seen_by_the_peers_no_pid_file_or_socket_left(lab: Lab) -> None:
    lives = 100
    lan = lab.lan()
    peer_nodes = [lab.node(f"p{i}", lan, f"198.18.0.{i}/24") for i in (1, 2)]
    peers = [n.start(announce_interval=1.0, dead_interval=60.0) for n in peer_nodes]
    node = lab.node("r", lan, "198.18.0.3/24")
    node_id, ip = 3, "198.18.0.3"
    wait_for(lambda: maps_are(peers, {1, 2}), 10, what="the two peers to converge")
    peer_fds = [len(list(Path(f"/proc/{p.proc.pid}/fd").iterdir())) for p in peers]
    # one pid file and one alpha directory for every life, as /run/omdiscd is for a service
    pid_file, shared = lab.tmp / "restarted.pid", lab.tmp / "restarted"

    t0 = time.monotonic()
    per_life: int | None = None
    all_per_life = 0
    for life in range(lives):
        before = map_stamp(shared)
        d = node.start(wait=False, pid_file=str(pid_file), alpha_dir=str(shared), announce_interval=1.0,
                       dead_interval=4.0)
        wait_for(partial(rewritten_or_gone, d, before), 10, what=f"life {life} to write its map")
        assert d.alive(), f"life {life} exited {d.proc.returncode}:\n{d.log}"
        assert pid_file.read_text().strip() == str(d.proc.pid)
        udp, every = udp_sockets_of(d.proc.pid), len(socket_inodes(d.proc.pid))
        if per_life is None:  # what one daemon opens (UDP: one per interface and family)
            per_life, all_per_life = udp, every
            assert per_life == 2  # the interface's multicast socket and the probes' unicast one
            assert ss_udp_sockets_of(node, d.proc.pid) == per_life
        assert udp == per_life, f"life {life}: {udp} UDP sockets, a daemon opens {per_life}"
        # sockets of any kind (the loop's signal wakeup is a socketpair): as many as the first life's,
        # once a transient one is closed (netifaces opens a netlink socket for each look at the links)
        if every != all_per_life:
            wait_for(partial(sockets_are, d.proc.pid, all_per_life), 2,
                     what=f"life {life}: {every} sockets to be {all_per_life} again, as the first life had")
        if life == lives - 1:
            assert ss_udp_sockets_of(node, d.proc.pid) == per_life
        rc = d.stop()
        assert rc == 0, f"life {life} exited {rc}:\n{d.log}"
        assert not pid_file.exists(), f"life {life} left its pid file behind"
    loop = time.monotonic() - t0

    def seen_everywhere() -> bool:
        return all(peer_events(p.log, node_id, ip).count("left") >= lives for p in peers)

    wait_for(seen_everywhere, 10, what="every LEAVE in the peers' logs")
    for p in peers:
        ev = [e for e in peer_events(p.log, node_id, ip) if e in ("joined", "left")]
        assert ev.count("joined") >= lives
        # each life's join comes after the previous life's LEAVE: never two joins in a row
        assert ev[0] == "joined"
        assert all(x != y for x, y in pairwise(ev)), ev
        assert "Traceback" not in p.log
        # the peers took 100 JOINs (and answered them): still one daemon's sockets, no fd growth
        assert udp_sockets_of(p.proc.pid) == per_life
        assert p.alive()
    assert [len(list(Path(f"/proc/{p.proc.pid}/fd").iterdir())) for p in peers] == peer_fds
    wait_for(lambda: maps_are(peers, {1, 2}), 5, what="the last LEAVE in the peers' maps")
    # the lab checks the daemons' own directories for internal errors; these lives wrote elsewhere
    assert stats(d).get("internal_errors", 0) == 0
    print(f"{lives} lives in {loop:.1f}s ({loop / lives * 1000:.0f} ms each), {per_life} UDP socket(s) per daemon")


def test_kill_9_while_the_map_is_being_written_never_leaves_half_a_table(lab: Lab) -> None:
    count = 64
    lan = lab.lan()
    node = lab.node("a", lan, "198.18.0.1/15")
    a = node.start(announce_interval=0.5, dead_interval=30.0)
    injector = lab.node("churn", lan, "198.19.7.1/15")
    possible = {1} | {7 * 256 + 2 * k for k in range(1, count + 1)}
    proc = start_churn(injector, count)
    reader = Reader(alpha(a), own_id=1, possible=possible)
    try:
        wait_for(lambda: stats(a).get("map_writes", 0) >= 20 or proc.poll() is not None, 30,
                 what="the churn to change the map")
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        reader.start()
        writes0 = stats(a).get("map_writes", 0)
        # (a daemon may throttle its map writes, to some ten a second: 30 writes take seconds)
        wait_for(lambda: reader.reads >= 1500 and stats(a).get("map_writes", 0) >= writes0 + 40, 60,
                 what="reads while the map is rewritten")
        a.proc.send_signal(signal.SIGKILL)
        assert a.proc.wait(10) == -signal.SIGKILL
        writes = stats(a).get("map_writes", 0) - writes0
        at_kill = reader.reads
        wait_for(lambda: reader.reads >= at_kill + 300, 30, what="reads after the kill")
        # the killed daemon comes back on the same files and pid file, under the same churn
        again = node.start(announce_interval=0.5, dead_interval=30.0, alpha_dir=a.config["alpha_dir"],
                           pid_file=a.config["pid_file"], wait=False)
        # its own writes: state.json says its pid (until it writes, the file is the killed one's)
        wait_for(lambda: (own_state(again) and stats(again).get("map_writes", 0) >= 20) or not again.alive(), 30,
                 what="the restarted daemon's writes")
        assert again.alive(), f"the restarted daemon exited {again.proc.returncode}:\n{again.log}"
        at_restart = reader.reads
        wait_for(lambda: reader.reads >= at_restart + 300, 30, what="reads after the restart")
        wait_for(lambda: "took over stale pid file" in again.log, 5, what="the pid file taken over")
    finally:
        reader.stop()
        stop_process(proc)
    leftovers = sorted(p.name for p in alpha(a).iterdir() if p.name.startswith("."))
    print(f"kill -9: {reader.reads} reads, {len(reader.tables)} different tables seen, "
          f"{writes} map writes during the reads before the kill; temporary files left: {leftovers}")
    assert reader.failures == [], f"{len(reader.failures)} bad reads of {reader.reads}: {reader.failures[:5]}"
    assert reader.reads >= 2000
    assert len(reader.tables) >= 20  # the map really changed under the reader
    assert again.alive() and kernel_ids(again) <= possible and 1 in kernel_ids(again)
    assert stats(again).get("internal_errors", 0) == 0 and "Traceback" not in again.log


def test_sigstop_past_dead_interval_then_sigcont_every_map_converges(lab: Lab) -> None:
    ai, dead = 0.5, 2.0
    lan = lab.lan()
    nodes = {name: lab.node(name, lan, f"198.18.0.{i}/24") for i, name in enumerate("abcde", start=1)}
    cfg: dict[str, Any] = {"announce_interval": ai, "dead_interval": dead}
    a, b, c, e = (nodes[n].start(**cfg) for n in "abce")
    wait_for(lambda: maps_are((a, b, c, e), {1, 2, 3, 5}), 10, what="a, b, c, e converged")

    c.signal(signal.SIGSTOP)
    t_stop = time.monotonic()
    wait_for(lambda: maps_are((a, b, e), {1, 2, 5}), dead + 2 * ai + 8, what="the peers to expire c")
    # while c sleeps: e leaves (LEAVE), d joins
    assert e.stop() == 0
    wait_for(lambda: maps_are((a, b), {1, 2}), 5, what="e's LEAVE")
    d = nodes["d"].start(**cfg)
    wait_for(lambda: maps_are((a, b, d), {1, 2, 4}), 10, what="d to join while c is stopped")
    # stopped for well past dead_interval: everything c knows is stale by its own clock too
    rest = 1.5 * dead + ai - (time.monotonic() - t_stop)
    if rest > 0:
        time.sleep(rest)
    assert kernel_ids(c) == {1, 2, 3, 5}  # a frozen daemon's map is what it was
    stopped = time.monotonic() - t_stop

    t_cont = time.monotonic()
    c.signal(signal.SIGCONT)
    live = (a, b, c, d)
    wait_for(lambda: maps_are(live, {1, 2, 3, 4}), 15, what="every map to converge after SIGCONT")
    took = time.monotonic() - t_cont
    print(f"SIGSTOP for {stopped:.2f}s (dead_interval {dead}s); every map complete {took:.2f}s after "
          f"SIGCONT (announce_interval {ai}s)")
    assert took <= 3 * ai + MARGIN, f"took {took:.2f}s"
    # and it stays so: no map is wrong at any time over more than a dead_interval
    until = time.monotonic() + dead + 2 * ai
    while time.monotonic() < until:
        wrong = {x.node.name: sorted(kernel_ids(x)) for x in live if kernel_ids(x) != {1, 2, 3, 4}}
        assert not wrong, f"maps went wrong after convergence: {wrong}"
        time.sleep(0.05)
    maps = [x.map() for x in live]
    assert all(m["entries"] == maps[0]["entries"] for m in maps)
    assert sorted(m["node_id"] for m in maps) == [1, 2, 3, 4]
    assert all(x.alive() for x in live)
