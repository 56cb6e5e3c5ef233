"""Who is in the cluster: join, refresh, expiry, leave. Pure: every call takes `now`.

A node is known by its primary address (the first it announces). (incarnation, seq) orders what
it says: a message not newer than the last one taken from that node is stale and ignored, so
duplicates and reordered datagrams change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .protocol import IPAddress, MemberRecord


class Change(Enum):
    JOINED = "joined"
    UPDATED = "updated"  # id, addresses or flags changed, or a new incarnation
    REFRESHED = "refreshed"
    STALE = "stale"
    LEFT = "left"


@dataclass
class Member:
    node_id: int
    addresses: tuple[IPAddress, ...]
    incarnation: int
    seq: int
    last_heard: float
    flags: int = 0
    via: IPAddress | None = None  # the gateway its announcements come through; None when heard directly
    leaving: bool = False
    interface: str = ""  # where we heard of it last

    @property
    def primary(self) -> IPAddress:
        return self.addresses[0]

    def record(self, now: float) -> MemberRecord:
        age_ms = max(0, int((now - self.last_heard) * 1000))
        return MemberRecord(self.node_id, self.incarnation, age_ms, self.addresses, self.flags)


@dataclass(frozen=True)
class Claim:
    """What one message says about its originator."""

    node_id: int
    addresses: tuple[IPAddress, ...]
    incarnation: int
    seq: int
    flags: int = 0
    via: IPAddress | None = None
    interface: str = ""

    @property
    def primary(self) -> IPAddress:
        return self.addresses[0]


class Membership:
    def __init__(self, dead_interval: float, remove_on_leave: bool = True) -> None:
        self.dead_interval = dead_interval
        self.remove_on_leave = remove_on_leave
        self.members: dict[IPAddress, Member] = {}
        self._tombstones: dict[IPAddress, tuple[int, int, float]] = {}  # primary -> (inc, seq, when)
        self.version = 0  # bumped whenever the map-relevant content changes

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, primary: object) -> bool:
        return primary in self.members

    def _buried(self, primary: IPAddress, incarnation: int, seq: int) -> bool:
        tomb = self._tombstones.get(primary)
        return tomb is not None and (incarnation, seq) <= tomb[:2]

    def heard(self, claim: Claim, now: float) -> Change:
        """A message from the node itself (directly or forwarded by a gateway)."""
        if self._buried(claim.primary, claim.incarnation, claim.seq):
            return Change.STALE
        m = self.members.get(claim.primary)
        if m is None:
            self._tombstones.pop(claim.primary, None)
            self.members[claim.primary] = Member(
                claim.node_id, claim.addresses, claim.incarnation, claim.seq, now, claim.flags, claim.via,
                interface=claim.interface,
            )
            self.version += 1
            return Change.JOINED
        if (claim.incarnation, claim.seq) <= (m.incarnation, m.seq):
            return Change.STALE
        m.interface = claim.interface
        return self._update(m, claim.node_id, claim.addresses, claim.incarnation, claim.flags, claim.via, now,
                            claim.seq)

    def _update(self, m: Member, node_id: int, addresses: tuple[IPAddress, ...], incarnation: int, flags: int,
                via: IPAddress | None, heard_at: float, seq: int) -> Change:
        # The path (via) is no part of the kernel map: with two gateways it may change with every
        # announcement, and must not cost a map write each time.
        changed = (m.node_id, m.addresses, m.flags, m.incarnation) != (node_id, addresses, flags, incarnation)
        m.node_id, m.addresses, m.flags, m.via = node_id, addresses, flags, via
        m.incarnation, m.seq = incarnation, seq
        m.last_heard = max(m.last_heard, heard_at)
        m.leaving = False
        if changed:
            self.version += 1
            return Change.UPDATED
        return Change.REFRESHED

    def learned(self, rec: MemberRecord, now: float, via: IPAddress | None = None, interface: str = "") -> Change:
        """A node as another node's SNAPSHOT describes it: second hand, so never newer than it says."""
        primary = rec.addresses[0]
        heard_at = now - rec.age_ms / 1000
        if heard_at + self.dead_interval <= now or self._buried(primary, rec.incarnation, 0):
            return Change.STALE
        m = self.members.get(primary)
        if m is None:
            self._tombstones.pop(primary, None)
            self.members[primary] = Member(rec.node_id, rec.addresses, rec.incarnation, 0, heard_at, rec.flags, via,
                                           interface=interface)
            self.version += 1
            return Change.JOINED
        if rec.incarnation < m.incarnation:
            return Change.STALE
        if rec.incarnation == m.incarnation:
            m.last_heard = max(m.last_heard, heard_at)
            return Change.REFRESHED
        return self._update(m, rec.node_id, rec.addresses, rec.incarnation, rec.flags, via, heard_at, 0)

    def left(self, claim: Claim, now: float) -> Change:
        """A LEAVE. With remove_on_leave the node goes at once; otherwise it stays until it expires."""
        m = self.members.get(claim.primary)
        if self._buried(claim.primary, claim.incarnation, claim.seq):
            return Change.STALE
        if m is not None and (claim.incarnation, claim.seq) <= (m.incarnation, m.seq):
            return Change.STALE
        self._tombstones[claim.primary] = (claim.incarnation, claim.seq, now)
        if m is None:
            return Change.STALE
        if self.remove_on_leave:
            del self.members[claim.primary]
            self.version += 1
        else:
            m.leaving = True
            m.incarnation, m.seq = claim.incarnation, claim.seq
        return Change.LEFT

    def forget(self, primary: IPAddress) -> Member | None:
        m = self.members.pop(primary, None)
        if m is not None:
            self.version += 1
        return m

    def expire(self, now: float) -> list[Member]:
        """Drop every node not heard for dead_interval; also forget old tombstones."""
        gone = [m for m in self.members.values() if now - m.last_heard >= self.dead_interval]
        for m in gone:
            del self.members[m.primary]
        if gone:
            self.version += 1
        for primary, tomb in list(self._tombstones.items()):
            if now - tomb[2] >= self.dead_interval:
                del self._tombstones[primary]
        return gone

    def next_expiry(self) -> float | None:
        times = [m.last_heard + self.dead_interval for m in self.members.values()]
        return min(times) if times else None

    def records(self, now: float, exclude: IPAddress | None = None, interface: str | None = None) -> list[MemberRecord]:
        """What a SNAPSHOT tells: every member, or only those heard of on `interface`."""
        members = sorted(self.members.items(), key=lambda i: str(i[0]))
        return [m.record(now) for p, m in members if p != exclude and interface in (None, m.interface)]
