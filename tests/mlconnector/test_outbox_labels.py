"""A backfill's queue does not hold every record's label in memory: past LABELS_KEPT the
labels are read back from the ledger as the records are sent, and every task still carries
its flow and source id."""

from __future__ import annotations

from typing import Any

from mlconnector.flows import SourceRecord
from mlconnector.outbox import LABELS_KEPT, Enqueue


def test_a_small_batch_keeps_its_labels_and_a_large_one_drops_them() -> None:
    work = Enqueue()
    work.add_records("q", [1, 2], {1: ("bills", "B-1"), 2: ("bills", "B-2")})
    assert work.labels == {1: ("bills", "B-1"), 2: ("bills", "B-2")} and not work.labels_from_ledger
    many = list(range(10, 10 + LABELS_KEPT + 1))
    work.add_records("q", many, {i: ("bills", f"B-{i}") for i in many})
    assert work.labels == {} and work.labels_from_ledger
    assert work.records["q"] == [1, 2, *many]
    merged = Enqueue(labels={5: ("bills", "B-5")}, records={"q": [5]})
    merged.extend(work)
    assert merged.labels_from_ledger and merged.labels == {} and merged.record_count == 3 + len(many)


def test_labels_read_back_from_the_ledger_name_every_task(configure: Any, fresh_pg: str, monkeypatch: Any) -> None:
    from mlconnector import ledger, tasks
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import create_integration

    configure(fresh_pg)
    count = LABELS_KEPT + 50
    with session_scope() as session:
        create_integration(session, "acme", "counter-test", {"systems": {"counter": {"base_url": "http://127.0.0.1:9"}}})
        session.flush()
        ids = ledger.upsert_records(session, "acme", "items", [SourceRecord(f"INV-{n}", "v1") for n in range(count)])
    work = Enqueue()
    for start in range(0, count, 500):  # as a poll adds its batches
        page = ids[start:start + 500]
        work.add_records("counter-test", page, {i: ("items", "unused") for i in page})
    assert work.labels_from_ledger
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(tasks.process_record, "apply_async", lambda **kwargs: sent.append(kwargs))
    tasks._publish(work, producer=None)
    assert [s["args"] for s in sent] == [(i,) for i in ids]
    assert {s["shadow"] for s in sent} == {"counter-test.items"}
    assert sent[0]["argsrepr"] == f"({ids[0]}, 'INV-0')" and sent[-1]["argsrepr"] == f"({ids[-1]}, 'INV-{count - 1}')"


def test_a_task_that_sends_records_keeps_no_handle_for_each(configure: Any) -> None:
    """Celery would otherwise append one result handle per task sent to the sender's request,
    so a backfill's poll grew with every record it queued."""
    from mlconnector import tasks
    from mlconnector.celery_app import app

    configure()
    engine_tasks = [t for name, t in app.tasks.items() if name.startswith("mlconnector.")]
    assert engine_tasks and all(t.trail is False for t in engine_tasks)
    tasks.poll.push_request(id="a-poll")
    try:
        tasks.poll.add_trail(object())
        assert tasks.poll.request.children == []
    finally:
        tasks.poll.pop_request()
