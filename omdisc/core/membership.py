"""Who is in the cluster: join, refresh, expiry, leave. Pure: every call takes `now`.

A node is known by its primary address (the first it announces). (incarnation, seq) orders what
it says: a message not newer than the last one taken from that node is stale and ignored, so
duplicates and reordered datagrams change nothing.

Every peer may be hostile (docs/protocol.md, "Threats"), so what a peer can grow is bounded and
what it can claim is checked against what the network itself tells:
- at most `max_nodes` members and as many tombstones;
- a UDP source address speaks for one node: a new node from a source that already speaks for
  another replaces it, so one host puts one node in the map however many it makes up;
- an address is one member's: a node that lists an address another member holds is refused, unless
  it sends from that address and the holder's messages do not come from it (the holder goes: it
  listed an address that is not its own);
- a direct message for a known node must come from one of that node's addresses;
- second-hand knowledge (a SNAPSHOT's records) only adds nodes we do not know, and is never told
  on: only what we heard first-hand goes into our own SNAPSHOTs.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable
from enum import Enum

from omdisc.core.protocol import IPAddress, MemberRecord, Order, member_flags, node_flags
from omdisc.core.records import record

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_MAX_NODES = 4096
# The expiry heap is rebuilt from the members when it would hold more than twice as many entries as there
# are members (plus this): the entries of forgotten nodes cannot pile up under churn.
HEAP_SLACK = 64


def _same(addr: IPAddress, known: IPAddress) -> IPAddress:
    """`known` when it is the same address: one object for each node's address, not one more per
    message (its primary address, its UDP source, the keys of the dicts), which thousands of nodes
    would each keep."""
    return known if addr == known else addr


class Change(Enum):
    JOINED = "joined"
    UPDATED = "updated"  # id, addresses or flags changed, or a new incarnation
    REFRESHED = "refreshed"
    STALE = "stale"
    LEFT = "left"


@record(slots=True)  # thousands of them under a flood: no __dict__ each
class Member:
    """One other node as we know it: its life, its addresses, when and where we heard it."""

    node_id: int
    addresses: tuple[IPAddress, ...]
    incarnation: int
    seq: int
    last_heard: float
    flags: int = 0
    via: IPAddress | None = None  # the gateway its announcements come through; None when heard directly
    leaving: bool = False
    interface: str = ""  # where we heard of it last
    firsthand: bool = True  # we had a message from the node itself, not only another's SNAPSHOT
    source: IPAddress | None = None  # UDP source of its last direct message
    path_known: bool = True  # `via` is known (not a guess from a SNAPSHOT)
    spared: float = 0.0  # due to expire but kept until then, while the failure detector checks it

    @property
    def primary(self) -> IPAddress:
        return self.addresses[0]

    @property
    def owner_heard(self) -> bool:
        """Its last direct message came from its primary address itself."""
        return self.source == self.primary

    def record(self, now: float, flags: int = 0, alive_at: float | None = None) -> MemberRecord:
        """What a SNAPSHOT tells of it; its age from when it was last heard, or last known alive."""
        heard = self.last_heard if alive_at is None else max(self.last_heard, alive_at)
        age_ms = max(0, int((now - heard) * 1000))
        return MemberRecord(self.node_id, self.incarnation, age_ms, self.addresses, member_flags(self.flags) | flags)


@record(frozen=True, slots=True)
class Rejected:
    """A claim not taken, and why: "foreign", "full", "conflict" or "path" (guard.REJECTIONS)."""

    reason: str


@record(frozen=True, slots=True)
class Replaced:
    """A node that took another's place: `gone` is out of the map for it; `then` is what became of
    the node heard (JOINED, unless the map is still full; UPDATED for a known one). `taken` is None
    when the node is new here and its UDP source spoke for `gone` (one host, one node); else the
    address it sent from, which `gone` listed as its own though its messages do not come from it."""

    gone: Member
    then: Change | Rejected
    taken: IPAddress | None = None


@record(frozen=True, slots=True)
class Claim:
    """What one message says about its originator."""

    node_id: int
    addresses: tuple[IPAddress, ...]
    incarnation: int
    seq: int
    flags: int = 0
    via: IPAddress | None = None
    interface: str = ""
    source: IPAddress | None = None  # UDP source when heard directly (hops 0); None when forwarded

    @property
    def primary(self) -> IPAddress:
        return self.addresses[0]


class Holders:
    """Who holds each address: every member's every address, to that member's primary. An address
    is one member's, so what a claim lists is checked in O(its addresses), and there are at most
    max_nodes x MAX_ADDRESSES entries, each gone with its member."""

    def __init__(self) -> None:
        self._of: dict[IPAddress, IPAddress] = {}  # address -> primary of the member holding it

    def __len__(self) -> int:
        return len(self._of)

    def get(self, addr: IPAddress) -> IPAddress | None:
        return self._of.get(addr)

    def hold(self, m: Member) -> None:
        for a in m.addresses:  # keys and values: the member's own address objects, not one more each
            self._of[a] = m.primary

    def let_go(self, m: Member) -> None:
        for a in m.addresses:
            if self._of.get(a) == m.primary:
                del self._of[a]

    def clash(self, claim: Claim, members: Mapping[IPAddress, Member],
              replaced: IPAddress | None = None) -> Member | Rejected | None:
        """Another member that holds an address `claim` lists: Rejected("conflict"), unless the
        claim was sent from that address and the holder's last direct message was not, which then
        is to go (returned: it listed an address not its own); None when no other member holds any.
        `replaced`: the member the claim's UDP source speaks for, which goes anyway."""
        yields = None
        for a in claim.addresses:
            p = self._of.get(a)
            if p is None or p == claim.primary or p == replaced:
                continue
            holder = members[p]
            if a != claim.source or holder.source == a:
                return Rejected("conflict")
            yields = holder
        return yields


class Membership:
    def __init__(self, dead_interval: float, remove_on_leave: bool = True, max_nodes: int = DEFAULT_MAX_NODES) -> None:
        self._dead_interval = dead_interval
        # a node that said it leaves (kept with remove_on_leave false) is not probed and announces no
        # more: it goes after the configured dead_interval, not the one grown with the cluster
        self.leave_interval = dead_interval
        self.remove_on_leave = remove_on_leave
        self.max_nodes = max_nodes
        self.members: dict[IPAddress, Member] = {}
        # primary -> (inc, seq, when); oldest first, at most max_nodes
        self._tombstones: OrderedDict[IPAddress, tuple[int, int, float]] = OrderedDict()
        self._speaks_for: dict[IPAddress, IPAddress] = {}  # UDP source -> primary of the node it speaks for
        self.holders = Holders()
        self.version = 0  # bumped whenever the map-relevant content changes
        self.hearsay = 0  # members known only second-hand
        # Expiry in O(log N) a timer pass, not a scan of every member: a heap of (when due as pushed,
        # tie-break, member), where a member is due at max(last_heard + dead_interval, spared). A
        # refresh only raises m.last_heard (no heap work per datagram): an entry found at the top
        # with an earlier time than its member's is pushed down again, one whose member is no longer
        # in the map is dropped (lazy deletion). The only thing that makes a member due sooner,
        # touch() ending a spare, pushes an entry of its own.
        self._deadlines: list[tuple[float, int, Member]] = []
        self._pushed = itertools.count()

    @property
    def dead_interval(self) -> float:
        return self._dead_interval

    @dead_interval.setter
    def dead_interval(self, seconds: float) -> None:
        """The engine scales it with the announce period (a power of two of the map's size): rarely
        changed, and then every member is due at another time, so the heap is made again."""
        if seconds != self._dead_interval:
            self._dead_interval = seconds
            self._deadlines = [(self._due(m), next(self._pushed), m) for m in self.members.values()]
            heapq.heapify(self._deadlines)

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, primary: object) -> bool:
        return primary in self.members

    def _buried(self, primary: IPAddress, incarnation: int, seq: int) -> bool:
        tomb = self._tombstones.get(primary)
        return tomb is not None and (incarnation, seq) <= tomb[:2]

    def _add(self, m: Member) -> Change:
        self._tombstones.pop(m.primary, None)
        self.members[m.primary] = m
        self.holders.hold(m)
        self._push(m)
        self.hearsay += not m.firsthand
        if m.source is not None:
            self._speaks_for[m.source] = m.primary
        self.version += 1
        return Change.JOINED

    def _room_for(self, firsthand: bool) -> bool:
        """Full: a node heard first-hand may take the place of the oldest known only second-hand."""
        if len(self.members) < self.max_nodes:
            return True
        if not firsthand:
            return False
        hearsay = [m for m in self.members.values() if not m.firsthand]
        if not hearsay:
            return False
        self.forget(min(hearsay, key=lambda m: m.last_heard).primary)
        return True

    def heard(self, claim: Claim, now: float) -> Change | Rejected | Replaced:
        """A message from the node itself (directly or forwarded by a gateway)."""
        if self._buried(claim.primary, claim.incarnation, claim.seq):
            return Change.STALE
        m = self.members.get(claim.primary)
        if m is None:
            return self._new(claim, now)
        refused = self._screen(m, claim, now)
        if refused is not None:
            return refused
        if (claim.incarnation, claim.seq) <= (m.incarnation, m.seq) and not self._owner_overrides(claim, m):
            return Change.STALE
        clash = None if claim.addresses == m.addresses else self.holders.clash(claim, self.members)
        if isinstance(clash, Rejected):  # (the same addresses: every one of them is m's already)
            return clash
        if clash is not None:
            self.forget(clash.primary)
        self._heard_firsthand(m, claim)
        change = self._update(m, claim, now)
        return change if clash is None else Replaced(clash, change, claim.source)

    def _screen(self, m: Member, claim: Claim, now: float) -> Change | Rejected | None:
        """What a node's own message about known member `m` must pass, before its order counts (None:
        it passed). Its UDP source must be one of m's addresses ("foreign": a host speaking for a
        node it is not). A forwarded claim (via a gateway) about a node we know first-hand is
        refused ("path") when the node is heard directly: a gateway has nothing to tell about our
        neighbour, and a host posing as one would evict or take it over. Through another gateway
        than the node's it is stale: with two gateways every message comes twice; a switch waits
        until its path is silent for half of dead_interval, as when its gateway died."""
        if claim.source is not None and claim.source not in m.addresses:
            return Rejected("foreign")
        if claim.via is None or not m.firsthand or m.via == claim.via:
            return None
        if m.via is None and m.source is not None:
            return Rejected("path")
        return None if now - m.last_heard >= self.dead_interval / 2 else Change.STALE

    @staticmethod
    def _owner_overrides(claim: Claim, m: Member) -> bool:
        """The node speaking from its own primary address beats what another host said in its name
        (an incarnation from the future, say), whatever the order."""
        return claim.source == claim.primary and not m.owner_heard

    def _new(self, claim: Claim, now: float) -> Change | Rejected | Replaced:
        speaks_for = None if claim.source is None else self._speaks_for.get(claim.source)
        other = None if speaks_for is None else self.members.get(speaks_for)
        clash = self.holders.clash(claim, self.members, speaks_for)
        if isinstance(clash, Rejected):
            return clash
        # the member the source speaks for holds that source (it sent from it): it is never the one to yield
        gone, taken = (clash, claim.source) if clash is not None else (other, None)
        if gone is not None:
            self.forget(gone.primary)  # one host, one node; or an address not the holder's
        then = self._add_heard(claim, now) if self._room_for(True) else Rejected("full")
        return then if gone is None else Replaced(gone, then, taken)

    def _add_heard(self, claim: Claim, now: float) -> Change:
        source = None if claim.source is None else _same(claim.source, claim.primary)
        return self._add(Member(claim.node_id, claim.addresses, claim.incarnation, claim.seq, now, claim.flags,
                                claim.via, interface=claim.interface, source=source))

    def _heard_firsthand(self, m: Member, claim: Claim) -> None:
        """Heard from the node itself: where, and from which UDP source (the one it speaks for)."""
        m.interface = claim.interface
        self.hearsay -= not m.firsthand
        m.firsthand = True
        m.path_known = True
        if claim.source is not None:
            if m.source is not None and self._speaks_for.get(m.source) == m.primary:
                del self._speaks_for[m.source]
            m.source = _same(claim.source, m.primary)
            self._speaks_for[m.source] = m.primary

    def _update(self, m: Member, claim: Claim, heard_at: float) -> Change:
        # The path (via) is no part of the kernel map: with two gateways it may change with every
        # announcement, and must not cost a map write each time.
        changed = (m.node_id, m.addresses, m.flags, m.incarnation) != (claim.node_id, claim.addresses, claim.flags,
                                                                       claim.incarnation)
        m.node_id, m.flags, m.via = claim.node_id, claim.flags, claim.via
        if claim.addresses != m.addresses:  # else the tuple kept is the one the members dict's key is from
            self.holders.let_go(m)
            m.addresses = claim.addresses
            self.holders.hold(m)
        m.incarnation, m.seq = claim.incarnation, claim.seq
        m.last_heard = max(m.last_heard, heard_at)
        m.leaving = False
        if changed:
            self.version += 1
            return Change.UPDATED
        return Change.REFRESHED

    def learned(self, rec: MemberRecord, now: float, via: IPAddress | None = None, interface: str = "",
                path_known: bool = True) -> Change | Rejected:
        """A node as another node's SNAPSHOT describes it: second hand. It adds a node we do not
        know; it never changes one we know (the node tells us itself) nor refreshes one we heard
        first-hand (a peer must not keep a dead node alive)."""
        primary = rec.addresses[0]
        heard_at = now - rec.age_ms / 1000
        m = self.members.get(primary)
        if m is not None and m.firsthand:
            return Change.STALE  # what it says itself wins (the common case in a join storm: first)
        if heard_at + self.dead_interval <= now or self._buried(primary, rec.incarnation, 0):
            return Change.STALE
        if m is None:
            if any(self.holders.get(a) is not None for a in rec.addresses):
                return Rejected("conflict")
            if not self._room_for(False):
                return Rejected("full")
            return self._add(Member(rec.node_id, rec.addresses, rec.incarnation, 0, heard_at, node_flags(rec.flags),
                                    via, interface=interface, firsthand=False, path_known=path_known))
        if m.firsthand or rec.incarnation != m.incarnation:
            return Change.STALE
        m.last_heard = max(m.last_heard, heard_at)
        return Change.REFRESHED

    def left(self, claim: Claim, now: float) -> Change | Rejected:
        """A LEAVE. With remove_on_leave the node goes at once; otherwise it stays until it expires.
        A LEAVE for a node we do not know changes nothing and leaves nothing behind."""
        m = self.members.get(claim.primary)
        if m is None or self._buried(claim.primary, claim.incarnation, claim.seq):
            return Change.STALE
        refused = self._screen(m, claim, now)
        if refused is not None:
            return refused
        if (claim.incarnation, claim.seq) <= (m.incarnation, m.seq):
            return Change.STALE
        self._bury(claim.primary, (claim.incarnation, claim.seq, now))
        if self.remove_on_leave:
            self.forget(claim.primary)
        else:
            m.leaving = True
            m.incarnation, m.seq = claim.incarnation, claim.seq
            self._push(m)  # due sooner now (leave_interval)
        return Change.LEFT

    def _bury(self, primary: IPAddress, tomb: tuple[int, int, float]) -> None:
        self._tombstones.pop(primary, None)
        self._tombstones[primary] = tomb
        while len(self._tombstones) > self.max_nodes:
            self._tombstones.popitem(last=False)

    def forget(self, primary: IPAddress) -> Member | None:
        m = self.members.pop(primary, None)
        if m is not None:
            self.holders.let_go(m)
            self.version += 1
            self.hearsay -= not m.firsthand
            if m.source is not None and self._speaks_for.get(m.source) == primary:
                del self._speaks_for[m.source]
        return m

    def _due(self, m: Member) -> float:
        interval = min(self.leave_interval, self.dead_interval) if m.leaving else self.dead_interval
        return max(m.last_heard + interval, m.spared)

    def _push(self, m: Member) -> None:
        if len(self._deadlines) >= 2 * len(self.members) + HEAP_SLACK:
            self._deadlines = [(self._due(x), next(self._pushed), x) for x in self.members.values()]
            heapq.heapify(self._deadlines)  # m is among them: it is in members already
            return
        heapq.heappush(self._deadlines, (self._due(m), next(self._pushed), m))

    def _first_due(self) -> Member | None:
        """The member due to expire first, its entry at the top of the heap; None when there is none."""
        heap = self._deadlines
        while heap:
            due, _, m = heap[0]
            if self.members.get(m.primary) is not m:  # forgotten (or replaced by a new life)
                heapq.heappop(heap)
            elif (later := self._due(m)) > due:  # heard (or spared) since it was pushed
                heapq.heapreplace(heap, (later, next(self._pushed), m))
            else:
                return m
        return None

    def failed(self, primary: IPAddress, order: Order, now: float) -> Member | None:
        """Declared dead by the failure detector: gone, and what it said up to `order` stays buried
        (a late datagram of its does not bring it back; anything newer it says does)."""
        m = self.forget(primary)
        if m is not None:
            self._bury(primary, (*order, now))
        return m

    def expire(self, now: float, spare: Callable[[Member], float | None] | None = None) -> list[Member]:
        """Drop every node not heard for dead_interval, the first due first, but those `spare` keeps a
        while longer (it returns until when); also forget old tombstones."""
        gone = []
        while (m := self._first_due()) is not None and now >= self._due(m):
            heapq.heappop(self._deadlines)
            until = spare(m) if spare is not None else None
            if until is not None and until > now:
                m.spared = until
                self._push(m)  # due again then
            else:
                self.forget(m.primary)
                gone.append(m)
        while self._tombstones and now - next(iter(self._tombstones.values()))[2] >= self.dead_interval:
            self._tombstones.popitem(last=False)
        return gone

    def touch(self, primary: IPAddress, now: float) -> None:
        """Heard from a member by other means than its announcements (it answered our probe)."""
        m = self.members.get(primary)
        if m is not None:
            sooner = m.spared > now + self.dead_interval  # was kept past what hearing it now gives
            m.last_heard = now
            m.spared = 0.0
            if sooner:
                self._push(m)  # its entry in the heap is later than it is due now

    def next_expiry(self) -> float | None:
        m = self._first_due()
        return None if m is None else self._due(m)

    def firsthand(self) -> list[Member]:
        return [m for m in self.members.values() if m.firsthand]

    @property
    def tombstones(self) -> int:
        return len(self._tombstones)
