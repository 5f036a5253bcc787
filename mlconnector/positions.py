"""Where a flow's change reading stands.

A position is a timestamp (ServiceTitan `modifiedOnOrAfter`, OData `ChangeDate ge ...`), an
opaque cursor (Epicor `SysRevID`, a continuation token), or both. It is persisted in the
flow's watermark row, so every worker process reads from the same place and a fresh one
never full-scans a table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone


@dataclass(frozen=True)
class Position:
    at: datetime | None = None  # records changed at or after this moment (timezone-aware)
    cursor: str | None = None  # records after this place in the source's change order

    def __post_init__(self) -> None:
        if self.at is not None and self.at.tzinfo is None:
            object.__setattr__(self, "at", self.at.replace(tzinfo=timezone.utc))

    @property
    def is_start(self) -> bool:
        """No position yet: the first poll reads everything."""
        return self.at is None and self.cursor is None

    def describe(self) -> str:
        parts = []
        if self.at is not None:
            parts.append(self.at.isoformat(timespec="seconds"))
        if self.cursor is not None:
            parts.append(f"cursor {self.cursor}")
        return ", ".join(parts) or "start"


START = Position()
