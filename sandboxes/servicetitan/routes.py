"""The ServiceTitan HTTP surface: the token endpoint, auth and scopes, paged lists, by-id reads,
export feeds, the write endpoints and markasexported, and the webhook control routes (requests
are read and checked in params.py)."""

from __future__ import annotations

import hmac
import json
import secrets
from decimal import Decimal
from functools import partial
from typing import Any, Callable, Literal

from flask import Flask, Response, request
from pydantic import BaseModel, Field, field_validator
from werkzeug.exceptions import HTTPException

from sandboxes.kit.routes import BodyError, body_as, json_response, model_route
from sandboxes.kit.tokens import bearer_token
from sandboxes.servicetitan.params import (
    ADDRESS_FIELDS, CUSTOMER_PATCH, NUMBER, PAYMENT_PATCH, PO_ITEM_FIELDS, PO_PATCH, VENDOR_PATCH, _apply_external,
    _bool_arg, _choice_error, _contact_errors, _customer_rules, _date_errors, _decode_token, _encode_token, _fields,
    _filter_test, _int_arg, _int_value, _list_arg, _object, _parse_external, _pascal, _patch, _pick_address,
    _refuse, _ship_address, _type_ok, _types, _when_arg, _when_iso,
)
from sandboxes.servicetitan.store import SKUS, Row, Table
from sandboxes.servicetitan.vendor import (
    ACTIVE_MODES, ALL_SCOPES, APP_KEY_INVALID, APP_KEY_MISSING, CANCEL_REASONS, DEFAULT_PAGE_SIZE, DELIVERY_OPTIONS,
    MARKS, MAX_IDS, PAYMENT_TYPES, PO_LOCKED_STATUSES, PROBLEM_TYPES, RESOURCES, SORT_FIELDS, STATUS_TITLES,
    SYNC_STATUSES, WEBHOOK_ENCODING, WEBHOOK_SIGNATURE_HEADER, ApiError, Resource, _CENT, dec, invalid, iso, money,
    num, parse_when, retry_after_header,
)

Errors = dict[str, list[str]]


class RoutesMixin:
    """The vendor's endpoints and the sandbox's webhook and scope controls, mixed into the sandbox."""

    # ---- vendor error shapes ------------------------------------------------------------------

    def problem(self, status: int, title: str, errors: Errors | None = None,
                headers: dict[str, str] | None = None) -> Response:
        body = {"type": PROBLEM_TYPES.get(status, "about:blank"), "title": title, "status": status,
                "traceId": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01", "errors": errors or {}, "data": {}}
        return Response(json.dumps(body), status=status, mimetype="application/problem+json", headers=headers)

    def rate_limited_response(self, retry_after: float) -> Response:
        return self.problem(429, "Too Many Requests", {}, retry_after_header(retry_after))

    def error_response(self, status: int, message: str) -> Response:
        return self.problem(status, STATUS_TITLES.get(status, message) if message == "Injected fault" else message)

    # ---- the vendor API -------------------------------------------------------------------

    def register_vendor_routes(self, app: Flask) -> None:
        app.json.sort_keys = False  # keep the vendor's field order on the wire
        app.register_error_handler(ApiError, lambda exc: self.problem(exc.status, exc.title, exc.errors, exc.headers))

        @app.errorhandler(HTTPException)
        def _http_error(exc: HTTPException) -> Response:
            if request.path.startswith("/_sandbox/"):
                return Response(json.dumps({"error": exc.description}), status=exc.code, mimetype="application/json")
            return self.problem(exc.code or 500, exc.name)

        reads: list[tuple[str, str, Callable[..., Response]]] = [("POST", "/connect/token", self._token)]
        for res in RESOURCES.values():
            base = f"/{res.module}/v2/tenant/<int:tenant>/{res.path}"
            if res.entity == "inventory_bills":  # the plain path answers a bare array
                reads.append(("GET", base, partial(self._list, res, bare=True)))
                base += "/paginated"
            reads.append(("GET", base, partial(self._list, res)))
            if res.by_id:
                reads.append(("GET", base + "/<int:rid>", partial(self._get, res)))
            if res.export:
                reads.append(("GET", f"/{res.module}/v2/tenant/<int:tenant>/{res.export}", partial(self._export, res)))
        writes = (
            ("POST", "inventory", "vendors", self._create_vendor),
            ("PATCH", "inventory", "vendors/<int:rid>", self._update_vendor),
            ("POST", "inventory", "purchase-orders", self._create_po),
            ("PATCH", "inventory", "purchase-orders/<int:rid>", self._update_po),
            ("PATCH", "inventory", "purchase-orders/<int:rid>/cancellation", self._cancel_po),
            ("PATCH", "inventory", "adjustments/<int:rid>", self._update_adjustment),
            ("POST", "crm", "customers", self._create_customer),
            ("PATCH", "crm", "customers/<int:rid>", self._update_customer),
            ("POST", "accounting", "payments", self._create_payment),
            ("PATCH", "accounting", "payments/<int:rid>", self._update_payment),
            ("POST", "accounting", "payments/status", self._payment_status),
            ("POST", "accounting", "gl-accounts", self._create_gl_account),
            *(("POST", "accounting", f"{RESOURCES[entity].path}/markasexported", partial(self._mark, entity))
              for entity in MARKS),
        )
        routes = [*reads, *((method, f"/{module}/v2/tenant/<int:tenant>/{path}", view_func)
                            for method, module, path, view_func in writes)]
        for method, path, view_func in routes:
            app.add_url_rule(path, f"st_{method} {path}", view_func, methods=[method])
        self._register_control(app)

    def _register_control(self, app: Flask) -> None:
        app.register_error_handler(BodyError, lambda exc: json_response({"error": str(exc)}, 400))

        @app.post("/_sandbox/webhooks")
        def _subscribe() -> Response:
            sub = body_as(Subscribe)
            return json_response({"id": self.webhooks.subscribe(sub.url, sub.hmac_key, sub.events or ["*"],
                                                                sub.header or WEBHOOK_SIGNATURE_HEADER,
                                                                sub.encoding)}, 201)

        @app.get("/_sandbox/webhooks")
        def _webhooks() -> Response:
            return json_response(self.webhooks.describe())

        @app.delete("/_sandbox/webhooks/<sub_id>")
        def _unsubscribe(sub_id: str) -> Response:
            if not self.webhooks.unsubscribe(sub_id):
                return json_response({"error": f"unknown subscription {sub_id}"}, 404)
            return json_response({"ok": True})

        @app.post("/_sandbox/webhooks/flush")
        def _flush() -> Response:
            flush = body_as(Flush)
            if flush.retry_now:
                self.webhooks.retry_now()
            idle = self.webhooks.wait_idle(flush.timeout)
            return json_response({"idle": idle, "pending": self.webhooks.describe()["pending"]})

        @app.post("/_sandbox/tick/<entity>")
        def _tick_entity(entity: str) -> Response:
            count = body_as(Tick).count
            try:
                with self.lock:
                    return json_response({"changed": self.tick(count, entity)})
            except KeyError:
                return json_response({"error": f"unknown entity {entity}"}, 404)

        model_route(app, "/_sandbox/scopes", Scopes, lambda: Scopes(scopes=sorted(self.app_scopes)),
                    lambda scopes: setattr(self, "app_scopes", set(scopes.scopes)))

    # ---- auth --------------------------------------------------------------------------------

    def _token(self) -> Response:
        def answer(body: dict[str, Any], status: int = 200) -> Response:
            return Response(json.dumps(body), status=status, mimetype="application/json",
                            headers={"Cache-Control": "no-store"})

        if request.mimetype != "application/x-www-form-urlencoded":
            return answer({"error": "invalid_request", "error_description": "The request must be form-encoded."}, 400)
        form = request.form
        if form.get("grant_type") != "client_credentials":
            return answer({"error": "unsupported_grant_type"}, 400)
        client_id = form.get("client_id", "")
        if not (hmac.compare_digest(client_id, self.client_id)
                and hmac.compare_digest(form.get("client_secret", ""), self.client_secret)):
            return answer({"error": "invalid_client"}, 400)
        requested = set(form.get("scope", "").split()) or set(self.app_scopes)
        if not requested <= self.app_scopes:
            return answer({"error": "invalid_scope"}, 400)
        scopes = tuple(sorted(requested))
        token, _ = self.tokens.issue(client_id, self.token_ttl, scopes=scopes, extra={"tenant": self.tenant_id})
        self.stats.token_issued()
        return answer({"access_token": token, "expires_in": self.token_ttl, "token_type": "Bearer",
                       "scope": " ".join(scopes)})

    def _authorize(self, tenant: int, scope: str, write: bool) -> None:
        app_key = request.headers.get("ST-App-Key") or request.args.get("servicetitanapplicationkey")
        if not app_key:
            raise ApiError(401, APP_KEY_MISSING)
        if not hmac.compare_digest(app_key, self.app_key):
            raise ApiError(401, APP_KEY_INVALID)
        token = bearer_token(request.headers.get("Authorization", ""))
        if not token:
            raise ApiError(401, "Authorization has been denied for this request.",
                           headers={"WWW-Authenticate": "Bearer"})
        issued = self.tokens.check(token)
        if issued is None:
            raise ApiError(401, "The access token is invalid or has expired.",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if issued.extra.get("tenant") != tenant:
            raise ApiError(403, f"Tenant {tenant} has not installed this application.")
        needed = f"{scope}:{'w' if write else 'r'}"
        if needed not in issued.scopes:
            raise ApiError(403, f"The access token does not grant the scope {needed}.")
        allowed, wait, _ = self.rate.hit(f"{app_key}:{tenant}")
        if not allowed:
            raise ApiError(429, "Too Many Requests", headers=retry_after_header(wait))

    # ---- reads --------------------------------------------------------------------------------

    def _list(self, res: Resource, tenant: int, bare: bool = False) -> Response:
        self._authorize(tenant, res.scope, write=False)
        args = request.args
        page = _int_arg(args, "page", 1, minimum=1)
        page_size = min(_int_arg(args, "pageSize", DEFAULT_PAGE_SIZE, minimum=1), self.max_page_size)
        include_total = _bool_arg(args, "includeTotal", False)
        sort = self._sort_arg(res, args.get("sort"))
        key, predicate = self._filters(res, args)
        guid = args.get("externalDataApplicationGuid")
        with self.lock:  # serialize under the lock: views are live records
            table = self.tables[res.entity]
            ids = table.query(key, predicate, sort)
            start = (page - 1) * page_size
            data = [self._read_view(table.rows[rid], guid) for rid in ids[start:start + page_size]]
            if bare:
                return json_response(data)
            return json_response({"page": page, "pageSize": page_size, "hasMore": len(ids) > start + page_size,
                                  "totalCount": len(ids) if include_total else None, "data": data})

    def _get(self, res: Resource, tenant: int, rid: int) -> Response:
        self._authorize(tenant, res.scope, write=False)
        with self.lock:
            row = self._row(res.entity, rid)
            return json_response(self._read_view(row, request.args.get("externalDataApplicationGuid")))

    def _export(self, res: Resource, tenant: int) -> Response:
        self._authorize(tenant, res.scope, write=False)
        _bool_arg(request.args, "includeRecentChanges", False)
        # Export feeds define only `from` and `includeRecentChanges`: a pageSize is not a parameter
        # there and is ignored; each answer holds up to the sandbox's export page size.
        with self.lock:
            table = self.tables[res.entity]
            position = self._export_position(res, table, request.args.get("from"))
            rows, position, has_more = table.export_after(position, self.export_page_size)
            data = [{**row.view, "active": row.active} if res.export_adds_active else row.view for row in rows]
            return json_response({"hasMore": has_more, "continueFrom": _encode_token(res.entity, position),
                                  "data": data})

    def _export_position(self, res: Resource, table: Table, raw: str | None) -> int:
        if not raw:
            return 0
        decoded = _decode_token(raw)
        if decoded is not None:
            entity, position = decoded
            if entity != res.entity:
                raise invalid("from", "The continuation token belongs to another export.")
            return position
        try:
            return table.first_seq_since(parse_when(raw))
        except ValueError:
            raise invalid("from", f"The value '{raw}' is neither a continuation token nor a date.") from None

    @staticmethod
    def _read_view(row: Row, guid: str | None) -> dict[str, Any]:
        if guid and row.external.get(guid) and "externalData" in row.view:
            pairs = [{"key": k, "value": v} for k, v in row.external[guid].items()]
            return {**row.view, "externalData": pairs}
        return row.view

    @staticmethod
    def _sort_arg(res: Resource, raw: str | None) -> tuple[str, bool]:
        if not raw or not res.sorts:
            return ("id", False)
        text = raw.strip()
        name = text.lstrip("+- ")
        allowed = {s.lower() for s in res.sorts}
        if name.lower() == "modified" and "modifiedon" in allowed:
            name = "ModifiedOn"
        if name.lower() not in allowed:
            raise invalid("sort", f"Sorting by '{name}' is not supported. "
                                  f"Available fields are: {', '.join(res.sorts)}.")
        return (SORT_FIELDS[name.lower()], text.startswith("-"))

    def _filters(self, res: Resource, args: Any) -> tuple[tuple[Any, ...], Callable[[Row], bool] | None]:
        """Normalized cache key and one predicate for the query string of a list call."""
        key: list[Any] = []
        checks: list[Callable[[Row], bool]] = []

        def add(part: Any, check: Callable[[Row], bool] | None) -> None:
            key.append(part)
            if check is not None:
                checks.append(check)

        def window(after: str, before: str, value: Callable[[Row], Any]) -> None:
            for name, later in ((after, True), (before, False)):
                if args.get(name):
                    bound = _when_arg(name, args[name])
                    add((name, bound), lambda r, b=bound, a=later: (v := value(r)) is not None and (v >= b) == a)

        ids = _list_arg(args, "ids")
        if ids:
            try:
                wanted = frozenset(int(i) for i in ids)
            except ValueError:
                raise invalid("ids", "Ids must be a comma-separated list of integers.") from None
            if len(wanted) > MAX_IDS:
                raise invalid("ids", f"The maximum number of ids is {MAX_IDS}.")
            add(("ids", tuple(sorted(wanted))), lambda r: r.view["id"] in wanted)
        window("createdOnOrAfter", "createdBefore", lambda r: r["created_us"])
        window("modifiedOnOrAfter", "modifiedBefore", lambda r: r["modified_us"])
        if res.active_param:
            default, modes, message = ACTIVE_MODES[res.active_param]
            mode = (args.get(res.active_param) or default).strip().lower()
            if mode not in modes:
                raise invalid(res.active_param, message.format(raw=args.get(res.active_param)))
            add((res.active_param, mode), None if modes[mode] is None else lambda r: r.active is modes[mode])
        for kind, param, *spec in res.filters:  # the collection's own filters
            raw = args.get(param)
            if kind == "dates":
                window(param, spec[0], lambda r, f=spec[1]: parse_when(r.view[f]) if r.view.get(f) is not None
                       else None)
            elif kind in ("in", "ints", "any") and _list_arg(args, param):
                values = _list_arg(args, param)
                found = frozenset(v.lower() if kind == "in" else _int_value(param, v) for v in values)
                add((param, tuple(sorted(found))), _filter_test(kind, tuple(spec), found))
            elif kind == "po_number" and raw:
                orders = frozenset(po.id for po in self.tables["purchase_orders"].rows.values()
                                   if po.view["number"] == raw)
                add((param, raw), lambda r, o=orders: r.view["purchaseOrderId"] in o)
            elif kind not in ("in", "ints", "any", "po_number") and raw not in (None, ""):
                value: Any = raw
                if kind == "int":
                    value = _int_value(param, raw)
                elif kind in ("ieq", "contains"):
                    value = (raw if kind == "ieq" else raw.strip()).lower()
                add((param, value), _filter_test(kind, tuple(spec), value))
        if res.external:
            self._external_filter(args, add)
        if not checks:
            return tuple(key), None
        if len(checks) == 1:
            return tuple(key), checks[0]
        return tuple(key), lambda r: all(check(r) for check in checks)

    @staticmethod
    def _external_filter(args: Any, add: Callable[[Any, Callable[[Row], bool]], None]) -> None:
        ext_key = args.get("externalDataKey")
        ext_values = _list_arg(args, "externalDataValues")
        if not (ext_key or ext_values):
            return
        if not (ext_key and ext_values):
            raise invalid("externalDataKey", "'externalDataKey' and 'externalDataValues' must be provided together.")
        if len(ext_values) > MAX_IDS:
            raise invalid("externalDataValues", f"The maximum number of values is {MAX_IDS}.")
        guid = args.get("externalDataApplicationGuid")
        wanted = frozenset(ext_values)

        def external_match(r: Row) -> bool:
            stores = [r.external.get(guid, {})] if guid else r.external.values()
            return any(store.get(ext_key) in wanted for store in stores)

        add(("external", guid, ext_key, tuple(sorted(wanted))), external_match)

    def _row(self, entity: str, rid: int) -> Row:
        row = self.tables[entity].rows.get(rid)
        if row is None:
            label = entity.rstrip("s").replace("_", " ").capitalize()
            raise ApiError(404, f"{label} with id {rid} was not found.", {"id": [f"{label} {rid} does not exist."]})
        return row

    # ---- writes ----------------------------------------------------------------------------

    def _write_body(self, tenant: int, entity: str) -> dict[str, Any]:
        """Authorize a write to `entity` and read its JSON object body."""
        self._authorize(tenant, RESOURCES[entity].scope, write=True)
        return _object(self._body())

    @staticmethod
    def _body() -> dict[str, Any] | list[Any]:
        raw = request.get_data(cache=True)
        if not raw:
            raise invalid("request", "A non-empty request body is required.")
        try:
            return json.loads(raw)  # type: ignore[no-any-return]
        except ValueError as exc:
            raise invalid("$", f"The JSON value could not be converted: {exc.msg}.") from None

    def _create_vendor(self, tenant: int) -> Response:
        body = self._write_body(tenant, "vendors")
        errors = _fields(body, {"name": str, "active": bool, "isTruckReplenishment": bool, "taxRate": NUMBER,
                                "restrictedMobileCreation": bool, "address": dict})
        errors.update(self._vendor_rules(body))
        _refuse(errors)
        external = _parse_external(body.get("externalData"))
        with self.lock:
            self._unique_vendor_name(body["name"])
            contact = {k: body.get(k) or "" for k in ("firstName", "lastName", "phone", "email", "fax")}
            view = self._vendor_view(body["name"].strip(), body["active"], _pick_address(body["address"]), contact,
                                     memo=body.get("memo") or "", delivery=body.get("deliveryOption") or "Manual",
                                     tax_rate=float(body["taxRate"]))
            view["isTruckReplenishment"] = body["isTruckReplenishment"]
            view["isMobileCreationRestricted"] = body["restrictedMobileCreation"]
            _apply_external(self._create("vendors", view), external)
            return json_response({"id": view["id"]})

    @staticmethod
    def _vendor_rules(body: dict[str, Any]) -> Errors:
        errors: Errors = {}
        if isinstance(body.get("address"), dict):
            errors.update(_fields(body["address"], dict.fromkeys(ADDRESS_FIELDS, str), prefix="Address."))
        if "name" in body and (body["name"] is None or isinstance(body["name"], str) and not body["name"].strip()):
            errors["Name"] = ["The Name field is required."]  # (a PATCH may leave it out, never clear it)
        errors.update(_choice_error(body, "deliveryOption", DELIVERY_OPTIONS))
        if isinstance(body.get("taxRate"), NUMBER) and not 0 <= body["taxRate"] <= 1:
            errors["TaxRate"] = ["The tax rate must be between 0 and 1."]
        return errors

    def _unique_vendor_name(self, name: str, exclude: int | None = None) -> None:
        """(unconfirmed) ServiceTitan refuses a second vendor of one name (names compared trimmed, any case)."""
        if not self.unique_vendor_names:
            return
        wanted = name.strip().lower()
        if any(row.view["name"].strip().lower() == wanted and row.view["id"] != exclude
               for row in self.tables["vendors"].rows.values()):
            raise invalid("Name", f"A vendor named '{name}' already exists.")

    def _update_vendor(self, tenant: int, rid: int) -> Response:
        body = self._write_body(tenant, "vendors")
        errors = _types(body, {"name": str, "active": bool, "memo": str, "firstName": str, "lastName": str,
                               "phone": str, "email": str, "fax": str, "isTruckReplenishment": bool,
                               "taxRate": NUMBER, "restrictedMobileCreation": bool, "address": dict})
        errors.update(self._vendor_rules(body))
        unique = (lambda: self._unique_vendor_name(body["name"], exclude=rid)) if "name" in body else None
        return self._update("vendors", rid, body, errors, VENDOR_PATCH, check=unique)

    def _update(self, entity: str, rid: int, body: dict[str, Any], errors: Errors, fields: dict[str, Any],
                check: Callable[[], None] | None = None, answer_view: bool = False) -> Response:
        """A PATCH: refuse field errors, else (after `check`, under the lock) apply the externalData
        patch and the PATCH body; answer the id, or the read view as the patching app sees it."""
        _refuse(errors)
        external = _parse_external(body.get("externalData"))
        with self.lock:
            row = self._row(entity, rid)
            if check is not None:
                check()
            _apply_external(row, external)
            _patch(row.view, body, fields)
            self._changed(entity, row)
            guid = external[0] if external else None
            return json_response(self._read_view(row, guid) if answer_view else {"id": rid})

    @staticmethod
    def _po_item_errors(items: Any, update: bool) -> Errors:
        errors: Errors = {}
        if not isinstance(items, list):
            return {"Items": ["The Items field must be a list."]}
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                errors[f"Items[{index}]"] = ["An object is required."]
                continue
            errors.update(_fields(item, {"id": int, **PO_ITEM_FIELDS} if update else PO_ITEM_FIELDS,
                                  prefix=f"Items[{index}]."))
            if isinstance(item.get("quantity"), NUMBER) and item["quantity"] <= 0:
                errors[f"Items[{index}].Quantity"] = ["Quantity must be greater than 0."]
            if isinstance(item.get("cost"), NUMBER) and item["cost"] < 0:
                errors[f"Items[{index}].Cost"] = ["Cost must not be negative."]
        return errors

    def _po_reference_errors(self, body: dict[str, Any]) -> Errors:
        errors: Errors = {}
        references = (("vendorId", "vendors", "Vendor"), ("businessUnitId", "business_units", "Business unit"),
                      ("inventoryLocationId", "warehouses", "Inventory location"))
        for name, entity, label in references:
            if name in body and body[name] not in self.tables[entity].rows:
                errors[_pascal(name)] = [f"{label} not found."]
        for index, item in enumerate(body.get("items") or []):
            sku = item.get("skuId") if isinstance(item, dict) else None
            if isinstance(sku, int) and not 0 <= sku - 8_801 < len(SKUS):
                errors[f"Items[{index}].SkuId"] = ["Sku not found."]
        return errors

    def _po_item_from_request(self, item: dict[str, Any], current: dict[str, Any] | None = None) -> dict[str, Any]:
        stamp = iso(self.clock.now_us())
        base = dict(current) if current else self._po_item(item["skuId"] - 8_801, item["quantity"], stamp)
        base.update({"skuId": item["skuId"], "description": item["description"],
                     "vendorPartNumber": item["vendorPartNumber"], "quantity": float(item["quantity"]),
                     "cost": num(item["cost"]), "budgetCodeId": item.get("budgetCodeId"), "modifiedOn": stamp})
        if not current:
            code, name, type_, _cost = SKUS[(item["skuId"] - 8_801) % len(SKUS)]
            base.update({"skuCode": code, "skuName": name, "skuType": type_})
        return base

    def _create_po(self, tenant: int) -> Response:
        body = self._write_body(tenant, "purchase_orders")
        errors = _fields(body, {"vendorId": int, "typeId": int, "businessUnitId": int, "inventoryLocationId": int,
                                "shipTo": dict, "impactsTechnicianPayroll": bool, "date": str, "requiredOn": str,
                                "tax": NUMBER, "shipping": NUMBER, "items": list})
        errors.update(self._po_item_errors(body.get("items", []), update=False))
        errors.update(_date_errors(body, ("date", "requiredOn")))
        _refuse(errors)
        with self.lock:
            _refuse(self._po_reference_errors(body))
            view = self._po_view(body["vendorId"], body["businessUnitId"], body["inventoryLocationId"],
                                 _when_iso(body["date"]), _ship_address(body["shipTo"]))
            view.update({"typeId": body["typeId"], "jobId": body.get("jobId"), "technicianId": body.get("technicianId"),
                         "projectId": body.get("projectId"), "requiredOn": _when_iso(body["requiredOn"]),
                         "tax": num(body["tax"]), "shipping": num(body["shipping"]), "summary": body.get("memo") or "",
                         "vendorDocumentNumber": body.get("vendorInvoiceNumber") or ""})
            view["items"] = [self._po_item_from_request(item) for item in body["items"]]
            self._recompute("purchase_orders", view)
            self._create("purchase_orders", view)
            return json_response({"id": view["id"]})

    def _update_po(self, tenant: int, rid: int) -> Response:
        body = self._write_body(tenant, "purchase_orders")
        errors = _types(body, {"vendorId": int, "typeId": int, "businessUnitId": int, "inventoryLocationId": int,
                               "jobId": int, "technicianId": int, "projectId": int, "shipTo": dict,
                               "vendorInvoiceNumber": str, "impactsTechnicianPayroll": bool, "memo": str, "date": str,
                               "requiredOn": str, "tax": NUMBER, "shipping": NUMBER, "items": list})
        if "items" in body:
            errors.update(self._po_item_errors(body["items"], update=True))
        errors.update(_date_errors(body, ("date", "requiredOn")))
        _refuse(errors)
        with self.lock:
            row = self._row("purchase_orders", rid)
            v = row.view
            if v["status"] in PO_LOCKED_STATUSES:
                raise invalid("Status", f"Purchase order {v['number']} is {v['status']} and can no longer be updated.")
            errors = self._po_reference_errors(body)
            current = {item["id"]: item for item in v["items"]}
            for index, item in enumerate(body.get("items") or []):
                if item["id"] and item["id"] not in current:
                    errors[f"Items[{index}].Id"] = [f"Purchase order item {item['id']} not found."]
            _refuse(errors)
            _patch(v, body, PO_PATCH)
            for item in body.get("items") or []:
                if item["id"]:
                    current[item["id"]].update(self._po_item_from_request(item, current[item["id"]]))
                else:
                    v["items"].append(self._po_item_from_request(item))
            self._recompute("purchase_orders", v)
            self._changed("purchase_orders", row)
            return json_response({"id": rid})

    def _cancel_po(self, tenant: int, rid: int) -> Response:
        self._authorize(tenant, RESOURCES["purchase_orders"].scope, write=True)
        body = _object(self._body()) if request.get_data() else {}
        if body.get("canceledReason") is not None and body["canceledReason"] not in CANCEL_REASONS:
            raise invalid("CanceledReason", f"The value '{body['canceledReason']}' is not valid.")
        with self.lock:
            row = self._row("purchase_orders", rid)
            if row.view["status"] in ("Received", "Exported", "Canceled"):
                raise invalid("Status", f"Purchase order {row.view['number']} is {row.view['status']} "
                                        "and cannot be canceled.")
            row.view["status"] = "Canceled"
            self._changed("purchase_orders", row)
            return json_response({"id": rid})

    def _update_adjustment(self, tenant: int, rid: int) -> Response:
        body = self._write_body(tenant, "adjustments")
        unknown = set(body) - {"externalData"}
        if unknown:
            raise invalid(_pascal(sorted(unknown)[0]), "This field cannot be updated.")
        return self._update("adjustments", rid, body, {}, {})

    def _create_customer(self, tenant: int) -> Response:
        body = self._write_body(tenant, "customers")
        errors = _fields(body, {"name": str, "locations": list, "address": dict})
        address_fields = dict.fromkeys(("street", "city", "state", "zip", "country"), str)
        if isinstance(body.get("address"), dict):
            errors.update(_fields(body["address"], address_fields, prefix="Address."))
        if isinstance(body.get("locations"), list):
            if not body["locations"]:
                errors["Locations"] = ["At least one location is required."]
            for index, location in enumerate(body["locations"]):
                loc = location if isinstance(location, dict) else {}
                errors.update(_fields(loc, {"name": str, "address": dict}, prefix=f"Locations[{index}]."))
                if isinstance(loc.get("address"), dict):
                    errors.update(_fields(loc["address"], address_fields, prefix=f"Locations[{index}].Address."))
                errors.update(_contact_errors(loc.get("contacts"), f"Locations[{index}].Contacts"))
        errors.update(_contact_errors(body.get("contacts"), "Contacts"))
        errors.update(_customer_rules(body))
        _refuse(errors)
        external = _parse_external(body.get("externalData"))
        with self.lock:
            view = self._customer_view(body["name"].strip(), body.get("type") or "Residential",
                                       _pick_address(body["address"], geo=True))
            for key in ("doNotMail", "doNotService", "nationalAccount", "taxExempt", "paymentTermId",
                        "creditLimit", "creditLimitBalance", "tagTypeIds"):
                if body.get(key) is not None:
                    view[key] = body[key]
            now = self.clock.now_us()
            row = self._insert("customers", view, now, now)
            _apply_external(row, external)
            row.extra["contacts"] = [{"id": next(self._location_ids) + 500_000, "type": c["type"],
                                      "value": c["value"], "memo": c.get("memo")} for c in body.get("contacts") or []]
            for location in body["locations"]:
                self._attach_location(row, location["name"], _pick_address(location["address"], geo=True),
                                      [(c["type"], c["value"]) for c in location.get("contacts") or []])
            self._emit("customers", "created", row)
            return json_response({**self._read_view(row, external[0] if external else None),
                                  "locations": row.extra.get("locations", []), "contacts": row.extra["contacts"]})

    def _update_customer(self, tenant: int, rid: int) -> Response:
        body = self._write_body(tenant, "customers")
        errors = _types(body, {"name": str, "type": str, "address": dict, "doNotMail": bool, "doNotService": bool,
                               "nationalAccount": bool, "active": bool, "tagTypeIds": list, "taxExempt": bool,
                               "paymentTermId": int, "creditLimit": NUMBER, "creditLimitBalance": NUMBER,
                               "customFields": list, "externalData": dict})
        if isinstance(body.get("address"), dict):
            errors.update(_fields(body["address"], {**dict.fromkeys(ADDRESS_FIELDS, str), "latitude": NUMBER,
                                                    "longitude": NUMBER}, prefix="Address."))
        errors.update(_customer_rules(body))
        return self._update("customers", rid, body, errors, CUSTOMER_PATCH, answer_view=True)

    def _split_errors(self, splits: Any, customer_id: int | None) -> tuple[Errors, list[tuple[Row, Decimal]]]:
        errors: Errors = {}
        applied: list[tuple[Row, Decimal]] = []
        if splits is None:
            return errors, applied
        if not isinstance(splits, list):
            return {"Splits": ["The Splits field must be a list."]}, applied
        for index, split in enumerate(splits):
            label = f"Splits[{index}].InvoiceId"
            if not isinstance(split, dict) or not isinstance(split.get("invoiceId"), int):
                errors[label] = ["The InvoiceId field is required."]
                continue
            invoice = self.tables["invoices"].rows.get(split["invoiceId"])
            amount = dec(split.get("amount"))
            if invoice is None:
                errors[label] = [f"Invoice {split['invoiceId']} not found."]
            elif customer_id is not None and (invoice.view["customer"] or {}).get("id") != customer_id:
                errors[label] = [f"Invoice {split['invoiceId']} belongs to another customer."]
            elif amount <= 0:
                errors[f"Splits[{index}].Amount"] = ["The split amount must be greater than 0."]
            else:
                applied.append((invoice, amount.quantize(_CENT)))
        return errors, applied

    @staticmethod
    def _payment_response(row: Row) -> dict[str, Any]:
        v = row.view
        return {"active": v["active"], "authCode": v["authCode"], "checkNumber": v["checkNumber"],
                "customerId": (v["customer"] or {}).get("id"), "exportId": row.extra.get("exportId"),
                "id": v["id"], "memo": v["memo"], "paidOn": v["date"], "splits": list(row.extra.get("splits", [])),
                "status": v["syncStatus"], "transactionStatus": "Success",
                "typeId": row.extra.get("typeId", int(v["typeId"]))}

    def _create_payment(self, tenant: int) -> Response:
        body = self._write_body(tenant, "payments")
        errors = _fields(body, {"typeId": int})
        errors.update(_types(body, {"amount": NUMBER, "customerId": int, "memo": str, "checkNumber": str,
                                    "authCode": str, "exportId": str, "paidOn": str, "splits": list, "status": str}))
        errors.update(_choice_error(body, "status", SYNC_STATUSES))
        errors.update(_date_errors(body, ("paidOn",)))
        _refuse(errors)
        with self.lock:
            errors = {}
            if body["typeId"] not in PAYMENT_TYPES:
                errors["TypeId"] = [f"Payment type {body['typeId']} not found."]
            customer_id = body.get("customerId")
            if customer_id is not None and customer_id not in self.tables["customers"].rows:
                errors["CustomerId"] = [f"Customer {customer_id} not found."]
            split_errors, applied = self._split_errors(body.get("splits"), customer_id)
            errors.update(split_errors)
            applied_total = sum((amount for _, amount in applied), Decimal(0))
            amount = dec(body["amount"]).quantize(_CENT) if body.get("amount") is not None else applied_total
            if applied_total > amount:
                errors["Splits"] = [f"The splits total {money(applied_total)} exceeds the payment amount "
                                    f"{money(amount)}."]
            if amount <= 0:
                errors["Amount"] = ["The payment amount must be greater than 0."]
            if customer_id is None and not applied:
                errors["CustomerId"] = ["A customer or at least one invoice split is required."]
            _refuse(errors)
            if customer_id is None:
                customer_id = applied[0][0].view["customer"]["id"]
            paid_on = parse_when(body["paidOn"]) if body.get("paidOn") else self.clock.now_us()
            row = self._new_payment(body["typeId"], applied, amount, customer_id, paid_on, memo=body.get("memo"),
                                    check=body.get("checkNumber"), sync=body.get("status") or "Pending",
                                    auth_code=body.get("authCode"), export_id=body.get("exportId"))
            return json_response(self._payment_response(row))

    def _update_payment(self, tenant: int, rid: int) -> Response:
        body = self._write_body(tenant, "payments")
        errors = _fields(body, {"typeId": int, "splits": list})
        errors.update(_types(body, {"active": bool, "authCode": str, "checkNumber": str, "exportId": str, "memo": str,
                                    "paidOn": str, "status": str}))
        errors.update(_choice_error(body, "status", SYNC_STATUSES))
        _refuse(errors)
        with self.lock:
            row = self._row("payments", rid)
            if body["typeId"] not in PAYMENT_TYPES:
                raise invalid("TypeId", f"Payment type {body['typeId']} not found.")
            split_errors, applied = self._split_errors(body["splits"], (row.view["customer"] or {}).get("id"))
            total = dec(row.view["total"])
            if sum((a for _, a in applied), Decimal(0)) > total:
                split_errors["Splits"] = ["The splits total exceeds the payment amount."]
            _refuse(split_errors)
            for applied_row in row.view["appliedTo"]:  # undo the previous application
                invoice = self.tables["invoices"].rows.get(applied_row["appliedTo"])
                if invoice is not None:
                    invoice.extra["paid"] = invoice.extra.get("paid", Decimal(0)) - dec(applied_row["appliedAmount"])
                    self._refresh_invoice_balance(invoice, None)
            self._apply_splits(row, applied, total, emit=True)
            v = row.view
            v["typeId"], v["type"] = str(body["typeId"]), PAYMENT_TYPES[body["typeId"]]
            row.extra["typeId"] = body["typeId"]
            _patch(v, body, PAYMENT_PATCH)
            if "exportId" in body:
                row.extra["exportId"] = body["exportId"]
            self._changed("payments", row)
            return json_response(self._payment_response(row))

    def _payment_status(self, tenant: int) -> Response:
        body = self._write_body(tenant, "payments")
        errors = _fields(body, {"paymentIds": list, "status": str})
        ids = body["paymentIds"] if isinstance(body.get("paymentIds"), list) else []
        for index, pid in enumerate(ids):
            if not _type_ok(pid, int):
                errors[f"PaymentIds[{index}]"] = [f"The value for PaymentIds[{index}] is not valid."]
        _refuse(errors or _choice_error(body, "status", SYNC_STATUSES))
        with self.lock:
            table = self.tables["payments"]
            missing = [pid for pid in body["paymentIds"] if pid not in table.rows]
            if missing:
                raise invalid("PaymentIds", f"Payments not found: {', '.join(map(str, missing))}.")
            for pid in body["paymentIds"]:
                table.rows[pid].view["syncStatus"] = body["status"]
                self._touch("payments", table.rows[pid])
        return Response(status=200)

    def _create_gl_account(self, tenant: int) -> Response:
        body = self._write_body(tenant, "gl_accounts")
        fields = ("name", "number", "description", "type", "subtype")
        errors = _types(body, dict.fromkeys(fields, str))
        if not body.get("name"):
            errors["Name"] = ["The Name field is required."]
        _refuse(errors)
        with self.lock:
            number = body.get("number")
            if number and any(r.view["number"] == number for r in self.tables["gl_accounts"].rows.values()):
                raise ApiError(409, f"A GL account with number {number} already exists.",
                               {"Number": [f"Number {number} is already in use."]})
            view = self._template("gl_accounts")
            view.update({k: body.get(k) for k in fields if k in body})
            view["source"] = "PublicApi"
            return json_response(self._create("gl_accounts", view).view, 201)

    def _mark(self, entity: str, tenant: int) -> Response:
        """markasexported: sets syncStatus to Exported and answers one verdict per id."""
        id_field, label, list_field = MARKS[entity]
        self._authorize(tenant, RESOURCES[entity].scope, write=True)
        body = self._body()
        if list_field:  # {"inventoryBillIds": [..]}; the others take [{"invoiceId": ..}, ..]
            _refuse(_fields(_object(body), {list_field: list}))
            ids = body[list_field]
        else:
            if not isinstance(body, list) or not all(isinstance(i, dict) for i in body):
                raise invalid("$", "A JSON array of objects is required.")
            ids = [item.get(id_field) for item in body]
        if not all(isinstance(i, int) for i in ids):
            raise invalid(id_field, "Every id must be an integer.")
        verdicts = []
        with self.lock:
            table = self.tables[entity]
            for rid in ids:
                row = table.rows.get(rid)
                if row is None:
                    verdicts.append({id_field: rid, "success": False, "errorMessage": f"{label} {rid} not found."})
                    continue
                # Marking tells ServiceTitan users the document reached the ERP: the export status
                # changes, the document does not (no modifiedOn, no export-feed entry, no event).
                row.view["syncStatus"] = "Exported"
                verdicts.append({id_field: rid, "success": True, "errorMessage": None})
            table.store.touch()  # list filters on syncStatus see it; nothing is restamped
        return json_response(verdicts)


class Subscribe(BaseModel):
    """A webhook subscription (control API): where, which events (fnmatch patterns), how signed."""

    url: str = Field(pattern=r"^https?://")
    hmac_key: str | None = None
    events: list[str] = ["*"]
    header: str | None = None
    encoding: Literal["hex", "base64"] = WEBHOOK_ENCODING


class Flush(BaseModel):
    timeout: float = 10
    retry_now: bool = False


class Tick(BaseModel):
    count: int = 1


class Scopes(BaseModel):
    """The scopes the app holds (control API); tokens are issued for these."""

    scopes: list[str]

    @field_validator("scopes")
    @classmethod
    def _known(cls, scopes: list[str]) -> list[str]:
        if not set(scopes) <= set(ALL_SCOPES):
            raise ValueError("scopes must be a list drawn from " + " ".join(ALL_SCOPES))
        return scopes
