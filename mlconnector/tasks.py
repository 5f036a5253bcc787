"""Celery tasks. `EngineTask` carries the cross-cutting work (logging context, metrics,
turning `RetryLater` into a short Celery retry, sending follow-up work only after commit),
so each task body is one call into the engine.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from mlconnector import engine
from mlconnector.celery_app import DEFAULT_QUEUE, app, broker_countdown, home_queue
from mlconnector.logging import get_logger

log = get_logger(__name__)


class EngineTask(Task):
    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    max_retries = None  # the delivery counter in the database is the real limit
    # Celery's default keeps a result handle for every task a task sends, on the sender's
    # request, until it ends: a backfill's poll sending 100,000 records held 90 MB of them.
    # Nothing reads them (results are ignored), so none is kept.
    trail = False

    def apply_async(self, *args: Any, **options: Any) -> Any:
        """Every send of a fleet task, a retry's included (Celery's retry sends through here):
        a retry goes back to the queue it was delivered from (see celery_app.home_queue), and
        a countdown is one the broker can carry (see celery_app.broker_countdown)."""
        if not options.get("queue"):
            home = home_queue(options.get("routing_key"))
            if home:
                options["queue"] = home
                options.pop("exchange", None)  # the queue's own, not the delay level's it came through
                options.pop("routing_key", None)
        if options.get("countdown"):
            options["countdown"] = broker_countdown(options["countdown"])
        return super().apply_async(*args, **options)

    def retry_later(self, error: engine.RetryLater) -> Any:
        """A short Celery countdown; long waits are left to the sweeper via next_attempt_at."""
        if self.app.conf.task_always_eager:
            # Embedded default: nothing waits in a broker, the record stays pending for the sweeper.
            log.info("retry deferred to sweeper", detail=str(error), seconds=error.seconds)
            return None
        if error.seconds > 60:
            return None
        raise self.retry(countdown=error.seconds, exc=error)


PUBLISH_BATCH = 500  # messages per broker round trip when a poll or a release sends many


def send(work: engine.Enqueue) -> None:
    """Publish follow-up work. Called after commit, so everything sent is already durable.

    One producer for the lot, its messages buffered and sent PUBLISH_BATCH at a time (one
    Redis pipeline each) instead of one connection checkout and round trip per message.
    If publishing fails part way, what was not sent is still pending in the ledger and the
    sweeper sends it.
    """
    if work.empty:
        return
    if app.conf.task_always_eager:
        _publish(work, None)
        return
    with app.producer_or_acquire() as producer:
        with producer.batch(max_size=PUBLISH_BATCH):
            _publish(work, producer)


def _publish(work: engine.Enqueue, producer: Any) -> None:
    for queue, ids in work.records.items():
        for start in range(0, len(ids), PUBLISH_BATCH):
            page = ids[start:start + PUBLISH_BATCH]
            labels = _ledger_labels(page) if work.labels_from_ledger else work.labels
            for record_id in page:
                label = labels.get(record_id)
                # Flower lists the task as "<pair>.<flow>" with the source record it carries.
                extra = {"shadow": f"{queue}.{label[0]}", "argsrepr": f"({record_id}, {label[1]!r})"} if label else {}
                process_record.apply_async(args=(record_id,), queue=queue, countdown=work.countdown, producer=producer,
                                           **extra)
    for event_id in work.events:
        process_event.apply_async(args=(event_id,), queue=DEFAULT_QUEUE, countdown=work.countdown, producer=producer)


def _ledger_labels(ids: list[int]) -> dict[int, tuple[str, str]]:
    """(flow, source id) of these records, read from the ledger (one statement)."""
    from sqlalchemy import select

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        rows = session.execute(select(SyncRecord.id, SyncRecord.flow, SyncRecord.source_id).where(SyncRecord.id.in_(ids)))
        return {record_id: (flow, source_id) for record_id, flow, source_id in rows}


@app.task(base=EngineTask, bind=True, name="mlconnector.process_record")
def process_record(self: EngineTask, record_id: int) -> dict[str, Any]:
    try:
        result = engine.process_record(record_id)
    except engine.RetryLater as error:
        self.retry_later(error)
        return {"record_id": record_id, "outcome": "retry", "detail": str(error)}
    if result.outcome == "deferred" and result.retry_in and not self.app.conf.task_always_eager:
        # Doubling, up to a minute: a record left 'running' by a lost worker waits for the sweeper
        # without this task spinning every two seconds meanwhile.
        raise self.retry(countdown=min(60.0, result.retry_in * 2 ** min(self.request.retries or 0, 5)))
    if result.outcome == "failed" and not self.app.conf.task_always_eager:
        # A record that ended failed is a failed task in Flower, with the reason, not a green row.
        raise RecordFailed(f"record {record_id} failed: {result.detail}")
    return {"record_id": record_id, "outcome": result.outcome, "detail": result.detail}


class RecordFailed(Exception):
    """The record ended `failed` (its trail says why; `mlconnector records list` shows it)."""


@app.task(base=EngineTask, bind=True, name="mlconnector.process_event")
def process_event(self: EngineTask, event_id: int) -> dict[str, Any]:
    work = engine.process_event(event_id)
    if work.events:  # the event's records could not be resolved yet (vendor busy)
        if self.app.conf.task_always_eager:
            return {"event_id": event_id, "records": 0, "deferred": True}
        raise self.retry(countdown=work.countdown or 5)
    send(work)
    return {"event_id": event_id, "records": sum(len(v) for v in work.records.values())}


@app.task(base=EngineTask, bind=True, name="mlconnector.poll")
def poll(self: EngineTask, integration_id: str, flow: str) -> dict[str, Any]:
    result = engine.poll_flow(integration_id, flow)
    send(result.enqueue)
    return {"flow": flow, "found": result.found, "queued": result.queued, "skipped_locked": result.skipped_locked}


@app.task(base=EngineTask, bind=True, name="mlconnector.sweep")
def sweep(self: EngineTask) -> dict[str, Any]:
    result = engine.sweep()
    send(result.enqueue)
    if result.events or result.records or result.failed:
        log.info("sweeper", events=result.events, records=result.records, failed=result.failed)
    return {"events": result.events, "records": result.records, "failed": result.failed}


@app.task(base=EngineTask, bind=True, name="mlconnector.send_alerts")
def send_alerts(self: EngineTask) -> dict[str, Any]:
    from mlconnector import alerts

    return alerts.send_pending()
