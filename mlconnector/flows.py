"""Flows are declared, not hand-wired.

A pair module (tasks/<pair>.py) declares its `Pair`: the two systems, and its flows, each
with a source entity, a target entity, the handler that fetches, maps and writes, the
webhook event types that trigger it, its poll schedule and its prerequisites. The engine
(mlconnector/engine.py) runs every flow through the same record path.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping

from pydantic import BaseModel

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from connectors.base import Connector
    from mlconnector.db.models import Integration

# The pair modules the product ships; adding a pair adds a line here and touches nothing else.
PAIR_MODULES: tuple[str, ...] = ("tasks.servicetitan_epicor",)


@dataclass(frozen=True)
class Decision:
    """One choice a mapping made, in words the audit trail can print."""

    field: str
    value: Any
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "value": self.value, "reason": self.reason}


@dataclass
class MappedRecord:
    """The target payload a mapping produced, its external key and its decisions."""

    payload: dict[str, Any]
    external_key: dict[str, Any]
    decisions: list[Decision] = field(default_factory=list)


@dataclass
class Hold:
    """A gap a person must close; `key` names the mapping it waits for (e.g. vendor:511)."""

    reason: str
    key: str
    decisions: list[Decision] = field(default_factory=list)


@dataclass
class WriteResult:
    target_id: str
    action: str  # created | updated | unchanged
    http_status: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceRecord:
    """A record found by a poll or named by a webhook."""

    source_id: str
    version: str | None
    payload: dict[str, Any] | None = None


@dataclass
class FlowContext:
    """What a handler may use while processing one record."""

    integration: "Integration"
    session: "Session"
    connectors: Mapping[str, "Connector"]
    audit: Callable[..., None]

    @property
    def config(self) -> dict[str, Any]:
        return self.integration.config or {}


class FlowHandler(ABC):
    """The business of one flow. The engine supplies ledger, retries, audit and metrics."""

    @abstractmethod
    def fetch(self, ctx: FlowContext, source_id: str) -> BaseModel | dict[str, Any] | None:
        """Read the full source record (None: it no longer exists)."""

    def version(self, source: Any) -> str | None:
        """A value that changes whenever the source record changes (for dedupe)."""
        value = getattr(source, "modifiedOn", None) if not isinstance(source, dict) else source.get("modifiedOn")
        return value.isoformat() if isinstance(value, datetime) else (str(value) if value else None)

    @abstractmethod
    def map(self, ctx: FlowContext, source: Any) -> MappedRecord | Hold:
        """Gather lookups (I/O) and call the pair's pure mapping function."""

    @abstractmethod
    def write(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> WriteResult:
        """Write idempotently: known target id, else look up by external key, then update, else create."""

    def changed(self, ctx: FlowContext, since: datetime | None, until: datetime) -> Iterator[SourceRecord]:
        """Source records changed in [since, until) for the catch-up poll."""
        return iter(())

    def records_for_event(self, ctx: FlowContext, event_type: str, data: dict[str, Any]) -> list[SourceRecord]:
        """The source records a webhook event names (default: the event's own record)."""
        record_id = data.get("id")
        return [SourceRecord(str(record_id), None, data)] if record_id is not None else []


@dataclass(frozen=True)
class Flow:
    name: str
    source: str
    source_entity: str
    target: str
    target_entity: str
    handler: FlowHandler
    webhook_events: tuple[str, ...] = ()
    poll_seconds: float | None = None
    prerequisites: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Pair:
    name: str
    source: str
    target: str
    flows: tuple[Flow, ...]
    description: str = ""
    config_model: type[BaseModel] | None = None

    @property
    def queue(self) -> str:
        """One Celery queue per pair, so a slow vendor never starves another pair."""
        return self.name

    def flow(self, name: str) -> Flow:
        for flow in self.flows:
            if flow.name == name:
                return flow
        raise UnknownFlowError(f"pair {self.name} has no flow {name!r}; flows: {', '.join(f.name for f in self.flows)}")

    def flows_for_event(self, event_type: str) -> list[Flow]:
        return [f for f in self.flows if event_type in f.webhook_events]

    def systems(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.source, self.target)))

    def ordered_flows(self) -> list[Flow]:
        """Flows with prerequisites first (vendors before bills)."""
        done: list[Flow] = []
        pending = list(self.flows)
        while pending:
            for flow in list(pending):
                if all(p in {d.name for d in done} for p in flow.prerequisites):
                    done.append(flow)
                    pending.remove(flow)
                    break
            else:
                raise ValueError(f"pair {self.name}: circular flow prerequisites")
        return done


class UnknownPairError(KeyError):
    pass


class UnknownFlowError(KeyError):
    pass


class _Registry:
    _pairs: ClassVar[dict[str, Pair]] = {}
    _loaded: ClassVar[bool] = False

    @classmethod
    def register(cls, pair: Pair) -> Pair:
        cls._pairs[pair.name] = pair
        return pair

    @classmethod
    def load(cls) -> dict[str, Pair]:
        if not cls._loaded:
            import os

            extra = tuple(m for m in os.environ.get("MLCONNECTOR_PAIR_MODULES", "").split(",") if m)
            for module in PAIR_MODULES + extra:
                importlib.import_module(module)
            cls._loaded = True
        return cls._pairs


def register_pair(pair: Pair) -> Pair:
    """Declare a pair; called at the bottom of its tasks/<pair>.py module."""
    return _Registry.register(pair)


def all_pairs() -> dict[str, Pair]:
    return dict(_Registry.load())


def get_pair(name: str) -> Pair:
    pairs = _Registry.load()
    try:
        return pairs[name]
    except KeyError:
        raise UnknownPairError(f"unknown pair {name!r}; known: {', '.join(sorted(pairs))}") from None
