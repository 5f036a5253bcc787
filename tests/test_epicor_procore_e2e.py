"""Epicor Kinetic -> Procore end to end on the real fleet: Celery worker processes, Redis,
PostgreSQL, and both vendor sandboxes over HTTP. Every outcome is read back through
Procore's own REST API (OAuth token, Procore-Company-Id header), as any Procore client would.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest
import redis
import requests
from click.testing import CliRunner
from sqlalchemy import select, update

from sandboxes import SandboxOptions, create_sandbox, start_sandbox
from tests.conftest import wait_until
from tests.pair_fleet import PairFleet

pytestmark = pytest.mark.fleet

QUEUES = "mlconnector,epicor-procore"
FAST_RETRY = {"base": 0.05, "max_wait": 2}
FLOWS = ("vendors", "purchase_orders", "ap_invoices")
ROOMY_SPIKE = 400  # the spike window both sides use where a test is not about pacing


class Fleet(PairFleet):
    def __init__(self, epicor: Any, procore: Any, env: dict[str, str], worker: Any) -> None:
        self.epicor, self.procore, self.env, self.worker = epicor, procore, env, worker
        self._token: str | None = None

    # -- Procore, read through its REST API --
    def api(self, path: str, **params: Any) -> Any:
        info = self.procore.info()
        for _ in range(40):
            if self._token is None:
                creds = info["credentials"]
                answer = requests.post(info["token_url"], data={"grant_type": "client_credentials", "client_id": creds["client_id"],
                                                                "client_secret": creds["client_secret"]}, timeout=10)
                self._token = answer.json()["access_token"]
            response = requests.get(f"{info['api_base']}/rest/v1.0/{path}", params={"per_page": 1000, **params}, timeout=10,
                                    headers={"Authorization": f"Bearer {self._token}",
                                             "Procore-Company-Id": str(info["credentials"]["company_id"])})
            if response.status_code == 401:
                self._token = None
                continue
            if response.status_code == 429:  # the test's own reads share the app's windows
                time.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            assert response.status_code == 200, response.text
            return response.json()
        raise AssertionError(f"Procore kept refusing {path}")

    def projects(self) -> list[int]:
        return [p["id"] for p in self.api("projects", company_id=self.procore.info()["credentials"]["company_id"])]

    def contracts(self, po_num: Any) -> list[dict[str, Any]]:
        return [c for pid in self.projects() for c in self.api("purchase_order_contracts", project_id=pid, view="extended")
                if c["origin_id"] == f"epicor:po:{po_num}" or c["number"] == str(po_num)]

    def direct_costs(self, invoice_num: str) -> list[dict[str, Any]]:
        found = []
        for pid in self.projects():
            for dc in self.api(f"projects/{pid}/direct_costs", **{"filters[invoice_number]": invoice_num}):
                found.append(self.api(f"projects/{pid}/direct_costs/{dc['id']}"))
        return found

    def vendors(self, vendor_num: Any) -> list[dict[str, Any]]:
        company = self.procore.info()["credentials"]["company_id"]
        return self.api("vendors", company_id=company, **{"filters[origin_id]": f"epicor:vendor:{vendor_num}"})

    def counts(self) -> dict[str, int]:
        company = self.procore.info()["credentials"]["company_id"]
        pos = dcs = 0
        for pid in self.projects():
            pos += len(self.api("purchase_order_contracts", project_id=pid))
            dcs += len(self.api(f"projects/{pid}/direct_costs"))
        return {"vendors": len(self.api("vendors", company_id=company)), "pos": pos, "direct_costs": dcs}

    def cost_code(self, code_id: int) -> str:
        return next(c["full_code"] for pid in self.projects() for c in self.api("cost_codes", project_id=pid)
                    if c["id"] == code_id)

    # -- Epicor, through its control API as a buyer or AP clerk changing records --
    def epicor_rows(self, entity: str) -> list[dict[str, Any]]:
        return self.sandbox_rows(self.epicor, entity)

    def epicor_put(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.sandbox_put(self.epicor, entity, payload)

    # -- ours --
    def poll(self, *flows: str, full: bool = False) -> None:
        from mlconnector import engine
        from mlconnector.tasks import send

        for flow in flows or FLOWS:
            send(engine.poll_flow("acme", flow, full=full).enqueue)

    def settled(self, flow: str, count: int) -> bool:
        done = self.statuses(flow)
        return sum(done.get(s, 0) for s in ("written", "skipped", "held", "failed")) >= count and not done.get("pending") \
            and not done.get("running")

    def sync_all(self) -> None:
        for flow in FLOWS:
            self.poll(flow)
            wait_until(lambda: self.settled(flow, len(self.epicor_rows(flow))), timeout=60,
                       message=lambda: f"{flow} not settled: {self.statuses(flow)}")

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

    def procore_stats(self) -> dict[str, Any]:
        return requests.get(f"{self.procore.url}/_sandbox/stats", timeout=5).json()


@pytest.fixture
def fleet(configure, fresh_pg: str, redis_url: str, start_worker, request) -> Any:
    from mlconnector.harness import SandboxSet, register

    options = getattr(request, "param", {})
    redis.Redis.from_url(redis_url).flushdb()
    env = configure(fresh_pg, redis_url, MLCONNECTOR_SWEEP_AFTER_SECONDS="2", MLCONNECTOR_MAX_DELIVERIES="10")
    epicor = start_sandbox(create_sandbox("epicor", SandboxOptions(seed=7, records=options.get("records", 3))))
    procore = start_sandbox(create_sandbox("procore", SandboxOptions(seed=7, records=2,
                                                                     token_ttl=options.get("token_ttl", 0) or None)))
    spike = options.get("spike")  # None: the vendor's documented default on both sides
    if spike is None:
        requests.post(f"{procore.url}/_sandbox/settings", json={"spike_limit": ROOMY_SPIKE}, timeout=5).raise_for_status()
    register("acme", "epicor-procore", SandboxSet({"epicor": epicor, "procore": procore}), overrides={
        "systems": {"epicor": {"retry": FAST_RETRY},
                    "procore": {"retry": FAST_RETRY, **({"spike_limit": ROOMY_SPIKE} if spike is None else {})}}})
    worker = start_worker(env, queues=QUEUES, concurrency=2)
    yield Fleet(epicor, procore, env, worker)
    epicor.stop()
    procore.stop()


def test_a_poll_writes_vendors_then_contracts_and_direct_costs_and_replays_and_changes_create_nothing_new(fleet: Fleet) -> None:
    from mlconnector.cli import main
    from mlconnector.db.models import AuditEvent, SyncRecord
    from mlconnector.db.session import session_scope

    before = fleet.counts()
    fleet.sync_all()
    assert all(not fleet.statuses(f).get("failed") and not fleet.statuses(f).get("held") for f in FLOWS), fleet.statuses()
    config = fleet.config()
    types = {t["id"]: t for t in fleet.api("line_item_types", company_id=fleet.procore.info()["credentials"]["company_id"])}
    for vendor in fleet.epicor_rows("vendors"):
        [found] = fleet.vendors(vendor["VendorNum"])
        assert found["name"] == vendor["Name"] and found["origin_code"] == vendor["VendorID"]
    for po in fleet.epicor_rows("purchase_orders"):
        [contract] = fleet.contracts(po["PONum"])
        assert contract["vendor"]["id"] == fleet.vendors(po["VendorNum"])[0]["id"]  # the vendor relationship
        assert contract["project"]["id"] == config["projects"]["default"]
        assert len(contract["line_items"]) == len(po["PODetails"])
        assert sum(Decimal(l["amount"]) for l in contract["line_items"]) == \
            sum(Decimal(str(d["ExtCost"])).quantize(Decimal("0.01")) for d in po["PODetails"])
        for line in contract["line_items"]:
            assert line["cost_code"]["full_code"] == config["cost_codes"]["po_lines"]
            assert types[line["line_item_type"]["id"]]["base_type"] == "materials"  # company data, not an assumed code
    for invoice in fleet.epicor_rows("ap_invoices"):
        [cost] = fleet.direct_costs(invoice["InvoiceNum"])
        assert cost["direct_cost_type"] == "invoice" and cost["vendor_id"] == fleet.vendors(invoice["VendorNum"])[0]["id"]
        assert cost["origin_id"] == f"epicor:apinvoice:{invoice['VendorNum']}/{invoice['InvoiceNum']}"
        by_line = {l["origin_id"].rsplit(":", 1)[1]: l for l in cost["line_items"]}
        for line in invoice["APInvDtls"]:
            mapped = by_line[str(line["InvoiceLine"])]
            assert mapped["cost_code"]["full_code"] == config["cost_codes"]["by_account"][line["GLAccount"].replace("|", "-")]
            assert Decimal(mapped["amount"]) == Decimal(str(line["ExtCost"])).quantize(Decimal("0.01"))
    after_first = fleet.counts()
    assert after_first["pos"] - before["pos"] == len(fleet.epicor_rows("purchase_orders"))
    assert after_first["direct_costs"] - before["direct_costs"] == len(fleet.epicor_rows("ap_invoices"))
    assert after_first["vendors"] - before["vendors"] == len(fleet.epicor_rows("vendors"))

    # The audit trail of a written direct cost: the Epicor source id, the mapped fields, the decisions.
    invoice = fleet.epicor_rows("ap_invoices")[0]
    record = fleet.record("ap_invoices", f"{invoice['VendorNum']}/{invoice['InvoiceNum']}")
    with session_scope() as session:
        events = list(session.scalars(select(AuditEvent).where(AuditEvent.sync_record_id == record.id)))
        mapped = json.dumps([e.mapped_payload for e in events if e.mapped_payload], default=str)
        decided = json.dumps([e.decisions for e in events if e.decisions], default=str)
        sourced = json.dumps([e.source_payload for e in events if e.source_payload], default=str)
    assert f"epicor:apinvoice:{invoice['VendorNum']}/{invoice['InvoiceNum']}" in mapped and '"cost_code_id"' in mapped
    assert "cost code" in decided and invoice["InvoiceNum"] in sourced

    # Replaying every record, and a full re-poll with the ledger's targets forgotten (a restored
    # database), each finds its record in Procore by origin_id and creates nothing.
    with session_scope() as session:
        ids = list(session.scalars(select(SyncRecord.id)))
    for record_id in ids:
        result = CliRunner().invoke(main, ["replay", str(record_id), "--yes"], terminal_width=250)
        assert result.exit_code == 0, result.output
    wait_until(lambda: all(fleet.settled(f, len(fleet.epicor_rows(f))) for f in FLOWS), timeout=60, message="replays")
    with session_scope() as session:
        session.execute(update(SyncRecord).values(target_id=None, target_key=None, written_version=None, source_version=None))
    for flow in FLOWS:
        fleet.poll(flow, full=True)
        wait_until(lambda: fleet.settled(flow, len(fleet.epicor_rows(flow))) and _targets_known(flow), timeout=60,
                   message=lambda: f"{flow} re-poll: {fleet.statuses(flow)}")
    assert fleet.counts() == after_first

    # A PO changed in Epicor (a quantity, and a line added) updates its contract in place.
    po = fleet.epicor_rows("purchase_orders")[0]
    lines = [{k: d[k] for k in ("POLine", "PartNum", "LineDesc", "OrderQty", "UnitCost", "ExtCost")} for d in po["PODetails"]]
    lines[0]["OrderQty"], lines[0]["ExtCost"] = 99, round(99 * lines[0]["UnitCost"], 2)
    lines.append({"POLine": len(lines) + 1, "PartNum": "REBAR-4", "LineDesc": "#4 rebar 20ft", "OrderQty": 10,
                  "UnitCost": 12.5, "ExtCost": 125.0})
    fleet.epicor_put("purchase_orders", {"PONum": po["PONum"], "PODetails": lines})
    deadline = time.time() + 30
    while time.time() < deadline and len(fleet.contracts(po["PONum"])[0]["line_items"]) != len(lines):
        fleet.poll("purchase_orders")
        time.sleep(1)
    [contract] = fleet.contracts(po["PONum"])
    assert len(contract["line_items"]) == len(lines)
    assert Decimal(next(l for l in contract["line_items"] if l["origin_id"].endswith(":1"))["quantity"]) == 99
    assert fleet.counts() == after_first


def _failures(flow: str) -> list[tuple[str, str, str | None]]:
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        return list(session.execute(select(SyncRecord.source_id, SyncRecord.status, SyncRecord.last_error).where(
            SyncRecord.flow == flow)).all())


def _watermark(flow: str) -> str:
    from mlconnector.db.models import Watermark
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        mark = session.get(Watermark, ("acme", flow))
        return f"watermark {mark.value if mark else None}, last poll {mark.last_poll_at if mark else None} " \
               f"found {mark.last_poll_found if mark else None}"


def _targets_known(flow: str) -> bool:
    from sqlalchemy import func

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        return not session.scalar(select(func.count()).select_from(SyncRecord).where(
            SyncRecord.flow == flow, SyncRecord.target_id.is_(None)))


def test_an_unmapped_gl_account_and_an_unknown_project_hold_with_their_names_until_set_config(fleet: Fleet, tmp_path) -> None:
    fleet.sync_all()
    vendor = fleet.epicor_rows("vendors")[0]
    fleet.epicor_put("ap_invoices", {
        "VendorNum": vendor["VendorNum"], "InvoiceNum": "PERMIT-77", "InvoiceDate": "2026-11-03", "Posted": False,
        "APInvDtls": [{"InvoiceLine": 1, "Description": "Permit filing fee", "VendorQty": 1, "UnitCost": 180.0,
                       "ExtCost": 180.0, "GLAccount": "6400|200"}]})
    fleet.epicor_put("ap_invoices", {
        "VendorNum": vendor["VendorNum"], "InvoiceNum": "JOB-77", "InvoiceDate": "2026-11-03", "Posted": False,
        "APInvDtls": [{"InvoiceLine": 1, "Description": "Crane hire", "VendorQty": 1, "UnitCost": 900.0, "ExtCost": 900.0,
                       "GLAccount": "6200|300", "JobNum": "JOB-4242"}]})
    # A PO whose line is delivered in two releases for a job: one contract on that job's
    # project (the job is the Procore project's origin id), one line item per release.
    projects = {p["origin_id"]: p["id"] for p in fleet.api("projects", company_id=fleet.procore.info()["credentials"]["company_id"])}
    job = sorted(projects)[-1]
    released = fleet.epicor_put("purchase_orders", {
        "VendorNum": vendor["VendorNum"], "VendorVendorID": vendor["VendorID"], "VendorName": vendor["Name"],
        "OrderDate": "2026-11-02", "OpenOrder": True,
        "PODetails": [{"POLine": 1, "PartNum": "CONC-4K", "LineDesc": "4000 psi concrete", "OrderQty": 10, "UnitCost": 150.0,
                       "ExtCost": 1500.0}],
        "PORels": [{"POLine": 1, "PORelNum": 1, "RelQty": 6, "DueDate": "2026-11-10", "JobNum": job},
                   {"POLine": 1, "PORelNum": 2, "RelQty": 4, "DueDate": "2026-11-24", "JobNum": job}]})

    def released_written() -> bool:
        # Polled again until found, as beat would: a change stamped in the very millisecond a poll
        # starts falls in the next poll's window (windows are [since, until) at Epicor's precision).
        if fleet.record("purchase_orders", released["PONum"]) is None:
            fleet.poll("purchase_orders")
        return getattr(fleet.record("purchase_orders", released["PONum"]), "status", "") == "written"

    wait_until(released_written, timeout=30, interval=0.5,
               message=lambda: f"released PO {released['PONum']} changed {released.get('ChangeDate')}: "
                       f"{_failures('purchase_orders')}; {_watermark('purchase_orders')}")
    [contract] = fleet.contracts(released["PONum"])
    assert contract["project"]["id"] == projects[job]
    assert sorted((l["origin_id"].rsplit(":", 1)[1], Decimal(l["quantity"]), Decimal(l["amount"])) for l in contract["line_items"]) \
        == [("1.1", 6, Decimal("900")), ("1.2", 4, Decimal("600"))]

    config = fleet.config()
    del config["cost_codes"]["by_account"]["6400-200"]
    fleet.set_config(config, tmp_path)
    permit, job = f"{vendor['VendorNum']}/PERMIT-77", f"{vendor['VendorNum']}/JOB-77"
    deadline = time.time() + 30
    while time.time() < deadline and not all(getattr(fleet.record("ap_invoices", s), "status", "") == "held" for s in (permit, job)):
        fleet.poll("ap_invoices")
        time.sleep(1)
    held = fleet.record("ap_invoices", permit)
    assert held.status == "held" and "GL account(s) 6400-200 could not be mapped to a Procore cost code" in held.hold_reason
    unknown = fleet.record("ap_invoices", job)
    assert unknown.status == "held" and "unknown project 'JOB-4242'" in unknown.hold_reason
    assert fleet.direct_costs("PERMIT-77") == [] and fleet.direct_costs("JOB-77") == []

    # The map corrected: each held record is released by the config change and written once.
    config["cost_codes"]["by_account"]["6400-200"] = "01-100"
    target_project = fleet.projects()[-1]
    config["projects"]["by_reference"] = {"JOB-4242": target_project}
    assert "re-queue" in fleet.set_config(config, tmp_path)
    wait_until(lambda: all(getattr(fleet.record("ap_invoices", s), "status", "") == "written" for s in (permit, job)),
               timeout=60, message=lambda: f"not released: {fleet.statuses('ap_invoices')}")
    [cost] = fleet.direct_costs("PERMIT-77")
    [line] = cost["line_items"]
    assert line["cost_code"]["full_code"] == "01-100" and Decimal(line["amount"]) == Decimal("180")
    assert len(fleet.direct_costs("JOB-77")) == 1
    assert any(dc["invoice_number"] == "JOB-77" for dc in fleet.api(f"projects/{target_project}/direct_costs"))


@pytest.mark.parametrize("fleet", [{"spike": "vendor default", "token_ttl": 3, "records": 3}], indirect=True)
def test_a_burst_is_paced_under_both_rate_windows_and_a_token_expiry_mid_batch_writes_everything_once(fleet: Fleet) -> None:
    settings = requests.get(f"{fleet.procore.url}/_sandbox/settings", timeout=5).json()
    assert settings["spike_limit"] == 25 and settings["hourly_limit"] == 3600  # the sandbox enforces both windows
    requests.post(f"{fleet.procore.url}/_sandbox/stats/reset", timeout=5)
    started = time.time()
    fleet.poll("vendors")
    time.sleep(1.5)
    requests.post(f"{fleet.procore.url}/_sandbox/expire-tokens", timeout=5)  # mid-batch, each system its own
    requests.post(f"{fleet.epicor.url}/_sandbox/expire-tokens", timeout=5)
    fleet.sync_all()
    stats = fleet.procore_stats()
    elapsed = time.time() - started
    assert stats["total"] > 25, stats  # more calls than one spike window allows ...
    assert stats["rate_limited"] == 0, stats  # ... paced by the fleet instead of drawing 429s
    assert elapsed >= 9, elapsed
    assert stats["tokens_issued"] >= 2  # the expired tokens were replaced, nothing failed for them
    for flow in FLOWS:
        assert fleet.statuses(flow) == {"written": len(fleet.epicor_rows(flow))}, _failures(flow)
    contracts, costs = [], []
    for pid in fleet.projects():  # a few reads: the test's own calls share the app's windows
        contracts += [c["origin_id"] for c in fleet.api("purchase_order_contracts", project_id=pid)]
        costs += [c["origin_id"] for c in fleet.api(f"projects/{pid}/direct_costs")]
    assert sorted(c for c in contracts if c and c.startswith("epicor:")) == \
        sorted(f"epicor:po:{po['PONum']}" for po in fleet.epicor_rows("purchase_orders"))
    assert sorted(c for c in costs if c and c.startswith("epicor:")) == \
        sorted(f"epicor:apinvoice:{i['VendorNum']}/{i['InvoiceNum']}" for i in fleet.epicor_rows("ap_invoices"))
