"""What a datagram must show before it counts (docs/protocol.md, "Threats"), and how what fails
is counted and said: once a minute per reason, naming the source. Pure: the clock is injected."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from omdisc.core import gateway
from omdisc.core.auth import Authenticator, Verdict
from omdisc.core.links import Links
from omdisc.core.membership import Membership
from omdisc.core.protocol import IPAddress, Message
from omdisc.core.ratelimit import KeyedBuckets, LogLimiter, muted_note

netlog = logging.getLogger("omdisc.net")
log = logging.getLogger("omdisc.membership")

REJECTIONS = {
    "source": "its UDP source is not one of the addresses it claims",
    "offlink": "it says its originator sent it (hops 0), but none of the addresses it claims is on this link",
    "via": "it says it was forwarded, but not by a gateway heard directly on this interface",
    "future": "its incarnation is further ahead of our clock than max_incarnation_ahead",
    "foreign": "it speaks for a known node none of whose addresses is its source",
    "full": "the membership is full (max_nodes)",
    "conflict": "it claims an address another node holds",
    "path": "it says it was forwarded by a gateway, about a node heard directly here",
}


AUTH_FAILURES = {
    "unsigned": "it is not signed, and this node has a cluster key",
    "unknown-key": "it is signed with a key that is not in our key file",
    "bad": "its signature does not match (tampered with, or forwarded by a host without the key)",
    "replay": "it is a replay (not newer than what this node took from its origin, or sent before we started)",
}


class Guard:
    def __init__(self, stats: Counter[str], wall: Callable[[], float], max_ahead: float, refute_rate: float) -> None:
        self.stats = stats
        self.wall = wall  # seconds since the epoch: only to judge incarnations (start times)
        self.max_ahead = max_ahead
        self._refutes = KeyedBuckets(refute_rate, 2.0)
        self._said = LogLimiter()

    def from_the_future(self, incarnation: int) -> bool:
        return incarnation > (self.wall() + self.max_ahead) * 1e6

    def check(self, msg: Message, source: IPAddress | None, interface: str, membership: Membership,
              own: tuple[IPAddress, ...], links: Links | None = None) -> tuple[IPAddress | None, str]:
        """The forwarding gateway (hops above 0) and why the datagram is not to be believed ("" if it is).
        `source`: None when it is not checked (a signed datagram); `links`: None when a datagram
        sent directly may come from another subnet (TTL mode: multicast routers carry it)."""
        gw = None
        if msg.hops == 0:
            if source is not None and source not in msg.addresses:
                return None, "source"
            if links is not None and not links.on_link(interface, msg.addresses):
                return None, "offlink"  # another host carried it here: signed or not, it was not sent here
        else:
            gw = gateway.forwarding_gateway(msg, source, interface, membership)
            if gw is None:
                return None, "via"
        if self.from_the_future(msg.incarnation):
            return gw, "future"
        if any(a in own for a in msg.addresses):
            return gw, "conflict"
        return gw, ""

    def authentic(self, auth: Authenticator, data: bytes, msg: Message, source: IPAddress | None, interface: str,
                  now: float) -> Verdict | None:
        """The cluster key's verdict on a datagram, for Authenticator.take once every other check has
        passed too; None: not to be taken (counted, and said here)."""
        verdict = auth.verify(data, msg)
        if not verdict.reason:
            return verdict
        if verdict.reason == "duplicate":  # a copy of what we took (the other family, another gateway)
            self.stats["auth:duplicate"] += 1
        else:
            self.auth_failed(verdict.reason, msg, source, interface, verdict.skew_us, auth.max_skew, now)
        return None

    def reject(self, reason: str, msg: Message, source: IPAddress | None, interface: str, now: float) -> None:
        self.stats["rejected"] += 1
        self.stats[f"rejected:{reason}"] += 1
        muted = self._said.allow(("reject", reason), now)
        if muted is not None:
            netlog.warning("dropped %s for node #%d %s from %s on %s: %s%s", msg.type.name, msg.node_id,
                           msg.origin, source or "?", interface or "?", REJECTIONS.get(reason, reason),
                           muted_note(muted))

    def auth_failed(self, reason: str, msg: Message, source: IPAddress | None, interface: str, skew_us: int,
                    max_skew: float, now: float) -> None:
        """A datagram the cluster key does not vouch for: counted, and said once a minute per reason
        (a clock out of the window once per peer), naming the source; never a key."""
        self.stats["auth"] += 1
        self.stats[f"auth:{reason}"] += 1
        key = ("auth", reason, source if reason == "skew" else None)
        muted = self._said.allow(key, now)
        if muted is None:
            return
        more = muted_note(muted)
        if reason == "skew":
            netlog.warning("dropped %s from %s on %s: its clock is %+.1fs off ours, more than max_clock_skew "
                           "(%gs); with a cluster key every node's clock must be synchronised (NTP)%s",
                           msg.type.name, source or "?", interface or "?", skew_us / 1e6, max_skew, more)
        else:
            netlog.warning("dropped %s for node #%d %s from %s on %s: %s%s", msg.type.name, msg.node_id, msg.origin,
                           source or "?", interface or "?", AUTH_FAILURES.get(reason, reason), more)

    def limit_hit(self, what: str, detail: str, now: float) -> None:
        """A bound reached: one line a minute per bound, with how many times it was hit meanwhile."""
        self.stats[what] += 1
        muted = self._said.allow(("limit", what), now)
        if muted is not None:
            netlog.warning("%s: %s%s", what, detail, muted_note(muted))

    def may_refute(self, what: str, msg: Message, source: IPAddress | None, interface: str, now: float) -> bool:
        """Say (once a minute) that someone spoke in our name; True if a refutation may go out now
        (at most `refute_rate` a second: a flood of claims is not echoed one for one)."""
        if self._said.allow(("refute", what), now) is not None:
            log.warning("%s from %s on %s (incarnation %d): refuting it", what, source or "?", interface or "?",
                        msg.incarnation)
        return self._refutes.take("refute", now)
