"""Webhook signatures: HMAC-SHA256 over the raw body, compared in constant time.

The one verifier of the code base: the receiver and every connector that checks a delivery
use it. ServiceTitan's header name and digest encoding are unconfirmed vendor facts, so
both are settings of the integration (defaults: X-ServiceTitan-Signature, hex). During a
key rotation both the current and the previous key are accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Iterable, Literal, Mapping

Encoding = Literal["hex", "base64"]
DEFAULT_HEADER = "X-ServiceTitan-Signature"
DEFAULT_ENCODING: Encoding = "hex"
SCHEME_PREFIXES = ("sha256=",)  # some senders prefix the digest with its algorithm


class SignatureError(Exception):
    """The signature is missing or matches none of the keys."""


def sign_for_tests(body: bytes, key: str, encoding: Encoding = DEFAULT_ENCODING) -> str:
    """The signature a sender holding `key` puts on `body` (tests and sandboxes sign with it)."""
    digest = hmac.new(key.encode(), body, hashlib.sha256).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """A header by name, whatever case the sender or the web server gave it."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def verify(body: bytes, signature: str | None, keys: Iterable[str], encoding: Encoding = DEFAULT_ENCODING) -> None:
    """Raise SignatureError unless `signature` is the HMAC of `body` under one of `keys`."""
    if not signature:
        raise SignatureError("missing signature header")
    presented = _comparable(_without_scheme(signature.strip()), encoding)
    matched = False
    for key in keys:
        if not key:
            continue
        expected = _comparable(sign_for_tests(body, key, encoding), encoding)
        # Compare every key, so timing does not reveal which one (or whether any) matched.
        matched |= hmac.compare_digest(expected, presented)
    if not matched:
        raise SignatureError("signature does not match")


def verify_headers(body: bytes, headers: Mapping[str, str], keys: Iterable[str], *,
                   header: str = DEFAULT_HEADER, encoding: Encoding = DEFAULT_ENCODING) -> None:
    """`verify` with the signature read from `header` of a delivery's headers."""
    verify(body, header_value(headers, header), keys, encoding)


def _without_scheme(signature: str) -> str:
    for prefix in SCHEME_PREFIXES:
        if signature.lower().startswith(prefix):
            return signature[len(prefix):]
    return signature


def _comparable(signature: str, encoding: Encoding) -> bytes:
    """Bytes to compare: hex digests ignore case.

    `hmac.compare_digest` refuses str with non-ASCII characters (TypeError), so both sides
    are bytes. surrogatepass encodes every code point, lone surrogates included, so no
    header value a client sends can raise here; such a value simply does not match.
    """
    text = signature.lower() if encoding == "hex" else signature
    return text.encode("utf-8", "surrogatepass")


__all__ = ["DEFAULT_ENCODING", "DEFAULT_HEADER", "Encoding", "SignatureError", "header_value", "sign_for_tests",
           "verify", "verify_headers"]
