"""A decision: one choice a mapping or resolver made, in words the audit trail can print."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Decision:
    field: str
    value: Any
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "value": self.value, "reason": self.reason}
