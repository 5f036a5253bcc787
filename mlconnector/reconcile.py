"""Month-end reconciliation: per period, what each system holds of every document a pair moves.

Month-end tie-out is matching the field system against the ERP by hand. For each flow that
declares a `Reconciler` (mlconnector/flows.py), this lists the period's documents in the
source and in the target, both read through the vendors' own APIs (never from our ledger),
and the ledger's view between them. Source documents are matched to target documents through
the ledger's source id -> target id, else the origin id the target carries, else a documented
key both sides spell alike; every difference is classified and names the record whose trail
explains it (`mlconnector records show <id>`). Nothing here knows a vendor: pairs only list.
"""

from __future__ import annotations

import calendar
import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Literal, Mapping, Sequence

from pydantic import BaseModel, Field

from mlconnector.flows import Flow, FlowContext, ReconDocument, Reconciler

CENT = Decimal("0.01")
IN_CHUNK = 500  # ids per SQL IN list: well under every driver's parameter limit
MONTH = re.compile(r"^(\d{4})-(\d{2})$")
RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")

Kind = Literal["missing_in_target", "not_from_us", "amount_differs", "vendor_differs", "held", "failed"]
KINDS: tuple[str, ...] = ("missing_in_target", "not_from_us", "amount_differs", "vendor_differs", "held", "failed")
WRITTEN = frozenset({"written", "skipped"})


class PeriodError(ValueError):
    """A period the command cannot read; the message says what it takes."""


class NothingToReconcile(LookupError):
    """The integration's pair declares no reconciled flow."""


# ---- the report -----------------------------------------------------------------------------


class Difference(BaseModel):
    """One document the two systems (or the ledger) disagree about, and why."""

    entity: str
    kind: Kind
    source_ref: str | None = None  # the source document's id (the flow's source id)
    target_ref: str | None = None  # the target document's id (what the ledger stores as target id)
    source_amount: Decimal | None = None
    target_amount: Decimal | None = None
    record_id: int | None = None  # the ledger record: mlconnector records show <id>
    detail: str = ""
    number: str = ""  # the document number people know it by
    counterpart: str = ""  # its vendor or customer, as the source (else the target) names it
    on: date | None = None  # the document's own date


class EntityTotals(BaseModel):
    """One reconciled flow in one period: counts and totals in each place, and the differences."""

    entity: str
    flow: str
    source_count: int
    source_total: Decimal
    target_count: int
    target_total: Decimal
    ledger_count: int
    ledger_total: Decimal
    differences: list[Difference] = Field(default_factory=list)
    source_system: str = ""
    target_system: str = ""
    source_date: str = ""  # which date of the source document decides its period
    target_date: str = ""
    target_scope: str = ""  # which target documents are compared, when not all of the kind
    matched_count: int = 0  # source documents found in the target
    not_moved_count: int = 0  # source documents the flow decided had nothing to move
    target_outside_period_count: int = 0  # target documents we wrote for a source document dated in another period


class ReconciliationReport(BaseModel):
    integration: str
    pair: str
    period: str
    generated_at: datetime
    entities: list[EntityTotals]
    start: date | None = None  # the period's first day
    end: date | None = None  # its last day


# ---- the period -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    label: str
    start: date  # first day
    end: date  # the day after the last

    @property
    def last(self) -> date:
        return self.end - timedelta(days=1)


def parse_period(text: str) -> Period:
    """`YYYY-MM` (a calendar month) or `YYYY-MM-DD..YYYY-MM-DD` (both days included)."""
    value = (text or "").strip()
    month = MONTH.match(value)
    if month:
        year, number = int(month.group(1)), int(month.group(2))
        if not 1 <= number <= 12:
            raise PeriodError(f"period {text!r}: month {number} is not 01 to 12; give YYYY-MM, e.g. 2026-11")
        start = date(year, number, 1)
        return Period(value, start, start + timedelta(days=calendar.monthrange(year, number)[1]))
    span = RANGE.match(value)
    if span:
        try:
            first, last = date.fromisoformat(span.group(1)), date.fromisoformat(span.group(2))
        except ValueError as error:
            raise PeriodError(f"period {text!r}: {error}; give YYYY-MM-DD..YYYY-MM-DD") from None
        if last < first:
            raise PeriodError(f"period {text!r} ends before it starts; give --from before --to")
        return Period(value, first, last + timedelta(days=1))
    raise PeriodError(f"period {text!r} is not YYYY-MM (e.g. 2026-11) nor a range YYYY-MM-DD..YYYY-MM-DD")


def range_period(first: date, last: date) -> str:
    """The period text for `--from`/`--to`."""
    return f"{first.isoformat()}..{last.isoformat()}"


# ---- matching and classification (pure) -----------------------------------------------------


@dataclass(frozen=True)
class LedgerEntry:
    """What our ledger says of one source record of the flow."""

    record_id: int
    source_id: str
    status: str
    target_id: str | None
    reason: str = ""  # hold reason or last error
    written_amount: Decimal | None = None  # the amount of the source document as it was last read


def cents(value: Any) -> Decimal | None:
    """An amount as Decimal to the cent, or None when it is not a number."""
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value)).quantize(CENT)
    except (InvalidOperation, ValueError):
        return None


def classify(flow: str, entity: str, sources: Sequence[ReconDocument], targets: Sequence[ReconDocument],
             ledger: Iterable[LedgerEntry], counterpart_links: Mapping[str, str]) -> EntityTotals:
    """Match the period's source documents to its target documents and classify each difference.

    A source document's target is the one the ledger wrote (its target id), else the one carrying
    its source id, else the one with the same documented key. Held and failed records are
    reported as such (with their reason) whatever the target holds; a matched pair differs when
    its amounts differ to the cent, or its counterpart is not the one the source's is linked to.
    Target documents nothing matched are ours only if a ledger record wrote them (for a source
    document dated in another period); else they are "in target but not from us".
    """
    entries = list(ledger)
    by_source = {e.source_id: e for e in entries}
    by_target: dict[str, LedgerEntry] = {e.target_id: e for e in entries if e.target_id}
    target_by_key = {t.key: t for t in targets}
    target_by_source: dict[str, ReconDocument] = {}
    target_by_match: dict[str, ReconDocument] = {}
    for t in targets:
        if t.source_id:
            target_by_source.setdefault(t.source_id, t)
        if t.match_key:
            target_by_match.setdefault(t.match_key, t)
    used: set[str] = set()
    differences: list[Difference] = []
    matched = not_moved = ledger_count = 0
    ledger_total = Decimal(0)

    def find(s: ReconDocument, entry: LedgerEntry | None) -> ReconDocument | None:
        for candidate in ((target_by_key.get(entry.target_id) if entry and entry.target_id else None),
                          target_by_source.get(s.key), target_by_match.get(s.match_key) if s.match_key else None):
            if candidate is not None and candidate.key not in used:
                return candidate
        return None

    def diff(kind: str, s: ReconDocument, t: ReconDocument | None, entry: LedgerEntry | None, detail: str) -> None:
        differences.append(Difference(
            entity=entity, kind=kind, source_ref=s.key, target_ref=t.key if t else (entry.target_id if entry else None),
            source_amount=cents(s.amount), target_amount=cents(t.amount) if t else None,
            record_id=entry.record_id if entry else None, detail=detail, number=s.number,
            counterpart=s.counterpart or (t.counterpart if t else ""), on=s.on))

    for s in sources:
        entry = by_source.get(s.key)
        t = find(s, entry)
        if t is not None:
            used.add(t.key)
            matched += 1
        if entry is not None and entry.status in WRITTEN and entry.target_id:
            ledger_count += 1
            ledger_total += entry.written_amount if entry.written_amount is not None else cents(s.amount) or Decimal(0)
        status = entry.status if entry else None
        if status == "held":
            diff("held", s, t, entry, f"held: {entry.reason}" if entry and entry.reason else "held for a person")
            continue
        if status == "failed":
            diff("failed", s, t, entry, f"failed: {entry.reason}" if entry and entry.reason else "failed")
            continue
        if t is None:
            if status == "skipped" and entry is not None and not entry.target_id:
                not_moved += 1  # the flow decided there was nothing to move (its trail says why)
                continue
            diff("missing_in_target", s, None, entry, _missing_detail(entry))
            continue
        if cents(s.amount) != cents(t.amount):
            diff("amount_differs", s, t, entry, f"{s.amount} in the source, {t.amount} in the target")
        wanted = counterpart_links.get(s.counterpart_id) if s.counterpart_id else None
        if wanted and t.counterpart_id and wanted != t.counterpart_id:
            diff("vendor_differs", s, t, entry,
                 f"'{s.counterpart}' is linked to {wanted}; the target names {t.counterpart_id} '{t.counterpart}'")

    outside = 0
    for t in targets:
        if t.key in used:
            continue
        if t.key in by_target or (t.source_id and t.source_id in by_source):
            outside += 1  # ours, for a source document dated outside the period
            continue
        differences.append(Difference(
            entity=entity, kind="not_from_us", target_ref=t.key, target_amount=cents(t.amount), number=t.number,
            counterpart=t.counterpart, on=t.on,
            detail="in the target, dated in the period, and no record of this integration wrote it (keyed by hand?)"))

    differences.sort(key=lambda d: (KINDS.index(d.kind), d.on or date.min, d.number, d.source_ref or "", d.target_ref or ""))
    return EntityTotals(
        entity=entity, flow=flow, source_count=len(sources), source_total=_total(sources), target_count=len(targets),
        target_total=_total(targets), ledger_count=ledger_count, ledger_total=ledger_total.quantize(CENT),
        differences=differences, matched_count=matched, not_moved_count=not_moved, target_outside_period_count=outside)


def _missing_detail(entry: LedgerEntry | None) -> str:
    if entry is None:
        return "not synced yet: no ledger record (the next poll picks it up, or run mlconnector sync)"
    if entry.status in ("pending", "running"):
        return f"queued, not written yet ({entry.status})"
    if entry.status == "resolved":
        return f"resolved by hand: {entry.reason}" if entry.reason else "resolved by hand"
    return (f"the ledger says written as {entry.target_id}, but the target has no such document dated in the period "
            f"(deleted, or its date changed)")


def _total(documents: Iterable[ReconDocument]) -> Decimal:
    return sum((cents(d.amount) or Decimal(0) for d in documents), Decimal(0)).quantize(CENT)


# ---- reading both systems and the ledger -------------------------------------------------------


def reconcile(integration_id: str, period: str) -> ReconciliationReport:
    """The reconciliation of `integration_id` for `period` (`YYYY-MM`, or `YYYY-MM-DD..YYYY-MM-DD`)."""
    from mlconnector import engine
    from mlconnector.db.session import session_scope

    span = parse_period(period)
    with session_scope() as session:
        ctx = engine.context_for(session, integration_id)
        flows = [flow for flow in ctx.pair.ordered_flows() if flow.reconciler is not None]
        if not flows:
            raise NothingToReconcile(f"pair {ctx.pair.name} declares no reconciled flow; nothing to reconcile")
        entities = [_entity(ctx, flow, span) for flow in flows]
        pair = ctx.pair.name
    return ReconciliationReport(integration=integration_id, pair=pair, period=span.label,
                                generated_at=datetime.now(timezone.utc).replace(microsecond=0),
                                entities=entities, start=span.start, end=span.last)


def _entity(ctx: FlowContext, flow: Flow, span: Period) -> EntityTotals:
    reconciler: Reconciler = flow.reconciler  # type: ignore[assignment]
    sources = [d for d in reconciler.source_documents(ctx, span.start, span.end) if span.start <= d.on < span.end]
    targets = [d for d in reconciler.target_documents(ctx, span.start, span.end) if span.start <= d.on < span.end]
    entries = _ledger(ctx, flow, sources, targets)
    links = _links(ctx, reconciler.counterpart_kind) if reconciler.counterpart_kind else {}
    if reconciler.counterpart_flow:
        links.update(_written(ctx, reconciler.counterpart_flow))
    totals = classify(flow.name, reconciler.entity or flow.name, sources, targets, entries, links)
    return totals.model_copy(update={
        "source_system": flow.source, "target_system": flow.target, "source_date": reconciler.source_date,
        "target_date": reconciler.target_date, "target_scope": reconciler.scope(ctx)})


def _ledger(ctx: FlowContext, flow: Flow, sources: Sequence[ReconDocument],
            targets: Sequence[ReconDocument]) -> list[LedgerEntry]:
    """The ledger records of this flow for these documents: by source id, and by target id for
    target documents (a source document dated outside the period still makes them ours)."""
    from sqlalchemy import select

    from mlconnector.db.models import SyncRecord

    source_ids = sorted({d.key for d in sources} | {t.source_id for t in targets if t.source_id})
    target_ids = sorted({t.key for t in targets})
    found: dict[int, Any] = {}
    for column, values in ((SyncRecord.source_id, source_ids), (SyncRecord.target_id, target_ids)):
        for index in range(0, len(values), IN_CHUNK):
            rows = ctx.session.scalars(select(SyncRecord).where(
                SyncRecord.integration_id == ctx.integration.id, SyncRecord.flow == flow.name,
                column.in_(values[index:index + IN_CHUNK])))
            found.update({row.id: row for row in rows})
    return [LedgerEntry(row.id, row.source_id, row.status, row.target_id,
                        (row.hold_reason if row.status == "held" else row.last_error) or "",
                        _ledger_amount(flow.reconciler, row.payload)) for row in found.values()]


def _ledger_amount(reconciler: Reconciler | None, payload: Any) -> Decimal | None:
    """The amount of the source document as the ledger last read it: a source changed since its
    write shows as a ledger total apart from the source's."""
    if reconciler is None or not isinstance(payload, dict):
        return None
    try:
        return cents(reconciler.amount_of(payload))
    except (KeyError, TypeError, ValueError, ArithmeticError):  # a payload without the amount's fields
        return None


def _written(ctx: FlowContext, flow: str) -> dict[str, str]:
    """Source id -> target id of what a flow (the pair's vendors) has written."""
    from sqlalchemy import select

    from mlconnector.db.models import SyncRecord

    rows = ctx.session.execute(select(SyncRecord.source_id, SyncRecord.target_id).where(
        SyncRecord.integration_id == ctx.integration.id, SyncRecord.flow == flow, SyncRecord.status.in_(WRITTEN),
        SyncRecord.target_id.is_not(None)))
    return {source_id: target_id for source_id, target_id in rows}


def _links(ctx: FlowContext, kind: str) -> dict[str, str]:
    from mlconnector import links

    return {link.source_id: link.target_id for link in links.list_links(ctx.session, ctx.integration.id, kind)}


# ---- CSV ----------------------------------------------------------------------------------------

CSV_COLUMNS = ("integration", "pair", "period", "row", "entity", "flow", "kind", "number", "counterpart", "date",
               "source_ref", "target_ref", "source_amount", "target_amount", "record_id", "trail", "detail",
               "source_count", "source_total", "target_count", "target_total", "ledger_count", "ledger_total")


def trail_command(record_id: int | None) -> str:
    return f"mlconnector records show {record_id}" if record_id is not None else ""


def csv_rows(report: ReconciliationReport) -> list[dict[str, str]]:
    """The report as flat rows: a `totals` row per entity, then a `difference` row per difference."""
    base = {"integration": report.integration, "pair": report.pair, "period": report.period}
    rows: list[dict[str, str]] = []
    for e in report.entities:
        rows.append({**base, "row": "totals", "entity": e.entity, "flow": e.flow,
                     **{name: str(getattr(e, name)) for name in ("source_count", "source_total", "target_count",
                                                                 "target_total", "ledger_count", "ledger_total")}})
    for e in report.entities:
        for d in e.differences:
            rows.append({**base, "row": "difference", "entity": e.entity, "flow": e.flow, "kind": d.kind,
                         "number": d.number, "counterpart": d.counterpart, "date": d.on.isoformat() if d.on else "",
                         "source_ref": d.source_ref or "", "target_ref": d.target_ref or "",
                         "source_amount": "" if d.source_amount is None else str(d.source_amount),
                         "target_amount": "" if d.target_amount is None else str(d.target_amount),
                         "record_id": "" if d.record_id is None else str(d.record_id),
                         "trail": trail_command(d.record_id), "detail": d.detail})
    return [{column: row.get(column, "") for column in CSV_COLUMNS} for row in rows]


def to_csv(report: ReconciliationReport) -> str:
    """The report for the accountant's workbook: one header, totals rows, then difference rows."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(csv_rows(report))
    return out.getvalue()


def to_json(report: ReconciliationReport) -> str:
    """Stable JSON for scripts: amounts as strings to the cent, keys in the models' order."""
    return report.model_dump_json(indent=2)
