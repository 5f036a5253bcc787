"""Is it healthy? Per integration and flow: records by state, how many reached the target,
polls (last, next, last error), the oldest record waiting in each open state, the position."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

from mlconnector.db.models import AuditEvent, SyncRecord, Watermark, as_utc, utcnow
from mlconnector.flows import all_pairs

WAITING_STATES = ("pending", "held", "failed")


@dataclass
class FlowHealth:
    integration: str
    flow: str
    enabled: bool
    counts: dict[str, int] = field(default_factory=dict)
    in_target: int = 0  # records ever written to the target, whatever their last outcome
    last_poll_at: datetime | None = None
    next_poll_at: datetime | None = None
    last_poll_error: str | None = None
    oldest_age_seconds: dict[str, float] = field(default_factory=dict)  # state -> age of its oldest record
    position_at: datetime | None = None
    position_cursor: str | None = None

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("last_poll_at", "next_poll_at", "position_at"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


def flow_health(session: Session, integration: str | None = None) -> list[FlowHealth]:
    from mlconnector.integrations import list_integrations

    pairs = all_pairs()
    now = utcnow()
    rows: dict[tuple[str, str], FlowHealth] = {}
    cadence: dict[tuple[str, str], float | None] = {}
    for row in list_integrations(session):
        if integration and row.id != integration or row.pair not in pairs:
            continue
        pair = pairs[row.pair]
        try:
            overrides = pair.parse_config(row.config or {}).poll_seconds
        except ValueError:
            overrides = {}
        for flow in pair.ordered_flows():
            rows[(row.id, flow.name)] = FlowHealth(row.id, flow.name, row.enabled)
            cadence[(row.id, flow.name)] = overrides.get(flow.name, flow.poll_seconds)
    if not rows:
        return []
    ids = sorted({key[0] for key in rows})
    for integ, flow, status, count in session.execute(
            select(SyncRecord.integration_id, SyncRecord.flow, SyncRecord.status, func.count())
            .where(SyncRecord.integration_id.in_(ids)).group_by(SyncRecord.integration_id, SyncRecord.flow, SyncRecord.status)):
        if (integ, flow) in rows:
            rows[(integ, flow)].counts[status] = int(count)
    for integ, flow, count in session.execute(
            select(SyncRecord.integration_id, SyncRecord.flow, func.count())
            .where(SyncRecord.integration_id.in_(ids), SyncRecord.target_id.is_not(None))
            .group_by(SyncRecord.integration_id, SyncRecord.flow)):
        if (integ, flow) in rows:
            rows[(integ, flow)].in_target = int(count)
    for integ, flow, status, oldest in session.execute(
            select(SyncRecord.integration_id, SyncRecord.flow, SyncRecord.status, func.min(SyncRecord.updated_at))
            .where(SyncRecord.integration_id.in_(ids), SyncRecord.status.in_(WAITING_STATES))
            .group_by(SyncRecord.integration_id, SyncRecord.flow, SyncRecord.status)):
        if (integ, flow) in rows and oldest is not None:
            rows[(integ, flow)].oldest_age_seconds[status] = round((now - as_utc(oldest)).total_seconds(), 1)
    for mark in session.scalars(select(Watermark).where(Watermark.integration_id.in_(ids))):
        health = rows.get((mark.integration_id, mark.flow))
        if health is None:
            continue
        health.last_poll_at, health.last_poll_error = mark.last_poll_at, mark.last_poll_error
        health.position_at, health.position_cursor = mark.value, mark.cursor
    for key, health in rows.items():
        every = cadence[key]
        if every and health.enabled:
            health.next_poll_at = (health.last_poll_at + timedelta(seconds=float(every))) if health.last_poll_at else now
    return [rows[key] for key in sorted(rows)]


CREATED_KINDS = ("written", "counterpart_created")  # audit rows of a record the connector created in a target


def documents_created_this_month(session: Session, integration: str | None = None,
                                 now: datetime | None = None) -> dict[str, int]:
    """Per integration: records created in a target system through its API since the start of
    this UTC month (documents and counterparts such as customers).

    Some vendors licence a monthly number of documents created through their API; this says
    how close each integration is. Read from the audit trail, whose write rows begin with the
    write's action ('created ...'), so updates, unchanged records and retries of a write that
    already landed do not count."""
    moment = as_utc(now or utcnow())
    month_start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    counterpart = aliased(AuditEvent)
    # A counterpart created by the resolver and then reported by its own flow's write is one creation.
    reported_twice = (select(counterpart.id).where(counterpart.kind == "counterpart_created",
                                                   counterpart.sync_record_id == AuditEvent.sync_record_id,
                                                   counterpart.target_id == AuditEvent.target_id).exists())
    query = (select(AuditEvent.integration_id, func.count())
             .where(AuditEvent.kind.in_(CREATED_KINDS), AuditEvent.message.like("created%"), AuditEvent.at >= month_start,
                    AuditEvent.integration_id.is_not(None),
                    or_(AuditEvent.kind == "counterpart_created", ~reported_twice))
             .group_by(AuditEvent.integration_id))
    if integration:
        query = query.where(AuditEvent.integration_id == integration)
    return {row[0]: int(row[1]) for row in session.execute(query)}

