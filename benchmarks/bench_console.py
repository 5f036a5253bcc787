"""Console page times over a ledger of 100,000 records, as ratios against a bare Flask route
served by the same app in the same run.

Pages: the overview, the exceptions queue (first page, the page halfway through the keyset, filtered
by integration and flow, a search by document number) and one record with its trail. Each
request goes through the whole stack a person's click does: the session check, CSRF-ready
forms, the queries, the templates. The query plan of a deep queue page is recorded too, to
show it reads the partial index of migration 0008 rather than sorting the ledger.

    python -m benchmarks.bench_console [rows]
"""

from __future__ import annotations

import json
import re
import statistics
import sys
import time
from datetime import timedelta
from typing import Any, Callable

from benchmarks import fleet
from benchmarks.common import write_result

INSERT_BATCH = 10_000  # rows per INSERT round trip while seeding
REPEATS = 30  # requests per page; the median is reported
OPEN_SHARE = (0.06, 0.04)  # held, failed: a ledger with a real backlog (6% + 4%)
FLOWS = ("inventory_bills", "vendors", "ap_payments")
PASSWORD = "benchmark password 1"


def _seed(rows: int) -> tuple[int, str]:
    """`rows` sync records over 30 days for two integrations; returns a held record id and its number."""
    from sqlalchemy import insert

    from mlconnector.db.models import AuditEvent, Integration, SyncRecord, utcnow
    from mlconnector.db.session import session_scope

    now = utcnow()
    with session_scope() as session:
        for name in ("acme", "globex"):
            session.add(Integration(id=name, pair="servicetitan-epicor", name=name, enabled=True, config={}))
    held_every, failed_every = round(1 / OPEN_SHARE[0]), round(1 / OPEN_SHARE[1])
    batch: list[dict[str, Any]] = []
    with session_scope() as session:
        for index in range(rows):
            status = ("held" if index % held_every == 0 else "failed" if index % failed_every == 1 else "written")
            batch.append({
                "integration_id": "acme" if index % 3 else "globex", "flow": FLOWS[index % len(FLOWS)],
                "source_id": str(100_000 + index), "status": status, "deliveries": 1,
                "payload": {"id": 100_000 + index, "referenceNumber": f"INV-{index:07d}", "vendor": {"name": f"Vendor {index % 400}"},
                            "total": f"{(index % 5000) + 0.5:.2f}"},
                "hold_reason": "vendor 'X' has no epicor vendor; link it" if status == "held" else None,
                "last_error": "HTTP 400: GL account inactive" if status == "failed" else None,
                "target_id": f"T{index}" if status == "written" else None,
                "created_at": now - timedelta(seconds=index * 26), "updated_at": now - timedelta(seconds=index * 26),
            })
            if len(batch) >= INSERT_BATCH:
                session.execute(insert(SyncRecord), batch)
                batch = []
        if batch:
            session.execute(insert(SyncRecord), batch)
    with session_scope() as session:
        from sqlalchemy import select

        record_id, number = session.execute(
            select(SyncRecord.id, SyncRecord.source_id).where(SyncRecord.status == "held").order_by(SyncRecord.id.desc())
            .limit(1)).one()
        for step in range(12):
            session.add(AuditEvent(integration_id="acme", flow="inventory_bills", sync_record_id=record_id,
                                   kind="held" if step % 2 else "requeued", message=f"step {step}"))
        session.execute(__import__("sqlalchemy").text("ANALYZE"))
    return record_id, f"INV-{int(number) - 100_000:07d}"


def _timed(get: Callable[[], Any]) -> float:
    """Median milliseconds of REPEATS requests (after one warm-up), each checked for a 200."""
    response = get()
    assert response.status_code == 200, response.status_code
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        response = get()
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
    return statistics.median(times)


def _deep_cursor(client: Any, pages: int) -> str:
    cursor = ""
    for _ in range(pages):
        html = client.get("/console/exceptions", query_string={"after": cursor} if cursor else {}).get_data(as_text=True)
        found = re.search(r'id="next-page" href="[^"]*after=([^"&]+)', html)
        assert found, "the queue ended before the deep page"
        from urllib.parse import unquote

        cursor = unquote(found.group(1))
    return cursor


def _plan_uses_index(cursor: str) -> bool:
    from sqlalchemy import text

    from mlconnector.db.session import session_scope

    at, _, ident = cursor.rpartition(",")
    with session_scope() as session:
        plan = session.execute(text(
            "EXPLAIN SELECT id FROM sync_records WHERE status IN ('held', 'failed') AND (updated_at, id) > (:at, :id) "
            "ORDER BY updated_at, id LIMIT 51"), {"at": at, "id": int(ident)}).scalars().all()
    return any("ix_sync_records_open" in line for line in plan)


def main(rows: int = 100_000) -> dict[str, Any]:
    database_url = fleet.create_database()
    try:
        fleet.configure(database_url)
        import os

        os.environ["MLCONNECTOR_CONSOLE_COOKIE_SECURE"] = "false"
        os.environ["MLCONNECTOR_CONSOLE_SIGNIN_LIMIT"] = "1000 per minute"
        fleet.reset_process_state()
        started = time.perf_counter()
        record_id, number = _seed(rows)
        seed_s = time.perf_counter() - started
        from mlconnector.db.session import session_scope
        from mlconnector.users import NewUser, Role, add_user
        from mlconnector.web import create_app

        with session_scope() as session:
            add_user(session, NewUser(username="bench", password=PASSWORD, role=Role.OPERATOR), actor="bench")
        app = create_app()

        @app.get("/bench-bare")
        def bare() -> str:
            return "ok"

        client = app.test_client()
        page = client.get("/console/signin").get_data(as_text=True)
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        assert client.post("/console/signin", data={"username": "bench", "password": PASSWORD,
                                                     "csrf_token": token}).status_code == 302
        from mlconnector.console.queue import PAGE_SIZE

        depth = max(1, int(rows * sum(OPEN_SHARE) / PAGE_SIZE) // 2)  # halfway through the queue
        deep = _deep_cursor(client, depth)
        figures: dict[str, Any] = {"rows": rows, "seed_s": round(seed_s, 1), "repeats": REPEATS, "deep_page": depth + 1}
        figures["bare_ms"] = _timed(lambda: client.get("/bench-bare"))
        pages = {
            "overview": lambda: client.get("/console/"),
            "queue_first": lambda: client.get("/console/exceptions"),
            "queue_deep": lambda: client.get("/console/exceptions", query_string={"after": deep}),
            "queue_filtered": lambda: client.get("/console/exceptions", query_string={"integration": "acme",
                                                                                     "flow": "inventory_bills"}),
            "queue_search": lambda: client.get("/console/exceptions", query_string={"document": number}),
            "record": lambda: client.get(f"/console/records/{record_id}"),
        }
        for name, get in pages.items():
            figures[f"{name}_ms"] = round(_timed(get), 2)
            figures[f"{name}_vs_bare"] = round(figures[f"{name}_ms"] / figures["bare_ms"], 1)
        figures["bare_ms"] = round(figures["bare_ms"], 3)
        figures["queue_deep_vs_first"] = round(figures["queue_deep_ms"] / figures["queue_first_ms"], 2)
        figures["deep_page_uses_index"] = _plan_uses_index(deep)
        return write_result("console", figures)
    finally:
        fleet.reset_process_state()
        fleet.drop_database(database_url)


if __name__ == "__main__":
    result = main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}))
