"""Gateways between networks (seed sections 3, 4.2, 5, 7), TTL mode through a real multicast
router, loop safety counted on the wire, IPv6 and mixed clusters. Real daemons, real kernel."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.lab.netlab import REPO, Daemon, Lab, Lan, Node, bridge_counted, bridge_table, sh, wait_for

FAST = {"announce_interval": 0.5, "dead_interval": 2.0}
DETECTION = 0.5 + 1.1 + 0.5 + 0.5 + 1.5 + 0.75  # as test_failure_detection's: probes, suspicion, DEAD lost once


def two_lans(lab: Lab) -> tuple[Lan, Lan, list[Node], list[Node]]:
    a, b = lab.lan("lanA"), lab.lan("lanB")
    side_a = [lab.node(f"a{i}", a, f"198.18.1.{i}/24") for i in (1, 2)]
    side_b = [lab.node(f"b{i}", b, f"198.18.2.{i}/24") for i in (1, 2)]
    return a, b, side_a, side_b


def gateway(lab: Lab, name: str, legs: list[tuple[Lan, str]]) -> Node:
    gw = lab.node(name)
    for i, (lan, addr) in enumerate(legs):
        gw.add_leg(lan, addr, f"leg{i}")
    return gw


def mapped(d: Daemon) -> list[tuple[int, str, object]]:
    return sorted((e["id"], e["ip"], e.get("count", "ALIAS")) for e in d.map().get("entries", []))


def test_one_gateway_joins_two_lans_with_alias_entries_and_gateway_discovery(lab: Lab) -> None:
    a, b, side_a, side_b = two_lans(lab)
    gw = gateway(lab, "gw", [(a, "198.18.1.254/24"), (b, "198.18.2.254/24")])
    g = gw.start(["-i", "leg0,leg1"])
    daemons = [n.start() for n in side_a + side_b]
    expected = [(257, "198.18.1.1", 2), (510, "198.18.1.254", 1), (513, "198.18.2.1", 2),
                (510, "198.18.2.254", "ALIAS")]
    wait_for(lambda: all(mapped(d) == sorted(expected) for d in [*daemons, g]), 10, what="every map complete")
    # gateway discovery, the same on every node of a side as soon as its members are known (state.json
    # follows the map within 0.25 s), whoever told whom first: never the gateway itself, no one missing
    gw_entry = {"id": 510, "address": "198.18.1.254", "addresses": ["198.18.1.254", "198.18.2.254"]}
    far = {"a": ["198.18.2.1", "198.18.2.2"], "b": ["198.18.1.1", "198.18.1.2"]}
    wait_for(lambda: all(len(d.state().get("members", [])) == 4 for d in daemons), 2, what="state.json complete")
    assert {d.node.name: d.state()["gateways"] for d in daemons} == {
        d.node.name: [{**gw_entry, "reaches": far[d.node.name[0]]}] for d in daemons}
    assert g.map()["gateway"] is True and g.map()["gateways"] == [] and g.state()["stats"]["forwarded"] > 0


def test_a_node_killed_behind_a_gateway_leaves_the_far_side_as_fast(lab: Lab) -> None:
    """Probes never cross the gateway: the killed node's own network finds it, and the gateway
    carries that network's DEAD on. Packaged intervals: expiry (35 s) could not be this fast."""
    a, b, side_a, side_b = two_lans(lab)
    gw = gateway(lab, "gw", [(a, "198.18.1.254/24"), (b, "198.18.2.254/24")])
    packaged = {"announce_interval": 10.0, "dead_interval": 35.0}
    gw.start(["-i", "leg0,leg1"], **packaged)
    daemons = [n.start(**packaged) for n in side_a + side_b]
    # by the JOINs and their answers, before any periodic announcement (10 s): a2 knows the gateway
    # from a1's answer at best, and must take the far side through it all the same
    wait_for(lambda: all(len(mapped(d)) == 4 for d in daemons), 5, what="every map complete")
    victim, far = daemons[0], daemons[2:]  # a2 may know a1 from a SNAPSHOT only: its DEAD names no seq
    victim.proc.kill()  # kill -9: no LEAVE
    t0 = time.monotonic()
    wait_for(lambda: all(257 not in {e[0] for e in mapped(d)} for d in far), DETECTION + 1.0, interval=0.02,
             what="the far side to drop the killed node")
    print(f"kill -9 behind a gateway: out of the far side's maps after {time.monotonic() - t0:.2f}s")
    # believed from the gateway, counted as the probes' verdict (state.json follows within 0.25 s)
    wait_for(lambda: all(d.state().get("stats", {}).get("failed", 0) == 1 for d in far), 2,
             what="the removal counted as failed")


def test_no_route_only_announces_on_each_interface(lab: Lab) -> None:
    a, b, side_a, side_b = two_lans(lab)
    gw = gateway(lab, "gw", [(a, "198.18.1.254/24"), (b, "198.18.2.254/24")])
    g = gw.start(["-i", "leg0,leg1", "--no-route"], **FAST)
    daemons = [side_a[0].start(**FAST), side_b[0].start(**FAST)]
    wait_for(lambda: len(g.ids()) == 3, 10, what="the multi-homed host to see both sides")
    time.sleep(2 * FAST["announce_interval"])
    assert [len(d.ids()) for d in daemons] == [2, 2]  # each side sees only itself and the host


class MulticastRouter:
    """A multicast router between the router node's two legs: for IPv4, smcroute where the kernel
    routes multicast (/proc/net/ip_mr_vif), else tests.lab.mrouter in user space (a kernel built
    without CONFIG_IP_MROUTE); for IPv6 tests.lab.mrouter on every kernel (smcroute's IPv6 routing
    has never been tried in these labs). Each forwards with the TTL one lower and drops what
    arrives with TTL 1."""

    def __init__(self, router: Node, lab: Lab, legs: tuple[str, str], group: str) -> None:
        self.router, self.lab, self.legs, self.group = router, lab, legs, group
        kernel = ":" not in group and Path("/proc/net/ip_mr_vif").exists()
        self.name = "smcroute (the kernel's multicast routing)" if kernel else "tests.lab.mrouter (user space)"
        self.proc = self._smcroute() if kernel else self._user_space()
        self.report = ""

    def _smcroute(self) -> subprocess.Popen[str]:
        conf, sock = self.lab.tmp / "smcroute.conf", self.lab.tmp / "smcroute.sock"
        leg0, leg1 = self.legs
        conf.write_text(f"phyint {leg0} enable\nphyint {leg1} enable\n"
                        f"mroute from {leg0} group {self.group} to {leg1}\n"
                        f"mroute from {leg1} group {self.group} to {leg0}\n")
        proc = subprocess.Popen(["ip", "netns", "exec", self.router.ns, "smcrouted", "-n", "-N", "-f", str(conf),
                                 "-u", str(sock), "-l", "info"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        wait_for(lambda: self.group in self.router.run("ip", "mroute", "show", check=False).stdout
                 or proc.poll() is not None or sock.exists(), 5, what="smcrouted")
        assert proc.poll() is None, "smcrouted exited"
        return proc

    def _user_space(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(["ip", "netns", "exec", self.router.ns, sys.executable, "-m", "tests.lab.mrouter",
                                 *self.legs], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        return proc

    def routed(self, source: str) -> bool:
        """Whether the router has forwarded the source's datagrams (the kernel's route, or the count)."""
        if self.name.startswith("smcroute"):
            return f"{source},{self.group}" in self.router.run("ip", "mroute", "show").stdout.replace(
                "(", "").replace(" ", "")
        return "forwarded_ipv" in self.report and not re.search(r"forwarded_ipv\d=0 forwarded_ipv\d=0", self.report)

    def stop(self) -> None:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=5)
        self.report = (out or "").strip()
        print(f"multicast router: {self.name} {self.report}")

    def __enter__(self) -> MulticastRouter:
        print(f"multicast router: {self.name}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.stop()


def omdisc_from(lan: Lan, sources: dict[str, str]) -> dict[str, int]:
    """Count the omdisc datagrams entering the LAN's bridge from each named source address."""
    family = "ip6" if ":" in next(iter(sources.values())) else "ip"
    bridge_table(lan, "omdfrom", [f"{family} saddr {addr} udp dport 7727 counter name {name}"
                                  for name, addr in sources.items()], hook="prerouting", counters=list(sources))
    return {name: 0 for name in sources}


def counted_from(lan: Lan, name: str) -> int:
    items = json.loads(sh("nft", "-j", "list", "counter", "bridge", "omdfrom", name, ns=lan.ns).stdout)["nftables"]
    return int(next(x["counter"]["packets"] for x in items if "counter" in x))


def ttl_mode_lab(lab: Lab, net: tuple[str, str], router_host: str) -> tuple[Lan, Lan, Node, Node, Node]:
    """Two LANs and a router between them; a1 on A, b1 on B. `net` is the two networks' prefixes."""
    a, b = lab.lan("lanA"), lab.lan("lanB")
    plen = "/64" if ":" in net[0] else "/24"
    router = gateway(lab, "router", [(a, f"{net[0]}{router_host}{plen}"), (b, f"{net[1]}{router_host}{plen}")])
    return a, b, router, lab.node("a1", a, f"{net[0]}1{plen}"), lab.node("b1", b, f"{net[1]}1{plen}")


def check_ttl_one_stays_home(lab: Lab, lans: tuple[Lan, Lan], near: Daemon, near_addr: str, addr: str,
                             args: list[str]) -> None:
    """A node that sends with TTL 1 (no -m), on A beside `near`: heard on A, never on B, while
    `near`'s datagrams (TTL 2) go on crossing the router."""
    a, b = lans
    omdisc_from(a, {"sent": addr})
    omdisc_from(b, {"crossed": addr, "routed": near_addr})
    node = lab.node("a2", a, addr + ("/64" if ":" in addr else "/24"))
    stray = node.start(args, **FAST)
    wait_for(lambda: len(near.state().get("members", [])) == 2, 10, what="a2 heard on its own LAN")
    wait_for(lambda: counted_from(a, "sent") >= 4, 10, what="a2 to send 4 datagrams")  # JOIN, announcements
    wait_for(lambda: counted_from(b, "routed") >= 2, 10, what="a1's datagrams to go on crossing the router")
    assert counted_from(b, "crossed") == 0, "a datagram sent with TTL 1 crossed the router"
    stray.stop()  # LEAVE: what it said of B's nodes (its SNAPSHOTs) must not outlive the router below


def test_ttl_mode_discovers_only_through_a_real_multicast_router(lab: Lab) -> None:
    a, b, router, n1, n2 = ttl_mode_lab(lab, ("198.18.1.", "198.18.2."), "254")
    # a second interface on a1 in TTL mode becomes an alias, and sends nothing
    extra = lab.lan("lanX")
    n1.add_leg(extra, "198.18.9.1/24", "ethx")
    d1 = n1.start(["-i", "eth0,ethx", "-m", "2"], **FAST)
    d2 = n2.start(["-m", "2"], **FAST)
    time.sleep(3 * FAST["announce_interval"])
    assert len(d1.ids()) == 1 and len(d2.ids()) == 1, "discovered each other with no router"
    with MulticastRouter(router, lab, ("leg0", "leg1"), "239.192.77.77") as mrouter:
        wait_for(lambda: len(d1.ids()) == 2 and len(d2.ids()) == 2, 10, what=f"discovery through {mrouter.name}")
        assert mapped(d2) == [(257, "198.18.1.1", 1), (257, "198.18.9.1", "ALIAS"), (513, "198.18.2.1", 1)]
        assert d1.map()["interfaces"] == ["eth0"]
        check_ttl_one_stays_home(lab, (a, b), d1, "198.18.1.1", "198.18.1.2", [])
        if not mrouter.name.startswith("smcroute"):
            mrouter.stop()
        assert mrouter.routed("198.18.1.1")
    # router gone: the two sides take each other out (their probes, about 3 s: the probes across
    # that failed while it was up slowed nobody, tests/scenarios/test_unicast_unrouted.py; slower on
    # a loaded machine, whose late timers lengthen every timeout: local health)
    wait_for(lambda: len(d1.ids()) == 1 and len(d2.ids()) == 1, 12, what="expiry once the router is gone")


def test_ttl_mode_over_ipv6_discovers_only_through_a_multicast_router(lab: Lab) -> None:
    """The same with hop limits: IPv6-only nodes on two networks, the group ff05::7727 (site-local)."""
    a, b, router, n1, n2 = ttl_mode_lab(lab, ("2001:db8:1::", "2001:db8:2::"), "fe")
    args = ["--family", "ipv6", "-m", "2"]
    d1, d2 = n1.start(args, **FAST), n2.start(args, **FAST)
    time.sleep(3 * FAST["announce_interval"])
    assert v6_members(d1) == set() and v6_members(d2) == set(), "discovered each other with no router"
    with MulticastRouter(router, lab, ("leg0", "leg1"), "ff05::7727") as mrouter:
        wait_for(lambda: v6_members(d1) == {"2001:db8:2::1"} and v6_members(d2) == {"2001:db8:1::1"}, 10,
                 what=f"discovery through {mrouter.name}")
        check_ttl_one_stays_home(lab, (a, b), d1, "2001:db8:1::1", "2001:db8:1::2", ["--family", "ipv6"])
        if not mrouter.name.startswith("smcroute"):
            mrouter.stop()
        assert mrouter.routed("2001:db8:1::1")
    wait_for(lambda: v6_members(d1) == set() and v6_members(d2) == set(), 12, what="expiry once the router is gone")


def wire_counter(lan: Lan) -> None:
    """Count every omdisc multicast datagram entering the LAN's bridge (once per frame, on ingress): what
    gateways forward. The probes (unicast between neighbours, never forwarded) are not counted."""
    bridge_table(lan, "omdwire", ["ip daddr 224.0.0.0/4 udp dport 7727 counter name dg"], hook="prerouting",
                 counters=["dg"])


def wire_count(lans: list[Lan]) -> int:
    return sum(bridge_counted(lan, "omdwire")[0] for lan in lans)


# Without probes every node announces each interval whatever the cluster's size: a steady flow of
# multicasts for the loop checks to count (with probes, announcements are minutes apart).
STEADY = {**FAST, "probe_interval": 0}


def check_loop_free(lab: Lab, lans: list[Lan], daemons: list[Daemon], nodes: int, gateways: int) -> None:
    wait_for(lambda: all(len(d.ids()) == nodes for d in daemons), 15, what="every map complete")
    time.sleep(3)  # joins, retries and their answers are over
    interval, window = FAST["announce_interval"], 10.0
    # each gateway forwards each message at most once, to its one other leg: at most 1 + gateways frames per
    # message; every node announces at most once per 0.9 x interval (jitter), plus one for the window's edge
    bound = nodes * (window / (0.9 * interval) + 1) * (1 + gateways)
    counts = []
    for _ in range(3):  # 30 s on the wire
        before = wire_count(lans)
        time.sleep(window)
        counts.append(wire_count(lans) - before)
    print(f"datagrams on the wire per {window:.0f}s window: {counts} (bound {bound:.0f})")
    assert all(c <= bound for c in counts)
    assert counts[2] <= 1.3 * counts[0] + 10  # no growth with time: nothing circulates
    assert all(len(d.ids()) == nodes for d in daemons)
    assert all(d.map()["entries"] == daemons[0].map()["entries"] for d in daemons)


def test_two_gateways_across_the_same_two_lans_let_nothing_circulate(lab: Lab) -> None:
    a, b, side_a, side_b = two_lans(lab)
    for lan in (a, b):
        wire_counter(lan)
    g1 = gateway(lab, "gw1", [(a, "198.18.1.201/24"), (b, "198.18.2.201/24")])
    g2 = gateway(lab, "gw2", [(a, "198.18.1.202/24"), (b, "198.18.2.202/24")])
    daemons = [g.start(["-i", "leg0,leg1"], **STEADY) for g in (g1, g2)]
    daemons += [n.start(**STEADY) for n in side_a + side_b]
    check_loop_free(lab, [a, b], daemons, nodes=6, gateways=2)


def test_ring_of_three_lans_and_three_gateways_lets_nothing_circulate(lab: Lab) -> None:
    lans = [lab.lan(f"lan{i}") for i in range(3)]
    for lan in lans:
        wire_counter(lan)
    nodes = [lab.node(f"n{i}", lans[i], f"198.18.{i + 1}.1/24") for i in range(3)]
    gws = [gateway(lab, f"gw{i}", [(lans[i], f"198.18.{i + 1}.254/24"), (lans[(i + 1) % 3],
                                                                         f"198.18.{(i + 1) % 3 + 1}.253/24")])
           for i in range(3)]
    daemons = [g.start(["-i", "leg0,leg1"], **STEADY) for g in gws] + [n.start(**STEADY) for n in nodes]
    check_loop_free(lab, lans, daemons, nodes=6, gateways=3)


def test_gateway_restart_expires_the_far_side_then_rejoins(lab: Lab) -> None:
    a, b, side_a, side_b = two_lans(lab)
    gw = gateway(lab, "gw", [(a, "198.18.1.254/24"), (b, "198.18.2.254/24")])
    g = gw.start(["-i", "leg0,leg1"], **FAST)
    daemons = [n.start(**FAST) for n in side_a + side_b]
    wait_for(lambda: all(len(d.ids()) == 5 for d in daemons), 10, what="5 nodes everywhere")
    g.proc.kill()  # no LEAVE: the far side must expire
    g.proc.wait()
    wait_for(lambda: all(len(d.ids()) == 2 for d in daemons), 6, what="each side alone again")
    again = gw.start(["-i", "leg0,leg1"], pid_file=g.config["pid_file"], **FAST)
    wait_for(lambda: all(len(d.ids()) == 5 for d in [*daemons, again]), 10, what="the networks rejoined")


def v6_members(d: Daemon) -> set[str]:
    return {m["addresses"][0] for m in d.state().get("members", [])}


def test_ipv6_only_lan_converges_and_stays_out_of_the_ipv4_table(lab: Lab) -> None:
    lan = lab.lan()
    nodes = [lab.node(f"v{i}", lan, f"2001:db8:1::{i}/64") for i in (1, 2, 3)]
    daemons = [n.start(["--family", "ipv6"]) for n in nodes]
    wait_for(lambda: all(len(v6_members(d)) == 2 for d in daemons), 10, what="3 IPv6-only nodes")
    assert v6_members(daemons[0]) == {"2001:db8:1::2", "2001:db8:1::3"}
    assert daemons[0].map()["entries"] == [] and daemons[0].map()["node_id"] == 0
    wait_for(lambda: daemons[0].log.count("has no IPv4 address") == 2, 3, what="one log line per IPv6 peer")
    time.sleep(1.5)
    assert daemons[0].log.count("has no IPv4 address") == 2  # once each, not at every map write


def test_mixed_lan_dual_stack_ipv4_only_and_ipv6_only(lab: Lab) -> None:
    lan = lab.lan()
    dual = [lab.node(f"d{i}", lan, f"198.18.0.{i}/24") for i in (1, 2)]
    for i, n in enumerate(dual, 1):
        n.run("ip", "addr", "add", f"2001:db8:1::{i}/64", "dev", "eth0", "nodad")
    v4 = lab.node("four", lan, "198.18.0.4/24")
    v6 = lab.node("six", lan, "2001:db8:1::6/64")
    d_dual = [n.start(["-i", "eth0", "--family", "both"], **FAST) for n in dual]
    d_v4 = v4.start(**FAST)
    d_v6 = v6.start(["--family", "ipv6"], **FAST)
    wait_for(lambda: all(len(d.state().get("members", [])) == 3 for d in d_dual), 10, what="dual-stack sees all")
    wait_for(lambda: len(d_v4.state().get("members", [])) == 2 and len(d_v6.state().get("members", [])) == 2, 10)
    dual_view = {m["addresses"][0]: m["addresses"] for m in d_dual[0].state()["members"]}
    assert dual_view["198.18.0.2"] == ["198.18.0.2", "2001:db8:1::2"]  # one node, both families
    assert "2001:db8:1::6" in dual_view
    assert mapped(d_dual[0]) == [(1, "198.18.0.1", 2), (4, "198.18.0.4", 1)]
    writes = d_dual[0].state()["stats"]["map_writes"]
    time.sleep(2)  # every announcement now arrives twice (IPv4 and IPv6): no map churn
    assert d_dual[0].state()["stats"]["map_writes"] == writes
    d_dual[1].signal(signal.SIGTERM)
    wait_for(lambda: len(d_v6.state()["members"]) == 1 and len(d_v4.state()["members"]) == 1, 3,
             what="LEAVE seen on both families")
