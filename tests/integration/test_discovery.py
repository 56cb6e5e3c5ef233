"""Real daemons in network namespaces on one bridge: what a cluster operator would see."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from omdisc.core.config import ConfigError
from omdisc.shell.configfiles import load
from tests.lab.netlab import Daemon, Lab, Node, wait_for


def four(lab: Lab) -> list[Node]:
    lan = lab.lan()
    return [lab.node(f"n{i}", lan, f"198.18.{i}.{10 + i}/15") for i in range(1, 5)]


def test_four_nodes_converge_with_identical_maps_and_openmosix_ids(lab: Lab) -> None:
    nodes = four(lab)
    daemons = [n.start() for n in nodes]
    expected = {256 * i + 10 + i for i in range(1, 5)}  # 198.18.1.11 -> 267, ...
    wait_for(lambda: all(d.ids() == expected for d in daemons), 10, what="4 nodes in every map")
    maps = [d.map() for d in daemons]
    assert all(m["entries"] == maps[0]["entries"] for m in maps)
    assert {m["node_id"] for m in maps} == expected
    text = daemons[0].showmap().stdout.splitlines()
    assert text[0] == f"# this is openMosix node #{256 + 11}"
    assert "267 198.18.1.11 1" in text


def test_late_joiner_learns_the_whole_cluster_from_one_snapshot(lab: Lab) -> None:
    nodes = four(lab)
    first = [n.start() for n in nodes[:3]]
    wait_for(lambda: all(len(d.ids()) == 3 for d in first), 10, what="3 nodes converged")
    def snapshots() -> int:
        return sum(d.state()["stats"].get("sent:SNAPSHOT", 0) for d in first)

    wait_for(lambda: all(d.state()["stats"].get("sent", 0) >= 3 for d in first), 5, what="join retries over")
    before = snapshots()
    late = nodes[3].start(announce_interval=30.0, dead_interval=90.0)  # only the join can teach it
    wait_for(lambda: len(late.ids()) == 4, 3, what="the late joiner to learn everyone")
    wait_for(lambda: all(len(d.ids()) == 4 for d in first), 3, what="everyone to learn the late joiner")
    assert snapshots() - before < 3  # suppression: the members do not each answer the join


def test_leave_removes_a_node_at_once(lab: Lab) -> None:
    nodes = four(lab)
    daemons = [n.start(dead_interval=60.0) for n in nodes]
    wait_for(lambda: all(len(d.ids()) == 4 for d in daemons), 10, what="4 converged")
    assert daemons[3].stop() == 0
    wait_for(lambda: all(len(d.ids()) == 3 for d in daemons[:3]), 2, what="LEAVE to drop the node")
    assert "joined" in daemons[0].log and "left" in daemons[0].log


def peer_story(d: Daemon, node_id: int) -> list[str]:
    """What d's log says about node `node_id`, in order: joined, left, expired, changed."""
    return re.findall(rf"node #{node_id} \S+ (joined|left|is leaving|expired|changed)\b", d.log)


def member(d: Daemon, node_id: int) -> dict[str, Any]:
    return next(m for m in d.state()["members"] if m["id"] == node_id)


def test_sigusr2_restarts_without_leave_the_next_life_is_newer_sigterm_still_leaves(lab: Lab) -> None:
    nodes = four(lab)[:3]
    peers = [n.start(dead_interval=60.0) for n in nodes[:2]]
    r = nodes[2].start(dead_interval=60.0)
    rid = 256 * 3 + 13
    wait_for(lambda: all(len(d.ids()) == 3 for d in (*peers, r)), 10, what="3 converged")
    old = r.state()["incarnation"]
    r.signal(signal.SIGUSR2)  # what systemctl restart sends (RestartKillSignal=)
    assert r.proc.wait(10) == 0
    assert not Path(r.config["pid_file"]).exists()
    assert "stopping for a restart: no LEAVE" in r.log and "stopped for a restart (no LEAVE sent)" in r.log
    # the node's next life: the same state_dir, and the same map directory, as under systemd
    again = nodes[2].start(dead_interval=60.0, wait=False, alpha_dir=r.config["alpha_dir"])

    def next_life_taken() -> bool:
        # dead_interval is 60 s: a node dropped from a map here could only have been dropped by a LEAVE
        assert all(len(p.ids()) == 3 for p in peers), "a peer dropped the restarting node"
        return all(member(p, rid)["incarnation"] > old for p in peers)

    # the next life's JOIN comes after anything the last life sent: once it is taken, a LEAVE would be too
    wait_for(next_life_taken, 10, interval=0.02, what="the peers to take the next life")
    wait_for(lambda: again.state().get("incarnation", 0) > old, 5, what="the next life's state.json")
    # its first map already holds the cluster: the last life's map stays until then, never one of
    # this node alone (under systemd: the kernel's table; alpha files here)
    wait_for(lambda: "map written" in again.log, 5, what="the next life's first map")
    assert re.findall(r"map written: (\d+) nodes", again.log)[0] == "3", again.log
    for p in peers:
        assert peer_story(p, rid) == ["joined", "changed"]  # the same node back: no leave, no second join
        assert not member(p, rid)["leaving"]
    assert again.stop() == 0  # SIGTERM: a stop, still announced
    wait_for(lambda: all(len(p.ids()) == 2 for p in peers), 2, what="LEAVE to drop the node")
    assert all(peer_story(p, rid) == ["joined", "changed", "left"] for p in peers)


def test_leave_is_ignored_until_expiry_without_remove_on_leave(lab: Lab) -> None:
    nodes = four(lab)[:2]
    a = nodes[0].start(remove_on_leave=False, announce_interval=0.5, dead_interval=3.0)
    b = nodes[1].start()
    wait_for(lambda: len(a.ids()) == 2, 10, what="2 converged")
    b.stop()
    wait_for(lambda: "is leaving" in a.log, 3, what="the LEAVE to be logged")
    assert len(a.ids()) == 2  # kept: the kernel is not told until expiry
    wait_for(lambda: len(a.ids()) == 1, 6, what="expiry")


def test_killed_node_expires_after_dead_interval(lab: Lab) -> None:
    nodes = four(lab)[:3]
    # without probes (version 1): a crash is found by expiry alone (with them, in about 3 s)
    daemons = [n.start(announce_interval=0.5, dead_interval=2.0, probe_interval=0) for n in nodes]
    wait_for(lambda: all(len(d.ids()) == 3 for d in daemons), 10, what="3 converged")
    daemons[2].proc.kill()
    daemons[2].proc.wait()
    wait_for(lambda: all(len(d.ids()) == 2 for d in daemons[:2]), 5, what="expiry of the killed node")
    assert "expired" in daemons[0].log
    # the killed node restarts and comes back (its stale pid file is taken over)
    again = nodes[2].start(announce_interval=0.5, dead_interval=2.0, probe_interval=0,
                           pid_file=daemons[2].config["pid_file"])
    wait_for(lambda: all(len(d.ids()) == 3 for d in (*daemons[:2], again)), 5, what="rejoin")
    assert "took over stale pid file" in again.log


def test_node_id_collision_is_warned_everywhere_and_settled_the_same_way(lab: Lab) -> None:
    lan = lab.lan()
    a = lab.node("a", lan, "198.18.1.5/15")
    b = lab.node("b", lan, "198.19.1.5/15")  # 256*1+5 = 261, like a
    c = lab.node("c", lan, "198.18.2.7/15")
    daemons = [n.start() for n in (a, b, c)]
    wait_for(lambda: all(len(d.state().get("members", [])) == 2 for d in daemons), 10, what="3 members")
    wait_for(lambda: all(d.map()["entries"] == daemons[0].map()["entries"] for d in daemons), 5,
             what="identical maps")
    entries = daemons[0].map()["entries"]
    assert {(e["id"], e["ip"]) for e in entries} == {(261, "198.18.1.5"), (519, "198.18.2.7")}
    for d in daemons:
        wait_for(lambda d=d: "198.18.1.5 and 198.19.1.5" in d.log, 3, what="the collision warning")
    assert daemons[1].map()["node_id"] == 0  # the loser is told it has no place in the map
    assert "left out of the map" in daemons[1].log


def test_sighup_reloads_and_keeps_the_map_sigusr1_toggles_debug(lab: Lab) -> None:
    nodes = four(lab)[:3]
    daemons = [n.start() for n in nodes]
    wait_for(lambda: all(len(d.ids()) == 3 for d in daemons), 10, what="3 converged")
    d = daemons[0]
    cfg = d.dir / "omdiscd.yaml"
    cfg.write_text(cfg.read_text().replace("announce_interval: 1.0", "announce_interval: 0.5") + "debug: net\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in d.log, 3, what="reload")
    assert "2 nodes kept" in d.log and len(d.ids()) == 3
    d.signal(signal.SIGUSR1)
    wait_for(lambda: "debug messages all on" in d.log, 3, what="SIGUSR1")
    cfg.write_text("announce_interval: [oops\n")
    life = d.state()["incarnation"]
    d.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in d.log, 3, what="a bad reload to be refused")
    with pytest.raises(ConfigError) as said:  # what `omdiscd -c` says of this file
        load(cfg)
    failed = [line for line in d.log.splitlines() if "reload failed" in line]
    assert len(failed) == 1 and failed[0].endswith(f"reload failed, the running configuration stays: {said.value}")
    assert f"{cfg}:1: YAML syntax error" in failed[0]
    assert d.alive() and len(d.ids()) == 3
    assert d.state()["incarnation"] == life  # not applied: a reload rejoins with a new incarnation


def test_the_running_daemon_never_loads_pyyaml(lab: Lab) -> None:
    """Its configuration is read in a short-lived child, at start and at each SIGHUP (omdisc/front.py,
    shell/configfiles.py): PyYAML's C half and libyaml are never in the daemon's memory."""
    assert yaml.__with_libyaml__  # the daemons here would map them, had they imported yaml
    d = four(lab)[0].start()
    d.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in d.log, 3, what="reload")
    maps = Path(f"/proc/{d.proc.pid}/maps").read_text()
    assert [lib for lib in ("/_yaml.", "libyaml") if lib in maps] == []


def test_address_change_is_picked_up_within_announce_interval(lab: Lab) -> None:
    nodes = four(lab)[:2]
    a, b = (n.start() for n in nodes)
    wait_for(lambda: len(a.ids()) == 2, 10, what="2 converged")
    nodes[1].run("ip", "addr", "flush", "dev", "eth0")
    nodes[1].run("ip", "addr", "add", "198.18.2.99/15", "dev", "eth0")
    nodes[1].run("ip", "route", "replace", "default", "dev", "eth0")
    wait_for(lambda: 512 + 99 in a.ids(), 3, what="the new address in the peer's map")
    assert b.map()["node_id"] == 512 + 99
    # The LEAVE of the old identity can only come from the new address now, and a LEAVE whose
    # source is not among its addresses is never believed (docs/protocol.md, "Threats"): the old
    # identity expires instead.
    wait_for(lambda: a.ids() == {256 + 11, 512 + 99}, 4 + 1, what="the old identity to expire")
    assert a.state()["stats"].get("rejected:source", 0) >= 1



def test_reload_onto_another_interface_leaves_one_lan_and_joins_the_other(lab: Lab) -> None:
    lan_a, lan_b = lab.lan("lanA"), lab.lan("lanB")
    mover = lab.node("mover", lan_a, "198.18.1.5/24")
    mover.add_leg(lan_b, "198.18.2.5/24")
    a = lab.node("a", lan_a, "198.18.1.1/24").start(dead_interval=60.0)
    b = lab.node("b", lan_b, "198.18.2.1/24").start(dead_interval=60.0)
    m = mover.start(interfaces=["eth0"], dead_interval=60.0)
    wait_for(lambda: a.ids() == {257, 261} and b.ids() == {513}, 10, what="mover on lanA only")
    cfg = m.dir / "omdiscd.yaml"
    cfg.write_text(cfg.read_text().replace("- eth0", "- eth1"))
    m.signal(signal.SIGHUP)
    # dead_interval is 60 s: only the LEAVE sent on the old interface explains a drop within 3 s
    wait_for(lambda: a.ids() == {257} and b.ids() == {513, 517}, 3, what="the move to lanB")
    assert m.map()["node_id"] == 517 and m.ids() == {513, 517}
