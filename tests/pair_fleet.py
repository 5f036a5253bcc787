"""What every pair's fleet test reads the same way: a sandbox's records through its control
API (as a user of that system creating and changing them), and our own ledger."""

from __future__ import annotations

from typing import Any

import requests
from sqlalchemy import func, select


class PairFleet:
    @staticmethod
    def sandbox_put(sandbox: Any, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(f"{sandbox.url}/_sandbox/entities/{entity}", json=payload, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    @staticmethod
    def sandbox_rows(sandbox: Any, entity: str) -> list[dict[str, Any]]:
        return requests.get(f"{sandbox.url}/_sandbox/entities/{entity}", timeout=10).json()

    def statuses(self, flow: str | None = None) -> dict[str, int]:
        """Ledger records by state (of one flow)."""
        from mlconnector.db.models import SyncRecord
        from mlconnector.db.session import session_scope

        query = select(SyncRecord.status, func.count()).group_by(SyncRecord.status)
        if flow:
            query = query.where(SyncRecord.flow == flow)
        with session_scope() as session:
            return dict(session.execute(query).all())

    def record(self, flow: str, source_id: Any) -> Any:
        """The ledger row of one source record of a flow, or None."""
        from mlconnector.db.models import SyncRecord
        from mlconnector.db.session import session_scope

        with session_scope() as session:
            return session.scalar(select(SyncRecord).where(SyncRecord.flow == flow, SyncRecord.source_id == str(source_id)))
