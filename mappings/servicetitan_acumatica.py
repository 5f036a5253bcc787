"""ServiceTitan -> Acumatica: pure mapping functions.

Inputs are ServiceTitan records in the vendor's own JSON shape, the integration config, the
Acumatica reference data the task read (GL accounts and subaccounts, since ServiceTitan has
no chart-of-accounts API) and the resolved counterparts; outputs are Acumatica documents in
plain field form (the connector wraps every value as `{"value": ...}`) with every decision
spelled out, or a hold that names what a person must change. No I/O happens here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

from mlconnector.config import IntegrationConfig, StrictModel
from mlconnector.decisions import Decision
from mlconnector.flows import MappedRecord
from mlconnector.holds import ConfigNeeded, Hold, TargetCondition
from mlconnector.links import normalize_name
from mappings.servicetitan_values import money, quantity
from mappings.servicetitan_values import named as _named

ACUMATICA = "acumatica"
MAX_DESCRIPTION = 255  # Acumatica's document and line descriptions; longer text is cut, not refused
MAX_REFERENCE = 40  # CustomerOrder / VendorRef / ExternalRef length on the Default endpoint
RELEASED = frozenset({"Open", "Closed"})  # statuses of a released Acumatica document


# ---- config ----------------------------------------------------------------------------------


class BusinessUnitMap(StrictModel):
    """Where one ServiceTitan business unit's postings land in Acumatica."""

    subaccount: str = Field(description="Acumatica subaccount (cost center) of every line of the unit, e.g. 100-100.")
    branch: str | None = Field(None, description="Acumatica branch of the unit's documents and lines; unset: the API user's branch.")
    income_account: str | None = Field(None, description="Acumatica GL account of the unit's AR invoice lines (wins over gl.income_account).")
    expense_account: str | None = Field(None, description="Acumatica GL account of the unit's AP bill lines (wins over gl.expense_account).")


class AcumaticaGl(StrictModel):
    """Default GL accounts; each is validated against Acumatica's chart before posting."""

    income_account: str | None = Field(None, description="Acumatica GL account of AR invoice lines when the business unit names none.")
    expense_account: str | None = Field(None, description="Acumatica GL account of AP bill lines when the business unit names none.")
    sales_tax_account: str | None = Field(None, description="Acumatica GL account of an invoice's sales tax line.")
    tax_account: str | None = Field(None, description="Acumatica GL account of a bill's tax line (default: the bill's expense account).")
    freight_account: str | None = Field(None, description="Acumatica GL account of a bill's shipping line (default: the bill's expense account).")


class ServiceTitanAcumaticaConfig(IntegrationConfig):
    business_units: dict[str, BusinessUnitMap] = Field(
        default_factory=dict, description="ServiceTitan business unit id or name -> Acumatica subaccount, branch and accounts.")
    gl: AcumaticaGl = Field(default_factory=AcumaticaGl, description="Default Acumatica GL accounts.")
    release_documents: bool = Field(
        False, description="Release documents in Acumatica after writing them; off: they are written on hold for an accountant to review.")
    mark_exported: bool = Field(
        False, description="Mark the ServiceTitan document exported once it is in Acumatica (changes export status only).")
    customer_id_format: str = Field("ST{id}", description="Acumatica CustomerID made from the ServiceTitan customer id (id matching, created customers).")
    vendor_id_format: str = Field("STV{id}", description="Acumatica VendorID made from the ServiceTitan vendor id (id matching, created vendors).")
    payment_method: str | None = Field(None, description="Acumatica payment method of payments; unset: the customer's default.")
    cash_account: str | None = Field(None, description="Acumatica cash account of payments; unset: the payment method's default.")


# ---- lookups the task gathers -------------------------------------------------------------------


@dataclass(frozen=True)
class GlReference:
    """Acumatica's chart as read: code -> active, for accounts and subaccounts."""

    accounts: dict[str, bool] = field(default_factory=dict)
    subaccounts: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class AcumaticaRef:
    """A resolved Acumatica customer or vendor (None id only in a dry run)."""

    code: str | None
    name: str
    how: str


@dataclass(frozen=True)
class InvoiceState:
    """An AR invoice as Acumatica holds it, for a payment applied to it."""

    reference_nbr: str
    status: str
    balance: Decimal


# ---- documents --------------------------------------------------------------------------------


class InvoiceLine(BaseModel):
    TransactionDescription: str
    Qty: float
    UnitPrice: float
    Account: str
    Subaccount: str
    Branch: str | None = None


class ArInvoice(BaseModel):
    Type: str = "Invoice"
    Customer: str | None
    CustomerOrder: str
    Date: str | None = None
    DueDate: str | None = None
    Description: str
    Hold: bool
    LinkBranch: str | None = None
    Details: list[InvoiceLine]


class BillLine(BaseModel):
    TransactionDescription: str
    Qty: float
    UnitCost: float
    Account: str
    Subaccount: str
    Branch: str | None = None


class ApBill(BaseModel):
    Type: str = "Bill"
    Vendor: str | None
    VendorRef: str
    Date: str | None = None
    DueDate: str | None = None
    Description: str
    Hold: bool
    BranchID: str | None = None
    Details: list[BillLine]


class PaymentApplication(BaseModel):
    DocType: str = "Invoice"
    ReferenceNbr: str
    AmountPaid: float


class ArPayment(BaseModel):
    Type: str = "Payment"
    CustomerID: str | None
    PaymentRef: str
    ExternalRef: str
    PaymentAmount: float
    ApplicationDate: str | None = None
    Description: str
    Hold: bool
    PaymentMethod: str | None = None
    CashAccount: str | None = None
    DocumentsToApply: list[PaymentApplication] = Field(default_factory=list)


class AcumaticaDocument(BaseModel):
    """A document to write: its Acumatica fields, its total and whether to release it after."""

    entity: Literal["invoices", "bills", "payments"]
    source_id: str
    fields: ArInvoice | ApBill | ArPayment
    total: str
    release: bool
    mark_exported: bool = False  # tell ServiceTitan users the document reached Acumatica

    @property
    def rows(self) -> int:
        """Detail rows (lines, or applications of a payment), for plans and the audit trail."""
        fields = self.fields
        return len(fields.DocumentsToApply) if isinstance(fields, ArPayment) else len(fields.Details)


class CustomerFields(BaseModel):
    CustomerID: str
    CustomerName: str
    Email: str | None = None
    MainContact: dict[str, Any] = Field(default_factory=dict)


class CustomerDocument(BaseModel):
    """The customers flow's document: which Acumatica customer, how found, and the fields kept aligned."""

    CustomerID: str | None  # None only in a dry run, for a customer that would be created
    how: str
    CustomerName: str
    Email: str | None = None


class VendorFields(BaseModel):
    VendorID: str
    VendorName: str
    MainContact: dict[str, Any] = Field(default_factory=dict)


# ---- helpers ---------------------------------------------------------------------------------


def _day(value: Any) -> str | None:
    return str(value)[:10] or None if value else None


def _to_mark(source: dict[str, Any], config: ServiceTitanAcumaticaConfig) -> bool:
    return config.mark_exported and source.get("syncStatus") != "Exported"


def _how(ref: AcumaticaRef, noun: str) -> str:
    return {
        "linked": f"{noun} link", "manual": f"{noun} linked by hand", "matched_by_name": "matched by normalized name",
        "matched_by_id": f"matched by {noun} id", "matched_by_code": f"matched by {noun} code",
        "created": f"created in Acumatica from the ServiceTitan {noun}", "to_create": "would be created (dry run)",
    }.get(ref.how, ref.how)


def unit_mapping(config: ServiceTitanAcumaticaConfig, unit: dict[str, Any]) -> tuple[str, BusinessUnitMap] | None:
    """The config entry of a business unit, by id first, then by name."""
    for key in (str(unit.get("id") or ""), str(unit.get("name") or "")):
        if key and key in config.business_units:
            return key, config.business_units[key]
    return None


def _unit_keys(unit: dict[str, Any]) -> list[str]:
    return [k for k in dict.fromkeys((str(unit.get("id") or ""), str(unit.get("name") or ""))) if k and "." not in k]


def _unmapped_unit(document: str, unit: dict[str, Any], integration_id: str, decisions: list[Decision]) -> Hold:
    label = unit.get("name") or unit.get("id") or "(none)"
    key = str(unit.get("id") or unit.get("name") or "none")
    return Hold(
        reason=(f"business unit '{label}' of {document} has no Acumatica subaccount; add business_units.{key} "
                f"(subaccount, branch) to the config (mlconnector integrations set-config {integration_id}); "
                f"the document follows the change"),
        releases=tuple(ConfigNeeded(f"business_units.{k}") for k in (_unit_keys(unit) or ["none"])),
        decisions=decisions)


def check_reference(kind: Literal["account", "subaccount"], code: str | None, reference: GlReference, where: str,
                    document: str, integration_id: str, decisions: list[Decision]) -> Hold | None:
    """A hold naming the account or subaccount when Acumatica lacks it or has it inactive.

    `where` is the config path that chose the code: changing it releases the hold, and so
    does the code becoming active in Acumatica (the catch-up poll checks)."""
    noun = "GL account" if kind == "account" else "subaccount"
    if not code:
        return Hold(reason=(f"no Acumatica {noun} for {document}; set {where} in the config (mlconnector integrations "
                            f"set-config {integration_id}); the document follows the change"),
                    releases=(ConfigNeeded(where),), decisions=decisions)
    table = reference.accounts if kind == "account" else reference.subaccounts
    active = table.get(code)
    if active is True:
        return None
    state = "does not exist" if active is None else "is inactive"
    return Hold(
        reason=(f"{noun} {code} {state} in Acumatica ({where}, {document}); "
                f"{'activate it in Acumatica or ' if active is False else 'create it in Acumatica or '}"
                f"change {where} (mlconnector integrations set-config {integration_id}); the document follows"),
        releases=(ConfigNeeded(where), TargetCondition(ACUMATICA, kind, code, "active")),
        decisions=decisions)


@dataclass(frozen=True)
class _Posting:
    """The account, subaccount and branch of one document's lines, with their reasons."""

    account: str
    subaccount: str
    branch: str | None
    unit_key: str


def _posting(document: str, unit: dict[str, Any], config: ServiceTitanAcumaticaConfig, reference: GlReference,
             side: Literal["income", "expense"], integration_id: str, decisions: list[Decision]) -> _Posting | Hold:
    found = unit_mapping(config, unit)
    if found is None:
        return _unmapped_unit(document, unit, integration_id, decisions)
    key, mapped = found
    own = mapped.income_account if side == "income" else mapped.expense_account
    default = config.gl.income_account if side == "income" else config.gl.expense_account
    account_where = f"business_units.{key}.{side}_account" if own else f"gl.{side}_account"
    account = own or default
    held = (check_reference("subaccount", mapped.subaccount, reference, f"business_units.{key}.subaccount", document,
                            integration_id, decisions)
            or check_reference("account", account, reference, account_where, document, integration_id, decisions))
    if held is not None:
        return held
    assert account is not None
    unit_label = unit.get("name") or key
    decisions.append(Decision("subaccount", mapped.subaccount, f"business unit '{unit_label}' (business_units.{key})"))
    decisions.append(Decision("account", account, account_where))
    if mapped.branch:
        decisions.append(Decision("branch", mapped.branch, f"business_units.{key}.branch"))
    return _Posting(account, mapped.subaccount, mapped.branch, key)


# ---- AR invoices ------------------------------------------------------------------------------


def invoice_reference(invoice: dict[str, Any]) -> str:
    """The Acumatica CustomerOrder an invoice is found again by: its ServiceTitan number."""
    return (str(invoice.get("referenceNumber") or "").strip() or f"ST-{invoice['id']}")[:MAX_REFERENCE]


def map_invoice(invoice: dict[str, Any], config: ServiceTitanAcumaticaConfig, customer: AcumaticaRef,
                reference: GlReference, integration_id: str) -> MappedRecord | Hold:
    """A ServiceTitan job invoice -> an Acumatica AR invoice, each line on the business unit's
    account and subaccount; on hold unless the config releases documents."""
    number = invoice_reference(invoice)
    document = f"invoice {number}"
    decisions = [Decision("customer", f"{customer.code} '{customer.name}'", _how(customer, "customer"))]
    posting = _posting(document, _named(invoice.get("businessUnit")), config, reference, "income", integration_id, decisions)
    if isinstance(posting, Hold):
        return posting
    lines: list[InvoiceLine] = []
    for item in sorted(invoice.get("items") or [], key=lambda i: (i.get("order") or 0, i.get("id") or 0)):
        qty = quantity(item.get("quantity"))
        price = money(item.get("price"))
        description = (item.get("description") or item.get("displayName") or item.get("skuName") or "item").strip()
        lines.append(InvoiceLine(TransactionDescription=description[:MAX_DESCRIPTION], Qty=float(qty), UnitPrice=float(price),
                                 Account=posting.account, Subaccount=posting.subaccount, Branch=posting.branch))
    tax = money(invoice.get("salesTax"))
    if tax:
        held = check_reference("account", config.gl.sales_tax_account, reference, "gl.sales_tax_account", document,
                               integration_id, decisions)
        if held is not None:
            return held
        assert config.gl.sales_tax_account is not None
        lines.append(InvoiceLine(TransactionDescription="Sales tax", Qty=1.0, UnitPrice=float(tax),
                                 Account=config.gl.sales_tax_account, Subaccount=posting.subaccount, Branch=posting.branch))
        decisions.append(Decision("sales tax line", config.gl.sales_tax_account, "gl.sales_tax_account"))
    line_total = sum((money(Decimal(str(l.Qty)) * Decimal(str(l.UnitPrice))) for l in lines), Decimal("0"))
    total = money(invoice.get("total")) or line_total
    if line_total != total:
        decisions.append(Decision("total", str(total), f"the invoice total differs from its lines ({line_total})"))
    decisions.append(Decision("CustomerOrder", number, "ServiceTitan invoice number (finds the invoice again)"))
    decisions.append(Decision("hold", str(not config.release_documents),
                              "release_documents is on" if config.release_documents else "written on hold for review (release_documents is off)"))
    fields = ArInvoice(Customer=customer.code, CustomerOrder=number, Date=_day(invoice.get("invoiceDate")),
                       DueDate=_day(invoice.get("dueDate")),
                       Description=(invoice.get("summary") or f"ServiceTitan invoice {number}")[:MAX_DESCRIPTION],
                       Hold=not config.release_documents, LinkBranch=posting.branch, Details=lines)
    return MappedRecord(AcumaticaDocument(entity="invoices", source_id=str(invoice["id"]), fields=fields, total=str(total),
                                          release=config.release_documents, mark_exported=_to_mark(invoice, config)),
                        external_key={"Type": "Invoice", "CustomerOrder": number}, decisions=decisions)


# ---- AP bills ---------------------------------------------------------------------------------


def bill_reference(bill: dict[str, Any]) -> str:
    """The Acumatica VendorRef a bill is found again by: its ServiceTitan reference number."""
    return (str(bill.get("referenceNumber") or "").strip() or f"ST-{bill['id']}")[:MAX_REFERENCE]


def map_bill(bill: dict[str, Any], config: ServiceTitanAcumaticaConfig, vendor: AcumaticaRef,
             reference: GlReference, integration_id: str) -> MappedRecord | Hold:
    """An inventory bill (generated by a received PO; read-only in ServiceTitan) -> an
    Acumatica AP bill against the linked vendor, lines on the business unit's expense account."""
    number = bill_reference(bill)
    document = f"bill {number}"
    decisions = [Decision("vendor", f"{vendor.code} '{vendor.name}'", _how(vendor, "vendor"))]
    posting = _posting(document, _named(bill.get("businessUnit")), config, reference, "expense", integration_id, decisions)
    if isinstance(posting, Hold):
        return posting
    lines: list[BillLine] = []
    for item in sorted(bill.get("items") or [], key=lambda i: (i.get("order") or 0, i.get("id") or 0)):
        description = (item.get("description") or item.get("name") or item.get("skuCode") or "item").strip()
        lines.append(BillLine(TransactionDescription=description[:MAX_DESCRIPTION], Qty=float(quantity(item.get("quantity"))),
                              UnitCost=float(money(item.get("cost"))), Account=posting.account,
                              Subaccount=posting.subaccount, Branch=posting.branch))
    for label, amount_field, chosen, where in (("Tax", "taxAmount", config.gl.tax_account, "gl.tax_account"),
                                               ("Freight", "shippingAmount", config.gl.freight_account, "gl.freight_account")):
        amount = money(bill.get(amount_field))
        if not amount:
            continue
        account = chosen or posting.account
        held = check_reference("account", account, reference, where if chosen else f"business_units.{posting.unit_key}.expense_account",
                               document, integration_id, decisions)
        if held is not None:
            return held
        lines.append(BillLine(TransactionDescription=label, Qty=1.0, UnitCost=float(amount), Account=account,
                              Subaccount=posting.subaccount, Branch=posting.branch))
        decisions.append(Decision(f"{label.lower()} line", account, where if chosen else "the bill's expense account"))
    line_total = sum((money(Decimal(str(l.Qty)) * Decimal(str(l.UnitCost))) for l in lines), Decimal("0"))
    total = money(bill.get("billAmount")) or line_total
    if line_total != total:
        decisions.append(Decision("total", str(total), f"the bill total differs from its lines ({line_total})"))
    decisions.append(Decision("VendorRef", number, "ServiceTitan bill reference number (finds the bill again)"))
    decisions.append(Decision("hold", str(not config.release_documents),
                              "release_documents is on" if config.release_documents else "written on hold for review (release_documents is off)"))
    fields = ApBill(Vendor=vendor.code, VendorRef=number, Date=_day(bill.get("billDate")), DueDate=_day(bill.get("dueDate")),
                    Description=(bill.get("summary") or f"ServiceTitan bill {number}")[:MAX_DESCRIPTION],
                    Hold=not config.release_documents, BranchID=posting.branch, Details=lines)
    return MappedRecord(AcumaticaDocument(entity="bills", source_id=str(bill["id"]), fields=fields, total=str(total),
                                          release=config.release_documents, mark_exported=_to_mark(bill, config)),
                        external_key={"Vendor": vendor.code, "VendorRef": number}, decisions=decisions)


# ---- payments ---------------------------------------------------------------------------------


def payment_reference(payment: dict[str, Any]) -> str:
    """The ExternalRef a payment is written with and found again by."""
    return f"ST-PAY-{payment['id']}"


def invoice_written(invoice_id: Any) -> TargetCondition:
    """What a payment waits for when its ServiceTitan invoice is not in Acumatica yet."""
    return TargetCondition(ACUMATICA, "ar_invoice", f"st-{invoice_id}", "written")


def invoice_released(reference_nbr: str) -> TargetCondition:
    """What a payment waits for when its AR invoice is in Acumatica but not released."""
    return TargetCondition(ACUMATICA, "ar_invoice", reference_nbr, "released")


def map_payment(payment: dict[str, Any], config: ServiceTitanAcumaticaConfig, customer: AcumaticaRef,
                invoices: dict[str, InvoiceState | None], existing: str | None = None) -> MappedRecord | Hold:
    """A ServiceTitan payment -> an Acumatica payment applied to the AR invoices it pays.

    `invoices` maps each applied ServiceTitan invoice id to its Acumatica invoice (None: not
    written yet). Acumatica applies payments to released invoices only, so a payment waits,
    as a typed hold, for its invoice to be written and then released. A payment already in
    Acumatica (`existing`) maps as it is, whatever its invoices' state now."""
    amount = money(payment.get("total"))
    reference = payment_reference(payment)
    decisions = [Decision("customer", f"{customer.code} '{customer.name}'", _how(customer, "customer")),
                 Decision("amount", str(amount), "payment total")]
    applications: list[PaymentApplication] = []
    missing: list[str] = []
    unreleased: list[InvoiceState] = []
    for applied in payment.get("appliedTo") or []:
        st_id = str(applied.get("appliedTo"))
        state = invoices.get(st_id)
        label = applied.get("appliedToReferenceNumber") or st_id
        if state is None:
            missing.append(st_id)
            continue
        if state.status not in RELEASED and existing is None:
            unreleased.append(state)
            continue
        paid = money(applied.get("appliedAmount"))
        applications.append(PaymentApplication(ReferenceNbr=state.reference_nbr, AmountPaid=float(paid)))
        decisions.append(Decision("applied to", f"{state.reference_nbr} {paid}", f"ServiceTitan invoice {label}"))
    if missing and existing is None:
        return Hold(reason=(f"payment {payment['id']} of {amount} applies to ServiceTitan invoice(s) "
                            f"{', '.join(missing)}, not in Acumatica yet; it follows when they are written"),
                    releases=tuple(invoice_written(i) for i in missing), decisions=decisions)
    if unreleased:
        listed = ", ".join(f"{s.reference_nbr} ({s.status})" for s in unreleased)
        return Hold(reason=(f"payment {payment['id']} of {amount}: AR invoice(s) {listed} not released in Acumatica; "
                            f"Acumatica applies payments to released invoices only; release them (or set "
                            f"release_documents) and the payment follows"),
                    releases=tuple(invoice_released(s.reference_nbr) for s in unreleased), decisions=decisions)
    applied_total = sum((Decimal(str(a.AmountPaid)) for a in applications), Decimal("0"))
    if applied_total > amount:
        return Hold(reason=(f"payment {payment['id']}: applications total {applied_total}, more than its {amount}; "
                            f"correct it in ServiceTitan, then: mlconnector replay <record id>"), decisions=decisions)
    decisions.append(Decision("ExternalRef", reference, "finds the payment again"))
    fields = ArPayment(CustomerID=customer.code, PaymentRef=str(payment.get("checkNumber") or payment.get("referenceNumber")
                                                                 or reference)[:MAX_REFERENCE],
                       ExternalRef=reference, PaymentAmount=float(amount), ApplicationDate=_day(payment.get("date")),
                       Description=(payment.get("memo") or f"ServiceTitan payment {payment['id']}")[:MAX_DESCRIPTION],
                       Hold=not config.release_documents, PaymentMethod=config.payment_method,
                       CashAccount=config.cash_account, DocumentsToApply=applications)
    return MappedRecord(AcumaticaDocument(entity="payments", source_id=str(payment["id"]), fields=fields, total=str(amount),
                                          release=config.release_documents, mark_exported=_to_mark(payment, config)),
                        external_key={"Type": "Payment", "ExternalRef": reference}, decisions=decisions)


# ---- customers and vendors ----------------------------------------------------------------------


def _contact(name: str, address: dict[str, Any], email: str | None = None, phone: str | None = None) -> dict[str, Any]:
    street = " ".join(p for p in (address.get("street"), address.get("unit")) if p)
    contact: dict[str, Any] = {"DisplayName": name[:255],
                               "Address": {"AddressLine1": street[:50] or None, "City": address.get("city") or None,
                                           "State": address.get("state") or None, "PostalCode": address.get("zip") or None,
                                           "Country": "US" if (address.get("country") or "USA") in ("USA", "US", "United States") else address.get("country")}}
    if email:
        contact["Email"] = email
    if phone:
        contact["Phone1"] = phone
    return contact


def map_customer(st_customer: dict[str, Any], config: ServiceTitanAcumaticaConfig) -> CustomerFields:
    """A ServiceTitan customer as a new Acumatica customer."""
    name = (st_customer.get("name") or f"ServiceTitan customer {st_customer['id']}").strip()
    email = next((c.get("value") for c in st_customer.get("contacts") or [] if c.get("type") == "Email"), None)
    return CustomerFields(CustomerID=config.customer_id_format.format(id=st_customer["id"])[:30], CustomerName=name[:255],
                          Email=email, MainContact=_contact(name, _named(st_customer.get("address")), email))


def map_vendor(st_vendor: dict[str, Any], config: ServiceTitanAcumaticaConfig) -> VendorFields:
    """A ServiceTitan vendor as a new Acumatica vendor."""
    name = (st_vendor.get("name") or f"ServiceTitan vendor {st_vendor['id']}").strip()
    contact = _named(st_vendor.get("contactInfo"))
    return VendorFields(VendorID=config.vendor_id_format.format(id=st_vendor["id"])[:30], VendorName=name[:255],
                        MainContact=_contact(name, _named(st_vendor.get("address")), contact.get("email") or None,
                                             contact.get("phone") or None))


def match_by_name(name: str, rows: list[dict[str, Any]], name_field: str) -> list[dict[str, Any]]:
    """Active Acumatica customers or vendors whose normalized name equals `name`."""
    wanted = normalize_name(name)
    return [r for r in rows if wanted and normalize_name(r.get(name_field) or "") == wanted
            and (r.get("Status") or "Active") not in ("Inactive",)]
