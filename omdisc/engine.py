"""The discovery engine: what to send and what the cluster looks like, given what was received and
when. Sans-IO: no sockets, clocks and randomness injected. The daemon loop feeds it datagrams
(with their UDP source) and timer ticks; tests do the same without a network.

Join protocol (docs/protocol.md): a starting node multicasts ANNOUNCE+JOIN; the cluster answers
with about one SNAPSHOT (answers.py). Every datagram is checked before it counts (docs/protocol.md,
"Threats"): its source against the addresses it claims, a forwarded one against the gateway that
says it forwarded it, its incarnation against the clock; a claim made in our own name is refuted.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from . import events, gateway
from .answers import AnswerLimits, JoinAnswers, JoinKey
from .auth import Authenticator, Verdict
from .detector import ProbeSettings, Send
from .guard import Guard
from .membership import DEFAULT_MAX_NODES, Change, Claim, Member, Membership
from .probing import Prober
from .protocol import (
    FLAG_GATEWAY,
    FLAG_JOIN,
    FLAG_PROBES,
    FLAG_RESTART,
    MAX_DATAGRAM,
    NODE_FLAGS,
    SUBJECT_TYPES,
    DecodeError,
    IPAddress,
    Message,
    MsgType,
    Subject,
    decode,
    encode,
    snapshot_messages,
)
from .snapshots import paths, records_for
from .table import Table, build_table

log = logging.getLogger("omdisc.membership")
RESTART_GRACE = 15.0  # seconds a restarting node is not probed: its next life comes well before
UNANSWERED = {"pending": "64 answers are waiting already", "rate": "more than one a second from that source"}
JOIN_WINDOW = 3.0  # seconds after a JOIN in which we learn from every SNAPSHOT on our networks
netlog = logging.getLogger("omdisc.net")

@dataclass(frozen=True)
class Settings:
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
    # cluster so that each node hears about this many a second (RTCP's rule, RFC 3550 6.2).
    announce_rate: float = 10.0


@dataclass(frozen=True)
class LocalNode:
    node_id: int  # 0: no IPv4 address, so no place in the kernel table
    addresses: tuple[IPAddress, ...]
    flags: int = 0

    @property
    def primary(self) -> IPAddress:
        return self.addresses[0]


@dataclass(frozen=True)
class Outgoing:
    data: bytes
    interfaces: frozenset[str] | None = None  # None: every interface that announces
    to: IPAddress | None = None  # unicast to this node address (a probe); None: multicast


class Engine:
    def __init__(self, local: LocalNode, incarnation: int, settings: Settings, rng: random.Random,
                 wall: Callable[[], float] = time.time, auth: Authenticator | None = None) -> None:
        self.local = local
        self.incarnation = incarnation
        self.settings = settings
        self.rng = rng
        self.wall = wall  # seconds since the epoch: for incarnations (start times)
        self.membership = Membership(settings.dead_interval, settings.remove_on_leave, settings.max_nodes)
        self.stats: Counter[str] = Counter()
        self.answers = JoinAnswers(settings.answers, rng)
        self.forwarder = gateway.Forwarder(self.stats, settings.seen_age)
        self._seq = 0
        self._local_version = 0
        self._next_announce = float("inf")
        self._join_retries: list[float] = []
        self._refute_again: float | None = None  # a refutation is said twice (settings.probe.resend apart)
        self._joining_until = 0.0
        self._known_of: tuple[int, int, IPAddress] | None = None
        self._known_set: set[IPAddress] = set()
        self.guard = Guard(self.stats, wall, settings.max_incarnation_ahead, settings.refute_rate)
        self.auth = auth  # None: nothing signed, nothing checked (no cluster key)
        self.events = events.Recorder(self.stats)  # for the event handlers: the daemon drains it
        self.prober = Prober(settings.probe, rng, self.stats, self.membership) if settings.probe else None

    # --- what the cluster looks like ---------------------------------------------------------

    @property
    def map_version(self) -> int:
        return self.membership.version + self._local_version

    def nodes(self) -> list[Member]:
        me = Member(self.local.node_id, self.local.addresses, self.incarnation, self._seq, 0.0, self.local.flags)
        return [me, *self.membership.members.values()]

    def table(self) -> Table:
        return build_table(self.nodes())

    @property
    def route_between(self) -> frozenset[str]:
        return self.forwarder.route_between

    @route_between.setter
    def route_between(self, interfaces: frozenset[str]) -> None:
        self.forwarder.route_between = interfaces

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, now: float) -> list[Outgoing]:
        self._schedule_announce(now)
        return self.rejoin(now)

    def shutdown(self) -> list[Outgoing]:
        return [self._send(self._message(MsgType.LEAVE))]

    def restarting(self) -> list[Outgoing]:
        """On the way out for a restart: no LEAVE (every map keeps us), but word not to probe us
        until our next life announces itself (RESTART_GRACE at most)."""
        return [self._send(self._message(MsgType.ANNOUNCE, FLAG_RESTART))]

    def reconfigure(self, settings: Settings, now: float) -> None:
        """New intervals (SIGHUP); the membership is kept."""
        self.settings = settings
        self.membership.dead_interval = settings.dead_interval
        self.membership.remove_on_leave = settings.remove_on_leave
        self.membership.max_nodes = settings.max_nodes
        if settings.probe is None:
            self.prober = None
        elif self.prober is None:
            self.prober = Prober(settings.probe, self.rng, self.stats, self.membership)
        else:
            self.prober.settings = self.prober.detector.settings = settings.probe
        self._schedule_announce(now)

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
        for m in list(self.membership.members.values()):
            if m.interface and m.interface not in keep:
                self.membership.forget(m.primary)
                self.events.add("leave", m.node_id, m.addresses)
                events.log_peer(log, events.LEAVE, "node #%d %s forgotten (interface %s no longer used)",
                                m.node_id, m.primary, m.interface)

    def renew(self) -> None:
        """A new incarnation (new sockets, a re-created interface): our next JOIN is a new one,
        which every node answers again, even one that answered us a moment ago."""
        self.incarnation = max(self.incarnation + 1, int(self.wall() * 1e6))
        self._seq = 0

    def rejoin(self, now: float) -> list[Outgoing]:
        """JOIN again (new addresses, new sockets): the cluster answers with what it knows."""
        self._join_retries = [now + d for d in self.settings.join_retries]
        self._joining_until = now + JOIN_WINDOW
        return [self._send(self._message(MsgType.ANNOUNCE, FLAG_JOIN))]

    # --- input -------------------------------------------------------------------------------

    def receive(self, data: bytes, now: float, interface: str = "", source: IPAddress | None = None) -> list[Outgoing]:
        """One datagram from UDP `source`, arrived on `interface`. Returns what to send: a gateway's
        forwarded copy, a refutation."""
        self.stats["received"] += 1
        try:
            msg = decode(data)
        except DecodeError as e:
            self.stats["malformed"] += 1
            self.stats[f"malformed:{e.kind}"] += 1
            netlog.debug("dropped malformed datagram on %s from %s (%s)", interface or "?", source or "?", e)
            return []
        verdict = self._authentic(data, msg, source, interface, now) if self.auth is not None else None
        if verdict is False:
            return []
        if msg.origin in self.local.addresses:
            self._taken(verdict)
            return self._about_us(msg, source, interface, now)
        # signed: the key vouches for its origin, wherever it was sent from (an address that just
        # changed, say); unsigned: its UDP source must be one of the addresses it claims
        checked_source = None if verdict else source
        gw, reason = self.guard.check(msg, checked_source, interface, self.membership, self.local.addresses)
        if reason:
            return self._reject(reason, msg, source, interface, now)
        self._taken(verdict)
        if msg.type in SUBJECT_TYPES:
            return self._on_subject(data, msg, checked_source, gw, interface, now)
        claim = Claim(msg.node_id, msg.addresses, msg.incarnation, msg.seq, msg.flags & NODE_FLAGS, gw, interface,
                      checked_source if msg.hops == 0 else None)
        change = self._on_leave(claim, now) if msg.type is MsgType.LEAVE else self._on_heard(claim, now)
        if change is Change.REJECTED:
            return self._reject(self.membership.rejected, msg, source, interface, now)
        if self.prober is not None and change is not Change.STALE:
            if self.prober.heard(msg.origin, msg.incarnation, msg.seq):
                self.stats["suspicions_refuted"] += 1
            if msg.flags & FLAG_RESTART and msg.type is MsgType.ANNOUNCE:
                self.prober.detector.restarting(msg.origin, msg.incarnation, now, RESTART_GRACE)
                log.info("node #%d %s is restarting (kept in the map)", msg.node_id, msg.origin)
        if self.membership.replaced is not None and self.route_between:
            # a host that speaks for a new node each time: taken here (one node), never carried on,
            # where the far side could not tell it from a new node each time
            self.stats["forward_refused:replaced"] += 1
            out: list[Outgoing] = []
        elif msg.type is MsgType.SNAPSHOT:
            out = []  # an answer is for the joiner's network; the gateway there answers for us all
        else:
            out = self._forward(data, msg, interface, now)
        if msg.type is MsgType.ANNOUNCE and msg.flags & FLAG_JOIN and msg.hops == 0:
            self._on_join(msg, change, interface, checked_source, now)
        elif msg.type is MsgType.SNAPSHOT:
            self._on_snapshot(msg, claim, now)
        return out

    def _authentic(self, data: bytes, msg: Message, source: IPAddress | None, interface: str,
                   now: float) -> Verdict | bool:
        """The key's verdict to take later, or False: not to be taken (counted and said here)."""
        assert self.auth is not None
        verdict = self.auth.verify(data, msg)
        if not verdict.reason:
            return verdict
        if verdict.reason == "duplicate":  # a copy of what we took (the other family, another gateway)
            self.stats["auth:duplicate"] += 1
        else:
            self.guard.auth_failed(verdict.reason, msg, source, interface, verdict.skew_us, self.auth.max_skew, now)
        return False

    def _taken(self, verdict: Verdict | bool | None) -> None:
        if isinstance(verdict, Verdict) and self.auth is not None:
            self.auth.take(verdict)

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
        self.stats["refuted"] += 1
        return [self._send(self._message(MsgType.ANNOUNCE))]

    def _on_subject(self, data: bytes, msg: Message, source: IPAddress | None, gw: IPAddress | None,
                    interface: str, now: float) -> list[Outgoing]:
        """PING, ACK, PING_REQ, SUSPECT, DEAD: the failure detector's (probing.py)."""
        if self.prober is None:
            self.stats["probe_ignored:off"] += 1
            return []
        r = self.prober.receive(msg, source, gw, self.local.primary, now)
        out = [self._probe_out(s, interface) for s in r.sends]
        if r.refute and self.prober.may_refute(msg.origin, now):
            self.stats["refuted"] += 1
            out.append(self._send(self._message(MsgType.ANNOUNCE)))  # newer than the suspicion: clears it
            # again a little later: a node that missed it would go on to doubt us (Detector.check)
            self._refute_again = now + self.prober.settings.resend
        if r.suspect is not None:
            self.stats["suspected"] += 1
            log.debug("node %s suspected by %s (no answer to its probes)", r.suspect, msg.origin)
        if r.alive is not None:
            self.membership.touch(r.alive, now)  # it answered our check: heard, as by an announce
        for node in r.gone:
            self._fail(node, str(msg.origin), now)
        if r.taken:  # what we did not believe, the far side must not be asked to
            out += self._forward(data, msg, interface, now)
        return out

    def _probe_out(self, s: Send, interface: str = "") -> Outgoing:
        msg = replace(self._message(s.type), subject=Subject(s.subject, s.incarnation, s.number))
        if s.to is None:
            return self._send(msg)
        m = self.membership.members.get(s.to)
        where = m.interface if m is not None and m.interface else interface
        return replace(self._send(msg, frozenset({where}) if where else None), to=s.to)

    def _fail(self, node: IPAddress, by: str, now: float) -> None:
        """The failure detector's verdict: out of the map now, not when it would have expired; or,
        for a node not heard for dead_interval that did not answer our check either, expired."""
        assert self.prober is not None
        order = self.prober.detector.latest.get(node, (0, 0))
        self.prober.forget(node)
        m = self.membership.failed(node, order, now)
        if m is None:
            return
        self.events.add("expire", m.node_id, m.addresses)
        if now - m.last_heard >= self.membership.dead_interval:
            events.log_peer(log, events.EXPIRE, "node #%d %s expired (not heard for %.1fs, nor answering our check)",
                            m.node_id, m.primary, now - m.last_heard)
            return
        self.stats["failed"] += 1
        events.log_peer(log, events.EXPIRE, "node #%d %s failed (no answer to probes; declared by %s)", m.node_id,
                        m.primary, by)

    def _forward(self, data: bytes, msg: Message, interface: str, now: float) -> list[Outgoing]:
        fwd = self.forwarder.forward(data, msg, interface, self.local.primary, now)
        if fwd is None:
            return []
        out, where = fwd
        if self.auth is not None:
            out = self.auth.sign_forward(out)
            if len(out) > MAX_DATAGRAM:
                self.stats["forward_oversized"] += 1
                return []
        return [Outgoing(out, where)]

    def _on_heard(self, claim: Claim, now: float) -> Change:
        change = self.membership.heard(claim, now)
        gone = self.membership.replaced
        if gone is not None:
            self.stats["replaced"] += 1
            self.events.add("leave", gone.node_id, gone.addresses)
            events.log_peer(log, events.LEAVE, "node #%d %s replaced by #%d %s (same source %s)", gone.node_id,
                            gone.primary, claim.node_id, claim.primary, claim.source)
        if change is Change.STALE:
            self.stats["stale"] += 1
        elif change is Change.JOINED:
            self.events.add("join", claim.node_id, claim.addresses)
            events.log_peer(log, events.JOIN, "node #%d %s joined", claim.node_id, claim.primary)
        elif change is Change.UPDATED:
            self.events.add("update", claim.node_id, claim.addresses)
            events.log_peer(log, events.UPDATE, "node #%d %s changed: %s", claim.node_id, claim.primary,
                            ", ".join(map(str, claim.addresses)))
        return change

    def _on_leave(self, claim: Claim, now: float) -> Change:
        change = self.membership.left(claim, now)
        if change is Change.LEFT:
            self.events.add("leave", claim.node_id, claim.addresses)
            what = "left" if self.settings.remove_on_leave else "is leaving (kept until it expires)"
            events.log_peer(log, events.LEAVE, "node #%d %s " + what, claim.node_id, claim.primary)
        elif change is Change.STALE:
            self.stats["stale"] += 1
        return change

    def _on_join(self, msg: Message, change: Change, interface: str, source: IPAddress | None, now: float) -> None:
        if change is Change.STALE:  # a repeated or replayed JOIN: answered already, or never to be
            self.stats["join_unanswered:stale"] += 1
            return
        members = self.membership
        # answers a second per UDP source; per origin for a signed JOIN (its origin vouched for)
        per = source if source is not None else msg.origin
        why = self.answers.joined((msg.origin, msg.incarnation), interface, per, len(members) + 1, now,
                                  hearsay=members.hearsay > 0)
        if why in ("answered", "batched"):
            self.stats[f"join_unanswered:{why}"] += 1
        elif why:
            self.guard.limit_hit(f"join_unanswered:{why}", f"JOIN of #{msg.node_id} {msg.origin} from {source} "
                                 f"left unanswered ({UNANSWERED[why]})", now)

    def _on_snapshot(self, msg: Message, claim: Claim, now: float) -> None:
        """Another node's answer to a JOIN: while we are joining, we learn from it (whichever JOIN it
        answers: in a join storm one SNAPSHOT serves every joiner); to JOINs we are about to answer,
        it may make ours needless. Nobody else learns from it (a host could make up its records)."""
        snap = msg.snapshot
        assert snap is not None
        if self.answers.pending:
            told = {rec.addresses[0] for rec in snap.members}
            dropped = self.answers.heard_snapshot(claim.interface, msg.origin, told, self._known(), now)
            self.stats["suppressed"] += dropped
        if (snap.reply_to, snap.reply_to_incarnation) != (self.local.primary, self.incarnation) \
                and now >= self._joining_until:
            return
        self._join_retries.clear()
        path_of = paths(msg, claim, self.membership)
        mine = frozenset(self.local.addresses)
        for rec in snap.members:
            if not mine.isdisjoint(rec.addresses):
                continue
            via, path_known = path_of(rec)
            change = self.membership.learned(rec, now, via, claim.interface, path_known)
            if change is Change.JOINED:
                self.events.add("join", rec.node_id, rec.addresses)
                events.log_peer(log, events.JOIN, "node #%d %s joined (learned from %s)", rec.node_id,
                                rec.addresses[0], msg.origin)
            elif change is Change.REJECTED:
                self.stats[f"rejected:{self.membership.rejected}"] += 1

    def _known(self) -> set[IPAddress]:
        """What our own SNAPSHOT would tell: ourselves and what we heard first-hand. Kept while the
        map is unchanged: in a join storm every node hears every SNAPSHOT, and rebuilding this for
        each made the storm cost N^3 (a member heard first-hand at last changes `hearsay`)."""
        key = (self.membership.version, self.membership.hearsay, self.local.primary)
        if self._known_of != key:
            self._known_set = {self.local.primary, *(m.primary for m in self.membership.firsthand())}
            self._known_of = key
        return self._known_set

    # --- timers ------------------------------------------------------------------------------

    @property
    def next_announce(self) -> float:
        return self._next_announce

    def next_deadline(self) -> float:
        times = [self._next_announce, *self._join_retries[:1]]
        if self._refute_again is not None:
            times.append(self._refute_again)
        if self.prober is not None:
            times.append(self.prober.due())
        for t in (self.answers.next_due(), self.membership.next_expiry()):
            if t is not None:
                times.append(t)
        return min(times)

    def tick(self, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        if now >= self._next_announce:
            out.append(self._send(self._message(MsgType.ANNOUNCE)))
            self._schedule_announce(now)
        if self._refute_again is not None and now >= self._refute_again:
            self._refute_again = None
            out.append(self._send(self._message(MsgType.ANNOUNCE)))
        if self._join_retries and now >= self._join_retries[0]:
            self._join_retries.pop(0)
            self.stats["join_retries"] += 1
            out.append(self._send(self._message(MsgType.ANNOUNCE, FLAG_JOIN)))
        for key, interface in self.answers.due(now):
            out += self._snapshot(key, interface, now)
        prober = self.prober
        spare = (lambda m: prober.spare(m, now)) if prober is not None else None
        for m in self.membership.expire(now, spare):
            self.events.add("expire", m.node_id, m.addresses)
            events.log_peer(log, events.EXPIRE, "node #%d %s expired (not heard for %.1fs)", m.node_id,
                            m.primary, now - m.last_heard)
        if self.prober is not None:  # after expiry: the checks it began send their first PING now
            sends, gone = self.prober.tick(self.local.primary, now)
            out += [self._probe_out(s) for s in sends]
            for node in gone:
                self._fail(node, "its monitors", now)
        return out

    def _schedule_announce(self, now: float) -> None:
        j = self.settings.announce_jitter
        scale = self.announce_scale()
        self.membership.dead_interval = self.settings.dead_interval * scale
        self._next_announce = now + self.settings.announce_interval * scale * self.rng.uniform(1 - j, 1 + j)

    def announce_scale(self) -> int:
        """How many announce_intervals apart we announce: 1 up to announce_rate x announce_interval
        nodes, then the next power of two that keeps what each node hears at announce_rate a
        second (powers of two: it changes rarely). Always 1 without probes, or beside a version 1
        node, which knows no better than to expire us after dead_interval."""
        if self.prober is None:
            return 1
        self.prober.ring(self.local.primary)
        n = len(self.membership) + 1
        per = self.settings.announce_rate * self.settings.announce_interval
        if self.prober.v1_neighbours or n <= per:
            return 1
        return int(2 ** math.ceil(math.log2(n / per)))

    # --- output ------------------------------------------------------------------------------

    def _message(self, kind: MsgType, flags: int = 0) -> Message:
        self._seq += 1
        probes = FLAG_PROBES if self.prober is not None else 0
        return Message(kind, self.local.node_id, self.incarnation, self._seq, self.local.addresses,
                       flags | self.local.flags | probes)

    def _snapshot(self, key: JoinKey, interface: str, now: float) -> list[Outgoing]:
        """Answer a JOIN on the network it came from; the most recently heard first, should the
        membership be more than MAX_PARTS datagrams hold."""
        joiner, incarnation = key
        records = records_for(self.membership, interface, bool(self.route_between), now)
        messages = snapshot_messages(self._message(MsgType.SNAPSHOT), joiner, incarnation, records)
        self._seq = messages[-1].seq
        told = sum(len(m.snapshot.members) for m in messages if m.snapshot)
        if told < len(records):
            self.stats["snapshot_left_out"] += len(records) - told
        self.stats["snapshots"] += 1
        where = frozenset({interface}) if interface else None
        return [self._send(m, where) for m in messages]

    def _send(self, msg: Message, interfaces: frozenset[str] | None = None) -> Outgoing:
        self.stats["sent"] += 1
        self.stats[f"sent:{msg.type.name}"] += 1
        data = encode(msg)
        return Outgoing(self.auth.sign(data) if self.auth is not None else data, interfaces)

    # --- reporting ---------------------------------------------------------------------------

    def _member_states(self, now: float) -> Iterator[dict[str, Any]]:
        for m in sorted(self.membership.members.values(), key=lambda m: (m.node_id, str(m.primary))):
            yield {
                "id": m.node_id,
                "addresses": [str(a) for a in m.addresses],
                "incarnation": m.incarnation,
                "age": round(now - m.last_heard, 3),
                "via": str(m.via) if m.via else None,
                "gateway": bool(m.flags & FLAG_GATEWAY),
                "leaving": m.leaving,
                "firsthand": m.firsthand,
                "state": self.prober.state_of(m) if self.prober else ("leaving" if m.leaving else "alive"),
                "heard": "snapshot" if not m.firsthand else "gateway" if m.via else "direct",
                "probes": bool(m.flags & FLAG_PROBES),
                "acked": self._acked_age(m, now),
            }

    def _acked_age(self, m: Member, now: float) -> float | None:
        """Seconds since it last answered one of our probes (None: we do not probe it)."""
        at = self.prober.detector.last_ack.get(m.primary) if self.prober else None
        return None if at is None else round(now - at, 3)

    def state(self, now: float, lazy_members: bool = False) -> dict[str, Any]:
        """What showmap --json and STATUS= report beyond the kernel table. With `lazy_members`, the
        members are an iterator of their dicts, made as they are taken (see mapwriter.encode_state)."""
        members = self._member_states(now)
        return {
            "node_id": self.local.node_id,
            "addresses": [str(a) for a in self.local.addresses],
            "incarnation": self.incarnation,
            "joining": now < self._joining_until,  # still learning from every SNAPSHOT (JOIN_WINDOW)
            "probe_health": self.prober.detector.health if self.prober else None,  # 0: judging at full speed
            "members": members if lazy_members else list(members),
            "gateways": gateway.report(self.membership),
            "stats": dict(sorted(self.stats.items())),
        }
