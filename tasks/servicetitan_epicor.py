"""ServiceTitan -> Epicor Kinetic: the flows, declared.

vendors            ST vendors -> Epicor vendors (resolved by the platform: link, match, create when allowed)
inventory_bills    ST inventory bills (and the bills of PO events) -> Epicor AP invoices
ap_payments        ST AP payments -> Epicor AP payments, matched by vendor + amount
epicor_vendors     Epicor vendor changes -> the linked ST vendors

Registered through the `mlconnector.pairs` entry point (pyproject.toml); importing this
module starts nothing.
"""

from __future__ import annotations

import threading
import time
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from connectors.epicor import InvoiceDifferences, compare_ap_invoice, odata_string, wanted_invoice_lines
from mappings import servicetitan_epicor as m
from mlconnector import ledger, links
from mlconnector.flows import (DocumentSummary, Flow, FlowContext, FlowHandler, MappedRecord, Nothing, Pair, PairDemo, Plan,
                               ReconDocument, Reconciler, SourceRecord, WriteResult)
from mlconnector.holds import Hold, TargetCondition
from mlconnector.http import NotFoundError
from mlconnector.policies import master_data_changes
from mlconnector.positions import Position
from mlconnector.resolver import Counterpart, CounterpartKind, Need, TargetRecord
from tasks.servicetitan_source import ServiceTitanSourced, received_bills, webhook_plant
from tasks.servicetitan_source import plain as _plain

if TYPE_CHECKING:
    from mlconnector.harness import SandboxSet

PAIR_NAME = "servicetitan-epicor"
ST, EPICOR = "servicetitan", "epicor"
CATCH_UP_POLL_SECONDS = 300.0  # finds what a dropped webhook missed, within five minutes
EPICOR_VENDOR_POLL_SECONDS = 600.0
VENDOR_INDEX_TTL_SECONDS = 60.0  # Epicor vendor list reused across records for a minute


def _config(ctx: FlowContext) -> m.ServiceTitanEpicorConfig:
    return ctx.config  # type: ignore[return-value]


class _VendorIndex:
    """Epicor vendors per integration, refreshed every minute (name matching reads them all)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_integration: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    def vendors(self, ctx: FlowContext) -> list[dict[str, Any]]:
        with self._lock:
            cached = self._by_integration.get(ctx.integration.id)
            if cached and time.monotonic() - cached[0] < VENDOR_INDEX_TTL_SECONDS:
                return cached[1]
        rows = [_plain(v) for v in ctx.connectors[EPICOR].iter_vendors()]  # type: ignore[attr-defined]
        with self._lock:
            self._by_integration[ctx.integration.id] = (time.monotonic(), rows)
        return rows

    def invalidate(self, integration_id: str) -> None:
        with self._lock:
            self._by_integration.pop(integration_id, None)


VENDOR_INDEX = _VendorIndex()


def _epicor_vendor(row: dict[str, Any]) -> TargetRecord:
    return TargetRecord(str(row["VendorNum"]), row.get("Name") or "", row.get("VendorID") or "", row)


class EpicorVendors(CounterpartKind):
    """ServiceTitan vendors and the Epicor vendors they are."""

    kind = "vendor"
    source_system = ST
    target_system = EPICOR
    noun = "vendor"
    # Epicor's vendor address is where payments go when no remit-to is set: with the tax and
    # bank fields it changes only under the overwrite policy.
    protected_fields = frozenset({"Address1", "Address2", "Address3", "City", "State", "ZIP", "Country",
                                  "TaxPayerID", "BankAcctNumber", "BankRoutingNum", "BankName"})

    def match_by_key(self, ctx: FlowContext, need: Need, by: str) -> list[TargetRecord]:
        vendor_id = _config(ctx).vendor_id_format.format(id=need.source_id)[:8]
        found = ctx.connectors[EPICOR].find_vendors(vendor_id=vendor_id)  # type: ignore[attr-defined]
        return [_epicor_vendor(_plain(v)) for v in found]

    def match_by_name(self, ctx: FlowContext, need: Need) -> list[TargetRecord]:
        return [_epicor_vendor(v) for v in m.match_vendor_by_name(need.source_name, VENDOR_INDEX.vendors(ctx))]

    def create(self, ctx: FlowContext, need: Need) -> TargetRecord:
        st_vendor = need.source
        if not st_vendor.get("address") and not st_vendor.get("contactInfo"):
            st_vendor = _plain(ctx.connectors[ST].get("vendors", int(need.source_id)))  # type: ignore[attr-defined]
        fields = m.map_vendor_to_epicor(st_vendor, _config(ctx)).model_dump()
        return _epicor_vendor(_plain(ctx.connectors[EPICOR].create_vendor(fields)))  # type: ignore[attr-defined]

    def get_target(self, ctx: FlowContext, target_id: str) -> TargetRecord | None:
        vendor = ctx.connectors[EPICOR].get_vendor(int(target_id))  # type: ignore[attr-defined]
        return _epicor_vendor(_plain(vendor)) if vendor is not None else None

    def get_source(self, ctx: FlowContext, source_id: str) -> TargetRecord | None:
        try:
            row = _plain(ctx.connectors[ST].get("vendors", int(source_id)))  # type: ignore[attr-defined]
        except NotFoundError:
            return None
        return TargetRecord(str(row["id"]), row.get("name") or "", "", row)

    def search(self, ctx: FlowContext, text: str) -> list[TargetRecord]:
        wanted = text.strip().upper()
        return [_epicor_vendor(v) for v in VENDOR_INDEX.vendors(ctx)
                if wanted in (v.get("Name") or "").upper() or wanted in (v.get("VendorID") or "").upper()
                or wanted == str(v.get("VendorNum"))]

    def forget(self, ctx: FlowContext) -> None:
        VENDOR_INDEX.invalidate(ctx.integration.id)


VENDORS = EpicorVendors()


def _vendor_need(document: dict[str, Any], noun: str) -> list[Need] | Hold:
    """The vendor a ServiceTitan bill or payment needs, or a hold when it names none."""
    st_vendor = dict(document.get("vendor") or {})
    if not st_vendor.get("id"):
        return Hold(reason=f"{noun} {document.get('id')} has no vendor in ServiceTitan; set its vendor there, "
                           f"and it follows on the next poll")
    return [Need("vendor", str(st_vendor["id"]), st_vendor.get("name") or "", st_vendor)]


def _vendor_ref(resolved: Counterpart) -> m.EpicorVendorRef:
    return m.EpicorVendorRef(int(resolved.target_id) if resolved.target_id else None, resolved.target_code,
                             resolved.target_name, resolved.how)


class VendorsHandler(ServiceTitanSourced):
    """ServiceTitan vendors -> Epicor vendors: resolved (and created when allowed) by the
    platform; existing Epicor vendors change only as the vendor write policy allows."""

    st_entity = "vendors"
    noun = "vendor"

    def needs(self, ctx: FlowContext, source: Any) -> list[Need] | Hold:
        return [Need("vendor", str(source["id"]), source.get("name") or "", source)]

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        vendor = counterparts["vendor"]
        document = m.EpicorVendorDocument(VendorNum=int(vendor.target_id) if vendor.target_id else None, how=vendor.how,
                                          fields=m.map_vendor_to_epicor(source, _config(ctx)))
        return MappedRecord(document, external_key={"VendorNum": document.VendorNum})

    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        document: m.EpicorVendorDocument = mapped.document  # type: ignore[assignment]
        if document.VendorNum is None:
            return Plan("create", None, detail=f"Epicor vendor '{document.fields.Name}'")
        target = str(document.VendorNum)
        if document.how == "created":
            return Plan("create", target, detail="created from this ServiceTitan vendor")
        shared = len(links.find_by_target(ctx.session, ctx.integration.id, "vendor", EPICOR, target))
        if shared > 1:
            # Near-duplicate ServiceTitan vendors share one Epicor vendor: neither may rewrite it.
            return Plan("unchanged", target, detail=f"{shared} ServiceTitan vendors share this Epicor vendor; fields left as they are")
        policy = _config(ctx).counterpart("vendor").write_policy
        if policy == "create_only":  # nothing may change on an existing vendor: no need to read it
            return Plan("unchanged", target, detail="write policy create_only: the Epicor vendor is left as it is")
        current = _plain(ctx.connectors[EPICOR].get_vendor(document.VendorNum))  # type: ignore[attr-defined]
        diff = master_data_changes(current, document.fields.model_dump(), policy, VENDORS.protected_fields, keys={"VendorID"})
        withheld = f"{len(diff.withheld)} field(s) differ, left as Epicor has them ({policy})" if diff.withheld else ""
        if not diff.changes:
            return Plan("unchanged", target, detail=withheld)
        return Plan("update", target, diff.changes, detail=withheld)

    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        target = plan.target_id or ""
        if plan.action == "create":
            return WriteResult(target, "created", 201, target_key={"VendorNum": int(target)})
        if plan.action == "unchanged":
            return WriteResult(target, "unchanged", None, {"reason": plan.detail} if plan.detail else {})
        updates = {name: wanted for name, (_, wanted) in plan.changes.items()}
        ctx.connectors[EPICOR].update_vendor(int(target), updates)  # type: ignore[attr-defined]
        VENDOR_INDEX.invalidate(ctx.integration.id)
        return WriteResult(target, "updated", 200, {"changed": sorted(updates)}, target_key={"VendorNum": int(target)})


class InventoryBillsHandler(ServiceTitanSourced):
    """ServiceTitan inventory bills -> Epicor AP invoices (GetNewAPInvHedInvoice ... UpdateMaster),
    landing whole: a partial invoice left by an interrupted write is completed on the next delivery."""

    st_entity = "inventory_bills"
    date_field = "billDate"
    noun = "bill"
    amount_fields = ("billAmount", "amount")

    def needs(self, ctx: FlowContext, source: Any) -> list[Need] | Hold:
        return _vendor_need(source, "bill")

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        return m.map_inventory_bill(source, _config(ctx), _vendor_ref(counterparts["vendor"]), ctx.integration.id)

    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        document: m.EpicorApInvoiceDocument = mapped.document  # type: ignore[assignment]
        header = document.header
        if header.VendorNum is None:
            return Plan("create", None, detail=f"AP invoice {header.InvoiceNum} of {header.InvoiceAmt} in group {document.group}")
        target = f"{header.VendorNum}/{header.InvoiceNum}"
        existing = ctx.connectors[EPICOR].find_ap_invoice(header.VendorNum, header.InvoiceNum)  # type: ignore[attr-defined]
        if existing is None:
            return Plan("create", target, detail=f"{len(document.lines)} line(s), {header.InvoiceAmt}, group {document.group}")
        lines = wanted_invoice_lines([line.model_dump(exclude_none=True) for line in document.lines])
        differences = compare_ap_invoice(existing, header.VendorNum, Decimal(header.InvoiceAmt), lines)
        if not differences:
            return Plan("unchanged", target, detail="found by VendorNum + InvoiceNum, equal to the bill")
        return Plan("complete", target, _invoice_changes(differences), detail="the invoice in Epicor differs from the bill")

    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        document: m.EpicorApInvoiceDocument = mapped.document  # type: ignore[assignment]
        header = document.header
        key = {"VendorNum": header.VendorNum, "InvoiceNum": header.InvoiceNum}
        target = f"{header.VendorNum}/{header.InvoiceNum}"
        if plan.action == "unchanged":
            return WriteResult(target, "unchanged", 200, {"reason": plan.detail}, target_key=key)
        epicor = ctx.connectors[EPICOR]
        body = (document.group, header.model_dump(exclude_none=True), [line.model_dump(exclude_none=True) for line in document.lines])
        if plan.action == "create":  # absent when planned: create (a lost answer is found again by its key)
            epicor.create_ap_invoice(*body)  # type: ignore[attr-defined]
            return WriteResult(target, "created", 201, target_key=key)
        _, action = epicor.ensure_ap_invoice(*body)  # type: ignore[attr-defined]  # complete or correct it
        return WriteResult(target, action, 200, target_key=key)

    def records_for_event(self, ctx: FlowContext, event_type: str, data: dict[str, Any]) -> list[SourceRecord]:
        if event_type.startswith("purchase-order."):
            return received_bills(ctx, data, "AP invoice")
        return super().records_for_event(ctx, event_type, data)


def _invoice_changes(differences: InvoiceDifferences) -> dict[str, tuple[Any, Any]]:
    """The connector's comparison as a field diff for the plan and the audit trail."""
    out: dict[str, tuple[Any, Any]] = {}
    if differences.vendor:
        out["VendorNum"] = differences.vendor
    if differences.amount:
        out["InvoiceAmt"] = tuple(str(a) for a in differences.amount)  # type: ignore[assignment]
    for number in differences.missing:
        out[f"line {number}"] = (None, "missing in Epicor")
    for number in differences.extra:
        out[f"line {number}"] = ("not on the bill", None)
    for number, fields in differences.changed.items():
        for name, (stored, wanted) in fields.items():
            out[f"line {number} {name}"] = (stored, wanted)
    return out


class ApPaymentsHandler(ServiceTitanSourced):
    """ServiceTitan AP payments -> Epicor AP payments on the invoice they match."""

    st_entity = "ap_payments"
    date_field = "date"
    noun = "payment"
    amount_fields = ("amount",)

    def needs(self, ctx: FlowContext, source: Any) -> list[Need] | Hold:
        return _vendor_need(source, "payment")

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        vendor = _vendor_ref(counterparts["vendor"])
        epicor = ctx.connectors[EPICOR]
        candidates = [_plain(i) for i in epicor.find_open_invoices(vendor.vendor_num)] if vendor.vendor_num else []  # type: ignore[attr-defined]
        bill_ids = [str(s.get("inventoryBillId")) for s in source.get("splits") or [] if s.get("inventoryBillId")]
        keys = ledger.written_targets(ctx.session, ctx.integration.id, "inventory_bills", bill_ids)
        amount = m.money(source.get("amount"))
        if any(m.money(c.get("InvoiceBal", c.get("InvoiceAmt"))) == amount for c in candidates):
            # The ledger's keys suffice to tell twins apart: no Epicor read.
            known = {b: m.InvoiceState(int(k["VendorNum"]), k["InvoiceNum"], amount, "", True) for b, k in keys.items()}
        else:
            known = self._invoice_states(ctx, keys)  # nothing matches: is its bill's invoice there but unposted?
        return m.map_payment(source, vendor, candidates, known)

    def _invoice_states(self, ctx: FlowContext, keys: dict[str, dict[str, Any]]) -> dict[str, m.InvoiceState]:
        """The Epicor invoices of the synced bills a payment names, as Epicor holds them."""
        out: dict[str, m.InvoiceState] = {}
        for bill_id, key in keys.items():
            invoice = ctx.connectors[EPICOR].find_ap_invoice(key["VendorNum"], key["InvoiceNum"])  # type: ignore[attr-defined]
            if invoice is not None:
                row = _plain(invoice)
                out[bill_id] = m.InvoiceState(int(row["VendorNum"]), row["InvoiceNum"], m.money(row.get("InvoiceAmt")),
                                              row.get("GroupID") or "", bool(row.get("Posted")))
        return out

    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        document: m.EpicorPaymentDocument = mapped.document  # type: ignore[assignment]
        existing = ctx.connectors[EPICOR].find_ap_payment(document.vendor_num, document.reference)  # type: ignore[attr-defined]
        if existing:
            return Plan("unchanged", document.reference, detail="payment with this reference already in Epicor")
        return Plan("create", document.reference, detail=f"{document.amount} on invoice {document.invoice_num}")

    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        document: m.EpicorPaymentDocument = mapped.document  # type: ignore[assignment]
        key = {"vendor_num": document.vendor_num, "reference": document.reference}
        if plan.action == "unchanged":
            return WriteResult(document.reference, "unchanged", 200, target_key=key)
        paid_on = date.fromisoformat(document.payment_date) if document.payment_date else date.today()
        ctx.connectors[EPICOR].create_ap_payment(document.vendor_num, document.invoice_num,  # type: ignore[attr-defined]
                                                 Decimal(document.amount), paid_on, document.reference)
        return WriteResult(document.reference, "created", 201, target_key=key)

    def conditions_met(self, ctx: FlowContext, conditions: list[TargetCondition]) -> set[TargetCondition]:
        met = set()
        for condition in conditions:
            if condition.entity != "ap_invoice" or condition.condition != "posted":
                continue
            vendor_num, _, invoice_num = condition.target_id.partition("/")
            invoice = ctx.connectors[EPICOR].find_ap_invoice(int(vendor_num), invoice_num)  # type: ignore[attr-defined]
            if invoice is not None and bool(_plain(invoice).get("Posted")):
                met.add(condition)
        return met


class EpicorVendorsHandler(FlowHandler):
    """Epicor vendor changes -> the linked ServiceTitan vendors (the seed's 'both directions').

    Reads Epicor's change feed by SysRevID, a cursor persisted with the flow's position, so
    any worker's poll starts where the last one ended."""

    def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any] | None:
        vendor = ctx.connectors[EPICOR].get_vendor(int(source_id))  # type: ignore[attr-defined]
        return _plain(vendor) if vendor is not None else None

    def version(self, source: Any) -> str | None:
        return str(source.get("SysRevID") or source.get("ChangeDate") or "") or None

    def summarize(self, payload: dict[str, Any]) -> DocumentSummary:
        return DocumentSummary(f"Epicor vendor {payload.get('VendorID') or payload.get('VendorNum') or ''}", payload.get("Name") or "")

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        found = links.find_by_target(ctx.session, ctx.integration.id, "vendor", EPICOR, str(source["VendorNum"]))
        if not found:
            return Nothing("no linked ServiceTitan vendor")
        if not _config(ctx).sync_vendor_changes_back:
            return Nothing("sync_vendor_changes_back is off")
        if len(found) > 1:
            return Nothing(f"{len(found)} ServiceTitan vendors share this Epicor vendor; merge them in ServiceTitan first")
        st_id = int(found[0].source_id)
        st_vendor = _plain(ctx.connectors[ST].get("vendors", st_id))  # type: ignore[attr-defined]
        patch = m.map_epicor_vendor_to_servicetitan(source, st_vendor)
        document = m.ServiceTitanVendorPatches(patches=[m.ServiceTitanVendorPatch(id=st_id, patch=patch)])
        return MappedRecord(document, external_key={"VendorNum": source["VendorNum"]})

    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        document: m.ServiceTitanVendorPatches = mapped.document  # type: ignore[assignment]
        target = ",".join(str(p.id) for p in document.patches)
        changes = {f"{p.id}.{name}": (None, value) for p in document.patches for name, value in p.patch.items()}
        return Plan("update" if changes else "unchanged", target, changes)

    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        document: m.ServiceTitanVendorPatches = mapped.document  # type: ignore[assignment]
        if plan.action == "unchanged":
            return WriteResult(plan.target_id or "-", "unchanged")
        for item in document.patches:
            if item.patch:
                ctx.connectors[ST].update_vendor(item.id, item.patch)  # type: ignore[attr-defined]
        return WriteResult(plan.target_id or "-", "updated", 200)

    def changed(self, ctx: FlowContext, since: Position, until: datetime) -> Iterator[SourceRecord]:
        epicor = ctx.connectors[EPICOR]
        if since.cursor is not None or since.at is None:
            rows = epicor.iter_changed_since_rev("vendors", int(since.cursor) if since.cursor else None)  # type: ignore[attr-defined]
            for vendor in rows:
                row = _plain(vendor)
                yield SourceRecord(str(row["VendorNum"]), str(row.get("SysRevID") or "") or None, cursor=str(row["SysRevID"]))
            return
        for vendor in epicor.iter_changed("vendors", since.at, until):  # type: ignore[attr-defined]
            row = _plain(vendor)
            yield SourceRecord(str(row["VendorNum"]), str(row.get("SysRevID") or "") or None)


# ---- month-end reconciliation ---------------------------------------------------------------------


def _bill_amount(bill: dict[str, Any]) -> Decimal:
    """What the bill's AP invoice should total: the bill amount, else its lines, tax and freight
    (the mapping's rule)."""
    total = m.money(bill.get("billAmount"))
    if total:
        return total
    lines = sum((m.money(i.get("cost")) * m.quantity(i.get("quantity")) for i in bill.get("items") or []), Decimal(0))
    return (lines + m.money(bill.get("taxAmount")) + m.money(bill.get("shippingAmount"))).quantize(Decimal("0.01"))


def _day(value: Any) -> date:
    return value if isinstance(value, date) and not isinstance(value, datetime) else date.fromisoformat(str(value)[:10])


class BillsReconciler(Reconciler):
    """ServiceTitan inventory bills by bill date; Epicor AP invoices by invoice date (the bill
    date, as mapped) in the integration's invoice group, keyed VendorNum/InvoiceNum as written."""

    entity = "inventory bills -> AP invoices"
    source_date = "ServiceTitan billDate"
    target_date = "Epicor InvoiceDate"
    counterpart_kind = "vendor"

    def source_documents(self, ctx: FlowContext, start: date, end: date) -> Iterator[ReconDocument]:
        for record in ctx.connectors[ST].iter_dated("inventory_bills", start, end):  # type: ignore[attr-defined]
            bill = _plain(record)
            vendor = bill.get("vendor") or {}
            yield ReconDocument(str(bill["id"]), m.invoice_number(bill), _bill_amount(bill), _day(bill["billDate"]),
                                vendor.get("name") or "", str(vendor.get("id") or ""), match_key=m.invoice_number(bill))

    def target_documents(self, ctx: FlowContext, start: date, end: date) -> Iterator[ReconDocument]:
        group = odata_string(_config(ctx).invoice_group)
        rows = ctx.connectors[EPICOR].iter_dated("ap_invoices", "InvoiceDate", start, end,  # type: ignore[attr-defined]
                                                 where=f"GroupID eq {group}")
        for record in rows:
            invoice = _plain(record)
            if not invoice.get("InvoiceDate"):
                continue
            yield ReconDocument(f"{invoice['VendorNum']}/{invoice['InvoiceNum']}", invoice["InvoiceNum"],
                                m.money(invoice.get("InvoiceAmt")), _day(invoice["InvoiceDate"]),
                                invoice.get("VendorNumName") or "", str(invoice["VendorNum"]), match_key=invoice["InvoiceNum"])

    def scope(self, ctx: FlowContext) -> str:
        return f"Epicor AP invoices in group {_config(ctx).invoice_group}"

    def amount_of(self, payload: Mapping[str, Any]) -> Decimal | None:
        return _bill_amount(dict(payload))


PAYMENT_REFERENCE_PREFIX = "ST-PAY-"  # the mapping's XRefCheckNum: the ServiceTitan payment id follows it


class PaymentsReconciler(Reconciler):
    """ServiceTitan AP payments by payment date; Epicor AP payments by check date, keyed by the
    external reference (XRefCheckNum) the write sets, which carries the ServiceTitan payment id."""

    entity = "AP payments -> AP payments"
    source_date = "ServiceTitan payment date"
    target_date = "Epicor CheckDate"
    counterpart_kind = "vendor"

    def source_documents(self, ctx: FlowContext, start: date, end: date) -> Iterator[ReconDocument]:
        for record in ctx.connectors[ST].iter_dated("ap_payments", start, end):  # type: ignore[attr-defined]
            payment = _plain(record)
            vendor = payment.get("vendor") or {}
            reference = f"{PAYMENT_REFERENCE_PREFIX}{payment['id']}"
            yield ReconDocument(str(payment["id"]), reference, m.money(payment.get("amount")), _day(payment["date"]),
                                vendor.get("name") or "", str(vendor.get("id") or ""), match_key=reference)

    def target_documents(self, ctx: FlowContext, start: date, end: date) -> Iterator[ReconDocument]:
        for record in ctx.connectors[EPICOR].iter_dated("ap_payments", "CheckDate", start, end):  # type: ignore[attr-defined]
            payment = _plain(record)
            reference = payment.get("XRefCheckNum") or ""
            if not payment.get("CheckDate") or payment.get("Voided"):
                continue
            origin = reference[len(PAYMENT_REFERENCE_PREFIX):] if reference.startswith(PAYMENT_REFERENCE_PREFIX) else None
            yield ReconDocument(reference or f"HeadNum {payment['HeadNum']}", reference or str(payment.get("CheckNum") or ""),
                                m.money(payment.get("CheckAmt")), _day(payment["CheckDate"]), payment.get("Name") or "",
                                str(payment.get("VendorNum") or ""), source_id=origin, match_key=reference or None)

    def amount_of(self, payload: Mapping[str, Any]) -> Decimal | None:
        return m.money(payload.get("amount"))


def sandbox_config(sandboxes: "SandboxSet") -> dict[str, Any]:
    """A working config against the sandboxes: name matching, vendors created when missing,
    one GL account per line kind (the demo's, the tests' and the benchmarks' starting point)."""
    return {
        "systems": {ST: sandboxes.config(ST), EPICOR: sandboxes.config(EPICOR)},
        "invoice_group": "STDEMO",
        "counterparts": {"vendor": {"match": "name", "create": True}},
        "gl": {"default_account": "5100-100", "tax_account": "5000-000", "freight_account": "6500-100"},
    }


def demo_summary(harness: Any, integration: str) -> str:
    """The demo's last word, read from Epicor's own API: the vendors it created and the AP
    invoices it entered (unposted, in the integration's group, for AP to review and post)."""
    epicor, now = harness.connector(EPICOR), datetime.now(timezone.utc)
    group = str(harness.config.get("invoice_group") or "STAP")
    invoices = sum(1 for i in epicor.iter_changed("ap_invoices", None, now) if _plain(i).get("GroupID") == group)
    made = str(harness.config.get("vendor_id_format") or "ST{id}").split("{", 1)[0]
    vendors = sum(1 for v in epicor.iter_changed("vendors", None, now) if made and str(_plain(v).get("VendorID", "")).startswith(made))
    return (f"Epicor, read back through its OData API: {vendors} vendor(s) created and {invoices} AP invoice(s) "
            f"entered in group {group}, unposted, for AP to review and post.")


def demo_plants(stage: Any) -> list[Any]:
    """Webhooks delivered twice and forged; near-duplicate vendor names held for a person (one
    linked by hand); payments waiting for their invoices to be posted in Epicor."""
    from mlconnector.demo_stage import Planted, lookalike_plant

    def waiting_payments() -> str:
        return ("payments to invoices the demo entered unposted wait, each on a hold its invoice's posting in "
                "Epicor releases")

    return [webhook_plant(stage, PAIR.flow("vendors")), lookalike_plant(stage, "vendor", link_after="vendors"),
            Planted("payments before their invoices are posted", waiting_payments, flow="ap_payments",
                    held_because="not posted")]


PAIR = Pair(
    name=PAIR_NAME,
    source=ST,
    target=EPICOR,
    description="ServiceTitan purchase orders and inventory bills -> Epicor AP invoices; vendors both ways; AP payments.",
    config_model=m.ServiceTitanEpicorConfig,
    counterparts=(VENDORS,),
    sandbox_config=sandbox_config,
    webhook_source=ST,
    demo=PairDemo("ServiceTitan -> Epicor Kinetic", demo_summary, order=10, plant=demo_plants),
    flows=(
        Flow(name="vendors", source=ST, source_entity="vendors", target=EPICOR, target_entity="vendors",
             handler=VendorsHandler(), webhook_events=("vendor.created", "vendor.updated"),
             poll_seconds=CATCH_UP_POLL_SECONDS),
        Flow(name="inventory_bills", source=ST, source_entity="inventory_bills", target=EPICOR, target_entity="ap_invoices",
             handler=InventoryBillsHandler(),
             webhook_events=("inventory-bill.created", "inventory-bill.updated", "purchase-order.created", "purchase-order.updated"),
             poll_seconds=CATCH_UP_POLL_SECONDS, prerequisites=("vendors",), reconciler=BillsReconciler()),
        Flow(name="ap_payments", source=ST, source_entity="ap_payments", target=EPICOR, target_entity="ap_payments",
             handler=ApPaymentsHandler(), webhook_events=("ap-payment.created",),
             poll_seconds=CATCH_UP_POLL_SECONDS, prerequisites=("inventory_bills",), reconciler=PaymentsReconciler()),
        Flow(name="epicor_vendors", source=EPICOR, source_entity="vendors", target=ST, target_entity="vendors",
             handler=EpicorVendorsHandler(), poll_seconds=EPICOR_VENDOR_POLL_SECONDS, prerequisites=("vendors",)),
    ),
)
