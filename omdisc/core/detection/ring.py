"""The failure detector's timers wired to the membership: whom we probe this round, what a probe
message means here, and who may say what about whom (docs/protocol.md, "Failure detection").
Pure, as the engine: it answers with Sends; the engine makes them datagrams. rounds.py draws the
rings; a member heard through a gateway is probed by the nodes of its own network, whose SUSPECT
and DEAD the gateway forwards: no unicast has to cross a router.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter

from omdisc.core.detection.rounds import Rounds, local
from omdisc.core.detection.timers import ProbeSettings, Send, Target, Timers
from omdisc.core.membership import Member, Membership
from omdisc.core.protocol import FLAG_PROBES, IPAddress, Message, MsgType, Order
from omdisc.core.ratelimit import KeyedBuckets
from omdisc.core.records import field, record

log = logging.getLogger("omdisc.membership")

OBITUARY_FOR = 10.0  # seconds the DEADs about a node we took out are still carried on
RECONNECT_FOR = 3600.0  # seconds we PING a node we took out now and then: a partition may heal
RECONNECT_FRESH = 10.0  # seconds: a node out this long or less gets a reconnect PING about once a round
# from the whole network; one out longer, as many times less often (a partition heals soon or late;
# a dead node's address is not PINGed, nor its link address asked for, every second for an hour)
MAX_FALLEN = 256
VOUCHED_ROUNDS = 2  # a member no probe found silent was alive this many probe rounds ago at the latest


@record(slots=True)
class Fallen:
    """A member of one of our networks that a verdict took out: for the DEADs about it still
    coming, and for our reconnect PINGs (it may be alive behind a partition that heals)."""

    interface: str
    incarnation: int
    since: float


def _target(m: Member) -> Target:
    return Target(m.primary, m.incarnation, m.interface)


def _stale(incarnation: int, number: int, subject: Member) -> bool:
    """Is a SUSPECT or DEAD about an older life, or older than what the subject said since? Number 0:
    the judge knows this life only from a SNAPSHOT (a node that crashed before its new prober
    heard it): not stale by the number, else nobody who heard the node itself would believe it;
    the suspicion it starts still ends with anything the subject says after it."""
    if number == 0:
        return incarnation < subject.incarnation
    return (incarnation, number) < (subject.incarnation, subject.seq)


@record
class Reaction:
    """What a version 2 message leads to. The engine reads the first three; the conductor acts on
    the others (and says where each of the sends goes out)."""

    sends: list[Send] = field(default_factory=list)
    refute: bool = False  # someone suspects or declared this node dead: announce ourselves (rate-limited)
    forward: bool = False  # a SUSPECT or DEAD believed here: a gateway carries on only those
    gone: list[IPAddress] = field(default_factory=list)  # members to remove now
    back: bool = False  # a node we took out answered our reconnect PING: a partition healed
    suspect: IPAddress | None = None  # a member newly suspected here (to log)
    alive: IPAddress | None = None  # a member that answered our check: heard from it now


class Ring:
    def __init__(self, settings: ProbeSettings, rng: random.Random, stats: Counter[str],
                 membership: Membership) -> None:
        self.timers = Timers(settings, rng)
        self.stats = stats
        self.membership = membership
        self.rounds = Rounds(membership)
        self.slot = rng.random()  # where in each round our probe goes out: nodes do not all at once
        self._acks = KeyedBuckets(10.0, 20.0)  # ACKs a second per source: a PING flood is not echoed
        self._served = KeyedBuckets(4.0, 8.0)  # PING_REQs a second per requester
        # refutations of SUSPECT/DEAD, per sender, apart from the guard's budget for claims in our
        # name, which a flood may use up
        self._refutes = KeyedBuckets(2.0, 4.0, max_keys=64)
        self._doubts = KeyedBuckets(1.0, 2.0, max_keys=64)  # checks a member that may not judge can start
        self.fallen: dict[IPAddress, Fallen] = {}  # taken out by a verdict, oldest first
        self._reconnect: tuple[IPAddress, int] | None = None  # our last reconnect PING: to whom, its nonce
        self.now_round = 0  # the wall clock's round at the last tick

    @property
    def settings(self) -> ProbeSettings:
        return self.timers.settings

    def reconfigure(self, settings: ProbeSettings) -> None:
        """New probe settings (SIGHUP): what the timers hold is kept."""
        self.timers.settings = settings

    def round_at(self, wall: float) -> int:
        """The probe round the wall clock is in: every node with a set clock agrees."""
        return math.floor(wall / self.settings.interval)

    # --- what arrives ------------------------------------------------------------------------

    def receive(self, msg: Message, source: IPAddress | None, forwarded_by: IPAddress | None, me: IPAddress,
                now: float, wall: float) -> Reaction:
        """A version 2 message that passed the guard. `source`: its UDP source (checked against the
        addresses it claims), None when it came through a gateway or was signed."""
        assert msg.subject is not None
        r = Reaction()
        sender = self.membership.members.get(msg.origin)
        if sender is not None:
            self.timers.heard(msg.origin, (msg.incarnation, msg.seq))  # it speaks: it lives
        about_me = msg.subject.address == me
        if msg.type is MsgType.PING:
            self._on_ping(msg, source, sender is not None, about_me, now, r)
        elif sender is None and msg.type is MsgType.ACK and self._reconnect == (msg.origin, msg.subject.number):
            self._reconnect = None
            self.stats["reconnected"] += 1
            r.back = True
        elif sender is None:
            self.stats[f"probe_ignored:{msg.type.name.lower()}:stranger"] += 1
            self._carry_obituary(msg, forwarded_by, now, r)
        elif about_me and msg.type in (MsgType.SUSPECT, MsgType.DEAD):
            self._about_me(msg, sender, forwarded_by, me, now, wall, r)
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
            self._on_judgement(msg, sender, forwarded_by, me, now, wall, r)
        return r

    def _about_me(self, msg: Message, sender: Member, forwarded_by: IPAddress | None, me: IPAddress, now: float,
                  wall: float, r: Reaction) -> None:
        """A member says we are suspect or dead: refuted (others may believe it), rate-limited per
        sender. Only one that may judge us, and whose PING reached us since its last word about us,
        makes us doubt our own speed (local health): a member that may not cannot slow our
        judgement of others, nor one whose unicast has no way to us, nor a burst of SUSPECTs."""
        self.stats[f"{msg.type.name.lower()}_of_us"] += 1
        if (forwarded_by is None and self.rounds.may_judge(sender, me, sender.interface, me, self.round_at(wall))
                and self.timers.reach.accused(msg.origin, now)):
            self.timers.sick()  # we were too slow for our prober: slower to judge others for a while
        r.refute = self._refutes.take(msg.origin, now)

    def _on_ping(self, msg: Message, source: IPAddress | None, from_member: bool, about_me: bool, now: float,
                 r: Reaction) -> None:
        assert msg.subject is not None
        if about_me and from_member:
            self.timers.reach.pinged(msg.origin, now)
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
                      now: float, wall: float, r: Reaction) -> None:
        """A SUSPECT or DEAD about another member."""
        assert msg.subject is not None
        kind = msg.type.name.lower()
        subject = self.membership.members.get(msg.subject.address)
        if subject is None:
            self.stats[f"probe_ignored:{kind}:unknown"] += 1
            self._carry_obituary(msg, forwarded_by, now, r, sender)
            return
        if _stale(msg.subject.incarnation, msg.subject.number, subject):
            self.stats[f"probe_ignored:{kind}:stale"] += 1  # about an older life or a message since refuted
            return
        if not self._allowed(sender, subject, forwarded_by, me, wall):
            self.stats[f"probe_ignored:{kind}:not_a_monitor"] += 1
            self._doubt(sender, subject, forwarded_by, now)
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

    def _allowed(self, sender: Member, subject: Member, forwarded_by: IPAddress | None, me: IPAddress,
                 wall: float) -> bool:
        if subject.via is not None:  # behind a gateway: its own network's probers judge it, and that
            # gateway carries their word (or says its own); nobody else on our side can know
            return (forwarded_by or sender.primary) == subject.via
        if forwarded_by is not None:
            return False  # about our neighbour, from afar
        if self.timers.accused_by(subject.primary, sender.primary):
            return True  # the judge whose SUSPECT we took, ending it: late, perhaps, but its own
        return self.rounds.may_judge(sender, subject.primary, subject.interface, me, self.round_at(wall))

    def _doubt(self, sender: Member, subject: Member, forwarded_by: IPAddress | None, now: float) -> None:
        """A member of the subject's network that may not judge it (as we see the rounds: its clock
        or ours may be off) still gets the subject checked by us, at a rate it cannot push."""
        if forwarded_by is not None or not local(sender) or not local(subject) or sender.interface != subject.interface:
            return
        if self.timers.is_held(subject.primary, now) or not self._doubts.take(sender.primary, now):
            return
        if self.timers.doubted(subject.primary, sender.primary, now, _target(subject)):
            self.stats["doubts"] += 1

    def _carry_obituary(self, msg: Message, forwarded_by: IPAddress | None, now: float, r: Reaction,
                        sender: Member | None = None) -> None:
        """A DEAD about a node we have just taken out ourselves: a gateway still carries it on, if
        it comes from the node's own network, for those who have not heard one yet."""
        assert msg.subject is not None
        fallen = self.fallen.get(msg.subject.address)
        if msg.type is not MsgType.DEAD or fallen is None or now >= fallen.since + OBITUARY_FOR:
            return
        if sender is not None and forwarded_by is None and local(sender) and sender.interface == fallen.interface:
            r.forward = True

    # --- timers ------------------------------------------------------------------------------

    def due(self) -> float:
        return self.timers.due()

    def tick(self, me: IPAddress, now: float, wall: float) -> tuple[list[Send], list[IPAddress]]:
        if len(self.timers.latest) > len(self.membership):
            self.timers.keep_only(self.membership.members)
        targets: list[Target] = []
        self.now_round = self.round_at(wall)
        round_due = now >= self.timers.next_round
        if round_due:
            targets = self._round(me, now, wall)
        sends, gone = self.timers.tick(now, targets, self.helpers)
        if round_due:
            sends += self._reconnect_ping(now)
        self._count_checks()
        return sends, gone

    def _reconnect_ping(self, now: float) -> list[Send]:
        """Now and then a PING to a node we took out (about once a round over the whole network,
        less often as it stays out: RECONNECT_FRESH): one that answers was cut off from us, not
        dead, and announcing brings both sides of a healed partition back together
        (FailureDetection.came_back)."""
        for gone in [a for a, f in self.fallen.items() if now - f.since >= RECONNECT_FOR]:
            del self.fallen[gone]
        if not self.fallen:
            return []
        rng = self.timers.rng
        address = rng.choice(list(self.fallen))
        stale = max(1.0, (now - self.fallen[address].since) / RECONNECT_FRESH)
        if rng.random() >= 1 / ((len(self.membership) + 1) * stale):
            return []
        nonce = self.timers.nonce()
        self._reconnect = (address, nonce)
        return [Send(MsgType.PING, address, address, self.fallen[address].incarnation, nonce,
                     self.fallen[address].interface)]

    def _round(self, me: IPAddress, now: float, wall: float) -> list[Target]:
        """Our probe of this round; the next one at our slot of the next round (by the wall clock,
        which every node's rounds follow)."""
        interval = self.settings.interval
        slot = math.floor(wall / interval - self.slot)  # our slot's round: it begins inside it
        self.timers.next_round = now + max(interval / 10, (slot + 1 + self.slot) * interval - wall)
        members = self.membership.members
        return [_target(members[a]) for a in self.rounds.targets(me, slot) if a in members]

    def _count_checks(self) -> None:
        if self.timers.checks.begun:
            self.stats["probe_checks"] = self.timers.checks.begun

    def helpers(self, subject: IPAddress) -> list[IPAddress]:
        """Whom to ask to probe `subject` for us: members of its network (a helper elsewhere may
        have no way to it). Any of them: nobody may choose to be asked."""
        m = self.membership.members.get(subject)
        if m is None:
            return []
        return self.rounds.members_on(m.interface, self.now_round)

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

    def alive_at(self, m: Member, now: float) -> float | None:
        """When `m` was last alive as far as the probes tell: a member of our rings that nobody
        suspects answered its prober within the last rounds (a silent one would be suspected by
        now). None: not probed, suspected or restarting; we know only when we last heard it."""
        if not local(m) or not m.firsthand or m.primary in self.timers.suspects or self.timers.is_held(m.primary, now):
            return None
        return now - VOUCHED_ROUNDS * self.settings.interval

    # --- what the conductor and the report ask of the timers ----------------------------------

    def heard(self, node: IPAddress, order: Order) -> bool:
        """A member's message taken into the membership. True when it clears a suspicion."""
        return self.timers.heard(node, order)

    def restarting(self, node: IPAddress, incarnation: int, now: float, grace: float) -> None:
        """The node said it is restarting: not probed nor suspected until its next life, `grace` at most."""
        self.timers.restarting(node, incarnation, now, grace)

    def forget(self, node: IPAddress, now: float) -> Order:
        """Drop what we hold about `node` (out of the map by a verdict); the newest (incarnation,
        seq) taken from it. The DEADs about it still coming are carried on for a while."""
        m = self.membership.members.get(node)
        if m is not None and m.via is None:
            self.fallen.pop(node, None)
            if len(self.fallen) >= MAX_FALLEN:
                del self.fallen[next(iter(self.fallen))]
            self.fallen[node] = Fallen(m.interface, m.incarnation, now)
        return self.timers.forget(node)

    def came_back(self, node: IPAddress, incarnation: int) -> Fallen | None:
        """A node we took out is heard again: what we knew of it, when in the same life (it was cut
        off, not dead)."""
        f = self.fallen.pop(node, None)
        return f if f is not None and f.incarnation == incarnation else None

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
