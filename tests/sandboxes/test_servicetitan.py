"""Contract tests of the ServiceTitan sandbox over raw HTTP, written from the vendor facts.

Responses are validated against ServiceTitan's own OpenAPI specs (shared/vendor-apis/specs).
Facts the notes mark unconfirmed (and so are settings in the sandbox): the webhook envelope,
event names, signature header and encoding; the export page size; the largest pageSize;
scope names beyond the documented examples; the 401 text for a wrong (not missing) app key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from sandboxes.base import SandboxOptions, start_sandbox
from sandboxes.servicetitan import APP_KEY_MISSING, ServiceTitanSandbox, sign_webhook

SEED_RECORDS = 120
MODULES = ("accounting", "crm", "inventory", "settings")


# ---- the vendor's OpenAPI specs ----------------------------------------------------------------

def _spec_dir() -> Path | None:
    configured = os.environ.get("SERVICETITAN_OPENAPI_DIR")
    if configured:
        return Path(configured)
    bundled = Path(__file__).resolve().parents[1] / "fixtures" / "servicetitan"
    if bundled.is_dir():  # the vendor's specs, kept with the tests so a fresh clone validates too
        return bundled
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "vendor-apis" / "specs" / "servicetitan"
        if candidate.is_dir():
            return candidate
    return None


def _nullable_refs(node: Any) -> Any:
    """The specs write a nullable reference as {"oneOf": [ref], "nullable": true}. Under OAS 3.0.3
    `nullable` only widens an explicit `type`, so validators reject null there; the generator
    means "ref or null", which is what this rewrite states."""
    if isinstance(node, dict):
        node = {key: _nullable_refs(value) for key, value in node.items()}
        combinator = next((k for k in ("oneOf", "allOf", "anyOf") if k in node), None)
        if node.get("nullable") and combinator and "type" not in node:
            rest = {k: v for k, v in node.items() if k not in (combinator, "nullable")}
            return {"anyOf": [*node[combinator], {"enum": [None]}], **rest}
        return node
    if isinstance(node, list):
        return [_nullable_refs(value) for value in node]
    return node


class Specs:
    def __init__(self, directory: Path) -> None:
        from openapi_schema_validator import OAS30Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT4

        self._validator_class = OAS30Validator
        self.docs = {m: _nullable_refs(json.loads((directory / f"{m}-v2.json").read_text())) for m in MODULES}
        registry = Registry()
        for module, doc in self.docs.items():
            registry = registry.with_resource(f"urn:st:{module}", Resource.from_contents(doc, default_specification=DRAFT4))
        self._registry = registry

    def schema(self, module: str, path: str, method: str = "get", status: str = "200") -> dict[str, Any]:
        operation = self.docs[module]["paths"][f"/tenant/{{tenant}}{path}"][method]
        schema = operation["responses"][status]["content"]["application/json"]["schema"]
        return json.loads(json.dumps(schema).replace('"#/components', f'"urn:st:{module}#/components'))

    def component(self, module: str, name: str) -> dict[str, Any]:
        return {"$ref": f"urn:st:{module}#/components/schemas/{name}"}

    def errors(self, schema: dict[str, Any], instance: Any) -> list[str]:
        validator = self._validator_class(schema, registry=self._registry,
                                          format_checker=self._validator_class.FORMAT_CHECKER)
        return [f"{list(e.absolute_path)[:6]}: {e.message[:300]}" for e in validator.iter_errors(instance)]

    def check(self, module: str, path: str, body: Any, method: str = "get", status: str = "200") -> None:
        problems = self.errors(self.schema(module, path, method, status), body)
        assert not problems, f"{method.upper()} {module}{path} breaks the vendor schema:\n" + "\n".join(problems[:10])

    def check_problem(self, body: Any) -> None:
        problems = self.errors(self.component("accounting", "ApiErrorResponse"), body)
        assert not problems, "not an RFC 7807 ApiErrorResponse:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def specs() -> Specs:
    directory = _spec_dir()
    if directory is None or not (directory / "accounting-v2.json").is_file():
        pytest.skip("ServiceTitan OpenAPI specs not found (set SERVICETITAN_OPENAPI_DIR)")
    return Specs(directory)


# ---- the sandbox under test -------------------------------------------------------------------

@pytest.fixture(scope="module")
def running() -> Iterator[Any]:
    sandbox = ServiceTitanSandbox(SandboxOptions(seed=11, records=SEED_RECORDS), webhook_retry_scale=0.01)
    run = start_sandbox(sandbox)
    yield run
    run.stop()


@pytest.fixture(autouse=True)
def fresh(running: Any) -> Iterator[None]:
    requests.post(f"{running.url}/_sandbox/reset", json={}, timeout=10).raise_for_status()
    running.sandbox.webhook_retry_scale = 0.01
    yield


class Client:
    """Raw HTTP against the sandbox, with the vendor's two auth headers."""

    def __init__(self, running: Any) -> None:
        self.sandbox: ServiceTitanSandbox = running.sandbox
        self.info = requests.get(f"{running.url}/_sandbox/info", timeout=5).json()
        self.base = self.info["api_base"]
        self.creds = self.info["credentials"]
        self.tenant = self.creds["tenant"]
        self.control = f"{running.url}/_sandbox"
        self._token: str | None = None

    def token(self, **extra: str) -> requests.Response:
        form = {"grant_type": "client_credentials", "client_id": self.creds["client_id"],
                "client_secret": self.creds["client_secret"], **extra}
        return requests.post(self.info["token_url"], data=form, timeout=5)

    def headers(self, token: str | None = None) -> dict[str, str]:
        if token is None:
            if self._token is None:
                self._token = self.token().json()["access_token"]
            token = self._token
        return {"Authorization": f"Bearer {token}", "ST-App-Key": self.creds["app_key"]}

    def url(self, module: str, path: str, tenant: int | None = None) -> str:
        return f"{self.base}/{module}/v2/tenant/{tenant or self.tenant}{path}"

    def get(self, module: str, path: str, params: Any = None, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("headers", self.headers())
        return requests.get(self.url(module, path), params=params, timeout=10, **kwargs)

    def send(self, method: str, module: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("headers", self.headers())
        return requests.request(method, self.url(module, path), json=body, timeout=10, **kwargs)

    def all_ids(self, module: str, path: str, params: dict[str, Any] | None = None) -> list[int]:
        body = self.get(module, path, {"pageSize": 5000, **(params or {})}).json()
        return [row["id"] for row in body["data"]]

    def put_entity(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(f"{self.control}/entities/{entity}", json=payload, timeout=5)
        assert response.status_code == 200, response.text
        return response.json()

    def faults(self, **faults: Any) -> None:
        requests.post(f"{self.control}/faults", json=faults, timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return requests.get(f"{self.control}/stats", timeout=5).json()


@pytest.fixture
def st(running: Any) -> Client:
    return Client(running)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _now_iso() -> str:
    return _iso(datetime.now(timezone.utc))


# ---- auth -----------------------------------------------------------------------------------

def test_token_is_issued_for_form_encoded_client_credentials(st: Client) -> None:
    before = st.stats()["tokens_issued"]
    response = st.token()
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert "tn.acc.invoices:r" in body["scope"].split()
    assert st.stats()["tokens_issued"] == before + 1
    assert st.get("settings", "/business-units", {"pageSize": 1}, headers=st.headers(body["access_token"])).status_code == 200


@pytest.mark.parametrize("field, value", [("client_id", "cid.nobody"), ("client_secret", "wrong-secret")])
def test_token_refuses_a_bad_client(st: Client, field: str, value: str) -> None:
    response = st.token(**{field: value})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_client"}


def test_token_requires_form_encoding_and_the_client_credentials_grant(st: Client) -> None:
    as_json = requests.post(st.info["token_url"], json={"grant_type": "client_credentials", **st.creds}, timeout=5)
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"
    wrong_grant = st.token(grant_type="password")
    assert wrong_grant.status_code == 400 and wrong_grant.json()["error"] == "unsupported_grant_type"


def test_token_lifetime_follows_the_token_ttl_option() -> None:
    sandbox = ServiceTitanSandbox(SandboxOptions(records=1, token_ttl=1))
    with start_sandbox(sandbox) as run:
        client = Client(run)
        body = client.token().json()
        assert body["expires_in"] == 1
        headers = client.headers(body["access_token"])
        assert client.get("crm", "/customers", headers=headers).status_code == 200
        time.sleep(1.1)
        expired = client.get("crm", "/customers", headers=headers)
        assert expired.status_code == 401
        assert "invalid_token" in expired.headers["WWW-Authenticate"]


def test_missing_app_key_answers_the_vendor_401(st: Client, specs: Specs) -> None:
    headers = st.headers()
    del headers["ST-App-Key"]
    response = st.get("inventory", "/purchase-orders", headers=headers)
    assert response.status_code == 401
    assert response.json()["title"] == APP_KEY_MISSING == "Application key not present, check ST-App-Key header value."
    specs.check_problem(response.json())
    unsigned = st.get("inventory", "/purchase-orders", headers={})  # no token either: the app key is checked first
    assert unsigned.status_code == 401 and unsigned.json()["title"] == APP_KEY_MISSING


def test_app_key_may_travel_in_the_query_string(st: Client) -> None:
    headers = {"Authorization": st.headers()["Authorization"]}
    response = st.get("inventory", "/vendors", {"servicetitanapplicationkey": st.creds["app_key"]}, headers=headers)
    assert response.status_code == 200


def test_wrong_app_key_missing_bearer_and_unknown_token_answer_401(st: Client, specs: Specs) -> None:
    wrong_key = {**st.headers(), "ST-App-Key": "ak1.someone-else"}
    assert st.get("crm", "/customers", headers=wrong_key).status_code == 401
    no_bearer = st.get("crm", "/customers", headers={"ST-App-Key": st.creds["app_key"]})
    assert no_bearer.status_code == 401 and no_bearer.headers["WWW-Authenticate"].startswith("Bearer")
    specs.check_problem(no_bearer.json())
    unknown = st.get("crm", "/customers", headers=st.headers("not-a-token"))
    assert unknown.status_code == 401


def test_expired_and_revoked_tokens_answer_401(st: Client) -> None:
    assert st.get("crm", "/customers").status_code == 200
    requests.post(f"{st.control}/expire-tokens", timeout=5).raise_for_status()
    assert st.get("crm", "/customers").status_code == 401
    fresh_token = st.token().json()["access_token"]
    assert st.get("crm", "/customers", headers=st.headers(fresh_token)).status_code == 200
    requests.post(f"{st.control}/revoke-tokens", timeout=5).raise_for_status()
    assert st.get("crm", "/customers", headers=st.headers(fresh_token)).status_code == 401


def test_tenant_in_the_path_must_match_the_credential(st: Client, specs: Specs) -> None:
    response = requests.get(st.url("crm", "/customers", tenant=st.tenant + 1), headers=st.headers(), timeout=5)
    assert response.status_code == 403
    specs.check_problem(response.json())


def test_missing_scope_answers_403_and_unknown_scope_is_refused(st: Client) -> None:
    narrow = st.token(scope="tn.inv.vendors:r").json()
    assert narrow["scope"] == "tn.inv.vendors:r"
    headers = st.headers(narrow["access_token"])
    assert st.get("inventory", "/vendors", headers=headers).status_code == 200
    assert st.get("inventory", "/purchase-orders", headers=headers).status_code == 403
    write = st.send("PATCH", "inventory", "/vendors/501", {"memo": "x"}, headers=headers)
    assert write.status_code == 403 and "tn.inv.vendors:w" in write.json()["title"]
    requests.post(f"{st.control}/scopes", json={"scopes": ["tn.inv.vendors:r"]}, timeout=5).raise_for_status()
    assert st.token(scope="tn.acc.invoices:r").json() == {"error": "invalid_scope"}


# ---- reads, envelopes and the vendor's schemas ------------------------------------------------------

LIST_ENDPOINTS = [
    ("inventory", "/purchase-orders"), ("inventory", "/vendors"), ("inventory", "/adjustments"),
    ("inventory", "/warehouses"), ("accounting", "/inventory-bills/paginated"), ("accounting", "/ap-bills"),
    ("accounting", "/ap-payments"), ("accounting", "/invoices"), ("accounting", "/payments"),
    ("accounting", "/gl-accounts"), ("crm", "/customers"), ("settings", "/business-units"),
]
EXPORT_ENDPOINTS = [
    ("inventory", "/export/purchase-orders"), ("inventory", "/export/adjustments"),
    ("accounting", "/export/inventory-bills"), ("accounting", "/export/invoices"), ("accounting", "/export/payments"),
    ("crm", "/export/customers"), ("settings", "/export/business-units"),
]


@pytest.mark.parametrize("module, path", LIST_ENDPOINTS)
def test_list_endpoints_answer_the_paged_envelope_in_the_vendor_schema(st: Client, specs: Specs, module: str,
                                                                       path: str) -> None:
    response = st.get(module, path, {"pageSize": 5000, "includeTotal": "true", "active": "Any", "activeState": "All"})
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["page", "pageSize", "hasMore", "totalCount", "data"]
    assert body["data"], f"{path} is seeded"
    assert body["totalCount"] == len(body["data"]) and body["hasMore"] is False
    specs.check(module, path, body)


@pytest.mark.parametrize("module, path", EXPORT_ENDPOINTS)
def test_export_feeds_answer_the_export_envelope_in_the_vendor_schema(st: Client, specs: Specs, module: str,
                                                                      path: str) -> None:
    body = st.get(module, path, {"pageSize": 5000}).json()
    assert set(body) == {"hasMore", "continueFrom", "data"} and body["data"]
    specs.check(module, path, body)


def test_by_id_reads_match_the_vendor_schema_and_404_is_rfc7807(st: Client, specs: Specs) -> None:
    for module, path, entity in [("inventory", "/purchase-orders", "purchase_orders"), ("inventory", "/vendors", "vendors"),
                                 ("crm", "/customers", "customers"), ("settings", "/business-units", "business_units"),
                                 ("accounting", "/gl-accounts", "gl_accounts")]:
        first = next(iter(st.sandbox.tables[entity].rows))
        response = st.get(module, f"{path}/{first}")
        assert response.status_code == 200 and response.json()["id"] == first
        template = "/ap-bills/{billId}" if "ap-bills" in path else (
            "/gl-accounts/{accountId}" if "gl-accounts" in path else path + "/{id}")
        specs.check(module, template, response.json())
    bill = next(iter(st.sandbox.tables["ap_bills"].rows))
    specs.check("accounting", "/ap-bills/{billId}", st.get("accounting", f"/ap-bills/{bill}").json())
    missing = st.get("inventory", "/purchase-orders/1")
    assert missing.status_code == 404
    specs.check_problem(missing.json())
    specs.check("inventory", "/purchase-orders/{id}", missing.json(), status="404")


def test_inventory_bills_list_is_a_bare_array_and_paginated_is_the_envelope(st: Client, specs: Specs) -> None:
    bare = st.get("accounting", "/inventory-bills", {"pageSize": 5000}).json()
    paged = st.get("accounting", "/inventory-bills/paginated", {"pageSize": 5000}).json()
    assert isinstance(bare, list)
    specs.check("accounting", "/inventory-bills", bare)
    assert [b["id"] for b in bare] == [b["id"] for b in paged["data"]]
    first = bare[0]
    assert isinstance(first["billAmount"], str) and isinstance(first["items"][0]["cost"], str)
    assert set(first["vendor"]) == {"id", "name"} and first["purchaseOrderId"]
    assert set(first["items"][0]["generalLedgerAccount"]) == {"id", "name", "number", "type", "detailType"}


def test_bills_filter_by_purchase_order_number(st: Client) -> None:
    bill = st.get("accounting", "/inventory-bills/paginated", {"pageSize": 1}).json()["data"][0]
    number = st.get("inventory", f"/purchase-orders/{bill['purchaseOrderId']}").json()["number"]
    found = st.get("accounting", "/inventory-bills/paginated", {"purchaseOrderNumber": number}).json()["data"]
    assert [b["id"] for b in found] == [bill["id"]]
    assert st.get("accounting", "/inventory-bills", {"purchaseOrderNumber": "PO-none"}).json() == []


def test_accounting_amounts_are_strings_inventory_and_crm_amounts_numbers(st: Client) -> None:
    invoice = st.get("accounting", "/invoices", {"pageSize": 1}).json()["data"][0]
    assert all(isinstance(invoice[k], str) for k in ("subTotal", "salesTax", "total", "balance"))
    payment = st.get("accounting", "/payments", {"pageSize": 1}).json()["data"][0]
    assert isinstance(payment["total"], str) and isinstance(payment["appliedTo"][0]["appliedAmount"], str)
    po = st.get("inventory", "/purchase-orders", {"pageSize": 1}).json()["data"][0]
    assert all(isinstance(po[k], (int, float)) and not isinstance(po[k], bool) for k in ("total", "tax", "shipping"))
    customer = st.get("crm", "/customers", {"pageSize": 1}).json()["data"][0]
    assert isinstance(customer["balance"], (int, float))


def test_seeded_vendors_include_near_duplicate_names_and_addresses(st: Client) -> None:
    vendors = st.get("inventory", "/vendors", {"pageSize": 500, "active": "Any"}).json()["data"]
    names = {v["name"] for v in vendors}
    assert {"Acme Supply Co", "ACME Supply Company", "Acme Supply, Inc."} <= names
    acme = [v["address"]["street"] for v in vendors if v["name"].lower().startswith("acme")]
    assert len(set(acme)) == 3 and all(street.startswith("100 Industrial") for street in acme)
    po = st.get("inventory", "/purchase-orders", {"pageSize": 500}).json()["data"]
    assert any(len(p["items"]) > 1 for p in po) and any(p["status"] == "Received" for p in po)


def test_pagination_edges(st: Client) -> None:
    all_ids = st.all_ids("crm", "/customers")
    total = len(all_ids)
    default = st.get("crm", "/customers").json()
    assert default["pageSize"] == 50 and len(default["data"]) == 50 and default["hasMore"] is True
    assert default["totalCount"] is None  # includeTotal defaults to false
    exact = st.get("crm", "/customers", {"pageSize": total, "includeTotal": "true"}).json()
    assert len(exact["data"]) == total and exact["hasMore"] is False and exact["totalCount"] == total
    short = st.get("crm", "/customers", {"pageSize": total - 1}).json()
    assert short["hasMore"] is True
    last = st.get("crm", "/customers", {"pageSize": total - 1, "page": 2}).json()
    assert [c["id"] for c in last["data"]] == all_ids[-1:] and last["hasMore"] is False
    beyond = st.get("crm", "/customers", {"pageSize": total, "page": 3}).json()
    assert beyond["data"] == [] and beyond["hasMore"] is False
    empty = st.get("crm", "/customers", {"modifiedOnOrAfter": "2100-01-01T00:00:00Z", "includeTotal": "true"}).json()
    assert empty["data"] == [] and empty["hasMore"] is False and empty["totalCount"] == 0
    walked: list[int] = []
    page = 1
    while True:
        body = st.get("crm", "/customers", {"pageSize": 7, "page": page}).json()
        walked += [c["id"] for c in body["data"]]
        if not body["hasMore"]:
            break
        page += 1
    assert walked == all_ids == sorted(all_ids)


def test_page_size_is_clamped_to_the_cap(st: Client) -> None:
    st.sandbox.max_page_size = 10
    try:
        body = st.get("crm", "/customers", {"pageSize": 1000}).json()
        assert body["pageSize"] == 10 and len(body["data"]) == 10
    finally:
        st.sandbox.max_page_size = 5000


@pytest.mark.parametrize("params, field", [
    ({"page": 0}, "page"), ({"pageSize": "ten"}, "pageSize"), ({"includeTotal": "maybe"}, "includeTotal"),
    ({"modifiedOnOrAfter": "yesterday"}, "modifiedOnOrAfter"), ({"active": "Sometimes"}, "active"),
    ({"ids": ",".join(str(i) for i in range(51))}, "ids"), ({"sort": "+Name"}, "sort"),
])
def test_bad_query_parameters_answer_400_with_the_field_named(st: Client, specs: Specs, params: dict[str, Any],
                                                               field: str) -> None:
    response = st.get("crm", "/customers", params)
    assert response.status_code == 400
    body = response.json()
    specs.check_problem(body)
    assert body["title"] == "One or more validation errors occurred." and field in body["errors"]


def test_sorting_by_id_and_modified_and_the_per_endpoint_allowed_fields(st: Client) -> None:
    ascending = st.all_ids("crm", "/customers")
    assert st.all_ids("crm", "/customers", {"sort": "-Id"}) == ascending[::-1]
    by_modified = st.get("crm", "/customers", {"pageSize": 500, "sort": "+ModifiedOn"}).json()["data"]
    stamps = [c["modifiedOn"] for c in by_modified]
    assert stamps == sorted(stamps)
    assert st.get("crm", "/customers", {"sort": "-Modified"}).status_code == 200
    assert st.get("inventory", "/purchase-orders", {"sort": "+ModifiedOn"}).status_code == 400  # POs sort by Id only


def test_ids_and_active_filters(st: Client) -> None:
    wanted = st.all_ids("inventory", "/vendors")[:3]
    got = st.get("inventory", "/vendors", {"ids": ",".join(map(str, wanted))}).json()["data"]
    assert [v["id"] for v in got] == wanted
    repeated = requests.get(st.url("inventory", "/vendors"), params=[("ids", wanted[0]), ("ids", wanted[1])],
                            headers=st.headers(), timeout=5).json()["data"]
    assert [v["id"] for v in repeated] == wanted[:2]
    st.put_entity("vendors", {"id": wanted[0], "active": False})
    default_ids = st.all_ids("inventory", "/vendors")
    assert wanted[0] not in default_ids
    assert wanted[0] in st.all_ids("inventory", "/vendors", {"active": "Any"})
    assert st.all_ids("inventory", "/vendors", {"active": "False"}) == sorted(
        set(st.all_ids("inventory", "/vendors", {"active": "Any"})) - set(default_ids))
    invoice = st.all_ids("accounting", "/invoices")[0]
    st.put_entity("invoices", {"id": invoice, "active": False})
    assert invoice not in st.all_ids("accounting", "/invoices")
    assert invoice in st.all_ids("accounting", "/invoices", {"activeState": "InactiveOnly"})


# ---- change detection ---------------------------------------------------------------------------

def test_modified_and_created_filters_find_exactly_the_changed_records(st: Client) -> None:
    mark = _now_iso()
    time.sleep(0.01)
    changed = requests.post(f"{st.control}/tick/customers", json={"count": 5}, timeout=5).json()["changed"]
    changed_ids = sorted({c["id"] for c in changed})
    assert st.all_ids("crm", "/customers", {"modifiedOnOrAfter": mark}) == changed_ids
    before = st.all_ids("crm", "/customers", {"modifiedBefore": mark})
    assert not set(before) & set(changed_ids)
    assert len(before) + len(changed_ids) == SEED_RECORDS
    assert st.all_ids("crm", "/customers", {"createdOnOrAfter": mark}) == []
    created = st.put_entity("customers", {"name": "Brand New Customer"})
    assert st.all_ids("crm", "/customers", {"createdOnOrAfter": mark}) == [created["id"]]
    assert created["id"] not in st.all_ids("crm", "/customers", {"createdBefore": mark})


def test_change_filter_bounds_are_inclusive_then_exclusive(st: Client) -> None:
    vendor = st.put_entity("vendors", {"name": "Boundary Supply"})
    stamp = vendor["modifiedOn"]
    assert vendor["id"] in st.all_ids("inventory", "/vendors", {"modifiedOnOrAfter": stamp})
    assert vendor["id"] not in st.all_ids("inventory", "/vendors", {"modifiedBefore": stamp})
    later = _iso(datetime.fromisoformat(stamp.replace("Z", "+00:00")) + timedelta(milliseconds=1))
    assert vendor["id"] in st.all_ids("inventory", "/vendors", {"modifiedBefore": later})


def test_tick_changes_records_and_moves_modified_forward(st: Client) -> None:
    before = {v["id"]: v["modifiedOn"] for v in st.get("inventory", "/purchase-orders", {"pageSize": 500}).json()["data"]}
    changed = requests.post(f"{st.control}/tick", json={"count": 12}, timeout=5).json()["changed"]
    assert len(changed) == 12 and {c["entity"] for c in changed} > {"purchase_orders"}
    for change in changed:
        if change["entity"] == "purchase_orders":
            assert change["modifiedOn"] > before[change["id"]]


# ---- export feeds --------------------------------------------------------------------------------

def _drain_export(st: Client, module: str, path: str, start: str | None, page_size: int = 25) -> tuple[list[dict[str, Any]], str]:
    rows: list[dict[str, Any]] = []
    cursor = start
    while True:
        params: dict[str, Any] = {"pageSize": page_size}
        if cursor is not None:
            params["from"] = cursor
        body = st.get(module, path, params).json()
        rows += body["data"]
        cursor = body["continueFrom"]
        if not body["hasMore"]:
            return rows, cursor


def test_export_feed_continues_from_its_token_and_includes_inactive_rows(st: Client) -> None:
    rows, cursor = _drain_export(st, "crm", "/export/customers", None)
    assert sorted(r["id"] for r in rows) == st.all_ids("crm", "/customers", {"active": "Any"})
    stamps = [r["modifiedOn"] for r in rows]
    assert stamps == sorted(stamps)  # chronological by modification
    again = st.get("crm", "/export/customers", {"from": cursor}).json()
    assert again["data"] == [] and again["hasMore"] is False
    target = rows[3]["id"]
    st.put_entity("customers", {"id": target, "active": False})
    news = st.get("crm", "/export/customers", {"from": cursor}).json()
    assert [(r["id"], r["active"]) for r in news["data"]] == [(target, False)]
    assert target not in st.all_ids("crm", "/customers")  # the list hides it by default
    bills, _ = _drain_export(st, "accounting", "/export/inventory-bills", None)
    assert all(b["active"] is True for b in bills)


def test_export_from_accepts_a_date_and_rejects_garbage(st: Client, specs: Specs) -> None:
    everything, _ = _drain_export(st, "accounting", "/export/invoices", "2020-01-01")
    assert len(everything) == len(st.sandbox.tables["invoices"].rows)
    mark = _now_iso()
    time.sleep(0.01)
    requests.post(f"{st.control}/tick/invoices", json={"count": 3}, timeout=5).raise_for_status()
    recent, _ = _drain_export(st, "accounting", "/export/invoices", mark)
    assert 1 <= len(recent) <= 3 and all(r["modifiedOn"] >= mark for r in recent)
    bad = st.get("accounting", "/export/invoices", {"from": "not a cursor!"})
    assert bad.status_code == 400 and "from" in bad.json()["errors"]
    specs.check_problem(bad.json())
    _, po_cursor = _drain_export(st, "inventory", "/export/purchase-orders", None, 5000)
    assert st.get("accounting", "/export/invoices", {"from": po_cursor}).status_code == 400


# ---- writes -------------------------------------------------------------------------------------

def _vendor_body(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "active": True, "isTruckReplenishment": False, "taxRate": 0.0,
            "restrictedMobileCreation": False,
            "address": {"street": "9 Supply Way", "unit": "", "city": "Fresno", "state": "CA", "zip": "93721",
                        "country": "USA"}, **extra}


def test_create_vendor_then_read_it_back(st: Client, specs: Specs) -> None:
    response = st.send("POST", "inventory", "/vendors", _vendor_body("Sierra Pipe & Supply", phone="5595550111",
                                                                      email="ap@sierrapipe.example"))
    assert response.status_code == 200
    specs.check("inventory", "/vendors", response.json(), method="post")
    vendor = st.get("inventory", f"/vendors/{response.json()['id']}").json()
    specs.check("inventory", "/vendors/{id}", vendor)
    assert vendor["name"] == "Sierra Pipe & Supply" and vendor["contactInfo"]["phone"] == "5595550111"
    assert vendor["address"]["city"] == "Fresno"


def test_create_vendor_validation_errors(st: Client, specs: Specs) -> None:
    missing = st.send("POST", "inventory", "/vendors", {"name": "Half A Vendor"})
    assert missing.status_code == 400
    specs.check("inventory", "/vendors", missing.json(), method="post", status="400")
    assert {"Active", "TaxRate", "Address", "IsTruckReplenishment", "RestrictedMobileCreation"} <= set(missing.json()["errors"])
    duplicate = st.send("POST", "inventory", "/vendors", _vendor_body("acme supply co"))
    assert duplicate.status_code == 400 and "already exists" in duplicate.json()["errors"]["Name"][0]
    near = st.send("POST", "inventory", "/vendors", _vendor_body("Acme Supply Co."))
    assert near.status_code == 200  # a near-duplicate is a different name to the vendor
    bad_option = st.send("POST", "inventory", "/vendors", _vendor_body("Option Co", deliveryOption="Pigeon"))
    assert "DeliveryOption" in bad_option.json()["errors"]
    malformed = requests.post(st.url("inventory", "/vendors"), data="{not json", timeout=5,
                              headers={**st.headers(), "Content-Type": "application/json"})
    assert malformed.status_code == 400 and "$" in malformed.json()["errors"]


def test_update_vendor_patches_fields_and_moves_modified(st: Client) -> None:
    vendor_id = st.all_ids("inventory", "/vendors")[0]
    before = st.get("inventory", f"/vendors/{vendor_id}").json()
    address = {"street": "1 New St", "unit": "B", "city": "Clovis", "state": "CA", "zip": "93611", "country": "USA"}
    response = st.send("PATCH", "inventory", f"/vendors/{vendor_id}", {"phone": "5590001111", "address": address,
                                                                       "memo": "Net 45"})
    assert response.status_code == 200 and response.json() == {"id": vendor_id}
    after = st.get("inventory", f"/vendors/{vendor_id}").json()
    assert after["contactInfo"]["phone"] == "5590001111" and after["address"] == address and after["memo"] == "Net 45"
    assert after["name"] == before["name"] and after["modifiedOn"] > before["modifiedOn"]
    assert st.send("PATCH", "inventory", "/vendors/9", {"memo": "x"}).status_code == 404
    partial = st.send("PATCH", "inventory", f"/vendors/{vendor_id}", {"address": {"street": "only"}})
    assert partial.status_code == 400 and "Address.City" in partial.json()["errors"]
    cleared = st.send("PATCH", "inventory", f"/vendors/{vendor_id}", {"name": None})  # a 400, never a 500
    assert cleared.status_code == 400 and "Name" in cleared.json()["errors"]


def test_payment_status_refuses_ids_that_are_not_numbers(st: Client) -> None:
    for ids, field in (([{"id": 1}], "PaymentIds[0]"), ([1, "x"], "PaymentIds[1]"), ("1", "PaymentIds")):
        response = st.send("POST", "accounting", "/payments/status", {"paymentIds": ids, "status": "Exported"})
        assert response.status_code == 400 and field in response.json()["errors"], (ids, response.text)


def test_external_data_lookup_finds_a_vendor_by_its_external_key(st: Client) -> None:
    guid = "5f2b1c3a-8d4e-4f6a-9b0c-1d2e3f405162"
    vendor_id = st.all_ids("inventory", "/vendors")[2]
    patch = {"externalData": {"applicationGuid": guid, "patchMode": "Merge",
                              "externalData": [{"key": "epicorVendorNum", "value": "ACME01"}]}}
    assert st.send("PATCH", "inventory", f"/vendors/{vendor_id}", patch).status_code == 200
    found = st.get("inventory", "/vendors", {"externalDataKey": "epicorVendorNum", "externalDataValues": "ACME01",
                                             "externalDataApplicationGuid": guid}).json()["data"]
    assert [v["id"] for v in found] == [vendor_id]
    assert found[0]["externalData"] == [{"key": "epicorVendorNum", "value": "ACME01"}]
    assert st.get("inventory", "/vendors", {"externalDataKey": "epicorVendorNum"}).status_code == 400


def _customer_body(name: str) -> dict[str, Any]:
    address = {"street": "55 W Bullard Ave", "unit": "", "city": "Fresno", "state": "CA", "zip": "93704", "country": "USA"}
    return {"name": name, "type": "Commercial", "address": address,
            "locations": [{"name": f"{name} - Main", "address": address,
                           "contacts": [{"type": "Phone", "value": "5595551234"}]}],
            "contacts": [{"type": "Email", "value": "office@example.test"}]}


def test_create_and_update_customer(st: Client, specs: Specs) -> None:
    created = st.send("POST", "crm", "/customers", _customer_body("Tower District Bakery"))
    assert created.status_code == 200
    body = created.json()
    specs.check("crm", "/customers", body, method="post")
    assert body["locations"][0]["contacts"][0]["value"] == "5595551234" and body["contacts"][0]["type"] == "Email"
    invalid = st.send("POST", "crm", "/customers", {"name": "No Locations", "address": _customer_body("x")["address"],
                                                    "locations": []})
    assert invalid.status_code == 400 and "Locations" in invalid.json()["errors"]
    partial = st.send("PATCH", "crm", f"/customers/{body['id']}", {"address": {"street": "1 Only St"}})
    assert partial.status_code == 400 and "Address.Latitude" in partial.json()["errors"]
    full = {"street": "1 Only St", "unit": "", "city": "Fresno", "state": "CA", "zip": "93704", "country": "USA",
            "latitude": 36.8, "longitude": -119.8}
    updated = st.send("PATCH", "crm", f"/customers/{body['id']}", {"address": full, "doNotMail": True})
    assert updated.status_code == 200
    specs.check("crm", "/customers/{id}", updated.json(), method="patch")
    assert updated.json()["address"]["street"] == "1 Only St" and updated.json()["doNotMail"] is True


def _open_invoice(st: Client) -> dict[str, Any]:
    for invoice in st.get("accounting", "/invoices", {"pageSize": 500}).json()["data"]:
        if invoice["balance"] == invoice["total"] and float(invoice["total"]) > 50:
            return invoice
    raise AssertionError("no open invoice seeded")


def test_create_payment_applies_it_to_the_invoice(st: Client, specs: Specs) -> None:
    invoice = _open_invoice(st)
    body = {"typeId": 2, "amount": 50.0, "checkNumber": "1042", "memo": "partial",
            "splits": [{"invoiceId": invoice["id"], "amount": 50.0}]}
    response = st.send("POST", "accounting", "/payments", body)
    assert response.status_code == 200
    created = response.json()
    specs.check("accounting", "/payments", created, method="post")
    assert created["transactionStatus"] == "Success" and created["customerId"] == invoice["customer"]["id"]
    after = st.get("accounting", "/invoices", {"ids": invoice["id"]}).json()["data"][0]
    assert float(after["balance"]) == pytest.approx(float(invoice["total"]) - 50)
    listed = st.get("accounting", "/payments", {"appliedToInvoiceIds": invoice["id"]}).json()["data"]
    assert [p["id"] for p in listed] == [created["id"]]
    assert listed[0]["appliedTo"][0]["appliedTo"] == invoice["id"] and listed[0]["appliedTo"][0]["appliedAmount"] == "50.00"
    resplit = st.send("PATCH", "accounting", f"/payments/{created['id']}",
                      {"typeId": 2, "splits": [{"invoiceId": invoice["id"], "amount": 20.0}]})
    assert resplit.status_code == 200
    specs.check("accounting", "/payments/{id}", resplit.json(), method="patch")
    again = st.get("accounting", "/invoices", {"ids": invoice["id"]}).json()["data"][0]
    assert float(again["balance"]) == pytest.approx(float(invoice["total"]) - 20)


@pytest.mark.parametrize("body, field", [
    ({"amount": 10.0}, "TypeId"),
    ({"typeId": 99, "amount": 10.0, "customerId": None}, "TypeId"),
    ({"typeId": 1, "amount": 10.0, "splits": [{"invoiceId": 1, "amount": 10.0}]}, "Splits[0].InvoiceId"),
    ({"typeId": 1, "amount": 5.0, "splits": [{"invoiceId": "OPEN", "amount": 10.0}]}, "Splits"),
])
def test_payment_validation_errors(st: Client, specs: Specs, body: dict[str, Any], field: str) -> None:
    for split in body.get("splits", []):
        if split["invoiceId"] == "OPEN":
            split["invoiceId"] = _open_invoice(st)["id"]
    response = st.send("POST", "accounting", "/payments", body)
    assert response.status_code == 400
    specs.check("accounting", "/payments", response.json(), method="post", status="400")
    assert field in response.json()["errors"]


def _po_with_status(st: Client, status: str) -> dict[str, Any]:
    return next(p for p in st.get("inventory", "/purchase-orders", {"pageSize": 500}).json()["data"] if p["status"] == status)


def test_create_update_and_cancel_purchase_orders(st: Client, specs: Specs) -> None:
    vendor = st.all_ids("inventory", "/vendors")[0]
    body = {"vendorId": vendor, "typeId": 1, "businessUnitId": 1, "inventoryLocationId": 11,
            "shipTo": {"description": "Main", "address": {"street": "2900 S Chestnut Ave", "unit": "", "city": "Fresno",
                                                           "state": "CA", "zip": "93725", "country": "USA"}},
            "impactsTechnicianPayroll": False, "date": "2026-01-05T00:00:00Z", "requiredOn": "2026-01-08T00:00:00Z",
            "tax": 8.25, "shipping": 15.0,
            "items": [{"skuId": 8801, "description": "3/8 line set", "vendorPartNumber": "CU38", "quantity": 4, "cost": 38.0},
                      {"skuId": 8805, "description": "Filters", "vendorPartNumber": "F1625", "quantity": 12, "cost": 9.8}]}
    created = st.send("POST", "inventory", "/purchase-orders", body)
    assert created.status_code == 200
    po = st.get("inventory", f"/purchase-orders/{created.json()['id']}").json()
    specs.check("inventory", "/purchase-orders/{id}", po)
    assert po["status"] == "Pending" and po["total"] == pytest.approx(4 * 38 + 12 * 9.8 + 8.25 + 15)
    item = po["items"][0]
    patch = {"memo": "Rush", "items": [{"id": item["id"], "skuId": item["skuId"], "description": item["description"],
                                         "vendorPartNumber": item["vendorPartNumber"], "quantity": 10, "cost": 38.0}]}
    assert st.send("PATCH", "inventory", f"/purchase-orders/{po['id']}", patch).json() == {"id": po["id"]}
    patched = st.get("inventory", f"/purchase-orders/{po['id']}").json()
    assert patched["summary"] == "Rush" and patched["items"][0]["quantity"] == 10
    assert patched["total"] == pytest.approx(10 * 38 + 12 * 9.8 + 8.25 + 15)
    unknown_vendor = st.send("PATCH", "inventory", f"/purchase-orders/{po['id']}", {"vendorId": 999_999})
    assert unknown_vendor.status_code == 400 and unknown_vendor.json()["errors"] == {"VendorId": ["Vendor not found."]}
    unknown_item = st.send("PATCH", "inventory", f"/purchase-orders/{po['id']}",
                           {"items": [{**patch["items"][0], "id": 123}]})
    assert "Items[0].Id" in unknown_item.json()["errors"]
    received = _po_with_status(st, "Received")
    locked = st.send("PATCH", "inventory", f"/purchase-orders/{received['id']}", {"memo": "too late"})
    assert locked.status_code == 400 and "Received" in locked.json()["errors"]["Status"][0]
    specs.check("inventory", "/purchase-orders/{id}", locked.json(), method="patch", status="400")
    cancel = st.send("PATCH", "inventory", f"/purchase-orders/{po['id']}/cancellation", {"canceledReason": "Duplicate"})
    assert cancel.status_code == 200
    assert st.get("inventory", f"/purchase-orders/{po['id']}").json()["status"] == "Canceled"


def test_adjustments_patch_only_external_data(st: Client) -> None:
    adjustment = st.all_ids("inventory", "/adjustments")[0]
    guid = "0b7c8d9e-1f20-4a31-8b42-c53d64e75f86"
    ok = st.send("PATCH", "inventory", f"/adjustments/{adjustment}",
                 {"externalData": {"applicationGuid": guid, "externalData": [{"key": "sysproJournal", "value": "J-77"}]}})
    assert ok.status_code == 200 and ok.json() == {"id": adjustment}
    found = st.get("inventory", "/adjustments", {"externalDataKey": "sysproJournal", "externalDataValues": "J-77"}).json()
    assert [a["id"] for a in found["data"]] == [adjustment]
    refused = st.send("PATCH", "inventory", f"/adjustments/{adjustment}", {"memo": "nope"})
    assert refused.status_code == 400


@pytest.mark.parametrize("entity, module, path, make_body, id_field", [
    ("inventory_bills", "accounting", "/inventory-bills", lambda ids: {"inventoryBillIds": ids}, "inventoryBillId"),
    ("ap_bills", "accounting", "/ap-bills", lambda ids: {"billIds": ids}, "billId"),
    ("invoices", "accounting", "/invoices", lambda ids: [{"invoiceId": i, "externalId": f"EXT-{i}"} for i in ids], "invoiceId"),
    ("ap_payments", "accounting", "/ap-payments", lambda ids: [{"apPaymentId": i} for i in ids], "apPaymentId"),
])
def test_mark_as_exported(st: Client, specs: Specs, entity: str, module: str, path: str, make_body: Any,
                          id_field: str) -> None:
    target = next(r.view["id"] for r in st.sandbox.tables[entity].rows.values() if r.view["syncStatus"] != "Exported")
    response = st.send("POST", module, f"{path}/markasexported", make_body([target, 1]))
    assert response.status_code == 200
    specs.check(module, f"{path}/markasexported", response.json(), method="post")
    verdicts = {v[id_field]: v for v in response.json()}
    assert verdicts[target]["success"] is True and verdicts[1]["success"] is False and verdicts[1]["errorMessage"]
    assert st.sandbox.tables[entity].rows[target].view["syncStatus"] == "Exported"


@pytest.mark.parametrize("entity, path, make_body, export", [
    ("inventory_bills", "/inventory-bills", lambda ids: {"inventoryBillIds": ids}, "/export/inventory-bills"),
    ("ap_bills", "/ap-bills", lambda ids: {"billIds": ids}, None),
    ("invoices", "/invoices", lambda ids: [{"invoiceId": i} for i in ids], "/export/invoices"),
    ("ap_payments", "/ap-payments", lambda ids: [{"apPaymentId": i} for i in ids], None),
])
def test_mark_as_exported_changes_the_export_status_only(st: Client, receiver: "Receiver", entity: str, path: str,
                                                         make_body: Any, export: str | None) -> None:
    """Round 2 [C1]: markasexported is how an integration tells ServiceTitan users a document reached
    the ERP; it changes the export status only, not the document: the rest of the record, its
    modifiedOn and the export feeds stay as they were, and no webhook announces a change."""
    _subscribe(st, receiver.url, events=["*"])
    before = {row["id"]: row for row in st.sandbox.get_entities(entity)}
    target = next(rid for rid, row in before.items() if row["syncStatus"] != "Exported")
    cursor = _drain_export(st, "accounting", export, None)[1] if export else None
    answer = st.send("POST", "accounting", f"{path}/markasexported", make_body([target])).json()
    assert [verdict["success"] for verdict in answer] == [True]
    after = {row["id"]: row for row in st.sandbox.get_entities(entity)}
    assert after[target] == {**before[target], "syncStatus": "Exported"}
    assert {k: v for k, v in after.items() if k != target} == {k: v for k, v in before.items() if k != target}
    if export:
        assert st.get("accounting", export, {"from": cursor}).json()["data"] == []
    assert _flush(st)["idle"] is True and receiver.calls == []


def test_export_feeds_take_no_page_size(st: Client) -> None:
    """Round 2: export feeds define only `from` and `includeRecentChanges`; a pageSize sent there is
    not a parameter of the feed, so it is ignored (never honoured, never refused)."""
    st.sandbox.export_page_size = 7
    try:
        for params in ({}, {"pageSize": 3}, {"pageSize": 5000}, {"pageSize": "ten"}, {"includeRecentChanges": "true"}):
            body = st.get("crm", "/export/customers", params).json()
            assert len(body["data"]) == 7 and body["hasMore"] is True, params
        assert st.get("crm", "/export/customers", {"includeRecentChanges": "maybe"}).status_code == 400
    finally:
        st.sandbox.export_page_size = 500


def test_gl_account_number_conflict_answers_409(st: Client, specs: Specs) -> None:
    created = st.send("POST", "accounting", "/gl-accounts", {"name": "Permits", "number": "6600", "type": "Expense"})
    assert created.status_code == 201
    specs.check("accounting", "/gl-accounts", created.json(), method="post", status="201")
    clash = st.send("POST", "accounting", "/gl-accounts", {"name": "Permits again", "number": "6600"})
    assert clash.status_code == 409
    specs.check("accounting", "/gl-accounts", clash.json(), method="post", status="409")


def test_unknown_paths_answer_an_rfc7807_404(st: Client, specs: Specs) -> None:
    response = requests.get(f"{st.base}/nothing/here", timeout=5)
    assert response.status_code == 404
    specs.check_problem(response.json())


# ---- rate limit and faults --------------------------------------------------------------------

def test_rate_limit_answers_429_with_retry_after_and_a_problem_body(st: Client, specs: Specs) -> None:
    st.sandbox.rate.limit = 5
    headers = st.headers()
    statuses = []
    limited = None
    for _ in range(12):
        response = st.get("settings", "/business-units", {"pageSize": 1}, headers=headers)
        statuses.append(response.status_code)
        if response.status_code == 429:
            limited = response
    assert statuses[:5] == [200] * 5 and 429 in statuses
    assert limited is not None and int(limited.headers["Retry-After"]) >= 1
    specs.check_problem(limited.json())
    assert limited.json()["status"] == 429
    assert st.stats()["rate_limited"] >= 1
    assert st.token().status_code == 200  # the auth host is not behind the API limit
    time.sleep(1.05)
    assert st.get("settings", "/business-units", {"pageSize": 1}, headers=headers).status_code == 200


def test_default_rate_limit_is_60_per_second_per_app_and_tenant(st: Client) -> None:
    assert st.sandbox.rate.limit == 60
    limited = ServiceTitanSandbox(SandboxOptions(records=1, rate_limit=7))
    assert limited.rate.limit == 7
    assert ServiceTitanSandbox(SandboxOptions(records=1, rate_limit=0)).rate.limit is None


def test_burst_429_fault_then_success(st: Client) -> None:
    st.headers()  # fetch the token first: faults apply to the auth host too
    st.faults(burst_429=2, retry_after=3)
    first = st.get("crm", "/customers")
    second = st.get("crm", "/customers")
    assert (first.status_code, second.status_code) == (429, 429)
    assert first.headers["Retry-After"] == "3"
    assert st.get("crm", "/customers").status_code == 200


def test_fail_next_and_error_rate_faults(st: Client, specs: Specs) -> None:
    st.headers()
    st.faults(fail_next=1, error_status=502)
    failed = st.get("crm", "/customers")
    assert failed.status_code == 502
    specs.check_problem(failed.json())
    assert st.get("crm", "/customers").status_code == 200
    st.faults(error_rate=1.0, error_status=503, path_contains="/crm/")
    assert st.get("crm", "/customers").status_code == 503
    assert st.get("inventory", "/vendors").status_code == 200


def test_latency_fault_slows_vendor_calls(st: Client) -> None:
    st.faults(latency_ms=200)
    started = time.perf_counter()
    assert st.get("settings", "/business-units").status_code == 200
    assert time.perf_counter() - started >= 0.2


# ---- control API --------------------------------------------------------------------------------

def test_info_has_exactly_the_documented_shape(st: Client, running: Any) -> None:
    assert set(st.info) == {"vendor", "api_base", "token_url", "credentials"}
    assert st.info["vendor"] == "servicetitan"
    assert st.info["api_base"] == running.url
    assert st.info["token_url"] == f"{running.url}/connect/token"
    assert set(st.info["credentials"]) == {"client_id", "client_secret", "app_key", "tenant"}
    assert isinstance(st.info["credentials"]["tenant"], int)


def test_stats_count_requests_by_endpoint_and_status(st: Client) -> None:
    requests.post(f"{st.control}/stats/reset", timeout=5)
    st.get("inventory", "/purchase-orders")
    st.get("inventory", "/purchase-orders/1")
    stats = st.stats()
    assert stats["by_endpoint"]["GET /inventory/v2/tenant/<int:tenant>/purchase-orders"] == {"200": 1}
    assert stats["by_endpoint"]["GET /inventory/v2/tenant/<int:tenant>/purchase-orders/<int:rid>"] == {"404": 1}


def test_reset_restores_the_deterministic_seed(st: Client) -> None:
    first = st.get("inventory", "/vendors", {"pageSize": 3}).json()["data"]
    st.put_entity("vendors", {"name": "Temporary Vendor"})
    requests.post(f"{st.control}/reset", json={}, timeout=10).raise_for_status()
    assert st.get("inventory", "/vendors").status_code == 401  # reset revokes every token
    st._token = None
    assert "Temporary Vendor" not in {v["name"] for v in st.sandbox.get_entities("vendors")}
    assert [v["name"] for v in st.get("inventory", "/vendors", {"pageSize": 3}).json()["data"]] == [v["name"] for v in first]
    assert len(st.sandbox.get_entities("customers")) == SEED_RECORDS


def test_entities_control_endpoints(st: Client) -> None:
    listed = requests.get(f"{st.control}/entities/vendors", timeout=5).json()
    assert sorted(v["id"] for v in listed) == st.all_ids("inventory", "/vendors", {"active": "Any"})
    created = st.put_entity("purchase_orders", {"summary": "From control", "tax": 1.5})
    assert st.get("inventory", f"/purchase-orders/{created['id']}").json()["summary"] == "From control"
    changed = st.put_entity("purchase_orders", {"id": created["id"], "summary": "Changed"})
    assert changed["modifiedOn"] >= created["modifiedOn"] and changed["summary"] == "Changed"
    assert requests.get(f"{st.control}/entities/widgets", timeout=5).status_code == 404
    unknown_field = requests.post(f"{st.control}/entities/vendors", json={"colour": "red"}, timeout=5)
    assert unknown_field.status_code == 400


def test_receiving_a_po_creates_its_inventory_bill(st: Client, specs: Specs) -> None:
    po = _po_with_status(st, "Sent")
    st.put_entity("purchase_orders", {"id": po["id"], "status": "Received"})
    bills = st.get("accounting", "/inventory-bills/paginated", {"pageSize": 5000}).json()["data"]
    bill = next(b for b in bills if b["purchaseOrderId"] == po["id"])
    vendor = st.get("inventory", f"/vendors/{po['vendorId']}").json()
    assert bill["vendor"] == {"id": vendor["id"], "name": vendor["name"]}
    assert len(bill["items"]) == len(po["items"])
    assert float(bill["billAmount"]) == pytest.approx(po["total"])
    assert all(item["generalLedgerAccount"]["number"] for item in bill["items"])


# ---- webhooks -----------------------------------------------------------------------------------

class Receiver:
    """A webhook receiver on a free port that answers from a list of statuses (then 200)."""

    def __init__(self, statuses: list[int] | None = None, delay: float = 0.0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.statuses = list(statuses or [])
        self.delay = delay
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    receiver.calls.append({"headers": dict(self.headers), "body": body, "at": time.monotonic()})
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(call["body"]) for call in self.calls]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.close()


HMAC_KEY = "k" * 32


def _subscribe(st: Client, url: str, **extra: Any) -> str:
    response = requests.post(f"{st.control}/webhooks", json={"url": url, "hmac_key": HMAC_KEY, **extra}, timeout=5)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _flush(st: Client, timeout: float = 10, retry_now: bool = False) -> dict[str, Any]:
    return requests.post(f"{st.control}/webhooks/flush", json={"timeout": timeout, "retry_now": retry_now},
                         timeout=timeout + 5).json()


def test_webhook_is_signed_hex_over_the_raw_body(st: Client, receiver: Receiver) -> None:
    _subscribe(st, receiver.url, events=["vendor.created"])
    vendor_id = st.send("POST", "inventory", "/vendors", _vendor_body("Webhook Supply")).json()["id"]
    assert _flush(st)["idle"] is True
    assert len(receiver.calls) == 1
    call = receiver.calls[0]
    assert call["headers"]["Content-Type"] == "application/json"
    expected = hmac.new(HMAC_KEY.encode(), call["body"], hashlib.sha256).hexdigest()
    assert call["headers"]["X-ServiceTitan-Signature"] == expected == sign_webhook(HMAC_KEY, call["body"])
    event = json.loads(call["body"])
    assert set(event) == {"eventId", "eventType", "tenantId", "createdOn", "data"}
    assert event["eventType"] == "vendor.created" and event["tenantId"] == st.tenant
    assert event["data"]["id"] == vendor_id and event["data"]["name"] == "Webhook Supply"
    log = requests.get(f"{st.control}/webhooks", timeout=5).json()
    assert log["deliveries"][0]["state"] == "delivered" and log["deliveries"][0]["attempts"][0]["status"] == 200
    assert st.stats()["webhooks_sent"] == 1


def test_webhook_base64_encoding_and_custom_header(st: Client, receiver: Receiver) -> None:
    _subscribe(st, receiver.url, events=["customer.*"], header="X-Custom-Sig", encoding="base64")
    st.put_entity("customers", {"name": "Signed Customer"})
    _flush(st)
    call = receiver.calls[0]
    digest = hmac.new(HMAC_KEY.encode(), call["body"], hashlib.sha256).digest()
    assert call["headers"]["X-Custom-Sig"] == base64.b64encode(digest).decode()
    assert "X-ServiceTitan-Signature" not in call["headers"]
    assert json.loads(call["body"])["eventType"] == "customer.created"


def test_webhooks_for_every_kind_of_change(st: Client, receiver: Receiver) -> None:
    _subscribe(st, receiver.url, events=["*"])
    po = _po_with_status(st, "Sent")
    st.put_entity("purchase_orders", {"id": po["id"], "status": "Received"})  # updated + bill created
    st.put_entity("jobs", {"summary": "No heat"})
    invoice = _open_invoice(st)
    st.send("POST", "accounting", "/payments", {"typeId": 1, "splits": [{"invoiceId": invoice["id"], "amount": 10.0}]})
    requests.post(f"{st.control}/tick/vendors", json={"count": 1}, timeout=5).raise_for_status()
    _flush(st)
    types = [e["eventType"] for e in receiver.events()]
    for expected in ("purchase-order.updated", "inventory-bill.created", "job.created", "payment.created",
                     "invoice.updated", "vendor.updated"):
        assert expected in types
    bill_event = next(e for e in receiver.events() if e["eventType"] == "inventory-bill.created")
    assert bill_event["data"]["purchaseOrderId"] == po["id"]
    assert len({e["eventId"] for e in receiver.events()}) == len(receiver.calls)


def test_webhook_subscription_filters_event_types_and_can_be_deleted(st: Client, receiver: Receiver) -> None:
    sub = _subscribe(st, receiver.url, events=["invoice.created"])
    st.put_entity("vendors", {"name": "Quiet Vendor"})
    _flush(st)
    assert receiver.calls == []
    assert requests.delete(f"{st.control}/webhooks/{sub}", timeout=5).status_code == 200
    st.put_entity("invoices", {"summary": "unsubscribed"})
    _flush(st)
    assert receiver.calls == []
    assert requests.delete(f"{st.control}/webhooks/{sub}", timeout=5).status_code == 404


def test_webhook_retries_on_the_vendor_schedule_with_the_same_event(st: Client) -> None:
    hook = Receiver(statuses=[500, 503])
    try:
        _subscribe(st, hook.url, events=["vendor.*"])
        st.put_entity("vendors", {"name": "Flaky Receiver Supply"})
        assert _flush(st)["idle"] is True
        assert len(hook.calls) == 3
        assert len({call["body"] for call in hook.calls}) == 1  # identical body, so identical eventId
        gaps = [b["at"] - a["at"] for a, b in zip(hook.calls, hook.calls[1:])]
        assert gaps[0] >= 10 * 0.01 * 0.9 and gaps[1] >= 30 * 0.01 * 0.9  # 10 s then 30 s, scaled by 0.01
        delivery = requests.get(f"{st.control}/webhooks", timeout=5).json()["deliveries"][0]
        assert [a["status"] for a in delivery["attempts"]] == [500, 503, 200] and delivery["state"] == "delivered"
        assert st.stats()["webhooks_failed"] == 2
    finally:
        hook.close()


def test_webhook_gives_up_after_the_last_retry(st: Client) -> None:
    st.sandbox.webhook_retry_scale = 0.001
    hook = Receiver(statuses=[500] * 10)
    try:
        _subscribe(st, hook.url)
        st.put_entity("vendors", {"name": "Always Down Supply"})
        assert _flush(st)["idle"] is True
        assert len(hook.calls) == 5  # the first attempt and retries after 10, 30, 60 and 300 s
        delivery = requests.get(f"{st.control}/webhooks", timeout=5).json()["deliveries"][0]
        assert delivery["state"] == "failed" and st.stats()["webhooks_given_up"] == 1
    finally:
        hook.close()


def test_webhook_connection_errors_are_retried(st: Client) -> None:
    st.sandbox.webhook_retry_scale = 0.001
    _subscribe(st, "http://127.0.0.1:9/nobody-listens")
    st.put_entity("vendors", {"name": "Unreachable Receiver Supply"})
    assert _flush(st)["idle"] is True
    delivery = requests.get(f"{st.control}/webhooks", timeout=5).json()["deliveries"][0]
    assert len(delivery["attempts"]) == 5 and all(a["error"] and a["status"] is None for a in delivery["attempts"])


def test_webhook_duplicate_fault_delivers_the_same_event_twice(st: Client, receiver: Receiver) -> None:
    st.faults(webhook_duplicate_rate=1.0)
    _subscribe(st, receiver.url)
    st.put_entity("vendors", {"name": "Twice Supply"})
    _flush(st)
    events = receiver.events()
    assert len(events) == 2 and events[0]["eventId"] == events[1]["eventId"] and events[0] == events[1]
    assert st.stats()["webhooks_duplicated"] == 1


def test_webhook_drop_fault_never_delivers(st: Client, receiver: Receiver) -> None:
    st.faults(webhook_drop_rate=1.0)
    _subscribe(st, receiver.url)
    st.put_entity("vendors", {"name": "Lost Supply"})
    _flush(st)
    assert receiver.calls == []
    assert st.stats()["webhooks_dropped"] == 1
    assert requests.get(f"{st.control}/webhooks", timeout=5).json()["deliveries"][0]["state"] == "dropped"


def test_webhook_delivery_never_blocks_the_api_call(st: Client) -> None:
    slow = Receiver(delay=1.0)
    try:
        _subscribe(st, slow.url)
        started = time.perf_counter()
        assert st.send("POST", "inventory", "/vendors", _vendor_body("Patient Supply")).status_code == 200
        assert time.perf_counter() - started < 0.5
        assert _flush(st)["idle"] is True and len(slow.calls) == 1
    finally:
        slow.close()


def test_webhook_subscription_validation(st: Client) -> None:
    assert requests.post(f"{st.control}/webhooks", json={"url": "ftp://x"}, timeout=5).status_code == 400
    assert requests.post(f"{st.control}/webhooks", json={"url": "http://x", "encoding": "rot13"},
                         timeout=5).status_code == 400


def test_purchasing_seed_scope_makes_one_bill_per_received_order_and_nothing_else() -> None:
    from sandboxes import SandboxOptions, create_sandbox

    sandbox = create_sandbox("servicetitan", SandboxOptions(seed=4, records=60), seed_scope="purchasing")
    orders = sandbox.get_entities("purchase_orders")
    bills = sandbox.get_entities("inventory_bills")
    assert len(orders) == 60 and {o["status"] for o in orders} == {"Received"}
    assert sorted(b["purchaseOrderId"] for b in bills) == sorted(o["id"] for o in orders)
    assert sandbox.get_entities("customers") == [] and sandbox.get_entities("invoices") == []
