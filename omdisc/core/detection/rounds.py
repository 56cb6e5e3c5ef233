"""Who probes whom, round by round, and who may judge whom (docs/protocol.md, "Failure detection").

Each network of ours has a ring: this node and the members heard directly on that interface that
speak version 2 (a member known only from a SNAPSHOT counts where the SNAPSHOT says it is on the
sender's network, never when it said INDIRECT: a far node is never taken as local). Time is cut
into probe rounds of `probe_interval` by the wall clock, and each round draws the ring anew: the
members are ordered by a hash of (address, round). In each round every node probes the member
after it, so every member is probed exactly once a round, and its prober changes every round. No
choice of addresses makes a host a node's prober for more than the odd round it draws by chance:
with an address-ordered ring, two addresses just below a node were its only monitors for good.

A SUSPECT or DEAD about a member is believed from the member's prober of a recent round (its
judges: seven rounds' worth, as views and clocks differ a little), and only from a member of the
subject's own network that probes in rounds itself. A member that probes by the older,
address-ordered ring (no ROUNDS flag) judges nobody here: a host claiming to be one would choose
whom it judges by its address.
"""

from __future__ import annotations

from omdisc.core.membership import Member, Membership
from omdisc.core.protocol import FLAG_PROBES, FLAG_ROUNDS, IPAddress
from omdisc.core.records import field, record

M64 = (1 << 64) - 1
JUDGE_ROUNDS = range(-5, 2)  # the rounds, from the receiver's, whose prober may judge: a DEAD
# comes a suspicion (1.5 s) and a resend after its SUSPECT, which comes a round after its probe


def _mix(z: int) -> int:
    """splitmix64's finaliser: every input bit moves every output bit."""
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def position(address: IPAddress, round_no: int) -> int:
    """Where `address` stands on the ring of round `round_no`: every node computes the same."""
    x = int.from_bytes(address.packed, "big")
    return _mix(((x ^ (x >> 64)) & M64) ^ _mix(round_no & M64) ^ address.version)


def local(m: Member) -> bool:
    """On one of our networks, as far as we know, and probe-able: heard directly (or told so by a
    neighbour's SNAPSHOT), speaking version 2, not leaving."""
    return m.via is None and m.path_known and not m.leaving and bool(m.flags & FLAG_PROBES)


@record
class _Ring:
    """One network's ring in one round: the order and each node's place in it."""

    order: list[IPAddress]
    place: dict[IPAddress, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.place = {a: i for i, a in enumerate(self.order)}

    def after(self, node: IPAddress) -> IPAddress | None:
        i = self.place.get(node)
        return None if i is None or len(self.order) < 2 else self.order[(i + 1) % len(self.order)]

    def before(self, node: IPAddress) -> IPAddress | None:
        i = self.place.get(node)
        return None if i is None or len(self.order) < 2 else self.order[(i - 1) % len(self.order)]


class Rounds:
    """The rings of this node's networks, round by round, over the membership."""

    def __init__(self, membership: Membership) -> None:
        self.membership = membership
        self._of: tuple[int, int] = (-1, 0)  # (membership version, round) the tables below are for
        self._local: dict[str, list[IPAddress]] = {}  # interface -> its local members' primaries
        self._rings: dict[tuple[str, int], _Ring] = {}  # (interface, round)
        self.version_1 = 0  # members on our networks that speak version 1 only (no probes)
        self.address_ordered = 0  # version 2 members here that probe by the address-ordered ring

    def _refresh(self, round_no: int) -> None:
        """Remade each round (so the rings follow paths, which the map's version does not count),
        and when the map changes."""
        if self._of == (self.membership.version, round_no):
            return
        self._of = (self.membership.version, round_no)
        self._local, self._rings = {}, {}
        self.version_1 = self.address_ordered = 0
        for m in self.membership.members.values():
            if m.via is not None or not m.path_known or m.leaving:
                continue
            if not m.flags & FLAG_PROBES:
                self.version_1 += 1
                continue
            self.address_ordered += not m.flags & FLAG_ROUNDS
            self._local.setdefault(m.interface, []).append(m.primary)

    def interfaces(self, round_no: int) -> list[str]:
        self._refresh(round_no)
        return list(self._local)

    def members_on(self, interface: str, round_no: int) -> list[IPAddress]:
        self._refresh(round_no)
        return self._local.get(interface, [])

    def _ring(self, interface: str, round_no: int, me: IPAddress) -> _Ring:
        """A ring over the members as of the last _refresh (several rounds' rings are asked for at once)."""
        r = self._rings.get((interface, round_no))
        if r is None:
            nodes = sorted([me, *self._local.get(interface, [])], key=lambda a: position(a, round_no))
            r = self._rings[(interface, round_no)] = _Ring(nodes)
        return r

    def ring(self, interface: str, round_no: int, me: IPAddress) -> list[IPAddress]:
        """`interface`'s ring in round `round_no`, in probe order: each node probes the one after it."""
        self._refresh(round_no)
        return self._ring(interface, round_no, me).order

    def targets(self, me: IPAddress, round_no: int) -> list[IPAddress]:
        """Whom we probe in this round: the member after us on each of our networks' rings."""
        out = []
        for interface in self.interfaces(round_no):
            after = self._ring(interface, round_no, me).after(me)
            if after is not None and after not in out:
                out.append(after)
        return out

    def may_judge(self, judge: Member, subject: IPAddress, interface: str, me: IPAddress, now_round: int) -> bool:
        """May `judge` suspect `subject` (on `interface`), or declare it dead? Only a member of that
        network that probes in rounds, and only the subject's prober in a recent round (JUDGE_ROUNDS)."""
        self._refresh(now_round)
        if not local(judge) or judge.interface != interface or not judge.flags & FLAG_ROUNDS:
            return False
        return any(judge.primary == self._ring(interface, now_round + k, me).before(subject) for k in JUDGE_ROUNDS)
