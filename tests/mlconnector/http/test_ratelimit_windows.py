"""The shared rate limiter with several windows per key: every window is enforced at once,
in memory (the embedded default) and through Redis (the fleet), and a vendor's report that its
window is spent pauses the key for every caller."""

from __future__ import annotations

import time

import pytest

from mlconnector.http.ratelimit import QuotaHeaders, RateLimit, RateLimiter

SHORT = RateLimit(3, 0.3, margin=0)  # a spike window
LONG = RateLimit(5, 1.5, margin=0)  # a longer quota


def _admitted_within(limiter: RateLimiter, key: str, seconds: float) -> list[float]:
    started, stamps = time.monotonic(), []
    while time.monotonic() - started < seconds:
        limiter.acquire(key, (SHORT, LONG))
        stamps.append(time.monotonic() - started)
    return stamps


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest, redis_url: str) -> RateLimiter:
    made = RateLimiter("memory://" if request.param == "memory" else redis_url)
    made.clear("windows-test", (SHORT, LONG))
    return made


def test_every_window_holds_at_once(limiter: RateLimiter) -> None:
    stamps = _admitted_within(limiter, "windows-test", 1.2)
    # The short window alone would admit 3 per 0.3 s (12+ in 1.2 s); the long one caps it at 5.
    assert len([t for t in stamps if t < 1.2]) == 5, stamps
    assert stamps[5] >= 1.45  # the sixth waited for the long window
    assert max(sum(1 for t in stamps if s <= t < s + 0.3) for s in stamps) <= 3
    assert stamps[3] >= 0.29  # the fourth call waited for the short window


def test_one_window_keeps_the_key_it_always_had(limiter: RateLimiter) -> None:
    limiter.clear("one-window", SHORT)
    for _ in range(3):
        assert limiter.acquire("one-window", SHORT) < 0.05
    assert limiter.acquire("one-window", [SHORT]) >= 0.2  # a list of one is the same window


def test_a_pause_holds_every_caller_until_it_ends(limiter: RateLimiter) -> None:
    limiter.pause("windows-test", 0.4)
    waited = limiter.acquire("windows-test", (SHORT, LONG))
    assert 0.3 <= waited < 1.0, waited


def test_quota_headers_pause_only_when_the_window_is_spent() -> None:
    quota = QuotaHeaders("X-Rate-Limit-Remaining", "X-Rate-Limit-Reset")
    assert quota.pause_seconds({"X-Rate-Limit-Remaining": "3", "X-Rate-Limit-Reset": "1000"}, now=990) == 0
    assert quota.pause_seconds({"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": "1000"}, now=990) == 10
    assert quota.pause_seconds({"X-Rate-Limit-Remaining": "0"}, now=990) == 0
    assert quota.pause_seconds({}, now=990) == 0
