"""Business-object methods (`Erp.BO.*Svc/<Method>`): each one's declared inputs and outputs, and its handler."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Callable

from sandboxes.epicor.rules import POSTED, payable_invoice, save_invoice_tableset, save_payment_tableset, unsaved_header
from sandboxes.epicor.store import (APINV_TABLES, PAY_TABLES, TERMS_DAYS, VENDOR_TABLES, api_error, as_date, bo_error,
                                    fmt_date, not_found, tableset)

if TYPE_CHECKING:
    from sandboxes.epicor.sandbox import EpicorSandbox

Tableset = dict[str, list[dict[str, Any]]]
# A handler gets the sandbox, the `ds` input as the service's tableset (None when not declared)
# and the declared inputs; it changes `ds` in place and answers the outputs it sets, if any.
Handler = Callable[["EpicorSandbox", Any, dict[str, Any]], "dict[str, Any] | None"]
# What an output parameter says when the handler leaves it out: no question, no message, saved.
OUTPUT_DEFAULTS: dict[str, Any] = {
    "confirmMsg": "", "cMessageText": "", "pcQuestion": "", "grpTotalInvAmt": 0.0, "requiresUserInput": False,
    "opMessage": "", "opMsgChkBankRef": "", "opChkRevMsg": "", "lEnableGenLegalNum": False, "lUpdateRan": True,
    "opDUAMsg": "",
}


@dataclass(frozen=True)
class BoMethod:
    """A business-object method as Kinetic's generated method schema declares it.

    `inputs`: all must be sent; the first one missing (in this order) is refused with 400
    "Parameter X is not found in the input object". An input the method does not declare is
    ignored, as the server binds declared parameters only: the handler never sees it and the
    answer does not echo it. `outputs`: the answer's `parameters`, built from this list in its
    order (a value the handler leaves out takes its OUTPUT_DEFAULTS value). `returns`: the answer
    carries a `returnObj`. `read`: a classic read, answered to GET as well as POST.
    """

    handler: Handler
    inputs: tuple[str, ...]
    outputs: tuple[str, ...] = ()
    returns: bool = False
    read: bool = False

    def call(self, sb: EpicorSandbox, tables: tuple[str, ...], params: dict[str, Any]) -> dict[str, Any]:
        for name in self.inputs:
            if name not in params:
                raise api_error(400, f"Parameter {name} is not found in the input object")
        given = {name: params[name] for name in self.inputs}
        if "ds" in given:
            given["ds"] = _tableset(given["ds"], tables)
        result = self.handler(sb, given.get("ds"), given) or {}
        if "ds" in self.outputs:
            result.setdefault("ds", given["ds"])  # changed in place
        undeclared = set(result) - set(self.outputs) - {"returnObj"}
        if undeclared:
            raise TypeError(f"{self.handler.__name__} answered undeclared outputs {sorted(undeclared)}")
        answer = {"returnObj": result["returnObj"]} if self.returns else {}
        if self.outputs:
            answer["parameters"] = {name: result[name] if name in result else OUTPUT_DEFAULTS[name]
                                    for name in self.outputs}
        return answer


# The one declaration of every method: service -> name -> handler, inputs, outputs (Erp.BO.*Svc
# method schemas), made by `method(...)` on each handler below.
_METHODS: dict[str, dict[str, BoMethod]] = {}
INVOICES, PAYMENTS = "Erp.BO.APInvoiceSvc", "Erp.BO.PaymentEntrySvc"
DS, CONFIRMED = ("ds",), ("ds", "confirmMsg")
UPDATE_MASTER_OUTPUTS = ("ds", "grpTotalInvAmt", "requiresUserInput", "opMessage", "opMsgChkBankRef", "opChkRevMsg",
                         "lEnableGenLegalNum", "lUpdateRan", "opDUAMsg")


def method(service: str, name: str, inputs: tuple[str, ...], outputs: tuple[str, ...] = (),
           returns: bool = False) -> Callable[[Handler], Handler]:
    """Declare the handler as `service`'s method `name`; one that returns an object is a classic read."""
    def declare(handler: Handler) -> Handler:
        _METHODS.setdefault(service, {})[name] = BoMethod(handler, inputs, outputs, returns, read=returns)
        return handler

    return declare


def _tableset(raw: Any, tables: tuple[str, ...]) -> Tableset:
    """The `ds` input as the service's tableset: its tables as lists of rows, nothing else."""
    if isinstance(raw, list):
        raw = raw[0] if raw else {}
    if not isinstance(raw, dict):
        raise api_error(400, "Unable to deserialize entity. Parameter ds is not a tableset.")
    ds: Tableset = {}
    for name in tables:
        rows = raw.get(name) or []
        if not isinstance(rows, list):
            raise api_error(400, f"Unable to deserialize entity. Table {name} is not a list.")
        ds[name] = [dict(r) for r in rows if isinstance(r, dict)]
    ds["ExtensionTables"] = []
    return ds


def _current(ds: Tableset, table: str) -> dict[str, Any]:
    """The row a Change* method acts on: the first one marked added or updated."""
    for row in ds.get(table, []):
        if row.get("RowMod") in ("A", "U"):
            return row
    raise bo_error(f"No {table} record is being added or updated (RowMod 'A' or 'U').", table)


def _parsed(value: Any, convert: Callable[[Any], Any], what: str, table: str, name: str) -> Any:
    """A proposed value converted, or 400 "`name` is not a valid `what`"."""
    try:
        result = convert(value)
    except (TypeError, ValueError):
        result = None
    if result is None:
        raise bo_error(f"{name} is not a valid {what}.", table, name)
    return result


def _money(value: Any) -> float:
    return round(float(value), 2)


def _add(sb: EpicorSandbox, ds: Tableset, table: str, values: dict[str, Any]) -> dict[str, Any]:
    """A new row (RowMod "A") added to the tableset, as the GetNew* methods answer it."""
    row = sb.new_row(table, values)
    row.update({"RowMod": "A", "SysRowID": str(uuid.uuid4())})
    ds[table].append(row)
    return row


def _by_id(sb: EpicorSandbox, table: str, key: Callable[[], tuple[Any, ...]]) -> dict[str, Any]:
    """A classic read's record; 404 RecordNotFound when there is none (or the key is not one)."""
    try:
        row = sb.tables[table].get(*key())
    except ValueError:
        row = None
    if row is None:
        raise not_found(table)
    return row


def _due(invoice_date: date, terms: str) -> str:
    return fmt_date(invoice_date + timedelta(days=TERMS_DAYS.get(terms, 30)))


# ---- AP invoice entry ---------------------------------------------------------------------------

@method(INVOICES, "GetNewAPInvHedInvoice", ("ds", "cGroupID"), DS)
def m_get_new_ap_inv_hed_invoice(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> None:
    group = sb.group_for_write(str(params["cGroupID"] or ""))
    if not group["ActiveUserID"]:
        group["ActiveUserID"] = sb.user
        sb.write("APInvGrp", group, user=sb.user)
    today = sb.clock.now_datetime().date()
    apply = as_date(group["ApplyDate"]) or today
    _add(sb, ds, "APInvHed", {
        "GroupID": group["GroupID"], "InvoiceDate": today, "ApplyDate": apply, "FiscalYear": apply.year,
        "FiscalPeriod": apply.month, "EntryPerson": sb.user, "CurrencyCode": "USD"})


@method(INVOICES, "ChangeVendorID", ("ProposedVendorID", "confirmCheck", "ds"), CONFIRMED)
def m_change_vendor_id(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> None:
    vendor = sb.vendor_by_id(str(params["ProposedVendorID"] or ""))
    row = _current(ds, "APInvHed")
    row.update({"VendorNum": vendor["VendorNum"], "VendorNumVendorID": vendor["VendorID"],
                "VendorNumName": vendor["Name"], "TermsCode": vendor["TermsCode"],
                "CurrencyCode": vendor["CurrencyCode"] or "USD"})
    if row.get("InvoiceDate"):
        row["DueDate"] = _due(as_date(row["InvoiceDate"]), vendor["TermsCode"])  # type: ignore[arg-type]


@method(INVOICES, "ChangeInvoiceDateEx", ("ProposedInvoiceDate", "recalcAmts", "ds"), ("ds", "cMessageText"))
def m_change_invoice_date_ex(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> None:
    day = _parsed(params["ProposedInvoiceDate"], as_date, "date", "APInvHed", "InvoiceDate")
    row = _current(ds, "APInvHed")
    row["InvoiceDate"] = fmt_date(day)
    row["DueDate"] = _due(day, row.get("TermsCode") or "N30")


@method(INVOICES, "ChangeInvoiceVendorAmt", ("ProposedInvoiceVendorAmt", "ds"), DS)
def m_change_invoice_vendor_amt(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> None:
    amount = _parsed(params["ProposedInvoiceVendorAmt"], _money, "amount", "APInvHed", "InvoiceVendorAmt")
    row = _current(ds, "APInvHed")
    row["InvoiceVendorAmt"] = row["DocInvoiceVendorAmt"] = amount


@method(INVOICES, "ChangeRefPONum", ("ProposedRefPONum", "confirmCheck", "ds"), CONFIRMED)
def m_change_ref_po_num(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> None:
    po_num = int(params["ProposedRefPONum"] or 0)
    po = sb.tables["POHeader"].get(po_num)
    if po is None:
        raise bo_error(f"Purchase order {po_num} is not valid.", "APInvHed", "REFPONum")
    row = _current(ds, "APInvHed")
    if row.get("VendorNum") and int(row["VendorNum"]) != po["VendorNum"]:
        raise bo_error(f"Purchase order {po_num} belongs to another supplier.", "APInvHed", "REFPONum")
    vendor = sb.tables["Vendor"].get(po["VendorNum"])
    row.update({"REFPONum": po_num, "VendorNum": po["VendorNum"], "VendorNumVendorID": po["VendorVendorID"],
                "VendorNumName": po["VendorName"], "TermsCode": (vendor or {}).get("TermsCode", row.get("TermsCode"))})


def _new_line(line_type: str) -> Handler:
    """GetNewAPInvDtl*: a line of `line_type` numbered after the saved and pending ones."""
    def m_get_new_ap_inv_dtl(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> None:
        vendor_num, invoice_num = params["iVendorNum"], params["cInvoiceNum"]
        header = sb.tables["APInvHed"].get(int(vendor_num or 0), str(invoice_num or ""))
        if header is None:
            raise unsaved_header(invoice_num, vendor_num)
        if header["Posted"]:
            raise bo_error(POSTED, "APInvDtl")
        sb.group_for_write(header["GroupID"], "APInvDtl")
        saved = [line["InvoiceLine"] for line in sb.children_of("APInvHed", header)]
        pending = [int(r.get("InvoiceLine") or 0) for r in ds["APInvDtl"]
                   if int(r.get("VendorNum") or 0) == header["VendorNum"]
                   and str(r.get("InvoiceNum", "")).casefold() == header["InvoiceNum"].casefold()]
        _add(sb, ds, "APInvDtl", {
            "VendorNum": header["VendorNum"], "InvoiceNum": header["InvoiceNum"],
            "InvoiceLine": max([0, *saved, *pending]) + 1, "LineType": line_type, "VendorQty": 1, "OurQty": 1})

    return m_get_new_ap_inv_dtl


def _line_change(field_name: str) -> Handler:
    """Change{field_name}: quantity, unit cost and extended cost keep each other consistent."""
    def m_change_line(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> None:
        number = _parsed(params[f"Proposed{field_name}"], float, "number", "APInvDtl", field_name)
        line = _current(ds, "APInvDtl")
        if field_name == "VendorQty":
            line["VendorQty"] = line["OurQty"] = number
            line["ExtCost"] = line["DocExtCost"] = round(number * float(line.get("UnitCost") or 0), 2)
        elif field_name == "UnitCost":
            line["UnitCost"] = line["DocUnitCost"] = round(number, 5)
            line["ExtCost"] = line["DocExtCost"] = round(float(line.get("VendorQty") or 0) * number, 2)
        else:
            line["ExtCost"] = line["DocExtCost"] = round(number, 2)
            qty = float(line.get("VendorQty") or 0)
            if qty:
                line["UnitCost"] = line["DocUnitCost"] = round(number / qty, 5)

    return m_change_line


for _name, _type in (("Miscellaneous", "MSC"), ("Unreceived", "UNR")):
    method(INVOICES, f"GetNewAPInvDtl{_name}", ("ds", "iVendorNum", "cInvoiceNum"), DS)(_new_line(_type))
for _name in ("VendorQty", "UnitCost", "ExtCost"):
    method(INVOICES, f"Change{_name}", (f"Proposed{_name}", "ds"), DS)(_line_change(_name))


@method(INVOICES, "ChangePONum", ("ProposedPONum", "ds"), DS)
def m_change_po_num(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> None:
    po_num = int(params["ProposedPONum"] or 0)
    line = _current(ds, "APInvDtl")
    po = sb.tables["POHeader"].get(po_num)
    if po is None or po["VendorNum"] != int(line.get("VendorNum") or 0):
        raise bo_error(f"Purchase order {po_num} is not valid for this supplier.", "APInvDtl", "PONum")
    line.update({"PONum": po_num, "POLine": 0, "LineType": "PUR"})


@method(INVOICES, "ChangePOLine", ("ProposedPOLine", "ds"), DS)
def m_change_po_line(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> None:
    po_line = int(params["ProposedPOLine"] or 0)
    line = _current(ds, "APInvDtl")
    detail = sb.tables["PODetail"].get(int(line.get("PONum") or 0), po_line)
    if detail is None:
        raise bo_error(f"PO line {po_line} is not valid.", "APInvDtl", "POLine")
    qty = float(line.get("VendorQty") or detail["OrderQty"])
    line.update({"POLine": po_line, "PartNum": detail["PartNum"], "Description": detail["LineDesc"],
                 "UnitCost": detail["UnitCost"], "DocUnitCost": detail["UnitCost"], "VendorQty": qty, "OurQty": qty,
                 "ExtCost": round(qty * detail["UnitCost"], 2), "DocExtCost": round(qty * detail["UnitCost"], 2)})


@method(INVOICES, "Update", DS, DS)
def m_update(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> dict[str, Any]:
    return {"ds": save_invoice_tableset(sb, ds)}


@method(INVOICES, "UpdateMaster", ("ds", "cGroupID", "cTableName", "runChkCPay", "runChkBankRef", "runChkRevChrg",
                                   "suppressUserPrompts"), UPDATE_MASTER_OUTPUTS)
def m_update_master(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> dict[str, Any]:
    """Update plus the group total; a check that stops for a person answers 200 having saved
    nothing (`lUpdateRan` false, `requiresUserInput` true, the question in `opMessage`)."""
    group_id = str(params["cGroupID"] or "")
    hold = sb.take_update_master_hold(str(r.get("InvoiceNum") or "") for r in ds["APInvHed"] + ds["APInvDtl"])
    saved = ds if hold is not None else save_invoice_tableset(sb, ds)
    total = sum(r["InvoiceAmt"] for r in sb.tables["APInvHed"].rows() if r["GroupID"].casefold() == group_id.casefold())
    answer = {"ds": saved, "grpTotalInvAmt": round(total, 2)}
    if hold is not None:
        answer.update(requiresUserInput=hold.requires_user_input, opMessage=hold.op_message, lUpdateRan=hold.update_ran)
    return answer


@method(INVOICES, "GetByID", ("vendorNum", "invoiceNum"), returns=True)
def m_get_by_id(sb: EpicorSandbox, ds: None, params: dict[str, Any]) -> dict[str, Any]:
    header = _by_id(sb, "APInvHed", lambda: (int(params["vendorNum"]), str(params["invoiceNum"])))
    return {"returnObj": tableset(APINV_TABLES, APInvHed=[header], APInvDtl=sb.children_of("APInvHed", header))}


@method("Erp.BO.APInvGrpSvc", "UnlockGroup", ("InGroupID",))
def m_unlock_group(sb: EpicorSandbox, ds: None, params: dict[str, Any]) -> None:
    group = sb.tables["APInvGrp"].get(str(params["InGroupID"] or ""))
    if group is not None and group["ActiveUserID"]:
        group["ActiveUserID"] = ""
        sb.write("APInvGrp", group, user=sb.user)


@method("Erp.BO.VendorSvc", "GetByVendID", ("vendorID",), returns=True)
def m_get_by_vend_id(sb: EpicorSandbox, ds: None, params: dict[str, Any]) -> dict[str, Any]:
    vendor = sb.tables["Vendor"].one("VendorID", str(params["vendorID"] or ""))
    if vendor is None:
        raise not_found("Vendor")
    return {"returnObj": tableset(VENDOR_TABLES, Vendor=[vendor], VendBank=sb.children_of("Vendor", vendor))}


# ---- payment entry --------------------------------------------------------------------------

@method(PAYMENTS, "GetNewCheckHed", DS, DS)
def m_get_new_check_hed(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> None:
    today = sb.clock.now_datetime().date()
    signed_in = [g for g in sb.tables["APChkGrp"].rows() if g["ActiveUserID"].casefold() == sb.user.casefold()]
    _add(sb, ds, "CheckHed", {
        "HeadNum": sb.tables["CheckHed"].new_id(), "GroupID": signed_in[0]["GroupID"] if len(signed_in) == 1 else "",
        "CheckDate": today, "FiscalYear": today.year, "FiscalPeriod": today.month, "EntryPerson": sb.user})


@method(PAYMENTS, "OnChangeVendor", ("pcVendorID", "ds"), DS)
def m_on_change_vendor(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> None:
    vendor_id = str(params["pcVendorID"] or "")
    vendor = sb.tables["Vendor"].one("VendorID", vendor_id)
    if vendor is None or vendor["Inactive"]:
        raise bo_error(f"Supplier '{vendor_id}' is not valid or is inactive.", "CheckHed", "VendorNumVendorID")
    head = _current(ds, "CheckHed")
    head.update({"VendorNum": vendor["VendorNum"], "VendorNumVendorID": vendor["VendorID"], "Name": vendor["Name"],
                 "CurrencyCode": vendor["CurrencyCode"] or "USD"})


@method(PAYMENTS, "OnChangeCheckDate", ("pdtCheckDate", "ds"), DS)
def m_on_change_check_date(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> None:
    day = _parsed(params["pdtCheckDate"], as_date, "date", "CheckHed", "CheckDate")
    head = _current(ds, "CheckHed")
    head.update({"CheckDate": fmt_date(day), "FiscalYear": day.year, "FiscalPeriod": day.month})
    for tran in ds["APTran"]:
        if tran.get("HeadNum") == head.get("HeadNum"):
            tran["TranDate"] = fmt_date(day)


@method(PAYMENTS, "GetNewAPTran", ("ds", "headNum", "apTranNo", "invoiceNum"), DS)
def m_get_new_ap_tran(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> None:
    head_num = int(params["headNum"] or 0)
    head = next((h for h in ds["CheckHed"] if int(h.get("HeadNum") or 0) == head_num), None)
    if head is None:
        raise bo_error(f"Payment {head_num} is not in the tableset.", "APTran", "HeadNum")
    numbers = [int(t.get("APTranNo") or 0) for t in ds["APTran"] if int(t.get("HeadNum") or 0) == head_num]
    _add(sb, ds, "APTran", {
        "HeadNum": head_num, "APTranNo": max([0, *numbers]) + 1, "InvoiceNum": str(params.get("invoiceNum") or ""),
        "VendorNum": head.get("VendorNum") or 0, "TranDate": head.get("CheckDate"), "GroupID": head.get("GroupID", "")})


@method(PAYMENTS, "OnChangeInvoiceNum", ("pcInvoiceNum", "pcChangeExchangeRateResponse", "ds"), ("ds", "pcQuestion"))
def m_on_change_invoice_num(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> None:
    invoice_num = str(params["pcInvoiceNum"] or "")
    tran = _current(ds, "APTran")
    head = next((h for h in ds["CheckHed"] if h.get("HeadNum") == tran.get("HeadNum")), None)
    vendor_num = int((head or {}).get("VendorNum") or tran.get("VendorNum") or 0)
    invoice = payable_invoice(sb, vendor_num, invoice_num)
    tran.update({"InvoiceNum": invoice["InvoiceNum"], "VendorNum": vendor_num, "TranAmt": invoice["InvoiceBal"],
                 "DocTranAmt": invoice["InvoiceBal"]})
    _recalc_check(ds)


@method(PAYMENTS, "OnChangeDocTranAmt", ("pdDocTranAmt", "ds"), DS)
def m_on_change_doc_tran_amt(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> None:
    amount = _parsed(params["pdDocTranAmt"], _money, "amount", "APTran", "DocTranAmt")
    tran = _current(ds, "APTran")
    tran["DocTranAmt"] = tran["TranAmt"] = amount
    _recalc_check(ds)


def _recalc_check(ds: Tableset) -> None:
    for head in ds["CheckHed"]:
        total = sum(float(t.get("DocTranAmt") or 0) for t in ds["APTran"] if t.get("HeadNum") == head.get("HeadNum"))
        head["CheckAmt"] = head["DocCheckAmt"] = round(total, 2)


@method(PAYMENTS, "Update", DS, DS)
def m_payment_update(sb: EpicorSandbox, ds: Tableset, params: dict[str, Any]) -> dict[str, Any]:
    return {"ds": save_payment_tableset(sb, ds)}


@method(PAYMENTS, "GetByID", ("headNum",), returns=True)
def m_payment_get_by_id(sb: EpicorSandbox, ds: None, params: dict[str, Any]) -> dict[str, Any]:
    head = _by_id(sb, "CheckHed", lambda: (int(params["headNum"]),))
    return {"returnObj": tableset(PAY_TABLES, CheckHed=[head], APTran=sb.children_of("CheckHed", head))}


# Method names resolve case-insensitively, as Epicor's router does.
METHODS = {service: {name.casefold(): method for name, method in methods.items()}
           for service, methods in _METHODS.items()}
