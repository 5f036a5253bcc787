"""Beat's poll plan over real PostgreSQL (and the scheduler over a real Redis broker):
polls spread over their interval, the schedule read incrementally, changes picked up."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import timedelta
from typing import Any

from tests.conftest import wait_until

PAIR = "counter-test"
EVERY = 60.0


def _config(every: float = EVERY) -> dict[str, Any]:
    return {"systems": {"counter": {"base_url": "http://127.0.0.1:9"}}, "poll_seconds": {"items": every}}


def _tenants(count: int, *, age: timedelta = timedelta(hours=1)) -> None:
    """`count` enabled integrations polling `items`, last changed `age` ago."""
    from sqlalchemy import update

    from mlconnector.db.models import Integration, utcnow
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import create_integration

    with session_scope() as session:
        for index in range(count):
            create_integration(session, f"t{index:04d}", PAIR, _config())
        session.flush()
        session.execute(update(Integration).values(updated_at=utcnow() - age))


def test_a_thousand_tenants_poll_spread_over_the_interval_never_in_one_burst(configure, fresh_pg: str) -> None:
    from mlconnector.db.session import session_scope
    from mlconnector.poll_schedule import PollPlan

    configure(fresh_pg)
    _tenants(1000)
    plan = PollPlan()
    start = 1_000_000.0
    with session_scope() as session:
        assert plan.refresh(session, start) == 1000
    assert len(plan) == 1000
    per_second: Counter[int] = Counter()
    polled: Counter[str] = Counter()
    for second in range(1, int(2 * EVERY) + 1):
        for spec in plan.due(start + second):
            per_second[second] += 1
            polled[spec.integration_id] += 1
    assert set(polled.values()) == {2}  # every tenant, exactly once per interval
    mean = 1000 / EVERY
    assert max(per_second.values()) <= 2.5 * mean  # spread: a burst would put all 1000 in one second
    assert len(per_second) >= EVERY * 1.9  # and nearly every second has some


def test_the_schedule_is_read_incrementally_and_follows_changes(configure, fresh_pg: str) -> None:
    from sqlalchemy import delete

    from mlconnector.db.models import Integration
    from mlconnector.db.session import session_scope
    from mlconnector.poll_schedule import PollPlan

    configure(fresh_pg)
    _tenants(300)
    plan = PollPlan()
    now = time.time()
    with session_scope() as session:
        assert plan.refresh(session, now) == 300
    with session_scope() as session:
        assert plan.refresh(session, now + 60) == 0  # nothing changed: no integration row read
    with session_scope() as session:
        session.get(Integration, "t0007").config = _config(every=30.0)
        session.get(Integration, "t0008").enabled = False
    with session_scope() as session:
        assert plan.refresh(session, now + 120) == 2
    every = {spec.integration_id: spec.every for spec in plan.all()}
    assert every["t0007"] == 30.0 and "t0008" not in every and len(every) == 299
    with session_scope() as session:  # removed outright: the count notices, one full read follows
        session.execute(delete(Integration).where(Integration.id == "t0009"))
    with session_scope() as session:
        plan.refresh(session, now + 180)
    assert "t0009" not in {spec.integration_id for spec in plan.all()} and len(plan) == 298
    overdue = plan.due(now + 180)  # what fell due since the last refresh goes once, not once per missed time
    assert len(overdue) == len({spec.name for spec in overdue})
    polled = Counter(spec.integration_id for second in range(1, 61) for spec in plan.due(now + 180 + second))
    assert polled["t0007"] == 2 and polled["t0001"] == 1 and "t0008" not in polled


def test_beat_sends_each_poll_to_its_pair_queue_on_the_broker(configure, fresh_pg: str, redis_url: str) -> None:
    import redis

    from mlconnector.celery_app import IntegrationScheduler, app
    from mlconnector.db.session import session_scope
    from mlconnector.flows import get_pair
    from mlconnector.integrations import create_integration

    configure(fresh_pg, broker_url=redis_url)
    broker = redis.Redis.from_url(redis_url)
    queue = get_pair(PAIR).queue
    broker.delete(queue)
    with session_scope() as session:
        create_integration(session, "acme", PAIR, _config(every=1.0))
    scheduler = IntegrationScheduler(app=app)
    try:
        def two_sent() -> bool:
            time.sleep(min(scheduler.tick(), 0.2))
            return broker.llen(queue) >= 2

        wait_until(two_sent, timeout=10, interval=0, message="beat sent no polls")
    finally:
        scheduler.close()
    message = json.loads(broker.lindex(queue, 0))
    assert message["headers"]["task"] == "mlconnector.poll"
    assert message["headers"]["argsrepr"] == "('acme', 'items')"
    broker.delete(queue)


def test_an_empty_poll_writes_its_watermark_row_and_no_trail_row(configure, fresh_pg: str) -> None:
    from sqlalchemy import func, select

    from mlconnector import engine
    from mlconnector.db.models import AuditEvent, Watermark
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import create_integration

    configure(fresh_pg)
    with session_scope() as session:
        create_integration(session, "acme", PAIR, _config())
    first = engine.poll_flow("acme", "items")
    second = engine.poll_flow("acme", "items")
    assert first.found == second.found == 0 and not second.skipped_locked
    with session_scope() as session:
        mark = session.get(Watermark, ("acme", "items"))
        assert mark is not None and mark.last_poll_at is not None and mark.last_poll_found == 0
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 0
