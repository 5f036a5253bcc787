"""Freshness under steady load: how long after ServiceTitan's webhook is accepted the AP
invoice is in Epicor, with webhook events arriving at a steady 20 per second.

    python -m benchmarks.bench_freshness [seconds] [worker_concurrency]

The ServiceTitan sandbox posts signed webhooks (every event type) to the receiver under
gunicorn; one Celery worker process takes the events and records. Vendors are synced
first (untimed). For the given duration a driver thread creates one received purchase
order every 1/10 s, which creates its inventory bill and fires two webhooks
(purchase-order.created and inventory-bill.created): 20 events per second. Per bill:
from `inbound_events.received_at` of the first webhook that concerns it (its purchase
order's or its own, whichever the receiver accepted first) to `sync_records.written_at`
(the Epicor invoice written). Reported as p50/p95/max (target p95 < 1 s), with the event
rate actually driven and the CPU each part of the system spent per bill.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from datetime import timezone
from typing import Any

import requests

from benchmarks import fleet
from benchmarks.common import CpuMeter, write_result

EVENT_RATE = 20.0  # webhook events per second, the target's load
EVENTS_PER_ORDER = 2  # a received purchase order: purchase-order.created + inventory-bill.created
RATE = EVENT_RATE / EVENTS_PER_ORDER  # purchase orders received per second
GUNICORN_WORKERS = 2
FLOW = "inventory_bills"
FINAL = ("written", "skipped", "held", "failed")


def _ts(moment: Any) -> float:
    return moment.replace(tzinfo=moment.tzinfo or timezone.utc).timestamp()


def _bill_ids(st: str) -> set[str]:
    return set(_bill_orders(st))


def _bill_orders(st: str) -> dict[str, str]:
    """bill id -> the id of the purchase order it received."""
    return {str(b["id"]): str(b.get("purchaseOrderId")) for b in
            requests.get(f"{st}/_sandbox/entities/inventory_bills", timeout=30).json()}


def _records(bill_ids: set[str]) -> dict[str, tuple[str, float | None]]:
    from sqlalchemy import select

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        rows = session.execute(select(SyncRecord.source_id, SyncRecord.status, SyncRecord.written_at)
                               .where(SyncRecord.flow == FLOW, SyncRecord.integration_id == fleet.INTEGRATION)).all()
    return {source: (status, _ts(written) if written else None) for source, status, written in rows
            if source in bill_ids}


def _bill_events(bill_orders: dict[str, str]) -> tuple[dict[str, float], dict[str, int]]:
    """Per bill, the first accepted webhook that concerns it (its purchase order's event or
    its own, whichever the receiver took first), and every event type's count."""
    from sqlalchemy import select

    from mlconnector.db.models import InboundEvent
    from mlconnector.db.session import session_scope

    received: dict[str, float] = {}
    types: dict[str, int] = {}
    with session_scope() as session:
        rows = session.execute(select(InboundEvent.event_type, InboundEvent.payload, InboundEvent.received_at)
                               .where(InboundEvent.integration_id == fleet.INTEGRATION)).all()
    bills_of_order = {order: bill for bill, order in bill_orders.items()}
    for event_type, payload, received_at in rows:
        types[event_type] = types.get(event_type, 0) + 1
        entity_id = str(((payload or {}).get("data") or {}).get("id"))
        if event_type.startswith("inventory-bill."):
            bill = entity_id if entity_id in bill_orders else None
        elif event_type.startswith("purchase-order."):
            bill = bills_of_order.get(entity_id)
        else:
            bill = None
        if bill is not None:
            at = _ts(received_at)
            received[bill] = min(at, received.get(bill, at))
    return received, types


def _audit_steps() -> dict[str, int]:
    """Audit rows by kind: how many fetches, writes, skips and deferrals the bills took."""
    from sqlalchemy import func, select

    from mlconnector.db.models import AuditEvent
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        return dict(session.execute(select(AuditEvent.kind, func.count()).group_by(AuditEvent.kind)).all())


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(seconds: int = 60, concurrency: int = 4) -> dict[str, Any]:
    from benchmarks.bench_pipeline import run_flow

    database_url = fleet.create_database()
    services: list[fleet.Process] = []
    host: fleet.SandboxHost | None = None
    try:
        env = fleet.configure(database_url)
        fleet.flush_redis()
        host = fleet.SandboxHost({
            "st": ["servicetitan", {"seed": 7, "records": 10, "rate_limit": 0}],
            "ep": ["epicor", {"seed": 7, "records": 6}],
        })
        st = host.url("st")
        fleet.create_bench_integration(host.info("st"), host.info("ep"), "BFRS")
        services.append(fleet.start_worker(env, concurrency))
        run_flow("vendors")  # untimed: every seeded vendor linked, as in production after onboarding
        receiver_url, receiver = fleet.start_gunicorn(env, "mlconnector.web:create_app()", GUNICORN_WORKERS)
        services.append(receiver)
        requests.post(f"{st}/_sandbox/webhooks", timeout=10, json={
            "url": f"{receiver_url}/webhooks/servicetitan/{fleet.INTEGRATION}", "hmac_key": fleet.HMAC_KEY,
            "events": ["*"]}).raise_for_status()
        vendors = [v["id"] for v in requests.get(f"{st}/_sandbox/entities/vendors", timeout=30).json()
                   if v.get("active", True)]
        before = _bill_ids(st)
        meter = CpuMeter({"sandboxes": host.process.pid, "workers": services[0].process.pid,
                          "receiver": receiver.process.pid}).start()

        total = int(seconds * RATE)
        late = 0
        started = time.perf_counter()
        with requests.Session() as http:
            for index in range(total):
                due = started + index / RATE
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                elif pause < -0.05:
                    late += 1
                http.post(f"{st}/_sandbox/entities/purchase_orders",
                          json={"vendorId": vendors[index % len(vendors)], "status": "Received"},
                          timeout=30).raise_for_status()
        driven = time.perf_counter() - started
        bills = _bill_ids(st) - before

        def all_final() -> bool:
            records = _records(bills)
            return len(records) >= len(bills) and all(s in FINAL for s, _ in records.values())

        try:
            fleet.wait_until(all_final, timeout=max(120.0, 3.0 * seconds), interval=0.2)
        except RuntimeError:
            records = _records(bills)
            waiting = {status: sum(1 for s, _ in records.values() if s == status) for status, _ in records.values()
                       if status not in FINAL}
            raise RuntimeError(f"not every bill reached a final state: {len(bills) - len(records)} of {len(bills)} "
                               f"never in the ledger, not final by state {waiting}") from None
        drained = time.perf_counter() - started
        meter.stop()
        records = _records(bills)
        orders = _bill_orders(st)
        received, event_types = _bill_events({bill: orders[bill] for bill in bills})
        steps = _audit_steps()
        requests.post(f"{st}/_sandbox/webhooks/flush", json={"timeout": 5}, timeout=15)
        webhook_stats = {k: v for k, v in requests.get(f"{st}/_sandbox/stats", timeout=10).json().items()
                         if k.startswith("webhooks_")}
    finally:
        fleet.tear_down(database_url, processes=services, host=host, sig=2)

    latencies = [written - received[bill] for bill, (_, written) in records.items()
                 if written is not None and bill in received]
    statuses: dict[str, int] = {}
    for status, _ in records.values():
        statuses[status] = statuses.get(status, 0) + 1
    figures: dict[str, Any] = {
        "duration_s": seconds,
        "target_events_per_s": EVENT_RATE,
        "orders_per_s": round(total / driven, 2),
        "driven_events_per_s": round(webhook_stats.get("webhooks_emitted", 0) / driven, 2),
        "driver_late_posts": late,
        "worker_concurrency": concurrency,
        "gunicorn_workers": GUNICORN_WORKERS,
        "bills": len(bills),
        "measured": len(latencies),
        "bills_without_bill_event": len(bills) - sum(1 for b in bills if b in received),
        "statuses": statuses,
        "drain_after_last_post_s": round(drained - driven, 3),
        "cpu_ms_per_bill": meter.per_record_ms(len(bills)),
        "event_types": event_types,
        "audit_steps": steps,
        **webhook_stats,
    }
    if latencies:
        figures.update({
            "p50_s": round(statistics.median(latencies), 3),
            "p95_s": round(_quantile(latencies, 0.95), 3),
            "max_s": round(max(latencies), 3),
            "min_s": round(min(latencies), 3),
            "target_p95_s": 1.0,
            "p95_vs_target": round(_quantile(latencies, 0.95) / 1.0, 3),
        })
    write_result("freshness", figures)
    return figures


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    print(json.dumps(main(*args)))
