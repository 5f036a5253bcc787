"""The HTTP surface: OAuth 2 at `/identity/connect/...`, cookie sessions at `/entity/auth/...`,
`/entity/{Endpoint}/{Version}/...` (list, get, PUT upsert, DELETE, files, actions polled
through a status URL), `/entity` itself, Acumatica's error shapes, the licence's limits, and
the sandbox's own `/_sandbox/license|settings|sessions`. The API-user limit counts open
sessions and refuses a sign-in over it with "API Login Limit" (not a 429)."""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import time
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, g, has_request_context, request

from sandboxes.acumatica.model import (
    _BY_LOWER, _VALUE_TYPES, AUTH_CODE_TTL_SECONDS, ENDPOINT_NAME, ERROR_TYPE, NOT_AUTHORIZED, NOT_BALANCED, SCOPES,
    AcumaticaSettings, ApiError, EntityDef, LicenseLimits, Operation, Shape, Rec, compile_filter, parse_dt,
    parse_filter,
)
from sandboxes.base import RateWindow
from sandboxes.kit import odata
from sandboxes.kit.routes import json_response, model_route
from sandboxes.kit.tokens import IssuedToken, bearer_token

GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # on every identity-server answer


class LicenseGate:
    """Concurrent-request slots with a bounded queue, as the license console describes."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.active = 0
        self.waiting = 0

    def enter(self, limit: int | None, queue: int, timeout: float) -> bool:
        with self.cond:
            if limit and self.active >= limit:
                if self.waiting >= queue:
                    return False
                self.waiting += 1
                try:
                    if not self.cond.wait_for(lambda: self.active < limit, timeout):
                        return False
                finally:
                    self.waiting -= 1
            self.active += 1
            return True

    def leave(self) -> None:
        with self.cond:
            self.active -= 1
            self.cond.notify()


class RoutesMixin:
    """The identity server, sign-in and vendor routes of an `AcumaticaSandbox`."""

    # ---- vendor error shapes ------------------------------------------------------------------------

    def error_response(self, status: int, message: str, error_type: str = ERROR_TYPE) -> Response:
        """Acumatica's error body: {message, exceptionMessage, exceptionType}, and a stack trace on a 5xx."""
        body = {"message": "An error has occurred.", "exceptionMessage": message, "exceptionType": error_type}
        if status >= 500:
            body["stackTrace"] = "   at PX.Api.ContractBased.EntityService.Process(...)"
        return json_response(body, status)

    def rate_limited_response(self, retry_after: float) -> Response:
        response = self.error_response(429, "The number of API requests exceeds the limit set by the license.",
                                       "PX.Api.ApiRequestsLimitExceededException")
        if self.limits.retry_after_header:
            response.headers["Retry-After"] = str(max(1, int(round(retry_after + 0.499))))
        return response

    def _api_error(self, exc: ApiError) -> Response:
        if exc.body is None:
            return self.error_response(exc.status, exc.message)
        body = {k: v for k, v in exc.body.items() if k != "_errors"} if isinstance(exc.body, dict) else exc.body
        return json_response(body, exc.status)

    # ---- routes -------------------------------------------------------------------------------------

    def register_vendor_routes(self, app: Flask) -> None:
        app.add_url_rule("/identity/connect/token", "acu_token", self._token, methods=["POST"])
        app.add_url_rule("/identity/connect/authorize", "acu_authorize", self._authorize, methods=["GET"])
        app.add_url_rule("/identity/.well-known/openid-configuration", "acu_discovery", self._discovery)
        app.add_url_rule("/entity/auth/login", "acu_login", self._login, methods=["POST"])
        app.add_url_rule("/entity/auth/logout", "acu_logout", self._logout, methods=["POST"])
        app.add_url_rule("/entity", "acu_endpoints", self._endpoints_route, methods=["GET"])
        app.add_url_rule("/entity/<endpoint>/<version>/<path:rest>", "acu_entity", self._entity_route,
                         methods=["GET", "PUT", "POST", "DELETE"])
        model_route(app, "/_sandbox/license", LicenseLimits, lambda: self.limits, self._apply_limits)
        model_route(app, "/_sandbox/settings", AcumaticaSettings, lambda: self.settings,
                    lambda settings: setattr(self, "settings", settings))
        app.add_url_rule("/_sandbox/sessions", "acu_sessions", methods=["GET"], view_func=lambda: json_response(
            {"active": self.active_sessions(), "api_users": self.limits.api_users}))

    def _apply_limits(self, limits: LicenseLimits) -> None:
        self.limits = limits
        self._rpm = RateWindow(limits.requests_per_minute, 60.0)


    # ---- OAuth 2 ------------------------------------------------------------------------------------

    @staticmethod
    def _oauth_error(error: str, description: str | None = None) -> Response:
        body = {"error": error, "error_description": description} if description else {"error": error}
        return json_response(body, 400, NO_STORE)

    def _discovery(self) -> Response:
        base = f"{self.base_url}/identity"
        return json_response({"issuer": base, "authorization_endpoint": f"{base}/connect/authorize",
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
        body: Rec = {"access_token": access, "expires_in": ttl, "token_type": "Bearer",
                                "scope": " ".join(scopes)}
        if refresh:
            body["refresh_token"] = refresh
        return json_response(body, 200, NO_STORE)

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
        with self.lock:
            grant_info = self.auth_codes.pop(form.get("code") or "", None)
        if (grant_info is None or grant_info["expires_at"] <= time.time()
                or grant_info["client_id"] != client_id.upper()
                or grant_info["redirect_uri"] != form.get("redirect_uri")):
            return self._oauth_error("invalid_grant")
        return self._issue(self.username, grant_info["scopes"], client_id)

    def _authorize(self) -> Response:
        args = request.args
        client_id = args.get("client_id") or ""
        if "@" not in client_id or client_id.rsplit("@", 1)[0].upper() != self.client_guid:
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
        query = {"code": code, "scope": " ".join(scopes), **({"state": args["state"]} if args.get("state") else {})}
        response = Response(status=302)
        response.headers["Location"] = f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{urlencode(query)}"
        return response

    # ---- cookie sessions and the API-user limit -----------------------------------------------------

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
            self.sessions[sid] = self.tokens.check(sid)
            self.stats.bump("sessions_opened")
        response = Response(status=204)
        response.set_cookie("ASP.NET_SessionId", secrets.token_hex(12), path="/", httponly=True)
        response.set_cookie(".ASPXAUTH", sid, path="/", httponly=True)
        response.set_cookie("Locale", str(body.get("locale") or "en-US"), path="/")
        return response

    def _logout(self) -> Response:
        sid, bearer = request.cookies.get(".ASPXAUTH"), bearer_token(request.headers.get("Authorization", ""))
        with self.lock:
            if sid and sid in self.sessions:
                self.sessions.pop(sid).expires_at = 0
                self._session_locks.pop(sid, None)
                self.stats.bump("sessions_closed")
            if bearer and bearer in self.sessions:
                self.sessions.pop(bearer)
                self.stats.bump("sessions_closed")
        response = Response(status=204)
        for name in (".ASPXAUTH", "ASP.NET_SessionId"):
            response.delete_cookie(name, path="/")
        return response

    def _authenticate(self) -> tuple[str, IssuedToken]:
        """The caller's token or session id, and what it was issued as (`kind` "access" or "session")."""
        bearer = bearer_token(request.headers.get("Authorization", ""))
        if bearer is not None:
            issued = self.tokens.check(bearer)
            if issued is None or issued.extra.get("kind") != "access":
                raise ApiError(401, NOT_AUTHORIZED, body={"message": NOT_AUTHORIZED})
            if "api" not in issued.scopes:
                raise ApiError(403, "The access token does not grant the 'api' scope.")
            if self.settings.oauth_sessions_count:  # a bearer token takes an API-user slot too
                with self.lock:
                    limit = self.limits.api_users
                    if bearer not in self.sessions and limit and self.active_sessions() >= limit:
                        raise ApiError(self.limits.login_limit_status,
                                       f"API Login Limit: the license allows {limit} concurrent API users.")
                    self.sessions[bearer] = issued
            return bearer, issued
        sid = request.cookies.get(".ASPXAUTH")
        issued = self.tokens.check(sid) if sid else None
        if issued is not None and issued.extra.get("kind") == "session" and sid in self.sessions:
            issued.expires_at = time.time() + self.settings.session_timeout  # sliding expiry
            return sid, issued
        raise ApiError(401, NOT_AUTHORIZED, body={"message": NOT_AUTHORIZED})

    # ---- the entity endpoint ------------------------------------------------------------------------

    def _endpoints_route(self) -> Response:
        """GET /entity: the instance's build and the web-service endpoints it publishes."""
        try:
            self._authenticate()
        except ApiError as exc:
            return self._api_error(exc)
        return json_response({"version": {"acumaticaBuildVersion": "23.209.0016"},
                              "endpoints": [{"name": ENDPOINT_NAME, "version": v,
                                             "href": f"{self.base_url}/entity/{ENDPOINT_NAME}/{v}/"}
                                            for v in self.settings.endpoint_versions]})

    def _entity_route(self, endpoint: str, version: str, rest: str) -> Response:
        try:
            ident, issued = self._authenticate()
            if endpoint != ENDPOINT_NAME or version not in self.settings.endpoint_versions:
                published = ", ".join(f"{ENDPOINT_NAME}/{v}" for v in self.settings.endpoint_versions)
                raise ApiError(404, f"The endpoint {endpoint}/{version} is not found. Published: {published}.")
            allowed, wait, _ = self._rpm.hit("license")
            if not allowed:
                self.stats.bump("license_rpm_refused")
                return self.rate_limited_response(wait)
            limits = self.limits
            if not self._gate.enter(limits.concurrent_requests, limits.request_queue, limits.queue_timeout):
                self.stats.bump("license_concurrency_refused")
                return self.rate_limited_response(1.0)
            try:
                # One request at a time per session, unless the token carries api:concurrent_access.
                lock: Any = contextlib.nullcontext()
                if issued.extra.get("kind") != "access" or "api:concurrent_access" not in issued.scopes:
                    with self.lock:
                        lock = self._session_locks.setdefault(ident, threading.Lock())
                with lock:
                    if self.settings.processing_ms:
                        time.sleep(self.settings.processing_ms / 1000)
                    g.acu_version = version
                    return self._dispatch(request.method, rest, issued.extra.get("branch"))
            finally:
                self._gate.leave()
        except ApiError as exc:
            return self._api_error(exc)
        except Exception as exc:  # a server fault still answers in the vendor's error shape
            return self.error_response(500, f"{type(exc).__name__}: {exc}")

    def _dispatch(self, method: str, rest: str, session_branch: str | None) -> Response:
        segments = [s for s in rest.split("/") if s != ""]
        if not segments:
            raise ApiError(404, "The entity name is missing from the URL.")
        if segments[0].lower() == "files" and method == "GET" and len(segments) == 2:
            return self._download(segments[1])
        d = _BY_LOWER.get(segments[0].lower())
        if d is None:
            raise ApiError(404, f"The entity '{segments[0]}' is not found in the endpoint.")
        branch = request.headers.get("PX-CbApiBranch") or session_branch
        if branch and not self._branch_known(branch):
            raise ApiError(400, f"Branch '{branch}' cannot be found in the system.")
        business_date = request.headers.get("PX-CbApiBusinessDate")
        if business_date and parse_dt(business_date) is None:
            raise ApiError(400, f"The business date '{business_date}' is not a valid date.")
        rest_segments = segments[1:]
        self._settle_operations()
        if method == "GET":
            if not rest_segments:
                return self._list(d)
            if rest_segments == ["$adHocSchema"]:
                return json_response(self._schema(d.shape))
            if len(rest_segments) == 3 and rest_segments[1].lower() == "status":
                return self._operation_status(d, rest_segments[0], rest_segments[2])
            with self.lock:
                return json_response(self._render(d, self._locate(d, rest_segments), 1, *self._shaping()))
        if method == "PUT":
            if len(rest_segments) >= 3 and rest_segments[-2].lower() == "files":
                return self._attach(d, rest_segments[:-2], rest_segments[-1])
            self._require_json()
            if rest_segments:
                raise ApiError(405, "PUT is allowed on the entity collection only.")
            return self._put(d, branch, business_date)
        if method == "POST":
            if len(rest_segments) != 1:
                raise ApiError(404, "No action is found at this address.")
            self._require_json()
            return self._invoke(d, rest_segments[0])
        if not rest_segments:
            raise ApiError(405, "DELETE needs a record id or key values.")
        with self.lock:
            self._remove(d, self._locate(d, rest_segments))
        return Response(status=204)

    @staticmethod
    def _require_json() -> None:
        if request.content_length and request.mimetype != "application/json":
            message = f"The request entity's media type '{request.mimetype}' is not supported for this resource."
            raise ApiError(415, message, body={"message": message})

    # ---- reading ------------------------------------------------------------------------------------

    @staticmethod
    def _int_arg(name: str) -> int | None:
        raw = request.args.get(name)
        if raw is None or raw == "":
            return None
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if value < 0:
            raise ApiError(400, f"The value '{raw}' of {name} is not a non-negative integer.")
        return value

    def _list(self, d: EntityDef) -> Response:
        top, skip = self._int_arg("$top"), self._int_arg("$skip") or 0
        text = request.args.get("$filter")
        predicate, terms = None, []
        if text:
            kinds = d.shape.kinds()
            node = parse_filter(text, kinds, d.name)
            compiled = compile_filter(node, kinds)
            predicate = lambda rec: compiled(rec) is True  # noqa: E731
            terms = [(path[0], value) for path, value in odata.equality_terms(node) if len(path) == 1]
        with self.lock:
            found = self.tables[d.name].select(predicate, text or "", terms)
            page = found[skip:] if top is None else found[skip:skip + top]
            shaping = self._shaping()
            body = [self._render(d, rec, n, *shaping) for n, rec in enumerate(page, 1)]
        return json_response(body)

    def _locate(self, d: EntityDef, segments: list[str]) -> Rec:
        """A record by its id, or by its key values joined with `/` or `|` (`Bill/Bill|000123`)."""
        table = self.tables[d.name]
        segments = [part for segment in segments for part in segment.split("|")]
        if len(segments) == 1 and GUID.fullmatch(segments[0]):
            rec = table.by_id(segments[0])
        elif len(segments) == len(d.keys):
            rec = table.get(*segments)
        else:
            raise ApiError(400, f"The entity '{d.name}' is addressed by {len(d.keys)} key values "
                                f"({', '.join(d.keys)}) or by its id; {len(segments)} given.")
        if rec is None:
            raise ApiError(404, "No entity satisfies the condition.")
        return rec

    @staticmethod
    def _shaping() -> tuple[dict[str, Any], Rec | None, str | None]:
        """The request's $expand, $select (None: every field) and $custom."""
        select = request.args.get("$select")
        return (odata.path_tree(request.args.get("$expand")), odata.path_tree(select) if select else None,
                request.args.get("$custom"))

    def _schema(self, shape: Shape) -> Rec:
        out: Rec = {name: {"type": _VALUE_TYPES[kind]} for name, kind in shape.fields.items()}
        out.update({name: self._schema(sub) for name, sub in shape.linked.items()})
        out.update({name: [self._schema(sub)] for name, sub in shape.details.items()})
        return out

    def _version(self) -> str:
        """The endpoint version of the current request (the pinned one outside a request)."""
        pinned = self.settings.endpoint_versions[0]
        return getattr(g, "acu_version", pinned) if has_request_context() else pinned

    def _render(self, d: EntityDef, rec: Rec, row_number: int, expand: Rec,
                select: Rec | None = None, custom: str | None = None) -> Rec:
        out = self._render_level(d.shape, rec, row_number, rec.get("note") or "", expand, select)
        out["custom"] = self._render_custom(rec.get("custom") or {}, custom)
        if "files" in expand:
            out["files"] = [dict(f) for f in rec.get("files") or []]
        version = self._version()
        out["_links"] = {
            "self": f"/entity/{ENDPOINT_NAME}/{version}/{d.name}/{rec['id']}",
            "files:put": f"/entity/{ENDPOINT_NAME}/{version}/files/{d.graph}/{d.view}/{rec['id']}/{{filename}}",
        }
        return out

    def _render_level(self, shape: Shape, src: Rec, row_number: int, note: str, expand: Rec, select: Rec | None) -> Rec:
        """One level in value objects: own fields, then the expanded linked entities and details."""
        out: Rec = {"id": src.get("id"), "rowNumber": row_number, "note": {"value": note}}
        for name in shape.fields:
            if select is None or name in select:
                out[name] = {} if src.get(name) is None else {"value": src[name]}
        for name, sub in (*shape.linked.items(), *shape.details.items()):
            if name not in expand or (select is not None and name not in select):
                continue
            inner = (select or {}).get(name) or None
            if name in shape.linked:
                out[name] = self._render_level(sub, src.get(name) or {}, 1, "", expand[name], inner)
            else:
                out[name] = [self._render_level(sub, row, number, row.get("note") or "", expand[name], inner)
                             for number, row in enumerate(src.get(name) or [], 1)]
        out["custom"] = {}
        return out

    @staticmethod
    def _render_custom(stored: Rec, requested: str | None) -> Rec:
        out: Rec = {}
        for item in requested.split(",") if requested else ():
            view, _, name = item.strip().partition(".")
            value = (stored.get(view) or {}).get(name)
            if value is not None:
                out.setdefault(view, {})[name] = value
        return out

    # ---- writing ------------------------------------------------------------------------------------

    def _put(self, d: EntityDef, branch: str | None, business_date: str | None) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        mode = ("insert" if request.headers.get("If-None-Match", "").strip() == "*"
                else "update" if request.headers.get("If-Match", "").strip() == "*" else "upsert")
        with self.lock:
            rec = self._save(d, body, mode=mode, branch=branch, business_date=business_date)
            return json_response(self._render(d, rec, 1, *self._shaping()))

    def _attach(self, d: EntityDef, segments: list[str], filename: str) -> Response:
        with self.lock:
            rec = self._locate(d, segments)
            file_id = self._new_id()
            keys = " ".join(str(rec.get(k)) for k in d.keys)
            self.files[file_id] = (filename, request.get_data(), request.mimetype or "application/octet-stream")
            rec.setdefault("files", []).append({"id": file_id, "filename": f"{d.name} ({keys})\\{filename}",
                                                "href": f"/entity/{ENDPOINT_NAME}/{self._version()}/files/{file_id}"})
            self.tables[d.name].touch()
        return Response(status=204)

    def _download(self, file_id: str) -> Response:
        with self.lock:
            stored = self.files.get(file_id.lower())
        if stored is None:
            raise ApiError(404, "The file cannot be found.")
        name, data, mimetype = stored
        response = Response(data, status=200, mimetype=mimetype)
        response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    # ---- actions --------------------------------------------------------------------------------

    def _invoke(self, d: EntityDef, action: str) -> Response:
        if not any(a.lower() == action.lower() for a in d.actions):
            raise ApiError(404, f"The action '{action}' is not found in the entity '{d.name}'.")
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "The action body must be a JSON object with 'entity' and 'parameters'.")
        target = body.get("entity") or body.get("Entity")
        if not isinstance(target, dict):
            raise ApiError(400, "The action body has no 'entity' to apply the action to.")
        with self.lock:
            if target.get("id"):
                rec = self.tables[d.name].by_id(target["id"])
            else:
                values = self._key_values(d, target, plain=True)
                rec = self.tables[d.name].get(*values) if all(values) else None
            if rec is None:
                raise ApiError(404, "No entity satisfies the condition.")
            if rec.get("Hold"):
                raise ApiError(self.settings.validation_status, "The document is on hold and cannot be released.")
            if rec.get("Status") != "Balanced":
                raise ApiError(self.settings.validation_status, NOT_BALANCED.format(rec.get("Status")))
            op = Operation(self._new_id(), d.name, action, rec["id"], time.monotonic(),
                           self.settings.action_pending_polls)
            self.operations[op.id] = op
            self._pending[op.id] = op
            self.stats.bump("actions_started")
        response = Response(status=202)
        response.headers["Location"] = f"/entity/{ENDPOINT_NAME}/{self._version()}/{d.name}/{action}/status/{op.id}"
        return response

    def _operation_status(self, d: EntityDef, action: str, op_id: str) -> Response:
        with self.lock:
            op = self.operations.get(op_id.lower())
            if op is None or op.entity != d.name or op.action.lower() != action.lower():
                raise ApiError(404, "Process Not Found.")
            if not op.done and op.pending_polls > 0:
                op.pending_polls -= 1
                return Response(status=202)
            self._complete(op)
            if op.error:
                raise ApiError(self.settings.validation_status, op.error)
        return Response(status=204)

    def _settle_operations(self) -> None:
        """Actions run on the server whether or not anyone polls: finish those past their time."""
        if not self._pending:
            return
        with self.lock:
            cutoff = time.monotonic() - self.settings.action_seconds
            for op in list(self._pending.values()):
                if not op.done and op.started <= cutoff:
                    self._complete(op)
