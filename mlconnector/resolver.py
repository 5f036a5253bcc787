"""The one counterpart resolver: link, else match, else create when allowed, else hold.

A pair declares each kind of counterpart it needs (`CounterpartKind`: how to find target
records by key or name, how to create one, how to search and read them for operators).
The integration's config says, per kind, how to match, whether to create, and what writes
to existing target records may change. Every step is a decision in the audit trail;
creation happens under a named lock (two workers never create one vendor twice) and only
outside dry runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from mlconnector import links, locks
from mlconnector.decisions import Decision
from mlconnector.holds import ConfigNeeded, Hold, LinkNeeded

if TYPE_CHECKING:
    from mlconnector.flows import FlowContext

HOW_WORDS = {
    "manual": "linked by hand",
    "linked": "existing link",
    "matched_by_id": "matched by id",
    "matched_by_code": "matched by code",
    "matched_by_name": "matched by normalized name",
    "created": "created in the target from the source record",
    "to_create": "would be created (dry run)",
}


@dataclass(frozen=True)
class TargetRecord:
    """A record in the target system that could be a counterpart."""

    id: str
    name: str = ""
    code: str = ""  # the target's own human key (Epicor VendorID, Acumatica CustomerID, ...)
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def label(self) -> str:
        return " ".join(p for p in (self.id, self.code if self.code != self.id else "", f"'{self.name}'" if self.name else "") if p)


@dataclass(frozen=True)
class Need:
    """A counterpart one record needs before it can be mapped."""

    kind: str
    source_id: str
    source_name: str = ""
    source: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    role: str = ""  # the name the mapping receives it under (default: the kind)

    @property
    def name(self) -> str:
        return self.role or self.kind


@dataclass
class Counterpart:
    """A resolved counterpart: the target id (None only in a dry run's 'to_create') and how."""

    kind: str
    source_id: str
    target_id: str | None
    target_name: str
    target_code: str
    how: str
    decisions: list[Decision] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return self.target_id is None

    @property
    def reason(self) -> str:
        return HOW_WORDS.get(self.how, self.how)


class CounterpartKind(ABC):
    """One kind of counterpart a pair links (vendor, customer, item, ...): its target-side reads.

    Subclasses set the class constants and implement the reads; `create` only when the
    target may be written to. None of these is called in `map`: the resolver calls them.
    """

    kind: ClassVar[str]
    source_system: ClassVar[str]
    target_system: ClassVar[str]
    noun: ClassVar[str] = ""  # words for messages ("vendor"); default: the kind
    protected_fields: ClassVar[frozenset[str]] = frozenset()  # remit-to, bank, tax: overwrite only

    @property
    def label(self) -> str:
        return self.noun or self.kind

    @abstractmethod
    def match_by_key(self, ctx: "FlowContext", need: Need, by: str) -> list[TargetRecord]:
        """Target records whose id or code (`by`) derives from the source record."""

    @abstractmethod
    def match_by_name(self, ctx: "FlowContext", need: Need) -> list[TargetRecord]:
        """Active target records whose normalized name equals the source's."""

    def create(self, ctx: "FlowContext", need: Need) -> TargetRecord:
        raise NotImplementedError(f"{self.target_system} {self.label} records are not created by this pair")

    @abstractmethod
    def get_target(self, ctx: "FlowContext", target_id: str) -> TargetRecord | None:
        """One target record by id (for `links link`, which verifies both ids exist)."""

    @abstractmethod
    def get_source(self, ctx: "FlowContext", source_id: str) -> TargetRecord | None:
        """One source record by id, as a name and code for people."""

    @abstractmethod
    def search(self, ctx: "FlowContext", text: str) -> list[TargetRecord]:
        """Target records whose name or code contains `text` (for an operator choosing an id)."""

    def forget(self, ctx: "FlowContext") -> None:
        """Drop any cached target list (called after a create)."""


def link_command(ctx: "FlowContext", kind: str, source_id: str) -> str:
    return f"mlconnector links link {ctx.integration.id} --kind {kind} {source_id} <target id>"


def resolve(ctx: "FlowContext", declared: CounterpartKind, need: Need) -> Counterpart | Hold:
    """The counterpart for `need`: link, else match, else create when allowed, else a hold."""
    integration_id = ctx.integration.id
    found = _linked(ctx, declared, need)
    if found is not None:
        return found
    policy = ctx.config.counterpart(declared.kind)
    candidates, how = _candidates(ctx, declared, need, policy.match)
    if len(candidates) > 1:
        return _ambiguous(ctx, declared, need, candidates, how)
    if not candidates:
        if not policy.create:
            return _missing(ctx, declared, need)
        if ctx.dry_run:
            close = lookalikes(ctx, declared, need, policy.similar)
            if close:
                return _similar(ctx, declared, need, close)
            return Counterpart(declared.kind, need.source_id, None, need.source_name, "", "to_create",
                               [Decision(need.name, need.source_name, HOW_WORDS["to_create"])])
        # Two workers must not both create one counterpart (two of its documents in flight,
        # or near-duplicate source records): the second waits, then finds the first's, or
        # sees its name is close to one just made. Creating is rare; one lock per kind.
        locks.hold_until_commit(ctx.session, f"create:{integration_id}:{declared.kind}")
        found = _linked(ctx, declared, need)
        if found is not None:
            return found
        declared.forget(ctx)
        candidates, how = _candidates(ctx, declared, need, policy.match)
        if len(candidates) > 1:
            return _ambiguous(ctx, declared, need, candidates, how)
        close = lookalikes(ctx, declared, need, policy.similar) if not candidates else []
        if close:
            return _similar(ctx, declared, need, close)
        if not candidates:
            created = declared.create(ctx, need)
            declared.forget(ctx)
            ctx.audit("counterpart_created", f"created {declared.target_system} {declared.label} {created.label()} "
                      f"for {declared.source_system} {declared.label} {need.source_id} '{need.source_name}' "
                      f"(counterparts.{declared.kind}.create is on)", target_id=created.id)
            candidates, how = [created], "created"
    chosen = candidates[0]
    if ctx.dry_run:
        return Counterpart(declared.kind, need.source_id, chosen.id, chosen.name, chosen.code, how,
                           [Decision(need.name, chosen.label(), HOW_WORDS.get(how, how) + " (would be linked)")])
    stored = links.link(ctx.session, integration_id, kind=declared.kind, source_system=declared.source_system,
                        source_id=need.source_id, source_name=need.source_name, target_system=declared.target_system,
                        target_id=chosen.id, target_name=chosen.name, how=how, replace=False)
    if stored.target_id != chosen.id:  # another worker linked it first: its answer stands
        return _from_link(declared, need, stored)
    return Counterpart(declared.kind, need.source_id, chosen.id, chosen.name, chosen.code, how,
                       [Decision(need.name, chosen.label(), HOW_WORDS.get(how, how))])


def _linked(ctx: "FlowContext", declared: CounterpartKind, need: Need) -> Counterpart | None:
    link = links.find(ctx.session, ctx.integration.id, declared.kind, declared.source_system, need.source_id)
    return _from_link(declared, need, link) if link is not None else None


def _from_link(declared: CounterpartKind, need: Need, link: Any) -> Counterpart:
    how = "manual" if link.how == links.MANUAL else "linked"
    return Counterpart(declared.kind, need.source_id, link.target_id, link.target_name or need.source_name, "", how,
                       [Decision(need.name, f"{link.target_id} '{link.target_name}'", f"{HOW_WORDS[how]} ({link.how})")])


def _candidates(ctx: "FlowContext", declared: CounterpartKind, need: Need, match: str) -> tuple[list[TargetRecord], str]:
    if match == "name":
        return declared.match_by_name(ctx, need), "matched_by_name"
    return declared.match_by_key(ctx, need, match), f"matched_by_{match}"


def _ambiguous(ctx: "FlowContext", declared: CounterpartKind, need: Need, candidates: list[TargetRecord],
               how: str) -> Hold:
    listed = "; ".join(c.label() for c in candidates[:10])
    return Hold(
        reason=(f"{declared.label} '{need.source_name or need.source_id}' matches {len(candidates)} "
                f"{declared.target_system} {declared.label}s ({listed}); link the right one with: "
                f"{link_command(ctx, declared.kind, need.source_id)}"),
        releases=(LinkNeeded(declared.kind, declared.source_system, need.source_id),),
        decisions=[Decision(need.name, need.source_name, f"{len(candidates)} candidates {HOW_WORDS.get(how, how)}")])


def lookalikes(ctx: "FlowContext", declared: CounterpartKind, need: Need, similar: str = "hold") -> list[TargetRecord]:
    """Target records whose names are close to the source's, found through the kind's search
    by the name's most telling word (one call, only on the way to creating one)."""
    words = sorted(links.name_words(need.source_name), key=len, reverse=True)
    if similar != "hold" or not words or len(words[0]) < 3:
        return []
    return [t for t in declared.search(ctx, words[0]) if links.similar_names(need.source_name, t.name)][:10]


def _similar(ctx: "FlowContext", declared: CounterpartKind, need: Need, lookalikes: list[TargetRecord]) -> Hold:
    listed = "; ".join(t.label() for t in lookalikes)
    return Hold(
        reason=(f"{declared.label} '{need.source_name}' looks like {declared.target_system} {declared.label} {listed}: "
                f"not created twice. If it is the same, link it with: {link_command(ctx, declared.kind, need.source_id)}; "
                f"if not, set counterparts.{declared.kind}.similar to create"),
        releases=(LinkNeeded(declared.kind, declared.source_system, need.source_id),
                  ConfigNeeded(f"counterparts.{declared.kind}.similar")),
        decisions=[Decision(need.name, need.source_name, f"close to {listed}; held for a person")])


def _missing(ctx: "FlowContext", declared: CounterpartKind, need: Need) -> Hold:
    return Hold(
        reason=(f"{declared.label} '{need.source_name or need.source_id}' has no {declared.target_system} "
                f"{declared.label}; link it with: {link_command(ctx, declared.kind, need.source_id)} "
                f"(or set counterparts.{declared.kind}.create to true)"),
        releases=(LinkNeeded(declared.kind, declared.source_system, need.source_id),
                  ConfigNeeded(f"counterparts.{declared.kind}.create"),
                  ConfigNeeded(f"counterparts.{declared.kind}.match")),
        decisions=[Decision(need.name, need.source_name, f"no {declared.target_system} {declared.label} matched")])
