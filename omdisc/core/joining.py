"""Joining (docs/protocol.md, "Joining"): our JOIN's retries and the window in which we learn from
every SNAPSHOT, what others' JOINs and SNAPSHOTs ask of our answers (answers.py schedules them),
and what an answer of ours tells. Sans-IO, as the engine: it says when to JOIN again, which answers
are due and what they say; the engine, which numbers and signs what we send, makes them datagrams.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter

from omdisc.core.answers import AnswerLimits, JoinAnswers, JoinKey
from omdisc.core.chronicle import Chronicle
from omdisc.core.guard import Guard
from omdisc.core.membership import Change, Claim
from omdisc.core.protocol import IPAddress, Message, Snapshot, snapshot_messages
from omdisc.core.snapshots import AliveAt, paths, records_for

JOIN_WINDOW = 3.0  # seconds after a JOIN in which we learn from every SNAPSHOT on our networks
ORDER_AGE = 1.0  # seconds the answer order is kept: remade at most once a second, not for each JOIN of a storm
UNANSWERED = {"pending": "64 answers are waiting already", "rate": "more than one a second from that source"}


class Joining:
    def __init__(self, limits: AnswerLimits, rng: random.Random, stats: Counter[str], chronicle: Chronicle,
                 guard: Guard, alive_at: AliveAt) -> None:
        self.answers = JoinAnswers(limits, rng)
        self.alive_at = alive_at  # the failure detector's word on when a member was last alive
        self.stats = stats
        self.chronicle = chronicle
        self.membership = chronicle.membership
        self.guard = guard
        self.retries: list[float] = []  # when to JOIN again, unless a SNAPSHOT answers first
        self.until = 0.0  # we learn from every SNAPSHOT until then (JOIN_WINDOW)
        self._known_of: tuple[int, int, IPAddress] | None = None
        self._order: list[int] = []  # first_to_answer: us and the members heard directly there, by address
        self._order_of: tuple[str, int, float] = ("", 0, -1.0)  # (interface, family, when) it is for
        self._known_set: set[IPAddress] = set()

    def begin(self, now: float, retries: tuple[float, ...]) -> None:
        """Our JOIN goes out now; again after each of `retries` seconds until it is answered."""
        self.retries = [now + d for d in retries]
        self.until = now + JOIN_WINDOW

    def learning(self, now: float) -> bool:
        """Still in JOIN_WINDOW: every SNAPSHOT on our networks teaches us."""
        return now < self.until

    def learns_from(self, snap: Snapshot, addresses: tuple[IPAddress, ...], incarnation: int, now: float) -> bool:
        """Whether a SNAPSHOT's records are ours to take: it answers our JOIN, or we are still joining."""
        return (snap.reply_to, snap.reply_to_incarnation) == (addresses[0], incarnation) or self.learning(now)

    def retry_due(self, now: float) -> bool:
        if not self.retries or now < self.retries[0]:
            return False
        self.retries.pop(0)
        self.stats["join_retries"] += 1
        return True

    def due(self) -> list[float]:
        t = self.answers.next_due()
        return self.retries[:1] + ([] if t is None else [t])

    def on_join(self, msg: Message, change: Change, interface: str, source: IPAddress | None,
                addresses: tuple[IPAddress, ...], now: float) -> None:
        """Another node's JOIN (not forwarded): an answer is scheduled, unless one is not due.
        `addresses`: ours."""
        if change is Change.STALE:  # a repeated or replayed JOIN: answered already, or never to be
            self.stats["join_unanswered:stale"] += 1
            return
        members = self.membership
        # answers a second per UDP source; per origin for a signed JOIN (its origin vouched for)
        per = source if source is not None else msg.origin
        first = not members.hearsay and self.first_to_answer(msg.origin, interface, addresses, now)
        why = self.answers.joined((msg.origin, msg.incarnation), interface, per, len(members) + 1, now,
                                  hearsay=members.hearsay > 0, first=first)
        if why in ("answered", "batched"):
            self.stats[f"join_unanswered:{why}"] += 1
        elif why:
            self.guard.limit_hit(f"join_unanswered:{why}", f"JOIN of #{msg.node_id} {msg.origin} from {source} "
                                 f"left unanswered ({UNANSWERED[why]})", now)

    def first_to_answer(self, joiner: IPAddress, interface: str, addresses: tuple[IPAddress, ...], now: float) -> bool:
        """Whether we are the node after `joiner` in address order, among us and the members heard
        directly on its network: the one every node there expects to answer first, at once (each
        works it out from a map at most ORDER_AGE old). The others answer after their random delay
        if its answer does not come: lost, or it is gone. Only a node that heard everyone first-hand
        is ever first (on_join)."""
        me = next((a for a in addresses if a.version == joiner.version), None)
        if me is None:
            return False
        if self._order_of[:2] != (interface, me.version) or now >= self._order_of[2] + ORDER_AGE:
            here = {int(m.primary) for m in self.membership.members.values()
                    if m.via is None and m.interface == interface and m.primary.version == me.version}
            self._order = sorted(here | {int(me)})
            self._order_of = (interface, me.version, now)
        after = self._order[bisect.bisect_right(self._order, int(joiner)) % len(self._order)]
        return after == int(me)

    def answer(self, base: Message, key: JoinKey, interface: str, routing: bool, now: float) -> list[Message]:
        """Our SNAPSHOT for a JOIN due now on `interface` (answers.due): its parts, numbered from
        `base` on; the most recently heard first, should the membership be more than MAX_PARTS
        datagrams hold. `routing`: we forward between our networks (records_for)."""
        joiner, incarnation = key
        records = records_for(self.membership, interface, routing, now, self.alive_at)
        messages = snapshot_messages(base, joiner, incarnation, records)
        told = sum(len(m.snapshot.members) for m in messages if m.snapshot)
        if told < len(records):
            self.stats["snapshot_left_out"] += len(records) - told
        self.stats["snapshots"] += 1
        return messages

    def on_snapshot(self, msg: Message, claim: Claim, addresses: tuple[IPAddress, ...], incarnation: int,
                    now: float) -> None:
        """Another node's answer to a JOIN: while we are joining, we learn from it (whichever JOIN it
        answers: in a join storm one SNAPSHOT serves every joiner); to JOINs we are about to answer,
        it may make ours needless. Nobody else learns from it (a host could make up its records).
        `addresses`, `incarnation`: ours."""
        snap = msg.snapshot
        assert snap is not None
        if self.answers.pending:
            told = {rec.addresses[0] for rec in snap.members}
            known = self._known(addresses[0])
            self.stats["suppressed"] += self.answers.heard_snapshot(claim.interface, msg.origin, told, known, now)
        if not self.learns_from(snap, addresses, incarnation, now):
            return
        self.retries.clear()
        path_of = paths(msg, claim, self.membership)
        mine = frozenset(addresses)
        families = {a.version for a in addresses}
        for rec in snap.members:
            if not mine.isdisjoint(rec.addresses):
                continue
            via, path_known = path_of(rec)
            if via is None and path_known and families.isdisjoint(a.version for a in rec.addresses):
                self.stats["snapshot_unreachable"] += 1  # a neighbour of no family of ours: never heard,
                continue  # never probed (an IPv4-only and an IPv6-only node on one LAN)
            self.chronicle.learned(rec, now, via, claim.interface, path_known, msg.origin)

    def _known(self, me: IPAddress) -> set[IPAddress]:
        """What our own SNAPSHOT would tell: ourselves and what we heard first-hand. Kept while the
        map is unchanged: in a join storm every node hears every SNAPSHOT, and rebuilding this for
        each made the storm cost N^3 (a member heard first-hand at last changes `hearsay`)."""
        key = (self.membership.version, self.membership.hearsay, me)
        if self._known_of != key:
            self._known_set = {me, *(m.primary for m in self.membership.firsthand())}
            self._known_of = key
        return self._known_set
