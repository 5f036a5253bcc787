"""ServiceNow connector: exact request shapes (`responses`), then contract tests against the
sandbox over real HTTP (paging, token expiry, 429s, 5xx, validation errors, every write)."""

from __future__ import annotations

import json
import threading
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import responses
from pydantic import ValidationError

from connectors.servicenow import (
    CostCenter,
    PurchaseOrder,
    ServiceNowConnector,
    Supplier,
    WriteResult,
    sn_value,
)
from mlconnector.http import AuthError, FatalError, NotFoundError
from mlconnector.http.runtime import build_runtime
from sandboxes.base import RunningSandbox, SandboxOptions, start_sandbox
from sandboxes.servicenow import ServiceNowSandbox

INSTANCE = "https://acme.service-now.com"
TOKEN_URL = f"{INSTANCE}/oauth_token.do"
CREDS = {"client_id": "3f1c0a9e8b7d4c2a9e8b7d4c2a9e8b7d", "client_secret": "Zq8!client-secret-value",
         "username": "ml.integration", "password": "Pw-very-secret-1"}
FAST = {"retry": {"base": 0.05, "max_wait": 2}}
RECORDS = 40
CUSTOM = ("u_correlation_id",)  # these tests exercise the customer-added coalesce column
NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)


def make(config: dict[str, Any] | None = None, creds: dict[str, str] | None = None) -> ServiceNowConnector:
    return ServiceNowConnector.create({"instance_url": INSTANCE, **FAST, **(config or {})}, creds or CREDS, build_runtime(""))


def token_body(access: str = "access-1", refresh: str | None = "refresh-1") -> dict[str, Any]:
    body: dict[str, Any] = {"access_token": access, "scope": "useraccount", "token_type": "Bearer", "expires_in": 1800}
    if refresh:
        body["refresh_token"] = refresh
    return body


def form(call: Any) -> dict[str, str]:
    return dict(parse_qsl(call.request.body))


def query(call: Any) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(call.request.url).query))


def row(sys_id: str, updated: str = "2025-05-02 10:00:00", **fields: str) -> dict[str, str]:
    return {"sys_id": sys_id, "sys_created_on": "2025-05-01 09:00:00", "sys_updated_on": updated,
            "sys_mod_count": "1", **fields}


# ---- request shapes (responses) ------------------------------------------------------------------------


@responses.activate
def test_password_grant_then_paged_change_query() -> None:
    responses.post(TOKEN_URL, json=token_body())
    table_url = f"{INSTANCE}/api/now/table/core_company"
    responses.get(table_url, json={"result": [row("a" * 32, name="Acme", vendor="true"), row("b" * 32, name="Bolt")]},
                  headers={"X-Total-Count": "3"})
    responses.get(table_url, json={"result": [row("c" * 32, name="Cardinal")]}, headers={"X-Total-Count": "3"})
    connector = make({"supplier_table": "core_company", "supplier_filter": "vendor=true", "page_size": 2})

    records = list(connector.iter_changed("suppliers", datetime(2025, 5, 1, 2, 30, 15, 999000), NOW))

    token_call, first, second = responses.calls
    assert form(token_call) == {"grant_type": "password", "username": CREDS["username"], "password": CREDS["password"],
                                "client_id": CREDS["client_id"], "client_secret": CREDS["client_secret"]}
    assert token_call.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert query(first) == {
        "sysparm_display_value": "false", "sysparm_exclude_reference_link": "true",
        "sysparm_query": "vendor=true^sys_updated_on>=2025-05-01 02:30:15^sys_updated_on<2025-06-01 00:00:00"
                         "^ORDERBYsys_updated_on^ORDERBYsys_id",
        "sysparm_limit": "2", "sysparm_offset": "0",
    }
    assert query(second)["sysparm_offset"] == "2"
    assert first.request.headers["Authorization"] == "Bearer access-1"
    assert first.request.headers["Accept"] == "application/json"
    assert [r.name for r in records] == ["Acme", "Bolt", "Cardinal"]
    assert isinstance(records[0], Supplier) and records[0].vendor == "true"  # kept as an extra column
    assert records[0].sys_updated_on == datetime(2025, 5, 2, 10, 0, tzinfo=timezone.utc)
    assert connector.call_count == 3


@responses.activate
def test_since_none_has_no_lower_bound_and_aware_times_are_sent_in_utc() -> None:
    responses.post(TOKEN_URL, json=token_body())
    responses.get(f"{INSTANCE}/api/now/v2/table/cmn_cost_center", json={"result": []}, headers={"X-Total-Count": "0"})
    connector = make({"api_version": "v2"})
    until = datetime(2025, 6, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))
    assert list(connector.iter_changed("cost_centers", None, until)) == []
    assert query(responses.calls[1])["sysparm_query"] == \
        "sys_updated_on<2025-06-01 00:00:00^ORDERBYsys_updated_on^ORDERBYsys_id"


@responses.activate
def test_a_refused_token_is_refreshed_with_the_refresh_token_once() -> None:
    responses.post(TOKEN_URL, json=token_body("access-1", "refresh-1"))
    responses.post(TOKEN_URL, json=token_body("access-2", None))
    url = f"{INSTANCE}/api/now/table/sn_fin_supplier"
    responses.get(url, status=401, json={"error": {"message": "User is not authenticated",
                                                   "detail": "Required to provide Auth information"}, "status": "failure"})
    responses.get(url, json={"result": [row("a" * 32, name="Acme")]}, headers={"X-Total-Count": "1"})
    connector = make()
    assert [r.name for r in connector.iter_changed("suppliers", None, NOW)] == ["Acme"]
    refresh_call = responses.calls[2]
    assert form(refresh_call) == {"grant_type": "refresh_token", "refresh_token": "refresh-1",
                                  "client_id": CREDS["client_id"], "client_secret": CREDS["client_secret"]}
    assert responses.calls[3].request.headers["Authorization"] == "Bearer access-2"
    cached = connector.runtime.token_cache.peek(connector.provider)  # type: ignore[arg-type]
    assert cached is not None and cached.refresh_token == "refresh-1"  # kept when the grant sends none


@responses.activate
def test_an_expired_refresh_token_falls_back_to_the_password_grant() -> None:
    responses.post(TOKEN_URL, json=token_body("access-1", "refresh-1"))
    responses.post(TOKEN_URL, status=401, json={"error_description": "access_denied", "error": "server_error"})
    responses.post(TOKEN_URL, json=token_body("access-3", "refresh-3"))
    url = f"{INSTANCE}/api/now/table/sn_fin_supplier"
    responses.get(url, status=401, json={"error": {"message": "User is not authenticated", "detail": None}})
    responses.get(url, json={"result": []}, headers={"X-Total-Count": "0"})
    assert list(make().iter_changed("suppliers", None, NOW)) == []
    grants = [form(c)["grant_type"] for c in responses.calls if c.request.url == TOKEN_URL]
    assert grants == ["password", "refresh_token", "password"]


@responses.activate
def test_basic_auth_sends_the_header_and_asks_for_no_token() -> None:
    responses.get(f"{INSTANCE}/api/now/table/sn_fin_supplier", json={"result": []}, headers={"X-Total-Count": "0"})
    connector = make({"auth": "basic"}, {"username": "ml.integration", "password": "Pw-very-secret-1"})
    list(connector.iter_changed("suppliers", None, NOW))
    assert len(responses.calls) == 1
    assert responses.calls[0].request.headers["Authorization"].startswith("Basic ")


@responses.activate
def test_rows_that_leave_the_window_mid_poll_do_not_cause_a_skip() -> None:
    """Five rows, pages of two; after page one, row b changes and leaves the window."""
    responses.post(TOKEN_URL, json=token_body())
    state = {"rows": [row(c * 32, name=c) for c in "abcde"]}

    def page(request: Any) -> tuple[int, dict[str, str], str]:
        params = dict(parse_qsl(urlsplit(request.url).query))
        offset, limit = int(params["sysparm_offset"]), int(params["sysparm_limit"])
        rows = state["rows"]
        body = {"result": rows[offset:offset + limit]}
        if offset == 0:
            state["rows"] = [r for r in rows if r["name"] != "b"]
        return 200, {"X-Total-Count": str(len(rows))}, json.dumps(body)

    responses.add_callback(responses.GET, f"{INSTANCE}/api/now/table/sn_fin_supplier", callback=page)
    names = [r.name for r in make({"page_size": 2}).iter_changed("suppliers", None, NOW)]
    offsets = [query(c)["sysparm_offset"] for c in responses.calls[1:]]
    assert names == ["a", "b", "c", "d", "e"]  # c would be lost with plain offset arithmetic
    assert offsets == ["0", "2", "1", "3"]


@responses.activate
def test_v1_empty_list_404_is_an_empty_result() -> None:
    responses.post(TOKEN_URL, json=token_body())
    responses.get(f"{INSTANCE}/api/now/v1/table/sn_fin_supplier", status=404,
                  json={"error": {"message": "No Record found", "detail": "Record doesn't exist or ACL restricts the record retrieval"},
                        "status": "failure"})
    assert list(make({"api_version": "v1"}).iter_changed("suppliers", None, NOW)) == []


@responses.activate
def test_import_set_write_sends_flat_strings() -> None:
    responses.post(TOKEN_URL, json=token_body())
    responses.post(f"{INSTANCE}/api/now/import/sn_fcms_intg_imp_supplier", status=201, json={
        "import_set": "ISET0010001", "staging_table": "sn_fcms_intg_imp_supplier",
        "result": [{"transform_map": "Supplier Inbound", "table": "sn_fin_supplier", "display_name": "name",
                    "display_value": "Acme", "record_link": "x", "status": "inserted", "sys_id": "f" * 32}]})
    result = make().upsert_supplier({"name": "Acme", "active": True, "zip": 53202, "credit": Decimal("10.50"),
                                     "since": date(2025, 1, 2), "phone": None}, "EPIC-V-1")
    call = responses.calls[1]
    assert json.loads(call.request.body) == {"name": "Acme", "active": "true", "zip": "53202", "credit": "10.50",
                                             "since": "2025-01-02", "phone": "", "u_correlation_id": "EPIC-V-1"}
    assert call.request.headers["Content-Type"] == "application/json"
    assert result == WriteResult(table="sn_fin_supplier", sys_id="f" * 32, action="inserted", via="import_set",
                                 correlation_id="EPIC-V-1", import_set="ISET0010001")


@responses.activate
def test_table_api_upsert_looks_up_by_escaped_correlation_then_patches_only_changes() -> None:
    responses.post(TOKEN_URL, json=token_body())
    table_url = f"{INSTANCE}/api/now/table/core_company"
    responses.get(table_url, json={"result": [row("a" * 32, name="Acme", city="Chicago", u_correlation_id="EPIC^X")]})
    responses.patch(f"{table_url}/{'a' * 32}", json={"result": row("a" * 32, name="Acme", city="Milwaukee")})
    connector = make({"use_import_set": False, "supplier_table": "core_company", "supplier_defaults": {"vendor": "true"}})
    result = connector.upsert_supplier({"name": "Acme", "city": "Milwaukee", "u_unknown": "x"}, "EPIC^X")
    lookup, patch = responses.calls[1], responses.calls[2]
    assert query(lookup) == {"sysparm_display_value": "false", "sysparm_exclude_reference_link": "true",
                             "sysparm_query": "u_correlation_id=EPIC^^X^ORDERBYsys_created_on",
                             "sysparm_limit": "1", "sysparm_no_count": "true"}
    assert patch.request.method == "PATCH" and json.loads(patch.request.body) == {"city": "Milwaukee"}
    assert result.action == "updated" and result.via == "table_api" and result.sys_id == "a" * 32


@responses.activate
def test_table_api_upsert_creates_with_defaults_and_skips_a_no_op() -> None:
    responses.post(TOKEN_URL, json=token_body())
    table_url = f"{INSTANCE}/api/now/table/core_company"
    responses.get(table_url, json={"result": []})
    responses.post(table_url, status=201, json={"result": row("b" * 32, name="Bolt", vendor="true", u_correlation_id="EPIC-2")})
    responses.get(table_url, json={"result": [row("b" * 32, name="Bolt", vendor="true", u_correlation_id="EPIC-2")]})
    connector = make({"use_import_set": False, "supplier_table": "core_company", "supplier_defaults": {"vendor": "true"}})
    created = connector.upsert_supplier({"name": "Bolt"}, "EPIC-2")
    again = connector.upsert_supplier({"name": "Bolt"}, "EPIC-2")
    assert json.loads(responses.calls[2].request.body) == {"vendor": "true", "name": "Bolt", "u_correlation_id": "EPIC-2"}
    assert created.action == "inserted" and again.action == "unchanged"
    assert [c.request.method for c in responses.calls] == ["POST", "GET", "POST", "GET"]


@responses.activate
def test_an_ambiguous_insert_failure_is_looked_up_before_posting_again() -> None:
    responses.post(TOKEN_URL, json=token_body())
    table_url = f"{INSTANCE}/api/now/table/sn_fin_supplier"
    responses.get(table_url, json={"result": []})
    responses.post(table_url, status=503, json={"error": {"message": "Service Unavailable", "detail": None}})
    responses.get(table_url, json={"result": [row("c" * 32, name="Cardinal", u_correlation_id="EPIC-3")]})
    result = make({"use_import_set": False}).upsert_supplier({"name": "Cardinal"}, "EPIC-3")
    assert result.sys_id == "c" * 32 and result.action == "inserted"
    assert [c.request.method for c in responses.calls[1:]] == ["GET", "POST", "GET"]  # one POST only


@responses.activate
def test_find_cost_center_query() -> None:
    responses.post(TOKEN_URL, json=token_body())
    responses.get(f"{INSTANCE}/api/now/table/cmn_cost_center",
                  json={"result": [row("d" * 32, name="Ops", account_number="6100-01", valid_to="")]})
    found = make().find_cost_center("6100-01")
    assert query(responses.calls[1])["sysparm_query"] == \
        f"account_number=6100-01^valid_toISEMPTY^ORvalid_to>={date.today().isoformat()}^ORDERBYsys_created_on"
    assert isinstance(found, CostCenter) and found.account_number == "6100-01" and found.valid_to is None
    with pytest.raises(ValueError):
        make().find_cost_center("6100-01", name="Ops")


@responses.activate
def test_vendor_errors_map_to_the_taxonomy_with_the_vendor_message() -> None:
    responses.post(TOKEN_URL, json=token_body())
    url = f"{INSTANCE}/api/now/table/sn_fin_supplier"
    responses.get(f"{url}/{'e' * 32}", status=404, json={
        "error": {"message": "No Record found", "detail": "Record doesn't exist or ACL restricts the record retrieval"},
        "status": "failure"})
    responses.get(f"{url}/{'f' * 32}", status=403, json={
        "error": {"message": "User Not Authorized", "detail": "ACL restricts the record retrieval"}, "status": "failure"})
    connector = make()
    with pytest.raises(NotFoundError) as missing:
        connector.get("suppliers", "e" * 32)
    with pytest.raises(FatalError) as denied:
        connector.get("suppliers", "f" * 32)
    assert missing.value.message == "No Record found: Record doesn't exist or ACL restricts the record retrieval"
    assert denied.value.status == 403 and "User Not Authorized" in str(denied.value)


@responses.activate
def test_a_secret_echoed_by_the_vendor_is_scrubbed_from_the_error() -> None:
    echoed = {**CREDS, "client_secret": "Echoed-Client-Secret-93", "password": "Echoed-Password-93"}
    responses.post(TOKEN_URL, status=401, json={
        "error": "server_error", "error_description": f"access_denied for {echoed['client_secret']} / {echoed['password']}"})
    with pytest.raises(AuthError) as error:
        list(make(creds=echoed).iter_changed("suppliers", None, NOW))
    text = str(error.value) + json.dumps(error.value.to_dict())
    assert "access_denied for" in text
    assert echoed["client_secret"] not in text and echoed["password"] not in text


def test_config_and_credentials_are_validated_without_echoing_secrets() -> None:
    with pytest.raises(ValidationError):
        make({"supplier_table": "bad table; drop"})
    with pytest.raises(ValidationError):
        make({"supplier_filter": "vendor=true^NQname=x"})
    with pytest.raises(ValidationError):
        make({"page_size": 20_000})
    with pytest.raises(ValueError) as missing:
        make(creds={"client_id": CREDS["client_id"], "client_secret": CREDS["client_secret"], "username": "x"})
    assert "password" in str(missing.value) and CREDS["client_secret"] not in str(missing.value)
    assert sn_value(datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)) == "2025-01-02 03:04:05"


# ---- contract tests against the sandbox ---------------------------------------------------------------


@pytest.fixture(scope="module")
def running() -> Iterator[RunningSandbox]:
    sandbox = start_sandbox(ServiceNowSandbox(SandboxOptions(records=RECORDS), custom_columns=CUSTOM))
    yield sandbox
    sandbox.stop()


@pytest.fixture(autouse=True)
def fresh(request: pytest.FixtureRequest) -> None:
    if "running" in request.fixturenames:
        running = request.getfixturevalue("running")
        requests.post(f"{running.url}/_sandbox/reset", json={"records": RECORDS})


def connect(running: RunningSandbox, **config: Any) -> ServiceNowConnector:
    base, creds = ServiceNowConnector.settings_from_sandbox_info(running.info())
    return ServiceNowConnector.create({**base, **FAST, **config}, creds, build_runtime(""))


def stats(running: RunningSandbox) -> dict[str, Any]:
    return requests.get(f"{running.url}/_sandbox/stats").json()


def faults(running: RunningSandbox, **settings: Any) -> None:
    requests.post(f"{running.url}/_sandbox/faults", json=settings).raise_for_status()


def now() -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=1)


def test_full_pagination_of_thousands_of_records_lazily(running: RunningSandbox) -> None:
    requests.post(f"{running.url}/_sandbox/reset", json={"records": 2500})
    try:
        connector = connect(running, page_size=500)
        records = connector.iter_changed("suppliers", None, now())
        first = next(records)
        assert connector.call_count == 2  # a token and one page: nothing read ahead
        rest = list(records)
    finally:
        requests.post(f"{running.url}/_sandbox/reset", json={"records": RECORDS})
    everything = [first, *rest]
    assert len(everything) == 2500 and len({r.sys_id for r in everything}) == 2500
    stamps = [(r.sys_updated_on, r.sys_id) for r in everything]
    assert stamps == sorted(stamps)
    assert connector.call_count == 1 + 5


def test_a_token_expiring_mid_pagination_is_refreshed(running: RunningSandbox) -> None:
    connector = connect(running, page_size=10)
    records = connector.iter_changed("suppliers", None, now())
    head = [next(records) for _ in range(10)]
    requests.post(f"{running.url}/_sandbox/expire-tokens")
    tail = list(records)
    counts = stats(running)
    assert len({r.sys_id for r in head + tail}) == RECORDS
    assert counts["tokens_issued"] == 2 and counts["grant_refresh_token"] == 1
    assert counts["by_endpoint"]["GET /api/now/table/<table_name>"]["401"] == 1


def test_a_429_with_retry_after_is_waited_out(running: RunningSandbox) -> None:
    connector = connect(running, page_size=100)
    connector.check()  # token first, so the burst lands on the table read
    faults(running, burst_429=1, retry_after=1)
    started = time.monotonic()
    records = list(connector.iter_changed("suppliers", None, now()))
    assert len(records) == RECORDS and time.monotonic() - started >= 0.95
    assert stats(running)["rate_limited"] == 1


def test_5xx_then_success_is_retried(running: RunningSandbox) -> None:
    connector = connect(running)
    faults(running, fail_next=2, error_status=503, path_contains="/api/now/table/")
    records = list(connector.iter_changed("cost_centers", None, now()))
    assert records and all(isinstance(r, CostCenter) for r in records)
    assert stats(running)["by_status"]["503"] == 2


def test_a_transform_error_surfaces_as_fatal_with_the_vendor_message(running: RunningSandbox) -> None:
    connector = connect(running)
    with pytest.raises(FatalError) as error:
        connector.stage_ap_invoice({"external_invoice_number": "V-1", "invoice_date": "2025-05-01"}, "EPIC-INV-1")
    assert "Invoice Inbound: Mandatory field(s) missing: external_invoice_source, erp_source, other_charges" \
        in error.value.message
    assert error.value.details["status"] == "error"


def test_a_data_policy_400_surfaces_as_fatal_with_the_vendor_message(running: RunningSandbox) -> None:
    connector = connect(running, use_import_set=False)
    with pytest.raises(FatalError) as error:
        connector.upsert_supplier({"name": "", "city": "Chicago"}, "EPIC-V-400")
    assert error.value.status == 400
    assert error.value.message == "Operation Failed: Data Policy Exception: The following fields are mandatory: name"


def test_supplier_upsert_through_import_set(running: RunningSandbox) -> None:
    connector = connect(running)
    first = connector.upsert_supplier({"name": "Zeta Steel LLC", "city": "Chicago", "active": True}, "EPIC-V-100")
    second = connector.upsert_supplier({"name": "Zeta Steel LLC", "city": "Milwaukee", "active": True}, "EPIC-V-100")
    third = connector.upsert_supplier({"name": "Zeta Steel LLC", "city": "Milwaukee", "active": True}, "EPIC-V-100")
    found = connector.find_by_correlation("suppliers", "EPIC-V-100")
    assert (first.action, second.action, third.action) == ("inserted", "updated", "ignored")
    assert first.sys_id == second.sys_id == third.sys_id and first.import_set
    assert isinstance(found, Supplier) and found.sys_id == first.sys_id and found.city == "Milwaukee" and found.active
    assert connector.find_by_correlation("sn_fin_supplier", "EPIC-V-404") is None


def test_supplier_upsert_through_the_table_api_on_core_company(running: RunningSandbox) -> None:
    connector = connect(running, use_import_set=False, supplier_table="core_company",
                        supplier_filter="vendor=true", supplier_defaults={"vendor": "true"})
    before = now()
    created = connector.upsert_supplier({"name": "Yarrow Fasteners Inc.", "city": "Chicago"}, "EPIC-V-200")
    calls = connector.call_count
    unchanged = connector.upsert_supplier({"name": "Yarrow Fasteners Inc.", "city": "Chicago"}, "EPIC-V-200")
    assert connector.call_count == calls + 1  # a lookup, no write
    updated = connector.upsert_supplier({"name": "Yarrow Fasteners Inc.", "city": "Detroit"}, "EPIC-V-200")
    changed = list(connector.iter_changed("suppliers", before - timedelta(seconds=2), now()))
    assert (created.action, unchanged.action, updated.action) == ("inserted", "unchanged", "updated")
    assert [r.sys_id for r in changed] == [created.sys_id]
    assert changed[0].city == "Detroit" and changed[0].model_extra["vendor"] == "true"


def test_purchase_order_with_lines_staged_once_however_often_delivered(running: RunningSandbox) -> None:
    connector = connect(running)
    supplier = connector.upsert_supplier({"name": "Lines Supply Co."}, "EPIC-V-300")
    header = {"erp_po_number": "PO-7001", "supplier_company_name": supplier.sys_id, "po_amount": Decimal("150.00"),
              "po_amount_currency": "USD", "order_type": "Standard", "order_date": date(2025, 5, 3)}
    lines = [{"line_number": 1, "description": "Hex bolt", "quantity": 10, "unit_price": "5.00", "line_amount": "50.00"},
             {"line_number": 2, "description": "Pipe", "quantity": 4, "unit_price": "25.00", "line_amount": "100.00"}]
    first = connector.stage_purchase_order(header, "EPIC-PO-7001", lines)
    replay = connector.stage_purchase_order(header, "EPIC-PO-7001", lines)
    po = connector.get("purchase_orders", first.sys_id)
    stored_lines = [r for r in connector.iter_changed("purchase_order_lines", None, now()) if r.purchase_order == po.sys_id]
    assert first.action == "inserted" and [l.action for l in first.lines] == ["inserted", "inserted"]
    assert replay.action == "ignored" and [l.action for l in replay.lines] == ["ignored", "ignored"]
    assert isinstance(po, PurchaseOrder) and po.total_amount == Decimal("150.00") and po.supplier == supplier.sys_id
    assert po.order_date == date(2025, 5, 3) and po.erp_number == "PO-7001"
    assert sorted((l.line_number, l.amount) for l in stored_lines) == [(1, Decimal("50.00")), (2, Decimal("100.00"))]
    assert {l.correlation_id for l in first.lines} == {"EPIC-PO-7001/1", "EPIC-PO-7001/2"}


def test_ap_invoice_with_lines_through_import_set_and_through_the_table_api(running: RunningSandbox) -> None:
    header = {"external_invoice_number": "INV-88", "external_invoice_source": "Epicor Kinetic",
              "erp_source": "Epicor Kinetic", "invoice_date": date(2025, 5, 20), "other_charges": 0,
              "amount_invoiced": "107.00", "final_tax": "7.00", "currency": "USD"}
    lines = [{"description": "Freight", "line_amount": "100.00", "gl_account": "6100"}]
    staged = connect(running).stage_ap_invoice(header, "EPIC-INV-88", lines)
    direct = connect(running, use_import_set=False).stage_ap_invoice(
        {"external_invoice_number": "INV-89", "invoice_date": date(2025, 5, 21), "total_amount": "5.00"},
        "EPIC-INV-89", [{"description": "Fee", "amount": "5.00"}])
    invoices = {r["u_correlation_id"]: r for r in requests.get(f"{running.url}/_sandbox/entities/invoices").json()}
    lines_by_invoice = requests.get(f"{running.url}/_sandbox/entities/invoice_lines").json()
    assert staged.via == "import_set" and direct.via == "table_api" and direct.action == "inserted"
    assert invoices["EPIC-INV-88"]["total_amount"] == "107.00" and invoices["EPIC-INV-88"]["tax_amount"] == "7.00"
    assert invoices["EPIC-INV-88"]["status"] == "pending" and invoices["EPIC-INV-89"]["invoice_date"] == "2025-05-21"
    assert [l["u_correlation_id"] for l in lines_by_invoice if l["invoice"] == staged.sys_id] == ["EPIC-INV-88/1"]
    assert [l["amount"] for l in lines_by_invoice if l["invoice"] == direct.sys_id] == ["5.00"]


def test_without_coalescing_maps_an_existing_record_is_patched_not_imported(running: RunningSandbox) -> None:
    connector = connect(running, import_set_coalesces=False)
    created = connector.upsert_supplier({"name": "Patch Me Ltd.", "city": "Chicago"}, "EPIC-V-400")
    updated = connector.upsert_supplier({"name": "Patch Me Ltd.", "city": "Toronto"}, "EPIC-V-400")
    assert created.via == "import_set" and updated.via == "table_api" and updated.action == "updated"
    assert stats(running)["import_rows"] == 1


def test_concurrent_duplicate_deliveries_make_one_record(running: RunningSandbox) -> None:
    connector = connect(running)
    results: list[WriteResult] = []
    threads = [threading.Thread(target=lambda: results.append(
        connector.upsert_supplier({"name": "Twice Co."}, "EPIC-V-500"))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = [r for r in requests.get(f"{running.url}/_sandbox/entities/suppliers").json() if r["u_correlation_id"] == "EPIC-V-500"]
    assert len(rows) == 1 and {r.sys_id for r in results} == {rows[0]["sys_id"]}


def test_change_window_is_since_inclusive_and_until_exclusive(running: RunningSandbox) -> None:
    connector = connect(running)
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    changed = requests.post(f"{running.url}/_sandbox/tick", json={"count": 5}).json()["changed"]
    expected = {c["sys_id"] for c in changed if c["table"] == "sn_fin_supplier"}
    seen = {r.sys_id for r in connector.iter_changed("suppliers", since, now())}
    capped = list(connector.iter_changed("suppliers", since, since))
    assert expected and seen == expected and capped == []


def test_find_cost_center_skips_expired_ones(running: RunningSandbox) -> None:
    requests.post(f"{running.url}/_sandbox/entities/cost_centers",
                  json={"name": "Old Plant", "account_number": "7777-01", "valid_to": "2020-12-31"})
    current = requests.post(f"{running.url}/_sandbox/entities/cost_centers",
                            json={"name": "New Plant", "account_number": "7777-01", "valid_to": ""}).json()
    connector = connect(running)
    found = connector.find_cost_center("7777-01")
    assert found is not None and found.sys_id == current["sys_id"]
    assert connector.find_cost_center(name="Old Plant") is None
    assert connector.find_cost_center(name="Old Plant", current_only=False) is not None
    assert connector.find_cost_center("0000-00") is None


def test_get_not_found_keeps_the_vendor_words(running: RunningSandbox) -> None:
    with pytest.raises(NotFoundError) as error:
        connect(running).get("invoices", "0" * 32)
    assert "No Record found" in error.value.message


def test_check_passes_with_good_credentials(running: RunningSandbox) -> None:
    steps = connect(running).check()
    assert steps[0].step == "oauth token" and all(s.ok for s in steps)
    assert {s.step for s in steps} >= {"read sn_fin_supplier", "read cmn_cost_center", "read sn_spend_intg_imp_invoice"}


def test_basic_auth_against_the_sandbox(running: RunningSandbox) -> None:
    info = running.info()
    connector = ServiceNowConnector.create({"instance_url": info["api_base"], "auth": "basic", **FAST},
                                           {"username": info["credentials"]["username"],
                                            "password": info["credentials"]["password"]}, build_runtime(""))
    assert len(list(connector.iter_changed("cost_centers", None, now()))) >= 8
    assert stats(running)["tokens_issued"] == 0


def test_no_secret_appears_in_any_error(running: RunningSandbox) -> None:
    info = running.info()
    good = dict(info["credentials"])
    bad = {**good, "client_secret": "Wrong-Secret-4711"}
    base, _ = ServiceNowConnector.settings_from_sandbox_info(info)
    refused = ServiceNowConnector.create({**base, **FAST}, bad, build_runtime(""))
    with pytest.raises(AuthError) as error:
        list(refused.iter_changed("suppliers", None, now()))
    verdicts = refused.check()
    connector = connect(running, use_import_set=False)
    list(connector.iter_changed("cost_centers", None, now()))
    token = connector.runtime.token_cache.peek(connector.provider)  # type: ignore[arg-type]
    with pytest.raises(FatalError) as rejected:
        connector.upsert_supplier({"name": ""}, "EPIC-V-600")
    assert error.value.status == 401 and "access_denied" in error.value.message
    assert not verdicts[0].ok and "access_denied" in verdicts[0].detail
    secrets = [bad["client_secret"], good["client_secret"], good["password"], token.access_token, token.refresh_token]  # type: ignore[union-attr]
    for text in (str(error.value), json.dumps(error.value.to_dict()), str(rejected.value),
                 json.dumps(rejected.value.to_dict()), *(v.detail for v in verdicts)):
        for secret in secrets:
            assert secret and secret not in text


# ---- a stock instance: no u_ columns, maps that coalesce on nothing ----------------------------------------


@pytest.fixture(scope="module")
def stock() -> Iterator[RunningSandbox]:
    sandbox = start_sandbox(ServiceNowSandbox(SandboxOptions(records=8)))
    yield sandbox
    sandbox.stop()


def test_a_stock_instance_drops_the_correlation_column_and_re_imports_insert_again(stock: RunningSandbox) -> None:
    connector = connect(stock)
    first = connector.import_row("supplier", {"name": "Stock Twin Co.", "city": "Fresno", "u_correlation_id": "EPIC-1"})
    second = connector.import_row("supplier", {"name": "Stock Twin Co.", "city": "Fresno", "u_correlation_id": "EPIC-1"})
    assert (first.action, second.action) == ("inserted", "inserted") and first.sys_id != second.sys_id
    found = connector.find_record("sn_fin_supplier", {"name": "Stock Twin Co."})
    assert found is not None and found["sys_id"] == first.sys_id and "u_correlation_id" not in found
    assert connector.get_record("sn_fin_supplier", second.sys_id)["city"] == "Fresno"
    assert connector.get_record("sn_fin_supplier", "0" * 32) is None


def test_import_row_renames_fields_to_the_configured_staging_columns_and_reports_ignored(stock: RunningSandbox) -> None:
    maps = requests.get(f"{stock.url}/_sandbox/entities/transform_maps").json()
    supplier_map = next(m for m in maps if m["name"] == "Supplier Inbound")
    requests.post(f"{stock.url}/_sandbox/entities/transform_maps", json={**supplier_map, "coalesce": ["name"]}).raise_for_status()
    try:
        connector = connect(stock, staging_columns={"supplier": {"name": "name", "town": "city"}})
        first = connector.import_row("supplier", {"name": "Renamed Co.", "town": "Visalia"})
        again = connector.import_row("supplier", {"name": "Renamed Co.", "town": "Visalia"})
        assert connector.get_record("sn_fin_supplier", first.sys_id)["city"] == "Visalia"
        assert (again.action, again.sys_id, again.message) == ("ignored", first.sys_id, "No field values changed")
    finally:
        requests.post(f"{stock.url}/_sandbox/entities/transform_maps", json=supplier_map).raise_for_status()


def test_a_transform_error_raises_with_the_transform_message(stock: RunningSandbox) -> None:
    with pytest.raises(FatalError, match="Purchase Order Inbound: Mandatory field\\(s\\) missing: supplier_company_name"):
        connect(stock).import_row("purchase_order", {"erp_po_number": "9001"})


def test_a_429_on_import_is_waited_out_and_the_row_lands_once(stock: RunningSandbox) -> None:
    faults(stock, burst_429=2, retry_after=0)
    result = connect(stock).import_row("supplier", {"name": "Rate Limited Once"})
    assert result.action == "inserted"
    assert len(connect(stock).find_records("sn_fin_supplier", {"name": "Rate Limited Once"})) == 1


def test_check_reads_the_dictionary_and_names_a_missing_staging_column(stock: RunningSandbox) -> None:
    connector = connect(stock, staging_columns={"invoice": {"external_invoice_number": "external_invoice_number",
                                                            "amount_invoiced": "invoice_amount"}})
    assert "external_invoice_number" in connector.dictionary_columns("sn_spend_intg_imp_invoice")
    assert "u_correlation_id" not in connector.dictionary_columns("sn_shop_invoice")
    steps = {s.step: s for s in connector.check()}
    verdict = steps["columns of sn_spend_intg_imp_invoice"]
    assert not verdict.ok and "invoice_amount (for amount_invoiced)" in verdict.detail
    assert all(s.ok for name, s in steps.items() if name != "columns of sn_spend_intg_imp_invoice"), steps
