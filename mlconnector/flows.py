"""Flows are declared, not hand-wired.

A pair module (tasks/<pair>.py) declares its `Pair`: the two systems, the counterpart kinds
it links, its config model and its flows, each with a source entity, a target entity, the
handler that fetches, maps, plans and writes, the webhook event types that trigger it, its
poll schedule and its prerequisites. Pairs are found through the `mlconnector.pairs` entry
point group (pyproject.toml), so adding one touches nothing in mlconnector/; importing a
pair module starts nothing. The engine (mlconnector/engine.py) runs every flow through the
same record path.
"""

from __future__ import annotations

import importlib
import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator, Literal, Mapping

from pydantic import BaseModel

from mlconnector.decisions import Decision
from mlconnector.holds import Hold, TargetCondition
from mlconnector.positions import Position

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from connectors.base import Connector
    from mlconnector.config import IntegrationConfig
    from mlconnector.db.models import Integration
    from mlconnector.harness import SandboxSet
    from mlconnector.resolver import Counterpart, CounterpartKind, Need

ENTRY_POINT_GROUP = "mlconnector.pairs"
EXTRA_PAIRS_ENV = "MLCONNECTOR_PAIR_MODULES"  # development: 'module:attr' or modules holding PAIR


@dataclass
class MappedRecord:
    """The typed target document a mapping produced, its external key and its decisions.

    `document` is the pair's pydantic model of what the target should hold; the engine keeps
    its JSON form in the audit trail and the handler's `plan` and `write` read it typed.
    """

    document: BaseModel
    external_key: dict[str, Any]
    decisions: list[Decision] = field(default_factory=list)

    @property
    def payload(self) -> dict[str, Any]:
        return self.document.model_dump(mode="json", by_alias=True)


@dataclass
class Nothing:
    """An explicit "nothing to do" for this record (e.g. a purchase order not received yet)."""

    reason: str
    decisions: list[Decision] = field(default_factory=list)


Outcome = MappedRecord | Hold | Nothing


@dataclass
class Plan:
    """What a write would do, worked out by reading the target only."""

    action: Literal["create", "update", "unchanged", "complete"]
    target_id: str | None = None
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field -> (current, wanted)
    detail: str = ""

    def describe(self) -> str:
        if self.action == "unchanged":
            return f"unchanged {self.target_id or ''}".strip()
        words = f"{self.action} {self.target_id or ''}".strip()
        if self.changes:
            words += ": " + "; ".join(f"{k} {_short(old)!r} -> {_short(new)!r}" for k, (old, new) in sorted(self.changes.items()))
        return words + (f" ({self.detail})" if self.detail else "")


def _short(value: Any) -> Any:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class WriteResult:
    target_id: str
    action: str  # created | updated | completed | unchanged
    http_status: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    target_key: dict[str, Any] | None = None  # the target's key fields, kept in the ledger for look-ups


@dataclass
class SourceRecord:
    """A record found by a poll or named by a webhook.

    `cursor` is the record's place in an ordered change feed (Epicor SysRevID, a continuation
    token); a poll yields records in cursor order and the flow's position moves to the last.
    """

    source_id: str
    version: str | None
    payload: dict[str, Any] | None = None
    cursor: str | None = None


@dataclass
class FlowContext:
    """What a handler may use while processing one record."""

    integration: "Integration"
    session: "Session"
    connectors: Mapping[str, "Connector"]
    audit: Callable[..., None]
    pair: "Pair"
    dry_run: bool = False
    _config: Any = None

    @property
    def config(self) -> "IntegrationConfig":
        """The integration's config as the pair's typed model (validated once per context)."""
        if self._config is None:
            self._config = self.pair.parse_config(self.integration.config or {})
        return self._config


@dataclass(frozen=True)
class DocumentSummary:
    """A record as the people who run the books know it: its number in the source system,
    its counterpart (vendor, customer) and its amount."""

    document: str = ""
    counterpart: str = ""
    amount: str = ""


class FlowHandler(ABC):
    """The business of one flow. The engine supplies ledger, retries, audit and metrics.

    The record path calls, in order: `fetch`, `version`, `needs` (counterparts the platform
    resolves: link, match, create when allowed, else hold), `map` (reads only, no writes),
    `plan` (what the write would do, reads only) and, unless it is a dry run, `write`.
    """

    @abstractmethod
    def fetch(self, ctx: FlowContext, source_id: str) -> BaseModel | dict[str, Any] | None:
        """Read the full source record (None: it no longer exists)."""

    def version(self, source: Any) -> str | None:
        """A value that changes whenever the source record changes (for dedupe)."""
        value = getattr(source, "modifiedOn", None) if not isinstance(source, dict) else source.get("modifiedOn")
        return value.isoformat() if isinstance(value, datetime) else (str(value) if value else None)

    def summarize(self, payload: dict[str, Any]) -> DocumentSummary:
        """The source document's number, counterpart and amount (for the exceptions queue)."""
        return DocumentSummary(str(payload.get("id") or ""))

    def document_date(self, source: Any) -> datetime | str | None:
        """The business date of the source document, for the integration's go-live date."""
        return None

    def needs(self, ctx: FlowContext, source: Any) -> list["Need"] | Hold:
        """Counterparts this record needs before it can be mapped (vendor, customer, ...)."""
        return []

    @abstractmethod
    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, "Counterpart"]) -> Outcome:
        """Gather lookups (reads only) and call the pair's pure mapping function."""

    @abstractmethod
    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        """What the write would do: create, update (with the field diff), or unchanged."""

    @abstractmethod
    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        """Carry out the plan idempotently (a lost answer is found again by external key)."""

    def changed(self, ctx: FlowContext, since: Position, until: datetime) -> Iterator[SourceRecord]:
        """Source records changed since `since`, up to `until`, for the catch-up poll."""
        return iter(())

    def records_for_event(self, ctx: FlowContext, event_type: str, data: dict[str, Any]) -> list[SourceRecord]:
        """The source records a webhook event names (default: the event's own record)."""
        record_id = data.get("id")
        return [SourceRecord(str(record_id), None, data)] if record_id is not None else []

    def conditions_met(self, ctx: FlowContext, conditions: list[TargetCondition]) -> set[TargetCondition]:
        """Which target-side conditions that held records wait for are now true (checked on each poll)."""
        return set()


@dataclass(frozen=True)
class ReconDocument:
    """One document as a month-end tie-out sees it, in either system.

    `key` is the document's id as the ledger stores it: a source document's is the flow's
    source id, a target document's the target id the flow's write returns. `source_id` is the
    source record a target document carries (an origin id, an external reference) when the
    target keeps one; `match_key` is a documented key both sides spell alike (an invoice
    number with its vendor), used when the ledger knows no target for a source document.
    `counterpart_id` is the vendor or customer in the document's own system.
    """

    key: str
    number: str
    amount: Decimal
    on: date  # the document's own date (invoice, bill, payment, PO date): it decides the period
    counterpart: str = ""
    counterpart_id: str = ""
    source_id: str | None = None
    match_key: str | None = None


class Reconciler(ABC):
    """How a flow's documents of a period are listed in both systems, for the month-end
    reconciliation (mlconnector/reconcile.py): read through each vendor's API, period-filtered
    where the API allows. The platform matches, classifies and totals; a pair only lists.

    `start` is the first day of the period, `end` the day after its last.
    """

    entity: str = ""  # how an accountant names what moves: "inventory bills -> AP invoices"
    source_date: str = ""  # the source document date that decides the period, in words
    target_date: str = ""
    counterpart_kind: str | None = None  # the link kind that says which target counterpart a source one is
    counterpart_flow: str | None = None  # or the flow whose ledger does (a pair that writes its vendors, not links)

    @abstractmethod
    def source_documents(self, ctx: FlowContext, start: date, end: date) -> Iterable[ReconDocument]:
        """The source system's documents of the period that this flow moves."""

    @abstractmethod
    def target_documents(self, ctx: FlowContext, start: date, end: date) -> Iterable[ReconDocument]:
        """The target system's documents of the period, of the kind this flow writes."""

    def scope(self, ctx: FlowContext) -> str:
        """Which target documents are compared, when not all of the kind (an invoice group)."""
        return ""

    def amount_of(self, payload: Mapping[str, Any]) -> Decimal | None:
        """A source document's amount by the same rule as `source_documents`, from the payload
        the ledger kept when it last read it (None: the ledger's figure is the source's)."""
        return None


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
    reconciler: Reconciler | None = None  # how month-end reconciliation lists this flow's documents


@dataclass(frozen=True)
class PairDemo:
    """How `mlconnector demo` runs a pair: its title, config laid over the pair's sandbox config,
    and one line read back from the target's own API, `target_summary(harness, integration)`,
    so the demo proves the outcome in the target, not only in our ledger."""

    title: str
    target_summary: Callable[[Any, str], str]
    overrides: Mapping[str, Any] = field(default_factory=dict)
    order: int = 100  # demos run in this order, then by pair name
    # The cases this pair plants (mlconnector.demo_stage.Planted) on its stage (DemoStage):
    # called after its integration is registered, before its first flow.
    plant: Callable[[Any], list[Any]] | None = None
    # How the demo starts the sandboxes of this pair's systems: per system, SandboxOptions fields
    # (rate_limit, token_ttl, ...) and the vendor's own constructor settings, e.g. a plan with
    # a higher rate limit so the demo does not spend its minute waiting on the vendor's pacing.
    sandboxes: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Pair:
    """A product pair: its systems, flows, counterpart kinds and config model.

    `sandbox_config` turns the running sandboxes (and their seeded data) into a working
    integration config, so the demo, tests and benchmarks share one set-up (the harness).
    """

    name: str
    source: str
    target: str
    flows: tuple[Flow, ...]
    config_model: type["IntegrationConfig"]
    description: str = ""
    counterparts: tuple["CounterpartKind", ...] = ()
    sandbox_config: Callable[["SandboxSet"], dict[str, Any]] | None = None
    webhook_source: str | None = None  # the system whose webhooks the receiver takes
    demo: PairDemo | None = None  # runs in `mlconnector demo` when set

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

    def counterpart(self, kind: str) -> "CounterpartKind":
        for declared in self.counterparts:
            if declared.kind == kind:
                return declared
        raise UnknownFlowError(f"pair {self.name} links no {kind!r}; kinds: {', '.join(c.kind for c in self.counterparts) or 'none'}")

    def parse_config(self, raw: dict[str, Any]) -> "IntegrationConfig":
        return self.config_model.model_validate(raw)

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
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownFlowError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _Registry:
    """Pairs found through entry points (and, for development, EXTRA_PAIRS_ENV), loaded once."""

    _pairs: ClassVar[dict[str, Pair] | None] = None
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def load(cls) -> dict[str, Pair]:
        with cls._lock:
            if cls._pairs is None:
                found: dict[str, Pair] = {}
                for point in entry_points(group=ENTRY_POINT_GROUP):
                    _add(found, point.load(), point.value)
                for spec in filter(None, os.environ.get(EXTRA_PAIRS_ENV, "").split(",")):
                    module, _, attr = spec.strip().partition(":")
                    _add(found, getattr(importlib.import_module(module), attr or "PAIR"), spec)
                cls._pairs = found
            return cls._pairs

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls._pairs = None


def _add(found: dict[str, Pair], pair: Any, origin: str) -> None:
    if not isinstance(pair, Pair):
        raise TypeError(f"{origin} is not a Pair (got {type(pair).__name__})")
    found[pair.name] = pair


def all_pairs() -> dict[str, Pair]:
    return dict(_Registry.load())


def reload_pairs() -> None:
    """Forget the loaded pairs (a test that installs a pair, a changed environment)."""
    _Registry.reset()


def get_pair(name: str) -> Pair:
    pairs = _Registry.load()
    try:
        return pairs[name]
    except KeyError:
        raise UnknownPairError(f"unknown pair {name!r}; known: {', '.join(sorted(pairs)) or 'none'}") from None
