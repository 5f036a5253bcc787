"""What connectors share inside one process: pooled sessions, the token cache, the limiter.

Built once per process from the settings: Redis-backed when the fleet has Redis, in
memory in the embedded default. Sessions are pooled per vendor so every call to a vendor
reuses keep-alive connections instead of opening one per record.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from mlconnector.http.auth import TokenCache
from mlconnector.http.ratelimit import RateLimiter
from mlconnector.http.slots import SessionSlots

POOL_SIZE = 32  # connections kept per vendor host; above a worker's thread count


class PooledSession(requests.Session):
    """A session that reads proxy and CA-bundle settings from the environment once per host.

    requests re-reads them (walking `os.environ` twice) on every call, a tenth of a
    worker's CPU per vendor call; a worker's environment does not change while it runs.
    The answer is the one requests would give, `no_proxy` included, just remembered.
    """

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[str, Any, Any], dict[str, Any]] = {}

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> dict[str, Any]:
        if proxies or not isinstance(verify, (bool, type(None))) or cert is not None:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(str(url))
        key = (f"{parts.scheme}://{parts.netloc}", stream, verify)
        settings = self._environment.get(key)
        if settings is None:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            self._environment[key] = settings
        return {name: dict(value) if isinstance(value, dict) else value for name, value in settings.items()}


@dataclass
class HttpRuntime:
    token_cache: TokenCache
    rate_limiter: RateLimiter
    slots: SessionSlots = field(default_factory=SessionSlots)  # fleet-wide caps on concurrent vendor sessions
    _sessions: dict[str, requests.Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def session(self, vendor: str) -> requests.Session:
        with self._lock:
            existing = self._sessions.get(vendor)
            if existing is None:
                existing = PooledSession()
                adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
                existing.mount("http://", adapter)
                existing.mount("https://", adapter)
                self._sessions[vendor] = existing
            return existing

    def close(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.close()
            self._sessions.clear()


_runtime: HttpRuntime | None = None
_runtime_pid: int | None = None
_runtime_lock = threading.Lock()


def build_runtime(redis_url: str = "", cipher: object | None = None) -> HttpRuntime:
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url)
        return HttpRuntime(
            token_cache=TokenCache(client, cipher=cipher),  # type: ignore[arg-type]
            rate_limiter=RateLimiter(redis_url),
            slots=SessionSlots(client),
        )
    return HttpRuntime(token_cache=TokenCache(None), rate_limiter=RateLimiter("memory://"))


def get_runtime() -> HttpRuntime:
    """The process's runtime; rebuilt after a fork so children never share sockets."""
    global _runtime, _runtime_pid
    with _runtime_lock:
        if _runtime is None or _runtime_pid != os.getpid():
            from mlconnector.settings import get_settings

            settings = get_settings()
            cipher = None
            if settings.effective_redis_url:
                from mlconnector.vault import build_cipher

                cipher = build_cipher(settings)
            _runtime = build_runtime(settings.effective_redis_url, cipher)
            _runtime_pid = os.getpid()
        return _runtime


def set_runtime(runtime: HttpRuntime | None) -> None:
    """Install a runtime explicitly (tests, benchmarks)."""
    global _runtime, _runtime_pid
    with _runtime_lock:
        _runtime = runtime
        _runtime_pid = os.getpid() if runtime else None
