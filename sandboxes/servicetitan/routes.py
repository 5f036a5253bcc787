"""The ServiceTitan HTTP surface: the token endpoint, auth and scopes, paged lists, by-id reads,
export feeds, the write endpoints and markasexported, and the webhook control routes."""

from __future__ import annotations

import hmac
import json
import secrets
from decimal import Decimal
from typing import Any, Callable, Literal

from flask import Flask, Response, request
from pydantic import BaseModel, Field, field_validator
from werkzeug.exceptions import HTTPException

from sandboxes.kit.routes import BodyError, body_as, json_response, model_route
from sandboxes.kit.tokens import bearer_token
from sandboxes.servicetitan.params import (
    _at, _bool_arg, _contact_errors, _decode_token, _encode_token, _int_arg, _int_value, _is_when, _list_arg, _object,
    _pascal, _patch, _refuse, _required, _ship_address, _types, _when_arg, _when_iso,
)
from sandboxes.servicetitan.rules import _apply_external, _parse_external, _pick_address
from sandboxes.servicetitan.store import Row, Table
from sandboxes.servicetitan.vendor import (
    ACTIVE_MODES, ALL_SCOPES, APP_KEY_INVALID, APP_KEY_MISSING, CANCEL_REASONS, DEFAULT_PAGE_SIZE, DELIVERY_OPTIONS,
    MARKS, MAX_IDS, PAYMENT_TYPES, PO_LOCKED_STATUSES, PROBLEM_TYPES, RESOURCES, SORT_FIELDS, STATUS_TITLES,
    SYNC_STATUSES, WEBHOOK_ENCODING, WEBHOOK_SIGNATURE_HEADER, ApiError, RateLimited, Resource, _CENT, dec, invalid, iso,
    money, num, parse_when,
)

def _date_errors(body: dict[str, Any], names: tuple[str, ...]) -> dict[str, list[str]]:
    return {_pascal(name): [f"The value '{body[name]}' is not a valid date-time."]
            for name in names if isinstance(body.get(name), str) and not _is_when(body[name])}


def _customer_rules(body: dict[str, Any]) -> dict[str, list[str]]:
    errors = {}
    if body.get("type") is not None and body["type"] not in ("Residential", "Commercial"):
        errors["Type"] = [f"The value '{body['type']}' is not valid."]
    if isinstance(body.get("name"), str) and not body["name"].strip():
        errors["Name"] = ["The Name field is required."]
    return errors


# PATCH bodies laid over read views: request field -> view field, or (view field, conversion).
VENDOR_PATCH = {"name": ("name", str.strip), "active": "active", "memo": "memo",
                "isTruckReplenishment": "isTruckReplenishment", "deliveryOption": "deliveryOption",
                **{key: (f"contactInfo.{key}", lambda value: value or "")
                   for key in ("firstName", "lastName", "phone", "email", "fax")},
                "taxRate": ("defaultTaxRate", float), "restrictedMobileCreation": "isMobileCreationRestricted",
                "address": ("address", _pick_address)}
PO_PATCH = {**{key: key for key in ("vendorId", "typeId", "businessUnitId", "inventoryLocationId", "jobId",
                                    "technicianId", "projectId")},
            "memo": "summary", "vendorInvoiceNumber": "vendorDocumentNumber", "date": ("date", _when_iso),
            "requiredOn": ("requiredOn", _when_iso), "tax": ("tax", num), "shipping": ("shipping", num),
            "shipTo": ("shipTo", _ship_address)}
CUSTOMER_PATCH = {"name": ("name", str.strip), **{key: key for key in (
    "type", "doNotMail", "doNotService", "nationalAccount", "active", "tagTypeIds", "taxExempt", "paymentTermId",
    "creditLimit", "creditLimitBalance")}, "address": ("address", lambda address: _pick_address(address, geo=True))}
PAYMENT_PATCH = {"active": "active", "authCode": "authCode", "checkNumber": "checkNumber", "memo": "memo",
                 "status": "syncStatus", "paidOn": ("date", _when_iso)}


class RoutesMixin:
    """The vendor's endpoints and the sandbox's webhook and scope controls, mixed into the sandbox."""

    # ---- vendor error shapes ------------------------------------------------------------------

    def problem(self, status: int, title: str, errors: dict[str, list[str]] | None = None,
                headers: dict[str, str] | None = None) -> Response:
        body = {"type": PROBLEM_TYPES.get(status, "about:blank"), "title": title, "status": status,
                "traceId": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01", "errors": errors or {}, "data": {}}
        response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
        for key, value in (headers or {}).items():
            response.headers[key] = value
        return response

    def rate_limited_response(self, retry_after: float) -> Response:
        seconds = max(1, int(-(-retry_after // 1)))
        return self.problem(429, "Too Many Requests", {}, {"Retry-After": str(seconds)})

    def error_response(self, status: int, message: str) -> Response:
        return self.problem(status, STATUS_TITLES.get(status, message) if message == "Injected fault" else message)

    # ---- the vendor API -------------------------------------------------------------------

    def register_vendor_routes(self, app: Flask) -> None:
        app.json.sort_keys = False  # keep the vendor's field order on the wire

        @app.errorhandler(ApiError)
        def _api_error(exc: ApiError) -> Response:
            return self.problem(exc.status, exc.title, exc.errors, exc.headers)

        @app.errorhandler(RateLimited)
        def _rate_limited(exc: RateLimited) -> Response:
            return self.rate_limited_response(exc.wait)

        @app.errorhandler(HTTPException)
        def _http_error(exc: HTTPException) -> Response:
            if request.path.startswith("/_sandbox/"):
                return Response(json.dumps({"error": exc.description}), status=exc.code, mimetype="application/json")
            return self.problem(exc.code or 500, exc.name)

        app.add_url_rule("/connect/token", "st_token", self._token, methods=["POST"])
        for res in RESOURCES.values():
            base = f"/{res.module}/v2/tenant/<int:tenant>/{res.path}"
            if res.entity == "inventory_bills":
                app.add_url_rule(base, "st_inventory_bills_array", self._lister(res, bare=True), methods=["GET"])
                app.add_url_rule(base + "/paginated", "st_inventory_bills", self._lister(res), methods=["GET"])
            else:
                app.add_url_rule(base, f"st_{res.entity}", self._lister(res), methods=["GET"])
            if res.by_id:
                app.add_url_rule(base + "/<int:rid>", f"st_{res.entity}_get", self._getter(res), methods=["GET"])
            if res.export:
                app.add_url_rule(f"/{res.module}/v2/tenant/<int:tenant>/{res.export}", f"st_{res.entity}_export",
                                 self._exporter(res), methods=["GET"])
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
            *(("POST", "accounting", f"{RESOURCES[entity].path}/markasexported", self._marker(entity))
              for entity in MARKS),
        )
        for method, module, path, view_func in writes:
            app.add_url_rule(f"/{module}/v2/tenant/<int:tenant>/{path}", f"st_{method} {module}/{path}", view_func,
                             methods=[method])
        self._register_control(app)

    def _register_control(self, app: Flask) -> None:
        @app.errorhandler(BodyError)
        def _bad_body(exc: BodyError) -> Response:
            return json_response({"error": str(exc)}, 400)

        @app.post("/_sandbox/webhooks")
        def _subscribe() -> Response:
            sub = body_as(Subscribe)
            return json_response({"id": self.webhooks.subscribe(sub.url, sub.hmac_key, sub.events or ["*"],
                                                                sub.header or WEBHOOK_SIGNATURE_HEADER, sub.encoding)}, 201)

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
        def refuse(error: str, status: int = 400, description: str | None = None) -> Response:
            body = {"error": error, **({"error_description": description} if description else {})}
            return Response(json.dumps(body), status=status, mimetype="application/json",
                            headers={"Cache-Control": "no-store"})

        if request.mimetype != "application/x-www-form-urlencoded":
            return refuse("invalid_request", description="The request must be form-encoded.")
        form = request.form
        if form.get("grant_type") != "client_credentials":
            return refuse("unsupported_grant_type")
        client_id = form.get("client_id", "")
        client_secret = form.get("client_secret", "")
        if not (hmac.compare_digest(client_id, self.client_id) and hmac.compare_digest(client_secret, self.client_secret)):
            return refuse("invalid_client")
        requested = set(form.get("scope", "").split()) or set(self.app_scopes)
        if not requested <= self.app_scopes:
            return refuse("invalid_scope")
        scopes = tuple(sorted(requested))
        token, _ = self.tokens.issue(client_id, self.token_ttl, scopes=scopes, extra={"tenant": self.tenant_id})
        self.stats.token_issued()
        body = {"access_token": token, "expires_in": self.token_ttl, "token_type": "Bearer", "scope": " ".join(scopes)}
        return Response(json.dumps(body), mimetype="application/json", headers={"Cache-Control": "no-store"})

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
            raise RateLimited(wait)

    # ---- reads --------------------------------------------------------------------------------

    def _lister(self, res: Resource, bare: bool = False) -> Callable[..., Response]:
        def handler(tenant: int) -> Response:
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
                data = [self._read_view(res, table.rows[rid], guid) for rid in ids[start:start + page_size]]
                total = len(ids)
                if bare:
                    return json_response(data)
                return json_response({"page": page, "pageSize": page_size, "hasMore": total > start + page_size,
                                      "totalCount": total if include_total else None, "data": data})

        return handler

    def _getter(self, res: Resource) -> Callable[..., Response]:
        def handler(tenant: int, rid: int) -> Response:
            self._authorize(tenant, res.scope, write=False)
            with self.lock:
                row = self._row(res.entity, rid)
                return json_response(self._read_view(res, row, request.args.get("externalDataApplicationGuid")))

        return handler

    def _exporter(self, res: Resource) -> Callable[..., Response]:
        def handler(tenant: int) -> Response:
            self._authorize(tenant, res.scope, write=False)
            args = request.args
            _bool_arg(args, "includeRecentChanges", False)
            # Export feeds define only `from` and `includeRecentChanges`: a pageSize is not a parameter
            # there and is ignored; each answer holds up to the sandbox's export page size.
            raw = args.get("from")
            with self.lock:
                table = self.tables[res.entity]
                position = self._export_position(res, table, raw)
                rows, position, has_more = table.export_after(position, self.export_page_size)
                data = [self._export_view(res, row) for row in rows]
                return json_response({"hasMore": has_more, "continueFrom": _encode_token(res.entity, position),
                                      "data": data})

        return handler

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

    def _read_view(self, res: Resource, row: Row, guid: str | None) -> dict[str, Any]:
        if guid and row.external.get(guid) and "externalData" in row.view:
            pairs = [{"key": k, "value": v} for k, v in row.external[guid].items()]
            return {**row.view, "externalData": pairs}
        return row.view

    def _export_view(self, res: Resource, row: Row) -> dict[str, Any]:
        return {**row.view, "active": row.active} if res.export_adds_active else row.view

    def _sort_arg(self, res: Resource, raw: str | None) -> tuple[str, bool]:
        if not raw or not res.sorts:
            return ("id", False)
        text = raw.strip()
        descending = text.startswith("-")
        name = text.lstrip("+- ")
        allowed = {s.lower() for s in res.sorts}
        if name.lower() == "modified" and "modifiedon" in allowed:
            name = "ModifiedOn"
        if name.lower() not in allowed:
            raise invalid("sort", f"Sorting by '{name}' is not supported. Available fields are: {', '.join(res.sorts)}.")
        return (SORT_FIELDS[name.lower()], descending)

    def _filters(self, res: Resource, args: Any) -> tuple[tuple[Any, ...], Callable[[Row], bool] | None]:
        """Normalized cache key and one predicate for the query string of a list call."""
        key: list[Any] = []
        checks: list[Callable[[Row], bool]] = []
        ids = _list_arg(args, "ids")
        if ids:
            try:
                wanted = frozenset(int(i) for i in ids)
            except ValueError:
                raise invalid("ids", "Ids must be a comma-separated list of integers.") from None
            if len(wanted) > MAX_IDS:
                raise invalid("ids", f"The maximum number of ids is {MAX_IDS}.")
            key.append(("ids", tuple(sorted(wanted))))
            checks.append(lambda r, w=wanted: r.view["id"] in w)
        for name, attr, after in (("createdOnOrAfter", "created_us", True), ("createdBefore", "created_us", False),
                                  ("modifiedOnOrAfter", "modified_us", True), ("modifiedBefore", "modified_us", False)):
            raw = args.get(name)
            if raw:
                bound = _when_arg(name, raw)
                key.append((name, bound))
                checks.append(lambda r, a=attr, b=bound, later=after: (r[a] >= b) == later)
        if res.active_param:
            default, modes, message = ACTIVE_MODES[res.active_param]
            mode = (args.get(res.active_param) or default).strip().lower()
            if mode not in modes:
                raise invalid(res.active_param, message.format(raw=args.get(res.active_param)))
            key.append((res.active_param, mode))
            if modes[mode] is not None:
                checks.append(lambda r, m=modes[mode]: r.active is m)
        self._entity_filters(res, args, key, checks)
        if res.external:
            self._external_filter(args, key, checks)
        if not checks:
            return tuple(key), None
        if len(checks) == 1:
            return tuple(key), checks[0]
        return tuple(key), lambda r: all(check(r) for check in checks)

    def _entity_filters(self, res: Resource, args: Any, key: list[Any], checks: list[Callable[[Row], bool]]) -> None:
        """The collection's own filters (Resource.filters), each adding its cache key part and check."""
        for kind, param, *spec in res.filters:
            test: Callable[[Row], bool]
            if kind == "dates":
                before, name = spec
                for bound_param, after in ((param, True), (before, False)):
                    raw = args.get(bound_param)
                    if raw:
                        bound = _when_arg(bound_param, raw)
                        key.append((bound_param, bound))
                        checks.append(lambda r, b=bound, a=after, f=name: r.view.get(f) is not None
                                      and (parse_when(r.view[f]) >= b) == a)
                continue
            if kind in ("in", "ints", "any"):
                values = _list_arg(args, param)
                if not values:
                    continue
                if kind == "in":
                    wanted = frozenset(v.lower() for v in values)
                    test = lambda r, w=wanted, f=spec[0]: str(r.view.get(f) or "").lower() in w  # noqa: E731
                else:
                    wanted = frozenset(_int_value(param, v) for v in values)
                    test = ((lambda r, w=wanted, p=spec: _at(r.view, p) in w) if kind == "ints"  # noqa: E731
                            else (lambda r, w=wanted, f=spec[0], g=spec[1]: any(a[g] in w for a in r.view[f] or ())))
                key.append((param, tuple(sorted(wanted))))
                checks.append(test)
                continue
            raw = args.get(param)
            if raw in (None, ""):
                continue
            value: Any = raw
            if kind == "eq":
                test = lambda r, v=raw, p=spec: _at(r.view, p) == v  # noqa: E731
            elif kind == "int":
                value = _int_value(param, raw)
                test = lambda r, v=value, p=spec: _at(r.view, p) == v  # noqa: E731
            elif kind == "ieq":
                value = raw.lower()
                test = lambda r, v=value, f=spec[0]: r.view[f].lower() == v  # noqa: E731
            elif kind == "contains":
                value = raw.strip().lower()
                test = lambda r, v=value, f=spec[0]: v in r.view[f].lower()  # noqa: E731
            else:  # po_number
                orders = frozenset(po.id for po in self.tables["purchase_orders"].rows.values()
                                   if po.view["number"] == raw)
                test = lambda r, o=orders: r.view["purchaseOrderId"] in o  # noqa: E731
            key.append((param, value))
            checks.append(test)

    @staticmethod
    def _external_filter(args: Any, key: list[Any], checks: list[Callable[[Row], bool]]) -> None:
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
        key.append(("external", guid, ext_key, tuple(sorted(wanted))))

        def external_match(r: Row) -> bool:
            stores = [r.external.get(guid, {})] if guid else r.external.values()
            return any(store.get(ext_key) in wanted for store in stores)

        checks.append(external_match)

    def _row(self, entity: str, rid: int) -> Row:
        row = self.tables[entity].rows.get(rid)
        if row is None:
            raise self._not_found(entity, rid)
        return row

    def _write_body(self, tenant: int, entity: str) -> dict[str, Any]:
        """Authorize a write to `entity` and read its JSON object body."""
        self._authorize(tenant, RESOURCES[entity].scope, write=True)
        return _object(self._body())

    def _not_found(self, entity: str, rid: int) -> ApiError:
        label = entity.rstrip("s").replace("_", " ").capitalize()
        return ApiError(404, f"{label} with id {rid} was not found.", {"id": [f"{label} {rid} does not exist."]})

    # ---- writes ----------------------------------------------------------------------------

    def _body(self) -> dict[str, Any] | list[Any]:
        raw = request.get_data(cache=True)
        if not raw:
            raise invalid("request", "A non-empty request body is required.")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise invalid("$", f"The JSON value could not be converted: {exc.msg}.") from None
        return body

    def _create_vendor(self, tenant: int) -> Response:
        body = self._write_body(tenant, "vendors")
        errors = _required(body, {"name": str, "active": bool, "isTruckReplenishment": bool, "taxRate": (int, float),
                                  "restrictedMobileCreation": bool, "address": dict})
        errors.update(self._vendor_rules(body))
        _refuse(errors)
        external = _parse_external(body.get("externalData"))
        with self.lock:
            if self.unique_vendor_names and self._vendor_named(body["name"]) is not None:
                raise invalid("Name", f"A vendor named '{body['name']}' already exists.")
            contact = {k: body.get(k) or "" for k in ("firstName", "lastName", "phone", "email", "fax")}
            view = self._vendor_view(body["name"].strip(), body["active"], _pick_address(body["address"]), contact,
                                     memo=body.get("memo") or "", delivery=body.get("deliveryOption") or "Manual",
                                     tax_rate=float(body["taxRate"]))
            view["isTruckReplenishment"] = body["isTruckReplenishment"]
            view["isMobileCreationRestricted"] = body["restrictedMobileCreation"]
            row = self._create("vendors", view)
            _apply_external(row, external)
            return json_response({"id": view["id"]})

    def _vendor_rules(self, body: dict[str, Any]) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        if isinstance(body.get("address"), dict):
            errors.update(_required(body["address"], dict.fromkeys(("street", "unit", "city", "state", "zip", "country"), str),
                                    prefix="Address."))
        if "name" in body and isinstance(body["name"], str) and not body["name"].strip():
            errors["Name"] = ["The Name field is required."]
        if body.get("deliveryOption") is not None and body["deliveryOption"] not in DELIVERY_OPTIONS:
            errors["DeliveryOption"] = [f"The value '{body['deliveryOption']}' is not valid."]
        if isinstance(body.get("taxRate"), (int, float)) and not 0 <= body["taxRate"] <= 1:
            errors["TaxRate"] = ["The tax rate must be between 0 and 1."]
        return errors

    def _update_vendor(self, tenant: int, rid: int) -> Response:
        body = self._write_body(tenant, "vendors")
        errors = _types(body, {"name": str, "active": bool, "memo": str, "firstName": str, "lastName": str,
                               "phone": str, "email": str, "fax": str, "isTruckReplenishment": bool,
                               "taxRate": (int, float), "restrictedMobileCreation": bool, "address": dict})
        errors.update(self._vendor_rules(body))
        _refuse(errors)
        external = _parse_external(body.get("externalData"))
        with self.lock:
            row = self._row("vendors", rid)
            if "name" in body and self.unique_vendor_names and self._vendor_named(body["name"], exclude=rid):
                raise invalid("Name", f"A vendor named '{body['name']}' already exists.")
            _apply_external(row, external)
            _patch(row.view, body, VENDOR_PATCH)
            self._changed("vendors", row)
            return json_response({"id": rid})

    def _po_item_errors(self, items: Any, update: bool) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        if not isinstance(items, list):
            return {"Items": ["The Items field must be a list."]}
        fields = {"skuId": int, "description": str, "vendorPartNumber": str, "quantity": (int, float), "cost": (int, float)}
        if update:
            fields = {"id": int, **fields}
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                errors[f"Items[{index}]"] = ["An object is required."]
                continue
            errors.update(_required(item, fields, prefix=f"Items[{index}]."))
            if isinstance(item.get("quantity"), (int, float)) and item["quantity"] <= 0:
                errors[f"Items[{index}].Quantity"] = ["Quantity must be greater than 0."]
            if isinstance(item.get("cost"), (int, float)) and item["cost"] < 0:
                errors[f"Items[{index}].Cost"] = ["Cost must not be negative."]
        return errors

    def _create_po(self, tenant: int) -> Response:
        body = self._write_body(tenant, "purchase_orders")
        errors = _required(body, {"vendorId": int, "typeId": int, "businessUnitId": int, "inventoryLocationId": int,
                                  "shipTo": dict, "impactsTechnicianPayroll": bool, "date": str, "requiredOn": str,
                                  "tax": (int, float), "shipping": (int, float), "items": list})
        errors.update(self._po_item_errors(body.get("items", []), update=False))
        errors.update(_date_errors(body, ("date", "requiredOn")))
        _refuse(errors)
        with self.lock:
            errors = self._po_reference_errors(body)
            _refuse(errors)
            view = self._po_view(body["vendorId"], body["businessUnitId"], body["inventoryLocationId"],
                                 _when_iso(body["date"]), _ship_address(body["shipTo"]))
            view.update({"typeId": body["typeId"], "jobId": body.get("jobId"), "technicianId": body.get("technicianId"),
                         "projectId": body.get("projectId"), "requiredOn": iso(parse_when(body["requiredOn"])),
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
                               "requiredOn": str, "tax": (int, float), "shipping": (int, float), "items": list})
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
        reason = body.get("canceledReason")
        if reason is not None and reason not in CANCEL_REASONS:
            raise invalid("CanceledReason", f"The value '{reason}' is not valid.")
        with self.lock:
            row = self._row("purchase_orders", rid)
            if row.view["status"] in ("Received", "Exported", "Canceled"):
                raise invalid("Status", f"Purchase order {row.view['number']} is {row.view['status']} and cannot be canceled.")
            row.view["status"] = "Canceled"
            self._changed("purchase_orders", row)
            return json_response({"id": rid})

    def _update_adjustment(self, tenant: int, rid: int) -> Response:
        body = self._write_body(tenant, "adjustments")
        unknown = set(body) - {"externalData"}
        if unknown:
            raise invalid(_pascal(sorted(unknown)[0]), "This field cannot be updated.")
        external = _parse_external(body.get("externalData"))
        with self.lock:
            row = self._row("adjustments", rid)
            _apply_external(row, external)
            self._changed("adjustments", row)
            return json_response({"id": rid})

    def _create_customer(self, tenant: int) -> Response:
        body = self._write_body(tenant, "customers")
        errors = _required(body, {"name": str, "locations": list, "address": dict})
        address_fields = dict.fromkeys(("street", "city", "state", "zip", "country"), str)
        if isinstance(body.get("address"), dict):
            errors.update(_required(body["address"], address_fields, prefix="Address."))
        if isinstance(body.get("locations"), list):
            if not body["locations"]:
                errors["Locations"] = ["At least one location is required."]
            for index, location in enumerate(body["locations"]):
                loc = location if isinstance(location, dict) else {}
                errors.update(_required(loc, {"name": str, "address": dict}, prefix=f"Locations[{index}]."))
                if isinstance(loc.get("address"), dict):
                    errors.update(_required(loc["address"], address_fields, prefix=f"Locations[{index}].Address."))
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
            guid = external[0] if external else None
            response = {**self._read_view(RESOURCES["customers"], row, guid),
                        "locations": row.extra.get("locations", []), "contacts": row.extra["contacts"]}
            return json_response(response)

    def _update_customer(self, tenant: int, rid: int) -> Response:
        body = self._write_body(tenant, "customers")
        errors = _types(body, {"name": str, "type": str, "address": dict, "doNotMail": bool, "doNotService": bool,
                               "nationalAccount": bool, "active": bool, "tagTypeIds": list, "taxExempt": bool,
                               "paymentTermId": int, "creditLimit": (int, float), "creditLimitBalance": (int, float),
                               "customFields": list, "externalData": dict})
        if isinstance(body.get("address"), dict):
            errors.update(_required(body["address"], {**dict.fromkeys(("street", "unit", "city", "state", "zip", "country"), str),
                                                      "latitude": (int, float), "longitude": (int, float)},
                                    prefix="Address."))
        errors.update(_customer_rules(body))
        _refuse(errors)
        external = _parse_external(body.get("externalData"))
        with self.lock:
            row = self._row("customers", rid)
            _apply_external(row, external)
            _patch(row.view, body, CUSTOMER_PATCH)
            self._changed("customers", row)
            return json_response(self._read_view(RESOURCES["customers"], row, external[0] if external else None))

    def _create_payment(self, tenant: int) -> Response:
        body = self._write_body(tenant, "payments")
        errors = _required(body, {"typeId": int})
        errors.update(_types(body, {"amount": (int, float), "customerId": int, "memo": str, "checkNumber": str,
                                    "authCode": str, "exportId": str, "paidOn": str, "splits": list, "status": str}))
        if body.get("status") is not None and body["status"] not in SYNC_STATUSES:
            errors["Status"] = [f"The value '{body['status']}' is not valid."]
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
                errors["Splits"] = [f"The splits total {money(applied_total)} exceeds the payment amount {money(amount)}."]
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
        errors = _required(body, {"typeId": int, "splits": list})
        errors.update(_types(body, {"active": bool, "authCode": str, "checkNumber": str, "exportId": str, "memo": str,
                                    "paidOn": str, "status": str}))
        if body.get("status") is not None and body["status"] not in SYNC_STATUSES:
            errors["Status"] = [f"The value '{body['status']}' is not valid."]
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
        errors = _required(body, {"paymentIds": list, "status": str})
        if not errors and body["status"] not in SYNC_STATUSES:
            errors["Status"] = [f"The value '{body['status']}' is not valid."]
        _refuse(errors)
        with self.lock:
            table = self.tables["payments"]
            missing = [pid for pid in body["paymentIds"] if pid not in table.rows]
            if missing:
                raise invalid("PaymentIds", f"Payments not found: {', '.join(map(str, missing))}.")
            for pid in body["paymentIds"]:
                row = table.rows[pid]
                row.view["syncStatus"] = body["status"]
                self._touch("payments", row)
        return Response(status=200)

    def _create_gl_account(self, tenant: int) -> Response:
        body = self._write_body(tenant, "gl_accounts")
        errors = _types(body, dict.fromkeys(("name", "number", "description", "type", "subtype"), str))
        if not body.get("name"):
            errors["Name"] = ["The Name field is required."]
        _refuse(errors)
        with self.lock:
            if body.get("number") and any(r.view["number"] == body["number"] for r in self.tables["gl_accounts"].rows.values()):
                raise ApiError(409, f"A GL account with number {body['number']} already exists.",
                               {"Number": [f"Number {body['number']} is already in use."]})
            view = self._template("gl_accounts")
            view.update({k: body.get(k) for k in ("name", "number", "description", "type", "subtype") if k in body})
            view["source"] = "PublicApi"
            row = self._create("gl_accounts", view)
            return json_response(row.view, 201)

    def _marker(self, entity: str) -> Callable[..., Response]:
        """markasexported: sets syncStatus to Exported and answers one verdict per id."""
        id_field, label, list_field = MARKS[entity]

        def handler(tenant: int) -> Response:
            self._authorize(tenant, RESOURCES[entity].scope, write=True)
            body = self._body()
            if list_field:  # {"inventoryBillIds": [..]}; the others take [{"invoiceId": ..}, ..]
                _refuse(_required(_object(body), {list_field: list}))
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

        return handler


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
