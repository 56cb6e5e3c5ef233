"""Gateways between networks (seed sections 3, 4.2, 5, 7), TTL mode through a real multicast
router, loop safety counted on the wire, IPv6 and mixed clusters. Real daemons, real kernel."""

from __future__ import annotations

import signal
import subprocess
import time

from tests.lab.netlab import Daemon, Lab, Lan, Node, bridge_counted, bridge_table, wait_for

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


def smcroute(router: Node, lab: Lab, legs: tuple[str, str], group: str = "239.192.77.77") -> subprocess.Popen[bytes]:
    conf = lab.tmp / "smcroute.conf"
    conf.write_text(f"phyint {legs[0]} enable\nphyint {legs[1]} enable\n"
                    f"mroute from {legs[0]} group {group} to {legs[1]}\n"
                    f"mroute from {legs[1]} group {group} to {legs[0]}\n")
    proc = subprocess.Popen(["ip", "netns", "exec", router.ns, "smcrouted", "-n", "-N", "-f", str(conf),
                             "-u", str(lab.tmp / "smcroute.sock"), "-l", "info"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: "239.192" in router.run("ip", "mroute", "show", check=False).stdout
             or proc.poll() is not None or (lab.tmp / "smcroute.sock").exists(), 5, what="smcrouted")
    assert proc.poll() is None, "smcrouted exited"
    return proc


def test_ttl_mode_discovers_only_through_a_real_multicast_router(lab: Lab) -> None:
    a, b = lab.lan("lanA"), lab.lan("lanB")
    router = gateway(lab, "router", [(a, "198.18.1.254/24"), (b, "198.18.2.254/24")])
    n1 = lab.node("a1", a, "198.18.1.1/24")
    n2 = lab.node("b1", b, "198.18.2.1/24")
    # a second interface on a1 in TTL mode becomes an alias, and sends nothing
    extra = lab.lan("lanX")
    n1.add_leg(extra, "198.18.9.1/24", "ethx")
    d1 = n1.start(["-i", "eth0,ethx", "-m", "2"], **FAST)
    d2 = n2.start(["-m", "2"], **FAST)
    time.sleep(3 * FAST["announce_interval"])
    assert len(d1.ids()) == 1 and len(d2.ids()) == 1, "discovered each other with no router"
    proc = smcroute(router, lab, ("leg0", "leg1"))
    try:
        wait_for(lambda: len(d1.ids()) == 2 and len(d2.ids()) == 2, 10, what="discovery through smcroute")
        assert mapped(d2) == [(257, "198.18.1.1", 1), (257, "198.18.9.1", "ALIAS"), (513, "198.18.2.1", 1)]
        assert d1.map()["interfaces"] == ["eth0"]
        mroutes = router.run("ip", "mroute", "show").stdout
        assert "198.18.1.1,239.192.77.77" in mroutes.replace("(", "").replace(" ", "")
    finally:
        proc.terminate()
        proc.wait(5)
    # router gone: the two sides expire from each other's maps
    wait_for(lambda: len(d1.ids()) == 1 and len(d2.ids()) == 1, 6, what="expiry once the router is gone")


def wire_counter(lan: Lan) -> None:
    """Count every omdisc multicast datagram entering the LAN's bridge (once per frame, on ingress): what
    gateways forward. The probes (unicast between neighbours, never forwarded) are not counted."""
    bridge_table(lan, "omdwire", ["ip daddr 224.0.0.0/4 udp dport 7727 counter name dg"], hook="prerouting",
                 counters=["dg"])


def wire_count(lans: list[Lan]) -> int:
    return sum(bridge_counted(lan, "omdwire")[0] for lan in lans)


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
    daemons = [g.start(["-i", "leg0,leg1"], **FAST) for g in (g1, g2)]
    daemons += [n.start(**FAST) for n in side_a + side_b]
    check_loop_free(lab, [a, b], daemons, nodes=6, gateways=2)


def test_ring_of_three_lans_and_three_gateways_lets_nothing_circulate(lab: Lab) -> None:
    lans = [lab.lan(f"lan{i}") for i in range(3)]
    for lan in lans:
        wire_counter(lan)
    nodes = [lab.node(f"n{i}", lans[i], f"198.18.{i + 1}.1/24") for i in range(3)]
    gws = [gateway(lab, f"gw{i}", [(lans[i], f"198.18.{i + 1}.254/24"), (lans[(i + 1) % 3],
                                                                         f"198.18.{(i + 1) % 3 + 1}.253/24")])
           for i in range(3)]
    daemons = [g.start(["-i", "leg0,leg1"], **FAST) for g in gws] + [n.start(**FAST) for n in nodes]
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
