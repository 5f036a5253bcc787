"""Tokens as every sandbox issues and checks them, and the bearer header."""

from __future__ import annotations

import base64

import pytest

from sandboxes.kit.tokens import TokenStore, basic_credentials, bearer_token


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer abc", "abc"),
    ("bearer  abc ", "abc"),
    ("BEARER abc", "abc"),
    ("Bearer ", ""),
    ("Bearer", None),
    ("Basic dXNlcjpwdw==", None),
    ("", None),
])
def test_bearer_token(header: str, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize(("credential", "pair"), [
    (base64.b64encode(b"alice:s3:cret").decode(), ("alice", "s3:cret")),
    (" " + base64.b64encode(b"bob:").decode() + " ", ("bob", "")),
    (base64.b64encode(b"no-colon").decode(), ("no-colon", "")),
    ("%%%not base64", ("", "")),
    (base64.b64encode(b"\xff\xfe:x").decode(), ("", "")),
    ("", ("", "")),
])
def test_basic_credentials(credential: str, pair: tuple[str, str]) -> None:
    assert basic_credentials(credential) == pair


def test_issued_tokens_check_until_they_expire_or_are_revoked() -> None:
    store = TokenStore()
    access, refresh = store.issue("alice", 60, scopes=("api",), extra={"tenant": 7})
    assert refresh is None
    issued = store.check(access)
    assert issued is not None and (issued.subject, issued.scopes, issued.extra) == ("alice", ("api",), {"tenant": 7})
    assert store.check("not-a-token") is None
    store.expire_all()
    assert store.check(access) is None
    again, _ = store.issue("alice", 60)
    store.revoke_all()
    assert store.check(again) is None


def test_a_token_with_no_lifetime_left_is_refused() -> None:
    store = TokenStore()
    access, _ = store.issue("alice", 0)
    assert store.check(access) is None


def test_refresh_tokens_are_single_use() -> None:
    store = TokenStore()
    access, refresh = store.issue("bob", 60, with_refresh=True)
    assert refresh is not None and refresh != access
    first = store.use_refresh(refresh)
    assert first is not None and first.subject == "bob"
    assert store.use_refresh(refresh) is None
    assert store.use_refresh(access) is None  # an access token is not a refresh token
