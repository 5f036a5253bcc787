"""A rate limiter shared by the fleet, so all workers together stay under a vendor's limit.

A sliding log in Redis: one atomic script per acquire trims calls older than the window,
admits the call if fewer than N remain, and otherwise answers how long until the oldest
one leaves. Timestamps come from the Redis server's clock (`TIME`), not the callers', so
calls from two hosts are ordered exactly as Redis saw them. (The `limits` library's
moving window was the first choice; it stamps calls with each client's clock before the
script runs, and two processes racing let 10% more calls through a window than allowed,
which a vendor answers with 429s.) The embedded default runs the same algorithm in memory.

A vendor may count one app's calls in several windows at once (an hourly quota and a short
spike window): `acquire` takes one `RateLimit` or several, and a call is admitted only when
every window has room, checked and recorded in the same atomic step, so no window is
charged for a call another window turned away. A vendor that says its window is spent
(remaining 0 until a reset time) can `pause` the key fleet-wide until then.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Sequence, Union

from mlconnector import metrics
from mlconnector.http.errors import RetriableError

MIN_SLEEP_SECONDS = 0.001
KEY_PREFIX = "mlconnector:rate:"
PAUSE_SUFFIX = "|pause"
MAX_PAUSE_SECONDS = 3600.0  # a vendor's reset time further out than its longest window is not believed

# KEYS: one sorted set per window, then the pause key. ARGV: member, then (limit, window_us) per window.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS - 1
local paused = redis.call('PTTL', KEYS[n + 1])
if paused and paused > 0 then
  return paused * 1000
end
local wait = 0
for i = 1, n do
  local limit = tonumber(ARGV[i * 2])
  local window = tonumber(ARGV[i * 2 + 1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  if redis.call('ZCARD', KEYS[i]) >= limit then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    wait = math.max(wait, 1, tonumber(oldest[2]) + window - now)
  end
end
if wait > 0 then
  return wait
end
for i = 1, n do
  local window = tonumber(ARGV[i * 2 + 1])
  redis.call('ZADD', KEYS[i], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], math.floor(window / 1000) + 1000)
end
return 0
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

    @property
    def suffix(self) -> str:
        """What tells this window's log apart from another window's of the same key."""
        return f"|{self.requests}/{self.per_seconds:g}s"


Limits = Union[RateLimit, Sequence[RateLimit]]


def windows_of(limit: Limits) -> tuple[RateLimit, ...]:
    """One limit or several, as a tuple (the first alone keeps the key it always had)."""
    return (limit,) if isinstance(limit, RateLimit) else tuple(limit)


@dataclass(frozen=True)
class QuotaHeaders:
    """Where a vendor's answers say how much of its window is left: the header counting the
    calls remaining and the header giving the moment the window resets (epoch seconds).
    Remaining at zero pauses the key until the reset, for the whole fleet."""

    remaining: str
    reset: str

    def pause_seconds(self, headers: Any, now: float | None = None) -> float:
        """Seconds to wait before the next call, per these headers (0: the window has room)."""
        remaining, reset = str(headers.get(self.remaining, "")).strip(), str(headers.get(self.reset, "")).strip()
        if remaining != "0" or not reset.isdigit():
            return 0.0
        return max(0.0, int(reset) - (time.time() if now is None else now))


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
        self._paused: dict[str, float] = {}

    @staticmethod
    def _log_keys(key: str, windows: tuple[RateLimit, ...]) -> list[str]:
        """A single window keeps the bare key (as before); several get one log each."""
        if len(windows) == 1:
            return [key]
        return [key + w.suffix for w in windows]

    def _try(self, key: str, windows: tuple[RateLimit, ...]) -> float:
        """0 when admitted by every window, else seconds until all of them have room."""
        logs = self._log_keys(key, windows)
        if self._redis is not None:
            args: list[Any] = [uuid.uuid4().hex]
            for window in windows:
                args += [window.requests, window.window_us]
            wait_us = int(self._script(keys=[KEY_PREFIX + k for k in logs] + [KEY_PREFIX + key + PAUSE_SUFFIX], args=args))
            return wait_us / 1_000_000
        now = time.monotonic()
        with self._lock:
            paused = self._paused.get(key, 0.0) - now
            if paused > 0:
                return paused
            wait = 0.0
            for log, window in zip(logs, windows):
                calls = self._calls[log]
                while calls and calls[0] <= now - window.window_seconds:
                    calls.popleft()
                if len(calls) >= window.requests:
                    wait = max(wait, MIN_SLEEP_SECONDS, calls[0] + window.window_seconds - now)
            if wait:
                return wait
            for log in logs:
                self._calls[log].append(now)
            return 0.0

    def acquire(self, key: str, limit: Limits, *, timeout: float = 120.0, vendor: str = "") -> float:
        """Block until one call is allowed under every window of `limit` for `key`; returns seconds waited."""
        windows = windows_of(limit)
        if not windows:
            return 0.0
        started = time.monotonic()
        while True:
            wait = self._try(key, windows)
            if wait == 0:
                break
            if time.monotonic() - started + wait > timeout:
                raise RateLimitTimeout(f"rate limit {key} not free within {timeout}s", retry_after=wait, vendor=vendor)
            time.sleep(max(MIN_SLEEP_SECONDS, wait))
        waited = time.monotonic() - started
        if waited > MIN_SLEEP_SECONDS:
            metrics.RATE_LIMIT_WAIT.labels(vendor=vendor or key.split(":")[0]).observe(waited)
        return waited

    def pause(self, key: str, seconds: float) -> None:
        """Admit no call for `key` for `seconds`, in every process: the vendor said its window
        is spent until then (a remaining-calls header at zero, a Retry-After)."""
        seconds = min(max(0.0, seconds), MAX_PAUSE_SECONDS)
        if seconds <= 0:
            return
        if self._redis is not None:
            # Never shorten a pause another worker set from a later answer.
            current = self._redis.pttl(KEY_PREFIX + key + PAUSE_SUFFIX)
            if current is None or current < seconds * 1000:
                self._redis.set(KEY_PREFIX + key + PAUSE_SUFFIX, b"1", px=max(1, int(seconds * 1000)))
            return
        with self._lock:
            self._paused[key] = max(self._paused.get(key, 0.0), time.monotonic() + seconds)

    def clear(self, key: str, limit: Limits | None = None) -> None:
        logs = self._log_keys(key, windows_of(limit)) if limit is not None else [key]
        if self._redis is not None:
            self._redis.delete(*[KEY_PREFIX + k for k in logs], KEY_PREFIX + key + PAUSE_SUFFIX)
        with self._lock:
            for log in logs:
                self._calls.pop(log, None)
            self._paused.pop(key, None)
