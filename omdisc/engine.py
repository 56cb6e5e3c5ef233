"""The discovery engine: what to send and what the cluster looks like, given what was received and
when. Sans-IO: no sockets, no clock of its own, randomness injected. The daemon loop feeds it
datagrams and timer ticks; tests do the same without a network.

Join protocol (docs/protocol.md): a starting node multicasts ANNOUNCE+JOIN. Every node that hears
it schedules a SNAPSHOT of its membership after a random delay; a node that hears another's
SNAPSHOT already covering everything it knows cancels its own (suppression, as in mDNS and SRM).
So a join costs about two datagrams however large the cluster.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from . import events
from .membership import Change, Claim, Member, Membership
from .protocol import (
    FLAG_GATEWAY,
    FLAG_JOIN,
    MAX_HOPS,
    DecodeError,
    IPAddress,
    Message,
    MsgType,
    decode,
    encode,
    forwarded,
    snapshot_messages,
    via,
)
from .table import Table, build_table

log = logging.getLogger("omdisc.membership")
netlog = logging.getLogger("omdisc.net")
gwlog = logging.getLogger("omdisc.gateway")

SEEN_MAX = 8192  # message ids a gateway remembers, so it forwards each message once


@dataclass(frozen=True)
class Settings:
    announce_interval: float = 10.0
    dead_interval: float = 35.0
    remove_on_leave: bool = True
    # A SNAPSHOT answers a JOIN after reply_delay_min + uniform(0, reply_spread_per_node x nodes known,
    # at most reply_spread_max). Spreading over more time as the cluster grows keeps the first answer
    # as quick (about min + spread_per_node) and the chance of a duplicate answer as small at any size.
    reply_delay_min: float = 0.002
    reply_spread_per_node: float = 0.010
    reply_spread_max: float = 1.0
    join_retries: tuple[float, ...] = (0.25, 1.0)  # re-send JOIN at these delays until answered
    announce_jitter: float = 0.1  # each period is announce_interval x (1 +- jitter)
    seen_age: float = 60.0  # how long a gateway remembers a forwarded message id


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


@dataclass
class _PendingReply:
    due: float
    interface: str  # where the JOIN came in: the answer goes there only
    covered: set[IPAddress] = field(default_factory=set)


class Engine:
    def __init__(self, local: LocalNode, incarnation: int, settings: Settings, rng: random.Random) -> None:
        self.local = local
        self.incarnation = incarnation
        self.settings = settings
        self.rng = rng
        self.membership = Membership(settings.dead_interval, settings.remove_on_leave)
        self.stats: Counter[str] = Counter()
        self._seq = 0
        self._local_version = 0
        self._next_announce = float("inf")
        self._join_retries: list[float] = []
        self._replies: dict[tuple[IPAddress, int], _PendingReply] = {}
        # Gateway routing (seed section 3): interfaces between which we forward; empty: none.
        self.route_between: frozenset[str] = frozenset()
        self._seen: OrderedDict[tuple[IPAddress, int, int], float] = OrderedDict()

    # --- what the cluster looks like ---------------------------------------------------------

    @property
    def map_version(self) -> int:
        return self.membership.version + self._local_version

    def nodes(self) -> list[Member]:
        me = Member(self.local.node_id, self.local.addresses, self.incarnation, self._seq, 0.0, self.local.flags)
        return [me, *self.membership.members.values()]

    def table(self) -> Table:
        return build_table(self.nodes())

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, now: float) -> list[Outgoing]:
        self._schedule_announce(now)
        return self.rejoin(now)

    def shutdown(self) -> list[Outgoing]:
        return [self._send(self._message(MsgType.LEAVE))]

    def reconfigure(self, settings: Settings, now: float) -> None:
        """New intervals (SIGHUP); the membership is kept."""
        self.settings = settings
        self.membership.dead_interval = settings.dead_interval
        self.membership.remove_on_leave = settings.remove_on_leave
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
                events.log_peer(log, events.LEAVE, "node #%d %s forgotten (interface %s no longer used)",
                                m.node_id, m.primary, m.interface)

    def rejoin(self, now: float) -> list[Outgoing]:
        """JOIN again (new addresses, new sockets): the cluster answers with what it knows."""
        self._join_retries = [now + d for d in self.settings.join_retries]
        return [self._send(self._message(MsgType.ANNOUNCE, FLAG_JOIN))]

    # --- input -------------------------------------------------------------------------------

    def receive(self, data: bytes, now: float, interface: str = "") -> list[Outgoing]:
        """One datagram, arrived on `interface`. Returns what to forward, if we are a gateway."""
        self.stats["received"] += 1
        try:
            msg = decode(data)
        except DecodeError as e:
            self.stats["malformed"] += 1
            self.stats[f"malformed:{e.kind}"] += 1
            netlog.debug("dropped malformed datagram on %s (%s)", interface or "?", e)
            return []
        if msg.origin in self.local.addresses:
            self.stats["own"] += 1  # our own, looped back or forwarded back by another gateway
            return []
        out = self._forward(data, msg, interface, now)
        gateway = via(msg) if msg.hops else None
        claim = Claim(msg.node_id, msg.addresses, msg.incarnation, msg.seq, msg.flags, gateway, interface)
        if msg.type is MsgType.LEAVE:
            self._on_leave(claim, now)
        else:
            self._on_heard(claim, now)
            if msg.type is MsgType.ANNOUNCE and msg.flags & FLAG_JOIN:
                self._on_join(msg, interface, now)
            elif msg.type is MsgType.SNAPSHOT:
                self._on_snapshot(msg, claim, now)
        return out

    def _forward(self, data: bytes, msg: Message, interface: str, now: float) -> list[Outgoing]:
        """Send a message on to our other networks, once (docs/protocol.md, "Gateways").

        The seen-cache makes every gateway forward a message at most once, whatever the loops
        between networks; the hop count bounds what an overflowing cache could let through.
        """
        if interface not in self.route_between:
            return []
        key = msg.message_id
        if key in self._seen:
            self.stats["forward_duplicates"] += 1
            return []
        self._seen[key] = now
        self._prune_seen(now)
        if msg.hops + 1 > MAX_HOPS:
            self.stats["forward_hop_limit"] += 1
            return []
        others = self.route_between - {interface}
        self.stats["forwarded"] += 1
        gwlog.debug("forward %s #%d from %s to %s (hops %d)", msg.type.name, msg.seq, msg.origin,
                    ",".join(sorted(others)), msg.hops + 1)
        return [Outgoing(forwarded(data, msg, self.local.primary), frozenset(others))]

    def _on_heard(self, claim: Claim, now: float) -> None:
        change = self.membership.heard(claim, now)
        if change is Change.STALE:
            self.stats["stale"] += 1
        elif change is Change.JOINED:
            events.log_peer(log, events.JOIN, "node #%d %s joined", claim.node_id, claim.primary)
        elif change is Change.UPDATED:
            events.log_peer(log, events.UPDATE, "node #%d %s changed: %s", claim.node_id, claim.primary,
                            ", ".join(map(str, claim.addresses)))

    def _on_leave(self, claim: Claim, now: float) -> None:
        if self.membership.left(claim, now) is Change.LEFT:
            what = "left" if self.settings.remove_on_leave else "is leaving (kept until it expires)"
            events.log_peer(log, events.LEAVE, "node #%d %s " + what, claim.node_id, claim.primary)
        else:
            self.stats["stale"] += 1

    def _on_join(self, msg: Message, interface: str, now: float) -> None:
        key = (msg.origin, msg.incarnation)
        if key not in self._replies:
            st = self.settings
            spread = min(st.reply_spread_max, st.reply_spread_per_node * (len(self.membership) + 1))
            delay = st.reply_delay_min + self.rng.uniform(0, spread)
            self._replies[key] = _PendingReply(now + delay, interface, {msg.origin})

    def _on_snapshot(self, msg: Message, claim: Claim, now: float) -> None:
        snap = msg.snapshot
        assert snap is not None
        for rec in snap.members:
            if rec.addresses[0] in self.local.addresses:
                continue
            change = self.membership.learned(rec, now, claim.via, claim.interface)
            if change is Change.JOINED:
                events.log_peer(log, events.JOIN, "node #%d %s joined (learned from %s)", rec.node_id,
                                rec.addresses[0], msg.origin)
        if snap.reply_to == self.local.primary and snap.reply_to_incarnation == self.incarnation:
            self._join_retries.clear()
        pending = self._replies.get((snap.reply_to, snap.reply_to_incarnation))
        if pending is not None:
            pending.covered.add(msg.origin)
            pending.covered.update(rec.addresses[0] for rec in snap.members)
            if self._known() <= pending.covered:
                del self._replies[(snap.reply_to, snap.reply_to_incarnation)]
                self.stats["suppressed"] += 1

    def _known(self) -> set[IPAddress]:
        return {self.local.primary, *self.membership.members}

    # --- timers ------------------------------------------------------------------------------

    @property
    def next_announce(self) -> float:
        return self._next_announce

    def next_deadline(self) -> float:
        times = [self._next_announce, *self._join_retries[:1], *(p.due for p in self._replies.values())]
        expiry = self.membership.next_expiry()
        if expiry is not None:
            times.append(expiry)
        return min(times)

    def tick(self, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        if now >= self._next_announce:
            out.append(self._send(self._message(MsgType.ANNOUNCE)))
            self._schedule_announce(now)
        if self._join_retries and now >= self._join_retries[0]:
            self._join_retries.pop(0)
            self.stats["join_retries"] += 1
            out.append(self._send(self._message(MsgType.ANNOUNCE, FLAG_JOIN)))
        for key, pending in list(self._replies.items()):
            if now >= pending.due:
                del self._replies[key]
                out += self._snapshot(key, pending.interface, now)
        for m in self.membership.expire(now):
            events.log_peer(log, events.EXPIRE, "node #%d %s expired (not heard for %.1fs)", m.node_id,
                            m.primary, now - m.last_heard)
        return out

    def _schedule_announce(self, now: float) -> None:
        j = self.settings.announce_jitter
        self._next_announce = now + self.settings.announce_interval * self.rng.uniform(1 - j, 1 + j)

    # --- output ------------------------------------------------------------------------------

    def _message(self, kind: MsgType, flags: int = 0) -> Message:
        self._seq += 1
        return Message(kind, self.local.node_id, self.incarnation, self._seq, self.local.addresses,
                       flags | self.local.flags)

    def _snapshot(self, key: tuple[IPAddress, int], interface: str, now: float) -> list[Outgoing]:
        """Answer a JOIN on the network it came from. A host that does not route between its
        networks tells each only of the nodes it heard there: it must not join them itself."""
        joiner, incarnation = key
        records = self.membership.records(now, exclude=joiner, interface=None if self.route_between else interface)
        base = self._message(MsgType.SNAPSHOT)
        messages = snapshot_messages(base, joiner, incarnation, records)
        self._seq = messages[-1].seq
        self.stats["snapshots"] += 1
        where = frozenset({interface}) if interface else None
        return [self._send(m, where) for m in messages]

    def _send(self, msg: Message, interfaces: frozenset[str] | None = None) -> Outgoing:
        self.stats["sent"] += 1
        self.stats[f"sent:{msg.type.name}"] += 1
        return Outgoing(encode(msg), interfaces)

    def _prune_seen(self, now: float) -> None:
        oldest_allowed = now - self.settings.seen_age
        while self._seen and (len(self._seen) > SEEN_MAX or next(iter(self._seen.values())) < oldest_allowed):
            self._seen.popitem(last=False)

    # --- reporting ---------------------------------------------------------------------------

    def gateways(self) -> list[dict[str, Any]]:
        """Which node is our gateway to which nodes (seed section 7: gateway discovery)."""
        reached: dict[IPAddress, list[Member]] = {}
        for m in self.membership.members.values():
            if m.via is not None:
                reached.setdefault(m.via, []).append(m)
        out = []
        for gw_primary, members in sorted(reached.items(), key=lambda i: str(i[0])):
            gw = self.membership.members.get(gw_primary)
            out.append({
                "id": gw.node_id if gw else None,
                "address": str(gw_primary),
                "addresses": [str(a) for a in gw.addresses] if gw else [str(gw_primary)],
                "reaches": sorted(str(m.primary) for m in members),
            })
        return out

    def state(self, now: float) -> dict[str, Any]:
        """What showmap --json and STATUS= report beyond the kernel table."""
        members = sorted(self.membership.members.values(), key=lambda m: (m.node_id, str(m.primary)))
        return {
            "node_id": self.local.node_id,
            "addresses": [str(a) for a in self.local.addresses],
            "incarnation": self.incarnation,
            "members": [
                {
                    "id": m.node_id,
                    "addresses": [str(a) for a in m.addresses],
                    "age": round(now - m.last_heard, 3),
                    "via": str(m.via) if m.via else None,
                    "gateway": bool(m.flags & FLAG_GATEWAY),
                    "leaving": m.leaving,
                }
                for m in members
            ],
            "gateways": self.gateways(),
            "stats": dict(sorted(self.stats.items())),
        }

