"""Procore's HTTP surface: the company directory (me, companies, projects, vendors, cost codes,
line item types), purchase order contracts and direct costs, each with their line items."""

from __future__ import annotations

import contextlib
import functools
import json
from typing import TYPE_CHECKING, Any, Callable, Iterator

from flask import Flask, Response, request

from sandboxes.kit.routes import json_response, model_route

from . import auth
from .listing import listing
from .rules import KINDS
from .values import API, DEFAULT_PER_PAGE, NOT_CONNECTED_MESSAGE, ApiError, error, not_found, safe_int, wrapped

if TYPE_CHECKING:
    from .sandbox import ProcoreSandbox

Row = dict[str, Any]


def register(sb: "ProcoreSandbox", app: Flask) -> None:
    auth.register_guard(sb, app)

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return json_response(exc.body, exc.status, exc.headers)

    @app.errorhandler(404)
    def _not_found(exc: Exception) -> Response:
        return json_response({"error": "Not Found"}, 404)

    @app.errorhandler(405)
    def _not_allowed(exc: Exception) -> Response:
        return json_response({"error": "Method Not Allowed"}, 405)

    def write_settings(settings: Any) -> None:
        with sb.lock:
            sb.settings = settings
            sb._windows.clear()

    model_route(app, "/_sandbox/settings", type(sb.settings), lambda: sb.settings, write_settings)
    auth.register_oauth(sb, app)
    _directory(sb, app)
    _commitments(sb, app)
    _direct_costs(sb, app)


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


def _collection(sb: "ProcoreSandbox", app: Flask, path: str, kind_name: str, ops: str,
                where: Callable[..., Any], show: Callable[[Row], dict[str, Any]], *, wrap: str = "",
                lister: Callable[[], Callable[[Row], dict[str, Any]]] | None = None,
                extra: Callable[[], Any] = lambda: None, scope_first: bool = False,
                held: Callable[..., Any] = lambda **path: contextlib.nullcontext()) -> None:
    """The actions of one collection that `ops` names: l(ist), s(how), c(reate), u(pdate), d(elete), (s)y(nc).

    `where(body, **path)` checks the request's company or project (and holder) and answers the
    scope its records live in; `scope_first` checks it before the wrapped attributes are read;
    `held(**path)` guards a write against concurrent writers.
    """
    table, item = KINDS[kind_name].table, f"{path}/<int:rid>"

    def attributes(body: dict[str, Any], path_args: dict[str, Any]) -> dict[str, Any]:
        if scope_first:
            where(body, **path_args)
        return wrapped(body, wrap)

    def endpoint(action: str) -> str:
        return f"{kind_name}:{action}"

    if "l" in ops:
        @app.get(path, endpoint=endpoint("list"))
        def _list(**path_args: Any) -> Response:
            with sb.lock:
                scope = where(None, **path_args)
            return listing(sb, table, scope, (lister or (lambda: show))(), extra())
    if "s" in ops:
        @app.get(item, endpoint=endpoint("show"))
        def _show(rid: int, **path_args: Any) -> Response:
            with sb.lock:
                return json_response(show(_live(sb, kind_name, rid, where(None, **path_args))))
    if "c" in ops:
        @app.post(path, endpoint=endpoint("create"))
        def _create(**path_args: Any) -> Response:
            body = _body()
            attrs = attributes(body, path_args)
            with held(**path_args), sb.lock:
                return sb.create(kind_name, attrs, where(body, **path_args))
    if "u" in ops:
        @app.patch(item, endpoint=endpoint("update"))
        def _update(rid: int, **path_args: Any) -> Response:
            body = _body()
            attrs = attributes(body, path_args)
            with held(rid=rid, **path_args), sb.lock:
                return sb.update(kind_name, attrs, _live(sb, kind_name, rid, where(body, **path_args)))
    if "d" in ops:
        @app.delete(item, endpoint=endpoint("delete"))
        def _delete(rid: int, **path_args: Any) -> Response:
            with held(rid=rid, **path_args), sb.lock:
                sb.soft_delete(table, _live(sb, kind_name, rid, where(None, **path_args)))
            return Response(status=204)
    if "y" in ops:
        @app.patch(f"{path}/sync", endpoint=endpoint("sync"))
        def _sync(**path_args: Any) -> Response:
            body = _body()
            if scope_first:
                where(body, **path_args)
            with sb.lock:
                scope = where(body, **path_args)
                return sb.sync(kind_name, body.get("updates"), lambda item: (scope, None), scope)


def _directory(sb: "ProcoreSandbox", app: Flask) -> None:
    render = sb.render

    @app.get(f"{API}/me")
    def _me() -> Response:
        return json_response({"id": sb.user_id, "login": "integration@sandbox.example.com", "name": "ERP Integration"})

    @app.get(f"{API}/companies")
    def _companies() -> Response:
        return json_response([render.company()], 200, {"Total": "1", "Per-Page": str(DEFAULT_PER_PAGE)})

    def company(body: Any) -> None:
        sb.company_param(body)

    def vendor_listing(active: bool) -> tuple[str, Callable[[Row], bool]] | None:
        if active and sb.settings.inactive_vendors_listed:
            return None
        return ("active" if active else "inactive", lambda row: bool(row.get("is_active") is not False) == active)

    _collection(sb, app, f"{API}/projects", "project", "ls", company, render.project)
    _collection(sb, app, f"{API}/vendors", "vendor", "lscuy", company, render.vendor, wrap="vendor",
                extra=lambda: vendor_listing(True), scope_first=True)
    _collection(sb, app, f"{API}/cost_codes", "cost_code", "lscy", sb.project_param, render.cost_code, wrap="cost_code")

    @app.get(f"{API}/companies/<int:company_id>/vendors/inactive")
    def _inactive_vendors(company_id: int) -> Response:
        if company_id != sb.company_id:
            raise error(403, NOT_CONNECTED_MESSAGE)
        return listing(sb, "vendors", None, render.vendor, vendor_listing(False))

    @app.get(f"{API}/line_item_types")
    def _line_item_types() -> Response:
        with sb.lock:
            sb.project_param() if request.args.get("project_id") else sb.company_param()
        return listing(sb, "line_item_types", None, render.line_type)


def _commitments(sb: "ProcoreSandbox", app: Flask) -> None:
    base = f"{API}/purchase_order_contracts"

    def holder(body: Any, po_id: int) -> int:
        return _live(sb, "po", po_id, sb.project_param(body))["id"]

    _collection(sb, app, base, "po", "lscudy", sb.project_param, sb.render.po, wrap="purchase_order_contract",
                lister=lambda: functools.partial(sb.render.po, extended=request.args.get("view") == "extended"))
    # (Round 2) the line items' sync takes project_id as a query parameter (a body value is also read).
    _collection(sb, app, f"{base}/<int:po_id>/line_items", "po_line", "lcy", holder, sb.render.line, wrap="line_item")


def _direct_costs(sb: "ProcoreSandbox", app: Flask) -> None:
    base = f"{API}/projects/<int:project_id>/direct_costs"

    def project(body: Any, project_id: int) -> int:
        return sb.project_param(path_value=project_id)

    def holder(body: Any, project_id: int, dc_id: int) -> int:
        sb.project_param(path_value=project_id)
        return _live(sb, "dc", dc_id, project_id)["id"]

    @contextlib.contextmanager
    def dc_held(project_id: int, dc_id: int) -> Iterator[None]:
        """The project and direct cost exist; the cost is held from other writers while the body runs."""
        with sb.lock:
            holder(None, project_id, dc_id)
        held = sb.hold_direct_costs([dc_id])
        try:
            yield
        finally:
            sb.release_direct_costs(held)

    def own(project_id: int, rid: int | None = None) -> Any:  # a new direct cost has nothing to hold yet
        return contextlib.nullcontext() if rid is None else dc_held(project_id, rid)

    # (Round 2) v1.0 wraps a direct cost's attributes in "item".
    _collection(sb, app, base, "dc", "lscudy", project, functools.partial(sb.render.dc, with_lines=True), wrap="item",
                lister=lambda: functools.partial(sb.render.dc, with_lines=request.args.get("view") == "extended"),
                held=own)
    _collection(sb, app, f"{base}/<int:dc_id>/line_items", "dc_line", "lc", holder, sb.render.line,
                wrap="line_item", held=dc_held)

    @app.patch(f"{base}/line_items/sync")
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

        held = sb.hold_direct_costs(touched)
        try:
            with sb.lock:
                return sb.sync("dc_line", items, scope_of, accept=in_project)
        finally:
            sb.release_direct_costs(held)


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
