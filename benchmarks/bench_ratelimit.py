"""The fleet-wide ServiceTitan rate limit: how close two Celery worker processes, sharing
the Redis limiter, run to the vendor's 60 requests/s, and how many 429s the vendor sends.

    python -m benchmarks.bench_ratelimit [N] [concurrency_per_worker]

The ServiceTitan sandbox enforces 60 requests/s per app + tenant (its own sliding window)
and the connector is configured with rate_limit_per_second=60 (the shared Redis limiter).
Two worker processes (concurrency 2 each by default) take a backfill of N inventory bills.
Each record costs exactly one ServiceTitan call (GET the bill) and no Epicor call: the
integration does not create vendors and the Epicor sandbox has none to match, so every
bill ends held for its vendor after its fetch. That keeps the workers' demand for
ServiceTitan calls above the limit, so the limiter, not the engine or Epicor, sets the pace.

Figures: ServiceTitan API requests (token calls excluded) divided by the time between the
first and last of them, as a ratio of the limit (target >= 0.95), and the 429s sent
(target 0).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import requests

from benchmarks import bench_pipeline as pipeline
from benchmarks import fleet
from benchmarks.common import write_result

LIMIT = 60  # requests per second, the sandbox's and the connector's
WORKERS = 2
FLOW = "inventory_bills"
FINAL = ("written", "skipped", "held", "failed")
TOKEN_ENDPOINT = "POST /connect/token"


def _create_integration(host: fleet.SandboxHost) -> None:
    from mlconnector import vault
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import create_integration

    st_config, st_creds, ep_config, ep_creds = fleet.system_settings(host.info("st"), host.info("ep"))
    st_config["rate_limit_per_second"] = LIMIT  # the fleet's shared Redis limiter, at the vendor's limit
    config = fleet.integration_config(st_config, ep_config, "BRTL")
    config["counterparts"]["vendor"]["create"] = False
    with session_scope() as session:
        create_integration(session, fleet.INTEGRATION, fleet.PAIR, config)
        session.flush()
        vault.store(session, fleet.INTEGRATION, "servicetitan", st_creds)
        vault.store(session, fleet.INTEGRATION, "epicor", ep_creds)


def _statuses() -> dict[str, int]:
    return pipeline.statuses(FLOW)


def _stats(url: str, reset: bool = False) -> dict[str, Any]:
    stats = requests.get(f"{url}/_sandbox/stats", timeout=10).json()
    if reset:
        requests.post(f"{url}/_sandbox/stats/reset", timeout=10).raise_for_status()
    return stats


def main(n: int = 3000, concurrency: int = 2) -> dict[str, Any]:
    from mlconnector import engine
    from mlconnector.tasks import send

    database_url = fleet.create_database()
    workers: list[fleet.Process] = []
    host: fleet.SandboxHost | None = None
    try:
        env = fleet.configure(database_url)
        fleet.flush_redis()
        host = fleet.SandboxHost({
            "st": ["servicetitan", {"seed": 5, "records": 0, "rate_limit": LIMIT}],
            "ep": ["epicor", {"seed": 5, "records": 0}],
        })
        st, ep = host.url("st"), host.url("ep")
        vendors = [v["id"] for v in requests.get(f"{st}/_sandbox/entities/vendors", timeout=30).json()
                   if v.get("active", True)]
        have = len(requests.get(f"{st}/_sandbox/entities/inventory_bills", timeout=30).json())
        with requests.Session() as http:
            for index in range(max(0, n - have)):
                http.post(f"{st}/_sandbox/entities/purchase_orders",
                          json={"vendorId": vendors[index % len(vendors)], "status": "Received"},
                          timeout=30).raise_for_status()
        _create_integration(host)
        for _ in range(WORKERS):
            workers.append(fleet.start_worker(env, concurrency))

        poll = engine.poll_flow(fleet.INTEGRATION, FLOW)  # lists the bills (through the same limiter)
        _stats(st, reset=True)
        _stats(ep, reset=True)
        sent = time.time()
        send(poll.enqueue)
        fleet.wait_until(lambda: sum(v for k, v in _statuses().items() if k in FINAL) >= poll.queued,
                         timeout=max(120.0, 5.0 * poll.queued / LIMIT), interval=0.1,
                         message=f"not every record final: {_statuses()}")
        elapsed = time.time() - sent
        st_stats, ep_stats = _stats(st), _stats(ep)
        statuses = _statuses()
    finally:
        fleet.tear_down(database_url, processes=workers, host=host)

    by_endpoint = st_stats["by_endpoint"]
    token_calls = sum(by_endpoint.get(TOKEN_ENDPOINT, {}).values())
    api_requests = st_stats["total"] - token_calls
    window = (st_stats["last_request_at"] or 0) - (st_stats["first_request_at"] or 0)
    rate = api_requests / window if window > 0 else 0.0
    figures = {
        "records": poll.queued,
        "workers": WORKERS,
        "concurrency_per_worker": concurrency,
        "limit_per_s": LIMIT,
        "st_requests": api_requests,
        "st_token_requests": token_calls,
        "busy_window_s": round(window, 3),
        "achieved_per_s": round(rate, 2),
        "achieved_vs_limit": round(rate / LIMIT, 3),
        "target_ratio": 0.95,
        "st_429s": st_stats["rate_limited"],
        "target_429s": 0,
        "st_by_status": st_stats["by_status"],
        "epicor_requests": ep_stats["total"],
        "seconds_to_all_final": round(elapsed, 3),
        "statuses": statuses,
        "st_by_endpoint": by_endpoint,
    }
    write_result("ratelimit", figures)
    return figures


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    print(json.dumps({k: v for k, v in main(*args).items() if k != "st_by_endpoint"}))
