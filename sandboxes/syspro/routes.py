"""SYSPRO's HTTP surface: the e.net REST host (GET only, case-insensitive paths, octet-stream
text at HTTP 200 even for errors), the read-only OData service, and the sandbox's own controls."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterable
from urllib.parse import urlencode
from xml.sax.saxutils import escape

from flask import Flask, Response, jsonify, request

from sandboxes.kit import odata
from sandboxes.kit.routes import model_route

from .query import UNKNOWN_PROPERTY, QueryError, parse_odata_filter, resolve, run_query
from .rules import ROOT_ATTRIBUTES, XML_DECLARATION, tags
from .tables import to_json

if TYPE_CHECKING:
    from .sandbox import SysproSandbox

REST_BASE = "/SYSPROWCFService/Rest"
ODATA_SITE = "/SYSPROOData"  # (unconfirmed) IIS site name of the OData service
BUSINESS_PATHS = ("Query/Query", "Query/Browse", "Query/Fetch", "Transaction/Post", "Transaction/Build",
                  "Setup/Add", "Setup/Update", "Setup/Delete")


def case_fold_paths(app: Callable[..., Any], paths: Iterable[str]) -> Callable[..., Any]:
    """WSGI middleware: the WCF host matches paths case-insensitively (`/logon` works), so a
    request for one of the REST `paths` in any letter case is folded onto its canonical spelling."""
    canonical = {f"{REST_BASE}/{p}".lower(): f"{REST_BASE}/{p}" for p in paths}

    def folded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        environ["PATH_INFO"] = canonical.get(path.rstrip("/").lower(), path)
        return app(environ, start_response)

    return folded


def text(body: str) -> Response:
    return Response(body.encode("cp1252", "xmlcharrefreplace"), status=200, mimetype="application/octet-stream")


def odata_error(status: int, message: str, **headers: str) -> Response:
    response = jsonify({"error": {"code": "", "message": message}})
    response.status_code = status
    response.headers.update(headers)
    return response


class Routes:
    """The endpoints of one sandbox; mixed into `SysproSandbox`, whose state they use."""

    def register_vendor_routes(self: SysproSandbox, app: Flask) -> None:
        app.before_request(self._rate_gate)
        answers: dict[str, Callable[[Any], str]] = {  # REST path -> its answer to the query string
            "Logon": self.logon, "Logoff": lambda args: self.logoff(args.get("UserId", "")),
            "GetLogonProfile": lambda args: self.logon_profile(args.get("UserId", "")),
            "GetVersion": lambda args: self.settings.host_version,
            **{kind: partial(self.business_call, kind) for kind in BUSINESS_PATHS},
        }
        for path, answer in answers.items():
            app.add_url_rule(f"{REST_BASE}/{path}", path, lambda answer=answer: text(answer(request.args)))
        app.wsgi_app = case_fold_paths(app.wsgi_app, answers)  # type: ignore[method-assign]
        app.add_url_rule(f"{ODATA_SITE}/<company>/", "odata_service", self._odata_service)
        app.add_url_rule(f"{ODATA_SITE}/<company>/<entity_set>", "odata_entity_set", self._odata_query)
        model_route(app, "/_sandbox/syspro/settings", type(self.settings), lambda: self.settings, self.apply_settings)
        app.add_url_rule("/_sandbox/syspro/sessions", "list_sessions", lambda: jsonify(self.sessions.describe()))

    def _rate_gate(self: SysproSandbox) -> Response | None:
        if request.path.startswith("/_sandbox/"):
            return None
        allowed, wait, _ = self.rate.hit("syspro")
        return None if allowed else self.rate_limited_response(wait)

    def rate_limited_response(self, retry_after: float) -> Response:
        # (unconfirmed) SYSPRO documents no limit; a throttling proxy in front of the WCF host
        # would answer 429 with Retry-After. The body keeps e.net's `ERROR:` text convention.
        response = Response(b"ERROR: Too many requests", status=429, mimetype="application/octet-stream")
        response.headers["Retry-After"] = str(max(1, int(round(retry_after + 0.499))))
        return response

    def error_response(self, status: int, message: str) -> Response:
        # The WCF host answers transport failures with its HTML "Request Error" page.
        body = ("<html><head><title>Request Error</title></head><body><div id=\"content\">"
                f"<p class=\"heading1\">Request Error</p><p>{escape(message)}</p></div></body></html>")
        return Response(body, status=status, mimetype="text/html")

    # ---- Logon / sessions -------------------------------------------------------------------------

    def logon(self: SysproSandbox, args: Any) -> str:
        operator, company = args.get("Operator", "").strip(), args.get("CompanyId", "").strip()
        refusal = (f"Operator '{operator}' not found" if operator.upper() != self.OPERATOR
                   else "Invalid operator password" if args.get("OperatorPassword", "") != self.OPERATOR_PASSWORD
                   else f"Company '{company}' not found" if company.upper() != self.COMPANY_ID
                   else "Invalid company password" if args.get("CompanyPassword", "") != self.COMPANY_PASSWORD
                   else None)
        if refusal is not None:
            self.stats.bump("logon_failures")
            return f"ERROR: {refusal}"
        user_id = self.sessions.open(self.OPERATOR, self.COMPANY_ID)
        if user_id is None:
            self.stats.bump("seat_refusals")
            seats = self.settings.seats
            # (unconfirmed) wording of the licence-limit refusal
            return f"ERROR: e.net licence limit reached - all {seats} of {seats} licences are in use"
        self.stats.bump("logons")
        self.stats.token_issued()
        return user_id + "  "

    def logoff(self: SysproSandbox, user_id: str) -> str:
        if self.sessions.close(user_id):
            self.stats.bump("logoffs")
            return "0"
        return self.stale_message(user_id)

    def logon_profile(self: SysproSandbox, user_id: str) -> str:
        """Round 2 [C1]: clients read //CompanyName, //OperatorCode, //OperatorGroup, //AccountingDate."""
        session = self.sessions.use(user_id)
        if session is None:
            return self.stale_message(user_id)
        today = self.clock.now_datetime().date()
        profile = tags([("CompanyId", session.company), ("CompanyName", self.COMPANY_NAME),
                        ("OperatorCode", session.operator), ("OperatorGroup", self.OPERATOR_GROUP),
                        ("AccountingDate", today), ("SystemDate", today)])
        return f"{XML_DECLARATION}\n<LogonProfile {ROOT_ATTRIBUTES}>{profile}</LogonProfile>"

    def stale_message(self: SysproSandbox, user_id: str) -> str:
        self.stats.bump("stale_session_calls")
        # (unconfirmed) wording; the host echoes the id it could not find
        return f"ERROR: Session '{user_id.strip()}' is invalid or has expired - please log on again"

    # ---- OData ------------------------------------------------------------------------------------

    def _odata_auth(self: SysproSandbox, company: str) -> Response | None:
        auth = request.authorization
        if (auth is None or auth.type != "basic" or (auth.username or "").upper() != self.OPERATOR
                or auth.password != self.OPERATOR_PASSWORD):
            return odata_error(401, "Authorization has been denied for this request.",
                               **{"WWW-Authenticate": 'Basic realm="SYSPRO OData"'})
        return odata_error(404, f"Company '{company}' not found") if company.upper() != self.COMPANY_ID else None

    def _odata_service(self: SysproSandbox, company: str) -> Response:
        return self._odata_auth(company) or jsonify({
            "@odata.context": f"{self.base_url}{ODATA_SITE}/{company}/$metadata",
            "value": [{"name": n, "kind": "EntitySet", "url": n} for n in self.tables],
        })

    def _odata_query(self: SysproSandbox, company: str, entity_set: str) -> Response:
        refused = self._odata_auth(company)
        if refused is not None:
            return refused
        table = self.tables.get(entity_set)
        if table is None:
            return odata_error(404, f"No HTTP resource was found that matches the request URI '{request.url}'.")
        args = request.args
        names = table.names(self.settings.change_column)
        try:
            node = parse_odata_filter(args.get("$filter", ""), table, names)
            try:
                order = odata.parse_orderby(args.get("$orderby", ""), fold_direction=True, skip_empty=True)
            except ValueError as exc:
                raise QueryError(f"Invalid $orderby '{exc}'") from None
            for column, _ in order:
                resolve(names, column, table, "Invalid $orderby '{column}'")
            select = odata.split_names(args.get("$select"))
            for column in select:
                resolve(names, column, table, UNKNOWN_PROPERTY)
            top = int(args["$top"]) if "$top" in args else None
            skip = int(args.get("$skip", 0))
            if (top is not None and top < 0) or skip < 0:
                raise QueryError("$top and $skip must be non-negative")
        except (QueryError, ValueError) as exc:
            return odata_error(400, f"The query specified in the URI is not valid. {exc}")
        page = self.settings.odata_max_page_size
        take = page if top is None else min(top, page)
        counted = args.get("$count", "").lower() == "true"
        with self.lock:
            by = [(names[c], descending) for c, descending in order] or [(k, False) for k in table.key]
            rows, total = run_query(table, node, by, limit=take + 1, skip=skip)
            if counted and total is None:
                total = len(run_query(table, node, [], limit=None)[0])
        more, rows = len(rows) > take, rows[:take]
        body: dict[str, Any] = {"@odata.context": f"{self.base_url}{ODATA_SITE}/{company}/$metadata#{table.name}"}
        if counted:
            body["@odata.count"] = total
        body["value"] = [{c: to_json(row.get(names[c])) for c in select or names} for row in rows]
        remaining = None if top is None else top - take
        if more and (remaining is None or remaining > 0):
            params = {k: v for k, v in args.items() if k not in ("$skip", "$top")}
            params["$skip"] = str(skip + take)
            if remaining is not None:
                params["$top"] = str(remaining)
            body["@odata.nextLink"] = f"{self.base_url}{ODATA_SITE}/{company}/{table.name}?{urlencode(params)}"
        return jsonify(body)
