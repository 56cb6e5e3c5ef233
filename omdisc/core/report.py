"""What state.json (showmap --json, --members) and STATUS= report beyond the kernel table: this
node, every member as we see it, the gateways, the counters. Pure; Engine.state() hands it the
pieces, so this module needs nothing above the membership and the failure detector's ring."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from omdisc.core import gateway
from omdisc.core.detection.ring import Ring
from omdisc.core.membership import Member, Membership
from omdisc.core.protocol import FLAG_GATEWAY, FLAG_PROBES

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any


def acked_age(ring: Ring | None, m: Member, now: float) -> float | None:
    """Seconds since it last answered one of our probes (None: we do not probe it)."""
    at = ring.acked_at(m.primary) if ring else None
    return None if at is None else round(now - at, 3)


def member_states(membership: Membership, ring: Ring | None, now: float) -> Iterator[dict[str, Any]]:
    """Every member's dict in showmap's order, each made as it is taken."""
    for m in sorted(membership.members.values(), key=lambda m: (m.node_id, str(m.primary))):
        yield {
            "id": m.node_id,
            "addresses": [str(a) for a in m.addresses],
            "incarnation": m.incarnation,
            "age": round(now - m.last_heard, 3),
            "via": str(m.via) if m.via else None,
            "gateway": bool(m.flags & FLAG_GATEWAY),
            "leaving": m.leaving,
            "firsthand": m.firsthand,
            "state": ring.state_of(m) if ring else ("leaving" if m.leaving else "alive"),
            "heard": "snapshot" if not m.firsthand else "gateway" if m.via else "direct",
            "probes": bool(m.flags & FLAG_PROBES),
            "acked": acked_age(ring, m, now),
        }


def state(me: Member, joining: bool, membership: Membership, ring: Ring | None, stats: Counter[str],
          now: float, lazy_members: bool = False) -> dict[str, Any]:
    """`me`: this node as a member; `joining`: still learning from every SNAPSHOT (JOIN_WINDOW);
    `ring`: the failure detector's (None: no probes). With `lazy_members`, the members are an
    iterator of their dicts, not a list: shell/statefile.py's encode_state then never holds all of them at
    once, nor the memory they took after the first write."""
    members = member_states(membership, ring, now)
    return {
        "node_id": me.node_id,
        "addresses": [str(a) for a in me.addresses],
        "incarnation": me.incarnation,
        "joining": joining,
        "probe_health": ring.health if ring else None,  # 0: judging at full speed
        "members": members if lazy_members else list(members),
        "gateways": gateway.report(membership),
        "stats": dict(sorted(stats.items())),
    }
