"""Metrics of the whole fleet: a worker host serves its pool children's counts, the receiver
under gunicorn with two workers serves every process's counts, and the fleet gauges come
from PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from mlconnector.flows import SourceRecord
from tests.conftest import free_port, serve_wsgi, start_gunicorn, wait_until
from tests.fleet_pair import RecordServer

pytestmark = pytest.mark.fleet


def _value(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture
def metrics_env(configure, fresh_pg: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    from mlconnector import vault
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import create_integration

    server = RecordServer()
    url, wsgi = serve_wsgi(server.app)
    redis.Redis.from_url(redis_url).flushdb()
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = configure(fresh_pg, redis_url, PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    requests.post(f"{url}/_control", json={"sources": {str(i): {"id": str(i), "value": "v", "modifiedOn": "2026-01-01T00:00:00Z"}
                                                        for i in range(5)}})
    with session_scope() as session:
        create_integration(session, "acme", "counter-test", {"systems": {"counter": {"base_url": url}}})
        session.flush()
        vault.store(session, "acme", "counter", {"token": "t"})
    yield env
    wsgi.shutdown()


def test_a_worker_host_serves_its_pool_childrens_metrics(metrics_env: dict[str, str], start_worker: Any) -> None:
    from mlconnector import engine, ledger
    from mlconnector.db.session import session_scope
    from mlconnector.tasks import send

    port = free_port()
    start_worker({**metrics_env, "MLCONNECTOR_WORKER_METRICS_PORT": str(port)}, concurrency=2)
    with session_scope() as session:
        ids = ledger.upsert_records(session, "acme", "items", [SourceRecord(str(i), "v1") for i in range(5)])
    send(engine.Enqueue(records={"counter-test": ids}))

    def scraped() -> str:
        try:
            body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        except requests.RequestException:
            return ""
        return body if _value(body, "mlconnector_tasks_total", pair="counter-test", flow="items", outcome="written") >= 5 else ""

    body = wait_until(scraped, timeout=60, message="the worker's metrics never showed 5 written tasks")
    assert _value(body, "mlconnector_http_requests_total", vendor="counter") >= 10  # a find and a create each
    assert re.search(r'mlconnector_task_seconds_count\{flow="items",pair="counter-test"\} 5\.0', body)


def test_gunicorn_with_two_workers_serves_every_process_count_and_the_fleet_gauges(
        metrics_env: dict[str, str], start_service: Any) -> None:
    from mlconnector import vault
    from mlconnector.db.session import session_scope
    from mlconnector.webhook_signature import sign_for_tests

    key = "metrics-webhook-key-0123456789"
    with session_scope() as session:
        vault.store(session, "acme", "webhook", {"hmac_key": key})
    receiver = start_gunicorn(start_service, metrics_env)
    sent = 12
    for n in range(sent):
        body = ('{"eventId": "m-%d", "eventType": "item.created", "data": {"id": "%d"}}' % (n, n)).encode()
        answer = requests.post(f"{receiver}/webhooks/servicetitan/acme", data=body, timeout=10,
                               headers={"Content-Type": "application/json", "X-ServiceTitan-Signature": sign_for_tests(body, key)})
        assert answer.status_code == 202, answer.text
    for _ in range(4):  # whichever worker answers the scrape, it counts both workers' deliveries
        text = requests.get(f"{receiver}/metrics", timeout=10).text
        assert _value(text, "mlconnector_webhooks_total", vendor="servicetitan", outcome="accepted") == sent, text[:3000]
    assert _value(text, "mlconnector_inbound_events") == sent, [l for l in text.splitlines() if "inbound" in l]
    assert 'mlconnector_queue_depth{queue="mlconnector"}' in text
