"""Acumatica connector: exact request shapes (responses) and contract tests against the sandbox."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from connectors.acumatica import (
    AcumaticaConnector,
    Bill,
    Invoice,
    PreconditionFailedError,
    Vendor,
    acumatica_error,
    replace_detail_rows,
    to_value_objects,
    unwrap,
)
from connectors.base import AmbiguousKeyError
from mlconnector.http import AuthError, FatalError, NotFoundError, RetriableError
from mlconnector.http.runtime import build_runtime
from sandboxes.acumatica import AcumaticaSandbox, AcumaticaSettings
from sandboxes.base import SandboxOptions, start_sandbox

BASE = "https://acme.example.com/AcumaticaERP"
ENTITY = f"{BASE}/entity/Default/23.200.001"
TOKEN_URL = f"{BASE}/identity/connect/token"
SECRET = "s3cret-client-value"
PASSWORD = "Pa55word-for-api-user"
FAST = {"retry": {"base": 0.05, "max_wait": 2, "max_tries": 4}, "action_poll_interval": 0.01}
GUID = "6b1c2f0e-1111-4222-8333-444455556666"


def offline(**config: Any) -> AcumaticaConnector:
    settings = {"base_url": BASE, "tenant": "MyTenant", **FAST, **config}
    credentials = {"client_id": "88358B02-A48D-A50E-F710-39C1636C30F6@MyTenant", "client_secret": SECRET,
                   "username": "api-user", "password": PASSWORD}
    return AcumaticaConnector.create(settings, credentials, build_runtime(""))


def add_token(rsps: responses.RequestsMock, access: str = "tok-1", refresh: str | None = "ref-1") -> None:
    body = {"access_token": access, "expires_in": 3600, "token_type": "Bearer", "scope": "api"}
    if refresh:
        body["refresh_token"] = refresh
    rsps.add(responses.POST, TOKEN_URL, json=body)


def query(call: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(call.request.url).query, keep_blank_values=True).items()}


def wire_vendor(vendor_id: str, stamp: str) -> dict[str, Any]:
    return {"id": GUID, "rowNumber": 1, "note": {"value": ""}, "VendorID": {"value": vendor_id},
            "VendorName": {"value": f"Vendor {vendor_id}"}, "Status": {"value": "Active"},
            "LastModifiedDateTime": {"value": stamp}, "TaxZone": {},
            "MainContact": {"id": GUID, "Email": {"value": "ap@x.com"}, "Address": {"City": {"value": "Dallas"}}},
            "custom": {}, "_links": {"self": f"/entity/Default/23.200.001/Vendor/{GUID}"}}


# ---- exact request shapes ----------------------------------------------------------------------------


@responses.activate
def test_token_request_and_first_page_have_the_vendor_shape():
    add_token(responses)
    responses.add(responses.GET, f"{ENTITY}/Vendor", json=[])
    connector = offline()
    since = datetime(2024, 5, 1, tzinfo=timezone.utc)
    assert list(connector.iter_changed("vendors", since, since + timedelta(days=1))) == []
    token_call, page_call = responses.calls
    assert token_call.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(token_call.request.body) == {
        "grant_type": ["password"], "client_id": ["88358B02-A48D-A50E-F710-39C1636C30F6@MyTenant"],
        "client_secret": [SECRET], "username": ["api-user"], "password": [PASSWORD],
        "scope": ["api offline_access api:concurrent_access"]}
    assert urlsplit(page_call.request.url).path == "/AcumaticaERP/entity/Default/23.200.001/Vendor"
    assert page_call.request.headers["Authorization"] == "Bearer tok-1"
    assert page_call.request.headers["Accept"] == "application/json"
    assert query(page_call) == {
        "$filter": "LastModifiedDateTime ge datetimeoffset'2024-05-01T00:00:00.000+00:00'",
        "$expand": "MainContact/Address", "$top": "100", "$skip": "0"}
    assert connector.call_count == 2


@responses.activate
def test_paging_walks_skip_until_a_short_page_and_caps_at_until():
    add_token(responses)
    until = datetime(2024, 5, 2, 12, tzinfo=timezone.utc)
    pages = [[wire_vendor("V1", "2024-05-01T10:00:00.1+00:00"), wire_vendor("V2", "2024-05-02T12:00:00+00:00")],
             [wire_vendor("V3", "2024-05-02T11:59:59.999+00:00"), wire_vendor("V4", "2024-05-01T00:00:00+00:00")],
             [wire_vendor("V5", "2024-05-02T13:00:00+00:00")]]
    for page in pages:
        responses.add(responses.GET, f"{ENTITY}/Vendor", json=page)
    connector = offline(page_size=2, filter_literal="plain")
    records = list(connector.iter_changed("vendors", datetime(2024, 5, 1), until))
    assert [r.VendorID for r in records] == ["V1", "V3", "V4"]  # V2 and V5 changed at/after until
    assert all(isinstance(r, Vendor) for r in records)
    assert records[0].MainContact.Address.City == "Dallas" and records[0].TaxZone is None
    assert records[0].LastModifiedDateTime == datetime(2024, 5, 1, 10, 0, 0, 100000, tzinfo=timezone.utc)
    skips = [query(c)["$skip"] for c in responses.calls[1:]]
    assert skips == ["0", "2", "4"]
    assert query(responses.calls[1])["$filter"] == "LastModifiedDateTime ge 2024-05-01T00:00:00.000+00:00"


@responses.activate
def test_iteration_is_lazy():
    add_token(responses)
    responses.add(responses.GET, f"{ENTITY}/Vendor", json=[wire_vendor("V1", "2024-05-01T00:00:00+00:00")])
    responses.add(responses.GET, f"{ENTITY}/Vendor", json=[])
    records = offline(page_size=1).iter_changed("vendors", None, datetime.now(timezone.utc))
    assert len(responses.calls) == 0
    next(records)
    assert len(responses.calls) == 2  # the token and one page, nothing more yet


@responses.activate
def test_subaccounts_have_no_change_field_and_are_read_whole():
    add_token(responses)
    responses.add(responses.GET, f"{ENTITY}/Subaccount", json=[
        {"id": GUID, "SubaccountCD": {"value": "100-000"}, "Active": {"value": True}}])
    rows = list(offline().iter_changed("subaccounts", datetime(2024, 1, 1, tzinfo=timezone.utc),
                                       datetime.now(timezone.utc)))
    assert [r.SubaccountCD for r in rows] == ["100-000"]
    assert "$filter" not in query(responses.calls[1])


@responses.activate
def test_put_insert_sends_value_objects_and_if_none_match():
    add_token(responses)
    saved = {"id": GUID, "Type": {"value": "Bill"}, "ReferenceNbr": {"value": "000123"}, "Amount": {"value": 25.5},
             "Details": [{"id": GUID, "rowNumber": 1, "Amount": {"value": 25.5}}]}
    responses.add(responses.PUT, f"{ENTITY}/Bill", json=saved)
    bill = offline().put("bills", {
        "Vendor": "V000042", "VendorRef": "INV-88", "Date": datetime(2024, 5, 1, tzinfo=timezone.utc),
        "Hold": False, "Details": [{"Account": "60000", "Qty": Decimal("1.5"), "UnitCost": 17, "Subaccount": "100-000"}],
    }, mode="insert")
    call = responses.calls[1]
    assert call.request.headers["If-None-Match"] == "*" and "If-Match" not in call.request.headers
    assert query(call) == {"$expand": "Details"}
    assert json.loads(call.request.body) == {
        "Vendor": {"value": "V000042"}, "VendorRef": {"value": "INV-88"},
        "Date": {"value": "2024-05-01T00:00:00+00:00"}, "Hold": {"value": False},
        "Details": [{"Account": {"value": "60000"}, "Qty": {"value": 1.5}, "UnitCost": {"value": 17},
                     "Subaccount": {"value": "100-000"}}]}
    assert isinstance(bill, Bill) and bill.ReferenceNbr == "000123" and bill.Amount == Decimal("25.5")


@responses.activate
def test_put_update_sends_if_match_and_412_is_a_precondition_error():
    add_token(responses)
    responses.add(responses.PUT, f"{ENTITY}/Customer", status=412, json={
        "message": "An error has occurred.", "exceptionMessage": "The Customer record to update cannot be found.",
        "exceptionType": "PX.Data.PXException"})
    with pytest.raises(PreconditionFailedError) as caught:
        offline().put("customers", {"CustomerID": "C9", "CustomerName": "Ghost"}, mode="update")
    assert responses.calls[1].request.headers["If-Match"] == "*"
    assert caught.value.status == 412 and "cannot be found" in str(caught.value)
    assert len(responses.calls) == 2  # a refused precondition is not retried


@responses.activate
def test_find_bill_filter_escapes_quotes_and_returns_none_when_absent():
    add_token(responses)
    responses.add(responses.GET, f"{ENTITY}/Bill", json=[])
    assert offline().find_bill("V000042", "O'Brien #1") is None
    assert query(responses.calls[1]) == {"$filter": "Vendor eq 'V000042' and VendorRef eq 'O''Brien #1'",
                                         "$expand": "Details", "$top": "100", "$skip": "0"}


@responses.activate
def test_keys_address_records_in_the_url_unless_a_value_holds_a_slash():
    add_token(responses)
    responses.add(responses.GET, f"{ENTITY}/Invoice/Credit%20Memo/AR000007", json={
        "id": GUID, "Type": {"value": "Credit Memo"}, "ReferenceNbr": {"value": "AR000007"}})
    responses.add(responses.GET, f"{ENTITY}/Customer/C9", status=404, json={
        "message": "An error has occurred.", "exceptionMessage": "No entity satisfies the condition."})
    responses.add(responses.GET, f"{ENTITY}/Customer", json=[])
    connector = offline()
    invoice = connector.get("invoices", ("Credit Memo", "AR000007"))
    assert isinstance(invoice, Invoice) and invoice.Type == "Credit Memo"
    with pytest.raises(NotFoundError):
        connector.get("customers", "C9")
    with pytest.raises(NotFoundError):
        connector.get("customers", "C/1")  # a real instance cannot address 'C/1' in the URL: filtered instead
    assert query(responses.calls[-1]) == {"$filter": "CustomerID eq 'C/1'", "$expand": "MainContact/Address",
                                          "$top": "100", "$skip": "0"}
    with pytest.raises(ValueError):
        connector.delete("customers", "C/1")


@responses.activate
def test_find_takes_a_declared_external_key_and_refuses_an_ambiguous_one():
    add_token(responses)
    bill = {"id": GUID, "Type": {"value": "Bill"}, "ReferenceNbr": {"value": "000123"}, "Vendor": {"value": "V1"},
            "VendorRef": {"value": "INV-1"}}
    responses.add(responses.GET, f"{ENTITY}/Invoice", json=[
        {"id": GUID, "Type": {"value": "Invoice"}, "ReferenceNbr": {"value": "AR9"}, "CustomerOrder": {"value": "ST-77"}}])
    responses.add(responses.GET, f"{ENTITY}/Bill", json=[bill, {**bill, "ReferenceNbr": {"value": "000124"}}])
    responses.add(responses.GET, f"{ENTITY}/Payment", json=[
        {"id": GUID, "Type": {"value": "Payment"}, "ExternalRef": {"value": "someone else's"}}])
    connector = offline()
    found = connector.find_invoice("st-77")  # Acumatica compares without regard to case; so does the check here
    assert isinstance(found, Invoice) and found.ReferenceNbr == "AR9"
    assert query(responses.calls[1])["$filter"] == "Type eq 'Invoice' and CustomerOrder eq 'st-77'"
    with pytest.raises(AmbiguousKeyError) as ambiguous:
        connector.find_bill("V1", "INV-1")
    assert "VendorRef='INV-1'" in ambiguous.value.message
    assert connector.find_payment("ST-PAY-1") is None  # the row the instance sent does not carry the key
    with pytest.raises(ValueError):
        connector.find("bills", VendorRef="INV-1")  # half a key names nothing


@responses.activate
def test_release_posts_the_action_and_polls_the_location_under_the_virtual_directory():
    add_token(responses)
    status_path = f"/AcumaticaERP/entity/Default/23.200.001/Bill/ReleaseBill/status/{GUID}"
    responses.add(responses.POST, f"{ENTITY}/Bill/ReleaseBill", status=202, headers={"Location": status_path})
    responses.add(responses.GET, f"https://acme.example.com{status_path}", status=202)
    responses.add(responses.GET, f"https://acme.example.com{status_path}", status=202)
    responses.add(responses.GET, f"https://acme.example.com{status_path}", status=204)
    offline().release("bills", "000123")
    post = responses.calls[1]
    assert json.loads(post.request.body) == {
        "entity": {"Type": {"value": "Bill"}, "ReferenceNbr": {"value": "000123"}}, "parameters": {}}
    assert [c.response.status_code for c in responses.calls[2:]] == [202, 202, 204]


@responses.activate
def test_release_by_id_and_a_failed_action_surfaces_the_vendor_message():
    add_token(responses)
    status_path = f"/AcumaticaERP/entity/Default/23.200.001/Invoice/ReleaseInvoice/status/{GUID}"
    responses.add(responses.POST, f"{ENTITY}/Invoice/ReleaseInvoice", status=202, headers={"Location": status_path})
    responses.add(responses.GET, f"https://acme.example.com{status_path}", status=422, json={
        "message": "An error has occurred.", "exceptionMessage": "The document is out of balance."})
    with pytest.raises(FatalError) as caught:
        offline().release("invoices", GUID)
    assert json.loads(responses.calls[1].request.body)["entity"] == {"id": GUID}
    assert "The document is out of balance." in str(caught.value)


@responses.activate
def test_cookie_mode_signs_in_and_always_signs_out():
    responses.add(responses.POST, f"{BASE}/entity/auth/login", status=204,
                  headers={"Set-Cookie": ".ASPXAUTH=abc123; Path=/"})
    responses.add(responses.GET, f"{ENTITY}/Vendor", status=400, json={
        "message": "An error has occurred.", "exceptionMessage": "Invalid $filter."})
    responses.add(responses.POST, f"{BASE}/entity/auth/logout", status=204)
    connector = offline(auth_mode="cookie", branch="HQ")
    with pytest.raises(FatalError):
        list(connector.iter_records("vendors", filter="bad filter"))
    login, read, logout = responses.calls
    assert json.loads(login.request.body) == {"name": "api-user", "password": PASSWORD, "tenant": "MyTenant",
                                              "branch": "HQ"}
    assert read.request.headers["Cookie"] == ".ASPXAUTH=abc123"
    assert read.request.headers["PX-CbApiBranch"] == "HQ"
    assert urlsplit(logout.request.url).path == "/AcumaticaERP/entity/auth/logout"


def _response(status: int, body: Any, content_type: str = "application/json") -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = (json.dumps(body) if not isinstance(body, str) else body).encode()
    response.headers["Content-Type"] = content_type
    return response


def test_error_extractor_reads_every_vendor_shape():
    message, details = acumatica_error(_response(500, {
        "message": "An error has occurred.", "exceptionMessage": "Operation failed",
        "exceptionType": "PX.Api.ContractBased.OperationFailedException", "stackTrace": "   at X",
        "innerException": {"message": "An error has occurred.", "exceptionMessage": "Vendor 'V9' cannot be found in the system."}}))
    assert message == "Operation failed -> Vendor 'V9' cannot be found in the system."
    assert "stackTrace" not in details
    message, details = acumatica_error(_response(422, {
        "id": GUID, "error": "Inserting 'Bill' record raised at least one error. Please review the errors.",
        "Vendor": {"value": "V9", "error": "Vendor 'V9' cannot be found in the system."},
        "Details": [{"rowNumber": 1, "Account": {"value": "1", "error": "Account '1' cannot be found in the system."}}]}))
    assert message == ("Inserting 'Bill' record raised at least one error. Please review the errors. "
                       "Vendor: Vendor 'V9' cannot be found in the system.; "
                       "Details[1].Account: Account '1' cannot be found in the system.")
    assert details["field_errors"][0].startswith("Vendor:")
    assert acumatica_error(_response(400, {"error": "invalid_grant", "error_description": "invalid_username_or_password"}))[0] \
        == "invalid_grant: invalid_username_or_password"
    html = "<html><head><title>Error</title></head><body><h1>Server Error</h1><p>Session expired</p></body></html>"
    assert acumatica_error(_response(500, html, "text/html"))[0] == "Error Server Error Session expired"


def test_value_object_helpers_round_trip():
    wire = to_value_objects({"CustomerName": "Smith, John", "CreditLimit": Decimal("10.50"),
                             "MainContact": {"Email": "j@x.com", "Address": {"City": "Tampa"}},
                             "Attributes": [{"AttributeID": "SOURCE", "Value": "ST"}], "id": GUID,
                             "Hold": {"value": True}})
    assert wire["MainContact"]["Address"]["City"] == {"value": "Tampa"}
    assert wire["Hold"] == {"value": True} and wire["id"] == GUID and wire["CreditLimit"] == {"value": 10.5}
    assert unwrap(wire) == {"CustomerName": "Smith, John", "CreditLimit": 10.5, "MainContact": {
        "Email": "j@x.com", "Address": {"City": "Tampa"}}, "Attributes": [{"AttributeID": "SOURCE", "Value": "ST"}],
        "id": GUID, "Hold": True}
    rows = replace_detail_rows([{"id": "a"}, {"id": "b"}], [{"Account": "1"}])
    assert rows == [{"id": "a", "delete": True}, {"id": "b", "delete": True}, {"Account": "1"}]


def test_configuration_is_validated():
    with pytest.raises(ValueError):
        offline(endpoint_version="latest")
    with pytest.raises(ValueError):
        offline(page_size=0)
    with pytest.raises(ValueError):
        AcumaticaConnector.create({"base_url": BASE}, {"username": "u", "password": "p"}, build_runtime(""))


# ---- contract tests against the sandbox ----------------------------------------------------------------


RECORDS = 2500


@pytest.fixture(scope="module")
def running():
    run = start_sandbox(AcumaticaSandbox(SandboxOptions(seed=5, records=RECORDS),
                                         settings=AcumaticaSettings(action_seconds=30)))
    yield run
    run.stop()


@pytest.fixture(autouse=True)
def clean_faults(request):
    yield
    if "running" in request.fixturenames:
        run = request.getfixturevalue("running")
        requests.post(f"{run.url}/_sandbox/faults", json={"replace": True}, timeout=5)
        requests.post(f"{run.url}/_sandbox/license", json={"requests_per_minute": None, "api_users": 2}, timeout=5)


def connect(running, **config: Any) -> AcumaticaConnector:
    settings, credentials = AcumaticaConnector.settings_from_sandbox_info(running.info())
    return AcumaticaConnector.create({**settings, **FAST, **config}, credentials, build_runtime(""))


def sandbox_stats(running) -> dict[str, Any]:
    return requests.get(f"{running.url}/_sandbox/stats", timeout=5).json()


def entity_calls(stats: dict[str, Any], method: str) -> int:
    return sum(stats["by_endpoint"].get(f"{method} /entity/<endpoint>/<version>/<path:rest>", {}).values())


def now() -> datetime:
    return datetime.now(timezone.utc)


def test_full_pagination_reads_every_invoice_once(running):
    connector = connect(running)
    before = entity_calls(sandbox_stats(running), "GET")
    invoices = list(connector.iter_changed("invoices", None, now()))
    expected = running.sandbox.get_entities("invoices")
    assert len(invoices) == len(expected) >= RECORDS
    assert len({i.id for i in invoices}) == len(invoices)
    assert {i.id for i in invoices} == {e["id"] for e in expected}
    assert all(isinstance(i, Invoice) and i.Details for i in invoices)
    pages = len(expected) // 100 + 1  # the last page is short (or empty)
    assert entity_calls(sandbox_stats(running), "GET") - before == pages
    assert connector.call_count == pages + 1  # plus one token


def test_changed_since_watermark_and_the_until_cap(running):
    connector = connect(running)
    vendors = running.sandbox.get_entities("vendors")[:4]
    since = now()
    time.sleep(0.005)
    for vendor in vendors[:3]:
        connector.put("vendors", {"VendorID": vendor["VendorID"], "LegalName": vendor["VendorName"] + " (legal)"})
    time.sleep(0.005)
    until = now()
    time.sleep(0.005)
    connector.put("vendors", {"VendorID": vendors[3]["VendorID"], "LegalName": "Changed after the poll began"})
    first = list(connector.iter_changed("vendors", since, until))
    assert {v.VendorID for v in first} == {v["VendorID"] for v in vendors[:3]}
    second = list(connector.iter_changed("vendors", until, now()))
    assert {v.VendorID for v in second} == {vendors[3]["VendorID"]}


def test_token_expiring_mid_pagination_is_renewed_once(running):
    connector = connect(running)
    records = connector.iter_changed("bills", None, now())
    seen = [next(records) for _ in range(150)]
    issued = sandbox_stats(running)["tokens_issued"]
    refused = sandbox_stats(running)["by_status"].get("401", 0)
    requests.post(f"{running.url}/_sandbox/expire-tokens", timeout=5).raise_for_status()
    seen += list(records)
    assert len({b.id for b in seen}) == len(seen) == len(running.sandbox.get_entities("bills"))
    stats = sandbox_stats(running)
    assert stats["tokens_issued"] == issued + 1  # renewed with the refresh token, once
    assert stats["by_status"].get("401", 0) == refused + 1
    assert stats["by_endpoint"]["POST /identity/connect/token"]["200"] >= 2


def test_429_with_retry_after_is_waited_out(running):
    connector = connect(running)
    requests.post(f"{running.url}/_sandbox/faults", json={"burst_429": 1, "retry_after": 1}, timeout=5)
    started = time.perf_counter()
    accounts = list(connector.iter_changed("accounts", None, now()))
    assert time.perf_counter() - started >= 1.0
    assert any(a.AccountCD == "40000" for a in accounts)
    assert sandbox_stats(running)["rate_limited"] >= 1


def test_license_requests_per_minute_429_is_retriable(running):
    connector = connect(running, retry={"max_tries": 2, "base": 0.05, "max_wait": 0.2})
    list(connector.iter_changed("subaccounts", None, now()))  # token cached before the limit starts
    requests.post(f"{running.url}/_sandbox/license", json={"requests_per_minute": 1}, timeout=5)
    assert connector.get("accounts", "40000").Description == "Service Revenue"
    with pytest.raises(RetriableError) as caught:
        connector.get("accounts", "50000")
    assert caught.value.status == 429 and "limit set by the license" in str(caught.value)


def test_5xx_then_success(running):
    connector = connect(running)
    requests.post(f"{running.url}/_sandbox/faults", json={"fail_next": 2, "error_status": 503}, timeout=5)
    assert connector.get("accounts", "10100").CashAccount is True
    assert sandbox_stats(running)["by_status"].get("503", 0) >= 2


def test_validation_error_is_fatal_with_the_vendor_message_and_not_retried(running):
    connector = connect(running)
    before = entity_calls(sandbox_stats(running), "PUT")
    with pytest.raises(FatalError) as caught:
        connector.put("bills", {"Vendor": "NOPE-1", "VendorRef": "X", "Details": [{"Account": "51000", "UnitCost": 1}]})
    error = caught.value
    assert error.status == 422
    assert "Vendor 'NOPE-1' cannot be found in the system." in str(error)
    assert error.details["field_errors"] == ["Vendor: Vendor 'NOPE-1' cannot be found in the system."]
    assert entity_calls(sandbox_stats(running), "PUT") - before == 1


def test_customer_invoice_and_payment_write_patterns(running):
    connector = connect(running)
    name = "Harbor Point Condominiums Phase II"
    assert connector.find_customer(name=name) is None
    customer = connector.put("customers", {"CustomerName": name, "CustomerClass": "COMMERCIAL",
                                           "MainContact": {"Email": "billing@harborpoint.example",
                                                           "Address": {"AddressLine1": "1 Harbor Way", "City": "Tampa"}}},
                             mode="insert")
    again = connector.find_customer(name=name.upper())
    assert again is not None and again.CustomerID == customer.CustomerID
    assert again.MainContact.Address.City == "Tampa"
    order = "ST-INV-1001"
    assert connector.find_invoice(order) is None
    lines = [{"InventoryID": "LABOR", "TransactionDescription": "Repair labor", "Qty": 2, "UnitPrice": 95,
              "Account": "40000", "Subaccount": "100-100", "Branch": "EAST"},
             {"InventoryID": "CAP-45-5", "TransactionDescription": "Capacitor", "Qty": 1, "UnitPrice": 38.4,
              "Account": "41000", "Subaccount": "100-100", "Branch": "EAST"}]
    invoice = connector.put("invoices", {"Customer": customer.CustomerID, "CustomerOrder": order,
                                         "Description": "Job 1001", "Details": lines}, mode="insert")
    assert invoice.Amount == Decimal("228.4") and invoice.Status == "Balanced"
    found = connector.find_invoice(order, customer_id=customer.CustomerID)
    assert found is not None and found.ReferenceNbr == invoice.ReferenceNbr and len(found.Details) == 2
    updated = connector.put("invoices", {"id": found.id, "Description": "Job 1001 (revised)"}, mode="update")
    assert updated.ReferenceNbr == invoice.ReferenceNbr and updated.Description == "Job 1001 (revised)"
    connector.release("invoices", invoice.ReferenceNbr)
    assert connector.get("invoices", invoice.ReferenceNbr).Status == "Open"
    payment = connector.put("payments", {
        "CustomerID": customer.CustomerID, "PaymentMethod": "CHECK", "PaymentRef": "1001", "PaymentAmount": 228.4,
        "ExternalRef": "ST-PAY-77", "DocumentsToApply": [{"DocType": "Invoice", "ReferenceNbr": invoice.ReferenceNbr}]},
        mode="insert")
    assert payment.DocumentsToApply[0].AmountPaid == Decimal("228.4")
    assert connector.find_payment("ST-PAY-77").ReferenceNbr == payment.ReferenceNbr
    connector.release("payments", payment.id)
    paid = connector.get("invoices", invoice.id)
    assert (paid.Status, paid.Balance) == ("Closed", Decimal("0.0"))


def test_bill_write_patterns(running):
    connector = connect(running)
    vendor = next(v for v in running.sandbox.get_entities("vendors") if v["Status"] == "Active")["VendorID"]
    assert connector.find_bill(vendor, "INV-2024-0042") is None
    bill = connector.put("bills", {"Vendor": vendor, "VendorRef": "INV-2024-0042", "Description": "Received PO",
                                   "Details": [{"InventoryID": "FILTER-16X25", "Qty": 10, "UnitCost": 12.5,
                                                "Account": "12000", "Subaccount": "100-000", "Branch": "HQ",
                                                "POOrderNbr": "PO001234"}]}, mode="insert")
    assert bill.Amount == Decimal("125.0") and bill.Details[0].POOrderNbr == "PO001234"
    found = connector.find_bill(vendor, "INV-2024-0042")
    assert found is not None and found.ReferenceNbr == bill.ReferenceNbr
    with pytest.raises(PreconditionFailedError):
        connector.put("bills", {"Type": "Bill", "ReferenceNbr": bill.ReferenceNbr, "Description": "dup"}, mode="insert")
    rows = replace_detail_rows(found.Details, [{"InventoryID": "FILTER-16X25", "Qty": 12, "UnitCost": 12.5,
                                                "Account": "12000"}])
    changed = connector.put("bills", {"Type": "Bill", "ReferenceNbr": bill.ReferenceNbr, "Details": rows})
    assert len(changed.Details) == 1 and changed.Amount == Decimal("150.0")
    connector.release("bills", (bill.Type, bill.ReferenceNbr))
    assert connector.get("bills", bill.id).Status == "Open"
    with pytest.raises(FatalError) as caught:
        connector.release("bills", bill.ReferenceNbr)
    assert "only a Balanced document can be released" in str(caught.value)


def test_gl_reads_for_mapping(running):
    connector = connect(running)
    accounts = {a.AccountCD: a for a in connector.iter_changed("accounts", None, now())}
    assert accounts["40000"].Type == "Income" and accounts["69900"].Active is False
    subaccounts = list(connector.iter_changed("subaccounts", now(), now()))  # no change field: all of them
    assert {s.SubaccountCD for s in subaccounts} >= {"000-000", "100-100", "200-200"}


def test_check_reports_each_entity_and_a_wrong_version(running):
    steps = connect(running).check()
    assert [s.step for s in steps] == ["sign in", "endpoint version", "read customers", "read vendors", "read invoices",
                                       "read payments", "read bills", "read accounts", "read subaccounts"]
    assert all(s.ok for s in steps), steps
    assert steps[1].detail.startswith("Default/23.200.001 published")
    wrong = connect(running, endpoint_version="24.200.001").check()
    assert wrong[0].ok and not any(s.ok for s in wrong[1:])
    assert "does not publish endpoint Default/24.200.001; it publishes Default/23.200.001" in wrong[1].detail
    assert "The endpoint Default/24.200.001 is not found" in wrong[2].detail
    bad = AcumaticaConnector.create({**connect(running).config.model_dump(), **FAST},
                                    {**AcumaticaConnector.settings_from_sandbox_info(running.info())[1],
                                     "password": "wrong-password"}, build_runtime("")).check()
    assert not bad[0].ok and "invalid_grant" in bad[0].detail
    assert all(s.detail == "skipped: sign-in failed" for s in bad[1:])


def test_cookie_sessions_are_always_signed_out(running):
    connector = connect(running, auth_mode="cookie")
    assert len(list(connector.iter_changed("accounts", None, now()))) >= 29
    assert running.sandbox.active_sessions() == 0
    partial = connector.iter_changed("vendors", None, now())
    next(partial)
    assert running.sandbox.active_sessions() == 1
    partial.close()
    assert running.sandbox.active_sessions() == 0
    with pytest.raises(FatalError):
        connector.put("bills", {"Vendor": "NOPE", "VendorRef": "X"})
    assert running.sandbox.active_sessions() == 0
    for _ in range(4):  # more operations than the license's two API users: each signs out
        connector.get("accounts", "40000")
    assert all(s.ok for s in connector.check())
    assert running.sandbox.active_sessions() == 0


def test_api_login_limit_is_retriable_and_clears_after_logout(running):
    requests.post(f"{running.url}/_sandbox/license", json={"api_users": 1}, timeout=5)
    creds = running.info()["credentials"]
    squatter = requests.Session()
    assert squatter.post(f"{running.url}/entity/auth/login", timeout=5,
                         json={"name": creds["username"], "password": creds["password"]}).status_code == 204
    connector = connect(running, auth_mode="cookie", retry={"max_tries": 2, "base": 0.05, "max_wait": 0.1})
    with pytest.raises(RetriableError) as caught:
        connector.get("accounts", "40000")
    assert "API Login Limit" in str(caught.value)
    squatter.post(f"{running.url}/entity/auth/logout", timeout=5)
    assert connector.get("accounts", "40000").AccountCD == "40000"
    assert running.sandbox.active_sessions() == 0


def test_no_secret_appears_in_any_error_message(running):
    settings, credentials = AcumaticaConnector.settings_from_sandbox_info(running.info())
    wrong = {**credentials, "password": "Wrong-Password-123", "client_secret": "wrong-client-secret-456"}
    connector = AcumaticaConnector.create({**settings, **FAST}, wrong, build_runtime(""))
    with pytest.raises(AuthError) as caught:
        connector.get("accounts", "40000")
    secrets = ["Wrong-Password-123", "wrong-client-secret-456", credentials["password"], credentials["client_secret"]]
    text = f"{caught.value} {caught.value!r} {json.dumps(caught.value.to_dict())}"
    assert "invalid_client" in text
    assert not any(s in text for s in secrets)
    good = connect(running)
    good.get("accounts", "40000")
    token = good._auth.cache.peek(good._auth.provider).access_token
    with pytest.raises(FatalError) as caught:  # the vendor echoes the value back; it is scrubbed
        good.put("bills", {"Vendor": credentials["password"], "VendorRef": token})
    text = f"{caught.value} {json.dumps(caught.value.to_dict())}"
    assert "cannot be found in the system" in text
    assert credentials["password"] not in text and token not in text
    cookie = AcumaticaConnector.create({**settings, **FAST, "auth_mode": "cookie"}, wrong, build_runtime(""))
    with pytest.raises(AuthError) as caught:
        cookie.get("accounts", "40000")
    assert "Invalid credentials" in str(caught.value) and "Wrong-Password-123" not in str(caught.value)
