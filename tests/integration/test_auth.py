"""The cluster key between real daemons: a keyed cluster, hosts without the key or with another,
tampered and replayed datagrams (sent from a forged source address, so only the key stops them),
a mixed cluster, and a key rotated in three reloads while every announcement is counted."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

from omdisc.core.auth import key_id
from omdisc.core.protocol import MsgType, decode, with_hops
from omdisc.shell.keyfile import gen_key
from tests.lab.netlab import REPO, Daemon, Lab, Lan, Node, wait_for

REAL = [IPv4Address(f"198.18.1.{i}") for i in (11, 12, 13)]
IDS = {267, 268, 269}
EVIL = IPv4Address("198.18.0.66")


def key_file(lab: Lab, name: str, *keys: str) -> Path:
    path = lab.tmp / f"{name}.key"
    path.write_text("# cluster key, first line signs\n" + "".join(k + "\n" for k in keys))
    os.chmod(path, 0o600)
    return path


def keyed(lab: Lab, key: str, lan: Lan | None = None, **cfg: object) -> tuple[Lan, list[Node], list[Daemon]]:
    lan = lan or lab.lan()
    nodes = [lab.node(f"n{i}", lan, f"{a}/15") for i, a in enumerate(REAL, 1)]
    daemons = [n.start(key_file=str(key_file(lab, n.name, key)), **cfg) for n in nodes]
    wait_for(lambda: all(d.ids() == IDS for d in daemons), 10, what="a keyed cluster of 3")
    return lan, nodes, daemons


def auth_failures(d: Daemon) -> dict[str, int]:
    return {k: v for k, v in d.state().get("stats", {}).items() if k.startswith("auth:") and k != "auth:duplicate"}


def capture(lab: Lab, evil: Node, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ip", "netns", "exec", evil.ns, sys.executable, "-m", "tests.lab.inject", "capture",
                             "eth0", str(lab.tmp / "capture.hex"), "--seconds", str(seconds)],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def captured(lab: Lab, origin: IPv4Address, kind: MsgType | None = None) -> list[bytes]:
    out = []
    for line in (lab.tmp / "capture.hex").read_text().split():
        data = bytes.fromhex(line)
        msg = decode(data)
        if msg.origin == origin and (kind is None or msg.type is kind):
            out.append(data)
    return out


def replay(lab: Lab, evil: Node, datagrams: list[bytes], forged: IPv4Address) -> None:
    """Sent again from the evil host with the origin's address forged: only the key stops them."""
    path = lab.tmp / f"replay-{time.monotonic_ns()}.hex"
    path.write_text("".join(d.hex() + "\n" for d in datagrams))
    evil.run(sys.executable, "-m", "tests.lab.inject", "send", "eth0", str(path), "--spoof", str(forged),
             cwd=REPO, timeout=60)


def test_hosts_without_the_key_or_with_another_are_in_no_keyed_map_but_see_the_keyed_nodes(lab: Lab) -> None:
    # the host without the key first: the keyed nodes refuse its JOIN (and its PINGs), so it learns
    # them only from what they multicast, their JOINs included; started after them, it would have
    # to come before their second announcement, 2 s after their JOINs (the next is 16 s later)
    lan = lab.lan()
    bare = lab.node("bare", lan, "198.18.2.1/15").start()
    _, _nodes, daemons = keyed(lab, gen_key(), lan)
    other = lab.node("other", lan, "198.18.2.2/15")
    wrong = other.start(key_file=str(key_file(lab, "other", gen_key())))  # its JOIN: auth:unknown-key
    wait_for(lambda: bare.ids() >= IDS, 5, what="the unkeyed node to hear the keyed ones")
    time.sleep(2.5)  # what the other two send meanwhile (announcements, PINGs) gets them in nowhere
    assert all(d.ids() == IDS for d in daemons)  # neither got in
    assert wrong.ids() == {512 + 2}  # the wrong key hears nobody, and is heard by nobody
    stats = daemons[0].state()["stats"]
    assert stats["auth:unsigned"] > 0 and stats["auth:unknown-key"] > 0
    assert "it is not signed, and this node has a cluster key" in daemons[0].log
    assert "no cluster key: announcements are not authenticated" in bare.log


def test_a_tampered_datagram_from_a_forged_source_changes_no_map(lab: Lab) -> None:
    lan, _nodes, daemons = keyed(lab, gen_key())
    evil = lab.node("evil", lan, f"{EVIL}/15")
    capture(lab, evil, 2.5).wait(10)
    original = captured(lab, REAL[2], MsgType.ANNOUNCE)[-1]
    before = [d.map()["entries"] for d in daemons[:2]]
    flipped = bytearray(original)
    flipped[29 + 1 + 3] ^= 0x01  # the last byte of its first address: 198.18.1.13 -> .12
    replay(lab, evil, [bytes(flipped)] * 3, REAL[2])
    wait_for(lambda: all(d.state()["stats"].get("auth:bad", 0) >= 1 for d in daemons[:2]), 5, what="auth:bad")
    assert [d.map()["entries"] for d in daemons[:2]] == before


def test_replays_change_nothing_alive_left_dead_or_after_a_receiver_restarted(lab: Lab) -> None:
    key = gen_key()
    lan, nodes, daemons = keyed(lab, key)
    evil = lab.node("evil", lan, f"{EVIL}/15")
    listener = capture(lab, evil, 3.5)
    time.sleep(2.0)
    # while it lives: its datagrams, sent again, are refused (a copy of one just taken, or not newer)
    def refused(d: Daemon) -> int:
        stats = d.state()["stats"]
        return int(stats.get("auth:replay", 0) + stats.get("auth:duplicate", 0))

    before = [refused(d) for d in daemons[:2]]
    replay(lab, evil, captured(lab, REAL[2], MsgType.ANNOUNCE)[:1], REAL[2])
    wait_for(lambda: all(refused(d) > b for d, b in zip(daemons[:2], before, strict=True)), 3,
             what="the replay refused while its origin lives")
    daemons[2].stop()  # its LEAVE is captured too
    listener.wait(10)
    announces = captured(lab, REAL[2], MsgType.ANNOUNCE)
    assert announces and captured(lab, REAL[2], MsgType.LEAVE)
    wait_for(lambda: all(d.ids() == {267, 268} for d in daemons[:2]), 3, what="the LEAVE")
    # after it left: replayed, it must not come back
    replay(lab, evil, announces, REAL[2])
    time.sleep(1.0)
    assert all(d.ids() == {267, 268} for d in daemons[:2])
    # a new life of it, killed; a receiver restarted at once: it remembers nothing of that life, yet
    # takes none of its datagrams replayed seconds later (they were sent before it started)
    again = nodes[2].start(key_file=str(lab.tmp / "n3.key"), pid_file=daemons[2].config["pid_file"])
    wait_for(lambda: all(d.ids() == IDS for d in daemons[:2]), 5, what="its new life")
    listener = capture(lab, evil, 2.0)
    listener.wait(10)
    last_life = captured(lab, REAL[2], MsgType.ANNOUNCE)
    again.proc.kill()
    again.proc.wait()
    killed = time.monotonic()
    daemons[0].stop()
    fresh = nodes[0].start(key_file=str(lab.tmp / "n1.key"), pid_file=daemons[0].config["pid_file"])
    replay(lab, evil, last_life, REAL[2])
    wait_for(lambda: fresh.state()["stats"].get("auth:replay", 0) >= 1, 3, what="the replays refused")
    # it may know the dead node second-hand (n2's answer to its JOIN), but the replays did not
    # refresh it: it goes from the fresh node's map when it goes from n2's
    wait_for(lambda: daemons[1].ids() == {267, 268}, 6, what="expiry")
    wait_for(lambda: fresh.ids() == {267, 268}, 1.0, what="expiry at the restarted node as well")
    # after it expired everywhere (the probes are quicker than the clock window): too old for anyone
    time.sleep(max(0.0, killed + 5.5 - time.monotonic()))  # older than max_clock_skew (5 s): what is tested
    replay(lab, evil, last_life, REAL[2])
    wait_for(lambda: daemons[1].state()["stats"].get("auth:skew", 0) >= 1, 3, what="the replays refused")
    time.sleep(1.0)
    assert daemons[1].ids() == {267, 268} and fresh.ids() == {267, 268}


def test_a_key_rotated_in_three_reloads_loses_no_announcement(lab: Lab) -> None:
    old, new = gen_key(), gen_key()
    _lan, nodes, daemons = keyed(lab, old, announce_interval=1.0, dead_interval=4.0)
    steps = [(old, new), (new, old), (new,)]
    for step, keys in enumerate(steps, 1):
        for n, d in zip(nodes, daemons, strict=True):  # one node after the other, as a rollout goes
            key_file(lab, n.name, *keys)
            d.signal(signal.SIGHUP)
            time.sleep(0.4)
        for d in daemons:
            wait_for(lambda d=d, step=step: d.log.count("cluster key from") == step + 1, 5, what=f"step {step}")
        time.sleep(1.5)  # every node announces at least once with this step's keys
    sent = sum(d.state()["stats"]["sent:ANNOUNCE"] for d in daemons)
    lost = {d.node.name: auth_failures(d) for d in daemons}
    print(f"rotation in three reloads: {sent} announcements sent, rejected by a peer: {lost}")
    assert all(f == {} for f in lost.values())
    assert all(d.ids() == IDS for d in daemons)
    assert not any("expired" in d.log for d in daemons)
    new_id = key_id(base64.b64decode(new)).hex()
    assert all(d.log.rsplit("signing with ", 1)[1][:8] == new_id for d in daemons)


def test_a_keyed_gateway_forwards_signed_datagrams_and_its_hops_and_via_cannot_be_forged(lab: Lab) -> None:
    key = gen_key()
    lan_a, lan_b = lab.lan("lanA"), lab.lan("lanB")
    a1 = lab.node("a1", lan_a, "198.18.1.1/24")
    b1 = lab.node("b1", lan_b, "198.18.2.1/24")
    gw = lab.node("gw")
    gw.add_leg(lan_a, "198.18.1.254/24", "leg0")
    gw.add_leg(lan_b, "198.18.2.254/24", "leg1")
    evil = lab.node("evil", lan_b, "198.18.2.66/24")
    g = gw.start(["-i", "leg0,leg1"], key_file=str(key_file(lab, "gw", key)))
    da = a1.start(key_file=str(key_file(lab, "a1", key)))
    db = b1.start(key_file=str(key_file(lab, "b1", key)))
    wait_for(lambda: all(d.ids() == {257, 510, 513} for d in (da, db, g)), 10, what="both LANs through the gateway")
    assert da.state()["stats"].get("auth", 0) == 0 and g.state()["stats"]["forwarded"] > 0
    # on lanB, the evil host takes a1's forwarded announcement and sends it on as if it were the
    # gateway (its source forged), with one more hop: FORWARD_AUTH no longer matches
    capture(lab, evil, 2.0).wait(10)
    fwd = [d for d in captured(lab, IPv4Address("198.18.1.1")) if decode(d).hops == 1]
    assert fwd, "no forwarded datagram captured"
    replay(lab, evil, [with_hops(fwd[-1], 2)], IPv4Address("198.18.2.254"))
    wait_for(lambda: db.state()["stats"].get("auth:bad", 0) >= 1, 3, what="the forged hop count refused")


def behind_the_gateway(d: Daemon, node: str) -> bool:
    """showmap --json: `node` is in the map, and reached through the gateway."""
    doc = d.map()
    in_map = any(e["ip"] == node for e in doc.get("entries", []))
    return in_map and node in {a for g in doc.get("gateways", []) for a in g["reaches"]}


def test_signed_datagrams_carried_to_another_network_do_not_make_their_node_a_neighbour_there(lab: Lab) -> None:
    """A host on both networks, without the key, sends on B what a1 multicasts on A, as a1 sent it
    (the originator's AUTH does not cover hops; a SNAPSHOT answering a JOIN on A never reaches B
    otherwise). Before, B's nodes took a1 as their neighbour, probed it where no answer comes from,
    and dropped it from their maps."""
    key = gen_key()
    lan_a, lan_b = lab.lan("lanA"), lab.lan("lanB")
    gw = lab.node("gw")
    gw.add_leg(lan_a, "198.18.1.254/24", "leg0")
    gw.add_leg(lan_b, "198.18.2.254/24", "leg1")
    a1 = lab.node("a1", lan_a, "198.18.1.1/24")
    on_b = [lab.node(f"b{i}", lan_b, f"198.18.2.{i}/24") for i in (1, 2)]
    evil = lab.node("evil", lan_a, "198.18.1.66/24")
    evil.add_leg(lan_b, "198.18.2.66/24")
    daemons = [gw.start(["-i", "leg0,leg1"], key_file=str(key_file(lab, "gw", key)))]
    daemons += [n.start(key_file=str(key_file(lab, n.name, key))) for n in (a1, *on_b)]
    far = daemons[2:]
    wait_for(lambda: all(d.ids() == {257, 510, 513, 514} for d in daemons), 10, what="both LANs through the gateway")
    wait_for(lambda: all(behind_the_gateway(d, "198.18.1.1") for d in far), 5, what="a1 behind the gateway")
    relay = subprocess.Popen(["ip", "netns", "exec", evil.ns, sys.executable, "-m", "tests.lab.inject", "relay",
                              "eth0", "eth1", "--origin", "198.18.1.1", "--seconds", "15"],
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        time.sleep(3.0)
        a2 = lab.node("a2", lan_a, "198.18.1.2/24")  # a map change: a JOIN on A, which A's nodes answer
        daemons.append(a2.start(key_file=str(key_file(lab, "a2", key))))
        # a1 reloads: it JOINs again and announces twice, an interval apart (its periodic ones are
        # minutes apart): datagrams of its own for the relay to carry
        daemons[1].signal(signal.SIGHUP)
        again = time.monotonic() + 5.0  # and again: each reload is a JOIN and two announcements to carry
        samples = 0
        while relay.poll() is None:
            if again and time.monotonic() >= again:
                daemons[1].signal(signal.SIGHUP)
                again = 0.0
            assert all(behind_the_gateway(d, "198.18.1.1") for d in far), [d.map().get("gateways") for d in far]
            samples += 1
    finally:
        if relay.poll() is None:
            relay.kill()
    assert relay.wait() == 0 and samples >= 10
    # each relayed copy was refused: as sent from off the link, or, when the gateway's copy came
    # first (the relay is slower on a loaded machine), as a signed message already taken
    refused = [d.state()["stats"] for d in far]
    assert all(st.get("rejected:offlink", 0) + st.get("auth:duplicate", 0) >= 3 for st in refused), refused
