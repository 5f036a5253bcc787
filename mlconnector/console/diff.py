"""Field-level differences between two JSON documents, for a person to read before confirming."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel


class FieldChange(BaseModel):
    path: str
    before: str
    after: str


def _shown(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value, default=str)


def field_changes(before: Any, after: Any, path: str = "") -> list[FieldChange]:
    """Each changed leaf once, by its dotted path (list items by index)."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[FieldChange] = []
        for key in sorted(set(before) | set(after), key=str):
            out += field_changes(before.get(key), after.get(key), f"{path}.{key}" if path else str(key))
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [c for i, (b, a) in enumerate(zip(before, after)) for c in field_changes(b, a, f"{path}[{i}]")]
    if before != after:
        return [FieldChange(path=path or "(payload)", before=_shown(before), after=_shown(after))]
    return []
