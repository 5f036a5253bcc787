"""Cost of one shared rate-limiter acquire and of a cached-token read, as ratios against a
bare Redis GET measured in the same run on the same connection.

Two token reads: the usual one (the token this process last saw, still fresh: no Redis at
all) and a shared read (this process has no fresh copy, so it reads Redis and decrypts).

    python -m benchmarks.bench_core [iterations]
"""

from __future__ import annotations

import json
import sys
import time

import redis
import requests

from benchmarks.common import write_result
from mlconnector.http.auth import Token, TokenCache, TokenProvider
from mlconnector.http.ratelimit import RateLimit, RateLimiter

REDIS_URL = "redis://127.0.0.1:6379/9"


class _FixedProvider(TokenProvider):
    vendor = "bench"

    @property
    def cache_key(self) -> str:
        return "bench"

    def fetch(self, session: requests.Session, previous: Token | None) -> Token:
        return Token(access_token="bench-token-value", expires_at=time.time() + 3600)


def _per_call(fn, iterations: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    started = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - started) / iterations


def main(iterations: int = 5000) -> dict[str, float]:
    client = redis.Redis.from_url(REDIS_URL)
    client.set("bench:key", "value")
    limiter = RateLimiter(REDIS_URL)
    limit = RateLimit(10_000_000, 1)  # high enough never to block: this measures the cost, not the wait
    cache = TokenCache(redis.Redis.from_url(REDIS_URL))
    provider, session = _FixedProvider(), requests.Session()
    bare = _per_call(lambda: client.get("bench:key"), iterations)
    acquire = _per_call(lambda: limiter.acquire("bench:tenant", limit), iterations)
    token = _per_call(lambda: cache.get(provider, session), iterations)

    def shared_read() -> Token:
        cache._seen.clear()  # as a process that has not seen the current token yet
        return cache.get(provider, session)

    shared = _per_call(shared_read, iterations)
    limiter.clear("bench:tenant")
    figures = {
        "iterations": iterations,
        "redis_get_us": round(bare * 1e6, 1),
        "rate_limit_acquire_us": round(acquire * 1e6, 1),
        "token_read_us": round(token * 1e6, 2),
        "token_shared_read_us": round(shared * 1e6, 1),
        "rate_limit_acquire_vs_get": round(acquire / bare, 2),
        "token_read_vs_get": round(token / bare, 4),
        "token_shared_read_vs_get": round(shared / bare, 2),
    }
    write_result("core", figures)
    return figures


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000)))
