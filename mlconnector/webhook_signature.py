"""ServiceTitan webhook signatures: HMAC-SHA256 over the raw body, compared in constant time.

The header name and digest encoding are unconfirmed vendor facts, so both are settings of
the integration (defaults: X-ServiceTitan-Signature, hex). During a key rotation both the
current and the previous key are accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Iterable, Literal

Encoding = Literal["hex", "base64"]
DEFAULT_HEADER = "X-ServiceTitan-Signature"
SCHEME_PREFIXES = ("sha256=",)  # some senders prefix the digest with its algorithm


class SignatureError(Exception):
    """The signature is missing or matches none of the keys."""


def sign_for_tests(body: bytes, key: str, encoding: Encoding = "hex") -> str:
    digest = hmac.new(key.encode(), body, hashlib.sha256).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


def verify(body: bytes, signature: str | None, keys: Iterable[str], encoding: Encoding = "hex") -> None:
    """Raise SignatureError unless `signature` is the HMAC of `body` under one of `keys`."""
    if not signature:
        raise SignatureError("missing signature header")
    presented = signature.strip()
    for prefix in SCHEME_PREFIXES:
        if presented.lower().startswith(prefix):
            presented = presented[len(prefix):]
    matched = False
    for key in keys:
        if not key:
            continue
        expected = sign_for_tests(body, key, encoding)
        # Compare every key, so timing does not reveal which one (or whether any) matched.
        if encoding == "hex":
            matched |= hmac.compare_digest(expected.lower(), presented.lower())
        else:
            matched |= hmac.compare_digest(expected, presented)
    if not matched:
        raise SignatureError("signature does not match")
