"""Acumatica's vocabulary: the Default endpoint's entities and their value kinds, the
instance settings and licence limits, the error of an answer, value conversion, and
`$filter` as the contract-based REST reads it (the kit's OData parser with Acumatica's
dialect and wording, compiled against stored records)."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from pydantic import BaseModel, Field

from sandboxes.kit import odata

ENDPOINT_NAME = "Default"
ENDPOINT_VERSION = "23.200.001"  # the version the connector pins; others answer 404
TOKEN_TTL_SECONDS = 3600  # the usual `expires_in` of the identity server (unconfirmed)
SESSION_TIMEOUT_SECONDS = 1200  # an idle cookie session ends after this (unconfirmed)
AUTH_CODE_TTL_SECONDS = 300  # authorization codes are short-lived and single use
SCOPES = frozenset({"api", "offline_access", "api:concurrent_access"})
FILTER_CACHE_SIZE = 64  # filtered key lists kept per table, so paging one filter is O(page)
ERROR_TYPE = "PX.Data.PXException"
NOT_AUTHORIZED = "Authorization has been denied for this request."
NOT_BALANCED = "The document status is '{}'; only a Balanced document can be released."
NON_STOCK_ITEMS = ("LABOR", "SERVICE", "NONSTOCK", "FREIGHT", "MISC")  # non-stock IDs a line may use
MONEY = 2  # decimal places of amounts
BRANCHES = (("HQ", "Headquarters"), ("EAST", "East Service Center"), ("WEST", "West Service Center"))

Rec = dict[str, Any]  # a stored record, or a level of one
S, D, I, B, T = "string", "decimal", "int", "bool", "datetime"
_VALUE_TYPES = {S: "StringValue", D: "DecimalValue", I: "IntValue", B: "BooleanValue", T: "DateTimeValue"}


# ---- settings -------------------------------------------------------------------------------


class LicenseLimits(BaseModel):
    """The license's API limits (License Monitoring Console, SM604000). Trial defaults."""

    api_users: int | None = 2  # concurrent API sign-ins a trial license allows
    concurrent_requests: int | None = None  # trial: no limit
    request_queue: int = Field(10, ge=0)  # requests queued for a concurrency slot before 429 (unconfirmed)
    queue_timeout: float = Field(10.0, ge=0)  # how long a queued request waits (unconfirmed)
    requests_per_minute: int | None = None  # trial: no limit
    retry_after_header: bool = True  # whether a 429 carries Retry-After (unconfirmed)
    # A sign-in over `api_users` is refused with "API Login Limit" in the usual error body; a
    # real instance does not answer 429 for it, and its exact status is a setting.
    login_limit_status: int = 500


class AcumaticaSettings(BaseModel):
    """Instance and tenant behaviour a real deployment varies; changeable at run time."""

    tenant: str = "MyTenant"
    # The tenant's branches. The Default contract has no top-level Branch entity (a GET of it
    # answers 404); a branch is named by PX-CbApiBranch, the sign-in's `branch` and the
    # documents' BranchID / Branch / LinkBranch fields, and checked against this list.
    branches: dict[str, str] = Field(default_factory=lambda: dict(BRANCHES))
    endpoint_versions: list[str] = Field(default_factory=lambda: [ENDPOINT_VERSION])
    token_ttl: int = TOKEN_TTL_SECONDS
    session_timeout: int = SESSION_TIMEOUT_SECONDS
    validation_status: int = 422  # status of a save refused by validation (unconfirmed: 500 on old versions)
    precondition_status: int = 412  # If-Match / If-None-Match failed (unconfirmed code)
    login_failure_status: int = 401  # wrong user name or password at /entity/auth/login (unconfirmed)
    action_pending_polls: int = Field(1, ge=0)  # status polls that answer 202 before 204
    action_seconds: float = Field(2.0, ge=0)  # an action finishes on its own after this long
    hold_on_entry: bool = False  # AP/AR preference "Hold Documents on Entry"
    duplicate_vendor_ref_error: bool = True  # AP preference "Raise an Error on Duplicate Vendor Ref."
    oauth_sessions_count: bool = False  # whether a bearer token takes an API-user slot (unconfirmed)
    processing_ms: int = Field(0, ge=0)  # server work per entity request, inside the concurrency slot
    default_expense_account: str = "50000"
    default_income_account: str = "40000"


@dataclass
class Operation:
    """A long-running action started through `POST {Entity}/{Action}`."""

    id: str
    entity: str
    action: str
    record_id: str
    started: float
    pending_polls: int
    done: bool = False
    error: str | None = None


class ApiError(Exception):
    """An answer other than success, in Acumatica's error shape unless `body` is given."""

    def __init__(self, status: int, message: str, *, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body


# ---- entity shapes --------------------------------------------------------------------------


@dataclass
class Shape:
    """Fields (name -> kind), detail collections and linked entities of one entity level."""

    fields: dict[str, str]
    details: dict[str, "Shape"] = field(default_factory=dict)
    linked: dict[str, "Shape"] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: str, **parts: Any) -> "Shape":
        """`"Name Amount:D Hold:B Date:T Line:I"`: fields in order, a string unless marked."""
        kinds = {"S": S, "D": D, "I": I, "B": B, "T": T}
        return cls({name: kinds[kind or "S"] for name, _, kind in (f.partition(":") for f in spec.split())}, **parts)

    def kinds(self, prefix: str = "") -> dict[str, str]:
        """Filterable paths: own fields and linked entities' fields (details are not)."""
        out = {f"{prefix}{name}": kind for name, kind in self.fields.items()}
        for name, sub in self.linked.items():
            out.update(sub.kinds(f"{prefix}{name}/"))
        return out


@dataclass
class EntityDef:
    name: str
    collection: str  # control-API name
    keys: tuple[str, ...]
    shape: Shape
    graph: str  # the screen's graph and primary view, as a file's `files:put` link names them
    view: str
    change_field: str | None = "LastModifiedDateTime"
    created_field: str | None = "CreatedDateTime"
    readonly: frozenset[str] = frozenset({"CreatedDateTime", "LastModifiedDateTime"})
    indexed: tuple[str, ...] = ()
    numbering: tuple[str, str, int] | None = None  # (field, prefix, digits)
    key_defaults: dict[str, str] = field(default_factory=dict)
    actions: tuple[str, ...] = ()  # long-running actions, e.g. ReleaseBill


ADDRESS = Shape.of("AddressLine1 AddressLine2 City State PostalCode Country")
CONTACT = Shape.of("DisplayName CompanyName Attention FirstName LastName Email Phone1 Phone2 Fax WebSite",
                   linked={"Address": ADDRESS})
ATTRIBUTE = Shape.of("AttributeID Value ValueDescription Required:B")
TAX_DETAIL = Shape.of("TaxID TaxRate:D TaxableAmount:D TaxAmount:D")
DOCUMENT_READONLY = frozenset({"Status", "Balance", "CreatedDateTime", "LastModifiedDateTime"})

ENTITIES: dict[str, EntityDef] = {d.name: d for d in (
    EntityDef(
        "Vendor", "vendors", ("VendorID",),
        Shape.of("VendorID VendorName LegalName VendorClass Status Terms CurrencyID PaymentMethod CashAccount "
                 "APAccount APSubaccount TaxZone TaxRegistrationID F1099Vendor:B F1099Box CreatedDateTime:T "
                 "LastModifiedDateTime:T", details={"Attributes": ATTRIBUTE},
                 linked={"MainContact": CONTACT, "RemittanceContact": CONTACT}),
        "PX.Objects.AP.VendorMaint", "BAccount", indexed=("VendorName",), numbering=("VendorID", "V", 6)),
    EntityDef(
        "Customer", "customers", ("CustomerID",),
        Shape.of("CustomerID CustomerName CustomerClass Status Terms CurrencyID CreditLimit:D TaxZone Email "
                 "CreatedDateTime:T LastModifiedDateTime:T", details={"Attributes": ATTRIBUTE},
                 linked={"MainContact": CONTACT, "BillingContact": CONTACT}),
        "PX.Objects.AR.CustomerMaint", "BAccount", indexed=("CustomerName",), numbering=("CustomerID", "C", 6)),
    EntityDef(
        "Bill", "bills", ("Type", "ReferenceNbr"),
        Shape.of("Type ReferenceNbr Status Hold:B ApprovedForPayment:B Vendor VendorRef LocationID Date:T DueDate:T "
                 "PostPeriod Terms CurrencyID Amount:D Balance:D TaxTotal:D BranchID CashAccount Project Description "
                 "LastModifiedDateTime:T", details={
                     "Details": Shape.of(
                         "InventoryID TransactionDescription Description Qty:D UOM UnitCost:D ExtendedCost:D Amount:D "
                         "Account Subaccount Branch TaxCategory Project ProjectTask CostCode NonBillable:B "
                         "POOrderType POOrderNbr POLine:I POReceiptType POReceiptNbr POReceiptLine:I"),
                     "Applications": Shape.of("DocType ReferenceNbr AmountPaid:D Balance:D Status"),
                     "TaxDetails": TAX_DETAIL}),
        "PX.Objects.AP.APInvoiceEntry", "Document", created_field=None, readonly=DOCUMENT_READONLY,
        indexed=("Vendor", "VendorRef"), numbering=("ReferenceNbr", "", 6), key_defaults={"Type": "Bill"},
        actions=("ReleaseBill",)),
    EntityDef(
        "Invoice", "invoices", ("Type", "ReferenceNbr"),
        Shape.of("Type ReferenceNbr Customer CustomerOrder Date:T DueDate:T PostPeriod Terms Amount:D Balance:D "
                 "TaxTotal:D Status Hold:B Description Project LocationID LinkARAccount LinkBranch CreatedDateTime:T "
                 "LastModifiedDateTime:T", details={
                     "Details": Shape.of(
                         "InventoryID TransactionDescription Qty:D UOM UnitPrice:D ExtendedPrice:D DiscountAmount:D "
                         "Amount:D Account Subaccount Branch TaxCategory Project ProjectTask"),
                     "TaxDetails": TAX_DETAIL}, linked={"BillToContact": CONTACT}),
        "PX.Objects.AR.ARInvoiceEntry", "Document", readonly=DOCUMENT_READONLY, indexed=("Customer", "CustomerOrder"),
        numbering=("ReferenceNbr", "AR", 6), key_defaults={"Type": "Invoice"}, actions=("ReleaseInvoice",)),
    EntityDef(
        "Payment", "payments", ("Type", "ReferenceNbr"),
        Shape.of("Type ReferenceNbr CustomerID CustomerLocationID PaymentMethod CashAccount PaymentRef "
                 "PaymentAmount:D AvailableBalance:D AppliedToDocuments:D ApplicationDate:T CurrencyID Status Hold:B "
                 "Description ExternalRef BranchID CreatedDateTime:T LastModifiedDateTime:T", details={
                     "DocumentsToApply": Shape.of(
                         "DocType ReferenceNbr AmountPaid:D CashDiscountTaken:D BalanceWriteOff:D WriteOffReasonCode "
                         "DocLineNbr:I CustomerOrder Description Balance:D"),
                     "ApplicationHistory": Shape.of("DocType ReferenceNbr AmountPaid:D Date:T")}),
        "PX.Objects.AR.ARPaymentEntry", "Document",
        readonly=frozenset({"Status", "AvailableBalance", "AppliedToDocuments", "CreatedDateTime",
                            "LastModifiedDateTime"}),
        indexed=("CustomerID", "ExternalRef", "PaymentRef"), numbering=("ReferenceNbr", "PM", 6),
        key_defaults={"Type": "Payment"}, actions=("ReleasePayment",)),
    EntityDef(
        "Account", "accounts", ("AccountCD",),
        Shape.of("AccountCD AccountID:I Description Type AccountClass AccountGroup Active:B CashAccount:B CurrencyID "
                 "PostOption TaxCategory CreatedDateTime:T LastModifiedDateTime:T"),
        "PX.Objects.GL.AccountMaint", "AccountRecords",
        readonly=frozenset({"AccountID", "CreatedDateTime", "LastModifiedDateTime"})),
    # Subaccount carries no LastModifiedDateTime in the Default endpoint.
    EntityDef("Subaccount", "subaccounts", ("SubaccountCD",),
              Shape.of("SubaccountCD SubaccountID:I Description Active:B Secured:B"),
              "PX.Objects.GL.SubAccountMaint", "SubRecords", change_field=None, created_field=None,
              readonly=frozenset({"SubaccountID"})),
    # StockItem's change field is `LastModified` (unconfirmed).
    EntityDef("StockItem", "stock_items", ("InventoryID",),
              Shape.of("InventoryID Description ItemClass ItemStatus ItemType BaseUOM DefaultPrice:D CurrentStdCost:D "
                       "DefaultWarehouseID LastModified:T"),
              "PX.Objects.IN.InventoryItemMaint", "Item", change_field="LastModified", created_field=None,
              readonly=frozenset({"LastModified"})),
)}

_BY_LOWER = {name.lower(): d for name, d in ENTITIES.items()}
_BY_COLLECTION = {d.collection: d for d in ENTITIES.values()}
RELEASED = frozenset({"Open", "Closed"})
BILL_TYPES = ("Bill", "Credit Adj.", "Debit Adj.", "Prepayment")
INVOICE_TYPES = ("Invoice", "Debit Memo", "Credit Memo")
PAYMENT_TYPES = ("Payment", "Prepayment", "Credit Memo", "Refund")
ACCOUNT_TYPES = ("Asset", "Liability", "Income", "Expense")
VENDOR_STATUSES = ("Active", "On Hold", "Hold Payments", "Inactive", "One-Time")
CUSTOMER_STATUSES = ("Active", "On Hold", "Credit Hold", "Inactive", "One-Time")
SUBACCOUNT_FORMAT = re.compile(r"^[A-Z0-9]{3}-[A-Z0-9]{3}$")  # two 3-character segments


# ---- values ---------------------------------------------------------------------------------


def norm(value: Any) -> str:
    """Comparison form of a value: SQL Server's default collation ignores case and trailing blanks."""
    if value is None:
        return ""
    return str(value).rstrip().casefold()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


@functools.lru_cache(maxsize=65536)
def parse_dt(text: str | None) -> datetime | None:
    """An ISO-8601 timestamp as an aware datetime (naive means UTC); None if it is not one."""
    if text is None:
        return None
    value = str(text).strip()
    if re.search(r"\d \d{2}:\d{2}$", value):  # an unescaped '+' in a URL arrives as a space
        value = value[:-6] + "+" + value[-5:]
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def money(value: float) -> float:
    return round(float(value) + 0.0, MONEY)


def _is_value_object(obj: Any) -> bool:
    return isinstance(obj, dict) and set(obj) <= {"value", "error"}


def wrap_plain(shape: Shape, payload: dict[str, Any]) -> dict[str, Any]:
    """Plain field values -> value objects (control API accepts either form)."""
    out: dict[str, Any] = {}
    for name, value in payload.items():
        if name in ("id", "delete", "custom", "rowNumber"):
            out[name] = value
        elif name in shape.details and isinstance(value, list):
            out[name] = [wrap_plain(shape.details[name], row) if isinstance(row, dict) else row for row in value]
        elif name in shape.linked and isinstance(value, dict) and not _is_value_object(value):
            out[name] = wrap_plain(shape.linked[name], value)
        else:
            out[name] = value if _is_value_object(value) else {"value": value}
    return out


def coerce(kind: str, value: Any) -> Any:
    """A submitted value in the field's type; ValueError with Acumatica's wording otherwise."""
    if value is None:
        return None
    try:
        if kind == S and not isinstance(value, (dict, list)):
            return str(value)
        if kind in (D, I) and not isinstance(value, bool) and math.isfinite(number := float(value)):
            if kind == D:
                return round(number, 6)
            if number.is_integer():
                return int(number)
        if kind == B and isinstance(value, bool):
            return value
        if kind == B and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if kind == T and isinstance(value, str) and (parsed := parse_dt(value)) is not None:
            return parsed.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    except (TypeError, ValueError):
        pass
    raise ValueError(f"The value '{value}' cannot be converted to {_VALUE_TYPES[kind][:-5]}.")


# ---- $filter ----------------------------------------------------------------------------------


def _datetime_literal(text: str) -> datetime:
    parsed = parse_dt(text)
    if parsed is None:
        raise ValueError(text)
    return parsed


# Contract-based REST: typed `datetimeoffset'...'` and plain ISO literals, OData v3 functions.
DIALECT = odata.Dialect(
    typed={"datetimeoffset": _datetime_literal, "datetime": _datetime_literal, "guid": str.lower},
    parse_datetime=_datetime_literal,
    functions={"substringof": 2, "startswith": 2, "endswith": 2, "tolower": 1, "toupper": 1, "trim": 1},
    number_suffixes=True,
    fold_keywords=True,
)


FILTER_MESSAGES = {
    "unexpected_text": "Unexpected text in $filter at position {position}: '{text}'.",
    "empty": "The $filter expression is empty.",
    "unexpected_end": "The $filter expression ends unexpectedly.",
    "expected": "Missing ')' in $filter.",
    "expected_in_call": "Unexpected '{token}' in the arguments of {function}.",
    "bad_literal": "'{literal}' is not a valid {prefix} literal.",
    "unknown_function": "The function '{name}' is not supported in $filter.",
    "arity": "The function '{name}' takes {arity} arguments.",
    "unexpected_token": "Unexpected '{token}' in $filter.",
}


def parse_filter(text: str, kinds: dict[str, str], entity: str) -> tuple:
    """The filter's tree; a 400 ApiError says why not, as Acumatica does."""

    def check(path: tuple[str, ...]) -> None:
        if "/".join(path) not in kinds:
            raise ApiError(400, f"The field '{'/'.join(path)}' is not found in the entity '{entity}'.")

    try:
        return odata.parse_filter(text, DIALECT, check)
    except odata.FilterSyntaxError as exc:
        raise ApiError(400, exc.message(FILTER_MESSAGES)) from None


def _compare(op: str, left: Any, right: Any) -> bool:
    if left is None or right is None:
        return (left is None and right is None) == (op == "eq") if op in ("eq", "ne") else False
    if isinstance(left, datetime) or isinstance(right, datetime):
        left, right = (v if isinstance(v, datetime) else parse_dt(str(v)) for v in (left, right))
        if left is None or right is None:
            return False
    elif isinstance(left, bool) or isinstance(right, bool):
        left, right = str(left).lower() == "true", str(right).lower() == "true"
    elif isinstance(left, (int, float)) or isinstance(right, (int, float)):
        try:
            left, right = float(left), float(right)
        except (TypeError, ValueError):
            left, right = norm(left), norm(right)
    else:
        left, right = norm(left), norm(right)
    return odata.COMPARISONS[op](left, right)


MATCHES = {"substringof": lambda a, b: a in b, "startswith": str.startswith, "endswith": str.endswith}
CASES = {"tolower": str.lower, "toupper": str.upper, "trim": str.strip}


def compile_filter(node: tuple, kinds: dict[str, str]) -> Callable[[dict[str, Any]], Any]:
    """A record -> value function of the tree; a date field reads as a date, so dates compare as dates."""
    kind = node[0]
    if kind == "lit":
        return lambda rec: node[1]
    if kind == "field":
        path, dated = node[1], kinds["/".join(node[1])] == T

        def read(rec: dict[str, Any]) -> Any:
            value: Any = rec
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            return parse_dt(value) if dated else value

        return read
    if kind == "not":
        inner = compile_filter(node[1], kinds)
        return lambda rec: inner(rec) is not True
    if kind in ("and", "or", "cmp"):
        left, right = compile_filter(node[-2], kinds), compile_filter(node[-1], kinds)
        if kind == "and":
            return lambda rec: left(rec) is True and right(rec) is True
        if kind == "or":
            return lambda rec: left(rec) is True or right(rec) is True
        return lambda rec: _compare(node[1], left(rec), right(rec))
    name, args = node[1], [compile_filter(a, kinds) for a in node[2]]
    if name in MATCHES:  # false when the searched text is null
        match, searched = MATCHES[name], args[1 if name == "substringof" else 0]
        return lambda rec: searched(rec) is not None and match(norm(args[0](rec)), norm(args[1](rec)))
    case = CASES[name]
    return lambda rec: None if args[0](rec) is None else case(str(args[0](rec)))
