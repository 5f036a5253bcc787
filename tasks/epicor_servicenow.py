"""Epicor Kinetic -> ServiceNow (Source-to-Pay): the flows, declared.

vendors            Epicor vendors -> ServiceNow suppliers (first: documents wait for their supplier)
purchase_orders    Epicor POs with their lines -> the S2P inbound order staging tables (status changes follow)
ap_invoices        Epicor AP invoices with their lines -> the S2P inbound invoice staging tables, each line
                   on the ServiceNow cost center its GL account maps to

One way: nothing is written to Epicor. Epicor has no webhooks: every flow polls, POs and
invoices by ChangeDate, vendors by SysRevID (the table has no ChangeDate), positions persisted
so an idle poll costs one Epicor call per flow. A stock ServiceNow instance has no custom
correlation column and drops unknown columns silently, so every write first finds its target
by the ledger's stored sys_id or by documented fields, creates through the Import Set API
only when there is none, and changes an existing record through the Table API. Registered
through the `mlconnector.pairs` entry point (pyproject.toml); importing this module starts nothing.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from connectors.servicenow import WriteResult as StagedResult
from mappings import epicor_servicenow as m
from mappings import epicor_values as ev
from mlconnector import ledger, links, locks, releases
from mlconnector.decisions import Decision
from mlconnector.flows import (DocumentSummary, Flow, FlowContext, MappedRecord, Nothing, Pair, PairDemo, Plan,
                               ReconDocument, Reconciler, WriteResult)
from mlconnector.holds import ConfigNeeded, Hold, LinkNeeded, TargetCondition
from mlconnector.http import FatalError, NotFoundError
from mlconnector.policies import master_data_changes
from mlconnector.resolver import Counterpart, CounterpartKind, Need, TargetRecord
from tasks.epicor_source import EpicorApInvoices, EpicorPurchaseOrders
from tasks.epicor_source import EpicorPolled as EpicorSourced
from tasks.epicor_source import epicor, epicor_ap_invoices, epicor_purchase_orders, plain, unmapped_account_plants

if TYPE_CHECKING:
    from mlconnector.harness import SandboxSet

PAIR_NAME = "epicor-servicenow"
EPICOR, SN = "epicor", "servicenow"
POLL_SECONDS = 300.0  # the customer's cadence (poll_seconds per flow overrides it)
COST_CENTER_TTL_SECONDS = 60.0  # cost center look-ups reused across records for a minute
# Where payments go and who is taxed: changed on an existing supplier only under `overwrite`.
SUPPLIER_PROTECTED = frozenset({"street", "city", "state", "zip", "country", "tax_id"})
# A document's lines: their kind, the column naming their header, the column naming each line.
LINE_TABLES = {"supplier": ("supplier_payment", "supplier", "bank_account_number"),
               "purchase_order": ("purchase_order_line", "purchase_order", "line_number"),
               "invoice": ("invoice_line", "invoice", "line_number")}
ACTION_WORDS = {"inserted": "created", "updated": "updated"}


def _config(ctx: FlowContext) -> m.EpicorServiceNowConfig:
    return ctx.config  # type: ignore[return-value]


def _sn(ctx: FlowContext) -> Any:
    return ctx.connectors[SN]


# ---- reference data: ServiceNow cost centers -----------------------------------------------------


class _CostCenters:
    """Configured cost center values -> their ServiceNow sys_ids (None: the instance has none),
    per integration, reused for a minute."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: dict[tuple[str, str], tuple[float, str | None]] = {}

    def lookup(self, ctx: FlowContext, value: str) -> str | None:
        key = (ctx.integration.id, value)
        with self._lock:
            cached = self._found.get(key)
        if cached and time.monotonic() - cached[0] < COST_CENTER_TTL_SECONDS and cached[1] is not None:
            return cached[1]
        found = _sn(ctx).find_cost_center(account_number=value)
        sys_id = found.sys_id if found is not None else None
        with self._lock:
            self._found[key] = (time.monotonic(), sys_id)
        return sys_id


COST_CENTERS = _CostCenters()


# ---- counterparts: suppliers ---------------------------------------------------------------------


class ServiceNowSuppliers(CounterpartKind):
    """Epicor vendors and the ServiceNow suppliers they are. By id: the supplier the vendors
    flow wrote for that vendor (the ledger's sys_id); by name: a supplier of the same name."""

    kind = "supplier"
    source_system = EPICOR
    target_system = SN
    noun = "supplier"

    def _table(self, ctx: FlowContext) -> str:
        return _sn(ctx).target_table("supplier")

    def _record(self, row: dict[str, Any]) -> TargetRecord:
        return TargetRecord(str(row["sys_id"]), str(row.get("name") or ""), "", row)

    def match_by_key(self, ctx: FlowContext, need: Need, by: str) -> list[TargetRecord]:
        written = ledger.written_targets(ctx.session, ctx.integration.id, "vendors", [need.source_id]).get(need.source_id)
        if not written or not written.get("sys_id"):
            return []
        found = self.get_target(ctx, str(written["sys_id"]))
        return [found] if found is not None else []

    def match_by_name(self, ctx: FlowContext, need: Need) -> list[TargetRecord]:
        if not need.source_name:
            return []
        rows = _sn(ctx).find_records(self._table(ctx), {"name": need.source_name})
        return [self._record(r) for r in rows if str(r.get("active", "true")) != "false"]

    def create(self, ctx: FlowContext, need: Need) -> TargetRecord:
        vendor = plain(epicor(ctx).get_vendor(int(need.source_id), with_banks=True))
        if not vendor:
            raise NotFoundError(f"Epicor vendor {need.source_id} not found", vendor=EPICOR, status=404)
        document: m.StagedDocument = m.map_supplier(vendor, _config(ctx)).document  # type: ignore[assignment]
        result = WRITES.write(ctx, document, Plan("create", None))  # with its payment details
        if result.detail.get("import_status") or not result.target_id:
            raise FatalError(f"supplier '{document.header.keys['name']}' was not created: "
                             f"{result.detail.get('reason') or 'no reason given'}", vendor=SN)
        return TargetRecord(result.target_id, document.header.keys["name"])

    def get_target(self, ctx: FlowContext, target_id: str) -> TargetRecord | None:
        row = _sn(ctx).get_record(self._table(ctx), target_id)
        return self._record(row) if row else None

    def get_source(self, ctx: FlowContext, source_id: str) -> TargetRecord | None:
        vendor = plain(epicor(ctx).get_vendor(int(source_id)))
        return TargetRecord(str(vendor["VendorNum"]), vendor.get("Name") or "", vendor.get("VendorID") or "", vendor) if vendor else None

    def search(self, ctx: FlowContext, text: str) -> list[TargetRecord]:
        return [self._record(r) for r in _sn(ctx).query(self._table(ctx), f"nameLIKE{text.strip()}", limit=50)]


SUPPLIERS = ServiceNowSuppliers()


def supplier_written(vendor_num: str) -> TargetCondition:
    """What a document waiting for its supplier waits for: the vendors flow writing it."""
    return TargetCondition(SN, "supplier", vendor_num, "written")


# ---- writing a staged document idempotently ------------------------------------------------------


class StagedWrites:
    """Create through the Import Set API, change through the Table API, never twice.

    The target is found first: by the sys_id the ledger stored for this record, else by its
    documented key fields. Only when there is none is a staging row sent, and the row's
    result read: `error` fails the record with the transform's message (replayable),
    `ignored` / `skipped` are reported as such. Lines are found under their header by line
    number, so a write interrupted between lines is completed, not repeated."""

    @staticmethod
    def find(ctx: FlowContext, document: m.StagedDocument, known_target_id: str | None) -> dict[str, Any] | None:
        sn = _sn(ctx)
        table = sn.target_table(document.kind)
        if known_target_id:
            row = sn.get_record(table, known_target_id)
            if row is not None:
                return row
        return sn.find_record(table, document.header.keys)

    @staticmethod
    def lines(ctx: FlowContext, document: m.StagedDocument, header_id: str) -> dict[str, dict[str, Any]]:
        if document.kind not in LINE_TABLES:
            return {}
        kind, parent, key = LINE_TABLES[document.kind]
        rows = _sn(ctx).find_records(_sn(ctx).target_table(kind), {parent: header_id})
        found: dict[str, dict[str, Any]] = {}
        for row in rows:
            found.setdefault(str(row.get(key) or ""), row)
        return found

    @staticmethod
    def line_key(document: m.StagedDocument, line: m.StagedRow) -> str:
        return line.keys[LINE_TABLES[document.kind][2]]

    @classmethod
    def line_label(cls, document: m.StagedDocument, line: m.StagedRow) -> str:
        """How a plan names a line: its own label, else `line <number>`."""
        return line.label or f"line {cls.line_key(document, line)}"

    @classmethod
    def is_line_change(cls, document: m.StagedDocument, change: str) -> bool:
        return any(change == label or change.startswith(label + " ")
                   for label in (cls.line_label(document, l) for l in document.lines))

    def plan(self, ctx: FlowContext, document: m.StagedDocument, known_target_id: str | None) -> Plan:
        existing = self.find(ctx, document, known_target_id)
        if existing is None:
            count = f", {len(document.lines)} line(s)" if document.lines else ""
            return Plan("create", None, detail=f"{document.label} through the Import Set API{count}")
        target = str(existing["sys_id"])
        changes: dict[str, tuple[Any, Any]] = dict(m.differences(existing, document.header.target))
        current_lines = self.lines(ctx, document, target)
        for line in document.lines:
            label, row = self.line_label(document, line), current_lines.get(self.line_key(document, line))
            if row is None:
                if line.create:
                    changes[label] = (None, "missing in ServiceNow")
                continue
            for name, (old, new) in m.differences(row, line.target).items():
                changes[f"{label} {name}"] = (old, new)
        if not changes:
            return Plan("unchanged", target, detail=f"found by {'its sys_id' if known_target_id == target else 'its key fields'}, equal")
        return Plan("update", target, changes)

    def write(self, ctx: FlowContext, document: m.StagedDocument, plan: Plan) -> WriteResult:
        sn = _sn(ctx)
        table = sn.target_table(document.kind)
        if plan.action == "unchanged":
            return WriteResult(plan.target_id or "", "unchanged", 200, {"reason": plan.detail}, {"sys_id": plan.target_id})
        if plan.action == "create":
            # Two source records may name one target (near-duplicate vendors of one name):
            # one creates it while the other waits, then finds it and leaves it as it is.
            locks.hold_until_commit(ctx.session, f"servicenow-create:{ctx.integration.id}:{document.kind}:"
                                                 f"{json.dumps(document.header.keys, sort_keys=True)}")
            existing = self.find(ctx, document, None)
            if existing is not None:
                target = str(existing["sys_id"])
                return WriteResult(target, "unchanged", 200, {"reason": "created meanwhile for another source record"},
                                   {"sys_id": target})
            staged = sn.import_row(document.kind, document.header.staging)
            if staged.action in ("ignored", "skipped") or not staged.sys_id:
                return self._not_written(document, staged)
            header_id, action = staged.sys_id, ACTION_WORDS.get(staged.action, staged.action)
            current = sn.get_record(table, header_id, fields=tuple(document.header.target)) or {}
            fix = m.differences(current, document.header.target)  # what the transform set otherwise (status)
            if fix:
                sn.patch_record(table, header_id, {k: v for k, (_, v) in fix.items()})
            current_lines = self.lines(ctx, document, header_id) if staged.action == "updated" else {}
            planned_lines = None
        else:
            header_id, action = plan.target_id or "", "updated"
            header_changes = {k: v for k, (_, v) in plan.changes.items() if not self.is_line_change(document, k)}
            if header_changes:
                sn.patch_record(table, header_id, header_changes)
            current_lines = self.lines(ctx, document, header_id)
            planned_lines = {label for label in (self.line_label(document, l) for l in document.lines)
                             if any(k == label or k.startswith(label + " ") for k in plan.changes)}
        line_actions = self._write_lines(ctx, document, header_id, current_lines, planned_lines)
        detail: dict[str, Any] = {"lines": line_actions} if line_actions else {}
        return WriteResult(header_id, action, 201 if action == "created" else 200, detail, {"sys_id": header_id})

    def _write_lines(self, ctx: FlowContext, document: m.StagedDocument, header_id: str,
                     current: Mapping[str, dict[str, Any]], planned: set[str] | None) -> dict[str, str]:
        """Every line of a new document; on an update only the lines the plan changes (a
        supplier's payment details change only as its write policy allows)."""
        if document.kind not in LINE_TABLES:
            return {}
        sn = _sn(ctx)
        kind, parent, _ = LINE_TABLES[document.kind]
        table = sn.target_table(kind)
        done: dict[str, str] = {}
        for line in document.lines:
            label = self.line_label(document, line)
            number = label if line.label else self.line_key(document, line)  # never an account number in full
            if planned is not None and label not in planned:
                continue
            row = current.get(self.line_key(document, line))
            if row is None and not line.create:
                continue
            if row is None:
                staged = sn.import_row(kind, {**line.staging, parent: header_id})
                if staged.action in ("ignored", "skipped") or not staged.sys_id:
                    raise FatalError(f"{document.label} {label} was {staged.action} by the transform "
                                     f"{staged.message and '(' + staged.message + ')'}; the document is incomplete",
                                     vendor=SN, endpoint=f"POST import/{kind}")
                done[number] = ACTION_WORDS.get(staged.action, staged.action)
                continue
            changes = m.differences(row, line.target)
            if changes:
                sn.patch_record(table, str(row["sys_id"]), {k: v for k, (_, v) in changes.items()})
                done[number] = "updated"
        return done

    @staticmethod
    def _not_written(document: m.StagedDocument, staged: StagedResult) -> WriteResult:
        """An import row the transform ignored or skipped: said so, not counted as written."""
        reason = f"the Import Set row was {staged.action} by its transform map"
        if staged.message:
            reason += f": {staged.message}"
        target = staged.sys_id or f"{staged.action}:{staged.import_set or ''}"
        return WriteResult(target, "unchanged", 201, {"reason": reason, "import_status": staged.action})


WRITES = StagedWrites()


# ---- handlers ------------------------------------------------------------------------------------


class EpicorPolled(EpicorSourced):
    """Epicor records polled by their change field and staged into ServiceNow idempotently."""

    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        return WRITES.plan(ctx, mapped.document, known_target_id)  # type: ignore[arg-type]

    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        return WRITES.write(ctx, mapped.document, plan)  # type: ignore[arg-type]


class VendorsHandler(EpicorPolled):
    """Epicor vendors -> ServiceNow suppliers, written before any document names them."""

    entity = "vendors"
    noun = "vendor"

    def source_id(self, row: Mapping[str, Any]) -> str:
        return str(row["VendorNum"])

    def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any] | None:
        vendor = epicor(ctx).get_vendor(int(source_id), with_banks=True)
        return plain(vendor) if vendor is not None else None

    def summarize(self, payload: dict[str, Any]) -> DocumentSummary:
        return DocumentSummary(f"vendor {payload.get('VendorID') or payload.get('VendorNum') or ''}", payload.get("Name") or "")

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        return m.map_supplier(source, _config(ctx))

    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        """Found (ledger, link, else name) or created; an existing supplier is master data and
        changes only as `counterparts.supplier.write_policy` allows, never for two vendors."""
        vendor_num = str(mapped.external_key["VendorNum"])
        known = known_target_id
        if not known:  # a supplier an operator linked (or a document created) is this vendor's
            link = links.find(ctx.session, ctx.integration.id, "supplier", EPICOR, vendor_num)
            known = link.target_id if link is not None else None
        plan = WRITES.plan(ctx, mapped.document, known)  # type: ignore[arg-type]
        if plan.action != "update":
            return plan
        target = plan.target_id or ""
        # Near-duplicate vendors found on one supplier at once: the first to write it owns it,
        # the other waits here for that commit and then sees it taken.
        locks.hold_until_commit(ctx.session, f"servicenow-supplier:{ctx.integration.id}:{target}")
        others = _other_vendors_on(ctx, target, vendor_num)
        if others:
            return Plan("unchanged", target, detail=f"supplier shared with Epicor vendor(s) {', '.join(others)}; "
                                                    f"fields left as they are")
        policy = _config(ctx).counterpart("supplier").write_policy
        # Payment details say where money goes: like remit-to and tax fields, they change on an
        # existing supplier only under `overwrite`.
        bank_changes = {k for k in plan.changes if WRITES.is_line_change(mapped.document, k)}  # type: ignore[arg-type]
        diff = master_data_changes({k: old for k, (old, _) in plan.changes.items()},
                                   {k: new for k, (_, new) in plan.changes.items()}, policy, SUPPLIER_PROTECTED | bank_changes)
        withheld = f"{len(diff.withheld)} field(s) differ, left as ServiceNow has them ({policy})" if diff.withheld else ""
        if not diff.changes:
            return Plan("unchanged", target, detail=withheld)
        return Plan("update", target, diff.changes, detail=withheld)

    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        result = WRITES.write(ctx, mapped.document, plan)  # type: ignore[arg-type]
        vendor_num = str(mapped.external_key["VendorNum"])
        if result.target_key and result.target_key.get("sys_id") and not result.detail.get("import_status"):
            # Documents waiting for this supplier are re-queued when this write commits.
            releases.release(ctx.session, ctx.integration.id, [supplier_written(vendor_num),
                                                               LinkNeeded("supplier", EPICOR, vendor_num)],
                             f"supplier {result.target_id} is in ServiceNow")
        return result


def _other_vendors_on(ctx: FlowContext, target_id: str, vendor_num: str) -> list[str]:
    """Other Epicor vendors whose supplier this is (near-duplicate vendors of one name)."""
    from sqlalchemy import select

    from mlconnector.db.models import SyncRecord

    return list(ctx.session.scalars(select(SyncRecord.source_id).where(
        SyncRecord.integration_id == ctx.integration.id, SyncRecord.flow == "vendors",
        SyncRecord.target_id == target_id, SyncRecord.source_id != vendor_num)))


class DocumentHandler(EpicorPolled):
    """POs and AP invoices: they need their supplier in ServiceNow first."""

    def needs(self, ctx: FlowContext, source: Any) -> list[Need] | Hold:
        vendor_num = str(source.get("VendorNum") or "")
        if not vendor_num or vendor_num == "0":
            return Hold(reason=f"{self.noun} {self.source_id(source)} names no Epicor vendor")
        name = str(source.get("VendorName") or source.get("VendorNumName") or "")
        policy = _config(ctx).counterpart("supplier")
        if policy.match == "id" and not policy.create and self._supplier_missing(ctx, vendor_num):
            return Hold(reason=(f"{self.noun} {self.source_id(source)} waits for its supplier: Epicor vendor {vendor_num} "
                                f"'{name}' is not in ServiceNow yet; it follows when the vendors flow writes it (or link it: "
                                f"mlconnector links link {ctx.integration.id} --kind supplier {vendor_num} <sys_id>)"),
                        releases=(supplier_written(vendor_num), LinkNeeded("supplier", EPICOR, vendor_num),
                                  ConfigNeeded("counterparts.supplier.create"), ConfigNeeded("counterparts.supplier.match")),
                        decisions=[Decision("supplier", name, "not written to ServiceNow yet")])
        return [Need("supplier", vendor_num, name, {"VendorNum": vendor_num})]

    @staticmethod
    def _supplier_missing(ctx: FlowContext, vendor_num: str) -> bool:
        if links.find(ctx.session, ctx.integration.id, "supplier", EPICOR, vendor_num) is not None:
            return False
        return not ledger.written_targets(ctx.session, ctx.integration.id, "vendors", [vendor_num])

    def conditions_met(self, ctx: FlowContext, conditions: list[TargetCondition]) -> set[TargetCondition]:
        """Suppliers the vendors flow has written since (the ledger; no API call)."""
        wanted = [c for c in conditions if c.system == SN and c.entity == "supplier" and c.condition == "written"]
        done = ledger.written_targets(ctx.session, ctx.integration.id, "vendors", [c.target_id for c in wanted])
        return {c for c in wanted if c.target_id in done}


def _supplier_ref(resolved: Counterpart) -> m.SupplierRef:
    return m.SupplierRef(resolved.target_id or "", resolved.target_name, resolved.how)


class PurchaseOrdersHandler(EpicorPurchaseOrders, DocumentHandler):
    """Epicor POs with their lines -> the S2P order staging tables; closed or voided in Epicor
    is closed or canceled in ServiceNow."""

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        if counterparts["supplier"].pending:
            return Nothing("its supplier would be created first (dry run)")
        return m.map_purchase_order(source, _config(ctx), _supplier_ref(counterparts["supplier"]))


class ApInvoicesHandler(EpicorApInvoices, DocumentHandler):
    """Epicor AP invoices with their lines -> the S2P invoice staging tables, every line on the
    ServiceNow cost center its GL account maps to; posted in Epicor reaches ServiceNow too."""

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        if counterparts["supplier"].pending:
            return Nothing("its supplier would be created first (dry run)")
        config = _config(ctx)
        centers: dict[str, m.CostCenterRef] = {}
        for account in m.accounts_of(source):
            value = m.cost_center_value(account, config)
            if value is not None:
                centers[account] = m.CostCenterRef(value, COST_CENTERS.lookup(ctx, value))
        return m.map_ap_invoice(source, config, _supplier_ref(counterparts["supplier"]), centers)


# ---- month-end reconciliation ---------------------------------------------------------------------


def _po_total(po: dict[str, Any]) -> Decimal:
    """A PO's total as the mapping stages it: TotalOrder, else the sum of its lines."""
    return ev.money(m.amount(po, "TotalOrder") or sum((m.amount(l, "ExtCost") for l in po.get("PODetails") or []),
                                                       Decimal(0)))


def _invoice_total(invoice: dict[str, Any]) -> Decimal:
    return ev.money(m.amount(invoice, "InvoiceAmt"))


class ServiceNowDocuments(Reconciler):
    """Epicor documents by their own date; the S2P target records by theirs (order_date,
    invoice_date) with this integration's `erp_source`, keyed by sys_id as written and found by
    the documented key the transform keeps (erp_number, external_invoice_number)."""

    kind = ""
    sn_date = ""
    sn_number = ""
    counterpart_kind = "supplier"
    counterpart_flow = "vendors"

    def target_documents(self, ctx: FlowContext, start: date, end: date) -> Iterator[ReconDocument]:
        sn = _sn(ctx)
        for row in sn.iter_dated(sn.target_table(self.kind), self.sn_date, start, end, {"erp_source": _config(ctx).erp_source}):
            if not row.get(self.sn_date):
                continue
            number = str(row.get(self.sn_number) or "")
            yield ReconDocument(str(row["sys_id"]), number or str(row.get("number") or ""), ev.money(row.get("total_amount")),
                                date.fromisoformat(str(row[self.sn_date])[:10]), str(row.get("supplier") or ""),
                                str(row.get("supplier") or ""), match_key=number or None)

    def scope(self, ctx: FlowContext) -> str:
        return f"ServiceNow {self.kind.replace('_', ' ')}s with erp_source {_config(ctx).erp_source}"


class PurchaseOrdersReconciler(ServiceNowDocuments):
    entity = "purchase orders -> purchase orders"
    source_date, target_date = "Epicor OrderDate", "ServiceNow order_date"
    kind, sn_date, sn_number = "purchase_order", "order_date", "erp_number"

    def source_documents(self, ctx: FlowContext, start: date, end: date) -> Iterator[ReconDocument]:
        return epicor_purchase_orders(ctx, start, end, _po_total)

    def amount_of(self, payload: Mapping[str, Any]) -> Decimal | None:
        return _po_total(dict(payload))


class ApInvoicesReconciler(ServiceNowDocuments):
    entity = "AP invoices -> invoices"
    source_date, target_date = "Epicor InvoiceDate", "ServiceNow invoice_date"
    kind, sn_date, sn_number = "invoice", "invoice_date", "external_invoice_number"

    def source_documents(self, ctx: FlowContext, start: date, end: date) -> Iterator[ReconDocument]:
        return epicor_ap_invoices(ctx, start, end, _invoice_total)

    def amount_of(self, payload: Mapping[str, Any]) -> Decimal | None:
        return _invoice_total(dict(payload))


# ---- the pair ------------------------------------------------------------------------------------


def sandbox_config(sandboxes: "SandboxSet") -> dict[str, Any]:
    """A working config against the sandboxes: documents wait for the supplier the vendors flow
    writes, Epicor's seeded GL accounts each on a seeded ServiceNow cost center (by the
    account's cost center segment), changes read with $top=100 / $skip pages."""
    from sandboxes.epicor import COST_CENTERS as EPICOR_CENTERS, NATURAL_ACCOUNTS

    by_segment = {segment: f"{6000 + n * 100}-01" for n, (segment, _) in enumerate(EPICOR_CENTERS)}
    by_account = {f"{account}-{segment}": by_segment[segment] for account, _ in NATURAL_ACCOUNTS for segment, _ in EPICOR_CENTERS}
    return {
        "systems": {EPICOR: {**sandboxes.config(EPICOR), "change_paging": "skip", "page_size": 100},
                    SN: sandboxes.config(SN)},
        "counterparts": {"supplier": {"match": "id", "create": False, "write_policy": "overwrite"}},
        "cost_centers": {"by_account": by_account},
    }


def demo_summary(harness: Any, integration: str) -> str:
    """The demo's last word, read from ServiceNow's own Table API: the records this demo's
    ledger says it wrote, each found there by its sys_id."""
    from sqlalchemy import select

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        rows = session.execute(select(SyncRecord.flow, SyncRecord.target_id).where(
            SyncRecord.integration_id == integration, SyncRecord.status.in_(("written", "skipped")))).all()
    sn = harness.connector(SN)
    kinds = {"vendors": "supplier", "purchase_orders": "purchase_order", "ap_invoices": "invoice"}
    found = {}
    for flow, kind in kinds.items():
        ids = sorted({target for f, target in rows if f == flow and target})
        found[flow] = len(sn.query(sn.target_table(kind), "sys_idIN" + ",".join(ids), limit=10_000)) if ids else 0
    return (f"ServiceNow now holds {found['vendors']} supplier(s), {found['purchase_orders']} PO(s) and "
            f"{found['ap_invoices']} AP invoice(s) written by this demo, read back through its Table API.")


def demo_plants(stage: Any) -> list[Any]:
    """The GL account most invoice lines use is left out of the cost-center map (invoices held
    naming it, then mapped as a person would); a PO re-sent after the ledger forgot its
    ServiceNow record finds it on the stock instance instead of staging a second."""
    from mlconnector.demo_stage import NotHandled, Planted

    plants = unmapped_account_plants(stage, "an unmapped GL account", "cost_centers")
    resent: dict[str, Any] = {}

    def resend() -> None:
        resent["po"] = stage.replay_forgetting_target("purchase_orders")

    def check() -> str:
        if not resent.get("po"):
            raise NotHandled("no written PO to re-send")
        po_num, had = resent["po"]
        sn = stage.harness.connector(SN)
        found = sn.find_records(sn.target_table("purchase_order"), {"erp_number": po_num})
        if len(found) != 1 or str(found[0]["sys_id"]) != had:
            raise NotHandled(f"PO {po_num} is in ServiceNow {len(found)} time(s) after being re-sent")
        return f"PO {po_num} re-sent with our ledger's record of it forgotten: found by its ERP number, still one in ServiceNow"

    plants.append(Planted("a record re-sent to a stock ServiceNow instance", check, after="ap_invoices", act=resend))
    return plants


PAIR = Pair(
    name=PAIR_NAME,
    source=EPICOR,
    target=SN,
    description="Epicor vendors, POs and AP invoices -> ServiceNow suppliers and Source-to-Pay staging tables; GL account -> cost center.",
    config_model=m.EpicorServiceNowConfig,
    counterparts=(SUPPLIERS,),
    sandbox_config=sandbox_config,
    demo=PairDemo("Epicor Kinetic -> ServiceNow (Source-to-Pay)", demo_summary, order=30,
                  plant=lambda stage: demo_plants(stage)),
    flows=(
        Flow(name="vendors", source=EPICOR, source_entity="vendors", target=SN, target_entity="suppliers",
             handler=VendorsHandler(), poll_seconds=POLL_SECONDS),
        Flow(name="purchase_orders", source=EPICOR, source_entity="purchase_orders", target=SN,
             target_entity="purchase_orders", handler=PurchaseOrdersHandler(), poll_seconds=POLL_SECONDS,
             prerequisites=("vendors",), reconciler=PurchaseOrdersReconciler()),
        Flow(name="ap_invoices", source=EPICOR, source_entity="ap_invoices", target=SN, target_entity="invoices",
             handler=ApInvoicesHandler(), poll_seconds=POLL_SECONDS, prerequisites=("vendors",),
             reconciler=ApInvoicesReconciler()),
    ),
)
