"""The HTTP surface: OAuth at `/oauth_token.do`, the Table API, the Import Set API, the auth /
content-type / rate-rule guard every API call passes, and the instance's error envelope."""

from __future__ import annotations

import functools
import hmac
import json
import math
import threading
import time
from typing import Any, Callable
from urllib.parse import urlencode

from flask import Flask, Response, g, request
from pydantic import BaseModel

from sandboxes.kit.routes import BodyError, body_as, json_response
from sandboxes.kit.tokens import IssuedToken, TokenStore, basic_credentials

from .query import parse_query
from .rules import InstanceRules
from .store import Table

ASYNC_TRANSFORM_DELAY = 0.05  # seconds before an insertMultiple import set is transformed
DEFAULT_LIMIT = 10_000  # sysparm_limit default documented for the Table API
OAUTH_SCOPE = "useraccount"
# (unconfirmed) wording: newer releases say "User is not authenticated", older "User Not Authenticated".
UNAUTHENTICATED = ("User is not authenticated", "Required to provide Auth information")
NOT_FOUND = ("No Record found", "Record doesn't exist or ACL restricts the record retrieval")
BAD_REQUEST = "Exception while reading request"


def sn_error(status: int, message: str, detail: str | None = None, headers: dict[str, str] | None = None) -> Response:
    """The Table/Import Set API error envelope."""
    return json_response({"error": {"message": message, "detail": detail}, "status": "failure"}, status, headers)


class Refused(Exception):
    """An API call answered with the error envelope (raised anywhere below a guarded view)."""

    def __init__(self, status: int, message: str, detail: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.response = sn_error(status, message, detail, headers)


class InsertMultiple(BaseModel):
    """The body of `POST /import/<staging>/insertMultiple`."""

    records: list[dict[str, Any]]


class TokenForm(BaseModel):
    """The form of `POST /oauth_token.do`."""

    grant_type: str = ""
    client_id: str = ""
    client_secret: str = ""
    username: str = ""
    password: str = ""
    refresh_token: str = ""


class OAuthTokens(TokenStore):
    """ServiceNow's tokens: refresh tokens live `refresh_ttl` and can be reused until they expire."""

    def __init__(self, refresh_ttl: float) -> None:
        super().__init__()
        self.refresh_ttl = refresh_ttl

    def issue(self, subject: str, ttl: float, **kwargs: Any) -> tuple[str, str | None]:
        access, refresh = super().issue(subject, ttl, **kwargs)
        if refresh:
            with self._lock:
                self._refresh[refresh].expires_at = time.time() + self.refresh_ttl
        return access, refresh

    def peek_refresh(self, refresh: str) -> IssuedToken | None:
        with self._lock:
            issued = self._refresh.get(refresh)
            return issued if issued and issued.expires_at > time.time() else None


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name)
    try:
        return max(0, int(raw)) if raw not in (None, "") else default
    except ValueError:
        return default


def _flag(name: str) -> bool:
    return (request.args.get(name) or "").lower() == "true"


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison that also takes non-ASCII input (a 401, never a 500)."""
    return hmac.compare_digest(given.encode(), expected.encode())


def _json_body(object_detail: str | None = None) -> Any:
    """The JSON body (`{}` when empty); `object_detail` words the 400 when it must be an object."""
    raw = request.get_data(cache=True)
    try:
        payload = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise Refused(400, BAD_REQUEST, "The payload is not valid JSON.") from None
    if object_detail and not isinstance(payload, dict):
        raise Refused(400, BAD_REQUEST, object_detail)
    return payload


def _render_args() -> tuple[list[str] | None, str, bool]:
    raw_fields = request.args.get("sysparm_fields")
    fields = [f.strip() for f in raw_fields.split(",") if f.strip()] if raw_fields else None
    display = (request.args.get("sysparm_display_value") or "false").lower()
    return fields, display if display in ("true", "all") else "false", not _flag("sysparm_exclude_reference_link")


class InstanceRoutes(InstanceRules):
    """The vendor routes, mixed into the sandbox (which holds the settings and credentials)."""

    def register_vendor_routes(self, app: Flask) -> None:
        table, record = "table/<table_name>", "table/<table_name>/<sys_id>"
        staging, staged = "import/<staging_table>", "import/<staging_table>/<sys_id>"
        for path, methods, handler, resource in (
            (table, ["GET"], self._table_list, "Table API"),
            (table, ["POST"], self._table_insert, "Table API"),
            (record, ["GET"], self._table_read, "Table API"),
            (record, ["PUT", "PATCH", "DELETE", "POST"], self._table_change, "Table API"),
            (staging, ["POST"], self._import_insert, "Import Set API"),
            (f"{staging}/insertMultiple", ["POST"], self._import_insert_multiple, "Import Set API"),
            (staged, ["GET"], self._import_read, "Import Set API"),
        ):
            view = self._guarded(handler, resource)
            for prefix in ("/api/now", "/api/now/<any(v1,v2):version>"):  # unversioned and versioned paths
                app.add_url_rule(f"{prefix}/{path}", endpoint=handler.__name__, view_func=view, methods=methods)
        app.add_url_rule("/oauth_token.do", endpoint="oauth_token", view_func=self._oauth_token, methods=["POST"])
        app.add_url_rule("/_sandbox/import-cleanup", endpoint="import_cleanup", view_func=self._import_cleanup,
                         methods=["POST"])
        app.register_error_handler(404, self._unknown_resource)
        app.register_error_handler(405, self._method_not_supported)

    def _guarded(self, handler: Callable[..., Response], resource: str) -> Callable[..., Response]:
        """Auth, the Accept / Content-Type contract, then the rate rule of `resource`."""

        @functools.wraps(handler)
        def view(*args: Any, version: str = "v2", **kwargs: Any) -> Response:
            try:
                user = self._authenticate()
                accept = request.headers.get("Accept", "")
                if accept and "json" not in accept and "*/*" not in accept:
                    raise Refused(406, "Not Acceptable", "This instance answers application/json only")
                if request.method in ("POST", "PUT", "PATCH") and request.get_data(cache=True).strip() \
                        and request.mimetype != "application/json":
                    raise Refused(415, "Unsupported Media Type",
                                  f"Content-Type {request.mimetype or '(none)'} is not supported; use application/json")
                headers = self._rate_check(user, resource)
                g.sn_user, g.sn_version = user, version
                response = handler(*args, **kwargs)
            except Refused as refused:
                return refused.response
            response.headers.update(headers)
            return response

        return view

    # ---- auth and rate rules ----

    def _authenticate(self) -> str:
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credential:
            issued = self.tokens.check(credential.strip())
            if issued is not None:
                return issued.subject
        elif scheme.lower() == "basic" and credential and self.allow_basic:
            username, password = basic_credentials(credential)
            if _same(username, self.username) and _same(password, self.password):
                return username
        self.stats.bump("auth_failures")
        raise Refused(401, *UNAUTHENTICATED, headers={"WWW-Authenticate": 'Basic realm="Service-now"'})

    def _rate_check(self, user: str, resource: str) -> dict[str, str]:
        """Rate-limit rules count requests per user and REST resource in fixed windows."""
        limit = self.rate_limit
        if not limit:
            return {}
        now = time.time()
        start = now - (now % self.rate_window_seconds)
        reset = start + self.rate_window_seconds
        headers = {"X-RateLimit-Limit": str(int(limit)), "X-RateLimit-Reset": str(int(math.ceil(reset))),
                   "X-RateLimit-Rule": self.rate_rule_id}
        with self._rate_lock:
            window_start, count = self._rate_counts.get((user, resource), (start, 0))
            if window_start == start and count >= limit:
                raise Refused(429, "Rate limit exceeded", f"Rate limit of {int(limit)} requests per hour for {resource} exceeded",
                              headers={**headers, "Retry-After": str(max(1, math.ceil(reset - now)))})
            self._rate_counts[(user, resource)] = (start, (count if window_start == start else 0) + 1)
        return headers

    def _oauth_token(self) -> Response:
        if request.mimetype != "application/x-www-form-urlencoded":
            return json_response({"error": "invalid_request", "error_description": "form-encoded body required"}, 400)
        form = TokenForm.model_validate(request.form.to_dict())
        grant, refresh, issued = form.grant_type, None, None
        if _same(form.client_id, self.client_id) and _same(form.client_secret, self.client_secret):
            if grant == "password" and _same(form.username, self.username) and _same(form.password, self.password):
                issued = IssuedToken(self.username, 0, extra={"client_id": self.client_id})
            elif grant == "refresh_token":
                use = self.tokens.use_refresh if self.rotate_refresh_tokens else self.tokens.peek_refresh
                issued = use(form.refresh_token)
                issued = issued if issued is not None and issued.extra.get("client_id") == self.client_id else None
            elif grant == "client_credentials" and self.allow_client_credentials:
                issued = IssuedToken(self.username, 0)
            elif grant != "password":
                return json_response({"error": "unsupported_grant_type",
                                      "error_description": f"grant_type {grant or '(none)'} is not supported"}, 400)
        if issued is None:
            self.stats.bump("auth_failures")
            return json_response({"error_description": "access_denied", "error": "server_error"}, 401)
        with_refresh = grant == "password" or (grant == "refresh_token" and self.rotate_refresh_tokens)
        access, refresh = self.tokens.issue(issued.subject, self.access_ttl, with_refresh=with_refresh,
                                            extra=issued.extra)
        if grant == "refresh_token":
            refresh = refresh or form.refresh_token
        self.stats.bump("tokens_issued")
        self.stats.bump(f"grant_{grant}")
        body: dict[str, Any] = {"access_token": access, **({"refresh_token": refresh} if refresh else {}),
                                "scope": OAUTH_SCOPE, "token_type": "Bearer", "expires_in": int(self.access_ttl)}
        return json_response(body, 200, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    # ---- Table API ----

    def _known_table(self, name: str, dictionary: bool = False) -> Table:
        with self.lock:
            if dictionary and name == "sys_dictionary":
                return self._dictionary()
            try:
                return self._table(name)
            except KeyError:
                raise Refused(400, f"Invalid table {name}", None) from None

    @staticmethod
    def _row(table: Table, sys_id: str) -> dict[str, str]:
        row = table.get(sys_id)
        if row is None:
            raise Refused(404, *NOT_FOUND)
        return row

    def _checked(self, table: Table, row: dict[str, str]) -> None:
        missing = self._missing_mandatory(table, row)
        if missing:
            raise Refused(self.mandatory_status, "Operation Failed",
                          f"Data Policy Exception: The following fields are mandatory: {', '.join(missing)}")

    def _table_list(self, table_name: str) -> Response:
        table = self._known_table(table_name, dictionary=True)
        limit, offset = _int_arg("sysparm_limit", DEFAULT_LIMIT), _int_arg("sysparm_offset", 0)
        fields, display, links = _render_args()
        pairs = [(k, v) for k, v in request.args.items(multi=True) if not k.startswith("sysparm_")]
        with self.lock:
            query = parse_query(request.args.get("sysparm_query", ""), table.columns, pairs)
            rows = [] if query.ignored and self.invalid_query_returns_no_rows else table.select(query)
            result = [self._render(table, row, fields, display, links) for row in rows[offset:offset + limit]]
        if g.sn_version == "v1" and not result:
            raise Refused(404, *NOT_FOUND)
        no_count, headers = _flag("sysparm_no_count"), {}
        if not no_count:
            headers["X-Total-Count"] = str(len(rows))
        if not _flag("sysparm_suppress_pagination_header"):
            headers["Link"] = self._link_header(limit, offset, None if no_count else len(rows))
        return json_response({"result": result}, 200, headers)

    def _table_insert(self, table_name: str) -> Response:
        table = self._known_table(table_name)
        payload = _json_body("One JSON object per request; multiple insert is not supported")
        fields, display, links = _render_args()
        with self.lock:
            values = self._writable(table, payload, input_display=_flag("sysparm_input_display_value"))
            self._checked(table, values)
            row = self._insert(table, values, user=g.sn_user)
            rendered = self._render(table, row, fields, display, links)
        return json_response({"result": rendered}, 201, {"Location": self._link(table_name, row["sys_id"])})

    def _table_read(self, table_name: str, sys_id: str) -> Response:
        table = self._known_table(table_name)
        fields, display, links = _render_args()
        with self.lock:
            return json_response({"result": self._render(table, self._row(table, sys_id), fields, display, links)})

    def _table_change(self, table_name: str, sys_id: str) -> Response:
        method = request.method
        if method == "POST":  # X-HTTP-Method-Override tunnels PUT/PATCH/DELETE through POST
            method = request.headers.get("X-HTTP-Method-Override", "").upper()
            if method not in ("PUT", "PATCH", "DELETE"):
                raise Refused(405, "Method not Supported", "POST is not supported on a record; use PUT, PATCH or DELETE")
        table = self._known_table(table_name)
        if method == "DELETE":
            with self.lock:
                table.purge(self._row(table, sys_id)["sys_id"])
            return Response(status=204)
        payload = _json_body("A JSON object is required")
        fields, display, links = _render_args()
        with self.lock:
            current = self._row(table, sys_id)
            values = self._writable(table, payload, input_display=_flag("sysparm_input_display_value"))
            values.pop("sys_id", None)
            self._checked(table, {**current, **values})
            row = self._update(table, sys_id, values, user=g.sn_user)
            return json_response({"result": self._render(table, row, fields, display, links)})

    def _link_header(self, limit: int, offset: int, total: int | None) -> str:
        kept = urlencode([(k, v) for k, v in request.args.items(multi=True) if k not in ("sysparm_offset", "sysparm_limit")])
        prefix = f"{self.base_url}{request.path}?{kept + '&' if kept else ''}"
        at = {"first": 0, "prev": offset - limit if offset > 0 else None,  # prev can go negative, as the instance's does
              "next": offset + limit if total is None or offset + limit < total else None,
              "last": max(0, (total - 1) // limit * limit) if total is not None and limit > 0 else None}
        return ",".join(f'<{prefix}sysparm_limit={limit}&sysparm_offset={o}>;rel="{rel}"' for rel, o in at.items() if o is not None)

    # ---- Import Set API ----

    def _staging_table(self, name: str) -> Table:
        with self.lock:
            if name in self._maps or name in self._tables:
                return self._table(name, create=True)
        raise Refused(400, f"Invalid table {name}", None)

    def _import_insert(self, staging_table: str) -> Response:
        staging = self._staging_table(staging_table)
        payload = _json_body("A JSON object of name-value pairs is required")
        with self.lock:
            iset = self._import_set(staging_table, "synchronous")
            results = self._run_transforms(staging, self._stage(staging, iset, payload, g.sn_user), g.sn_user)
        self.stats.bump("import_rows")
        return json_response({"import_set": iset.number, "staging_table": staging_table, "result": results}, 201)

    def _import_insert_multiple(self, staging_table: str) -> Response:
        staging = self._staging_table(staging_table)
        payload = _json_body()
        try:
            records = body_as(InsertMultiple, body=payload if isinstance(payload, dict) else {}).records
        except BodyError:
            raise Refused(400, BAD_REQUEST, 'The body must be {"records": [{...}, ...]}') from None
        with self.lock:
            multi_id = request.args.get("multi_import_set_id", "")
            multi_table = self._table("sys_multi_import_set")
            if multi_id not in multi_table:
                multi_id = self._insert(multi_table, {"number": self._next_number("MISET"), "state": "loading"},
                                        user=g.sn_user)["sys_id"]
            iset = self._import_set(staging_table, "asynchronous", multi_id)
            iset.pending.extend(self._stage(staging, iset, record, g.sn_user)["sys_id"] for record in records)
            generation = self._generation
        self.stats.bump("import_rows", len(records))
        if self.insert_multiple_sync:
            self._process_pending(iset.sys_id, generation)
        else:
            timer = threading.Timer(ASYNC_TRANSFORM_DELAY, self._process_pending, args=(iset.sys_id, generation))
            timer.daemon = True
            timer.start()
        return json_response({"import_set_id": iset.sys_id, "multi_import_set_id": multi_id}, 201)

    def _import_read(self, staging_table: str, sys_id: str) -> Response:
        with self.lock:
            staging = self._tables.get(staging_table)
            row = self._row(staging, sys_id) if staging else None
            if row is None:
                raise Refused(404, *NOT_FOUND)
            iset = self._import_sets.get(row["sys_import_set"])
            return json_response({"import_set": iset.number if iset else "", "staging_table": staging_table,
                                  "result": [self._staged_result(row)]})

    # ---- sandbox-only control and vendor-shaped misses ----

    def _import_cleanup(self) -> Response:
        """What the instance's scheduled import-set cleaner does: staging rows go away."""
        removed = 0
        with self.lock:
            for table in filter(None, map(self._tables.get, self._maps)):
                for row in list(table.rows()):
                    table.purge(row["sys_id"])
                    removed += 1
            self._open_sets.clear()
        return json_response({"removed": removed})

    @staticmethod
    def _unknown_resource(error: Exception) -> Response:
        if request.path.startswith("/_sandbox/"):
            return json_response({"error": f"unknown control path {request.path}"}, 404)
        return sn_error(400, "Requested URI does not represent any resource", None)

    @staticmethod
    def _method_not_supported(error: Exception) -> Response:
        return sn_error(405, "Method not Supported", f"{request.method} is not supported on {request.path}")
