"""Rate limits: token buckets keyed by a peer, and log lines said once per key and period. Pure:
every call takes `now`, and every table here has a bound, since peers choose the keys."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from omdisc.core.records import record


@record
class _Bucket:
    """One key's tokens, as of `at`."""

    tokens: float
    at: float


class KeyedBuckets:
    """A token bucket per key (`rate` a second, up to `burst`), for at most `max_keys` keys: the
    least recently used key is forgotten first, which only ever makes a limit more generous."""

    def __init__(self, rate: float, burst: float, max_keys: int = 1024) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable, now: float) -> bool:
        """One token for `key`, if it has one."""
        b = self._buckets.pop(key, None) or _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
        b.at = now
        self._buckets[key] = b
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        if b.tokens < 1:
            return False
        b.tokens -= 1
        return True


class LogLimiter:
    """Say a thing once per `period` per key; count what was left unsaid in between.

    allow() returns None while the key is muted, else how many were muted since it was last said.
    """

    def __init__(self, period: float = 60.0, max_keys: int = 256) -> None:
        self.period = period
        self.max_keys = max_keys
        self._said: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()  # key -> (when said, muted since)

    def allow(self, key: Hashable, now: float) -> int | None:
        when, muted = self._said.get(key, (float("-inf"), 0))
        if now - when < self.period:
            self._said[key] = (when, muted + 1)
            return None
        self._said.pop(key, None)
        self._said[key] = (now, 0)
        while len(self._said) > self.max_keys:
            self._said.popitem(last=False)
        return muted


def muted_note(muted: int) -> str:
    """What a line said again after LogLimiter.allow() adds about those it kept quiet."""
    return f" ({muted} more like it since the last such line)" if muted else ""


class AgedSet:
    """Keys remembered for `age` seconds, at most `max_keys` of them (the oldest go first)."""

    def __init__(self, age: float, max_keys: int) -> None:
        self.age = age
        self.max_keys = max_keys
        self._items: OrderedDict[Hashable, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def add(self, key: Hashable, now: float) -> None:
        self._items.pop(key, None)
        self._items[key] = now
        self.prune(now)

    def prune(self, now: float) -> None:
        oldest_allowed = now - self.age
        while self._items and (len(self._items) > self.max_keys or next(iter(self._items.values())) < oldest_allowed):
            self._items.popitem(last=False)
