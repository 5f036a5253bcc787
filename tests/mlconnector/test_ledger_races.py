"""The delivery counter, the terminal transition and the sweeper on PostgreSQL, under races."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from mlconnector.flows import SourceRecord


def _record(session_scope: Any, source_id: str, **values: Any) -> int:
    from mlconnector import ledger
    from mlconnector.db.models import SyncRecord

    with session_scope() as session:
        (record_id,) = ledger.upsert_records(session, "acme", "items", [SourceRecord(source_id, "v1")])
        if values:
            session.execute(update(SyncRecord).where(SyncRecord.id == record_id).values(**values))
    return record_id


def _setup(configure: Any, fresh_pg: str) -> Any:
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import create_integration

    configure(fresh_pg, MLCONNECTOR_MAX_DELIVERIES="3")
    with session_scope() as session:
        create_integration(session, "acme", "counter-test", {"systems": {"counter": {"base_url": "http://127.0.0.1:9"}}})
    return session_scope


def test_concurrent_deliveries_count_once_each_and_fail_in_the_same_step(configure, fresh_pg: str) -> None:
    from mlconnector import engine
    from mlconnector.db.models import SyncRecord

    session_scope = _setup(configure, fresh_pg)
    record_id = _record(session_scope, "edge", deliveries=2)
    outcomes: list[Any] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        with session_scope() as session:
            outcomes.append(engine._claim(session, record_id, 3))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    claimed = [o for o in outcomes if o is not None]
    # Delivery 3 runs; delivery 4 is past the limit and fails the record in the statement that
    # counted it; nothing else is counted once the record is failed.
    assert sorted(claimed) == [(3, "running"), (4, "failed")] or claimed == [(3, "running")] or claimed == [(4, "failed")]
    with session_scope() as session:
        record = session.get(SyncRecord, record_id)
        assert record is not None and record.deliveries == max(c[0] for c in claimed) <= 4
        if record.deliveries == 4:
            assert record.status == "failed"
    failed_id = _record(session_scope, "spent", deliveries=3)
    result = engine.process_record(failed_id)
    assert result.outcome == "failed"
    again = engine.process_record(failed_id)
    assert again.outcome == "skipped"
    with session_scope() as session:
        record = session.get(SyncRecord, failed_id)
        assert record is not None and (record.status, record.deliveries) == ("failed", 4)


def test_a_record_being_written_is_left_alone_by_the_sweeper_and_other_deliveries(configure, fresh_pg: str) -> None:
    from mlconnector import engine
    from mlconnector.db.models import SyncRecord, utcnow

    session_scope = _setup(configure, fresh_pg)
    long_ago = utcnow() - timedelta(hours=1)
    record_id = _record(session_scope, "busy", status="running", deliveries=3, updated_at=long_ago, enqueued_at=long_ago)
    with session_scope() as writer:
        writer.get(SyncRecord, record_id, with_for_update=True)  # what a worker in the middle of the write holds
        swept = engine.sweep(older_than_seconds=0)
        assert swept.records == 0 and swept.failed == 0
        with session_scope() as other:
            assert engine._claim(other, record_id, 3) is None
    swept = engine.sweep(older_than_seconds=0)  # the writer is gone (its lease long over): now it is retired
    assert swept.failed == 1


def test_a_delivery_that_finds_its_record_busy_or_due_soon_retries_itself(configure, fresh_pg: str) -> None:
    """Two deliveries of one record (a purchase order's webhook and its bill's) overlap: the one
    that cannot claim retries on its own, instead of leaving the record pending for the sweeper."""
    from mlconnector import engine
    from mlconnector.db.models import SyncRecord, utcnow

    session_scope = _setup(configure, fresh_pg)
    busy = _record(session_scope, "busy", status="running")
    soon = _record(session_scope, "soon", next_attempt_at=utcnow() + timedelta(seconds=10))
    later = _record(session_scope, "later", next_attempt_at=utcnow() + timedelta(hours=2))
    with session_scope() as other:  # the other delivery, writing: it holds the row
        other.get(SyncRecord, busy, with_for_update=True)
        result = engine.process_record(busy)
    assert (result.outcome, result.retry_in) == ("deferred", engine.BUSY_RETRY_SECONDS)
    result = engine.process_record(soon)
    assert result.outcome == "deferred" and 8 < (result.retry_in or 0) <= 10
    result = engine.process_record(later)
    assert result.outcome == "deferred" and result.retry_in is None  # the sweeper's, at next_attempt_at


def test_a_record_locked_by_another_writer_after_the_claim_is_deferred_without_waiting(
        configure, fresh_pg: str, monkeypatch) -> None:
    """Between a delivery's claim and its write another transaction takes the row (a second
    delivery already writing it): this one stands down at once rather than queue behind it."""
    from mlconnector import engine
    from mlconnector.db.models import SyncRecord

    session_scope = _setup(configure, fresh_pg)
    record_id = _record(session_scope, "raced")
    real_claim = engine._claim
    holder = session_scope()
    writer = holder.__enter__()

    def claim_then_lose_the_row(session: Any, rid: int, limit: int) -> Any:
        claimed = real_claim(session, rid, limit)
        session.commit()
        writer.get(SyncRecord, rid, with_for_update=True)
        return claimed

    monkeypatch.setattr(engine, "_claim", claim_then_lose_the_row)
    try:
        result = engine.process_record(record_id)
    finally:
        holder.__exit__(None, None, None)
    assert (result.outcome, result.retry_in) == ("deferred", engine.BUSY_RETRY_SECONDS)
    with session_scope() as session:
        record = session.get(SyncRecord, record_id)
        assert record is not None and (record.status, record.deliveries) == ("running", 1)


def test_the_claim_does_not_wait_for_its_disk_flush_but_the_next_transaction_does(configure, fresh_pg: str) -> None:
    """The claim turns synchronous_commit off for its own transaction only, inside its one
    statement; the write's transaction that follows waits for its flush as every other does."""
    from sqlalchemy import text

    from mlconnector import engine

    session_scope = _setup(configure, fresh_pg)
    record_id = _record(session_scope, "flush")
    with session_scope() as session:
        assert session.execute(text("SHOW synchronous_commit")).scalar() == "on"
        assert engine._claim(session, record_id, 3) == (1, "running")
        assert session.execute(text("SHOW synchronous_commit")).scalar() == "off"
    with session_scope() as session:
        assert session.execute(text("SHOW synchronous_commit")).scalar() == "on"
