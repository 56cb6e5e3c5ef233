"""One node's failure-detection timers (docs/protocol.md, "Failure detection"): the probes it sent,
the PINGs it relays for others, its suspicions, its own checks, the DEADs it says twice, the nodes
restarting, and its local health. It knows nodes by address only: whom to probe and whom to ask
for help it is told at each tick (ring.py knows the membership). Pure: it is told what was heard,
and asked, at each tick, what to send and whom to declare dead; the clock is passed in.

A node removed is one its prober could not reach directly, nor through `helpers` other members,
nor by the SUSPECTs and PINGs re-sent while it was suspected. A helper's word alone never keeps a
node for long: a member a helper answered for is PINGed again, directly only, in the next round,
and a check (before expiry, or after another's suspicion) counts only the member's own ACK.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable

from omdisc.core.protocol import IPAddress, MsgType, Order
from omdisc.core.records import field, record

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any


@record(frozen=True)
class ProbeSettings:
    """How a node probes its neighbours and how long a suspicion lasts."""

    interval: float = 1.0  # a probe round: each node probes one member, each member is probed once
    ack_timeout: float = 0.4  # a direct PING's ACK
    helpers: int = 2  # members asked to probe (PING_REQ) when the direct PING went unanswered
    helper_timeout: float = 0.4  # their relayed ACK
    suspicion: float = 1.5  # a suspect that neither refutes nor answers is declared dead after this
    resend: float = 0.5  # SUSPECT and a PING again, while the suspicion lasts (loss)
    max_relays: int = 64  # PING_REQs being served at once: what others can make us send is bounded
    max_health: int = 8  # the local health multiplier's top (Lifeguard): timeouts up to 9 times longer
    check_tries: int = 4  # PINGs to a member we are about to give up on our own (Timers.check)

    @property
    def min_suspect(self) -> float:
        """How long a receiver keeps a node suspect before a DEAD removes it: time to refute."""
        return self.suspicion / 2


@record(frozen=True)
class Send:
    """A probe message to send: the engine numbers, encodes and signs it."""

    type: MsgType
    to: IPAddress | None  # unicast destination; None: multicast
    subject: IPAddress
    incarnation: int
    number: int  # nonce of a probe; the subject's last seq for SUSPECT and DEAD
    interface: str = ""  # where it goes out ("": every interface): FailureDetection._routed sets it


@record(slots=True)
class Target:
    """A neighbour we probe: its address, life and where it is (for a link-local address)."""

    address: IPAddress
    incarnation: int
    interface: str = ""


@record(slots=True)
class _Probe:
    """A PING of ours waiting for its ACK (directly, then through helpers, unless `direct_only`:
    a member a helper answered for last time must answer us itself)."""

    target: Target
    nonce: int
    deadline: float
    indirect: bool = False
    helpers: tuple[IPAddress, ...] = ()
    direct_only: bool = False


@record(slots=True)
class _Check:
    """A member we PING ourselves before we give it up (its announcements stopped reaching us, the
    DEAD that should have followed a SUSPECT did not, or a member that may not judge it accused
    it): its own ACK keeps it, silence removes it. No helpers: their word is what a check must not
    rest on (a lying helper kept a dead node for ever)."""

    target: Target
    tries: int  # PINGs still to send
    deadline: float  # the next PING, or the verdict when no tries are left
    nonce: int = 0


class Checks(dict[IPAddress, _Check]):
    """Our checks under way, by member (at most one each): each PINGs `check_tries` times, an ACK
    timeout apart, and gives the member up after the last."""

    begun = 0  # checks begun, for the counters

    def begin(self, t: Target, tries: int, now: float) -> _Check:
        c = self.get(t.address)
        if c is None:
            c = self[t.address] = _Check(t, tries, now)
            self.begun += 1
        return c

    def run(self, now: float, timers: Timers, out: list[Send]) -> list[IPAddress]:
        """PINGs due now, and the members whose last PING went unanswered (gone)."""
        gone = []
        wait = timers.settings.ack_timeout
        for address, c in list(self.items()):
            if now < c.deadline:
                continue
            if c.nonce and now - c.deadline > wait:
                c.deadline = now + timers.scaled(wait)  # late ourselves: judge nobody by it
                timers.sick()
            elif c.tries:
                c.tries -= 1
                c.nonce = timers.nonce()
                c.deadline = now + timers.scaled(wait)
                out.append(Send(MsgType.PING, address, address, c.target.incarnation, c.nonce))
            else:
                del self[address]
                gone.append(address)
        return gone


@record(slots=True)
class _Relay:
    """A PING we send for another node (its PING_REQ): the ACK goes back to it."""

    requester: IPAddress
    requester_nonce: int
    subject: IPAddress
    deadline: float


@record
class Relays:
    """The PINGs we send for other nodes (their PING_REQs), by our nonce: the subject's ACK goes
    back to the requester. At most `max_relays` at once: what others can make us send is bounded."""

    waiting: dict[int, _Relay] = field(default_factory=dict)
    refused: int = 0  # PING_REQs not served: too many at once

    def serve(self, relay: _Relay, nonce: int, limit: int, now: float) -> bool:
        self.prune(now)
        if len(self.waiting) >= limit:
            self.refused += 1
            return False
        self.waiting[nonce] = relay
        return True

    def answered(self, sender: IPAddress, subject: IPAddress, nonce: int) -> Send | None:
        """The subject's ACK to a PING we sent for another: the ACK to send on."""
        relay = self.waiting.get(nonce)
        if relay is None or not relay.subject == subject == sender:
            return None
        del self.waiting[nonce]
        return Send(MsgType.ACK, relay.requester, subject, 0, relay.requester_nonce)

    def prune(self, now: float) -> None:
        for nonce in [n for n, r in self.waiting.items() if now >= r.deadline]:
            del self.waiting[nonce]


@record
class Reach:
    """Whether the unicast between us and a member has worked since it last failed, which local
    health needs: a failed round trip that has worked since the last one failed says we may be
    slow; one that keeps failing (multicast routed, unicast not: TTL mode; a route or firewall
    changed) says only that the path is broken, once. A judge's SUSPECT about us counts when its
    PING reached us since its last one (so a burst of them counts once); a suspicion of ours that
    the member refutes, when it answered one of our PINGs since the last it refuted."""

    pinged_by: dict[IPAddress, float] = field(default_factory=dict)  # its last PING naming us
    accused_at: dict[IPAddress, float] = field(default_factory=dict)  # its last SUSPECT or DEAD about us
    refuted: dict[IPAddress, float] = field(default_factory=dict)  # our last suspicion of it that it refuted

    def tables(self) -> tuple[dict[IPAddress, float], ...]:
        return self.pinged_by, self.accused_at, self.refuted

    def pinged(self, node: IPAddress, now: float) -> None:
        self.pinged_by[node] = now

    def accused(self, node: IPAddress, now: float) -> bool:
        """A SUSPECT or DEAD about us from `node`: True when its PING reached us since its last one."""
        fresh = self.pinged_by.get(node, -math.inf) > self.accused_at.get(node, -math.inf)
        self.accused_at[node] = now
        return fresh

    def wrongly_suspected(self, node: IPAddress, since: float, last_ack: float | None) -> bool:
        """`node` refuted our suspicion begun at `since`: True when it answered our PING (at
        `last_ack`) since the last suspicion of ours it refuted."""
        fresh = last_ack is not None and last_ack > self.refuted.get(node, -math.inf)
        self.refuted[node] = since
        return fresh


@record(slots=True)
class Suspicion:
    """A member suspected of having failed: removed at `doom` unless it refutes or answers."""

    since: float
    order: Order  # the subject's newest message when suspected: a newer one clears the suspicion
    doom: float  # removed then, unless cleared
    mine: bool = False  # we detected it: we re-send SUSPECT and send DEAD
    resend: float = float("inf")
    by: str = ""  # who suspected it first (for the log)
    accuser: IPAddress | None = None  # the judge whose SUSPECT began it: its DEAD ends it, however late
    target_of_mine: Target | None = None  # ours: where the PINGs beside our SUSPECTs go
    # another's suspicion: when the DEADs that end it should have come; if neither they nor a
    # refutation did (both can be lost), we PING the subject ourselves then (target: None behind
    # a gateway, whose word we wait for)
    check_at: float = float("inf")
    target: Target | None = None


@record
class Timers:
    """One node's probe, relay, suspicion and check timers, by address (see the module's docstring)."""

    settings: ProbeSettings
    rng: random.Random
    next_round: float = 0.0  # the next probe round (Ring.tick keeps it on our slot of the round)
    probes: dict[IPAddress, _Probe] = field(default_factory=dict)
    relays: Relays = field(default_factory=Relays)
    suspects: dict[IPAddress, Suspicion] = field(default_factory=dict)
    latest: dict[IPAddress, Order] = field(default_factory=dict)  # newest message taken from each member
    last_ack: dict[IPAddress, float] = field(default_factory=dict)
    obituaries: dict[IPAddress, tuple[float, Order]] = field(default_factory=dict)  # DEADs to send once more
    # restarting nodes -> (until when, the life that is ending): not probed nor suspected meanwhile
    held: dict[IPAddress, tuple[float, int]] = field(default_factory=dict)
    checks: Checks = field(default_factory=Checks)
    # members a helper answered for: PINGed again in the next round, directly only
    follow_ups: dict[IPAddress, Target] = field(default_factory=dict)
    reach: Reach = field(default_factory=Reach)  # whose PINGs reach us
    # Local health (Lifeguard's LHM): raised when we were wrong or slow (a suspicion of ours refuted,
    # ourselves suspected by a judge, our own timers late: a path that keeps failing counts once,
    # Reach), lowered by each probe answered in time. Every timeout is (1 + health) times longer:
    # an overloaded node judges others slowly, not wrongly.
    health: int = 0
    _nonce: int = 0

    def __post_init__(self) -> None:
        self._nonce = self.rng.getrandbits(31)

    def scaled(self, seconds: float) -> float:
        return seconds * (1 + self.health)

    def sick(self) -> None:
        self.health = min(self.settings.max_health, self.health + 1)

    def nonce(self) -> int:
        self._nonce = (self._nonce + 1) & 0xFFFFFFFF
        return self._nonce

    # --- what we hear ------------------------------------------------------------------------

    def heard(self, node: IPAddress, order: Order) -> bool:
        """A message taken from `node`. True when it clears a suspicion (the node refuted)."""
        if order > self.latest.get(node, (0, 0)):
            self.latest[node] = order
            self.checks.pop(node, None)  # it spoke since we began to doubt it: it lives
        hold = self.held.get(node)
        if hold is not None and order[0] > hold[1]:
            del self.held[node]  # its next life is here
        obituary = self.obituaries.get(node)
        if obituary is not None and order > obituary[1]:
            del self.obituaries[node]  # it came back: the second DEAD would be a lie now
        s = self.suspects.get(node)
        if s is not None and order > s.order:
            del self.suspects[node]
            if s.mine and self.reach.wrongly_suspected(node, s.since, self.last_ack.get(node)):
                self.sick()  # we suspected a live node that answers us: our view is not to be trusted so fast
            return True
        return False

    def acked(self, sender: IPAddress, subject: IPAddress, nonce: int, now: float) -> Send | None:
        """An ACK. Ours (from the subject, or relayed by a helper we asked): the subject is alive.
        One we relay for a PING_REQ: returns the ACK to send on."""
        relayed = self.relays.answered(sender, subject, nonce)
        if relayed is not None:
            return relayed
        probe = self.probes.get(subject)
        if probe is None or probe.nonce != nonce or (sender != subject and sender not in probe.helpers):
            return None
        del self.probes[subject]
        if sender != subject:  # a helper's word: the member must answer us itself next round
            self.follow_ups[subject] = probe.target
            return None
        self.follow_ups.pop(subject, None)
        self.last_ack[subject] = now
        if self.suspects.pop(subject, None) is None and not probe.indirect and self.health:
            self.health -= 1  # answered in time, directly: we judge well again
        return None

    def relay(self, requester: IPAddress, requester_nonce: int, subject: Target, now: float) -> Send | None:
        """A PING_REQ: PING the subject for the requester, if we are not serving too many already."""
        nonce = self.nonce()
        relay = _Relay(requester, requester_nonce, subject.address, now + self.scaled(self.settings.helper_timeout))
        if not self.relays.serve(relay, nonce, self.settings.max_relays, now):
            return None
        return Send(MsgType.PING, subject.address, subject.address, subject.incarnation, nonce)

    def suspected(self, subject: IPAddress, by: IPAddress, now: float, target: Target | None = None) -> bool:
        """A judge's SUSPECT. True when the subject was not suspect here before. `target`: where to
        PING it ourselves, should the suspicion end in neither a DEAD nor a refutation."""
        s = self.suspects.get(subject)
        if s is not None:
            if s.accuser is None and not s.mine:
                s.accuser = by  # a judge now says what a doubt began: its DEAD may end it
            return False
        self._others_suspicion(subject, by, now, target)
        return True

    def accused_by(self, subject: IPAddress, judge: IPAddress) -> bool:
        """Did `judge` begin the suspicion we hold about `subject`? Its DEAD ends it then, even when
        its turn as the subject's prober is past (its timers ran slow: local health)."""
        s = self.suspects.get(subject)
        return s is not None and s.accuser == judge

    def declared_dead(self, subject: IPAddress, by: IPAddress, now: float, target: Target | None = None) -> bool:
        """A judge's DEAD. True when the subject is to go now: suspect here long enough for it to
        have refuted. Otherwise it is suspect from now and goes at the end of that time."""
        s = self.suspects.get(subject) or self._others_suspicion(subject, by, now, target)
        s.doom = min(s.doom, s.since + self.scaled(self.settings.min_suspect))
        return s.doom <= now

    def doubted(self, subject: IPAddress, by: IPAddress, now: float, target: Target) -> bool:
        """A SUSPECT or DEAD from a member of the subject's network that may not judge it (its clock,
        or ours, is off the probe rounds; or it lies): it removes nobody, but unless the subject
        says something newer or a judge takes it up, we PING the subject ourselves when its DEADs
        would have come (Timers.check). True when that doubt is new."""
        if subject in self.suspects or subject in self.checks:
            return False
        self._others_suspicion(subject, None, now, target, str(by))
        return True

    def _others_suspicion(self, subject: IPAddress, by: IPAddress | None, now: float, target: Target | None,
                          doubter: str = "") -> Suspicion:
        # its prober's two DEADs come a suspicion and a resend after its SUSPECT; one more resend of slack
        check_at = now + self.scaled(self.settings.suspicion + 2 * self.settings.resend)
        s = Suspicion(now, self.latest.get(subject, (0, 0)), float("inf"), by=doubter or str(by), check_at=check_at,
                      target=target, accuser=by)
        self.suspects[subject] = s
        return s

    def check(self, t: Target, now: float) -> float | None:
        """PING `t` ourselves before giving it up. Returns until when the verdict may take (keep it
        that long), None when it is not ours to check (restarting)."""
        if self.is_held(t.address, now):
            return None
        c = self.checks.begin(t, self.settings.check_tries, now)
        return c.deadline + self.scaled(self.settings.ack_timeout) * (c.tries + 1)

    def answered(self, sender: IPAddress, subject: IPAddress, nonce: int, now: float) -> bool:
        """An ACK to one of our checks, from the member itself: it lives (and, when it was
        suspect, refuted)."""
        c = self.checks.get(subject)
        if c is None or c.nonce != nonce or sender != subject:
            return False
        del self.checks[subject]
        self.suspects.pop(subject, None)
        self.last_ack[subject] = now
        return True

    def restarting(self, node: IPAddress, incarnation: int, now: float, grace: float) -> None:
        """The node said it is restarting: leave it alone until its next life, `grace` at most."""
        self.held[node] = (now + grace, incarnation)
        self.probes.pop(node, None)
        self.suspects.pop(node, None)
        self.follow_ups.pop(node, None)

    def is_held(self, node: IPAddress, now: float) -> bool:
        hold = self.held.get(node)
        if hold is not None and now >= hold[0]:
            del self.held[node]
            return False
        return hold is not None

    def _per_node(self) -> tuple[dict[IPAddress, Any], ...]:
        """What we hold about each member, gone with it. Not the relays (by nonce: they time out) nor
        the obituaries (the second DEAD is said after its subject is gone)."""
        return (self.probes, self.suspects, self.latest, self.last_ack, self.held, self.checks, self.follow_ups,
                *self.reach.tables())

    def forget(self, node: IPAddress) -> Order:
        """Drop what we hold about `node`; returns the newest (incarnation, seq) taken from it."""
        order = self.latest.get(node, (0, 0))
        for table in self._per_node():
            table.pop(node, None)
        return order

    # --- timers ------------------------------------------------------------------------------

    def due(self) -> float:
        times = [self.next_round]
        times += [p.deadline for p in self.probes.values()]
        for s in self.suspects.values():
            times += [s.resend, s.doom, s.check_at]
        times += [when for when, _ in self.obituaries.values()]
        times += [c.deadline for c in self.checks.values()]
        return min(times)

    def tick(self, now: float, targets: list[Target], helpers: Callable[[IPAddress], list[IPAddress]]
             ) -> tuple[list[Send], list[IPAddress]]:
        """What to send now, and which suspects to remove now. `targets`: whom to probe, given only
        when a round is due (Ring.tick sets `next_round`); `helpers`: the members we may ask to
        probe a given member for us."""
        out: list[Send] = []
        self.relays.prune(now)
        self._timeouts(now, helpers, out)
        gone = self._suspicions(now, out)
        gone += self._checks(now, out)
        self._obituaries(now, out)
        if targets:
            self._round(now, targets, out)
        return out, gone

    def _round(self, now: float, targets: list[Target], out: list[Send]) -> None:
        follow_ups, self.follow_ups = self.follow_ups, {}
        for t in targets:
            if t.address not in follow_ups and self._probe_able(t, now):
                out.append(self._ping(t, now))
        for t in follow_ups.values():
            if self._probe_able(t, now):
                out.append(self._ping(t, now, direct_only=True))

    def _probe_able(self, t: Target, now: float) -> bool:
        return t.address not in self.probes and t.address not in self.suspects and not self.is_held(t.address, now)

    def _ping(self, t: Target, now: float, direct_only: bool = False) -> Send:
        nonce = self.nonce()
        self.probes[t.address] = _Probe(t, nonce, now + self.scaled(self.settings.ack_timeout), direct_only=direct_only)
        return Send(MsgType.PING, t.address, t.address, t.incarnation, nonce)

    def _timeouts(self, now: float, helpers: Callable[[IPAddress], list[IPAddress]], out: list[Send]) -> None:
        for address, probe in list(self.probes.items()):
            if now < probe.deadline:
                continue
            if address in self.suspects or self.is_held(address, now):
                del self.probes[address]  # a suspicion's own PING, or no longer ours to watch
                continue
            if now - probe.deadline > self.settings.ack_timeout:
                # this timer fires late (we were stopped, or starved of CPU): the answer may be
                # waiting unread; judge nobody by our own delay, wait as long again
                probe.deadline = now + self.scaled(self.settings.ack_timeout)
                self.sick()
                continue
            t = probe.target
            if not probe.indirect:
                probe.indirect = True
                probe.deadline = now + self.scaled(self.settings.helper_timeout)
                if not probe.direct_only:
                    probe.helpers = tuple(self._pick_helpers(address, helpers(address)))
                    out += [Send(MsgType.PING_REQ, h, address, t.incarnation, probe.nonce) for h in probe.helpers]
                # and once more ourselves: either way may be the one the loss spared
                out.append(Send(MsgType.PING, address, address, t.incarnation, probe.nonce))
            else:
                del self.probes[address]
                self._suspect(t, now, out)

    def _pick_helpers(self, subject: IPAddress, helpers: list[IPAddress]) -> list[IPAddress]:
        pool = [h for h in helpers if h != subject]
        return self.rng.sample(pool, min(self.settings.helpers, len(pool)))

    def _suspect(self, t: Target, now: float, out: list[Send]) -> None:
        order = self.latest.get(t.address, (t.incarnation, 0))
        self.suspects[t.address] = Suspicion(now, order, now + self.scaled(self.settings.suspicion), mine=True,
                                             resend=now + self.settings.resend, by="this node", target_of_mine=t)
        self.follow_ups.pop(t.address, None)
        out.append(Send(MsgType.SUSPECT, None, t.address, order[0], order[1]))

    def _suspicions(self, now: float, out: list[Send]) -> list[IPAddress]:
        gone = []
        for address, s in list(self.suspects.items()):
            if s.mine and now - s.doom > self.settings.resend:
                s.doom = now + self.settings.resend  # late ourselves: one more round before judging
                self.sick()
            if now >= s.doom:
                del self.suspects[address]
                self.probes.pop(address, None)
                gone.append(address)
                if s.mine:  # said twice, a resend apart: a node that misses both checks it itself
                    out.append(Send(MsgType.DEAD, None, address, *s.order))
                    self.obituaries[address] = (now + self.settings.resend, s.order)
            elif not s.mine and now >= s.check_at:
                s.check_at = float("inf")
                if s.target is not None:
                    self.check(s.target, now)
            elif s.mine and now >= s.resend:
                s.resend = now + self.settings.resend
                out.append(Send(MsgType.SUSPECT, None, address, *s.order))
                if s.target_of_mine is not None:  # one more chance to answer, by the shortest way
                    out.append(self._ping(s.target_of_mine, now))
        return gone

    def _checks(self, now: float, out: list[Send]) -> list[IPAddress]:
        gone = self.checks.run(now, self, out)
        for address in gone:
            self.suspects.pop(address, None)
        return gone

    def _obituaries(self, now: float, out: list[Send]) -> None:
        for address, (when, order) in list(self.obituaries.items()):
            if now >= when:
                del self.obituaries[address]
                out.append(Send(MsgType.DEAD, None, address, *order))

    def keep_only(self, members: Iterable[IPAddress]) -> None:
        """Drop what we hold about nodes no longer members (left, expired, forgotten)."""
        keep = set(members)
        for table in self._per_node():
            for node in [n for n in table if n not in keep]:
                del table[node]
