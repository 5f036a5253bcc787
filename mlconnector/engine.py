"""The record path every flow runs: in -> fetch -> map -> write -> audit.

Functions here are what the Celery tasks call; they own transactions and the ledger, and
leave enqueueing to the caller until after commit (nothing is queued that is not durable).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm import Session

from mlconnector import audit, ledger, metrics, releases, resolver
from mlconnector.db.models import (EventStatus, InboundEvent, Integration, RecordStatus, SyncRecord, Watermark, as_utc,
                                    utcnow)
from mlconnector.db.session import session_scope, upsert_into
from mlconnector.errors import verdict
from mlconnector.flows import Flow, FlowContext, MappedRecord, Nothing, Pair, Plan, SourceRecord, get_pair
from mlconnector.holds import Hold
from mlconnector.http.errors import AuthError, ConnectorError, RetriableError
from mlconnector.integrations import connectors_for, get_integration, load_for_work
from mlconnector.locks import LockSpace, try_lock
from mlconnector.logging import get_logger, log_context
from mlconnector.outbox import Enqueue
from mlconnector.positions import START, Position
from mlconnector.settings import get_settings

log = get_logger(__name__)

RUNNING_LEASE_SECONDS = 600  # a record "running" longer than this lost its worker


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


def _context(session: Session, integration: Integration, pair: Pair, *, dry_run: bool = False,
             record: SyncRecord | None = None) -> FlowContext:
    base: dict[str, Any] = {"integration_id": integration.id}
    if record is not None:
        base.update(flow=record.flow, sync_record_id=record.id)

    def _audit(kind: str, message: str = "", **kwargs: Any) -> None:
        audit.append(session, kind, message, **{**base, **kwargs})

    return FlowContext(integration=integration, session=session, pair=pair, dry_run=dry_run,
                       connectors=LazyConnectors(lambda: connectors_for(session, integration)), audit=_audit)


def context_for(session: Session, integration_id: str, *, dry_run: bool = False) -> FlowContext:
    """A handler context outside the record path (the command line's link and search commands)."""
    integration = get_integration(session, integration_id)
    return _context(session, integration, get_pair(integration.pair), dry_run=dry_run)


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


@contextmanager
def locked_record(session: Session, record_id: int) -> Iterator[SyncRecord | None]:
    """The record, locked until this transaction ends, or None when another transaction
    holds it: only one worker writes a given record at a time, fleet-wide.

    On PostgreSQL the row lock is the lock (`FOR UPDATE SKIP LOCKED`, as the claim and the
    sweeper take it), one statement instead of an advisory lock and then the row. The embedded
    default has no row locks: there a process-wide lock per record stands in (see locks.py)."""
    if session.get_bind().dialect.name == "postgresql":
        yield session.scalars(select(SyncRecord).where(SyncRecord.id == record_id)
                              .with_for_update(skip_locked=True)).first()
        return
    with try_lock(session, LockSpace.RECORD, record_id) as got:
        yield session.get(SyncRecord, record_id, with_for_update=True, populate_existing=True) if got else None


# ---- the record path ---------------------------------------------------------------------


def process_record(record_id: int) -> RecordResult:
    """Deliver one record: claim it, then resolve, map, plan and write it under its row lock.
    Every log line written meanwhile carries the record, integration and flow ids."""
    with log_context(record_id=record_id) as bind:
        return _process_record(record_id, bind)


def _process_record(record_id: int, bind: Callable[..., None]) -> RecordResult:
    settings = get_settings()
    started = time.perf_counter()
    with session_scope() as session:
        claimed = _claim(session, record_id, settings.max_deliveries)
        if claimed is None:
            return _unclaimable(session, record_id)
        deliveries, status = claimed
        if status == RecordStatus.FAILED.value:  # past the limit: failed in the very statement that counted it
            record = session.get(SyncRecord, record_id)
            assert record is not None
            bind(integration_id=record.integration_id, flow=record.flow)
            message = f"gave up after {settings.max_deliveries} deliveries; last error: {record.last_error or 'none'}"
            audit.append(session, "failed", message, integration_id=record.integration_id, flow=record.flow,
                         sync_record_id=record.id, source_payload=record.payload, error=record.last_error)
            metrics.TASKS.labels(pair="", flow=record.flow, outcome="failed").inc()
            return RecordResult(record_id, "failed", message)
        # Committed here: the delivery counts even if the worker dies during the write.

    try:
        with session_scope() as session:
            audit.hold_until_commit(session)
            with locked_record(session, record_id) as record:
                # The row stays locked until this write commits: the sweeper and other deliveries skip it.
                if record is None:  # (or removed since the claim: the next delivery finds it gone)
                    return RecordResult(record_id, "deferred", "another worker holds this record",
                                        retry_in=BUSY_RETRY_SECONDS)
                bind(integration_id=record.integration_id, flow=record.flow)
                # Pending again: a newer version re-opened it between the claim and this lock.
                # This delivery reads the source now, so it writes that version itself rather
                # than stand down and leave it to the next delivery (which then finds it written).
                if record.status not in (RecordStatus.RUNNING.value, RecordStatus.PENDING.value):
                    return RecordResult(record_id, "skipped", f"already {record.status}")
                integration = load_for_work(session, record.integration_id)
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
    the record back to pending with the error and an audit row, and retry it at the time the
    trail announces, so it neither sits as 'running' until the sweeper notices nor loses its
    place. The delivery already counted, so a bug that always fails still ends the record
    'failed'."""
    delay = ledger.retry_delay(deliveries, None)
    detail = f"{type(error).__name__}: {error}"
    log.warning("record transaction failed; retrying", record_id=record_id, error=detail)
    try:
        with session_scope() as session:
            record = session.get(SyncRecord, record_id, with_for_update=True)
            if record is not None and record.status == RecordStatus.RUNNING.value:
                record.status = RecordStatus.PENDING.value
                record.last_error = detail
                when = ledger.schedule_retry(record, delay, broker=not get_settings().embedded)
                audit.append(session, "retry", f"internal error, retrying at {when:%H:%M:%S} (in {delay:.0f}s)", error=detail,
                             integration_id=record.integration_id, flow=record.flow, sync_record_id=record.id)
    except Exception:  # the database itself is away: the sweeper brings the record back
        log.warning("could not note the failure; the sweeper will retry", record_id=record_id)
    return RecordResult(record_id, "retry", detail, retry_in=delay)


def _claim(session: Session, record_id: int, max_deliveries: int) -> tuple[int, str] | None:
    """Count a delivery and mark the record running, or failed when that delivery is past the
    limit: one statement, so the counter and the terminal transition cannot race. None when
    the record is not waiting for work now (gone, finished, parked, not due yet, or being
    written by another worker, whose row lock this skips)."""
    returned: list[Any] = [SyncRecord.deliveries, SyncRecord.status]
    if session.get_bind().dialect.name == "postgresql":
        # The count need not wait for its own disk flush: a server crash could only lose a
        # delivery's increment (the record is delivered once more), and the write's own commit,
        # which waits, flushes this one with it (the log is written in order). SET LOCAL as a
        # function in the same statement: no round trip of its own.
        returned.append(func.set_config("synchronous_commit", "off", True))
    due_by = utcnow() + timedelta(seconds=1)
    free = select(SyncRecord.id).where(SyncRecord.id == record_id).with_for_update(skip_locked=True).scalar_subquery()
    row = session.execute(
        update(SyncRecord)
        .where(SyncRecord.id == free,
               SyncRecord.status.in_((RecordStatus.PENDING.value, RecordStatus.RUNNING.value)),
               or_(SyncRecord.next_attempt_at.is_(None), SyncRecord.next_attempt_at <= due_by))
        .values(deliveries=SyncRecord.deliveries + 1,
                status=case((SyncRecord.deliveries + 1 > max_deliveries, RecordStatus.FAILED.value),
                            else_=RecordStatus.RUNNING.value),
                updated_at=utcnow())
        .returning(*returned)
        .execution_options(synchronize_session=False)
    ).first()
    return (row[0], row[1]) if row is not None else None


SHORT_WAIT_SECONDS = 60.0  # as EngineTask.retry_later: longer waits are the sweeper's
BUSY_RETRY_SECONDS = 2.0  # a writer has it: this delivery will most likely find it written
LOCKED_RETRY_SECONDS = 0.25  # a webhook for it is being stored: a few milliseconds


def _unclaimable(session: Session, record_id: int) -> RecordResult:
    record = session.get(SyncRecord, record_id)
    if record is None:
        return RecordResult(record_id, "gone", "no such record")
    if record.status in ledger.TERMINAL or record.status in ledger.PARKED:
        return RecordResult(record_id, "skipped", f"already {record.status}")
    # Not claimable now: a writer holds the row ('running'), a short transaction does (a webhook
    # for the same record being stored: 'pending'), or it is not due yet. A wait this short is
    # this task's own retry, never the sweeper's minutes; a longer one is the sweeper's.
    due_in = 0.0
    if record.next_attempt_at is not None:
        due_in = (as_utc(record.next_attempt_at) - utcnow()).total_seconds()
    if due_in > SHORT_WAIT_SECONDS:
        return RecordResult(record_id, "deferred", "waiting for next_attempt_at")
    busy = BUSY_RETRY_SECONDS if record.status == RecordStatus.RUNNING.value else LOCKED_RETRY_SECONDS
    return RecordResult(record_id, "deferred", f"{record.status} and held by another transaction",
                        retry_in=max(busy, due_in))


@dataclass
class Prepared:
    """A record taken through fetch, counterparts, map and plan: what its write would do."""

    source: Any = None
    payload: Any = None  # the source as the ledger stores it, kept on the record when the path ends
    version: str | None = None
    outcome: MappedRecord | Hold | Nothing | None = None
    plan: Plan | None = None
    skipped: str | None = None  # why nothing is needed (source gone, unchanged version, before go-live)


def prepare(ctx: FlowContext, flow: Flow, record: SyncRecord, base: dict[str, Any]) -> Prepared:
    """Fetch, resolve counterparts, map and plan one record, writing nothing to the target.

    Shared by the record path and by dry runs (where the resolver creates nothing and the
    caller rolls the transaction back).
    """
    session = ctx.session
    handler = flow.handler
    out = Prepared()
    started = time.perf_counter()
    if record.edited_payload is not None:
        out.source = record.edited_payload
        audit.append(session, "fetched", "using the edited payload given to replay", source_payload=out.source, **base)
        out.version = record.source_version
    else:
        out.source = handler.fetch(ctx, record.source_id)
        if out.source is None:
            out.skipped = f"{flow.source} {flow.source_entity} {record.source_id} no longer exists"
            return out
        # Set on the record by the caller once the path ends, so the record's row is updated
        # once, not also by the first query's autoflush (see keep_payload).
        out.payload = ledger.as_payload(out.source)
        audit.append(session, "fetched", f"read {flow.source} {flow.source_entity} {record.source_id}",
                     source_payload=out.payload, duration_ms=(time.perf_counter() - started) * 1000, **base)
        out.version = handler.version(out.source)
        if out.version and record.written_version == out.version and record.target_id:
            out.skipped = f"version {out.version} already written as {record.target_id}"
            return out
    dated = handler.document_date(out.source)
    if ctx.config.before_go_live(dated):
        out.skipped = f"dated {str(dated)[:10]}, before the go-live date {ctx.config.go_live}; not moved"
        return out
    needs = handler.needs(ctx, out.source)
    if isinstance(needs, Hold):
        out.outcome = needs
        return out
    counterparts: dict[str, resolver.Counterpart] = {}
    for need in needs:
        resolved = resolver.resolve(ctx, ctx.pair.counterpart(need.kind), need)
        if isinstance(resolved, Hold):
            out.outcome = resolved
            return out
        counterparts[need.name] = resolved
    out.outcome = handler.map(ctx, out.source, counterparts)
    if isinstance(out.outcome, MappedRecord):
        for resolved in counterparts.values():
            out.outcome.decisions[:0] = resolved.decisions
        out.plan = handler.plan(ctx, out.outcome, record.target_id)
    return out


def _run_flow(session: Session, integration: Integration, pair: Pair, flow: Flow, record: SyncRecord) -> RecordResult:
    result = _run_flow_steps(session, integration, pair, flow, record)
    if result.outcome != "retry":  # the vendors answered: any outage this record met is over
        record.transient_failures, record.retrying_since = 0, None
    return result


def keep_payload(record: SyncRecord, prepared: Prepared | None) -> None:
    """The source as read this time becomes the record's payload (what replay and the console
    show). Assigned at the end of the path, with the record's other changes, so one UPDATE
    carries them all."""
    if prepared is not None and prepared.payload is not None:
        record.payload = prepared.payload


def _run_flow_steps(session: Session, integration: Integration, pair: Pair, flow: Flow, record: SyncRecord) -> RecordResult:
    handler = flow.handler
    base = {"integration_id": integration.id, "flow": flow.name, "sync_record_id": record.id}
    mapped_payload: Any = None
    prepared: Prepared | None = None
    try:
        ctx = _context(session, integration, pair, record=record)
        prepared = prepare(ctx, flow, record, base)
        if prepared.skipped:
            keep_payload(record, prepared)
            record.status = RecordStatus.SKIPPED.value
            audit.append(session, "skipped", prepared.skipped, target_id=record.target_id, **base)
            return RecordResult(record.id, "skipped", prepared.skipped)
        outcome = prepared.outcome
        if isinstance(outcome, Hold):
            keep_payload(record, prepared)
            releases.hold(session, record, outcome)
            audit.append(session, "held", outcome.reason, source_payload=record.payload,
                         decisions=outcome.decisions, **base)
            return RecordResult(record.id, "held", outcome.reason)
        if isinstance(outcome, Nothing):
            keep_payload(record, prepared)
            record.status = RecordStatus.SKIPPED.value
            audit.append(session, "skipped", outcome.reason, decisions=outcome.decisions, **base)
            return RecordResult(record.id, "skipped", outcome.reason)
        assert isinstance(outcome, MappedRecord) and prepared.plan is not None
        plan = prepared.plan
        mapped_payload = outcome.payload
        audit.append(session, "mapped", f"mapped to {flow.target} {flow.target_entity}; plan: {plan.describe()}",
                     mapped_payload=mapped_payload, decisions=outcome.decisions, **base)
        write_started = time.perf_counter()
        written = handler.write(ctx, outcome, plan, record.target_id)
        keep_payload(record, prepared)
        unchanged = written.action == "unchanged"
        record.status = RecordStatus.SKIPPED.value if unchanged else RecordStatus.WRITTEN.value
        record.target_id = written.target_id
        record.target_key = written.target_key or outcome.external_key or None
        record.written_version = prepared.version
        record.written_at = utcnow()
        record.last_error = None
        record.edited_payload = None
        changes = [{"field": k, "value": v[1], "reason": f"was {v[0]!r}"} for k, v in sorted(plan.changes.items())]
        audit.append(session, "skipped" if unchanged else "written",
                     f"{written.action} {flow.target} {flow.target_entity} {written.target_id}"
                     + (f" ({written.detail['reason']})" if written.detail.get("reason") else ""),
                     mapped_payload=mapped_payload, http_status=written.http_status, target_id=written.target_id,
                     decisions=(changes or None) if not unchanged else None,
                     duration_ms=(time.perf_counter() - write_started) * 1000, **base)
        return RecordResult(record.id, record.status, written.target_id)
    except Exception as error:
        kind = verdict(error)
        if kind == "internal":
            raise  # ours: the transaction rolls back and process_record retries it (see _unexpected)
        keep_payload(record, prepared)
        if kind == "transient":
            return _transient(session, record, error, mapped_payload, base)
        record.status = RecordStatus.FAILED.value
        record.last_error = str(error)
        audit.append(session, "auth_failed" if isinstance(error, AuthError) else "failed", f"{type(error).__name__}: {error}",
                     error=str(error), http_status=getattr(error, "status", None),
                     source_payload=record.payload, mapped_payload=mapped_payload, **base)
        log.warning("record failed", record_id=record.id, flow=flow.name, error=str(error))
        return RecordResult(record.id, "failed", str(error))


def _transient(session: Session, record: SyncRecord, error: Exception, mapped_payload: Any,
               base: dict[str, Any]) -> RecordResult:
    """A vendor outage, rate limit or timeout: back off up to the ceiling and keep the record
    pending for the retry window. It does not spend the delivery budget, which bounds crashes
    and poison payloads; the window bounds how long an outage may last."""
    settings = get_settings()
    now = utcnow()
    record.deliveries = max(0, record.deliveries - 1)
    record.transient_failures += 1
    record.retrying_since = record.retrying_since or now
    record.last_error = str(error)
    waited = (now - record.retrying_since).total_seconds()
    if waited > settings.retry_window_hours * 3600:
        record.status = RecordStatus.FAILED.value
        message = (f"the vendor kept failing for {waited / 3600:.1f} h (retry window {settings.retry_window_hours:g} h); "
                   f"last error: {error}; replay it once the vendor is back: mlconnector replay {record.id}")
        audit.append(session, "failed", message, error=str(error), http_status=getattr(error, "status", None),
                     source_payload=record.payload, mapped_payload=mapped_payload, **base)
        return RecordResult(record.id, "failed", message)
    delay = ledger.transient_delay(record.transient_failures, getattr(error, "retry_after", None),
                                   settings.retry_ceiling_seconds)
    record.status = RecordStatus.PENDING.value
    when = ledger.schedule_retry(record, delay, broker=not settings.embedded)
    audit.append(session, "retry", f"transient error, retrying at {when:%H:%M:%S} (in {delay:.0f}s; "
                 f"attempt {record.transient_failures} since {record.retrying_since:%H:%M:%S})", error=str(error),
                 http_status=getattr(error, "status", None), mapped_payload=mapped_payload, **base)
    return RecordResult(record.id, "retry", str(error), retry_in=delay)


# ---- inbound events ---------------------------------------------------------------------


SOURCE_ID_MAX = 200  # sync_records.source_id


def usable_id(value: str) -> str | None:
    """Why a source record id cannot be stored and processed (None when it can)."""
    if not value or len(value) > SOURCE_ID_MAX:
        return f"a record id of {len(value)} characters (1 to {SOURCE_ID_MAX} allowed)"
    if any(ch == "\x00" or not ch.isprintable() or 0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        return "a record id with control or broken Unicode characters"
    return None


def process_event(event_id: int) -> Enqueue:
    """Turn one stored webhook event into ledger rows for the flows that want it.

    An event that keeps failing for a reason of ours ends `failed` with that reason after
    the delivery limit, instead of coming back with every sweep."""
    with log_context(event_id=event_id):
        try:
            return _process_event(event_id)
        except Exception as error:
            return _event_failed(event_id, error)


def _event_failed(event_id: int, error: Exception) -> Enqueue:
    detail = f"{type(error).__name__}: {error}"
    log.warning("event processing failed", event_id=event_id, error=detail)
    with session_scope() as session:
        event = session.get(InboundEvent, event_id, with_for_update=True)
        if event is None or event.status != EventStatus.PENDING.value:
            return Enqueue()
        event.deliveries += 1
        event.error = detail
        base = {"integration_id": event.integration_id, "inbound_event_id": event.id}
        if verdict(error) == "permanent" or event.deliveries >= get_settings().max_deliveries:
            event.status = EventStatus.FAILED.value
            event.processed_at = utcnow()
            audit.append(session, "failed", f"event could not be processed: {detail}", error=detail, **base)
        else:
            event.enqueued_at = utcnow()  # the sweeper sends it again after its threshold
            audit.append(session, "retry", "event processing failed; retrying", error=detail, **base)
    return Enqueue()


def _process_event(event_id: int) -> Enqueue:
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
        ctx = _context(session, integration, pair)
        try:
            for flow in flows:
                sources = []
                for source in flow.handler.records_for_event(ctx, event.event_type, data):
                    problem = usable_id(source.source_id)
                    if problem:
                        audit.append(session, "failed", f"{event.event_type}: {problem}; nothing to sync for {flow.name}",
                                     flow=flow.name, **base)
                    else:
                        sources.append(source)
                ids = ledger.upsert_records(session, integration.id, flow.name, sources)
                for source in sources:
                    audit.append(session, "received", f"{event.event_type} -> {flow.name} {source.source_id}",
                                 flow=flow.name, source_payload=event.payload, **base)
                work.add_records(pair.queue, ids, _labels(session, flow.name, ids, sources))
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
    cursor: str | None = None
    released: int = 0
    enqueue: Enqueue = field(default_factory=Enqueue)


POLL_BATCH = 500  # ledger rows written per statement during a poll


def poll_flow(integration_id: str, flow_name: str, *, since: datetime | None = None,
              full: bool = False, on_found: Any = None) -> PollResult:
    """Poll one flow (see `_poll_flow`), every log line carrying the integration and flow."""
    with log_context(integration_id=integration_id, flow=flow_name):
        return _poll_flow(integration_id, flow_name, since=since, full=full, on_found=on_found)


def _poll_flow(integration_id: str, flow_name: str, *, since: datetime | None,
               full: bool, on_found: Any) -> PollResult:
    """Read what changed since the flow's position, upsert ledger rows, then move the position.

    The watermark row is locked for the poll (a duplicate tick skips). The position is
    persisted with the rows it covers, so every worker process reads from the same place:
    its time is when this poll started (never later), its cursor the last one the source
    yielded (sources yield in cursor order). The poll also checks the target-side
    conditions this flow's held records wait for, and releases those now met.
    """
    started = utcnow()
    result = PollResult(flow=flow_name)
    with session_scope() as session:
        mark = _lock_watermark(session, integration_id, flow_name)
        if mark is None:
            result.skipped_locked = True
            return result
        integration = get_integration(session, integration_id)
        pair = get_pair(integration.pair)
        flow = pair.flow(flow_name)
        ctx = _context(session, integration, pair)
        position = START if full else Position(at=since) if since else Position(at=mark.value, cursor=mark.cursor)
        batch: list[SourceRecord] = []
        last_cursor: str | None = None
        try:
            for source in flow.handler.changed(ctx, position, started):
                batch.append(source)
                if source.cursor is not None:
                    last_cursor = source.cursor
                result.found += 1
                if on_found:
                    on_found(1)
                if len(batch) >= POLL_BATCH:
                    ids = ledger.upsert_records(session, integration_id, flow_name, batch)
                    result.enqueue.add_records(pair.queue, ids, _labels(session, flow_name, ids, batch))
                    result.queued += len(ids)
                    batch.clear()
            ids = ledger.upsert_records(session, integration_id, flow_name, batch)
            result.enqueue.add_records(pair.queue, ids, _labels(session, flow_name, ids, batch))
            result.queued += len(ids)
            result.released = _release_met_conditions(ctx, flow)
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
        if position.at is None or mark.value is None or started > mark.value:
            mark.value = started
        if last_cursor is not None:
            mark.cursor = last_cursor
        mark.last_poll_at = started
        mark.last_poll_found = result.found
        mark.last_poll_error = None
        result.watermark = mark.value
        result.cursor = mark.cursor
        if result.found or result.released:  # an empty poll is told by its watermark row, not a trail row
            audit.append(session, "polled", f"found {result.found}, queued {result.queued}"
                         + (f", released {result.released} held" if result.released else ""),
                         integration_id=integration_id, flow=flow_name)
    return result


def _labels(session: Session, flow: str, ids: list[int], sources: list[SourceRecord]) -> dict[int, tuple[str, str]]:
    """(flow, source id) per queued record, from the rows the upsert just locked (no query)."""
    if not ids:
        return {}
    wanted = set(ids)
    return {obj.id: (flow, obj.source_id) for obj in session.identity_map.values()
            if isinstance(obj, SyncRecord) and obj.id in wanted}


def _release_met_conditions(ctx: FlowContext, flow: Flow) -> int:
    waiting = releases.waiting_conditions(ctx.session, ctx.integration.id, flow.name)
    if not waiting:
        return 0
    met = flow.handler.conditions_met(ctx, waiting)
    if not met:
        return 0
    return releases.release(ctx.session, ctx.integration.id, sorted(met, key=lambda c: c.key),
                            "now " + ", ".join(f"{c.entity} {c.target_id} {c.condition}" for c in sorted(met, key=lambda c: c.key)))


def _lock_watermark(session: Session, integration_id: str, flow: str) -> Watermark | None:
    """The flow's watermark row, locked for this poll; None while another poll holds it.

    Inserted on the flow's first poll only: an idle poll spends no write on it."""
    locked = select(Watermark).where(Watermark.integration_id == integration_id, Watermark.flow == flow) \
        .with_for_update(skip_locked=True)
    mark = session.scalars(locked).first()
    if mark is None and session.scalar(select(Watermark.flow).where(
            Watermark.integration_id == integration_id, Watermark.flow == flow)) is None:
        _ensure_watermark(session, integration_id, flow)
        mark = session.scalars(locked).first()
    return mark


def _ensure_watermark(session: Session, integration_id: str, flow: str) -> None:
    session.execute(
        upsert_into(session, Watermark).values(integration_id=integration_id, flow=flow, last_poll_found=0)
        .on_conflict_do_nothing(index_elements=["integration_id", "flow"])
    )


# ---- holds and replays ------------------------------------------------------------------


@dataclass
class PlanLine:
    """One record of a dry run: what its write would do, or why nothing would happen."""

    flow: str
    source_id: str
    action: str  # create | update | complete | unchanged | hold | skip | error
    detail: str


def plan_flow(integration_id: str, flow_name: str, *, since: datetime | None = None, full: bool = False,
              limit: int | None = None) -> list[PlanLine]:
    """What a sync of this flow would do, record by record, without writing anything.

    Runs the same fetch, counterpart, map and plan steps as the record path, in a
    transaction that is always rolled back; the resolver creates nothing and links nothing
    in a dry run, and no handler `write` is called.
    """
    lines: list[PlanLine] = []
    session = _session_for_dry_run()
    try:
        integration = get_integration(session, integration_id)
        pair = get_pair(integration.pair)
        flow = pair.flow(flow_name)
        ctx = _context(session, integration, pair, dry_run=True)
        mark = session.get(Watermark, (integration_id, flow_name))
        position = (START if full or mark is None else Position(at=since) if since
                    else Position(at=mark.value, cursor=mark.cursor))
        for found in flow.handler.changed(ctx, position, utcnow()):
            record = session.scalar(select(SyncRecord).where(
                SyncRecord.integration_id == integration_id, SyncRecord.flow == flow_name,
                SyncRecord.source_id == found.source_id)) or SyncRecord(
                integration_id=integration_id, flow=flow_name, source_id=found.source_id, deliveries=0)
            lines.append(_plan_line(ctx, flow, record))
            if limit and len(lines) >= limit:
                break
    finally:
        session.rollback()
        session.close()
    return lines


def plan_records(record_ids: list[int], *, before: Callable[[Session], None] | None = None) -> list[PlanLine]:
    """What replaying these records would write, record by record, writing nothing.

    `before` changes the rolled-back session first: a preview of what a config change or a
    link would release plans with that change in place."""
    lines: list[PlanLine] = []
    session = _session_for_dry_run()
    try:
        if before is not None:
            before(session)
        contexts: dict[str, FlowContext] = {}
        for record_id in record_ids:
            record = session.get(SyncRecord, record_id)
            if record is None:
                continue
            if record.integration_id not in contexts:
                contexts[record.integration_id] = context_for(session, record.integration_id, dry_run=True)
            ctx = contexts[record.integration_id]
            record.written_version = None  # a replay writes again whatever version was written
            lines.append(_plan_line(ctx, ctx.pair.flow(record.flow), record))
    finally:
        session.rollback()
        session.close()
    return lines


def _session_for_dry_run() -> Session:
    from mlconnector.db.session import _factory, get_engine

    return _factory(get_engine())()


def _plan_line(ctx: FlowContext, flow: Flow, record: SyncRecord) -> PlanLine:
    base = {"integration_id": ctx.integration.id, "flow": flow.name}
    try:
        prepared = prepare(ctx, flow, record, base)
    except Exception as error:  # a dry run reports every record, whatever one of them does
        return PlanLine(flow.name, record.source_id, "error", f"{type(error).__name__}: {error}")
    if prepared.skipped:
        return PlanLine(flow.name, record.source_id, "skip", prepared.skipped)
    outcome = prepared.outcome
    if isinstance(outcome, Hold):
        return PlanLine(flow.name, record.source_id, "hold", outcome.reason)
    if isinstance(outcome, Nothing):
        return PlanLine(flow.name, record.source_id, "skip", outcome.reason)
    assert prepared.plan is not None
    made = [d for d in (outcome.decisions if outcome else []) if "would be created" in d.reason]
    detail = prepared.plan.describe()
    if made:
        detail += "; first creates " + ", ".join(f"{d.field} {d.value!r}" for d in made)
    return PlanLine(flow.name, record.source_id, prepared.plan.action, detail)


def replay(session: Session, record: SyncRecord, *, edited_payload: dict[str, Any] | None = None,
           actor: str | None = None, note: str = "") -> Enqueue:
    work = Enqueue()
    integration = get_integration(session, record.integration_id)
    pair = get_pair(integration.pair)
    previous = record.status
    ledger.requeue(session, record, reason="replay")
    if record.status == RecordStatus.PENDING.value:
        record.written_version = None if previous in ledger.PARKED else record.written_version
    if edited_payload is not None:
        record.edited_payload = edited_payload
    audit.append(session, "replay", f"replay requested (was {previous})" + (" with an edited payload" if edited_payload else "")
                 + (f": {note}" if note else ""), integration_id=record.integration_id, flow=record.flow,
                 sync_record_id=record.id, source_payload=edited_payload, actor=actor)
    work.add_records(pair.queue, [record.id])
    return work


# ---- interrupted work ---------------------------------------------------------------------


def orphans_to_pending(integration_id: str) -> int:
    """Records left `running` by a process that is gone (a Ctrl-C in the embedded default,
    where this process is the only worker) go back to pending, with an audit row."""
    with session_scope() as session:
        records = list(session.scalars(select(SyncRecord).where(
            SyncRecord.integration_id == integration_id, SyncRecord.status == RecordStatus.RUNNING.value)
            .with_for_update()))
        for record in records:
            record.status = RecordStatus.PENDING.value
            audit.append(session, "interrupted", "the run was interrupted; back to pending", integration_id=integration_id,
                         flow=record.flow, sync_record_id=record.id)
    return len(records)


def pending_work(integration_id: str, flows: list[str] | None = None) -> Enqueue:
    """Every pending record of this integration that is due now, to send at once (a `sync`
    resumes interrupted work instead of waiting for the sweeper's threshold)."""
    work = Enqueue()
    now = utcnow()
    with session_scope() as session:
        pair = get_pair(get_integration(session, integration_id).pair)
        query = select(SyncRecord.id).where(
            SyncRecord.integration_id == integration_id, SyncRecord.status == RecordStatus.PENDING.value,
            or_(SyncRecord.next_attempt_at.is_(None), SyncRecord.next_attempt_at <= now)).order_by(SyncRecord.id)
        if flows:
            query = query.where(SyncRecord.flow.in_(flows))
        ids = list(session.scalars(query))
        if ids:
            session.execute(update(SyncRecord).where(SyncRecord.id.in_(ids)).values(enqueued_at=now)
                            .execution_options(synchronize_session=False))
        work.add_records(pair.queue, ids)
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
            result.enqueue.add_records(pair.queue, [record.id], {record.id: (record.flow, record.source_id)})
            result.records += 1
    return result
