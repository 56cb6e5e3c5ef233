"""Gateways (seed sections 3 and 7): forwarding announcements between networks once, checking what
was forwarded to us, and telling which gateway reaches which nodes. Pure.

docs/protocol.md, "Gateways", is the specification.
"""

from __future__ import annotations

import logging
from collections import Counter

from omdisc.core.auth import Authenticator
from omdisc.core.membership import Member, Membership
from omdisc.core.protocol import FLAG_GATEWAY, MAX_DATAGRAM, MAX_HOPS, IPAddress, Message, forwarded, via
from omdisc.core.ratelimit import AgedSet

TYPE_CHECKING = False  # typing is mypy's only: never loaded at run time (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("omdisc.gateway")

SEEN_MAX = 8192  # message ids a gateway remembers, so it forwards each message once
# A gateway greets a network where a node JOINed with its own ANNOUNCE: JOINs this close together
# share one, and a flood of JOINs gets at most one every GREET_GAP seconds per interface.
GREET_DELAY, GREET_GAP = 0.01, 0.1


class Forwarder:
    def __init__(self, stats: Counter[str], seen_age: float = 60.0) -> None:
        self.stats = stats
        self.route_between: frozenset[str] = frozenset()  # interfaces we forward between; empty: none
        self._seen = AgedSet(seen_age, SEEN_MAX)
        self._greet: dict[str, float] = {}  # interface -> when to ANNOUNCE there (a node JOINed)
        self._greeted: dict[str, float] = {}  # interface -> when we last did

    def joined(self, interface: str, now: float) -> None:
        """A node JOINed on `interface` (directly, not forwarded). Forwards through us are believed
        only from a gateway heard first-hand (forwarding_gateway), and the SNAPSHOT that answers
        the joiner is often a neighbour's, which the joiner only learns us from: without our own
        word the joiner would refuse the far side until our next announcement. Keys: our
        interfaces only."""
        if interface in self.route_between and interface not in self._greet:
            self._greet[interface] = max(now + GREET_DELAY, self._greeted.get(interface, -GREET_GAP) + GREET_GAP)

    def greet_due(self) -> float | None:
        return min(self._greet.values(), default=None)

    def greetings(self, now: float) -> list[str]:
        """The interfaces to ANNOUNCE on now."""
        due = [i for i, t in self._greet.items() if now >= t]
        for i in due:
            del self._greet[i]
            self._greeted[i] = now
        return due

    def forward(self, data: bytes, msg: Message, interface: str, gateway: IPAddress, now: float,
                auth: Authenticator | None = None) -> tuple[bytes, frozenset[str]] | None:
        """What to send on, and where: once per message id, whatever the loops between networks;
        the hop count bounds what an overflowing seen-cache could let through. With the cluster
        key, signed by us as the gateway (Authenticator.sign_forward)."""
        if interface not in self.route_between:
            return None
        key = msg.message_id
        if key in self._seen:
            self.stats["forward_duplicates"] += 1
            return None
        self._seen.add(key, now)
        if msg.hops + 1 > MAX_HOPS:
            self.stats["forward_hop_limit"] += 1
            return None
        out = forwarded(data, msg, gateway)
        if out is None:
            self.stats["forward_oversized"] += 1
            return None
        others = self.route_between - {interface}
        self.stats["forwarded"] += 1
        log.debug("forward %s #%d from %s to %s (hops %d)", msg.type.name, msg.seq, msg.origin,
                  ",".join(sorted(others)), msg.hops + 1)
        if auth is not None:
            out = auth.sign_forward(out)
            if len(out) > MAX_DATAGRAM:
                self.stats["forward_oversized"] += 1
                return None
        return out, others


def forwarding_gateway(msg: Message, source: IPAddress | None, interface: str,
                       membership: Membership) -> IPAddress | None:
    """The gateway that forwarded `msg` (hops above 0) to us, if we may believe it: its VIA names
    a gateway that is a member heard first-hand and directly on this interface, and the datagram
    came from one of that gateway's addresses. None: not to be believed."""
    gw_primary = via(msg)
    gw = membership.members.get(gw_primary) if gw_primary is not None else None
    if gw is None or not gw.firsthand or gw.via is not None or gw.interface != interface:
        return None
    if not gw.flags & FLAG_GATEWAY or (source is not None and source not in gw.addresses):
        return None
    return gw.primary


def reached_through(m: Member, members: dict[IPAddress, Member]) -> IPAddress | None:
    """The gateway through which we reach `m`, if known; never `m` itself."""
    if m.via is None or not m.path_known or m.via in m.addresses or m.via not in members:
        return None
    return m.via


def report(membership: Membership) -> list[dict[str, Any]]:
    """Which node is our gateway to which nodes (seed section 7: gateway discovery)."""
    members = membership.members
    reached: dict[IPAddress, list[Member]] = {}
    for m in members.values():
        gw = reached_through(m, members)
        if gw is not None:
            reached.setdefault(gw, []).append(m)
    out = []
    for gw_primary, nodes in sorted(reached.items(), key=lambda i: str(i[0])):
        node = members[gw_primary]
        out.append({
            "id": node.node_id,
            "address": str(gw_primary),
            "addresses": [str(a) for a in node.addresses],
            "reaches": sorted(str(m.primary) for m in nodes),
        })
    return out
