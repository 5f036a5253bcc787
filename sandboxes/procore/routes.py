"""Procore's HTTP surface: the company directory (me, companies, projects, vendors, cost codes,
line item types), purchase order contracts and direct costs, each with their line items; and
the list answers they share: `filters[...]` (date ranges, ids, origin ids, soft-deleted rows),
`sort`, and bare-array pages with the `Total` / `Per-Page` / `Link` headers."""

from __future__ import annotations

import contextlib
import json
import math
import re
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator
from urllib.parse import urlencode

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from sandboxes.kit.routes import json_response, model_route

from . import auth
from .rules import KINDS
from .values import (API, DEFAULT_PER_PAGE, NOT_CONNECTED_MESSAGE, ApiError, error, field_errors, not_found,
                     parse_range, safe_int)

if TYPE_CHECKING:
    from .sandbox import ProcoreSandbox

Row = dict[str, Any]
Extra = tuple[str, Callable[[Row], bool]]  # a listing's own condition, named for the query cache
FILTER_KEY = re.compile(r"filters\[(\w+)\](\[\])?")
TEXT_FILTERS = ("status", "invoice_number", "vendor_id", "parent_id", "direct_cost_type")
SEARCHED = ("name", "abbreviated_name", "origin_code", "trade_name")
SORTABLE = ("id", "_updated", "_created", "name", "number", "code")


def register(sb: "ProcoreSandbox", app: Flask) -> None:
    auth.register_guard(sb, app)

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return json_response(exc.body, exc.status, exc.headers)

    def _http_error(exc: HTTPException) -> Response:
        return json_response({"error": exc.name}, exc.code or 500)

    for code in (404, 405):  # "Not Found", "Method Not Allowed"
        app.register_error_handler(code, _http_error)

    def write_settings(settings: Any) -> None:
        with sb.lock:
            sb.settings = settings
            sb._windows.clear()

    model_route(app, "/_sandbox/settings", type(sb.settings), lambda: sb.settings, write_settings)
    auth.register_oauth(sb, app)
    _routes(sb, app)


# ---- list answers ------------------------------------------------------------------------------


def _query(sb: "ProcoreSandbox", table: str, scope: int | None, filters: tuple[tuple[str, tuple[str, ...]], ...],
           sort: str, extra: Callable[[Row], bool] | None) -> list[int]:
    predicates: list[Callable[[Row], bool]] = [extra] if extra else []
    include_deleted = None
    candidates: Iterable[int] | None = None  # None: the whole scope
    for name, values in filters:
        value = values[-1]
        if name == "include_deleted":
            if value not in ("only", "with"):
                raise field_errors(400, {"filters[include_deleted]": ["does not have a valid value"]})
            include_deleted = value
        elif name in ("updated_at", "created_at"):
            try:
                low, high = parse_range(value)
            except ValueError:
                message = "is invalid; use an ISO-8601 range start...end"
                raise field_errors(400, {f"filters[{name}]": [message]}) from None
            predicates.append(lambda row, c="_" + name.split("_")[0], lo=low, hi=high:
                              (lo is None or row[c] >= lo) and (hi is None or row[c] <= hi))
        elif name == "id":
            try:
                wanted = {int(v) for raw in values for v in raw.strip("[]").split(",") if v.strip()}
            except ValueError:
                raise field_errors(400, {"filters[id]": ["is invalid"]}) from None
            predicates.append(lambda row, w=wanted: row["id"] in w)
        elif name == "origin_id":
            origins = {v.strip() for raw in values
                       for v in (raw[1:-1].split(",") if raw.startswith("[") and raw.endswith("]") else [raw])}
            predicates.append(lambda row, w=origins: row.get("origin_id") in w)
            if include_deleted is None and len(origins) <= 16:
                candidates = sorted({row["id"] for o in origins for row in sb.tables[table].lookup("origin_id", o)
                                     if row["_scope"] == scope})
        elif name in TEXT_FILTERS:
            wanted_text = {v.lower() for v in values}
            predicates.append(lambda row, f=name, w=wanted_text: str(row.get(f)).lower() in w)
        elif name == "search":
            predicates.append(lambda row, n=value.lower(): any(n in str(row.get(f) or "").lower() for f in SEARCHED))
        # Other documented filters (trade_id, standard_cost_code_id, ...) match everything here.
    rows = [row for row in sb.tables[table].scan(scope, None if include_deleted else candidates)
            if include_deleted == "with" or (row["_deleted"] is not None) == (include_deleted == "only")
            if all(p(row) for p in predicates)]
    named = sort.lstrip("-").split(",")[0]
    column = {"updated_at": "_updated", "created_at": "_created"}.get(named, named)
    if sort and column in SORTABLE:
        rows.sort(key=lambda row: (row.get(column) is None, row.get(column) or 0), reverse=sort.startswith("-"))
    return [row["id"] for row in rows]


def page(sb: "ProcoreSandbox", ids: list[int]) -> tuple[list[int], dict[str, str]]:
    """One page of `ids` and Procore's Total / Per-Page / Link headers."""
    try:
        number = max(1, int(request.args.get("page", 1)))
        per_page = int(request.args.get("per_page", sb.settings.default_per_page))
    except ValueError:
        raise field_errors(400, {"page": ["is invalid"]}) from None
    per_page = min(max(1, per_page), int(sb.settings.max_per_page))
    total, last = len(ids), max(1, math.ceil(len(ids) / per_page))
    headers = {"Total": str(total), "Per-Page": str(per_page)}
    if total > per_page:
        args = [(k, v) for k in request.args for v in request.args.getlist(k) if k not in ("page", "per_page")]

        def link(to: int, rel: str) -> str:
            text = urlencode(args + [("page", to), ("per_page", per_page)])
            return f'<{request.host_url.rstrip("/")}{request.path}?{text}>; rel="{rel}"'

        links = [link(1, "first")] if number > 1 else []
        links += [link(min(number - 1, last), "prev")] if number > 2 else []
        links += [link(number + 1, "next")] if number < last else []
        headers["Link"] = ", ".join(links + [link(last, "last")])
    start = (number - 1) * per_page
    return ids[start:start + per_page], headers


def listing(sb: "ProcoreSandbox", kind_name: str, scope: int | None, extra: Extra | None = None) -> Response:
    """One page of the records matching `filters[...]` in `sort` order; the matching ids are
    kept until the table's next write, so paging through them is cheap."""
    table = KINDS[kind_name].table
    filters = tuple((match.group(1), tuple(request.args.getlist(key)))
                    for key in sorted(request.args) if (match := FILTER_KEY.fullmatch(key)))
    sort = request.args.get("sort", "")
    with sb.lock:
        ids = sb.tables[table].cached((scope, filters, sort, extra[0] if extra else None),
                                      lambda: _query(sb, table, scope, filters, sort, extra[1] if extra else None))
        ids, headers = page(sb, ids)
        body = [sb.render.answer(kind_name, row, listed=True) for row in sb.tables[table].scan(scope, ids)]
    return json_response(body, 200, headers)


# ---- the collections ---------------------------------------------------------------------------


def _body() -> dict[str, Any]:
    """The request's JSON object ({} when empty), or Procore's 406 / 400."""
    raw = request.get_data()
    if request.mimetype not in ("application/json", "") and raw:
        raise error(406, f"Unsupported content type {request.mimetype}; send application/json")
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise error(400, "Malformed JSON in request body") from None
    if not isinstance(body, dict):
        raise error(400, "Request body must be a JSON object")
    return body


def _collection(sb: "ProcoreSandbox", app: Flask, path: str, kind_name: str, ops: str, where: Callable[..., Any],
                wrap: str = "", extra: Callable[[], Any] = lambda: None, scope_first: bool = False,
                held: Callable[..., Any] = lambda **path: contextlib.nullcontext()) -> None:
    """The actions of one collection that `ops` names: l(ist), s(how), c(reate), u(pdate), d(elete), (s)y(nc).

    `where(body, **path)` checks the request's company or project (and holder) and answers the
    scope its records live in; `scope_first` checks it before the `wrap`ped attributes are read;
    `extra()` names a list's own condition; `held(**path)` guards a write against concurrent writers.
    """
    table, item = KINDS[kind_name].table, f"{path}/<int:rid>"

    def attributes(body: dict[str, Any], path_args: dict[str, Any]) -> dict[str, Any]:
        if scope_first:
            where(body, **path_args)
        if not isinstance(body.get(wrap), dict):  # the one object a write wraps its attributes in
            raise field_errors(400, {wrap: ["is missing"]})
        return body[wrap]  # type: ignore[no-any-return]

    def live(rid: int, body: Any, path_args: dict[str, Any]) -> Row:
        return _live(sb, kind_name, rid, where(body, **path_args))

    def route(op: str, action: str, method: str, rule: str) -> Callable[[Callable[..., Response]], Any]:
        if op not in ops:
            return lambda view: view
        return app.route(rule, methods=[method], endpoint=f"{kind_name}:{action}")

    @route("l", "list", "GET", path)
    def _list(**path_args: Any) -> Response:
        with sb.lock:
            scope = where(None, **path_args)
        return listing(sb, kind_name, scope, extra())

    @route("s", "show", "GET", item)
    def _show(rid: int, **path_args: Any) -> Response:
        with sb.lock:
            return json_response(sb.render.answer(kind_name, live(rid, None, path_args)))

    @route("c", "create", "POST", path)
    def _create(**path_args: Any) -> Response:
        body = _body()
        attrs = attributes(body, path_args)
        with held(**path_args), sb.lock:
            return sb.save(kind_name, attrs, None, where(body, **path_args))

    @route("u", "update", "PATCH", item)
    def _update(rid: int, **path_args: Any) -> Response:
        body = _body()
        attrs = attributes(body, path_args)
        with held(rid=rid, **path_args), sb.lock:
            current = live(rid, body, path_args)
            return sb.save(kind_name, attrs, current, current["_scope"])

    @route("d", "delete", "DELETE", item)
    def _delete(rid: int, **path_args: Any) -> Response:
        with held(rid=rid, **path_args), sb.lock:
            sb.soft_delete(table, live(rid, None, path_args))
        return Response(status=204)

    @route("y", "sync", "PATCH", f"{path}/sync")
    def _sync(**path_args: Any) -> Response:
        body = _body()
        if scope_first:
            where(body, **path_args)
        with sb.lock:
            scope = where(body, **path_args)
            return sb.sync(kind_name, body.get("updates"), lambda item: (scope, None),
                           lambda row: row["_scope"] == scope)


def _routes(sb: "ProcoreSandbox", app: Flask) -> None:
    pos, dcs = f"{API}/purchase_order_contracts", f"{API}/projects/<int:project_id>/direct_costs"

    @app.get(f"{API}/me")
    def _me() -> Response:
        return json_response({"id": sb.user_id, "login": "integration@sandbox.example.com", "name": "ERP Integration"})

    @app.get(f"{API}/companies")
    def _companies() -> Response:
        return json_response([sb.render.company()], 200, {"Total": "1", "Per-Page": str(DEFAULT_PER_PAGE)})

    def company(body: Any) -> None:
        sb.company_param(body)

    def project(body: Any, project_id: int) -> int:
        return sb.project_param(path_value=project_id)

    def po_holder(body: Any, po_id: int) -> int:
        return _live(sb, "po", po_id, sb.project_param(body))["id"]

    def dc_holder(body: Any, project_id: int, dc_id: int) -> int:
        sb.project_param(path_value=project_id)
        return _live(sb, "dc", dc_id, project_id)["id"]

    @contextlib.contextmanager
    def dc_held(project_id: int, dc_id: int | None = None, rid: int | None = None) -> Iterator[None]:
        """The project and direct cost exist; the cost is held from other writers while the body runs
        (a new direct cost has nothing to hold yet)."""
        target = dc_id if rid is None else rid
        if target is None:
            yield
            return
        with sb.lock:
            dc_holder(None, project_id, target)
        with sb.holding([target]):
            yield

    def vendor_listing(active: bool) -> Extra | None:
        if active and sb.settings.inactive_vendors_listed:
            return None
        return ("active" if active else "inactive", lambda row: bool(row.get("is_active") is not False) == active)

    _collection(sb, app, f"{API}/projects", "project", "ls", company)
    _collection(sb, app, f"{API}/vendors", "vendor", "lscuy", company, "vendor", lambda: vendor_listing(True), True)
    _collection(sb, app, f"{API}/cost_codes", "cost_code", "lscy", sb.project_param, "cost_code")
    _collection(sb, app, pos, "po", "lscudy", sb.project_param, "purchase_order_contract")
    # (Round 2) the line items' sync takes project_id as a query parameter (a body value is also read).
    _collection(sb, app, f"{pos}/<int:po_id>/line_items", "po_line", "lcy", po_holder, "line_item")
    # (Round 2) v1.0 wraps a direct cost's attributes in "item".
    _collection(sb, app, dcs, "dc", "lscudy", project, "item", held=dc_held)
    _collection(sb, app, f"{dcs}/<int:dc_id>/line_items", "dc_line", "lc", dc_holder, "line_item", held=dc_held)

    @app.get(f"{API}/companies/<int:company_id>/vendors/inactive")
    def _inactive_vendors(company_id: int) -> Response:
        if company_id != sb.company_id:
            raise error(403, NOT_CONNECTED_MESSAGE)
        return listing(sb, "vendor", None, vendor_listing(False))

    @app.get(f"{API}/line_item_types")
    def _line_item_types() -> Response:
        with sb.lock:
            sb.project_param() if request.args.get("project_id") else sb.company_param()
        return listing(sb, "line_item_type", None)

    @app.patch(f"{dcs}/line_items/sync")
    def _dc_line_sync(project_id: int) -> Response:
        body = _body()
        items = body.get("updates")
        with sb.lock:
            sb.project_param(path_value=project_id)
            # The direct costs the items touch, held from other writers while the batch runs.
            touched = [line["_scope"] if (line := _sync_target(sb, "direct_cost_line_items", item)) else
                       safe_int(item.get("direct_cost_id")) for item in (items if isinstance(items, list) else [])
                       if isinstance(item, dict)]

        def scope_of(item: Row) -> tuple[int | None, str | None]:
            dc_id = safe_int(item.get("direct_cost_id"))
            if dc_id is None:
                return None, "direct_cost_id can't be blank"
            if sb.tables["direct_costs"].live(dc_id, project_id) is None:
                return None, "direct_cost_id is invalid"
            return dc_id, None

        def in_project(line: Row) -> bool:
            return sb.tables["direct_costs"].live(line["_scope"], project_id) is not None

        with sb.holding(touched), sb.lock:
            return sb.sync("dc_line", items, scope_of, in_project)


def _live(sb: "ProcoreSandbox", kind_name: str, rid: int, scope: Any) -> Row:
    kind = KINDS[kind_name]
    row = sb.tables[kind.table].live(rid, scope)
    if row is None:
        raise not_found(kind.model, rid)
    return row


def _sync_target(sb: "ProcoreSandbox", table: str, item: Row) -> Row | None:
    """The live record a sync item names, by id or else by origin_id."""
    return (sb.tables[table].live(safe_int(item.get("id")))
            or sb.tables[table].live(sb.tables[table].holder(str(item.get("origin_id") or ""))))
