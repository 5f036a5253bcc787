"""ServiceTitan -> Acumatica: the flows, declared.

customers          ST customers -> Acumatica customers (resolved by the platform: link, match, create when allowed)
invoices           ST job invoices -> Acumatica AR invoices, lines on the business unit's account and subaccount
payments           ST payments -> Acumatica payments applied to the AR invoices they pay
inventory_bills    ST inventory bills (from received POs; read-only in ST) -> Acumatica AP bills against the linked vendor

Documents are written on hold unless the config releases them (release actions answer 202
and are followed to completion). GL accounts and subaccounts are read from Acumatica and
validated before posting; the catch-up polls refresh them. Registered through the
`mlconnector.pairs` entry point (pyproject.toml); importing this module starts nothing.
"""

from __future__ import annotations

import threading
import time
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from mappings import servicetitan_acumatica as m
from mlconnector import ledger, releases
from mlconnector.flows import (DocumentSummary, Flow, FlowContext, MappedRecord, Nothing, Pair, PairDemo, Plan,
                               ReconDocument, Reconciler,
                               SourceRecord, WriteResult)
from mlconnector.holds import Hold, TargetCondition
from mlconnector.http import NotFoundError
from mlconnector.policies import master_data_changes
from mlconnector.positions import Position
from mlconnector.resolver import Counterpart, CounterpartKind, Need, TargetRecord
from tasks.servicetitan_source import ServiceTitanSourced, day_of, received_bills, st_documents, webhook_plant
from tasks.servicetitan_source import plain as _plain

if TYPE_CHECKING:
    from mlconnector.harness import SandboxSet

PAIR_NAME = "servicetitan-acumatica"
ST, ACU = "servicetitan", "acumatica"
CATCH_UP_POLL_SECONDS = 300.0  # finds what a dropped webhook missed, within five minutes
REFERENCE_TTL_SECONDS = 300.0  # Acumatica's chart reused across records; the catch-up poll refreshes it sooner
INDEX_TTL_SECONDS = 60.0  # customer and vendor lists reused for name matching for a minute


def _config(ctx: FlowContext) -> m.ServiceTitanAcumaticaConfig:
    return ctx.config  # type: ignore[return-value]


def _acu(ctx: FlowContext) -> Any:
    return ctx.connectors[ACU]


# ---- reference data: Acumatica's chart of accounts ------------------------------------------------


class _ReferenceIndex:
    """GL accounts and subaccounts per integration, read from Acumatica (ServiceTitan has no
    chart-of-accounts API). Accounts are refreshed by LastModifiedDateTime; the Default
    endpoint's Subaccount has no change field, so subaccounts are read whole."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_integration: dict[str, tuple[float, datetime, m.GlReference]] = {}

    def get(self, ctx: FlowContext) -> m.GlReference:
        with self._lock:
            cached = self._by_integration.get(ctx.integration.id)
        if cached and time.monotonic() - cached[0] < REFERENCE_TTL_SECONDS:
            return cached[2]
        return self.refresh(ctx)

    def refresh(self, ctx: FlowContext) -> m.GlReference:
        acu = _acu(ctx)
        started = datetime.now(timezone.utc)
        with self._lock:
            cached = self._by_integration.get(ctx.integration.id)
        if cached is None:
            accounts = {a.AccountCD: a.Active is not False for a in acu.iter_records("accounts", expand=()) if a.AccountCD}
        else:
            accounts = dict(cached[2].accounts)
            for account in acu.iter_changed("accounts", cached[1], started):
                if account.AccountCD:
                    accounts[account.AccountCD] = account.Active is not False
        subaccounts = {s.SubaccountCD: s.Active is not False for s in acu.iter_records("subaccounts", expand=())
                       if s.SubaccountCD}
        reference = m.GlReference(accounts, subaccounts)
        with self._lock:
            self._by_integration[ctx.integration.id] = (time.monotonic(), started, reference)
        return reference

    def forget(self, integration_id: str) -> None:
        with self._lock:
            self._by_integration.pop(integration_id, None)


REFERENCE = _ReferenceIndex()


def _with_reference(ctx: FlowContext, mapping: Any) -> MappedRecord | Hold:
    """Map against the cached chart; a hold for an account or subaccount missing or inactive
    there is checked once more against a fresh read (another worker's poll may have seen it
    activated), so a released record is not held again by a stale cache."""
    outcome = mapping(REFERENCE.get(ctx))
    if isinstance(outcome, Hold) and any(isinstance(r, TargetCondition) and r.condition == "active" for r in outcome.releases):
        outcome = mapping(REFERENCE.refresh(ctx))
    return outcome


class _PartyIndex:
    """An Acumatica customer or vendor list per integration, for matching by normalized name."""

    def __init__(self, entity: str, fields: tuple[str, ...]) -> None:
        self.entity, self.fields = entity, fields
        self._lock = threading.Lock()
        self._by_integration: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    def rows(self, ctx: FlowContext) -> list[dict[str, Any]]:
        with self._lock:
            cached = self._by_integration.get(ctx.integration.id)
            if cached and time.monotonic() - cached[0] < INDEX_TTL_SECONDS:
                return cached[1]
        rows = [_plain(r) for r in _acu(ctx).iter_records(self.entity, expand=(), select=self.fields)]
        with self._lock:
            self._by_integration[ctx.integration.id] = (time.monotonic(), rows)
        return rows

    def forget(self, integration_id: str) -> None:
        with self._lock:
            self._by_integration.pop(integration_id, None)


CUSTOMER_INDEX = _PartyIndex("customers", ("CustomerID", "CustomerName", "Status"))
VENDOR_INDEX = _PartyIndex("vendors", ("VendorID", "VendorName", "Status"))


# ---- counterparts ---------------------------------------------------------------------------------


class _AcumaticaParty(CounterpartKind):
    """Shared reads of Acumatica customers and vendors (their id is also their code)."""

    entity: str = ""
    id_field: str = ""
    name_field: str = ""
    st_entity: str = ""
    index: _PartyIndex

    def _record(self, row: dict[str, Any]) -> TargetRecord:
        return TargetRecord(str(row[self.id_field]), row.get(self.name_field) or "", str(row[self.id_field]), row)

    def _id_for(self, ctx: FlowContext, source_id: str) -> str:
        raise NotImplementedError

    def match_by_key(self, ctx: FlowContext, need: Need, by: str) -> list[TargetRecord]:
        """By id or code alike: the Acumatica id is the code, made from the ServiceTitan id by the config's format."""
        found = _acu(ctx).find(self.entity, **{self.id_field: self._id_for(ctx, need.source_id)})
        return [self._record(_plain(found))] if found is not None else []

    def match_by_name(self, ctx: FlowContext, need: Need) -> list[TargetRecord]:
        return [self._record(r) for r in m.match_by_name(need.source_name, self.index.rows(ctx), self.name_field)]

    def get_target(self, ctx: FlowContext, target_id: str) -> TargetRecord | None:
        found = _acu(ctx).find(self.entity, **{self.id_field: target_id})
        return self._record(_plain(found)) if found is not None else None

    def get_source(self, ctx: FlowContext, source_id: str) -> TargetRecord | None:
        try:
            row = _plain(ctx.connectors[ST].get(self.st_entity, int(source_id)))  # type: ignore[attr-defined]
        except NotFoundError:
            return None
        return TargetRecord(str(row["id"]), row.get("name") or "", "", row)

    def search(self, ctx: FlowContext, text: str) -> list[TargetRecord]:
        wanted = text.strip().upper()
        return [self._record(r) for r in self.index.rows(ctx)
                if wanted in (r.get(self.name_field) or "").upper() or wanted in str(r.get(self.id_field) or "").upper()]

    def forget(self, ctx: FlowContext) -> None:
        self.index.forget(ctx.integration.id)

    def _full_source(self, ctx: FlowContext, need: Need) -> dict[str, Any]:
        if need.source.get("address") or need.source.get("contactInfo"):
            return need.source
        return _plain(ctx.connectors[ST].get(self.st_entity, int(need.source_id)))  # type: ignore[attr-defined]


class AcumaticaCustomers(_AcumaticaParty):
    """ServiceTitan customers and the Acumatica customers they are (links of kind `customer`)."""

    kind = "customer"
    source_system = ST
    target_system = ACU
    noun = "customer"
    entity, id_field, name_field, st_entity, index = "customers", "CustomerID", "CustomerName", "customers", CUSTOMER_INDEX

    def _id_for(self, ctx: FlowContext, source_id: str) -> str:
        return _config(ctx).customer_id_format.format(id=source_id)[:30]

    def create(self, ctx: FlowContext, need: Need) -> TargetRecord:
        fields = m.map_customer(self._full_source(ctx, need), _config(ctx))
        return self._record(_plain(_acu(ctx).put("customers", fields.model_dump(exclude_none=True), mode="insert")))


class AcumaticaVendors(_AcumaticaParty):
    """ServiceTitan vendors and the Acumatica vendors their bills are entered against."""

    kind = "vendor"
    source_system = ST
    target_system = ACU
    noun = "vendor"
    entity, id_field, name_field, st_entity, index = "vendors", "VendorID", "VendorName", "vendors", VENDOR_INDEX

    def _id_for(self, ctx: FlowContext, source_id: str) -> str:
        return _config(ctx).vendor_id_format.format(id=source_id)[:30]

    def create(self, ctx: FlowContext, need: Need) -> TargetRecord:
        fields = m.map_vendor(self._full_source(ctx, need), _config(ctx))
        return self._record(_plain(_acu(ctx).put("vendors", fields.model_dump(exclude_none=True), mode="insert")))


CUSTOMERS = AcumaticaCustomers()
VENDORS = AcumaticaVendors()


def _party_need(document: dict[str, Any], kind: str, noun: str) -> list[Need] | Hold:
    party = dict(document.get(kind) or {})
    if not party.get("id"):
        return Hold(reason=f"{noun} {document.get('id')} has no {kind} in ServiceTitan; set it there and it follows on the next poll")
    return [Need(kind, str(party["id"]), party.get("name") or "", party)]


def _ref(resolved: Counterpart) -> m.AcumaticaRef:
    return m.AcumaticaRef(resolved.target_id, resolved.target_name, resolved.how)


# ---- handlers -------------------------------------------------------------------------------------


class CustomersHandler(ServiceTitanSourced):
    """ServiceTitan customers -> Acumatica customers, so an account exists on both sides
    before any document references it; existing customers change only as the policy allows."""

    st_entity = "customers"
    noun = "customer"

    def summarize(self, payload: dict[str, Any]) -> DocumentSummary:
        return DocumentSummary(f"customer {payload.get('id')}", payload.get("name") or "")

    def needs(self, ctx: FlowContext, source: Any) -> list[Need] | Hold:
        return [Need("customer", str(source["id"]), source.get("name") or "", source)]

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        customer = counterparts["customer"]
        fields = m.map_customer(source, _config(ctx))
        document = m.CustomerDocument(CustomerID=customer.target_id, how=customer.how,
                                    CustomerName=fields.CustomerName, Email=fields.Email)
        return MappedRecord(document, external_key={"CustomerID": customer.target_id})

    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        document: m.CustomerDocument = mapped.document  # type: ignore[assignment]
        if document.CustomerID is None:
            return Plan("create", None, detail=f"Acumatica customer '{document.CustomerName}'")
        if document.how == "created":
            return Plan("create", document.CustomerID, detail="created from this ServiceTitan customer")
        policy = _config(ctx).counterpart("customer").write_policy
        if policy == "create_only":
            return Plan("unchanged", document.CustomerID, detail="write policy create_only: the Acumatica customer is left as it is")
        current = _plain(_acu(ctx).find("customers", CustomerID=document.CustomerID))
        diff = master_data_changes(current, {"CustomerName": document.CustomerName, "Email": document.Email}, policy)
        if not diff.changes:
            return Plan("unchanged", document.CustomerID)
        return Plan("update", document.CustomerID, diff.changes)

    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        target = plan.target_id or ""
        if plan.action == "create":
            return WriteResult(target, "created", 200, target_key={"CustomerID": target})
        if plan.action == "unchanged":
            return WriteResult(target, "unchanged", None, {"reason": plan.detail} if plan.detail else {})
        updates = {name: wanted for name, (_, wanted) in plan.changes.items()}
        _acu(ctx).put("customers", {"CustomerID": target, **updates}, mode="update")
        CUSTOMER_INDEX.forget(ctx.integration.id)
        return WriteResult(target, "updated", 200, {"changed": sorted(updates)}, target_key={"CustomerID": target})


class DocumentHandler(ServiceTitanSourced):
    """Writes one Acumatica document idempotently: found again by its external reference,
    created when absent (on hold unless configured otherwise), and released when the config
    asks and it is not released yet (a write interrupted before its release is completed)."""

    st_mark_entity: str = ""

    def _find(self, ctx: FlowContext, document: m.AcumaticaDocument) -> Any:
        raise NotImplementedError

    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        document: m.AcumaticaDocument = mapped.document  # type: ignore[assignment]
        existing = self._find(ctx, document)
        if existing is None:
            state = "released" if document.release else "on hold"
            return Plan("create", None, detail=f"{document.total}, {document.rows} row(s), {state}")
        target = f"{existing.Type}/{existing.ReferenceNbr}"
        if document.release and existing.Status not in m.RELEASED:
            return Plan("complete", target, {"Status": (existing.Status, "released")},
                        detail="found by its external reference, not released yet")
        return Plan("unchanged", target, detail=f"found by its external reference ({existing.Status})")

    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        document: m.AcumaticaDocument = mapped.document  # type: ignore[assignment]
        acu = _acu(ctx)
        action, status = plan.action, None
        if plan.action == "create":
            saved = acu.put(document.entity, document.fields.model_dump(exclude_none=True), mode="insert")
            doc_type, number, status = saved.Type, saved.ReferenceNbr, saved.Status
            action = "created"
        else:
            doc_type, _, number = (plan.target_id or "").partition("/")
        if document.release and (plan.action in ("create", "complete")):
            acu.release(document.entity, (doc_type, number))
            status = "released"
            action = "created and released" if action == "created" else "released"
        key = {"Type": doc_type, "ReferenceNbr": number}
        detail = {"reason": plan.detail} if action == "unchanged" else {"status": status}
        result = WriteResult(f"{doc_type}/{number}", action, 200, detail, target_key=key)
        self.after_write(ctx, document, doc_type, number, released=document.release)
        if document.mark_exported:
            ctx.connectors[ST].mark_exported(self.st_mark_entity, [int(document.source_id)])  # type: ignore[attr-defined]
        return result

    def after_write(self, ctx: FlowContext, document: m.AcumaticaDocument, doc_type: str, number: str, *, released: bool) -> None:
        """Release what waited for this document (nothing by default)."""

    def conditions_met(self, ctx: FlowContext, conditions: list[TargetCondition]) -> set[TargetCondition]:
        """Accounts and subaccounts that became active in Acumatica (read fresh by the poll)."""
        wanted = [c for c in conditions if c.system == ACU and c.entity in ("account", "subaccount") and c.condition == "active"]
        if not wanted:
            return set()
        reference = REFERENCE.refresh(ctx)
        table = {"account": reference.accounts, "subaccount": reference.subaccounts}
        return {c for c in wanted if table[c.entity].get(c.target_id) is True}

    def changed(self, ctx: FlowContext, since: Position, until: datetime) -> Iterator[SourceRecord]:
        REFERENCE.refresh(ctx)  # the catch-up poll also refreshes Acumatica's chart
        yield from super().changed(ctx, since, until)


class InvoicesHandler(DocumentHandler):
    """ServiceTitan job invoices -> Acumatica AR invoices (found again by CustomerOrder)."""

    st_entity = st_mark_entity = "invoices"
    date_field = "invoiceDate"
    noun = "invoice"
    counterpart_field = "customer"

    def needs(self, ctx: FlowContext, source: Any) -> list[Need] | Hold:
        return _party_need(source, "customer", "invoice")

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        customer = _ref(counterparts["customer"])
        return _with_reference(ctx, lambda chart: m.map_invoice(source, _config(ctx), customer, chart, ctx.integration.id))

    def _find(self, ctx: FlowContext, document: m.AcumaticaDocument) -> Any:
        fields: m.ArInvoice = document.fields  # type: ignore[assignment]
        return _acu(ctx).find_invoice(fields.CustomerOrder, customer_id=fields.Customer)

    def after_write(self, ctx: FlowContext, document: m.AcumaticaDocument, doc_type: str, number: str, *, released: bool) -> None:
        """Payments waiting for this invoice are re-queued when this write commits."""
        freed = [m.invoice_written(document.source_id)] + ([m.invoice_released(number)] if released else [])
        releases.release(ctx.session, ctx.integration.id, freed, f"AR invoice {doc_type} {number} is in Acumatica")


class PaymentsHandler(DocumentHandler):
    """ServiceTitan payments -> Acumatica payments applied to their AR invoices (found again by ExternalRef)."""

    st_entity = st_mark_entity = "payments"
    date_field = "date"
    noun = "payment"
    counterpart_field = "customer"

    def needs(self, ctx: FlowContext, source: Any) -> list[Need] | Hold:
        return _party_need(source, "customer", "payment")

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        existing = _acu(ctx).find_payment(m.payment_reference(source))
        invoice_ids = [str(a.get("appliedTo")) for a in source.get("appliedTo") or []]
        keys = ledger.written_targets(ctx.session, ctx.integration.id, "invoices", invoice_ids)
        states: dict[str, m.InvoiceState | None] = {i: None for i in invoice_ids}
        for st_id, key in keys.items():
            states[st_id] = self._state(ctx, key["Type"], key["ReferenceNbr"])
        return m.map_payment(source, _config(ctx), _ref(counterparts["customer"]), states,
                             existing=f"{existing.Type}/{existing.ReferenceNbr}" if existing is not None else None)

    @staticmethod
    def _state(ctx: FlowContext, doc_type: str, number: str) -> m.InvoiceState | None:
        try:
            invoice = _acu(ctx).get("invoices", (doc_type, number), expand=())
        except NotFoundError:
            return None
        return m.InvoiceState(number, invoice.Status or "", Decimal(str(invoice.Balance or 0)))

    def _find(self, ctx: FlowContext, document: m.AcumaticaDocument) -> Any:
        fields: m.ArPayment = document.fields  # type: ignore[assignment]
        return _acu(ctx).find_payment(fields.ExternalRef)

    def conditions_met(self, ctx: FlowContext, conditions: list[TargetCondition]) -> set[TargetCondition]:
        """Invoices written since (the ledger) or released in Acumatica since (read there)."""
        met = super().conditions_met(ctx, conditions)
        written = [c for c in conditions if c.entity == "ar_invoice" and c.condition == "written"]
        if written:
            ids = [c.target_id.removeprefix("st-") for c in written]
            done = ledger.written_targets(ctx.session, ctx.integration.id, "invoices", ids)
            met |= {c for c in written if c.target_id.removeprefix("st-") in done}
        for condition in conditions:
            if condition.entity == "ar_invoice" and condition.condition == "released":
                state = self._state(ctx, "Invoice", condition.target_id)
                if state is not None and state.status in m.RELEASED:
                    met.add(condition)
        return met


class InventoryBillsHandler(DocumentHandler):
    """ServiceTitan inventory bills -> Acumatica AP bills (found again by Vendor + VendorRef).
    ServiceTitan bills are read-only: nothing is written back to them but, when configured,
    their export status."""

    st_entity = st_mark_entity = "inventory_bills"
    date_field = "billDate"
    noun = "bill"
    counterpart_field = "vendor"

    def needs(self, ctx: FlowContext, source: Any) -> list[Need] | Hold:
        return _party_need(source, "vendor", "bill")

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        vendor = _ref(counterparts["vendor"])
        return _with_reference(ctx, lambda chart: m.map_bill(source, _config(ctx), vendor, chart, ctx.integration.id))

    def _find(self, ctx: FlowContext, document: m.AcumaticaDocument) -> Any:
        fields: m.ApBill = document.fields  # type: ignore[assignment]
        return _acu(ctx).find_bill(fields.Vendor, fields.VendorRef) if fields.Vendor else None

    def records_for_event(self, ctx: FlowContext, event_type: str, data: dict[str, Any]) -> list[SourceRecord]:
        if event_type.startswith("purchase-order."):
            return received_bills(ctx, data, "AP bill")
        return super().records_for_event(ctx, event_type, data)


# ---- the pair -------------------------------------------------------------------------------------


# ---- month-end reconciliation ---------------------------------------------------------------------


def _bill_total(bill: dict[str, Any]) -> Decimal:
    """An AP bill's total as the mapping writes it: the bill amount, else its lines, tax and freight."""
    total = m.money(bill.get("billAmount"))
    if total:
        return total
    lines = sum((m.money(Decimal(str(i.get("cost") or 0)) * Decimal(str(i.get("quantity") or 0)))
                 for i in bill.get("items") or []), Decimal(0))
    return lines + m.money(bill.get("taxAmount")) + m.money(bill.get("shippingAmount"))


class AcumaticaDocuments(Reconciler):
    """ServiceTitan documents by their own date; Acumatica documents of one type by theirs, keyed
    Type/ReferenceNbr as written and carrying the ServiceTitan number (CustomerOrder, VendorRef)
    or payment id (ExternalRef)."""

    st_entity = ""
    st_date = ""
    party = "customer"
    acu_entity = ""
    acu_type = ""
    acu_date = "Date"
    acu_party = "Customer"
    acu_number = "CustomerOrder"

    def __init__(self, entity: str, counterpart_kind: str) -> None:
        self.entity = entity
        self.counterpart_kind = counterpart_kind
        self.source_date = f"ServiceTitan {self.st_date}"
        self.target_date = f"Acumatica {self.acu_date}"

    def amount(self, row: dict[str, Any]) -> Decimal:
        return m.money(row.get("total"))

    def amount_of(self, payload: Mapping[str, Any]) -> Decimal | None:
        return self.amount(dict(payload))

    def number(self, row: dict[str, Any]) -> str:
        raise NotImplementedError

    def source_documents(self, ctx: FlowContext, start: date, end: date) -> Iterator[ReconDocument]:
        return st_documents(ctx, self.st_entity, start, end, date_field=self.st_date, amount=self.amount,
                            number=self.number, party=self.party)

    def target_documents(self, ctx: FlowContext, start: date, end: date) -> Iterator[ReconDocument]:
        for record in _acu(ctx).iter_dated(self.acu_entity, self.acu_date, start, end, where=f"Type eq '{self.acu_type}'"):
            row = record.model_dump(mode="json")
            if not row.get(self.acu_date):
                continue
            yield self.target_document(row)

    def target_document(self, row: dict[str, Any]) -> ReconDocument:
        number = row.get(self.acu_number) or ""
        return ReconDocument(f"{row['Type']}/{row['ReferenceNbr']}", number or row["ReferenceNbr"],
                             m.money(row.get("Amount")), day_of(row[self.acu_date]), row.get(self.acu_party) or "",
                             row.get(self.acu_party) or "", match_key=number or None)

    def scope(self, ctx: FlowContext) -> str:
        return f"Acumatica {self.acu_entity} of type {self.acu_type}"


class InvoicesReconciler(AcumaticaDocuments):
    st_entity, st_date, acu_entity, acu_type = "invoices", "invoiceDate", "invoices", "Invoice"

    def number(self, row: dict[str, Any]) -> str:
        return m.invoice_reference(row)


class BillsReconciler(AcumaticaDocuments):
    st_entity, st_date, party = "inventory_bills", "billDate", "vendor"
    acu_entity, acu_type, acu_party, acu_number = "bills", "Bill", "Vendor", "VendorRef"

    def amount(self, row: dict[str, Any]) -> Decimal:
        return _bill_total(row)

    def number(self, row: dict[str, Any]) -> str:
        return m.bill_reference(row)


class PaymentsReconciler(AcumaticaDocuments):
    st_entity, st_date, acu_entity, acu_type = "payments", "date", "payments", "Payment"
    acu_date, acu_party, acu_number = "ApplicationDate", "CustomerID", "ExternalRef"

    def number(self, row: dict[str, Any]) -> str:
        return m.payment_reference(row)

    def target_document(self, row: dict[str, Any]) -> ReconDocument:
        reference = row.get("ExternalRef") or ""
        origin = reference.removeprefix("ST-PAY-") if reference.startswith("ST-PAY-") else None
        return ReconDocument(f"{row['Type']}/{row['ReferenceNbr']}", reference or row["ReferenceNbr"],
                             m.money(row.get("PaymentAmount")), day_of(row["ApplicationDate"]), row.get("CustomerID") or "",
                             row.get("CustomerID") or "", source_id=origin, match_key=reference or None)


def sandbox_config(sandboxes: "SandboxSet") -> dict[str, Any]:
    """A working config against the sandboxes: every seeded ServiceTitan business unit on an
    active Acumatica subaccount, customers and vendors created when missing."""
    from sandboxes.servicetitan import BUSINESS_UNITS

    subaccounts = {"HVAC": "100-100", "Plumbing": "200-100", "Electrical": "300-100"}
    branches = ("HQ", "EAST", "WEST")
    units = {name: {"subaccount": subaccounts.get(trade, "000-000"), "branch": branches[n % len(branches)]}
             for n, (name, trade, *_rest) in enumerate(BUSINESS_UNITS)}
    return {
        "systems": {ST: sandboxes.config(ST), ACU: sandboxes.config(ACU)},
        "counterparts": {"customer": {"match": "name", "create": True}, "vendor": {"match": "name", "create": True}},
        "business_units": units,
        "gl": {"income_account": "40000", "expense_account": "51000", "sales_tax_account": "23000"},
    }


def demo_summary(harness: Any, integration: str) -> str:
    """The demo's last word, read from Acumatica's own REST API: the documents this demo wrote."""
    from sqlalchemy import select

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        ours = set(session.scalars(select(SyncRecord.target_id).where(SyncRecord.integration_id == integration,
                                                                      SyncRecord.target_id.is_not(None))))
    acumatica = harness.connector(ACU)
    found = {entity: sum(1 for r in acumatica.iter_records(entity, expand=(), select=("Type", "ReferenceNbr", "Status"))
                         if f"{r.Type}/{r.ReferenceNbr}" in ours)
             for entity in ("invoices", "payments", "bills")}
    return (f"Acumatica now holds {found['invoices']} AR invoice(s), {found['payments']} payment(s) and {found['bills']} "
            f"AP bill(s) written by this demo, read back through its REST API.")


def demo_plants(stage: Any) -> list[Any]:
    """Webhooks delivered twice and forged; bills of vendors whose names are close to existing
    Acumatica vendors held for a person (one linked by hand)."""
    from mlconnector.demo_stage import lookalike_plant

    return [webhook_plant(stage, PAIR.flow("invoices")), lookalike_plant(stage, "vendor", link_after="inventory_bills")]


PAIR = Pair(
    name=PAIR_NAME,
    source=ST,
    target=ACU,
    description="ServiceTitan job invoices, payments and inventory bills -> Acumatica AR invoices, payments and AP bills; customers first.",
    config_model=m.ServiceTitanAcumaticaConfig,
    counterparts=(CUSTOMERS, VENDORS),
    sandbox_config=sandbox_config,
    webhook_source=ST,
    # Released, so payments can be applied: Acumatica applies them to released invoices only.
    # A release's status is polled every 0.1 s instead of every second, so the demo's 35 releases
    # do not wait half a minute on the poll interval.
    demo=PairDemo("ServiceTitan -> Acumatica (documents released)", demo_summary,
                  {"release_documents": True, "systems": {"acumatica": {"action_poll_interval": 0.1}}}, order=20,
                  plant=lambda stage: demo_plants(stage)),
    flows=(
        Flow(name="customers", source=ST, source_entity="customers", target=ACU, target_entity="customers",
             handler=CustomersHandler(), webhook_events=("customer.created", "customer.updated"),
             poll_seconds=CATCH_UP_POLL_SECONDS),
        Flow(name="invoices", source=ST, source_entity="invoices", target=ACU, target_entity="ar_invoices",
             handler=InvoicesHandler(), webhook_events=("invoice.created", "invoice.updated"),
             poll_seconds=CATCH_UP_POLL_SECONDS, prerequisites=("customers",),
             reconciler=InvoicesReconciler("job invoices -> AR invoices", "customer")),
        Flow(name="payments", source=ST, source_entity="payments", target=ACU, target_entity="payments",
             handler=PaymentsHandler(), webhook_events=("payment.created", "payment.updated"),
             poll_seconds=CATCH_UP_POLL_SECONDS, prerequisites=("invoices",),
             reconciler=PaymentsReconciler("payments -> payments", "customer")),
        Flow(name="inventory_bills", source=ST, source_entity="inventory_bills", target=ACU, target_entity="ap_bills",
             handler=InventoryBillsHandler(),
             webhook_events=("inventory-bill.created", "inventory-bill.updated", "purchase-order.created", "purchase-order.updated"),
             poll_seconds=CATCH_UP_POLL_SECONDS, reconciler=BillsReconciler("inventory bills -> AP bills", "vendor")),
    ),
)
