"""A rolling upgrade with real daemons of both releases on one LAN (docs/protocol.md, "Nodes that
probe by the address-ordered ring"): nodes of the release before probe rounds (OLD_RELEASE, taken
from git) and of this one run together; one of each kind is killed; a host not yet upgraded
restarts; then the old ones are restarted one by one as new, as systemctl restart does after a
package upgrade. Nobody live ever leaves any map; a killed node leaves every map within the old
nodes' checked expiry. A node rolled back to the old release beside new nodes only keeps them too:
they announce soon once it comes, not at their grown period.

Every map is read from its alpha files (om_config) every POLL seconds by a thread of its own, for
the whole test: one read that misses a live node fails it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from omdisc.core.detection.conductor import ADDRESS_RING_RATE, period_scale
from omdisc.core.table import TableFormatError, decode_config, node_ids
from omdisc.shell.sinks import ALPHA_CONFIG
from tests.integration.test_faults import MARGIN, maps_are, stats
from tests.lab.netlab import REPO, Daemon, Lab, Node, wait_for

# The last commit before probe rounds: its nodes probe two successors on the address-ordered ring,
# judge SUSPECT and DEAD by it, and send no ROUNDS flag.
OLD_RELEASE = "c77afec42bdc686be0e2fd00641fe833eeff0022"
OLD, NEW = (1, 2, 3), (4, 5, 6)  # node ids: 198.18.0.<id>
ANNOUNCE, DEAD = 1.0, 4.0  # the lab's intervals (Node.start's)
POLL = 0.1
TOGETHER = 30.0  # seconds old and new run side by side before anything happens
SETTLE = 4.0  # seconds watched after each restart
# Old nodes keep a crashed node they were not told of until it expires: not heard for dead_interval
# (x the announce period's scale beside them), then three PINGs 0.5 s apart unanswered (the old
# release's check); this release's check is four PINGs 0.4 s apart. Scale: 1 up to 10 nodes.
OLD_CHECK, NEW_CHECK = 3 * 0.5, 4 * 0.4
KILLED_BOUND = DEAD * period_scale(len(OLD + NEW), ADDRESS_RING_RATE * ANNOUNCE) + max(OLD_CHECK, NEW_CHECK) + MARGIN


def old_release(dest: Path) -> Path:
    """The old release's omdisc package, from this repository's history, under `dest`."""
    try:
        tar = subprocess.run(["git", "-C", str(REPO), "archive", OLD_RELEASE, "omdisc"],
                             capture_output=True, check=True).stdout
    except FileNotFoundError:
        pytest.fail("git is needed for the rolling upgrade test (it takes the old release from history)")
    except subprocess.CalledProcessError as e:
        pytest.fail(f"git archive {OLD_RELEASE} (the release before probe rounds) failed in {REPO}; the test "
                    f"needs a clone with that commit (a full one, not --depth): {e.stderr.decode(errors='replace')}")
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    assert not (dest / "omdisc/core/detection/rounds.py").exists(), "OLD_RELEASE already has probe rounds"
    return dest


@dataclass
class Vigil:
    """Every live node's map, read every POLL seconds by a thread of its own while in a with block:
    a live node missing from one is a miss; the node last killed is timed out of each."""

    daemons: dict[int, Daemon]  # node id -> its life now (its lives share the alpha directory, as under systemd)
    kinds: dict[int, str]  # node id -> "old" or "new": the release it runs now
    misses: list[str] = field(default_factory=list)
    victim: int | None = None
    killed_at: float = 0.0
    left: dict[int, float] = field(default_factory=dict)  # holder -> seconds from the kill to the victim's leaving
    # restarted as the old release, whose first map is written once any node is heard (an
    # announcement may come before the SNAPSHOT): its map counts once its next life has written one
    # of everyone. This release holds its first map until it has the last one's nodes (core/throttle.py).
    settling: dict[int, Written] = field(default_factory=dict)  # node -> its last life's om_config
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def __enter__(self) -> Vigil:
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()

    def _watch(self) -> None:
        while not self.done.wait(POLL):
            with self.lock:
                live, victim = dict(self.daemons), self.victim
                for holder, d in live.items():
                    ids, written = read_om_config(d)
                    if holder in self.settling:
                        if set(live) <= ids and written != self.settling[holder]:
                            del self.settling[holder]
                        continue
                    if not set(live) <= ids:
                        self.misses.append(f"#{holder} ({self.kinds[holder]}) lacks {sorted(set(live) - ids)}")
                    if victim is not None and victim not in ids and holder not in self.left:
                        self.left[holder] = time.monotonic() - self.killed_at

    def killed(self, victim: int) -> None:
        with self.lock:
            del self.daemons[victim]
            self.victim, self.killed_at, self.left = victim, time.monotonic(), {}

    def next_life(self, node: int, life: Daemon, kind: str, last_map: Written) -> None:
        """`last_map`: the om_config the last life left (read_om_config), taken before this life began."""
        with self.lock:
            self.daemons[node], self.kinds[node] = life, kind
            if kind == "old":
                self.settling[node] = last_map

    def watch(self, seconds: float) -> None:
        """Only the thread watches meanwhile: nobody live may leave a map."""
        time.sleep(seconds)
        if self.misses:
            pytest.fail("a live node left a map: " + "; ".join(dict.fromkeys(self.misses)))


Written = tuple[int, int]  # which om_config: (inode, mtime in ns); each write renames a new file over it


def read_om_config(d: Daemon) -> tuple[set[int], Written]:
    """The node ids in `d`'s om_config, and which file was read (one open: the two agree)."""
    try:
        with open(d.alpha / ALPHA_CONFIG, "rb") as f:
            st = os.fstat(f.fileno())
            return set(node_ids(decode_config(f.read()))), (st.st_ino, st.st_mtime_ns)
    except (OSError, TableFormatError):
        return set(), (0, 0)


def how_it_left(d: Daemon, node: int) -> str:
    """What `d`'s log says took `node` out: 'failed (... declared by X)' or 'expired (...)'."""
    m = re.search(rf"node #{node} \S+ ((?:failed|expired) \(.*?\))", d.log)
    return m.group(1) if m else "?"


def kill(vigil: Vigil, node: int) -> None:
    """kill -9 `node` (no LEAVE): it leaves every live map within KILLED_BOUND."""
    vigil.daemons[node].proc.kill()
    vigil.killed(node)
    holders = set(vigil.daemons)
    wait_for(lambda: set(vigil.left) == holders, KILLED_BOUND + 2, interval=POLL, what=f"#{node} out of every map")
    print(f"kill -9 #{node} ({vigil.kinds[node]}), bound {KILLED_BOUND:.1f}s:")
    for h in sorted(holders):
        print(f"  #{h} ({vigil.kinds[h]}): out after {vigil.left[h]:.2f}s, {how_it_left(vigil.daemons[h], node)}")
    assert max(vigil.left.values()) <= KILLED_BOUND, vigil.left
    vigil.watch(0)


def incarnation_at(d: Daemon, node: int) -> int:
    return next((m["incarnation"] for m in d.state().get("members", []) if m["id"] == node), 0)


COUNTED = ("suspect", "failed", "expired", "probe_ignored", "probe_checks", "doubts")


def print_counters(node: int, d: Daemon, kind: str) -> None:
    counted = ", ".join(f"{k} {v}" for k, v in sorted(stats(d).items()) if k.startswith(COUNTED))
    print(f"#{node} ({kind}) counted: {counted or 'nothing of these'}")


def restart_as(vigil: Vigil, node: Node, kind: str, code: Path = REPO) -> None:
    """What systemctl restart does (SIGUSR2: no LEAVE), then `code`'s omdiscd in the same state_dir
    and alpha directory, as a package upgrade (or its rollback) does."""
    nid = int(node.name[1:])
    life = vigil.daemons[nid]
    print_counters(nid, life, vigil.kinds[nid])
    last = life.state()["incarnation"]
    life.signal(signal.SIGUSR2)
    assert life.proc.wait(10) == 0
    last_map, t0 = read_om_config(life)[1], time.monotonic()
    vigil.next_life(nid, node.start(wait=False, code=code, alpha_dir=str(life.alpha)), kind, last_map)
    wait_for(lambda: all(incarnation_at(d, nid) > last for h, d in vigil.daemons.items() if h != nid), 10,
             interval=POLL, what=f"#{nid}'s next life taken")
    wait_for(lambda: nid not in vigil.settling, 10, interval=POLL, what=f"#{nid}'s next life's map of everyone")
    print(f"#{nid} restarted as {kind}: its next life in every map after {time.monotonic() - t0:.2f}s")


def cluster(lab: Lab, old: tuple[int, ...], new: tuple[int, ...], old_code: Path) -> tuple[dict[int, Node], Vigil]:
    """Nodes 198.18.0.<id> on one LAN, the old release's started first (a cluster being upgraded)."""
    lan = lab.lan()
    nodes = {i: lab.node(f"n{i}", lan, f"198.18.0.{i}/24") for i in old + new}
    lives = {i: nodes[i].start(code=old_code) for i in old} | {i: nodes[i].start() for i in new}
    wait_for(lambda: maps_are(lives.values(), set(nodes)), 15, what="old and new to converge")
    return nodes, Vigil(lives, {i: "old" if i in old else "new" for i in nodes})


def test_old_and_new_nodes_lose_nobody_through_a_rolling_upgrade(lab: Lab, tmp_path: Path) -> None:
    old_code = old_release(tmp_path / "old")
    nodes, vigil = cluster(lab, OLD, NEW, old_code)
    with vigil:
        vigil.watch(TOGETHER)  # old and new side by side
        # #1's probers on the address-ordered ring (#5, #6) are new: the old nodes hear of its end
        # only from nodes with rounds; #4's (#2, #3) are old: they find it, and say so to the new
        kill(vigil, 1)
        kill(vigil, 4)
        # a host not yet upgraded restarts: its next life learns the new nodes from a SNAPSHOT, and
        # keeps them only if they announce as often as its dead_interval expects
        restart_as(vigil, nodes[2], "old", old_code)
        vigil.watch(SETTLE)
        for i in (2, 3):
            restart_as(vigil, nodes[i], "new")
            vigil.watch(SETTLE)
    for i, d in sorted(vigil.daemons.items()):
        print_counters(i, d, vigil.kinds[i])


class NodesLost(Exception):
    """Live nodes left a map."""


def test_a_node_rolled_back_to_the_old_release_keeps_everyone(lab: Lab, tmp_path: Path) -> None:
    old_code = old_release(tmp_path / "old")
    nodes, vigil = cluster(lab, (), (1, 2, 3, 4, 5), old_code)
    with vigil:
        vigil.watch(3 * ANNOUNCE)  # past their first announcements: their period has grown
        restart_as(vigil, nodes[1], "old", old_code)
        time.sleep(2 * DEAD)  # the vigil's watch
    if vigil.misses:
        raise NodesLost("; ".join(dict.fromkeys(vigil.misses)))
