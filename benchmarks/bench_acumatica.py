"""ServiceTitan job invoices -> Acumatica AR invoices: backfill throughput through the real
fleet against a bare thread pool issuing the very same vendor calls, and the vendor calls
the engine spends per invoice and per idle poll against the fewest the vendor APIs allow.

    python -m benchmarks.bench_acumatica [N] [concurrency]

Engine: the integration is registered from the pair's own sandbox config (every business
unit on an active subaccount, customers matched by name or created), with fast retries and
no client-side ServiceTitan limiter (the sandboxes run unthrottled: this measures our cost,
not a quota). Customers are synced first and untimed, as onboarding would (the `customers`
flow). Then a catch-up poll of `invoices` upserts the ledger rows; the clock starts when the
poll's work is sent to the broker and stops when every sync record has reached a final
state. Documents are written on hold (the config's default).

Baseline: a `concurrent.futures` pool of the same size doing, per invoice, ServiceTitan GET
invoice -> map (the pair's own mapping) -> Acumatica look-up by external reference
(CustomerOrder + Customer) -> PUT insert, with the customers resolved and the chart of
accounts read beforehand (untimed), against a second Acumatica sandbox with the same seed,
so neither run can find the other's invoices. All sandboxes run in one separate process.

Two rounds of n/2 invoices, engine first then baseline first, so a machine that slows down
or speeds up during the run weighs on both sides alike.

Calls are counted from the sandboxes' own request statistics (GET /_sandbox/stats), token
requests included. Minimum per invoice: ServiceTitan 1 (GET the invoice); Acumatica 1
look-up by CustomerOrder + Customer and 1 PUT (the lines travel in the same PUT), so 3 for
an invoice written, 2 for one found already written. A poll's own calls are counted apart,
per poll: ServiceTitan's modified-since list and Acumatica's chart refresh (accounts by
LastModifiedDateTime, subaccounts read whole: the Default endpoint's Subaccount has no
change field), so an idle `invoices` poll needs 3 calls and an idle `customers` poll 1.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any

import requests

from benchmarks import bench_pipeline as pipeline
from benchmarks import fleet
from benchmarks import pair_bench
from benchmarks.common import write_result

PAIR = "servicetitan-acumatica"
QUEUES = f"mlconnector,{PAIR}"
FLOW = "invoices"
ST, ACU_ENGINE, ACU_BASE = "st", "acu_engine", "acu_base"
FAST_RETRY = {"base": 0.05, "max_wait": 2}
OVERRIDES = {"systems": {"servicetitan": {"retry": FAST_RETRY, "rate_limit_per_second": 0},
                         "acumatica": {"retry": FAST_RETRY}}}
MIN_ST_PER_INVOICE = 1  # GET the invoice
MIN_ACU_WRITTEN = 2  # look up by CustomerOrder + Customer, then PUT the invoice with its lines
MIN_ACU_FOUND = 1  # the look-up finds it: nothing to write
IDLE_POLL_TARGETS = {"invoices": 3, "customers": 1}


Setup = pair_bench.PairSetup


def _st_rows(host: fleet.SandboxHost, entity: str) -> list[dict[str, Any]]:
    return requests.get(f"{host.url(ST)}/_sandbox/entities/{entity}", timeout=30).json()


def setup(n: int, concurrency: int) -> Setup:
    """Sandboxes, database, integration and workers, with exactly n job invoices in ServiceTitan
    (seeded with as many customers, so each invoice names a customer the `customers` flow syncs)."""
    sandboxes = {ST: ["servicetitan", {"seed": 3, "records": max(1, n), "rate_limit": 0}],
                 ACU_ENGINE: ["acumatica", {"seed": 3, "records": 6}], ACU_BASE: ["acumatica", {"seed": 3, "records": 6}]}
    return pair_bench.start(PAIR, sandboxes, {"servicetitan": ST, "acumatica": ACU_ENGINE},
                            lambda host: sorted(i["id"] for i in _st_rows(host, "invoices")), concurrency, QUEUES,
                            OVERRIDES, webhook_key=fleet.HMAC_KEY)


def add_invoices(s: Setup, count: int) -> list[int]:
    """`count` more job invoices in ServiceTitan, shaped like the seeded ones (same customers,
    business units and lines, taken in turn); their ids."""
    seeded = sorted(_st_rows(s.host, "invoices"), key=lambda i: i["id"])
    before = {i["id"] for i in seeded}
    keep = ("description", "quantity", "price", "type", "order", "skuName", "displayName")
    with requests.Session() as http:
        for index in range(count):
            model = seeded[index % len(seeded)]
            body = {"customer": {"id": model["customer"]["id"], "name": model["customer"]["name"]},
                    "businessUnit": model["businessUnit"],
                    "items": [{k: item[k] for k in keep if k in item} for item in model.get("items") or []]}
            http.post(f"{s.host.url(ST)}/_sandbox/entities/invoices", json=body, timeout=30).raise_for_status()
    return sorted(i["id"] for i in _st_rows(s.host, "invoices") if i["id"] not in before)


def sync_customers(s: Setup) -> dict[str, Any]:
    """Untimed onboarding: every ServiceTitan customer linked to an Acumatica one first."""
    return pipeline.run_flow("customers")


def run_engine(s: Setup) -> dict[str, Any]:
    """One poll of the flow and the work it sends (see pair_bench.run_engine)."""
    return pair_bench.run_engine(s.host, s.worker, FLOW, (ST, ACU_ENGINE))


def _plain(value: Any) -> dict[str, Any]:
    return value.model_dump(mode="json", by_alias=True) if hasattr(value, "model_dump") else dict(value)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Baseline:
    """The same vendor calls from a plain thread pool: no ledger, no broker, no audit."""

    def __init__(self, s: Setup) -> None:
        from mappings import servicetitan_acumatica as m

        config, connectors = pair_bench.baseline_connectors(s.host, PAIR, {"servicetitan": ST, "acumatica": ACU_BASE}, OVERRIDES)
        self.st = connectors["servicetitan"]
        self.acu = connectors["acumatica"]
        self.config = m.ServiceTitanAcumaticaConfig.model_validate(config)
        self.refs: dict[str, m.AcumaticaRef] = {}
        self.chart: m.GlReference | None = None

    def prepare(self) -> None:
        """Untimed: the chart of accounts read, and every ServiceTitan customer matched by
        normalized name or created in Acumatica, as the customers flow does."""
        from mappings import servicetitan_acumatica as m

        if self.chart is None:
            accounts = {a.AccountCD: a.Active is not False for a in self.acu.iter_records("accounts", expand=()) if a.AccountCD}
            subaccounts = {a.SubaccountCD: a.Active is not False
                           for a in self.acu.iter_records("subaccounts", expand=()) if a.SubaccountCD}
            self.chart = m.GlReference(accounts, subaccounts)
        index = [_plain(c) for c in self.acu.iter_records("customers", expand=(),
                                                          select=("CustomerID", "CustomerName", "Status"))]
        for customer in (_plain(c) for c in self.st.iter_changed("customers", None, _now())):
            if str(customer["id"]) in self.refs:
                continue
            found = m.match_by_name(customer.get("name") or "", index, "CustomerName")
            if not found:
                fields = m.map_customer(customer, self.config)
                found = [_plain(self.acu.put("customers", fields.model_dump(exclude_none=True), mode="insert"))]
                index.append(found[0])
                how = "created"
            else:
                how = "matched_by_name"
            if len(found) == 1:
                self.refs[str(customer["id"])] = m.AcumaticaRef(found[0]["CustomerID"], found[0].get("CustomerName") or "", how)

    def one(self, invoice_id: int) -> str:
        from mappings import servicetitan_acumatica as m
        from mlconnector.holds import Hold

        invoice = _plain(self.st.get("invoices", invoice_id))
        ref = self.refs.get(str((invoice.get("customer") or {}).get("id")))
        if ref is None:
            return "held"
        assert self.chart is not None
        mapped = m.map_invoice(invoice, self.config, ref, self.chart, "baseline")
        if isinstance(mapped, Hold):
            return "held"
        fields: m.ArInvoice = mapped.document.fields  # type: ignore[attr-defined]
        if self.acu.find_invoice(fields.CustomerOrder, customer_id=fields.Customer) is not None:
            return "skipped"
        self.acu.put("invoices", fields.model_dump(exclude_none=True), mode="insert")
        return "written"

    def run(self, s: Setup) -> dict[str, Any]:
        self.prepare()
        return pair_bench.run_pool(s.host, s.worker, (ST, ACU_BASE), s.concurrency, self.one, s.ids)


def _acumatica_invoices(s: Setup, name: str, references: set[str]) -> int:
    rows = requests.get(f"{s.host.url(name)}/_sandbox/entities/invoices", timeout=30).json()
    return sum(1 for r in rows if r.get("CustomerOrder") in references)


def main(n: int = 100, concurrency: int = 4) -> dict[str, Any]:
    from mappings import servicetitan_acumatica as m

    first_half = max(1, n // 2)
    s = setup(first_half, concurrency)
    try:
        customers = sync_customers(s)  # untimed prerequisite, as onboarding would
        baseline = Baseline(s)
        engine_runs = [run_engine(s)]
        baseline_runs = [baseline.run(s)]
        s.ids = add_invoices(s, max(1, n - len(s.ids)))
        baseline_runs.append(baseline.run(s))
        engine_runs.append(run_engine(s))
        idle_invoices = pair_bench.idle_poll(s.host, "invoices", (ST, ACU_ENGINE))
        idle_customers = pair_bench.idle_poll(s.host, "customers", (ST, ACU_ENGINE))

        throughput = pair_bench.throughput_figures(engine_runs, baseline_runs, concurrency)
        records = throughput["records"]
        statuses = pipeline.statuses(FLOW)
        written, skipped = statuses.get("written", 0), statuses.get("skipped", 0)
        minimum_st = MIN_ST_PER_INVOICE * records
        minimum_acu = MIN_ACU_WRITTEN * written + MIN_ACU_FOUND * skipped
        references = {m.invoice_reference(i) for i in _st_rows(s.host, "invoices")}
        figures = {
            **throughput,
            "engine_statuses": statuses,
            "customers_flow": {k: customers[k] for k in ("found", "queued", "statuses")},
            "acumatica_invoices": {"engine": _acumatica_invoices(s, ACU_ENGINE, references),
                                   "baseline": _acumatica_invoices(s, ACU_BASE, references)},
            **pair_bench.call_figures(
                engine_runs, baseline_runs, records, throughput["baseline_records"],
                [("st", "servicetitan", ST, ST, minimum_st), ("acumatica", "acumatica", ACU_ENGINE, ACU_BASE, minimum_acu)],
                {"invoices": idle_invoices, "customers": idle_customers}, IDLE_POLL_TARGETS),
        }
    finally:
        s.close()
    write_result("acumatica", figures)
    return figures


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    result = main(*args)
    print(json.dumps({k: v for k, v in result.items() if "by_endpoint" not in k}))
