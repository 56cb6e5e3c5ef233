"""Answering JOINs with SNAPSHOTs: when, how often, and when to keep quiet. Pure.

A JOIN is answered after a random delay whose spread grows with the cluster, unless another
node's SNAPSHOT covers what we would tell first (suppression, as mDNS and SRM do). Every node still
joining learns from every SNAPSHOT on its network, so one SNAPSHOT answers all the JOINs waiting on
that interface (a join storm costs a few SNAPSHOTs, not one per JOIN), and another node's SNAPSHOT
suppresses our answers to all of them at once. Because a JOIN
is a datagram anyone can send, answering is bounded (docs/protocol.md, "Threats"):
- at most once per (origin, incarnation), however often the JOIN is repeated or replayed;
- per UDP source at most `answer_rate` answers a second (burst `answer_burst`);
- at most `max_pending` answers waiting at once.
"""

from __future__ import annotations

import random

from omdisc.core.protocol import IPAddress
from omdisc.core.ratelimit import AgedSet, KeyedBuckets
from omdisc.core.records import field, record

JoinKey = tuple[IPAddress, int]  # (origin, incarnation)

ANSWERED_AGE = 120.0  # how long a JOIN stays answered; a node rejoins with a new incarnation
ANSWERED_MAX = 8192


@record(frozen=True)
class AnswerLimits:
    """How JOINs are answered: the random delay before an answer, and the bounds on answering."""

    reply_delay_min: float = 0.002
    reply_spread_per_node: float = 0.010
    reply_spread_max: float = 1.0
    answer_rate: float = 1.0
    answer_burst: float = 3.0
    max_pending: int = 64

    def spread(self, cluster_size: int) -> float:
        """The time over which a cluster of this size answers a JOIN (each node at random in it)."""
        return min(self.reply_spread_max, self.reply_spread_per_node * cluster_size)

    def slowest(self, cluster_size: int) -> float:
        """How long after a JOIN its last answer may be sent: by a node that knows part of the
        cluster second-hand, should the node every other expects to answer first be gone."""
        return self.reply_delay_min + 2 * self.spread(cluster_size)


@record
class Pending:
    """An answer we will send at `due`, unless others' answers covered what it would tell."""

    due: float
    interface: str  # where the JOIN came in: the answer goes there only
    covered: set[IPAddress] = field(default_factory=set)


class JoinAnswers:
    def __init__(self, limits: AnswerLimits, rng: random.Random) -> None:
        self.limits = limits
        self.rng = rng
        self.pending: dict[JoinKey, Pending] = {}
        self._answered = AgedSet(ANSWERED_AGE, ANSWERED_MAX)
        self._per_source = KeyedBuckets(limits.answer_rate, limits.answer_burst)

    def joined(self, key: JoinKey, interface: str, source: IPAddress | None, cluster_size: int,
               now: float, hearsay: bool = False, first: bool = False) -> str | None:
        """A fresh JOIN. Schedules an answer; returns why not, or None. `first`: ours is the answer
        every node expects first (Joining.first_to_answer), due at once (the newcomer's map waits
        for it alone); the others wait reply_delay_min and their random delay, in case it is lost.
        A node that knows part of the cluster only second-hand (it tells only what it heard
        first-hand) answers after the others, so a fuller answer comes first and suppresses it."""
        if key in self.pending:
            return None  # a retry of a JOIN we are about to answer
        if key in self._answered:
            return "answered"
        if len(self.pending) >= self.limits.max_pending:
            # full: the answer due on this interface serves it too (it is listening by now)
            return "batched" if any(p.interface == interface for p in self.pending.values()) else "pending"
        if source is not None and not self._per_source.take(source, now):
            return "rate"
        lim = self.limits
        spread = lim.spread(cluster_size)
        delay = 0.0 if first else lim.reply_delay_min + self.rng.uniform(0, spread) + (spread if hearsay else 0.0)
        self.pending[key] = Pending(now + delay, interface, {key[0]})
        return None

    def heard_snapshot(self, interface: str, sender: IPAddress, told: set[IPAddress], known: set[IPAddress],
                       now: float) -> int:
        """Another node's SNAPSHOT on `interface`: every JOIN waiting there heard it, so drop each
        answer of ours it (with what came before) told everything we would. How many were dropped."""
        dropped = 0
        for key, pending in list(self.pending.items()):
            if pending.interface != interface:
                continue
            pending.covered |= ({sender} | told) & known  # only what we know counts: a bound on the set
            if known <= pending.covered:
                del self.pending[key]
                self._answered.add(key, now)  # answered by another: a replay later gets nothing from us either
                dropped += 1
        return dropped

    def due(self, now: float) -> list[tuple[JoinKey, str]]:
        """The answers to send now, one per interface (each answers every JOIN waiting there); each
        of those JOINs counts as answered from here on."""
        ready: dict[str, JoinKey] = {}
        for key, p in self.pending.items():
            if now >= p.due:
                ready.setdefault(p.interface, key)
        served = [k for k, p in self.pending.items() if p.interface in ready]
        for key in served:
            del self.pending[key]
            self._answered.add(key, now)
        self._answered.prune(now)
        return [(key, interface) for interface, key in ready.items()]

    def next_due(self) -> float | None:
        return min((p.due for p in self.pending.values()), default=None)
