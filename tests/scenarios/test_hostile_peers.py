"""Hosts that lie about where a node is, against whole simulated clusters over many seeds
(docs/protocol.md, "Threats"): a made-up node on a multi-homed node's second address, and a
keyed node's signed datagrams carried onto another network as if sent there. What the maps
say is looked at all along: the real node in them, as it is (behind its gateway), and no
made-up node (tests/sim)."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from omdisc.core.engine import Outgoing, Settings
from omdisc.core.links import Links
from omdisc.core.protocol import PROBE_TYPES, Message, MsgType, decode, encode
from tests.sim import Convergence, Removals, Sim, in_map

LAB = Settings(announce_interval=1.0, dead_interval=4.0)  # the labs' intervals
# every node announces each interval whatever the size: many datagrams for a relay to carry
CHATTY = Settings(announce_interval=1.0, dead_interval=4.0, announce_rate=100.0)
SEEDS = range(1, 11)


def converged(sim: Sim, nodes: list[int], limit: float = 5.0) -> None:
    done = Convergence(sim, nodes)
    sim.run_until(sim.now + limit)
    assert done.at is not None, {i: len(sim.engines[i].membership) for i in nodes}
    done.close()


@pytest.mark.parametrize("seed", SEEDS)
def test_a_made_up_node_on_a_multi_homed_nodes_second_address_gets_in_no_map_and_the_node_stays(seed: int) -> None:
    sim = Sim(LAB, seed=seed, latency=0.0002, jitter=0.0003)
    nodes = list(range(4))
    for _ in nodes:
        sim.add(start=sim.rng.uniform(0.0, 0.5))
    victim, evil = 4, 5
    sim.add(segments=("lan", "side"), start=0.3)  # its second address is on a network of its own
    sim.add(start=False)  # the attacker's host: it runs no omdiscd, it sends what it makes up
    converged(sim, [*nodes, victim])
    removals = Removals(sim)
    v1, v2 = sim.engines[victim].local.addresses
    e = sim.engines[evil].local.primary
    for k in range(80):  # 20 s, four a second: the victim's own announcements fall in between
        fake = (v2, e) if k % 2 else (e, v2)  # its second address as the made-up node's primary, or after
        data = encode(Message(MsgType.ANNOUNCE, 66, 5000 + k, 1, fake))
        sim.at(sim.now + 0.25 * k, lambda data=data: sim.send(evil, [Outgoing(data)]))
    for _ in range(42):  # what every map holds, twice a second
        sim.run_for(0.5)
        assert [[a for a in (v1, v2, e) if in_map(sim.engines[i], a)] for i in nodes] == [[v1]] * len(nodes)
    assert [r for r in removals.false if r[2] == victim] == []
    assert all(sim.engines[i].stats["rejected:conflict"] >= 70 for i in nodes)


def relaying(sim: Sim, origin: int, ears: int, evil: int) -> None:
    """The attacker on both networks sends on B, once, what `origin` multicasts on A, as sent there:
    it hears on A what `ears`, beside it there, is given (not the probes: unicast)."""
    source = sim.engines[origin].local.primary
    relayed: set[bytes] = set()

    def tap(r: int, data: bytes) -> None:
        msg = decode(data)
        heard = r == ears and msg.origin == source and msg.hops == 0 and msg.type not in PROBE_TYPES
        if heard and data not in relayed:
            relayed.add(data)
            sim.send(evil, [Outgoing(data, frozenset({"lanB"}))])

    sim.tap = tap


@pytest.mark.parametrize("seed", SEEDS)
def test_a_keyed_nodes_datagrams_carried_to_another_network_leave_it_behind_its_gateway_there(seed: int) -> None:
    """The originator's AUTH does not cover hops; a copy on B that arrives before the gateway's
    (jitter) or that the gateway never forwards (a SNAPSHOT) was taken as sent on B: B's nodes
    took the node for a neighbour and probed it there, where no probe reaches (routed=False)."""
    sim = Sim(CHATTY, seed=seed, latency=0.0002, jitter=0.002, routed=False, key=bytes(range(32)))
    gw = sim.add("198.18.1.254", segments=("lanA", "lanB"), route=True)  # its lanB address: 198.18.0.1
    on_a, on_b, evil = [1, 2], [3, 4], 5
    for addr, lan, start in [("198.18.1.1", "lanA", 0.1), ("198.18.1.2", "lanA", 0.1), ("198.18.0.11", "lanB", 0.2),
                             ("198.18.0.12", "lanB", 0.2), ("198.18.1.66", "lanA", False)]:
        sim.add(addr, segments=(lan, "lanB") if start is False else (lan,), start=start)
    assert gw.local.addresses[1] in ip_network("198.18.0.0/24")
    links = Links({"lanA": [ip_network("198.18.1.0/24")], "lanB": [ip_network("198.18.0.0/24")]})
    for e in sim.engines:
        e.links = links
    converged(sim, [0, *on_a, *on_b])
    removals = Removals(sim)
    relaying(sim, on_a[0], 0, evil)  # it hears what the gateway hears on A
    sim.stop(on_a[1], at=sim.now + 5.0)  # a map change: a JOIN on A, answered by a SNAPSHOT there
    sim.restart(on_a[1], at=sim.now + 6.0)
    far = sim.engines[on_a[0]].local.primary
    for _ in range(60):  # 30 s: B's maps hold it, behind the gateway (so none probes it), twice a second
        sim.run_for(0.5)
        paths = [getattr(sim.engines[i].membership.members.get(far), "via", None) for i in on_b]
        assert paths == [gw.local.primary] * len(on_b)
    assert [r for r in removals.false if r[2] == on_a[0]] == []
    assert sum(sim.engines[i].stats["rejected:offlink"] for i in on_b) > 20
    assert ip_address("198.18.1.66") not in sim.engines[on_b[0]].membership
