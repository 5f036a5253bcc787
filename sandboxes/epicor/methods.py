"""Business-object methods (`Erp.BO.*Svc/<Method>`): each one's declared inputs and outputs, and its handler."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Callable

from sandboxes.epicor.errors import API_EXCEPTION, BO_EXCEPTION, NOT_FOUND_EXCEPTION, EpicorError
from sandboxes.epicor.rules import payable_invoice, save_invoice_tableset, save_payment_tableset
from sandboxes.epicor.store import APINV_TABLES, PAY_TABLES, TERMS_DAYS, VENDOR_TABLES, as_date, fmt_date, tableset

if TYPE_CHECKING:
    from sandboxes.epicor.sandbox import EpicorSandbox

# ---- business-object methods -------------------------------------------------------------------

def _tableset(raw: Any, tables: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """The `ds` input as the service's tableset: its tables as lists of rows, nothing else."""
    if isinstance(raw, list):
        raw = raw[0] if raw else {}
    if not isinstance(raw, dict):
        raise EpicorError(400, "Unable to deserialize entity. Parameter ds is not a tableset.", API_EXCEPTION)
    ds: dict[str, list[dict[str, Any]]] = {}
    for name in tables:
        rows = raw.get(name) or []
        if not isinstance(rows, list):
            raise EpicorError(400, f"Unable to deserialize entity. Table {name} is not a list.", API_EXCEPTION)
        ds[name] = [dict(r) for r in rows if isinstance(r, dict)]
    ds["ExtensionTables"] = []
    return ds


def _current(ds: dict[str, list[dict[str, Any]]], table: str) -> dict[str, Any]:
    """The row a Change* method acts on: the first one marked added or updated."""
    for row in ds.get(table, []):
        if row.get("RowMod") in ("A", "U"):
            return row
    raise EpicorError(400, f"No {table} record is being added or updated (RowMod 'A' or 'U').", BO_EXCEPTION, table)


def _money(value: Any, name: str, table: str) -> float:
    try:
        return round(float(value), 2)
    except (TypeError, ValueError):
        raise EpicorError(400, f"{name} is not a valid amount.", BO_EXCEPTION, table, name) from None


def _date_param(value: Any, name: str, table: str) -> date:
    try:
        result = as_date(value)
    except ValueError:
        result = None
    if result is None:
        raise EpicorError(400, f"{name} is not a valid date.", BO_EXCEPTION, table, name)
    return result


def _add(sb: EpicorSandbox, ds: dict[str, list[dict[str, Any]]], table: str, values: dict[str, Any]) -> dict[str, Any]:
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
        raise EpicorError(404, "Record not found.", NOT_FOUND_EXCEPTION, table)
    return row


def _due(invoice_date: date, terms: str) -> str:
    return fmt_date(invoice_date + timedelta(days=TERMS_DAYS.get(terms, 30)))


def m_get_new_ap_inv_hed_invoice(sb: EpicorSandbox, params: dict[str, Any]) -> None:
    ds = params["ds"]
    group_id = str(params["cGroupID"] or "")
    group = sb.group_for_write(group_id)
    if not group["ActiveUserID"]:
        group["ActiveUserID"] = sb.user
        sb.write("APInvGrp", group, user=sb.user)
    today = sb.clock.now_datetime().date()
    apply = as_date(group["ApplyDate"]) or today
    _add(sb, ds, "APInvHed", {
        "GroupID": group["GroupID"], "InvoiceDate": today, "ApplyDate": apply, "FiscalYear": apply.year,
        "FiscalPeriod": apply.month, "EntryPerson": sb.user, "CurrencyCode": "USD"})


def m_change_vendor_id(sb: EpicorSandbox, params: dict[str, Any]) -> None:
    ds = params["ds"]
    vendor = sb.vendor_by_id(str(params["ProposedVendorID"] or ""))
    row = _current(ds, "APInvHed")
    row.update({"VendorNum": vendor["VendorNum"], "VendorNumVendorID": vendor["VendorID"],
                "VendorNumName": vendor["Name"], "TermsCode": vendor["TermsCode"],
                "CurrencyCode": vendor["CurrencyCode"] or "USD"})
    if row.get("InvoiceDate"):
        row["DueDate"] = _due(as_date(row["InvoiceDate"]), vendor["TermsCode"])  # type: ignore[arg-type]


def m_change_invoice_date_ex(sb: EpicorSandbox, params: dict[str, Any]) -> None:
    ds = params["ds"]
    day = _date_param(params["ProposedInvoiceDate"], "InvoiceDate", "APInvHed")
    row = _current(ds, "APInvHed")
    row["InvoiceDate"] = fmt_date(day)
    row["DueDate"] = _due(day, row.get("TermsCode") or "N30")


def m_change_invoice_vendor_amt(sb: EpicorSandbox, params: dict[str, Any]) -> None:
    ds = params["ds"]
    amount = _money(params["ProposedInvoiceVendorAmt"], "InvoiceVendorAmt", "APInvHed")
    row = _current(ds, "APInvHed")
    row["InvoiceVendorAmt"] = row["DocInvoiceVendorAmt"] = amount


def m_change_ref_po_num(sb: EpicorSandbox, params: dict[str, Any]) -> None:
    ds = params["ds"]
    po_num = int(params["ProposedRefPONum"] or 0)
    po = sb.tables["POHeader"].get(po_num)
    if po is None:
        raise EpicorError(400, f"Purchase order {po_num} is not valid.", BO_EXCEPTION, "APInvHed", "REFPONum")
    row = _current(ds, "APInvHed")
    if row.get("VendorNum") and int(row["VendorNum"]) != po["VendorNum"]:
        raise EpicorError(400, f"Purchase order {po_num} belongs to another supplier.", BO_EXCEPTION,
                          "APInvHed", "REFPONum")
    vendor = sb.tables["Vendor"].get(po["VendorNum"])
    row.update({"REFPONum": po_num, "VendorNum": po["VendorNum"], "VendorNumVendorID": po["VendorVendorID"],
                "VendorNumName": po["VendorName"], "TermsCode": (vendor or {}).get("TermsCode", row.get("TermsCode"))})


def _saved_header(sb: EpicorSandbox, vendor_num: Any, invoice_num: Any) -> dict[str, Any]:
    header = sb.tables["APInvHed"].get(int(vendor_num or 0), str(invoice_num or ""))
    if header is None:
        raise EpicorError(400, f"AP invoice {invoice_num} for supplier {vendor_num} must be saved before "
                               "lines are added.", BO_EXCEPTION, "APInvDtl", "InvoiceNum")
    return header


def _new_line(sb: EpicorSandbox, params: dict[str, Any], line_type: str) -> None:
    ds = params["ds"]
    header = _saved_header(sb, params["iVendorNum"], params["cInvoiceNum"])
    if header["Posted"]:
        raise EpicorError(400, "The invoice has been posted and cannot be changed.", BO_EXCEPTION, "APInvDtl")
    sb.group_for_write(header["GroupID"], "APInvDtl")
    saved = [line["InvoiceLine"] for line in sb.tables["APInvDtl"].children(header["VendorNum"], header["InvoiceNum"])]
    pending = [int(r.get("InvoiceLine") or 0) for r in ds["APInvDtl"]
               if int(r.get("VendorNum") or 0) == header["VendorNum"]
               and str(r.get("InvoiceNum", "")).casefold() == header["InvoiceNum"].casefold()]
    _add(sb, ds, "APInvDtl", {
        "VendorNum": header["VendorNum"], "InvoiceNum": header["InvoiceNum"],
        "InvoiceLine": max([0, *saved, *pending]) + 1, "LineType": line_type, "VendorQty": 1, "OurQty": 1})


def m_get_new_ap_inv_dtl_misc(sb: EpicorSandbox, params: dict[str, Any]) -> None:
    _new_line(sb, params, "MSC")


def m_get_new_ap_inv_dtl_unreceived(sb: EpicorSandbox, params: dict[str, Any]) -> None:
    _new_line(sb, params, "UNR")


def _line_change(field_name: str, parameter: str) -> Handler:
    def handler(sb: EpicorSandbox, params: dict[str, Any]) -> None:
        ds = params["ds"]
        value = params[parameter]
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise EpicorError(400, f"{field_name} is not a valid number.", BO_EXCEPTION, "APInvDtl", field_name) from None
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

    return handler


def m_change_po_num(sb: EpicorSandbox, params: dict[str, Any]) -> None:
    ds = params["ds"]
    po_num = int(params["ProposedPONum"] or 0)
    line = _current(ds, "APInvDtl")
    po = sb.tables["POHeader"].get(po_num)
    if po is None or po["VendorNum"] != int(line.get("VendorNum") or 0):
        raise EpicorError(400, f"Purchase order {po_num} is not valid for this supplier.", BO_EXCEPTION,
                          "APInvDtl", "PONum")
    line.update({"PONum": po_num, "POLine": 0, "LineType": "PUR"})


def m_change_po_line(sb: EpicorSandbox, params: dict[str, Any]) -> None:
    ds = params["ds"]
    po_line = int(params["ProposedPOLine"] or 0)
    line = _current(ds, "APInvDtl")
    detail = sb.tables["PODetail"].get(int(line.get("PONum") or 0), po_line)
    if detail is None:
        raise EpicorError(400, f"PO line {po_line} is not valid.", BO_EXCEPTION, "APInvDtl", "POLine")
    qty = float(line.get("VendorQty") or detail["OrderQty"])
    line.update({"POLine": po_line, "PartNum": detail["PartNum"], "Description": detail["LineDesc"],
                 "UnitCost": detail["UnitCost"], "DocUnitCost": detail["UnitCost"], "VendorQty": qty, "OurQty": qty,
                 "ExtCost": round(qty * detail["UnitCost"], 2), "DocExtCost": round(qty * detail["UnitCost"], 2)})


def m_update(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    return {"ds": save_invoice_tableset(sb, params["ds"])}


def m_update_master(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    """Update plus the group total; a check that stops for a person answers 200 having saved
    nothing (`lUpdateRan` false, `requiresUserInput` true, the question in `opMessage`)."""
    ds_in = params["ds"]
    group_id = str(params["cGroupID"] or "")
    hold = sb.take_update_master_hold(str(r.get("InvoiceNum") or "") for r in ds_in["APInvHed"] + ds_in["APInvDtl"])
    ds = ds_in if hold is not None else save_invoice_tableset(sb, ds_in)
    total = sum(r["InvoiceAmt"] for r in sb.tables["APInvHed"].rows() if r["GroupID"].casefold() == group_id.casefold())
    answer = {"ds": ds, "grpTotalInvAmt": round(total, 2)}
    if hold is not None:
        answer.update(requiresUserInput=hold.requires_user_input, opMessage=hold.op_message, lUpdateRan=hold.update_ran)
    return answer


def m_get_by_id(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    header = _by_id(sb, "APInvHed", lambda: (int(params["vendorNum"]), str(params["invoiceNum"])))
    return {"returnObj": tableset(APINV_TABLES, APInvHed=[header], APInvDtl=sb.children_of("APInvHed", header))}


def m_unlock_group(sb: EpicorSandbox, params: dict[str, Any]) -> None:
    group = sb.tables["APInvGrp"].get(str(params["InGroupID"] or ""))
    if group is not None and group["ActiveUserID"]:
        group["ActiveUserID"] = ""
        sb.write("APInvGrp", group, user=sb.user)


def m_get_by_vend_id(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    vendor = sb._vendor_by_id(str(params["vendorID"] or ""))
    if vendor is None:
        raise EpicorError(404, "Record not found.", NOT_FOUND_EXCEPTION, "Vendor")
    return {"returnObj": tableset(VENDOR_TABLES, Vendor=[vendor], VendBank=sb.children_of("Vendor", vendor))}


# ---- payment entry --------------------------------------------------------------------------

def m_get_new_check_hed(sb: EpicorSandbox, params: dict[str, Any]) -> None:
    ds = params["ds"]
    today = sb.clock.now_datetime().date()
    signed_in = [g for g in sb.tables["APChkGrp"].rows() if g["ActiveUserID"].casefold() == sb.user.casefold()]
    _add(sb, ds, "CheckHed", {
        "HeadNum": sb.tables["CheckHed"].new_id(), "GroupID": signed_in[0]["GroupID"] if len(signed_in) == 1 else "",
        "CheckDate": today, "FiscalYear": today.year, "FiscalPeriod": today.month, "EntryPerson": sb.user})


def m_on_change_vendor(sb: EpicorSandbox, params: dict[str, Any]) -> None:
    ds = params["ds"]
    vendor_id = str(params["pcVendorID"] or "")
    vendor = sb._vendor_by_id(vendor_id)
    if vendor is None or vendor["Inactive"]:
        raise EpicorError(400, f"Supplier '{vendor_id}' is not valid or is inactive.", BO_EXCEPTION,
                          "CheckHed", "VendorNumVendorID")
    head = _current(ds, "CheckHed")
    head.update({"VendorNum": vendor["VendorNum"], "VendorNumVendorID": vendor["VendorID"], "Name": vendor["Name"],
                 "CurrencyCode": vendor["CurrencyCode"] or "USD"})


def m_on_change_check_date(sb: EpicorSandbox, params: dict[str, Any]) -> None:
    ds = params["ds"]
    day = _date_param(params["pdtCheckDate"], "CheckDate", "CheckHed")
    head = _current(ds, "CheckHed")
    head.update({"CheckDate": fmt_date(day), "FiscalYear": day.year, "FiscalPeriod": day.month})
    for tran in ds["APTran"]:
        if tran.get("HeadNum") == head.get("HeadNum"):
            tran["TranDate"] = fmt_date(day)


def m_get_new_ap_tran(sb: EpicorSandbox, params: dict[str, Any]) -> None:
    ds = params["ds"]
    head_num = int(params["headNum"] or 0)
    head = next((h for h in ds["CheckHed"] if int(h.get("HeadNum") or 0) == head_num), None)
    if head is None:
        raise EpicorError(400, f"Payment {head_num} is not in the tableset.", BO_EXCEPTION, "APTran", "HeadNum")
    numbers = [int(t.get("APTranNo") or 0) for t in ds["APTran"] if int(t.get("HeadNum") or 0) == head_num]
    _add(sb, ds, "APTran", {
        "HeadNum": head_num, "APTranNo": max([0, *numbers]) + 1, "InvoiceNum": str(params.get("invoiceNum") or ""),
        "VendorNum": head.get("VendorNum") or 0, "TranDate": head.get("CheckDate"), "GroupID": head.get("GroupID", "")})


def m_on_change_invoice_num(sb: EpicorSandbox, params: dict[str, Any]) -> None:
    ds = params["ds"]
    invoice_num = str(params["pcInvoiceNum"] or "")
    tran = _current(ds, "APTran")
    head = next((h for h in ds["CheckHed"] if h.get("HeadNum") == tran.get("HeadNum")), None)
    vendor_num = int((head or {}).get("VendorNum") or tran.get("VendorNum") or 0)
    invoice = payable_invoice(sb, vendor_num, invoice_num)
    tran.update({"InvoiceNum": invoice["InvoiceNum"], "VendorNum": vendor_num, "TranAmt": invoice["InvoiceBal"],
                 "DocTranAmt": invoice["InvoiceBal"]})
    _recalc_check(ds)


def m_on_change_doc_tran_amt(sb: EpicorSandbox, params: dict[str, Any]) -> None:
    ds = params["ds"]
    amount = _money(params["pdDocTranAmt"], "DocTranAmt", "APTran")
    tran = _current(ds, "APTran")
    tran["DocTranAmt"] = tran["TranAmt"] = amount
    _recalc_check(ds)


def _recalc_check(ds: dict[str, list[dict[str, Any]]]) -> None:
    for head in ds["CheckHed"]:
        total = sum(float(t.get("DocTranAmt") or 0) for t in ds["APTran"] if t.get("HeadNum") == head.get("HeadNum"))
        head["CheckAmt"] = head["DocCheckAmt"] = round(total, 2)


def m_payment_update(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    return {"ds": save_payment_tableset(sb, params["ds"])}


def m_payment_get_by_id(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    head = _by_id(sb, "CheckHed", lambda: (int(params["headNum"]),))
    return {"returnObj": tableset(PAY_TABLES, CheckHed=[head], APTran=sb.children_of("CheckHed", head))}


Handler = Callable[["EpicorSandbox", dict[str, Any]], "dict[str, Any] | None"]
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
                raise EpicorError(400, f"Parameter {name} is not found in the input object", API_EXCEPTION)
        given = {name: params[name] for name in self.inputs}
        if "ds" in given:
            given["ds"] = _tableset(given["ds"], tables)
        result = self.handler(sb, given) or {}
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


DS, CONFIRMED = ("ds",), ("ds", "confirmMsg")
UPDATE_MASTER_OUTPUTS = ("ds", "grpTotalInvAmt", "requiresUserInput", "opMessage", "opMsgChkBankRef", "opChkRevMsg",
                         "lEnableGenLegalNum", "lUpdateRan", "opDUAMsg")
# The one declaration of every method: handler, inputs, outputs (Erp.BO.*Svc method schemas).
_METHODS: dict[str, dict[str, BoMethod]] = {
    "Erp.BO.APInvoiceSvc": {
        "GetNewAPInvHedInvoice": BoMethod(m_get_new_ap_inv_hed_invoice, ("ds", "cGroupID"), DS),
        "ChangeVendorID": BoMethod(m_change_vendor_id, ("ProposedVendorID", "confirmCheck", "ds"), CONFIRMED),
        "ChangeInvoiceDateEx": BoMethod(m_change_invoice_date_ex, ("ProposedInvoiceDate", "recalcAmts", "ds"),
                                        ("ds", "cMessageText")),
        "ChangeInvoiceVendorAmt": BoMethod(m_change_invoice_vendor_amt, ("ProposedInvoiceVendorAmt", "ds"), DS),
        "ChangeRefPONum": BoMethod(m_change_ref_po_num, ("ProposedRefPONum", "confirmCheck", "ds"), CONFIRMED),
        "GetNewAPInvDtlMiscellaneous": BoMethod(m_get_new_ap_inv_dtl_misc, ("ds", "iVendorNum", "cInvoiceNum"), DS),
        "GetNewAPInvDtlUnreceived": BoMethod(m_get_new_ap_inv_dtl_unreceived, ("ds", "iVendorNum", "cInvoiceNum"), DS),
        "ChangeVendorQty": BoMethod(_line_change("VendorQty", "ProposedVendorQty"), ("ProposedVendorQty", "ds"), DS),
        "ChangeUnitCost": BoMethod(_line_change("UnitCost", "ProposedUnitCost"), ("ProposedUnitCost", "ds"), DS),
        "ChangeExtCost": BoMethod(_line_change("ExtCost", "ProposedExtCost"), ("ProposedExtCost", "ds"), DS),
        "ChangePONum": BoMethod(m_change_po_num, ("ProposedPONum", "ds"), DS),
        "ChangePOLine": BoMethod(m_change_po_line, ("ProposedPOLine", "ds"), DS),
        "Update": BoMethod(m_update, ("ds",), DS),
        "UpdateMaster": BoMethod(m_update_master, ("ds", "cGroupID", "cTableName", "runChkCPay", "runChkBankRef",
                                                   "runChkRevChrg", "suppressUserPrompts"), UPDATE_MASTER_OUTPUTS),
        "GetByID": BoMethod(m_get_by_id, ("vendorNum", "invoiceNum"), returns=True, read=True),
    },
    "Erp.BO.APInvGrpSvc": {"UnlockGroup": BoMethod(m_unlock_group, ("InGroupID",))},
    "Erp.BO.VendorSvc": {"GetByVendID": BoMethod(m_get_by_vend_id, ("vendorID",), returns=True, read=True)},
    "Erp.BO.PaymentEntrySvc": {
        "GetNewCheckHed": BoMethod(m_get_new_check_hed, ("ds",), DS),
        "OnChangeVendor": BoMethod(m_on_change_vendor, ("pcVendorID", "ds"), DS),
        "OnChangeCheckDate": BoMethod(m_on_change_check_date, ("pdtCheckDate", "ds"), DS),
        "GetNewAPTran": BoMethod(m_get_new_ap_tran, ("ds", "headNum", "apTranNo", "invoiceNum"), DS),
        "OnChangeInvoiceNum": BoMethod(m_on_change_invoice_num, ("pcInvoiceNum", "pcChangeExchangeRateResponse", "ds"),
                                       ("ds", "pcQuestion")),
        "OnChangeDocTranAmt": BoMethod(m_on_change_doc_tran_amt, ("pdDocTranAmt", "ds"), DS),
        "Update": BoMethod(m_payment_update, ("ds",), DS),
        "GetByID": BoMethod(m_payment_get_by_id, ("headNum",), returns=True, read=True),
    },
}
# Method names resolve case-insensitively, as Epicor's router does.
METHODS = {service: {name.casefold(): method for name, method in methods.items()}
           for service, methods in _METHODS.items()}
