"""Keep secrets out of logs, error messages and audit rows.

Two nets: keys whose names look secret are masked wherever they appear in a structure,
and every secret value the vault hands out is registered so it is scrubbed from free text
(a vendor echoing a token back in an error body, an exception message, a URL).
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

MASK = "***"
SECRET_KEY_PATTERN = re.compile(
    r"(pass(word)?|secret|token|api[_-]?key|app[_-]?key|authorization|client_secret|"
    r"private|signature|hmac|session[_-]?id|cookie|credential|"
    r"bank_?acc(oun)?t_?num|\biban|routing_?number|bank_?identifier)",  # where a payee's money goes
    re.IGNORECASE,
)
# Patterns that are secret whatever key they sit under.
INLINE_PATTERNS = [
    re.compile(r"(Bearer\s+)[A-Za-z0-9\-._~+/=]+", re.IGNORECASE),
    re.compile(r"(Basic\s+)[A-Za-z0-9+/=]+", re.IGNORECASE),
    re.compile(r"((?:access|refresh)_token[\"']?\s*[:=]\s*[\"']?)[^\"'&\s,}]+", re.IGNORECASE),
    re.compile(r"((?:client_secret|password|Password|api_key)[\"']?\s*[:=]\s*[\"']?)[^\"'&\s,}<]+"),
]
# Every inline pattern needs one of these words: a text without any (nearly every field value
# of a payload) skips the four substitutions. Kept beside the patterns it stands for.
INLINE_HINT = re.compile(r"bearer|basic|_token|client_secret|password|api_key", re.IGNORECASE)
# Keys that name where or how a secret is sent, not the secret: token_url, signature_header.
NOT_SECRET_KEY = re.compile(r"(url|uri|header|encoding|path|format|field|ttl|seconds)$", re.IGNORECASE)
MIN_SECRET_LENGTH = 4  # shorter values would scrub ordinary words


class _SecretRegistry:
    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str | None) -> None:
        if not value or len(value) < MIN_SECRET_LENGTH:
            return
        with self._lock:
            if value not in self._values:
                self._values.add(value)
                self._pattern = None

    def scrub(self, text: str) -> str:
        if len(text) < MIN_SECRET_LENGTH:  # no registered secret is this short
            return text
        pattern = self._pattern
        if pattern is None:
            with self._lock:
                if not self._values:
                    return text
                ordered = sorted(self._values, key=len, reverse=True)
                pattern = self._pattern = re.compile("|".join(re.escape(v) for v in ordered))
        return pattern.sub(MASK, text)


_registry = _SecretRegistry()


def register_secret(value: str | None) -> None:
    """Remember a secret value so any later text containing it is scrubbed."""
    _registry.add(value)


def _keep_prefix(match: re.Match[str]) -> str:
    return match.group(1) + MASK


def redact_text(text: str) -> str:
    if INLINE_HINT.search(text):
        for pattern in INLINE_PATTERNS:
            text = pattern.sub(_keep_prefix, text)
    return _registry.scrub(text)


def _masked(value: Any) -> Any:
    """A secret-named key's value masked: a scalar, or each scalar of a list (a field's old
    and new value in a change); structures under such a key are walked as usual."""
    if isinstance(value, (list, tuple)):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return redact(value)
    if value in (None, "") or isinstance(value, bool):
        return value
    return MASK


def _secret_name(name: Any) -> bool:
    return isinstance(name, str) and _secret_key(name)


@functools.lru_cache(maxsize=8192)
def _secret_key(name: str) -> bool:
    """Field names repeat across every record of a flow: each is judged once per process."""
    return bool(SECRET_KEY_PATTERN.search(name)) and not NOT_SECRET_KEY.search(name)


_SCALARS = (int, float, bool, type(None))


def redact(value: Any) -> Any:
    """Return a copy of `value` with secret-named keys masked and secret values scrubbed. A
    field change ({"field": name, "value": ..., "reason": "was ..."}) of a secret-named field
    has its value and reason masked too.

    Every audit row of every record passes through here, so the common shapes are dispatched
    on their exact type first (a payload is dicts, lists, strings and numbers)."""
    kind = type(value)
    if kind is str:
        return redact_text(value)
    if kind in _SCALARS:
        return value
    if isinstance(value, dict):
        if "field" in value and _secret_name(value["field"]):
            return {k: (MASK if k in ("value", "reason") and v not in (None, "") else redact(v)) for k, v in value.items()}
        return {k: (_masked(v) if isinstance(k, str) and _secret_key(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
