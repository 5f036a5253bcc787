"""ServiceTitan <-> SYSPRO end to end on the real fleet: two Celery worker processes, Redis,
PostgreSQL, and both vendor sandboxes over HTTP. Every outcome is read back through the
vendor's own API: SYSPRO's COMFND query object (and INVQRY for stock), ServiceTitan's REST API.
The SYSPRO licence has as many seats as the integration's `max_sessions`, so a session over
the cap would be a refused logon, counted by the sandbox.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
import redis
import requests
from click.testing import CliRunner
from sqlalchemy import select

from sandboxes import SandboxOptions, create_sandbox, start_sandbox
from tests.conftest import wait_until
from tests.pair_fleet import PairFleet

pytestmark = pytest.mark.fleet

QUEUES = "mlconnector,servicetitan-syspro"
FAST_RETRY = {"base": 0.05, "max_wait": 2}
SEATS = 2
TWO_WAY = ("vendors", "suppliers", "purchase_orders", "syspro_purchase_orders")
FLOWS = (*TWO_WAY, "adjustments", "invoices", "ap_invoices")


class Fleet(PairFleet):
    def __init__(self, st: Any, sy: Any, env: dict[str, str]) -> None:
        self.st_box, self.sy_box, self.env = st, sy, env
        from connectors import build_connector
        from mlconnector.harness import SandboxSet

        boxes = SandboxSet({"servicetitan": st, "syspro": sy})
        self.st = build_connector("servicetitan", *boxes.settings("servicetitan"))
        sy_config, sy_credentials = boxes.settings("syspro")
        self.sy = build_connector("syspro", {**sy_config, "max_sessions": SEATS}, sy_credentials)

    # -- SYSPRO through its query objects, ServiceTitan through its API --
    def suppliers(self) -> dict[str, Any]:
        return {s.supplier: s for s in self.sy.iter_changed("suppliers", None, _later())}

    def vendors(self) -> dict[int, Any]:
        return {v["id"]: v for v in self.st.rows(self.st.spec("vendors"), {})}

    def syspro_stats(self) -> dict[str, Any]:
        return requests.get(f"{self.sy_box.url}/_sandbox/stats", timeout=5).json()

    def writes(self) -> dict[str, int]:
        """Writes each sandbox has answered: SYSPRO posts and setups, ServiceTitan POSTs and PATCHes."""
        sy = self.syspro_stats()
        st = requests.get(f"{self.st_box.url}/_sandbox/stats", timeout=5).json()["by_endpoint"]
        return {**{k: sy.get(k, 0) for k in ("bo_APSTIN", "bo_APSSSP", "bo_PORTOI", "bo_INVTMA")},
                "servicetitan": sum(sum(v.values()) for k, v in st.items()
                                    if k.split()[0] in ("POST", "PATCH") and "connect/token" not in k)}

    # -- ours --
    def poll(self, flow: str) -> None:
        from mlconnector import engine
        from mlconnector.tasks import send

        send(engine.poll_flow("acme", flow).enqueue)

    def settled(self, flow: str) -> bool:
        done = self.statuses(flow)
        return not done.get("pending") and not done.get("running")

    def sync(self, *flows: str) -> None:
        for flow in flows or FLOWS:
            self.poll(flow)
            wait_until(lambda: self.settled(flow), timeout=60, message=lambda: f"{flow} not settled: {self.statuses(flow)}")

    def versions(self) -> dict[tuple[str, str], tuple[Any, ...]]:
        from mlconnector.db.models import SyncRecord
        from mlconnector.db.session import session_scope

        with session_scope() as session:
            return {(r.flow, r.source_id): (r.status, r.source_version, r.written_version, r.target_id)
                    for r in session.scalars(select(SyncRecord))}

    def set_config(self, change: Any, tmp_path: Any) -> str:
        from mlconnector.cli import main
        from mlconnector.db.models import Integration
        from mlconnector.db.session import session_scope

        with session_scope() as session:
            config = json.loads(json.dumps(session.get(Integration, "acme").config))
        change(config)
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config))
        result = CliRunner().invoke(main, ["integrations", "set-config", "acme", "--config", str(path), "--yes"],
                                    terminal_width=250)
        assert result.exit_code == 0, result.output
        return result.output


def _later() -> Any:
    from datetime import datetime, timedelta, timezone

    return datetime.now(timezone.utc) + timedelta(seconds=2)


@pytest.fixture
def fleet(configure, fresh_pg: str, redis_url: str, start_worker) -> Any:
    from mlconnector.harness import SandboxSet, register

    redis.Redis.from_url(redis_url).flushdb()
    env = configure(fresh_pg, redis_url, MLCONNECTOR_SWEEP_AFTER_SECONDS="2", MLCONNECTOR_MAX_DELIVERIES="10")
    st = start_sandbox(create_sandbox("servicetitan", SandboxOptions(seed=5, records=4)))
    sy = start_sandbox(create_sandbox("syspro", SandboxOptions(seed=5, records=3)))
    requests.post(f"{sy.url}/_sandbox/syspro/settings", json={"seats": SEATS}, timeout=5)
    register("acme", "servicetitan-syspro", SandboxSet({"servicetitan": st, "syspro": sy}), overrides={
        "systems": {"servicetitan": {"retry": FAST_RETRY}, "syspro": {"retry": FAST_RETRY, "max_sessions": SEATS}},
        "go_live": date.today().isoformat()})  # the seeded history was keyed by hand; master data moves whole
    for _ in range(2):  # two worker processes of two children: four would-be sessions on two seats
        start_worker(env, queues=QUEUES, concurrency=2)
    yield Fleet(st, sy, env)
    st.stop()
    sy.stop()


def _seats_respected(fleet: Fleet, reached: bool = False) -> None:
    """Never more sessions than seats (the host would have refused a logon), every one logged off;
    `reached`: the workers did contend for the seats (all were in use at once)."""
    stats = fleet.syspro_stats()
    assert stats["peak_open_sessions"] <= SEATS and stats["seat_refusals"] == 0, stats
    assert not reached or stats["peak_open_sessions"] == SEATS, stats
    wait_until(lambda: fleet.syspro_stats()["open_sessions"] == 0, timeout=10,
               message=lambda: f"a session was left open: {fleet.syspro_stats()}")
    stats = fleet.syspro_stats()
    assert stats["logons"] == stats["logoffs"], stats


def test_vendors_pos_and_adjustments_move_both_ways_once_and_repeated_polls_settle(fleet: Fleet, tmp_path) -> None:
    fleet.sync()
    assert all(not fleet.statuses(f).get("failed") and not fleet.statuses(f).get("held") for f in FLOWS), \
        {f: fleet.statuses(f) for f in FLOWS}
    suppliers, vendors = fleet.suppliers(), fleet.vendors()
    assert len(suppliers) == len(vendors) == 23  # 20 seeded in ServiceTitan, 3 in SYSPRO, each now on both sides
    assert sorted(s.name for s in suppliers.values()) == sorted(v["name"] for v in vendors.values())

    # A PO raised in each system, and a stock adjustment made in ServiceTitan.
    first = next(iter(vendors.values()))
    st_po = fleet.sandbox_put(fleet.st_box, "purchase_orders", {
        "vendorId": first["id"], "status": "Sent", "date": f"{date.today()}T09:00:00Z",
        "items": [{"skuId": 8_801, "quantity": 4, "cost": 38.0}, {"skuId": 8_803, "quantity": 10, "cost": 12.75}]})
    seeded_supplier = sorted(c for c in suppliers if c.startswith("S0"))[0]
    stocked = sorted(r["StockCode"] for r in fleet.sandbox_rows(fleet.sy_box, "warehouse_stock") if r["Warehouse"] == "WH01")
    sy_po = fleet.sandbox_put(fleet.sy_box, "purchase_orders", {
        "Supplier": seeded_supplier, "OrderStatus": "1", "OrderEntryDate": str(date.today()), "Warehouse": "WH01",
        "lines": [{"MStockCode": stocked[0], "MStockDes": "coil", "MWarehouse": "WH01", "MOrderQty": 3, "MPrice": 20.5}]})
    item_code = _config()["items"]["8802"]
    before_stock = fleet.sy.get_stock_levels(item_code, "WH01")
    on_hand = next(w.qty_on_hand for w in before_stock.warehouses if w.warehouse == "WH01")
    adjustment = fleet.sandbox_put(fleet.st_box, "adjustments", {
        "date": f"{date.today()}T10:00:00Z", "memo": "van restock count",
        "items": [{"skuId": 8_802, "name": "Copper Pipe", "quantity": 5, "cost": 64.5}]})
    fleet.sync()

    # Each appears on the other side once, on the right counterpart, checked through the vendors' APIs.
    made = fleet.sy.find_purchase_order(reference=st_po["number"])
    assert made is not None and made.supplier == fleet.record("vendors", first["id"]).target_id
    assert sorted((l.stock_code, l.order_qty) for l in made.lines) == sorted(
        [(_config()["items"]["8801"], Decimal("4")), (_config()["items"]["8803"], Decimal("10"))])
    st_made = [p for p in fleet.st.rows(fleet.st.spec("purchase_orders"), {}) if p.get("summary") == f"SYSPRO PO {sy_po['PurchaseOrder']}"]
    assert len(st_made) == 1 and str(st_made[0]["vendorId"]) == fleet.record("suppliers", seeded_supplier).target_id
    assert [(i["skuId"], i["quantity"]) for i in st_made[0]["items"]] == [(8_801 if _config()["items"]["8801"] == stocked[0]
                                                                          else _reverse(stocked[0]), 3.0)]
    after_stock = fleet.sy.get_stock_levels(item_code, "WH01")
    assert next(w.qty_on_hand for w in after_stock.warehouses if w.warehouse == "WH01") == on_hand + 5
    movement = fleet.sy.find_inventory_movement(f"STADJ{adjustment['id']}/{adjustment['items'][0]['id']}")
    assert movement is not None and movement.quantity == 5

    # Repeated polls of both directions: no further write anywhere. The next round reads our
    # own writes back once each (recognised, skipped); after it, record count and versions stay.
    writes = fleet.writes()
    fleet.sync()
    assert fleet.writes() == writes
    echoes = [k for k, v in fleet.versions().items() if v[0] == "skipped" and k[0] == "purchase_orders"]
    assert len(echoes) >= 1  # the PO made from SYSPRO, read back from ServiceTitan and not sent back
    versions = fleet.versions()
    for _ in range(2):
        fleet.sync()
    assert fleet.writes() == writes
    assert fleet.versions() == versions
    assert len(fleet.suppliers()) == len(fleet.vendors()) == 23
    assert len([p for p in fleet.st.rows(fleet.st.spec("purchase_orders"), {})
                if p.get("summary") == f"SYSPRO PO {sy_po['PurchaseOrder']}"]) == 1

    # A change on one side reaches the other and is recognised when it comes back.
    vendor_id = first["id"]
    code = fleet.record("vendors", vendor_id).target_id
    fleet.st.update_vendor(vendor_id, {"contactInfo": {"phone": "559-555-0101"}})
    fleet.sync("vendors", "suppliers", "vendors", "suppliers")
    assert fleet.sy.find_supplier(code).telephone == "559-555-0101"
    writes = fleet.writes()
    fleet.sync("vendors", "suppliers")
    assert fleet.writes() == writes

    # Both sides change the same field between polls: the rule (hold) holds it for a person,
    # with both values in the audited decision; set-config makes SYSPRO its source of truth.
    fleet.st.update_vendor(vendor_id, {"contactInfo": {"phone": "559-555-0202"}})
    fleet.sandbox_put(fleet.sy_box, "suppliers", {"Supplier": code, "Telephone": "559-555-0303"})
    fleet.sync("vendors", "suppliers")
    held = [fleet.record(f, k) for f, k in (("vendors", vendor_id), ("suppliers", code))]
    assert all(r.status == "held" and "changed in both" in r.hold_reason for r in held), [(r.status, r.hold_reason) for r in held]
    assert _audited_conflict(held[0].id, "559-555-0202", "559-555-0303")
    fleet.set_config(lambda c: c["two_way"]["vendors"].update({"fields": {"phone": "syspro"}}), tmp_path)
    wait_until(lambda: all(fleet.settled(f) for f in ("vendors", "suppliers")), timeout=30)
    fleet.sync("suppliers", "vendors", "suppliers", "vendors")
    assert fleet.st.get("vendors", vendor_id).contactInfo.phone == "559-555-0303"
    assert fleet.sy.find_supplier(code).telephone == "559-555-0303"
    assert len(fleet.suppliers()) == len(fleet.vendors()) == 23
    _seats_respected(fleet, reached=True)


def _reverse(code: str) -> int:
    return next(int(k) for k, v in _config()["items"].items() if v == code and k.isdigit())


def _config() -> dict[str, Any]:
    from mlconnector.db.models import Integration
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        return json.loads(json.dumps(session.get(Integration, "acme").config))


def _audited_conflict(record_id: int, ours: str, theirs: str) -> bool:
    from mlconnector.db.models import AuditEvent
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        rows = session.scalars(select(AuditEvent).where(AuditEvent.sync_record_id == record_id,
                                                        AuditEvent.kind == "held")).all()
        text = json.dumps([r.decisions for r in rows])
    return "conflict phone" in text and ours in text and theirs in text


def test_a_completed_jobs_invoice_becomes_a_syspro_ap_invoice_holds_refusals_and_logoff(fleet: Fleet, tmp_path) -> None:
    fleet.sync("vendors", "suppliers")
    vendors = list(fleet.vendors().values())
    vendor, other = vendors[0], vendors[1]
    unit = fleet.sandbox_rows(fleet.st_box, "business_units")[0]

    def job_invoice(number: str, vendor_id: int, items: list[dict[str, Any]]) -> dict[str, Any]:
        """A completed job: its PO to the vendor, then the invoice the technician generated."""
        job = fleet.sandbox_put(fleet.st_box, "jobs", {"jobStatus": "Completed", "businessUnitId": unit["id"]})
        fleet.sandbox_put(fleet.st_box, "purchase_orders", {"vendorId": vendor_id, "jobId": job["id"], "status": "Received",
                                                              "date": f"{date.today()}T08:00:00Z",
                                                              "items": [{"skuId": 8_801, "quantity": 2, "cost": 38.0}]})
        return fleet.sandbox_put(fleet.st_box, "invoices", {
            "referenceNumber": number, "invoiceDate": f"{date.today()}T16:00:00Z", "job": {"id": job["id"], "number": str(job["id"]), "type": "Service"},
            "businessUnit": {"id": unit["id"], "name": unit["name"]}, "items": items})

    material = {"skuId": 8_801, "skuName": "Copper Line Set", "type": "Material", "quantity": "2.00", "cost": "38.00",
                "totalCost": "76.00", "price": "62.70", "technicianId": 77}
    labour = {"skuId": 7_001, "skuName": "Diagnostic Fee", "type": "Service", "quantity": "1.00", "cost": "45.00",
              "totalCost": "45.00", "price": "89.00"}
    leak = {"skuId": 7_099, "skuName": "Gas Leak Detection", "type": "Service", "quantity": "1.00", "cost": "30.00",
            "totalCost": "30.00", "price": "120.00"}
    good = job_invoice("90001", vendor["id"], [material, labour])
    unmapped = job_invoice("90002", vendor["id"], [material, leak])
    code_other = fleet.record("vendors", other["id"]).target_id
    fleet.sandbox_put(fleet.sy_box, "suppliers", {"Supplier": code_other, "OnHold": "Y"})  # SYSPRO will refuse it
    refused = job_invoice("90003", other["id"], [material])
    # The SYSPRO host fails the next query calls: the suppliers poll fails, its session is still logged off.
    requests.post(f"{fleet.sy_box.url}/_sandbox/faults", json={"fail_next": 5, "error_status": 503,
                                                               "path_contains": "Query"}, timeout=5)
    with pytest.raises(Exception):
        from mlconnector import engine

        engine.poll_flow("acme", "suppliers")
    requests.post(f"{fleet.sy_box.url}/_sandbox/faults", json={"fail_next": 0, "path_contains": ""}, timeout=5)
    _seats_respected(fleet)
    fleet.sync("invoices")

    # The completed job's invoice: one SYSPRO AP invoice on the supplier of the job PO's vendor,
    # its items' costs (not their prices) on the GL accounts of their types, branch, job and technician on it.
    supplier = fleet.record("vendors", vendor["id"]).target_id
    posted = fleet.sy.find_ap_invoice(supplier, "ST90001")
    assert posted is not None and posted.original_value == Decimal("121.00")
    branch = _config()["branches"][str(unit["id"])]
    assert posted.branch == branch and f"Job {good['job']['number']}" in posted.notation and "tech 77" in posted.notation
    [row] = [r for r in fleet.sandbox_rows(fleet.sy_box, "ap_invoices") if r["Invoice"] == "ST90001"]
    assert sorted((d["LedgerCode"], Decimal(str(d["LedgerValue"]))) for d in row["LedgerDistribution"]) == [
        ("10-5500", Decimal("76.00")), ("30-6100", Decimal("45.00"))]
    assert any(_config()["items"]["8801"] in d["LedgerNotation"] for d in row["LedgerDistribution"])

    # The unmapped service item is held naming it; a config change releases it.
    held = fleet.record("invoices", unmapped["id"])
    assert held.status == "held" and "SKU 7099 'Gas Leak Detection'" in held.hold_reason
    assert fleet.sy.find_ap_invoice(supplier, "ST90002") is None
    output = fleet.set_config(lambda c: c["items"].update({"7099": "SVC-LEAK"}), tmp_path)
    assert "re-queue" in output.lower() or "release" in output.lower(), output
    wait_until(lambda: fleet.record("invoices", unmapped["id"]).status == "written", timeout=30,
               message=lambda: f"not released: {fleet.record('invoices', unmapped['id']).status}")
    assert fleet.sy.find_ap_invoice(supplier, "ST90002").original_value == Decimal("106.00")

    # SYSPRO's refusal (inside an HTTP 200) is a failed record carrying SYSPRO's own message; replayable.
    failed = fleet.record("invoices", refused["id"])
    assert failed.status == "failed" and f"Supplier '{code_other}' is on hold" in failed.last_error, failed.last_error
    fleet.sandbox_put(fleet.sy_box, "suppliers", {"Supplier": code_other, "OnHold": "N"})
    from mlconnector.cli import main

    result = CliRunner().invoke(main, ["replay", str(failed.id), "--yes"], terminal_width=250)
    assert result.exit_code == 0, result.output
    wait_until(lambda: fleet.record("invoices", refused["id"]).status == "written", timeout=30)
    assert fleet.sy.find_ap_invoice(code_other, "ST90003") is not None

    # SYSPRO's AP invoices, polled by InvoiceDate/PostDate, confirm each posting in its invoice's trail.
    fleet.sync("ap_invoices")
    from mlconnector.db.models import AuditEvent
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        confirmed = session.scalars(select(AuditEvent.message).where(
            AuditEvent.sync_record_id == fleet.record("invoices", good["id"]).id, AuditEvent.kind == "confirmed")).all()
    assert len(confirmed) == 1 and f"journal {posted.journal}" in confirmed[0] and "ST90001" in confirmed[0]

    # Polled again, nothing is posted twice; ServiceTitan's invoices were never written to.
    writes = fleet.writes()
    fleet.sync("invoices", "vendors", "suppliers", "ap_invoices")
    assert fleet.writes() == writes
    assert [i for i in fleet.sandbox_rows(fleet.sy_box, "ap_invoices") if i["Invoice"].startswith("ST9")].__len__() == 3
    st_writes = requests.get(f"{fleet.st_box.url}/_sandbox/stats", timeout=5).json()["by_endpoint"]
    assert not [k for k in st_writes if ("invoices" in k or "ap-bills" in k) and k.split()[0] in ("POST", "PATCH")]
    _seats_respected(fleet)
