"""Authentication for outbound calls: static headers, or tokens shared by the whole fleet.

A `TokenProvider` knows how to get a token from one vendor for one set of credentials.
The `TokenCache` keeps that token where every worker can see it (Redis in production, a
dict in the embedded default) and refreshes it ahead of expiry under a lock, so N workers
asking at once cause one token request, not N.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterator

import requests
from cryptography.fernet import InvalidToken, MultiFernet

from mlconnector import metrics
from mlconnector.redaction import register_secret

if TYPE_CHECKING:
    import redis

REFRESH_AHEAD_SECONDS = 60  # refresh this long before expiry so no call carries a dying token
LOCK_TIMEOUT_SECONDS = 30  # a token request slower than this is a stuck one
LOCK_WAIT_SECONDS = 35  # waiters give up a little after the holder's lock would expire


@dataclass
class Token:
    access_token: str
    expires_at: float
    refresh_token: str | None = None
    token_type: str = "Bearer"
    lifetime: float = 0.0  # seconds the vendor granted; 0 when unknown

    @classmethod
    def from_oauth(cls, body: dict[str, Any], *, default_ttl: float, now: float | None = None) -> "Token":
        now = time.time() if now is None else now
        ttl = float(body.get("expires_in") or default_ttl)
        return cls(
            access_token=str(body["access_token"]),
            expires_at=now + ttl,
            refresh_token=body.get("refresh_token"),
            token_type=str(body.get("token_type") or "Bearer"),
            lifetime=ttl,
        )

    def fresh_for(self, seconds: float, now: float | None = None) -> bool:
        """Valid for at least `seconds` more (at most half its lifetime, for short-lived tokens)."""
        now = time.time() if now is None else now
        if self.lifetime:
            seconds = min(seconds, self.lifetime / 2)
        return bool(self.access_token) and self.expires_at - now > seconds


class TokenProvider(ABC):
    """Fetches a token for one vendor + credential set. Connectors implement `fetch`."""

    vendor: str = ""

    @property
    @abstractmethod
    def cache_key(self) -> str:
        """Identifies the credential set (never contains a secret)."""

    @abstractmethod
    def fetch(self, session: requests.Session, previous: Token | None) -> Token:
        """Request a new token; `previous` carries a refresh token where the vendor has one."""

    def extra_headers(self) -> dict[str, str]:
        """Headers the vendor wants beside the bearer token (an app key, a company id)."""
        return {}

    def authorization(self, token: Token) -> dict[str, str]:
        return {"Authorization": f"{token.token_type.capitalize()} {token.access_token}"}


class TokenCache:
    """Fleet-wide token cache: Redis when given, otherwise this process only."""

    def __init__(
        self,
        redis_client: "redis.Redis | None" = None,
        *,
        cipher: MultiFernet | None = None,
        refresh_ahead: float = REFRESH_AHEAD_SECONDS,
        namespace: str = "mlconnector:token",
    ) -> None:
        self._redis = redis_client
        self._cipher = cipher
        self._refresh_ahead = refresh_ahead
        self._namespace = namespace
        self._memory: dict[str, Token] = {}
        # With Redis, the token last read or written by this process, so a call does not
        # pay a Redis round trip and a decryption while its token is still fresh.
        self._seen: dict[str, Token] = {}
        self._memory_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, provider: TokenProvider, session: requests.Session) -> Token:
        key = self._key(provider)
        seen = self._seen.get(key)
        if seen is not None and seen.fresh_for(self._refresh_ahead):
            return seen
        token = self._read(key)
        if token and token.fresh_for(self._refresh_ahead):
            return token
        with self._lock(key):
            token = self._read(key)
            if token and token.fresh_for(self._refresh_ahead):
                return token
            try:
                new = provider.fetch(session, token)
            except Exception:
                metrics.TOKEN_REFRESHES.labels(vendor=provider.vendor, outcome="error").inc()
                raise
            metrics.TOKEN_REFRESHES.labels(vendor=provider.vendor, outcome="ok").inc()
            register_secret(new.access_token)
            register_secret(new.refresh_token)
            self._write(key, new)
            return new

    def invalidate(self, provider: TokenProvider, stale_access_token: str) -> None:
        """Drop a token the vendor refused, unless another worker already replaced it."""
        key = self._key(provider)
        self._seen.pop(key, None)
        with self._lock(key):
            current = self._read(key)
            if current and current.access_token == stale_access_token:
                current.access_token = ""
                current.expires_at = 0
                self._write(key, current)

    def peek(self, provider: TokenProvider) -> Token | None:
        return self._read(self._key(provider))

    def _key(self, provider: TokenProvider) -> str:
        return f"{self._namespace}:{provider.vendor}:{provider.cache_key}"

    @contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        if self._redis is None:
            with self._guard:
                lock = self._memory_locks.setdefault(key, threading.Lock())
            with lock:
                yield
            return
        lock = self._redis.lock(
            key + ":lock", timeout=LOCK_TIMEOUT_SECONDS, blocking_timeout=LOCK_WAIT_SECONDS
        )
        if not lock.acquire():
            raise TimeoutError(f"token refresh lock {key} not acquired in {LOCK_WAIT_SECONDS}s")
        try:
            yield
        finally:
            try:
                lock.release()
            except Exception:  # lock expired under a slow vendor; the next caller re-checks
                pass

    def _read(self, key: str) -> Token | None:
        if self._redis is None:
            token = self._memory.get(key)
            return Token(**asdict(token)) if token else None
        raw = self._redis.get(key)
        if raw is None:
            return None
        try:
            data = self._cipher.decrypt(raw) if self._cipher else raw
        except InvalidToken:
            return None
        token = Token(**json.loads(data))
        register_secret(token.access_token)
        register_secret(token.refresh_token)
        self._seen[key] = Token(**asdict(token))
        return token

    def _write(self, key: str, token: Token) -> None:
        if self._redis is None:
            self._memory[key] = Token(**asdict(token))
            return
        self._seen[key] = Token(**asdict(token))
        data = json.dumps(asdict(token)).encode()
        if self._cipher:
            data = self._cipher.encrypt(data)
        # Keep the entry past access expiry when a refresh token rides along in it.
        ttl = max(60, int(token.expires_at - time.time()) + (30 * 86400 if token.refresh_token else 60))
        self._redis.set(key, data, ex=ttl)


class Auth(ABC):
    """How an `HttpClient` authenticates each request."""

    @abstractmethod
    def headers(self, session: requests.Session) -> dict[str, str]:
        ...

    def refresh(self, session: requests.Session, sent_headers: dict[str, str]) -> bool:
        """Called once on a 401; True when a retry with fresh headers could succeed."""
        return False


class NoAuth(Auth):
    def headers(self, session: requests.Session) -> dict[str, str]:
        return {}


class ApiKeyAuth(Auth):
    """Static header credentials (API keys). A 401 here cannot be fixed by retrying."""

    def __init__(self, headers: dict[str, str]) -> None:
        self._headers = dict(headers)
        for value in headers.values():
            register_secret(value)

    def headers(self, session: requests.Session) -> dict[str, str]:
        return dict(self._headers)


class BasicAuth(ApiKeyAuth):
    def __init__(self, username: str, password: str, extra: dict[str, str] | None = None) -> None:
        encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
        register_secret(password)
        super().__init__({"Authorization": f"Basic {encoded}", **(extra or {})})


class TokenAuth(Auth):
    """Bearer tokens from a provider, through the fleet's cache."""

    def __init__(self, provider: TokenProvider, cache: TokenCache) -> None:
        self.provider = provider
        self.cache = cache

    def headers(self, session: requests.Session) -> dict[str, str]:
        token = self.cache.get(self.provider, session)
        return {**self.provider.extra_headers(), **self.provider.authorization(token)}

    def refresh(self, session: requests.Session, sent_headers: dict[str, str]) -> bool:
        sent = sent_headers.get("Authorization", "")
        stale = sent.split(" ", 1)[1] if " " in sent else sent
        self.cache.invalidate(self.provider, stale)
        return True
