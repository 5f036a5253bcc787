"""A rate limiter shared by the fleet, so all workers together stay under a vendor's limit.

A sliding log in Redis: one atomic script per acquire trims calls older than the window,
admits the call if fewer than N remain, and otherwise answers how long until the oldest
one leaves. Timestamps come from the Redis server's clock (`TIME`), not the callers', so
calls from two hosts are ordered exactly as Redis saw them. (The `limits` library's
moving window was the first choice; it stamps calls with each client's clock before the
script runs, and two processes racing let 10% more calls through a window than allowed,
which a vendor answers with 429s.) The embedded default runs the same algorithm in memory.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from mlconnector import metrics
from mlconnector.http.errors import RetriableError

MIN_SLEEP_SECONDS = 0.001
KEY_PREFIX = "mlconnector:rate:"

_ACQUIRE = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now, ARGV[3])
  redis.call('PEXPIRE', key, math.floor(window / 1000) + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""


DEFAULT_MARGIN = 0.03  # calls are admitted on Redis's clock but counted by the vendor on arrival


@dataclass(frozen=True)
class RateLimit:
    """`requests` calls per `per_seconds` seconds for one vendor + tenant.

    The window is held open `margin` longer than the vendor's, so a call delayed between
    admission and arrival (a busy host) still lands outside the vendor's window.
    """

    requests: int
    per_seconds: float = 1.0
    margin: float = DEFAULT_MARGIN

    @property
    def window_seconds(self) -> float:
        return self.per_seconds * (1 + self.margin)

    @property
    def window_us(self) -> int:
        return int(self.window_seconds * 1_000_000)


class RateLimitTimeout(RetriableError):
    """The shared limit stayed full for the whole wait; the task retries later."""


class RateLimiter:
    def __init__(self, storage_uri: str = "memory://") -> None:
        self._redis: Any = None
        if storage_uri.startswith(("redis://", "rediss://")):
            import redis

            self._redis = redis.Redis.from_url(storage_uri)
            self._script = self._redis.register_script(_ACQUIRE)
        self._lock = threading.Lock()
        self._calls: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def _try(self, key: str, limit: RateLimit) -> float:
        """0 when admitted, else seconds until a slot frees."""
        if self._redis is not None:
            wait_us = int(self._script(keys=[KEY_PREFIX + key], args=[limit.requests, limit.window_us, uuid.uuid4().hex]))
            return wait_us / 1_000_000
        now = time.monotonic()
        with self._lock:
            calls = self._calls[key]
            while calls and calls[0] <= now - limit.window_seconds:
                calls.popleft()
            if len(calls) < limit.requests:
                calls.append(now)
                return 0.0
            return max(MIN_SLEEP_SECONDS, calls[0] + limit.window_seconds - now)

    def acquire(self, key: str, limit: RateLimit, *, timeout: float = 120.0, vendor: str = "") -> float:
        """Block until one call is allowed under `limit` for `key`; returns seconds waited."""
        started = time.monotonic()
        while True:
            wait = self._try(key, limit)
            if wait == 0:
                break
            if time.monotonic() - started + wait > timeout:
                raise RateLimitTimeout(f"rate limit {key} not free within {timeout}s", retry_after=wait, vendor=vendor)
            time.sleep(max(MIN_SLEEP_SECONDS, wait))
        waited = time.monotonic() - started
        if waited > MIN_SLEEP_SECONDS:
            metrics.RATE_LIMIT_WAIT.labels(vendor=vendor or key.split(":")[0]).observe(waited)
        return waited

    def clear(self, key: str, limit: RateLimit | None = None) -> None:
        if self._redis is not None:
            self._redis.delete(KEY_PREFIX + key)
        with self._lock:
            self._calls.pop(key, None)
