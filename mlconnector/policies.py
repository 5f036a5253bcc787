"""Write policies for master data in a target system.

A link records an identity; it does not rewrite the target. What a flow may change on an
existing target record (a vendor, a customer) follows the integration's policy for that
kind:

- `create_only` (default): nothing; the record is created once and then left alone;
- `fill_blanks`: fields empty in the target take the source's value;
- `overwrite`: every differing field takes the source's value.

Protected fields (remit-to address, bank and tax details) change only under `overwrite`.
The result is a field diff the engine audits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from mlconnector.config import WritePolicy


@dataclass
class FieldChanges:
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field -> (current, wanted)
    withheld: dict[str, str] = field(default_factory=dict)  # field -> why it was not changed

    @property
    def updates(self) -> dict[str, Any]:
        return {name: wanted for name, (_, wanted) in self.changes.items()}


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _same(current: Any, wanted: Any) -> bool:
    if _blank(current) and _blank(wanted):
        return True
    return str(current).strip() == str(wanted).strip() if isinstance(current, str) or isinstance(wanted, str) else current == wanted


def master_data_changes(current: dict[str, Any], wanted: dict[str, Any], policy: WritePolicy,
                        protected: Iterable[str] = (), keys: Iterable[str] = ()) -> FieldChanges:
    """The changes `policy` allows from `current` towards `wanted` (key fields never change)."""
    protected, keys = set(protected), set(keys)
    out = FieldChanges()
    for name, value in wanted.items():
        if name in keys or _same(current.get(name), value):
            continue
        if policy == "create_only":
            out.withheld[name] = "write policy create_only"
        elif name in protected and policy != "overwrite":
            out.withheld[name] = "protected (remit-to, bank or tax): changed only under overwrite"
        elif policy == "fill_blanks" and not _blank(current.get(name)):
            out.withheld[name] = "write policy fill_blanks and the target has a value"
        elif _blank(value) and policy != "overwrite":
            out.withheld[name] = "the source is blank"
        else:
            out.changes[name] = (current.get(name), value)
    return out
