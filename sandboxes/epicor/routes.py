"""The HTTP surface: token resource, v2 OData paths, entity sets, method calls, control routes."""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Iterable

from flask import Flask, Response, g, request
from pydantic import BaseModel

from sandboxes.epicor.errors import (API_EXCEPTION, BO_EXCEPTION, NOT_FOUND_EXCEPTION, EpicorError,
                                     epicor_error_body, epicor_json, odata_error)
from sandboxes.epicor.methods import METHODS
from sandboxes.epicor.query import parse_resource
from sandboxes.epicor.rules import ODATA_WRITES
from sandboxes.epicor.settings import LostAnswers, UpdateMasterHold
from sandboxes.epicor.store import SERVICES, TABLESET_TABLES, EntitySet, Table
from sandboxes.kit.routes import BodyError, body_as
from sandboxes.kit.tokens import basic_credentials


class RoutesMixin:
    """Epicor's answers to HTTP: errors, 429s, tokens, the v2 paths and their dispatch."""

    # ---- vendor errors and limits ------------------------------------------------------------

    def error_response(self, status: int, message: str) -> Response:
        if status >= 500:
            body = epicor_error_body(status, message, None)
            if status == 500:
                body["ErrorMessage"] = (f"{message}. Sorry! Something went wrong. Please contact your system "
                                        f"administrator. Correlation ID: {body['CorrelationId']}")
            elif status == 503:
                body["ErrorMessage"] = f"{message}. Server not ready."
            return epicor_json(body, status)
        return epicor_json(epicor_error_body(status, message, BO_EXCEPTION if status == 400 else None), status)

    def rate_limited_response(self, retry_after: float) -> Response:
        seconds = max(1, int(round(retry_after + 0.499)))
        body = epicor_error_body(429, "Too many requests. Retry after the period in the Retry-After header.", None)
        return epicor_json(body, 429, {"Retry-After": str(seconds)})

    def _fail(self, error: EpicorError) -> Response:
        return epicor_json(epicor_error_body(error.status, error.message, error.error_type, error.table,
                                             error.field_name), error.status)

    # ---- routes -----------------------------------------------------------------------------

    def register_vendor_routes(self, app: Flask) -> None:
        app.json.sort_keys = False  # type: ignore[attr-defined]
        app.add_url_rule("/<instance>/TokenResource.svc/", "epicor_token", self._token, methods=["POST"],
                         strict_slashes=False)
        # One client uses this form; unconfirmed, served for compatibility.
        app.add_url_rule("/<instance>/api/v2/TokenResource.svc/token", "epicor_token_v2", self._token,
                         methods=["POST"])
        app.add_url_rule("/<instance>/api/v2/odata/<company>/<service>/<path:rest>", "epicor_v2", self._v2,
                         methods=["GET", "POST", "PATCH", "DELETE"])
        app.add_url_rule("/<instance>/api/v2/odata/<company>/<service>", "epicor_service", self._v2,
                         methods=["GET"], defaults={"rest": ""}, strict_slashes=False)
        for path, model, attribute in (("update-master-holds", UpdateMasterHold, "update_master_hold"),
                                       ("lost-answers", LostAnswers, "lost_answers")):
            app.add_url_rule(f"/_sandbox/epicor/{path}", f"epicor_{attribute}", self._control(model, attribute),
                             methods=["POST"])

    def _control(self, model: type[BaseModel], attribute: str) -> Callable[[], Response]:
        """`POST /_sandbox/epicor/...`: the body, checked by `model`, replaces what was set."""
        def handle() -> Response:
            try:
                value = body_as(model)
            except BodyError as error:
                return epicor_json({"error": str(error)}, 400)
            with self.lock:
                setattr(self, attribute, value)
            return epicor_json(value.model_dump())

        return handle

    def take_update_master_hold(self, invoice_nums: Iterable[str]) -> UpdateMasterHold | None:
        """The hold this UpdateMaster call falls under, if any (one use of it is spent)."""
        hold = self.update_master_hold
        if hold.count <= 0:
            return None
        if hold.invoice_num and hold.invoice_num.casefold() not in {n.casefold() for n in invoice_nums}:
            return None
        hold.count -= 1
        return hold

    def _take_lost_answer(self, path: str) -> LostAnswers | None:
        with self.lock:
            lost = self.lost_answers
            if lost.count <= 0 or lost.path_contains not in path:
                return None
            if lost.skip > 0:
                lost.skip -= 1
                return None
            lost.count -= 1
            return lost.model_copy()

    def _token(self, instance: str) -> Response:
        try:
            limited = self._rate_limit("token")
            if limited is not None:
                return limited
            if instance.casefold() != self.settings.instance.casefold():
                raise EpicorError(404, f"Instance '{instance}' was not found.", API_EXCEPTION)
            if self.settings.token_requires_api_key:
                self._check_api_key()
            username, password = self._token_credentials()
            if not username or self.users.get(username) != password:
                raise EpicorError(401, "The user name or password is incorrect.", None)
            token, _ = self.tokens.issue(username, self.token_ttl)
            self.stats.token_issued()
            if "xml" in (request.headers.get("Accept") or "").lower():
                xml = (f"<Token><AccessToken>{token}</AccessToken><ExpiresIn>{self.token_ttl}</ExpiresIn>"
                       f"<TokenType>Bearer</TokenType></Token>")
                return Response(xml, 200, mimetype="application/xml")
            return epicor_json({"AccessToken": token, "ExpiresIn": self.token_ttl, "TokenType": "Bearer"})
        except EpicorError as error:
            return self._fail(error)

    def _token_credentials(self) -> tuple[str, str]:
        """Form body (grant_type=password), Basic auth, or username/password headers."""
        if request.form.get("username"):
            if request.form.get("grant_type", "password") != "password":
                raise EpicorError(400, "Unsupported grant_type.", API_EXCEPTION)
            return request.form.get("username", ""), request.form.get("password", "")
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            return basic_credentials(auth.split(" ", 1)[1])
        body = request.get_json(silent=True)
        if isinstance(body, dict) and body.get("username"):
            return str(body.get("username")), str(body.get("password", ""))
        return request.headers.get("username", ""), request.headers.get("password", "")

    def _rate_limit(self, key: str) -> Response | None:
        if not self.rate_window.limit:
            return None
        allowed, wait, _ = self.rate_window.hit(key)
        if allowed:
            return None
        return self.rate_limited_response(wait)

    def _check_api_key(self) -> None:
        key = request.headers.get("x-api-key") or request.args.get("api-key")
        if not key or key != self.api_key:
            raise EpicorError(self.settings.missing_api_key_status,
                              "Access denied: a valid API key is required for REST v2 (x-api-key).", None)

    def _identify(self) -> str:
        auth = request.headers.get("Authorization", "")
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() == "bearer" and credential:
            issued = self.tokens.check(credential.strip())
            if issued is None:
                raise EpicorError(401, "Authorization has been denied for this request: the token is invalid "
                                       "or has expired.", None)
            return issued.subject
        if scheme.lower() == "basic":
            user, password = basic_credentials(credential)
            if user and self.users.get(user) == password:
                return user
            raise EpicorError(401, "Authorization has been denied for this request: invalid user name or "
                                   "password.", None)
        raise EpicorError(401, "Authorization has been denied for this request.", None)

    def _v2(self, instance: str, company: str, service: str, rest: str) -> Response:
        try:
            limited = self._rate_limit(request.headers.get("x-api-key") or request.args.get("api-key") or "anon")
            if limited is not None:
                return limited
            if instance.casefold() != self.settings.instance.casefold():
                raise EpicorError(404, f"Instance '{instance}' was not found.", API_EXCEPTION)
            self._check_api_key()
            g.epicor_user = self._identify()
            if company.casefold() != self.settings.company.casefold():
                raise EpicorError(404, f"Company '{company}' is not valid for this user.", API_EXCEPTION)
            service_name = next((s for s in SERVICES if s.casefold() == service.casefold()), None)
            if service_name is None:
                raise EpicorError(404, f"Service '{service}' was not found.", API_EXCEPTION)
            self.stats.bump(f"calls:{service_name}/{re.split(r'[(/]', rest, maxsplit=1)[0] if rest else ''}")
            response = self._dispatch(service_name, rest)
        except EpicorError as error:
            return self._fail(error)
        lost = self._take_lost_answer(request.path) if response.status_code < 300 else None
        if lost is None:
            return response
        time.sleep(lost.delay_seconds)
        return self.error_response(lost.status, "The gateway received no answer from the application server")

    def _dispatch(self, service: str, rest: str) -> Response:
        sets = SERVICES[service]
        name, keys, nav = parse_resource(rest)
        if not name:
            return epicor_json({"@odata.context": f"{self._root(service)}/$metadata",
                                "value": [{"name": n, "kind": "EntitySet", "url": n} for n in sets]})
        entity_set = next((s for n, s in sets.items() if n.casefold() == name.casefold()), None)
        if entity_set is not None:
            return self._entity_request(service, entity_set, keys, nav)
        method = METHODS.get(service, {}).get(name.casefold())
        if method is None or keys is not None:
            raise EpicorError(404, f"Method or entity set '{name}' was not found in service {service}.", API_EXCEPTION)
        if request.method == "GET" and method.read:
            params: dict[str, Any] = {k: v for k, v in request.args.items() if not k.startswith("$") and k != "api-key"}
        elif request.method == "POST":
            params = self._json_body()
        else:
            raise EpicorError(405, f"The requested resource does not support http method '{request.method}'.",
                              API_EXCEPTION)
        with self.lock:
            return epicor_json(method.call(self, TABLESET_TABLES.get(service, ()), params))

    def _json_body(self) -> dict[str, Any]:
        if not request.mimetype or "json" not in request.mimetype:
            raise EpicorError(400, "Unable to deserialize entity. Input data is not in correct format: "
                                   "Content-Type must be application/json.", API_EXCEPTION)
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise EpicorError(400, "Unable to deserialize entity. Input data is not in correct format.", API_EXCEPTION)
        return body

    def _root(self, service: str) -> str:
        return f"{self.base_url}/{self.settings.instance}/api/v2/odata/{self.settings.company}/{service}"

    @property
    def user(self) -> str:
        return str(getattr(g, "epicor_user", "") or self.settings.username)

    # ---- OData entity sets --------------------------------------------------------------------

    def _entity_request(self, service: str, entity_set: EntitySet, keys: list[Any] | None,
                        nav: str | None) -> Response:
        table = self.tables[entity_set.table]
        method = request.method
        if method == "GET":
            with self.lock:
                if keys is None:
                    payload = self.query(service, entity_set, table, request.args)
                else:
                    row = self._lookup(entity_set, table, keys)
                    if nav is not None:
                        payload = self._nav_query(service, entity_set, row, nav)
                    else:
                        payload = self._single(service, entity_set, table, row, request.args)
            return epicor_json(payload)
        if method not in entity_set.writable or nav is not None:
            raise EpicorError(405, f"The requested resource does not support http method '{method}'.", API_EXCEPTION)
        if method == "POST":
            if keys is not None:
                raise EpicorError(405, "POST is not allowed on a single entity.", API_EXCEPTION)
            body = self._json_body()
            with self.lock:
                created = ODATA_WRITES[(entity_set.table, "POST")](self, body, None)
                payload = {"@odata.context": f"{self._root(service)}/$metadata#{entity_set.name}/$entity",
                           **created}
            return epicor_json(payload, 201)
        with self.lock:
            row = self._lookup(entity_set, table, keys or [])
            body = self._json_body() if method == "PATCH" else {}
            ODATA_WRITES[(entity_set.table, method)](self, body, row)
        return Response(status=204)

    def _lookup(self, entity_set: EntitySet, table: Table, keys: list[Any]) -> dict[str, Any]:
        expected = ["Company", *table.key]
        named = isinstance(keys, dict)
        values = [keys.get(k) for k in expected] if named else list(keys)  # type: ignore[union-attr]
        if len(values) != len(expected) or any(v is None for v in values):
            raise odata_error(f"The number of keys specified in the URI does not match the number of key "
                              f"properties ({', '.join(expected)}) for '{table.row_type}'.")
        if str(values[0]).casefold() != self.settings.company.casefold():
            raise EpicorError(404, "Record not found.", NOT_FOUND_EXCEPTION)
        for name, value in zip(table.key, values[1:]):
            kind = table.types[name]
            if kind == "int" and not isinstance(value, int):
                raise odata_error(f"Bad key value for '{name}': expected Edm.Int32.")
            if kind == "str" and not isinstance(value, str):
                raise odata_error(f"Bad key value for '{name}': expected a quoted Edm.String.")
        row = table.get(*values[1:])
        if row is None:
            raise EpicorError(404, "Record not found.", NOT_FOUND_EXCEPTION)
        return row

