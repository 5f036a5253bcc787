"""A rate limiter shared by the fleet, so all workers together stay under a vendor's limit.

Built on `limits` (the library behind Flask-Limiter): its moving-window strategy keeps the
exact timestamps of the last N calls in Redis with one Lua call per acquire, so two worker
hosts see one window and never exceed N calls in any window, which is what a vendor's
"60 requests per second" means. In the embedded default the same strategy runs on the
library's in-memory storage. A blocked caller sleeps until the oldest call leaves the
window instead of spinning.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerHour, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from mlconnector import metrics

_GRANULARITIES = {1: RateLimitItemPerSecond, 60: RateLimitItemPerMinute, 3600: RateLimitItemPerHour}
MIN_SLEEP_SECONDS = 0.002


@dataclass(frozen=True)
class RateLimit:
    """`requests` calls per `per_seconds` (1, 60 or 3600) for one vendor + tenant."""

    requests: int
    per_seconds: int = 1

    def item(self) -> RateLimitItem:
        cls = _GRANULARITIES.get(self.per_seconds)
        if cls is None:
            raise ValueError("per_seconds must be 1, 60 or 3600")
        return cls(self.requests)


class RateLimitTimeout(TimeoutError):
    pass


class RateLimiter:
    def __init__(self, storage_uri: str = "memory://") -> None:
        uri = storage_uri
        if uri.startswith(("redis://", "rediss://")):
            uri = uri  # limits understands redis URLs directly
        self._storage = storage_from_string(uri)
        self._strategy = MovingWindowRateLimiter(self._storage)

    def acquire(self, key: str, limit: RateLimit, *, timeout: float = 120.0, vendor: str = "") -> float:
        """Block until one call is allowed under `limit` for `key`; returns seconds waited."""
        item = limit.item()
        started = time.monotonic()
        while not self._strategy.hit(item, "mlconnector", key):
            waited = time.monotonic() - started
            if waited > timeout:
                raise RateLimitTimeout(f"rate limit {key} not free after {timeout}s")
            stats = self._strategy.get_window_stats(item, "mlconnector", key)
            time.sleep(max(MIN_SLEEP_SECONDS, min(stats.reset_time - time.time(), 1.0)))
        waited = time.monotonic() - started
        if waited > MIN_SLEEP_SECONDS:
            metrics.RATE_LIMIT_WAIT.labels(vendor=vendor or key.split(":")[0]).observe(waited)
        return waited

    def clear(self, key: str, limit: RateLimit) -> None:
        self._strategy.clear(limit.item(), "mlconnector", key)
