"""One OAuth 2.0 token provider (RFC 6749) for every vendor that issues bearer tokens.

A vendor declares how its token endpoint wants to be asked (`OAuth2Settings`: the grant,
where the client authenticates, extra form fields and headers) and `OAuth2Provider` does
the rest through the fleet's `TokenCache`:

- The refresh grant comes first whenever the token held carries a refresh token (or the
  credentials came with one, good for a single use). A refresh token the vendor refuses
  falls back to the configured grant, unless the deployment says it must not. An answer
  without a new refresh token keeps the old one (RFC 6749 section 6).
- The configured grant is `client_credentials`, `password` or `refresh_token` (an app
  installed by a person holds only a refresh token: nothing to fall back to).
- A refused token request is an `AuthError` carrying the vendor's own words; a transient
  failure is a `RetriableError` the calling request retries (the API call it was for was
  never sent, so even a create can go again).
"""

from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping
from urllib.parse import quote, urlsplit

import requests

from mlconnector.http.auth import NoAuth, Token, TokenProvider
from mlconnector.http.client import DEFAULT_TIMEOUT, ErrorExtractor, HttpClient, RetryPolicy, default_error_text
from mlconnector.http.errors import AuthError, FatalError, RetriableError
from mlconnector.redaction import register_secret

GrantType = Literal["client_credentials", "password", "refresh_token"]
ClientAuth = Literal["body", "basic"]

DEFAULT_TOKEN_TTL = 3600  # seconds, when a token answer omits expires_in and the vendor names no lifetime
REFUSED_STATUSES = frozenset({400, 401, 403})  # RFC 6749 5.2: the token endpoint's refusals
# The calling request's own retries cover the token call; retrying here too would square them.
TOKEN_CALL_RETRY = RetryPolicy(max_tries=1)


@dataclass(frozen=True)
class OAuth2Settings:
    """How one vendor's token endpoint wants to be asked. No secret lives here."""

    token_url: str
    grant: GrantType = "client_credentials"
    client_auth: ClientAuth = "body"  # client id + secret in the form, or as HTTP Basic (RFC 6749 2.3.1)
    scope: str | None = None  # sent with the configured grant; a refresh keeps the granted scope
    extra_form: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # per grant type: fields beside the standard ones
    token_headers: Mapping[str, str] = field(default_factory=lambda: {"Accept": "application/json"})
    default_ttl: float = DEFAULT_TOKEN_TTL
    timeout: tuple[float, float] = DEFAULT_TIMEOUT
    error_extractor: ErrorExtractor = default_error_text
    fall_back_after_refused_refresh: bool = True


class OAuth2Provider(TokenProvider):
    """Bearer tokens from one OAuth 2.0 token endpoint for one set of credentials."""

    def __init__(
        self,
        vendor: str,
        settings: OAuth2Settings,
        *,
        client_id: str,
        client_secret: str = "",
        username: str = "",
        password: str = "",
        refresh_token: str | None = None,
        api_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.vendor = vendor
        self.settings = settings
        self.client_id = client_id
        self._client_secret = client_secret
        self.username = username
        self._password = password
        self._pending_refresh = refresh_token or None  # the configured refresh token: good for one use
        self._api_headers = dict(api_headers or {})
        for secret in (client_secret, password, refresh_token, *self._api_headers.values()):
            register_secret(secret)
        self._lock = threading.Lock()
        self._client: HttpClient | None = None
        self._retired_calls = 0

    @property
    def cache_key(self) -> str:
        """Token host, client and subject (the user, else the grant), plus the scope asked for."""
        parts = [urlsplit(self.settings.token_url).netloc, self.client_id, self.username or self.settings.grant]
        if self.settings.scope:
            parts.append(hashlib.sha256(self.settings.scope.encode()).hexdigest()[:8])
        return ":".join(parts)

    @property
    def calls(self) -> int:
        """Token requests sent, for API-economy accounting."""
        return self._retired_calls + (self._client.calls if self._client else 0)

    def extra_headers(self) -> dict[str, str]:
        return dict(self._api_headers)

    def fetch(self, session: requests.Session, previous: Token | None) -> Token:
        refresh = self._take_refresh_token(previous)
        if refresh:
            try:
                return self._request(session, "refresh_token", {"refresh_token": refresh}, keep_refresh=refresh)
            except (AuthError, FatalError):
                if self.settings.grant == "refresh_token" or not self.settings.fall_back_after_refused_refresh:
                    raise
        if self.settings.grant == "refresh_token":
            raise AuthError("no refresh token left to renew the session with: authorize the app again",
                            vendor=self.vendor, endpoint=self._endpoint)
        fields: dict[str, str] = {}
        if self.settings.grant == "password":
            fields = {"username": self.username, "password": self._password}
        if self.settings.scope:
            fields["scope"] = self.settings.scope
        return self._request(session, self.settings.grant, fields)

    def _take_refresh_token(self, previous: Token | None) -> str | None:
        with self._lock:
            held = previous.refresh_token if previous is not None and previous.refresh_token else None
            refresh = held or self._pending_refresh
            self._pending_refresh = None
            return refresh

    @property
    def _endpoint(self) -> str:
        return urlsplit(self.settings.token_url).path or "token"

    def _request(self, session: requests.Session, grant: str, fields: dict[str, str],
                 keep_refresh: str | None = None) -> Token:
        form = {"grant_type": grant, **fields, **self.settings.extra_form.get(grant, {})}
        headers = dict(self.settings.token_headers)
        if self.settings.client_auth == "basic":
            pair = f"{quote(self.client_id, safe='')}:{quote(self._client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form.update({"client_id": self.client_id, "client_secret": self._client_secret})
        try:
            response = self._token_client(session).request(
                "POST", self.settings.token_url, data=form, headers=headers, endpoint=self._endpoint)
        except RetriableError as error:
            error.not_acted_on = True  # type: ignore[attr-defined]  # the API call it was for never left
            raise
        except (AuthError, FatalError) as error:
            if not _refused(error):
                raise
            raise AuthError(f"token request refused: {error.message}", vendor=self.vendor, status=error.status,
                            details=error.details, endpoint=self._endpoint) from None
        try:
            token = Token.from_oauth(response.json(), default_ttl=self.settings.default_ttl)
        except (ValueError, KeyError, TypeError):
            raise FatalError("token answer without an access_token", vendor=self.vendor, status=response.status_code,
                             endpoint=self._endpoint) from None
        if token.refresh_token is None and keep_refresh:
            token.refresh_token = keep_refresh
        return token

    def _token_client(self, session: requests.Session) -> HttpClient:
        if self._client is None or self._client.session is not session:
            if self._client is not None:
                self._retired_calls += self._client.calls
            self._client = HttpClient(
                vendor=self.vendor, base_url=self.settings.token_url, auth=NoAuth(), session=session,
                timeout=self.settings.timeout, retry=TOKEN_CALL_RETRY, error_extractor=self.settings.error_extractor,
            )
        return self._client


def _refused(error: AuthError | FatalError) -> bool:
    """401 always; 400 and 403 when the body is an OAuth error (`{"error": "invalid_grant"}`)."""
    if isinstance(error, AuthError) or error.status == 401:
        return True
    details: Any = error.details
    return error.status in REFUSED_STATUSES and isinstance(details, Mapping) and isinstance(details.get("error"), str)


__all__ = ["ClientAuth", "GrantType", "OAuth2Provider", "OAuth2Settings"]
