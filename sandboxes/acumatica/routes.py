"""The HTTP surface: `/entity/{Endpoint}/{Version}/...` (list, get, PUT upsert, DELETE,
files, actions polled through a status URL), `/entity` itself, Acumatica's error shapes,
the licence's request limits, and the sandbox's own `/_sandbox/license|settings|sessions`."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from typing import Any

from flask import Flask, Response, g, has_request_context, request

from sandboxes.acumatica.model import (
    _BY_LOWER, _VALUE_TYPES, ENDPOINT_NAME, ERROR_TYPE, AcumaticaSettings, ApiError, EntityDef, LicenseLimits,
    Operation, Shape, parse_dt,
)
from sandboxes.acumatica.auth import Principal
from sandboxes.acumatica.query import FilterError, compile_filter, equality_terms, parse_filter
from sandboxes.base import RateWindow
from sandboxes.kit import odata
from sandboxes.kit.routes import json_response, model_route


GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class RoutesMixin:
    """The vendor routes of an `AcumaticaSandbox`."""

    # ---- vendor error shapes ------------------------------------------------------------------------

    _json = staticmethod(json_response)

    def error_response(self, status: int, message: str) -> Response:
        """Acumatica's error body: {message, exceptionMessage, exceptionType}, and a stack trace on a 5xx."""
        body = {"message": "An error has occurred.", "exceptionMessage": message, "exceptionType": ERROR_TYPE}
        if status >= 500:
            body["stackTrace"] = "   at PX.Api.ContractBased.EntityService.Process(...)"
        return self._json(body, status)

    def rate_limited_response(self, retry_after: float) -> Response:
        seconds = max(1, int(round(retry_after + 0.499)))
        headers = {"Retry-After": str(seconds)} if self.limits.retry_after_header else {}
        body = {"message": "An error has occurred.",
                "exceptionMessage": "The number of API requests exceeds the limit set by the license.",
                "exceptionType": "PX.Api.ApiRequestsLimitExceededException"}
        return self._json(body, 429, headers)

    def _api_error(self, exc: ApiError) -> Response:
        if exc.body is not None:
            body = {k: v for k, v in exc.body.items() if k != "_errors"} if isinstance(exc.body, dict) else exc.body
            return self._json(body, exc.status, exc.headers)
        response = self.error_response(exc.status, exc.message)
        for name, value in exc.headers.items():
            response.headers[name] = value
        return response

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
        app.add_url_rule("/_sandbox/sessions", "acu_sessions", self._sessions_route, methods=["GET"])

    def _apply_limits(self, limits: LicenseLimits) -> None:
        self.limits = limits
        self._rpm = RateWindow(limits.requests_per_minute, 60.0)

    def _sessions_route(self) -> Response:
        return self._json({"active": self.active_sessions(), "api_users": self.limits.api_users})

    # ---- the entity endpoint ------------------------------------------------------------------------

    def _endpoints_route(self) -> Response:
        """GET /entity: the instance's build and the web-service endpoints it publishes."""
        try:
            self._authenticate()
        except ApiError as exc:
            return self._api_error(exc)
        return self._json({"version": {"acumaticaBuildVersion": "23.209.0016"},
                           "endpoints": [{"name": ENDPOINT_NAME, "version": v, "href": f"{self.base_url}/entity/{ENDPOINT_NAME}/{v}/"}
                                         for v in self.settings.endpoint_versions]})

    def _entity_route(self, endpoint: str, version: str, rest: str) -> Response:
        try:
            principal = self._authenticate()
            if endpoint != ENDPOINT_NAME or version not in self.settings.endpoint_versions:
                raise ApiError(404, f"The endpoint {endpoint}/{version} is not found. "
                               f"Published: {', '.join(f'{ENDPOINT_NAME}/{v}' for v in self.settings.endpoint_versions)}.")
            allowed, wait, _ = self._rpm.hit("license")
            if not allowed:
                self.stats.bump("license_rpm_refused")
                return self.rate_limited_response(wait)
            limits = self.limits
            if not self._gate.enter(limits.concurrent_requests, limits.request_queue, limits.queue_timeout):
                self.stats.bump("license_concurrency_refused")
                return self.rate_limited_response(1.0)
            try:
                lock = self._session_lock(principal)
                with lock if lock is not None else contextlib.nullcontext():
                    if self.settings.processing_ms:
                        time.sleep(self.settings.processing_ms / 1000)
                    g.acu_version = version
                    return self._dispatch(request.method, rest, principal)
            finally:
                self._gate.leave()
        except ApiError as exc:
            return self._api_error(exc)
        except Exception as exc:  # a server fault still answers in the vendor's error shape
            return self.error_response(500, f"{type(exc).__name__}: {exc}")

    def _session_lock(self, principal: Principal) -> threading.Lock | None:
        """One request at a time per session, unless the token carries api:concurrent_access."""
        if principal.kind == "oauth" and "api:concurrent_access" in principal.scopes:
            return None
        with self.lock:
            return self._session_locks.setdefault(principal.ident, threading.Lock())

    def _dispatch(self, method: str, rest: str, principal: Principal) -> Response:
        segments = [s for s in rest.split("/") if s != ""]
        if not segments:
            raise ApiError(404, "The entity name is missing from the URL.")
        if segments[0].lower() == "files" and method == "GET" and len(segments) == 2:
            return self._download(segments[1])
        d = _BY_LOWER.get(segments[0].lower())
        if d is None:
            raise ApiError(404, f"The entity '{segments[0]}' is not found in the endpoint.")
        branch = request.headers.get("PX-CbApiBranch") or principal.branch
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
                return self._json(self._schema(d.shape))
            if len(rest_segments) == 3 and rest_segments[1].lower() == "status":
                return self._operation_status(d, rest_segments[0], rest_segments[2])
            return self._get_one(d, rest_segments)
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
            raise ApiError(415, f"The request entity's media type '{request.mimetype}' is not supported for this resource.",
                           body={"message": f"The request entity's media type '{request.mimetype}' is not supported "
                                            "for this resource."})

    # ---- reading ------------------------------------------------------------------------------------

    def _int_arg(self, name: str) -> int | None:
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
            try:
                node = parse_filter(text, kinds, d.name)
            except FilterError as exc:
                raise ApiError(400, str(exc)) from None
            compiled = compile_filter(node, kinds)
            predicate, terms = (lambda rec: compiled(rec) is True), equality_terms(node)
        with self.lock:
            table = self.tables[d.name]
            found = table.select(predicate, text or "", terms)
            page = found[skip:] if top is None else found[skip:skip + top]
            shaping = self._shaping()
            body = [self._render(d, rec, *shaping, n) for n, rec in enumerate(page, 1)]
        return self._json(body)

    def _locate(self, d: EntityDef, segments: list[str]) -> dict[str, Any]:
        """A record by its id, or by its key values joined with `/` or `|` (`Bill/Bill|000123`)."""
        table = self.tables[d.name]
        segments = [part for segment in segments for part in segment.split("|")]
        if len(segments) == 1 and GUID.fullmatch(segments[0]):
            rec = table.by_id(segments[0])
        elif len(segments) == len(d.keys):
            rec = table.find(tuple(segments))
        else:
            raise ApiError(400, f"The entity '{d.name}' is addressed by {len(d.keys)} key values "
                                f"({', '.join(d.keys)}) or by its id; {len(segments)} given.")
        if rec is None:
            raise ApiError(404, "No entity satisfies the condition.")
        return rec

    @staticmethod
    def _shaping() -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
        """The request's $expand, $select (None: every field) and $custom."""
        select = request.args.get("$select")
        return (odata.path_tree(request.args.get("$expand")), odata.path_tree(select) if select else None,
                request.args.get("$custom"))

    def _get_one(self, d: EntityDef, segments: list[str]) -> Response:
        with self.lock:
            return self._json(self._render(d, self._locate(d, segments), *self._shaping(), 1))

    def _schema(self, shape: Shape) -> dict[str, Any]:
        out: dict[str, Any] = {name: {"type": _VALUE_TYPES[kind]} for name, kind in shape.fields.items()}
        for name, sub in shape.linked.items():
            out[name] = self._schema(sub)
        for name, sub in shape.details.items():
            out[name] = [self._schema(sub)]
        return out

    def _version(self) -> str:
        """The endpoint version of the current request (the pinned one outside a request)."""
        if has_request_context():
            return getattr(g, "acu_version", self.settings.endpoint_versions[0])
        return self.settings.endpoint_versions[0]

    def _render(self, d: EntityDef, rec: dict[str, Any], expand: dict[str, Any], select: dict[str, Any] | None,
                custom: str | None, row_number: int) -> dict[str, Any]:
        out: dict[str, Any] = {"id": rec["id"], "rowNumber": row_number, "note": {"value": rec.get("note") or ""}}
        self._render_level(d.shape, rec, out, expand, select)
        out["custom"] = self._render_custom(rec.get("custom") or {}, custom)
        if "files" in expand:
            out["files"] = [dict(f) for f in rec.get("files") or []]
        version = self._version()
        out["_links"] = {
            "self": f"/entity/{ENDPOINT_NAME}/{version}/{d.name}/{rec['id']}",
            "files:put": f"/entity/{ENDPOINT_NAME}/{version}/files/{d.graph}/{d.view}/{rec['id']}/{{filename}}",
        }
        return out

    def _render_level(self, shape: Shape, src: dict[str, Any], out: dict[str, Any], expand: dict[str, Any],
                      select: dict[str, Any] | None) -> None:
        for name in shape.fields:
            if select is not None and name not in select:
                continue
            value = src.get(name)
            out[name] = {} if value is None else {"value": value}
        for name, sub in shape.linked.items():
            if name not in expand or (select is not None and name not in select):
                continue
            obj = src.get(name) or {}
            child: dict[str, Any] = {"id": obj.get("id"), "rowNumber": 1, "note": {"value": ""}}
            self._render_level(sub, obj, child, expand[name], (select or {}).get(name) or None)
            child["custom"] = {}
            out[name] = child
        for name, sub in shape.details.items():
            if name not in expand or (select is not None and name not in select):
                continue
            rows = []
            for number, row in enumerate(src.get(name) or [], 1):
                child = {"id": row["id"], "rowNumber": number, "note": {"value": row.get("note") or ""}}
                self._render_level(sub, row, child, expand[name], (select or {}).get(name) or None)
                child["custom"] = {}
                rows.append(child)
            out[name] = rows

    @staticmethod
    def _render_custom(stored: dict[str, Any], requested: str | None) -> dict[str, Any]:
        if not requested:
            return {}
        out: dict[str, Any] = {}
        for item in requested.split(","):
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
            return self._json(self._render(d, rec, *self._shaping(), 1))

    # ---- files ----------------------------------------------------------------------------------

    def _attach(self, d: EntityDef, segments: list[str], filename: str) -> Response:
        with self.lock:
            rec = self._locate(d, segments)
            file_id = self._new_id()
            keys = " ".join(str(rec.get(k)) for k in d.keys)
            self.files[file_id] = (filename, request.get_data(), request.mimetype or "application/octet-stream")
            version = self._version()
            rec.setdefault("files", []).append({"id": file_id, "filename": f"{d.name} ({keys})\\{filename}",
                                                "href": f"/entity/{ENDPOINT_NAME}/{version}/files/{file_id}"})
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
            rec = None
            if target.get("id"):
                rec = self.tables[d.name].by_id(target["id"])
            else:
                values = []
                for key in d.keys:
                    raw = target.get(key)
                    value = raw.get("value") if isinstance(raw, dict) else raw
                    values.append(value if value not in (None, "") else d.key_defaults.get(key))
                if all(values):
                    rec = self.tables[d.name].find(tuple(values))
            if rec is None:
                raise ApiError(404, "No entity satisfies the condition.")
            if rec.get("Hold"):
                raise ApiError(self.settings.validation_status, "The document is on hold and cannot be released.")
            if rec.get("Status") != "Balanced":
                raise ApiError(self.settings.validation_status,
                               f"The document status is '{rec.get('Status')}'; only a Balanced document can be released.")
            op = Operation(self._new_id(), d.name, action, rec["id"], time.monotonic(), self.settings.action_pending_polls)
            self.operations[op.id] = op
            self._pending[op.id] = op
            self.stats.bump("actions_started")
        version = self._version()
        response = Response(status=202)
        response.headers["Location"] = f"/entity/{ENDPOINT_NAME}/{version}/{d.name}/{action}/status/{op.id}"
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

