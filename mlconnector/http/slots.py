"""A cap on concurrent sessions shared by the whole fleet.

Some vendors licence concurrent sign-ins (API users), not request rates: a
session over the cap is refused, and a worker that opened one more than the licence allows
blocks every other worker's sign-in. `SessionSlots` hands out at most `limit` slots per
name across every process: in Redis when the fleet has Redis (a sorted set of slot holders
scored by lease expiry, so a slot held by a worker that died frees itself), in memory in
the embedded default. Waiting for a slot is a wait, never a failure: a caller that waited
too long gets a `RetriableError`, and the engine retries the record later.
"""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

from mlconnector.http.errors import RetriableError

LEASE_SECONDS = 300.0  # a slot outlives no worker by more than this (longer than any one vendor operation)
POLL_SECONDS = 0.05  # how often a waiting caller looks for a free slot
WAIT_SECONDS = 30.0  # how long a caller waits before the record is retried later instead

_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""


class SlotsBusy(RetriableError):
    """Every slot stayed taken while the caller waited: retry later (nothing was sent)."""


class SessionSlots:
    """At most `limit` holders of a named slot at once, across the fleet."""

    def __init__(self, client: Any = None, prefix: str = "mlconnector:slots:") -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(_ACQUIRE) if client is not None else None
        self._lock = threading.Lock()
        self._memory: dict[str, dict[str, float]] = {}

    def _try(self, name: str, limit: int, holder: str, lease: float) -> bool:
        now = time.time()
        if self._script is not None:
            return bool(self._script(keys=[self._prefix + name],
                                     args=[now, limit, now + lease, holder, int(lease * 1000) * 2]))
        with self._lock:
            held = {h: until for h, until in self._memory.get(name, {}).items() if until > now}
            if len(held) >= limit:
                self._memory[name] = held
                return False
            held[holder] = now + lease
            self._memory[name] = held
            return True

    def release(self, name: str, holder: str) -> None:
        if self._client is not None:
            self._client.zrem(self._prefix + name, holder)
            return
        with self._lock:
            self._memory.get(name, {}).pop(holder, None)

    def in_use(self, name: str) -> int:
        """Slots held now (for status and tests)."""
        now = time.time()
        if self._client is not None:
            return int(self._client.zcount(self._prefix + name, now, "+inf"))
        with self._lock:
            return sum(1 for until in self._memory.get(name, {}).values() if until > now)

    @contextmanager
    def hold(self, name: str, limit: int | None, *, wait: float = WAIT_SECONDS, lease: float = LEASE_SECONDS,
             vendor: str = "") -> Iterator[None]:
        """Hold one of `limit` slots named `name` for the body (no limit: no slot needed)."""
        if not limit:
            yield
            return
        holder = uuid.uuid4().hex
        deadline = time.monotonic() + wait
        while not self._try(name, limit, holder, lease):
            if time.monotonic() >= deadline:
                error = SlotsBusy(f"all {limit} {vendor or name} session slot(s) stayed in use for {wait:.0f}s; "
                                  f"retrying later", vendor=vendor, retry_after=wait)
                error.not_acted_on = True  # type: ignore[attr-defined]
                raise error
            time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            self.release(name, holder)
