"""The exceptions queue for the console: held and failed records, filtered, one page at a time.

Pages by keyset on (updated_at, id) over the partial indexes of migration 0008, so the
hundredth page costs what the first does, however large the ledger. Each row is summarised
by the pair's own handler (document number, counterpart, amount), as `records list` does.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy import Text, cast, or_, select, tuple_
from sqlalchemy.orm import Session

from mlconnector.db.models import Integration, SyncRecord, utcnow
from mlconnector.flows import all_pairs
from mlconnector.records import OPEN_STATES, RecordRow, _summary

PAGE_SIZE = 50  # rows a page shows; a person scans a page, then narrows the filters


class QueueFilter(BaseModel):
    """The queue's filters, as read from the query string (blank means any)."""

    integration: str = ""
    flow: str = ""
    state: str = ""  # held | failed | '' (both)
    reason: str = ""  # words in the hold reason or the vendor's error
    older_than_hours: float | None = Field(default=None, ge=0)
    document: str = ""  # the source document's own number (or the source id)
    after: str = ""  # the keyset cursor: '<updated_at iso>,<id>' of the last row shown


class QueuePage(BaseModel):
    rows: list[RecordRow]
    next_cursor: str | None

    model_config = {"arbitrary_types_allowed": True}


def cursor_of(updated_at: datetime, record_id: int) -> str:
    return f"{updated_at.isoformat()},{record_id}"


def _parse_cursor(cursor: str) -> tuple[datetime, int] | None:
    at, _, ident = cursor.rpartition(",")
    try:
        return datetime.fromisoformat(at), int(ident)
    except ValueError:
        return None  # a cursor edited by hand starts from the first page


def page(session: Session, wanted: QueueFilter, *, size: int = PAGE_SIZE) -> QueuePage:
    states = [wanted.state] if wanted.state in OPEN_STATES else list(OPEN_STATES)
    query = (select(SyncRecord, Integration.pair).join(Integration, Integration.id == SyncRecord.integration_id)
             .where(SyncRecord.status.in_(states)).order_by(SyncRecord.updated_at, SyncRecord.id).limit(size + 1))
    if wanted.integration:
        query = query.where(SyncRecord.integration_id == wanted.integration)
    if wanted.flow:
        query = query.where(SyncRecord.flow == wanted.flow)
    if wanted.reason.strip():
        words = f"%{wanted.reason.strip()}%"
        query = query.where(or_(SyncRecord.hold_reason.ilike(words), SyncRecord.last_error.ilike(words)))
    if wanted.older_than_hours:
        query = query.where(SyncRecord.updated_at <= utcnow() - timedelta(hours=wanted.older_than_hours))
    number = wanted.document.strip()
    if number:
        # The number lives in the kept source payload, under the field the source system names it by.
        query = query.where(or_(SyncRecord.source_id == number, cast(SyncRecord.payload, Text).contains(number),
                                cast(SyncRecord.edited_payload, Text).contains(number)))
    after = _parse_cursor(wanted.after) if wanted.after else None
    if after is not None:
        query = query.where(tuple_(SyncRecord.updated_at, SyncRecord.id) > tuple_(*after))
    found = session.execute(query).all()
    pairs, now = all_pairs(), utcnow()
    rows = []
    for record, pair_name in found[:size]:
        summary = _summary(pairs, pair_name, record)
        rows.append(RecordRow(
            id=record.id, integration=record.integration_id, flow=record.flow, status=record.status,
            source_id=record.source_id, document=summary.document, counterpart=summary.counterpart, amount=summary.amount,
            age_seconds=round((now - record.updated_at).total_seconds(), 1), deliveries=record.deliveries,
            reason=record.hold_reason or record.last_error or "", target_id=record.target_id))
    last = found[size - 1][0] if len(found) > size else None
    return QueuePage(rows=rows, next_cursor=cursor_of(last.updated_at, last.id) if last is not None else None)
