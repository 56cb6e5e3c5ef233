"""Failure detection as the engine sees it (docs/protocol.md, "Failure detection"): whether we probe
at all, where each probe goes out, what a PING, ACK, PING_REQ, SUSPECT or DEAD leads to beyond
the ring (the refutation said twice, members touched or taken out of the map), and how far apart
announcements may grow once probes find failures. Sans-IO, as the engine: it answers with Sends
and asks for announcements; the engine, which numbers and signs what we send, makes them datagrams.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Callable

from omdisc.core.chronicle import Chronicle
from omdisc.core.detection.ring import Reaction, Ring
from omdisc.core.detection.timers import ProbeSettings, Send
from omdisc.core.membership import Member
from omdisc.core.protocol import FLAG_GATEWAY, FLAG_JOIN, FLAG_RESTART, IPAddress, Message, MsgType
from omdisc.core.ratelimit import KeyedBuckets
from omdisc.core.records import record, replace

log = logging.getLogger("omdisc.membership")


def period_scale(nodes: int, per: float) -> int:
    """The announce period for `nodes`, in announce intervals: 1 up to `per` nodes, then the next
    power of two that keeps what each node hears at `per` announcements an interval."""
    return 1 if nodes <= per else int(2 ** math.ceil(math.log2(nodes / per)))


# What nodes of the address-ordered ring (before ROUNDS) take each node to hear a second: their
# dead_interval follows their own period, so we announce as often as they would beside them.
ADDRESS_RING_RATE = 10.0

BACK_AGAIN = 30.0  # seconds: beyond a burst of 3, at most one announcement this often (a gateway's start,
# nodes back after a partition): what a host making up gateways' JOINs can make every node send
BACK_SPREAD, BACK_SPREAD_MAX = 0.01, 5.0  # those announcements spread over 10 ms a node, 5 s at most

RESTART_GRACE = 15.0  # seconds a restarting node is not probed: its next life comes well before


@record(slots=True)
class Once:
    """Something due once, at `at` (None: nothing due)."""

    at: float | None = None

    def taken(self, now: float) -> bool:
        """Due now? Then it is done."""
        if self.at is None or now < self.at:
            return False
        self.at = None
        return True


class FailureDetection:
    def __init__(self, settings: ProbeSettings | None, rng: random.Random, stats: Counter[str],
                 chronicle: Chronicle, wall: Callable[[], float], announce_rate: float) -> None:
        self.rng = rng
        self.wall = wall  # probe rounds follow the wall clock: every node's agree
        self.announce_rate = announce_rate
        self.stats = stats
        self.chronicle = chronicle
        self.membership = chronicle.membership
        self.ring = Ring(settings, rng, stats, self.membership) if settings else None  # None: no probes
        self.refute_again = Once()  # a refutation is said twice (settings.resend apart)
        self.announce_soon = Once()  # an announcement soon: a partition healed (came_back)
        self.introductions: list[tuple[IPAddress, str]] = []  # ANNOUNCEs by unicast: (to, interface)
        self._soon = KeyedBuckets(1 / BACK_AGAIN, 3.0, max_keys=1)  # those announcements: 3, then one a BACK_AGAIN

    @property
    def probing(self) -> bool:
        """Whether we probe (and answer probes): version 2."""
        return self.ring is not None

    def reconfigure(self, settings: ProbeSettings | None) -> None:
        """New probe settings (SIGHUP): what the ring's timers hold is kept while probes stay on."""
        if settings is None:
            self.ring = None
        elif self.ring is None:
            self.ring = Ring(settings, self.rng, self.stats, self.membership)
        else:
            self.ring.reconfigure(settings)

    # --- input -------------------------------------------------------------------------------

    def receive(self, msg: Message, source: IPAddress | None, gw: IPAddress | None, me: IPAddress,
                interface: str, now: float) -> Reaction:
        """PING, ACK, PING_REQ, SUSPECT, DEAD that passed the guard (ring.py judges them). The engine
        sends what it says, announces when it says refute, and forwards when it says forward."""
        if self.ring is None:
            self.stats["probe_ignored:off"] += 1
            return Reaction()
        r = self.ring.receive(msg, source, gw, me, now, self.wall())
        r.sends = [self._routed(s, interface) for s in r.sends]
        if r.refute:  # again a little later: a node that missed it would go on to doubt us (Timers.check)
            self.refute_again.at = now + self.ring.settings.resend
        if r.suspect is not None:
            self.stats["suspected"] += 1
            log.debug("node %s suspected by %s (no answer to its probes)", r.suspect, msg.origin)
        if r.alive is not None:
            self.membership.touch(r.alive, now)  # it answered our check: heard, as by an announce
        for node in r.gone:
            self._fail(node, str(msg.origin), now)
        if r.back:
            self._announce_soon(now)
        return r

    def heard(self, msg: Message, now: float) -> None:
        """A member's ANNOUNCE, LEAVE or SNAPSHOT taken into the membership (not a stale one)."""
        if self.ring is None:
            return
        if self.ring.heard(msg.origin, (msg.incarnation, msg.seq)):
            self.stats["suspicions_refuted"] += 1
        if msg.flags & FLAG_RESTART and msg.type is MsgType.ANNOUNCE:
            self.ring.restarting(msg.origin, msg.incarnation, now, RESTART_GRACE)
            log.info("node #%d %s is restarting (kept in the map)", msg.node_id, msg.origin)
        if msg.flags & FLAG_JOIN and msg.flags & FLAG_GATEWAY and msg.hops == 0:
            self._announce_soon(now)  # a gateway (re)starts: it carries us to its other networks
        back = self.ring.came_back(msg.origin, msg.incarnation)
        if back is None or msg.flags & FLAG_JOIN:
            return
        if self.ring.fallen:  # others still out: a partition healing, whose far side lost us too
            self._announce_soon(now)
        else:  # one node cut off alone took us all out: it alone must hear us again
            self.introductions.append((msg.origin, back.interface))

    # --- timers ------------------------------------------------------------------------------

    def _announce_soon(self, now: float) -> None:
        """A gateway (re)starts, and must carry us to its other networks; or a node we took out was
        cut off, not dead: a partition healed, and the nodes on the other side took us out too.
        Each side hears of it as the nodes come back, so one announcement of each node, spread
        out, mends both maps (three, then one each BACK_AGAIN). A node that was cut off alone is
        told by unicast instead (FailureDetection.heard): one datagram each, not one every node hears."""
        if self.announce_soon.at is not None or not self._soon.take(None, now):
            return
        spread = min(BACK_SPREAD_MAX, BACK_SPREAD * (len(self.membership) + 1))
        self.announce_soon.at = now + self.rng.uniform(0, spread)

    def take_introductions(self) -> list[tuple[IPAddress, str]]:
        """The nodes to tell by unicast ANNOUNCE (heard), each once."""
        out, self.introductions = self.introductions, []
        return out

    def announce_due(self, now: float) -> bool:
        """Time for an ANNOUNCE of ours out of turn: the refutation said again, or the announcement
        after a healed partition (one serves both)?"""
        return self.refute_again.taken(now) | self.announce_soon.taken(now)

    def due(self) -> list[float]:
        times = [t for t in (self.refute_again.at, self.announce_soon.at) if t is not None]
        if self.ring is not None:
            times.append(self.ring.due())
        return times

    def alive_at(self, m: Member, now: float) -> float | None:
        """When `m` was last alive as far as the probes tell (Ring.alive_at); None without probes."""
        return None if self.ring is None else self.ring.alive_at(m, now)

    def spare(self, now: float) -> Callable[[Member], float | None] | None:
        """For Membership.expire: a member we can probe is PINGed before it expires."""
        ring = self.ring
        return (lambda m: ring.spare(m, now)) if ring is not None else None

    def tick(self, me: IPAddress, now: float) -> list[Send]:
        """After expiry: the checks it began send their first PING now."""
        if self.ring is None:
            return []
        sends, gone = self.ring.tick(me, now, self.wall())
        out = [self._routed(s) for s in sends]  # where to, before _fail forgets where the member was
        for node in gone:
            self._fail(node, "its probers", now)
        return out

    def announce_scale(self, me: IPAddress, per: float, nodes: int | None = None) -> int:
        """How many announce intervals apart we announce: 1 up to `per` (announce_rate x
        announce_interval) nodes, then the next power of two that keeps what each node hears at
        announce_rate a second (powers of two: it changes rarely). Always 1 without probes, or
        beside a version 1 node, which knows no better than to expire us after dead_interval;
        beside a version 2 node that probes by the address-ordered ring (no ROUNDS flag), the
        period that node's own rate gives (ADDRESS_RING_RATE), which its dead_interval follows.
        `nodes`: the cluster's size if not the map's (a SNAPSHOT's worth more, while joining)."""
        if self.ring is None:
            return 1
        rounds = self.ring.rounds
        rounds.interfaces(self.ring.round_at(self.wall()))  # counts the neighbours by what they speak
        n = nodes if nodes is not None else len(self.membership) + 1
        if rounds.version_1:
            return 1
        if rounds.address_ordered:
            per = max(per, per / self.announce_rate * ADDRESS_RING_RATE)
        return period_scale(n, per)

    def beside_older_nodes(self) -> bool:
        """Is a node of an older release (version 1, or the address-ordered ring) on our networks,
        as announce_scale last counted?"""
        return self.ring is not None and bool(self.ring.rounds.version_1 or self.ring.rounds.address_ordered)

    # --- verdicts ----------------------------------------------------------------------------

    def _routed(self, s: Send, interface: str = "") -> Send:
        """Where a unicast goes out: the member's own interface, else the one the message that led
        to it came in on ("": every interface). A multicast goes out everywhere."""
        if s.to is None:
            return s
        m = self.membership.members.get(s.to)
        if m is None and s.interface:
            return s  # a node we took out (a reconnect PING): where it was
        return replace(s, interface=m.interface if m is not None and m.interface else interface)

    def _fail(self, node: IPAddress, by: str, now: float) -> None:
        assert self.ring is not None
        m = self.membership.members.get(node)
        if m is not None and m.flags & FLAG_GATEWAY and m.via is None:
            self._orphans_of(m, now)
        order = self.ring.forget(node, now)  # its late datagrams up to this stay buried
        self.chronicle.failed(node, order, by, now)

    def _orphans_of(self, gateway: Member, now: float) -> None:
        """A gateway failed: the nodes we reach only through it are now reached through another
        gateway on that network, or not at all. Nobody else would tell us they are gone: their own
        network's DEADs came through it, and their announcements are minutes apart."""
        members = self.membership.members
        orphans = [m for m in members.values()
                   if m.via == gateway.primary or _behind_a_gateway_on(m, gateway.interface)]
        other = next((g.primary for g in members.values() if g.flags & FLAG_GATEWAY and g.via is None and g.firsthand
                      and g.interface == gateway.interface and g.primary != gateway.primary), None)
        for m in orphans:
            # its next word comes through the other (a guess for a path unknown); else it is gone,
            # through this gateway (the ring keeps no fallen neighbour to reconnect to for it)
            m.via = other or gateway.primary
            if other is None:
                assert self.ring is not None
                by = f"the failure of its gateway {gateway.primary}"
                self.chronicle.failed(m.primary, self.ring.forget(m.primary, now), by, now)


def _behind_a_gateway_on(m: Member, interface: str) -> bool:
    """`m` was told of by a neighbour on `interface` as behind a gateway, before we heard one there
    ourselves (its path unknown, Joining.on_snapshot), and not heard since: a gateway there that
    fails may be its only way, and its next announcement may be minutes away."""
    return m.via is None and not m.path_known and not m.firsthand and m.interface == interface
