"""Work to publish, sent only after the transaction that made it durable commits.

Anything inside a transaction that wants follow-up work (a link that releases held
records, a config change, a poll) adds it to the session's outbox; one listener on every
session sends it after commit and drops it on rollback. Nothing is queued that is not in
the database, and no module registers listeners of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import event
from sqlalchemy.orm import Session

_OUTBOX = "mlconnector.outbox"


LABELS_KEPT = 2000  # labels held in memory; a larger batch reads them back from the ledger when sent


@dataclass
class Enqueue:
    """Records (per queue) and events to send to the broker.

    Each record's label (flow, source id: how Flower names its task) is kept with it while
    the batch is small. A backfill's poll queues hundreds of thousands; their labels would
    grow the poll's memory with the backfill (some 200 bytes a record), so past LABELS_KEPT
    they are dropped and read back from the ledger, a page at a time, as they are sent.
    """

    records: dict[str, list[int]] = field(default_factory=dict)  # queue -> record ids
    events: list[int] = field(default_factory=list)
    countdown: float | None = None
    labels: dict[int, tuple[str, str]] = field(default_factory=dict)  # record id -> (flow, source id), for Flower
    labels_from_ledger: bool = False

    def add_records(self, queue: str, ids: list[int], labels: dict[int, tuple[str, str]] | None = None) -> None:
        if ids:
            self.records.setdefault(queue, []).extend(ids)
        if labels and not self.labels_from_ledger:
            self.labels.update(labels)
            if len(self.labels) > LABELS_KEPT:
                self.labels.clear()
                self.labels_from_ledger = True

    def extend(self, other: "Enqueue") -> None:
        for queue, ids in other.records.items():
            self.add_records(queue, ids)
        self.events.extend(other.events)
        if other.labels_from_ledger:
            self.labels.clear()
            self.labels_from_ledger = True
        elif not self.labels_from_ledger:
            self.labels.update(other.labels)

    @property
    def empty(self) -> bool:
        return not self.records and not self.events

    @property
    def record_count(self) -> int:
        return sum(len(ids) for ids in self.records.values())


def publish_after_commit(session: Session, work: Enqueue) -> None:
    """Send `work` once `session` commits (never if it rolls back)."""
    if work.empty:
        return
    session.info.setdefault(_OUTBOX, Enqueue()).extend(work)


def pending(session: Session) -> Enqueue:
    """What this session will publish at commit (for callers that report counts)."""
    return session.info.get(_OUTBOX) or Enqueue()


@event.listens_for(Session, "after_commit")
def _send_after_commit(session: Session) -> None:
    work = session.info.pop(_OUTBOX, None)
    if work is not None and not work.empty:
        from mlconnector.tasks import send

        send(work)


@event.listens_for(Session, "after_rollback")
def _drop_after_rollback(session: Session) -> None:
    session.info.pop(_OUTBOX, None)
