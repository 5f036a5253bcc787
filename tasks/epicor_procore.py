"""Epicor Kinetic -> Procore: the flows, declared.

vendors            Epicor vendors -> Procore's company vendor directory (first: documents wait for their vendor)
purchase_orders    Epicor POs (lines, releases) -> purchase order contracts on their project, flat line items
                   with cost codes and the company's line item type
ap_invoices        Epicor AP invoices -> invoice direct costs on their project, each line on the cost code
                   its GL account maps to (validated before anything is written; unmapped: held, named)

One way: nothing is written to Epicor. Epicor has no webhooks and no idempotency keys: every
flow polls from its persisted position (tasks/epicor_source.py), and every write first finds
its Procore record by the Epicor source id it carries (`origin_id`), then by its business key
(vendor + PO number, vendor + invoice number), and updates it instead of creating another.
The project, cost codes and line item types are Procore company data, read and cached here,
never assumed. Registered through the `mlconnector.pairs` entry point; importing starts nothing.
"""

from __future__ import annotations

import threading
import time
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from mappings import epicor_procore as m
from mappings import epicor_values as ev
from mlconnector import ledger, releases
from mlconnector.decisions import Decision
from mlconnector.flows import (DocumentSummary, Flow, FlowContext, MappedRecord, Nothing, Pair, PairDemo, Plan,
                               ReconDocument, Reconciler, WriteResult)
from mlconnector.holds import Hold, TargetCondition
from mlconnector.http import NotFoundError
from mlconnector.policies import master_data_changes
from mlconnector.resolver import Counterpart, Need
from tasks.epicor_source import (EPICOR, EpicorApInvoices, EpicorPolled, EpicorPurchaseOrders, epicor_ap_invoices,
                                 epicor_purchase_orders, fetch_vendor, plain, unmapped_account_plants)

if TYPE_CHECKING:
    from mlconnector.harness import SandboxSet

PAIR_NAME = "epicor-procore"
PROCORE = "procore"
POLL_SECONDS = 7 * 86400.0  # weekly, the usual procurement cycle (poll_seconds per flow overrides it)
DEMO_SPIKE_LIMIT = 250  # the demo app's spike window (per 10 s)
REFERENCE_TTL_SECONDS = 60.0  # projects, cost codes and line item types reused across records for a minute
# Where payments go: changed on an existing Procore vendor only under `overwrite`.
VENDOR_PROTECTED = frozenset({"address", "city", "state_code", "zip", "country_code"})


def _config(ctx: FlowContext) -> m.EpicorProcoreConfig:
    return ctx.config  # type: ignore[return-value]


def _procore(ctx: FlowContext) -> Any:
    return ctx.connectors[PROCORE]


# ---- Procore company data: projects, cost codes, line item types -------------------------------


class _Reference:
    """Company data read from Procore, per integration, reused for a minute: a new project,
    cost code or type appears within a minute, and a burst of records reads each once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[tuple[str, ...], tuple[float, Any]] = {}

    def _cached(self, key: tuple[str, ...], read: Callable[[], Any]) -> Any:
        with self._lock:
            kept = self._kept.get(key)
        if kept and time.monotonic() - kept[0] < REFERENCE_TTL_SECONDS:
            return kept[1]
        value = read()
        with self._lock:
            self._kept[key] = (time.monotonic(), value)
        return value

    def projects(self, ctx: FlowContext) -> list[m.ProjectRef]:
        def read() -> list[m.ProjectRef]:
            procore = _procore(ctx)
            scope = set(procore.project_ids())
            return [m.ProjectRef(p.id, p.name, p.origin_id, p.project_number) for p in procore.list_projects()
                    if p.id in scope]
        return self._cached((ctx.integration.id, "projects"), read)

    def cost_codes(self, ctx: FlowContext, project_id: int) -> dict[str, int]:
        """Full code (e.g. 03-300) -> Procore id, for one project."""
        def read() -> dict[str, int]:
            return {c.full_code or c.code or "": c.id for c in _procore(ctx).list_cost_codes(project_id)}
        return self._cached((ctx.integration.id, "cost_codes", str(project_id)), read)

    def line_item_types(self, ctx: FlowContext) -> list[m.LineItemTypeRef]:
        def read() -> list[m.LineItemTypeRef]:
            return [m.LineItemTypeRef(t.id, t.code, t.base_type) for t in _procore(ctx).list_line_item_types()]
        return self._cached((ctx.integration.id, "line_item_types"), read)


REFERENCE = _Reference()


def vendor_written(vendor_num: str) -> TargetCondition:
    """What a document waiting for its vendor waits for: the vendors flow writing it."""
    return TargetCondition(PROCORE, "vendor", vendor_num, "written")


def _written_vendor(ctx: FlowContext, vendor_num: str) -> int | None:
    """The Procore vendor id the vendors flow wrote for this Epicor vendor (the ledger; no call)."""
    key = ledger.written_targets(ctx.session, ctx.integration.id, "vendors", [vendor_num]).get(vendor_num)
    return int(key["id"]) if key and key.get("id") is not None else None


def _unchanged(plan: Plan) -> WriteResult:
    return WriteResult(plan.target_id or "", "unchanged", 200, {"reason": plan.detail}, {"id": plan.target_id})


# ---- vendors -----------------------------------------------------------------------------------


class VendorsHandler(EpicorPolled):
    """Epicor vendors -> the Procore company vendor directory, written before any document names them."""

    entity = "vendors"
    noun = "vendor"

    def source_id(self, row: Mapping[str, Any]) -> str:
        return str(row["VendorNum"])

    def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any] | None:
        return fetch_vendor(ctx, source_id)

    def summarize(self, payload: dict[str, Any]) -> DocumentSummary:
        return DocumentSummary(f"vendor {payload.get('VendorID') or payload.get('VendorNum') or ''}", payload.get("Name") or "")

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        return m.map_vendor(source, _config(ctx))

    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        """Found by the ledger's id, else by origin_id; an existing vendor is master data and
        changes only as `vendor_write_policy` allows."""
        document: m.ProcoreDocument = mapped.document  # type: ignore[assignment]
        procore = _procore(ctx)
        existing = None
        if known_target_id:
            try:
                existing = procore.get("vendors", int(known_target_id))
            except NotFoundError:
                existing = None
        how = "its Procore id"
        if existing is None:
            existing, how = procore.find_vendor_by_origin_id(document.origin_id, include_inactive=False), "origin_id"
        if existing is None:
            return Plan("create", None, detail=f"{document.label} in the company vendor directory")
        target = str(existing.id)
        policy = _config(ctx).vendor_write_policy
        current = plain(existing)
        diff = master_data_changes({k: current.get(k) for k in document.header}, document.header, policy, VENDOR_PROTECTED)
        withheld = f"{len(diff.withheld)} field(s) differ, left as Procore has them ({policy})" if diff.withheld else ""
        if not diff.changes:
            return Plan("unchanged", target, detail=withheld or f"found by {how}, equal")
        return Plan("update", target, diff.changes, detail=withheld)

    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        document: m.ProcoreDocument = mapped.document  # type: ignore[assignment]
        procore = _procore(ctx)
        if plan.action == "unchanged":
            result = _unchanged(plan)
        elif plan.action == "create":
            done = procore.upsert_vendor(document.header, document.origin_id, looked_up=True)
            result = WriteResult(str(done.record.id), done.action, 201 if done.action == "created" else 200,
                                 {"origin_id": document.origin_id}, {"id": done.record.id})
        else:
            fields = {k: new for k, (_, new) in plan.changes.items()}
            done = procore.upsert_vendor(fields, document.origin_id, existing_id=int(plan.target_id or 0))
            result = WriteResult(str(done.record.id), "updated", 200, {"fields": sorted(fields)}, {"id": done.record.id})
        vendor_num = str(mapped.external_key["VendorNum"])
        # Documents waiting for this vendor are re-queued when this write commits.
        releases.release(ctx.session, ctx.integration.id, [vendor_written(vendor_num)],
                         f"vendor {result.target_id} is in Procore")
        return result


# ---- documents ---------------------------------------------------------------------------------


class DocumentHandler(EpicorPolled):
    """POs and AP invoices: they need their vendor in Procore first, and a project."""

    children: tuple[str, ...] = ()

    def vendor_num(self, source: Mapping[str, Any]) -> str:
        return str(source.get("VendorNum") or "")

    def needs(self, ctx: FlowContext, source: Any) -> list[Need] | Hold:
        vendor_num = self.vendor_num(source)
        if not vendor_num or vendor_num == "0":
            return Hold(reason=f"{self.noun} {self.source_id(source)} names no Epicor vendor")
        if _written_vendor(ctx, vendor_num) is None:
            return self._vendor_hold(source, vendor_num)
        return []

    def _vendor_hold(self, source: Mapping[str, Any], vendor_num: str) -> Hold:
        name = str(source.get("VendorName") or source.get("VendorNumName") or "")
        return Hold(reason=(f"{self.noun} {self.source_id(source)} waits for its vendor: Epicor vendor {vendor_num} "
                            f"'{name}' is not in Procore yet; it follows when the vendors flow writes it"),
                    releases=(vendor_written(vendor_num),),
                    decisions=[Decision("vendor", name, "not written to Procore yet")])

    def conditions_met(self, ctx: FlowContext, conditions: list[TargetCondition]) -> set[TargetCondition]:
        """Vendors the vendors flow has written since (the ledger; no API call)."""
        wanted = [c for c in conditions if c.system == PROCORE and c.entity == "vendor" and c.condition == "written"]
        done = ledger.written_targets(ctx.session, ctx.integration.id, "vendors", [c.target_id for c in wanted])
        return {c for c in wanted if c.target_id in done}

    def lookups(self, ctx: FlowContext, source: Mapping[str, Any], label: str) -> tuple[int, m.ProjectRef, dict[str, int],
                                                                                         m.LineItemTypeRef, list[Decision]] | Hold:
        """The vendor's Procore id, the project by the declared rule, its cost codes and the
        line item type: everything the mapping needs, read from the ledger and Procore."""
        config = _config(ctx)
        vendor_num = self.vendor_num(source)
        vendor_id = _written_vendor(ctx, vendor_num)
        if vendor_id is None:
            return self._vendor_hold(source, vendor_num)
        project = m.resolve_project(label, m.project_references(source, config, self.children), config,
                                    REFERENCE.projects(ctx))
        if isinstance(project, Hold):
            return project
        kind = m.line_item_type(config, REFERENCE.line_item_types(ctx))
        if isinstance(kind, Hold):
            return kind
        return vendor_id, project[0], REFERENCE.cost_codes(ctx, project[0].id), kind[0], [project[1], kind[1]]

    @staticmethod
    def with_decisions(outcome: MappedRecord | Hold, decisions: list[Decision]) -> MappedRecord | Hold:
        if isinstance(outcome, MappedRecord):
            outcome.decisions[:0] = decisions
        return outcome

    def plan_document(self, document: m.ProcoreDocument, existing: dict[str, Any] | None, how: str) -> Plan:
        if existing is None:
            return Plan("create", None, detail=f"{document.label} on project {document.project_id}, "
                                               f"{len(document.lines)} line item(s)")
        changes = dict(m.differences(existing, document.header))
        changes.update(m.line_differences(existing.get("line_items") or [], document.lines))
        if existing.get("origin_id") != document.origin_id:
            changes["origin_id"] = (existing.get("origin_id"), document.origin_id)
        target = str(existing["id"])
        if not changes:
            return Plan("unchanged", target, detail=f"found by {how}, equal")
        return Plan("update", target, changes, detail=f"found by {how}")


class PurchaseOrdersHandler(EpicorPurchaseOrders, DocumentHandler):
    """Epicor POs -> Procore purchase order contracts, one per PO, updated in place when the PO changes."""

    children = ("PORels", "PODetails")
    with_releases = True  # the delivery schedule becomes line items

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        found = self.lookups(ctx, source, f"PO {source.get('PONum')}")
        if isinstance(found, Hold):
            return found
        vendor_id, project, codes, kind, decisions = found
        return self.with_decisions(m.map_commitment(source, _config(ctx), vendor_id, project, codes, kind), decisions)

    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        """Found by the ledger's id, else origin_id, else vendor + PO number (a contract someone
        entered by hand), before anything is created."""
        document: m.ProcoreDocument = mapped.document  # type: ignore[assignment]
        procore = _procore(ctx)
        existing, how = None, "its Procore id"
        if known_target_id:
            try:
                existing = procore.get("purchase_order_contracts", int(known_target_id), document.project_id)
            except NotFoundError:
                existing = None
        if existing is None:
            existing, how = procore.find_commitment_by_origin_id(document.origin_id, document.project_id), "origin_id"
        if existing is None:
            existing, how = procore.find_commitment(int(document.header["vendor_id"]), document.header["number"],
                                                    document.project_id), "vendor + PO number"
        return self.plan_document(document, plain(existing) if existing is not None else None, how)

    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        document: m.ProcoreDocument = mapped.document  # type: ignore[assignment]
        if plan.action == "unchanged":
            return _unchanged(plan)
        done = _procore(ctx).upsert_purchase_order_contract(
            int(document.project_id or 0), document.header, document.lines, document.origin_id,
            existing_id=int(plan.target_id) if plan.target_id else None, looked_up=True)
        return WriteResult(str(done.record.id), done.action, 201 if done.action == "created" else 200,
                           {"project_id": document.project_id, "line_items": len(done.line_items), "plan": plan.detail},
                           {"id": done.record.id, "project_id": document.project_id})


class ApInvoicesHandler(EpicorApInvoices, DocumentHandler):
    """Epicor AP invoices -> Procore invoice direct costs, every line on the cost code its GL
    account maps to; the map is validated before anything is read from or written to Procore."""

    children = ("APInvDtls",)

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        config = _config(ctx)
        label = m.invoice_label(source)
        unmapped = m.unmapped_accounts(source, config)
        if unmapped:
            return m.cost_code_hold(label, unmapped, {}, None)
        found = self.lookups(ctx, source, label)
        if isinstance(found, Hold):
            return found
        vendor_id, project, codes, kind, decisions = found
        return self.with_decisions(m.map_direct_cost(source, config, vendor_id, project, codes, kind), decisions)

    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        document: m.ProcoreDocument = mapped.document  # type: ignore[assignment]
        procore = _procore(ctx)
        project_id = int(document.project_id or 0)
        found_id, how = (int(known_target_id), "its Procore id") if known_target_id else (None, "")
        if found_id is None:
            hit = procore.find_direct_cost_by_origin_id(project_id, document.origin_id)
            how = "origin_id"
            if hit is None:
                hit = procore.find_direct_cost_by_invoice(project_id, int(document.header["vendor_id"]),
                                                          document.header["invoice_number"])
                how = "vendor + invoice number"
            found_id = hit.id if hit is not None else None
        existing = None
        if found_id is not None:
            try:  # the show answer carries the lines; the list does not
                existing = plain(procore.get("direct_costs", found_id, project_id))
            except NotFoundError:
                if known_target_id:
                    return self.plan(ctx, mapped, None)
        return self.plan_document(document, existing, how)

    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        document: m.ProcoreDocument = mapped.document  # type: ignore[assignment]
        if plan.action == "unchanged":
            return _unchanged(plan)
        done = _procore(ctx).create_or_update_direct_cost(
            int(document.project_id or 0), document.header, document.lines, document.origin_id,
            existing_id=int(plan.target_id) if plan.target_id else None, looked_up=True)
        return WriteResult(str(done.record.id), done.action, 201 if done.action == "created" else 200,
                           {"project_id": document.project_id, "line_items": len(done.line_items), "plan": plan.detail},
                           {"id": done.record.id, "project_id": document.project_id})


# ---- month-end reconciliation ---------------------------------------------------------------------


def _po_total(po: dict[str, Any]) -> Decimal:
    """What a contract should total: the sum of the PO's live lines (the mapping's flat lines)."""
    return sum((row["amount"] for row in m.flat_po_lines(po)), Decimal(0))


def _invoice_total(invoice: dict[str, Any]) -> Decimal:
    """What a direct cost should total: the sum of the invoice's lines, as the mapping writes them."""
    lines = ev.children(invoice, "APInvDtls")
    if not lines:
        return ev.money(invoice.get("InvoiceAmt"))
    return sum((ev.money(ev.amount(line, "ExtCost")) for line in lines), Decimal(0))


class ProcoreDocuments(Reconciler):
    """Epicor documents by their own date; Procore's in every project in scope, by theirs, keyed
    by Procore id as written and carrying the Epicor source id in `origin_id`. Procore's lists
    take no date filter for these fields: each project's list is read and filtered here."""

    procore_entity = ""
    procore_date = ""
    origin_kind = ""
    counterpart_flow = "vendors"

    def target_documents(self, ctx: FlowContext, start: date, end: date) -> Iterator[ReconDocument]:
        procore, prefix = _procore(ctx), f"{_config(ctx).origin_prefix}:{self.origin_kind}:"
        for project_id in procore.project_ids():
            for record in procore.iter_all(self.procore_entity, project_id):
                row = plain(record)
                when = row.get(self.procore_date)
                if not when:
                    continue
                origin = str(row.get("origin_id") or "")
                vendor = row.get("vendor") or {}
                yield ReconDocument(str(row["id"]), self.number(row), ev.money(row.get("grand_total")),
                                    date.fromisoformat(str(when)[:10]),
                                    row.get("vendor_name") or vendor.get("name") or "",
                                    str(row.get("vendor_id") or vendor.get("id") or ""),
                                    source_id=origin.removeprefix(prefix) if origin.startswith(prefix) else None,
                                    match_key=self.number(row) or None)

    def number(self, row: dict[str, Any]) -> str:
        raise NotImplementedError

    def scope(self, ctx: FlowContext) -> str:
        return f"Procore {self.procore_entity.replace('_', ' ')} of the projects in scope"


class ContractsReconciler(ProcoreDocuments):
    entity = "purchase orders -> purchase order contracts"
    source_date, target_date = "Epicor OrderDate", "Procore contract_date"
    procore_entity, procore_date, origin_kind = "purchase_order_contracts", "contract_date", "po"

    def source_documents(self, ctx: FlowContext, start: date, end: date) -> Iterator[ReconDocument]:
        return epicor_purchase_orders(ctx, start, end, _po_total)

    def amount_of(self, payload: Mapping[str, Any]) -> Decimal | None:
        return _po_total(dict(payload))

    def number(self, row: dict[str, Any]) -> str:
        return str(row.get("number") or "")


class DirectCostsReconciler(ProcoreDocuments):
    entity = "AP invoices -> invoice direct costs"
    source_date, target_date = "Epicor InvoiceDate", "Procore direct_cost_date"
    procore_entity, procore_date, origin_kind = "direct_costs", "direct_cost_date", "apinvoice"

    def source_documents(self, ctx: FlowContext, start: date, end: date) -> Iterator[ReconDocument]:
        return epicor_ap_invoices(ctx, start, end, _invoice_total)

    def amount_of(self, payload: Mapping[str, Any]) -> Decimal | None:
        return _invoice_total(dict(payload))

    def number(self, row: dict[str, Any]) -> str:
        return str(row.get("invoice_number") or "")


# ---- the pair ----------------------------------------------------------------------------------

# Epicor's seeded natural accounts -> the Procore sandbox's seeded cost codes (CSI divisions).
SANDBOX_CODES = {"1000": "01-100", "1200": "01-500", "2000": "01-100", "5000": "03-300", "5100": "05-500",
                 "5200": "01-100", "6000": "09-900", "6100": "01-500", "6200": "01-500", "6300": "01-500",
                 "6400": "01-100", "6500": "01-500", "7000": "26-100", "7100": "01-100"}


def sandbox_config(sandboxes: "SandboxSet") -> dict[str, Any]:
    """A working config against the sandboxes: Epicor's seeded GL accounts each on a seeded
    Procore cost code, documents without a job reference on the first active project, line
    items on the company's materials type, changes read with $top=100 / $skip pages."""
    import requests

    from sandboxes.epicor import COST_CENTERS, NATURAL_ACCOUNTS

    projects = requests.get(f"{sandboxes.url(PROCORE)}/_sandbox/entities/projects", timeout=10).json()
    active = [p["id"] for p in sorted(projects, key=lambda p: p["id"]) if p.get("active") is not False]
    by_account = {f"{account}-{center}": SANDBOX_CODES[account] for account, _ in NATURAL_ACCOUNTS
                  for center, _ in COST_CENTERS}
    return {
        "systems": {EPICOR: {**sandboxes.config(EPICOR), "change_paging": "skip", "page_size": 100},
                    PROCORE: sandboxes.config(PROCORE)},
        "vendor_write_policy": "overwrite",
        "projects": {"default": active[0] if active else None},
        "cost_codes": {"by_account": by_account, "po_lines": "05-500"},
    }


def demo_summary(harness: Any, integration: str) -> str:
    """The demo's last word, read from Procore's own API: the records this demo's ledger says
    it wrote, each found there by its id."""
    from sqlalchemy import select

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        rows = session.execute(select(SyncRecord.flow, SyncRecord.target_id).where(
            SyncRecord.integration_id == integration, SyncRecord.status == "written")).all()
    procore = harness.connector(PROCORE)
    found = {}
    for flow, entity in (("vendors", "vendors"), ("purchase_orders", "purchase_order_contracts"), ("ap_invoices", "direct_costs")):
        ids = {target for f, target in rows if f == flow and target}
        listed = {str(record.id) for record in procore.iter_all(entity)} & ids if ids else set()
        if entity == "vendors":  # the list shows active vendors only; an inactive one is read by its id
            listed |= {i for i in ids - listed if _exists(lambda i=i: procore.get("vendors", int(i)))}
        found[flow] = len(listed)
    return (f"Procore now holds {found['vendors']} vendor(s), {found['purchase_orders']} purchase order contract(s) and "
            f"{found['ap_invoices']} direct cost(s) written by this demo, read back through its REST API.")


def _exists(read: Callable[[], Any]) -> bool:
    try:
        read()
        return True
    except NotFoundError:
        return False


def demo_plants(stage: Any) -> list[Any]:
    """The GL account most invoice lines use is left out of the cost-code map: its direct
    costs are held naming it, then mapped as a person would and written."""
    return unmapped_account_plants(stage, "a GL account with no Procore cost code", "cost_codes")


PAIR = Pair(
    name=PAIR_NAME,
    source=EPICOR,
    target=PROCORE,
    description="Epicor vendors, POs and AP invoices -> Procore vendors, purchase order contracts and direct costs; "
                "GL account -> cost code.",
    config_model=m.EpicorProcoreConfig,
    sandbox_config=sandbox_config,
    # Procore's limits vary per app: the demo's app has a larger spike window (both still
    # enforced and paced), so it does not spend its minute waiting on the docs' example of 25.
    demo=PairDemo("Epicor Kinetic -> Procore", demo_summary, order=40,
                  overrides={"systems": {PROCORE: {"spike_limit": DEMO_SPIKE_LIMIT}}},
                  sandboxes={PROCORE: {"spike_limit": DEMO_SPIKE_LIMIT}}, plant=lambda stage: demo_plants(stage)),
    flows=(
        Flow(name="vendors", source=EPICOR, source_entity="vendors", target=PROCORE, target_entity="vendors",
             handler=VendorsHandler(), poll_seconds=POLL_SECONDS),
        Flow(name="purchase_orders", source=EPICOR, source_entity="purchase_orders", target=PROCORE,
             target_entity="purchase_order_contracts", handler=PurchaseOrdersHandler(), poll_seconds=POLL_SECONDS,
             prerequisites=("vendors",), reconciler=ContractsReconciler()),
        Flow(name="ap_invoices", source=EPICOR, source_entity="ap_invoices", target=PROCORE, target_entity="direct_costs",
             handler=ApInvoicesHandler(), poll_seconds=POLL_SECONDS, prerequisites=("vendors",),
             reconciler=DirectCostsReconciler()),
    ),
)
