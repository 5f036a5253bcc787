"""The Procore sandbox: settings, the control API, the request parameters, and the write and
sync machinery the routes share."""

from __future__ import annotations

import collections
import contextlib
import json
import math
import time
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping

from flask import Response, request
from pydantic import BaseModel, ConfigDict, ValidationError

from sandboxes.base import Sandbox, SandboxOptions
from sandboxes.kit.clock import SECOND_US, Clock
from sandboxes.kit.routes import json_response

from . import routes, store
from .auth import Windows
from .rules import CONTROL_ENTITIES, KINDS, Errors, Renderer, Row
from .values import (ACCESS_TOKEN_TTL, DEFAULT_PER_PAGE, DIRECT_COST_BUSY_MESSAGE, HOURLY_LIMIT, IDEMPOTENCY_KEEP,
                     MAX_PER_PAGE, NOT_CONNECTED_MESSAGE, RATE_LIMIT_MESSAGE, SCOPE_KEYS, SPIKE_LIMIT, SPIKE_WINDOW,
                     SYNC_MAX_ITEMS, ApiError, error, field_errors, not_found, parse_instant, safe_int)

class Settings(BaseModel):
    """Facts marked "(unconfirmed)" in the vendor notes, with the documented default; set at
    construction or at run time through `POST /_sandbox/settings`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    hourly_limit: int | None = HOURLY_LIMIT  # requests per hour per app; 0 or None: off
    spike_limit: int | None = SPIKE_LIMIT  # (Round 2) enforced by default, the docs' 25 per 10 s
    spike_window: float = SPIKE_WINDOW
    max_per_page: int = MAX_PER_PAGE
    default_per_page: int = DEFAULT_PER_PAGE
    missing_company_status: int = 400  # the docs give the message, not the status (unconfirmed)
    po_status_style: Literal["display", "snake"] = "display"  # "Partially Received" as the spec spells it
    duplicate_origin_status: int = 422  # the docs say a duplicate origin_id gives 409 or 422
    strict_attributes: bool = True  # 406 for attributes the resource does not have
    send_retry_after: bool = True  # Retry-After on 429 is in one vendor doc only (unconfirmed)
    subcontractor_invoice_enabled: bool = False  # a per-company switch at Procore
    direct_cost_write_seconds: float = 0.0  # time a direct-cost write holds its record (409 when overlapped)
    inactive_vendors_listed: bool = False  # (unconfirmed) the vendor list shows active vendors only


class ProcoreSandbox(Sandbox):
    """Procore's REST API in memory; its settings read as attributes (`sandbox.spike_limit`)."""

    vendor = "procore"

    def __init__(self, options: SandboxOptions | None = None, **settings: Any) -> None:
        options = options or SandboxOptions()
        # options.rate_limit is the hourly limit per app; None: Procore's default; 0: off, the spike window too.
        limits: dict[str, Any] = {} if options.rate_limit is None else {"hourly_limit": int(options.rate_limit)}
        if options.rate_limit == 0:
            limits["spike_limit"] = None
        try:
            self.settings = Settings(**{**limits, **settings})
        except ValidationError as exc:
            raise TypeError(f"bad Procore sandbox settings: {exc}") from None
        self.render = Renderer(self)
        self._windows = Windows()
        self._revoked: set[str] = set()
        self._pairs: dict[str, str] = {}  # access token -> refresh token issued with it
        self._codes: dict[str, tuple[str, str, float]] = {}  # auth code -> (client, redirect, expiry)
        self._idempotent: collections.OrderedDict[tuple[str, str], tuple[Any, int]] = collections.OrderedDict()
        self._busy_direct_costs: set[int] = set()
        super().__init__(options)

    def __getattr__(self, name: str) -> Any:
        if name in Settings.model_fields and "settings" in self.__dict__:
            return getattr(self.__dict__["settings"], name)
        raise AttributeError(name)

    @property
    def token_ttl(self) -> int:
        return self.options.token_ttl if self.options.token_ttl is not None else ACCESS_TOKEN_TTL

    # ---- Sandbox contract ------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {"vendor": self.vendor, "api_base": self.base_url, "token_url": f"{self.base_url}/oauth/token",
                "credentials": {"client_id": self.client_id, "client_secret": self.client_secret,
                                "company_id": self.company_id}}

    def clear_state(self) -> None:
        self.clock = Clock(SECOND_US)
        self.tables = {name: store.Records(name, first_id) for name, first_id in store.FIRST_IDS.items()}
        for held in (self._windows, self._revoked, self._pairs, self._codes, self._idempotent,
                     self._busy_direct_costs):
            held.clear()

    register_vendor_routes = routes.register
    seed = store.seed
    tick = store.tick

    def put_entity(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        kind_name = CONTROL_ENTITIES.get(entity)
        if kind_name is None:
            raise KeyError(entity)
        kind, attrs = KINDS[kind_name], dict(payload)
        stamps = {k: attrs.pop(k) for k in ("created_at", "updated_at", "deleted_at") if k in attrs}
        lines = attrs.pop("line_items", None)
        rid = attrs.pop("id", None)
        scope = None
        if kind.in_project:
            raw = attrs.pop("project_id", None)
            scope = int(raw) if raw is not None else self.tables["projects"].rows("with")[0]["id"]
            if self.tables["projects"].row(scope) is None:
                raise ValueError(f"project {scope} not found")
        elif kind.parent_key:
            scope = int(attrs.pop(kind.parent_key))
        current = self.tables[entity].row(int(rid)) if rid is not None else None
        if rid is not None and current is None:
            raise ValueError(f"{entity} {rid} not found")
        row = self._control_write(kind_name, attrs, current, current["_scope"] if current is not None else scope)
        self.tables[entity].write(row, {"_" + key.split("_")[0]: None if value is None else
                                         int(parse_instant(str(value), end=False)) for key, value in stamps.items()})
        for line in lines or []:
            self._control_write(kind.lines or "dc_line", dict(line), None, row["id"])
        return self.render.control(entity, row)

    def _control_write(self, kind_name: str, attrs: Mapping[str, Any], current: Row | None, scope: int | None) -> Row:
        row, errors = self.write(kind_name, attrs, current, scope)
        if errors or row is None:
            raise ValueError(json.dumps({"errors": errors}))
        return row

    def get_entities(self, entity: str) -> list[dict[str, Any]]:
        if entity == "companies":
            return [self.render.company()]
        if entity not in CONTROL_ENTITIES:
            raise KeyError(entity)
        return [self.render.control(entity, row) for row in self.tables[entity].rows("with")]

    # ---- vendor error shapes -----------------------------------------------------------------

    def rate_limited_response(self, retry_after: float) -> Response:
        wait = max(1, int(math.ceil(retry_after)))
        headers = {"X-Rate-Limit-Limit": str(self.settings.spike_limit or self.settings.hourly_limit or HOURLY_LIMIT),
                   "X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": str(int(time.time()) + wait)}
        if self.settings.send_retry_after:
            headers["Retry-After"] = str(wait)
        return Response(RATE_LIMIT_MESSAGE, status=429, mimetype="text/plain", headers=headers)

    def error_response(self, status: int, message: str) -> Response:
        # Platform overload answers 503 with Retry-After.
        return json_response({"error": message}, status,
                             {"Retry-After": str(max(1, self.faults.retry_after))} if status == 503 else None)

    # ---- request pieces ----------------------------------------------------------------------

    def company_param(self, body: Mapping[str, Any] | None = None) -> int:
        company = self._id_param("company_id", request.args.get("company_id") or (body or {}).get("company_id"))
        if company != self.company_id:
            raise error(403, NOT_CONNECTED_MESSAGE)
        return company

    def project_param(self, body: Mapping[str, Any] | None = None, path_value: int | None = None) -> int:
        raw = path_value if path_value is not None else request.args.get("project_id") or (body or {}).get("project_id")
        project_id = self._id_param("project_id", raw)
        if self.tables["projects"].live(project_id) is None:
            raise not_found("Project", project_id)
        return project_id

    @staticmethod
    def _id_param(name: str, raw: Any) -> int:
        if raw in (None, ""):
            raise field_errors(400, {name: ["is missing"]})
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise field_errors(400, {name: ["is invalid"]}) from None

    # ---- writing -------------------------------------------------------------------------------

    def write(self, kind_name: str, attrs: Mapping[str, Any], current: Row | None,
              scope: int | None) -> tuple[Row | None, Errors]:
        """Validate and apply one create (current None) or update; nothing changes on error."""
        kind = KINDS[kind_name]
        errors: Errors = {}
        clean: dict[str, Any] = {}
        for name, value in attrs.items():
            coerce = kind.fields.get(name)
            if name in SCOPE_KEYS or (coerce is None and not self.settings.strict_attributes):
                continue
            if coerce is None:
                errors.setdefault(name, []).append("is not a valid attribute")
                continue
            try:
                clean[name] = coerce(value)
            except ValueError as exc:
                errors.setdefault(name, []).append(str(exc))
        if kind_name == "dc" and current is not None:
            clean.pop("direct_cost_type", None)  # the type can only be set when the item is created
        merged = {**(current or {**dict.fromkeys(kind.fields), **kind.defaults}), **clean, "_changed": set(clean)}
        if not errors:
            kind.validate(self, merged, current, scope, errors)
            merged.update({name: value for name, value in kind.filled.items() if merged.get(name) is None})
        merged.pop("_changed", None)
        holder = self.tables[kind.table].holder(merged.get("origin_id"))
        if holder is not None and (current is None or holder != current["id"]):
            errors.setdefault("origin_id", []).append("has already been taken")
        if errors:
            return None, errors
        now = self.clock.now_whole_seconds()
        if current is None:
            row = {**merged, "_created": now, "_updated": now, "_deleted": None}
            if kind.parent_table is not None and row.get("position") is None:
                row["position"] = len(self.tables[kind.table].scan(scope)) + 1
            row = self.tables[kind.table].insert(row, scope)
        else:
            row = self.tables[kind.table].write(current, {**merged, "_updated": now})
        if kind.parent_table is not None:
            parent = self.tables[kind.parent_table].row(scope)
            if parent is not None:
                self.tables[kind.parent_table].write(parent, {"_updated": now})
        return row, {}

    def save(self, kind_name: str, attrs: Mapping[str, Any], current: Row | None, scope: int | None) -> Response:
        """The single create (201) or update (200) path, or 406 / 422 (409 or 422 for a duplicate origin_id).

        A create repeating an Idempotency-Token (the vendor's Ruby client sends it) gets the stored answer."""
        token = request.headers.get("Idempotency-Token") if current is None else None
        if token and (token, request.path) in self._idempotent:
            return json_response(*self._idempotent[(token, request.path)])
        row, errors = self.write(kind_name, attrs, current, scope)
        if errors:
            raise self._write_error(errors)
        answer = (self.render.answer(kind_name, row), 201 if current is None else 200)
        if token:
            self._idempotent[(token, request.path)] = answer
            while len(self._idempotent) > IDEMPOTENCY_KEEP:
                self._idempotent.popitem(last=False)
        return json_response(*answer)

    def _write_error(self, errors: Errors) -> ApiError:
        unknown = sorted(k for k, msgs in errors.items() if "is not a valid attribute" in msgs)
        if unknown:
            return error(406, f"Unknown attribute(s): {', '.join(unknown)}")
        if errors.get("origin_id") == ["has already been taken"] and len(errors) == 1:
            return field_errors(int(self.settings.duplicate_origin_status), errors)
        return field_errors(422, errors)

    def sync(self, kind_name: str, items: Any, scope_of: Callable[[Row], tuple[int | None, str | None]],
             accept: Callable[[Row], bool]) -> Response:
        """The sync action: always 200 with `entities` and `errors`, id before origin_id. `accept`
        tells the records an item may change; `scope_of` where a new one goes (or what is wrong)."""
        if not isinstance(items, list):
            raise field_errors(400, {"updates": ["is missing"]})
        if len(items) > SYNC_MAX_ITEMS:
            raise field_errors(400, {"updates": [f"must contain at most {SYNC_MAX_ITEMS} items"]})
        table = self.tables[KINDS[kind_name].table]
        entities: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for item in items:
            if not isinstance(item, dict):
                failures.append({"errors": {"base": ["must be an object"]}})
                continue
            # By id, else by origin_id; one found elsewhere in the company is not this scope's record,
            # so the create below meets the company-wide uniqueness rule.
            by_id = item.get("id") is not None
            current = table.live(safe_int(item["id"]) if by_id else table.holder(str(item.get("origin_id") or "")))
            if current is not None and not accept(current):
                current = None
            if by_id and current is None:
                failures.append({**item, "errors": {"id": ["Entity with this ID not found"]}})
                continue
            scope, problem = (current["_scope"], None) if current is not None else scope_of(item)
            if problem:
                field, message = problem.split(" ", 1)
                failures.append({**item, "errors": {field: [message]}})
                continue
            row, errors = self.write(kind_name, item, current, scope)
            if errors:
                failures.append({**item, "errors": errors})
            else:
                entities.append(self.render.answer(kind_name, row))
        return json_response({"entities": entities, "errors": failures}, 200)

    @contextlib.contextmanager
    def holding(self, ids: Iterable[int | None]) -> Iterator[None]:
        """Mark direct costs as being written while the body runs; a second writer meanwhile gets 409."""
        wanted = {i for i in ids if i is not None}
        with self.lock:
            if wanted & self._busy_direct_costs:
                raise error(409, DIRECT_COST_BUSY_MESSAGE)
            self._busy_direct_costs |= wanted
        if self.settings.direct_cost_write_seconds:
            time.sleep(float(self.settings.direct_cost_write_seconds))
        try:
            yield
        finally:
            with self.lock:
                self._busy_direct_costs -= wanted

    def soft_delete(self, table: str, row: Row) -> None:
        row["_updated"] = now = self.clock.now_whole_seconds()
        self.tables[table].remove(row["id"], mark=now)
