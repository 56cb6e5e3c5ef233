"""Rate limits and aged sets stay bounded whatever keys a peer chooses (omdisc/core/ratelimit.py)."""

from __future__ import annotations

from ipaddress import ip_address

from omdisc.core.ratelimit import AgedSet, KeyedBuckets, LogLimiter

ME = ip_address("198.18.0.1")



def test_rate_limits_and_aged_sets_stay_bounded() -> None:
    buckets = KeyedBuckets(rate=1.0, burst=2.0, max_keys=10)
    assert [buckets.take("a", 0.0) for _ in range(3)] == [True, True, False]
    assert buckets.take("a", 1.0)
    for i in range(1000):
        buckets.take(i, 2.0)
    assert len(buckets) == 10
    said = LogLimiter(period=60.0, max_keys=5)
    assert said.allow("x", 0.0) == 0 and said.allow("x", 1.0) is None and said.allow("x", 61.0) == 1
    seen = AgedSet(age=10.0, max_keys=100)
    for i in range(1000):
        seen.add(i, float(i) / 100)
    assert len(seen) == 100 and 999 in seen and 0 not in seen
