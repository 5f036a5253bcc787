"""The audit trail: one appended row per step of a record's path, secrets redacted."""

from __future__ import annotations

from typing import Any, Iterable

from pydantic import BaseModel
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from mlconnector.db.models import AuditEvent
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
) -> AuditEvent:
    row = AuditEvent(
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
        held.append(row)
    else:
        session.add(row)
    return row


_HELD = "mlconnector.audit.held"


def hold_until_commit(session: Session) -> None:
    """Keep this session's audit rows out of its flushes and insert them together at commit.

    A record's path appends several rows between queries; added one by one, each query's
    autoflush sends them as separate INSERTs. Held, they go as one batch in the commit that
    makes the record's new state durable: same rows, same order, one round trip. A rollback
    drops them, as it would have dropped rows already flushed.
    """
    if _HELD in session.info:
        return
    session.info[_HELD] = []

    def add_held(committing: Session) -> None:
        rows = committing.info.get(_HELD) or []
        committing.add_all(rows)
        rows.clear()

    event.listen(session, "before_commit", add_held)


def trail(session: Session, sync_record_id: int) -> list[AuditEvent]:
    return list(
        session.scalars(
            select(AuditEvent).where(AuditEvent.sync_record_id == sync_record_id).order_by(AuditEvent.id)
        )
    )
