"""What is said of a map written: node id collisions, and what the kernel table has no place for
(past its size, or with no IPv4 address). Each said once while it lasts, not at every write; what
is remembered is bounded by the current table. Pure but for the log lines."""

from __future__ import annotations

import logging
from collections.abc import Callable

from omdisc.core import events
from omdisc.core.engine import LocalNode
from omdisc.core.nodeid import Collision
from omdisc.core.protocol import IPAddress
from omdisc.core.table import Entry, Table

log = logging.getLogger("omdisc")
klog = logging.getLogger("omdisc.kernel")

COLLISIONS_SAID = 8  # new collisions named per map write; the rest are counted in one line
SHOWN = 8  # entries left out, or nodes losing a collision, named in one line

CollisionKey = tuple[int, IPAddress, tuple[IPAddress, ...]]


def my_id(local: LocalNode, table: Table) -> int:
    """This node's id in the map: 0 when another node keeps it (lowest address wins)."""
    return 0 if any(local.primary in c.losers for c in table.collisions) else local.node_id


class Collisions:
    """Warns of each collision once while it lasts and tells the event handlers (`collision`).
    Only the collisions of the current table are remembered, so the set cannot grow past it."""

    def __init__(self, on_event: Callable[[str, int, tuple[IPAddress, ...]], None]) -> None:
        self.on_event = on_event
        self._reported: set[CollisionKey] = set()

    def report(self, local: LocalNode, table: Table) -> None:
        new = [c for c in table.collisions if _key(c) not in self._reported]
        for said, c in enumerate(new):
            self.on_event("collision", c.node_id, (c.owner, *c.losers))
            if said < COLLISIONS_SAID:
                _warn(local, c)
        if len(new) > COLLISIONS_SAID:
            log.warning("and %d more node id collisions (showmap --json lists every member)",
                        len(new) - COLLISIONS_SAID)
        self._reported = {_key(c) for c in table.collisions}


def _key(c: Collision) -> CollisionKey:
    return (c.node_id, c.owner, c.losers)


def _warn(local: LocalNode, c: Collision) -> None:
    left_out = local.primary in c.losers
    events.log_event(
        log, events.COLLISION,
        "node id %d is claimed by %s and %s: %s keeps it (lowest address wins); "
        "set node_id on the other%s", c.node_id, c.owner, ", ".join(map(str, c.losers[:SHOWN])), c.owner,
        " -- this node is left out of the map" if left_out else "",
        level=logging.WARNING, OMDISC_PEER=c.losers[0] if c.owner == local.primary else c.owner,
        OMDISC_COLLISION_ID=c.node_id)


class LeftOut:
    """What the kernel table cannot hold, said once per change, not at every write."""

    def __init__(self) -> None:
        self._dropped: tuple[Entry, ...] = ()
        self._ipv6_only: set[IPAddress] = set()

    def report(self, local: LocalNode, table: Table) -> None:
        if table.dropped != self._dropped:
            self._dropped = table.dropped
            if table.dropped:
                shown = ", ".join(e.text() for e in table.dropped[:SHOWN])
                more = f" and {len(table.dropped) - SHOWN} more" if len(table.dropped) > SHOWN else ""
                klog.warning("the map has %d entries; openMosix takes %d: left out %s%s",
                             len(table.entries) + len(table.dropped), len(table.entries), shown, more)
        for addr in set(table.ipv6_only) - self._ipv6_only:
            if addr in local.addresses:
                klog.info("this node (%s) is IPv6-only: the openMosix table is IPv4, it has no place there", addr)
            else:
                klog.info("node %s has no IPv4 address: listed by showmap --json, not in the kernel table", addr)
        self._ipv6_only = set(table.ipv6_only)
