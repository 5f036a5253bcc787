"""ServiceTitan job invoices -> SYSPRO AP invoices (APSTIN over e.net): backfill throughput
through the real fleet against a bare thread pool issuing the very same vendor calls, and the
vendor calls the engine spends per invoice and per idle poll against the fewest the APIs allow.

    python -m benchmarks.bench_syspro [N] [concurrency]

Engine: the integration is registered from the pair's own sandbox config, with fast retries;
ServiceTitan vendors are synced to SYSPRO suppliers first and untimed, as onboarding would (the
`vendors` flow); an invoice whose job has no purchase order naming a vendor posts to
`default_supplier`; SYSPRO's licence at `max_sessions` seats; neither sandbox is throttled. A
catch-up poll of `invoices` upserts the ledger rows; the clock starts when the poll's work is
sent to the broker and stops when every sync record has reached a final state.

Baseline: a `concurrent.futures` pool of the same size doing, per invoice, what the pair does:
ServiceTitan GET the invoice -> the purchase orders of its job (the vendor) -> map (the pair's
own mapping; the vendor's supplier, made beforehand and untimed as the vendors flow makes it) -> SYSPRO Logon -> COMFND look-up of (Supplier, Invoice) -> APSTIN post ->
Logoff, into a second SYSPRO sandbox with the same seed. Its sessions share the same fleet
seats (the Redis slots), as they would in production. All sandboxes run in one separate process.

Two rounds of n/2 invoices, engine first then baseline first.

Calls are counted from the sandboxes' own statistics. Minimum per invoice: ServiceTitan 2
(the invoice, and the purchase orders of its job, where its vendor is); SYSPRO 2 (the look-up
that keeps a post from being sent twice, and the APSTIN post) plus one Logon and one Logoff
per session, which the minimum counts once per run: a session could carry every invoice of a
cycle, while the engine opens one per record (each record is its own task, and a seat is held
no longer than one record's work). An idle `invoices` poll needs 1 ServiceTitan call; an idle
`suppliers` poll needs 3 SYSPRO calls (Logon, the change query, Logoff).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import requests

from benchmarks import bench_pipeline as pipeline
from benchmarks import fleet
from benchmarks import pair_bench
from benchmarks.common import write_result

PAIR = "servicetitan-syspro"
QUEUES = f"mlconnector,{PAIR}"
FLOW = "invoices"
ST, SY_ENGINE, SY_BASE = "st", "sy_engine", "sy_base"
FAST_RETRY = {"base": 0.05, "max_wait": 2}
SEATS = 4  # the licence's e.net seats, shared by the engine's workers (and by the baseline's pool)
OVERRIDES = {"systems": {"servicetitan": {"retry": FAST_RETRY}, "syspro": {"retry": FAST_RETRY, "max_sessions": SEATS}},
             "default_supplier": "S00001"}
MIN_ST_PER_INVOICE = 2  # GET the invoice; the purchase orders of its job (its vendor)
MIN_SY_WRITTEN = 2  # COMFND look-up of (Supplier, Invoice), then the APSTIN post
MIN_SY_FOUND = 1  # the look-up finds it: nothing to post
MIN_SY_SESSION = 2  # Logon and Logoff, once per run at the least
IDLE_POLL_TARGETS = {"invoices": 1, "suppliers": 3}
INVOICE_KEEP = ("businessUnit", "invoiceDate", "dueDate", "job")
ITEM_KEEP = ("description", "quantity", "price", "type", "order", "skuName", "skuId", "cost", "totalCost", "displayName")

Setup = pair_bench.PairSetup


def _st_rows(host: fleet.SandboxHost, entity: str) -> list[dict[str, Any]]:
    return requests.get(f"{host.url(ST)}/_sandbox/entities/{entity}", timeout=30).json()


def setup(n: int, concurrency: int) -> Setup:
    """Sandboxes, database, integration and workers, with exactly n job invoices in ServiceTitan."""
    sandboxes = {ST: ["servicetitan", {"seed": 3, "records": max(1, n), "rate_limit": 0}],
                 SY_ENGINE: ["syspro", {"seed": 3, "records": 30}], SY_BASE: ["syspro", {"seed": 3, "records": 30}]}
    s = pair_bench.start(PAIR, sandboxes, {"servicetitan": ST, "syspro": SY_ENGINE},
                         lambda host: sorted(i["id"] for i in _st_rows(host, "invoices")), concurrency, QUEUES, OVERRIDES)
    for name in (SY_ENGINE, SY_BASE):
        requests.post(f"{s.host.url(name)}/_sandbox/syspro/settings", json={"seats": SEATS}, timeout=10).raise_for_status()
    return s


def add_invoices(s: Setup, count: int) -> list[int]:
    """`count` more job invoices in ServiceTitan, shaped like the seeded ones (taken in turn); their ids."""
    seeded = sorted(_st_rows(s.host, "invoices"), key=lambda i: i["id"])
    before = {i["id"] for i in seeded}
    with requests.Session() as http:
        for index in range(count):
            model = seeded[index % len(seeded)]
            body = {k: model[k] for k in INVOICE_KEEP if model.get(k) is not None}
            body["items"] = [{k: item[k] for k in ITEM_KEEP if k in item} for item in model.get("items") or []]
            http.post(f"{s.host.url(ST)}/_sandbox/entities/invoices", json=body, timeout=30).raise_for_status()
    return sorted(i["id"] for i in _st_rows(s.host, "invoices") if i["id"] not in before)


def run_engine(s: Setup) -> dict[str, Any]:
    return pair_bench.run_engine(s.host, s.worker, FLOW, (ST, SY_ENGINE))


class Baseline:
    """The same vendor calls from a plain thread pool: no ledger, no broker, no audit."""

    def __init__(self, s: Setup) -> None:
        from mappings import servicetitan_syspro as m

        config, connectors = pair_bench.baseline_connectors(s.host, PAIR, {"servicetitan": ST, "syspro": SY_BASE}, OVERRIDES)
        self.st = connectors["servicetitan"]
        self.sy = connectors["syspro"]
        self.config = m.ServiceTitanSysproConfig.model_validate(config)
        self.prepared = False

    def prepare(self) -> None:
        """Untimed onboarding, as the `vendors` flow does for the engine: every ServiceTitan
        vendor a SYSPRO supplier of the code made from its id."""
        from mappings import servicetitan_syspro as m
        from tasks.servicetitan_source import plain

        if self.prepared:
            return
        with self.sy.session():
            for vendor in self.st.rows(self.st.spec("vendors"), {}):
                self.sy.add_supplier(m.supplier_in(m.supplier_code(vendor["id"], self.config), m.vendor_fields(plain(vendor))))
        self.prepared = True

    def one(self, invoice_id: int) -> str:
        from mappings import servicetitan_syspro as m
        from mlconnector.flows import MappedRecord
        from mlconnector.http import FatalError
        from tasks.servicetitan_source import plain

        invoice = plain(self.st.get("invoices", int(invoice_id)))
        job = invoice.get("job") or {}
        pos = [plain(p) for p in self.st.rows(self.st.spec("purchase_orders"), {"jobId": job["id"]})] if job.get("id") else []
        vendors, _ = m.invoice_vendor(invoice, pos)
        if len(vendors) > 1:
            return "held"
        code = m.supplier_code(vendors[0], self.config) if vendors else self.config.default_supplier or ""
        supplier = m.SupplierChoice(code=code, reason="the job's PO vendor, else default")
        mapped = m.map_invoice(invoice, self.config, supplier, {}, m.technician_of(invoice, pos))
        if not isinstance(mapped, MappedRecord):
            return "skipped" if mapped.__class__.__name__ == "Nothing" else "held"
        try:
            result = self.sy.post_ap_invoice(mapped.document)
        except FatalError:
            return "failed"
        return "skipped" if result.already_existed else "written"

    def run(self, s: Setup) -> dict[str, Any]:
        self.prepare()
        return pair_bench.run_pool(s.host, s.worker, (ST, SY_BASE), s.concurrency, self.one, s.ids)


def _record_statuses() -> dict[str, str]:
    from sqlalchemy import select

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        return dict(session.execute(select(SyncRecord.source_id, SyncRecord.status).where(SyncRecord.flow == FLOW)).all())


def _ap_invoices(s: Setup, name: str) -> int:
    rows = requests.get(f"{s.host.url(name)}/_sandbox/entities/ap_invoices", timeout=30).json()
    return sum(1 for r in rows if str(r.get("Invoice") or "").startswith("ST"))


def main(n: int = 100, concurrency: int = 4) -> dict[str, Any]:
    first_half = max(1, n // 2)
    s = setup(first_half, concurrency)
    try:
        vendors = pipeline.run_flow("vendors")  # untimed prerequisite, as onboarding would
        baseline = Baseline(s)
        engine_runs = [run_engine(s)]
        baseline_runs = [baseline.run(s)]
        s.ids = add_invoices(s, max(1, n - len(s.ids)))
        baseline_runs.append(baseline.run(s))
        engine_runs.append(run_engine(s))
        idle_invoices = pair_bench.idle_poll(s.host, "invoices", (ST, SY_ENGINE))
        idle_suppliers = pair_bench.idle_poll(s.host, "suppliers", (ST, SY_ENGINE))

        throughput = pair_bench.throughput_figures(engine_runs, baseline_runs, concurrency)
        records = throughput["records"]
        statuses = _record_statuses()
        written = sum(1 for v in statuses.values() if v == "written")
        found = sum(1 for v in statuses.values() if v == "skipped")
        minimum_sy = MIN_SY_WRITTEN * written + MIN_SY_FOUND * found + MIN_SY_SESSION
        figures = {
            **throughput,
            "engine_statuses": pipeline.statuses(FLOW),
            "seats": SEATS,
            "vendors_flow": {k: vendors[k] for k in ("found", "queued", "statuses")},
            "syspro_ap_invoices": {"engine": _ap_invoices(s, SY_ENGINE), "baseline": _ap_invoices(s, SY_BASE)},
            "peak_sessions": {name: requests.get(f"{s.host.url(name)}/_sandbox/stats", timeout=10).json().get(
                "peak_open_sessions") for name in (SY_ENGINE, SY_BASE)},
            **pair_bench.call_figures(
                engine_runs, baseline_runs, records, throughput["baseline_records"],
                [("st", "servicetitan", ST, ST, MIN_ST_PER_INVOICE * records),
                 ("syspro", "syspro", SY_ENGINE, SY_BASE, minimum_sy)],
                {"invoices": idle_invoices, "suppliers": idle_suppliers}, IDLE_POLL_TARGETS),
        }
    finally:
        s.close()
    write_result("syspro", figures)
    return figures


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    result = main(*args)
    print(json.dumps({k: v for k, v in result.items() if "by_endpoint" not in k}))
