"""The redaction fast paths (a text without any hint word skips the inline patterns; field
names are judged once and cached) never change what is masked."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mlconnector import redaction
from mlconnector.redaction import INLINE_PATTERNS, MASK, redact, redact_text

WORDS = ["Bearer ", "basic ", "access_token=", "refresh_token: ", "client_secret=", "password=", "Password:",
         "api_key=", "hello", " ", "abc123", "\"", "'", "=", ":", "token", "PASSWORD ", "x"]


def _every_pattern(text: str) -> str:
    for pattern in INLINE_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    return redaction._registry.scrub(text)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(WORDS) | st.text(max_size=6), max_size=8).map("".join))
def test_the_hint_never_skips_a_text_a_pattern_would_change(text: str) -> None:
    assert redact_text(text) == _every_pattern(text)


def test_each_inline_pattern_is_covered_by_the_hint() -> None:
    for sample in ["Authorization: Bearer abc.def", "Basic dXNlcjpwYXNz", "access_token=abc", "refresh_token: 'r'",
                   "client_secret=s3cr3t", "password=hunter22", "Password: hunter22", "api_key=k-123"]:
        assert redaction.INLINE_HINT.search(sample), sample
        assert MASK in redact_text(sample), sample


def test_secret_named_keys_are_masked_at_any_depth_and_names_are_cached() -> None:
    redaction._secret_key.cache_clear()
    payload = {"vendor": {"name": "Acme", "bank_account_number": "123456789", "token_url": "https://x/token"},
               "lines": [{"api_key": "k", "amount": 12.5, "ok": True, "none": None}] * 3,
               "changes": [{"field": "routing_number", "value": "021000021", "reason": "was '0'"}]}
    out = redact(payload)
    assert out["vendor"] == {"name": "Acme", "bank_account_number": MASK, "token_url": "https://x/token"}
    assert out["lines"][2] == {"api_key": MASK, "amount": 12.5, "ok": True, "none": None}
    assert out["changes"] == [{"field": "routing_number", "value": MASK, "reason": MASK}]
    assert redaction._secret_key.cache_info().hits >= 2  # the line keys, judged once
    assert payload["vendor"]["bank_account_number"] == "123456789"  # a copy: the input is untouched


def test_a_registered_secret_is_scrubbed_from_short_and_long_texts() -> None:
    redaction.register_secret("tok-9f8e7d")
    assert redact({"detail": "upstream said tok-9f8e7d is bad"}) == {"detail": f"upstream said {MASK} is bad"}
    assert redact_text("abc") == "abc"
    assert re.search("tok-9f8e7d", str(redact(["tok-9f8e7d"]))) is None
