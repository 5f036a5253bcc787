"""ServiceTitan connector: exact request shapes (responses) and contracts against the sandbox."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from pydantic import ValidationError

from connectors.servicetitan import (
    ENTITIES,
    InventoryBill,
    Payment,
    PurchaseOrder,
    ServiceTitanConnector,
    ServiceTitanVendor,
    Vendor,
)
from mlconnector.http import AuthError, FatalError, NotFoundError, RetriableError
from mlconnector.http.runtime import build_runtime
from mlconnector.webhook_signature import sign_for_tests
from sandboxes.base import SandboxOptions, start_sandbox
from sandboxes.servicetitan import ServiceTitanSandbox, sign_webhook

API = "https://api.st.test"
TOKEN_URL = "https://auth.st.test/connect/token"
TENANT = 4242
SECRET = "cs1.super-secret-client-value"
APP_KEY = "ak1.application-key-value"
FAST_RETRY = {"retry": {"base": 0.01, "max_wait": 0.05, "max_tries": 4}}
# Against the sandbox, honour its Retry-After (a stray 429 at a rate-window edge must not flake a test).
CONTRACT_RETRY = {"retry": {"base": 0.05, "max_wait": 2.0, "max_tries": 5}}


def make_connector(**config: Any) -> ServiceTitanConnector:
    settings = {"api_base": API, "token_url": TOKEN_URL, "tenant": TENANT, **FAST_RETRY, **config}
    return ServiceTitanConnector.create(settings, {"client_id": "cid.test", "client_secret": SECRET, "app_key": APP_KEY},
                                        build_runtime(""))


def api_url(path: str) -> str:
    return f"{API}/{path.format(tenant=TENANT)}"


def query(call: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


def page(rows: list[dict[str, Any]], *, has_more: bool = False, total: int | None = None, number: int = 1) -> dict[str, Any]:
    return {"page": number, "pageSize": 500, "hasMore": has_more, "totalCount": total, "data": rows}


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add(responses.POST, TOKEN_URL, json={"access_token": "tok-1", "expires_in": 900, "token_type": "Bearer"})
        yield rsps


# ---- request shapes -----------------------------------------------------------------------------

def test_token_request_and_headers_on_every_call(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.GET, api_url("crm/v2/tenant/{tenant}/customers"), json=page([{"id": 7, "name": "Ann Lee"}]))
    connector = make_connector()
    until = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    since = datetime(2026, 2, 1, 8, 30, 15, 250000, tzinfo=timezone.utc)
    [customer] = list(connector.iter_changed("customers", since, until))
    assert customer.id == 7 and customer.name == "Ann Lee"
    token_call, list_call = mocked.calls
    assert token_call.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert parse_qs(token_call.request.body) == {"grant_type": ["client_credentials"], "client_id": ["cid.test"],
                                                 "client_secret": [SECRET]}
    assert list_call.request.headers["Authorization"] == "Bearer tok-1"
    assert list_call.request.headers["ST-App-Key"] == APP_KEY
    assert urlsplit(list_call.request.url).path == f"/crm/v2/tenant/{TENANT}/customers"
    assert query(list_call) == {"modifiedBefore": ["2026-03-01T12:00:00.000000Z"],
                                "modifiedOnOrAfter": ["2026-02-01T08:30:15.250000Z"], "pageSize": ["500"],
                                "active": ["Any"], "sort": ["+Id"], "includeTotal": ["true"], "page": ["1"]}
    assert connector.call_count == 2


def test_optional_scope_is_sent_with_the_grant(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.GET, api_url("settings/v2/tenant/{tenant}/business-units"), json=page([]))
    list(make_connector(scope="tn.stt.businessunits:r").iter_changed("business_units", None, datetime.now(timezone.utc)))
    assert parse_qs(mocked.calls[0].request.body)["scope"] == ["tn.stt.businessunits:r"]


@pytest.mark.parametrize("entity, path, extra, absent", [
    ("inventory_bills", "accounting/v2/tenant/{tenant}/inventory-bills/paginated", {}, {"sort", "active", "activeState"}),
    ("invoices", "accounting/v2/tenant/{tenant}/invoices", {"activeState": ["All"], "sort": ["+Id"]}, {"active"}),
    ("payments", "accounting/v2/tenant/{tenant}/payments", {"activeState": ["All"]}, {"active"}),
    ("purchase_orders", "inventory/v2/tenant/{tenant}/purchase-orders", {"sort": ["+Id"]}, {"active", "activeState"}),
    ("business_units", "settings/v2/tenant/{tenant}/business-units", {"active": ["Any"]}, {"sort"}),
    ("ap_bills", "accounting/v2/tenant/{tenant}/ap-bills", {}, {"sort", "active"}),
    ("ap_payments", "accounting/v2/tenant/{tenant}/ap-payments", {"sort": ["+Id"]}, {"active"}),
    ("gl_accounts", "accounting/v2/tenant/{tenant}/gl-accounts", {"active": ["Any"]}, set()),
    ("adjustments", "inventory/v2/tenant/{tenant}/adjustments", {"active": ["Any"]}, set()),
    ("vendors", "inventory/v2/tenant/{tenant}/vendors", {"active": ["Any"]}, set()),
])
def test_each_entity_reads_its_own_endpoint(mocked: responses.RequestsMock, entity: str, path: str,
                                            extra: dict[str, list[str]], absent: set[str]) -> None:
    mocked.add(responses.GET, api_url(path), json=page([]))
    assert list(make_connector().iter_changed(entity, None, datetime.now(timezone.utc))) == []
    sent = query(mocked.calls[-1])
    assert "modifiedOnOrAfter" not in sent and "modifiedBefore" in sent
    for key, value in extra.items():
        assert sent[key] == value
    assert not absent & set(sent)


def test_models_parse_vendor_types(mocked: responses.RequestsMock) -> None:
    bill = {"id": 70001, "purchaseOrderId": 90002, "billAmount": "412.50", "taxAmount": "32.50",
            "shippingAmount": "0.00", "vendor": {"id": 511, "name": "Acme Supply Co"},
            "businessUnit": {"id": 7, "name": "HVAC"}, "modifiedOn": "2024-05-03T09:10:00Z", "surprise": {"kept": True},
            "items": [{"id": 1, "order": 1, "name": "Copper", "quantity": "10.00", "cost": "38.00", "skuCode": "CU-3/8",
                       "generalLedgerAccount": {"id": 3, "name": "Inventory", "number": "1200", "type": "Asset",
                                                "detailType": None}}]}
    mocked.add(responses.GET, api_url("accounting/v2/tenant/{tenant}/inventory-bills/paginated"), json=page([bill]))
    [parsed] = make_connector().iter_changed("inventory_bills", None, datetime.now(timezone.utc))
    assert isinstance(parsed, InventoryBill)
    assert parsed.billAmount == Decimal("412.50") and parsed.items[0].quantity == Decimal("10.00")
    assert parsed.items[0].generalLedgerAccount.number == "1200" and parsed.vendor.name == "Acme Supply Co"
    dumped = parsed.model_dump(mode="json")
    assert dumped["billAmount"] == "412.50" and dumped["surprise"] == {"kept": True}
    with pytest.raises(ValidationError):
        PurchaseOrder.model_validate({"number": "PO-1"})  # the id is required


def test_paging_follows_has_more(mocked: responses.RequestsMock) -> None:
    path = api_url("inventory/v2/tenant/{tenant}/purchase-orders")
    mocked.add(responses.GET, path, json=page([{"id": 1}, {"id": 2}], has_more=True, total=3))
    mocked.add(responses.GET, path, json=page([{"id": 3}], total=3, number=2))
    ids = [po.id for po in make_connector(page_size=2).iter_changed("purchase_orders", None, datetime.now(timezone.utc))]
    assert ids == [1, 2, 3]
    assert [query(c)["page"] for c in mocked.calls[1:]] == [["1"], ["2"]]
    assert query(mocked.calls[1])["pageSize"] == ["2"]


def test_stable_paging_steps_back_when_records_leave_the_window(mocked: responses.RequestsMock) -> None:
    """Id 2 is modified after page 1 is read: ids 4.. slide one place earlier. The walk must
    notice the smaller total, re-read page 1 and still deliver id 4 exactly once."""
    path = api_url("crm/v2/tenant/{tenant}/customers")
    mocked.add(responses.GET, path, json=page([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}],
                                              has_more=True, total=9))
    mocked.add(responses.GET, path, json=page([{"id": 5, "name": "e"}, {"id": 6, "name": "f"}, {"id": 7, "name": "g"}],
                                              has_more=True, total=8, number=2))
    mocked.add(responses.GET, path, json=page([{"id": 1, "name": "a"}, {"id": 3, "name": "c"}, {"id": 4, "name": "d"}],
                                              has_more=True, total=8))
    mocked.add(responses.GET, path, json=page([{"id": 5, "name": "e"}, {"id": 6, "name": "f"}, {"id": 7, "name": "g"}],
                                              has_more=True, total=8, number=2))
    mocked.add(responses.GET, path, json=page([{"id": 8, "name": "h"}, {"id": 9, "name": "i"}], total=8, number=3))
    ids = [c.id for c in make_connector(page_size=3).iter_changed("customers", None, datetime.now(timezone.utc))]
    assert ids == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert [query(c)["page"][0] for c in mocked.calls[1:]] == ["1", "2", "1", "2", "3"]


def test_pages_not_in_id_order_are_yielded_whole(mocked: responses.RequestsMock) -> None:
    path = api_url("accounting/v2/tenant/{tenant}/ap-bills")
    mocked.add(responses.GET, path, json=page([{"id": 9}, {"id": 4}], has_more=True, total=4))
    mocked.add(responses.GET, path, json=page([{"id": 7}, {"id": 2}], total=4, number=2))
    ids = [b.id for b in make_connector(page_size=2).iter_changed("ap_bills", None, datetime.now(timezone.utc))]
    assert ids == [9, 4, 7, 2]


def test_export_feed_request_and_resume_cursors(mocked: responses.RequestsMock) -> None:
    path = api_url("accounting/v2/tenant/{tenant}/export/invoices")
    mocked.add(responses.GET, path, json={"hasMore": True, "continueFrom": "C1", "data": [{"id": 1}, {"id": 2}]})
    mocked.add(responses.GET, path, json={"hasMore": False, "continueFrom": "C2", "data": [{"id": 3, "active": False}]})
    got = [(row.id, cursor) for row, cursor in make_connector(page_size=2).iter_export("invoices", "2024-01-01")]
    assert got == [(1, "2024-01-01"), (2, "C1"), (3, "C2")]
    assert query(mocked.calls[1]) == {"from": ["2024-01-01"]}  # the feed documents no page size
    assert query(mocked.calls[2]) == {"from": ["C1"]}
    with pytest.raises(ValueError):
        next(make_connector().iter_export("vendors"))


def test_get_uses_the_by_id_path_or_the_ids_filter(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.GET, api_url("inventory/v2/tenant/{tenant}/vendors/511"), json={"id": 511, "name": "Acme"})
    mocked.add(responses.GET, api_url("accounting/v2/tenant/{tenant}/payments"), json=page([{"id": 60001}]))
    mocked.add(responses.GET, api_url("accounting/v2/tenant/{tenant}/invoices"), json=page([]))
    connector = make_connector()
    vendor = connector.get("vendors", 511)
    assert isinstance(vendor, ServiceTitanVendor) and vendor.name == "Acme"
    assert connector.get("payments", 60001).id == 60001
    assert query(mocked.calls[-1])["ids"] == ["60001"] and query(mocked.calls[-1])["activeState"] == ["All"]
    with pytest.raises(NotFoundError):
        connector.get("invoices", 1)


def test_get_many_asks_for_fifty_ids_per_call(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.GET, api_url("accounting/v2/tenant/{tenant}/invoices"), json=page([]))
    make_connector().get_many("invoices", list(range(1, 121)) + [5])
    sent = [query(c)["ids"][0].split(",") for c in mocked.calls[1:]]
    assert [len(ids) for ids in sent] == [50, 50, 20]
    assert sent[0][:3] == ["1", "2", "3"] and sent[2][-1] == "120"


def test_create_vendor_fills_the_required_flags_and_address(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.POST, api_url("inventory/v2/tenant/{tenant}/vendors"), json={"id": 900})
    mocked.add(responses.GET, api_url("inventory/v2/tenant/{tenant}/vendors/900"), json={"id": 900, "name": "New Co"})
    vendor = make_connector().create_vendor({"name": "New Co", "address": {"street": "1 Main", "city": "Fresno"}})
    assert vendor.id == 900
    body = json.loads(mocked.calls[1].request.body)
    assert body == {"active": True, "isTruckReplenishment": False, "taxRate": 0.0, "restrictedMobileCreation": False,
                    "name": "New Co", "address": {"street": "1 Main", "unit": "", "city": "Fresno", "state": "",
                                                  "zip": "", "country": ""}}


def test_update_vendor_completes_a_partial_address(mocked: responses.RequestsMock) -> None:
    current = {"id": 511, "name": "Acme", "address": {"street": "100 Industrial Pkwy", "unit": "Suite 200",
                                                      "city": "Fresno", "state": "CA", "zip": "93725", "country": "USA"}}
    mocked.add(responses.GET, api_url("inventory/v2/tenant/{tenant}/vendors/511"), json=current)
    mocked.add(responses.PATCH, api_url("inventory/v2/tenant/{tenant}/vendors/511"), json={"id": 511})
    make_connector().update_vendor(511, {"phone": "5591234567", "address": {"unit": "Suite 300"}})
    patch = next(c for c in mocked.calls if c.request.method == "PATCH")
    assert json.loads(patch.request.body) == {"phone": "5591234567", "address": {
        "street": "100 Industrial Pkwy", "unit": "Suite 300", "city": "Fresno", "state": "CA", "zip": "93725",
        "country": "USA"}}


def test_vendor_writes_translate_read_view_names(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.PATCH, api_url("inventory/v2/tenant/{tenant}/vendors/511"), json={"id": 511})
    mocked.add(responses.GET, api_url("inventory/v2/tenant/{tenant}/vendors/511"), json={"id": 511, "name": "Acme"})
    make_connector().update_vendor(511, {"id": 511, "modifiedOn": "2024-01-01T00:00:00Z", "defaultTaxRate": 0.0725,
                                         "contactInfo": {"phone": "5590001111", "email": "ap@acme.example"}})
    patch = next(c for c in mocked.calls if c.request.method == "PATCH")
    assert json.loads(patch.request.body) == {"taxRate": 0.0725, "phone": "5590001111", "email": "ap@acme.example"}


def test_create_customer_adds_its_location_and_update_customer_patches(mocked: responses.RequestsMock) -> None:
    created = {"id": 10500, "name": "Sam Ortiz", "active": True, "locations": [{"id": 1}], "contacts": []}
    mocked.add(responses.POST, api_url("crm/v2/tenant/{tenant}/customers"), json=created)
    mocked.add(responses.PATCH, api_url("crm/v2/tenant/{tenant}/customers/10500"), json={**created, "doNotMail": True})
    connector = make_connector()
    address = {"street": "5 Elm", "city": "Clovis", "state": "CA", "zip": "93611", "country": "USA"}
    customer = connector.create_customer({"name": "Sam Ortiz", "address": address})
    assert customer.id == 10500 and customer.model_extra["locations"] == [{"id": 1}]
    assert json.loads(mocked.calls[1].request.body)["locations"] == [{"name": "Sam Ortiz", "address": address}]
    assert connector.update_customer(10500, {"doNotMail": True}).doNotMail is True
    assert json.loads(mocked.calls[2].request.body) == {"doNotMail": True}


def test_create_payment_posts_then_reads_the_list_view(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.POST, api_url("accounting/v2/tenant/{tenant}/payments"), json={"id": 61000, "typeId": 2,
                                                                                        "splits": []})
    mocked.add(responses.GET, api_url("accounting/v2/tenant/{tenant}/payments"),
               json=page([{"id": 61000, "total": "50.00", "appliedTo": [{"appliedId": 1, "appliedTo": 40001,
                                                                          "appliedAmount": "50.00"}]}]))
    payment = make_connector().create_payment({"typeId": 2, "amount": 50.0}, splits=[{"invoiceId": 40001, "amount": 50.0}])
    assert isinstance(payment, Payment) and payment.appliedTo[0].appliedAmount == Decimal("50.00")
    assert json.loads(mocked.calls[1].request.body) == {"typeId": 2, "amount": 50.0,
                                                        "splits": [{"invoiceId": 40001, "amount": 50.0}]}


def test_update_purchase_order_and_adjustment_send_the_patch_as_given(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.PATCH, api_url("inventory/v2/tenant/{tenant}/purchase-orders/90001"), json={"id": 90001})
    mocked.add(responses.GET, api_url("inventory/v2/tenant/{tenant}/purchase-orders/90001"), json={"id": 90001})
    mocked.add(responses.PATCH, api_url("inventory/v2/tenant/{tenant}/adjustments/30001"), json={"id": 30001})
    mocked.add(responses.GET, api_url("inventory/v2/tenant/{tenant}/adjustments"), json=page([{"id": 30001}]))
    connector = make_connector()
    connector.update_purchase_order(90001, {"memo": "Rush", "tax": 1.25})
    external = {"externalData": {"applicationGuid": "5f2b1c3a-8d4e-4f6a-9b0c-1d2e3f405162",
                                 "externalData": [{"key": "journal", "value": "J-1"}]}}
    assert connector.update_adjustment(30001, external).id == 30001
    patches = [json.loads(c.request.body) for c in mocked.calls if c.request.method == "PATCH"]
    assert patches == [{"memo": "Rush", "tax": 1.25}, external]


@pytest.mark.parametrize("entity, path, body, id_field", [
    ("inventory_bills", "accounting/v2/tenant/{tenant}/inventory-bills/markasexported", {"inventoryBillIds": [1, 2]},
     "inventoryBillId"),
    ("ap_bills", "accounting/v2/tenant/{tenant}/ap-bills/markasexported", {"billIds": [1, 2]}, "billId"),
    ("invoices", "accounting/v2/tenant/{tenant}/invoices/markasexported", [{"invoiceId": 1}, {"invoiceId": 2}],
     "invoiceId"),
    ("ap_payments", "accounting/v2/tenant/{tenant}/ap-payments/markasexported", [{"apPaymentId": 1}, {"apPaymentId": 2}],
     "apPaymentId"),
])
def test_mark_exported_bodies_and_verdicts(mocked: responses.RequestsMock, entity: str, path: str, body: Any,
                                           id_field: str) -> None:
    mocked.add(responses.POST, api_url(path), json=[{id_field: 1, "success": True, "errorMessage": None},
                                                    {id_field: 2, "success": False, "errorMessage": "Not found."}])
    verdicts = make_connector().mark_exported(entity, [1, 2, 2])
    assert json.loads(mocked.calls[1].request.body) == body
    assert [(v.id, v.success, v.error_message) for v in verdicts] == [(1, True, None), (2, False, "Not found.")]


def test_mark_payments_exported_uses_the_status_endpoint(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.POST, api_url("accounting/v2/tenant/{tenant}/payments/status"), body=b"")
    verdicts = make_connector().mark_exported("payments", [61000])
    assert json.loads(mocked.calls[1].request.body) == {"paymentIds": [61000], "status": "Exported"}
    assert [(v.id, v.success) for v in verdicts] == [(61000, True)]
    with pytest.raises(ValueError):
        make_connector().mark_exported("vendors", [1])


# ---- errors -------------------------------------------------------------------------------------

PROBLEM = {"type": "https://tools.ietf.org/html/rfc7231#section-6.5.1", "title": "One or more validation errors occurred.",
           "status": 400, "traceId": "00-abc-01", "errors": {"VendorId": ["Vendor not found."]}, "data": {}}


def test_validation_error_is_fatal_with_the_vendor_message(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.PATCH, api_url("inventory/v2/tenant/{tenant}/purchase-orders/1"), json=PROBLEM, status=400)
    with pytest.raises(FatalError) as caught:
        make_connector().update_purchase_order(1, {"vendorId": 5})
    assert caught.value.status == 400
    assert caught.value.message == "One or more validation errors occurred. (VendorId: Vendor not found.)"
    assert caught.value.details["errors"] == {"VendorId": ["Vendor not found."]}
    assert len([c for c in mocked.calls if c.request.method == "PATCH"]) == 1  # a 400 is not retried


@pytest.mark.parametrize("status, error", [(404, NotFoundError), (403, FatalError), (409, FatalError)])
def test_other_statuses_map_to_the_taxonomy(mocked: responses.RequestsMock, status: int, error: type) -> None:
    mocked.add(responses.GET, api_url("inventory/v2/tenant/{tenant}/vendors/5"),
               json={**PROBLEM, "status": status, "title": f"Problem {status}", "errors": {}}, status=status)
    with pytest.raises(error) as caught:
        make_connector().get("vendors", 5)
    assert caught.value.message == f"Problem {status}"


def test_transient_errors_are_retried_honouring_retry_after(mocked: responses.RequestsMock) -> None:
    path = api_url("settings/v2/tenant/{tenant}/business-units/1")
    mocked.add(responses.GET, path, json={**PROBLEM, "status": 429, "title": "Too Many Requests", "errors": {}},
               status=429, headers={"Retry-After": "0"})
    mocked.add(responses.GET, path, json={**PROBLEM, "status": 503, "title": "Service Unavailable", "errors": {}},
               status=503)
    mocked.add(responses.GET, path, json={"id": 1, "name": "HVAC"})
    assert make_connector().get("business_units", 1).name == "HVAC"
    assert [c.response.status_code for c in mocked.calls[1:]] == [429, 503, 200]


def test_patches_are_retried_but_creates_are_not_after_an_ambiguous_failure(mocked: responses.RequestsMock) -> None:
    """A 502 may hide a write the vendor made: a PATCH can be repeated, a POST must be looked up first."""
    bad_gateway = {**PROBLEM, "status": 502, "title": "Bad Gateway", "errors": {}}
    patch_path = api_url("inventory/v2/tenant/{tenant}/purchase-orders/90001")
    mocked.add(responses.PATCH, patch_path, json=bad_gateway, status=502)
    mocked.add(responses.PATCH, patch_path, json={"id": 90001})
    mocked.add(responses.GET, patch_path, json={"id": 90001, "summary": "Rush"})
    mocked.add(responses.POST, api_url("inventory/v2/tenant/{tenant}/vendors"), json=bad_gateway, status=502)
    connector = make_connector()
    assert connector.update_purchase_order(90001, {"memo": "Rush"}).summary == "Rush"
    with pytest.raises(RetriableError):
        connector.create_vendor({"name": "Maybe Created Co"})
    methods = [c.request.method for c in mocked.calls[1:]]
    assert methods == ["PATCH", "PATCH", "GET", "POST"]


def test_retries_give_up_with_a_retriable_error(mocked: responses.RequestsMock) -> None:
    mocked.add(responses.GET, api_url("settings/v2/tenant/{tenant}/business-units/1"),
               json={**PROBLEM, "status": 503, "title": "Service Unavailable", "errors": {}}, status=503)
    with pytest.raises(RetriableError) as caught:
        make_connector(retry={"base": 0.01, "max_wait": 0.05, "max_tries": 2}).get("business_units", 1)
    assert caught.value.message == "Service Unavailable"


def test_a_refused_token_is_refreshed_once(mocked: responses.RequestsMock) -> None:
    mocked.replace(responses.POST, TOKEN_URL, json={"access_token": "tok-1", "expires_in": 900})
    mocked.add(responses.POST, TOKEN_URL, json={"access_token": "tok-2", "expires_in": 900})
    path = api_url("settings/v2/tenant/{tenant}/business-units/1")
    mocked.add(responses.GET, path, json={**PROBLEM, "status": 401, "title": "Unauthorized", "errors": {}}, status=401)
    mocked.add(responses.GET, path, json={"id": 1, "name": "HVAC"})
    assert make_connector().get("business_units", 1).id == 1
    gets = [c for c in mocked.calls if c.request.method == "GET"]
    assert [c.request.headers["Authorization"] for c in gets] == ["Bearer tok-1", "Bearer tok-2"]


def test_bad_client_credentials_raise_auth_error_without_the_secret(mocked: responses.RequestsMock) -> None:
    mocked.replace(responses.POST, TOKEN_URL, json={"error": "invalid_client"}, status=400)
    with pytest.raises(AuthError) as caught:
        make_connector().get("business_units", 1)
    assert "invalid_client" in caught.value.message
    rendered = f"{caught.value} {caught.value.to_dict()}"
    assert SECRET not in rendered and APP_KEY not in rendered


def test_config_and_credentials_are_validated() -> None:
    with pytest.raises(ValidationError):
        ServiceTitanConnector.Config(tenant=1, page_size=5001)
    with pytest.raises(ValidationError):
        ServiceTitanConnector.Config(tenant=1, tenat=2)
    config = ServiceTitanConnector.Config(tenant=1)
    assert (config.api_base, config.token_url) == ("https://api.servicetitan.io", "https://auth.servicetitan.io/connect/token")
    assert (config.token_ttl, config.page_size, config.rate_limit_per_second) == (900, 500, 60)
    credentials = ServiceTitanConnector.Credentials(client_id="c", client_secret=SECRET, app_key=APP_KEY)
    assert SECRET not in repr(credentials) and APP_KEY not in repr(credentials)


def test_rate_limit_key_is_app_and_tenant_without_the_key_itself() -> None:
    connector = make_connector()
    assert connector.client.rate_key.startswith("servicetitan:") and connector.client.rate_key.endswith(f":{TENANT}")
    assert APP_KEY not in connector.client.rate_key and connector.client.rate_limit.requests == 60
    assert make_connector(rate_limit_per_second=0).client.rate_limiter is None


def test_webhook_signatures_follow_the_configured_header_and_encoding() -> None:
    body = b'{"eventId":"e1","eventType":"invoice.created"}'
    key = "h" * 40
    hex_connector = make_connector()
    assert hex_connector.verify_webhook(body, {"x-servicetitan-signature": sign_for_tests(body, key)}, [key])
    assert not hex_connector.verify_webhook(body, {"X-ServiceTitan-Signature": sign_for_tests(body, "x" * 40)}, [key])
    assert not hex_connector.verify_webhook(body, {}, [key])
    b64 = make_connector(webhook_signature_header="X-Sig", webhook_signature_encoding="base64")
    signature = sign_for_tests(body, key, "base64")
    assert b64.verify_webhook(body, {"X-Sig": signature}, ["old" * 11, key])  # previous key during a rotation
    assert not b64.verify_webhook(body + b" ", {"X-Sig": signature}, [key])
    assert hex_connector.verify_webhook(body, {"X-ServiceTitan-Signature": sign_webhook(key, body, "hex")}, [key])
    assert hex_connector.verify_webhook(body, {"X-ServiceTitan-Signature": "sha256=" + sign_for_tests(body, key).upper()},
                                        [key])  # the receiver's rules: a scheme prefix, either case of hex
    assert not hex_connector.verify_webhook(body, {"X-ServiceTitan-Signature": "sïgnature ✓"}, [key])  # no crash


# ---- contracts against the sandbox -----------------------------------------------------------------

BIG = 2500


@pytest.fixture(scope="module")
def big() -> Iterator[Any]:
    run = start_sandbox(ServiceTitanSandbox(SandboxOptions(seed=5, records=BIG)))
    yield run
    run.stop()


@pytest.fixture
def big_sandbox(big: Any) -> Iterator[ServiceTitanSandbox]:
    requests.post(f"{big.url}/_sandbox/faults", json={"replace": True}, timeout=5).raise_for_status()
    big.sandbox.rate.reset()
    yield big.sandbox
    requests.post(f"{big.url}/_sandbox/faults", json={"replace": True}, timeout=5).raise_for_status()


@pytest.fixture(scope="module")
def small() -> Iterator[Any]:
    run = start_sandbox(ServiceTitanSandbox(SandboxOptions(seed=9, records=60)))
    yield run
    run.stop()


@pytest.fixture
def sandbox(small: Any) -> ServiceTitanSandbox:
    requests.post(f"{small.url}/_sandbox/reset", json={}, timeout=10).raise_for_status()
    return small.sandbox


def connect(sandbox: ServiceTitanSandbox, **config: Any) -> ServiceTitanConnector:
    settings, credentials = ServiceTitanConnector.settings_from_sandbox_info(sandbox.info())
    return ServiceTitanConnector.create({**settings, **CONTRACT_RETRY, **config}, credentials, build_runtime(""))


def control(sandbox: ServiceTitanSandbox, path: str, body: dict[str, Any] | None = None) -> Any:
    response = requests.post(f"{sandbox.base_url}/_sandbox/{path}", json=body or {}, timeout=10)
    response.raise_for_status()
    return response.json()


def now() -> datetime:
    return datetime.now(timezone.utc)


def test_settings_from_sandbox_info(big_sandbox: ServiceTitanSandbox) -> None:
    config, credentials = ServiceTitanConnector.settings_from_sandbox_info(big_sandbox.info())
    assert config == {"api_base": big_sandbox.base_url, "token_url": f"{big_sandbox.base_url}/connect/token",
                      "tenant": big_sandbox.tenant_id}
    assert set(credentials) == {"client_id", "client_secret", "app_key"}


def test_full_pagination_of_thousands_of_records(big_sandbox: ServiceTitanSandbox) -> None:
    connector = connect(big_sandbox)
    orders = list(connector.iter_changed("purchase_orders", None, now()))
    assert len(orders) == BIG and len({o.id for o in orders}) == BIG
    assert all(isinstance(o, PurchaseOrder) and o.items for o in orders)
    assert connector.call_count == 1 + BIG // 500  # one token, five pages of 500
    customers = {c.id for c in connector.iter_changed("customers", None, now())}
    assert customers == set(big_sandbox.tables["customers"].rows)
    bills = list(connector.iter_changed("inventory_bills", None, now()))
    assert {b.id for b in bills} == set(big_sandbox.tables["inventory_bills"].rows)
    assert all(isinstance(b.billAmount, Decimal) for b in bills)


def test_token_expiring_mid_pagination(big_sandbox: ServiceTitanSandbox) -> None:
    connector = connect(big_sandbox, page_size=100)
    issued_before = big_sandbox.stats.tokens_issued
    seen = []
    for index, invoice in enumerate(connector.iter_changed("invoices", None, now())):
        seen.append(invoice.id)
        if index == 450:
            control(big_sandbox, "expire-tokens")
    assert len(seen) == BIG and len(set(seen)) == BIG
    assert big_sandbox.stats.tokens_issued == issued_before + 2  # the first token and one replacement


def test_429_with_retry_after_is_waited_out(big_sandbox: ServiceTitanSandbox) -> None:
    connector = connect(big_sandbox)
    connector.check()  # a token first, so the burst meets API calls
    limited_before = big_sandbox.stats.rate_limited
    control(big_sandbox, "faults", {"burst_429": 1, "retry_after": 1})
    started = time.perf_counter()
    units = list(connector.iter_changed("business_units", None, now()))
    assert len(units) == 6
    assert time.perf_counter() - started >= 1.0
    assert big_sandbox.stats.rate_limited == limited_before + 1


def test_server_errors_then_success(big_sandbox: ServiceTitanSandbox) -> None:
    connector = connect(big_sandbox)
    connector.check()
    control(big_sandbox, "faults", {"fail_next": 2, "error_status": 503})
    assert len(list(connector.iter_changed("gl_accounts", None, now()))) == len(big_sandbox.tables["gl_accounts"].rows)
    assert big_sandbox.stats.snapshot()["by_endpoint"]["GET /accounting/v2/tenant/<int:tenant>/gl-accounts"]["503"] >= 2


def test_stable_paging_survives_records_changing_mid_poll(big_sandbox: ServiceTitanSandbox) -> None:
    """Records on pages already read are modified mid-walk; none that stays in the window is lost."""
    def walk(stable: bool) -> tuple[set[int], set[int]]:
        until = now()
        time.sleep(0.005)
        connector = connect(big_sandbox, page_size=100, stable_paging=stable)
        ids = set(big_sandbox.tables["customers"].rows)
        seen: set[int] = set()
        victims = sorted(ids)[:150:10]
        for index, customer in enumerate(connector.iter_changed("customers", None, until)):
            seen.add(customer.id)
            if index == 250:  # while page 3 is being read, 15 records from pages 1-2 change
                with big_sandbox.lock:
                    for victim in victims:
                        big_sandbox.put_entity("customers", {"id": victim, "doNotService": True})
        stayed = ids - set(victims)
        return seen, stayed

    seen, stayed = walk(stable=True)
    assert stayed <= seen
    seen, stayed = walk(stable=False)
    assert not stayed <= seen  # plain offset paging skips records: the reason for stable paging


def test_change_detection_with_a_watermark(big_sandbox: ServiceTitanSandbox) -> None:
    connector = connect(big_sandbox)
    mark = now()
    time.sleep(0.005)
    changed = control(big_sandbox, "tick/vendors", {"count": 4})["changed"]
    poll_start = now()
    found = [v.id for v in connector.iter_changed("vendors", mark, poll_start)]
    assert sorted(found) == sorted({c["id"] for c in changed})
    newest = max(v.modifiedOn for v in connector.get_many("vendors", found))
    again = [v.id for v in connector.iter_changed("vendors", newest, now())]
    assert again and set(again) <= set(found)  # >= at the boundary: the newest row is read again, nothing older
    assert list(connector.iter_changed("vendors", poll_start, poll_start)) == []


def test_export_feed_walk_and_resume(big_sandbox: ServiceTitanSandbox) -> None:
    connector = connect(big_sandbox)
    cursor = None
    ids = []
    for customer, cursor in connector.iter_export("customers"):
        ids.append(customer.id)
    assert sorted(ids) == sorted(big_sandbox.tables["customers"].rows) and cursor
    target = ids[10]
    big_sandbox.put_entity("customers", {"id": target, "active": False})
    fresh = [(c.id, c.active) for c, _ in connector.iter_export("customers", cursor)]
    assert fresh == [(target, False)]


def test_get_and_get_many_against_the_sandbox(big_sandbox: ServiceTitanSandbox) -> None:
    connector = connect(big_sandbox)
    payment_ids = list(big_sandbox.tables["payments"].rows)[:120]
    payments = connector.get_many("payments", payment_ids)
    assert sorted(p.id for p in payments) == sorted(payment_ids)
    assert all(p.appliedTo and p.appliedTo[0].appliedTo in big_sandbox.tables["invoices"].rows for p in payments)
    po = connector.get("purchase_orders", next(iter(big_sandbox.tables["purchase_orders"].rows)))
    assert isinstance(po, PurchaseOrder) and po.items[0].total == pytest.approx(po.items[0].quantity * po.items[0].cost)
    with pytest.raises(NotFoundError):
        connector.get("purchase_orders", 1)
    with pytest.raises(NotFoundError):
        connector.get("adjustments", 1)


def test_check_reports_every_step(big_sandbox: ServiceTitanSandbox) -> None:
    steps = connect(big_sandbox).check()
    assert [s.step for s in steps[:2]] == ["token", "business-units?pageSize=1"]
    assert {s.step for s in steps[2:]} == set(ENTITIES) - {"business_units"}
    assert all(s.ok for s in steps), [s for s in steps if not s.ok]
    settings, credentials = ServiceTitanConnector.settings_from_sandbox_info(big_sandbox.info())
    wrong_key = ServiceTitanConnector.create({**settings, **FAST_RETRY}, {**credentials, "app_key": "ak1.wrong"},
                                             build_runtime(""))
    failed = wrong_key.check()
    assert failed[0].ok and not any(s.ok for s in failed[1:])
    assert "Application key is invalid" in failed[1].detail and "ak1.wrong" not in failed[1].detail


# ---- writes end to end ---------------------------------------------------------------------------------

def test_vendor_create_find_and_update(sandbox: ServiceTitanSandbox) -> None:
    connector = connect(sandbox)
    created = connector.create_vendor({"name": "Kings River Supply", "phone": "5595550199",
                                       "address": {"street": "12 River Rd", "city": "Sanger", "state": "CA",
                                                   "zip": "93657", "country": "USA"}})
    assert isinstance(created, Vendor) and created.contactInfo.phone == "5595550199"
    assert connector.find_vendor_by_name("  kings river   SUPPLY ").id == created.id
    assert connector.find_vendor_by_name("Kings River Supply Co") is None
    updated = connector.update_vendor(created.id, {"address": {"unit": "Bay 4"}, "memo": "Net 15"})
    assert updated.address.unit == "Bay 4" and updated.address.street == "12 River Rd" and updated.memo == "Net 15"
    assert updated.modifiedOn > created.modifiedOn
    guid = "9a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    connector.update_vendor(created.id, {"externalData": {"applicationGuid": guid,
                                                          "externalData": [{"key": "epicorVendorNum", "value": "KRS01"}]}})
    found = connector.find_vendor_by_external_key(guid, "epicorVendorNum", "KRS01")
    assert found is not None and found.id == created.id
    assert found.externalData[0].value == "KRS01"
    with pytest.raises(FatalError) as duplicate:
        connector.create_vendor({"name": "Kings River Supply"})
    assert "already exists" in duplicate.value.message


def test_vendor_contact_changes_from_the_read_view_shape_reach_the_vendor(sandbox: ServiceTitanSandbox) -> None:
    connector = connect(sandbox)
    vendor = connector.get("vendors", next(iter(sandbox.tables["vendors"].rows)))
    contact = {**vendor.contactInfo.model_dump(), "phone": "5597770000", "email": "billing@changed.example"}
    updated = connector.update_vendor(vendor.id, {"contactInfo": contact})
    assert (updated.contactInfo.phone, updated.contactInfo.email) == ("5597770000", "billing@changed.example")
    assert updated.contactInfo.firstName == vendor.contactInfo.firstName


def test_bills_for_purchase_order(sandbox: ServiceTitanSandbox) -> None:
    connector = connect(sandbox)
    bill = next(iter(sandbox.tables["inventory_bills"].rows.values())).view
    assert [b.id for b in connector.bills_for_purchase_order(bill["purchaseOrderId"])] == [bill["id"]]
    pending = next(r.view["id"] for r in sandbox.tables["purchase_orders"].rows.values() if r.view["status"] == "Pending")
    assert connector.bills_for_purchase_order(pending) == []
    sandbox.put_entity("purchase_orders", {"id": pending, "status": "Received"})
    [created] = connector.bills_for_purchase_order(pending)
    assert created.purchaseOrderId == pending and created.items
    assert connector.bills_for_purchase_order(1) == []
    number = sandbox.tables["purchase_orders"].rows[pending].view["number"]
    before = connector.call_count
    assert [b.id for b in connector.bills_for_purchase_order(pending, number)] == [created.id]
    assert connector.call_count == before + 1  # the number given: only the bills are listed


def test_customer_create_find_and_update(sandbox: ServiceTitanSandbox) -> None:
    connector = connect(sandbox)
    address = {"street": "700 Pollasky Ave", "city": "Clovis", "state": "CA", "zip": "93612", "country": "USA"}
    customer = connector.create_customer({"name": "Old Town Clovis Dental", "type": "Commercial", "address": address})
    assert customer.id in sandbox.tables["customers"].rows and customer.model_extra["locations"]
    assert connector.find_customer_by_name("old town clovis dental").id == customer.id
    sandbox.put_entity("customers", {"id": customer.id, "address": {"latitude": 36.82, "longitude": -119.70}})
    updated = connector.update_customer(customer.id, {"address": {"street": "701 Pollasky Ave"}, "doNotMail": True})
    assert updated.address.street == "701 Pollasky Ave" and updated.address.city == "Clovis"
    assert updated.address.latitude == pytest.approx(36.82) and updated.doNotMail is True


def test_payment_applied_to_an_invoice(sandbox: ServiceTitanSandbox) -> None:
    connector = connect(sandbox)
    invoice = next(i for i in connector.iter_changed("invoices", None, now())
                   if i.balance == i.total and i.total > 40)
    payment = connector.create_payment(typeId=2, amount=40.0, checkNumber="2001", customerId=invoice.customer.id,
                                       splits=[{"invoiceId": invoice.id, "amount": 40.0}])
    assert payment.total == Decimal("40.00") and payment.appliedTo[0].appliedTo == invoice.id
    assert connector.get("invoices", invoice.id).balance == invoice.total - Decimal("40.00")
    assert [p.id for p in connector.find_payments_for_invoice(invoice.id)] == [payment.id]
    assert connector.mark_exported("payments", [payment.id])[0].success
    assert connector.get("payments", payment.id).syncStatus == "Exported"


def test_purchase_order_update_and_the_vendor_refusal(sandbox: ServiceTitanSandbox) -> None:
    connector = connect(sandbox)
    orders = list(connector.iter_changed("purchase_orders", None, now()))
    pending = next(o for o in orders if o.status == "Pending")
    item = pending.items[0]
    patch = {"memo": "Call before delivery", "items": [{"id": item.id, "skuId": item.skuId, "description": item.description,
                                                        "vendorPartNumber": item.vendorPartNumber, "quantity": 3,
                                                        "cost": item.cost}]}
    updated = connector.update_purchase_order(pending.id, patch)
    assert updated.summary == "Call before delivery" and updated.items[0].quantity == 3
    assert connector.find_purchase_order_by_number(pending.number).id == pending.id
    received = next(o for o in orders if o.status == "Received")
    with pytest.raises(FatalError) as refused:
        connector.update_purchase_order(received.id, {"memo": "too late"})
    assert refused.value.status == 400
    assert f"Purchase order {received.number} is Received and can no longer be updated." in refused.value.message
    with pytest.raises(FatalError) as unknown_vendor:
        connector.update_purchase_order(pending.id, {"vendorId": 999_999})
    assert "VendorId: Vendor not found." in unknown_vendor.value.message


def test_create_purchase_order_and_adjustment_external_data(sandbox: ServiceTitanSandbox) -> None:
    connector = connect(sandbox)
    vendor = next(iter(sandbox.tables["vendors"].rows))
    po = connector.create_purchase_order({
        "vendorId": vendor, "typeId": 1, "businessUnitId": 1, "inventoryLocationId": 11, "impactsTechnicianPayroll": False,
        "shipTo": {"description": "Main", "address": {"street": "2900 S Chestnut Ave", "unit": "", "city": "Fresno",
                                                      "state": "CA", "zip": "93725", "country": "USA"}},
        "date": "2026-02-01T00:00:00Z", "requiredOn": "2026-02-03T00:00:00Z", "tax": 0, "shipping": 0,
        "items": [{"skuId": 8802, "description": "7/8 copper", "vendorPartNumber": "CU78", "quantity": 6, "cost": 64.5}]})
    assert po.status == "Pending" and po.total == pytest.approx(387.0)
    adjustment = next(iter(sandbox.tables["adjustments"].rows))
    guid = "0b7c8d9e-1f20-4a31-8b42-c53d64e75f86"
    updated = connector.update_adjustment(adjustment, {"externalData": {"applicationGuid": guid, "externalData": [
        {"key": "sysproJournal", "value": "J-9"}]}})
    assert updated.id == adjustment and sandbox.tables["adjustments"].rows[adjustment].external[guid] == {
        "sysproJournal": "J-9"}


def test_mark_exported_end_to_end(sandbox: ServiceTitanSandbox) -> None:
    connector = connect(sandbox)
    for entity in ("inventory_bills", "ap_bills", "invoices", "ap_payments"):
        target = next(r.view["id"] for r in sandbox.tables[entity].rows.values() if r.view["syncStatus"] != "Exported")
        verdicts = connector.mark_exported(entity, [target, 3])
        assert [(v.id, v.success) for v in verdicts] == [(target, True), (3, False)] and verdicts[1].error_message
        assert sandbox.tables[entity].rows[target].view["syncStatus"] == "Exported"


def test_no_secret_appears_in_any_error_message(sandbox: ServiceTitanSandbox) -> None:
    settings, credentials = ServiceTitanConnector.settings_from_sandbox_info(sandbox.info())
    wrong_secret = "cs1.this-secret-is-wrong-but-still-secret"
    bad = ServiceTitanConnector.create({**settings, **FAST_RETRY}, {**credentials, "client_secret": wrong_secret},
                                       build_runtime(""))
    with pytest.raises(AuthError) as refused:
        list(bad.iter_changed("vendors", None, now()))
    connector = connect(sandbox)
    with pytest.raises(FatalError) as invalid:
        connector.create_vendor({"name": ""})
    token = connector.client.auth.cache.peek(connector._provider).access_token
    for error in (refused.value, invalid.value):
        text = f"{error} {error.to_dict()} {error!r}"
        for secret in (wrong_secret, credentials["client_secret"], credentials["app_key"], token):
            assert secret not in text
    assert "invalid_client" in refused.value.message and "Name" in invalid.value.message


def test_connector_reads_webhook_data_the_sandbox_signs(sandbox: ServiceTitanSandbox) -> None:
    """The sandbox's delivery, checked with the connector's verifier, parses into the model."""
    received: list[tuple[bytes, dict[str, str]]] = []
    done = threading.Event()

    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            received.append((self.rfile.read(int(self.headers["Content-Length"])), dict(self.headers)))
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()
            done.set()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        key = "w" * 48
        control(sandbox, "webhooks", {"url": f"http://127.0.0.1:{server.server_port}/", "hmac_key": key,
                                      "events": ["vendor.created"]})
        connector = connect(sandbox)
        vendor = connector.create_vendor({"name": "Signed Vendor Supply"})
        assert done.wait(5)
        body, headers = received[0]
        assert connector.verify_webhook(body, headers, [key])
        event = json.loads(body)
        assert Vendor.model_validate(event["data"]).id == vendor.id
    finally:
        server.shutdown()
        server.server_close()


def test_sandbox_backfill_window_excludes_future_changes(sandbox: ServiceTitanSandbox) -> None:
    connector = connect(sandbox)
    until = now() - timedelta(milliseconds=5)
    sandbox.put_entity("vendors", {"name": "After The Poll Started"})
    names = {v.name for v in connector.iter_changed("vendors", None, until)}
    assert "After The Poll Started" not in names and names
