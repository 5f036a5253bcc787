"""Epicor Kinetic purchase orders (with their lines) -> ServiceNow Source-to-Pay: backfill
throughput through the real fleet against a bare thread pool issuing the very same vendor
calls, and the vendor calls the engine spends per PO and per idle poll against the fewest
the vendor APIs allow.

    python -m benchmarks.bench_servicenow [N] [concurrency]

Engine: the integration is registered from the pair's own sandbox config (documents wait for
the supplier the vendors flow writes, matched by id, never created by a document), with fast
retries; neither sandbox is throttled (this measures our cost, not a quota). Vendors are
synced to ServiceNow suppliers first and untimed, as onboarding would (the `vendors` flow).
Then a catch-up poll of `purchase_orders` upserts the ledger rows; the clock starts when the
poll's work is sent to the broker and stops when every sync record has reached a final state.

Baseline: a `concurrent.futures` pool of the same size doing, per PO, what the pair does on
a stock instance: Epicor GET the PO with its lines ($expand=PODetails) -> its supplier's
sys_id (known from the vendors sync, the supplier read once per vendor as the resolver does
before it links it) -> map (the pair's own mapping) -> ServiceNow look-up by the documented
keys (erp_number + erp_source) -> the look-up again right before creating (the pair repeats
it under its create lock) -> the header's Import Set row -> the created header read back
(and patched where the transform set a field otherwise) -> one Import Set row per line. The
suppliers are written beforehand (untimed) into a second ServiceNow sandbox with the same
seed, so neither run can find the other's orders. All sandboxes run in one separate process.

Two rounds of n/2 POs, engine first then baseline first, so a machine that slows down or
speeds up during the run weighs on both sides alike.

Calls are counted from the sandboxes' own request statistics (GET /_sandbox/stats), token
requests included. Minimum per PO: Epicor 1 (GET the PO, its lines expanded in the same
call); ServiceNow 1 look-up by erp_number + erp_source, 1 Import Set row for the header and
1 per line, so 2 + lines for a PO written (the synchronous Import Set API takes one row per
request and answers with that row's transform result; insertMultiple is asynchronous and
answers with no row results), and 2 for one found already written (the look-up and a read of
its lines to compare). The supplier's sys_id is in the ledger from the vendors sync, so the
minimum reads no supplier. A poll's own calls are counted apart, per poll: an idle
`purchase_orders` poll and an idle `vendors` poll each need 1 Epicor call (the change query
from the persisted position) and no ServiceNow call.
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

PAIR = "epicor-servicenow"
QUEUES = f"mlconnector,{PAIR}"
FLOW = "purchase_orders"
EP, SN_ENGINE, SN_BASE = "epicor", "sn_engine", "sn_base"
FAST_RETRY = {"base": 0.05, "max_wait": 2}
OVERRIDES = {"systems": {"epicor": {"retry": FAST_RETRY}, "servicenow": {"retry": FAST_RETRY}}}
MIN_EPICOR_PER_PO = 1  # GET the PO with $expand=PODetails
MIN_SN_WRITTEN_HEADER = 2  # look up by erp_number + erp_source, then the header's Import Set row
MIN_SN_PER_LINE = 1  # one synchronous Import Set row per line
MIN_SN_FOUND = 2  # the look-up finds it, and its lines are read to compare: nothing to write
IDLE_POLL_TARGETS = {"purchase_orders": 1, "vendors": 1}
PO_KEEP = ("VendorNum", "VendorVendorID", "VendorName", "OrderDate", "DueDate", "PromiseDate", "BuyerID",
           "ShipViaCode", "TermsCode", "OpenOrder", "EntryPerson", "CommentText", "TotalOrder", "DocTotalOrder")
LINE_KEEP = ("POLine", "PartNum", "VenPartNum", "LineDesc", "OrderQty", "XOrderQty", "UnitCost", "DocUnitCost",
             "ExtCost", "DocExtCost", "DueDate", "VendorNum", "OpenLine", "ClassID")


Setup = pair_bench.PairSetup


def _ep_rows(host: fleet.SandboxHost, entity: str) -> list[dict[str, Any]]:
    return requests.get(f"{host.url(EP)}/_sandbox/entities/{entity}", timeout=30).json()


def setup(n: int, concurrency: int) -> Setup:
    """Sandboxes, database, integration and workers, with exactly n POs in Epicor (seeded with
    as many vendors, so each PO names a vendor the `vendors` flow syncs)."""
    sandboxes = {EP: ["epicor", {"seed": 3, "records": max(1, n), "rate_limit": 0}],
                 SN_ENGINE: ["servicenow", {"seed": 3, "records": 6}], SN_BASE: ["servicenow", {"seed": 3, "records": 6}]}
    return pair_bench.start(PAIR, sandboxes, {"epicor": EP, "servicenow": SN_ENGINE},
                            lambda host: sorted(p["PONum"] for p in _ep_rows(host, "purchase_orders")), concurrency,
                            QUEUES, OVERRIDES)


def add_purchase_orders(s: Setup, count: int) -> list[int]:
    """`count` more POs in Epicor, shaped like the seeded ones (same vendors and lines, taken
    in turn); their PONums."""
    seeded = sorted(_ep_rows(s.host, "purchase_orders"), key=lambda p: p["PONum"])
    before = {p["PONum"] for p in seeded}
    with requests.Session() as http:
        for index in range(count):
            model = seeded[index % len(seeded)]
            body = {k: model[k] for k in PO_KEEP if k in model}
            body["PODetails"] = [{k: line[k] for k in LINE_KEEP if k in line} for line in model.get("PODetails") or []]
            http.post(f"{s.host.url(EP)}/_sandbox/entities/purchase_orders", json=body, timeout=30).raise_for_status()
    return sorted(p["PONum"] for p in _ep_rows(s.host, "purchase_orders") if p["PONum"] not in before)


def sync_vendors(s: Setup) -> dict[str, Any]:
    """Untimed onboarding: every Epicor vendor written as a ServiceNow supplier first."""
    return pipeline.run_flow("vendors")


def run_engine(s: Setup) -> dict[str, Any]:
    """One poll of the flow and the work it sends (see pair_bench.run_engine)."""
    return pair_bench.run_engine(s.host, s.worker, FLOW, (EP, SN_ENGINE))


def _plain(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    return value.model_dump(mode="json", by_alias=True) if hasattr(value, "model_dump") else dict(value)


class Baseline:
    """The same vendor calls from a plain thread pool: no ledger, no broker, no audit."""

    def __init__(self, s: Setup) -> None:
        from mappings import epicor_servicenow as m

        config, connectors = pair_bench.baseline_connectors(s.host, PAIR, {"epicor": EP, "servicenow": SN_BASE}, OVERRIDES)
        self.epicor = connectors["epicor"]
        self.sn = connectors["servicenow"]
        self.config = m.EpicorServiceNowConfig.model_validate(config)
        self.suppliers: dict[str, str] = {}  # VendorNum -> supplier sys_id, as the vendors flow's ledger holds them
        self.linked: dict[str, m.SupplierRef] = {}  # suppliers read once and kept, as the resolver's links
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Untimed: every Epicor vendor written as a supplier (found by name, else created
        through its Import Set row), as the vendors flow does."""
        from mappings import epicor_servicenow as m

        if self.suppliers:
            return
        table = self.sn.target_table("supplier")
        for vendor in (_plain(v) for v in self.epicor.iter_vendors()):
            document: m.StagedDocument = m.map_supplier(vendor, self.config).document  # type: ignore[assignment]
            if not document.header.keys.get("name"):
                continue
            found = self.sn.find_record(table, document.header.keys)
            if found is not None:
                self.suppliers[str(vendor["VendorNum"])] = str(found["sys_id"])
                continue
            staged = self.sn.import_row("supplier", document.header.staging)
            if staged.sys_id:
                self.suppliers[str(vendor["VendorNum"])] = staged.sys_id

    def _supplier(self, vendor_num: str) -> Any:
        """The PO's supplier: its sys_id from the vendors sync, read once per vendor (the
        resolver's match by id) and kept (the link it stores)."""
        from mappings import epicor_servicenow as m

        with self._lock:
            ref = self.linked.get(vendor_num)
        if ref is not None:
            return ref
        sys_id = self.suppliers.get(vendor_num)
        if not sys_id:
            return None
        row = self.sn.get_record(self.sn.target_table("supplier"), sys_id)
        if row is None:
            return None
        with self._lock:
            return self.linked.setdefault(vendor_num, m.SupplierRef(sys_id, str(row.get("name") or ""), "matched_by_id"))

    def _lines(self, header_id: str) -> dict[str, dict[str, Any]]:
        rows = self.sn.find_records(self.sn.target_table("purchase_order_line"), {"purchase_order": header_id})
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            found.setdefault(str(row.get("line_number") or ""), row)
        return found

    def _write_lines(self, document: Any, header_id: str, current: dict[str, dict[str, Any]]) -> None:
        from mappings import epicor_servicenow as m

        table = self.sn.target_table("purchase_order_line")
        for line in document.lines:
            row = current.get(line.keys["line_number"])
            if row is None:
                staged = self.sn.import_row("purchase_order_line", {**line.staging, "purchase_order": header_id})
                if staged.action in ("ignored", "skipped") or not staged.sys_id:
                    raise RuntimeError(f"{document.label} line {line.keys['line_number']} was {staged.action}")
                continue
            changes = m.differences(row, line.target)
            if changes:
                self.sn.patch_record(table, str(row["sys_id"]), {k: v for k, (_, v) in changes.items()})

    def one(self, po_num: int) -> str:
        from mappings import epicor_servicenow as m
        from mlconnector.http import FatalError

        po = _plain(self.epicor.get("purchase_orders", int(po_num)))
        ref = self._supplier(str(po.get("VendorNum") or ""))
        if ref is None:
            return "held"
        document: m.StagedDocument = m.map_purchase_order(po, self.config, ref).document  # type: ignore[assignment]
        table = self.sn.target_table("purchase_order")
        try:
            existing = self.sn.find_record(table, document.header.keys)  # the plan's look-up
            if existing is not None:
                header_id = str(existing["sys_id"])
                header_changes = m.differences(existing, document.header.target)
                current = self._lines(header_id)
                missing = any(line.keys["line_number"] not in current for line in document.lines)
                changed = any(m.differences(current[line.keys["line_number"]], line.target)
                              for line in document.lines if line.keys["line_number"] in current)
                if not (header_changes or missing or changed):
                    return "skipped"
                if header_changes:
                    self.sn.patch_record(table, header_id, {k: v for k, (_, v) in header_changes.items()})
                self._write_lines(document, header_id, self._lines(header_id))
                return "written"
            if self.sn.find_record(table, document.header.keys) is not None:  # again, right before creating
                return "skipped"
            staged = self.sn.import_row("purchase_order", document.header.staging)
            if staged.action in ("ignored", "skipped") or not staged.sys_id:
                return "skipped"
            header_id = staged.sys_id
            current_row = self.sn.get_record(table, header_id, fields=tuple(document.header.target)) or {}
            fix = m.differences(current_row, document.header.target)  # what the transform set otherwise
            if fix:
                self.sn.patch_record(table, header_id, {k: v for k, (_, v) in fix.items()})
            self._write_lines(document, header_id, self._lines(header_id) if staged.action == "updated" else {})
            return "written"
        except FatalError:
            return "failed"

    def run(self, s: Setup) -> dict[str, Any]:
        self.prepare()
        return pair_bench.run_pool(s.host, s.worker, (EP, SN_BASE), s.concurrency, self.one, s.ids)


def _record_statuses() -> dict[str, str]:
    """PONum -> the final status of its sync record."""
    from sqlalchemy import select

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        return dict(session.execute(select(SyncRecord.source_id, SyncRecord.status).where(SyncRecord.flow == FLOW)).all())


def _servicenow_orders(s: Setup, name: str, po_nums: set[str]) -> int:
    rows = requests.get(f"{s.host.url(name)}/_sandbox/entities/sn_shop_purchase_order", timeout=30).json()
    return sum(1 for r in rows if r.get("erp_number") in po_nums and r.get("erp_source") == "Epicor Kinetic")


def main(n: int = 100, concurrency: int = 4) -> dict[str, Any]:
    first_half = max(1, n // 2)
    s = setup(first_half, concurrency)
    try:
        vendors = sync_vendors(s)  # untimed prerequisite, as onboarding would
        baseline = Baseline(s)
        engine_runs = [run_engine(s)]
        baseline_runs = [baseline.run(s)]
        s.ids = add_purchase_orders(s, max(1, n - len(s.ids)))
        baseline_runs.append(baseline.run(s))
        engine_runs.append(run_engine(s))
        idle_orders = pair_bench.idle_poll(s.host, "purchase_orders", (EP, SN_ENGINE))
        idle_vendors = pair_bench.idle_poll(s.host, "vendors", (EP, SN_ENGINE))

        throughput = pair_bench.throughput_figures(engine_runs, baseline_runs, concurrency)
        records = throughput["records"]
        statuses = pipeline.statuses(FLOW)
        lines = {str(p["PONum"]): len(p.get("PODetails") or []) for p in _ep_rows(s.host, "purchase_orders")}
        minimum_ep = MIN_EPICOR_PER_PO * records
        minimum_sn = 0
        for po_num, status in _record_statuses().items():
            if status == "written":
                minimum_sn += MIN_SN_WRITTEN_HEADER + MIN_SN_PER_LINE * lines.get(po_num, 0)
            elif status == "skipped":
                minimum_sn += MIN_SN_FOUND
        figures = {
            **throughput,
            "engine_statuses": statuses,
            "vendors_flow": {k: vendors[k] for k in ("found", "queued", "statuses")},
            "lines_per_record": round(sum(lines.values()) / max(len(lines), 1), 3),
            "servicenow_purchase_orders": {"engine": _servicenow_orders(s, SN_ENGINE, set(lines)),
                                           "baseline": _servicenow_orders(s, SN_BASE, set(lines))},
            **pair_bench.call_figures(
                engine_runs, baseline_runs, records, throughput["baseline_records"],
                [("epicor", "epicor", EP, EP, minimum_ep), ("servicenow", "servicenow", SN_ENGINE, SN_BASE, minimum_sn)],
                {"purchase_orders": idle_orders, "vendors": idle_vendors}, IDLE_POLL_TARGETS),
        }
    finally:
        s.close()
    write_result("servicenow", figures)
    return figures


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    result = main(*args)
    print(json.dumps({k: v for k, v in result.items() if "by_endpoint" not in k}))
