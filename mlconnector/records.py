"""The exceptions queue: records by state, as the people who run the books know them, and
resolving those handled outside the product."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlconnector import audit
from mlconnector.db.models import Integration, RecordStatus, SyncRecord, utcnow
from mlconnector.flows import DocumentSummary, all_pairs

OPEN_STATES = (RecordStatus.HELD.value, RecordStatus.FAILED.value)
LIST_LIMIT = 500  # rows a listing returns at most; narrow by integration, flow or time for more


@dataclass
class RecordRow:
    id: int
    integration: str
    flow: str
    status: str
    source_id: str
    document: str
    counterpart: str
    amount: str
    age_seconds: float
    deliveries: int
    reason: str
    target_id: str | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _summary(pairs: dict[str, Any], pair_name: str | None, record: SyncRecord) -> DocumentSummary:
    pair = pairs.get(pair_name or "")
    payload = record.edited_payload or record.payload or {}
    if pair is None or not isinstance(payload, dict):
        return DocumentSummary(record.source_id)
    try:
        return pair.flow(record.flow).handler.summarize(payload)
    except (KeyError, TypeError, ValueError):  # a payload of an older shape still lists, by its id
        return DocumentSummary(record.source_id)


def list_records(session: Session, *, integration: str | None = None, flow: str | None = None,
                 statuses: Iterable[str] = OPEN_STATES, since: datetime | None = None,
                 limit: int = LIST_LIMIT) -> list[RecordRow]:
    """Records in these states, oldest change first, each with its document, counterpart and reason."""
    query = (select(SyncRecord, Integration.pair).join(Integration, Integration.id == SyncRecord.integration_id)
             .where(SyncRecord.status.in_(list(statuses))).order_by(SyncRecord.updated_at, SyncRecord.id).limit(limit))
    if integration:
        query = query.where(SyncRecord.integration_id == integration)
    if flow:
        query = query.where(SyncRecord.flow == flow)
    if since:
        query = query.where(SyncRecord.updated_at >= since)
    pairs = all_pairs()
    now = utcnow()
    rows = []
    for record, pair_name in session.execute(query):
        summary = _summary(pairs, pair_name, record)
        rows.append(RecordRow(
            id=record.id, integration=record.integration_id, flow=record.flow, status=record.status,
            source_id=record.source_id, document=summary.document, counterpart=summary.counterpart, amount=summary.amount,
            age_seconds=round((now - record.updated_at).total_seconds(), 1), deliveries=record.deliveries,
            reason=record.hold_reason or record.last_error or "", target_id=record.target_id))
    return rows


def open_counts(session: Session, integration: str | None = None) -> dict[str, int]:
    """How many records wait for a person: held and failed."""
    from sqlalchemy import func

    query = select(SyncRecord.status, func.count()).where(SyncRecord.status.in_(OPEN_STATES)).group_by(SyncRecord.status)
    if integration:
        query = query.where(SyncRecord.integration_id == integration)
    counts = dict(session.execute(query).all())
    return {state: int(counts.get(state, 0)) for state in OPEN_STATES}


class NotResolvable(ValueError):
    pass


def resolve(session: Session, record_ids: Iterable[int], *, note: str, actor: str) -> list[SyncRecord]:
    """Mark held or failed records handled outside the product: terminal, trail kept, no longer open."""
    if not note.strip():
        raise NotResolvable("say how the record was handled: --note \"...\"")
    ids = list(dict.fromkeys(int(i) for i in record_ids))
    records = list(session.scalars(select(SyncRecord).where(SyncRecord.id.in_(ids)).with_for_update()))
    missing = sorted(set(ids) - {r.id for r in records})
    if missing:
        raise NotResolvable(f"no record {', '.join(map(str, missing))}")
    wrong = [r for r in records if r.status not in OPEN_STATES]
    if wrong:
        raise NotResolvable("only held or failed records can be resolved; "
                            + ", ".join(f"{r.id} is {r.status}" for r in wrong))
    from mlconnector import ledger

    for record in records:
        previous = record.status
        ledger.requeue(session, record, reason="resolved")  # clears the hold and its releases
        record.status = RecordStatus.RESOLVED.value
        record.enqueued_at = None
        audit.append(session, "resolved", f"resolved by {actor} (was {previous}): {note}", integration_id=record.integration_id,
                     flow=record.flow, sync_record_id=record.id, actor=actor)
    return records
