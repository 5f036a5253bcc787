"""The Epicor sandbox: one instance, one company, its concerns mixed in from the modules, and
its HTTP surface: token resource, v2 OData paths, entity sets, method calls, control routes."""

from __future__ import annotations

import random
import re
import time
from typing import Any, Callable, Iterable

from flask import Flask, Response, g, request
from pydantic import BaseModel

from sandboxes.base import RateWindow, Sandbox, SandboxOptions
from sandboxes.epicor.methods import METHODS
from sandboxes.epicor.query import QueryMixin, parse_resource
from sandboxes.epicor.rules import SERVICES, EntitySet, RulesMixin
from sandboxes.epicor.seed import SeedMixin
from sandboxes.epicor.store import (BO_EXCEPTION, TABLESET_TABLES, EpicorError, EpicorSandboxSettings,
                                    LostAnswers, StoreMixin, Table, UpdateMasterHold, api_error, epicor_json,
                                    make_tables, not_found, odata_error)
from sandboxes.kit.clock import MILLISECOND_US, Clock
from sandboxes.kit.routes import BodyError, body_as
from sandboxes.kit.tokens import basic_credentials


class EpicorSandbox(QueryMixin, RulesMixin, SeedMixin, StoreMixin, Sandbox):
    """Epicor Kinetic REST v2 for one instance and one company."""

    vendor = "epicor"

    def __init__(self, options: SandboxOptions | None = None,
                 settings: EpicorSandboxSettings | None = None) -> None:
        self.settings = settings or EpicorSandboxSettings()
        opts = options or SandboxOptions()
        self.token_ttl = opts.token_ttl if opts.token_ttl else self.settings.token_ttl
        # Epicor publishes no request rate limit: off unless options.rate_limit asks for one.
        self.rate_window = RateWindow(opts.rate_limit or None)
        self.clock = Clock(MILLISECOND_US)
        self.users = {self.settings.username: self.settings.password, **self.settings.other_users}
        self.api_key = "ek_" + format(random.Random(opts.seed * 7919 + 3).getrandbits(160), "040x")
        self.tables = make_tables()
        self.update_master_hold = UpdateMasterHold(count=0)
        self.lost_answers = LostAnswers(count=0)
        super().__init__(opts)

    def info(self) -> dict[str, Any]:
        instance, settings = self.settings.instance, self.settings
        return {"vendor": "epicor", "api_base": f"{self.base_url}/{instance}",
                "token_url": f"{self.base_url}/{instance}/TokenResource.svc/",
                "credentials": {"username": settings.username, "password": settings.password, "api_key": self.api_key,
                                "company": settings.company, "instance": instance}}

    # ---- vendor errors and limits ------------------------------------------------------------

    def error_response(self, status: int, message: str) -> Response:
        error = EpicorError(status, message, BO_EXCEPTION if status == 400 else None)
        body = error.body()
        if status == 500:
            body["ErrorMessage"] = (f"{message}. Sorry! Something went wrong. Please contact your system "
                                    f"administrator. Correlation ID: {body['CorrelationId']}")
        elif status == 503:
            body["ErrorMessage"] = f"{message}. Server not ready."
        return epicor_json(body, status)

    def rate_limited_response(self, retry_after: float) -> Response:
        seconds = max(1, int(round(retry_after + 0.499)))
        error = EpicorError(429, "Too many requests. Retry after the period in the Retry-After header.", None)
        return error.response({"Retry-After": str(seconds)})

    def _enter(self, instance: str, rate_key: str) -> Response | None:
        """The rate limit's 429, if the call is over it; 404 for another instance."""
        if self.rate_window.limit:
            allowed, wait, _ = self.rate_window.hit(rate_key)
            if not allowed:
                return self.rate_limited_response(wait)
        if instance.casefold() != self.settings.instance.casefold():
            raise api_error(404, f"Instance '{instance}' was not found.")
        return None

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
            limited = self._enter(instance, "token")
            if limited is not None:
                return limited
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
            return error.response()

    def _token_credentials(self) -> tuple[str, str]:
        """Form body (grant_type=password), Basic auth, or username/password headers."""
        if request.form.get("username"):
            if request.form.get("grant_type", "password") != "password":
                raise api_error(400, "Unsupported grant_type.")
            return request.form.get("username", ""), request.form.get("password", "")
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            return basic_credentials(auth.split(" ", 1)[1])
        body = request.get_json(silent=True)
        if isinstance(body, dict) and body.get("username"):
            return str(body.get("username")), str(body.get("password", ""))
        return request.headers.get("username", ""), request.headers.get("password", "")

    def _check_api_key(self) -> None:
        key = request.headers.get("x-api-key") or request.args.get("api-key")
        if not key or key != self.api_key:
            raise EpicorError(self.settings.missing_api_key_status,
                              "Access denied: a valid API key is required for REST v2 (x-api-key).", None)

    def _identify(self) -> str:
        auth = request.headers.get("Authorization", "")
        scheme, _, credential = auth.partition(" ")
        denied = "Authorization has been denied for this request"
        if scheme.lower() == "bearer" and credential:
            issued = self.tokens.check(credential.strip())
            if issued is None:
                raise EpicorError(401, f"{denied}: the token is invalid or has expired.", None)
            return issued.subject
        if scheme.lower() == "basic":
            user, password = basic_credentials(credential)
            if user and self.users.get(user) == password:
                return user
            raise EpicorError(401, f"{denied}: invalid user name or password.", None)
        raise EpicorError(401, f"{denied}.", None)

    def _v2(self, instance: str, company: str, service: str, rest: str) -> Response:
        try:
            limited = self._enter(instance, request.headers.get("x-api-key") or request.args.get("api-key") or "anon")
            if limited is not None:
                return limited
            self._check_api_key()
            g.epicor_user = self._identify()
            if company.casefold() != self.settings.company.casefold():
                raise api_error(404, f"Company '{company}' is not valid for this user.")
            service_name = next((s for s in SERVICES if s.casefold() == service.casefold()), None)
            if service_name is None:
                raise api_error(404, f"Service '{service}' was not found.")
            self.stats.bump(f"calls:{service_name}/{re.split(r'[(/]', rest, maxsplit=1)[0] if rest else ''}")
            response = self._dispatch(service_name, rest)
        except EpicorError as error:
            return error.response()
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
            raise api_error(404, f"Method or entity set '{name}' was not found in service {service}.")
        if request.method == "GET" and method.read:
            params: dict[str, Any] = {k: v for k, v in request.args.items() if not k.startswith("$") and k != "api-key"}
        elif request.method == "POST":
            params = self._json_body()
        else:
            raise self._not_allowed()
        with self.lock:
            return epicor_json(method.call(self, TABLESET_TABLES.get(service, ()), params))

    @staticmethod
    def _not_allowed() -> EpicorError:
        return api_error(405, f"The requested resource does not support http method '{request.method}'.")

    def _json_body(self) -> dict[str, Any]:
        wrong = "Unable to deserialize entity. Input data is not in correct format"
        if not request.mimetype or "json" not in request.mimetype:
            raise api_error(400, f"{wrong}: Content-Type must be application/json.")
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise api_error(400, f"{wrong}.")
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
                    return epicor_json(self.query(service, entity_set, table, request.args))
                row = self._lookup(table, keys)
                if nav is not None:
                    return epicor_json(self._nav_query(service, entity_set, row, nav))
                return epicor_json(self._single(service, entity_set, table, row, request.args))
        if method not in entity_set.writes or nav is not None:
            raise self._not_allowed()
        if method == "POST":
            if keys is not None:
                raise api_error(405, "POST is not allowed on a single entity.")
            body = self._json_body()
            with self.lock:
                created = entity_set.writes["POST"](self, body, None)
                payload = {"@odata.context": f"{self._root(service)}/$metadata#{entity_set.name}/$entity",
                           **created}
            return epicor_json(payload, 201)
        with self.lock:
            row = self._lookup(table, keys or [])
            body = self._json_body() if method == "PATCH" else {}
            entity_set.writes[method](self, body, row)
        return Response(status=204)

    def _lookup(self, table: Table, keys: list[Any]) -> dict[str, Any]:
        expected = ["Company", *table.key]
        named = isinstance(keys, dict)
        values = [keys.get(k) for k in expected] if named else list(keys)  # type: ignore[union-attr]
        if len(values) != len(expected) or any(v is None for v in values):
            raise odata_error(f"The number of keys specified in the URI does not match the number of key "
                              f"properties ({', '.join(expected)}) for '{table.row_type}'.")
        if str(values[0]).casefold() != self.settings.company.casefold():
            raise not_found()
        for name, value in zip(table.key, values[1:]):
            kind = table.types[name]
            if kind == "int" and not isinstance(value, int):
                raise odata_error(f"Bad key value for '{name}': expected Edm.Int32.")
            if kind == "str" and not isinstance(value, str):
                raise odata_error(f"Bad key value for '{name}': expected a quoted Edm.String.")
        row = table.get(*values[1:])
        if row is None:
            raise not_found()
        return row
