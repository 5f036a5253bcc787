"""Epicor's business rules: groups and their locks, suppliers, duplicates, invoice totals,
the invoice and payment tableset saves, and the OData writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from sandboxes.epicor.store import (APINV_TABLES, BL_EXCEPTION, DUPLICATE_EXCEPTION, NAVIGATION, PAY_TABLES,
                                    EpicorError, as_date, bo_error, not_found, tableset)

if TYPE_CHECKING:
    from sandboxes.epicor.sandbox import EpicorSandbox


GROUP_MISSING = {"APInvGrp": "AP invoice group '{}' was not found. Create the group first.",
                 "APChkGrp": "AP payment group '{}' was not found."}
POSTED = "The invoice has been posted and cannot be changed."
# An OData write: (sandbox, body, the row addressed) -> the row written.
Write = Callable[["EpicorSandbox", dict[str, Any], Any], dict[str, Any]]


def unsaved_header(invoice_num: Any, vendor_num: Any) -> EpicorError:
    return bo_error(f"AP invoice {invoice_num} for supplier {vendor_num} must be saved before lines are added.",
                    "APInvDtl", "InvoiceNum")


def check_revision(given: dict[str, Any], stored: dict[str, Any], table: str) -> None:
    """Optimistic concurrency: a row sent with another SysRevID than the stored one is refused."""
    if given.get("SysRevID") not in (None, 0) and int(given["SysRevID"]) != stored["SysRevID"]:
        raise bo_error("Row has been modified by another user and couldn't be updated.", table)


class RulesMixin:
    """The rules several requests share: duplicates, group locks, suppliers, invoice totals."""

    def duplicate(self, message: str, table: str, field_name: str) -> EpicorError:
        """A key that already exists, refused with the configured status (409 or a 400 BLException)."""
        status = self.settings.duplicate_status
        return EpicorError(status, message, DUPLICATE_EXCEPTION if status == 409 else BL_EXCEPTION, table, field_name)

    def group_for_write(self, group_id: str, table: str = "APInvHed", groups: str = "APInvGrp") -> dict[str, Any]:
        """An invoice (or payment) group that exists and is not held by another user."""
        group = self.tables[groups].get(group_id or "")
        if group is None:
            raise bo_error(GROUP_MISSING[groups].format(group_id), table, "GroupID")
        holder = group["ActiveUserID"]
        if holder and holder.casefold() != self.user.casefold():
            raise bo_error(f"Group {group['GroupID']} is in use by {holder}.", table, "GroupID")
        return group

    def vendor_by_id(self, vendor_id: str) -> dict[str, Any]:
        vendor = self.tables["Vendor"].one("VendorID", vendor_id or "")
        if vendor is None:
            raise bo_error(f"Supplier '{vendor_id}' is not valid.", "APInvHed", "VendorNumVendorID")
        if vendor["Inactive"]:
            raise bo_error(f"Supplier '{vendor_id}' is inactive.", "APInvHed", "VendorNumVendorID")
        return vendor

    def _fill_invoice(self, row: dict[str, Any], *, recompute: bool, new: bool, explicit_balance: bool = False) -> None:
        """Header totals follow the lines; the balance follows the payments applied."""
        vendor = self.tables["Vendor"].get(row["VendorNum"])
        if vendor:
            row["VendorNumVendorID"] = vendor["VendorID"]
            row["VendorNumName"] = vendor["Name"]
        if recompute:
            lines = self.tables["APInvDtl"].children(row["VendorNum"], row["InvoiceNum"])
            total = round(sum(line["ExtCost"] for line in lines), 2)
            row["InvoiceAmt"] = row["DocInvoiceAmt"] = row["ScrInvoiceAmt"] = row["ScrDocInvoiceAmt"] = total
        if not explicit_balance:
            paid = self._paid(row["VendorNum"], row["InvoiceNum"])
            row["InvoiceBal"] = row["DocInvoiceBal"] = round(row["InvoiceAmt"] - paid, 2)
        row["OpenPayable"] = row["InvoiceBal"] != 0 or (new and row["InvoiceAmt"] == 0)

    def _paid(self, vendor_num: int, invoice_num: str) -> float:
        """What the invoice's payment lines (on checks not voided) applied to it."""
        return round(sum(tran["TranAmt"] for head in self.tables["CheckHed"].lookup("VendorNum", vendor_num)
                         if not head["Voided"] for tran in self.children_of("CheckHed", head)
                         if tran["InvoiceNum"].casefold() == invoice_num.casefold()), 2)

    def delete_invoice(self, header: dict[str, Any]) -> None:
        """An invoice goes with its lines."""
        for line in self.children_of("APInvHed", header):
            self.tables["APInvDtl"].delete(line)
        self.tables["APInvHed"].delete(header)


def _valid_gl(sb: EpicorSandbox, account: str) -> str:
    normalized = account.replace("-", "|").strip()
    row = sb.tables["GLAccount"].get("MAIN", normalized)
    if row is None or not row["Active"]:
        raise bo_error(f"GL account {account} is not valid or is inactive.", "APInvDtl", "GLAccount")
    return row["GLAccount1"]


def save_invoice_tableset(sb: EpicorSandbox, ds: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Update: validate every changed row first, then write; answer the refreshed tableset."""
    user = sb.user
    invoices = sb.tables["APInvHed"]
    lines = sb.tables["APInvDtl"]
    touched: dict[tuple, tuple[int, str]] = {}
    header_writes: list[dict[str, Any]] = []
    line_writes: list[tuple[str, dict[str, Any]]] = []

    for given in ds["APInvHed"]:
        mod = given.get("RowMod") or ""
        if mod not in ("A", "U", "D"):
            continue
        row = sb.new_row("APInvHed", given) if mod == "A" else None
        vendor_num = int(given.get("VendorNum") or 0)
        invoice_num = str(given.get("InvoiceNum") or "").strip()
        if mod == "A":
            assert row is not None
            if not vendor_num:
                raise bo_error("A valid supplier is required.", "APInvHed", "VendorNum")
            if not invoice_num:
                raise bo_error("Invoice number is required.", "APInvHed", "InvoiceNum")
            sb.group_for_write(str(given.get("GroupID") or ""))
            vendor = sb.tables["Vendor"].get(vendor_num)
            if vendor is None:
                raise bo_error(f"Supplier {vendor_num} is not valid.", "APInvHed", "VendorNum")
            if not row["DebitMemo"] and not row["InvoiceVendorAmt"]:
                raise bo_error("Invoice amount is required.", "APInvHed", "InvoiceVendorAmt")
            if invoices.get(vendor_num, invoice_num) is not None or any(
                    w["VendorNum"] == vendor_num and w["InvoiceNum"].casefold() == invoice_num.casefold()
                    for w in header_writes):
                raise sb.duplicate(f"AP invoice {invoice_num} already exists for supplier {vendor['VendorID']}.",
                                   "APInvHed", "InvoiceNum")
            row["InvoiceNum"] = invoice_num
            row["EntryPerson"] = row["EntryPerson"] or user
            if not row["InvoiceDate"]:
                raise bo_error("Invoice date is required.", "APInvHed", "InvoiceDate")
            header_writes.append(row)
        else:
            stored = invoices.get(vendor_num, invoice_num)
            if stored is None:
                raise not_found("APInvHed")
            if stored["Posted"]:
                raise bo_error(POSTED, "APInvHed")
            sb.group_for_write(stored["GroupID"])
            check_revision(given, stored, "APInvHed")
            if mod == "D":
                header_writes.append({**stored, "RowMod": "D"})
            else:
                changes = sb.coerce(invoices, {k: v for k, v in given.items() if k in (
                    "Description", "InvoiceDate", "DueDate", "InvoiceVendorAmt", "DocInvoiceVendorAmt", "TermsCode",
                    "InvoiceRef", "REFPONum", "PayHold", "InvoiceHeld", "ApplyDate", "ReadyToCalc")})
                header_writes.append({**stored, **changes})
        touched[(vendor_num, invoice_num.casefold())] = (vendor_num, invoice_num)

    for given in ds["APInvDtl"]:
        mod = given.get("RowMod") or ""
        if mod not in ("A", "U", "D"):
            continue
        vendor_num = int(given.get("VendorNum") or 0)
        invoice_num = str(given.get("InvoiceNum") or "")
        pending_header = next((w for w in header_writes if w["VendorNum"] == vendor_num
                               and w["InvoiceNum"].casefold() == invoice_num.casefold()), None)
        header = pending_header or invoices.get(vendor_num, invoice_num)
        if header is None:
            raise unsaved_header(invoice_num, vendor_num)
        if header.get("Posted"):
            raise bo_error(POSTED, "APInvDtl")
        sb.group_for_write(header["GroupID"], "APInvDtl")
        line_no = int(given.get("InvoiceLine") or 0)
        stored = lines.get(vendor_num, invoice_num, line_no)
        if mod == "A":
            if stored is not None or any(r["VendorNum"] == vendor_num and r["InvoiceLine"] == line_no and
                                         r["InvoiceNum"].casefold() == invoice_num.casefold() for _, r in line_writes):
                raise sb.duplicate(f"Invoice line {line_no} already exists on invoice {invoice_num}.",
                                   "APInvDtl", "InvoiceLine")
            row = sb.new_row("APInvDtl", given)
            row["InvoiceNum"] = header["InvoiceNum"]
        else:
            if stored is None:
                raise not_found("APInvDtl")
            check_revision(given, stored, "APInvDtl")
            row = {**stored, **sb.coerce(lines, {k: v for k, v in given.items() if k not in lines.key})}
        if mod != "D":
            if not str(row["Description"]).strip():
                raise bo_error("Line description is required.", "APInvDtl", "Description")
            if row["LineType"] == "MSC" and not row["GLAccount"]:
                raise bo_error("A GL account is required on a miscellaneous line.", "APInvDtl", "GLAccount")
            if row["GLAccount"]:
                row["GLAccount"] = _valid_gl(sb, row["GLAccount"])
        line_writes.append((mod, row))
        touched[(vendor_num, invoice_num.casefold())] = (vendor_num, header["InvoiceNum"])

    for row in header_writes:
        if row.get("RowMod") == "D":
            sb.delete_invoice(row)
            continue
        sb._fill_invoice(row, recompute=True, new=True)
        sb.write("APInvHed", row, user=user)
    for mod, row in line_writes:
        if mod == "D":
            lines.delete(row)
        else:
            sb.write("APInvDtl", row, user=user)
    for vendor_num, invoice_num in touched.values():
        header = invoices.get(vendor_num, invoice_num)
        if header is not None and line_writes:
            sb._fill_invoice(header, recompute=True, new=False)
            sb.write("APInvHed", header, user=user)

    saved = [header for header in (invoices.get(*key) for key in touched.values()) if header is not None]
    lines_saved = [line for header in saved for line in sb.children_of("APInvHed", header)]
    return tableset(APINV_TABLES, APInvHed=saved, APInvDtl=lines_saved)


def payable_invoice(sb: EpicorSandbox, vendor_num: int, invoice_num: str) -> dict[str, Any]:
    invoice = sb.tables["APInvHed"].get(vendor_num, invoice_num)
    if invoice is None:
        raise bo_error(f"Invoice {invoice_num} is not valid for this supplier.", "APTran", "InvoiceNum")
    if sb.settings.payments_require_posted and not invoice["Posted"]:
        raise bo_error(f"Invoice {invoice_num} has not been posted.", "APTran", "InvoiceNum")
    if not invoice["OpenPayable"] or invoice["InvoiceBal"] <= 0:
        raise bo_error(f"Invoice {invoice_num} is fully paid.", "APTran", "InvoiceNum")
    return invoice


def save_payment_tableset(sb: EpicorSandbox, ds: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Payment Entry's Update: checks and lines validated against the invoices they pay, then written."""
    heads = sb.tables["CheckHed"]
    trans = sb.tables["APTran"]
    head_writes: list[dict[str, Any]] = []
    tran_writes: list[dict[str, Any]] = []
    applied: dict[tuple, float] = {}
    touched: list[int] = []
    for given in ds["CheckHed"]:
        if given.get("RowMod") not in ("A", "U"):
            continue
        head = sb.new_row("CheckHed", given)
        if given.get("RowMod") == "A":
            if heads.get(head["HeadNum"]) is not None:
                raise sb.duplicate(f"Payment {head['HeadNum']} already exists.", "CheckHed", "HeadNum")
        else:
            stored = heads.get(head["HeadNum"])
            if stored is None:
                raise not_found("CheckHed")
            if stored["Posted"]:
                raise bo_error("The payment has been posted and cannot be changed.", "CheckHed")
            head = {**stored, **sb.coerce(heads, {k: v for k, v in given.items() if k in (
                "CheckDate", "XRefCheckNum", "BankAcctID", "CheckNum")})}
        group = sb.group_for_write(head["GroupID"], "CheckHed", "APChkGrp")
        if not head["VendorNum"]:
            raise bo_error("A valid supplier is required.", "CheckHed", "VendorNum")
        head["BankAcctID"] = head["BankAcctID"] or group["BankAcctID"]
        head_writes.append(head)
        touched.append(head["HeadNum"])
    for given in ds["APTran"]:
        if given.get("RowMod") != "A":
            continue
        tran = sb.new_row("APTran", given)
        head = next((h for h in head_writes if h["HeadNum"] == tran["HeadNum"]), None) or heads.get(tran["HeadNum"])
        if head is None:
            raise bo_error(f"Payment {tran['HeadNum']} was not found.", "APTran", "HeadNum")
        if trans.get(tran["HeadNum"], tran["APTranNo"]) is not None:
            raise sb.duplicate(f"Payment line {tran['APTranNo']} already exists.", "APTran", "APTranNo")
        invoice = payable_invoice(sb, head["VendorNum"], tran["InvoiceNum"])
        key = (invoice["VendorNum"], invoice["InvoiceNum"].casefold())
        if tran["DocTranAmt"] <= 0:
            raise bo_error("The payment amount must be greater than zero.", "APTran", "DocTranAmt")
        if round(applied.get(key, 0.0) + tran["DocTranAmt"], 2) > invoice["InvoiceBal"]:
            raise bo_error(f"The payment amount exceeds the balance of invoice {invoice['InvoiceNum']} "
                           f"({invoice['InvoiceBal']:.2f}).", "APTran", "DocTranAmt")
        applied[key] = round(applied.get(key, 0.0) + tran["DocTranAmt"], 2)
        tran.update({"VendorNum": head["VendorNum"], "TranAmt": tran["DocTranAmt"], "GroupID": head["GroupID"],
                     "TranDate": tran["TranDate"] or head["CheckDate"]})
        tran_writes.append(tran)
        if head["HeadNum"] not in touched:
            touched.append(head["HeadNum"])
    for head in head_writes:
        lines = [t for t in tran_writes if t["HeadNum"] == head["HeadNum"]] + trans.children(head["HeadNum"])
        head["CheckAmt"] = head["DocCheckAmt"] = round(sum(t["DocTranAmt"] for t in lines), 2)
        sb.write("CheckHed", head, user=sb.user)
    for tran in tran_writes:
        sb.write("APTran", tran, user=sb.user)
    for vendor_num, invoice_num in applied:
        invoice = sb.tables["APInvHed"].get(vendor_num, invoice_num)  # keys compare without case
        if invoice is not None:
            sb._fill_invoice(invoice, recompute=False, new=False)
            sb.write("APInvHed", invoice, user=sb.user)
    saved = [head for head in (heads.get(num) for num in touched) if head is not None]
    lines = [line for head in saved for line in sb.children_of("CheckHed", head)]
    return tableset(PAY_TABLES, CheckHed=saved, APTran=lines)


# ---- OData writes ------------------------------------------------------------------------------

def w_create_vendor(sb: EpicorSandbox, body: dict[str, Any], _: dict[str, Any] | None) -> dict[str, Any]:
    vendor_id = str(body.get("VendorID") or "").strip()
    if not vendor_id:
        raise bo_error("Supplier ID is required.", "Vendor", "VendorID")
    if len(vendor_id) > sb.settings.vendor_id_max_length:
        raise bo_error(f"Supplier ID cannot be longer than {sb.settings.vendor_id_max_length} characters.",
                       "Vendor", "VendorID")
    if not str(body.get("Name") or "").strip():
        raise bo_error("Supplier name is required.", "Vendor", "Name")
    existing = sb.tables["Vendor"].one("VendorID", vendor_id)
    if existing is not None:
        raise sb.duplicate(f"Supplier ID {existing['VendorID']} already exists.", "Vendor", "VendorID")
    values = {k: v for k, v in body.items() if k not in ("VendorNum", "SysRevID", "Company")}
    row = sb.new_row("Vendor", {"TermsCode": "N30", "CurrencyCode": "USD", "Country": "USA", "CountryNum": 1,
                                **values})
    row["VendorID"] = vendor_id
    row["VendorNum"] = sb.tables["Vendor"].new_id()
    return sb.write("Vendor", row, user=sb.user)


def w_update_vendor(sb: EpicorSandbox, body: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    values = sb.coerce(sb.tables["Vendor"], {k: v for k, v in body.items()
                                             if k not in ("VendorNum", "Company", "SysRevID", "SysRowID")})
    if "VendorID" in values:
        new_id = values["VendorID"].strip()
        other = sb.tables["Vendor"].one("VendorID", new_id)
        if not new_id:
            raise bo_error("Supplier ID is required.", "Vendor", "VendorID")
        if other is not None and other["VendorNum"] != row["VendorNum"]:
            raise sb.duplicate(f"Supplier ID {new_id} already exists.", "Vendor", "VendorID")
    if "Name" in values and not values["Name"].strip():
        raise bo_error("Supplier name is required.", "Vendor", "Name")
    return sb.write("Vendor", {**row, **values}, user=sb.user)


def _group_writer(table: str, what: str, values: Callable[[EpicorSandbox, dict[str, Any]], dict[str, Any]]) -> Write:
    """POST of a new invoice or payment group: an ID that is not taken, then the group's own values."""
    def create(sb: EpicorSandbox, body: dict[str, Any], _: None) -> dict[str, Any]:
        group_id = str(body.get("GroupID") or "").strip()
        if not group_id:
            raise bo_error("Group ID is required.", table, "GroupID")
        if sb.tables[table].get(group_id) is not None:
            raise sb.duplicate(f"{what} {group_id} already exists.", table, "GroupID")
        row = sb.new_row(table, values(sb, body))
        row["GroupID"] = group_id
        return sb.write(table, row, user=sb.user)

    return create


def _invoice_group(sb: EpicorSandbox, body: dict[str, Any]) -> dict[str, Any]:
    apply = as_date(body.get("ApplyDate")) or sb.clock.now_datetime().date()
    return {"ApplyDate": apply, "FiscalYear": apply.year, "FiscalPeriod": apply.month,
            **{k: v for k, v in body.items() if k in ("ActiveUserID", "FiscalCalendarID")}}


w_create_group = _group_writer("APInvGrp", "AP invoice group", _invoice_group)
w_create_check_group = _group_writer("APChkGrp", "AP payment group", lambda sb, body: {
    "BankAcctID": body.get("BankAcctID") or "OPER", "CheckDate": sb.clock.now_datetime().date()})


def w_update_group(sb: EpicorSandbox, body: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    values = sb.coerce(sb.tables["APInvGrp"], {k: v for k, v in body.items() if k in ("ActiveUserID", "ApplyDate")})
    return sb.write("APInvGrp", {**row, **values}, user=sb.user)


def w_create_invoice(sb: EpicorSandbox, body: dict[str, Any], _: dict[str, Any] | None) -> dict[str, Any]:
    """OData POST runs the same business rules as Update, without Change* defaulting."""
    return save_invoice_tableset(sb, {"APInvHed": [{**body, "RowMod": "A"}], "APInvDtl": []})["APInvHed"][0]


def w_delete_invoice(sb: EpicorSandbox, _: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    if row["Posted"]:
        raise bo_error("The invoice has been posted and cannot be deleted.", "APInvHed")
    sb.group_for_write(row["GroupID"])
    sb.delete_invoice(row)
    return row


# ---- entity sets ---------------------------------------------------------------------------------

@dataclass
class EntitySet:
    name: str
    table: str
    writes: dict[str, Write] = field(default_factory=dict)  # POST / PATCH / DELETE the sandbox implements

    @property
    def navigation(self) -> dict[str, str]:
        """Navigation property -> child table."""
        return {nav: child for nav, (child, _) in NAVIGATION.get(self.table, {}).items()}


SERVICES: dict[str, dict[str, EntitySet]] = {
    "Erp.BO.VendorSvc": {"Vendors": EntitySet("Vendors", "Vendor", {"POST": w_create_vendor,
                                                                     "PATCH": w_update_vendor})},
    "Erp.BO.APInvoiceSvc": {"APInvoices": EntitySet("APInvoices", "APInvHed", {"POST": w_create_invoice,
                                                                               "DELETE": w_delete_invoice})},
    "Erp.BO.APInvGrpSvc": {"APInvGrps": EntitySet("APInvGrps", "APInvGrp", {"POST": w_create_group,
                                                                           "PATCH": w_update_group})},
    "Erp.BO.POSvc": {"POes": EntitySet("POes", "POHeader")},
    "Erp.BO.GLAccountSvc": {"GLAccounts": EntitySet("GLAccounts", "GLAccount")},
    "Erp.BO.PaymentEntrySvc": {"PaymentEntries": EntitySet("PaymentEntries", "CheckHed")},
    "Erp.BO.APChkGrpSvc": {"APChkGrps": EntitySet("APChkGrps", "APChkGrp", {"POST": w_create_check_group})},
}
