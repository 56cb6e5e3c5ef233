"""The discovery engine: what to send and what the cluster looks like, given what was received and
when. Sans-IO: no sockets, clocks and randomness injected. The daemon loop feeds it datagrams
(with their UDP source) and timer ticks; tests do the same without a network.

Join protocol (docs/protocol.md): a starting node multicasts ANNOUNCE+JOIN; the cluster answers
with about one SNAPSHOT (answers.py). Every datagram is checked before it counts (docs/protocol.md,
"Threats"): its source against the addresses it claims, a forwarded one against the gateway that
says it forwarded it, its incarnation against the clock; a claim made in our own name is refuted.

The engine conducts; the modules it calls decide, and none of them sends: guard.py (what a datagram
must show), joining.py (our JOIN, our answers to others'), detection/ (probes and their verdicts),
chronicle.py (membership changes told to the log and the event handlers), report.py (state.json).
AnnounceSchedule, here, says when we announce. Only the engine numbers (seq), encodes and signs
what goes out, so every datagram takes its place in one sequence.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable

from omdisc.core import events, gateway, report
from omdisc.core.answers import AnswerLimits, JoinKey
from omdisc.core.auth import Authenticator, Verdict
from omdisc.core.chronicle import Chronicle
from omdisc.core.detection.conductor import BACK_SPREAD, BACK_SPREAD_MAX, FailureDetection
from omdisc.core.detection.timers import ProbeSettings, Send
from omdisc.core.guard import Guard
from omdisc.core.joining import Joining
from omdisc.core.links import Links
from omdisc.core.membership import DEFAULT_MAX_NODES, Change, Claim, Member, Membership, Rejected, Replaced
from omdisc.core.protocol import (
    FLAG_JOIN,
    FLAG_PROBES,
    FLAG_RESTART,
    FLAG_ROUNDS,
    NODE_FLAGS,
    SUBJECT_TYPES,
    DecodeError,
    IPAddress,
    Message,
    MsgType,
    Subject,
    decode,
    encode,
)
from omdisc.core.records import field, record, replace
from omdisc.core.table import Table, build_table

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("omdisc.membership")
netlog = logging.getLogger("omdisc.net")

# After a JOIN (a start, new addresses, new sockets, a reload) the first announcements go out one
# announce_interval apart, whatever the cluster's size: a node that lost the JOIN learns the
# newcomer from the first, one that lost that too from the second, an interval later, not a whole
# (grown) announce period on.
EARLY_ANNOUNCES = 2


@record(frozen=True)
class Settings:
    """The engine's settings: timers, bounds and limits (core/settings.py makes them from a Config)."""

    announce_interval: float = 10.0
    dead_interval: float = 35.0
    remove_on_leave: bool = True
    answers: AnswerLimits = field(default_factory=AnswerLimits)
    join_retries: tuple[float, ...] = (0.25, 1.0)  # re-send JOIN at these delays until answered
    announce_jitter: float = 0.1  # each period is announce_interval x (1 +- jitter)
    seen_age: float = 60.0  # how long a gateway remembers a forwarded message id
    max_nodes: int = DEFAULT_MAX_NODES
    max_incarnation_ahead: float = 86400.0  # seconds; an incarnation further ahead of our clock is a lie
    refute_rate: float = 1.0  # refutations a second at most (burst 2): a flood of claims is not echoed
    probe: ProbeSettings | None = field(default_factory=ProbeSettings)  # None: no probes (version 1 only)
    # With probes, announcements only find nodes and refresh addresses: their period grows with the
    # cluster so that each node hears about this many a second (RTCP's rule, RFC 3550 6.2); probes
    # and their answers are about two datagrams a second each way, so this is what the rest may cost.
    announce_rate: float = 0.2


@record(frozen=True)
class LocalNode:
    """This node as it announces itself: its id and addresses, the primary first."""

    node_id: int  # 0: no IPv4 address, so no place in the kernel table
    addresses: tuple[IPAddress, ...]
    flags: int = 0

    @property
    def primary(self) -> IPAddress:
        return self.addresses[0]


@record(frozen=True)
class Outgoing:
    """A datagram to send: multicast on some or all interfaces, or unicast to one node."""

    data: bytes
    interfaces: frozenset[str] | None = None  # None: every interface that announces
    to: IPAddress | None = None  # unicast to this node address (a probe); None: multicast


class AnnounceSchedule:
    """When we announce next, and the dead_interval members are judged by: both follow the announce
    period, which grows with the cluster once probes find failures (FailureDetection.announce_scale);
    a life's first announcements after a JOIN are announce_interval apart (EARLY_ANNOUNCES)."""

    def __init__(self, settings: Settings, rng: random.Random, membership: Membership,
                 detection: FailureDetection) -> None:
        self.settings = settings
        self.rng = rng
        self.membership = membership
        self.detection = detection
        self.next = float("inf")
        self._early = 0  # how many of this life's periodic announcements are still to come at announce_interval
        self._scaled_for = -1  # the membership version dead_interval was last scaled for
        self._scale = 1  # the announce period's scale then

    def begin(self, me: IPAddress, now: float) -> None:
        """Our JOIN went out now: the early announcements follow."""
        self._early = EARLY_ANNOUNCES
        self.schedule(me, now)

    def announced(self, me: IPAddress, now: float) -> None:
        """A periodic announcement went out now."""
        self._early = max(0, self._early - 1)
        self.schedule(me, now)

    def schedule(self, me: IPAddress, now: float) -> None:
        j = self.settings.announce_jitter
        scale = self.rescale(me)
        if self._early:
            scale = 1
        self.next = now + self.settings.announce_interval * scale * self.rng.uniform(1 - j, 1 + j)

    def follow_the_map(self, me: IPAddress, now: float) -> None:
        """The map changed: dead_interval follows its size before anything expires. A node of an
        older release that has come expects to hear us within its own (short) dead_interval, and
        knows us only from a SNAPSHOT, which it does not check before expiry: our announcement,
        scheduled at our grown period, comes soon instead (spread as after a healed partition)."""
        if self.membership.version == self._scaled_for:
            return
        before = self._scale
        if self.rescale(me) < before and self.detection.beside_older_nodes():
            spread = min(BACK_SPREAD_MAX, BACK_SPREAD * (len(self.membership) + 1))
            self.next = min(self.next, now + self.rng.uniform(0, spread))

    def joined(self, flags: int, me: IPAddress, now: float) -> None:
        """A node's JOIN: one of an older release (no ROUNDS flag) needs to hear us soon, not at
        the next tick (follow_the_map): it drops what a SNAPSHOT says of us once our record looks
        older than its dead_interval."""
        if not flags & FLAG_ROUNDS:
            self.follow_the_map(me, now)

    def rescale(self, me: IPAddress, nodes: int | None = None) -> int:
        """dead_interval grows with the announce period, for the map's size or `nodes`; the scale."""
        scale = self._scale = self.scale(me, nodes)
        self.membership.dead_interval = self.settings.dead_interval * scale
        self._scaled_for = self.membership.version
        return scale

    def scale(self, me: IPAddress, nodes: int | None = None) -> int:
        """How many announce_intervals apart we announce (FailureDetection.announce_scale)."""
        per = self.settings.announce_rate * self.settings.announce_interval
        return self.detection.announce_scale(me, per, nodes)


class Engine:
    def __init__(self, local: LocalNode, incarnation: int, settings: Settings, rng: random.Random,
                 wall: Callable[[], float], auth: Authenticator | None = None) -> None:
        self.local = local
        self.incarnation = incarnation
        self.settings = settings
        self.wall = wall  # seconds since the epoch: for incarnations (start times)
        self.membership = Membership(settings.dead_interval, settings.remove_on_leave, settings.max_nodes)
        self.stats: Counter[str] = Counter()
        self.forwarder = gateway.Forwarder(self.stats, settings.seen_age)
        self._seq = 0
        self._local_version = 0
        self.guard = Guard(self.stats, wall, settings.max_incarnation_ahead, settings.refute_rate)
        self.auth = auth  # None: nothing signed, nothing checked (no cluster key)
        # what is on-link on each interface (the shell reads it); None: not checked (TTL mode, where
        # multicast routers carry what a node sends to other subnets)
        self.links: Links | None = None
        self.events = events.Recorder(self.stats)  # for the event handlers: the daemon drains it
        self.chronicle = Chronicle(self.membership, self.stats, self.events)  # changes told: log, handlers
        self.detection = FailureDetection(settings.probe, rng, self.stats, self.chronicle, wall, settings.announce_rate)
        self.joining = Joining(settings.answers, rng, self.stats, self.chronicle, self.guard, self.detection.alive_at)
        self.announcing = AnnounceSchedule(settings, rng, self.membership, self.detection)

    # --- what the cluster looks like ---------------------------------------------------------

    @property
    def map_version(self) -> int:
        return self.membership.version + self._local_version

    def _me(self) -> Member:
        return Member(self.local.node_id, self.local.addresses, self.incarnation, self._seq, 0.0, self.local.flags)

    def nodes(self) -> list[Member]:
        return [self._me(), *self.membership.members.values()]

    def table(self) -> Table:
        return build_table(self.nodes())

    @property
    def route_between(self) -> frozenset[str]:
        return self.forwarder.route_between

    @route_between.setter
    def route_between(self, interfaces: frozenset[str]) -> None:
        self.forwarder.route_between = interfaces

    # --- lifecycle ---------------------------------------------------------------------------

    def shutdown(self) -> list[Outgoing]:
        return [self._send(self._message(MsgType.LEAVE))]

    def restarting(self) -> list[Outgoing]:
        """On the way out for a restart: no LEAVE (every map keeps us), but word not to probe us
        until our next life announces itself (conductor.RESTART_GRACE at most)."""
        return [self._send(self._message(MsgType.ANNOUNCE, FLAG_RESTART))]

    def reconfigure(self, settings: Settings, now: float) -> None:
        """New intervals (SIGHUP); the membership is kept."""
        self.settings = self.announcing.settings = settings
        self.membership.dead_interval = settings.dead_interval
        self.membership.leave_interval = settings.dead_interval
        self.membership.remove_on_leave = settings.remove_on_leave
        self.membership.max_nodes = settings.max_nodes
        self.detection.reconfigure(settings.probe)
        self.announcing.schedule(self.local.primary, now)

    def set_local(self, local: LocalNode) -> list[Outgoing]:
        """Our addresses or id changed (DHCP renew, SIGHUP). Returns the LEAVE of the old identity
        when our primary address changed; the caller then rejoin()s from where we now are."""
        if local == self.local:
            return []
        out = []
        if local.primary != self.local.primary:
            out.append(self._send(self._message(MsgType.LEAVE)))
        log.info("this node is now #%d at %s", local.node_id, ", ".join(map(str, local.addresses)))
        self.local = local
        self._local_version += 1
        return out

    def forget_interfaces(self, keep: frozenset[str]) -> None:
        """Drop the nodes heard of only on interfaces we no longer use: we cannot hear them leave."""
        self.chronicle.forget_interfaces(keep)

    def renew(self) -> None:
        """A new incarnation (new sockets, a re-created interface): our next JOIN is a new one,
        which every node answers again, even one that answered us a moment ago."""
        self.incarnation = max(self.incarnation + 1, int(self.wall() * 1e6))
        self._seq = 0

    def rejoin(self, now: float) -> list[Outgoing]:
        """JOIN again (new addresses, new sockets): the cluster answers with what it knows, and
        whoever lost the JOIN hears the early announcements (EARLY_ANNOUNCES)."""
        self.announcing.begin(self.local.primary, now)
        self.joining.begin(now, self.settings.join_retries)
        return [self._send(self._message(MsgType.ANNOUNCE, FLAG_JOIN))]

    start = rejoin  # the first JOIN of a life: a rejoin from nothing

    # --- input -------------------------------------------------------------------------------

    def receive(self, data: bytes, now: float, interface: str = "", source: IPAddress | None = None) -> list[Outgoing]:
        """One datagram from UDP `source`, arrived on `interface`. Returns what to send: a gateway's
        forwarded copy, a refutation, an answer to a probe."""
        self.stats["received"] += 1
        try:
            msg = decode(data)
        except DecodeError as e:
            self.stats["malformed"] += 1
            self.stats[f"malformed:{e.kind}"] += 1
            netlog.debug("dropped malformed datagram on %s from %s (%s)", interface or "?", source or "?", e)
            return []
        verdict = None
        if self.auth is not None:
            verdict = self.guard.authentic(self.auth, data, msg, source, interface, now)
            if verdict is None:
                return []
        if msg.origin in self.local.addresses:
            self._taken(verdict)
            return self._about_us(msg, source, interface, now)
        # signed: the key vouches for its origin, wherever on the link it was sent from (an address
        # that just changed, say); unsigned: its UDP source must be one of the addresses it claims.
        # Either way, sent directly (hops 0): one of those addresses must be on this link.
        checked_source = None if verdict is not None else source
        gw, reason = self.guard.check(msg, checked_source, interface, self.membership, self.local.addresses,
                                      self.links)
        if reason:
            return self._reject(reason, msg, source, interface, now)
        self._taken(verdict)
        if msg.type in SUBJECT_TYPES:  # PING, ACK, PING_REQ, SUSPECT, DEAD: the failure detector's
            return self._probe_message(data, msg, checked_source, gw, interface, now)
        return self._member_message(data, msg, checked_source, gw, source, interface, now)

    def _taken(self, verdict: Verdict | None) -> None:
        if verdict is not None and self.auth is not None:
            self.auth.take(verdict)

    def _probe_message(self, data: bytes, msg: Message, source: IPAddress | None, gw: IPAddress | None,
                       interface: str, now: float) -> list[Outgoing]:
        r = self.detection.receive(msg, source, gw, self.local.primary, interface, now)
        out = [self._probe_out(s) for s in r.sends]
        if r.refute:
            out.append(self._refutation())
        if r.forward:  # what we did not believe, the far side must not be asked to
            out += self._forward(data, msg, interface, now)
        return out

    def _member_message(self, data: bytes, msg: Message, checked_source: IPAddress | None, gw: IPAddress | None,
                        source: IPAddress | None, interface: str, now: float) -> list[Outgoing]:
        """An ANNOUNCE, LEAVE or SNAPSHOT: what it says of its originator goes into the membership."""
        claim = Claim(msg.node_id, msg.addresses, msg.incarnation, msg.seq, msg.flags & NODE_FLAGS, gw, interface,
                      checked_source if msg.hops == 0 else None)
        result = self.chronicle.left(claim, now) if msg.type is MsgType.LEAVE else self.chronicle.heard(claim, now)
        change = result.then if isinstance(result, Replaced) else result
        if isinstance(change, Rejected):
            return self._reject(change.reason, msg, source, interface, now)
        out: list[Outgoing] = []
        if change is not Change.STALE:
            self.detection.heard(msg, now)
            out += self._introductions()
        if isinstance(result, Replaced) and result.taken is None and self.route_between:
            # a host that speaks for a new node each time: taken here (one node), never carried on,
            # where the far side could not tell it from a new node each time
            self.stats["forward_refused:replaced"] += 1
        elif msg.type is not MsgType.SNAPSHOT:  # a SNAPSHOT is for the joiner's network: its gateway answers
            out += self._forward(data, msg, interface, now)
        if msg.type is MsgType.ANNOUNCE and msg.flags & FLAG_JOIN and msg.hops == 0:
            self.joining.on_join(msg, change, interface, checked_source, self.local.addresses, now)
            if change is not Change.STALE:
                self.forwarder.joined(interface, now)  # a gateway says itself there (Forwarder.joined)
                self.announcing.joined(msg.flags, self.local.primary, now)
        elif msg.type is MsgType.SNAPSHOT:
            self._on_snapshot(msg, claim, now)
        return out

    def _on_snapshot(self, msg: Message, claim: Claim, now: float) -> None:
        assert msg.snapshot is not None
        # a joiner's map grows from nothing: what a large cluster tells it is up to a (long)
        # announce period old, and must not look stale to the dead_interval of an empty map
        # (only then: a settled node would remake its expiry heap for every SNAPSHOT it hears)
        if self.joining.learns_from(msg.snapshot, self.local.addresses, self.incarnation, now):
            self.announcing.rescale(self.local.primary, len(self.membership) + len(msg.snapshot.members) + 1)
        self.joining.on_snapshot(msg, claim, self.local.addresses, self.incarnation, now)

    def _reject(self, reason: str, msg: Message, source: IPAddress | None, interface: str,
                now: float) -> list[Outgoing]:
        self.guard.reject(reason, msg, source, interface, now)
        if reason == "conflict" and any(a in self.local.addresses for a in msg.addresses):
            return self._refute(f"{msg.type.name} claiming one of this node's addresses", msg, source, interface,
                                now, renew=False)
        return []

    def _about_us(self, msg: Message, source: IPAddress | None, interface: str, now: float) -> list[Outgoing]:
        """A message in our name: our own (looped back, or forwarded back by another gateway), an
        old life's, or someone else's claim to be us, which we refute at once."""
        if msg.incarnation == self.incarnation and msg.seq <= self._seq:
            self.stats["own"] += 1
            return []
        if (msg.incarnation, msg.seq) <= (self.incarnation, self._seq):
            self.stats["stale"] += 1
            return []
        if self.guard.from_the_future(msg.incarnation):
            return self._reject("future", msg, source, interface, now)  # nobody believes it: nothing to refute
        self.stats["claims_about_us"] += 1
        return self._refute(f"{msg.type.name} in this node's name", msg, source, interface, now, renew=True)

    def _refute(self, what: str, msg: Message, source: IPAddress | None, interface: str, now: float,
                renew: bool) -> list[Outgoing]:
        if not self.guard.may_refute(what, msg, source, interface, now):
            return []
        if renew:  # newer than what was claimed, so every node takes ours over it
            self.incarnation = max(self.incarnation, msg.incarnation) + 1
            self._seq = 0
        return [self._refutation()]

    def _refutation(self) -> Outgoing:
        """An ANNOUNCE newer than what was said against us (a claim in our name, a suspicion or a
        DEAD about us): every node takes it over that. Counted here, whichever it answers."""
        self.stats["refuted"] += 1
        return self._send(self._message(MsgType.ANNOUNCE))

    def _forward(self, data: bytes, msg: Message, interface: str, now: float) -> list[Outgoing]:
        fwd = self.forwarder.forward(data, msg, interface, self.local.primary, now, self.auth)
        return [] if fwd is None else [Outgoing(*fwd)]

    # --- timers ------------------------------------------------------------------------------

    @property
    def next_announce(self) -> float:
        return self.announcing.next

    def next_deadline(self) -> float:
        expiry = self.membership.next_expiry()
        times = [self.announcing.next, *self.joining.due(), *self.detection.due()]
        times += [t for t in (expiry, self.forwarder.greet_due()) if t is not None]
        return min(times)

    def tick(self, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        if now >= self.announcing.next:
            out.append(self._send(self._message(MsgType.ANNOUNCE)))
            self.announcing.announced(self.local.primary, now)
        if self.detection.announce_due(now):
            out.append(self._send(self._message(MsgType.ANNOUNCE)))
        if self.joining.retry_due(now):
            out.append(self._send(self._message(MsgType.ANNOUNCE, FLAG_JOIN)))
        greet = self.forwarder.greetings(now)
        if greet and not out:  # one for all networks due (what another gateway carries over is a
            # duplicate there, not an older message); none if we just announced everywhere
            self.stats["greetings"] += 1
            out.append(self._send(self._message(MsgType.ANNOUNCE), frozenset(greet)))
        for key, interface in self.joining.answers.due(now):
            out += self._snapshot(key, interface, now)
        self.announcing.follow_the_map(self.local.primary, now)
        self.chronicle.expire(now, self.detection.spare(now))
        out += [self._probe_out(s) for s in self.detection.tick(self.local.primary, now)]  # after expiry
        return out

    def announce_scale(self, nodes: int | None = None) -> int:
        """How many announce_intervals apart we announce (FailureDetection.announce_scale)."""
        return self.announcing.scale(self.local.primary, nodes)

    # --- output ------------------------------------------------------------------------------

    def _message(self, kind: MsgType, flags: int = 0) -> Message:
        self._seq += 1
        probes = FLAG_PROBES | FLAG_ROUNDS if self.detection.probing else 0
        return Message(kind, self.local.node_id, self.incarnation, self._seq, self.local.addresses,
                       flags | self.local.flags | probes)

    def _introductions(self) -> list[Outgoing]:
        """ANNOUNCEs by unicast to nodes back from being cut off alone (FailureDetection.heard)."""
        return [replace(self._send(self._message(MsgType.ANNOUNCE), frozenset({i}) if i else None), to=to)
                for to, i in self.detection.take_introductions()]

    def _probe_out(self, s: Send) -> Outgoing:
        msg = replace(self._message(s.type), subject=Subject(s.subject, s.incarnation, s.number))
        out = self._send(msg, frozenset({s.interface}) if s.interface else None)
        return out if s.to is None else replace(out, to=s.to)

    def _snapshot(self, key: JoinKey, interface: str, now: float) -> list[Outgoing]:
        """Answer a JOIN on the network it came from (Joining.answer), numbered from here on."""
        messages = self.joining.answer(self._message(MsgType.SNAPSHOT), key, interface, bool(self.route_between), now)
        self._seq = messages[-1].seq
        where = frozenset({interface}) if interface else None
        return [self._send(m, where) for m in messages]

    def _send(self, msg: Message, interfaces: frozenset[str] | None = None) -> Outgoing:
        self.stats["sent"] += 1
        self.stats[f"sent:{msg.type.name}"] += 1
        data = encode(msg)
        return Outgoing(self.auth.sign(data) if self.auth is not None else data, interfaces)

    # --- reporting ---------------------------------------------------------------------------

    def state(self, now: float, lazy_members: bool = False) -> dict[str, Any]:
        """What showmap --json and STATUS= report beyond the kernel table (report.py). With
        `lazy_members`, the members are an iterator of their dicts (see shell/statefile.py, encode_state)."""
        return report.state(self._me(), self.joining.learning(now), self.membership, self.detection.ring, self.stats,
                            now, lazy_members)
