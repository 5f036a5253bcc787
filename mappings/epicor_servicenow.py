"""Epicor Kinetic -> ServiceNow (Source-to-Pay): pure mapping functions.

Inputs are Epicor rows in the vendor's own JSON shape (vendors, PO headers with their
PODetails, AP invoice headers with their APInvDtls), the integration config and the lookups
the task gathered (the supplier's and cost centers' ServiceNow sys_ids). Outputs are staged
documents: the Import Set row (staging fields) that creates the target, the target-table
fields an update compares and patches, and the documented fields that find the target again
on a stock instance, which has no custom correlation column. No I/O happens here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal, Mapping

from pydantic import BaseModel, Field

from mlconnector.config import IntegrationConfig, StrictModel
from mlconnector.decisions import Decision
from mlconnector.flows import MappedRecord
from mlconnector.holds import ConfigNeeded, Hold

CENT = Decimal("0.01")
EPICOR_SEGMENT_SEPARATOR = "|"  # GLAccount as Epicor stores it ("5100|100"); people write "5100-100"


class CostCenterMap(StrictModel):
    """Epicor GL accounts -> ServiceNow cost centers: Epicor has no cost center on an AP line,
    only its GL account, so the customer says which ServiceNow dimension each account is."""

    by_account: dict[str, str] = Field(
        default_factory=dict,
        description="Epicor GL account (segments joined by '-', e.g. 5100-100) -> ServiceNow cost center "
                    "(its account number, the connector's cost_center_key).")
    default: str | None = Field(None, description="Cost center for accounts not listed (unset: such a line is held).")


class PoStatuses(StrictModel):
    """ServiceNow PO status values for Epicor's OpenOrder / VoidOrder flags."""

    open: str = Field("ordered", description="Status of an open Epicor PO.")
    closed: str = Field("closed", description="Status of a PO closed in Epicor (OpenOrder false).")
    void: str = Field("canceled", description="Status of a PO voided in Epicor (VoidOrder true).")


class InvoiceStatuses(StrictModel):
    """ServiceNow invoice status values for Epicor's Posted flag."""

    open: str = Field("pending", description="Status of an Epicor invoice not posted yet.")
    posted: str = Field("approved", description="Status of an invoice posted in Epicor.")


class EpicorServiceNowConfig(IntegrationConfig):
    erp_source: str = Field("Epicor Kinetic", description="ERP source written on suppliers, POs and invoices (a key of them).")
    external_invoice_source: str = Field("Epicor Kinetic", description="External invoice source written on invoices.")
    cost_centers: CostCenterMap = Field(default_factory=CostCenterMap, description="Epicor GL account -> ServiceNow cost center.")
    po_statuses: PoStatuses = Field(default_factory=PoStatuses, description="ServiceNow PO status per Epicor PO state.")
    invoice_statuses: InvoiceStatuses = Field(default_factory=InvoiceStatuses,
                                              description="ServiceNow invoice status per Epicor invoice state.")


class StagedRow(BaseModel):
    """One record: `staging` creates it through the Import Set API; `target` is what the
    target table should hold (compared and patched on an update); `keys` find it again;
    `label` names it in plans and audit rows (never a bank account number in full)."""

    staging: dict[str, str]
    target: dict[str, str]
    keys: dict[str, str] = Field(default_factory=dict)
    label: str = ""
    create: bool = True  # False: only kept aligned where it exists (an account Epicor made inactive)


class StagedDocument(BaseModel):
    kind: Literal["supplier", "purchase_order", "invoice"]
    label: str
    header: StagedRow
    lines: list[StagedRow] = Field(default_factory=list)


@dataclass(frozen=True)
class SupplierRef:
    sys_id: str
    name: str
    how: str


@dataclass(frozen=True)
class CostCenterRef:
    """A ServiceNow cost center the task found for a configured value (sys_id None: not there)."""

    value: str
    sys_id: str | None


# ---- values ------------------------------------------------------------------------------------


def money(value: Any) -> str:
    """A currency amount as ServiceNow stores it: two places, always."""
    return format(_decimal(value).quantize(CENT, rounding=ROUND_HALF_UP), "f")


def number(value: Any) -> str:
    """A quantity or unit cost without trailing zeros ("40.0" -> "40", "2.50000" -> "2.5")."""
    text = format(_decimal(value).normalize(), "f")
    return text if text != "-0" else "0"


def amount(row: Mapping[str, Any], name: str) -> Decimal:
    """The document-currency amount (`Doc<name>`) when Epicor filled it, else the base one:
    Epicor leaves Doc* at zero on rows entered in base currency."""
    document = _decimal(row.get(f"Doc{name}"))
    return document if document else _decimal(row.get(name))


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value if value not in (None, "") else 0))
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None


def day(value: Any) -> str:
    """yyyy-mm-dd, the only date form the S2P transforms take ('' when Epicor has none)."""
    if value in (None, ""):
        return ""
    if isinstance(value, (date, datetime)):
        return value.isoformat()[:10]
    return str(value)[:10]


def gl_account(value: str) -> str:
    """Epicor's stored GL account ("5100|100") as people write it ("5100-100")."""
    return (value or "").replace(EPICOR_SEGMENT_SEPARATOR, "-")


# ---- suppliers ---------------------------------------------------------------------------------


def map_supplier(vendor: Mapping[str, Any], config: EpicorServiceNowConfig) -> MappedRecord:
    """An Epicor vendor as a ServiceNow supplier: procurement contact and payment details
    (terms, currency) kept aligned; found again by its name on a stock instance."""
    name = str(vendor.get("Name") or vendor.get("VendorID") or "").strip()
    street = ", ".join(str(vendor.get(f) or "").strip() for f in ("Address1", "Address2", "Address3") if vendor.get(f))
    shared = {
        "name": name, "street": street, "city": str(vendor.get("City") or ""), "state": str(vendor.get("State") or ""),
        "zip": str(vendor.get("ZIP") or ""), "country": str(vendor.get("Country") or ""),
        "phone": str(vendor.get("PhoneNum") or ""), "email": str(vendor.get("EMailAddress") or ""),
        "currency": str(vendor.get("CurrencyCode") or ""), "payment_term": str(vendor.get("TermsCode") or ""),
    }
    staging = {**shared, "legal_name": name, "erp_source": config.erp_source}
    target = {**shared, "active": "false" if vendor.get("Inactive") else "true"}
    banks = [map_payment_detail(bank) for bank in _lines(vendor, "VendBanks") if str(bank.get("BankAcctNumber") or "").strip()]
    document = StagedDocument(kind="supplier", label=f"supplier '{name}'",
                              header=StagedRow(staging=staging, target=target, keys={"name": name}), lines=banks)
    decisions = [Decision("supplier", name, f"Epicor vendor {vendor.get('VendorID')} ({vendor.get('VendorNum')})")]
    decisions += [Decision("payment details", b.label, "active in Epicor" if b.create else "inactive in Epicor") for b in banks]
    return MappedRecord(document, external_key={"VendorNum": vendor.get("VendorNum")}, decisions=decisions)


def masked_account(number_text: str) -> str:
    """A bank account as plans and audit rows show it: its last four digits."""
    return f"****{number_text.strip()[-4:]}"


def map_payment_detail(bank: Mapping[str, Any]) -> StagedRow:
    """One Epicor vendor bank account (VendBank) as a ServiceNow supplier payment detail,
    found again under its supplier by the account number. An account inactive in Epicor is
    made inactive where ServiceNow has it and never created."""
    account = str(bank.get("BankAcctNumber") or "").strip()
    fields = {
        "bank_name": str(bank.get("BankName") or ""), "account_name": str(bank.get("NameOnAccount") or ""),
        "bank_account_number": account, "routing_number": str(bank.get("BankIdentifier") or ""),
        "iban": str(bank.get("IBANCode") or ""), "swift_code": str(bank.get("SwiftNum") or ""),
        "currency": str(bank.get("CurrencyCode") or ""), "primary": "true" if bank.get("PrimaryBank") else "false",
        "active": "false" if bank.get("Inactive") else "true",
    }
    label = f"{fields['bank_name'] or bank.get('BankID') or 'bank'} account {masked_account(account)}"
    return StagedRow(staging=fields, target=fields, keys={"bank_account_number": account}, label=label,
                     create=not bank.get("Inactive"))


# ---- cost centers ------------------------------------------------------------------------------


def cost_center_value(account: str, config: EpicorServiceNowConfig) -> str | None:
    """The configured ServiceNow cost center of an Epicor GL account (None: not mapped)."""
    return config.cost_centers.by_account.get(gl_account(account)) or config.cost_centers.default


def accounts_of(invoice: Mapping[str, Any]) -> list[str]:
    """The distinct GL accounts of an invoice's lines, as people write them."""
    return list(dict.fromkeys(gl_account(str(l.get("GLAccount") or "")) for l in _lines(invoice, "APInvDtls")))


def unmapped_hold(document: str, accounts: list[str], missing_in_target: Mapping[str, str]) -> Hold:
    """A hold naming every GL account without a usable cost center (not mapped, or mapped to
    one ServiceNow does not have); a config change of that account's key releases it."""
    parts = []
    if accounts:
        parts.append(f"GL account(s) {', '.join(accounts)} have no ServiceNow cost center; map each with "
                     f"cost_centers.by_account.<account> (mlconnector set-config) and the invoice follows")
    if missing_in_target:
        named = ", ".join(f"{value} (for GL account {account})" for account, value in missing_in_target.items())
        parts.append(f"cost center(s) {named} are not in ServiceNow; create them there or change cost_centers.by_account")
    releases = tuple(ConfigNeeded(f"cost_centers.by_account.{a}") for a in [*accounts, *missing_in_target]) + \
        (ConfigNeeded("cost_centers.default"),)
    return Hold(reason=f"{document}: " + "; ".join(parts), releases=releases,
                decisions=[Decision("cost center", a, "no mapping") for a in accounts])


# ---- purchase orders ---------------------------------------------------------------------------


def po_status(po: Mapping[str, Any], config: EpicorServiceNowConfig) -> str:
    if po.get("VoidOrder"):
        return config.po_statuses.void
    return config.po_statuses.open if po.get("OpenOrder", True) else config.po_statuses.closed


def map_purchase_order(po: Mapping[str, Any], config: EpicorServiceNowConfig, supplier: SupplierRef) -> MappedRecord:
    """An Epicor PO (POHeader + PODetails) as an S2P inbound order with its lines."""
    number_text = str(po["PONum"])
    status = po_status(po, config)
    lines = sorted(_lines(po, "PODetails"), key=lambda l: int(l.get("POLine") or 0))
    total = amount(po, "TotalOrder") or sum((amount(l, "ExtCost") for l in lines), Decimal(0))
    header_staging = {
        "erp_po_number": number_text, "erp_source": config.erp_source, "order_type": "Standard",
        "po_amount": money(total), "po_amount_currency": str(po.get("CurrencyCode") or ""), "po_status": status,
        "supplier_company_name": supplier.sys_id, "payment_term": str(po.get("TermsCode") or ""),
        "order_date": day(po.get("OrderDate")),
    }
    header_target = {"erp_number": number_text, "erp_source": config.erp_source, "supplier": supplier.sys_id,
                     "total_amount": money(total), "status": status}
    rows = []
    for line in lines:
        extended = money(amount(line, "ExtCost"))
        shared = {"line_number": str(line.get("POLine")), "description": str(line.get("LineDesc") or line.get("PartNum") or ""),
                  "quantity": number(line.get("OrderQty")), "unit_price": number(amount(line, "UnitCost"))}
        rows.append(StagedRow(staging={**shared, "line_amount": extended}, target={**shared, "amount": extended},
                              keys={"line_number": shared["line_number"]}))
    document = StagedDocument(kind="purchase_order", label=f"PO {number_text}",
                              header=StagedRow(staging=header_staging, target=header_target,
                                               keys={"erp_number": number_text, "erp_source": config.erp_source}),
                              lines=rows)
    decisions = [Decision("status", status, _po_state_words(po))]
    return MappedRecord(document, external_key={"PONum": po["PONum"]}, decisions=decisions)


def _po_state_words(po: Mapping[str, Any]) -> str:
    if po.get("VoidOrder"):
        return "voided in Epicor"
    return "open in Epicor" if po.get("OpenOrder", True) else "closed in Epicor"


# ---- AP invoices -------------------------------------------------------------------------------


def map_ap_invoice(invoice: Mapping[str, Any], config: EpicorServiceNowConfig, supplier: SupplierRef,
                   cost_centers: Mapping[str, CostCenterRef]) -> MappedRecord | Hold:
    """An Epicor AP invoice (APInvHed + APInvDtls) as an S2P inbound invoice with its lines,
    every line on the ServiceNow cost center its GL account maps to (else a hold naming it)."""
    number_text = str(invoice["InvoiceNum"])
    label = f"AP invoice {number_text} of vendor {invoice.get('VendorNumVendorID') or invoice.get('VendorNum')}"
    lines = sorted(_lines(invoice, "APInvDtls"), key=lambda l: int(l.get("InvoiceLine") or 0))
    unmapped = [a for a in accounts_of(invoice) if cost_center_value(a, config) is None]
    absent = {a: ref.value for a, ref in sorted(cost_centers.items()) if ref.sys_id is None and a not in unmapped}
    if unmapped or absent:
        return unmapped_hold(label, unmapped, absent)
    status = config.invoice_statuses.posted if invoice.get("Posted") else config.invoice_statuses.open
    total = money(amount(invoice, "InvoiceAmt"))
    tax = money(amount(invoice, "TaxAmt"))
    header_staging = {
        "external_invoice_number": number_text, "external_invoice_source": config.external_invoice_source,
        "erp_source": config.erp_source, "invoice_date": day(invoice.get("InvoiceDate")),
        "due_date": day(invoice.get("DueDate")), "other_charges": "0.00", "amount_invoiced": total,
        "currency": str(invoice.get("CurrencyCode") or ""), "final_tax": tax,
        "invoice_type": "Credit memo" if invoice.get("DebitMemo") else "Standard",
        "purchase_order": str(invoice.get("REFPONum")) if invoice.get("REFPONum") else "",
        "erp_number": number_text, "payment_terms": str(invoice.get("TermsCode") or ""),
        "invoice_line_count": str(len(lines)), "supplier": supplier.sys_id,
    }
    header_target = {"external_invoice_number": number_text, "erp_source": config.erp_source, "supplier": supplier.sys_id,
                     "total_amount": total, "status": status}
    decisions = [Decision("status", status, "posted in Epicor" if invoice.get("Posted") else "not posted in Epicor")]
    rows = []
    for line in lines:
        account = gl_account(str(line.get("GLAccount") or ""))
        center = cost_centers[account]
        line_amount = money(amount(line, "ExtCost"))
        shared = {"line_number": str(line.get("InvoiceLine")), "description": str(line.get("Description") or ""),
                  "quantity": number(line.get("VendorQty")), "unit_price": number(amount(line, "UnitCost")),
                  "cost_center": center.sys_id or "", "gl_account": account}
        rows.append(StagedRow(staging={**shared, "line_amount": line_amount}, target={**shared, "amount": line_amount},
                              keys={"line_number": shared["line_number"]}))
        decisions.append(Decision(f"line {shared['line_number']} cost center", center.value, f"GL account {account}"))
    document = StagedDocument(kind="invoice", label=label,
                              header=StagedRow(staging=header_staging, target=header_target,
                                               keys={"external_invoice_number": number_text, "erp_source": config.erp_source,
                                                     "supplier": supplier.sys_id}),
                              lines=rows)
    return MappedRecord(document, external_key={"VendorNum": invoice.get("VendorNum"), "InvoiceNum": number_text},
                        decisions=decisions)


def _lines(document: Mapping[str, Any], navigation: str) -> list[dict[str, Any]]:
    """A header's child rows under its OData navigation name or the model's `lines`."""
    return [dict(l) for l in (document.get(navigation) or document.get("lines") or [])]


# ---- comparing with the target -----------------------------------------------------------------


def differences(current: Mapping[str, Any], wanted: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """Fields whose target value differs from the wanted one. A column the row does not carry
    is one the instance lacks (it would drop the value), so it is not a difference."""
    return {name: (current.get(name), value) for name, value in wanted.items()
            if name in current and _plain(current.get(name)) != value}


def _plain(value: Any) -> str:
    if isinstance(value, dict):  # a reference rendered with its link
        value = value.get("value", "")
    return "" if value is None else str(value)
