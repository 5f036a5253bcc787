"""The audit trail: one appended row per step of a record's path, secrets redacted."""

from __future__ import annotations

from typing import Any, Iterable

from pydantic import BaseModel
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from mlconnector.db.models import AuditEvent, utcnow
from mlconnector.redaction import redact, redact_text

MAX_TEXT = 4000  # long vendor bodies are cut, the start is what a person reads


def _plain(value: Any) -> Any:
    """A redacted copy for a JSON column (whose serializer turns Decimals, dates and sets into text)."""
    if value is None:
        return None
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", by_alias=True)
    return redact(value)


def append(
    session: Session,
    kind: str,
    message: str = "",
    *,
    integration_id: str | None = None,
    flow: str | None = None,
    sync_record_id: int | None = None,
    inbound_event_id: int | None = None,
    source_payload: Any = None,
    mapped_payload: Any = None,
    decisions: Iterable[Any] | None = None,
    http_status: int | None = None,
    error: str | None = None,
    target_id: str | None = None,
    duration_ms: float | None = None,
    actor: str | None = None,
) -> None:
    values = dict(
        kind=kind,
        message=redact_text(message)[:MAX_TEXT],
        integration_id=integration_id,
        flow=flow,
        sync_record_id=sync_record_id,
        inbound_event_id=inbound_event_id,
        source_payload=_plain(source_payload),
        mapped_payload=_plain(mapped_payload),
        decisions=_plain([d.as_dict() if hasattr(d, "as_dict") else d for d in decisions]) if decisions else None,
        http_status=http_status,
        error=redact_text(error)[:MAX_TEXT] if error else None,
        target_id=target_id,
        duration_ms=round(duration_ms, 1) if duration_ms is not None else None,
        actor=actor[:100] if actor else None,
    )
    held = session.info.get(_HELD)
    if held is not None:
        values["at"] = utcnow()  # when the step happened, not when its batch is inserted
        held.append(values)
    else:
        session.add(AuditEvent(**values))


_HELD = "mlconnector.audit.held"


def hold_until_commit(session: Session) -> None:
    """Keep this session's audit rows out of its flushes and insert them together at commit.

    A record's path appends several rows between queries; added one by one, each query's
    autoflush sends them as separate INSERTs. Held, they go as one batch in the commit that
    makes the record's new state durable: same rows, same order, one round trip, and no
    unit-of-work bookkeeping for rows nothing reads back. A rollback drops them, as it would
    have dropped rows already flushed.
    """
    session.info.setdefault(_HELD, [])


@event.listens_for(Session, "before_commit")
def _insert_held(committing: Session) -> None:
    """One listener for every session (registered once, not per session): a session that
    holds audit rows inserts them in the commit."""
    rows = committing.info.get(_HELD)
    if rows:
        # The table's own INSERT (not the ORM's bulk path, which splits rows by their NULLs):
        # one statement for all of them.
        committing.execute(AuditEvent.__table__.insert(), list(rows))
        rows.clear()


def trail(session: Session, sync_record_id: int) -> list[AuditEvent]:
    return list(
        session.scalars(
            select(AuditEvent).where(AuditEvent.sync_record_id == sync_record_id).order_by(AuditEvent.id)
        )
    )
