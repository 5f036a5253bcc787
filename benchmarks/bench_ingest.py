"""Webhook intake: signed ServiceTitan events per second accepted by the receiver under
gunicorn (signature verified, event stored in PostgreSQL, task enqueued to Redis), against
a bare Flask endpoint answering 202 under the same gunicorn settings. No worker runs, so
the events just queue.

Two loads: N events as fast as `client_threads` senders go (throughput, and latency at
saturation), then N/2 events paced at 200 per second (latency at the target rate, measured
from each event's due time).

    python -m benchmarks.bench_ingest [N] [client_threads]
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from benchmarks import fleet
from benchmarks.common import write_result

GUNICORN_WORKERS = 2
PACED_RATE = 200.0  # events/s for the latency target
PACED_THREADS = 32  # enough senders that a slow answer never delays the next send
QUEUE = "mlconnector"  # where process_event goes (the default queue)


def _fake_infos() -> tuple[dict[str, Any], dict[str, Any]]:
    """Connector settings the receiver never calls: intake touches no vendor."""
    st = {"api_base": "http://127.0.0.1:9", "token_url": "http://127.0.0.1:9/connect/token",
          "credentials": {"client_id": "cid.bench", "client_secret": "cs1.bench", "app_key": "ak1.bench", "tenant": 1}}
    ep = {"api_base": "http://127.0.0.1:9", "token_url": "",
          "credentials": {"company": "EPIC06", "username": "bench", "password": "bench", "api_key": "bench"}}
    return st, ep


def _bodies(prefix: str, count: int) -> list[tuple[bytes, str]]:
    from mlconnector.webhook_signature import sign_for_tests

    out = []
    for i in range(count):
        body = json.dumps({"eventId": f"{prefix}-{i}", "eventType": "inventory-bill.updated", "tenantId": 1,
                           "data": {"id": 500_000 + i}}).encode()
        out.append((body, sign_for_tests(body, fleet.HMAC_KEY)))
    return out


def _drive(url: str, bodies: list[tuple[bytes, str]], threads: int) -> dict[str, Any]:
    local = threading.local()

    def post(item: tuple[bytes, str]) -> tuple[int, float]:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        body, signature = item
        started = time.perf_counter()
        response = session.post(url, data=body, timeout=30, headers={
            "Content-Type": "application/json", "X-ServiceTitan-Signature": signature})
        return response.status_code, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(post, bodies))
    seconds = time.perf_counter() - started
    latencies = sorted(r[1] for r in results)
    codes: dict[str, int] = {}
    for code, _ in results:
        codes[str(code)] = codes.get(str(code), 0) + 1
    return {"seconds": seconds, "rate": len(bodies) / seconds, "codes": codes,
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000}


def _paced(url: str, bodies: list[tuple[bytes, str]], rate: float) -> dict[str, Any]:
    """Open loop: event i is due at start + i/rate, sent then whatever earlier answers do.
    Latency runs from the due time, so a backlog shows in the figures instead of slowing
    the sender down (no coordinated omission)."""
    local = threading.local()
    start = time.perf_counter() + 0.1

    def post(indexed: tuple[int, tuple[bytes, str]]) -> tuple[int, float]:
        index, (body, signature) = indexed
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        due = start + index / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        response = session.post(url, data=body, timeout=30, headers={
            "Content-Type": "application/json", "X-ServiceTitan-Signature": signature})
        return response.status_code, time.perf_counter() - due

    with ThreadPoolExecutor(max_workers=PACED_THREADS) as pool:
        results = list(pool.map(post, enumerate(bodies)))
    latencies = sorted(r[1] for r in results)
    return {"rate": rate, "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
            "errors": sum(1 for code, _ in results if code != 202)}


def main(n: int = 2000, threads: int = 8) -> dict[str, Any]:
    import redis

    database_url = fleet.create_database()
    services: list[fleet.Process] = []
    try:
        env = fleet.configure(database_url)
        fleet.flush_redis()
        st_info, ep_info = _fake_infos()
        fleet.create_bench_integration(st_info, ep_info, "BENG")
        path = f"/webhooks/servicetitan/{fleet.INTEGRATION}"
        warm = max(50, n // 20)
        bare_url, bare = fleet.start_gunicorn(env, "benchmarks.bare_app:create_app()", GUNICORN_WORKERS)
        services.append(bare)
        paced_n = max(200, n // 2)
        _drive(bare_url + path, _bodies("bare-warm", warm), threads)
        bare_run = _drive(bare_url + path, _bodies("bare", n), threads)
        bare_paced = _paced(bare_url + path, _bodies("bare-paced", paced_n), PACED_RATE)
        bare.stop(sig=2)
        receiver_url, receiver = fleet.start_gunicorn(env, "mlconnector.web:create_app()", GUNICORN_WORKERS)
        services.append(receiver)
        _drive(receiver_url + path, _bodies("warm", warm), threads)
        run = _drive(receiver_url + path, _bodies("evt", n), threads)
        paced = _paced(receiver_url + path, _bodies("paced", paced_n), PACED_RATE)
        # Enqueue happens after each answer is sent; give the last ones a moment.
        client = redis.Redis.from_url(fleet.REDIS_URL)
        fleet.wait_until(lambda: client.llen(QUEUE) >= n + warm + paced_n, timeout=30, interval=0.1,
                         message="not all enqueued")
        from sqlalchemy import func, select

        from mlconnector.db.models import InboundEvent
        from mlconnector.db.session import session_scope

        with session_scope() as session:
            stored = session.scalar(select(func.count()).select_from(InboundEvent)
                                    .where(InboundEvent.source_event_id.like("evt-%")))
        figures = {
            "events": n,
            "client_threads": threads,
            "gunicorn_workers": GUNICORN_WORKERS,
            "receiver_events_per_s": round(run["rate"], 1),
            "bare_events_per_s": round(bare_run["rate"], 1),
            "receiver_vs_bare": round(run["rate"] / bare_run["rate"], 3),
            "receiver_p50_ms": round(run["p50_ms"], 2),
            "receiver_p99_ms": round(run["p99_ms"], 2),
            "bare_p50_ms": round(bare_run["p50_ms"], 2),
            "bare_p99_ms": round(bare_run["p99_ms"], 2),
            "receiver_p50_vs_bare": round(run["p50_ms"] / bare_run["p50_ms"], 2),
            "receiver_p99_vs_bare": round(run["p99_ms"] / bare_run["p99_ms"], 2),
            "paced_rate_per_s": PACED_RATE,
            "paced_events": paced_n,
            "paced_receiver_p50_ms": round(paced["p50_ms"], 2),
            "paced_receiver_p99_ms": round(paced["p99_ms"], 2),
            "paced_bare_p50_ms": round(bare_paced["p50_ms"], 2),
            "paced_bare_p99_ms": round(bare_paced["p99_ms"], 2),
            "paced_receiver_p99_vs_bare": round(paced["p99_ms"] / bare_paced["p99_ms"], 2),
            "paced_target_p99_ms": 50.0,
            "paced_errors": paced["errors"] + bare_paced["errors"],
            "receiver_statuses": run["codes"],
            "bare_statuses": bare_run["codes"],
            "stored_in_postgres": stored,  # of the closed-loop run's events
            "queued_in_redis": client.llen(QUEUE),
        }
    finally:
        fleet.tear_down(database_url, processes=services, sig=2)
    write_result("ingest", figures)
    return figures


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    print(json.dumps(main(*args)))
