"""The ledger (`sync_records`): one row per (integration, flow, source id), its state and
delivery counter. Every state change goes through here so the rules live in one place.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session

from mlconnector.db.models import HoldRelease, RecordStatus, SyncRecord, utcnow
from mlconnector.db.session import upsert_into
from mlconnector.flows import SourceRecord

TERMINAL = frozenset({RecordStatus.WRITTEN.value, RecordStatus.SKIPPED.value, RecordStatus.RESOLVED.value})
PARKED = frozenset({RecordStatus.HELD.value, RecordStatus.FAILED.value})


def upsert_records(
    session: Session, integration_id: str, flow: str, sources: Iterable[SourceRecord]
) -> list[int]:
    """Record that these source records need syncing; returns the ids that need work now.

    Deduped by key and version: a record already written (or parked) at the same version
    is not queued again, so duplicate webhooks, overlapping polls and equal timestamps
    cannot cause a second write. A new version re-opens a written, held or failed record.
    A record already queued or running for this very version is not queued twice: the
    task in hand reads the source when it runs, and whenever the version moves on while
    a record runs, a new task is queued for it (the sweeper covers a broker that lost one).
    """
    sources = list(sources)
    if not sources:
        return []
    now = utcnow()
    rows = [
        {
            "integration_id": integration_id,
            "flow": flow,
            "source_id": s.source_id,
            "source_version": s.version,
            "status": RecordStatus.PENDING.value,
            "deliveries": 0,
            "payload": s.payload,
            "created_at": now,
            "updated_at": now,
        }
        for s in sources
    ]
    statement = upsert_into(session, SyncRecord).values(rows).on_conflict_do_nothing(
        index_elements=["integration_id", "flow", "source_id"]
    )
    session.execute(statement)
    by_id = {s.source_id: s for s in sources}
    existing = session.scalars(
        select(SyncRecord)
        .where(
            SyncRecord.integration_id == integration_id,
            SyncRecord.flow == flow,
            SyncRecord.source_id.in_(list(by_id)),
        )
        .with_for_update()
    ).all()
    ready: list[int] = []
    reopened: list[int] = []
    for record in existing:
        source = by_id[record.source_id]
        if record.status in TERMINAL or record.status in PARKED:
            same_version = source.version is None or source.version in (
                record.written_version,
                record.source_version,
            )
            if same_version:
                continue
            if record.status == RecordStatus.HELD.value:
                reopened.append(record.id)
            record.status = RecordStatus.PENDING.value
            record.deliveries = 0
            record.hold_reason = None
            record.hold_key = None
            record.next_attempt_at = None
        elif (source.version is not None and source.version == record.source_version
              and record.enqueued_at is not None):
            continue  # pending or running for this version already
        record.source_version = source.version or record.source_version
        if source.payload is not None:
            record.payload = source.payload
        record.enqueued_at = now
        ready.append(record.id)
    if reopened:
        session.execute(delete(HoldRelease).where(HoldRelease.sync_record_id.in_(reopened)))
    return ready


def requeue(session: Session, record: SyncRecord, *, reason: str) -> None:
    """Put a parked record back in line with a fresh delivery budget."""
    record.status = RecordStatus.PENDING.value
    record.deliveries = 0
    record.next_attempt_at = None
    record.hold_reason = None
    record.hold_key = None
    record.last_error = None
    record.enqueued_at = utcnow()
    session.execute(delete(HoldRelease).where(HoldRelease.sync_record_id == record.id))


def written_targets(session: Session, integration_id: str, flow: str, source_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The target keys of source records this flow has written (a ledger look-up, no API call)."""
    ids = [str(i) for i in source_ids]
    if not ids:
        return {}
    rows = session.execute(select(SyncRecord.source_id, SyncRecord.target_key).where(
        SyncRecord.integration_id == integration_id, SyncRecord.flow == flow,
        SyncRecord.source_id.in_(ids), SyncRecord.target_key.is_not(None)))
    return {source_id: key for source_id, key in rows}


def stale_pending(session: Session, older_than: datetime, limit: int = 1000) -> list[SyncRecord]:
    """Pending work the broker may have lost, and running work whose worker vanished."""
    now = utcnow()
    return list(
        session.scalars(
            select(SyncRecord)
            .where(
                or_(
                    and_(
                        SyncRecord.status == RecordStatus.PENDING.value,
                        or_(SyncRecord.next_attempt_at.is_(None), SyncRecord.next_attempt_at <= now),
                        or_(SyncRecord.enqueued_at.is_(None), SyncRecord.enqueued_at < older_than,
                            # a wait longer than a countdown: due now and not sent since it fell due
                            and_(SyncRecord.next_attempt_at.is_not(None), SyncRecord.enqueued_at < SyncRecord.next_attempt_at)),
                    ),
                    and_(SyncRecord.status == RecordStatus.RUNNING.value, SyncRecord.updated_at < older_than),
                )
            )
            .order_by(SyncRecord.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )


def counts_by_status(session: Session) -> list[tuple[str, str, str, int]]:
    from sqlalchemy import func

    return [
        tuple(row)  # type: ignore[misc]
        for row in session.execute(
            select(SyncRecord.integration_id, SyncRecord.flow, SyncRecord.status, func.count())
            .group_by(SyncRecord.integration_id, SyncRecord.flow, SyncRecord.status)
            .order_by(SyncRecord.integration_id, SyncRecord.flow, SyncRecord.status)
        )
    ]


COUNTDOWN_LIMIT_SECONDS = 60.0  # waits up to this ride a broker countdown; longer ones wait for the sweeper


def count_finished(session: Session, record_ids: Iterable[int], chunk: int = 1000) -> int:
    """How many of these records have an outcome (written, skipped, resolved, held or failed):
    what a command following queued work waits for."""
    ids = list(record_ids)
    finished = [*TERMINAL, *PARKED]
    total = 0
    for start in range(0, len(ids), chunk):
        total += int(session.scalar(select(func.count()).select_from(SyncRecord).where(
            SyncRecord.id.in_(ids[start:start + chunk]), SyncRecord.status.in_(finished))) or 0)
    return total


def retry_delay(deliveries: int, retry_after: float | None) -> float:
    """After one of our own errors: 1, 2, 4 ... seconds, at most a minute."""
    if retry_after is not None:
        return max(1.0, retry_after)
    return float(min(60, 2 ** max(0, deliveries - 1)))


def transient_delay(failures: int, retry_after: float | None, ceiling: float) -> float:
    """After a vendor's transient error: its Retry-After, else doubling from 2 s, up to the ceiling.

    Jittered between half and the whole step so a fleet that met one outage does not come
    back in one wave."""
    import random

    if retry_after is not None:
        return float(min(ceiling, max(1.0, retry_after)))
    step = min(ceiling, 2.0 ** max(1, failures))
    return max(1.0, step * random.uniform(0.5, 1.0))


def schedule_retry(record: SyncRecord, delay: float, *, broker: bool = True) -> datetime:
    """Set the record's next attempt `delay` seconds from now, and say when that is.

    The announced time is the real one: no delivery is claimed before `next_attempt_at`.
    A short wait rides a broker countdown already sent (so `enqueued_at` is that moment and
    the sweeper leaves it alone); a longer one is sent by the sweeper when it falls due.
    """
    when = after(delay)
    record.next_attempt_at = when
    record.enqueued_at = when if broker and delay <= COUNTDOWN_LIMIT_SECONDS else utcnow()
    return when


def after(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def as_payload(value: Any) -> dict[str, Any] | None:
    """The JSON form of a source record, kept so a replay sends exactly what failed."""
    if value is None:
        return None
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    import json

    return json.loads(json.dumps(value, default=str))
