"""The chronicle of the membership: each change applied to it, told. A peer that joins, changes,
leaves, expires or fails goes to the log (with its journal MESSAGE_ID, docs/journal.md) and to the
event handlers' Recorder; what was stale or refused, to the counters. Pure, as the engine, which
decides what to apply."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from omdisc.core import events
from omdisc.core.membership import Change, Claim, Member, Membership, Rejected, Replaced
from omdisc.core.protocol import IPAddress, MemberRecord, Order

log = logging.getLogger("omdisc.membership")


class Chronicle:
    """Applies changes to the membership and tells each one. It holds the membership, the counters
    and the event handlers' Recorder, and no history of its own: the log and the handlers keep that."""

    def __init__(self, membership: Membership, stats: Counter[str], recorder: events.Recorder) -> None:
        self.membership = membership
        self.stats = stats
        self.events = recorder

    def heard(self, claim: Claim, now: float) -> Change | Rejected | Replaced:
        """A node's own ANNOUNCE (or SNAPSHOT header): it joins, changes or is refreshed."""
        result = self.membership.heard(claim, now)
        change = result
        if isinstance(result, Replaced):
            self._replaced(result, claim)
            change = result.then
        if change is Change.STALE:
            self.stats["stale"] += 1
        elif change is Change.JOINED:
            self.events.add("join", claim.node_id, claim.addresses)
            events.log_peer(log, events.JOIN, "node #%d %s joined", claim.node_id, claim.primary)
        elif change is Change.UPDATED:
            self.events.add("update", claim.node_id, claim.addresses)
            events.log_peer(log, events.UPDATE, "node #%d %s changed: %s", claim.node_id, claim.primary,
                            ", ".join(map(str, claim.addresses)))
        return result

    def _replaced(self, result: Replaced, claim: Claim) -> None:
        gone = result.gone
        self.events.add("leave", gone.node_id, gone.addresses)
        if result.taken is None:
            self.stats["replaced"] += 1
            events.log_peer(log, events.LEAVE, "node #%d %s replaced by #%d %s (same source %s)", gone.node_id,
                            gone.primary, claim.node_id, claim.primary, claim.source)
            return
        self.stats["displaced"] += 1
        events.log_peer(log, events.LEAVE, "node #%d %s dropped: it listed %s, which #%d %s sends from", gone.node_id,
                        gone.primary, result.taken, claim.node_id, claim.primary)

    def left(self, claim: Claim, now: float) -> Change | Rejected:
        change = self.membership.left(claim, now)
        if change is Change.LEFT:
            self.events.add("leave", claim.node_id, claim.addresses)
            what = "left" if self.membership.remove_on_leave else "is leaving (kept until it expires)"
            events.log_peer(log, events.LEAVE, "node #%d %s " + what, claim.node_id, claim.primary)
        elif change is Change.STALE:
            self.stats["stale"] += 1
        return change

    def learned(self, rec: MemberRecord, now: float, via: IPAddress | None, interface: str, path_known: bool,
                told_by: IPAddress) -> None:
        """A member record of a SNAPSHOT we learn from (second-hand)."""
        change = self.membership.learned(rec, now, via, interface, path_known)
        if change is Change.JOINED:
            self.events.add("join", rec.node_id, rec.addresses)
            events.log_peer(log, events.JOIN, "node #%d %s joined (learned from %s)", rec.node_id,
                            rec.addresses[0], told_by)
        elif isinstance(change, Rejected):
            self.stats[f"rejected:{change.reason}"] += 1

    def expire(self, now: float, spare: Callable[[Member], float | None] | None) -> None:
        for m in self.membership.expire(now, spare):
            self.events.add("expire", m.node_id, m.addresses)
            events.log_peer(log, events.EXPIRE, "node #%d %s expired (not heard for %.1fs)", m.node_id,
                            m.primary, now - m.last_heard)

    def failed(self, node: IPAddress, order: Order, by: str, now: float) -> None:
        """The failure detector's verdict: out of the map now, not when it would have expired; or,
        for a node not heard for dead_interval that did not answer our check either, expired."""
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

    def forget_interfaces(self, keep: frozenset[str]) -> None:
        """Drop the nodes heard of only on interfaces we no longer use: we cannot hear them leave."""
        for m in list(self.membership.members.values()):
            if m.interface and m.interface not in keep:
                self.membership.forget(m.primary)
                self.events.add("leave", m.node_id, m.addresses)
                events.log_peer(log, events.LEAVE, "node #%d %s forgotten (interface %s no longer used)",
                                m.node_id, m.primary, m.interface)
