"""Every benchmark, one after another, each writing benchmarks/results/<name>.json.

    python -m benchmarks.run [--quick] [--size N] [--only NAME[,NAME...]]

`--quick` runs each at a small size (a few minutes in all). The last line printed is one
JSON object with every ratio and headline figure.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import traceback
from typing import Any, Callable

from benchmarks import fleet

SIZES = {  # name: (quick size, full size)
    "core": (2000, 20000),
    "pipeline": (120, 400),
    "ingest": (1500, 5000),
    "api_economy": (30, 100),
    "acumatica": (200, 600),  # ServiceTitan job invoices -> Acumatica AR invoices: engine vs baseline, calls per record
    "servicenow": (100, 400),  # Epicor POs with lines -> ServiceNow staging rows: engine vs baseline, calls per record
    "procore": (60, 400),  # Epicor POs with lines -> Procore PO contracts: engine vs baseline, calls per record
    "syspro": (100, 400),  # ServiceTitan job invoices -> SYSPRO AP invoices over e.net: engine vs baseline, calls per record
    "ratelimit": (600, 3000),  # inventory bills, one ServiceTitan call each at 60/s
    "freshness": (10, 60),  # seconds of webhook events at 20/s
    "memory": (1500, 10000),  # the small backfill; the large one is ten times it
    "chaos": (60, 300),  # received purchase orders under faults, kills, a broker flush and receiver fuzz
    "chaos_rabbitmq": (60, 300),  # the same on RabbitMQ quorum queues (the flush: every queue purged); needs RabbitMQ
    "console": (20000, 100000),  # ledger rows behind the console's pages, timed against a bare Flask route
    "idle": (200, 1000),  # enabled integrations with nothing new, measured against a tenth of them
    "multihost": (20, 80),  # bills in the kill phase (half as many again with one host, then two); needs root
    "broker": (60, 300),  # bills per round: Redis vs RabbitMQ quorum queues, then a worker killed on each; needs RabbitMQ
}


def _headline(name: str, figures: dict[str, Any]) -> dict[str, Any]:
    chaos = ("records_expected", "written_exactly_once", "exactly_once_ratio", "lost", "duplicated",
             "wrong_amount_or_lines", "stuck", "held", "failed", "drain_s", "faults", "fuzz_requests",
             "fuzz_by_class", "fuzz_5xx")
    keys = {
        "core": ("rate_limit_acquire_vs_get", "token_read_vs_get", "token_shared_read_vs_get", "redis_get_us",
                 "rate_limit_acquire_us", "token_read_us", "token_shared_read_us"),
        "pipeline": ("records", "concurrency", "engine_records_per_s", "baseline_records_per_s", "engine_vs_baseline",
                     "sandbox_cpu_ms_per_request"),
        "ingest": ("events", "receiver_events_per_s", "bare_events_per_s", "receiver_vs_bare", "receiver_p50_ms",
                   "receiver_p99_ms", "bare_p50_ms", "bare_p99_ms", "receiver_p50_vs_bare", "receiver_p99_vs_bare",
                   "paced_rate_per_s", "paced_receiver_p99_ms", "paced_bare_p99_ms", "paced_receiver_p99_vs_bare"),
        "api_economy": ("records", "st_calls_per_record", "epicor_calls_per_record", "calls_per_record",
                        "minimum_per_record", "calls_vs_minimum", "idle_poll_inventory_bills_calls",
                        "idle_poll_vendors_calls"),
        "acumatica": ("records", "concurrency", "engine_records_per_s", "baseline_records_per_s", "engine_vs_baseline",
                      "st_calls_per_record", "acumatica_calls_per_record", "calls_per_record", "minimum_per_record",
                      "calls_vs_minimum", "idle_poll_invoices_calls", "idle_poll_customers_calls"),
        "servicenow": ("records", "concurrency", "engine_records_per_s", "baseline_records_per_s", "engine_vs_baseline",
                       "epicor_calls_per_record", "servicenow_calls_per_record", "calls_per_record",
                       "minimum_per_record", "calls_vs_minimum", "idle_poll_purchase_orders_calls",
                       "idle_poll_vendors_calls"),
        "procore": ("records", "concurrency", "engine_records_per_s", "baseline_records_per_s", "engine_vs_baseline",
                    "epicor_calls_per_record", "procore_calls_per_record", "calls_per_record", "minimum_per_record",
                    "calls_vs_minimum", "idle_poll_purchase_orders_calls", "idle_poll_vendors_calls"),
        "syspro": ("records", "concurrency", "engine_records_per_s", "baseline_records_per_s", "engine_vs_baseline",
                   "st_calls_per_record", "syspro_calls_per_record", "calls_per_record", "minimum_per_record",
                   "calls_vs_minimum", "idle_poll_invoices_calls", "idle_poll_suppliers_calls"),
        "ratelimit": ("records", "limit_per_s", "achieved_per_s", "achieved_vs_limit", "st_429s"),
        "freshness": ("duration_s", "bills", "driven_events_per_s", "p50_s", "p95_s", "max_s", "p95_vs_target"),
        "memory": ("records_small", "records_large", "peak_process_large_vs_small", "peak_tree_large_vs_small"),
        "chaos": chaos,
        "chaos_rabbitmq": ("skipped", *chaos),
        "console": ("rows", "bare_ms", "overview_ms", "overview_vs_bare", "queue_first_ms", "queue_first_vs_bare",
                    "queue_deep_ms", "queue_deep_vs_bare", "queue_deep_vs_first", "queue_filtered_vs_bare",
                    "queue_search_vs_bare", "record_ms", "record_vs_bare", "deep_page_uses_index"),
        "idle": ("integrations", "integrations_small", "poll_interval_s", "polls_per_minute", "polls_done_vs_expected",
                 "spread_max_vs_mean", "max_polls_in_one_second", "send_spread_max_vs_mean",
                 "max_sends_in_one_second", "max_queue_depth", "beat_cpu_ms_per_integration_hour",
                 "worker_cpu_ms_per_integration_hour", "worker_cpu_ms_per_poll", "db_commits_per_poll",
                 "db_rows_written_per_poll", "redis_commands_per_poll", "worker_rss_mb_large_vs_small",
                 "beat_cpu_per_integration_hour_large_vs_small",
                 "worker_cpu_per_integration_hour_large_vs_small", "db_commits_per_integration_hour_large_vs_small",
                 "redis_commands_per_integration_hour_large_vs_small"),
        "multihost": ("skipped", "records", "one_host_records_per_s", "two_hosts_records_per_s", "two_hosts_vs_one",
                      "records_per_s_at_epicor_limit", "recovered_s", "written_exactly_once", "exactly_once_ratio",
                      "lost", "duplicated", "wrong_amount_or_lines", "epicor_calls_per_record", "epicor_429s",
                      "epicor_peak_vs_limit", "st_429s", "st_peak_vs_limit", "epicor_tokens_per_expiry",
                      "epicor_early_token_requests", "st_tokens_per_expiry", "st_early_token_requests"),
        "broker": ("skipped", "records", "redis_records_per_s", "rabbitmq_records_per_s", "rabbitmq_vs_redis",
                   "redis_cpu_ms_per_record", "rabbitmq_cpu_ms_per_record", "rabbitmq_vs_redis_cpu",
                   "redis_recovered_s", "rabbitmq_recovered_s", "rabbitmq_vs_redis_recovered_s",
                   "redis_in_hand_at_kill", "redis_returned_by_broker", "redis_returned_by_sweeper",
                   "rabbitmq_in_hand_at_kill", "rabbitmq_returned_by_broker", "rabbitmq_returned_by_sweeper",
                   "lost", "duplicated", "wrong_amount_or_lines", "stuck"),
    }[name]
    return {f"{name}.{k}": figures[k] for k in keys if k in figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few minutes in all")
    parser.add_argument("--size", type=int,
                        help="records/events for pipeline, ingest, api_economy, acumatica, servicenow, procore, syspro, ratelimit and broker")
    parser.add_argument("--latency-ms", type=int, default=0,
                        help="every sandboxed vendor call answers after this many ms (default 0: CPU-bound)")
    parser.add_argument("--only", help="comma-separated benchmark names to run (default: all): " + ", ".join(SIZES))
    args = parser.parse_args()
    if args.latency_ms:
        os.environ[fleet.LATENCY_ENV] = str(args.latency_ms)

    from benchmarks import (bench_acumatica, bench_api_economy, bench_broker, bench_chaos, bench_console, bench_core,
                            bench_freshness, bench_idle, bench_ingest, bench_memory, bench_multihost, bench_pipeline,
                            bench_procore, bench_ratelimit, bench_servicenow, bench_syspro)

    runners: dict[str, Callable[[int], dict[str, Any]]] = {
        "core": bench_core.main, "pipeline": bench_pipeline.main,
        "ingest": bench_ingest.main, "api_economy": bench_api_economy.main, "acumatica": bench_acumatica.main,
        "servicenow": bench_servicenow.main, "procore": bench_procore.main, "syspro": bench_syspro.main, "ratelimit": bench_ratelimit.main, "freshness": bench_freshness.main,
        "memory": bench_memory.main, "chaos": bench_chaos.main, "chaos_rabbitmq": bench_chaos.run_rabbitmq,
        "console": bench_console.main,
        "idle": bench_idle.main, "multihost": bench_multihost.run, "broker": bench_broker.run,
    }
    summary: dict[str, Any] = {}
    started = time.perf_counter()
    chosen = set(args.only.split(",")) if args.only else set(runners)
    unknown = chosen - set(runners)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {', '.join(runners)}")
    for name, run in runners.items():
        if name not in chosen:
            continue
        size = SIZES[name][0 if args.quick else 1]
        if args.size and name not in ("core", "freshness", "memory", "chaos", "chaos_rabbitmq", "console", "idle",
                                      "multihost"):  # freshness is sized in seconds
            size = args.size
        began = time.perf_counter()
        try:
            figures = run(size)
        except Exception as error:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            summary[f"{name}.error"] = f"{type(error).__name__}: {error}"
            continue
        shown = {k: v for k, v in figures.items() if 'by_endpoint' not in k and k not in ("evidence", "timeline")}
        print(f"{name} ({size}): {json.dumps(shown)}", flush=True)
        summary.update(_headline(name, figures))
        summary[f"{name}.seconds"] = round(time.perf_counter() - began, 1)
    summary["vendor_latency_ms"] = args.latency_ms
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
