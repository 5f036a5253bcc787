"""The ServiceNow sandbox: its settings, credentials, the control-API hooks of `Sandbox`, and
the HTTP surface: OAuth at `/oauth_token.do`, the Table API, the Import Set API, the auth /
content-type / rate-rule guard every API call passes, and the instance's error envelope.

Facts marked (unconfirmed) in the vendor notes are constructor settings or named constants,
so a test can say which behaviour it relies on. By default the instance is stock: no
customer-made `u_` columns (unknown columns are dropped silently on Table API and Import Set
writes) and transform maps that coalesce on nothing. `custom_columns` gives the instance the
columns a customer created, `u_correlation_id` then being the maps' coalesce key; a running
sandbox gains one through the control API (`POST /_sandbox/entities/sys_dictionary` with
`{"name": <table>, "element": <column>}`), as a customer adds a dictionary entry.
"""

from __future__ import annotations

import functools
import hmac
import json
import math
import random
import threading
import time
from typing import Any, Callable
from urllib.parse import urlencode

from flask import Flask, Response, g, request
from pydantic import BaseModel, ConfigDict

from sandboxes.base import Sandbox, SandboxOptions
from sandboxes.kit.clock import SECOND_US, Clock
from sandboxes.kit.routes import BodyError, body_as, json_response
from sandboxes.kit.tokens import IssuedToken, TokenStore, basic_credentials

from .rules import InstanceRules, TransformMap, as_string, default_transform_maps
from .seed import TICK_CHANGES, Seeder
from .store import SYS_FIELDS, Row, Table, parse_query

ACCESS_TOKEN_TTL = 1800  # seconds; the OAuth application registry's default access lifespan
REFRESH_TOKEN_TTL = 8_640_000  # 100 days; the registry's default refresh lifespan
RATE_WINDOW_SECONDS = 3600  # rate-limit rules (sys_rate_limit_rules) count requests per hour
FAULT_RULE_LIMIT = 100  # the per-hour figure quoted on injected 429s when no rule is configured
ASYNC_TRANSFORM_DELAY = 0.05  # seconds before an insertMultiple import set is transformed
DEFAULT_LIMIT = 10_000  # sysparm_limit default documented for the Table API
OAUTH_SCOPE = "useraccount"
# (unconfirmed) wording: newer releases say "User is not authenticated", older "User Not Authenticated".
UNAUTHENTICATED = ("User is not authenticated", "Required to provide Auth information")
NOT_FOUND = ("No Record found", "Record doesn't exist or ACL restricts the record retrieval")
BAD_REQUEST = "Exception while reading request"
_SECRET_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!$"
ENTITY_ALIASES = {  # control-API names of tables
    "suppliers": "sn_fin_supplier", "vendors": "sn_fin_supplier", "supplier_payments": "sn_fin_supplier_payment",
    "companies": "core_company", "cost_centers": "cmn_cost_center", "gl_accounts": "sn_fin_gl_account",
    "purchase_orders": "sn_shop_purchase_order", "purchase_order_lines": "sn_shop_purchase_order_line",
    "invoices": "sn_shop_invoice", "ap_invoices": "sn_shop_invoice", "invoice_lines": "sn_shop_invoice_line",
    "import_sets": "sys_import_set", "users": "sys_user",
}


class Settings(BaseModel):
    """The instance's settings (constructor keywords); (unconfirmed) facts are settings here."""

    model_config = ConfigDict(extra="forbid")

    allow_basic: bool = True
    allow_client_credentials: bool = True
    rotate_refresh_tokens: bool = False  # (unconfirmed) refresh grants answer the same refresh token
    rate_window_seconds: float = RATE_WINDOW_SECONDS
    invalid_query_returns_no_rows: bool = False  # glide.invalid_query.returns_no_rows
    insert_multiple_sync: bool = False  # a sys_rest_insert_multiple entry set to synchronous
    mandatory_status: int = 400  # (unconfirmed) some releases answer data-policy failures with 403
    custom_columns: tuple[str, ...] = ()  # u_ columns a customer added; a stock instance has none


class InsertMultiple(BaseModel):
    """The body of `POST /import/<staging>/insertMultiple`."""

    records: list[dict[str, Any]]


def sn_error(status: int, message: str, detail: str | None = None, headers: dict[str, str] | None = None) -> Response:
    """The Table/Import Set API error envelope."""
    return json_response({"error": {"message": message, "detail": detail}, "status": "failure"}, status, headers)


class Refused(Exception):
    """An API call answered with the error envelope (raised anywhere below a guarded view)."""

    def __init__(self, status: int, message: str, detail: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.response = sn_error(status, message, detail, headers)


class OAuthTokens(TokenStore):
    """ServiceNow's tokens: refresh tokens live REFRESH_TOKEN_TTL and can be reused until they expire."""

    def issue(self, subject: str, ttl: float, **kwargs: Any) -> tuple[str, str | None]:
        access, refresh = super().issue(subject, ttl, **kwargs)
        if refresh:
            with self._lock:
                self._refresh[refresh].expires_at = time.time() + REFRESH_TOKEN_TTL
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


def _rate_refusal(limit: int, resource: str, headers: dict[str, str], retry_after: int) -> Refused:
    return Refused(429, "Rate limit exceeded", f"Rate limit of {limit} requests per hour for {resource} exceeded",
                   headers={**headers, "Retry-After": str(retry_after)})


class ServiceNowSandbox(InstanceRules, Sandbox):
    """A ServiceNow instance: tables in memory, OAuth, the Table and Import Set APIs."""

    vendor = "servicenow"

    def __init__(self, options: SandboxOptions | None = None, **settings: Any) -> None:
        self.__dict__.update(Settings(**settings).model_dump())
        seed = (options or SandboxOptions()).seed
        secret_rng = random.Random(f"servicenow-credentials-{seed}")
        self.client_id = f"{secret_rng.getrandbits(128):032x}"
        self.client_secret = "".join(secret_rng.choice(_SECRET_ALPHABET) for _ in range(24))
        self.username = "ml.integration"
        self.password = f"Sn-{secret_rng.getrandbits(64):016x}!"
        self.rate_rule_id = f"{secret_rng.getrandbits(128):032x}"
        self._rate_lock = threading.Lock()
        self._rate_counts = {}
        self.clock = Clock(SECOND_US)  # sys_updated_on is written to the second
        self._generation = 0
        super().__init__(options)
        self.tokens = OAuthTokens()

    @property
    def access_ttl(self) -> float:
        return float(self.options.token_ttl or ACCESS_TOKEN_TTL)

    @property
    def rate_limit(self) -> float | None:
        """Requests per rule window per user and REST resource; None: no rule (the default)."""
        return self.options.rate_limit or None

    # ---- control-API hooks ----

    def info(self) -> dict[str, Any]:
        return {"vendor": self.vendor, "api_base": self.base_url, "token_url": f"{self.base_url}/oauth_token.do",
                "credentials": {"client_id": self.client_id, "client_secret": self.client_secret,
                                "username": self.username, "password": self.password}}

    def clear_state(self) -> None:
        self._tables, self._maps, self._import_sets, self._open_sets, self._counters = {}, {}, {}, {}, {}
        self._generation += 1
        self._tick_rng = random.Random(self.options.seed + 2)
        with self._rate_lock:
            self._rate_counts.clear()
        for tmap in default_transform_maps("u_correlation_id" if "u_correlation_id" in self.custom_columns else None):
            self._register_map(tmap)

    def seed(self, rng: random.Random, records: int) -> None:
        Seeder(self, rng, max(0, records)).run()

    def get_entities(self, entity: str) -> list[dict[str, Any]]:
        if entity == "transform_maps":
            return [m.model_dump() for maps in self._maps.values() for m in maps]
        if entity == "sys_dictionary":
            return list(self._dictionary().rows())
        table = self._tables.get(ENTITY_ALIASES.get(entity, entity))
        if table is None:
            raise KeyError(entity)
        return [dict(row) for row in table.rows()]

    def put_entity(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Create or change a record of any table (aliases: suppliers, purchase_orders, ...);
        `transform_maps` registers a transform map; `sys_dictionary` adds a column to a table
        (`name`, `element`). System fields given here are honoured."""
        if entity == "transform_maps":
            tmap = TransformMap.model_validate(payload)
            self._register_map(tmap)
            return tmap.model_dump()
        if entity == "sys_dictionary":
            table_name, column = str(payload.get("name") or ""), str(payload.get("element") or "")
            if not table_name or not column:
                raise ValueError("a dictionary entry needs name (the table) and element (the column)")
            self._add_column(table_name, column)
            return next(r for r in self._dictionary().find("name", table_name) if r["element"] == column)
        table = self._table(ENTITY_ALIASES.get(entity, entity), create=True)
        values = {k: as_string(v) for k, v in payload.items()}
        table.columns.update(k for k in values if k not in SYS_FIELDS)
        sys_id = values.get("sys_id", "")
        if sys_id and sys_id in table:
            return dict(self._update(table, sys_id, values, user="admin", honour_sys=True))
        return dict(self._insert(table, values, user="admin", honour_sys=True))

    def tick(self, count: int) -> list[dict[str, Any]]:
        changed: list[dict[str, Any]] = []
        keys = {name: [r["sys_id"] for r in self._tables[name].rows()] for name in TICK_CHANGES if name in self._tables}
        candidates = [name for name, ids in keys.items() if ids]
        for i in range(max(0, count) if candidates else 0):
            table = self._tables[candidates[i % len(candidates)]]
            sys_id = self._tick_rng.choice(keys[table.name])
            column, make = TICK_CHANGES[table.name]
            row = self._update(table, sys_id, {column: make(self._tick_rng, table.get(sys_id).get(column, ""))},
                               user="system", force=True)
            changed.append({"table": table.name, "sys_id": sys_id, "field": column,
                            "sys_updated_on": row["sys_updated_on"], "sys_mod_count": row["sys_mod_count"]})
        return changed

    def rate_limited_response(self, retry_after: float) -> Response:
        wait = max(1, math.ceil(retry_after))
        limit = int(self.rate_limit or FAULT_RULE_LIMIT)
        headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Reset": str(int(time.time() + wait)),
                   "X-RateLimit-Rule": self.rate_rule_id}
        resource = "Import Set API" if "/import/" in request.path else "Table API"
        return _rate_refusal(limit, resource, headers, wait).response

    def error_response(self, status: int, message: str) -> Response:
        return sn_error(status, message, "The instance could not process the request")

    # ---- routes, and the guard every API call passes ----

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
                raise _rate_refusal(int(limit), resource, headers, max(1, math.ceil(reset - now)))
            self._rate_counts[(user, resource)] = (start, (count if window_start == start else 0) + 1)
        return headers

    def _oauth_token(self) -> Response:
        if request.mimetype != "application/x-www-form-urlencoded":
            return json_response({"error": "invalid_request", "error_description": "form-encoded body required"}, 400)
        form = {name: request.form.get(name, "") for name in
                ("grant_type", "client_id", "client_secret", "username", "password", "refresh_token")}
        grant, refresh, issued = form["grant_type"], None, None
        if _same(form["client_id"], self.client_id) and _same(form["client_secret"], self.client_secret):
            if grant == "password" and _same(form["username"], self.username) \
                    and _same(form["password"], self.password):
                issued = IssuedToken(self.username, 0, extra={"client_id": self.client_id})
            elif grant == "refresh_token":
                use = self.tokens.use_refresh if self.rotate_refresh_tokens else self.tokens.peek_refresh
                issued = use(form["refresh_token"])
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
            refresh = refresh or form["refresh_token"]
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
    def _row(table: Table | None, sys_id: str) -> Row:
        row = table.get(sys_id) if table is not None else None
        if row is None:
            raise Refused(404, *NOT_FOUND)
        return row

    def _rendered(self, table: Table, row: Row) -> dict[str, Any]:
        """`row` as the request's sysparm_fields / display_value / exclude_reference_link ask."""
        raw_fields = request.args.get("sysparm_fields")
        fields = [f.strip() for f in raw_fields.split(",") if f.strip()] if raw_fields else None
        display = (request.args.get("sysparm_display_value") or "false").lower()
        return self._render(table, row, fields, display if display in ("true", "all") else "false",
                            not _flag("sysparm_exclude_reference_link"))

    def _writable_checked(self, table: Table, payload: dict[str, Any], current: Row | None = None) -> Row:
        """The request's values, refused when the data policy finds a mandatory field blank."""
        values = self._writable(table, payload, input_display=_flag("sysparm_input_display_value"))
        if current is not None:
            values.pop("sys_id", None)
        missing = self._missing_mandatory(table, {**(current or {}), **values})
        if missing:
            raise Refused(self.mandatory_status, "Operation Failed",
                          f"Data Policy Exception: The following fields are mandatory: {', '.join(missing)}")
        return values

    def _table_list(self, table_name: str) -> Response:
        table = self._known_table(table_name, dictionary=True)
        limit, offset = _int_arg("sysparm_limit", DEFAULT_LIMIT), _int_arg("sysparm_offset", 0)
        pairs = [(k, v) for k, v in request.args.items(multi=True) if not k.startswith("sysparm_")]
        with self.lock:
            query = parse_query(request.args.get("sysparm_query", ""), table.columns, pairs)
            rows = [] if query.ignored and self.invalid_query_returns_no_rows else table.select(query)
            result = [self._rendered(table, row) for row in rows[offset:offset + limit]]
        if g.sn_version == "v1" and not result:
            raise Refused(404, *NOT_FOUND)
        no_count, headers = _flag("sysparm_no_count"), {}
        if not no_count:
            headers["X-Total-Count"] = str(len(rows))
        if not _flag("sysparm_suppress_pagination_header"):
            headers["Link"] = self._link_header(limit, offset, None if no_count else len(rows))
        return json_response({"result": result}, 200, headers)

    def _link_header(self, limit: int, offset: int, total: int | None) -> str:
        """First, prev, next and last pages; prev can go negative, as the instance's does."""
        kept = urlencode([(k, v) for k, v in request.args.items(multi=True)
                          if k not in ("sysparm_offset", "sysparm_limit")])
        prefix = f"{self.base_url}{request.path}?{kept + '&' if kept else ''}sysparm_limit={limit}&sysparm_offset="
        at = {"first": 0, "prev": offset - limit if offset > 0 else None,
              "next": offset + limit if total is None or offset + limit < total else None,
              "last": max(0, (total - 1) // limit * limit) if total is not None and limit > 0 else None}
        return ",".join(f'<{prefix}{o}>;rel="{rel}"' for rel, o in at.items() if o is not None)

    def _table_insert(self, table_name: str) -> Response:
        table = self._known_table(table_name)
        payload = _json_body("One JSON object per request; multiple insert is not supported")
        with self.lock:
            row = self._insert(table, self._writable_checked(table, payload), user=g.sn_user)
            rendered = self._rendered(table, row)
        return json_response({"result": rendered}, 201, {"Location": self._link(table_name, row["sys_id"])})

    def _table_read(self, table_name: str, sys_id: str) -> Response:
        table = self._known_table(table_name)
        with self.lock:
            return json_response({"result": self._rendered(table, self._row(table, sys_id))})

    def _table_change(self, table_name: str, sys_id: str) -> Response:
        method = request.method
        if method == "POST":  # X-HTTP-Method-Override tunnels PUT/PATCH/DELETE through POST
            method = request.headers.get("X-HTTP-Method-Override", "").upper()
            if method not in ("PUT", "PATCH", "DELETE"):
                raise Refused(405, "Method not Supported",
                              "POST is not supported on a record; use PUT, PATCH or DELETE")
        table = self._known_table(table_name)
        if method == "DELETE":
            with self.lock:
                table.purge(self._row(table, sys_id)["sys_id"])
            return Response(status=204)
        payload = _json_body("A JSON object is required")
        with self.lock:
            values = self._writable_checked(table, payload, current=self._row(table, sys_id))
            return json_response({"result": self._rendered(table, self._update(table, sys_id, values, user=g.sn_user))})

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
            row = self._row(self._tables.get(staging_table), sys_id)
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
