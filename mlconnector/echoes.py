"""Two-way sync without echoes: own writes recognised, conflicts decided by declared rules.

A pair whose records move in both directions has one flow each way per entity. Left alone,
every write one flow makes is a change the other flow's next poll reads and sends back
(ping-pong), and every trip moves both records' versions (churn without end). This module
keeps, per record pair, the shared fields both sides last agreed on and the version our own
last write left on each side, and judges every change against them:

- **own write**: a record read back at the version our write left, or whose shared fields
  equal what was agreed, is our own write coming back (or a change outside the shared
  fields). Nothing is sent.
- **change**: shared fields that differ from the agreed base changed on this side; they are
  written to the other side, and become the new base.
- **conflict**: a field changed on both sides since the base, to different values, is
  decided by the entity's declared rule (`TwoWayRule`): a system that is the field's source
  of truth, or `hold` for a person. A field the other side wins is not written here; the
  other direction's flow carries it back. Every decision is returned for the audit trail.

`reconcile` is pure. `find` and `remember` keep the state (table `two_way_states`); a flow
calls `lock` first, so the two flows of one entity never judge the same pair at once and a
record just written is paired before the other direction can read it as new.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Mapping

from pydantic import Field
from sqlalchemy.orm import Session

from mlconnector import locks
from mlconnector.config import StrictModel
from mlconnector.db.models import TwoWayState, utcnow
from mlconnector.decisions import Decision

HOLD = "hold"


class TwoWayRule(StrictModel):
    """Who wins a shared field both sides changed between polls, per entity."""

    default: str = Field(HOLD, description="A system name (the source of truth for every field not listed) or 'hold' "
                                           "(a person decides).")
    fields: dict[str, str] = Field(default_factory=dict, description="Per shared field: a system name or 'hold'.")

    def winner(self, name: str) -> str:
        return self.fields.get(name, self.default)


@dataclass(frozen=True)
class Conflict:
    """One field changed on both sides since they last agreed."""

    field: str
    agreed: Any
    source_value: Any
    target_value: Any
    winner: str  # a system, or HOLD

    def decision(self, source_system: str, target_system: str) -> Decision:
        said = (f"changed on both sides: {source_system} {self.source_value!r}, {target_system} {self.target_value!r} "
                f"(agreed {self.agreed!r})")
        if self.winner == HOLD:
            return Decision(f"conflict {self.field}", said, "held for a person (rule: hold)")
        return Decision(f"conflict {self.field}", said, f"{self.winner} wins (its rule)")


@dataclass
class Verdict:
    """What a flow should do with one record's shared fields."""

    own_write: str | None = None  # why nothing is sent (our own write back, nothing shared changed)
    changes: dict[str, Any] = field(default_factory=dict)  # fields to write to the target
    agreed: dict[str, Any] = field(default_factory=dict)  # the base once the changes are written
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def held(self) -> list[Conflict]:
        return [c for c in self.conflicts if c.winner == HOLD]

    def decisions(self, source_system: str, target_system: str) -> list[Decision]:
        return [c.decision(source_system, target_system) for c in self.conflicts]


def comparable(value: Any) -> Any:
    """A value as both systems' copies compare: blanks are one, text trimmed, numbers by value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, Decimal)):
        number = Decimal(str(value)).normalize()
        return format(number, "f")
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): comparable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [comparable(v) for v in value]
    return str(value).strip()


def same(left: Any, right: Any) -> bool:
    return comparable(left) == comparable(right)


def reconcile(source: Mapping[str, Any], target: Mapping[str, Any] | None, agreed: Mapping[str, Any] | None,
              rule: TwoWayRule, *, source_system: str, target_system: str) -> Verdict:
    """Judge one record's shared fields against the other side and the agreed base.

    `target` None: the other side has no record yet (everything is written). `agreed` None:
    the two records were never paired, so every field that differs counts as changed on both.
    """
    if target is None:
        return Verdict(changes=dict(source), agreed=dict(source))
    base = dict(agreed) if agreed is not None else None
    changed_here = [f for f in source if base is None or not same(source[f], base.get(f))]
    if base is not None and not changed_here:
        return Verdict(own_write="the shared fields are as both sides last agreed", agreed=base)
    verdict = Verdict(agreed=dict(base) if base is not None else {})
    for name in changed_here:
        wanted, there = source[name], target.get(name)
        if same(wanted, there):
            verdict.agreed[name] = wanted  # both sides already hold it
            continue
        changed_there = base is None or not same(there, base.get(name))
        if not changed_there:
            verdict.changes[name] = wanted
            verdict.agreed[name] = wanted
            continue
        winner = rule.winner(name)
        verdict.conflicts.append(Conflict(name, None if base is None else base.get(name), wanted, there, winner))
        if winner == source_system:
            verdict.changes[name] = wanted
            verdict.agreed[name] = wanted
    if base is None:
        # Never paired: this side's values are the base, so a field the target wins reads as
        # changed there only, and the other direction's flow carries it here.
        for name in source:
            verdict.agreed.setdefault(name, source[name])
    return verdict


# ---- state ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairState:
    """One record's pairing as seen from its side."""

    entity: str
    system: str
    record_id: str
    other_system: str
    other_id: str
    agreed: dict[str, Any]
    own_version: str | None  # the version our last write left on this side
    other_own_version: str | None  # the version our last write left on the other side

    def is_own_write(self, version: str | None) -> bool:
        """This side read back at exactly the version our own last write left."""
        return bool(version) and version == self.own_version


def lock(session: Session, integration_id: str, entity: str) -> None:
    """Hold, until this transaction ends, the right to judge and write pairs of `entity`."""
    locks.hold_until_commit(session, f"two-way:{integration_id}:{entity}")


def find(session: Session, integration_id: str, entity: str, system: str, record_id: str) -> PairState | None:
    row = session.get(TwoWayState, (integration_id, entity, system, str(record_id)))
    if row is None:
        return None
    other = session.get(TwoWayState, (integration_id, entity, row.other_system, row.other_id))
    return PairState(entity, system, str(record_id), row.other_system, row.other_id, dict(row.agreed or {}),
                     row.own_version, other.own_version if other is not None else None)


def remember(session: Session, integration_id: str, entity: str, *, system: str, record_id: str, other_system: str,
             other_id: str, agreed: Mapping[str, Any], versions: Mapping[str, str | None] | None = None) -> None:
    """Pair the two records with `agreed` as their base; `versions` (system -> version) are
    the versions our own writes just left on those sides (sides not named keep theirs)."""
    now = utcnow()
    plain = {k: comparable(v) if not isinstance(v, (str, bool)) else v for k, v in agreed.items()}
    for here, here_id, there, there_id in ((system, str(record_id), other_system, str(other_id)),
                                           (other_system, str(other_id), system, str(record_id))):
        row = session.get(TwoWayState, (integration_id, entity, here, here_id))
        if row is None:
            row = TwoWayState(integration_id=integration_id, entity=entity, system=here, record_id=here_id)
            session.add(row)
        row.other_system, row.other_id, row.agreed, row.updated_at = there, there_id, plain, now
        if versions and here in versions:
            row.own_version = versions[here]
    session.flush()
