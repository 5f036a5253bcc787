"""Vendor API calls per record for the inventory_bills flow, against the fewest calls the
vendor APIs allow for the same work, and the calls a poll makes when nothing changed.

    python -m benchmarks.bench_api_economy [N]

Counted from the sandboxes' own request statistics (GET /_sandbox/stats), so every call
counts whoever made it, token requests included.

Minimum per bill:
  ServiceTitan: 1 (GET the bill; the poll's list pages are counted apart, per poll).
  Epicor: 1 lookup (AP invoice by VendorNum + InvoiceNum), then the invoice-entry pattern:
  GetNewAPInvHedInvoice, ChangeVendorID, ChangeInvoiceDateEx, ChangeInvoiceVendorAmt,
  UpdateMaster (5 for the header) and per line GetNewAPInvDtlMiscellaneous,
  ChangeVendorQty, ChangeUnitCost, UpdateMaster (4 per line).
A poll that finds nothing new: 1 list call per entity polled.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from benchmarks import bench_pipeline as pipeline
from benchmarks import fleet
from benchmarks.common import write_result

HEADER_CALLS = 5
CALLS_PER_LINE = 4


def _minimum_epicor_calls(bills: list[dict[str, Any]], config: dict[str, Any]) -> int:
    from mappings import servicetitan_epicor as m
    from mlconnector.holds import Hold

    cfg = m.ServiceTitanEpicorConfig.model_validate(config)
    ref = m.EpicorVendorRef(1, "V1", "vendor", "linked")
    total = 0
    for bill in bills:
        mapped = m.map_inventory_bill(bill, cfg, ref, "minimum")
        if isinstance(mapped, Hold):
            continue
        total += 1 + HEADER_CALLS + CALLS_PER_LINE * len(mapped.payload["lines"])
    return total


def _idle_poll(s: pipeline.Setup, flow: str) -> dict[str, Any]:
    from mlconnector import engine
    from mlconnector.tasks import send

    for name in ("st", "ep_engine"):
        pipeline.sandbox_stats(s.host, name, reset=True)
    result = engine.poll_flow(fleet.INTEGRATION, flow)
    send(result.enqueue)
    stats = {name: pipeline.sandbox_stats(s.host, name) for name in ("st", "ep_engine")}
    return {"found": result.found, "queued": result.queued,
            "calls": sum(v["total"] for v in stats.values()),
            "by_endpoint": {name: v["by_endpoint"] for name, v in stats.items() if v["total"]}}


def main(n: int = 40, concurrency: int = 2) -> dict[str, Any]:
    s = pipeline.setup(n, concurrency)
    try:
        bills = pipeline.run_engine(s)
        stats = s.extras["engine_stats"]
        bill_rows = [b for b in pipeline._bills(s.host.url("st")) if b["id"] in set(s.bill_ids)]
        records = bills["queued"]
        st_calls, ep_calls = stats["st"]["total"], stats["ep_engine"]["total"]
        minimum_st, minimum_ep = records, _minimum_epicor_calls(bill_rows, s.config)
        idle_bills = _idle_poll(s, "inventory_bills")
        idle_vendors = _idle_poll(s, "vendors")
        figures = {
            "records": records,
            "statuses": bills["statuses"],
            "st_calls": st_calls,
            "epicor_calls": ep_calls,
            "st_calls_per_record": round(st_calls / records, 3),
            "epicor_calls_per_record": round(ep_calls / records, 3),
            "minimum_st_per_record": round(minimum_st / records, 3),
            "minimum_epicor_per_record": round(minimum_ep / records, 3),
            "calls_per_record": round((st_calls + ep_calls) / records, 3),
            "minimum_per_record": round((minimum_st + minimum_ep) / records, 3),
            "calls_vs_minimum": round((st_calls + ep_calls) / (minimum_st + minimum_ep), 3),
            "idle_poll_inventory_bills_calls": idle_bills["calls"],
            "idle_poll_vendors_calls": idle_vendors["calls"],
            "idle_poll_target_calls": 1,
            "by_endpoint": {"servicetitan": stats["st"]["by_endpoint"], "epicor": stats["ep_engine"]["by_endpoint"]},
            "idle_poll_by_endpoint": {"inventory_bills": idle_bills["by_endpoint"], "vendors": idle_vendors["by_endpoint"]},
        }
    finally:
        s.close()
    write_result("api_economy", figures)
    return figures


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    result = main(*args)
    print(json.dumps({k: v for k, v in result.items() if "by_endpoint" not in k}))
