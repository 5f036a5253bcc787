"""ServiceTitan -> Epicor Kinetic end to end on the real fleet: a gunicorn receiver, Celery
worker processes, Redis, PostgreSQL, and both vendor sandboxes over HTTP. Every outcome is
checked through Epicor's own API on the sandbox, not through our tables alone.
"""

from __future__ import annotations

import json
import os
import signal
import time
from decimal import Decimal
from typing import Any

import pytest
import redis
import requests
from click.testing import CliRunner
from sqlalchemy import func, select

from sandboxes import SandboxOptions, create_sandbox, start_sandbox
from tests.conftest import ROOT, start_gunicorn, wait_until
from tests.pair_fleet import PairFleet

pytestmark = pytest.mark.fleet

HMAC_KEY = "e2e-hmac-key-0123456789abcdef0123456789"
GL_DEFAULT = "5100-100"


class Fleet(PairFleet):
    def __init__(self, st: Any, epicor: Any, receiver: str, env: dict[str, str], worker: Any, start_worker: Any) -> None:
        self.st, self.epicor, self.receiver, self.env = st, epicor, receiver, env
        self.worker, self.start_worker = worker, start_worker

    # -- ServiceTitan side (the sandbox's control API, as a field user creating records) --
    def st_put(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.sandbox_put(self.st, entity, payload)

    def st_get(self, entity: str) -> list[dict[str, Any]]:
        return self.sandbox_rows(self.st, entity)

    def new_vendor(self, name: str) -> dict[str, Any]:
        return self.st_put("vendors", {"name": name, "address": {"street": "12 Yard Rd", "city": "Fresno", "state": "CA",
                                                                 "zip": "93701", "country": "USA"}})

    def received_po(self, vendor_id: int) -> dict[str, Any]:
        """A received purchase order: ServiceTitan creates its inventory bill and fires webhooks."""
        return self.st_put("purchase_orders", {"vendorId": vendor_id, "status": "Received"})

    def bill_for(self, po_id: int) -> dict[str, Any]:
        return wait_until(lambda: next((b for b in self.st_get("inventory_bills") if b["purchaseOrderId"] == po_id), None),
                          timeout=10, message=f"no bill for PO {po_id}")

    # -- Epicor side, read through its OData API --
    def epicor_invoices(self) -> list[dict[str, Any]]:
        info = self.epicor.info()
        creds = info["credentials"]
        response = requests.get(
            f"{info['api_base']}/api/v2/odata/{creds['company']}/Erp.BO.APInvoiceSvc/APInvoices",
            params={"$expand": "APInvDtls", "$top": 100, "$filter": "GroupID eq 'STAP'"},
            auth=(creds["username"], creds["password"]), headers={"x-api-key": creds["api_key"]}, timeout=10)
        assert response.status_code == 200, response.text
        rows = response.json()["value"]
        return rows

    def epicor_vendor(self, vendor_num: int) -> dict[str, Any]:
        return next(v for v in self.epicor.sandbox.get_entities("vendors") if v["VendorNum"] == vendor_num)

    def send_raw(self, body: bytes, key: str = HMAC_KEY) -> requests.Response:
        from mlconnector.webhook_signature import sign_for_tests

        return requests.post(f"{self.receiver}/webhooks/servicetitan/acme", data=body, timeout=10,
                             headers={"Content-Type": "application/json", "X-ServiceTitan-Signature": sign_for_tests(body, key)})

    def diagnosis(self) -> dict[str, Any]:
        """Where the records stand, for a wait that ran out: the ledger by status, the inbound
        events by status, ServiceTitan's webhook deliveries by state, the messages waiting in
        the broker's queues, and the trail's retries and failures (what, why, how often)."""
        from mlconnector.db.models import AuditEvent, InboundEvent
        from mlconnector.db.session import session_scope

        with session_scope() as session:
            events = dict(session.execute(select(InboundEvent.status, func.count()).group_by(InboundEvent.status)).all())
            errors = session.execute(select(AuditEvent.kind, AuditEvent.message, AuditEvent.error, func.count())
                                     .where(AuditEvent.kind.in_(("retry", "failed")))
                                     .group_by(AuditEvent.kind, AuditEvent.message, AuditEvent.error).limit(12)).all()
        deliveries: dict[str, int] = {}
        for delivery in requests.get(f"{self.st.url}/_sandbox/webhooks", timeout=10).json()["deliveries"]:
            deliveries[delivery["state"]] = deliveries.get(delivery["state"], 0) + 1
        from mlconnector.fleet_metrics import queue_depths
        from mlconnector.settings import get_settings

        broker = get_settings().celery_broker_url
        # On Redis, what a worker has taken from a queue and not acknowledged waits in kombu's `unacked` hash.
        taken = redis.Redis.from_url(broker).hlen("unacked") if broker.startswith("redis://") else None
        return {"records": self.statuses(), "events": events, "webhook_deliveries": deliveries,
                "waiting_in_broker": {queue: n for queue, n in queue_depths().items() if n},
                "taken_not_acknowledged": taken, "worker_log": str(self.worker.log_path),
                "retries_and_failures": [(kind, message[:80], (error or "")[:200], n) for kind, message, error, n in errors]}

    def poll(self, flow: str) -> None:
        from mlconnector import engine
        from mlconnector.tasks import send

        send(engine.poll_flow("acme", flow).enqueue)


BROKERS = pytest.mark.parametrize("fleet", [{}, {"broker": "rabbitmq"}], indirect=True, ids=["redis", "rabbitmq"])


FAST_RETRY = {"base": 0.05, "max_wait": 2}  # in-call retries kept short so the storms finish quickly
EPICOR_FAST_RETRY = {"retry": FAST_RETRY}


@pytest.fixture
def fleet(configure, fresh_pg: str, redis_url: str, start_worker, start_service, request) -> Any:
    from mlconnector.harness import SandboxSet, register

    options = getattr(request, "param", {})
    redis.Redis.from_url(redis_url).flushdb()
    # The broker: Redis (the limiter's and token cache's Redis too), or RabbitMQ's quorum
    # queues with that Redis beside them.
    broker = request.getfixturevalue("rabbitmq_url") if options.get("broker") == "rabbitmq" else redis_url
    env = configure(fresh_pg, broker, REDIS_URL=redis_url, MLCONNECTOR_SWEEP_AFTER_SECONDS="2",
                    MLCONNECTOR_MAX_DELIVERIES="10")
    st = start_sandbox(create_sandbox("servicetitan", SandboxOptions(seed=3, records=6), webhook_retry_scale=0.02))
    epicor = start_sandbox(create_sandbox("epicor", SandboxOptions(seed=3, records=6)))
    register("acme", "servicetitan-epicor", SandboxSet({"servicetitan": st, "epicor": epicor}), webhook_key=HMAC_KEY, overrides={
        "systems": {"servicetitan": {"retry": FAST_RETRY}, "epicor": EPICOR_FAST_RETRY},
        "invoice_group": "STAP",
        "counterparts": {"vendor": {"match": "name", "create": options.get("auto_create_vendors", True)}},
        "gl": {"default_account": GL_DEFAULT, "freight_account": "6500-100", "tax_account": "5000-000"},
        "poll_seconds": options.get("poll_seconds", {}),
    })
    receiver = start_gunicorn(start_service, env)
    worker = start_worker(env, queues="mlconnector,servicetitan-epicor", concurrency=2)
    assert f"transport:   {broker.split('://')[0]}://" in worker.log_path.read_text(), "the worker is not on this broker"
    requests.post(f"{st.url}/_sandbox/webhooks", json={"url": f"{receiver}/webhooks/servicetitan/acme",
                                                        "hmac_key": HMAC_KEY, "events": ["*"]}, timeout=10).raise_for_status()
    yield Fleet(st, epicor, receiver, env, worker, start_worker)
    st.stop()
    epicor.stop()


def _invoice_for(fleet: Fleet, bill: dict[str, Any]) -> list[dict[str, Any]]:
    """The bill's AP invoices in Epicor, once our ledger says the write finished (header and lines)."""
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        status = session.scalar(select(SyncRecord.status).where(SyncRecord.flow == "inventory_bills",
                                                                SyncRecord.source_id == str(bill["id"])))
    number = bill.get("referenceNumber") or f"ST-{bill['id']}"
    found = [i for i in fleet.epicor_invoices() if i["InvoiceNum"] == number]
    return found if status in ("written", "skipped") or len(found) > 1 else []


@BROKERS
def test_signed_webhook_becomes_one_ap_invoice_even_when_delivered_three_times(fleet: Fleet) -> None:
    vendor = fleet.new_vendor("Valley Sheet Metal Supply")
    requests.post(f"{fleet.st.url}/_sandbox/faults", json={"webhook_duplicate_rate": 1.0}, timeout=5)
    po = fleet.received_po(vendor["id"])
    bill = fleet.bill_for(po["id"])
    invoices = wait_until(lambda: _invoice_for(fleet, bill), timeout=60, message="no AP invoice in Epicor")
    assert len(invoices) == 1
    invoice = invoices[0]
    epicor_vendor = fleet.epicor_vendor(invoice["VendorNum"])
    assert epicor_vendor["Name"] == "Valley Sheet Metal Supply"  # created in Epicor, auto-create on
    lines = invoice["APInvDtls"]
    item_lines = [l for l in lines if l["Description"] not in ("Tax", "Freight")]
    assert len(item_lines) == len(bill["items"])
    for line, item in zip(sorted(item_lines, key=lambda l: l["InvoiceLine"]), sorted(bill["items"], key=lambda i: i["order"])):
        assert Decimal(str(line["ExtCost"])) == (Decimal(item["quantity"]) * Decimal(item["cost"])).quantize(Decimal("0.01"))
        assert line["GLAccount"].replace("|", "-") == GL_DEFAULT
    assert Decimal(str(invoice["InvoiceAmt"] if "InvoiceAmt" in invoice else invoice["DocInvoiceAmt"])) == Decimal(bill["billAmount"])
    # The same event sent again by hand, three times: answered, noted, never a second invoice.
    sample = json.dumps({"eventId": "evt-e2e-1", "eventType": "inventory-bill.updated", "tenantId": 1,
                         "data": {"id": bill["id"]}}).encode()
    assert [fleet.send_raw(sample).status_code for _ in range(3)] == [202, 200, 200]
    time.sleep(2)
    assert len(_invoice_for(fleet, bill)) == 1
    assert fleet.statuses("inventory_bills").get("failed", 0) == 0


def test_bad_signature_is_refused_with_a_security_audit_row(fleet: Fleet) -> None:
    from mlconnector.db.models import AuditEvent, InboundEvent
    from mlconnector.db.session import session_scope

    body = json.dumps({"eventId": "evt-bad", "eventType": "inventory-bill.created", "data": {"id": 1}}).encode()
    assert fleet.send_raw(body, key="not-the-key-0000000000000000000000").status_code == 401
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(InboundEvent).where(InboundEvent.source_event_id == "evt-bad")) == 0
        kinds = list(session.scalars(select(AuditEvent.kind).where(AuditEvent.kind == "security")))
    assert kinds == ["security"]


@pytest.mark.parametrize("fleet", [{"auto_create_vendors": False}], indirect=True)
def test_unknown_vendor_is_held_then_linked_and_written(fleet: Fleet) -> None:
    from mlconnector.cli import main
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    vendor = fleet.new_vendor("Zephyr Coil Works")
    bill = fleet.bill_for(fleet.received_po(vendor["id"])["id"])
    wait_until(lambda: fleet.statuses("inventory_bills").get("held") and fleet.statuses("vendors").get("held"),
               timeout=60, message="bill and vendor not held")
    with session_scope() as session:
        held = session.scalar(select(SyncRecord).where(SyncRecord.flow == "inventory_bills", SyncRecord.status == "held"))
        assert held is not None and "Zephyr Coil Works" in (held.hold_reason or "")
        assert "mlconnector links link acme --kind vendor" in (held.hold_reason or "")
    assert _invoice_for(fleet, bill) == []
    target = fleet.epicor.sandbox.get_entities("vendors")[0]
    preview = CliRunner().invoke(main, ["vendors", "link", "acme", str(vendor["id"]), str(target["VendorNum"])],
                                 input="n\n", terminal_width=250)
    assert preview.exit_code == 1 and "this link would re-queue 2 held record(s)" in preview.output, preview.output
    assert "nothing linked" in preview.output and fleet.statuses("inventory_bills").get("held")
    result = CliRunner().invoke(main, ["vendors", "link", "acme", str(vendor["id"]), str(target["VendorNum"]), "--yes"])
    assert result.exit_code == 0, result.output
    # The vendor's own record and its bill were both waiting for this link.
    assert "re-queued 2 held record(s)" in result.output and target["Name"] in result.output
    invoices = wait_until(lambda: _invoice_for(fleet, bill), timeout=60, message="held bill not written after link")
    assert invoices[0]["VendorNum"] == target["VendorNum"]
    wait_until(lambda: fleet.statuses("vendors").get("held", 0) == 0, timeout=60, message="vendor record still held")
    # A link records an identity: under create_only the Epicor vendor keeps its own name and address.
    after = fleet.epicor_vendor(target["VendorNum"])
    assert {k: after[k] for k in ("Name", "Address1", "City", "PhoneNum", "EMailAddress")} == \
        {k: target[k] for k in ("Name", "Address1", "City", "PhoneNum", "EMailAddress")}
    from mlconnector import audit

    with session_scope() as session:
        steps = [(row.kind, row.message) for row in audit.trail(session, held.id)]
    kinds = [kind for kind, _ in steps]
    assert kinds.index("held") < kinds.index("requeued") < kinds.index("written"), steps
    assert any(f"now linked to epicor {target['VendorNum']}" in message for kind, message in steps if kind == "requeued"), steps
    trail = CliRunner().invoke(main, ["audit", str(held.id)])
    assert trail.exit_code == 0, trail.output
    assert "held" in trail.output and "written" in trail.output
    status = CliRunner().invoke(main, ["status"], terminal_width=200)
    assert status.exit_code == 0 and "inventory_bills" in status.output


@pytest.mark.parametrize("fleet", [{"poll_seconds": {"vendors": 2, "inventory_bills": 2}}], indirect=True)
def test_dropped_webhooks_are_found_by_the_catch_up_poll(fleet: Fleet, start_service) -> None:
    import sys

    requests.post(f"{fleet.st.url}/_sandbox/faults", json={"webhook_drop_rate": 1.0}, timeout=5)
    vendor = fleet.new_vendor("Dropped Delivery Supply")
    bills = [fleet.bill_for(fleet.received_po(vendor["id"])["id"]) for _ in range(3)]
    time.sleep(1)
    assert all(_invoice_for(fleet, b) == [] for b in bills)  # nothing arrived
    # Celery beat, with its schedule built from the enabled integration, runs the catch-up polls.
    log = {}

    def beat_ready() -> bool:
        return "beat: Starting" in log["service"].log_path.read_text() if "service" in log else False

    service = start_service([sys.executable, "-m", "celery", "-A", "mlconnector.celery_app", "beat", "--loglevel", "INFO"],
                            fleet.env, lambda: True)
    log["service"] = service
    wait_until(beat_ready, timeout=30, message="beat did not start")
    wait_until(lambda: all(len(_invoice_for(fleet, b)) == 1 for b in bills), timeout=90,
               message=lambda: f"catch-up poll did not write the bills: {fleet.statuses()}")
    assert "poll:acme:inventory_bills" in service.log_path.read_text()


@BROKERS
def test_429_storm_and_token_expiry_mid_batch_write_every_record_once(fleet: Fleet) -> None:
    vendor = fleet.new_vendor("Storm Supply Co")
    requests.post(f"{fleet.st.url}/_sandbox/faults", json={"burst_429": 25, "retry_after": 1}, timeout=5)
    pos = [fleet.received_po(vendor["id"]) for _ in range(6)]
    requests.post(f"{fleet.epicor.url}/_sandbox/expire-tokens", timeout=5)
    requests.post(f"{fleet.st.url}/_sandbox/expire-tokens", timeout=5)
    bills = [fleet.bill_for(po["id"]) for po in pos]
    wait_until(lambda: all(len(_invoice_for(fleet, b)) == 1 for b in bills), timeout=120,
               message=lambda: f"not every bill written: {fleet.diagnosis()}")
    assert fleet.statuses("inventory_bills").get("failed", 0) == 0
    stats = requests.get(f"{fleet.st.url}/_sandbox/stats", timeout=5).json()
    assert stats["rate_limited"] >= 1
    from mlconnector.db.models import AuditEvent
    from mlconnector.db.session import session_scope

    with session_scope() as session:  # no beat runs here: a retry's countdown message is what brought it back
        retries = session.scalar(select(func.count()).where(AuditEvent.kind == "retry"))
    assert retries >= 1, "the storm never reached a record's retry: nothing here went through a countdown"


@BROKERS
def test_worker_killed_mid_batch_writes_every_record_none_twice(fleet: Fleet) -> None:
    vendor = fleet.new_vendor("Killjoy Plumbing Supply")
    requests.post(f"{fleet.epicor.url}/_sandbox/faults", json={"latency_ms": 300}, timeout=5)
    bills = [fleet.bill_for(fleet.received_po(vendor["id"])["id"]) for _ in range(6)]
    time.sleep(1.5)
    for pid in fleet.worker.children():
        os.kill(pid, signal.SIGKILL)
    fleet.worker.process.send_signal(signal.SIGKILL)
    fleet.worker.process.wait(timeout=10)
    from mlconnector import engine
    from mlconnector.tasks import send

    fleet.start_worker(fleet.env, queues="mlconnector,servicetitan-epicor", concurrency=2)
    time.sleep(3)
    swept = [0.0]

    def written_with_sweeps() -> bool:
        """The beat's sweeper runs every 30 s in production; here every 5 s, until all is written."""
        if time.time() - swept[0] >= 5:
            send(engine.sweep(older_than_seconds=0).enqueue)
            swept[0] = time.time()
        return all(len(_invoice_for(fleet, b)) >= 1 for b in bills)

    wait_until(written_with_sweeps, timeout=120, interval=0.5,
               message=lambda: f"not every bill written after the kill: {fleet.statuses()}")
    time.sleep(1)
    assert all(len(_invoice_for(fleet, b)) == 1 for b in bills)


def test_payment_is_matched_to_its_invoice(fleet: Fleet) -> None:
    vendor = fleet.new_vendor("Payable Parts Inc")
    bill = fleet.bill_for(fleet.received_po(vendor["id"])["id"])
    invoice = wait_until(lambda: _invoice_for(fleet, bill), timeout=60)[0]
    # Accounting posts the invoice in Epicor; only posted invoices take payments.
    fleet.epicor.sandbox.put_entity("ap_invoices", {"VendorNum": invoice["VendorNum"], "InvoiceNum": invoice["InvoiceNum"], "Posted": True})
    amount = float(bill["billAmount"])
    payment = fleet.st_put("ap_payments", {"vendor": {"id": vendor["id"], "name": vendor["name"]}, "amount": amount,
                                           "status": "Paid", "splits": [{"id": 990001, "active": True, "createdOn": bill["createdOn"],
                                                                      "documentId": None, "inventoryBillId": bill["id"], "amount": amount}]})
    wait_until(lambda: fleet.statuses("ap_payments").get("written"), timeout=60,
               message=lambda: f"payment not written: {fleet.statuses('ap_payments')} {_trail()}")
    payments = fleet.epicor.sandbox.get_entities("ap_payments")
    ours = [p for p in payments if p.get("XRefCheckNum") == f"ST-PAY-{payment['id']}"]
    assert len(ours) == 1
    assert any(t["InvoiceNum"] == invoice["InvoiceNum"] for t in ours[0].get("APTrans") or ours[0].get("lines") or [])


def _trail() -> list[tuple[str, str]]:
    from mlconnector.db.models import AuditEvent
    from mlconnector.db.session import session_scope

    from mlconnector.db.models import InboundEvent

    with session_scope() as session:
        events = [(e.event_type, e.status, e.error) for e in session.scalars(select(InboundEvent))]
        return events + [(a.kind, a.message[:200]) for a in session.scalars(select(AuditEvent).order_by(AuditEvent.id))][-4:]


def test_epicor_vendor_change_is_seen_in_servicetitan(fleet: Fleet) -> None:
    from mlconnector import links
    from mlconnector.db.session import session_scope

    vendor = fleet.new_vendor("Northside Electric Supply")
    bill = fleet.bill_for(fleet.received_po(vendor["id"])["id"])
    invoice = wait_until(lambda: _invoice_for(fleet, bill), timeout=60)[0]
    fleet.poll("epicor_vendors")  # first poll: everything seen once
    time.sleep(2)
    fleet.epicor.sandbox.put_entity("vendors", {"VendorNum": invoice["VendorNum"], "Address1": "400 New Depot Way",
                                                "City": "Clovis"})
    fleet.poll("epicor_vendors")
    def updated() -> bool:
        current = next(v for v in fleet.st_get("vendors") if v["id"] == vendor["id"])
        return current["address"]["street"] == "400 New Depot Way" and current["address"]["city"] == "Clovis"
    wait_until(updated, timeout=60, message="Epicor vendor change not seen in ServiceTitan")
    with session_scope() as session:
        link = links.find(session, "acme", "vendor", "servicetitan", str(vendor["id"]))
        assert link is not None and link.how == "created"


def test_a_fresh_worker_process_reads_epicor_vendors_from_the_shared_cursor(fleet: Fleet) -> None:
    """Two processes poll the SysRevID feed one after the other: the second starts at the
    cursor the first persisted, so an idle poll is one Epicor read, not a full scan."""
    import subprocess
    import sys

    script = ("from mlconnector import engine; r = engine.poll_flow('acme', 'epicor_vendors'); "
              "print(r.found, r.cursor)")

    def poll_in_a_new_process() -> tuple[int, str, int]:
        before = fleet.epicor.sandbox.stats.snapshot()["by_endpoint"]
        done = subprocess.run([sys.executable, "-c", script], env={**os.environ, **fleet.env}, cwd=str(ROOT), capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        after = fleet.epicor.sandbox.stats.snapshot()["by_endpoint"]
        reads = sum(sum(v.values()) for k, v in after.items() if "odata" in k) - \
            sum(sum(v.values()) for k, v in before.items() if "odata" in k)
        found, cursor = done.stdout.split()[-2:]
        return int(found), cursor, reads

    found, cursor, _ = poll_in_a_new_process()
    assert found >= 6 and cursor.isdigit()
    idle_found, idle_cursor, idle_reads = poll_in_a_new_process()
    assert (idle_found, idle_cursor) == (0, cursor)
    assert idle_reads == 1


def test_a_writer_killed_between_header_and_lines_is_completed_on_the_next_delivery(fleet: Fleet) -> None:
    """Epicor saves the invoice header, the worker dies before its lines: the next delivery
    finds the partial invoice by its key, sees that it differs from the bill, and completes it.
    Checked in Epicor: one invoice, every line, the bill's amount; never called 'unchanged'."""
    from mlconnector import audit
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    vendor = fleet.new_vendor("Halfway Hardware")
    wait_until(lambda: fleet.statuses("vendors").get("written"), timeout=60, message="vendor not written")
    # Line calls answer slowly, so the worker is surely between the saved header and its lines.
    requests.post(f"{fleet.epicor.url}/_sandbox/faults",
                  json={"latency_ms": 5000, "path_contains": "GetNewAPInvDtl"}, timeout=5).raise_for_status()
    bill = fleet.bill_for(fleet.received_po(vendor["id"])["id"])
    number = bill.get("referenceNumber") or f"ST-{bill['id']}"
    partial = wait_until(lambda: [i for i in fleet.epicor_invoices() if i["InvoiceNum"] == number
                                  and not (i.get("lines") or i.get("APInvDtls"))],
                         timeout=60, message="the header was never saved alone")
    assert partial
    for pid in fleet.worker.children():
        os.kill(pid, signal.SIGKILL)
    fleet.worker.process.send_signal(signal.SIGKILL)
    fleet.worker.process.wait(timeout=10)
    requests.post(f"{fleet.epicor.url}/_sandbox/faults", json={"replace": True}, timeout=5).raise_for_status()
    from mlconnector import engine
    from mlconnector.tasks import send

    fleet.start_worker(fleet.env, queues="mlconnector,servicetitan-epicor", concurrency=2)
    time.sleep(3)  # past the sweep threshold: the dead worker's record is 'running' with no worker
    send(engine.sweep(older_than_seconds=0).enqueue)

    def whole() -> list[dict[str, Any]]:
        found = _invoice_for(fleet, bill)
        return found if found and len(found[0].get("lines") or found[0].get("APInvDtls") or []) >= len(bill["items"]) else []

    invoices = wait_until(whole, timeout=120, message=lambda: f"the partial invoice was not completed: {fleet.statuses()}")
    assert len(invoices) == 1
    invoice = invoices[0]
    lines = invoice.get("lines") or invoice.get("APInvDtls")
    assert abs(float(invoice["InvoiceVendorAmt"] or invoice["InvoiceAmt"]) - float(bill["billAmount"])) < 0.005
    assert abs(sum(float(line["ExtCost"]) for line in lines) - float(bill["billAmount"])) < 0.005
    with session_scope() as session:
        record = session.query(SyncRecord).filter_by(flow="inventory_bills", source_id=str(bill["id"])).one()
        steps = [(row.kind, row.message) for row in audit.trail(session, record.id)]
    assert record.status == "written", steps
    assert any(kind == "written" and "completed" in message or "corrected" in message for kind, message in steps), steps
    assert not any(kind == "skipped" for kind, _ in steps), steps
