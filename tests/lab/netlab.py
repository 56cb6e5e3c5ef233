"""A lab of real network namespaces: LANs are bridges in namespaces of their own, nodes are
namespaces with veth legs on them. Addresses from 198.18.0.0/15 (and 2001:db8::/32) only.

Every name starts with the lab's prefix, and close() removes everything the lab made, so a test
that fails leaves nothing behind. Needs root.
"""

from __future__ import annotations

import compileall
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PREFIX = "omdt"  # every namespace a test makes starts with this


def sh(*args: str, check: bool = True, ns: str | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


def clock_behind(offset: str) -> list[str]:
    """A Node.start prefix: the daemon's clocks `offset` off ("-1h"), by libfaketime preloaded into
    it alone (not the faketime wrapper, which would stay the daemon's parent: signals and kills
    would go to it)."""
    libs = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
    if not libs:
        raise RuntimeError("libfaketime is not installed (tools/setup.sh installs the faketime package)")
    return ["env", f"LD_PRELOAD={libs[0]}", f"FAKETIME={offset}"]


def remove_faketime_memory(pid: int) -> None:
    """libfaketime makes shared memory named by the process's pid and removes it at exit, but not
    after a kill -9: the lab removes it once the daemon is gone."""
    for name in (f"faketime_shm_{pid}", f"sem.faketime_sem_{pid}"):
        Path("/dev/shm", name).unlink(missing_ok=True)


def new_prefix() -> str:
    """Namespace names start with omdt<pid>x: the pid of the process that owns the lab, so a sweep
    can tell an abandoned lab (its owner is dead) from one another run is still using."""
    return f"{PREFIX}{os.getpid()}x{secrets.token_hex(2)}"


def _owner_alive(name: str) -> bool:
    digits = name[len(PREFIX):].split("x", 1)[0]
    return digits.isdigit() and Path(f"/proc/{digits}").exists()


def sweep(prefix: str = PREFIX, abandoned_only: bool = False) -> list[str]:
    """Remove the namespaces whose names start with `prefix`; with abandoned_only, only those whose
    owner is dead (left by a run that was killed before its close())."""
    out = sh("ip", "netns", "list", check=False).stdout.split()
    gone = [n for n in out if n.startswith(prefix) and not (abandoned_only and _owner_alive(n))]
    for name in gone:
        kill_ns_processes(name)
        sh("ip", "netns", "del", name, check=False)
    return gone


def kill_ns_processes(ns: str) -> None:
    pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@dataclass
class Lan:
    ns: str
    name: str
    ports: int = 0


def bridge_table(lan: Lan, name: str, rules: Iterable[str], hook: str = "forward",
                 counters: Iterable[str] = ()) -> None:
    """Load nftables table `name`, bridge family, into the LAN's namespace: one chain on `hook`
    ("forward": frames between two ports; "prerouting": every frame once, as it enters) holding
    `rules`, and the named `counters` they count into. The LAN's bridge is where a fault is made
    (loss, a partition) or the wire is counted, with no daemon the wiser."""
    named = "".join(f" counter {c} {{ }}\n" for c in counters)
    chain = "".join(f"  {r}\n" for r in rules)
    sh("nft", "-f", "-", ns=lan.ns, input=f"table bridge {name} {{\n{named} chain {hook} {{\n"
       f"  type filter hook {hook} priority 0; policy accept;\n{chain} }}\n}}\n")


def bridge_counted(lan: Lan, name: str) -> tuple[int, int]:
    """Packets and bytes counted in table `name` so far: its named counters and its rules' own."""
    items = json.loads(sh("nft", "-j", "list", "table", "bridge", name, ns=lan.ns).stdout)["nftables"]
    counters = [x["counter"] for x in items if "counter" in x]
    # a rule counting into a named counter says only its name: that one is counted above
    counters += [e["counter"] for x in items if "rule" in x for e in x["rule"]["expr"]
                 if isinstance(e.get("counter"), dict)]
    return sum(c["packets"] for c in counters), sum(c["bytes"] for c in counters)


@dataclass
class Daemon:
    node: Node
    proc: subprocess.Popen[bytes]
    dir: Path
    config: dict[str, Any]
    prefix: tuple[str, ...] = ()  # what it runs under (clock_behind's)

    @property
    def alpha(self) -> Path:
        """Its alpha directory: its own, unless it was given another's (a next life's, say)."""
        return Path(self.config["alpha_dir"])

    @property
    def log(self) -> str:
        return (self.dir / "log").read_text(errors="replace")

    def state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.alpha / "state.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    def showmap(self, *args: str) -> subprocess.CompletedProcess[str]:
        return sh(sys.executable, "-m", "omdisc.showmap", "--alpha-dir", str(self.alpha), *args,
                  check=False)

    def map(self) -> dict[str, Any]:
        """showmap --json, or {} while there is no map yet."""
        r = self.showmap("--json")
        return json.loads(r.stdout) if r.returncode == 0 else {}

    def ids(self) -> set[int]:
        """The node ids in this daemon's map (range lines expanded, aliases left out)."""
        return entries_ids(self.map().get("entries", []))

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None


def _expand(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """A range line stands for `count` nodes: one dict per node id."""
    return [{"id": entry["id"] + i} for i in range(entry.get("count", 1))]


def entries_ids(entries: Iterable[dict[str, Any]]) -> set[int]:
    return {x["id"] for e in entries if not e.get("alias") for x in _expand(e)}


@dataclass
class Node:
    lab: Lab
    ns: str
    name: str
    legs: list[str] = field(default_factory=list)
    daemons: list[Daemon] = field(default_factory=list)

    def run(self, *args: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        return sh(*args, check=check, ns=self.ns, **kw)

    def add_leg(self, lan: Lan, addr: str, ifname: str | None = None) -> str:
        """A veth from this node to `lan`'s bridge. `addr` is CIDR (198.18.0.1/15 or 2001:db8::1/64)."""
        ifname = ifname or f"eth{len(self.legs)}"
        lan.ports += 1
        peer = f"p{lan.ports}"
        sh("ip", "-n", self.ns, "link", "add", ifname, "type", "veth", "peer", "name", peer, "netns", lan.ns)
        sh("ip", "-n", lan.ns, "link", "set", peer, "master", "br0", "up")
        self.run("ip", "addr", "add", addr, "dev", ifname, *(["nodad"] if ":" in addr else []))
        self.run("ip", "link", "set", ifname, "up")
        if not self.legs:
            self.run("ip", "route", "add", "default", "dev", ifname)
        self.legs.append(ifname)
        return ifname

    def start(self, args: Iterable[str] = (), wait: bool = True, prefix: Iterable[str] = (), code: Path = REPO,
              program: Iterable[str] = (sys.executable, "-m", "omdisc.daemon"), **config: Any) -> Daemon:
        """omdiscd -n in this namespace, with fast test intervals unless given; `prefix` runs it
        under another command (clock_behind's); `code`: the tree whose omdisc package runs (another
        release's, say); `program`: what runs it (PACKAGED_PROGRAM: as the Debian package does)."""
        d = self.lab.tmp / f"{self.name}-{len(self.daemons)}"
        (d / "alpha").mkdir(parents=True)
        cfg: dict[str, Any] = {
            "alpha_dir": str(d / "alpha"), "pid_file": str(d / "omdiscd.pid"), "kernel": "alpha",
            "state_dir": str(self.lab.tmp / f"{self.name}-state"),  # kept across this node's restarts
            "announce_interval": 1.0, "dead_interval": 4.0, "port": self.lab.port,
        }
        cfg.update(config)
        (d / "omdiscd.yaml").write_text(yaml.safe_dump(cfg))
        log = open(d / "log", "wb")  # noqa: SIM115 - the daemon writes it for its whole life
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, *prefix, *program, "-n",
             "-c", str(d / "omdiscd.yaml"), *args],
            # -m puts the working directory first on sys.path: it must be `code` too
            stdout=log, stderr=subprocess.STDOUT, cwd=code, env={**os.environ, "PYTHONPATH": str(code)},
        )
        log.close()
        daemon = Daemon(self, proc, d, cfg, tuple(prefix))
        self.daemons.append(daemon)
        if wait:
            wait_for(lambda: daemon.map() or not daemon.alive(), 10, what=f"{self.name} to write its map")
            if not daemon.alive():
                raise RuntimeError(f"omdiscd on {self.name} exited {proc.returncode}:\n{daemon.log}")
        return daemon


class Lab:
    def __init__(self, tmp: Path, port: int = 7727) -> None:
        self.tmp = tmp
        self.port = port
        self.prefix = new_prefix()
        self.namespaces: list[str] = []
        self.nodes: dict[str, Node] = {}
        self.lans: dict[str, Lan] = {}

    def _ns(self, name: str) -> str:
        ns = f"{self.prefix}-{name}"
        sh("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def lan(self, name: str = "lan") -> Lan:
        ns = self._ns(name)
        sh("ip", "-n", ns, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        sh("ip", "-n", ns, "link", "set", "br0", "up")
        lan = Lan(ns, name)
        self.lans[name] = lan
        return lan

    def node(self, name: str, lan: Lan | None = None, addr: str | None = None) -> Node:
        node = Node(self, self._ns(name), name)
        self.nodes[name] = node
        if lan is not None and addr is not None:
            node.add_leg(lan, addr)
        return node

    def daemons(self) -> list[Daemon]:
        return [d for n in self.nodes.values() for d in n.daemons]

    def fill_neighbours(self, nodes: list[Node], ifname: str = "eth0") -> None:
        """Every node's IPv4 neighbour entry for every other, made permanent: no ARP in a large lab.
        All namespaces share one kernel, whose neighbour table holds gc_thresh3 (1,024) entries in
        all: with every node probing every other in turn, 100 nodes would need 9,900, and unicast
        to a neighbour the kernel cannot add is dropped without an error (UdpSndbufErrors). Each
        host of a real cluster has a table of its own (README, "Large clusters"); permanent entries
        are not counted against the limit."""
        legs = []
        for node in nodes:
            link = json.loads(node.run("ip", "-j", "addr", "show", ifname).stdout)[0]
            legs.append((link["address"], [a["local"] for a in link["addr_info"] if a["family"] == "inet"]))
        for i, node in enumerate(nodes):
            batch = "".join(f"neigh replace {addr} lladdr {mac} dev {ifname} nud permanent\n"
                            for j, (mac, addrs) in enumerate(legs) if j != i for addr in addrs)
            node.run("ip", "-batch", "-", input=batch)

    def internal_errors(self) -> list[str]:
        """Daemons that hit a bug (an internal error counted, or a traceback logged): a test that
        passes with one of these hides it, so the lab fixture fails it."""
        bad = []
        for d in self.daemons():
            errors = d.state().get("stats", {}).get("internal_errors", 0)
            if errors or "Traceback" in d.log:
                bad.append(f"{d.node.name} ({d.dir.name}): {errors} internal errors\n{d.log[-3000:]}")
        return bad

    def close(self) -> None:
        for d in self.daemons():
            if d.alive():
                d.proc.kill()
                d.proc.wait(5)
            if any(arg.startswith("FAKETIME=") for arg in d.prefix):
                remove_faketime_memory(d.proc.pid)
        for ns in reversed(self.namespaces):
            kill_ns_processes(ns)
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def simple_lab(tmp: Path, count: int, net: str = "198.18.0") -> tuple[Lab, list[Node]]:
    lab = Lab(tmp)
    try:
        lan = lab.lan()
        nodes = [lab.node(f"n{i}", lan, f"{net}.{i}/24") for i in range(1, count + 1)]
    except BaseException:
        lab.close()
        raise
    return lab, nodes


# The package's /usr/sbin/omdiscd (python3 -S), run from this tree: the omdisc package is found
# first on the path (PYTHONPATH), the dependencies where Debian installs them.
PACKAGED_PROGRAM = (str(REPO / "debian" / "sbin" / "omdiscd"),)


def as_installed() -> None:
    """omdisc's bytecode written beforehand, as a package installs it: a benchmark's daemons then
    run as users' do (under PYTHONDONTWRITEBYTECODE each would compile its modules at every start,
    slower and with more memory)."""
    compileall.compile_dir(REPO / "omdisc", quiet=1)


def require_root() -> None:
    if os.geteuid() != 0 or not shutil.which("ip"):
        raise SystemExit("the lab needs root and iproute2 (run: make test, or make demo)")
