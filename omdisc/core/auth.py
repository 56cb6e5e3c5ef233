"""The cluster key: signing and checking datagrams, and refusing replays. Pure: clocks injected;
the key file is read by omdisc.shell.keyfile.

With a keyring, every datagram carries an AUTH trailer (docs/protocol.md, "Authentication"):
key id (4 bytes), timestamp (8, microseconds since the epoch, strictly increasing per sender) and
HMAC-SHA256 over the header with `hops` zeroed, the body, the key id and the timestamp. A gateway
keeps it (so it forwards without breaking it) and adds a FORWARD_AUTH trailer: key id and
HMAC-SHA256 over all it sends on before that trailer, hops and VIA included.

A datagram counts only if its MACs check out with a key of the keyring and its timestamp is
- within `max_clock_skew` of our clock (a capture replayed later is too old),
- after our own start (a capture replayed after we restarted is too old, however soon),
- newer than the last one taken from its origin (a capture replayed at once is not newer).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections import OrderedDict, deque
from collections.abc import Callable

from omdisc.core.protocol import (
    HEADER_SIZE,
    PROBE_TYPES,
    TRAILER_AUTH,
    TRAILER_FORWARD_AUTH,
    IPAddress,
    Message,
    body_end,
    tlv,
    with_hops,
)
from omdisc.core.records import field, record

KEY_SIZE = 32
_AUTH = struct.Struct("!4sQ32s")
_FORWARD = struct.Struct("!4s32s")
RECENT_MACS = 64  # per origin: a SNAPSHOT of 64 parts read twice (two families, two gateways) is no replay


class KeyFileError(ValueError):
    """A key file that cannot be used; str() is the one line the user sees (exit 78)."""


def key_id(key: bytes) -> bytes:
    """Names a key on the wire without telling anything about it."""
    return hashlib.sha256(b"omdisc key id\0" + key).digest()[:4]


@record(frozen=True)
class Keyring:
    """The cluster keys in force, by id: the first signs, every one is accepted."""

    keys: tuple[bytes, ...] = field(repr=False)  # the first signs; every one is accepted
    by_id: dict[bytes, bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a keyring has at least one key")
        object.__setattr__(self, "by_id", {key_id(k): k for k in self.keys})

    def describe(self) -> str:
        """What may be said of the keyring in logs: ids, never keys."""
        return ", ".join(key_id(k).hex() for k in self.keys)


def parse_keys(text: str, source: str) -> Keyring:
    keys: list[bytes] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            key = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError(f"{source}:{n}: not a base64 key (make one with: omdiscd --gen-key)") from None
        if len(key) != KEY_SIZE:
            raise KeyFileError(f"{source}:{n}: a key is {KEY_SIZE} bytes, this one {len(key)}")
        if key not in keys:
            keys.append(key)
    if not keys:
        raise KeyFileError(f"{source}: no key in it (make one with: omdiscd --gen-key)")
    return Keyring(tuple(keys))


def _signed_part(data: bytes) -> bytes:
    """Header (hops zeroed: a gateway changes it) and body: what the originator's MAC covers."""
    return with_hops(data[: body_end(data)], 0)


def _trailer(msg: Message, kind: int) -> bytes | None:
    return next((v for t, v in msg.trailer if t == kind), None)


@record(frozen=True)
class Verdict:
    """What verify() found: why not to take the datagram ("" to take it), and what take() records."""

    reason: str
    skew_us: int = 0  # with "skew": how far its clock is from ours
    origin: IPAddress | None = None
    ts: int = 0
    mac: bytes = b""
    probe: bool = False  # a PING, ACK or PING_REQ: its own order (see _latest)


class Authenticator:
    def __init__(self, keyring: Keyring, wall: Callable[[], float], max_skew: float, mono: Callable[[], float],
                 max_origins: int = 8192) -> None:
        """`wall`: seconds since the epoch (timestamps); `mono`: a clock never set back (our start's
        place on `wall`, should that be set back)."""
        self.keyring = keyring
        self.wall = wall
        self.mono = mono
        self.max_skew = max_skew
        self.started_us = int(wall() * 1e6)
        self._mono_start = mono()
        self.max_origins = max_origins
        self._last_sent = 0
        # (origin, probe) -> (newest timestamp taken, MACs of the last few taken). Probes (unicast) have
        # an order of their own: they reach another socket than the multicast, which the loop may read
        # first, so a probe sent after an ANNOUNCE may be taken before it, and must not make it a replay.
        # A copy of one of those (the
        # other address family, another gateway) is a duplicate; anything else not newer, a replay
        self._latest: OrderedDict[tuple[IPAddress, bool], tuple[int, deque[bytes]]] = OrderedDict()

    # --- sending -----------------------------------------------------------------------------

    def sign(self, data: bytes) -> bytes:
        key = self.keyring.keys[0]
        kid = key_id(key)
        now_us = int(self.wall() * 1e6)
        if self._last_sent > now_us + self.max_skew * 1e6:
            self._last_sent = now_us - 1  # the clock was set back (NTP): what we stamped ahead nobody took
        self._last_sent = ts = max(now_us, self._last_sent + 1)
        mac = hmac.new(key, _signed_part(data) + kid + ts.to_bytes(8, "big"), hashlib.sha256).digest()
        return data + tlv(TRAILER_AUTH, _AUTH.pack(kid, ts, mac))

    def sign_forward(self, data: bytes) -> bytes:
        """A gateway's own MAC over what it sends on: hops and VIA cannot be forged without the key."""
        key = self.keyring.keys[0]
        kid = key_id(key)
        mac = hmac.new(key, data, hashlib.sha256).digest()
        return data + tlv(TRAILER_FORWARD_AUTH, _FORWARD.pack(kid, mac))

    # --- receiving ---------------------------------------------------------------------------

    def verify(self, data: bytes, msg: Message) -> Verdict:
        """Whether a datagram may be taken: its MACs check out with a key of ours and its timestamp
        is in the window and newer than what we took from its origin. Records nothing: take() does,
        once every other check has passed too (a copy dropped for another reason must not make the
        good copy a duplicate). Reasons: unsigned, unknown-key, bad, skew, replay, duplicate."""
        auth = _trailer(msg, TRAILER_AUTH)
        if auth is None or len(auth) != _AUTH.size:
            return Verdict("unsigned")
        kid, ts, mac = _AUTH.unpack(auth)
        key = self.keyring.by_id.get(kid)
        if key is None:
            return Verdict("unknown-key")
        want = hmac.new(key, _signed_part(data) + kid + ts.to_bytes(8, "big"), hashlib.sha256).digest()
        if not hmac.compare_digest(mac, want):
            return Verdict("bad")
        if msg.hops and not self._forward_ok(data, msg):
            return Verdict("bad")
        now_us = int(self.wall() * 1e6)
        if abs(ts - now_us) > self.max_skew * 1e6:
            return Verdict("skew", ts - now_us)
        probe = msg.type in PROBE_TYPES
        return Verdict(self._freshness((msg.origin, probe), ts, mac, now_us), 0, msg.origin, ts, mac, probe)

    def _forward_ok(self, data: bytes, msg: Message) -> bool:
        fwd = _trailer(msg, TRAILER_FORWARD_AUTH)
        if fwd is None or len(fwd) != _FORWARD.size:
            return False
        kid, mac = _FORWARD.unpack(fwd)
        key = self.keyring.by_id.get(kid)
        last = tlv(TRAILER_FORWARD_AUTH, fwd)
        signed = data[: len(data) - len(last)]
        if key is None or not data.endswith(last) or len(signed) < HEADER_SIZE:
            return False
        return hmac.compare_digest(mac, hmac.new(key, signed, hashlib.sha256).digest())

    def _freshness(self, origin: tuple[IPAddress, bool], ts: int, mac: bytes, now_us: int) -> str:
        # our start as this clock now has it: a clock set back after we started moves it back too
        self.started_us = min(self.started_us, now_us - int((self.mono() - self._mono_start) * 1e6))
        if ts < self.started_us:
            return "replay"  # sent before we started: a capture, whatever our memory lost
        newest, recent = self._latest.get(origin, (0, ()))
        if mac in recent:
            return "duplicate"
        return "replay" if ts <= newest else ""

    def take(self, verdict: Verdict) -> None:
        """The datagram of `verdict` was taken: from its origin only newer ones count now."""
        assert verdict.origin is not None and not verdict.reason
        key = (verdict.origin, verdict.probe)
        _, recent = self._latest.pop(key, (0, deque(maxlen=RECENT_MACS)))
        recent.append(verdict.mac)
        self._latest[key] = (verdict.ts, recent)
        while len(self._latest) > self.max_origins:  # beyond: the skew window still bounds a replay
            self._latest.popitem(last=False)
