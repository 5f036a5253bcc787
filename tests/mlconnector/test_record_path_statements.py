"""What one delivery asks of PostgreSQL: the hot path's statements and commits, counted on a
real database so a change that adds a round trip per record is seen here first."""

from __future__ import annotations

from typing import Any

import requests
from sqlalchemy import event

from mlconnector.flows import SourceRecord
from tests.fleet_pair import RecordServer


class Counted:
    def __init__(self) -> None:
        self.statements: list[str] = []
        self.commits = 0

    def __enter__(self) -> "Counted":
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", self._statement)
        event.listen(Engine, "commit", self._commit)
        return self

    def __exit__(self, *exc: object) -> None:
        from sqlalchemy.engine import Engine

        event.remove(Engine, "before_cursor_execute", self._statement)
        event.remove(Engine, "commit", self._commit)

    def _statement(self, _conn: Any, _cursor: Any, text: str, *_: Any) -> None:
        self.statements.append(" ".join(text.split()))

    def _commit(self, *_: Any) -> None:
        self.commits += 1

    def starting(self, prefix: str) -> list[str]:
        return [s for s in self.statements if s.startswith(prefix)]


def test_one_delivery_updates_its_record_once_and_inserts_its_trail_in_one_statement(
        configure: Any, fresh_pg: str, record_server: RecordServer) -> None:
    from mlconnector import audit, engine, ledger, vault
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import create_integration

    configure(fresh_pg)
    with session_scope() as session:
        create_integration(session, "acme", "counter-test", {"systems": {"counter": {"base_url": record_server.url}}})  # type: ignore[attr-defined]
        session.flush()
        vault.store(session, "acme", "counter", {"token": "unused-token"})
    sources = {i: {"id": i, "value": f"v-{i}", "modifiedOn": "2026-01-01T00:00:00Z"} for i in ("A-1", "A-2")}
    requests.post(f"{record_server.url}/_control", json={"sources": sources}, timeout=10)  # type: ignore[attr-defined]
    with session_scope() as session:
        first, second = ledger.upsert_records(session, "acme", "items", [SourceRecord(i, "2026-01-01T00:00:00Z") for i in sources])
    assert engine.process_record(first).outcome == "written"  # warm: connectors built, statements compiled

    with Counted() as counted:
        assert engine.process_record(second).outcome == "written"

    # The claim (counted and committed apart, so a crash mid-write still spends the delivery)
    # and the write's single update of the record: the payload read rides with the outcome.
    updates = counted.starting("UPDATE sync_records")
    assert len(updates) == 2, updates
    assert "payload" in updates[1] and "status" in updates[1], updates[1]
    assert len(counted.starting("INSERT INTO audit_events")) == 1, counted.statements  # fetched, mapped, written: one batch
    assert len(counted.starting("SELECT credentials")) == 0, counted.statements  # read with the integration
    assert counted.commits == 2, counted.statements
    assert not [s for s in counted.statements if "advisory" in s], counted.statements  # the row lock is the lock
    assert not counted.starting("SET "), counted.statements  # the claim's SET LOCAL rides in its UPDATE
    assert len(counted.statements) <= 6, counted.statements
    with session_scope() as session:
        record = session.get(SyncRecord, second)
        assert record is not None and record.payload["value"] == "v-A-2" and record.status == "written"
        assert [e.kind for e in audit.trail(session, second)][-3:] == ["fetched", "mapped", "written"]
