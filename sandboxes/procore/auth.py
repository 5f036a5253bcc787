"""Procore's front door: OAuth at `/oauth/...`, and on every REST call the rate windows, the
bearer token and the `Procore-Company-Id` header, in that order.

The two rate windows per app, hourly and the 10-second spike window, both count every call;
the `X-Rate-Limit-*` headers report the one closer to exhaustion."""

from __future__ import annotations

import collections
import math
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from flask import Flask, Response, g, request

from sandboxes.kit.routes import json_response
from sandboxes.kit.tokens import IssuedToken, bearer_token

from .values import (API, AUTH_CODE_TTL, HOURLY_WINDOW, INVALID_CLIENT_DESCRIPTION, INVALID_GRANT_DESCRIPTION,
                     INVALID_REFRESH_DESCRIPTION, INVALID_TOKEN_MESSAGE, MISSING_COMPANY_MESSAGE,
                     NOT_CONNECTED_MESSAGE, OOB_REDIRECT, RATE_LIMIT_MESSAGE)

if TYPE_CHECKING:
    from .sandbox import ProcoreSandbox, Settings

State = tuple[bool, int, int, int]  # allowed, limit, remaining, reset (epoch seconds)


class Windows:
    """Calls per app and window."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[tuple[str, str], collections.deque[float]] = collections.defaultdict(collections.deque)

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()

    def hit(self, key: str, settings: "Settings", *, count: bool = True) -> State | None:
        """The state of the window closest to exhaustion (None: no window is on); the call counts
        in all when allowed."""
        windows = ([("hourly", int(settings.hourly_limit), HOURLY_WINDOW)] if settings.hourly_limit else []) + (
            [("spike", int(settings.spike_limit), float(settings.spike_window))] if settings.spike_limit else [])
        if not windows:
            return None
        now = time.time()
        with self._lock:
            states = []
            for name, limit, seconds in windows:
                calls = self._calls[(key, name)]
                while calls and calls[0] <= now - seconds:
                    calls.popleft()
                states.append((limit, seconds, calls))
            allowed = all(len(calls) < limit for limit, _, calls in states)
            if allowed and count:
                for _, _, calls in states:
                    calls.append(now)
            limit, seconds, calls = min(states, key=lambda s: s[0] - len(s[2]))
            reset = math.ceil((calls[0] if calls else now) + seconds)
            return allowed, limit, max(0, limit - len(calls)), reset


GRANTS = ("client_credentials", "authorization_code", "refresh_token")
COMPANYLESS = (f"{API}/me", f"{API}/companies")  # the calls that need no Procore-Company-Id


def token_record(sb: "ProcoreSandbox") -> IssuedToken | None:
    """The live token of the request's bearer token, unless revoked."""
    token = bearer_token(request.headers.get("Authorization", "")) or ""
    return None if not token or token in sb._revoked else sb.tokens.check(token)


def register_guard(sb: "ProcoreSandbox", app: Flask) -> None:
    def rate_key(issued: IssuedToken | None) -> str:
        return issued.subject if issued else f"anonymous:{request.remote_addr}"
    @app.before_request
    def _guard() -> Response | None:
        if not request.path.startswith("/rest/"):
            return None
        issued = token_record(sb)
        g.rate_state = state = sb._windows.hit(rate_key(issued), sb.settings)
        if state is not None and not state[0]:
            wait = {"Retry-After": str(max(1, state[3] - int(time.time())))} if sb.settings.send_retry_after else {}
            return Response(RATE_LIMIT_MESSAGE, status=429, mimetype="text/plain", headers=wait)
        if issued is None:
            return json_response({"error": INVALID_TOKEN_MESSAGE}, 401, {"WWW-Authenticate": (
                f'Bearer realm="Procore", error="invalid_token", error_description="{INVALID_TOKEN_MESSAGE}"')})
        if request.path in COMPANYLESS:
            return None
        header = request.headers.get("Procore-Company-Id", "").strip()
        if not header:
            return json_response({"error": MISSING_COMPANY_MESSAGE}, int(sb.settings.missing_company_status))
        if header != str(sb.company_id):
            return json_response({"error": NOT_CONNECTED_MESSAGE}, 403)
        return None

    @app.after_request
    def _rate_headers(response: Response) -> Response:
        if not request.path.startswith("/rest/") or "X-Rate-Limit-Limit" in response.headers:
            return response
        state = getattr(g, "rate_state", None)
        if state is None:
            state = sb._windows.hit(rate_key(token_record(sb)), sb.settings, count=False)
        if state is not None:
            _, limit, remaining, reset = state
            response.headers.update({"X-Rate-Limit-Limit": str(limit), "X-Rate-Limit-Remaining": str(remaining),
                                     "X-Rate-Limit-Reset": str(reset)})
        return response


def register_oauth(sb: "ProcoreSandbox", app: Flask) -> None:
    def oauth_error(status: int, code: str, description: str) -> Response:
        return json_response({"error": code, "error_description": description}, status)

    def params() -> dict[str, str]:
        if request.mimetype == "application/json":
            return {k: str(v) for k, v in (request.get_json(silent=True) or {}).items() if v is not None}
        return dict(request.form.items())

    def issue(with_refresh: bool, owner: int | None) -> Response:
        created = int(time.time())
        access, refresh = sb.tokens.issue(sb.client_id, sb.token_ttl, with_refresh=with_refresh,
                                          extra={"created_at": created, "owner": owner})
        sb.stats.bump("tokens_issued")
        body: dict[str, Any] = {"access_token": access, "token_type": "bearer", "expires_in": sb.token_ttl,
                                "created_at": created}
        if refresh:
            body["refresh_token"] = refresh
            with sb.lock:
                sb._pairs[access] = refresh
        return json_response(body, 200, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    @app.post("/oauth/token")
    def _token() -> Response:
        form = params()
        grant = form.get("grant_type", "")
        if not grant:
            return oauth_error(400, "invalid_request", "The request is missing a required parameter: grant_type.")
        if grant not in GRANTS:
            return oauth_error(400, "unsupported_grant_type",
                               "The authorization grant type is not supported by the authorization server.")
        if form.get("client_id") != sb.client_id or not secrets.compare_digest(
                form.get("client_secret", "").encode(), sb.client_secret.encode()):
            return oauth_error(401, "invalid_client", INVALID_CLIENT_DESCRIPTION)
        if grant == "client_credentials":
            return issue(False, sb.user_id)
        if grant == "authorization_code":
            with sb.lock:
                entry = sb._codes.pop(form.get("code", ""), None)
            if entry is None or entry[2] < time.time() or entry[:2] != (sb.client_id, form.get("redirect_uri", "")):
                return oauth_error(400, "invalid_grant", INVALID_GRANT_DESCRIPTION)
            return issue(True, sb.user_id)
        refresh = form.get("refresh_token", "")
        record = sb.tokens.use_refresh(refresh) if refresh else None
        if record is None or record.subject != sb.client_id:
            return oauth_error(400, "invalid_grant", INVALID_REFRESH_DESCRIPTION)
        return issue(True, record.extra.get("owner"))

    @app.get("/oauth/authorize")
    def _authorize() -> Response:
        if request.args.get("client_id") != sb.client_id:
            return oauth_error(401, "invalid_client", INVALID_CLIENT_DESCRIPTION)
        if request.args.get("response_type") != "code":
            return oauth_error(400, "unsupported_response_type",
                               "The authorization server does not support this response type.")
        redirect_uri = request.args.get("redirect_uri", "")
        if not redirect_uri:
            return oauth_error(400, "invalid_request", "The request is missing a required parameter: redirect_uri.")
        code = secrets.token_urlsafe(24)
        with sb.lock:
            sb._codes[code] = (sb.client_id, redirect_uri, time.time() + AUTH_CODE_TTL)
        if redirect_uri == OOB_REDIRECT:
            location = f"{request.host_url.rstrip('/')}/oauth/authorize/native?code={code}"
        else:
            query = {"code": code, **({"state": request.args["state"]} if "state" in request.args else {})}
            location = f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{urlencode(query)}"
        return Response("", status=302, headers={"Location": location})

    @app.get("/oauth/authorize/native")
    def _native() -> Response:
        return json_response({"code": request.args.get("code", "")})

    @app.post("/oauth/revoke")
    def _oauth_revoke() -> Response:
        token = params().get("token", "")
        with sb.lock:
            if sb.tokens.use_refresh(token) is None and token:
                sb._revoked.add(token)
                paired = sb._pairs.pop(token, None)
                if paired:
                    sb.tokens.use_refresh(paired)
        return json_response({}, 200)

    @app.get("/oauth/token/info")
    def _token_info() -> Response:
        issued = token_record(sb)
        if issued is None:
            return oauth_error(401, "invalid_token", INVALID_TOKEN_MESSAGE)
        return json_response({"resource_owner_id": issued.extra.get("owner"), "scope": [],
                              "expires_in": max(0, int(issued.expires_at - time.time())),
                              "application": {"uid": issued.subject}, "created_at": issued.extra.get("created_at")})
