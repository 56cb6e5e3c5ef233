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
from dataclasses import replace

from omdisc.core.chronicle import Chronicle
from omdisc.core.detection.ring import Reaction, Ring
from omdisc.core.detection.timers import ProbeSettings, Send
from omdisc.core.membership import Member
from omdisc.core.protocol import FLAG_RESTART, IPAddress, Message, MsgType

log = logging.getLogger("omdisc.membership")


def period_scale(nodes: int, per: float) -> int:
    """The announce period for `nodes`, in announce intervals: 1 up to `per` nodes, then the next
    power of two that keeps what each node hears at `per` announcements an interval."""
    return 1 if nodes <= per else int(2 ** math.ceil(math.log2(nodes / per)))


RESTART_GRACE = 15.0  # seconds a restarting node is not probed: its next life comes well before


class FailureDetection:
    def __init__(self, settings: ProbeSettings | None, rng: random.Random, stats: Counter[str],
                 chronicle: Chronicle) -> None:
        self.rng = rng
        self.stats = stats
        self.chronicle = chronicle
        self.membership = chronicle.membership
        self.ring = Ring(settings, rng, stats, self.membership) if settings else None  # None: no probes
        self.refute_again: float | None = None  # a refutation is said twice (settings.resend apart)

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
        r = self.ring.receive(msg, source, gw, me, now)
        r.sends = [self._routed(s, interface) for s in r.sends]
        if r.refute:  # again a little later: a node that missed it would go on to doubt us (Timers.check)
            self.refute_again = now + self.ring.settings.resend
        if r.suspect is not None:
            self.stats["suspected"] += 1
            log.debug("node %s suspected by %s (no answer to its probes)", r.suspect, msg.origin)
        if r.alive is not None:
            self.membership.touch(r.alive, now)  # it answered our check: heard, as by an announce
        for node in r.gone:
            self._fail(node, str(msg.origin), now)
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

    # --- timers ------------------------------------------------------------------------------

    def due(self) -> list[float]:
        times = [] if self.refute_again is None else [self.refute_again]
        if self.ring is not None:
            times.append(self.ring.due())
        return times

    def refute_due(self, now: float) -> bool:
        """Time to say the refutation again?"""
        if self.refute_again is None or now < self.refute_again:
            return False
        self.refute_again = None
        return True

    def spare(self, now: float) -> Callable[[Member], float | None] | None:
        """For Membership.expire: a member we can probe is PINGed before it expires."""
        ring = self.ring
        return (lambda m: ring.spare(m, now)) if ring is not None else None

    def tick(self, me: IPAddress, now: float) -> list[Send]:
        """After expiry: the checks it began send their first PING now."""
        if self.ring is None:
            return []
        sends, gone = self.ring.tick(me, now)
        out = [self._routed(s) for s in sends]  # where to, before _fail forgets where the member was
        for node in gone:
            self._fail(node, "its monitors", now)
        return out

    def announce_scale(self, me: IPAddress, per: float, nodes: int | None = None) -> int:
        """How many announce intervals apart we announce: 1 up to `per` (announce_rate x
        announce_interval) nodes, then the next power of two that keeps what each node hears at
        announce_rate a second (powers of two: it changes rarely). Always 1 without probes, or
        beside a version 1 node, which knows no better than to expire us after dead_interval.
        `nodes`: the cluster's size if not the map's (a SNAPSHOT's worth more, while joining)."""
        if self.ring is None:
            return 1
        self.ring.order(me)  # counts the version 1 neighbours
        n = nodes if nodes is not None else len(self.membership) + 1
        return 1 if self.ring.version_1_neighbours else period_scale(n, per)

    # --- verdicts ----------------------------------------------------------------------------

    def _routed(self, s: Send, interface: str = "") -> Send:
        """Where a unicast goes out: the member's own interface, else the one the message that led
        to it came in on ("": every interface). A multicast goes out everywhere."""
        if s.to is None:
            return s
        m = self.membership.members.get(s.to)
        return replace(s, interface=m.interface if m is not None and m.interface else interface)

    def _fail(self, node: IPAddress, by: str, now: float) -> None:
        assert self.ring is not None
        order = self.ring.forget(node)  # its late datagrams up to this stay buried
        self.chronicle.failed(node, order, by, now)
