"""Epicor's tables: columns and their defaults, keyed rows, the wire forms of dates, the error
shape, the settings, and the state a sandbox keeps (writes, SysRevID, the control API's view)."""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Callable

from flask import Response
from pydantic import BaseModel, Field

from sandboxes.kit import seed as words
from sandboxes.kit import store as kit
from sandboxes.kit.routes import json_response

# ---- settings: what a deployment decides, and what a test makes happen (holds, lost answers) --


class EpicorSandboxSettings(BaseModel):
    """Per-deployment facts; the defaults follow the vendor notes (unconfirmed ones say so)."""

    company: str = "EPIC06"
    instance: str = "KineticLive"
    token_ttl: int = 3600  # unconfirmed: "about 1 hour", admin-configurable
    page_size: int = Field(100, ge=1)  # rows of an OData page when $top is absent [C1]
    max_top: int = Field(100, ge=1)  # unconfirmed whether a larger $top is honoured: capped here
    token_requires_api_key: bool = False  # unconfirmed whether TokenResource wants the key
    missing_api_key_status: int = 401  # unconfirmed: "v2 returns 401 even with a valid user"
    vendor_id_max_length: int = 8  # unconfirmed: Vendor.VendorID is x(8)
    payments_require_posted: bool = True  # unconfirmed: AP Payment Entry pays posted invoices only
    # unconfirmed: no public trace shows Epicor answering 409; 400 is its business-rule refusal
    duplicate_status: int = Field(409, ge=400, le=499)
    username: str = "mlconnector"
    password: str = "Kinetic-Sandbox-Pass-1"
    other_users: dict[str, str] = Field(default_factory=lambda: {"jsmith": "jsmith-pass-2"})


class UpdateMasterHold(BaseModel):
    """`POST /_sandbox/epicor/update-master-holds`: the next `count` UpdateMaster calls (on
    `invoice_num` only, when given) answer 200 without saving, as Epicor does when a check
    stops for a person."""

    count: int = Field(1, ge=0)
    invoice_num: str = ""  # "" holds any invoice
    requires_user_input: bool = True
    update_ran: bool = False
    op_message: str = "The invoice total does not match the total of its lines. Continue?"


class LostAnswers(BaseModel):
    """`POST /_sandbox/epicor/lost-answers`: after `skip` matching calls, the next `count`
    calls whose path contains `path_contains` are carried out, then answered `status` after
    `delay_seconds`, as when a gateway gives up on a server that already acted."""

    count: int = Field(1, ge=0)
    skip: int = Field(0, ge=0)
    path_contains: str = "UpdateMaster"
    status: int = Field(504, ge=500, le=599)
    delay_seconds: float = Field(0.0, ge=0, le=60)


# ---- errors ----------------------------------------------------------------------------------

BO_EXCEPTION = "Ice.Common.BusinessObjectException"
ODATA_EXCEPTION = "ODataException"
API_EXCEPTION = "Epicor.RESTApi.ErrorHandling.ApiException"
NOT_FOUND_EXCEPTION = "Ice.Common.RecordNotFoundException"
DUPLICATE_EXCEPTION = "Ice.Common.DuplicateRecordException"
BL_EXCEPTION = "Ice.BLException"
REASONS = {
    400: "REST API Exception", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 410: "Gone", 429: "Too Many Requests",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}


@dataclass
class EpicorError(Exception):
    """An answer in Epicor's error shape: status, message, ErrorType and the failing field."""

    status: int
    message: str
    error_type: str | None = BO_EXCEPTION
    table: str = ""
    field_name: str = ""

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"Message": self.message, "Type": "Error"}
        if self.table:
            detail["Table"] = self.table
        if self.field_name:
            detail["Field"] = self.field_name
        return {
            "HttpStatus": self.status,
            "ReasonPhrase": REASONS.get(self.status, "REST API Exception"),
            "ErrorMessage": self.message,
            "ErrorType": self.error_type,
            "ErrorDetails": [detail],
            "CorrelationId": str(uuid.uuid4()),
        }

    def response(self, headers: dict[str, str] | None = None) -> Response:
        return epicor_json(self.body(), self.status, headers)


def bo_error(message: str, table: str = "", field_name: str = "") -> EpicorError:
    """A business rule's refusal: 400, BusinessObjectException, naming the table and field."""
    return EpicorError(400, message, BO_EXCEPTION, table, field_name)


def api_error(status: int, message: str) -> EpicorError:
    """A refusal of the REST layer (routing, deserializing), before any business object runs."""
    return EpicorError(status, message, API_EXCEPTION)


def not_found(table: str = "") -> EpicorError:
    return EpicorError(404, "Record not found.", NOT_FOUND_EXCEPTION, table)


def odata_error(message: str) -> EpicorError:
    return EpicorError(400, message, ODATA_EXCEPTION)


def no_property(name: str, row_type: str) -> EpicorError:
    return odata_error(f"Could not find a property named '{name}' on type '{row_type}'.")


def epicor_json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return json_response(data, status, headers, default=str)  # dates and decimals as text


# ---- time ------------------------------------------------------------------------------------


def fmt_datetime(value: datetime) -> str:
    """Epicor's wire form: no zone, milliseconds (server time zone is UTC here)."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}"


def fmt_date(value: date | datetime) -> str:
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}T00:00:00"


_ISO = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2})?)(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")


def parse_datetime(text: str) -> datetime:
    """Any ISO-ish literal (zone or not, any fraction length) as naive UTC."""
    match = _ISO.match(text.strip())
    if not match:
        raise ValueError(f"not a date/time: {text!r}")
    day, clock, fraction, zone = match.groups()
    value = datetime.fromisoformat(f"{day}T{clock or '00:00:00'}")
    if fraction:
        value = value.replace(microsecond=int((fraction[1:] + "000000")[:6]))
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        value -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return value


def as_date(value: Any) -> date | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return parse_datetime(str(value)).date()


# ---- tables ----------------------------------------------------------------------------------

DATETIME_FIELDS = frozenset({
    "InvoiceDate", "DueDate", "ApplyDate", "ChangeDate", "OrderDate", "PromiseDate",
    "CheckDate", "TranDate", "EffFrom", "EffTo",
})


SYS = {"SysRevID": 0, "SysRowID": "", "RowMod": ""}

VENDOR = dict(
    Company="", VendorNum=0, VendorID="", Name="", Address1="", Address2="", Address3="", City="",
    State="", ZIP="", Country="", CountryNum=0, EMailAddress="", PhoneNum="", FaxNum="", TermsCode="",
    CurrencyCode="", GroupCode="", PurPoint="", TaxPayerID="", DefaultFOB="", Inactive=False, **SYS,
)
# A vendor's bank accounts (Vendors(...)/VendBanks). Field names follow Epicor's VendBank table;
# only the child set's name is confirmed in the facts.
VENDBANK = dict(
    Company="", VendorNum=0, BankID="", BankName="", NameOnAccount="", BankAcctNumber="", BankIdentifier="",
    SwiftNum="", IBANCode="", CurrencyCode="", PrimaryBank=False, Inactive=False, **SYS,
)
APINVHED = dict(
    Company="", VendorNum=0, VendorNumVendorID="", VendorNumName="", InvoiceNum="", GroupID="",
    InvoiceDate=None, DueDate=None, ApplyDate=None, FiscalYear=0, FiscalPeriod=0, InvoiceAmt=0.0,
    DocInvoiceAmt=0.0, InvoiceVendorAmt=0.0, DocInvoiceVendorAmt=0.0, InvoiceBal=0.0, DocInvoiceBal=0.0,
    TaxAmt=0.0, DocTaxAmt=0.0, ScrInvoiceAmt=0.0, ScrDocInvoiceAmt=0.0, OpenPayable=True, Posted=False,
    DebitMemo=False, InvoiceHeld=False, PayHold=False, REFPONum=0, InvoiceRef="", LegalNumber="",
    TermsCode="", CurrencyCode="USD", ExchangeRate=1.0, Description="", EntryPerson="", ReadyToCalc=False,
    ChangedBy="", ChangeDate=None, **SYS,
)
APINVDTL = dict(
    Company="", VendorNum=0, InvoiceNum="", InvoiceLine=0, LineType="MSC", PartNum="", Description="",
    VendorQty=0.0, OurQty=0.0, PUM="EA", IUM="EA", UnitCost=0.0, DocUnitCost=0.0, ExtCost=0.0,
    DocExtCost=0.0, PONum=0, POLine=0, PORelNum=0, PackSlip="", PackLine=0, JobNum="", TaxCatID="",
    GLAccount="", **SYS,
)
APINVGRP = dict(
    Company="", GroupID="", ActiveUserID="", ApplyDate=None, FiscalYear=0, FiscalPeriod=0,
    FiscalYearSuffix="", FiscalCalendarID="", **SYS,
)
POHEADER = dict(
    Company="", PONum=0, VendorNum=0, VendorVendorID="", VendorName="", OrderDate=None, DueDate=None,
    PromiseDate=None, BuyerID="", ShipViaCode="", TermsCode="", PurPoint="", OpenOrder=True,
    VoidOrder=False, OrderHeld=False, Approve=True, ApprovalStatus="A", POType="STD", CurrencyCode="USD",
    TotalOrder=0.0, DocTotalOrder=0.0, EntryPerson="", CommentText="", ChangedBy="", ChangeDate=None, **SYS,
)
PODETAIL = dict(
    Company="", PONUM=0, POLine=0, PartNum="", VenPartNum="", LineDesc="", OrderQty=0.0, XOrderQty=0.0,
    IUM="EA", PUM="EA", UnitCost=0.0, DocUnitCost=0.0, ExtCost=0.0, DocExtCost=0.0, DueDate=None,
    VendorNum=0, OpenLine=True, VoidLine=False, ClassID="", **SYS,
)
# A PO line's releases (its delivery schedule). JobNum names the job a release is bought for
# (Epicor's PORel carries it for job-material purchases; not in the vendor notes' field list).
PORELS = dict(
    Company="", PONum=0, POLine=0, PORelNum=0, DueDate=None, RelQty=0.0, XRelQty=0.0, ReceivedQty=0.0,
    InvoicedQty=0.0, OpenRelease=True, Plant="", WarehouseCode="", JobNum="", **SYS,
)
GLACCOUNT = dict(
    Company="", COACode="", GLAccount1="", GLAcctDisp="", AccountDesc="",
    **{f"SegValue{i}": "" for i in range(1, 21)},
    Active=True, EffFrom=None, EffTo=None, ParentGLAccount="", **SYS,
)
CHECKHED = dict(
    Company="", HeadNum=0, GroupID="", VendorNum=0, VendorNumVendorID="", Name="", CheckNum=0,
    CheckDate=None, CheckAmt=0.0, DocCheckAmt=0.0, CurrencyCode="USD", BankAcctID="", CheckSrc="2",
    PMUID=0, FiscalYear=0, FiscalPeriod=0, Posted=False, Voided=False, ManualPrint=True, XRefCheckNum="",
    EntryPerson="", **SYS,
)
APTRAN = dict(
    Company="", HeadNum=0, APTranNo=0, InvoiceNum="", VendorNum=0, TranDate=None, TranType="PayInv",
    TranAmt=0.0, DocTranAmt=0.0, GroupID="", Posted=False, **SYS,
)
APCHKGRP = dict(Company="", GroupID="", ActiveUserID="", BankAcctID="", CheckDate=None, **SYS)

MONEY_FIELDS = frozenset({
    "InvoiceAmt", "DocInvoiceAmt", "InvoiceVendorAmt", "DocInvoiceVendorAmt", "InvoiceBal", "DocInvoiceBal",
    "TaxAmt", "DocTaxAmt", "ScrInvoiceAmt", "ScrDocInvoiceAmt", "ExtCost", "DocExtCost", "TotalOrder",
    "DocTotalOrder", "CheckAmt", "DocCheckAmt", "TranAmt", "DocTranAmt",
})


# How a value sent for a column of the type is read (dates and amounts are read by `coerce`).
CONVERT: dict[str, Callable[[Any], Any]] = {
    "bool": lambda value: value if isinstance(value, bool) else str(value).lower() in ("true", "1"),
    "int": int,
    "str": str,
}


class Table(kit.Table):
    """A kit table (keys without case, SysRevID from the database-wide counter) that knows its
    Epicor columns: their defaults, their types and the tableset row type's name."""

    def __init__(self, name: str, fields: dict[str, Any], key: tuple[str, ...], stamps: kit.Stamps,
                 **options: Any) -> None:
        super().__init__(key, name=name, stamps=stamps, stamp_field="SysRevID", **options)
        self.row_type = f"Erp.Tablesets.{name}Row"
        self.fields = fields
        self.types = {k: ("datetime" if k in DATETIME_FIELDS else type(v).__name__) for k, v in fields.items()}
        self.indexed = tuple(options.get("indexed", ()))

    def delete(self, row: dict[str, Any]) -> None:
        self.purge(*(row[k] for k in self.key))


def make_tables() -> dict[str, Table]:
    """Epicor's tables; SysRevID is one counter for them all, like a SQL rowversion, never
    reused, even across resets."""
    stamps = kit.Stamps()
    specs: dict[str, tuple[dict[str, Any], tuple[str, ...], dict[str, Any]]] = {
        "Vendor": (VENDOR, ("VendorNum",), {"indexed": ("VendorID",), "ids": 1}),
        "VendBank": (VENDBANK, ("VendorNum", "BankID"), {"parent": ("VendorNum",)}),
        "APInvHed": (APINVHED, ("VendorNum", "InvoiceNum"), {"indexed": ("VendorNum", "GroupID")}),
        "APInvDtl": (APINVDTL, ("VendorNum", "InvoiceNum", "InvoiceLine"), {"parent": ("VendorNum", "InvoiceNum")}),
        "APInvGrp": (APINVGRP, ("GroupID",), {}),
        "POHeader": (POHEADER, ("PONum",), {"indexed": ("VendorNum",), "ids": 1001}),
        "PODetail": (PODETAIL, ("PONUM", "POLine"), {"parent": ("PONUM",)}),
        "PORel": (PORELS, ("PONum", "POLine", "PORelNum"), {"parent": ("PONum",)}),
        "GLAccount": (GLACCOUNT, ("COACode", "GLAccount1"), {}),
        "CheckHed": (CHECKHED, ("HeadNum",), {"indexed": ("VendorNum",), "ids": 1}),
        "APTran": (APTRAN, ("HeadNum", "APTranNo"), {"parent": ("HeadNum",)}),
        "APChkGrp": (APCHKGRP, ("GroupID",), {}),
    }
    return {name: Table(name, fields, key, stamps, **options) for name, (fields, key, options) in specs.items()}


# ---- service map ---------------------------------------------------------------------------

# table -> navigation property -> (child table, the parent's fields naming its children); the
# first of a table's is its lines (the control API's `lines`).
NAVIGATION: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "Vendor": {"VendBanks": ("VendBank", ("VendorNum",))},
    "APInvHed": {"APInvDtls": ("APInvDtl", ("VendorNum", "InvoiceNum"))},
    "POHeader": {"PODetails": ("PODetail", ("PONum",)), "PORels": ("PORel", ("PONum",))},
    "CheckHed": {"APTrans": ("APTran", ("HeadNum",))},
}
# A child row the control API stores under a parent: what it takes from the parent (child field:
# parent field) and the field numbering the children 1, 2, ... (banks are BANK1, BANK2, ...).
LINKS: dict[str, tuple[dict[str, str], str]] = {
    "VendBank": ({"VendorNum": "VendorNum", "Company": "Company"}, "BankID"),
    "APInvDtl": ({"VendorNum": "VendorNum", "InvoiceNum": "InvoiceNum"}, "InvoiceLine"),
    "PODetail": ({"PONUM": "PONum", "VendorNum": "VendorNum"}, "POLine"),
    "PORel": ({"PONum": "PONum"}, "PORelNum"),
    "APTran": ({"HeadNum": "HeadNum", "VendorNum": "VendorNum", "GroupID": "GroupID"}, "APTranNo"),
}


APINV_TABLES = ("APInvHed", "APInvDtl", "APInvMsc", "APInvTax", "APInvExp")
PAY_TABLES = ("CheckHed", "APTran", "BankTran", "TaxDtl")
VENDOR_TABLES = ("Vendor", "VendCnt", "VendBank", "VendRemitTo")
TABLESET_TABLES = {"Erp.BO.APInvoiceSvc": APINV_TABLES, "Erp.BO.PaymentEntrySvc": PAY_TABLES,
                   "Erp.BO.VendorSvc": VENDOR_TABLES}
# Control-API entity names (put_entity / get_entities) -> table
CONTROL_ENTITIES = {
    "vendors": "Vendor", "ap_invoices": "APInvHed", "ap_invoice_lines": "APInvDtl",
    "purchase_orders": "POHeader", "po_lines": "PODetail", "gl_accounts": "GLAccount",
    "ap_invoice_groups": "APInvGrp", "ap_payments": "CheckHed", "ap_payment_lines": "APTran",
    "payment_groups": "APChkGrp",
}
# What `POST /_sandbox/tick` changes: (control entity, table, field, new text or None for a phone).
TICKS = (("vendors", "Vendor", "PhoneNum", None), ("ap_invoices", "APInvHed", "Description", "Updated"),
         ("purchase_orders", "POHeader", "CommentText", "Revised"))
TERMS_DAYS = {"N15": 15, "N30": 30, "N45": 45, "N60": 60, "COD": 0, "2/10N30": 30}


def tableset(names: tuple[str, ...], **rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """A tableset answer of stored rows (copies), every table of the service present."""
    return {**{name: [] for name in names}, **{name: [dict(r) for r in found] for name, found in rows.items()},
            "ExtensionTables": []}


class StoreMixin:
    """Rows in, rows out: writes that stamp SysRevID/ChangeDate, and the control API."""

    # ---- state ----------------------------------------------------------------------------

    def clear_state(self) -> None:
        for table in self.tables.values():
            table.clear()
        self.rate_window.reset()
        self.update_master_hold = UpdateMasterHold(count=0)
        self.lost_answers = LostAnswers(count=0)

    def write(self, table_name: str, row: dict[str, Any], user: str = "", when: datetime | None = None,
              keep_change_date: bool = False) -> dict[str, Any]:
        """Store a row: a new SysRevID always (the table stamps it), ChangeDate/ChangedBy where the table has them."""
        table = self.tables[table_name]
        row["RowMod"] = ""
        if not row.get("SysRowID"):
            row["SysRowID"] = str(uuid.uuid4())
        if "ChangeDate" in table.fields and not keep_change_date:
            row["ChangeDate"] = fmt_datetime(when or self.clock.now_datetime())
            row["ChangedBy"] = user or self.settings.username
        table.put(row)
        return row

    def new_row(self, table_name: str, values: dict[str, Any] | None = None) -> dict[str, Any]:
        table = self.tables[table_name]
        row = dict(table.fields)
        row["Company"] = self.settings.company
        if values:
            row.update(self.coerce(table, values))
        return row

    def coerce(self, table: Table, values: dict[str, Any]) -> dict[str, Any]:
        """Known fields only, converted to the column's type (as the tableset deserializer does)."""
        out: dict[str, Any] = {}
        for name, value in values.items():
            if name not in table.fields:
                continue
            kind = table.types[name]
            try:
                if value is None:
                    out[name] = None if kind == "datetime" else table.fields[name]
                elif kind == "datetime":
                    out[name] = None if value == "" else self._wire_date(name, value)
                elif kind == "float":
                    out[name] = round(float(value), 2 if name in MONEY_FIELDS else 5)
                else:
                    out[name] = CONVERT[kind](value)
            except (TypeError, ValueError):
                raise EpicorError(400, f"Unable to deserialize entity. Field {name} has an invalid value.",
                                  API_EXCEPTION, table.name, name) from None
        return out

    @staticmethod
    def _wire_date(name: str, value: Any) -> str:
        parsed = value if isinstance(value, datetime) else parse_datetime(str(value))
        return fmt_datetime(parsed) if name == "ChangeDate" else fmt_date(parsed)

    # ---- control API ------------------------------------------------------------------------

    def tick(self, count: int) -> list[dict[str, Any]]:
        rng = random.Random(self.options.seed * 31 + self.tables["Vendor"].stamps.last)
        changed: list[dict[str, Any]] = []
        for _ in range(count):
            entity, table_name, field_name, text = rng.choice(TICKS)
            table = self.tables[table_name]
            rows = table.rows()
            if not rows:
                continue
            row = rows[rng.randrange(len(rows))]
            row[field_name] = words.phone(rng) if text is None else f"{text} {rng.randint(1, 10_000)}"
            self.write(table_name, row, user="sandbox")
            changed.append({"entity": entity, "key": {k: row[k] for k in table.key}, "SysRevID": row["SysRevID"],
                            "ChangeDate": row.get("ChangeDate")})
        return changed

    def get_entities(self, entity: str) -> list[dict[str, Any]]:
        table_name = CONTROL_ENTITIES[entity]
        return [self.export(table_name, row) for row in self.tables[table_name].rows()]

    def export(self, table_name: str, row: dict[str, Any]) -> dict[str, Any]:
        return {**row, **{nav: [dict(c) for c in self.nav_children(table_name, nav, row)]
                          for nav in NAVIGATION.get(table_name, {})}}

    def nav_children(self, table_name: str, nav: str, row: dict[str, Any]) -> list[dict[str, Any]]:
        """A row's children under one navigation property (a PO has lines and releases)."""
        child, fields = NAVIGATION[table_name][nav]
        return self.tables[child].children(*(row[f] for f in fields))

    def children_of(self, table_name: str, row: dict[str, Any]) -> list[dict[str, Any]]:
        """A row's lines (its first navigation property's children)."""
        navigation = NAVIGATION.get(table_name)
        return self.nav_children(table_name, next(iter(navigation)), row) if navigation else []

    def put_entity(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a row; children given under a navigation property (the first one
        also as `lines`) replace the row's children."""
        table_name = CONTROL_ENTITIES[entity]
        table = self.tables[table_name]
        values = dict(payload)
        children = {nav: values.pop(nav, values.pop("lines", None) if first == 0 else None)
                    for first, nav in enumerate(NAVIGATION.get(table_name, {}))}
        keep_date = "ChangeDate" in values and "ChangeDate" in table.fields
        if table_name == "Vendor" and "VendorNum" not in values:
            existing = self.tables["Vendor"].one("VendorID", str(values.get("VendorID", "")))
            values["VendorNum"] = existing["VendorNum"] if existing else table.new_id()
        if table_name in ("POHeader", "CheckHed") and table.id_field not in values:
            values[table.id_field] = table.new_id()
        missing = [k for k in table.key if values.get(k) in (None, "") and k != "COACode"]
        if missing:
            raise ValueError(f"{entity} needs {', '.join(missing)}")
        if table_name == "GLAccount":
            values.setdefault("COACode", "MAIN")
        current = table.get(*(values[k] for k in table.key))
        row = dict(current) if current else self.new_row(table_name)
        row.update(self.coerce(table, values))
        for nav, given in children.items():
            if given is not None:
                self._replace_children(table_name, nav, row, given)
        if table_name == "APInvHed":
            self._fill_invoice(row, recompute=("InvoiceAmt" not in values), new=current is None,
                               explicit_balance="InvoiceBal" in values)
        self.write(table_name, row, user="sandbox", keep_change_date=keep_date)
        return self.export(table_name, row)

    def _replace_children(self, table_name: str, nav: str, row: dict[str, Any],
                          children: list[dict[str, Any]]) -> None:
        child_name = NAVIGATION[table_name][nav][0]
        for old in self.nav_children(table_name, nav, row):
            self.tables[child_name].delete(old)
        link, line_key = LINKS[child_name]
        for n, child in enumerate(children, start=1):
            values = {"POLine": 1} if child_name == "PORel" else {}  # a release of the PO's first line
            values.update({line_key: n if child_name != "VendBank" else f"BANK{n}", **child})
            values.update({child_field: row[parent_field] for child_field, parent_field in link.items()})
            child_row = self.new_row(child_name, values)
            if child_name == "APInvDtl" and "ExtCost" not in child:
                ext = round(child_row["VendorQty"] * child_row["UnitCost"], 2)
                child_row["ExtCost"] = child_row["DocExtCost"] = ext
            self.write(child_name, child_row, user="sandbox")
