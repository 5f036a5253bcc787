"""Holding records and releasing them: the database side of typed holds (see holds.py)."""

from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mlconnector import audit, ledger
from mlconnector.db.models import HoldRelease, RecordStatus, SyncRecord
from mlconnector.holds import ConfigNeeded, Hold, Release, TargetCondition, config_value, parse_release
from mlconnector.outbox import Enqueue, publish_after_commit


def hold(session: Session, record: SyncRecord, held: Hold) -> None:
    """Park `record` with its reason, and note every key that releases it."""
    record.status = RecordStatus.HELD.value
    record.hold_reason = held.reason
    record.hold_key = held.key
    session.execute(delete(HoldRelease).where(HoldRelease.sync_record_id == record.id))
    keys = dict.fromkeys(r.key for r in held.releases)
    if keys:
        session.add_all(HoldRelease(sync_record_id=record.id, release_key=key, integration_id=record.integration_id)
                        for key in keys)


def held_for(session: Session, integration_id: str, keys: Iterable[str]) -> list[SyncRecord]:
    """Held records of this integration that any of `keys` releases (locked for the update)."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return []
    ids = select(HoldRelease.sync_record_id).where(HoldRelease.integration_id == integration_id,
                                                   HoldRelease.release_key.in_(keys))
    return list(session.scalars(
        select(SyncRecord).where(SyncRecord.id.in_(ids), SyncRecord.status == RecordStatus.HELD.value)
        .order_by(SyncRecord.id).with_for_update()
    ))


def release(session: Session, integration_id: str, releases: Iterable[Release], reason: str) -> int:
    """Re-queue exactly the records these releases free, after this transaction commits."""
    records = held_for(session, integration_id, (r.key for r in releases))
    return _requeue(session, integration_id, records, reason)


def release_config_changes(session: Session, integration_id: str, old: dict[str, Any], new: dict[str, Any]) -> int:
    """A config change releases the records waiting on a key whose value it changed."""
    changed = changed_config_keys(session, integration_id, old, new)
    if not changed:
        return 0
    return release(session, integration_id, changed,
                   "integration config changed: " + ", ".join(sorted(c.path for c in changed)))


def changed_config_keys(session: Session, integration_id: str, old: dict[str, Any], new: dict[str, Any]) -> list[ConfigNeeded]:
    """The config keys held records wait on whose value this change moves."""
    rows = session.execute(
        select(HoldRelease.release_key).where(HoldRelease.integration_id == integration_id,
                                              HoldRelease.release_key.startswith("config:")).distinct()
    ).scalars().all()
    changed = []
    for key in rows:
        wanted = parse_release(key)
        if isinstance(wanted, ConfigNeeded) and config_value(old, wanted.path) != config_value(new, wanted.path):
            changed.append(wanted)
    return changed


def would_release(session: Session, integration_id: str, releases: Iterable[Release]) -> list[int]:
    """The held records these releases would free (read only, for a preview)."""
    keys = list(dict.fromkeys(r.key for r in releases))
    if not keys:
        return []
    ids = select(HoldRelease.sync_record_id).where(HoldRelease.integration_id == integration_id,
                                                   HoldRelease.release_key.in_(keys))
    return list(session.scalars(select(SyncRecord.id).where(SyncRecord.id.in_(ids), SyncRecord.status == RecordStatus.HELD.value)
                                .order_by(SyncRecord.id)))


def waiting_conditions(session: Session, integration_id: str, flow: str) -> list[TargetCondition]:
    """The target-side conditions this flow's held records wait for."""
    keys = session.execute(
        select(HoldRelease.release_key).join(SyncRecord, SyncRecord.id == HoldRelease.sync_record_id)
        .where(HoldRelease.integration_id == integration_id, HoldRelease.release_key.startswith("target:"),
               SyncRecord.flow == flow, SyncRecord.status == RecordStatus.HELD.value).distinct()
    ).scalars().all()
    return [c for c in (parse_release(k) for k in keys) if isinstance(c, TargetCondition)]


def _requeue(session: Session, integration_id: str, records: list[SyncRecord], reason: str) -> int:
    if not records:
        return 0
    from mlconnector.flows import get_pair
    from mlconnector.integrations import get_integration

    queue = get_pair(get_integration(session, integration_id).pair).queue
    for record in records:
        ledger.requeue(session, record, reason=reason)
        audit.append(session, "requeued", reason, integration_id=integration_id, flow=record.flow,
                     sync_record_id=record.id)
    publish_after_commit(session, Enqueue(records={queue: [r.id for r in records]},
                                          labels={r.id: (r.flow, r.source_id) for r in records}))
    return len(records)
