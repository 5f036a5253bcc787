"""ServiceTitan -> Acumatica end to end on the real fleet: a gunicorn receiver, Celery
worker processes (and beat for the catch-up poll), Redis, PostgreSQL, and both vendor
sandboxes over HTTP. Every outcome is checked through Acumatica's own contract-based REST
API on the sandbox (OAuth token, value objects), not through our tables alone.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from decimal import Decimal
from typing import Any

import pytest
import redis
import requests
from click.testing import CliRunner

from sandboxes import SandboxOptions, create_sandbox, start_sandbox
from tests.conftest import start_gunicorn, wait_until
from tests.pair_fleet import PairFleet

pytestmark = pytest.mark.fleet

HMAC_KEY = "e2e-acu-hmac-key-0123456789abcdef012345"
QUEUES = "mlconnector,servicetitan-acumatica"
FAST_RETRY = {"base": 0.05, "max_wait": 2}  # in-call retries kept short so the storms finish quickly
HVAC, PLUMBING = "HVAC - Residential Service", "Plumbing - Service"


def _unwrap(value: Any) -> Any:
    """Acumatica's value objects, as a reader of its API sees the values."""
    if isinstance(value, dict):
        if set(value) <= {"value", "error"}:
            return value.get("value")
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


class Fleet(PairFleet):
    def __init__(self, st: Any, acu: Any, receiver: str, env: dict[str, str], worker: Any, start_worker: Any) -> None:
        self.st, self.acu, self.receiver, self.env = st, acu, receiver, env
        self.worker, self.start_worker = worker, start_worker
        self._token: str | None = None

    # -- ServiceTitan side (the sandbox's control API, as office staff creating records) --
    def st_put(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.sandbox_put(self.st, entity, payload)

    def st_get(self, entity: str) -> list[dict[str, Any]]:
        return self.sandbox_rows(self.st, entity)

    def unit(self, name: str) -> dict[str, Any]:
        return next({"id": u["id"], "name": u["name"]} for u in self.st_get("business_units") if u["name"] == name)

    def new_customer(self, name: str) -> dict[str, Any]:
        return self.st_put("customers", {"name": name, "address": {"street": "40 Orchard Ln", "city": "Clovis",
                                                                   "state": "CA", "zip": "93611", "country": "USA"}})

    def new_invoice(self, customer: dict[str, Any], unit: str, lines: list[tuple[str, str, str]]) -> dict[str, Any]:
        items = [{"description": d, "quantity": q, "price": p, "type": "Service", "order": n}
                 for n, (d, q, p) in enumerate(lines, 1)]
        return self.st_put("invoices", {"customer": {"id": customer["id"], "name": customer["name"]},
                                        "businessUnit": self.unit(unit), "items": items})

    def new_payment(self, customer: dict[str, Any], invoice: dict[str, Any]) -> dict[str, Any]:
        return self.st_put("payments", {
            "customer": {"id": customer["id"], "name": customer["name"]}, "total": invoice["total"], "unappliedAmount": "0.00",
            "appliedTo": [{"appliedId": invoice["id"] * 10, "appliedTo": invoice["id"], "appliedAmount": invoice["total"],
                           "appliedOn": invoice["invoiceDate"], "appliedBy": "Office",
                           "appliedToReferenceNumber": invoice["referenceNumber"]}]})

    def new_vendor(self, name: str) -> dict[str, Any]:
        return self.st_put("vendors", {"name": name, "address": {"street": "12 Yard Rd", "city": "Fresno", "state": "CA",
                                                                 "zip": "93701", "country": "USA"}})

    def received_bill(self, vendor_id: int) -> dict[str, Any]:
        """A received purchase order: ServiceTitan generates its inventory bill and fires webhooks."""
        po = self.st_put("purchase_orders", {"vendorId": vendor_id, "status": "Received"})
        return wait_until(lambda: next((b for b in self.st_get("inventory_bills") if b["purchaseOrderId"] == po["id"]), None),
                          timeout=10, message=f"no bill for PO {po['id']}")

    # -- Acumatica side, read through its contract-based REST API --
    def acu_get(self, entity: str, params: dict[str, Any] | None = None, path: str = "") -> Any:
        info = self.acu.info()
        if self._token is None:
            creds = info["credentials"]
            answer = requests.post(info["token_url"], data={
                "grant_type": "password", "client_id": creds["client_id"], "client_secret": creds["client_secret"],
                "username": creds["username"], "password": creds["password"], "scope": "api"}, timeout=10)
            assert answer.status_code == 200, answer.text
            self._token = answer.json()["access_token"]
        url = f"{info['api_base']}/entity/Default/{info['credentials']['endpoint_version']}/{entity}{path}"
        response = requests.get(url, params=params, headers={"Authorization": f"Bearer {self._token}"}, timeout=10)
        if response.status_code == 401:
            self._token = None
            return self.acu_get(entity, params, path)
        assert response.status_code == 200, response.text
        return _unwrap(response.json())

    def acu_put(self, entity: str, fields: dict[str, Any]) -> dict[str, Any]:
        """An update made in Acumatica by its users, through its API (If-Match: update only)."""
        info = self.acu.info()
        self.acu_get(entity, {"$top": 1})  # a valid token
        response = requests.put(f"{info['api_base']}/entity/Default/{info['credentials']['endpoint_version']}/{entity}",
                                json={k: {"value": v} for k, v in fields.items()}, timeout=10,
                                headers={"Authorization": f"Bearer {self._token}", "If-Match": "*"})
        assert response.status_code == 200, response.text
        return _unwrap(response.json())

    def acu_invoices(self, number: str) -> list[dict[str, Any]]:
        return self.acu_get("Invoice", {"$filter": f"CustomerOrder eq '{number}'", "$expand": "Details"})

    def acu_payments(self, external_ref: str) -> list[dict[str, Any]]:
        return self.acu_get("Payment", {"$filter": f"ExternalRef eq '{external_ref}'", "$expand": "DocumentsToApply"})

    def acu_bills(self, vendor_ref: str) -> list[dict[str, Any]]:
        return self.acu_get("Bill", {"$filter": f"VendorRef eq '{vendor_ref}'", "$expand": "Details"})

    def acu_release_invoice(self, reference_nbr: str) -> None:
        """What an accountant does after review: take the invoice off hold and release it."""
        info = self.acu.info()
        base = f"{info['api_base']}/entity/Default/{info['credentials']['endpoint_version']}/Invoice"
        headers = {"Authorization": f"Bearer {self._token}"}
        body = {"Type": {"value": "Invoice"}, "ReferenceNbr": {"value": reference_nbr}, "Hold": {"value": False}}
        assert requests.put(base, json=body, headers={**headers, "If-Match": "*"}, timeout=10).status_code == 200
        answer = requests.post(f"{base}/ReleaseInvoice", json={"entity": {"Type": {"value": "Invoice"},
                                                                          "ReferenceNbr": {"value": reference_nbr}}},
                               headers=headers, timeout=10)
        assert answer.status_code == 202, answer.text
        status_url = info["api_base"] + answer.headers["Location"]
        wait_until(lambda: requests.get(status_url, headers=headers, timeout=10).status_code == 204, timeout=10)

    # -- our side --
    def send_raw(self, body: bytes) -> requests.Response:
        from mlconnector.webhook_signature import sign_for_tests

        return requests.post(f"{self.receiver}/webhooks/servicetitan/acme", data=body, timeout=10,
                             headers={"Content-Type": "application/json",
                                      "X-ServiceTitan-Signature": sign_for_tests(body, HMAC_KEY)})

    def poll(self, flow: str) -> Any:
        from mlconnector import engine
        from mlconnector.tasks import send

        result = engine.poll_flow("acme", flow)
        send(result.enqueue)
        return result


@pytest.fixture
def fleet(configure, fresh_pg: str, redis_url: str, start_worker, start_service, request) -> Any:
    from mlconnector.harness import SandboxSet, register

    options = getattr(request, "param", {})
    redis.Redis.from_url(redis_url).flushdb()
    env = configure(fresh_pg, redis_url, MLCONNECTOR_SWEEP_AFTER_SECONDS="2", MLCONNECTOR_MAX_DELIVERIES="10")
    st = start_sandbox(create_sandbox("servicetitan", SandboxOptions(seed=4, records=3), webhook_retry_scale=0.02))
    acu = start_sandbox(create_sandbox("acumatica", SandboxOptions(seed=4, records=3)))
    register("acme", "servicetitan-acumatica", SandboxSet({"servicetitan": st, "acumatica": acu}), webhook_key=HMAC_KEY,
             overrides={"systems": {"servicetitan": {"retry": FAST_RETRY}, "acumatica": {"retry": FAST_RETRY}},
                        "poll_seconds": options.get("poll_seconds", {}), **options.get("config", {})})
    receiver = start_gunicorn(start_service, env)
    worker = start_worker(env, queues=QUEUES, concurrency=2)
    requests.post(f"{st.url}/_sandbox/webhooks", json={"url": f"{receiver}/webhooks/servicetitan/acme",
                                                        "hmac_key": HMAC_KEY, "events": ["*"]}, timeout=10).raise_for_status()
    yield Fleet(st, acu, receiver, env, worker, start_worker)
    st.stop()
    acu.stop()


def _written(fleet: Fleet, flow: str, source_id: Any) -> bool:
    record = fleet.record(flow, source_id)
    return record is not None and record.status in ("written", "skipped")


def _one_invoice(fleet: Fleet, invoice: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    found = wait_until(lambda: _written(fleet, "invoices", invoice["id"]) and fleet.acu_invoices(invoice["referenceNumber"]),
                       timeout=timeout, message=lambda: f"no AR invoice in Acumatica: {fleet.statuses()}")
    assert len(found) == 1, found
    return found[0]


def test_signed_invoice_webhook_becomes_one_ar_invoice_with_its_customer_created_first(fleet: Fleet) -> None:
    from mlconnector import links
    from mlconnector.db.session import session_scope

    requests.post(f"{fleet.st.url}/_sandbox/faults", json={"webhook_duplicate_rate": 1.0}, timeout=5)
    customer = fleet.new_customer("Harriet Okafor")
    invoice = fleet.new_invoice(customer, HVAC, [("Diagnostic service call", "1.00", "89.00"), ("Labor - repair", "2.50", "120.00")])
    ar = _one_invoice(fleet, invoice)
    # Customer first: an Acumatica customer created from the ServiceTitan one, linked as kind `customer`.
    with session_scope() as session:
        link = links.find(session, "acme", "customer", "servicetitan", str(customer["id"]))
        assert link is not None and link.how == "created"
    acu_customer = fleet.acu_get("Customer", path=f"/{link.target_id}")
    assert acu_customer["CustomerName"] == "Harriet Okafor" and ar["Customer"] == link.target_id
    assert acu_customer["CreatedDateTime"] <= ar["CreatedDateTime"]
    # Lines on the business unit's account and subaccount; the amounts are ServiceTitan's.
    lines = sorted(ar["Details"], key=lambda line: line["TransactionDescription"])
    assert [(l["TransactionDescription"], l["Account"], l["Subaccount"], l["Branch"]) for l in lines
            if l["TransactionDescription"] != "Sales tax"] == [
        ("Diagnostic service call", "40000", "100-100", "HQ"), ("Labor - repair", "40000", "100-100", "HQ")]
    assert Decimal(str(ar["Amount"])) == Decimal(invoice["total"])
    # Hold by default: written on hold for an accountant's review.
    assert ar["Hold"] is True and ar["Status"] == "On Hold"
    # The same event delivered three more times by hand: answered, noted, never a second invoice.
    body = json.dumps({"eventId": "evt-acu-1", "eventType": "invoice.updated", "tenantId": 1,
                       "data": {"id": invoice["id"]}}).encode()
    assert [fleet.send_raw(body).status_code for _ in range(3)] == [202, 200, 200]
    time.sleep(2)
    assert len(fleet.acu_invoices(invoice["referenceNumber"])) == 1
    assert len(fleet.acu_get("Customer", {"$filter": "CustomerName eq 'Harriet Okafor'"})) == 1
    assert fleet.statuses().get("failed", 0) == 0
    # This month's documents created through the API (the licence counts them): one customer, one invoice.
    from mlconnector import health

    with session_scope() as session:
        assert health.documents_created_this_month(session) == {"acme": 2}


def test_payment_waits_for_its_invoice_to_be_released_then_is_applied(fleet: Fleet) -> None:
    """Hold by default: the AR invoice is written on hold; Acumatica applies payments to
    released invoices only, so the payment waits (a typed hold) until an accountant releases
    the invoice; the payments poll sees that and the payment is applied, itself on hold."""
    customer = fleet.new_customer("Pinecrest Dental Group")
    invoice = fleet.new_invoice(customer, PLUMBING, [("Water heater replacement", "1.00", "1450.00")])
    ar = _one_invoice(fleet, invoice)
    payment = fleet.new_payment(customer, invoice)
    wait_until(lambda: (fleet.record("payments", payment["id"]) or {}) and fleet.record("payments", payment["id"]).status == "held",
               timeout=60, message=lambda: f"payment not held: {fleet.statuses('payments')}")
    held = fleet.record("payments", payment["id"])
    assert ar["ReferenceNbr"] in held.hold_reason and "not released" in held.hold_reason
    assert fleet.acu_payments(f"ST-PAY-{payment['id']}") == []
    fleet.acu_release_invoice(ar["ReferenceNbr"])
    fleet.poll("payments")  # the catch-up poll checks what held payments wait for
    wait_until(lambda: _written(fleet, "payments", payment["id"]), timeout=60,
               message=lambda: f"payment not written after the release: {fleet.statuses('payments')}")
    [acu_payment] = fleet.acu_payments(f"ST-PAY-{payment['id']}")
    assert [(d["ReferenceNbr"], Decimal(str(d["AmountPaid"]))) for d in acu_payment["DocumentsToApply"]] == \
        [(ar["ReferenceNbr"], Decimal(invoice["total"]))]
    assert acu_payment["CustomerID"] == ar["Customer"] and acu_payment["Hold"] is True


@pytest.mark.parametrize("fleet", [{"config": {"release_documents": True, "mark_exported": True}}], indirect=True)
def test_payment_before_its_invoice_waits_for_the_write_and_release_is_followed_to_completion(fleet: Fleet) -> None:
    """The payment arrives first: it waits for its invoice, and the invoice's write re-queues
    it at once. With release configured, both documents are released (202, polled to 204)
    and the payment closes the invoice in Acumatica; with mark_exported, ServiceTitan shows
    both documents exported."""
    requests.post(f"{fleet.st.url}/_sandbox/faults", json={"webhook_drop_rate": 1.0}, timeout=5)
    customer = fleet.new_customer("Brightwater Farms")
    invoice = fleet.new_invoice(customer, HVAC, [("Maintenance agreement visit", "1.00", "189.00")])
    payment = fleet.new_payment(customer, invoice)
    fleet.poll("customers")
    wait_until(lambda: _written(fleet, "customers", customer["id"]), timeout=60, message="customer not written")
    fleet.poll("payments")
    wait_until(lambda: getattr(fleet.record("payments", payment["id"]), "status", None) == "held", timeout=60,
               message=lambda: f"payment not held: {fleet.statuses('payments')}")
    assert "not in Acumatica yet" in fleet.record("payments", payment["id"]).hold_reason
    fleet.poll("invoices")
    ar = _one_invoice(fleet, invoice)
    wait_until(lambda: _written(fleet, "payments", payment["id"]), timeout=60,
               message=lambda: f"payment not released by the invoice's write: {fleet.statuses('payments')}")
    number = ar["ReferenceNbr"]
    # The payment's release runs on in Acumatica after its write (202, polled): wait for it to close the invoice.
    wait_until(lambda: fleet.acu_get("Invoice", path=f"/Invoice/{number}")["Status"] == "Closed", timeout=30,
               message=lambda: f"invoice not closed: {fleet.acu_get('Invoice', path=f'/Invoice/{number}')}")
    ar = fleet.acu_get("Invoice", path=f"/Invoice/{number}")
    [acu_payment] = fleet.acu_payments(f"ST-PAY-{payment['id']}")
    assert ar["Hold"] is False and ar["Status"] == "Closed" and Decimal(str(ar["Balance"])) == 0
    assert acu_payment["Status"] == "Closed" and acu_payment["DocumentsToApply"][0]["ReferenceNbr"] == ar["ReferenceNbr"]
    assert next(i for i in fleet.st_get("invoices") if i["id"] == invoice["id"])["syncStatus"] == "Exported"
    assert next(p for p in fleet.st_get("payments") if p["id"] == payment["id"])["syncStatus"] == "Exported"


def test_inventory_bill_becomes_an_ap_bill_against_the_linked_vendor(fleet: Fleet) -> None:
    from mlconnector import links
    from mlconnector.db.session import session_scope

    vendor = fleet.new_vendor("Sierra Sheet Metal Supply")
    bill = fleet.received_bill(vendor["id"])
    found = wait_until(lambda: _written(fleet, "inventory_bills", bill["id"]) and fleet.acu_bills(bill["referenceNumber"]),
                       timeout=60, message=lambda: f"no AP bill in Acumatica: {fleet.statuses()}")
    assert len(found) == 1
    ap = found[0]
    with session_scope() as session:
        link = links.find(session, "acme", "vendor", "servicetitan", str(vendor["id"]))
    assert link is not None and ap["Vendor"] == link.target_id
    assert fleet.acu_get("Vendor", path=f"/{link.target_id}")["VendorName"] == "Sierra Sheet Metal Supply"
    unit = bill["businessUnit"]["name"]
    expected_sub = {"HVAC": "100-100", "Plumbing": "200-100", "Electrical": "300-100"}
    trade = next(t for t in expected_sub if unit.startswith(t) or (t == "Plumbing" and unit.startswith("Drains")))
    assert {(d["Account"], d["Subaccount"]) for d in ap["Details"]} == {("51000", expected_sub[trade])}
    assert Decimal(str(ap["Amount"])) == Decimal(bill["billAmount"])
    assert ap["Hold"] is True and ap["Status"] == "On Hold"
    # ServiceTitan bills are read-only: the bill there is as it was (no export mark unless configured).
    assert next(b for b in fleet.st_get("inventory_bills") if b["id"] == bill["id"])["syncStatus"] == bill["syncStatus"]


ELECTRICAL = "Electrical - Service"


@pytest.mark.parametrize("fleet", [{"config": {"business_units": {PLUMBING: None, HVAC: {"subaccount": "999-999"},
                                                                 ELECTRICAL: {"subaccount": "999-999"}}}}], indirect=True)
def test_unmapped_business_unit_and_inactive_subaccount_are_holds_a_config_change_releases(fleet: Fleet, tmp_path) -> None:
    from mlconnector.cli import main
    from mlconnector.db.models import Integration
    from mlconnector.db.session import session_scope

    customer = fleet.new_customer("Lakeview Property Management")
    unmapped = fleet.new_invoice(customer, PLUMBING, [("Drain clearing", "1.00", "240.00")])
    inactive = fleet.new_invoice(customer, HVAC, [("Compressor replacement", "1.00", "2100.00")])
    reactivated = fleet.new_invoice(customer, ELECTRICAL, [("Panel upgrade", "1.00", "1800.00")])
    wait_until(lambda: fleet.statuses("invoices").get("held") == 3, timeout=60,
               message=lambda: f"invoices not held: {fleet.statuses('invoices')}")
    assert "business unit 'Plumbing - Service'" in fleet.record("invoices", unmapped["id"]).hold_reason
    assert "subaccount 999-999 is inactive" in fleet.record("invoices", inactive["id"]).hold_reason
    assert all(fleet.acu_invoices(i["referenceNumber"]) == [] for i in (unmapped, inactive, reactivated))
    with session_scope() as session:
        config = dict(session.get(Integration, "acme").config)
    config["business_units"] = {**config["business_units"], PLUMBING: {"subaccount": "200-100", "branch": "EAST"},
                                HVAC: {"subaccount": "100-200"}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["integrations", "set-config", "acme", "--config", str(path), "--yes"], terminal_width=250)
    assert result.exit_code == 0, result.output
    plumbing, hvac = _one_invoice(fleet, unmapped), _one_invoice(fleet, inactive)
    assert {(d["Subaccount"], d["Branch"]) for d in plumbing["Details"]} == {("200-100", "EAST")}
    assert {d["Subaccount"] for d in hvac["Details"]} == {"100-200"}
    # The third still waits; the accountant reactivates 999-999 in Acumatica instead, and the
    # catch-up poll (which refreshes the chart) sees it.
    assert fleet.record("invoices", reactivated["id"]).status == "held"
    fleet.acu_put("Subaccount", {"SubaccountCD": "999-999", "Active": True})
    fleet.poll("invoices")
    assert {d["Subaccount"] for d in _one_invoice(fleet, reactivated)["Details"]} == {"999-999"}


@pytest.mark.parametrize("fleet", [{"poll_seconds": {"customers": 2, "invoices": 2}}], indirect=True)
def test_dropped_webhooks_are_found_by_the_catch_up_poll(fleet: Fleet, start_service) -> None:
    requests.post(f"{fleet.st.url}/_sandbox/faults", json={"webhook_drop_rate": 1.0}, timeout=5)
    customer = fleet.new_customer("Dropped Delivery Diner")
    invoices = [fleet.new_invoice(customer, HVAC, [(f"Tune-up {n}", "1.00", f"{99 + n}.00")]) for n in range(3)]
    time.sleep(1)
    assert all(fleet.acu_invoices(i["referenceNumber"]) == [] for i in invoices)  # nothing arrived
    service = start_service([sys.executable, "-m", "celery", "-A", "mlconnector.celery_app", "beat", "--loglevel", "INFO"],
                            fleet.env, lambda: True)
    for invoice in invoices:
        _one_invoice(fleet, invoice, timeout=90)
    assert "poll:acme:invoices" in service.log_path.read_text()


def test_429_storm_and_token_expiry_mid_batch_write_every_record_once(fleet: Fleet) -> None:
    customer = fleet.new_customer("Storm Ridge HOA")
    fleet.new_invoice(customer, HVAC, [("Warm-up", "1.00", "10.00")])  # the customer exists before the storm
    wait_until(lambda: fleet.statuses("invoices").get("written"), timeout=60, message="first invoice not written")
    requests.post(f"{fleet.st.url}/_sandbox/faults", json={"burst_429": 12, "retry_after": 1}, timeout=5)
    requests.post(f"{fleet.acu.url}/_sandbox/faults", json={"burst_429": 8, "retry_after": 1}, timeout=5)
    invoices = [fleet.new_invoice(customer, PLUMBING, [(f"Repair {n}", "1.00", f"{150 + n}.00")]) for n in range(5)]
    requests.post(f"{fleet.acu.url}/_sandbox/expire-tokens", timeout=5)
    requests.post(f"{fleet.st.url}/_sandbox/expire-tokens", timeout=5)
    for invoice in invoices:
        _one_invoice(fleet, invoice, timeout=120)
    assert fleet.statuses("invoices").get("failed", 0) == 0
    assert requests.get(f"{fleet.st.url}/_sandbox/stats", timeout=5).json()["rate_limited"] >= 1
    assert requests.get(f"{fleet.acu.url}/_sandbox/stats", timeout=5).json()["rate_limited"] >= 1


def test_worker_killed_mid_batch_writes_every_record_none_twice(fleet: Fleet) -> None:
    from mlconnector import engine
    from mlconnector.tasks import send

    customer = fleet.new_customer("Killdeer Creek Winery")
    requests.post(f"{fleet.acu.url}/_sandbox/faults", json={"latency_ms": 300}, timeout=5)
    invoices = [fleet.new_invoice(customer, HVAC, [(f"Service {n}", "1.00", f"{200 + n}.00")]) for n in range(5)]
    time.sleep(2)
    for pid in fleet.worker.children():
        os.kill(pid, signal.SIGKILL)
    fleet.worker.process.send_signal(signal.SIGKILL)
    fleet.worker.process.wait(timeout=10)
    requests.post(f"{fleet.acu.url}/_sandbox/faults", json={"latency_ms": 0}, timeout=5)
    fleet.start_worker(fleet.env, queues=QUEUES, concurrency=2)
    time.sleep(3)
    send(engine.sweep(older_than_seconds=0).enqueue)  # what the beat's sweeper does every 30 s
    for invoice in invoices:
        _one_invoice(fleet, invoice, timeout=120)
    time.sleep(1)
    assert all(len(fleet.acu_invoices(i["referenceNumber"])) == 1 for i in invoices)
    assert len(fleet.acu_get("Customer", {"$filter": "CustomerName eq 'Killdeer Creek Winery'"})) == 1


@pytest.mark.parametrize("fleet", [{"config": {"systems": {"acumatica": {"auth_mode": "cookie", "max_sessions": 1}}}}],
                         indirect=True)
def test_the_session_cap_keeps_the_whole_fleet_within_the_licences_api_users(fleet: Fleet) -> None:
    """Two worker processes of two children each share one licensed API user: the cap held in
    Redis lets one session at a time sign in, every session is signed out, and a refusal
    (which a real instance answers with a status other than 429) never happens."""
    requests.post(f"{fleet.acu.url}/_sandbox/license", json={"api_users": 1, "login_limit_status": 500}, timeout=5)
    fleet.start_worker(fleet.env, queues=QUEUES, concurrency=2)
    customers = [fleet.new_customer(f"Licence Test Customer {n}") for n in range(3)]
    invoices = [fleet.new_invoice(c, HVAC, [("Service call", "1.00", f"{120 + n}.00")]) for n, c in enumerate(customers)]
    for invoice in invoices:
        _one_invoice(fleet, invoice, timeout=90)
    stats = requests.get(f"{fleet.acu.url}/_sandbox/stats", timeout=5).json()
    assert stats.get("login_limit_refused", 0) == 0 and stats.get("sessions_opened", 0) >= len(invoices)
    assert stats.get("sessions_opened") == stats.get("sessions_closed")
    assert requests.get(f"{fleet.acu.url}/_sandbox/sessions", timeout=5).json()["active"] == 0
