"""The one OAuth 2.0 provider: grants, client authentication, refresh and fallback, errors."""

from __future__ import annotations

import base64
from typing import Any, Iterator
from urllib.parse import parse_qs

import pytest
import requests
import responses

from mlconnector.http import (
    AuthError,
    FatalError,
    HttpClient,
    OAuth2Provider,
    OAuth2Settings,
    RetriableError,
    RetryPolicy,
    Token,
    TokenAuth,
    TokenCache,
)
from mlconnector.redaction import redact_text

TOKEN_URL = "https://login.example.com/oauth/token"
API = "https://api.example.com"
SECRET = "client-secret-value-42"
PASSWORD = "api-user-password-7"


def form(call: Any) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(call.request.body).items()}


def token_body(access: str, refresh: str | None = None, expires_in: int | None = 900) -> dict[str, Any]:
    body: dict[str, Any] = {"access_token": access, "token_type": "bearer"}
    if expires_in is not None:
        body["expires_in"] = expires_in
    if refresh:
        body["refresh_token"] = refresh
    return body


def provider(settings: OAuth2Settings | None = None, **credentials: Any) -> OAuth2Provider:
    return OAuth2Provider("testvendor", settings or OAuth2Settings(token_url=TOKEN_URL),
                          **{"client_id": "app-1", "client_secret": SECRET, **credentials})


def api_client(oauth: OAuth2Provider) -> HttpClient:
    session = requests.Session()
    return HttpClient(vendor="testvendor", base_url=API, auth=TokenAuth(oauth, TokenCache(None)), session=session,
                      retry=RetryPolicy(max_tries=3, base=0.0, max_wait=0.0))


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock() as rsps:
        yield rsps


def test_client_credentials_in_the_body_with_scope_and_extra_headers(mocked: responses.RequestsMock) -> None:
    mocked.post(TOKEN_URL, json=token_body("tok-1"))
    mocked.get(f"{API}/me", json={"id": 1})
    oauth = provider(OAuth2Settings(token_url=TOKEN_URL, scope="read write"), api_headers={"App-Key": "key-9"})
    assert api_client(oauth).get_json("/me") == {"id": 1}
    token_call, api_call = mocked.calls
    assert form(token_call) == {"grant_type": "client_credentials", "client_id": "app-1", "client_secret": SECRET,
                                "scope": "read write"}
    assert token_call.request.headers["Accept"] == "application/json"
    assert api_call.request.headers["Authorization"] == "Bearer tok-1" and api_call.request.headers["App-Key"] == "key-9"
    assert oauth.calls == 1


def test_password_grant_with_client_credentials_as_http_basic(mocked: responses.RequestsMock) -> None:
    mocked.post(TOKEN_URL, json=token_body("tok-1"))
    oauth = provider(OAuth2Settings(token_url=TOKEN_URL, grant="password", client_auth="basic"),
                     client_id="id@Tenant", client_secret="s:e/c", username="api-user", password=PASSWORD)
    token = oauth.fetch(requests.Session(), None)
    assert token.access_token == "tok-1" and token.expires_at > 0
    call = mocked.calls[0]
    assert form(call) == {"grant_type": "password", "username": "api-user", "password": PASSWORD}
    # RFC 6749 2.3.1: id and secret are form-encoded before they are joined and base64-encoded.
    assert call.request.headers["Authorization"] == "Basic " + base64.b64encode(b"id%40Tenant:s%3Ae%2Fc").decode()


def test_refresh_first_with_extra_form_fields_and_the_rotated_token_kept(mocked: responses.RequestsMock) -> None:
    mocked.post(TOKEN_URL, json=token_body("tok-2", refresh="r-2"))
    settings = OAuth2Settings(token_url=TOKEN_URL, extra_form={"refresh_token": {"redirect_uri": "urn:oob"}})
    token = provider(settings).fetch(requests.Session(), Token("old", 0, refresh_token="r-1"))
    assert form(mocked.calls[0]) == {"grant_type": "refresh_token", "refresh_token": "r-1", "redirect_uri": "urn:oob",
                                     "client_id": "app-1", "client_secret": SECRET}
    assert (token.access_token, token.refresh_token) == ("tok-2", "r-2")


def test_a_refresh_answer_without_a_new_refresh_token_keeps_the_old_one(mocked: responses.RequestsMock) -> None:
    mocked.post(TOKEN_URL, json=token_body("tok-2"))
    token = provider().fetch(requests.Session(), Token("old", 0, refresh_token="r-1"))
    assert token.refresh_token == "r-1"


def test_a_configured_refresh_token_is_used_once(mocked: responses.RequestsMock) -> None:
    mocked.post(TOKEN_URL, json=token_body("tok-1"))
    mocked.post(TOKEN_URL, json=token_body("tok-2"))
    oauth = provider(refresh_token="install-refresh")
    session = requests.Session()
    oauth.fetch(session, None)
    oauth.fetch(session, None)
    assert [form(c)["grant_type"] for c in mocked.calls] == ["refresh_token", "client_credentials"]
    assert form(mocked.calls[0])["refresh_token"] == "install-refresh"


def test_a_refused_refresh_falls_back_to_the_configured_grant(mocked: responses.RequestsMock) -> None:
    mocked.post(TOKEN_URL, status=400, json={"error": "invalid_grant", "error_description": "refresh token expired"})
    mocked.post(TOKEN_URL, json=token_body("tok-3", refresh="r-3"))
    oauth = provider(OAuth2Settings(token_url=TOKEN_URL, grant="password", scope="api"), username="u", password=PASSWORD)
    token = oauth.fetch(requests.Session(), Token("old", 0, refresh_token="r-1"))
    assert [form(c)["grant_type"] for c in mocked.calls] == ["refresh_token", "password"]
    assert "scope" not in form(mocked.calls[0]) and form(mocked.calls[1])["scope"] == "api"
    assert token.access_token == "tok-3" and oauth.calls == 2


def test_a_refused_refresh_is_final_when_the_deployment_says_so(mocked: responses.RequestsMock) -> None:
    mocked.post(TOKEN_URL, status=400, json={"error": "invalid_grant", "error_description": "refresh token used"})
    oauth = provider(OAuth2Settings(token_url=TOKEN_URL, fall_back_after_refused_refresh=False), refresh_token="r-1")
    with pytest.raises(AuthError) as refused:
        oauth.fetch(requests.Session(), None)
    assert refused.value.message.startswith("token request refused:") and "refresh token used" in refused.value.message
    assert len(mocked.calls) == 1


def test_the_refresh_token_grant_alone_has_nothing_to_fall_back_to(mocked: responses.RequestsMock) -> None:
    oauth = provider(OAuth2Settings(token_url=TOKEN_URL, grant="refresh_token"))
    with pytest.raises(AuthError, match="authorize the app again"):
        oauth.fetch(requests.Session(), None)
    assert len(mocked.calls) == 0


@pytest.mark.parametrize("status, body, error", [
    (401, {"error": "invalid_client"}, AuthError),
    (400, {"error": "unauthorized_client"}, AuthError),
    (403, {"error": "access_denied"}, AuthError),
    (400, {"message": "Bad request"}, FatalError),  # not an OAuth refusal: the vendor refused the request itself
])
def test_token_endpoint_refusals_are_auth_errors_without_the_secret(mocked: responses.RequestsMock, status: int,
                                                                     body: dict[str, str], error: type) -> None:
    mocked.post(TOKEN_URL, status=status, json=body)
    oauth = provider()
    with pytest.raises(error) as caught:
        oauth.fetch(requests.Session(), None)
    assert type(caught.value) is error
    assert SECRET not in f"{caught.value} {caught.value.to_dict()}"


def test_a_transient_token_failure_is_retried_by_the_call_it_was_for(mocked: responses.RequestsMock) -> None:
    mocked.post(TOKEN_URL, status=502, json={"message": "bad gateway"})
    mocked.post(TOKEN_URL, json=token_body("tok-1"))
    mocked.post(f"{API}/items", json={"id": 5})
    oauth = provider()
    # A create is never repeated after an ambiguous failure, but this one never left: the token did not come.
    assert api_client(oauth).send_json("POST", "/items", {"name": "x"}) == {"id": 5}
    assert [c.request.url for c in mocked.calls] == [TOKEN_URL, TOKEN_URL, f"{API}/items"]


def test_a_transient_failure_is_a_retriable_error_sent_once() -> None:
    with responses.RequestsMock() as rsps:
        rsps.post(TOKEN_URL, status=503, json={"message": "down"})
        with pytest.raises(RetriableError) as caught:
            provider().fetch(requests.Session(), None)
        assert len(rsps.calls) == 1 and caught.value.not_acted_on  # type: ignore[attr-defined]


def test_an_answer_without_an_access_token_is_fatal_and_the_ttl_falls_back(mocked: responses.RequestsMock) -> None:
    mocked.post(TOKEN_URL, json={"token_type": "bearer"})
    mocked.post(TOKEN_URL, json=token_body("tok-1", expires_in=None))
    oauth = provider(OAuth2Settings(token_url=TOKEN_URL, default_ttl=5400))
    with pytest.raises(FatalError, match="without an access_token"):
        oauth.fetch(requests.Session(), None)
    assert oauth.fetch(requests.Session(), None).lifetime == 5400


def test_cache_key_names_the_credential_set_without_a_secret() -> None:
    plain = provider()
    user = provider(OAuth2Settings(token_url=TOKEN_URL, grant="password", scope="api"), username="u", password=PASSWORD)
    assert plain.cache_key == "login.example.com:app-1:client_credentials"
    assert user.cache_key.startswith("login.example.com:app-1:u:") and user.cache_key != provider(
        OAuth2Settings(token_url=TOKEN_URL, grant="password", scope="api offline"), username="u").cache_key
    for key in (plain.cache_key, user.cache_key):
        assert SECRET not in key and PASSWORD not in key


def test_secrets_given_to_the_provider_are_redacted_from_messages() -> None:
    provider(refresh_token="refresh-secret-123", api_headers={"App-Key": "app-key-secret-456"}, password=PASSWORD)
    text = redact_text(f"{SECRET} refresh-secret-123 app-key-secret-456 {PASSWORD}")
    assert not any(s in text for s in (SECRET, "refresh-secret-123", "app-key-secret-456", PASSWORD))


def test_token_client_follows_the_session_it_is_given(mocked: responses.RequestsMock) -> None:
    mocked.post(TOKEN_URL, json=token_body("tok-1"))
    mocked.post(TOKEN_URL, json=token_body("tok-2"))
    oauth = provider()
    oauth.fetch(requests.Session(), None)
    oauth.fetch(requests.Session(), None)
    assert oauth.calls == 2  # calls made through an earlier session still count
