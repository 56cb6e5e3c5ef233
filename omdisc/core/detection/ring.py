"""The failure detector's timers wired to the membership: who our neighbours on the ring are, what a
probe message means here, and who may say what about whom (docs/protocol.md, "Failure detection").
Pure, as the engine: it answers with Sends; the engine makes them datagrams.

The ring: this node and the members on its own networks (heard directly, not through a gateway)
that speak version 2, ordered by primary address. Each node probes the `monitors` members after
it, so each member has that many probers. A member heard through a gateway is probed by the nodes
of its own network, whose SUSPECT and DEAD the gateway forwards: no unicast has to cross a router.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field

from omdisc.core.detection.timers import ProbeSettings, Send, Target, Timers
from omdisc.core.membership import Member, Membership
from omdisc.core.protocol import FLAG_PROBES, IPAddress, Message, MsgType, Order
from omdisc.core.ratelimit import KeyedBuckets

log = logging.getLogger("omdisc.membership")


def _ring_key(a: IPAddress) -> tuple[int, bytes]:
    return a.version, a.packed


def _target(m: Member) -> Target:
    return Target(m.primary, m.incarnation, m.interface)


def _stale(incarnation: int, number: int, subject: Member) -> bool:
    """Is a SUSPECT or DEAD about an older life, or older than what the subject said since? Number 0:
    the judge knows this life only from a SNAPSHOT (a node that crashed before its new monitor
    heard it): not stale by the number, else nobody who heard the node itself would believe it;
    the suspicion it starts still ends with anything the subject says after it."""
    if number == 0:
        return incarnation < subject.incarnation
    return (incarnation, number) < (subject.incarnation, subject.seq)


@dataclass
class Reaction:
    """What a version 2 message leads to. The engine reads the first three; the conductor acts on
    the others (and says where each of the sends goes out)."""

    sends: list[Send] = field(default_factory=list)
    refute: bool = False  # someone suspects or declared this node dead: announce ourselves (rate-limited)
    forward: bool = False  # a SUSPECT or DEAD believed here: a gateway carries on only those
    gone: list[IPAddress] = field(default_factory=list)  # members to remove now
    suspect: IPAddress | None = None  # a member newly suspected here (to log)
    alive: IPAddress | None = None  # a member that answered our check: heard from it now


class Ring:
    def __init__(self, settings: ProbeSettings, rng: random.Random, stats: Counter[str],
                 membership: Membership) -> None:
        self.timers = Timers(settings, rng)
        self.stats = stats
        self.membership = membership
        self._acks = KeyedBuckets(10.0, 20.0)  # ACKs a second per source: a PING flood is not echoed
        self._served = KeyedBuckets(4.0, 8.0)  # PING_REQs a second per requester
        # refutations of SUSPECT/DEAD, per sender (our few monitors: may_judge), apart from the guard's
        # budget for claims in our name, which a flood may use up
        self._refutes = KeyedBuckets(2.0, 4.0, max_keys=64)
        self._ring_of: tuple[int, IPAddress] | None = None
        self._ring: list[IPAddress] = []
        self._place: dict[IPAddress, int] = {}
        self.version_1_neighbours = 0  # members here that speak version 1 only (no probes): see announce_scale

    @property
    def settings(self) -> ProbeSettings:
        return self.timers.settings

    def reconfigure(self, settings: ProbeSettings) -> None:
        """New probe settings (SIGHUP): what the timers hold is kept."""
        self.timers.settings = settings

    # --- the ring ----------------------------------------------------------------------------

    def order(self, me: IPAddress) -> list[IPAddress]:
        """This node and its probe-able neighbours in ring order; rebuilt only when the map changed."""
        if self._ring_of != (self.membership.version, me):
            direct = [m for m in self.membership.members.values() if m.via is None and not m.leaving]
            self._ring = sorted([me, *(m.primary for m in direct if m.flags & FLAG_PROBES)], key=_ring_key)
            self._place = {a: i for i, a in enumerate(self._ring)}
            self.version_1_neighbours = sum(1 for m in direct if not m.flags & FLAG_PROBES)
            self._ring_of = (self.membership.version, me)
        return self._ring

    def targets(self, me: IPAddress) -> list[Target]:
        """The members after us on the ring: the ones we probe."""
        ring = self.order(me)
        i, n = self._place[me], len(ring)
        members = self.membership.members
        out = []
        for step in range(1, min(self.settings.monitors, n - 1) + 1):
            out.append(_target(members[ring[(i + step) % n]]))
        return out

    def may_judge(self, sender: IPAddress, subject: IPAddress, me: IPAddress) -> bool:
        """May `sender` suspect `subject`, or declare it dead? Only one of the members just before it
        on the ring (twice `monitors` of them: views differ a little while nodes join), so a
        host, even one with the key, can trouble its few neighbours only, not the cluster."""
        ring = self.order(me)
        i, j = self._place.get(subject), self._place.get(sender)
        if i is None or j is None:
            return False
        return 0 < (i - j) % len(ring) <= 2 * self.settings.monitors

    # --- what arrives ------------------------------------------------------------------------

    def receive(self, msg: Message, source: IPAddress | None, forwarded_by: IPAddress | None, me: IPAddress,
                now: float) -> Reaction:
        """A version 2 message that passed the guard. `source`: its UDP source (checked against the
        addresses it claims), None when it came through a gateway or was signed."""
        assert msg.subject is not None
        r = Reaction()
        sender = self.membership.members.get(msg.origin)
        if sender is not None:
            self.timers.heard(msg.origin, (msg.incarnation, msg.seq))  # it speaks: it lives
        about_me = msg.subject.address == me
        if msg.type is MsgType.PING:
            self._on_ping(msg, source, about_me, now, r)
        elif about_me and msg.type in (MsgType.SUSPECT, MsgType.DEAD):
            # refuted whoever says it, a node we dropped included: others may believe it
            self.stats[f"{msg.type.name.lower()}_of_us"] += 1
            self.timers.sick()  # we were too slow for someone: slower to judge others for a while
            r.refute = self._refutes.take(msg.origin, now)
        elif sender is None:
            self.stats[f"probe_ignored:{msg.type.name.lower()}:stranger"] += 1
        elif msg.type is MsgType.ACK and self.timers.answered(msg.origin, msg.subject.address,
                                                              msg.subject.number, now):
            self.stats["probe_checks_answered"] += 1
            r.alive = msg.origin
        elif msg.type is MsgType.ACK:
            send = self.timers.acked(msg.origin, msg.subject.address, msg.subject.number, now)
            if send is not None:
                self.stats["probe_relayed"] += 1  # a helper's: the subject answered our PING for another
                r.sends.append(send)
        elif msg.type is MsgType.PING_REQ:
            self._on_ping_req(msg, me, now, r)
        else:
            self._on_judgement(msg, sender, forwarded_by, me, now, r)
        return r

    def _on_ping(self, msg: Message, source: IPAddress | None, about_me: bool, now: float, r: Reaction) -> None:
        assert msg.subject is not None
        if not about_me:
            self.stats["probe_ignored:ping:not_us"] += 1
        elif not self._acks.take(source or msg.origin, now):
            self.stats["probe_ignored:ping:rate"] += 1
        else:
            r.sends.append(Send(MsgType.ACK, source or msg.origin, msg.subject.address, msg.subject.incarnation,
                                msg.subject.number))

    def _on_ping_req(self, msg: Message, me: IPAddress, now: float, r: Reaction) -> None:
        assert msg.subject is not None
        subject = self.membership.members.get(msg.subject.address)
        if subject is None or subject.via is not None or msg.subject.address == me:
            self.stats["probe_ignored:ping_req:unknown"] += 1
        elif not self._served.take(msg.origin, now):
            self.stats["probe_ignored:ping_req:rate"] += 1
        else:
            send = self.timers.relay(msg.origin, msg.subject.number, _target(subject), now)
            self.stats["probe_relay_ping" if send else "probe_ignored:ping_req:busy"] += 1
            r.sends += [send] if send else []

    def _on_judgement(self, msg: Message, sender: Member, forwarded_by: IPAddress | None, me: IPAddress,
                      now: float, r: Reaction) -> None:
        """A SUSPECT or DEAD about another member."""
        assert msg.subject is not None
        kind = msg.type.name.lower()
        subject = self.membership.members.get(msg.subject.address)
        if subject is None:
            self.stats[f"probe_ignored:{kind}:unknown"] += 1
            return
        if _stale(msg.subject.incarnation, msg.subject.number, subject):
            self.stats[f"probe_ignored:{kind}:stale"] += 1  # about an older life or a message since refuted
            return
        if subject.via is not None:  # behind a gateway: its own network's monitors judge it, and that
            # gateway carries their word (or says its own); nobody else on our side can know
            allowed = (forwarded_by or sender.primary) == subject.via
        elif forwarded_by is not None:
            allowed = False  # about our neighbour, from afar
        else:
            allowed = self.may_judge(sender.primary, subject.primary, me)
        if not allowed:
            self.stats[f"probe_ignored:{kind}:not_a_monitor"] += 1
            return
        r.forward = True
        if self.timers.is_held(subject.primary, now):
            self.stats[f"probe_ignored:{kind}:restarting"] += 1  # it said so itself; its next life is coming
            return
        target = _target(subject) if subject.via is None else None  # unicast may not cross the gateway
        if msg.type is MsgType.SUSPECT:
            if self.timers.suspected(subject.primary, sender.primary, now, target):
                r.suspect = subject.primary
        elif self.timers.declared_dead(subject.primary, sender.primary, now, target):
            r.gone.append(subject.primary)

    # --- timers ------------------------------------------------------------------------------

    def due(self) -> float:
        return self.timers.due()

    def tick(self, me: IPAddress, now: float) -> tuple[list[Send], list[IPAddress]]:
        if len(self.timers.latest) > len(self.membership):
            self.timers.keep_only(self.membership.members)
        sends, gone = self.timers.tick(now, self.targets(me), self.helpers(me))
        self._count_checks()
        return sends, gone

    def _count_checks(self) -> None:
        if self.timers.checked:
            self.stats["probe_checks"] = self.timers.checked

    def helpers(self, me: IPAddress) -> list[IPAddress]:
        """Whom to ask to probe for us: our neighbours on the ring, before and after us. We talk to
        them every second already (their PINGs and ACKs), so the path to them is warm: a random
        member would first need its link-layer address resolved on both legs, and under load those
        first datagrams were seen to go missing far more often than the LAN loses any."""
        ring = self.order(me)
        i, n = self._place[me], len(ring)
        reach = self.settings.monitors + 1
        near = {ring[(i + step) % n] for step in range(-reach, reach + 1) if step}
        near.discard(me)
        return sorted(near, key=_ring_key)

    def spare(self, m: Member, now: float) -> float | None:
        """A member about to expire (no announcement of its reached us for dead_interval): one we
        can probe is PINGed first, and kept until the answer is due. Under loss, a few announces in
        a row go missing often enough, among the many pairs of a cluster, to drop live nodes now and
        then; PINGs unanswered on top of that, hardly ever."""
        if m.via is not None or not m.firsthand or m.leaving or not m.flags & FLAG_PROBES:
            return None  # not heard from itself on our network: a PING may have no way there
        until = self.timers.check(_target(m), now)
        self._count_checks()
        return until

    # --- what the conductor and the report ask of the timers ----------------------------------

    def heard(self, node: IPAddress, order: Order) -> bool:
        """A member's message taken into the membership. True when it clears a suspicion."""
        return self.timers.heard(node, order)

    def restarting(self, node: IPAddress, incarnation: int, now: float, grace: float) -> None:
        """The node said it is restarting: not probed nor suspected until its next life, `grace` at most."""
        self.timers.restarting(node, incarnation, now, grace)

    def forget(self, node: IPAddress) -> Order:
        """Drop what we hold about `node` (out of the map); the newest (incarnation, seq) taken from it."""
        return self.timers.forget(node)

    def acked_at(self, node: IPAddress) -> float | None:
        """When `node` last answered one of our probes (None: never, or we do not probe it)."""
        return self.timers.last_ack.get(node)

    @property
    def health(self) -> int:
        """The local health multiplier: 0 when we judge at full speed."""
        return self.timers.health

    def state_of(self, m: Member) -> str:
        if m.leaving:
            return "leaving"
        return "suspect" if m.primary in self.timers.suspects else "alive"
