"""Who may call: OAuth 2 at `/identity/connect/...`, cookie sessions at `/entity/auth/...`,
and the licence's API-user limit, which counts open sessions and refuses a sign-in over it
with "API Login Limit" (not a 429)."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import Response, request

from sandboxes.acumatica.model import AUTH_CODE_TTL_SECONDS, NOT_AUTHORIZED, SCOPES, ApiError
from sandboxes.kit.routes import json_response
from sandboxes.kit.tokens import IssuedToken, bearer_token


@dataclass
class Principal:
    kind: str  # "oauth" or "cookie"
    ident: str
    scopes: tuple[str, ...]
    branch: str | None = None
    issued: IssuedToken | None = None


class LicenseGate:
    """Concurrent-request slots with a bounded queue, as the license console describes."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.active = 0
        self.waiting = 0

    def enter(self, limit: int | None, queue: int, timeout: float) -> bool:
        with self.cond:
            if not limit or self.active < limit:
                self.active += 1
                return True
            if self.waiting >= queue:
                return False
            self.waiting += 1
            deadline = time.monotonic() + timeout
            try:
                while self.active >= limit:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self.cond.wait(remaining)
                self.active += 1
                return True
            finally:
                self.waiting -= 1

    def leave(self) -> None:
        with self.cond:
            self.active -= 1
            self.cond.notify()


class AuthMixin:
    """The identity server and sign-in of an `AcumaticaSandbox`."""

    @staticmethod
    def _oauth_error(error: str, description: str | None = None, status: int = 400) -> Response:
        body = {"error": error}
        if description:
            body["error_description"] = description
        return json_response(body, status, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _discovery(self) -> Response:
        base = f"{self.base_url}/identity"
        return self._json({"issuer": base, "authorization_endpoint": f"{base}/connect/authorize",
                           "token_endpoint": f"{base}/connect/token", "scopes_supported": sorted(SCOPES),
                           "grant_types_supported": ["authorization_code", "password", "refresh_token"],
                           "response_types_supported": ["code"],
                           "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"]})

    def _client_ok(self, client_id: str | None, client_secret: str | None) -> bool:
        if not client_id or "@" not in client_id:
            return False
        guid, tenant = client_id.rsplit("@", 1)
        return (guid.upper() == self.client_guid and tenant.casefold() == self.settings.tenant.casefold()
                and secrets.compare_digest(client_secret or "", self.client_secret))

    def _issue(self, subject: str, scopes: tuple[str, ...], client_id: str) -> Response:
        ttl = self.settings.token_ttl
        access, refresh = self.tokens.issue(subject, ttl, scopes=scopes, with_refresh="offline_access" in scopes,
                                            extra={"kind": "access", "client_id": client_id.upper()})
        with self.lock:
            self.stats.tokens_issued += 1
        body: dict[str, Any] = {"access_token": access, "expires_in": ttl, "token_type": "Bearer",
                                "scope": " ".join(scopes)}
        if refresh:
            body["refresh_token"] = refresh
        return self._json(body, 200, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _token(self) -> Response:
        if request.mimetype != "application/x-www-form-urlencoded":
            return self._oauth_error("invalid_request", "The request must be form-encoded.")
        form = request.form
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if request.authorization is not None and request.authorization.type == "basic":
            client_id = request.authorization.username or client_id
            client_secret = request.authorization.password or client_secret
        grant = form.get("grant_type")
        if not grant:
            return self._oauth_error("invalid_request", "grant_type is missing")
        if grant not in ("password", "refresh_token", "authorization_code"):
            return self._oauth_error("unsupported_grant_type")
        if not self._client_ok(client_id, client_secret):
            self.stats.bump("token_refused")
            return self._oauth_error("invalid_client")
        assert client_id is not None
        if grant == "password":
            username, password = form.get("username"), form.get("password")
            if not username or not password:
                return self._oauth_error("invalid_request", "username and password are required")
            if username.casefold() != self.username.casefold() or not secrets.compare_digest(password, self.password):
                self.stats.bump("token_refused")
                return self._oauth_error("invalid_grant", "invalid_username_or_password")
            requested = tuple(sorted(set((form.get("scope") or "").split())))
            if not requested or not set(requested) <= SCOPES:
                return self._oauth_error("invalid_scope")
            return self._issue(self.username, requested, client_id)
        if grant == "refresh_token":
            issued = self.tokens.use_refresh(form.get("refresh_token") or "")
            if (issued is None or issued.expires_at <= time.time()
                    or issued.extra.get("client_id") != client_id.upper()):
                self.stats.bump("token_refused")
                return self._oauth_error("invalid_grant")
            return self._issue(issued.subject, issued.scopes, client_id)
        code = form.get("code") or ""
        with self.lock:
            grant_info = self.auth_codes.pop(code, None)
        if (grant_info is None or grant_info["expires_at"] <= time.time()
                or grant_info["client_id"] != client_id.upper()
                or grant_info["redirect_uri"] != form.get("redirect_uri")):
            return self._oauth_error("invalid_grant")
        return self._issue(self.username, grant_info["scopes"], client_id)

    def _authorize(self) -> Response:
        args = request.args
        client_id = args.get("client_id") or ""
        guid = client_id.rsplit("@", 1)[0].upper() if "@" in client_id else ""
        if guid != self.client_guid:
            return self._oauth_error("unauthorized_client")
        if args.get("response_type") != "code":
            return self._oauth_error("unsupported_response_type")
        redirect_uri = args.get("redirect_uri") or ""
        if not redirect_uri.startswith(("http://", "https://")):
            return self._oauth_error("invalid_request", "redirect_uri is required")
        scopes = tuple(sorted(set((args.get("scope") or "api").split())))
        if not set(scopes) <= SCOPES:
            return self._oauth_error("invalid_scope")
        code = secrets.token_urlsafe(24)
        with self.lock:
            self.auth_codes[code] = {"client_id": client_id.upper(), "redirect_uri": redirect_uri, "scopes": scopes,
                                     "expires_at": time.time() + AUTH_CODE_TTL_SECONDS}
        query = {"code": code, "scope": " ".join(scopes)}
        if args.get("state"):
            query["state"] = args["state"]
        separator = "&" if "?" in redirect_uri else "?"
        response = Response(status=302)
        response.headers["Location"] = f"{redirect_uri}{separator}{urlencode(query)}"
        return response

    # ---- cookie sessions ----------------------------------------------------------------------------

    def _login(self) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return self.error_response(400, "The request body must be a JSON object with name and password.")
        name, password = body.get("name"), body.get("password")
        tenant, branch = body.get("tenant"), body.get("branch")
        ok = (isinstance(name, str) and isinstance(password, str)
              and name.casefold() == self.username.casefold()
              and secrets.compare_digest(password, self.password)
              and (not tenant or str(tenant).casefold() == self.settings.tenant.casefold()))
        if not ok:
            self.stats.bump("login_refused")
            return self.error_response(self.settings.login_failure_status, "Invalid credentials. Please try again.")
        if branch and not self._branch_known(branch):
            return self.error_response(self.settings.login_failure_status,
                                       f"Branch '{branch}' cannot be found in the system.")
        with self.lock:
            previous = request.cookies.get(".ASPXAUTH")
            if previous and previous in self.sessions:
                self.sessions.pop(previous).expires_at = 0
            limit = self.limits.api_users
            if limit and self.active_sessions() >= limit:
                self.stats.bump("login_limit_refused")
                return self.error_response(
                    self.limits.login_limit_status,
                    f"API Login Limit: the license allows {limit} concurrent API users and all are signed in. "
                    "Sign out of unused sessions or try again later.")
            sid, _ = self.tokens.issue(name, self.settings.session_timeout, scopes=("api",),
                                       extra={"kind": "session", "branch": branch})
            issued = self.tokens.check(sid)
            assert issued is not None
            self.sessions[sid] = issued
            self.stats.bump("sessions_opened")
        response = Response(status=204)
        response.set_cookie("ASP.NET_SessionId", secrets.token_hex(12), path="/", httponly=True)
        response.set_cookie(".ASPXAUTH", sid, path="/", httponly=True)
        response.set_cookie("Locale", str(body.get("locale") or "en-US"), path="/")
        return response

    def _logout(self) -> Response:
        sid = request.cookies.get(".ASPXAUTH")
        with self.lock:
            if sid and sid in self.sessions:
                self.sessions.pop(sid).expires_at = 0
                self._session_locks.pop(sid, None)
                self.stats.bump("sessions_closed")
            bearer = self._bearer()
            if bearer and bearer in self.sessions:
                self.sessions.pop(bearer)
                self.stats.bump("sessions_closed")
        response = Response(status=204)
        for name in (".ASPXAUTH", "ASP.NET_SessionId"):
            response.delete_cookie(name, path="/")
        return response

    @staticmethod
    def _bearer() -> str | None:
        return bearer_token(request.headers.get("Authorization", ""))

    def _authenticate(self) -> Principal:
        bearer = self._bearer()
        if bearer is not None:
            issued = self.tokens.check(bearer)
            if issued is None or issued.extra.get("kind") != "access":
                raise ApiError(401, NOT_AUTHORIZED, body={"message": NOT_AUTHORIZED})
            if "api" not in issued.scopes:
                raise ApiError(403, "The access token does not grant the 'api' scope.")
            if self.settings.oauth_sessions_count:
                self._hold_oauth_session(bearer, issued)
            return Principal("oauth", bearer, issued.scopes, None, issued)
        sid = request.cookies.get(".ASPXAUTH")
        if sid:
            issued = self.tokens.check(sid)
            if issued is not None and issued.extra.get("kind") == "session" and sid in self.sessions:
                issued.expires_at = time.time() + self.settings.session_timeout  # sliding expiry
                return Principal("cookie", sid, issued.scopes, issued.extra.get("branch"), issued)
        raise ApiError(401, NOT_AUTHORIZED, body={"message": NOT_AUTHORIZED})

    def _hold_oauth_session(self, bearer: str, issued: IssuedToken) -> None:
        with self.lock:
            if bearer in self.sessions:
                return
            limit = self.limits.api_users
            if limit and self.active_sessions() >= limit:
                raise ApiError(self.limits.login_limit_status,
                               f"API Login Limit: the license allows {limit} concurrent API users.")
            self.sessions[bearer] = issued

