"""ServiceTitan -> Epicor Kinetic: pure mapping functions.

Inputs are ServiceTitan records in the vendor's own JSON shape, the integration config and
lookups the task gathered; outputs are Epicor payloads with every decision spelled out, or
a hold that tells a person what to do. No I/O happens here.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pydantic import BaseModel, Field

from mlconnector.config import IntegrationConfig, StrictModel
from mlconnector.decisions import Decision
from mlconnector.flows import MappedRecord
from mlconnector.holds import ConfigNeeded, Hold, TargetCondition
from mlconnector.links import normalize_name
from mappings.servicetitan_values import CENT, money, quantity
from mappings.servicetitan_values import named as _named

MAX_DESCRIPTION = 60  # Epicor's APInvDtl.Description is short; longer text is cut, not refused


class GlAllocation(StrictModel):
    """ServiceTitan exposes no GL dimensions Epicor accepts, so the customer maps them here."""

    default_account: str | None = Field(None, description="Epicor GL account for lines no other rule maps.")
    by_business_unit: dict[str, str] = Field(
        default_factory=dict, description="ServiceTitan business unit id or name -> Epicor GL account.")
    by_st_account: dict[str, str] = Field(
        default_factory=dict, description="ServiceTitan GL account number -> Epicor GL account (wins over business unit).")
    tax_account: str | None = Field(None, description="Epicor GL account of the bill's tax line (default: the first line's).")
    freight_account: str | None = Field(None, description="Epicor GL account of the bill's freight line (default: the first line's).")


class ServiceTitanEpicorConfig(IntegrationConfig):
    invoice_group: str = Field("STAP", description="Epicor AP invoice group the invoices are entered in (found or created).")
    vendor_id_format: str = Field(
        "ST{id}", description="Epicor VendorID made from the ServiceTitan vendor id: for id matching and for created vendors (8 characters at most).")
    sync_vendor_changes_back: bool = Field(True, description="Epicor vendor changes update the linked ServiceTitan vendor.")
    gl: GlAllocation = Field(default_factory=GlAllocation, description="Epicor GL accounts for bill lines.")


class EpicorVendorFields(BaseModel):
    """Name, address and contact of an Epicor vendor, as the pair keeps them aligned."""

    VendorID: str
    Name: str
    Address1: str = ""
    City: str = ""
    State: str = ""
    ZIP: str = ""
    Country: str = ""
    PhoneNum: str = ""
    EMailAddress: str = ""


class EpicorVendorDocument(BaseModel):
    VendorNum: int | None  # None only in a dry run, for a vendor that would be created
    how: str
    fields: EpicorVendorFields


class EpicorInvoiceHeader(BaseModel):
    VendorNum: int | None
    VendorID: str | None = None
    InvoiceNum: str
    InvoiceDate: str | None = None
    DueDate: str | None = None
    Description: str
    InvoiceAmt: str


class EpicorInvoiceLine(BaseModel):
    InvoiceLine: int
    Description: str
    VendorQty: str
    UnitCost: str
    ExtCost: str
    GLAccount: str | None


class EpicorApInvoiceDocument(BaseModel):
    group: str
    header: EpicorInvoiceHeader
    lines: list[EpicorInvoiceLine]


class EpicorPaymentDocument(BaseModel):
    vendor_num: int | None
    invoice_num: str
    amount: str
    payment_date: str
    reference: str


class ServiceTitanVendorPatch(BaseModel):
    id: int
    patch: dict[str, Any]


class ServiceTitanVendorPatches(BaseModel):
    patches: list[ServiceTitanVendorPatch]


@dataclass(frozen=True)
class EpicorVendorRef:
    vendor_num: int | None
    vendor_id: str
    name: str
    how: str  # manual | linked | matched_by_name | matched_by_id | created | to_create


@dataclass(frozen=True)
class InvoiceState:
    """A synced invoice as Epicor holds it, for a payment that names its bill."""

    vendor_num: int
    invoice_num: str
    amount: Decimal
    group: str
    posted: bool


def invoice_number(bill: dict[str, Any]) -> str:
    """The Epicor InvoiceNum: the bill's reference number, else one derived from its id."""
    reference = (bill.get("referenceNumber") or "").strip()
    return reference or f"ST-{bill['id']}"


def choose_gl_account(config: GlAllocation, business_unit: dict[str, Any], st_account: dict[str, Any]) -> tuple[str | None, str]:
    """The Epicor GL account for one line, and why."""
    number = str(st_account.get("number") or "")
    if number and number in config.by_st_account:
        return config.by_st_account[number], f"ServiceTitan account {number} mapped in gl.by_st_account"
    for key in (str(business_unit.get("id") or ""), str(business_unit.get("name") or "")):
        if key and key in config.by_business_unit:
            return config.by_business_unit[key], f"business unit '{business_unit.get('name') or key}' mapped in gl.by_business_unit"
    if config.default_account:
        return config.default_account, "gl.default_account (no business-unit or account mapping)"
    return None, ""


def map_inventory_bill(bill: dict[str, Any], config: ServiceTitanEpicorConfig, vendor: EpicorVendorRef,
                       integration_id: str) -> MappedRecord | Hold:
    """An inventory bill (from a received PO) -> an Epicor AP invoice with its lines."""
    decisions = [Decision("vendor", f"{vendor.vendor_num} {vendor.vendor_id} '{vendor.name}'", _vendor_reason(vendor))]
    business_unit = _named(bill.get("businessUnit"))
    lines: list[dict[str, Any]] = []
    for index, item in enumerate(sorted(bill.get("items") or [], key=lambda i: (i.get("order") or 0, i.get("id") or 0)), start=1):
        account, why = choose_gl_account(config.gl, business_unit, _named(item.get("generalLedgerAccount")))
        if account is None:
            unit = business_unit.get("name") or business_unit.get("id") or "(none)"
            unit_key = str(business_unit.get("id") or business_unit.get("name") or "none")
            return Hold(
                reason=(f"no Epicor GL account for business unit '{unit}' on bill {bill['id']}; add it to "
                        f"gl.by_business_unit.{unit_key} or set gl.default_account (mlconnector integrations set-config "
                        f"{integration_id}); the bill follows the change"),
                releases=(ConfigNeeded(f"gl.by_business_unit.{unit_key}"),
                          *((ConfigNeeded(f"gl.by_business_unit.{business_unit['name']}"),) if business_unit.get("name") else ()),
                          ConfigNeeded("gl.default_account"),
                          *((ConfigNeeded(f"gl.by_st_account.{number}"),) if (number := str(_named(item.get("generalLedgerAccount")).get("number") or "")) else ())),
                decisions=decisions)
        qty = quantity(item.get("quantity"))
        cost = money(item.get("cost"))
        description = (item.get("description") or item.get("name") or item.get("skuCode") or "item").strip()
        lines.append({
            "InvoiceLine": index,
            "Description": description[:MAX_DESCRIPTION],
            "VendorQty": str(qty),
            "UnitCost": str(cost),
            "ExtCost": str((qty * cost).quantize(CENT, rounding=ROUND_HALF_UP)),
            "GLAccount": account,
        })
        decisions.append(Decision(f"line {index} GL", account, why))
    for label, field, account in (("Tax", "taxAmount", config.gl.tax_account), ("Freight", "shippingAmount", config.gl.freight_account)):
        amount = money(bill.get(field))
        if amount:
            chosen = account or (lines[0]["GLAccount"] if lines else config.gl.default_account)
            lines.append({"InvoiceLine": len(lines) + 1, "Description": label, "VendorQty": "1",
                          "UnitCost": str(amount), "ExtCost": str(amount), "GLAccount": chosen})
            decisions.append(Decision(f"{label.lower()} line GL", chosen,
                                      f"gl.{label.lower() if label == 'Tax' else 'freight'}_account" if account else "same account as the first line"))
    total = money(bill.get("billAmount"))
    line_total = sum((Decimal(line["ExtCost"]) for line in lines), Decimal("0"))
    if total and line_total != total:
        decisions.append(Decision("total", str(total), f"bill total differs from its lines ({line_total}); the bill total is used"))
    number = invoice_number(bill)
    decisions.append(Decision("InvoiceNum", number, "bill referenceNumber" if bill.get("referenceNumber") else "derived from the bill id"))
    header = {
        "VendorNum": vendor.vendor_num,
        **({"VendorID": vendor.vendor_id} if vendor.vendor_id else {}),  # spares Epicor a vendor lookup
        "InvoiceNum": number,
        "InvoiceDate": str(bill.get("billDate") or "")[:10] or None,
        "DueDate": str(bill.get("dueDate") or "")[:10] or None,
        "Description": (bill.get("summary") or f"ServiceTitan bill {bill['id']}")[:MAX_DESCRIPTION],
        "InvoiceAmt": str(total or line_total),
    }
    document = EpicorApInvoiceDocument(group=config.invoice_group, header=EpicorInvoiceHeader(**header),
                                       lines=[EpicorInvoiceLine(**line) for line in lines])
    return MappedRecord(document, external_key={"VendorNum": vendor.vendor_num, "InvoiceNum": number}, decisions=decisions)


def _vendor_reason(vendor: EpicorVendorRef) -> str:
    return {
        "linked": "vendor link",
        "manual": "vendor linked by hand",
        "matched_by_name": "matched by normalized name",
        "matched_by_id": "matched by vendor id",
        "matched_by_code": "matched by vendor code",
        "created": "created in Epicor from the ServiceTitan vendor",
        "to_create": "would be created in Epicor (dry run)",
    }.get(vendor.how, vendor.how)


def match_vendor_by_name(st_name: str, epicor_vendors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    wanted = normalize_name(st_name)
    return [v for v in epicor_vendors if wanted and normalize_name(v.get("Name", "")) == wanted and not v.get("Inactive")]


def map_vendor_to_epicor(st_vendor: dict[str, Any], config: ServiceTitanEpicorConfig) -> EpicorVendorFields:
    """Name, address and contact of a ServiceTitan vendor as Epicor Vendor fields."""
    address = _named(st_vendor.get("address"))
    contact = _named(st_vendor.get("contactInfo"))
    street = " ".join(p for p in (address.get("street"), address.get("unit")) if p)
    return EpicorVendorFields(
        VendorID=config.vendor_id_format.format(id=st_vendor["id"])[:8],
        Name=(st_vendor.get("name") or "")[:50],
        Address1=street[:50],
        City=(address.get("city") or "")[:50],
        State=(address.get("state") or "")[:50],
        ZIP=(address.get("zip") or "")[:10],
        Country=(address.get("country") or "")[:50],
        PhoneNum=(contact.get("phone") or "")[:20],
        EMailAddress=(contact.get("email") or "")[:50],
    )


def map_epicor_vendor_to_servicetitan(epicor_vendor: dict[str, Any], st_vendor: dict[str, Any]) -> dict[str, Any]:
    """An Epicor vendor's name, address and contact as a ServiceTitan vendor PATCH (changed fields only)."""
    address = dict(_named(st_vendor.get("address")))
    wanted_address = {**address, "street": epicor_vendor.get("Address1") or "", "city": epicor_vendor.get("City") or "",
                      "state": epicor_vendor.get("State") or "", "zip": epicor_vendor.get("ZIP") or "",
                      "country": epicor_vendor.get("Country") or address.get("country") or ""}
    contact = dict(_named(st_vendor.get("contactInfo")))
    wanted_contact = {**contact, "phone": epicor_vendor.get("PhoneNum") or contact.get("phone"),
                      "email": epicor_vendor.get("EMailAddress") or contact.get("email")}
    patch: dict[str, Any] = {}
    if (epicor_vendor.get("Name") or "") and epicor_vendor.get("Name") != st_vendor.get("name"):
        patch["name"] = epicor_vendor["Name"]
    if {k: wanted_address.get(k) or "" for k in ("street", "city", "state", "zip")} != {k: address.get(k) or "" for k in ("street", "city", "state", "zip")}:
        patch["address"] = wanted_address
    if (wanted_contact.get("phone") or "") != (contact.get("phone") or "") or (wanted_contact.get("email") or "") != (contact.get("email") or ""):
        patch["contactInfo"] = wanted_contact
    return patch


def map_payment(payment: dict[str, Any], vendor: EpicorVendorRef, candidates: list[dict[str, Any]],
                bill_invoices: dict[str, InvoiceState]) -> MappedRecord | Hold:
    """A ServiceTitan AP payment -> an Epicor AP payment on the one invoice it matches.

    Matched by vendor and amount, as the customer's books expect; when several open
    invoices share the amount, the payment's split to a synced bill decides, else a person
    does. A payment whose bill's invoice is in Epicor but not posted waits for the posting
    (Epicor applies payments to posted invoices only) and follows it on the next poll.
    """
    amount = money(payment.get("amount"))
    decisions = [Decision("vendor", f"{vendor.vendor_num} '{vendor.name}'", _vendor_reason(vendor)),
                 Decision("amount", str(amount), "payment amount")]
    split_bills = [str(s.get("inventoryBillId")) for s in payment.get("splits") or [] if s.get("inventoryBillId")]
    matches = [c for c in candidates if money(c.get("InvoiceBal", c.get("InvoiceAmt"))) == amount]
    if len(matches) > 1:
        split_numbers = {bill_invoices[b].invoice_num for b in split_bills if b in bill_invoices}
        narrowed = [c for c in matches if c.get("InvoiceNum") in split_numbers]
        if len(narrowed) == 1:
            decisions.append(Decision("invoice", narrowed[0]["InvoiceNum"], "several invoices share the amount; the payment's split names this bill"))
            matches = narrowed
    if not matches:
        unposted = [bill_invoices[b] for b in split_bills if b in bill_invoices and not bill_invoices[b].posted]
        if unposted:
            listed = ", ".join(f"invoice {i.invoice_num} ({i.amount}) is in group {i.group or '(none)'}" for i in unposted)
            return Hold(
                reason=(f"payment {payment['id']} of {amount} to '{vendor.name}': {listed} but not posted; Epicor applies "
                        f"payments to posted invoices only; post it and the payment follows on the next poll"),
                releases=tuple(TargetCondition("epicor", "ap_invoice", f"{i.vendor_num}/{i.invoice_num}", "posted") for i in unposted),
                decisions=decisions)
    if len(matches) != 1:
        listed = "; ".join(f"{c.get('InvoiceNum')} ({money(c.get('InvoiceBal', c.get('InvoiceAmt')))})" for c in (matches or candidates)[:10]) or "none"
        what = "no open posted invoice" if not matches else f"{len(matches)} open invoices"
        return Hold(reason=(f"payment {payment['id']} of {amount} to '{vendor.name}': {what} with that amount; candidates: "
                            f"{listed}; check the invoice in Epicor, then: mlconnector replay <record id>"),
                    decisions=decisions)
    invoice = matches[0]
    decisions.append(Decision("invoice", invoice["InvoiceNum"], "the one open invoice of this vendor with this amount"))
    reference = f"ST-PAY-{payment['id']}"
    document = EpicorPaymentDocument(vendor_num=vendor.vendor_num, invoice_num=invoice["InvoiceNum"], amount=str(amount),
                                     payment_date=str(payment.get("date") or "")[:10], reference=reference)
    return MappedRecord(document, external_key={"vendor_num": vendor.vendor_num, "reference": reference}, decisions=decisions)
