"""Typed holds: a record that waits for a person names exactly what releases it.

A release is one of:
- `LinkNeeded`: a link of a kind for one source id (an operator links the vendor);
- `ConfigNeeded`: a config key (e.g. `gl.by_business_unit.7`) whose value changes;
- `TargetCondition`: a condition in the target system (an invoice becoming posted), which
  the flow's polls check.
Each renders as a stable key stored beside the record (`hold_releases`), so whatever
releases a hold re-queues exactly the records waiting for it, and nothing is keyed on
string prefixes. A hold with no release waits for a person's replay or resolve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from mlconnector.decisions import Decision


@dataclass(frozen=True)
class LinkNeeded:
    kind: str
    source_system: str
    source_id: str

    @property
    def key(self) -> str:
        return f"link:{self.kind}:{self.source_system}:{self.source_id}"


@dataclass(frozen=True)
class ConfigNeeded:
    path: str  # dotted, e.g. gl.by_business_unit.7

    @property
    def key(self) -> str:
        return f"config:{self.path}"


@dataclass(frozen=True)
class TargetCondition:
    system: str
    entity: str
    target_id: str
    condition: str  # e.g. posted

    @property
    def key(self) -> str:
        return f"target:{self.system}:{self.entity}:{self.condition}:{self.target_id}"


Release = Union[LinkNeeded, ConfigNeeded, TargetCondition]


def parse_release(key: str) -> Release | None:
    """The typed release a stored key names (None for a key of no known type)."""
    kind, _, rest = key.partition(":")
    if kind == "link":
        parts = rest.split(":", 2)
        return LinkNeeded(*parts) if len(parts) == 3 else None
    if kind == "config":
        return ConfigNeeded(rest) if rest else None
    if kind == "target":
        parts = rest.split(":", 3)
        return TargetCondition(parts[0], parts[1], parts[3], parts[2]) if len(parts) == 4 else None
    return None


@dataclass
class Hold:
    """A gap a person must close (or a condition to wait for), said plainly with the next step."""

    reason: str
    releases: tuple[Release, ...] = ()
    decisions: list[Decision] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The first release's key, shown beside the record ('person' when none)."""
        return self.releases[0].key if self.releases else "person"


def config_value(config: dict[str, Any], path: str) -> Any:
    """The value at a dotted path of a config dict (None when absent)."""
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
