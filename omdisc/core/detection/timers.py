"""One node's failure-detection timers (docs/protocol.md, "Failure detection"): the probes it sent,
the PINGs it relays for others, its suspicions, its own checks, the DEADs it says twice, the nodes
restarting, and its local health. It knows nodes by address only: whom to probe and whom to ask
for help it is told at each tick (ring.py knows the membership). Pure: it is told what was heard,
and asked, at each tick, what to send and whom to declare dead; the clock is passed in.

A node removed is one its monitors could not reach directly, nor through `helpers` other members,
nor by the SUSPECTs and PINGs re-sent while it was suspected.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from omdisc.core.protocol import IPAddress, MsgType, Order

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any


@dataclass(frozen=True)
class ProbeSettings:
    """How a node probes its neighbours and how long a suspicion lasts."""

    interval: float = 1.0  # each monitored neighbour is probed this often
    monitors: int = 2  # how many nodes probe each node: its predecessors on the ring
    ack_timeout: float = 0.5  # a direct PING's ACK
    helpers: int = 2  # members asked to probe (PING_REQ) when the direct PING went unanswered
    helper_timeout: float = 0.5  # their relayed ACK
    suspicion: float = 1.5  # a suspect that neither refutes nor answers is declared dead after this
    resend: float = 0.5  # SUSPECT and a PING again, while the suspicion lasts (loss)
    max_relays: int = 64  # PING_REQs being served at once: what others can make us send is bounded
    max_health: int = 8  # the local health multiplier's top (Lifeguard): timeouts up to 9 times longer
    check_tries: int = 3  # PINGs to a member we are about to give up on our own (Timers.check)

    @property
    def min_suspect(self) -> float:
        """How long a receiver keeps a node suspect before a DEAD removes it: time to refute."""
        return self.suspicion / 2


@dataclass(frozen=True)
class Send:
    """A probe message to send: the engine numbers, encodes and signs it."""

    type: MsgType
    to: IPAddress | None  # unicast destination; None: multicast
    subject: IPAddress
    incarnation: int
    number: int  # nonce of a probe; the subject's last seq for SUSPECT and DEAD
    interface: str = ""  # where it goes out ("": every interface): FailureDetection._routed sets it


@dataclass(slots=True)
class Target:
    """A neighbour we probe: its address, life and where it is (for a link-local address)."""

    address: IPAddress
    incarnation: int
    interface: str = ""


@dataclass(slots=True)
class _Probe:
    """A PING of ours waiting for its ACK (directly, then through helpers)."""

    nonce: int
    deadline: float
    indirect: bool = False
    helpers: tuple[IPAddress, ...] = ()


@dataclass(slots=True)
class _Check:
    """A member we PING ourselves before we give it up (its announcements stopped reaching us, or
    the DEAD that should have followed a SUSPECT did not): an answer keeps it, silence removes it.
    The last try also goes through helpers, as a probe's second does."""

    target: Target
    tries: int  # PINGs still to send
    deadline: float  # the next PING, or the verdict when no tries are left
    nonce: int = 0
    helpers: tuple[IPAddress, ...] = ()


@dataclass(slots=True)
class _Relay:
    """A PING we send for another node (its PING_REQ): the ACK goes back to it."""

    requester: IPAddress
    requester_nonce: int
    subject: IPAddress
    deadline: float


@dataclass(slots=True)
class Suspicion:
    """A member suspected of having failed: removed at `doom` unless it refutes or answers."""

    since: float
    order: Order  # the subject's newest message when suspected: a newer one clears the suspicion
    doom: float  # removed then, unless cleared
    mine: bool = False  # we detected it: we re-send SUSPECT and send DEAD
    resend: float = float("inf")
    by: str = ""  # who suspected it first (for the log)
    # another's suspicion: when the DEADs that end it should have come; if neither they nor a
    # refutation did (both can be lost), we PING the subject ourselves then (target: None behind
    # a gateway, whose word we wait for)
    check_at: float = float("inf")
    target: Target | None = None


@dataclass
class Timers:
    """One node's probe, relay, suspicion and check timers, by address (see the module's docstring)."""

    settings: ProbeSettings
    rng: random.Random
    next_round: float = 0.0
    probes: dict[IPAddress, _Probe] = field(default_factory=dict)
    relays: dict[int, _Relay] = field(default_factory=dict)  # our nonce -> whom we probe for
    suspects: dict[IPAddress, Suspicion] = field(default_factory=dict)
    latest: dict[IPAddress, Order] = field(default_factory=dict)  # newest message taken from each member
    last_ack: dict[IPAddress, float] = field(default_factory=dict)
    obituaries: dict[IPAddress, tuple[float, Order]] = field(default_factory=dict)  # DEADs to send once more
    # restarting nodes -> (until when, the life that is ending): not probed nor suspected meanwhile
    held: dict[IPAddress, tuple[float, int]] = field(default_factory=dict)
    checks: dict[IPAddress, _Check] = field(default_factory=dict)
    refused: int = 0  # PING_REQs not served: too many at once
    checked: int = 0  # checks begun (Timers.check)
    # Local health (Lifeguard's LHM): raised when we were wrong or slow (a suspicion of ours refuted,
    # ourselves suspected, our own timers late), lowered by each probe answered in time. Every
    # timeout is (1 + health) times longer: an overloaded node judges others slowly, not wrongly.
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
            if s.mine:
                self.sick()  # we suspected a live node: our view is not to be trusted so fast
            return True
        return False

    def acked(self, sender: IPAddress, subject: IPAddress, nonce: int, now: float) -> Send | None:
        """An ACK. Ours (from the subject, or relayed by a helper we asked): the subject is alive.
        One we relay for a PING_REQ: returns the ACK to send on."""
        relay = self.relays.get(nonce)
        if relay is not None and relay.subject == subject == sender:
            del self.relays[nonce]
            return Send(MsgType.ACK, relay.requester, subject, 0, relay.requester_nonce)
        probe = self.probes.get(subject)
        if probe is None or probe.nonce != nonce or (sender != subject and sender not in probe.helpers):
            return None
        del self.probes[subject]
        self.last_ack[subject] = now
        if self.suspects.pop(subject, None) is None and not probe.indirect and self.health:
            self.health -= 1  # answered in time, directly: we judge well again
        return None

    def relay(self, requester: IPAddress, requester_nonce: int, subject: Target, now: float) -> Send | None:
        """A PING_REQ: PING the subject for the requester, if we are not serving too many already."""
        self._prune_relays(now)
        if len(self.relays) >= self.settings.max_relays:
            self.refused += 1
            return None
        nonce = self.nonce()
        self.relays[nonce] = _Relay(requester, requester_nonce, subject.address,
                                    now + self.scaled(self.settings.helper_timeout))
        return Send(MsgType.PING, subject.address, subject.address, subject.incarnation, nonce)

    def suspected(self, subject: IPAddress, by: IPAddress, now: float, target: Target | None = None) -> bool:
        """Another node's SUSPECT. True when the subject was not suspect here before. `target`:
        where to PING it ourselves, should the suspicion end in neither a DEAD nor a refutation."""
        if subject in self.suspects:
            return False
        self._others_suspicion(subject, by, now, target)
        return True

    def declared_dead(self, subject: IPAddress, by: IPAddress, now: float, target: Target | None = None) -> bool:
        """Another node's DEAD. True when the subject is to go now: suspect here long enough for
        it to have refuted. Otherwise it is suspect from now and goes at the end of that time."""
        s = self.suspects.get(subject) or self._others_suspicion(subject, by, now, target)
        s.doom = min(s.doom, s.since + self.scaled(self.settings.min_suspect))
        return s.doom <= now

    def _others_suspicion(self, subject: IPAddress, by: IPAddress, now: float, target: Target | None) -> Suspicion:
        # its monitor's two DEADs come a suspicion and a resend after its SUSPECT; one more resend of slack
        check_at = now + self.scaled(self.settings.suspicion + 2 * self.settings.resend)
        s = Suspicion(now, self.latest.get(subject, (0, 0)), float("inf"), by=str(by), check_at=check_at,
                      target=target)
        self.suspects[subject] = s
        return s

    def check(self, t: Target, now: float) -> float | None:
        """PING `t` ourselves before giving it up. Returns until when the verdict may take (keep it
        that long), None when it is not ours to check (restarting)."""
        if self.is_held(t.address, now):
            return None
        c = self.checks.get(t.address)
        if c is None:
            c = self.checks[t.address] = _Check(t, self.settings.check_tries, now)
            self.checked += 1
        return c.deadline + self.scaled(self.settings.ack_timeout) * (c.tries + 1)

    def answered(self, sender: IPAddress, subject: IPAddress, nonce: int, now: float) -> bool:
        """An ACK to one of our checks: the member lives (and, when it was suspect, refuted)."""
        c = self.checks.get(subject)
        if c is None or c.nonce != nonce or (sender != subject and sender not in c.helpers):
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

    def is_held(self, node: IPAddress, now: float) -> bool:
        hold = self.held.get(node)
        if hold is not None and now >= hold[0]:
            del self.held[node]
            return False
        return hold is not None

    def _per_node(self) -> tuple[dict[IPAddress, Any], ...]:
        """What we hold about each member, gone with it. Not the relays (by nonce: they time out) nor
        the obituaries (the second DEAD is said after its subject is gone)."""
        return self.probes, self.suspects, self.latest, self.last_ack, self.held, self.checks

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

    def tick(self, now: float, targets: list[Target], helpers: list[IPAddress]) -> tuple[list[Send], list[IPAddress]]:
        """What to send now, and which suspects to remove now. `targets`: the neighbours we monitor;
        `helpers`: members we may ask to probe for us."""
        out: list[Send] = []
        by_address = {t.address: t for t in targets}
        self._prune_relays(now)
        self._timeouts(now, by_address, helpers, out)
        gone = self._suspicions(now, by_address, out)
        gone += self._checks(now, helpers, out)
        self._obituaries(now, out)
        if now >= self.next_round:
            self._round(now, targets, out)
        return out, gone

    def _round(self, now: float, targets: list[Target], out: list[Send]) -> None:
        jitter = self.settings.interval * 0.1
        self.next_round = now + self.settings.interval + self.rng.uniform(-jitter, jitter)
        for t in targets:
            if t.address not in self.probes and t.address not in self.suspects and not self.is_held(t.address, now):
                out.append(self._ping(t, now))

    def _ping(self, t: Target, now: float) -> Send:
        nonce = self.nonce()
        self.probes[t.address] = _Probe(nonce, now + self.scaled(self.settings.ack_timeout))
        return Send(MsgType.PING, t.address, t.address, t.incarnation, nonce)

    def _timeouts(self, now: float, targets: dict[IPAddress, Target], helpers: list[IPAddress],
                  out: list[Send]) -> None:
        for address, probe in list(self.probes.items()):
            if now < probe.deadline:
                continue
            t = targets.get(address)
            if t is None or address in self.suspects or self.is_held(address, now):
                del self.probes[address]  # no longer ours to watch, or a suspicion's own PING
                continue
            if now - probe.deadline > self.settings.ack_timeout:
                # this timer fires late (we were stopped, or starved of CPU): the answer may be
                # waiting unread; judge nobody by our own delay, wait as long again
                probe.deadline = now + self.scaled(self.settings.ack_timeout)
                self.sick()
                continue
            if not probe.indirect:
                probe.indirect = True
                probe.deadline = now + self.scaled(self.settings.helper_timeout)
                probe.helpers = tuple(self._pick_helpers(address, helpers))
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
                                             resend=now + self.settings.resend, by="this node")
        out.append(Send(MsgType.SUSPECT, None, t.address, order[0], order[1]))

    def _suspicions(self, now: float, targets: dict[IPAddress, Target], out: list[Send]) -> list[IPAddress]:
        gone = []
        for address, s in list(self.suspects.items()):
            if s.mine and now - s.doom > self.settings.resend:
                s.doom = now + self.settings.resend  # late ourselves: one more round before judging
                self.sick()
            if now >= s.doom:
                del self.suspects[address]
                self.probes.pop(address, None)
                gone.append(address)
                if s.mine:  # said twice, a resend apart: a node that misses both keeps it until it expires
                    out.append(Send(MsgType.DEAD, None, address, *s.order))
                    self.obituaries[address] = (now + self.settings.resend, s.order)
            elif not s.mine and now >= s.check_at:
                s.check_at = float("inf")
                if s.target is not None:
                    self.check(s.target, now)
            elif s.mine and now >= s.resend:
                s.resend = now + self.settings.resend
                out.append(Send(MsgType.SUSPECT, None, address, *s.order))
                t = targets.get(address)
                if t is not None:  # one more chance to answer, by the shortest way
                    out.append(self._ping(t, now))
        return gone

    def _checks(self, now: float, helpers: list[IPAddress], out: list[Send]) -> list[IPAddress]:
        gone = []
        for address, c in list(self.checks.items()):
            if now < c.deadline:
                continue
            if c.nonce and now - c.deadline > self.settings.ack_timeout:
                c.deadline = now + self.scaled(self.settings.ack_timeout)  # late ourselves: judge nobody by it
                self.sick()
            elif c.tries:
                c.tries -= 1
                c.nonce = self.nonce()
                wait = self.settings.helper_timeout if not c.tries else self.settings.ack_timeout
                c.deadline = now + self.scaled(wait)
                out.append(Send(MsgType.PING, address, address, c.target.incarnation, c.nonce))
                if not c.tries:
                    c.helpers = tuple(self._pick_helpers(address, helpers))
                    out += [Send(MsgType.PING_REQ, h, address, c.target.incarnation, c.nonce) for h in c.helpers]
            else:
                del self.checks[address]
                self.suspects.pop(address, None)
                gone.append(address)
        return gone

    def _obituaries(self, now: float, out: list[Send]) -> None:
        for address, (when, order) in list(self.obituaries.items()):
            if now >= when:
                del self.obituaries[address]
                out.append(Send(MsgType.DEAD, None, address, *order))

    def _prune_relays(self, now: float) -> None:
        for nonce in [n for n, r in self.relays.items() if now >= r.deadline]:
            del self.relays[nonce]

    def keep_only(self, members: Iterable[IPAddress]) -> None:
        """Drop what we hold about nodes no longer members (left, expired, forgotten)."""
        keep = set(members)
        for table in self._per_node():
            for node in [n for n in table if n not in keep]:
                del table[node]
