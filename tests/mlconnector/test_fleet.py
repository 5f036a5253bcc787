"""The fleet's invariants on real parts: PostgreSQL, Redis and Celery worker processes.

A worker SIGKILLed mid-write is run again and its effect happens once; after Redis loses
every message the sweeper brings the work back; a poison record ends `failed` after its
delivery limit instead of looping.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
import redis
import requests
from sqlalchemy import func, select

from mlconnector.flows import SourceRecord
from tests.conftest import wait_until
from tests.fleet_pair import RecordServer

pytestmark = pytest.mark.fleet


@pytest.fixture
def fleet_env(configure, fresh_pg: str, redis_url: str, record_server: RecordServer) -> dict[str, str]:
    from mlconnector import vault
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import create_integration

    redis.Redis.from_url(redis_url).flushdb()
    env = configure(fresh_pg, redis_url, MLCONNECTOR_MAX_DELIVERIES="3", MLCONNECTOR_SWEEP_AFTER_SECONDS="1")
    with session_scope() as session:
        create_integration(session, "acme", "counter-test", {"systems": {"counter": {"base_url": record_server.url}}})  # type: ignore[attr-defined]
        session.flush()
        vault.store(session, "acme", "counter", {"token": "unused-token"})
    return env


def _queue_records(server: RecordServer, ids: list[str], value: str = "v1") -> list[int]:
    from mlconnector import engine, ledger
    from mlconnector.db.session import session_scope
    from mlconnector.tasks import send

    requests.post(f"{server.url}/_control", json={"sources": {i: {"id": i, "value": value, "modifiedOn": "2026-01-01T00:00:00Z"} for i in ids}})  # type: ignore[attr-defined]
    with session_scope() as session:
        record_ids = ledger.upsert_records(session, "acme", "items", [SourceRecord(i, "2026-01-01T00:00:00Z") for i in ids])
    send(engine.Enqueue(records={"counter-test": record_ids}))
    return record_ids


def _statuses() -> dict[str, int]:
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        return dict(session.execute(select(SyncRecord.status, func.count()).group_by(SyncRecord.status)).all())


def _writes(server: RecordServer) -> dict[str, int]:
    return requests.get(f"{server.url}/_writes").json()  # type: ignore[attr-defined]


def test_sigkilled_worker_reruns_and_writes_once(fleet_env: dict[str, str], record_server: RecordServer, start_worker) -> None:
    requests.post(f"{record_server.url}/_control", json={"write_delay": 1.5})  # type: ignore[attr-defined]
    worker = start_worker(fleet_env, concurrency=2)
    ids = [f"k{i}" for i in range(4)]
    _queue_records(record_server, ids)
    # Wait until a write is in flight (the target applied it, the answer is not back yet), then kill.
    wait_until(lambda: _writes(record_server), timeout=30, message="no write started")
    children = worker.children()
    assert children
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _statuses().get("written", 0) + _statuses().get("skipped", 0) == len(ids), timeout=90,
               message=lambda: f"records not finished: {_statuses()}")
    writes = _writes(record_server)
    assert sorted(writes) == ids
    assert all(count == 1 for count in writes.values()), writes


def test_sweeper_brings_back_work_after_the_broker_is_flushed(fleet_env: dict[str, str], record_server: RecordServer,
                                                              start_worker, redis_url: str) -> None:
    from mlconnector import engine
    from mlconnector.tasks import send

    ids = [f"f{i}" for i in range(6)]
    _queue_records(record_server, ids)  # queued in Redis, no worker yet
    # The broker loses every message: its own database only. FLUSHALL here emptied the other
    # test process's broker too, mid-test, and dropped that test's queued webhook events.
    redis.Redis.from_url(redis_url).flushdb()
    start_worker(fleet_env)
    time.sleep(2)
    assert _statuses() == {"pending": len(ids)}  # nothing ran: the messages are gone
    result = engine.sweep(older_than_seconds=0)
    assert result.records == len(ids)
    send(result.enqueue)
    wait_until(lambda: _statuses().get("written") == len(ids), timeout=60, message=lambda: f"not written: {_statuses()}")
    assert _writes(record_server) == {i: 1 for i in ids}


def test_poison_record_ends_failed_after_delivery_limit(fleet_env: dict[str, str], record_server: RecordServer,
                                                        start_worker) -> None:
    """A record that crashes the worker's code every time is bounded by the delivery limit,
    and stops once failed."""
    from mlconnector import audit
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    start_worker(fleet_env)
    _queue_records(record_server, ["good"])
    _queue_records(record_server, ["bad"], value="internal-error")
    wait_until(lambda: _statuses().get("failed") == 1 and _statuses().get("written") == 1, timeout=90,
               message=lambda: f"poison record did not end failed: {_statuses()}")
    with session_scope() as session:
        bad = session.scalar(select(SyncRecord).where(SyncRecord.source_id == "bad"))
        assert bad is not None and bad.deliveries == 4  # the fourth delivery found it past the limit of 3
        kinds = [row.kind for row in audit.trail(session, bad.id)]
    assert kinds.count("retry") == 3 and kinds[-1] == "failed"
    time.sleep(3)  # nothing keeps looping once it failed
    with session_scope() as session:
        assert session.get(SyncRecord, bad.id).deliveries == bad.deliveries  # type: ignore[union-attr]


def test_a_vendor_outage_longer_than_the_delivery_budget_ends_written(fleet_env: dict[str, str], record_server: RecordServer,
                                                                      start_worker) -> None:
    """The target answers 503 well past what three deliveries used to cover: transient errors
    back off without spending deliveries, each retry comes no sooner than the trail announced,
    and the record is written once the target is back."""
    import re
    from datetime import timedelta

    from mlconnector import audit
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    requests.post(f"{record_server.url}/_control", json={"always_fail": ["slow"]})  # type: ignore[attr-defined]
    start_worker(fleet_env)
    (record_id,) = _queue_records(record_server, ["slow"])

    def retries() -> int:
        with session_scope() as session:
            return [row.kind for row in audit.trail(session, record_id)].count("retry")

    wait_until(lambda: retries() >= 4, timeout=90, message=lambda: f"not retrying: {_statuses()}")
    with session_scope() as session:
        record = session.get(SyncRecord, record_id)
        assert record is not None and record.status in ("pending", "running") and record.deliveries <= 1
    requests.post(f"{record_server.url}/_control", json={"recovered": ["slow"]})  # type: ignore[attr-defined]
    wait_until(lambda: _statuses().get("written") == 1, timeout=90, message=lambda: f"not written after the outage: {_statuses()}")
    assert _writes(record_server) == {"slow": 1}
    with session_scope() as session:
        trail = audit.trail(session, record_id)
    announced = [(row.at, re.search(r"retrying at (\d\d:\d\d:\d\d)", row.message)) for row in trail if row.kind == "retry"]
    fetches = [row.at for row in trail if row.kind == "fetched"]
    assert len(fetches) == len(announced) + 1
    for (at, match), next_fetch in zip(announced, fetches[1:]):
        assert match is not None
        due = at.replace(hour=int(match[1][:2]), minute=int(match[1][3:5]), second=int(match[1][6:8]), microsecond=0)
        if due < at - timedelta(hours=12):
            due += timedelta(days=1)
        assert next_fetch >= due - timedelta(seconds=1), (at, match[1], next_fetch)


def test_a_vendor_outage_past_the_retry_window_ends_failed(fleet_env: dict[str, str], record_server: RecordServer,
                                                           start_worker) -> None:
    from mlconnector import audit
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    requests.post(f"{record_server.url}/_control", json={"always_fail": ["down"]})  # type: ignore[attr-defined]
    start_worker({**fleet_env, "MLCONNECTOR_RETRY_WINDOW_HOURS": "0.002"})  # about 7 seconds
    (record_id,) = _queue_records(record_server, ["down"])
    def trail() -> list[tuple[Any, str, str]]:
        with session_scope() as session:
            return [(row.at, row.kind, row.message) for row in audit.trail(session, record_id)]

    try:
        wait_until(lambda: _statuses().get("failed") == 1, timeout=90)
    except AssertionError:
        raise AssertionError(f"outage never ended the record: {trail()}") from None
    with session_scope() as session:
        record = session.get(SyncRecord, record_id)
        last = audit.trail(session, record_id)[-1]
    assert record is not None and record.deliveries <= 1
    assert last.kind == "failed" and "retry window" in last.message and f"mlconnector replay {record_id}" in last.message
    assert "down" not in _writes(record_server)


def test_internal_error_puts_the_record_back_and_celery_retries_it(fleet_env: dict[str, str],
                                                                   record_server: RecordServer, start_worker) -> None:
    """A failure of our own (a bug, a constraint) rolls the record's work back, leaves it
    pending with the error and an audit row, and a Celery retry writes it once it can,
    with no sweeper running."""
    from mlconnector import audit
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    start_worker(fleet_env)
    requests.post(f"{record_server.url}/_control", json={"sources": {  # type: ignore[attr-defined]
        "odd": {"id": "odd", "value": "internal-error", "modifiedOn": "2026-01-01T00:00:00Z"}}})
    with session_scope() as session:
        from mlconnector import engine, ledger
        from mlconnector.tasks import send

        ids = ledger.upsert_records(session, "acme", "items", [SourceRecord("odd", "2026-01-01T00:00:00Z")])
    send(engine.Enqueue(records={"counter-test": ids}))

    def noted() -> bool:
        with session_scope() as session:
            return "retry" in [row.kind for row in audit.trail(session, ids[0])]

    wait_until(noted, timeout=30, message=lambda: f"no retry noted: {_statuses()}")
    with session_scope() as session:
        record = session.get(SyncRecord, ids[0])
        assert record is not None and record.status in ("pending", "running")
        assert "RuntimeError: record odd broke inside the worker" in (record.last_error or "")
    requests.post(f"{record_server.url}/_control", json={"sources": {  # type: ignore[attr-defined]
        "odd": {"id": "odd", "value": "fixed", "modifiedOn": "2026-01-01T00:00:00Z"}}})
    wait_until(lambda: _statuses().get("written") == 1, timeout=30,
               message=lambda: f"the retry did not write it: {_statuses()}")
    assert _writes(record_server) == {"odd": 1}


def test_send_publishes_every_message_in_pipelined_batches(fleet_env: dict[str, str], redis_url: str) -> None:
    """A poll's work goes out PUBLISH_BATCH messages per Redis round trip, all of it."""
    from mlconnector import engine
    from mlconnector.tasks import PUBLISH_BATCH, send

    client = redis.Redis.from_url(redis_url)
    count = 2 * PUBLISH_BATCH + 7  # two full batches and a partial one
    send(engine.Enqueue(records={"counter-test": list(range(1, count + 1))}, events=[11, 12]))
    assert client.llen("counter-test") == count and client.llen("mlconnector") == 2
    bodies = client.lrange("counter-test", 0, -1)
    assert all(b"mlconnector.process_record" in body for body in bodies)


def test_sync_with_a_broker_returns_when_the_workers_have_finished_not_when_it_has_queued(
        fleet_env: dict[str, str], record_server: RecordServer, start_worker) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from mlconnector import ledger
    from mlconnector.cli import main
    from mlconnector.db.session import session_scope

    ids = [f"s{n}" for n in range(6)]
    requests.post(f"{record_server.url}/_control", json={"sources": {  # type: ignore[attr-defined]
        i: {"id": i, "value": "v1", "modifiedOn": "2026-01-01T00:00:00Z"} for i in ids}})
    with session_scope() as session:  # pending work, as an interrupted backfill leaves it
        ledger.upsert_records(session, "acme", "items", [SourceRecord(i, "2026-01-01T00:00:00Z") for i in ids])
    record_server.write_delay = 0.3  # one pool child: about 2 s of writing after sync has queued everything
    start_worker(fleet_env, concurrency=1)
    result = CliRunner().invoke(main, ["sync", "acme"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "finishing in the workers" in result.output
    assert _writes(record_server) == {i: 1 for i in ids}  # in the target already when sync returned
    assert _statuses() == {"written": 6}


def test_keys_rotate_names_a_worker_not_restarted_with_the_new_key_list(
        fleet_env: dict[str, str], start_worker, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner
    from cryptography.fernet import Fernet

    from mlconnector.cli import main
    from mlconnector.settings import reset_settings_cache

    old = fleet_env["MLCONNECTOR_SECRET_KEYS"]
    stale = start_worker(fleet_env, concurrency=1)  # started before the new key list was deployed
    new_list = f"{Fernet.generate_key().decode()},{old}"
    fresh = start_worker({**fleet_env, "MLCONNECTOR_SECRET_KEYS": new_list}, concurrency=1)
    monkeypatch.setenv("MLCONNECTOR_SECRET_KEYS", new_list)  # this command runs with the new list
    reset_settings_cache()
    result = CliRunner().invoke(main, ["keys", "rotate"], catch_exceptions=False)
    assert result.exit_code == 0 and "re-encrypted 1 credential row(s)" in result.output, result.output
    assert "1 of 2 worker(s) still run with another newest key" in result.output
    assert stale.hostname() in result.output and fresh.hostname() not in result.output
    stale.stop()
    result = CliRunner().invoke(main, ["keys", "rotate"], catch_exceptions=False)
    assert "warning" not in result.output, result.output
