"""Epicor Kinetic purchase orders (with their lines) -> Procore purchase order contracts:
backfill throughput through the real fleet against a bare thread pool issuing the very same
vendor calls, and the vendor calls the engine spends per PO and per idle poll against the
fewest the vendor APIs allow.

    python -m benchmarks.bench_procore [N] [concurrency]

Engine: the integration is registered from the pair's own sandbox config, with fast retries;
neither sandbox is throttled and the connector's own pacing is off (this measures our cost,
not Procore's quota, which the fleet tests pace for). Vendors are synced to Procore first
and untimed, as onboarding would (the `vendors` flow). Then a catch-up poll of
`purchase_orders` upserts the ledger rows; the clock starts when the poll's work is sent to
the broker and stops when every sync record has reached a final state.

Baseline: a `concurrent.futures` pool of the same size doing, per PO, what the pair does:
Epicor GET the PO with its lines ($expand=PODetails) -> map (the pair's own mapping, with
the project, cost codes and line item type read once beforehand) -> Procore look-up by
origin_id -> look-up by vendor + PO number -> create the contract -> write its lines in one
sync call. The vendors are written beforehand (untimed) into a second Procore sandbox with
the same seed, so neither run can find the other's contracts. All sandboxes run in one
separate process.

Two rounds of n/2 POs, engine first then baseline first, so a machine that slows down or
speeds up during the run weighs on both sides alike.

Calls are counted from the sandboxes' own request statistics (GET /_sandbox/stats), token
requests included. Minimum per PO: Epicor 1 (GET the PO, its lines expanded in the same
call); Procore 4 for a contract created: the look-up by origin_id, the look-up by vendor +
PO number (the product's duplicate rule: a contract someone entered by hand is updated, not
doubled), the create, and one line-item sync call for all its lines. A poll's own calls are
counted apart: an idle `purchase_orders` poll and an idle `vendors` poll each need 1 Epicor
call (the change query from the persisted position) and no Procore call.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import requests

from benchmarks import bench_pipeline as pipeline
from benchmarks import fleet
from benchmarks import pair_bench
from benchmarks.common import write_result

PAIR = "epicor-procore"
QUEUES = f"mlconnector,{PAIR}"
FLOW = "purchase_orders"
EP, PC_ENGINE, PC_BASE = "epicor", "procore_engine", "procore_base"
FAST_RETRY = {"base": 0.05, "max_wait": 2}
UNPACED = {"rate_limit_per_hour": 0, "spike_limit": 0}  # 0: off (None would drop the key)
OVERRIDES = {"systems": {"epicor": {"retry": FAST_RETRY}, "procore": {"retry": FAST_RETRY, **UNPACED}}}
MIN_EPICOR_PER_PO = 1  # GET the PO with $expand=PODetails
MIN_PROCORE_PER_PO = 4  # origin_id look-up, vendor + number look-up, create, one line-item sync
IDLE_POLL_TARGETS = {"purchase_orders": 1, "vendors": 1}
PO_KEEP = ("VendorNum", "VendorVendorID", "VendorName", "OrderDate", "DueDate", "PromiseDate", "BuyerID",
           "ShipViaCode", "TermsCode", "OpenOrder", "EntryPerson", "CommentText", "TotalOrder", "DocTotalOrder")
LINE_KEEP = ("POLine", "PartNum", "VenPartNum", "LineDesc", "OrderQty", "XOrderQty", "UnitCost", "DocUnitCost",
             "ExtCost", "DocExtCost", "DueDate", "VendorNum", "OpenLine", "ClassID")

Setup = pair_bench.PairSetup


def _ep_rows(host: fleet.SandboxHost, entity: str) -> list[dict[str, Any]]:
    return requests.get(f"{host.url(EP)}/_sandbox/entities/{entity}", timeout=30).json()


def setup(n: int, concurrency: int) -> Setup:
    """Sandboxes, database, integration and workers, with exactly n POs in Epicor."""
    procore = ["procore", {"seed": 3, "records": 2, "rate_limit": 0}]
    sandboxes = {EP: ["epicor", {"seed": 3, "records": max(1, n), "rate_limit": 0}],
                 PC_ENGINE: procore, PC_BASE: procore}
    return pair_bench.start(PAIR, sandboxes, {"epicor": EP, "procore": PC_ENGINE},
                            lambda host: sorted(p["PONum"] for p in _ep_rows(host, "purchase_orders")), concurrency,
                            QUEUES, OVERRIDES)


def add_purchase_orders(s: Setup, count: int) -> list[int]:
    """`count` more POs in Epicor, shaped like the seeded ones (taken in turn); their PONums."""
    seeded = sorted(_ep_rows(s.host, "purchase_orders"), key=lambda p: p["PONum"])
    before = {p["PONum"] for p in seeded}
    with requests.Session() as http:
        for index in range(count):
            model = seeded[index % len(seeded)]
            body = {k: model[k] for k in PO_KEEP if k in model}
            body["PODetails"] = [{k: line[k] for k in LINE_KEEP if k in line} for line in model.get("PODetails") or []]
            http.post(f"{s.host.url(EP)}/_sandbox/entities/purchase_orders", json=body, timeout=30).raise_for_status()
    return sorted(p["PONum"] for p in _ep_rows(s.host, "purchase_orders") if p["PONum"] not in before)


def run_engine(s: Setup) -> dict[str, Any]:
    return pair_bench.run_engine(s.host, s.worker, FLOW, (EP, PC_ENGINE))


class Baseline:
    """The same vendor calls from a plain thread pool: no ledger, no broker, no audit."""

    def __init__(self, s: Setup) -> None:
        from mappings import epicor_procore as m

        config, connectors = pair_bench.baseline_connectors(s.host, PAIR, {"epicor": EP, "procore": PC_BASE}, OVERRIDES)
        self.epicor = connectors["epicor"]
        self.procore = connectors["procore"]
        self.config = m.EpicorProcoreConfig.model_validate(config)
        self.vendors: dict[str, int] = {}  # VendorNum -> Procore vendor id, as the vendors flow's ledger holds them
        self._lock = threading.Lock()
        self.project: Any = None
        self.codes: dict[str, int] = {}
        self.kind: Any = None

    def prepare(self) -> None:
        """Untimed: every Epicor vendor written to Procore, and the company data read once."""
        from mappings import epicor_procore as m
        from tasks.epicor_source import plain

        if self.vendors:
            return
        for vendor in (plain(v) for v in self.epicor.iter_vendors()):
            document: m.ProcoreDocument = m.map_vendor(vendor, self.config).document  # type: ignore[assignment]
            self.vendors[str(vendor["VendorNum"])] = self.procore.upsert_vendor(document.header, document.origin_id).record.id
        projects = [m.ProjectRef(p.id, p.name, p.origin_id, p.project_number) for p in self.procore.list_projects()]
        self.project = next(p for p in projects if p.id == self.config.projects.default)
        self.codes = {c.full_code or "": c.id for c in self.procore.list_cost_codes(self.project.id)}
        kind = m.line_item_type(self.config, [m.LineItemTypeRef(t.id, t.code, t.base_type)
                                              for t in self.procore.list_line_item_types()])
        self.kind = kind[0]  # type: ignore[index]

    def one(self, po_num: int) -> str:
        from mappings import epicor_procore as m
        from mlconnector.http import FatalError
        from tasks.epicor_source import plain

        po = plain(self.epicor.get("purchase_orders", int(po_num)))
        vendor_id = self.vendors.get(str(po.get("VendorNum")))
        if vendor_id is None:
            return "held"
        mapped = m.map_commitment(po, self.config, vendor_id, self.project, self.codes, self.kind)
        if not isinstance(mapped, m.MappedRecord):
            return "held"
        document: m.ProcoreDocument = mapped.document  # type: ignore[assignment]
        try:
            existing = self.procore.find_commitment_by_origin_id(document.origin_id, document.project_id)
            if existing is None:
                existing = self.procore.find_commitment(vendor_id, document.header["number"], document.project_id)
            self.procore.upsert_purchase_order_contract(
                int(document.project_id or 0), document.header, document.lines, document.origin_id,
                existing_id=existing.id if existing is not None else None, looked_up=True)
            return "written"
        except FatalError:
            return "failed"

    def run(self, s: Setup) -> dict[str, Any]:
        self.prepare()
        return pair_bench.run_pool(s.host, s.worker, (EP, PC_BASE), s.concurrency, self.one, s.ids)


def _contracts(s: Setup, name: str, po_nums: set[str]) -> int:
    rows = requests.get(f"{s.host.url(name)}/_sandbox/entities/purchase_order_contracts", timeout=30).json()
    return sum(1 for r in rows if str(r.get("origin_id") or "").removeprefix("epicor:po:") in po_nums)


def main(n: int = 100, concurrency: int = 4) -> dict[str, Any]:
    first_half = max(1, n // 2)
    s = setup(first_half, concurrency)
    try:
        vendors = pipeline.run_flow("vendors")  # untimed prerequisite, as onboarding would
        baseline = Baseline(s)
        engine_runs = [run_engine(s)]
        baseline_runs = [baseline.run(s)]
        s.ids = add_purchase_orders(s, max(1, n - len(s.ids)))
        baseline_runs.append(baseline.run(s))
        engine_runs.append(run_engine(s))
        idle_orders = pair_bench.idle_poll(s.host, "purchase_orders", (EP, PC_ENGINE))
        idle_vendors = pair_bench.idle_poll(s.host, "vendors", (EP, PC_ENGINE))

        throughput = pair_bench.throughput_figures(engine_runs, baseline_runs, concurrency)
        records = throughput["records"]
        lines = {str(p["PONum"]): len(p.get("PODetails") or []) for p in _ep_rows(s.host, "purchase_orders")}
        figures = {
            **throughput,
            "engine_statuses": pipeline.statuses(FLOW),
            "vendors_flow": {k: vendors[k] for k in ("found", "queued", "statuses")},
            "lines_per_record": round(sum(lines.values()) / max(len(lines), 1), 3),
            "procore_contracts": {"engine": _contracts(s, PC_ENGINE, set(lines)), "baseline": _contracts(s, PC_BASE, set(lines))},
            **pair_bench.call_figures(
                engine_runs, baseline_runs, records, throughput["baseline_records"],
                [("epicor", "epicor", EP, EP, MIN_EPICOR_PER_PO * records),
                 ("procore", "procore", PC_ENGINE, PC_BASE, MIN_PROCORE_PER_PO * records)],
                {"purchase_orders": idle_orders, "vendors": idle_vendors}, IDLE_POLL_TARGETS),
        }
    finally:
        s.close()
    write_result("procore", figures)
    return figures


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    result = main(*args)
    print(json.dumps({k: v for k, v in result.items() if "by_endpoint" not in k}))
