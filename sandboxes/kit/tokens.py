"""Access and refresh tokens as the sandboxes issue and check them, and the bearer header.

Every vendor's OAuth or session token behaves the same inside a simulator: random, expiring,
revocable all at once from the control API, refresh tokens single use. What differs (lifetimes,
scopes, the error a bad token earns) stays with the vendor.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

REFRESH_TTL_SECONDS = 30 * 86400  # the common default lifetime of a refresh token


def bearer_token(header: str) -> str | None:
    """The credential of an `Authorization: Bearer <token>` header (scheme in any case), else None."""
    scheme, separator, credential = header.partition(" ")
    return credential.strip() if separator and scheme.lower() == "bearer" else None


def basic_credentials(credential: str) -> tuple[str, str]:
    """(user, password) of a Basic credential (the part after `Basic `); ("", "") if it is not one."""
    try:
        decoded = base64.b64decode(credential.strip(), validate=False).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return "", ""
    user, _, password = decoded.partition(":")
    return user, password


@dataclass
class IssuedToken:
    """Who a token was issued to, until when, and what it may do."""

    subject: str
    expires_at: float
    scopes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class TokenStore:
    """Bearer tokens (and optional single-use refresh tokens) issued by a sandbox."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._access: dict[str, IssuedToken] = {}
        self._refresh: dict[str, IssuedToken] = {}

    def issue(self, subject: str, ttl: float, *, scopes: tuple[str, ...] = (), with_refresh: bool = False,
              extra: dict[str, Any] | None = None) -> tuple[str, str | None]:
        access = secrets.token_urlsafe(24)
        refresh = secrets.token_urlsafe(24) if with_refresh else None
        with self._lock:
            self._access[access] = IssuedToken(subject, time.time() + ttl, scopes, dict(extra or {}))
            if refresh:
                self._refresh[refresh] = IssuedToken(subject, time.time() + REFRESH_TTL_SECONDS, scopes, dict(extra or {}))
        return access, refresh

    def check(self, access: str) -> IssuedToken | None:
        """The token's record if it is known, unexpired and unrevoked."""
        with self._lock:
            issued = self._access.get(access)
            if issued is None:
                return None
            if issued.expires_at <= time.time():
                return None
            return issued

    def use_refresh(self, refresh: str) -> IssuedToken | None:
        """Consume a refresh token: single use, so a second use answers None."""
        with self._lock:
            return self._refresh.pop(refresh, None)

    def expire_all(self) -> None:
        with self._lock:
            for issued in self._access.values():
                issued.expires_at = 0

    def revoke_all(self) -> None:
        with self._lock:
            self._access.clear()
            self._refresh.clear()
