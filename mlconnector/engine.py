"""The record path every flow runs: in -> fetch -> map -> write -> audit.

Functions here are what the Celery tasks call; they own transactions and the ledger, and
leave enqueueing to the caller until after commit (nothing is queued that is not durable).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, text, update
from sqlalchemy.orm import Session

from mlconnector import audit, ledger, metrics
from mlconnector.db.models import EventStatus, InboundEvent, Integration, RecordStatus, SyncRecord, Watermark, utcnow
from mlconnector.db.session import session_scope, upsert_into
from mlconnector.flows import Flow, FlowContext, Hold, Pair, SourceRecord, get_pair
from mlconnector.http.errors import AuthError, ConnectorError, RetriableError
from mlconnector.integrations import connectors_for, get_integration
from mlconnector.logging import get_logger
from mlconnector.settings import get_settings
from mlconnector.vault import VaultError

log = get_logger(__name__)

RUNNING_LEASE_SECONDS = 600  # a record "running" longer than this lost its worker


@dataclass
class Enqueue:
    """Work to send to the broker once the transaction that made it durable has committed."""

    records: dict[str, list[int]] = field(default_factory=dict)  # queue -> record ids
    events: list[int] = field(default_factory=list)
    countdown: float | None = None

    def add_records(self, queue: str, ids: list[int]) -> None:
        if ids:
            self.records.setdefault(queue, []).extend(ids)

    def extend(self, other: "Enqueue") -> None:
        for queue, ids in other.records.items():
            self.add_records(queue, ids)
        self.events.extend(other.events)

    @property
    def empty(self) -> bool:
        return not self.records and not self.events


@dataclass
class RecordResult:
    record_id: int
    outcome: str  # written | skipped | held | failed | retry | deferred | gone
    detail: str = ""
    retry_in: float | None = None


class RetryLater(Exception):
    def __init__(self, seconds: float, detail: str) -> None:
        super().__init__(detail)
        self.seconds = seconds


def _context(session: Session, integration: Integration) -> FlowContext:
    def _audit(kind: str, message: str = "", **kwargs: Any) -> None:
        audit.append(session, kind, message, integration_id=integration.id, **kwargs)

    return FlowContext(integration=integration, session=session,
                       connectors=LazyConnectors(lambda: connectors_for(session, integration)), audit=_audit)


class LazyConnectors(Mapping[str, Any]):
    """The integration's connectors, loaded on first use: an event whose records come
    straight from its payload needs no credentials read at all."""

    def __init__(self, load: Callable[[], dict[str, Any]]) -> None:
        self._load = load
        self._loaded: dict[str, Any] | None = None

    def _all(self) -> dict[str, Any]:
        if self._loaded is None:
            self._loaded = self._load()
        return self._loaded

    def __getitem__(self, system: str) -> Any:
        return self._all()[system]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


# ---- per-record lock --------------------------------------------------------------------

_local_locks: dict[int, threading.Lock] = {}
_local_guard = threading.Lock()


@contextmanager
def record_lock(session: Session, record_id: int) -> Iterator[bool]:
    """Only one worker writes a given record at a time, fleet-wide.

    PostgreSQL: a transaction-scoped advisory lock, released by commit or by the death of
    the worker's connection (a SIGKILLed worker never leaves it stuck). SQLite (embedded,
    one process): a lock in this process.
    """
    if session.get_bind().dialect.name == "postgresql":
        got = session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": record_id}).scalar()
        yield bool(got)
        return
    with _local_guard:
        lock = _local_locks.setdefault(record_id, threading.Lock())
    got = lock.acquire(blocking=False)
    try:
        yield got
    finally:
        if got:
            lock.release()


# ---- the record path ---------------------------------------------------------------------


def process_record(record_id: int) -> RecordResult:
    settings = get_settings()
    started = time.perf_counter()
    with session_scope() as session:
        deliveries = _claim(session, record_id)
        if deliveries is None:
            return _unclaimable(session, record_id)
        if deliveries > settings.max_deliveries:
            record = session.get(SyncRecord, record_id)
            assert record is not None
            record.status = RecordStatus.FAILED.value
            message = (
                f"gave up after {settings.max_deliveries} deliveries; last error: {record.last_error or 'none'}"
            )
            audit.append(session, "failed", message, integration_id=record.integration_id, flow=record.flow,
                         sync_record_id=record.id, source_payload=record.payload, error=record.last_error)
            metrics.TASKS.labels(pair="", flow=record.flow, outcome="failed").inc()
            return RecordResult(record_id, "failed", message)
        # Committed here: the delivery counts even if the worker dies during the write.

    try:
        with session_scope() as session:
            audit.hold_until_commit(session)
            with record_lock(session, record_id) as got:
                if not got:
                    return RecordResult(record_id, "deferred", "another worker holds this record", retry_in=2.0)
                record = session.get(SyncRecord, record_id)
                assert record is not None
                integration = get_integration(session, record.integration_id)
                pair = get_pair(integration.pair)
                flow = pair.flow(record.flow)
                result = _run_flow(session, integration, pair, flow, record)
    except Exception as error:  # not a vendor's answer: the database, a constraint, a bug
        result = _unexpected(record_id, deliveries, error)
        metrics.TASKS.labels(pair="", flow="", outcome="retry").inc()
        raise RetryLater(result.retry_in or 1.0, result.detail) from error
    elapsed = time.perf_counter() - started
    metrics.TASKS.labels(pair=pair.name, flow=flow.name, outcome=result.outcome).inc()
    metrics.TASK_LATENCY.labels(pair=pair.name, flow=flow.name).observe(elapsed)
    if result.outcome == "retry":
        raise RetryLater(result.retry_in or 1.0, result.detail)
    return result


def _unexpected(record_id: int, deliveries: int, error: Exception) -> RecordResult:
    """The record's transaction failed for a reason of our own (its work rolled back): put
    the record back to pending with the error and an audit row, and retry it shortly, so it
    neither sits as 'running' until the sweeper notices nor loses its place. The delivery
    already counted, so a bug that always fails still ends the record 'failed'."""
    delay = ledger.retry_delay(deliveries, None)
    detail = f"{type(error).__name__}: {error}"
    log.warning("record transaction failed; retrying", record_id=record_id, error=detail)
    try:
        with session_scope() as session:
            record = session.get(SyncRecord, record_id)
            if record is not None and record.status == RecordStatus.RUNNING.value:
                record.status = RecordStatus.PENDING.value
                record.last_error = detail
                record.next_attempt_at = ledger.after(delay) if delay > 60 else None
                audit.append(session, "retry", f"internal error, retrying in {delay:.0f}s", error=detail,
                             integration_id=record.integration_id, flow=record.flow, sync_record_id=record.id)
    except Exception:  # the database itself is away: the sweeper brings the record back
        log.warning("could not note the failure; the sweeper will retry", record_id=record_id)
    return RecordResult(record_id, "retry", detail, retry_in=delay)


def _claim(session: Session, record_id: int) -> int | None:
    """Count a delivery and mark the record running, in one statement; None when the record
    is not waiting for work now (gone, finished, parked, or not due yet)."""
    due_by = utcnow() + timedelta(seconds=1)
    return session.scalar(
        update(SyncRecord)
        .where(SyncRecord.id == record_id,
               SyncRecord.status.in_((RecordStatus.PENDING.value, RecordStatus.RUNNING.value)),
               or_(SyncRecord.next_attempt_at.is_(None), SyncRecord.next_attempt_at <= due_by))
        .values(deliveries=SyncRecord.deliveries + 1, status=RecordStatus.RUNNING.value, updated_at=utcnow())
        .returning(SyncRecord.deliveries)
        .execution_options(synchronize_session=False)
    )


def _unclaimable(session: Session, record_id: int) -> RecordResult:
    record = session.get(SyncRecord, record_id)
    if record is None:
        return RecordResult(record_id, "gone", "no such record")
    if record.status in ledger.TERMINAL or record.status in ledger.PARKED:
        return RecordResult(record_id, "skipped", f"already {record.status}")
    return RecordResult(record_id, "deferred", "waiting for next_attempt_at")


def _run_flow(session: Session, integration: Integration, pair: Pair, flow: Flow, record: SyncRecord) -> RecordResult:
    handler = flow.handler
    base = {"integration_id": integration.id, "flow": flow.name, "sync_record_id": record.id}
    step_started = time.perf_counter()
    source: Any = None
    mapped_payload: Any = None
    try:
        ctx = _context(session, integration)
        if record.edited_payload is not None:
            source = record.edited_payload
            audit.append(session, "fetched", "using the edited payload given to replay", source_payload=source, **base)
        else:
            source = handler.fetch(ctx, record.source_id)
            if source is None:
                record.status = RecordStatus.SKIPPED.value
                audit.append(session, "skipped", f"{flow.source} {flow.source_entity} {record.source_id} no longer exists", **base)
                return RecordResult(record.id, "skipped", "source gone")
            record.payload = ledger.as_payload(source)
            audit.append(session, "fetched", f"read {flow.source} {flow.source_entity} {record.source_id}",
                         source_payload=record.payload,
                         duration_ms=(time.perf_counter() - step_started) * 1000, **base)
        version = handler.version(source) if record.edited_payload is None else record.source_version
        if version and record.written_version == version and record.target_id:
            record.status = RecordStatus.SKIPPED.value
            audit.append(session, "skipped", f"version {version} already written as {record.target_id}",
                         target_id=record.target_id, **base)
            return RecordResult(record.id, "skipped", "unchanged")
        outcome = handler.map(ctx, source)
        if isinstance(outcome, Hold):
            record.status = RecordStatus.HELD.value
            record.hold_reason = outcome.reason
            record.hold_key = outcome.key
            audit.append(session, "held", outcome.reason, source_payload=record.payload,
                         decisions=outcome.decisions, **base)
            return RecordResult(record.id, "held", outcome.reason)
        mapped_payload = outcome.payload
        audit.append(session, "mapped", f"mapped to {flow.target} {flow.target_entity}",
                     mapped_payload=outcome.payload, decisions=outcome.decisions, **base)
        write_started = time.perf_counter()
        written = handler.write(ctx, outcome, record.target_id)
        record.status = RecordStatus.WRITTEN.value if written.action != "unchanged" else RecordStatus.SKIPPED.value
        record.target_id = written.target_id
        record.written_version = version
        record.written_at = utcnow()
        record.last_error = None
        record.edited_payload = None
        audit.append(session, "written" if written.action != "unchanged" else "skipped",
                     f"{written.action} {flow.target} {flow.target_entity} {written.target_id}",
                     mapped_payload=outcome.payload, http_status=written.http_status,
                     target_id=written.target_id, decisions=outcome.decisions,
                     duration_ms=(time.perf_counter() - write_started) * 1000, **base)
        return RecordResult(record.id, record.status, written.target_id)
    except RetriableError as error:
        delay = ledger.retry_delay(record.deliveries, error.retry_after)
        record.status = RecordStatus.PENDING.value
        record.last_error = str(error)
        record.next_attempt_at = ledger.after(delay) if delay > 60 else None
        audit.append(session, "retry", f"transient error, retrying in {delay:.0f}s", error=str(error),
                     http_status=error.status, mapped_payload=mapped_payload, **base)
        return RecordResult(record.id, "retry", str(error), retry_in=delay)
    except (ConnectorError, VaultError, LookupError, ValueError, TypeError, KeyError) as error:
        record.status = RecordStatus.FAILED.value
        record.last_error = str(error)
        kind = "auth_failed" if isinstance(error, AuthError) else "failed"
        status = getattr(error, "status", None)
        audit.append(session, kind, f"{type(error).__name__}: {error}", error=str(error), http_status=status,
                     source_payload=record.payload, mapped_payload=mapped_payload, **base)
        log.warning("record failed", record_id=record.id, flow=flow.name, error=str(error))
        return RecordResult(record.id, "failed", str(error))


# ---- inbound events ---------------------------------------------------------------------


def process_event(event_id: int) -> Enqueue:
    """Turn one stored webhook event into ledger rows for the flows that want it."""
    work = Enqueue()
    with session_scope() as session:
        audit.hold_until_commit(session)
        event = session.get(InboundEvent, event_id, with_for_update=True)
        if event is None or event.status != EventStatus.PENDING.value:
            return work
        event.deliveries += 1
        integration = get_integration(session, event.integration_id)
        pair = get_pair(integration.pair)
        flows = pair.flows_for_event(event.event_type)
        base = {"integration_id": integration.id, "inbound_event_id": event.id}
        if not flows:
            event.status = EventStatus.IGNORED.value
            event.processed_at = utcnow()
            audit.append(session, "ignored", f"event type {event.event_type!r} is not used by any flow of {pair.name}", **base)
            return work
        data = event.payload.get("data") if isinstance(event.payload, dict) else None
        if not isinstance(data, dict):
            event.status = EventStatus.FAILED.value
            event.error = "event has no data object"
            audit.append(session, "failed", "event has no data object", source_payload=event.payload, **base)
            return work
        ctx = _context(session, integration)
        try:
            for flow in flows:
                sources = flow.handler.records_for_event(ctx, event.event_type, data)
                ids = ledger.upsert_records(session, integration.id, flow.name, sources)
                for source in sources:
                    audit.append(session, "received", f"{event.event_type} -> {flow.name} {source.source_id}",
                                 flow=flow.name, source_payload=event.payload, **base)
                work.add_records(pair.queue, ids)
        except RetriableError as error:
            event.error = str(error)
            audit.append(session, "retry", "could not resolve event records yet", error=str(error), **base)
            work.countdown = ledger.retry_delay(event.deliveries, error.retry_after)
            work.records.clear()
            work.events.append(event.id)
            return work
        event.status = EventStatus.PROCESSED.value
        event.processed_at = utcnow()
    return work


# ---- polls ------------------------------------------------------------------------------


@dataclass
class PollResult:
    flow: str
    found: int = 0
    queued: int = 0
    skipped_locked: bool = False
    watermark: datetime | None = None
    enqueue: Enqueue = field(default_factory=Enqueue)


POLL_BATCH = 500  # ledger rows written per statement during a poll


def poll_flow(integration_id: str, flow_name: str, *, since: datetime | None = None,
              full: bool = False, on_found: Any = None) -> PollResult:
    """Read what changed since the watermark, upsert ledger rows, then advance the watermark.

    The watermark row is locked for the poll (a duplicate tick skips), the new value is the
    time this poll started (never later), and it is committed with the rows it covers.
    """
    started = utcnow()
    result = PollResult(flow=flow_name)
    with session_scope() as session:
        _ensure_watermark(session, integration_id, flow_name)
        mark = session.scalars(
            select(Watermark).where(Watermark.integration_id == integration_id, Watermark.flow == flow_name)
            .with_for_update(skip_locked=True)
        ).first()
        if mark is None:
            result.skipped_locked = True
            return result
        integration = get_integration(session, integration_id)
        pair = get_pair(integration.pair)
        flow = pair.flow(flow_name)
        ctx = _context(session, integration)
        window_start = None if full else (since or mark.value)
        batch: list[SourceRecord] = []
        try:
            for source in flow.handler.changed(ctx, window_start, started):
                batch.append(source)
                result.found += 1
                if on_found:
                    on_found(1)
                if len(batch) >= POLL_BATCH:
                    ids = ledger.upsert_records(session, integration_id, flow_name, batch)
                    result.enqueue.add_records(pair.queue, ids)
                    result.queued += len(ids)
                    batch.clear()
            ids = ledger.upsert_records(session, integration_id, flow_name, batch)
            result.enqueue.add_records(pair.queue, ids)
            result.queued += len(ids)
        except ConnectorError as error:
            session.rollback()
            with session_scope() as other:
                failed_mark = other.get(Watermark, (integration_id, flow_name))
                if failed_mark is not None:
                    failed_mark.last_poll_at = started
                    failed_mark.last_poll_error = str(error)
                audit.append(other, "poll_failed", f"poll of {flow_name} failed", integration_id=integration_id,
                             flow=flow_name, error=str(error), http_status=error.status)
            raise
        if window_start is None or mark.value is None or started > mark.value:
            mark.value = started
        mark.last_poll_at = started
        mark.last_poll_found = result.found
        mark.last_poll_error = None
        result.watermark = mark.value
        audit.append(session, "polled", f"found {result.found}, queued {result.queued}", integration_id=integration_id,
                     flow=flow_name)
    return result


def _ensure_watermark(session: Session, integration_id: str, flow: str) -> None:
    session.execute(
        upsert_into(session, Watermark).values(integration_id=integration_id, flow=flow, last_poll_found=0)
        .on_conflict_do_nothing(index_elements=["integration_id", "flow"])
    )


# ---- holds and replays ------------------------------------------------------------------


def release_holds(session: Session, integration_id: str, hold_key_prefix: str, reason: str) -> Enqueue:
    """The mapping a hold waited for changed: put those records back in line."""
    work = Enqueue()
    integration = get_integration(session, integration_id)
    pair = get_pair(integration.pair)
    records = ledger.held_for(session, integration_id, hold_key_prefix)
    for record in records:
        ledger.requeue(session, record, reason=reason)
        audit.append(session, "requeued", reason, integration_id=integration_id, flow=record.flow,
                     sync_record_id=record.id)
    work.add_records(pair.queue, [r.id for r in records])
    return work


def replay(session: Session, record: SyncRecord, *, edited_payload: dict[str, Any] | None = None) -> Enqueue:
    work = Enqueue()
    integration = get_integration(session, record.integration_id)
    pair = get_pair(integration.pair)
    previous = record.status
    ledger.requeue(session, record, reason="replay")
    if record.status == RecordStatus.PENDING.value:
        record.written_version = None if previous in ledger.PARKED else record.written_version
    if edited_payload is not None:
        record.edited_payload = edited_payload
    audit.append(session, "replay", f"replay requested (was {previous})" + (" with an edited payload" if edited_payload else ""),
                 integration_id=record.integration_id, flow=record.flow, sync_record_id=record.id,
                 source_payload=edited_payload)
    work.add_records(pair.queue, [record.id])
    return work


# ---- the sweeper ------------------------------------------------------------------------


@dataclass
class SweepResult:
    events: int = 0
    records: int = 0
    failed: int = 0
    enqueue: Enqueue = field(default_factory=Enqueue)


def sweep(older_than_seconds: float | None = None) -> SweepResult:
    """Bring back work the broker lost; retire records past their delivery limit."""
    settings = get_settings()
    threshold = utcnow() - timedelta(seconds=older_than_seconds if older_than_seconds is not None else settings.sweep_after_seconds)
    result = SweepResult()
    with session_scope() as session:
        events = session.scalars(
            select(InboundEvent)
            .where(InboundEvent.status == EventStatus.PENDING.value,
                   (InboundEvent.enqueued_at.is_(None)) | (InboundEvent.enqueued_at < threshold))
            .order_by(InboundEvent.id).limit(1000).with_for_update(skip_locked=True)
        ).all()
        for event in events:
            event.enqueued_at = utcnow()
            result.enqueue.events.append(event.id)
        result.events = len(events)
        pairs: dict[str, Pair] = {}
        for record in ledger.stale_pending(session, threshold):
            if record.deliveries >= settings.max_deliveries:
                record.status = RecordStatus.FAILED.value
                audit.append(session, "failed", f"gave up after {record.deliveries} deliveries; last error: {record.last_error or 'none'}",
                             integration_id=record.integration_id, flow=record.flow, sync_record_id=record.id,
                             source_payload=record.payload, error=record.last_error)
                result.failed += 1
                continue
            if record.status == RecordStatus.RUNNING.value:
                record.status = RecordStatus.PENDING.value
            record.enqueued_at = utcnow()
            integration = session.get(Integration, record.integration_id)
            if integration is None:
                continue
            pair = pairs.get(integration.pair) or get_pair(integration.pair)
            pairs[integration.pair] = pair
            result.enqueue.add_records(pair.queue, [record.id])
            result.records += 1
    return result
