"""Backfill throughput: N ServiceTitan inventory bills -> Epicor AP invoices through the
real fleet (Celery prefork workers, Redis, PostgreSQL ledger), against a bare thread pool
issuing the very same vendor calls with no engine in between.

    python -m benchmarks.bench_pipeline [N] [concurrency]

Engine: a catch-up poll of `inventory_bills` upserts the ledger rows; the clock starts when
the poll's work is sent to the broker and stops when every sync record has reached a final
state. Vendors are synced first (untimed), as the `vendors` prerequisite flow would.
Baseline: a `concurrent.futures` pool of the same size doing, per bill, ServiceTitan GET
bill -> map -> Epicor find_ap_invoice -> create_ap_invoice (same group/header/lines shape),
with the vendors resolved beforehand (untimed), against a second Epicor sandbox with the
same seed, so neither run can find the other's invoices. All sandboxes run in one separate
process with vendor rate limits off.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timezone
from typing import Any

import requests

from benchmarks import fleet
from benchmarks.common import CpuMeter, write_result

ENGINE_GROUP, BASE_GROUP = "BENG", "BBAS"
FINAL = ("written", "skipped", "held", "failed")


@dataclass
class Setup:
    n: int
    concurrency: int
    database_url: str
    env: dict[str, str]
    host: fleet.SandboxHost
    bill_ids: list[int]
    config: dict[str, Any]
    worker: fleet.Process | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        fleet.tear_down(self.database_url, processes=[self.worker], host=self.host)


def _bills(st_url: str) -> list[dict[str, Any]]:
    return requests.get(f"{st_url}/_sandbox/entities/inventory_bills", timeout=30).json()


def setup(n: int, concurrency: int, *, seed_records: int = 10, start_worker: bool = True) -> Setup:
    """Sandboxes, database, integration and (optionally) workers, with exactly n bills in ServiceTitan."""
    database_url = fleet.create_database()
    env = fleet.configure(database_url)
    fleet.flush_redis()
    host = fleet.SandboxHost({
        "st": ["servicetitan", {"seed": 3, "records": seed_records, "rate_limit": 0}],
        "ep_engine": ["epicor", {"seed": 3, "records": 6}],
        "ep_base": ["epicor", {"seed": 3, "records": 6}],
    })
    try:
        st = host.url("st")
        have = len(_bills(st))
        vendors = [v["id"] for v in requests.get(f"{st}/_sandbox/entities/vendors", timeout=30).json() if v.get("active", True)]
        with requests.Session() as http:
            for index in range(max(0, n - have)):
                http.post(f"{st}/_sandbox/entities/purchase_orders",
                          json={"vendorId": vendors[index % len(vendors)], "status": "Received"}, timeout=30).raise_for_status()
        bill_ids = sorted(b["id"] for b in _bills(st))
        config = fleet.create_bench_integration(host.info("st"), host.info("ep_engine"), ENGINE_GROUP)
        result = Setup(len(bill_ids), concurrency, database_url, env, host, bill_ids, config)
        if start_worker:
            result.worker = fleet.start_worker(env, concurrency)
        return result
    except BaseException:
        host.stop()
        fleet.drop_database(database_url)
        raise


def statuses(flow: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        return dict(session.execute(select(SyncRecord.status, func.count()).where(SyncRecord.flow == flow)
                                    .group_by(SyncRecord.status)).all())


def _last_written(flow: str) -> float | None:
    from sqlalchemy import func, select

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        moment = session.scalar(select(func.max(SyncRecord.updated_at)).where(SyncRecord.flow == flow))
    return moment.replace(tzinfo=moment.tzinfo or timezone.utc).timestamp() if moment else None


def run_flow(flow: str, timeout: float = 600) -> dict[str, Any]:
    """Poll one flow, send its work, wait until every record it queued is final."""
    from mlconnector import engine
    from mlconnector.tasks import send

    def final() -> int:
        return sum(v for k, v in statuses(flow).items() if k in FINAL)

    already = final()  # records of earlier polls
    poll_started = time.time()
    result = engine.poll_flow(fleet.INTEGRATION, flow)
    sent_at = time.time()
    send(result.enqueue)
    queued = result.queued
    # The finish is read from the records' own timestamps, so a coarse check costs no accuracy
    # and keeps this process from competing with the fleet for the CPU.
    fleet.wait_until(lambda: final() >= already + queued, timeout=timeout,
                     interval=0.1, message=f"{flow}: not every record final: {statuses(flow)}")
    seen_done = time.time()
    last = _last_written(flow) or seen_done
    done = min(seen_done, max(last, sent_at))
    return {"found": result.found, "queued": queued, "poll_seconds": sent_at - poll_started,
            "seconds": done - sent_at, "statuses": statuses(flow)}


def sandbox_stats(host: fleet.SandboxHost, name: str, reset: bool = False) -> dict[str, Any]:
    url = host.url(name)
    stats = requests.get(f"{url}/_sandbox/stats", timeout=10).json()
    if reset:
        requests.post(f"{url}/_sandbox/stats/reset", timeout=10).raise_for_status()
    return stats


def run_engine(s: Setup) -> dict[str, Any]:
    vendors = run_flow("vendors")  # untimed prerequisite: links every vendor the bills name
    for name in ("st", "ep_engine"):
        sandbox_stats(s.host, name, reset=True)
    meter = _meter(s).start()
    bills = run_flow("inventory_bills")
    meter.stop()
    s.extras["engine_cpu"] = meter.per_record_ms(bills["queued"])
    bills["cpu_seconds"] = meter.seconds
    s.extras["engine_stats"] = {name: sandbox_stats(s.host, name) for name in ("st", "ep_engine")}
    s.extras["vendors_flow"] = vendors
    return bills


def _meter(s: Setup) -> CpuMeter:
    trees = {"sandboxes": s.host.process.pid}
    if s.worker is not None:
        trees["workers"] = s.worker.process.pid
    return CpuMeter(trees)


def run_baseline(s: Setup) -> dict[str, Any]:
    """The same calls from a plain thread pool: no ledger, no broker, no audit."""
    from connectors import connector_class
    from mappings import servicetitan_epicor as m
    from mlconnector.holds import Hold
    from mlconnector.http.runtime import get_runtime

    st_config, st_creds, ep_config, ep_creds = fleet.system_settings(s.host.info("st"), s.host.info("ep_base"))
    runtime = get_runtime()  # what a worker process builds: Redis token cache (encrypted), limiter
    st = connector_class("servicetitan").create(st_config, st_creds, runtime)
    epicor = connector_class("epicor").create(ep_config, ep_creds, runtime)
    config = m.ServiceTitanEpicorConfig.model_validate(fleet.integration_config(st_config, ep_config, BASE_GROUP))

    def plain(value: Any) -> dict[str, Any]:
        return value.model_dump(mode="json", by_alias=True) if hasattr(value, "model_dump") else dict(value)

    # Untimed: every vendor the bills name, matched by name or created, as the vendors flow does.
    refs: dict[str, m.EpicorVendorRef] = {}
    index = [plain(v) for v in epicor.iter_vendors()]
    for vendor in (plain(v) for v in st.iter_changed("vendors", None, _now())):
        found = m.match_vendor_by_name(vendor.get("name") or "", index)
        if not found:
            found = [plain(epicor.create_vendor(m.map_vendor_to_epicor(vendor, config).model_dump()))]
            index.append(found[0])
        if len(found) == 1:
            refs[str(vendor["id"])] = m.EpicorVendorRef(int(found[0]["VendorNum"]), found[0].get("VendorID") or "",
                                                        found[0].get("Name") or "", "matched_by_name")
    epicor.ensure_group(BASE_GROUP)
    for name in ("st", "ep_base"):
        sandbox_stats(s.host, name, reset=True)
    outcomes: dict[str, int] = {}

    def one(bill_id: int) -> str:
        bill = plain(st.get("inventory_bills", bill_id))
        ref = refs.get(str((bill.get("vendor") or {}).get("id")))
        if ref is None:
            return "held"
        mapped = m.map_inventory_bill(bill, config, ref, "baseline")
        if isinstance(mapped, Hold):
            return "held"
        key = mapped.external_key
        if epicor.find_ap_invoice(key["VendorNum"], key["InvoiceNum"]) is not None:
            return "skipped"
        epicor.create_ap_invoice(mapped.payload["group"], mapped.payload["header"], mapped.payload["lines"])
        return "written"

    meter = _meter(s).start()
    started = time.time()
    with ThreadPoolExecutor(max_workers=s.concurrency) as pool:
        for outcome in pool.map(one, s.bill_ids):
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    seconds = time.time() - started
    meter.stop()
    s.extras["baseline_cpu"] = meter.per_record_ms(len(s.bill_ids))
    cpu_seconds = meter.seconds
    s.extras["baseline_stats"] = {name: sandbox_stats(s.host, name) for name in ("st", "ep_base")}
    calls = sum(stats["total"] for stats in s.extras["baseline_stats"].values())
    return {"records": len(s.bill_ids), "seconds": seconds, "statuses": outcomes, "cpu_seconds": cpu_seconds,
            "sandbox_calls": calls}


def _now():  # type: ignore[no-untyped-def]
    from datetime import datetime

    return datetime.now(timezone.utc)


def epicor_invoice_count(host: fleet.SandboxHost, name: str, group: str) -> int:
    rows = requests.get(f"{host.url(name)}/_sandbox/entities/ap_invoices", timeout=30).json()
    return sum(1 for r in rows if r.get("GroupID") == group)


def add_bills(s: Setup, count: int) -> list[int]:
    """`count` more received purchase orders (so bills) in ServiceTitan; their bill ids."""
    st = s.host.url("st")
    before = {b["id"] for b in _bills(st)}
    vendors = [v["id"] for v in requests.get(f"{st}/_sandbox/entities/vendors", timeout=30).json() if v.get("active", True)]
    with requests.Session() as http:
        for index in range(count):
            http.post(f"{st}/_sandbox/entities/purchase_orders",
                      json={"vendorId": vendors[index % len(vendors)], "status": "Received"}, timeout=30).raise_for_status()
    return sorted(b["id"] for b in _bills(st) if b["id"] not in before)


def _totals(runs: list[dict[str, Any]], count_key: str) -> dict[str, Any]:
    records = sum(r[count_key] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    statuses: dict[str, int] = {}
    cpu: dict[str, float] = {}
    for run in runs:
        for key, value in run["statuses"].items():
            statuses[key] = statuses.get(key, 0) + value
        for key, value in run["cpu_seconds"].items():
            cpu[key] = cpu.get(key, 0.0) + value
    cpu_ms = {k: round(v * 1000 / max(records, 1), 1) for k, v in cpu.items()}
    cpu_ms["total"] = round(sum(cpu.values()) * 1000 / max(records, 1), 1)
    return {"records": records, "seconds": seconds, "rate": records / seconds, "statuses": statuses, "cpu_ms": cpu_ms}


def main(n: int = 200, concurrency: int = 4) -> dict[str, Any]:
    """Two rounds of n/2 bills, engine first then baseline first, so a machine that slows
    down or speeds up during the run weighs on both sides alike."""
    first_half = n // 2
    s = setup(first_half, concurrency)
    try:
        engine_runs = [run_engine(s)]
        baseline_runs = [run_baseline(s)]
        s.bill_ids = add_bills(s, n - len(s.bill_ids))
        baseline_runs.append(run_baseline(s))
        engine_runs.append(run_flow_timed(s))
        engine, baseline = _totals(engine_runs, "queued"), _totals(baseline_runs, "records")
        figures = {
            "records": engine["records"],
            "concurrency": concurrency,
            "rounds": 2,
            "engine_records_per_s": round(engine["rate"], 1),
            "baseline_records_per_s": round(baseline["rate"], 1),
            "engine_vs_baseline": round(engine["rate"] / baseline["rate"], 3),
            "round_ratios": [round((e["queued"] / e["seconds"]) / (b["records"] / b["seconds"]), 3)
                             for e, b in zip(engine_runs, baseline_runs)],
            "target_ratio": 0.8,
            "engine_seconds": round(engine["seconds"], 3),
            "engine_poll_seconds": round(sum(r["poll_seconds"] for r in engine_runs), 3),
            "baseline_seconds": round(baseline["seconds"], 3),
            "engine_statuses": statuses("inventory_bills"),
            "baseline_outcomes": baseline["statuses"],
            "epicor_invoices": {"engine": epicor_invoice_count(s.host, "ep_engine", ENGINE_GROUP),
                                "baseline": epicor_invoice_count(s.host, "ep_base", BASE_GROUP)},
            "cpu_ms_per_record": {"engine": engine["cpu_ms"], "baseline": baseline["cpu_ms"]},
            # What a vendor call costs the sandboxes (baseline rounds: nothing else calls them then).
            "sandbox_cpu_ms_per_request": round(sum(r["cpu_seconds"].get("sandboxes", 0.0) for r in baseline_runs) * 1000
                                                / max(sum(r["sandbox_calls"] for r in baseline_runs), 1), 3),
        }
    finally:
        s.close()
    write_result("pipeline", figures)
    return figures


def run_flow_timed(s: Setup) -> dict[str, Any]:
    """The bills flow again (it finds only the bills added since its last poll), metered."""
    meter = _meter(s).start()
    bills = run_flow("inventory_bills")
    meter.stop()
    bills["cpu_seconds"] = meter.seconds
    return bills


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    print(json.dumps(main(*args)))
