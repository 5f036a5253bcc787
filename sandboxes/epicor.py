"""A faithful simulator of the Epicor Kinetic REST API v2 (see shared/vendor-apis/epicor.md).

What a client can get wrong here, it gets wrong against Epicor too:

- Paths are `/{instance}/api/v2/odata/{company}/{Service}/{EntitySet|Method}`; an unknown
  instance, company, service, entity set or method answers 404 in Epicor's error shape.
- Every v2 call needs `x-api-key` (or `?api-key=`) AND an identity: Basic, or a bearer token
  from `POST /{instance}/TokenResource.svc/` (no refresh token; it simply expires).
- OData reads: `value` lists, `$filter` (eq ne gt ge lt le, and or not, parentheses,
  contains/startswith/endswith/tolower/toupper/substringof, `Nav/any(x: ...)`), `$select`,
  `$expand`, `$orderby`, `$top` (capped at 100 rows, also the default), `$skip`, `$count`.
  String comparisons ignore case, as SQL Server's default collation does.
- A PO (`POes`) expands its lines (`PODetails`) and its releases, the delivery schedule
  (`PORels`: `RelQty`, `DueDate`, the `JobNum` a release is bought for).
- Business-object methods answer `{"returnObj": ..., "parameters": {...}}`; tableset names
  (`APInvHed`, `APInvDtl`, `CheckHed`, `APTran`) are distinct from entity sets
  (`APInvoices`, `APInvDtls`, `PaymentEntries`, `APTrans`). Every declared input of a method
  must be sent (`confirmCheck` on `ChangeVendorID` too): a missing one answers 400
  "Parameter X is not found in the input object". Classic reads (`GetByID`) answer GET.
- `UpdateMaster` answers its documented outputs (`ds, grpTotalInvAmt, requiresUserInput,
  opMessage, opMsgChkBankRef, opChkRevMsg, lEnableGenLegalNum, lUpdateRan, opDUAMsg`); a
  200 with `lUpdateRan` false saved nothing (`POST /_sandbox/epicor/update-master-holds`
  makes it answer so).
- AP invoices live inside an existing invoice group (`APInvGrps`); `GetNewAPInvHedInvoice`
  locks the group to the caller (`ActiveUserID`), a group locked by someone else refuses
  writes, `UnlockGroup` releases it. Lines need a saved header. `Update` checks the amount,
  the supplier, the group, GL accounts and duplicate keys (409 by default; whether Epicor
  answers 409 or a 400 BLException is unconfirmed, so it is a setting), honours `RowMod`
  and the row's `SysRevID` (optimistic concurrency).
- A lost answer (the server acted, the client never heard) is made on demand with
  `POST /_sandbox/epicor/lost-answers`.
- `SysRevID` is one database-wide counter bumped on every write (a SQL rowversion);
  `ChangeDate`/`ChangedBy` exist only on the tables that have them (APInvHed, POHeader).

Facts marked unconfirmed in the vendor notes are settings in `EpicorSandboxSettings`.
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Callable, Iterable

from flask import Flask, Response, g, request
from pydantic import BaseModel, Field

from sandboxes.base import RateWindow, Sandbox, SandboxOptions
from sandboxes.kit import odata
from sandboxes.kit.clock import MILLISECOND_US, Clock
from sandboxes.kit.routes import BodyError, body_as, json_response
from sandboxes.kit.tokens import basic_credentials


class EpicorSandboxSettings(BaseModel):
    """Per-deployment facts; the defaults follow the vendor notes (unconfirmed ones say so)."""

    company: str = "EPIC06"
    instance: str = "KineticLive"
    token_ttl: int = 3600  # unconfirmed: "about 1 hour", admin-configurable
    max_top: int = Field(100, ge=1)  # documented default cap of an OData page
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


class EpicorError(Exception):
    """An answer in Epicor's error shape: status, message, ErrorType and the failing field."""

    def __init__(self, status: int, message: str, error_type: str | None = BO_EXCEPTION,
                 table: str = "", field_name: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.table = table
        self.field_name = field_name


def epicor_error_body(status: int, message: str, error_type: str | None = None,
                      table: str = "", field_name: str = "") -> dict[str, Any]:
    detail: dict[str, Any] = {"Message": message, "Type": "Error"}
    if table:
        detail["Table"] = table
    if field_name:
        detail["Field"] = field_name
    return {
        "HttpStatus": status,
        "ReasonPhrase": REASONS.get(status, "REST API Exception"),
        "ErrorMessage": message,
        "ErrorType": error_type,
        "ErrorDetails": [detail],
        "CorrelationId": str(uuid.uuid4()),
    }


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
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


def _as_date(value: Any) -> date | None:
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


def _fields(**defaults: Any) -> dict[str, Any]:
    return dict(defaults)


SYS = {"SysRevID": 0, "SysRowID": "", "RowMod": ""}

VENDOR = _fields(
    Company="", VendorNum=0, VendorID="", Name="", Address1="", Address2="", Address3="", City="",
    State="", ZIP="", Country="", CountryNum=0, EMailAddress="", PhoneNum="", FaxNum="", TermsCode="",
    CurrencyCode="", GroupCode="", PurPoint="", TaxPayerID="", DefaultFOB="", Inactive=False, **SYS,
)
# A vendor's bank accounts (Vendors(...)/VendBanks). Field names follow Epicor's VendBank table;
# only the child set's name is confirmed in the facts.
VENDBANK = _fields(
    Company="", VendorNum=0, BankID="", BankName="", NameOnAccount="", BankAcctNumber="", BankIdentifier="",
    SwiftNum="", IBANCode="", CurrencyCode="", PrimaryBank=False, Inactive=False, **SYS,
)
APINVHED = _fields(
    Company="", VendorNum=0, VendorNumVendorID="", VendorNumName="", InvoiceNum="", GroupID="",
    InvoiceDate=None, DueDate=None, ApplyDate=None, FiscalYear=0, FiscalPeriod=0, InvoiceAmt=0.0,
    DocInvoiceAmt=0.0, InvoiceVendorAmt=0.0, DocInvoiceVendorAmt=0.0, InvoiceBal=0.0, DocInvoiceBal=0.0,
    TaxAmt=0.0, DocTaxAmt=0.0, ScrInvoiceAmt=0.0, ScrDocInvoiceAmt=0.0, OpenPayable=True, Posted=False,
    DebitMemo=False, InvoiceHeld=False, PayHold=False, REFPONum=0, InvoiceRef="", LegalNumber="",
    TermsCode="", CurrencyCode="USD", ExchangeRate=1.0, Description="", EntryPerson="", ReadyToCalc=False,
    ChangedBy="", ChangeDate=None, **SYS,
)
APINVDTL = _fields(
    Company="", VendorNum=0, InvoiceNum="", InvoiceLine=0, LineType="MSC", PartNum="", Description="",
    VendorQty=0.0, OurQty=0.0, PUM="EA", IUM="EA", UnitCost=0.0, DocUnitCost=0.0, ExtCost=0.0,
    DocExtCost=0.0, PONum=0, POLine=0, PORelNum=0, PackSlip="", PackLine=0, JobNum="", TaxCatID="",
    GLAccount="", **SYS,
)
APINVGRP = _fields(
    Company="", GroupID="", ActiveUserID="", ApplyDate=None, FiscalYear=0, FiscalPeriod=0,
    FiscalYearSuffix="", FiscalCalendarID="", **SYS,
)
POHEADER = _fields(
    Company="", PONum=0, VendorNum=0, VendorVendorID="", VendorName="", OrderDate=None, DueDate=None,
    PromiseDate=None, BuyerID="", ShipViaCode="", TermsCode="", PurPoint="", OpenOrder=True,
    VoidOrder=False, OrderHeld=False, Approve=True, ApprovalStatus="A", POType="STD", CurrencyCode="USD",
    TotalOrder=0.0, DocTotalOrder=0.0, EntryPerson="", CommentText="", ChangedBy="", ChangeDate=None, **SYS,
)
PODETAIL = _fields(
    Company="", PONUM=0, POLine=0, PartNum="", VenPartNum="", LineDesc="", OrderQty=0.0, XOrderQty=0.0,
    IUM="EA", PUM="EA", UnitCost=0.0, DocUnitCost=0.0, ExtCost=0.0, DocExtCost=0.0, DueDate=None,
    VendorNum=0, OpenLine=True, VoidLine=False, ClassID="", **SYS,
)
# A PO line's releases (its delivery schedule). JobNum names the job a release is bought for
# (Epicor's PORel carries it for job-material purchases; not in the vendor notes' field list).
PORELS = _fields(
    Company="", PONum=0, POLine=0, PORelNum=0, DueDate=None, RelQty=0.0, XRelQty=0.0, ReceivedQty=0.0,
    InvoicedQty=0.0, OpenRelease=True, Plant="", WarehouseCode="", JobNum="", **SYS,
)
GLACCOUNT = _fields(
    Company="", COACode="", GLAccount1="", GLAcctDisp="", AccountDesc="",
    **{f"SegValue{i}": "" for i in range(1, 21)},
    Active=True, EffFrom=None, EffTo=None, ParentGLAccount="", **SYS,
)
CHECKHED = _fields(
    Company="", HeadNum=0, GroupID="", VendorNum=0, VendorNumVendorID="", Name="", CheckNum=0,
    CheckDate=None, CheckAmt=0.0, DocCheckAmt=0.0, CurrencyCode="USD", BankAcctID="", CheckSrc="2",
    PMUID=0, FiscalYear=0, FiscalPeriod=0, Posted=False, Voided=False, ManualPrint=True, XRefCheckNum="",
    EntryPerson="", **SYS,
)
APTRAN = _fields(
    Company="", HeadNum=0, APTranNo=0, InvoiceNum="", VendorNum=0, TranDate=None, TranType="PayInv",
    TranAmt=0.0, DocTranAmt=0.0, GroupID="", Posted=False, **SYS,
)
APCHKGRP = _fields(Company="", GroupID="", ActiveUserID="", BankAcctID="", CheckDate=None, **SYS)

MONEY_FIELDS = frozenset({
    "InvoiceAmt", "DocInvoiceAmt", "InvoiceVendorAmt", "DocInvoiceVendorAmt", "InvoiceBal", "DocInvoiceBal",
    "TaxAmt", "DocTaxAmt", "ScrInvoiceAmt", "ScrDocInvoiceAmt", "ExtCost", "DocExtCost", "TotalOrder",
    "DocTotalOrder", "CheckAmt", "DocCheckAmt", "TranAmt", "DocTranAmt",
})


def _norm(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


class Table:
    """Rows of one Epicor table keyed case-insensitively, with a few equality indexes and
    lazily rebuilt orderings (by key, by SysRevID) so reads rarely scan everything."""

    def __init__(self, name: str, fields: dict[str, Any], keys: tuple[str, ...],
                 parent_keys: tuple[str, ...] = (), indexed: tuple[str, ...] = ()) -> None:
        self.name = name
        self.row_type = f"Erp.Tablesets.{name}Row"
        self.fields = fields
        self.types = {k: ("datetime" if k in DATETIME_FIELDS else type(v).__name__) for k, v in fields.items()}
        self.keys = keys
        self.parent_keys = parent_keys
        self.indexed = indexed
        self.clear()

    def clear(self) -> None:
        self.version = getattr(self, "version", 0) + 1
        self.rows: dict[tuple, dict[str, Any]] = {}
        self.by_parent: dict[tuple, dict[tuple, dict[str, Any]]] = {}
        self.index: dict[str, dict[Any, set[tuple]]] = {name: {} for name in self.indexed}
        self._ordered: list[dict[str, Any]] | None = None
        self._by_rev: tuple[list[dict[str, Any]], list[int]] | None = None
        self._sorted_on: dict[str, tuple[list[dict[str, Any]], list[str]] | None] = {}

    def key_of(self, row: dict[str, Any]) -> tuple:
        return tuple(_norm(row[k]) for k in self.keys)

    def parent_of(self, row: dict[str, Any]) -> tuple:
        return tuple(_norm(row[k]) for k in self.parent_keys)

    def get(self, *key: Any) -> dict[str, Any] | None:
        return self.rows.get(tuple(_norm(k) for k in key))

    def children(self, *parent: Any) -> list[dict[str, Any]]:
        rows = self.by_parent.get(tuple(_norm(p) for p in parent))
        if not rows:
            return []
        return [rows[k] for k in sorted(rows)]

    def put(self, row: dict[str, Any]) -> None:
        key = self.key_of(row)
        old = self.rows.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        self.rows[key] = row
        for name in self.indexed:
            self.index[name].setdefault(_norm(row[name]), set()).add(key)
        if self.parent_keys:
            self.by_parent.setdefault(self.parent_of(row), {})[key] = row
        self._invalidate()

    def delete(self, row: dict[str, Any]) -> None:
        key = self.key_of(row)
        old = self.rows.pop(key, None)
        if old is not None:
            self._unindex(key, old)
            self._invalidate()

    def _unindex(self, key: tuple, old: dict[str, Any]) -> None:
        for name in self.indexed:
            bucket = self.index[name].get(_norm(old[name]))
            if bucket:
                bucket.discard(key)
        if self.parent_keys:
            siblings = self.by_parent.get(self.parent_of(old))
            if siblings is not None:
                siblings.pop(key, None)

    def _invalidate(self) -> None:
        self.version += 1
        self._ordered = None
        self._by_rev = None
        self._sorted_on.clear()

    def ordered(self) -> list[dict[str, Any]]:
        """All rows in primary-key order (Epicor's order when no $orderby is given)."""
        if self._ordered is None:
            self._ordered = [self.rows[k] for k in sorted(self.rows)]
        return self._ordered

    def by_rev(self) -> tuple[list[dict[str, Any]], list[int]]:
        if self._by_rev is None:
            rows = sorted(self.rows.values(), key=lambda r: r["SysRevID"])
            self._by_rev = (rows, [r["SysRevID"] for r in rows])
        return self._by_rev

    def sorted_on(self, name: str) -> tuple[list[dict[str, Any]], list[str]] | None:
        """Rows in SysRevID order if `name` never decreases along it (true for ChangeDate
        unless a test planted an old one), with the values for bisecting; else None."""
        if name not in self._sorted_on:
            rows, _ = self.by_rev()
            values = [r.get(name) or "" for r in rows]
            ok = all(values[i] <= values[i + 1] for i in range(len(values) - 1))
            self._sorted_on[name] = (rows, values) if ok else None
        return self._sorted_on[name]


# ---- OData $filter -------------------------------------------------------------------------

EDM = {"str": "Edm.String", "int": "Edm.Int32", "float": "Edm.Decimal", "bool": "Edm.Boolean",
       "datetime": "Edm.DateTimeOffset"}
OP_KIND = {"eq": "Equal", "ne": "NotEqual", "gt": "GreaterThan", "ge": "GreaterThanOrEqual",
           "lt": "LessThan", "le": "LessThanOrEqual"}
# OData v4 as Epicor's REST v2 serves it: typed and plain date/time literals, v3's substringof too.
DIALECT = odata.Dialect(
    typed={"datetimeoffset": parse_datetime, "datetime": parse_datetime, "date": parse_datetime,
           "guid": str, "time": str},
    parse_datetime=parse_datetime,
    functions={"contains": 2, "startswith": 2, "endswith": 2, "substringof": 2, "tolower": 1, "toupper": 1},
    number_suffixes=True,
    exponents=True,
    lambdas=True,
)


def odata_error(message: str) -> EpicorError:
    return EpicorError(400, message, ODATA_EXCEPTION)


FILTER_MESSAGES = {
    "unexpected_text": "Syntax error at position {position} in '{filter}'.",
    "unexpected_end": "Syntax error: unexpected end of '{filter}'.",
    "expected": "Syntax error: expected '{expected}' at '{token}' in '{filter}'.",
    "bad_literal": "The date/time literal '{literal}' is not valid.",
    "arity": "The function '{name}' takes {arguments}.",
    "unexpected_token": "Syntax error: unexpected '{token}' in '{filter}'.",
}


def parse_filter(text: str) -> tuple:
    """The filter's tree; an ODataException with Epicor's wording when it does not parse."""
    try:
        return odata.parse_filter(text, DIALECT)
    except odata.FilterSyntaxError as exc:
        raise odata_error(exc.message(FILTER_MESSAGES, filter=text)) from None


Evaluator = Callable[[dict[str, Any], dict[str, dict[str, Any]]], Any]


@dataclass
class Scope:
    """What names mean while compiling: the table of `$it`, and lambda variables."""

    table: Table
    navigation: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]]
    child_tables: dict[str, Table]
    variables: dict[str, Table] = field(default_factory=dict)


def _to_dt(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(value)  # stored values are canonical and zone-less
    except (TypeError, ValueError):
        return parse_datetime(str(value))


def _canonical(name: str, value: datetime) -> str | None:
    """The literal in the column's own stored form, when that form can express it exactly,
    so the comparison is a plain string comparison."""
    if name == "ChangeDate":
        return fmt_datetime(value) if value.microsecond % 1000 == 0 else None
    if (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0):
        return fmt_date(value)
    return None


class FilterCompiler:
    """Turns the AST into closures with types checked once, the way OData rejects
    `Name eq 5` before running anything."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def predicate(self, node: tuple) -> Evaluator:
        fn, kind = self.value(node)
        if kind not in ("bool", "any"):
            raise odata_error("The $filter expression must evaluate to a boolean.")
        return fn

    def value(self, node: tuple) -> tuple[Evaluator, str]:
        tag = node[0]
        if tag == "lit":
            literal = node[1]
            kind = ("null" if literal is None else "bool" if isinstance(literal, bool) else
                    "datetime" if isinstance(literal, datetime) else type(literal).__name__)
            return (lambda row, env, v=literal: v), kind
        if tag == "field":
            return self.path(node[1])
        if tag in ("and", "or"):
            left, right = self.predicate(node[1]), self.predicate(node[2])
            if tag == "and":
                return (lambda row, env: bool(left(row, env)) and bool(right(row, env))), "bool"
            return (lambda row, env: bool(left(row, env)) or bool(right(row, env))), "bool"
        if tag == "not":
            inner = self.predicate(node[1])
            return (lambda row, env: not inner(row, env)), "bool"
        if tag == "cmp":
            return self.comparison(node[1], node[2], node[3]), "bool"
        if tag == "call":
            return self.call(node[1], node[2])
        if tag in ("any", "all"):
            return self.lambda_(tag, node[1], node[2], node[3]), "bool"
        raise odata_error("Unsupported $filter expression.")

    def path(self, segments: tuple[str, ...]) -> tuple[Evaluator, str]:
        if len(segments) == 2 and segments[0] in self.scope.variables:
            table = self.scope.variables[segments[0]]
            name, var = segments[1], segments[0]
            if name not in table.fields:
                raise odata_error(f"Could not find a property named '{name}' on type '{table.row_type}'.")
            return (lambda row, env: env[var].get(name)), table.types[name]
        if len(segments) != 1:
            raise odata_error(f"Could not find a property named '{'/'.join(segments)}' on type "
                              f"'{self.scope.table.row_type}'.")
        name = segments[0]
        if name not in self.scope.table.fields:
            raise odata_error(f"Could not find a property named '{name}' on type '{self.scope.table.row_type}'.")
        return (lambda row, env: row.get(name)), self.scope.table.types[name]

    def call(self, name: str, args: tuple[tuple, ...]) -> tuple[Evaluator, str]:
        compiled = [self.value(a) for a in args]
        if name in ("tolower", "toupper"):
            inner = compiled[0][0]
            conv = str.lower if name == "tolower" else str.upper
            return (lambda row, env: None if (v := inner(row, env)) is None else conv(str(v))), "str"
        (a, _), (b, _) = compiled
        if name == "substringof":
            a, b = b, a
        test = {"contains": lambda x, y: y in x, "substringof": lambda x, y: y in x,
                "startswith": str.startswith, "endswith": str.endswith}[name]

        def run(row: dict[str, Any], env: dict[str, dict[str, Any]]) -> bool:
            x, y = a(row, env), b(row, env)
            if x is None or y is None:
                return False
            return bool(test(str(x).casefold(), str(y).casefold()))

        return run, "bool"

    def lambda_(self, kind: str, path: tuple[str, ...], variable: str, body: tuple) -> Evaluator:
        if len(path) != 1 or path[0] not in self.scope.navigation:
            raise odata_error(f"Could not find a navigation property named '{'/'.join(path)}' on type "
                              f"'{self.scope.table.row_type}'.")
        children = self.scope.navigation[path[0]]
        inner_scope = Scope(self.scope.table, self.scope.navigation, self.scope.child_tables,
                            {**self.scope.variables, variable: self.scope.child_tables[path[0]]})
        test = FilterCompiler(inner_scope).predicate(body)
        combine = any if kind == "any" else all

        def run(row: dict[str, Any], env: dict[str, dict[str, Any]]) -> bool:
            return combine(test(row, {**env, variable: child}) for child in children(row))

        return run

    def comparison(self, op: str, left: tuple, right: tuple) -> Evaluator:
        lf, lk = self.value(left)
        rf, rk = self.value(right)
        compare = odata.COMPARISONS[op]
        kinds = {lk, rk}
        if "null" in kinds:
            if op not in ("eq", "ne"):
                return lambda row, env: False
            want_equal = op == "eq"
            return lambda row, env: ((lf(row, env) in (None, "")) if lk != "null" else
                                     (rf(row, env) in (None, ""))) == want_equal
        if "datetime" in kinds:
            for kind, node in ((lk, left), (rk, right)):
                if kind not in ("datetime", "str") or (kind == "str" and node[0] != "lit"):
                    raise self._incompatible(lk, rk, op)
            lit_left = left[0] == "lit"
            lit_right = right[0] == "lit"
            lv = _to_dt(left[1]) if lit_left else None
            rv = _to_dt(right[1]) if lit_right else None
            if lit_right and left[0] == "field" and len(left[1]) == 1 and rv is not None:
                text = _canonical(left[1][0], rv)
                if text is not None:
                    return lambda row, env: (v := lf(row, env)) not in (None, "") and compare(v, text)
            if lit_right:
                return lambda row, env: (v := lf(row, env)) not in (None, "") and compare(_to_dt(v), rv)
            if lit_left:
                return lambda row, env: (v := rf(row, env)) not in (None, "") and compare(lv, _to_dt(v))
            return lambda row, env: (a := lf(row, env)) not in (None, "") and (b := rf(row, env)) not in (
                None, "") and compare(_to_dt(a), _to_dt(b))
        numeric = {"int", "float"}
        if kinds <= numeric:
            if right[0] == "lit":
                literal = right[1]
                return lambda row, env: (v := lf(row, env)) is not None and compare(v, literal)
            return lambda row, env: (a := lf(row, env)) is not None and (b := rf(row, env)) is not None and compare(a, b)
        if kinds == {"str"}:
            if right[0] == "lit":
                folded = right[1].casefold()
                return lambda row, env: (v := lf(row, env)) is not None and compare(v.casefold(), folded)
            return lambda row, env: (a := lf(row, env)) is not None and (b := rf(row, env)) is not None and compare(
                str(a).casefold(), str(b).casefold())
        if kinds == {"bool"}:
            return lambda row, env: compare(bool(lf(row, env)), bool(rf(row, env)))
        raise self._incompatible(lk, rk, op)

    @staticmethod
    def _incompatible(lk: str, rk: str, op: str) -> EpicorError:
        return odata_error(
            "A binary operator with incompatible types was detected. Found operand types "
            f"'{EDM.get(lk, lk)}' and '{EDM.get(rk, rk)}' for operator kind '{OP_KIND[op]}'."
        )


# ---- service map ---------------------------------------------------------------------------

@dataclass
class EntitySet:
    name: str
    table: str
    navigation: dict[str, str] = field(default_factory=dict)  # nav property -> child table
    writable: tuple[str, ...] = ()  # POST / PATCH / DELETE the sandbox implements


SERVICES: dict[str, dict[str, EntitySet]] = {
    "Erp.BO.VendorSvc": {"Vendors": EntitySet("Vendors", "Vendor", {"VendBanks": "VendBank"}, ("POST", "PATCH"))},
    "Erp.BO.APInvoiceSvc": {
        "APInvoices": EntitySet("APInvoices", "APInvHed", {"APInvDtls": "APInvDtl"}, ("POST", "DELETE")),
    },
    "Erp.BO.APInvGrpSvc": {"APInvGrps": EntitySet("APInvGrps", "APInvGrp", writable=("POST", "PATCH"))},
    "Erp.BO.POSvc": {"POes": EntitySet("POes", "POHeader", {"PODetails": "PODetail", "PORels": "PORel"})},
    "Erp.BO.GLAccountSvc": {"GLAccounts": EntitySet("GLAccounts", "GLAccount")},
    "Erp.BO.PaymentEntrySvc": {"PaymentEntries": EntitySet("PaymentEntries", "CheckHed", {"APTrans": "APTran"})},
    "Erp.BO.APChkGrpSvc": {"APChkGrps": EntitySet("APChkGrps", "APChkGrp", writable=("POST",))},
}
TABLESET_TABLES = {
    "Erp.BO.APInvoiceSvc": ("APInvHed", "APInvDtl", "APInvMsc", "APInvTax", "APInvExp"),
    "Erp.BO.PaymentEntrySvc": ("CheckHed", "APTran", "BankTran", "TaxDtl"),
    "Erp.BO.VendorSvc": ("Vendor", "VendCnt", "VendBank", "VendRemitTo"),
}
# Control-API entity names (put_entity / get_entities) -> table
CONTROL_ENTITIES = {
    "vendors": "Vendor", "ap_invoices": "APInvHed", "ap_invoice_lines": "APInvDtl",
    "purchase_orders": "POHeader", "po_lines": "PODetail", "gl_accounts": "GLAccount",
    "ap_invoice_groups": "APInvGrp", "ap_payments": "CheckHed", "ap_payment_lines": "APTran",
    "payment_groups": "APChkGrp",
}
CHILD_LISTS = {"Vendor": ("VendBanks", "VendBank"), "APInvHed": ("APInvDtls", "APInvDtl"), "POHeader": ("PODetails", "PODetail"),
               "CheckHed": ("APTrans", "APTran")}
QUERY_CACHE_SIZE = 64  # distinct recent filters kept; a paging client asks the same one per page
TERMS_DAYS = {"N15": 15, "N30": 30, "N45": 45, "N60": 60, "COD": 0, "2/10N30": 30}


# ---- seed data -----------------------------------------------------------------------------

BANKS = ("First National Bank", "Wells Fargo Bank", "Bank of America", "PNC Bank", "Truist Bank", "US Bank")
NAME_STEMS = [
    "Acme Supply", "Summit Plumbing", "Blue Ridge Electric", "Northwind HVAC", "Carolina Pipe & Valve",
    "Lone Star Fasteners", "Pacific Sheet Metal", "Great Lakes Filters", "Mountain West Rentals",
    "Delta Refrigeration", "Keystone Lumber", "Evergreen Fleet Fuel", "Granite State Tools",
    "Sunbelt Controls", "Prairie Wire & Cable", "Harbor Safety", "Capitol Ductwork", "Redwood Insulation",
    "Gulf Coast Compressors", "Silver Creek Concrete", "Ironclad Welding", "Bayview Permits & Filing",
    "Pioneer Boilers", "Cascade Water Treatment", "Frontier Electrical Wholesale", "Heritage Paint",
]
SUFFIXES = ["Co", "Inc", "LLC", "Company", "Corp", "Distributors", "Group", "Wholesale"]
STREETS = ["Main", "Industrial", "Commerce", "Oak", "Maple", "Airport", "Harbor", "Mill", "Depot", "Cedar"]
STREET_TYPES = [("Street", "St"), ("Avenue", "Ave"), ("Boulevard", "Blvd"), ("Road", "Rd"), ("Drive", "Dr")]
CITIES = [("Charlotte", "NC", "282"), ("Austin", "TX", "787"), ("Denver", "CO", "802"), ("Columbus", "OH", "432"),
          ("Tampa", "FL", "336"), ("Phoenix", "AZ", "850"), ("Minneapolis", "MN", "554"), ("Portland", "OR", "972")]
NATURAL_ACCOUNTS = [
    ("1000", "Cash - Operating"), ("1200", "Inventory"), ("2000", "Accounts Payable"),
    ("5000", "Cost of Goods Sold"), ("5100", "Materials"), ("5200", "Subcontractors"),
    ("6000", "Repairs & Maintenance"), ("6100", "Shop Supplies"), ("6200", "Equipment Rental"),
    ("6300", "Vehicle Fuel"), ("6400", "Permits & Fees"), ("6500", "Freight"), ("7000", "Utilities"),
    ("7100", "Office Expense"),
]
COST_CENTERS = [("100", "Service"), ("200", "Installation"), ("300", "Construction"), ("000", "Corporate")]
PARTS = [("PVC-200", "2in PVC pipe 10ft"), ("CU-075", "3/4in copper elbow"), ("FLT-1625", "Filter 16x25x1"),
         ("WIRE-12", "12 AWG THHN wire 500ft"), ("CAP-45", "Run capacitor 45/5 MFD"), ("VLV-BALL1", "1in ball valve"),
         ("DUCT-8", "8in flex duct 25ft"), ("THERM-T6", "Programmable thermostat"), ("REF-410", "R-410A 25lb"),
         ("BRKR-20", "20A breaker")]
MISC_LINES = ["Freight charge", "Equipment rental - lift", "Permit filing fee", "Fuel surcharge",
              "Shop supplies", "Disposal fee", "Subcontract labor", "Expedite fee"]


class EpicorSandbox(Sandbox):
    """Epicor Kinetic REST v2 for one instance and one company."""

    vendor = "epicor"

    def __init__(self, options: SandboxOptions | None = None,
                 settings: EpicorSandboxSettings | None = None) -> None:
        self.settings = settings or EpicorSandboxSettings()
        opts = options or SandboxOptions()
        self.token_ttl = opts.token_ttl if opts.token_ttl else self.settings.token_ttl
        # Epicor publishes no request rate limit: off unless options.rate_limit asks for one.
        self.rate_window = RateWindow(opts.rate_limit or None)
        self.clock = Clock(MILLISECOND_US)
        self.users = {self.settings.username: self.settings.password, **self.settings.other_users}
        self.api_key = "ek_" + format(random.Random(opts.seed * 7919 + 3).getrandbits(160), "040x")
        self._rev = 0
        self._rev_lock = threading.Lock()
        self.tables: dict[str, Table] = {
            "Vendor": Table("Vendor", VENDOR, ("VendorNum",), indexed=("VendorID",)),
            "VendBank": Table("VendBank", VENDBANK, ("VendorNum", "BankID"), parent_keys=("VendorNum",)),
            "APInvHed": Table("APInvHed", APINVHED, ("VendorNum", "InvoiceNum"), indexed=("VendorNum", "GroupID")),
            "APInvDtl": Table("APInvDtl", APINVDTL, ("VendorNum", "InvoiceNum", "InvoiceLine"),
                              parent_keys=("VendorNum", "InvoiceNum")),
            "APInvGrp": Table("APInvGrp", APINVGRP, ("GroupID",)),
            "POHeader": Table("POHeader", POHEADER, ("PONum",), indexed=("VendorNum",)),
            "PODetail": Table("PODetail", PODETAIL, ("PONUM", "POLine"), parent_keys=("PONUM",)),
            "PORel": Table("PORel", PORELS, ("PONum", "POLine", "PORelNum"), parent_keys=("PONum",)),
            "GLAccount": Table("GLAccount", GLACCOUNT, ("COACode", "GLAccount1")),
            "CheckHed": Table("CheckHed", CHECKHED, ("HeadNum",), indexed=("VendorNum",)),
            "APTran": Table("APTran", APTRAN, ("HeadNum", "APTranNo"), parent_keys=("HeadNum",)),
            "APChkGrp": Table("APChkGrp", APCHKGRP, ("GroupID",)),
        }
        self.head_seq = 0
        self._query_cache: dict[tuple, list[dict[str, Any]]] = {}
        self.update_master_hold = UpdateMasterHold(count=0)
        self.lost_answers = LostAnswers(count=0)
        super().__init__(opts)

    # ---- identity of the sandbox ------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        instance = self.settings.instance
        return {
            "vendor": "epicor",
            "api_base": f"{self.base_url}/{instance}",
            "token_url": f"{self.base_url}/{instance}/TokenResource.svc/",
            "credentials": {
                "username": self.settings.username,
                "password": self.settings.password,
                "api_key": self.api_key,
                "company": self.settings.company,
                "instance": instance,
            },
        }

    # ---- state ----------------------------------------------------------------------------

    def clear_state(self) -> None:
        for table in self.tables.values():
            table.clear()
        self.head_seq = 0
        self._query_cache.clear()
        self.rate_window.reset()
        self.update_master_hold = UpdateMasterHold(count=0)
        self.lost_answers = LostAnswers(count=0)

    def next_rev(self) -> int:
        """One database-wide counter, like a SQL rowversion: never reused, even across resets."""
        with self._rev_lock:
            self._rev += 1
            return self._rev

    def write(self, table_name: str, row: dict[str, Any], user: str = "", when: datetime | None = None,
              keep_change_date: bool = False) -> dict[str, Any]:
        """Store a row: new SysRevID always, ChangeDate/ChangedBy where the table has them."""
        table = self.tables[table_name]
        row["SysRevID"] = self.next_rev()
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
                    out[name] = self._fmt_datetime_field(name, value)
                elif kind == "bool":
                    out[name] = value if isinstance(value, bool) else str(value).lower() in ("true", "1")
                elif kind == "int":
                    out[name] = int(value)
                elif kind == "float":
                    number = float(value)
                    out[name] = round(number, 2) if name in MONEY_FIELDS else round(number, 5)
                else:
                    out[name] = str(value)
            except (TypeError, ValueError):
                raise EpicorError(400, f"Unable to deserialize entity. Field {name} has an invalid value.",
                                  API_EXCEPTION, table.name, name) from None
        return out

    @staticmethod
    def _fmt_datetime_field(name: str, value: Any) -> str | None:
        if value in ("", None):
            return None
        parsed = value if isinstance(value, datetime) else parse_datetime(str(value))
        return fmt_datetime(parsed) if name == "ChangeDate" else fmt_date(parsed)

    # ---- seed -------------------------------------------------------------------------------

    def seed(self, rng: random.Random, records: int) -> None:
        now = self.clock.now_datetime()
        start = now - timedelta(days=120)
        span = (now - timedelta(minutes=5) - start).total_seconds()
        company = self.settings.company

        def moment(i: int, total: int) -> datetime:
            return start + timedelta(seconds=span * (i + rng.random() * 0.5) / max(1, total))

        for account, desc in NATURAL_ACCOUNTS:
            for center, center_name in COST_CENTERS:
                row = self.new_row("GLAccount", {
                    "COACode": "MAIN", "GLAccount1": f"{account}|{center}", "GLAcctDisp": f"{account}-{center}",
                    "AccountDesc": f"{desc} - {center_name}", "SegValue1": account, "SegValue2": center,
                    "EffFrom": "2020-01-01", "Active": not (account == "7100" and center == "300"),
                })
                self.write("GLAccount", row)
        gl_accounts = [r["GLAccount1"] for r in self.tables["GLAccount"].ordered() if r["Active"]
                       and r["SegValue1"] >= "5000"]

        for group_id, user in (("AP0101", ""), ("AP0102", ""), ("APJS01", "jsmith")):
            self.write("APInvGrp", self.new_row("APInvGrp", {
                "GroupID": group_id, "ActiveUserID": user, "ApplyDate": start, "FiscalYear": start.year,
                "FiscalPeriod": start.month}))
        self.write("APChkGrp", self.new_row("APChkGrp", {"GroupID": "CHK01", "BankAcctID": "OPER",
                                                         "CheckDate": start}))

        vendors: list[dict[str, Any]] = []
        for i in range(records):
            if vendors and rng.random() < 0.12:
                vendors.append(self._near_duplicate(rng, vendors[rng.randrange(len(vendors))], i + 1))
            else:
                vendors.append(self._fresh_vendor(rng, i + 1))
        banks = random.Random(self.options.seed * 31 + 7)  # its own stream: the rest of the seed stays as it was
        for vendor in vendors:
            vendor["Company"] = company
            self.write("Vendor", vendor)
            for n in range(banks.choice((0, 1, 1, 1, 2))):
                self.write("VendBank", self._vendor_bank(banks, vendor, n + 1))
        active = [v for v in vendors if not v["Inactive"]] or vendors

        po_by_vendor: dict[int, list[int]] = {}
        for i in range(records):
            vendor = active[rng.randrange(len(active))] if active else None
            if vendor is None:
                break
            when = moment(i, records)
            po_num = 1000 + i + 1
            order_date = when.date() - timedelta(days=rng.randint(0, 10))
            header = self.new_row("POHeader", {
                "PONum": po_num, "VendorNum": vendor["VendorNum"], "VendorVendorID": vendor["VendorID"],
                "VendorName": vendor["Name"], "OrderDate": order_date, "DueDate": order_date + timedelta(days=14),
                "PromiseDate": order_date + timedelta(days=rng.randint(7, 21)), "BuyerID": rng.choice(["BUY01", "BUY02"]),
                "ShipViaCode": rng.choice(["UPS", "FDX", "BEST"]), "TermsCode": vendor["TermsCode"],
                "OpenOrder": rng.random() < 0.7, "EntryPerson": "purch01",
                "CommentText": rng.choice(["", "Deliver to warehouse dock 2", "Call before delivery"]),
            })
            total = 0.0
            for line in range(1, rng.randint(1, 5) + 1):
                part, desc = rng.choice(PARTS)
                qty = float(rng.randint(1, 40))
                unit = round(rng.uniform(2, 400), 2)
                ext = round(qty * unit, 2)
                total += ext
                self.write("PODetail", self.new_row("PODetail", {
                    "PONUM": po_num, "POLine": line, "PartNum": part, "VenPartNum": f"V-{part}", "LineDesc": desc,
                    "OrderQty": qty, "XOrderQty": qty, "UnitCost": unit, "DocUnitCost": unit, "ExtCost": ext,
                    "DocExtCost": ext, "DueDate": header["DueDate"], "VendorNum": vendor["VendorNum"],
                    "OpenLine": header["OpenOrder"], "ClassID": "MAT"}))
            header["TotalOrder"] = header["DocTotalOrder"] = round(total, 2)
            self.write("POHeader", header, when=when)
            po_by_vendor.setdefault(vendor["VendorNum"], []).append(po_num)

        invoices: list[dict[str, Any]] = []
        for i in range(records):
            vendor = active[rng.randrange(len(active))]
            when = moment(i, records)
            invoice_date = when.date() - timedelta(days=rng.randint(0, 5))
            invoice_num = f"{rng.choice(['INV', 'A', 'SI', ''])}{rng.randint(10000, 99999)}-{i + 1}"
            days = TERMS_DAYS.get(vendor["TermsCode"], 30)
            posted = rng.random() < 0.75
            header = self.new_row("APInvHed", {
                "VendorNum": vendor["VendorNum"], "VendorNumVendorID": vendor["VendorID"],
                "VendorNumName": vendor["Name"], "InvoiceNum": invoice_num,
                "GroupID": "" if posted else rng.choice(["AP0101", "AP0102"]),
                "InvoiceDate": invoice_date, "DueDate": invoice_date + timedelta(days=days), "ApplyDate": invoice_date,
                "FiscalYear": invoice_date.year, "FiscalPeriod": invoice_date.month, "TermsCode": vendor["TermsCode"],
                "Posted": posted, "EntryPerson": "apclerk",
                "Description": rng.choice(["", "Monthly materials", "Job supplies", "Rental", "Service parts"]),
                "REFPONum": rng.choice(po_by_vendor.get(vendor["VendorNum"], [0])) if rng.random() < 0.4 else 0,
            })
            total = 0.0
            for line in range(1, rng.randint(1, 4) + 1):
                qty = float(rng.randint(1, 20))
                unit = round(rng.uniform(5, 600), 2)
                ext = round(qty * unit, 2)
                total += ext
                self.write("APInvDtl", self.new_row("APInvDtl", {
                    "VendorNum": vendor["VendorNum"], "InvoiceNum": invoice_num, "InvoiceLine": line,
                    "Description": rng.choice(MISC_LINES), "VendorQty": qty, "OurQty": qty, "UnitCost": unit,
                    "DocUnitCost": unit, "ExtCost": ext, "DocExtCost": ext, "GLAccount": rng.choice(gl_accounts)}))
            total = round(total, 2)
            paid = 0.0
            if posted and rng.random() < 0.35:
                paid = total if rng.random() < 0.7 else round(total * rng.choice([0.25, 0.5]), 2)
            header.update({"InvoiceAmt": total, "DocInvoiceAmt": total, "InvoiceVendorAmt": total,
                           "DocInvoiceVendorAmt": total, "ScrInvoiceAmt": total, "ScrDocInvoiceAmt": total,
                           "InvoiceBal": round(total - paid, 2), "DocInvoiceBal": round(total - paid, 2),
                           "OpenPayable": round(total - paid, 2) > 0})
            self.write("APInvHed", header, when=when)
            if paid:
                invoices.append({"header": header, "paid": paid, "when": when})

        for n, item in enumerate(invoices):
            header = item["header"]
            self.head_seq += 1
            check_date = _as_date(header["InvoiceDate"]) + timedelta(days=rng.randint(5, 30))  # type: ignore[operator]
            vendor = self.tables["Vendor"].get(header["VendorNum"])
            self.write("CheckHed", self.new_row("CheckHed", {
                "HeadNum": self.head_seq, "GroupID": "CHK01", "VendorNum": header["VendorNum"],
                "VendorNumVendorID": header["VendorNumVendorID"], "Name": vendor["Name"] if vendor else "",
                "CheckNum": 50_000_000 + n + 1, "CheckDate": check_date, "CheckAmt": item["paid"],
                "DocCheckAmt": item["paid"], "BankAcctID": "OPER", "FiscalYear": check_date.year,
                "FiscalPeriod": check_date.month, "Posted": True, "XRefCheckNum": f"SEED-{n + 1:05d}",
                "EntryPerson": "apclerk"}))
            self.write("APTran", self.new_row("APTran", {
                "HeadNum": self.head_seq, "APTranNo": 1, "InvoiceNum": header["InvoiceNum"],
                "VendorNum": header["VendorNum"], "TranDate": check_date, "TranAmt": item["paid"],
                "DocTranAmt": item["paid"], "GroupID": "CHK01", "Posted": True}))

    def _fresh_vendor(self, rng: random.Random, num: int) -> dict[str, Any]:
        stem = rng.choice(NAME_STEMS)
        suffix = rng.choice(SUFFIXES)
        city, state, zip3 = rng.choice(CITIES)
        long_type, _ = rng.choice(STREET_TYPES)
        letters = re.sub(r"[^A-Z]", "", stem.upper())
        vendor_id = f"{letters[:4]}{num:04d}"[: self.settings.vendor_id_max_length]
        return self.new_row("Vendor", {
            "VendorNum": num, "VendorID": vendor_id, "Name": f"{stem} {suffix}",
            "Address1": f"{rng.randint(10, 9999)} {rng.choice(STREETS)} {long_type}",
            "Address2": rng.choice(["", "", f"Suite {rng.randint(100, 400)}"]), "City": city, "State": state,
            "ZIP": f"{zip3}{rng.randint(10, 99)}", "Country": "USA", "CountryNum": 1,
            "PhoneNum": f"({rng.randint(200, 989)}) {rng.randint(200, 989)}-{rng.randint(1000, 9999)}",
            "EMailAddress": f"ap@{letters.lower()[:8] or 'vendor'}{num}.example.com",
            "TermsCode": rng.choice(["N30", "N30", "N45", "N15", "2/10N30"]), "CurrencyCode": "USD",
            "GroupCode": rng.choice(["MAT", "SUB", "SVC"]), "TaxPayerID": f"{rng.randint(10, 99)}-{rng.randint(1000000, 9999999)}",
            "DefaultFOB": "DEST", "Inactive": rng.random() < 0.05,
        })

    def _vendor_bank(self, rng: random.Random, vendor: dict[str, Any], n: int) -> dict[str, Any]:
        bank = rng.choice(BANKS)
        return self.new_row("VendBank", {
            "Company": vendor["Company"], "VendorNum": vendor["VendorNum"], "BankID": f"BANK{n}", "BankName": bank,
            "NameOnAccount": vendor["Name"], "BankAcctNumber": str(rng.randint(10**9, 10**10 - 1)),
            "BankIdentifier": f"0{rng.randint(10**7, 10**8 - 1)}", "CurrencyCode": vendor["CurrencyCode"] or "USD",
            "PrimaryBank": n == 1,
        })

    def _near_duplicate(self, rng: random.Random, original: dict[str, Any], num: int) -> dict[str, Any]:
        """Same business typed differently: suffix, punctuation, case and street abbreviations."""
        twin = dict(original)
        name = original["Name"]
        variants = [
            name.replace(" Co", " Company") if name.endswith(" Co") else name + ".",
            name.upper(), name.replace("&", "and"), name.replace(" Inc", ", Inc."), name.replace(" LLC", " L.L.C."),
        ]
        address = original["Address1"]
        for long_type, short_type in STREET_TYPES:
            if address.endswith(long_type):
                address = address[: -len(long_type)] + short_type + "."
        letters = re.sub(r"[^A-Z]", "", name.upper())
        twin.update({
            "VendorNum": num, "VendorID": f"{letters[:4]}{num:04d}"[: self.settings.vendor_id_max_length],
            "Name": rng.choice(variants), "Address1": address, "SysRowID": "", "SysRevID": 0,
            "PhoneNum": re.sub(r"[^0-9]", "", original["PhoneNum"]) if rng.random() < 0.5 else original["PhoneNum"],
            "Inactive": False,
        })
        return twin

    # ---- control API ------------------------------------------------------------------------

    def tick(self, count: int) -> list[dict[str, Any]]:
        rng = random.Random(self.options.seed * 31 + self._rev)
        changed: list[dict[str, Any]] = []
        choices = [("vendors", "Vendor"), ("ap_invoices", "APInvHed"), ("purchase_orders", "POHeader")]
        for _ in range(count):
            entity, table_name = rng.choice(choices)
            rows = self.tables[table_name].ordered()
            if not rows:
                continue
            row = rows[rng.randrange(len(rows))]
            if table_name == "Vendor":
                row["PhoneNum"] = f"({rng.randint(200, 989)}) {rng.randint(200, 989)}-{rng.randint(1000, 9999)}"
                key = {"VendorNum": row["VendorNum"]}
            elif table_name == "APInvHed":
                row["Description"] = f"Updated {rng.randint(1, 10_000)}"
                key = {"VendorNum": row["VendorNum"], "InvoiceNum": row["InvoiceNum"]}
            else:
                row["CommentText"] = f"Revised {rng.randint(1, 10_000)}"
                key = {"PONum": row["PONum"]}
            self.write(table_name, row, user="sandbox")
            changed.append({"entity": entity, "key": key, "SysRevID": row["SysRevID"],
                            "ChangeDate": row.get("ChangeDate")})
        return changed

    def get_entities(self, entity: str) -> list[dict[str, Any]]:
        table_name = CONTROL_ENTITIES[entity]
        return [self.export(table_name, row) for row in self.tables[table_name].ordered()]

    def export(self, table_name: str, row: dict[str, Any]) -> dict[str, Any]:
        out = dict(row)
        if table_name in CHILD_LISTS:
            nav, child = CHILD_LISTS[table_name]
            out[nav] = [dict(c) for c in self.children_of(table_name, row)]
        if table_name == "POHeader":
            out["PORels"] = [dict(c) for c in self.nav_children(table_name, "PORels", row)]
        return out

    def nav_children(self, table_name: str, nav: str, row: dict[str, Any]) -> list[dict[str, Any]]:
        """A row's children under one navigation property (a PO has lines and releases)."""
        if table_name == "POHeader" and nav == "PORels":
            return self.tables["PORel"].children(row["PONum"])
        return self.children_of(table_name, row)

    def children_of(self, table_name: str, row: dict[str, Any]) -> list[dict[str, Any]]:
        if table_name == "Vendor":
            return self.tables["VendBank"].children(row["VendorNum"])
        if table_name == "APInvHed":
            return self.tables["APInvDtl"].children(row["VendorNum"], row["InvoiceNum"])
        if table_name == "POHeader":
            return self.tables["PODetail"].children(row["PONum"])
        if table_name == "CheckHed":
            return self.tables["APTran"].children(row["HeadNum"])
        return []

    def put_entity(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        table_name = CONTROL_ENTITIES[entity]
        table = self.tables[table_name]
        values = dict(payload)
        nav_children = None
        if table_name in CHILD_LISTS:
            nav, _ = CHILD_LISTS[table_name]
            nav_children = values.pop(nav, values.pop("lines", None))
        releases = values.pop("PORels", None) if table_name == "POHeader" else None
        keep_date = "ChangeDate" in values and "ChangeDate" in table.fields
        if table_name == "Vendor" and "VendorNum" not in values:
            existing = self._vendor_by_id(str(values.get("VendorID", "")))
            values["VendorNum"] = existing["VendorNum"] if existing else self._next_num("Vendor", "VendorNum")
        if table_name == "POHeader" and "PONum" not in values:
            values["PONum"] = self._next_num("POHeader", "PONum", 1000)
        if table_name == "CheckHed" and "HeadNum" not in values:
            self.head_seq += 1
            values["HeadNum"] = self.head_seq
        missing = [k for k in table.keys if values.get(k) in (None, "") and k != "COACode"]
        if missing:
            raise ValueError(f"{entity} needs {', '.join(missing)}")
        if table_name == "GLAccount":
            values.setdefault("COACode", "MAIN")
        key = tuple(values[k] for k in table.keys)
        current = table.get(*key)
        row = dict(current) if current else self.new_row(table_name)
        row.update(self.coerce(table, values))
        if nav_children is not None:
            self._replace_children(table_name, row, nav_children)
        if releases is not None:
            self._replace_releases(row, releases)
        if table_name == "APInvHed":
            self._fill_invoice(row, recompute=("InvoiceAmt" not in values), new=current is None,
                               explicit_balance="InvoiceBal" in values)
        if table_name == "CheckHed" and "HeadNum" in values:
            self.head_seq = max(self.head_seq, int(values["HeadNum"]))
        self.write(table_name, row, user="sandbox", keep_change_date=keep_date)
        return self.export(table_name, row)

    def _replace_releases(self, po: dict[str, Any], releases: list[dict[str, Any]]) -> None:
        table = self.tables["PORel"]
        for old in table.children(po["PONum"]):
            table.delete(old)
        for n, release in enumerate(releases, start=1):
            values = {"POLine": 1, "PORelNum": n, **release, "PONum": po["PONum"]}
            self.write("PORel", self.new_row("PORel", values), user="sandbox")

    def _replace_children(self, table_name: str, row: dict[str, Any], children: list[dict[str, Any]]) -> None:
        nav, child_name = CHILD_LISTS[table_name]
        child_table = self.tables[child_name]
        for old in self.children_of(table_name, row):
            child_table.delete(old)
        link_fields = {"VendBank": {"VendorNum": "VendorNum", "Company": "Company"},
                       "APInvDtl": {"VendorNum": "VendorNum", "InvoiceNum": "InvoiceNum"},
                       "PODetail": {"PONUM": "PONum", "VendorNum": "VendorNum"},
                       "APTran": {"HeadNum": "HeadNum", "VendorNum": "VendorNum", "GroupID": "GroupID"}}[child_name]
        link = {child_field: row[parent_field] for child_field, parent_field in link_fields.items()}
        line_key = {"VendBank": "BankID", "APInvDtl": "InvoiceLine", "PODetail": "POLine", "APTran": "APTranNo"}[child_name]
        for n, child in enumerate(children, start=1):
            values = {line_key: n if child_name != "VendBank" else f"BANK{n}", **child, **link}
            child_row = self.new_row(child_name, values)
            if child_name == "APInvDtl" and "ExtCost" not in child:
                child_row["ExtCost"] = child_row["DocExtCost"] = round(child_row["VendorQty"] * child_row["UnitCost"], 2)
            self.write(child_name, child_row, user="sandbox")

    def _next_num(self, table_name: str, name: str, floor: int = 0) -> int:
        rows = self.tables[table_name].rows.values()
        return max([floor] + [int(r[name]) for r in rows]) + 1

    def _vendor_by_id(self, vendor_id: str) -> dict[str, Any] | None:
        keys = self.tables["Vendor"].index["VendorID"].get(vendor_id.casefold())
        if not keys:
            return None
        return self.tables["Vendor"].rows[next(iter(keys))]

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
        total = 0.0
        for key in self.tables["CheckHed"].index["VendorNum"].get(vendor_num, ()):
            head = self.tables["CheckHed"].rows[key]
            if head["Voided"]:
                continue
            for tran in self.tables["APTran"].children(head["HeadNum"]):
                if tran["InvoiceNum"].casefold() == invoice_num.casefold():
                    total += tran["TranAmt"]
        return round(total, 2)

    # ---- vendor errors and limits ------------------------------------------------------------

    def error_response(self, status: int, message: str) -> Response:
        if status >= 500:
            body = epicor_error_body(status, message, None)
            if status == 500:
                body["ErrorMessage"] = (f"{message}. Sorry! Something went wrong. Please contact your system "
                                        f"administrator. Correlation ID: {body['CorrelationId']}")
            elif status == 503:
                body["ErrorMessage"] = f"{message}. Server not ready."
            return _json(body, status)
        return _json(epicor_error_body(status, message, BO_EXCEPTION if status == 400 else None), status)

    def rate_limited_response(self, retry_after: float) -> Response:
        seconds = max(1, int(round(retry_after + 0.499)))
        body = epicor_error_body(429, "Too many requests. Retry after the period in the Retry-After header.", None)
        return _json(body, 429, {"Retry-After": str(seconds)})

    def _fail(self, error: EpicorError) -> Response:
        return _json(epicor_error_body(error.status, error.message, error.error_type, error.table,
                                       error.field_name), error.status)

    # ---- routes -----------------------------------------------------------------------------

    def register_vendor_routes(self, app: Flask) -> None:
        app.json.sort_keys = False  # type: ignore[attr-defined]
        app.add_url_rule("/<instance>/TokenResource.svc/", "epicor_token", self._token, methods=["POST"],
                         strict_slashes=False)
        # One client uses this form; unconfirmed, served for compatibility.
        app.add_url_rule("/<instance>/api/v2/TokenResource.svc/token", "epicor_token_v2", self._token,
                         methods=["POST"])
        app.add_url_rule("/<instance>/api/v2/odata/<company>/<service>/<path:rest>", "epicor_v2", self._v2,
                         methods=["GET", "POST", "PATCH", "DELETE"])
        app.add_url_rule("/<instance>/api/v2/odata/<company>/<service>", "epicor_service", self._v2,
                         methods=["GET"], defaults={"rest": ""}, strict_slashes=False)
        app.add_url_rule("/_sandbox/epicor/update-master-holds", "epicor_update_master_holds",
                         self._set_update_master_hold, methods=["POST"])
        app.add_url_rule("/_sandbox/epicor/lost-answers", "epicor_lost_answers", self._set_lost_answers,
                         methods=["POST"])

    def _set_update_master_hold(self) -> Response:
        try:
            hold = body_as(UpdateMasterHold)
        except BodyError as error:
            return _json({"error": str(error)}, 400)
        with self.lock:
            self.update_master_hold = hold
        return _json(hold.model_dump())

    def _set_lost_answers(self) -> Response:
        try:
            lost = body_as(LostAnswers)
        except BodyError as error:
            return _json({"error": str(error)}, 400)
        with self.lock:
            self.lost_answers = lost
        return _json(lost.model_dump())

    def take_update_master_hold(self, invoice_nums: Iterable[str]) -> UpdateMasterHold | None:
        """The hold this UpdateMaster call falls under, if any (one use of it is spent)."""
        hold = self.update_master_hold
        if hold.count <= 0:
            return None
        if hold.invoice_num and hold.invoice_num.casefold() not in {n.casefold() for n in invoice_nums}:
            return None
        hold.count -= 1
        return hold

    def _take_lost_answer(self, path: str) -> LostAnswers | None:
        with self.lock:
            lost = self.lost_answers
            if lost.count <= 0 or lost.path_contains not in path:
                return None
            if lost.skip > 0:
                lost.skip -= 1
                return None
            lost.count -= 1
            return lost.model_copy()

    def _token(self, instance: str) -> Response:
        try:
            limited = self._rate_limit("token")
            if limited is not None:
                return limited
            if instance.casefold() != self.settings.instance.casefold():
                raise EpicorError(404, f"Instance '{instance}' was not found.", API_EXCEPTION)
            if self.settings.token_requires_api_key:
                self._check_api_key()
            username, password = self._token_credentials()
            if not username or self.users.get(username) != password:
                raise EpicorError(401, "The user name or password is incorrect.", None)
            token, _ = self.tokens.issue(username, self.token_ttl)
            with self.lock:
                self.stats.tokens_issued += 1
            if "xml" in (request.headers.get("Accept") or "").lower():
                xml = (f"<Token><AccessToken>{token}</AccessToken><ExpiresIn>{self.token_ttl}</ExpiresIn>"
                       f"<TokenType>Bearer</TokenType></Token>")
                return Response(xml, 200, mimetype="application/xml")
            return _json({"AccessToken": token, "ExpiresIn": self.token_ttl, "TokenType": "Bearer"})
        except EpicorError as error:
            return self._fail(error)

    def _token_credentials(self) -> tuple[str, str]:
        """Form body (grant_type=password), Basic auth, or username/password headers."""
        if request.form.get("username"):
            if request.form.get("grant_type", "password") != "password":
                raise EpicorError(400, "Unsupported grant_type.", API_EXCEPTION)
            return request.form.get("username", ""), request.form.get("password", "")
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            return basic_credentials(auth.split(" ", 1)[1])
        body = request.get_json(silent=True)
        if isinstance(body, dict) and body.get("username"):
            return str(body.get("username")), str(body.get("password", ""))
        return request.headers.get("username", ""), request.headers.get("password", "")

    def _rate_limit(self, key: str) -> Response | None:
        if not self.rate_window.limit:
            return None
        allowed, wait, _ = self.rate_window.hit(key)
        if allowed:
            return None
        return self.rate_limited_response(wait)

    def _check_api_key(self) -> None:
        key = request.headers.get("x-api-key") or request.args.get("api-key")
        if not key or key != self.api_key:
            raise EpicorError(self.settings.missing_api_key_status,
                              "Access denied: a valid API key is required for REST v2 (x-api-key).", None)

    def _identify(self) -> str:
        auth = request.headers.get("Authorization", "")
        scheme, _, credential = auth.partition(" ")
        if scheme.lower() == "bearer" and credential:
            issued = self.tokens.check(credential.strip())
            if issued is None:
                raise EpicorError(401, "Authorization has been denied for this request: the token is invalid "
                                       "or has expired.", None)
            return issued.subject
        if scheme.lower() == "basic":
            user, password = basic_credentials(credential)
            if user and self.users.get(user) == password:
                return user
            raise EpicorError(401, "Authorization has been denied for this request: invalid user name or "
                                   "password.", None)
        raise EpicorError(401, "Authorization has been denied for this request.", None)

    def _v2(self, instance: str, company: str, service: str, rest: str) -> Response:
        try:
            limited = self._rate_limit(request.headers.get("x-api-key") or request.args.get("api-key") or "anon")
            if limited is not None:
                return limited
            if instance.casefold() != self.settings.instance.casefold():
                raise EpicorError(404, f"Instance '{instance}' was not found.", API_EXCEPTION)
            self._check_api_key()
            g.epicor_user = self._identify()
            if company.casefold() != self.settings.company.casefold():
                raise EpicorError(404, f"Company '{company}' is not valid for this user.", API_EXCEPTION)
            service_name = next((s for s in SERVICES if s.casefold() == service.casefold()), None)
            if service_name is None:
                raise EpicorError(404, f"Service '{service}' was not found.", API_EXCEPTION)
            self.stats.bump(f"calls:{service_name}/{re.split(r'[(/]', rest, maxsplit=1)[0] if rest else ''}")
            response = self._dispatch(service_name, rest)
        except EpicorError as error:
            return self._fail(error)
        lost = self._take_lost_answer(request.path) if response.status_code < 300 else None
        if lost is None:
            return response
        time.sleep(lost.delay_seconds)
        return self.error_response(lost.status, "The gateway received no answer from the application server")

    def _dispatch(self, service: str, rest: str) -> Response:
        sets = SERVICES[service]
        name, keys, nav = parse_resource(rest)
        if not name:
            return _json({"@odata.context": f"{self._root(service)}/$metadata",
                          "value": [{"name": n, "kind": "EntitySet", "url": n} for n in sets]})
        entity_set = next((s for n, s in sets.items() if n.casefold() == name.casefold()), None)
        if entity_set is not None:
            return self._entity_request(service, entity_set, keys, nav)
        method = METHODS.get(service, {}).get(name.casefold())
        if method is None or keys is not None:
            raise EpicorError(404, f"Method or entity set '{name}' was not found in service {service}.", API_EXCEPTION)
        if request.method == "GET" and method.read:
            params: dict[str, Any] = {k: v for k, v in request.args.items() if not k.startswith("$") and k != "api-key"}
        elif request.method == "POST":
            params = self._json_body()
        else:
            raise EpicorError(405, f"The requested resource does not support http method '{request.method}'.",
                              API_EXCEPTION)
        for declared in method.inputs:
            _param(params, declared)
        with self.lock:
            result = method.handler(self, params)
        return _json(result)

    def _json_body(self) -> dict[str, Any]:
        if not request.mimetype or "json" not in request.mimetype:
            raise EpicorError(400, "Unable to deserialize entity. Input data is not in correct format: "
                                   "Content-Type must be application/json.", API_EXCEPTION)
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise EpicorError(400, "Unable to deserialize entity. Input data is not in correct format.", API_EXCEPTION)
        return body

    def _root(self, service: str) -> str:
        return f"{self.base_url}/{self.settings.instance}/api/v2/odata/{self.settings.company}/{service}"

    @property
    def user(self) -> str:
        return str(getattr(g, "epicor_user", "") or self.settings.username)

    # ---- OData entity sets --------------------------------------------------------------------

    def _entity_request(self, service: str, entity_set: EntitySet, keys: list[Any] | None,
                        nav: str | None) -> Response:
        table = self.tables[entity_set.table]
        method = request.method
        if method == "GET":
            with self.lock:
                if keys is None:
                    payload = self.query(service, entity_set, table, request.args)
                else:
                    row = self._lookup(entity_set, table, keys)
                    if nav is not None:
                        payload = self._nav_query(service, entity_set, row, nav)
                    else:
                        payload = self._single(service, entity_set, table, row, request.args)
            return _json(payload)
        if method not in entity_set.writable or nav is not None:
            raise EpicorError(405, f"The requested resource does not support http method '{method}'.", API_EXCEPTION)
        if method == "POST":
            if keys is not None:
                raise EpicorError(405, "POST is not allowed on a single entity.", API_EXCEPTION)
            body = self._json_body()
            with self.lock:
                created = ODATA_WRITES[(entity_set.table, "POST")](self, body, None)
                payload = {"@odata.context": f"{self._root(service)}/$metadata#{entity_set.name}/$entity",
                           **created}
            return _json(payload, 201)
        with self.lock:
            row = self._lookup(entity_set, table, keys or [])
            body = self._json_body() if method == "PATCH" else {}
            ODATA_WRITES[(entity_set.table, method)](self, body, row)
        return Response(status=204)

    def _lookup(self, entity_set: EntitySet, table: Table, keys: list[Any]) -> dict[str, Any]:
        expected = ["Company", *table.keys]
        named = isinstance(keys, dict)
        values = [keys.get(k) for k in expected] if named else list(keys)  # type: ignore[union-attr]
        if len(values) != len(expected) or any(v is None for v in values):
            raise odata_error(f"The number of keys specified in the URI does not match the number of key "
                              f"properties ({', '.join(expected)}) for '{table.row_type}'.")
        if str(values[0]).casefold() != self.settings.company.casefold():
            raise EpicorError(404, "Record not found.", NOT_FOUND_EXCEPTION)
        converted = []
        for name, value in zip(table.keys, values[1:]):
            kind = table.types[name]
            if kind == "int" and not isinstance(value, int):
                raise odata_error(f"Bad key value for '{name}': expected Edm.Int32.")
            if kind == "str" and not isinstance(value, str):
                raise odata_error(f"Bad key value for '{name}': expected a quoted Edm.String.")
            converted.append(value)
        row = table.get(*converted)
        if row is None:
            raise EpicorError(404, "Record not found.", NOT_FOUND_EXCEPTION)
        return row

    def _scope(self, entity_set: EntitySet, table: Table) -> Scope:
        navigation = {nav: (lambda row, t=table.name, n=nav: self.nav_children(t, n, row)) for nav in entity_set.navigation}
        child_tables = {nav: self.tables[child] for nav, child in entity_set.navigation.items()}
        return Scope(table, navigation, child_tables)

    def query(self, service: str, entity_set: EntitySet, table: Table, args: Any) -> dict[str, Any]:
        """One OData page: filter (index-assisted), order, count, skip/top (capped), select, expand."""
        scope = self._scope(entity_set, table)
        top = self._int_option(args, "$top", self.settings.max_top)
        skip = self._int_option(args, "$skip", 0)
        top = min(top, self.settings.max_top)
        select = self._select(table, args.get("$select"))
        expand = self._expand(entity_set, table, args.get("$expand"))
        order = self._orderby(table, args.get("$orderby"))
        text = args.get("$filter")
        versions = (table.version, *(self.tables[c].version for c in entity_set.navigation.values()))
        cache_key = (table.name, versions, text or "", args.get("$orderby") or "")
        rows = self._query_cache.get(cache_key)
        if rows is None:
            if text:
                ast = parse_filter(text)
                test = FilterCompiler(scope).predicate(ast)
                candidates, ordered = self._narrow(table, ast)
                rows = [row for row in candidates if test(row, {})]
                if not order and not ordered:
                    rows.sort(key=table.key_of)
            else:
                rows = list(table.ordered())
            if order:
                self._sort(table, rows, order)
            # Paging with $skip re-asks the same question; answer it from the last result.
            self._query_cache[cache_key] = rows
            while len(self._query_cache) > QUERY_CACHE_SIZE:
                self._query_cache.pop(next(iter(self._query_cache)))
        payload: dict[str, Any] = {"@odata.context": f"{self._root(service)}/$metadata#{entity_set.name}"}
        if str(args.get("$count", "")).lower() == "true" or args.get("$inlinecount") == "allpages":
            payload["@odata.count"] = len(rows)
        page = rows[skip: skip + top]
        payload["value"] = [self._shape(table.name, row, select, expand) for row in page]
        return payload

    def _narrow(self, table: Table, ast: tuple) -> tuple[Iterable[dict[str, Any]], bool]:
        """A superset of the matches, found by an index or a bisect when a conjunct allows;
        the full predicate still runs on every candidate. Returns (rows, already in key order)."""
        for part in odata.conjuncts(ast):
            if part[0] != "cmp" or part[2][0] != "field" or part[3][0] != "lit" or len(part[2][1]) != 1:
                continue
            op, name, literal = part[1], part[2][1][0], part[3][1]
            if op == "eq" and name in table.index and literal is not None:
                keys = table.index[name].get(_norm(literal), set())
                return [table.rows[k] for k in sorted(keys)], True
            if op == "eq" and name in table.keys and len(table.keys) == 1 and literal is not None:
                row = table.get(literal)
                return ([row] if row is not None else []), True
        for part in odata.conjuncts(ast):
            if part[0] != "cmp" or part[2][0] != "field" or part[3][0] != "lit" or len(part[2][1]) != 1:
                continue
            op, name, literal = part[1], part[2][1][0], part[3][1]
            if name == "SysRevID" and op in ("gt", "ge") and isinstance(literal, int):
                rows, revs = table.by_rev()
                cut = bisect_right(revs, literal) if op == "gt" else bisect_left(revs, literal)
                return rows[cut:], False
            if name == "ChangeDate" and op in ("gt", "ge") and isinstance(literal, datetime) and "ChangeDate" in table.fields:
                sorted_rows = table.sorted_on("ChangeDate")
                if sorted_rows is not None:
                    rows, values = sorted_rows
                    cut = bisect_left(values, fmt_datetime(literal)[:19])
                    return rows[cut:], False
        return table.ordered(), True

    @staticmethod
    def _int_option(args: Any, name: str, default: int) -> int:
        raw = args.get(name)
        if raw in (None, ""):
            return default
        try:
            value = int(raw)
        except ValueError:
            raise odata_error(f"Invalid value '{raw}' for {name} query option found.") from None
        if value < 0:
            raise odata_error(f"Invalid value '{raw}' for {name} query option found.")
        return value

    @staticmethod
    def _select(table: Table, text: str | None) -> list[str] | None:
        if not text:
            return None
        names = odata.split_names(text)
        for name in names:
            if name not in table.fields and name != "*":
                raise odata_error(f"Could not find a property named '{name}' on type '{table.row_type}'.")
        return None if "*" in names else names

    @staticmethod
    def _expand(entity_set: EntitySet, table: Table, text: str | None) -> list[str]:
        if not text:
            return []
        names = odata.split_names(text)
        for name in names:
            if name not in entity_set.navigation:
                raise odata_error(f"Could not find a property named '{name}' on type '{table.row_type}'.")
        return names

    @staticmethod
    def _orderby(table: Table, text: str | None) -> list[tuple[str, bool]]:
        if not text:
            return []
        try:
            order = odata.parse_orderby(text)
        except ValueError:
            raise odata_error(f"Syntax error in $orderby '{text}'.") from None
        for name, _ in order:
            if name not in table.fields:
                raise odata_error(f"Could not find a property named '{name}' on type '{table.row_type}'.")
        return order

    @staticmethod
    def _sort(table: Table, rows: list[dict[str, Any]], order: list[tuple[str, bool]]) -> None:
        """Stable: NULLs first, strings by the case-insensitive collation, keys break ties."""
        def part(row: dict[str, Any], name: str) -> tuple[bool, Any]:
            value = row.get(name)
            return (False, 0) if value is None else (True, _norm(value))

        if not any(descending for _, descending in order):
            names = [name for name, _ in order]
            rows.sort(key=lambda r: (*(part(r, n) for n in names), table.key_of(r)))
            return
        rows.sort(key=table.key_of)
        for name, descending in reversed(order):
            rows.sort(key=lambda r, n=name: part(r, n), reverse=descending)

    def _shape(self, table_name: str, row: dict[str, Any], select: list[str] | None,
               expand: list[str]) -> dict[str, Any]:
        out = {k: row[k] for k in select} if select else dict(row)
        for nav in expand:
            out[nav] = [dict(child) for child in self.nav_children(table_name, nav, row)]
        return out

    def _single(self, service: str, entity_set: EntitySet, table: Table, row: dict[str, Any], args: Any) -> dict[str, Any]:
        select = self._select(table, args.get("$select"))
        expand = self._expand(entity_set, table, args.get("$expand"))
        return {"@odata.context": f"{self._root(service)}/$metadata#{entity_set.name}/$entity",
                **self._shape(table.name, row, select, expand)}

    def _nav_query(self, service: str, entity_set: EntitySet, row: dict[str, Any], nav: str) -> dict[str, Any]:
        if nav not in entity_set.navigation:
            raise odata_error(f"Could not find a property named '{nav}' on type 'Erp.Tablesets.{entity_set.table}Row'.")
        child_table = self.tables[entity_set.navigation[nav]]
        children = self.nav_children(entity_set.table, nav, row)
        args = request.args
        text = args.get("$filter")
        if text:
            test = FilterCompiler(Scope(child_table, {}, {})).predicate(parse_filter(text))
            children = [c for c in children if test(c, {})]
        order = self._orderby(child_table, args.get("$orderby"))
        if order:
            self._sort(child_table, children, order)
        top = min(self._int_option(args, "$top", self.settings.max_top), self.settings.max_top)
        skip = self._int_option(args, "$skip", 0)
        select = self._select(child_table, args.get("$select"))
        return {"@odata.context": f"{self._root(service)}/$metadata#{nav}",
                "value": [{k: c[k] for k in select} if select else dict(c) for c in children[skip: skip + top]]}

    # ---- shared business rules -----------------------------------------------------------------

    def duplicate(self, message: str, table: str, field_name: str) -> EpicorError:
        """A key that already exists, refused with the configured status (409 or a 400 BLException)."""
        status = self.settings.duplicate_status
        return EpicorError(status, message, DUPLICATE_EXCEPTION if status == 409 else BL_EXCEPTION, table, field_name)

    def group_for_write(self, group_id: str, table: str = "APInvHed") -> dict[str, Any]:
        """An invoice group that exists and is not held by another user."""
        group = self.tables["APInvGrp"].get(group_id or "")
        if group is None:
            raise EpicorError(400, f"AP invoice group '{group_id}' was not found. Create the group first.",
                              BO_EXCEPTION, table, "GroupID")
        holder = group["ActiveUserID"]
        if holder and holder.casefold() != self.user.casefold():
            raise EpicorError(400, f"Group {group['GroupID']} is in use by {holder}.", BO_EXCEPTION, table, "GroupID")
        return group

    def vendor_by_id(self, vendor_id: str) -> dict[str, Any]:
        vendor = self._vendor_by_id(vendor_id or "")
        if vendor is None:
            raise EpicorError(400, f"Supplier '{vendor_id}' is not valid.", BO_EXCEPTION, "APInvHed", "VendorNumVendorID")
        if vendor["Inactive"]:
            raise EpicorError(400, f"Supplier '{vendor_id}' is inactive.", BO_EXCEPTION, "APInvHed", "VendorNumVendorID")
        return vendor


def parse_resource(rest: str) -> tuple[str, Any, str | None]:
    """`APInvoices('EPIC06',233,'INV-88')/APInvDtls` -> ('APInvoices', ['EPIC06', 233, 'INV-88'], 'APInvDtls')."""
    if not rest:
        return "", None, None
    match = re.match(r"[A-Za-z_$][A-Za-z0-9_.]*", rest)
    if not match:
        raise odata_error(f"Resource '{rest}' is not valid.")
    name = match.group(0)
    pos = match.end()
    keys: Any = None
    if pos < len(rest) and rest[pos] == "(":
        keys, pos = _parse_keys(rest, pos + 1)
    nav = None
    if pos < len(rest):
        if rest[pos] != "/":
            raise odata_error(f"Resource '{rest}' is not valid.")
        nav = rest[pos + 1:].strip("/") or None
    return name, keys, nav


def _parse_keys(text: str, pos: int) -> tuple[Any, int]:
    positional: list[Any] = []
    named: dict[str, Any] = {}
    while True:
        label = None
        match = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", text[pos:])
        if match:
            label = match.group(1)
            pos += match.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
        if pos < len(text) and text[pos] == "'":
            end = pos + 1
            value_chars = []
            while end < len(text):
                if text[end] == "'":
                    if end + 1 < len(text) and text[end + 1] == "'":
                        value_chars.append("'")
                        end += 2
                        continue
                    break
                value_chars.append(text[end])
                end += 1
            if end >= len(text):
                raise odata_error("Unterminated string in key.")
            value: Any = "".join(value_chars)
            pos = end + 1
        else:
            match = re.match(r"-?\d+", text[pos:])
            if not match:
                raise odata_error("Bad key segment.")
            value = int(match.group(0))
            pos += match.end()
        if label:
            named[label] = value
        else:
            positional.append(value)
        while pos < len(text) and text[pos] == " ":
            pos += 1
        if pos >= len(text):
            raise odata_error("Unterminated key segment.")
        if text[pos] == ",":
            pos += 1
            continue
        if text[pos] == ")":
            return (named if named else positional), pos + 1
        raise odata_error("Bad key segment.")


# ---- business-object methods -------------------------------------------------------------------

def _param(params: dict[str, Any], name: str) -> Any:
    if name not in params:
        raise EpicorError(400, f"Parameter {name} is not found in the input object", API_EXCEPTION)
    return params[name]


def _ds(params: dict[str, Any], tables: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    raw = _param(params, "ds")
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
        result = _as_date(value)
    except ValueError:
        result = None
    if result is None:
        raise EpicorError(400, f"{name} is not a valid date.", BO_EXCEPTION, table, name)
    return result


def _due(invoice_date: date, terms: str) -> str:
    return fmt_date(invoice_date + timedelta(days=TERMS_DAYS.get(terms, 30)))


APINV_TABLES = TABLESET_TABLES["Erp.BO.APInvoiceSvc"]
PAY_TABLES = TABLESET_TABLES["Erp.BO.PaymentEntrySvc"]


def m_get_new_ap_inv_hed_invoice(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    ds = _ds(params, APINV_TABLES)
    group_id = str(_param(params, "cGroupID") or "")
    group = sb.group_for_write(group_id)
    if not group["ActiveUserID"]:
        group["ActiveUserID"] = sb.user
        sb.write("APInvGrp", group, user=sb.user)
    today = sb.clock.now_datetime().date()
    apply = _as_date(group["ApplyDate"]) or today
    row = sb.new_row("APInvHed", {
        "GroupID": group["GroupID"], "InvoiceDate": today, "ApplyDate": apply, "FiscalYear": apply.year,
        "FiscalPeriod": apply.month, "EntryPerson": sb.user, "CurrencyCode": "USD"})
    row.update({"RowMod": "A", "SysRowID": str(uuid.uuid4()), "ChangeDate": None, "ChangedBy": ""})
    ds["APInvHed"].append(row)
    return {"parameters": {"ds": ds}}


def m_change_vendor_id(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    ds = _ds(params, APINV_TABLES)
    vendor = sb.vendor_by_id(str(_param(params, "ProposedVendorID") or ""))
    row = _current(ds, "APInvHed")
    row.update({"VendorNum": vendor["VendorNum"], "VendorNumVendorID": vendor["VendorID"],
                "VendorNumName": vendor["Name"], "TermsCode": vendor["TermsCode"],
                "CurrencyCode": vendor["CurrencyCode"] or "USD"})
    if row.get("InvoiceDate"):
        row["DueDate"] = _due(_as_date(row["InvoiceDate"]), vendor["TermsCode"])  # type: ignore[arg-type]
    return {"parameters": {"ds": ds, "confirmMsg": ""}}


def m_change_invoice_date_ex(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    ds = _ds(params, APINV_TABLES)
    day = _date_param(_param(params, "ProposedInvoiceDate"), "InvoiceDate", "APInvHed")
    row = _current(ds, "APInvHed")
    row["InvoiceDate"] = fmt_date(day)
    row["DueDate"] = _due(day, row.get("TermsCode") or "N30")
    return {"parameters": {"ds": ds, "cMessageText": ""}}


def m_change_invoice_vendor_amt(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    ds = _ds(params, APINV_TABLES)
    amount = _money(_param(params, "ProposedInvoiceVendorAmt"), "InvoiceVendorAmt", "APInvHed")
    row = _current(ds, "APInvHed")
    row["InvoiceVendorAmt"] = row["DocInvoiceVendorAmt"] = amount
    return {"parameters": {"ds": ds}}


def m_change_ref_po_num(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    ds = _ds(params, APINV_TABLES)
    po_num = int(_param(params, "ProposedRefPONum") or 0)
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
    return {"parameters": {"ds": ds, "confirmMsg": ""}}


def _saved_header(sb: EpicorSandbox, vendor_num: Any, invoice_num: Any) -> dict[str, Any]:
    header = sb.tables["APInvHed"].get(int(vendor_num or 0), str(invoice_num or ""))
    if header is None:
        raise EpicorError(400, f"AP invoice {invoice_num} for supplier {vendor_num} must be saved before "
                               "lines are added.", BO_EXCEPTION, "APInvDtl", "InvoiceNum")
    return header


def _new_line(sb: EpicorSandbox, params: dict[str, Any], line_type: str) -> dict[str, Any]:
    ds = _ds(params, APINV_TABLES)
    header = _saved_header(sb, _param(params, "iVendorNum"), _param(params, "cInvoiceNum"))
    if header["Posted"]:
        raise EpicorError(400, "The invoice has been posted and cannot be changed.", BO_EXCEPTION, "APInvDtl")
    sb.group_for_write(header["GroupID"], "APInvDtl")
    saved = [line["InvoiceLine"] for line in sb.tables["APInvDtl"].children(header["VendorNum"], header["InvoiceNum"])]
    pending = [int(r.get("InvoiceLine") or 0) for r in ds["APInvDtl"]
               if int(r.get("VendorNum") or 0) == header["VendorNum"]
               and str(r.get("InvoiceNum", "")).casefold() == header["InvoiceNum"].casefold()]
    row = sb.new_row("APInvDtl", {
        "VendorNum": header["VendorNum"], "InvoiceNum": header["InvoiceNum"],
        "InvoiceLine": max([0, *saved, *pending]) + 1, "LineType": line_type, "VendorQty": 1, "OurQty": 1})
    row.update({"RowMod": "A", "SysRowID": str(uuid.uuid4())})
    ds["APInvDtl"].append(row)
    return {"parameters": {"ds": ds}}


def m_get_new_ap_inv_dtl_misc(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    return _new_line(sb, params, "MSC")


def m_get_new_ap_inv_dtl_unreceived(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    return _new_line(sb, params, "UNR")


def _line_change(field_name: str, parameter: str) -> Callable[[EpicorSandbox, dict[str, Any]], dict[str, Any]]:
    def handler(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
        ds = _ds(params, APINV_TABLES)
        value = _param(params, parameter)
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
        return {"parameters": {"ds": ds}}

    return handler


def m_change_po_num(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    ds = _ds(params, APINV_TABLES)
    po_num = int(_param(params, "ProposedPONum") or 0)
    line = _current(ds, "APInvDtl")
    po = sb.tables["POHeader"].get(po_num)
    if po is None or po["VendorNum"] != int(line.get("VendorNum") or 0):
        raise EpicorError(400, f"Purchase order {po_num} is not valid for this supplier.", BO_EXCEPTION,
                          "APInvDtl", "PONum")
    line.update({"PONum": po_num, "POLine": 0, "LineType": "PUR"})
    return {"parameters": {"ds": ds}}


def m_change_po_line(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    ds = _ds(params, APINV_TABLES)
    po_line = int(_param(params, "ProposedPOLine") or 0)
    line = _current(ds, "APInvDtl")
    detail = sb.tables["PODetail"].get(int(line.get("PONum") or 0), po_line)
    if detail is None:
        raise EpicorError(400, f"PO line {po_line} is not valid.", BO_EXCEPTION, "APInvDtl", "POLine")
    qty = float(line.get("VendorQty") or detail["OrderQty"])
    line.update({"POLine": po_line, "PartNum": detail["PartNum"], "Description": detail["LineDesc"],
                 "UnitCost": detail["UnitCost"], "DocUnitCost": detail["UnitCost"], "VendorQty": qty, "OurQty": qty,
                 "ExtCost": round(qty * detail["UnitCost"], 2), "DocExtCost": round(qty * detail["UnitCost"], 2)})
    return {"parameters": {"ds": ds}}


def _valid_gl(sb: EpicorSandbox, account: str) -> str:
    normalized = account.replace("-", "|").strip()
    row = sb.tables["GLAccount"].get("MAIN", normalized)
    if row is None or not row["Active"]:
        raise EpicorError(400, f"GL account {account} is not valid or is inactive.", BO_EXCEPTION, "APInvDtl", "GLAccount")
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
                raise EpicorError(400, "A valid supplier is required.", BO_EXCEPTION, "APInvHed", "VendorNum")
            if not invoice_num:
                raise EpicorError(400, "Invoice number is required.", BO_EXCEPTION, "APInvHed", "InvoiceNum")
            sb.group_for_write(str(given.get("GroupID") or ""))
            vendor = sb.tables["Vendor"].get(vendor_num)
            if vendor is None:
                raise EpicorError(400, f"Supplier {vendor_num} is not valid.", BO_EXCEPTION, "APInvHed", "VendorNum")
            if not row["DebitMemo"] and not row["InvoiceVendorAmt"]:
                raise EpicorError(400, "Invoice amount is required.", BO_EXCEPTION, "APInvHed", "InvoiceVendorAmt")
            if invoices.get(vendor_num, invoice_num) is not None or any(
                    w["VendorNum"] == vendor_num and w["InvoiceNum"].casefold() == invoice_num.casefold()
                    for w in header_writes):
                raise sb.duplicate(f"AP invoice {invoice_num} already exists for supplier {vendor['VendorID']}.",
                                   "APInvHed", "InvoiceNum")
            row["InvoiceNum"] = invoice_num
            row["EntryPerson"] = row["EntryPerson"] or user
            if not row["InvoiceDate"]:
                raise EpicorError(400, "Invoice date is required.", BO_EXCEPTION, "APInvHed", "InvoiceDate")
            header_writes.append(row)
        else:
            stored = invoices.get(vendor_num, invoice_num)
            if stored is None:
                raise EpicorError(404, "Record not found.", NOT_FOUND_EXCEPTION, "APInvHed")
            if stored["Posted"]:
                raise EpicorError(400, "The invoice has been posted and cannot be changed.", BO_EXCEPTION, "APInvHed")
            sb.group_for_write(stored["GroupID"])
            if given.get("SysRevID") not in (None, 0) and int(given["SysRevID"]) != stored["SysRevID"]:
                raise EpicorError(400, "Row has been modified by another user and couldn't be updated.",
                                  BO_EXCEPTION, "APInvHed")
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
            raise EpicorError(400, f"AP invoice {invoice_num} for supplier {vendor_num} must be saved before "
                                   "lines are added.", BO_EXCEPTION, "APInvDtl", "InvoiceNum")
        if header.get("Posted"):
            raise EpicorError(400, "The invoice has been posted and cannot be changed.", BO_EXCEPTION, "APInvDtl")
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
                raise EpicorError(404, "Record not found.", NOT_FOUND_EXCEPTION, "APInvDtl")
            if given.get("SysRevID") not in (None, 0) and int(given["SysRevID"]) != stored["SysRevID"]:
                raise EpicorError(400, "Row has been modified by another user and couldn't be updated.",
                                  BO_EXCEPTION, "APInvDtl")
            row = {**stored, **sb.coerce(lines, {k: v for k, v in given.items() if k not in lines.keys})}
        if mod != "D":
            if not str(row["Description"]).strip():
                raise EpicorError(400, "Line description is required.", BO_EXCEPTION, "APInvDtl", "Description")
            if row["LineType"] == "MSC" and not row["GLAccount"]:
                raise EpicorError(400, "A GL account is required on a miscellaneous line.", BO_EXCEPTION,
                                  "APInvDtl", "GLAccount")
            if row["GLAccount"]:
                row["GLAccount"] = _valid_gl(sb, row["GLAccount"])
        line_writes.append((mod, row))
        touched[(vendor_num, invoice_num.casefold())] = (vendor_num, header["InvoiceNum"])

    for row in header_writes:
        if row.get("RowMod") == "D":
            for line in lines.children(row["VendorNum"], row["InvoiceNum"]):
                lines.delete(line)
            invoices.delete(row)
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

    out: dict[str, list[dict[str, Any]]] = {name: [] for name in APINV_TABLES}
    for vendor_num, invoice_num in touched.values():
        header = invoices.get(vendor_num, invoice_num)
        if header is not None:
            out["APInvHed"].append(dict(header))
            out["APInvDtl"].extend(dict(line) for line in lines.children(vendor_num, invoice_num))
    out["ExtensionTables"] = []
    return out


def m_update(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    ds = save_invoice_tableset(sb, _ds(params, APINV_TABLES))
    return {"parameters": {"ds": ds}}


def m_update_master(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    """Update plus the group total; a check that stops for a person answers 200 having saved
    nothing (`lUpdateRan` false, `requiresUserInput` true, the question in `opMessage`)."""
    ds_in = _ds(params, APINV_TABLES)
    group_id = str(params["cGroupID"] or "")
    hold = sb.take_update_master_hold(str(r.get("InvoiceNum") or "") for r in ds_in["APInvHed"] + ds_in["APInvDtl"])
    ds = ds_in if hold is not None else save_invoice_tableset(sb, ds_in)
    total = sum(r["InvoiceAmt"] for r in sb.tables["APInvHed"].ordered() if r["GroupID"].casefold() == group_id.casefold())
    return {"parameters": {
        "ds": ds, "grpTotalInvAmt": round(total, 2),
        "requiresUserInput": hold.requires_user_input if hold else False,
        "opMessage": hold.op_message if hold else "", "opMsgChkBankRef": "", "opChkRevMsg": "",
        "lEnableGenLegalNum": False, "lUpdateRan": hold.update_ran if hold else True, "opDUAMsg": ""}}


def m_get_by_id(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    vendor_num = _param(params, "vendorNum")
    invoice_num = _param(params, "invoiceNum")
    try:
        header = sb.tables["APInvHed"].get(int(vendor_num), str(invoice_num))
    except ValueError:
        header = None
    if header is None:
        raise EpicorError(404, "Record not found.", NOT_FOUND_EXCEPTION, "APInvHed")
    ds = {name: [] for name in APINV_TABLES}
    ds["APInvHed"] = [dict(header)]
    ds["APInvDtl"] = [dict(line) for line in sb.tables["APInvDtl"].children(header["VendorNum"], header["InvoiceNum"])]
    return {"returnObj": {**ds, "ExtensionTables": []}}


def m_unlock_group(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    group = sb.tables["APInvGrp"].get(str(_param(params, "InGroupID") or ""))
    if group is not None and group["ActiveUserID"]:
        group["ActiveUserID"] = ""
        sb.write("APInvGrp", group, user=sb.user)
    return {}


def m_get_by_vend_id(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    vendor = sb._vendor_by_id(str(_param(params, "vendorID") or ""))
    if vendor is None:
        raise EpicorError(404, "Record not found.", NOT_FOUND_EXCEPTION, "Vendor")
    return {"returnObj": {"Vendor": [dict(vendor)], "VendCnt": [], "VendBank": [dict(b) for b in sb.children_of("Vendor", vendor)],
                          "VendRemitTo": [],
                          "ExtensionTables": []}}


# ---- payment entry --------------------------------------------------------------------------

def m_get_new_check_hed(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    ds = _ds(params, PAY_TABLES)
    sb.head_seq += 1
    today = sb.clock.now_datetime().date()
    signed_in = [g for g in sb.tables["APChkGrp"].ordered() if g["ActiveUserID"].casefold() == sb.user.casefold()]
    row = sb.new_row("CheckHed", {
        "HeadNum": sb.head_seq, "GroupID": signed_in[0]["GroupID"] if len(signed_in) == 1 else "",
        "CheckDate": today, "FiscalYear": today.year, "FiscalPeriod": today.month, "EntryPerson": sb.user})
    row.update({"RowMod": "A", "SysRowID": str(uuid.uuid4())})
    ds["CheckHed"].append(row)
    return {"parameters": {"ds": ds}}


def m_on_change_vendor(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    ds = _ds(params, PAY_TABLES)
    vendor_id = str(_param(params, "pcVendorID") or "")
    vendor = sb._vendor_by_id(vendor_id)
    if vendor is None or vendor["Inactive"]:
        raise EpicorError(400, f"Supplier '{vendor_id}' is not valid or is inactive.", BO_EXCEPTION,
                          "CheckHed", "VendorNumVendorID")
    head = _current(ds, "CheckHed")
    head.update({"VendorNum": vendor["VendorNum"], "VendorNumVendorID": vendor["VendorID"], "Name": vendor["Name"],
                 "CurrencyCode": vendor["CurrencyCode"] or "USD"})
    return {"parameters": {"ds": ds}}


def m_on_change_check_date(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    ds = _ds(params, PAY_TABLES)
    day = _date_param(_param(params, "pdtCheckDate"), "CheckDate", "CheckHed")
    head = _current(ds, "CheckHed")
    head.update({"CheckDate": fmt_date(day), "FiscalYear": day.year, "FiscalPeriod": day.month})
    for tran in ds["APTran"]:
        if tran.get("HeadNum") == head.get("HeadNum"):
            tran["TranDate"] = fmt_date(day)
    return {"parameters": {"ds": ds}}


def m_get_new_ap_tran(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    ds = _ds(params, PAY_TABLES)
    head_num = int(_param(params, "headNum") or 0)
    _param(params, "apTranNo")
    head = next((h for h in ds["CheckHed"] if int(h.get("HeadNum") or 0) == head_num), None)
    if head is None:
        raise EpicorError(400, f"Payment {head_num} is not in the tableset.", BO_EXCEPTION, "APTran", "HeadNum")
    numbers = [int(t.get("APTranNo") or 0) for t in ds["APTran"] if int(t.get("HeadNum") or 0) == head_num]
    row = sb.new_row("APTran", {
        "HeadNum": head_num, "APTranNo": max([0, *numbers]) + 1, "InvoiceNum": str(params.get("invoiceNum") or ""),
        "VendorNum": head.get("VendorNum") or 0, "TranDate": head.get("CheckDate"), "GroupID": head.get("GroupID", "")})
    row.update({"RowMod": "A", "SysRowID": str(uuid.uuid4())})
    ds["APTran"].append(row)
    return {"parameters": {"ds": ds}}


def _payable_invoice(sb: EpicorSandbox, vendor_num: int, invoice_num: str) -> dict[str, Any]:
    invoice = sb.tables["APInvHed"].get(vendor_num, invoice_num)
    if invoice is None:
        raise EpicorError(400, f"Invoice {invoice_num} is not valid for this supplier.", BO_EXCEPTION,
                          "APTran", "InvoiceNum")
    if sb.settings.payments_require_posted and not invoice["Posted"]:
        raise EpicorError(400, f"Invoice {invoice_num} has not been posted.", BO_EXCEPTION, "APTran", "InvoiceNum")
    if not invoice["OpenPayable"] or invoice["InvoiceBal"] <= 0:
        raise EpicorError(400, f"Invoice {invoice_num} is fully paid.", BO_EXCEPTION, "APTran", "InvoiceNum")
    return invoice


def m_on_change_invoice_num(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    ds = _ds(params, PAY_TABLES)
    invoice_num = str(_param(params, "pcInvoiceNum") or "")
    tran = _current(ds, "APTran")
    head = next((h for h in ds["CheckHed"] if h.get("HeadNum") == tran.get("HeadNum")), None)
    vendor_num = int((head or {}).get("VendorNum") or tran.get("VendorNum") or 0)
    invoice = _payable_invoice(sb, vendor_num, invoice_num)
    tran.update({"InvoiceNum": invoice["InvoiceNum"], "VendorNum": vendor_num, "TranAmt": invoice["InvoiceBal"],
                 "DocTranAmt": invoice["InvoiceBal"]})
    _recalc_check(ds)
    return {"parameters": {"ds": ds, "pcQuestion": ""}}


def m_on_change_doc_tran_amt(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    ds = _ds(params, PAY_TABLES)
    amount = _money(_param(params, "pdDocTranAmt"), "DocTranAmt", "APTran")
    tran = _current(ds, "APTran")
    tran["DocTranAmt"] = tran["TranAmt"] = amount
    _recalc_check(ds)
    return {"parameters": {"ds": ds}}


def _recalc_check(ds: dict[str, list[dict[str, Any]]]) -> None:
    for head in ds["CheckHed"]:
        total = sum(float(t.get("DocTranAmt") or 0) for t in ds["APTran"] if t.get("HeadNum") == head.get("HeadNum"))
        head["CheckAmt"] = head["DocCheckAmt"] = round(total, 2)


def m_payment_update(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    ds = _ds(params, PAY_TABLES)
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
                raise EpicorError(404, "Record not found.", NOT_FOUND_EXCEPTION, "CheckHed")
            if stored["Posted"]:
                raise EpicorError(400, "The payment has been posted and cannot be changed.", BO_EXCEPTION, "CheckHed")
            head = {**stored, **sb.coerce(heads, {k: v for k, v in given.items() if k in (
                "CheckDate", "XRefCheckNum", "BankAcctID", "CheckNum")})}
        group = sb.tables["APChkGrp"].get(head["GroupID"] or "")
        if group is None:
            raise EpicorError(400, f"AP payment group '{head['GroupID']}' was not found.", BO_EXCEPTION,
                              "CheckHed", "GroupID")
        if group["ActiveUserID"] and group["ActiveUserID"].casefold() != sb.user.casefold():
            raise EpicorError(400, f"Group {group['GroupID']} is in use by {group['ActiveUserID']}.", BO_EXCEPTION,
                              "CheckHed", "GroupID")
        if not head["VendorNum"]:
            raise EpicorError(400, "A valid supplier is required.", BO_EXCEPTION, "CheckHed", "VendorNum")
        head["BankAcctID"] = head["BankAcctID"] or group["BankAcctID"]
        head_writes.append(head)
        touched.append(head["HeadNum"])
    for given in ds["APTran"]:
        if given.get("RowMod") != "A":
            continue
        tran = sb.new_row("APTran", given)
        head = next((h for h in head_writes if h["HeadNum"] == tran["HeadNum"]), None) or heads.get(tran["HeadNum"])
        if head is None:
            raise EpicorError(400, f"Payment {tran['HeadNum']} was not found.", BO_EXCEPTION, "APTran", "HeadNum")
        if trans.get(tran["HeadNum"], tran["APTranNo"]) is not None:
            raise sb.duplicate(f"Payment line {tran['APTranNo']} already exists.", "APTran", "APTranNo")
        invoice = _payable_invoice(sb, head["VendorNum"], tran["InvoiceNum"])
        key = (invoice["VendorNum"], invoice["InvoiceNum"].casefold())
        if tran["DocTranAmt"] <= 0:
            raise EpicorError(400, "The payment amount must be greater than zero.", BO_EXCEPTION, "APTran", "DocTranAmt")
        if round(applied.get(key, 0.0) + tran["DocTranAmt"], 2) > invoice["InvoiceBal"]:
            raise EpicorError(400, f"The payment amount exceeds the balance of invoice {invoice['InvoiceNum']} "
                                   f"({invoice['InvoiceBal']:.2f}).", BO_EXCEPTION, "APTran", "DocTranAmt")
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
        sb.head_seq = max(sb.head_seq, head["HeadNum"])
    for tran in tran_writes:
        sb.write("APTran", tran, user=sb.user)
    for vendor_num, invoice_num in applied:
        invoice = sb.tables["APInvHed"].get(vendor_num, invoice_num)  # keys compare without case
        if invoice is not None:
            sb._fill_invoice(invoice, recompute=False, new=False)
            sb.write("APInvHed", invoice, user=sb.user)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in PAY_TABLES}
    for head_num in touched:
        head = heads.get(head_num)
        if head is not None:
            out["CheckHed"].append(dict(head))
            out["APTran"].extend(dict(t) for t in trans.children(head_num))
    out["ExtensionTables"] = []
    return {"parameters": {"ds": out}}


def m_payment_get_by_id(sb: EpicorSandbox, params: dict[str, Any]) -> dict[str, Any]:
    try:
        head = sb.tables["CheckHed"].get(int(_param(params, "headNum")))
    except ValueError:
        head = None
    if head is None:
        raise EpicorError(404, "Record not found.", NOT_FOUND_EXCEPTION, "CheckHed")
    ds = {name: [] for name in PAY_TABLES}
    ds["CheckHed"] = [dict(head)]
    ds["APTran"] = [dict(t) for t in sb.tables["APTran"].children(head["HeadNum"])]
    return {"returnObj": {**ds, "ExtensionTables": []}}


# ---- OData writes ------------------------------------------------------------------------------

def w_create_vendor(sb: EpicorSandbox, body: dict[str, Any], _: dict[str, Any] | None) -> dict[str, Any]:
    vendor_id = str(body.get("VendorID") or "").strip()
    if not vendor_id:
        raise EpicorError(400, "Supplier ID is required.", BO_EXCEPTION, "Vendor", "VendorID")
    if len(vendor_id) > sb.settings.vendor_id_max_length:
        raise EpicorError(400, f"Supplier ID cannot be longer than {sb.settings.vendor_id_max_length} characters.",
                          BO_EXCEPTION, "Vendor", "VendorID")
    if not str(body.get("Name") or "").strip():
        raise EpicorError(400, "Supplier name is required.", BO_EXCEPTION, "Vendor", "Name")
    existing = sb._vendor_by_id(vendor_id)
    if existing is not None:
        raise sb.duplicate(f"Supplier ID {existing['VendorID']} already exists.", "Vendor", "VendorID")
    values = {k: v for k, v in body.items() if k not in ("VendorNum", "SysRevID", "Company")}
    row = sb.new_row("Vendor", {"TermsCode": "N30", "CurrencyCode": "USD", "Country": "USA", "CountryNum": 1,
                                **values})
    row["VendorID"] = vendor_id
    row["VendorNum"] = sb._next_num("Vendor", "VendorNum")
    return sb.write("Vendor", row, user=sb.user)


def w_update_vendor(sb: EpicorSandbox, body: dict[str, Any], row: dict[str, Any] | None) -> dict[str, Any]:
    assert row is not None
    values = sb.coerce(sb.tables["Vendor"], {k: v for k, v in body.items()
                                             if k not in ("VendorNum", "Company", "SysRevID", "SysRowID")})
    if "VendorID" in values:
        new_id = values["VendorID"].strip()
        other = sb._vendor_by_id(new_id)
        if not new_id:
            raise EpicorError(400, "Supplier ID is required.", BO_EXCEPTION, "Vendor", "VendorID")
        if other is not None and other["VendorNum"] != row["VendorNum"]:
            raise sb.duplicate(f"Supplier ID {new_id} already exists.", "Vendor", "VendorID")
    if "Name" in values and not values["Name"].strip():
        raise EpicorError(400, "Supplier name is required.", BO_EXCEPTION, "Vendor", "Name")
    updated = {**row, **values}
    return sb.write("Vendor", updated, user=sb.user)


def w_create_group(sb: EpicorSandbox, body: dict[str, Any], _: dict[str, Any] | None) -> dict[str, Any]:
    group_id = str(body.get("GroupID") or "").strip()
    if not group_id:
        raise EpicorError(400, "Group ID is required.", BO_EXCEPTION, "APInvGrp", "GroupID")
    if sb.tables["APInvGrp"].get(group_id) is not None:
        raise sb.duplicate(f"AP invoice group {group_id} already exists.", "APInvGrp", "GroupID")
    today = sb.clock.now_datetime().date()
    apply = _as_date(body.get("ApplyDate")) or today
    row = sb.new_row("APInvGrp", {"ApplyDate": apply, "FiscalYear": apply.year, "FiscalPeriod": apply.month,
                                  **{k: v for k, v in body.items() if k in ("ActiveUserID", "FiscalCalendarID")}})
    row["GroupID"] = group_id
    return sb.write("APInvGrp", row, user=sb.user)


def w_update_group(sb: EpicorSandbox, body: dict[str, Any], row: dict[str, Any] | None) -> dict[str, Any]:
    assert row is not None
    values = sb.coerce(sb.tables["APInvGrp"], {k: v for k, v in body.items() if k in ("ActiveUserID", "ApplyDate")})
    return sb.write("APInvGrp", {**row, **values}, user=sb.user)


def w_create_check_group(sb: EpicorSandbox, body: dict[str, Any], _: dict[str, Any] | None) -> dict[str, Any]:
    group_id = str(body.get("GroupID") or "").strip()
    if not group_id:
        raise EpicorError(400, "Group ID is required.", BO_EXCEPTION, "APChkGrp", "GroupID")
    if sb.tables["APChkGrp"].get(group_id) is not None:
        raise sb.duplicate(f"AP payment group {group_id} already exists.", "APChkGrp", "GroupID")
    row = sb.new_row("APChkGrp", {"BankAcctID": body.get("BankAcctID") or "OPER", "CheckDate": sb.clock.now_datetime().date()})
    row["GroupID"] = group_id
    return sb.write("APChkGrp", row, user=sb.user)


def w_create_invoice(sb: EpicorSandbox, body: dict[str, Any], _: dict[str, Any] | None) -> dict[str, Any]:
    """OData POST runs the same business rules as Update, without Change* defaulting."""
    ds = {name: [] for name in APINV_TABLES}
    ds["APInvHed"] = [{**body, "RowMod": "A"}]
    saved = save_invoice_tableset(sb, ds)
    return saved["APInvHed"][0]


def w_delete_invoice(sb: EpicorSandbox, _: dict[str, Any], row: dict[str, Any] | None) -> dict[str, Any]:
    assert row is not None
    if row["Posted"]:
        raise EpicorError(400, "The invoice has been posted and cannot be deleted.", BO_EXCEPTION, "APInvHed")
    sb.group_for_write(row["GroupID"])
    for line in sb.tables["APInvDtl"].children(row["VendorNum"], row["InvoiceNum"]):
        sb.tables["APInvDtl"].delete(line)
    sb.tables["APInvHed"].delete(row)
    return row


ODATA_WRITES: dict[tuple[str, str], Callable[[EpicorSandbox, dict[str, Any], dict[str, Any] | None], dict[str, Any]]] = {
    ("Vendor", "POST"): w_create_vendor,
    ("Vendor", "PATCH"): w_update_vendor,
    ("APInvGrp", "POST"): w_create_group,
    ("APInvGrp", "PATCH"): w_update_group,
    ("APChkGrp", "POST"): w_create_check_group,
    ("APInvHed", "POST"): w_create_invoice,
    ("APInvHed", "DELETE"): w_delete_invoice,
}

Handler = Callable[[EpicorSandbox, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class BoMethod:
    """A business-object method: its handler, its declared inputs (every one must be sent,
    as in Kinetic's generated method schemas), and whether it is a classic read that
    answers GET as well as POST."""

    handler: Handler
    inputs: tuple[str, ...]
    read: bool = False


_METHODS: dict[str, dict[str, BoMethod]] = {
    "Erp.BO.APInvoiceSvc": {
        "GetNewAPInvHedInvoice": BoMethod(m_get_new_ap_inv_hed_invoice, ("ds", "cGroupID")),
        "ChangeVendorID": BoMethod(m_change_vendor_id, ("ProposedVendorID", "confirmCheck", "ds")),
        "ChangeInvoiceDateEx": BoMethod(m_change_invoice_date_ex, ("ProposedInvoiceDate", "recalcAmts", "ds")),
        "ChangeInvoiceVendorAmt": BoMethod(m_change_invoice_vendor_amt, ("ProposedInvoiceVendorAmt", "ds")),
        "ChangeRefPONum": BoMethod(m_change_ref_po_num, ("ProposedRefPONum", "confirmCheck", "ds")),
        "GetNewAPInvDtlMiscellaneous": BoMethod(m_get_new_ap_inv_dtl_misc, ("ds", "iVendorNum", "cInvoiceNum")),
        "GetNewAPInvDtlUnreceived": BoMethod(m_get_new_ap_inv_dtl_unreceived, ("ds", "iVendorNum", "cInvoiceNum")),
        "ChangeVendorQty": BoMethod(_line_change("VendorQty", "ProposedVendorQty"), ("ProposedVendorQty", "ds")),
        "ChangeUnitCost": BoMethod(_line_change("UnitCost", "ProposedUnitCost"), ("ProposedUnitCost", "ds")),
        "ChangeExtCost": BoMethod(_line_change("ExtCost", "ProposedExtCost"), ("ProposedExtCost", "ds")),
        "ChangePONum": BoMethod(m_change_po_num, ("ProposedPONum", "ds")),
        "ChangePOLine": BoMethod(m_change_po_line, ("ProposedPOLine", "ds")),
        "Update": BoMethod(m_update, ("ds",)),
        "UpdateMaster": BoMethod(m_update_master, ("ds", "cGroupID", "cTableName", "runChkCPay", "runChkBankRef",
                                                   "runChkRevChrg", "suppressUserPrompts")),
        "GetByID": BoMethod(m_get_by_id, ("vendorNum", "invoiceNum"), read=True),
    },
    "Erp.BO.APInvGrpSvc": {"UnlockGroup": BoMethod(m_unlock_group, ("InGroupID",))},
    "Erp.BO.VendorSvc": {"GetByVendID": BoMethod(m_get_by_vend_id, ("vendorID",), read=True)},
    "Erp.BO.PaymentEntrySvc": {
        "GetNewCheckHed": BoMethod(m_get_new_check_hed, ("ds",)),
        "OnChangeVendor": BoMethod(m_on_change_vendor, ("pcVendorID", "ds")),
        "OnChangeCheckDate": BoMethod(m_on_change_check_date, ("pdtCheckDate", "ds")),
        "GetNewAPTran": BoMethod(m_get_new_ap_tran, ("ds", "headNum", "apTranNo", "invoiceNum")),
        "OnChangeInvoiceNum": BoMethod(m_on_change_invoice_num, ("pcInvoiceNum", "pcChangeExchangeRateResponse", "ds")),
        "OnChangeDocTranAmt": BoMethod(m_on_change_doc_tran_amt, ("pdDocTranAmt", "ds")),
        "Update": BoMethod(m_payment_update, ("ds",)),
        "GetByID": BoMethod(m_payment_get_by_id, ("headNum",), read=True),
    },
}
# Method names resolve case-insensitively, as Epicor's router does.
METHODS = {service: {name.casefold(): method for name, method in methods.items()}
           for service, methods in _METHODS.items()}

__all__ = ["EpicorSandbox", "EpicorSandboxSettings", "EpicorError", "parse_datetime", "fmt_datetime"]
