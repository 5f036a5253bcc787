"""Epicor Kinetic -> ServiceNow end to end on the real fleet: Celery worker processes (and
beat), Redis, PostgreSQL, and both vendor sandboxes over HTTP. The ServiceNow sandbox is a
stock instance (no custom `u_` columns, unknown columns dropped, transform maps that coalesce
on nothing), and every outcome is read back through ServiceNow's own Table API.
"""

from __future__ import annotations

import json
import sys
import time
from decimal import Decimal
from typing import Any

import pytest
import redis
import requests
from click.testing import CliRunner
from sqlalchemy import func, select, update

from sandboxes import SandboxOptions, create_sandbox, start_sandbox
from tests.conftest import wait_until
from tests.pair_fleet import PairFleet

pytestmark = pytest.mark.fleet

QUEUES = "mlconnector,epicor-servicenow"
FAST_RETRY = {"base": 0.05, "max_wait": 2}
FLOWS = ("vendors", "purchase_orders", "ap_invoices")
UNMAPPED_ACCOUNT = "6400-200"  # Permits & Fees - Installation: left out of the map by one test


class Fleet(PairFleet):
    def __init__(self, epicor: Any, sn: Any, env: dict[str, str], worker: Any, start_worker: Any) -> None:
        self.epicor, self.sn, self.env, self.worker, self.start_worker = epicor, sn, env, worker, start_worker

    # -- ServiceNow, read through its Table API as any client would --
    def table(self, name: str, query: str = "") -> list[dict[str, Any]]:
        creds = self.sn.info()["credentials"]
        response = requests.get(f"{self.sn.url}/api/now/table/{name}", params={"sysparm_query": query, "sysparm_exclude_reference_link": "true"},
                                 auth=(creds["username"], creds["password"]), headers={"Accept": "application/json"},
                                 timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["result"]

    def orders(self, po_num: int) -> list[dict[str, Any]]:
        return self.table("sn_shop_purchase_order", f"erp_number={po_num}^erp_source=Epicor Kinetic")

    def invoices(self, invoice_num: str) -> list[dict[str, Any]]:
        return self.table("sn_shop_invoice", f"external_invoice_number={invoice_num}^erp_source=Epicor Kinetic")

    def counts(self) -> dict[str, int]:
        return {name: len(self.table(name)) for name in ("sn_fin_supplier", "sn_fin_supplier_payment", "sn_shop_purchase_order",
                                                          "sn_shop_purchase_order_line", "sn_shop_invoice",
                                                          "sn_shop_invoice_line")}

    # -- Epicor, through its control API as a buyer or AP clerk changing records --
    def epicor_rows(self, entity: str) -> list[dict[str, Any]]:
        return self.sandbox_rows(self.epicor, entity)

    def epicor_put(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.sandbox_put(self.epicor, entity, payload)

    # -- ours --
    def poll(self, *flows: str) -> None:
        from mlconnector import engine
        from mlconnector.tasks import send

        for flow in flows or FLOWS:
            send(engine.poll_flow("acme", flow).enqueue)

    def poll_until(self, flow: str, predicate: Any, timeout: float = 30, message: str = "") -> None:
        """Poll `flow` every second, as a short beat interval would, until `predicate` holds."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.poll(flow)
            if _holds(predicate, 1.0):
                return
        raise AssertionError(message or "condition not met in time")

    def settled(self, flow: str, count: int) -> bool:
        done = self.statuses(flow)
        return sum(done.get(s, 0) for s in ("written", "skipped", "held", "failed")) >= count and not done.get("pending") \
            and not done.get("running")

    def config(self) -> dict[str, Any]:
        from mlconnector.db.models import Integration
        from mlconnector.db.session import session_scope

        with session_scope() as session:
            return json.loads(json.dumps(session.get(Integration, "acme").config))

    def set_config(self, config: dict[str, Any], tmp_path: Any) -> str:
        from mlconnector.cli import main

        path = tmp_path / "config.json"
        path.write_text(json.dumps(config))
        result = CliRunner().invoke(main, ["integrations", "set-config", "acme", "--config", str(path), "--yes"],
                                    terminal_width=250)
        assert result.exit_code == 0, result.output
        return result.output


@pytest.fixture
def fleet(configure, fresh_pg: str, redis_url: str, start_worker, request) -> Any:
    from mlconnector.harness import SandboxSet, register

    options = getattr(request, "param", {})
    redis.Redis.from_url(redis_url).flushdb()
    env = configure(fresh_pg, redis_url, MLCONNECTOR_SWEEP_AFTER_SECONDS="2", MLCONNECTOR_MAX_DELIVERIES="10")
    epicor = start_sandbox(create_sandbox("epicor", SandboxOptions(seed=5, records=4)))
    sn = start_sandbox(create_sandbox("servicenow", SandboxOptions(seed=5, records=8,  # stock: no u_ columns
                                                                   token_ttl=options.get("sn_token_ttl", 0))))
    register("acme", "epicor-servicenow", SandboxSet({"epicor": epicor, "servicenow": sn}), overrides={
        "systems": {"epicor": {"retry": FAST_RETRY}, "servicenow": {"retry": FAST_RETRY}},
        "poll_seconds": options.get("poll_seconds", {}), **options.get("config", {})})
    if options.get("unmapped"):
        from mlconnector.db.models import Integration
        from mlconnector.db.session import session_scope

        with session_scope() as session:
            row = session.get(Integration, "acme")
            config = json.loads(json.dumps(row.config))
            del config["cost_centers"]["by_account"][UNMAPPED_ACCOUNT]
            row.config = config
    worker = start_worker(env, queues=QUEUES, concurrency=2)
    yield Fleet(epicor, sn, env, worker, start_worker)
    epicor.stop()
    sn.stop()


def _sync_all(fleet: Fleet) -> None:
    """Vendors first, then POs and invoices, each flow to the end of its records."""
    for flow in FLOWS:
        fleet.poll(flow)
        wait_until(lambda: fleet.settled(flow, len(fleet.epicor_rows(flow))), timeout=60,
                   message=lambda: f"{flow} not settled: {fleet.statuses(flow)}")


def _supplier_of(fleet: Fleet, vendor_num: int) -> dict[str, Any]:
    vendor = next(v for v in fleet.epicor_rows("vendors") if v["VendorNum"] == vendor_num)
    found = fleet.table("sn_fin_supplier", f"name={vendor['Name']}")
    assert len(found) == 1, found
    return found[0]


def test_a_poll_moves_vendors_then_pos_and_invoices_with_lines_and_nothing_is_created_twice(fleet: Fleet) -> None:
    from mlconnector.cli import main
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    before = fleet.counts()
    _sync_all(fleet)
    assert all(fleet.statuses(flow).get("failed", 0) == 0 and fleet.statuses(flow).get("held", 0) == 0 for flow in FLOWS)
    config = fleet.config()
    centers = {c["account_number"]: c["sys_id"] for c in fleet.table("cmn_cost_center")}
    for po in fleet.epicor_rows("purchase_orders"):
        [order] = fleet.orders(po["PONum"])
        assert order["supplier"] == _supplier_of(fleet, po["VendorNum"])["sys_id"]
        assert order["status"] == ("ordered" if po["OpenOrder"] else "closed")
        lines = fleet.table("sn_shop_purchase_order_line", f"purchase_order={order['sys_id']}")
        assert sorted(int(l["line_number"]) for l in lines) == sorted(d["POLine"] for d in po["PODetails"])
        assert sum(Decimal(l["amount"]) for l in lines) == sum(Decimal(str(d["ExtCost"])).quantize(Decimal("0.01"))
                                                               for d in po["PODetails"])
    for invoice in fleet.epicor_rows("ap_invoices"):
        [staged] = fleet.invoices(invoice["InvoiceNum"])
        assert staged["supplier"] == _supplier_of(fleet, invoice["VendorNum"])["sys_id"]
        assert staged["status"] == ("approved" if invoice["Posted"] else "pending")
        lines = fleet.table("sn_shop_invoice_line", f"invoice={staged['sys_id']}")
        assert len(lines) == len(invoice["APInvDtls"])
        for line in lines:
            wanted = config["cost_centers"]["by_account"][line["gl_account"]]
            assert line["cost_center"] == centers[wanted]  # on a valid ServiceNow financial dimension
    # Payment details: each vendor's bank accounts on its supplier (vendors of one name share a
    # supplier, whose details are the first one's).
    vendors = fleet.epicor_rows("vendors")
    unique = [v for v in vendors if [w["Name"] for w in vendors].count(v["Name"]) == 1]
    assert any(v["VendBanks"] for v in unique)
    for vendor in unique:
        details = fleet.table("sn_fin_supplier_payment", f"supplier={_supplier_of(fleet, vendor['VendorNum'])['sys_id']}")
        assert sorted((d["bank_account_number"], d["routing_number"], d["bank_name"]) for d in details) == \
            sorted((b["BankAcctNumber"], b["BankIdentifier"], b["BankName"]) for b in vendor["VendBanks"])
    after_first = fleet.counts()
    assert after_first["sn_shop_purchase_order"] - before["sn_shop_purchase_order"] == len(fleet.epicor_rows("purchase_orders"))
    assert after_first["sn_shop_invoice"] - before["sn_shop_invoice"] == len(fleet.epicor_rows("ap_invoices"))

    # An idle poll, run by the worker processes (which have polled nothing yet): one Epicor
    # call per flow, from the persisted positions, no full scan.
    from mlconnector.tasks import poll

    requests.post(f"{fleet.epicor.url}/_sandbox/stats/reset", timeout=5)
    for flow in FLOWS:
        poll.delay("acme", flow)
    stats = lambda: requests.get(f"{fleet.epicor.url}/_sandbox/stats", timeout=5).json()  # noqa: E731
    odata = lambda: {k: v for k, v in stats()["by_endpoint"].items() if "odata" in k}  # noqa: E731
    wait_until(lambda: sum(sum(v.values()) for v in odata().values()) >= 3, timeout=30, message=lambda: f"no polls: {stats()}")
    time.sleep(1.5)
    calls = odata()
    assert sum(sum(v.values()) for v in calls.values()) == 3, calls

    # Our ledger forgets every target (a lost database, a restore): a full re-poll finds each
    # record through its documented fields on the stock instance and creates nothing.
    with session_scope() as session:
        session.execute(update(SyncRecord).values(target_id=None, target_key=None, written_version=None, source_version=None))
    from mlconnector import engine
    from mlconnector.tasks import send

    for flow in FLOWS:
        send(engine.poll_flow("acme", flow, full=True).enqueue)
        wait_until(lambda: _all_targets_known(flow), timeout=60, message=lambda: f"{flow} re-poll not finished: {fleet.statuses()}")
    assert fleet.counts() == after_first

    # A replay of a written record creates nothing either.
    po = fleet.epicor_rows("purchase_orders")[0]
    record = fleet.record("purchase_orders", po["PONum"])
    result = CliRunner().invoke(main, ["replay", str(record.id), "--yes"], terminal_width=250)
    assert result.exit_code == 0, result.output
    time.sleep(2)
    assert len(fleet.orders(po["PONum"])) == 1 and fleet.counts() == after_first

    # A PO closed in Epicor is closed in ServiceNow.
    open_po = next(p for p in fleet.epicor_rows("purchase_orders") if p["OpenOrder"])
    fleet.epicor_put("purchase_orders", {"PONum": open_po["PONum"], "OpenOrder": False})
    # Polled like beat would: the change window ends at the poll's start (millisecond literals,
    # `lt` at the top), so a change made in that very millisecond arrives with the next poll.
    fleet.poll_until("purchase_orders", lambda: fleet.orders(open_po["PONum"])[0]["status"] == "closed",
                     message="PO not closed")
    assert fleet.counts() == after_first
    # Voided, and an invoice posted: both reach ServiceNow as status changes, nothing new.
    other_po = next(p for p in fleet.epicor_rows("purchase_orders") if p["PONum"] != open_po["PONum"])
    fleet.epicor_put("purchase_orders", {"PONum": other_po["PONum"], "VoidOrder": True, "OpenOrder": False})
    fleet.poll_until("purchase_orders", lambda: fleet.orders(other_po["PONum"])[0]["status"] == "canceled",
                     message="PO not canceled")
    unposted = next((i for i in fleet.epicor_rows("ap_invoices") if not i["Posted"]), None)
    if unposted is not None:
        fleet.epicor_put("ap_invoices", {"VendorNum": unposted["VendorNum"], "InvoiceNum": unposted["InvoiceNum"],
                                         "Posted": True})
        fleet.poll_until("ap_invoices", lambda: fleet.invoices(unposted["InvoiceNum"])[0]["status"] == "approved",
                         message="posted invoice not approved")
    assert fleet.counts() == after_first

    # A vendor's procurement contact changes in Epicor: its supplier follows (read by SysRevID).
    # (Near-duplicate vendors of one name share one supplier, which neither rewrites.)
    vendors = fleet.epicor_rows("vendors")
    vendor = next(v for v in vendors if [w["Name"] for w in vendors].count(v["Name"]) == 1)
    fleet.epicor_put("vendors", {"VendorNum": vendor["VendorNum"], "VendorID": vendor["VendorID"],
                                 "PhoneNum": "559-555-0199", "EMailAddress": "orders@changed.example"})
    fleet.poll("vendors")
    wait_until(lambda: _supplier_of(fleet, vendor["VendorNum"])["email"] == "orders@changed.example", timeout=30,
               message="supplier contact not aligned")
    assert _supplier_of(fleet, vendor["VendorNum"])["phone"] == "559-555-0199"
    assert fleet.counts() == after_first

    # It moves its payments to a new bank account: the supplier's payment details follow, the
    # old account is made inactive, and no audit row holds either account number in full.
    old_banks = vendor["VendBanks"]
    new_bank = {"BankID": "NEW1", "BankName": "Heartland Bank", "NameOnAccount": vendor["Name"],
                "BankAcctNumber": "7700123456", "BankIdentifier": "071000013", "CurrencyCode": "USD", "PrimaryBank": True}
    fleet.epicor_put("vendors", {"VendorNum": vendor["VendorNum"], "VendorID": vendor["VendorID"],
                                 "VendBanks": [*({**b, "Inactive": True, "PrimaryBank": False} for b in old_banks), new_bank]})
    supplier_id = _supplier_of(fleet, vendor["VendorNum"])["sys_id"]
    details = lambda: {d["bank_account_number"]: d for d in fleet.table("sn_fin_supplier_payment", f"supplier={supplier_id}")}  # noqa: E731
    fleet.poll_until("vendors", lambda: "7700123456" in details(), message="new bank account not aligned")
    wait_until(lambda: all(details()[b["BankAcctNumber"]]["active"] == "false" for b in old_banks), timeout=20,
               message=lambda: f"old accounts still active: {details()}")
    assert details()["7700123456"]["primary"] == "true"
    assert fleet.counts()["sn_fin_supplier_payment"] == after_first["sn_fin_supplier_payment"] + 1, \
        [(d["supplier"], d["bank_account_number"], d["active"], d["sys_created_on"]) for d in fleet.table("sn_fin_supplier_payment")]
    from mlconnector.db.models import AuditEvent

    with session_scope() as session:
        trail = json.dumps([[e.message, e.source_payload, e.mapped_payload, e.decisions, e.error]
                            for e in session.scalars(select(AuditEvent))],
                           default=str)
    assert "7700123456" not in trail and "****3456" in trail


def _holds(predicate: Any, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _all_targets_known(flow: str) -> bool:
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        return not session.scalar(select(func.count()).select_from(SyncRecord).where(
            SyncRecord.flow == flow, SyncRecord.target_id.is_(None)))


@pytest.mark.parametrize("fleet", [{"unmapped": True}], indirect=True)
def test_documents_wait_for_their_supplier_and_an_unmapped_gl_account_is_held_until_set_config(fleet: Fleet, tmp_path) -> None:
    vendor = fleet.epicor_rows("vendors")[0]
    po = fleet.epicor_put("purchase_orders", {"VendorNum": vendor["VendorNum"], "VendorVendorID": vendor["VendorID"],
                                              "VendorName": vendor["Name"], "OrderDate": "2026-11-02", "OpenOrder": True,
                                              "PODetails": [{"POLine": 1, "PartNum": "PVC-200", "LineDesc": "2in PVC pipe",
                                                             "OrderQty": 4, "UnitCost": 12.5, "ExtCost": 50.0}]})
    invoice = fleet.epicor_put("ap_invoices", {
        "VendorNum": vendor["VendorNum"], "InvoiceNum": "PERMIT-77", "InvoiceDate": "2026-11-03", "Posted": False,
        "APInvDtls": [{"InvoiceLine": 1, "Description": "Permit filing fee", "VendorQty": 1, "UnitCost": 180.0,
                       "ExtCost": 180.0, "GLAccount": UNMAPPED_ACCOUNT.replace("-", "|")}]})
    # Documents before their supplier: they wait for it, and its write releases them.
    source_id = f"{vendor['VendorNum']}/PERMIT-77"
    fleet.poll_until("purchase_orders", lambda: getattr(fleet.record("purchase_orders", po["PONum"]), "status", "") == "held",
                     message="PO not held")
    fleet.poll_until("ap_invoices", lambda: getattr(fleet.record("ap_invoices", source_id), "status", "") == "held",
                     message="invoice not held")
    assert "waits for its supplier" in fleet.record("purchase_orders", po["PONum"]).hold_reason
    assert fleet.orders(po["PONum"]) == []
    fleet.poll("vendors")
    wait_until(lambda: len(fleet.orders(po["PONum"])) == 1, timeout=60, message=lambda: f"PO not written: {fleet.statuses()}")
    # The invoice is held for its GL account, named, and nothing reached ServiceNow.
    wait_until(lambda: "6400-200" in (fleet.record("ap_invoices", source_id).hold_reason or ""), timeout=60,
               message=lambda: f"invoice not held for its account: {fleet.record('ap_invoices', source_id).hold_reason}")
    assert fleet.invoices("PERMIT-77") == []
    config = fleet.config()
    config["cost_centers"]["by_account"][UNMAPPED_ACCOUNT] = "6100-01"
    assert "re-queue" in fleet.set_config(config, tmp_path)
    # The header is staged before its lines: wait for the record's write to finish, lines included.
    wait_until(lambda: getattr(fleet.record("ap_invoices", source_id), "status", "") == "written", timeout=60,
               message=lambda: f"invoice not released: {fleet.record('ap_invoices', source_id).hold_reason}")
    [staged] = fleet.invoices("PERMIT-77")
    [line] = fleet.table("sn_shop_invoice_line", f"invoice={staged['sys_id']}")
    assert line["cost_center"] == fleet.table("cmn_cost_center", "account_number=6100-01")[0]["sys_id"]
    assert line["gl_account"] == UNMAPPED_ACCOUNT and Decimal(line["amount"]) == Decimal("180.00")
    assert invoice["InvoiceNum"] == "PERMIT-77"


@pytest.mark.parametrize("fleet", [{"poll_seconds": {"vendors": 1, "purchase_orders": 1, "ap_invoices": 1},
                                    "sn_token_ttl": 2}], indirect=True)
def test_token_expiry_and_a_429_storm_mid_batch_under_beat_write_everything_once(fleet: Fleet, start_service) -> None:
    before = fleet.counts()
    requests.post(f"{fleet.sn.url}/_sandbox/faults", json={"burst_429": 10, "retry_after": 1}, timeout=5)
    requests.post(f"{fleet.sn.url}/_sandbox/expire-tokens", timeout=5)
    requests.post(f"{fleet.epicor.url}/_sandbox/expire-tokens", timeout=5)
    service = start_service([sys.executable, "-m", "celery", "-A", "mlconnector.celery_app", "beat", "--loglevel", "INFO"],
                            fleet.env, lambda: True)
    for flow in FLOWS:
        wait_until(lambda: fleet.settled(flow, len(fleet.epicor_rows(flow))) and _all_targets_known(flow), timeout=90,
                   message=lambda: f"{flow}: {fleet.statuses(flow)}")
    requests.post(f"{fleet.sn.url}/_sandbox/expire-tokens", timeout=5)  # and again, mid-run
    time.sleep(3)  # more beat ticks: idle polls
    after = fleet.counts()
    assert after["sn_shop_purchase_order"] - before["sn_shop_purchase_order"] == len(fleet.epicor_rows("purchase_orders"))
    assert after["sn_shop_invoice"] - before["sn_shop_invoice"] == len(fleet.epicor_rows("ap_invoices"))
    for po in fleet.epicor_rows("purchase_orders"):
        assert len(fleet.orders(po["PONum"])) == 1
    for invoice in fleet.epicor_rows("ap_invoices"):
        assert len(fleet.invoices(invoice["InvoiceNum"])) == 1
    assert all(fleet.statuses(flow).get("failed", 0) == 0 for flow in FLOWS)
    sn_stats = requests.get(f"{fleet.sn.url}/_sandbox/stats", timeout=5).json()
    assert sn_stats["rate_limited"] >= 1
    assert sn_stats["tokens_issued"] >= 2  # the expired first token was replaced mid-run, nothing failed for it
    assert "poll:acme:ap_invoices" in service.log_path.read_text()


def test_a_transform_error_is_a_failed_record_with_its_message_and_check_names_a_missing_column(fleet: Fleet, tmp_path) -> None:
    from mlconnector.cli import main

    # The customer's invoice transform takes only their own invoice types.
    maps = requests.get(f"{fleet.sn.url}/_sandbox/entities/transform_maps", timeout=5).json()
    invoice_map = next(m for m in maps if m["name"] == "Invoice Inbound")
    strict = {**invoice_map, "choices": {"invoice_type": ["PO", "Non-PO"]}}
    assert requests.post(f"{fleet.sn.url}/_sandbox/entities/transform_maps", json=strict, timeout=5).status_code == 200
    _sync_all(fleet)
    invoice = fleet.epicor_rows("ap_invoices")[0]
    record = fleet.record("ap_invoices", f"{invoice['VendorNum']}/{invoice['InvoiceNum']}")
    assert record.status == "failed"
    assert "Invoice Inbound: Choice field value rejected: invoice_type 'Standard'" in record.last_error
    assert fleet.invoices(invoice["InvoiceNum"]) == []
    # The map fixed, the failed record replays and lands once.
    requests.post(f"{fleet.sn.url}/_sandbox/entities/transform_maps", json=invoice_map, timeout=5)
    result = CliRunner().invoke(main, ["replay", str(record.id), "--yes"], terminal_width=250)
    assert result.exit_code == 0, result.output
    wait_until(lambda: len(fleet.invoices(invoice["InvoiceNum"])) == 1, timeout=30, message="replay did not write")

    # A staging column the instance does not have is named by `check`.
    config = fleet.config()
    config["systems"]["servicenow"]["staging_columns"] = {"invoice": {"amount_invoiced": "invoice_amount"}}
    fleet.set_config(config, tmp_path)
    checked = CliRunner().invoke(main, ["check", "acme", "--json"])
    assert checked.exit_code != 0
    failed = [v["detail"] for v in json.loads(checked.stdout) if not v["ok"]]
    assert len(failed) == 1 and "sn_spend_intg_imp_invoice has no column invoice_amount (for amount_invoiced)" in failed[0], failed


def test_a_failed_servicenow_token_refresh_is_an_audited_auth_error_and_the_record_replays(fleet: Fleet) -> None:
    from mlconnector.cli import main
    from mlconnector.db.models import AuditEvent
    from mlconnector.db.session import session_scope

    fleet.poll("vendors")
    wait_until(lambda: fleet.settled("vendors", len(fleet.epicor_rows("vendors"))), timeout=60, message="vendors not synced")
    # The instance's integration user changes its password and every token is revoked: the
    # refresh grant and then the password grant are refused.
    instance = fleet.sn.sandbox
    password, instance.password = instance.password, "Changed-By-An-Admin-1!"
    requests.post(f"{fleet.sn.url}/_sandbox/revoke-tokens", timeout=5).raise_for_status()
    fleet.poll("purchase_orders")
    po = fleet.epicor_rows("purchase_orders")[0]
    wait_until(lambda: getattr(fleet.record("purchase_orders", po["PONum"]), "status", "") == "failed", timeout=60,
               message=lambda: f"no failure: {fleet.statuses('purchase_orders')}")
    record = fleet.record("purchase_orders", po["PONum"])
    assert "access_denied" in record.last_error and password not in record.last_error
    with session_scope() as session:
        kinds = list(session.scalars(select(AuditEvent.kind).where(AuditEvent.sync_record_id == record.id)))
    assert "auth_failed" in kinds  # an alert kind: it reaches a person
    assert fleet.orders(po["PONum"]) == []
    instance.password = password
    result = CliRunner().invoke(main, ["replay", "--status", "failed", "--integration", "acme", "--yes"], terminal_width=250)
    assert result.exit_code == 0, result.output
    wait_until(lambda: len(fleet.orders(po["PONum"])) == 1, timeout=60, message="replayed PO not written")
