"""Attacks on the failure detector by a host without the cluster key (docs/protocol.md, "Failure
detection" and "Threats"): it sends only from its own addresses and joins as a member like any host
can (tests/lab/liar.py), then lies. What a user would notice: a kill -9'd node left in the maps, so
openMosix goes on migrating processes to a dead host, or a live node dropped from one.

Each test first measures this lab's normal detection (a kill -9, no attacker yet), then kills a node
under attack: it must be out of every map within three times that (never more than 10 s), and no live
node may be missing from any map meanwhile. An attacker that is a member and never probes leaves the
victim unprobed in each round that draws it as the victim's prober (a third of the rounds among four
members; SWIM's random choice leaves a node unprobed as often), so each such round after the kill,
as every node draws them (omdisc.core.detection.rounds), adds one round to the bound: what is
checked is that its lies cost no more. The daemons announce every second, so the labs converge
fast, but expire a silent node only after 35 s (the packaged dead_interval): within the bounds here,
only the probes can remove a node.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

import pytest

from omdisc.core.detection.rounds import position
from tests.integration.test_failure_detection import DETECTION
from tests.integration.test_faults import MARGIN, kernel_ids
from tests.lab.liar import Attacker
from tests.lab.netlab import Daemon, Lab, Lan, wait_for

INTERVALS: dict[str, Any] = {"announce_interval": 1.0, "dead_interval": 35.0}
LIMIT = 10.0  # seconds: the longest a dead node may stay in a map under attack, whatever the lab measured
# (plus the rounds a silent attacker drew as the victim's prober)
ROUND = 1.0  # seconds: probe_interval, the daemons' default
AFTER = 2.0  # seconds the maps are still watched once the victim is out: a live node dropped late counts too
A_NET = "198.18.1"


def node_id(addr: str) -> int:
    """What the daemons number a node (3rd octet x 256 + 4th)."""
    octets = [int(x) for x in addr.split(".")]
    return octets[2] * 256 + octets[3]


@dataclass
class Peer:
    """A real node of the lab: its daemon and the address it is known by."""

    daemon: Daemon
    addr: str

    @property
    def id(self) -> int:
        return node_id(self.addr)

    @property
    def name(self) -> str:
        return self.daemon.node.name


def peer(lab: Lab, lan: Lan, name: str, addr: str) -> Peer:
    return Peer(lab.node(name, lan, f"{addr}/24").start(**INTERVALS), addr)


def ids_everywhere(peers: list[Peer], ids: set[int]) -> bool:
    """Every peer's map holds (at least) these nodes."""
    return all(ids <= kernel_ids(p.daemon) for p in peers)


@dataclass
class Detection:
    """What the maps showed after a kill -9: when each lost the victim, and any live node missing."""

    killed_at: float = 0.0  # the wall clock at the kill: the probe rounds follow it
    gone_at: dict[str, float] = field(default_factory=dict)  # map -> seconds after the kill
    missing: dict[str, list[int]] = field(default_factory=dict)  # map -> the live nodes it lacked, first seen
    held: list[str] = field(default_factory=list)  # maps that held the victim at the last look

    @property
    def took(self) -> float | None:
        """Until the last map lost it; None when some map still held it."""
        return None if self.held or not self.gone_at else max(self.gone_at.values())

    def said(self, wait: float) -> str:
        took = self.took
        return f"{took:.2f}s" if took is not None else f"still in {sorted(self.held)} after {wait:.1f}s"


def kill_and_watch(victim: Peer, others: list[Peer], wait: float) -> Detection:
    """kill -9 the victim, then read the others' maps (om_config) every 0.1 s, until all have lost it
    and AFTER more seconds have passed, or `wait` is over; noting any of the others missing from any."""
    live = {p.id for p in others}
    victim.daemon.proc.kill()  # no LEAVE
    t0 = time.monotonic()
    seen = Detection(killed_at=time.time())
    while True:
        now = time.monotonic() - t0
        seen.held = []
        for p in others:
            ids = kernel_ids(p.daemon)
            if victim.id in ids:
                seen.held.append(p.name)
            else:
                seen.gone_at.setdefault(p.name, now)
            if live - ids:
                seen.missing.setdefault(p.name, sorted(live - ids))
        took = seen.took
        if (took is not None and now >= took + AFTER) or now > wait:
            return seen
        time.sleep(0.1)


def normal_detection(victim: Peer, others: list[Peer]) -> tuple[float, float]:
    """This lab's detection with no attacker, and the bound under attack it gives: three times it,
    not less than the protocol's own worst case, not more than LIMIT."""
    seen = kill_and_watch(victim, others, LIMIT)
    assert not seen.missing, f"a live node dropped with no attacker: {seen.missing}"
    assert seen.took is not None, f"no attacker yet, and the killed node is {seen.said(LIMIT)}"
    return seen.took, min(LIMIT, max(3 * seen.took, DETECTION + MARGIN))


def prober_of(victim: str, ring: list[str], round_no: int) -> str:
    """Who probes `victim` in this round: the member before it on the round's ring, as every node
    draws it (docs/protocol.md, "Who probes whom")."""
    order = sorted(ring, key=lambda a: position(ip_address(a), round_no))
    return order[order.index(victim) - 1]


def unprobed_rounds(victim: str, ring: list[str], silent: list[str], killed_at: float) -> int:
    """The rounds that draw one of the `silent` members (it probes nobody) as the victim's prober: the
    kill's round, if so, and those after it until one draws another prober, whose probe comes
    after the kill. Nobody probes the victim in those."""
    first = math.floor(killed_at / ROUND)
    count = int(prober_of(victim, ring, first) in silent)
    after = first + 1
    while prober_of(victim, ring, after) in silent:
        count, after = count + 1, after + 1
    return count


def check_under_attack(what: str, victim: Peer, others: list[Peer], normal: tuple[float, float],
                       attacker: Attacker, silent: list[str] | None = None) -> None:
    """Kill the victim with the attacker at work. `silent`: the attacker's members on the victim's
    ring, which never probe (`others` are all on that ring then)."""
    took, bound = normal
    silent = silent or []
    ring = [p.addr for p in [victim, *others]] + silent
    watch = bound + (LIMIT if silent else 0)  # long enough for any run of unprobed rounds seen
    seen = kill_and_watch(victim, others, watch)
    unprobed = unprobed_rounds(victim.addr, ring, silent, seen.killed_at) if silent else 0
    bound += unprobed * ROUND
    print(f"{what}: kill -9 out of every map after {took:.2f}s with no attacker, {seen.said(watch)} under attack "
          f"(bound {bound:.2f}s, {unprobed} rounds unprobed); the attacker sent {attacker.sent()}")
    assert not seen.missing, f"live nodes dropped from maps under attack: {seen.missing}"
    assert seen.took is not None and seen.took <= bound, (
        f"the killed node #{victim.id} is {seen.said(watch)} (normal: {took:.2f}s, bound {bound:.2f}s)")


@pytest.fixture
def attack(lab: Lab) -> Iterator[Callable[..., Attacker]]:
    """Starts tests.lab.liar in a node; stopped (SIGTERM) before the lab goes, whatever happened. An
    attacker that died before the end fails the test: what it would have shown was not shown."""
    started: list[Attacker] = []

    def start(node_name: str, mode: str, addresses: list[str], about: str | None = None,
              targets: list[str] | None = None) -> Attacker:
        a = Attacker(lab.nodes[node_name], mode, addresses, about, targets)
        started.append(a)
        return a

    yield start
    died = [a for a in started if not a.stop()]
    assert not died, "the attacker died during the test:\n" + "\n".join(a.log for a in died)


def one_lan(lab: Lab, hosts: list[int], attacker: list[int]) -> list[Peer]:
    """Real nodes at A_NET.<host>, converged, and a node "evil" holding the attacker's addresses."""
    lan = lab.lan()
    peers = [peer(lab, lan, f"n{h}", f"{A_NET}.{h}") for h in hosts]
    evil = lab.node("evil", lan, f"{A_NET}.{attacker[0]}/24")
    for h in attacker[1:]:
        evil.run("ip", "addr", "add", f"{A_NET}.{h}/24", "dev", "eth0")
    wait_for(lambda: all(kernel_ids(p.daemon) == {q.id for q in peers} for p in peers), 15,
             what=f"{len(peers)} daemons to converge")
    return peers


def test_a_lying_helper_keeps_no_dead_node(lab: Lab, attack: Callable[..., Attacker]) -> None:
    """A member that answers every PING_REQ with its own ACK for the subject ("it answered me"),
    without probing anyone: a monitor that asks it for help hears a dead node is alive. Two live
    nodes beside the victim: each monitor's two helpers are the other and the liar, so the liar is
    asked every time (among more nodes it is asked less than half the time, and the lie only delays)."""
    peers = one_lan(lab, [1, 2, 3, 4], [66])
    normal = normal_detection(peers[3], peers[:3])
    liar = attack("evil", "lying-helper", [f"{A_NET}.66"])
    wait_for(lambda: ids_everywhere(peers[:3], {node_id(f"{A_NET}.66")}), 10, what="the liar in every map")
    check_under_attack("lying helper", peers[2], peers[:2], normal, liar, silent=[f"{A_NET}.66"])


def test_two_addresses_just_below_a_node_on_the_ring_do_not_hide_its_crash(lab: Lab,
                                                                           attack: Callable[..., Attacker]) -> None:
    """The attacker takes .48 and .49, just below the victim .50 on the address-ordered ring, as two
    members (each from its own address); they answer PINGs but never probe anyone."""
    peers = one_lan(lab, [10, 20, 30, 40, 50, 60], [48, 49])
    normal = normal_detection(peers[5], peers[:5])
    squatter = attack("evil", "ring-squatter", [f"{A_NET}.48", f"{A_NET}.49"])
    wait_for(lambda: ids_everywhere(peers[:5], {node_id(f"{A_NET}.48"), node_id(f"{A_NET}.49")}), 10,
             what="both squatters in every map")
    check_under_attack("ring squatter", peers[4], peers[:4], normal, squatter, silent=[f"{A_NET}.48", f"{A_NET}.49"])


def test_a_strangers_suspects_slow_nobody(lab: Lab, attack: Callable[..., Attacker]) -> None:
    """A host that never joins multicasts 4 SUSPECTs a second about every node, each naming the life
    the node answered its PING with: nobody may judge the others slower for it."""
    peers = one_lan(lab, [1, 2, 3, 4, 5, 6], [99])
    normal = normal_detection(peers[5], peers[:5])
    wanted = {p.addr for p in peers[:5]}
    stranger = attack("evil", "stranger-suspects", [f"{A_NET}.99"], targets=sorted(wanted))
    wait_for(lambda: wanted <= set(stranger.status().get("lives", {})), 5, what="the stranger to hear every node")
    # four seconds of it before the crash: 16 SUSPECTs about each node
    start = stranger.sent().get("SUSPECT", 0)
    wait_for(lambda: stranger.sent().get("SUSPECT", 0) - start >= 16 * len(wanted), 8, what="16 rounds of SUSPECTs")
    check_under_attack("stranger's SUSPECTs", peers[2], peers[:2] + peers[3:5], normal, stranger)
    assert all(node_id(f"{A_NET}.99") not in kernel_ids(p.daemon) for p in peers[:5])  # it never joined


def test_a_judge_on_the_wrong_network_delays_nothing_across_a_gateway(lab: Lab,
                                                                       attack: Callable[..., Attacker]) -> None:
    """Networks A and B joined by a real gateway; a member on B answers every SUSPECT about an A node
    (forwarded by the gateway) with a DEAD about it. Only A's own nodes, and the gateway carrying
    their word, may judge an A node."""
    lan_a, lan_b = lab.lan("lanA"), lab.lan("lanB")
    gw = lab.node("gw")
    gw.add_leg(lan_a, f"{A_NET}.254/24", "leg0")
    gw.add_leg(lan_b, "198.18.2.254/24", "leg1")
    gateway = Peer(gw.start(["-i", "leg0,leg1"], **INTERVALS), f"{A_NET}.254")
    side_a = [peer(lab, lan_a, f"a{h}", f"{A_NET}.{h}") for h in (1, 2, 3, 4)]
    side_b = [peer(lab, lan_b, f"b{h}", f"198.18.2.{h}") for h in (1, 2)]
    lab.node("evil", lan_b, "198.18.2.200/24")
    everyone = [gateway, *side_a, *side_b]
    wait_for(lambda: all(kernel_ids(p.daemon) == {q.id for q in everyone} for p in everyone), 15,
             what="both networks in every map")
    # a3, as a4, is a node whose crash B's maps show in normal time with no attacker (its probers on A
    # are ones the gateway takes SUSPECT and DEAD from, also today): what delays it here is the judge
    victim, spare = side_a[2], side_a[3]
    live = [gateway, *side_a[:3], *side_b]
    normal = normal_detection(spare, live)
    judge = attack("evil", "wrong-network-judge", ["198.18.2.200"], about=f"{A_NET}.0/24")
    wait_for(lambda: ids_everywhere(live, {node_id("198.18.2.200")}), 10, what="the judge in every map")
    check_under_attack("judge on the wrong network", victim, [p for p in live if p is not victim], normal, judge)
