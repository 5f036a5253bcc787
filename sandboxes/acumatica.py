"""Acumatica contract-based REST API simulator.

Serves `/entity/{Endpoint}/{Version}/{Entity}` the way an Acumatica instance does: every
field a value object, details only when `$expand`-ed, `$filter`/`$select`/`$top`/`$skip`,
PUT upserts by `id` or key fields (with the `If-None-Match: *` / `If-Match: *` variants),
long-running actions polled through a `Location` status URL, OAuth 2 at
`/identity/connect/token`, cookie sessions at `/entity/auth/login`, and the three license
limits (API users, concurrent requests, requests per minute). Facts the vendor notes mark
unconfirmed are settings (`AcumaticaSettings`, `LicenseLimits`) with the documented default.
"""

from __future__ import annotations

import bisect
import collections
import copy
import functools
import random
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import urlencode

from flask import Flask, Response, g, has_request_context, request
from pydantic import BaseModel, Field

from sandboxes.base import RateWindow, Sandbox, SandboxOptions
from sandboxes.kit import odata
from sandboxes.kit.clock import Clock
from sandboxes.kit.routes import json_response, model_route
from sandboxes.kit.tokens import IssuedToken, bearer_token

ENDPOINT_NAME = "Default"
ENDPOINT_VERSION = "23.200.001"  # the version the connector pins; others answer 404
TOKEN_TTL_SECONDS = 3600  # the usual `expires_in` of the identity server (unconfirmed)
SESSION_TIMEOUT_SECONDS = 1200  # an idle cookie session ends after this (unconfirmed)
AUTH_CODE_TTL_SECONDS = 300  # authorization codes are short-lived and single use
REFRESH_TTL_SECONDS = 30 * 86400  # refresh tokens last 30 days by default
SCOPES = frozenset({"api", "offline_access", "api:concurrent_access"})
FILTER_CACHE_SIZE = 64  # filtered key lists kept per table, so paging one filter is O(page)
ERROR_TYPE = "PX.Data.PXException"
NOT_AUTHORIZED = "Authorization has been denied for this request."
NON_STOCK_ITEMS = ("LABOR", "SERVICE", "NONSTOCK", "FREIGHT", "MISC")  # non-stock IDs a line may use
MONEY = 2  # decimal places of amounts

S, D, I, B, T = "string", "decimal", "int", "bool", "datetime"
_VALUE_TYPES = {S: "StringValue", D: "DecimalValue", I: "IntValue", B: "BooleanValue", T: "DateTimeValue"}
_SPECIAL = frozenset({"id", "rowNumber", "note", "custom", "files", "_links", "error", "delete"})


# ---- settings -------------------------------------------------------------------------------


class LicenseLimits(BaseModel):
    """The license's API limits (License Monitoring Console, SM604000). Trial defaults."""

    api_users: int | None = 2  # concurrent API sign-ins a trial license allows
    concurrent_requests: int | None = None  # trial: no limit
    request_queue: int = Field(10, ge=0)  # requests queued for a concurrency slot before 429 (unconfirmed)
    queue_timeout: float = Field(10.0, ge=0)  # how long a queued request waits (unconfirmed)
    requests_per_minute: int | None = None  # trial: no limit
    retry_after_header: bool = True  # whether a 429 carries Retry-After (unconfirmed)
    login_limit_status: int = 429  # status of a refused sign-in; body says "API Login Limit"


class AcumaticaSettings(BaseModel):
    """Instance and tenant behaviour a real deployment varies; changeable at run time."""

    tenant: str = "MyTenant"
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


class ApiError(Exception):
    """An answer other than success, in Acumatica's error shape unless `body` is given."""

    def __init__(self, status: int, message: str, *, body: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body
        self.headers = headers or {}


# ---- entity shapes --------------------------------------------------------------------------


@dataclass
class Shape:
    """Fields (name -> kind), detail collections and linked entities of one entity level."""

    fields: dict[str, str]
    details: dict[str, "Shape"] = field(default_factory=dict)
    linked: dict[str, "Shape"] = field(default_factory=dict)

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
    change_field: str | None = "LastModifiedDateTime"
    created_field: str | None = None
    readonly: frozenset[str] = frozenset()
    indexed: tuple[str, ...] = ()
    numbering: tuple[str, str, int] | None = None  # (field, prefix, digits)
    graph: str = ""
    view: str = ""
    key_defaults: dict[str, str] = field(default_factory=dict)
    actions: dict[str, str] = field(default_factory=dict)  # action name -> handler suffix


ADDRESS = Shape({"AddressLine1": S, "AddressLine2": S, "City": S, "State": S, "PostalCode": S, "Country": S})
CONTACT = Shape(
    {"DisplayName": S, "CompanyName": S, "Attention": S, "FirstName": S, "LastName": S,
     "Email": S, "Phone1": S, "Phone2": S, "Fax": S, "WebSite": S},
    linked={"Address": ADDRESS},
)
ATTRIBUTE = Shape({"AttributeID": S, "Value": S, "ValueDescription": S, "Required": B})
TAX_DETAIL = Shape({"TaxID": S, "TaxRate": D, "TaxableAmount": D, "TaxAmount": D})

ENTITIES: dict[str, EntityDef] = {}


def _define(entity: EntityDef) -> None:
    ENTITIES[entity.name] = entity


_define(EntityDef(
    "Vendor", "vendors", ("VendorID",),
    Shape(
        {"VendorID": S, "VendorName": S, "LegalName": S, "VendorClass": S, "Status": S, "Terms": S,
         "CurrencyID": S, "PaymentMethod": S, "CashAccount": S, "APAccount": S, "APSubaccount": S,
         "TaxZone": S, "TaxRegistrationID": S, "F1099Vendor": B, "F1099Box": S,
         "CreatedDateTime": T, "LastModifiedDateTime": T},
        details={"Attributes": ATTRIBUTE},
        linked={"MainContact": CONTACT, "RemittanceContact": CONTACT},
    ),
    created_field="CreatedDateTime",
    readonly=frozenset({"CreatedDateTime", "LastModifiedDateTime"}),
    indexed=("VendorName",),
    numbering=("VendorID", "V", 6),
    graph="PX.Objects.AP.VendorMaint", view="BAccount",
))
_define(EntityDef(
    "Customer", "customers", ("CustomerID",),
    Shape(
        {"CustomerID": S, "CustomerName": S, "CustomerClass": S, "Status": S, "Terms": S, "CurrencyID": S,
         "CreditLimit": D, "TaxZone": S, "Email": S, "CreatedDateTime": T, "LastModifiedDateTime": T},
        details={"Attributes": ATTRIBUTE},
        linked={"MainContact": CONTACT, "BillingContact": CONTACT},
    ),
    created_field="CreatedDateTime",
    readonly=frozenset({"CreatedDateTime", "LastModifiedDateTime"}),
    indexed=("CustomerName",),
    numbering=("CustomerID", "C", 6),
    graph="PX.Objects.AR.CustomerMaint", view="BAccount",
))
_define(EntityDef(
    "Bill", "bills", ("Type", "ReferenceNbr"),
    Shape(
        {"Type": S, "ReferenceNbr": S, "Status": S, "Hold": B, "ApprovedForPayment": B, "Vendor": S,
         "VendorRef": S, "LocationID": S, "Date": T, "DueDate": T, "PostPeriod": S, "Terms": S,
         "CurrencyID": S, "Amount": D, "Balance": D, "TaxTotal": D, "BranchID": S, "CashAccount": S,
         "Project": S, "Description": S, "LastModifiedDateTime": T},
        details={
            "Details": Shape({
                "InventoryID": S, "TransactionDescription": S, "Description": S, "Qty": D, "UOM": S,
                "UnitCost": D, "ExtendedCost": D, "Amount": D, "Account": S, "Subaccount": S, "Branch": S,
                "TaxCategory": S, "Project": S, "ProjectTask": S, "CostCode": S, "NonBillable": B,
                "POOrderType": S, "POOrderNbr": S, "POLine": I, "POReceiptType": S, "POReceiptNbr": S,
                "POReceiptLine": I}),
            "Applications": Shape({"DocType": S, "ReferenceNbr": S, "AmountPaid": D, "Balance": D, "Status": S}),
            "TaxDetails": TAX_DETAIL,
        },
    ),
    readonly=frozenset({"Status", "Balance", "LastModifiedDateTime"}),
    indexed=("Vendor", "VendorRef"),
    numbering=("ReferenceNbr", "", 6),
    graph="PX.Objects.AP.APInvoiceEntry", view="Document",
    key_defaults={"Type": "Bill"},
    actions={"ReleaseBill": "release_bill"},
))
_define(EntityDef(
    "Invoice", "invoices", ("Type", "ReferenceNbr"),
    Shape(
        {"Type": S, "ReferenceNbr": S, "Customer": S, "CustomerOrder": S, "Date": T, "DueDate": T,
         "PostPeriod": S, "Terms": S, "Amount": D, "Balance": D, "TaxTotal": D, "Status": S, "Hold": B,
         "Description": S, "Project": S, "LocationID": S, "LinkARAccount": S, "LinkBranch": S,
         "CreatedDateTime": T, "LastModifiedDateTime": T},
        details={
            "Details": Shape({
                "InventoryID": S, "TransactionDescription": S, "Qty": D, "UOM": S, "UnitPrice": D,
                "ExtendedPrice": D, "DiscountAmount": D, "Amount": D, "Account": S, "Subaccount": S,
                "Branch": S, "TaxCategory": S, "Project": S, "ProjectTask": S}),
            "TaxDetails": TAX_DETAIL,
        },
        linked={"BillToContact": CONTACT},
    ),
    created_field="CreatedDateTime",
    readonly=frozenset({"Status", "Balance", "CreatedDateTime", "LastModifiedDateTime"}),
    indexed=("Customer", "CustomerOrder"),
    numbering=("ReferenceNbr", "AR", 6),
    graph="PX.Objects.AR.ARInvoiceEntry", view="Document",
    key_defaults={"Type": "Invoice"},
    actions={"ReleaseInvoice": "release_invoice"},
))
_define(EntityDef(
    "Payment", "payments", ("Type", "ReferenceNbr"),
    Shape(
        {"Type": S, "ReferenceNbr": S, "CustomerID": S, "CustomerLocationID": S, "PaymentMethod": S,
         "CashAccount": S, "PaymentRef": S, "PaymentAmount": D, "AvailableBalance": D,
         "AppliedToDocuments": D, "ApplicationDate": T, "CurrencyID": S, "Status": S, "Hold": B,
         "Description": S, "ExternalRef": S, "BranchID": S, "CreatedDateTime": T, "LastModifiedDateTime": T},
        details={
            "DocumentsToApply": Shape({
                "DocType": S, "ReferenceNbr": S, "AmountPaid": D, "CashDiscountTaken": D, "BalanceWriteOff": D,
                "WriteOffReasonCode": S, "DocLineNbr": I, "CustomerOrder": S, "Description": S, "Balance": D}),
            "ApplicationHistory": Shape({"DocType": S, "ReferenceNbr": S, "AmountPaid": D, "Date": T}),
        },
    ),
    created_field="CreatedDateTime",
    readonly=frozenset({"Status", "AvailableBalance", "AppliedToDocuments", "CreatedDateTime", "LastModifiedDateTime"}),
    indexed=("CustomerID", "ExternalRef", "PaymentRef"),
    numbering=("ReferenceNbr", "PM", 6),
    graph="PX.Objects.AR.ARPaymentEntry", view="Document",
    key_defaults={"Type": "Payment"},
    actions={"ReleasePayment": "release_payment"},
))
_define(EntityDef(
    "Account", "accounts", ("AccountCD",),
    Shape({"AccountCD": S, "AccountID": I, "Description": S, "Type": S, "AccountClass": S, "AccountGroup": S,
           "Active": B, "CashAccount": B, "CurrencyID": S, "PostOption": S, "TaxCategory": S,
           "CreatedDateTime": T, "LastModifiedDateTime": T}),
    created_field="CreatedDateTime",
    readonly=frozenset({"AccountID", "CreatedDateTime", "LastModifiedDateTime"}),
    graph="PX.Objects.GL.AccountMaint", view="AccountRecords",
))
_define(EntityDef(
    # Subaccount carries no LastModifiedDateTime in the Default endpoint.
    "Subaccount", "subaccounts", ("SubaccountCD",),
    Shape({"SubaccountCD": S, "SubaccountID": I, "Description": S, "Active": B, "Secured": B}),
    change_field=None,
    readonly=frozenset({"SubaccountID"}),
    graph="PX.Objects.GL.SubAccountMaint", view="SubRecords",
))
_define(EntityDef(
    # Branch (cost center) fields beyond the key are unconfirmed.
    "Branch", "branches", ("BranchID",),
    Shape({"BranchID": S, "BranchName": S, "Active": B, "Country": S, "BaseCurrency": S}),
    change_field=None,
    graph="PX.Objects.CS.BranchMaint", view="BAccount",
))
_define(EntityDef(
    # StockItem's change field is `LastModified` (unconfirmed).
    "StockItem", "stock_items", ("InventoryID",),
    Shape({"InventoryID": S, "Description": S, "ItemClass": S, "ItemStatus": S, "ItemType": S, "BaseUOM": S,
           "DefaultPrice": D, "CurrentStdCost": D, "DefaultWarehouseID": S, "LastModified": T}),
    change_field="LastModified",
    readonly=frozenset({"LastModified"}),
    graph="PX.Objects.IN.InventoryItemMaint", view="Item",
))

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


# ---- helpers --------------------------------------------------------------------------------


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
        elif name == "note":
            out[name] = value if _is_value_object(value) else {"value": value}
        elif name in shape.details and isinstance(value, list):
            out[name] = [wrap_plain(shape.details[name], row) if isinstance(row, dict) else row for row in value]
        elif name in shape.linked and isinstance(value, dict) and not _is_value_object(value):
            out[name] = wrap_plain(shape.linked[name], value)
        elif _is_value_object(value):
            out[name] = value
        else:
            out[name] = {"value": value}
    return out


def coerce(kind: str, value: Any) -> Any:
    """A submitted value in the field's type; ValueError with Acumatica's wording otherwise."""
    if value is None:
        return None
    try:
        if kind == S:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if kind == D:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError
            return round(number, 6)
        if kind == I:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind == B:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise ValueError
        if kind == T:
            parsed = parse_dt(str(value)) if isinstance(value, str) else None
            if parsed is None:
                raise ValueError
            return parsed.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    except (TypeError, ValueError):
        raise ValueError(f"The value '{value}' cannot be converted to {_VALUE_TYPES[kind][:-5]}.") from None
    return value


# ---- $filter ----------------------------------------------------------------------------------


class FilterError(ValueError):
    pass


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
    """The filter's tree, with `("field", path, kind)` leaves; FilterError says why not, as Acumatica does."""

    def check(path: tuple[str, ...]) -> None:
        if "/".join(path) not in kinds:
            raise FilterError(f"The field '{'/'.join(path)}' is not found in the entity '{entity}'.")

    try:
        return _with_kinds(odata.parse_filter(text, DIALECT, check), kinds)
    except odata.FilterSyntaxError as exc:
        raise FilterError(exc.message(FILTER_MESSAGES)) from None


def _with_kinds(node: tuple, kinds: dict[str, str]) -> tuple:
    """Each field leaf gains its value kind, so dates compare as dates."""
    tag = node[0]
    if tag == "field":
        return ("field", node[1], kinds["/".join(node[1])])
    if tag in ("and", "or"):
        return (tag, _with_kinds(node[1], kinds), _with_kinds(node[2], kinds))
    if tag == "not":
        return ("not", _with_kinds(node[1], kinds))
    if tag == "cmp":
        return ("cmp", node[1], _with_kinds(node[2], kinds), _with_kinds(node[3], kinds))
    if tag == "call":
        return ("call", node[1], tuple(_with_kinds(a, kinds) for a in node[2]))
    return node


def _as_dt(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    return parse_dt(str(value)) if value is not None else None


def _compare(op: str, left: Any, right: Any) -> bool:
    if left is None or right is None:
        if op == "eq":
            return left is None and right is None
        if op == "ne":
            return not (left is None and right is None)
        return False
    if isinstance(left, datetime) or isinstance(right, datetime):
        left, right = _as_dt(left), _as_dt(right)
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


def compile_filter(node: tuple) -> Callable[[dict[str, Any]], Any]:
    kind = node[0]
    if kind == "lit":
        value = node[1]
        return lambda rec: value
    if kind == "field":
        path, field_kind = node[1], node[2]
        if len(path) == 1:
            name = path[0]
            if field_kind == T:
                return lambda rec: parse_dt(rec.get(name))
            return lambda rec: rec.get(name)

        def nested(rec: dict[str, Any]) -> Any:
            value: Any = rec
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            return parse_dt(value) if field_kind == T else value

        return nested
    if kind in ("and", "or"):
        left, right = compile_filter(node[1]), compile_filter(node[2])
        if kind == "and":
            return lambda rec: left(rec) is True and right(rec) is True
        return lambda rec: left(rec) is True or right(rec) is True
    if kind == "not":
        inner = compile_filter(node[1])
        return lambda rec: inner(rec) is not True
    if kind == "cmp":
        op, left, right = node[1], compile_filter(node[2]), compile_filter(node[3])
        return lambda rec: _compare(op, left(rec), right(rec))
    name, args = node[1], [compile_filter(a) for a in node[2]]
    if name == "substringof":
        return lambda rec: norm(args[0](rec)) in norm(args[1](rec)) if args[1](rec) is not None else False
    if name == "startswith":
        return lambda rec: norm(args[0](rec)).startswith(norm(args[1](rec))) if args[0](rec) is not None else False
    if name == "endswith":
        return lambda rec: norm(args[0](rec)).endswith(norm(args[1](rec))) if args[0](rec) is not None else False
    if name == "tolower":
        return lambda rec: None if args[0](rec) is None else str(args[0](rec)).lower()
    if name == "toupper":
        return lambda rec: None if args[0](rec) is None else str(args[0](rec)).upper()
    return lambda rec: None if args[0](rec) is None else str(args[0](rec)).strip()


def equality_terms(node: tuple) -> list[tuple[str, Any]]:
    """`Field eq 'literal'` terms of the top-level `and` chain on own fields (for index lookups)."""
    return [(path[0], value) for path, value in odata.equality_terms(node) if len(path) == 1]


# ---- storage ----------------------------------------------------------------------------------


class Table:
    """Records of one entity: by id, by key (ordered), equality indexes, a filter cache."""

    def __init__(self, entity: EntityDef) -> None:
        self.entity = entity
        self.by_id: dict[str, dict[str, Any]] = {}
        self.by_key: dict[tuple[str, ...], str] = {}
        self.order: list[tuple[str, ...]] = []
        self.index: dict[str, dict[str, set[str]]] = {f: collections.defaultdict(set) for f in entity.indexed}
        self.version = 0
        self.counter = 0
        self.numbers: set[str] = set()
        self.cache: collections.OrderedDict[str, tuple[int, list[str]]] = collections.OrderedDict()

    def key_of(self, rec: dict[str, Any]) -> tuple[str, ...]:
        return tuple(norm(rec.get(k)) for k in self.entity.keys)

    def find(self, values: tuple[Any, ...]) -> dict[str, Any] | None:
        rid = self.by_key.get(tuple(norm(v) for v in values))
        return self.by_id.get(rid) if rid else None

    def add(self, rec: dict[str, Any], *, bulk: bool = False) -> None:
        key = self.key_of(rec)
        self.by_id[rec["id"]] = rec
        self.by_key[key] = rec["id"]
        if bulk:
            self.order.append(key)
        else:
            bisect.insort(self.order, key)
        for name in self.entity.indexed:
            self.index[name][norm(rec.get(name))].add(rec["id"])
        if self.entity.numbering:
            self.numbers.add(norm(rec.get(self.entity.numbering[0])))
        self.version += 1

    def finish_bulk(self) -> None:
        self.order.sort()

    def replace(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        for name in self.entity.indexed:
            before, after = norm(old.get(name)), norm(new.get(name))
            if before != after:
                self.index[name][before].discard(old["id"])
                self.index[name][after].add(new["id"])
        self.by_id[new["id"]] = new
        self.version += 1

    def remove(self, rec: dict[str, Any]) -> None:
        key = self.key_of(rec)
        self.by_id.pop(rec["id"], None)
        self.by_key.pop(key, None)
        at = bisect.bisect_left(self.order, key)
        if at < len(self.order) and self.order[at] == key:
            del self.order[at]
        for name in self.entity.indexed:
            self.index[name][norm(rec.get(name))].discard(rec["id"])
        self.version += 1

    def touch(self) -> None:
        self.version += 1

    def next_number(self) -> str:
        """The next free auto-number (one numbering sequence per entity, as in Acumatica)."""
        assert self.entity.numbering is not None
        _, prefix, digits = self.entity.numbering
        while True:
            self.counter += 1
            candidate = f"{prefix}{self.counter:0{digits}d}"
            if norm(candidate) not in self.numbers:
                return candidate

    def select(self, predicate: Callable[[dict[str, Any]], Any] | None, cache_key: str,
               terms: list[tuple[str, Any]]) -> list[str]:
        """Ids matching `predicate`, in key order; cached per filter text until a write."""
        if predicate is None:
            return [self.by_key[k] for k in self.order]
        hit = self.cache.get(cache_key)
        if hit and hit[0] == self.version:
            self.cache.move_to_end(cache_key)
            return hit[1]
        indexed = [(f, v) for f, v in terms if f in self.index]
        if indexed:
            candidates: set[str] | None = None
            for name, value in indexed:
                ids = self.index[name].get(norm(value), set())
                candidates = set(ids) if candidates is None else candidates & ids
            rows = sorted((self.by_id[i] for i in candidates or ()), key=self.key_of)
            ids_out = [r["id"] for r in rows if predicate(r)]
        else:
            ids_out = []
            for key in self.order:
                rec = self.by_id[self.by_key[key]]
                if predicate(rec):
                    ids_out.append(rec["id"])
        self.cache[cache_key] = (self.version, ids_out)
        if len(self.cache) > FILTER_CACHE_SIZE:
            self.cache.popitem(last=False)
        return ids_out


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


@dataclass
class Principal:
    kind: str  # "oauth" or "cookie"
    ident: str
    scopes: tuple[str, ...]
    branch: str | None = None
    issued: IssuedToken | None = None


class _LicenseGate:
    """Concurrent-request slots with a bounded queue, as the license console describes."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.active = 0
        self.waiting = 0

    def enter(self, limit: int | None, queue: int, timeout: float) -> bool:
        with self.cond:
            if not limit or self.active < limit:
                self.active += 1
                return True
            if self.waiting >= queue:
                return False
            self.waiting += 1
            deadline = time.monotonic() + timeout
            try:
                while self.active >= limit:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self.cond.wait(remaining)
                self.active += 1
                return True
            finally:
                self.waiting -= 1

    def leave(self) -> None:
        with self.cond:
            self.active -= 1
            self.cond.notify()


# ---- seed data ----------------------------------------------------------------------------------

VENDOR_BASES = (
    "Ferguson Enterprises", "Johnstone Supply", "Acme Supply", "Grainger Industrial Supply", "Winsupply",
    "Carrier Enterprise", "Lennox PartsPlus", "Hajoca Plumbing Supply", "Graybar Electric", "Home Depot Pro",
    "United Refrigeration", "Watsco Distribution", "Gensco", "Consolidated Pipe & Supply", "Sunbelt Rentals",
    "Fastenal", "Rexel Electrical Supply", "Wesco Distribution", "Goodman Distribution", "Trane Supply",
    "Daikin Comfort Technologies", "Bearing Distributors", "Apex Pipe Fittings", "Summit Mechanical",
    "Precision Sheet Metal", "Blue Ridge Controls", "Metro Fleet Services", "Shell Fleet Fuel",
    "Cintas Uniforms", "Pacific Refrigerant Recovery",
)
VENDOR_SUFFIXES = ("Inc.", "Inc", ", Inc.", "LLC", "L.L.C.", "Co.", "Company", "Corp.", "Corporation")
RESIDENTIAL_FIRST = ("James", "Robert", "Michael", "William", "David", "Mary", "Patricia", "Jennifer", "Linda",
                     "Elizabeth", "Maria", "Thomas", "Daniel", "Susan", "Karen", "Joseph", "Nancy", "Charles")
NICKNAMES = {"James": "Jim", "Robert": "Bob", "Michael": "Mike", "William": "Bill", "David": "Dave",
             "Patricia": "Pat", "Jennifer": "Jen", "Elizabeth": "Liz", "Thomas": "Tom", "Daniel": "Dan",
             "Joseph": "Joe", "Charles": "Chuck", "Susan": "Sue"}
RESIDENTIAL_LAST = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
                    "Martinez", "Hernandez", "Lopez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson")
COMMERCIAL = ("Oak Ridge Apartments", "Sunset Medical Plaza", "Riverside Elementary School",
              "Harbor Point Condominiums", "Lakeside Dental Group", "Northgate Shopping Center",
              "Cedar Creek Church", "Summit Office Park", "Parkview Senior Living", "Bayshore Hotel & Suites",
              "Maple Grove HOA", "Westfield Logistics Center")
STREETS = ("Main", "Commerce", "Industrial", "Oak", "Maple", "Airport", "Market", "Lake", "Park", "Mill",
           "Cedar", "Elm", "Washington", "Jefferson", "Highland")
STREET_TYPES = (("Street", "St.", "St"), ("Avenue", "Ave.", "Ave"), ("Boulevard", "Blvd.", "Blvd"),
                ("Road", "Rd.", "Rd"), ("Drive", "Dr.", "Dr"), ("Parkway", "Pkwy", "Pkwy."))
CITIES = (("Dallas", "TX", "75201"), ("Houston", "TX", "77002"), ("Phoenix", "AZ", "85004"),
          ("Denver", "CO", "80202"), ("Atlanta", "GA", "30303"), ("Charlotte", "NC", "28202"),
          ("Nashville", "TN", "37203"), ("Tampa", "FL", "33602"), ("Columbus", "OH", "43215"),
          ("Indianapolis", "IN", "46204"), ("Kansas City", "MO", "64106"), ("Salt Lake City", "UT", "84101"))
ACCOUNTS = (
    ("10100", "Cash - Operating", "Asset", True), ("10200", "Cash - Payroll", "Asset", True),
    ("10300", "Undeposited Funds", "Asset", True), ("11000", "Accounts Receivable", "Asset", False),
    ("12000", "Inventory", "Asset", False), ("15000", "Vehicles and Equipment", "Asset", False),
    ("20000", "Accounts Payable", "Liability", False), ("21000", "Accrued Liabilities", "Liability", False),
    ("23000", "Sales Tax Payable", "Liability", False), ("30000", "Retained Earnings", "Liability", False),
    ("40000", "Service Revenue", "Income", False), ("40100", "Installation Revenue", "Income", False),
    ("40200", "Maintenance Agreement Revenue", "Income", False), ("41000", "Parts Sales", "Income", False),
    ("49000", "Sales Discounts", "Income", False), ("50000", "Cost of Goods Sold", "Expense", False),
    ("51000", "Materials", "Expense", False), ("52000", "Subcontractors", "Expense", False),
    ("53000", "Equipment Rental", "Expense", False), ("60000", "Labor Expense", "Expense", False),
    ("61000", "Vehicle Expense", "Expense", False), ("62000", "Fuel", "Expense", False),
    ("63000", "Rent", "Expense", False), ("64000", "Utilities", "Expense", False),
    ("65000", "Insurance", "Expense", False), ("66000", "Office Supplies", "Expense", False),
    ("67000", "Professional Fees", "Expense", False), ("68000", "Tools and Small Equipment", "Expense", False),
)
INACTIVE_ACCOUNT = ("69900", "Old Suspense", "Expense", False)
EXPENSE_ACCOUNTS = ("50000", "51000", "52000", "53000", "60000", "61000", "62000", "66000", "68000")
INCOME_ACCOUNTS = ("40000", "40100", "40200", "41000")
SUBACCOUNTS = (
    ("000-000", "Default"), ("100-000", "HVAC"), ("100-100", "HVAC - Residential"), ("100-200", "HVAC - Commercial"),
    ("200-000", "Plumbing"), ("200-100", "Plumbing - Residential"), ("200-200", "Plumbing - Commercial"),
    ("300-000", "Electrical"), ("300-100", "Electrical - Residential"), ("300-200", "Electrical - Commercial"),
    ("900-000", "Administration"),
)
INACTIVE_SUBACCOUNT = ("999-999", "Retired business unit")
BRANCHES = (("HQ", "Headquarters"), ("EAST", "East Service Center"), ("WEST", "West Service Center"))
STOCK_BASES = (
    ("FILTER-16X25", "Air filter 16x25x1 MERV 8", 12.5), ("FILTER-20X25", "Air filter 20x25x1 MERV 11", 16.0),
    ("CAP-45-5", "Run capacitor 45/5 MFD 440V", 24.0), ("MOTOR-CFAN", "Condenser fan motor 1/4 HP", 189.0),
    ("R410A-25", "Refrigerant R-410A 25 lb cylinder", 310.0), ("PIPE-CU-075", "Copper pipe 3/4in x 10ft", 48.0),
    ("PVC-FIT-KIT", "PVC fittings assortment", 35.0), ("TSTAT-T6", "Thermostat programmable T6", 129.0),
    ("BRKR-20A", "Circuit breaker 20A single pole", 14.0), ("WH-ELEM-4500", "Water heater element 4500W", 22.0),
    ("CONTACTOR-30", "Contactor 30A 2 pole", 29.0), ("DRAIN-PAN", "Condensate drain pan", 41.0),
)
BILL_LINES = ("Refrigerant and recovery", "Copper and fittings", "Replacement motor", "Subcontract labor - ductwork",
              "Equipment rental - lift", "Fleet fuel", "Electrical supplies", "Small tools", "Shop consumables",
              "Freight")
INVOICE_LINES = ("Diagnostic service call", "Labor - repair", "Maintenance agreement visit", "Installation labor",
                 "Parts", "After-hours premium", "Drain cleaning", "Panel upgrade")


def _deterministic_uuid(rng: random.Random) -> str:
    """A version-4 GUID drawn from `rng` (string-built: seeding makes tens of thousands)."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


# ---- the sandbox --------------------------------------------------------------------------------


class AcumaticaSandbox(Sandbox):
    """A faithful in-memory Acumatica instance (one tenant, Default endpoint)."""

    vendor = "acumatica"

    def __init__(
        self,
        options: SandboxOptions | None = None,
        *,
        settings: AcumaticaSettings | None = None,
        limits: LicenseLimits | None = None,
    ) -> None:
        options = options or SandboxOptions()
        base_settings = settings or AcumaticaSettings()
        if options.token_ttl:
            base_settings = base_settings.model_copy(update={"token_ttl": options.token_ttl})
        base_limits = limits or LicenseLimits()
        if options.rate_limit is not None:  # options.rate_limit is requests per minute here
            base_limits = base_limits.model_copy(update={"requests_per_minute": int(options.rate_limit) or None})
        self._initial_settings = base_settings
        self._initial_limits = base_limits
        self.settings = base_settings.model_copy()
        self.limits = base_limits.model_copy()
        cred_rng = random.Random(f"acumatica-credentials-{options.seed}")
        self.client_guid = str(uuid.UUID(int=cred_rng.getrandbits(128), version=4)).upper()
        self.client_secret = "acu-" + "".join(cred_rng.choice("abcdefghjkmnpqrstuvwxyz23456789") for _ in range(32))
        self.username = "integration"
        self.password = "Pw-" + "".join(cred_rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(20))
        self._gate = _LicenseGate()
        self._rpm = RateWindow(None, 60.0)
        self._session_locks: dict[str, threading.Lock] = {}
        self.tables: dict[str, Table] = {}
        self.operations: dict[str, Operation] = {}
        self._pending: dict[str, Operation] = {}
        self.sessions: dict[str, IssuedToken] = {}
        self.auth_codes: dict[str, dict[str, Any]] = {}
        self.files: dict[str, tuple[str, bytes, str]] = {}
        self.clock = Clock(resolution_us=1)  # full precision: stamps are written to the millisecond
        self._rng = random.Random(options.seed)
        super().__init__(options)

    # ---- identity ---------------------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return f"{self.client_guid}@{self.settings.tenant}"

    def info(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "api_base": self.base_url,
            "token_url": f"{self.base_url}/identity/connect/token",
            "credentials": {
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "username": self.username,
                "password": self.password,
                "tenant": self.settings.tenant,
                "endpoint_version": self.settings.endpoint_versions[0],
            },
        }

    # ---- state ------------------------------------------------------------------------------------

    def clear_state(self) -> None:
        self.settings = self._initial_settings.model_copy()
        self.limits = self._initial_limits.model_copy()
        self._rpm = RateWindow(self.limits.requests_per_minute, 60.0)
        self.tables = {name: Table(d) for name, d in ENTITIES.items()}
        self.operations = {}
        self._pending = {}
        self.sessions = {}
        self.auth_codes = {}
        self.files = {}
        self._session_locks = {}

    def _now(self) -> float:
        """Server time that never runs backwards, so LastModifiedDateTime ordering stays sane."""
        return self.clock.now_seconds()

    def _new_id(self) -> str:
        return _deterministic_uuid(self._rng)

    def _blank(self, shape: Shape) -> dict[str, Any]:
        rec: dict[str, Any] = {"id": self._new_id()}
        for name, sub in shape.linked.items():
            rec[name] = self._blank(sub)
        for name in shape.details:
            rec[name] = []
        return rec

    def _store(self, entity: str, values: dict[str, Any], *, bulk: bool = True) -> dict[str, Any]:
        """Seed one record directly (no validation): linked entities and detail ids filled in."""
        d = ENTITIES[entity]
        rec = self._blank(d.shape)
        rec.update({"note": "", "custom": {}, "files": []})
        for name, value in values.items():
            if name in d.shape.linked:
                rec[name].update(value)
                for sub_name, sub in d.shape.linked[name].linked.items():
                    rec[name].setdefault(sub_name, self._blank(sub))
                    if isinstance(value.get(sub_name), dict):
                        rec[name][sub_name] = {"id": self._new_id(), **value[sub_name]}
            elif name in d.shape.details:
                rec[name] = [{"id": self._new_id(), **row} for row in value]
            else:
                rec[name] = value
        self.tables[entity].add(rec, bulk=bulk)
        return rec

    def seed(self, rng: random.Random, records: int) -> None:
        self._rng = random.Random(rng.getrandbits(64))
        self._tick_rng = random.Random(rng.getrandbits(64))
        now = self.clock.now_seconds()
        span = 120 * 86400

        def moments() -> tuple[str, str]:
            created = now - span + rng.uniform(0, span - 7200)
            modified = created + rng.uniform(0, (now - 3600 - created))
            return iso(created), iso(modified)

        for code, name in BRANCHES:
            self._store("Branch", {"BranchID": code, "BranchName": name, "Active": True, "Country": "US",
                                   "BaseCurrency": "USD"})
        for number, (code, desc) in enumerate(SUBACCOUNTS + (INACTIVE_SUBACCOUNT,), 1):
            self._store("Subaccount", {"SubaccountCD": code, "SubaccountID": number, "Description": desc,
                                       "Active": code != INACTIVE_SUBACCOUNT[0], "Secured": False})
        self.tables["Subaccount"].counter = len(SUBACCOUNTS) + 1
        for number, (code, desc, kind, cash) in enumerate(ACCOUNTS + (INACTIVE_ACCOUNT,), 1000):
            created, modified = moments()
            self._store("Account", {
                "AccountCD": code, "AccountID": number, "Description": desc, "Type": kind,
                "AccountClass": kind.upper(), "AccountGroup": None, "Active": code != INACTIVE_ACCOUNT[0],
                "CashAccount": cash, "CurrencyID": "USD", "PostOption": "Detail", "TaxCategory": None,
                "CreatedDateTime": created, "LastModifiedDateTime": modified})
        self.tables["Account"].counter = 1000 + len(ACCOUNTS) + 1
        stock_ids = []
        for n in range(max(len(STOCK_BASES), records // 10)):
            code, desc, price = STOCK_BASES[n % len(STOCK_BASES)]
            if n >= len(STOCK_BASES):
                code, desc = f"{code}-{n // len(STOCK_BASES)}", f"{desc} (alt {n // len(STOCK_BASES)})"
            stock_ids.append(code)
            self._store("StockItem", {
                "InventoryID": code, "Description": desc, "ItemClass": code.split("-")[0], "ItemStatus": "Active",
                "ItemType": "Finished Good", "BaseUOM": "EA", "DefaultPrice": money(price * 1.6),
                "CurrentStdCost": money(price), "DefaultWarehouseID": "MAIN", "LastModified": moments()[1]})
        vendor_ids = self._seed_vendors(rng, records, moments)
        customer_ids = self._seed_customers(rng, records, moments)
        self._seed_bills(rng, records, moments, vendor_ids, stock_ids)
        self._seed_invoices_and_payments(rng, records, moments, customer_ids, stock_ids)
        for table in self.tables.values():
            table.finish_bulk()

    @staticmethod
    def _address(city: tuple[str, str, str], number: int, street: str,
                 street_type: tuple[str, str, str], suite: int | None, variant: int) -> dict[str, Any]:
        line1 = f"{number} {street} {street_type[variant % 3]}"
        line2 = None
        if suite:
            line2 = (f"Suite {suite}", f"Ste {suite}", f"#{suite}")[variant % 3]
            if variant % 2:
                line1, line2 = f"{line1}, {line2}", None
        if variant == 4:
            line1 = line1.upper()
        return {"AddressLine1": line1, "AddressLine2": line2, "City": city[0], "State": city[1],
                "PostalCode": city[2], "Country": "US"}

    def _seed_vendors(self, rng: random.Random, records: int, moments: Callable[[], tuple[str, str]]) -> list[str]:
        homes = [(rng.choice(CITIES), rng.randint(100, 9999), rng.choice(STREETS), rng.choice(STREET_TYPES),
                  rng.choice((None, 100, 200, 310))) for _ in VENDOR_BASES]
        ids = []
        for n in range(records):
            base, generation = VENDOR_BASES[n % len(VENDOR_BASES)], n // len(VENDOR_BASES)
            city, number, street, street_type, suite = homes[n % len(VENDOR_BASES)]
            name = base
            if generation:
                variant = rng.randrange(6)
                if variant == 0:
                    name = f"{base} {rng.choice(VENDOR_SUFFIXES)}".replace(" ,", ",")
                elif variant == 1:
                    name = base.upper()
                elif variant == 2:
                    name = base.replace("&", "and") if "&" in base else base.replace(" Supply", " Supply Co.")
                elif variant == 3:
                    other = rng.choice(CITIES)
                    name, city, number = f"{base} - {other[0]}", other, rng.randint(100, 9999)
                elif variant == 4:
                    name = base.replace(" ", "  ", 1) + "."
                else:
                    name = f"{base}, {rng.choice(('Inc', 'LLC'))}"
            address = self._address(city, number, street, street_type, suite, generation % 5)
            created, modified = moments()
            vendor_id = f"V{n + 1:06d}"
            status = "Active" if rng.random() > 0.06 else rng.choice(("Inactive", "On Hold"))
            contact = {"DisplayName": name, "CompanyName": name, "Email": f"ap@{re.sub(r'[^a-z]', '', base.lower())[:16]}.com",
                       "Phone1": f"+1 ({rng.randint(200, 989)}) 555-{rng.randint(1000, 9999)}", "Address": address}
            self._store("Vendor", {
                "VendorID": vendor_id, "VendorName": name, "LegalName": name, "VendorClass": "MATERIALS",
                "Status": status, "Terms": rng.choice(("30D", "NET15", "NET45")), "CurrencyID": "USD",
                "PaymentMethod": rng.choice(("CHECK", "ACH")), "CashAccount": "10100", "APAccount": "20000",
                "APSubaccount": "000-000", "TaxZone": None, "TaxRegistrationID": f"{rng.randint(10, 99)}-{rng.randint(1000000, 9999999)}",
                "F1099Vendor": rng.random() < 0.2, "F1099Box": None, "CreatedDateTime": created,
                "LastModifiedDateTime": modified, "MainContact": contact, "RemittanceContact": dict(contact)})
            if status == "Active":
                ids.append(vendor_id)
        self.tables["Vendor"].counter = records
        return ids

    def _seed_customers(self, rng: random.Random, records: int, moments: Callable[[], tuple[str, str]]) -> list[str]:
        ids = []
        people = [(rng.choice(RESIDENTIAL_FIRST), rng.choice(RESIDENTIAL_LAST)) for _ in range(max(1, records // 3))]
        for n in range(records):
            if rng.random() < 0.75:
                first, last = people[rng.randrange(len(people))]
                style = rng.randrange(5)
                name = (f"{first} {last}", f"{last}, {first}", f"{first} {last}".upper(),
                        f"{NICKNAMES.get(first, first)} {last}", f"{first} {last} ")[style]
                klass = "RESIDENTIAL"
            else:
                base = rng.choice(COMMERCIAL)
                name = rng.choice((base, base + " LLC", base.replace(" ", "", 1), base.replace("&", "and")))
                first, last = None, None
                klass = "COMMERCIAL"
            city = rng.choice(CITIES)
            address = self._address(city, rng.randint(10, 9999), rng.choice(STREETS), rng.choice(STREET_TYPES),
                                    None, rng.randrange(5))
            created, modified = moments()
            customer_id = f"C{n + 1:06d}"
            email = f"{re.sub(r'[^a-z]', '', name.lower())[:20]}@example.com"
            contact = {"DisplayName": name.strip(), "FirstName": first, "LastName": last, "Email": email,
                       "Phone1": f"+1 ({rng.randint(200, 989)}) 555-{rng.randint(1000, 9999)}", "Address": address}
            status = "Active" if rng.random() > 0.04 else "Inactive"
            self._store("Customer", {
                "CustomerID": customer_id, "CustomerName": name, "CustomerClass": klass, "Status": status,
                "Terms": "30D", "CurrencyID": "USD", "CreditLimit": money(rng.choice((0, 5000, 10000, 25000))),
                "TaxZone": None, "Email": email, "CreatedDateTime": created, "LastModifiedDateTime": modified,
                "MainContact": contact, "BillingContact": dict(contact)})
            if status == "Active":
                ids.append(customer_id)
        self.tables["Customer"].counter = records
        return ids

    @staticmethod
    def _doc_dates(rng: random.Random, created: str) -> tuple[str, str, str]:
        stamp = parse_dt(created) or datetime.now(timezone.utc)
        day = stamp.replace(hour=0, minute=0, second=0, microsecond=0)
        return day.isoformat(), (day + timedelta(days=30)).isoformat(), f"{day.month:02d}{day.year}"

    def _seed_bills(self, rng: random.Random, records: int, moments: Callable[[], tuple[str, str]],
                    vendor_ids: list[str], stock_ids: list[str]) -> None:
        if not vendor_ids:
            return
        used_refs: set[tuple[str, str]] = set()
        for n in range(records):
            vendor = rng.choice(vendor_ids)
            ref = f"INV-{rng.randint(10000, 99999)}"
            while (vendor, ref) in used_refs:
                ref = f"INV-{rng.randint(10000, 99999)}"
            used_refs.add((vendor, ref))
            created, modified = moments()
            date, due, period = self._doc_dates(rng, created)
            branch = rng.choice(BRANCHES)[0]
            po = f"PO{rng.randint(1000, 9999):06d}" if rng.random() < 0.5 else None
            lines = []
            for line_no in range(rng.randint(1, 4)):
                qty = float(rng.randint(1, 10))
                cost = money(rng.uniform(5, 900))
                stock = rng.random() < 0.5
                lines.append({
                    "InventoryID": rng.choice(stock_ids) if stock else "NONSTOCK",
                    "TransactionDescription": rng.choice(BILL_LINES), "Qty": qty, "UOM": "EA", "UnitCost": cost,
                    "ExtendedCost": money(qty * cost), "Amount": money(qty * cost),
                    "Account": "12000" if stock else rng.choice(EXPENSE_ACCOUNTS),
                    "Subaccount": rng.choice(SUBACCOUNTS)[0], "Branch": branch, "NonBillable": False,
                    "POOrderType": "Normal" if po else None, "POOrderNbr": po, "POLine": line_no + 1 if po else None,
                    "POReceiptType": "Receipt" if po else None,
                    "POReceiptNbr": f"PR{rng.randint(1000, 9999):06d}" if po else None,
                    "POReceiptLine": line_no + 1 if po else None})
            amount = money(sum(line["Amount"] for line in lines))
            roll = rng.random()
            status = "Balanced" if roll < 0.4 else "Open" if roll < 0.75 else "On Hold" if roll < 0.85 else "Closed"
            self._store("Bill", {
                "Type": "Bill", "ReferenceNbr": f"{n + 1:06d}", "Status": status, "Hold": status == "On Hold",
                "ApprovedForPayment": status in RELEASED, "Vendor": vendor, "VendorRef": ref, "LocationID": "MAIN",
                "Date": date, "DueDate": due, "PostPeriod": period, "Terms": "30D", "CurrencyID": "USD",
                "Amount": amount, "Balance": 0.0 if status == "Closed" else amount, "TaxTotal": 0.0,
                "BranchID": branch, "CashAccount": None, "Project": "X", "Description": f"{rng.choice(BILL_LINES)} - {ref}",
                "LastModifiedDateTime": modified, "Details": lines})
        self.tables["Bill"].counter = records

    def _seed_invoices_and_payments(self, rng: random.Random, records: int, moments: Callable[[], tuple[str, str]],
                                    customer_ids: list[str], stock_ids: list[str]) -> None:
        if not customer_ids:
            return
        payments_wanted, payments = records // 2, 0
        orders: set[str] = set()
        for n in range(records):
            customer = rng.choice(customer_ids)
            created, modified = moments()
            date, due, period = self._doc_dates(rng, created)
            branch = rng.choice(BRANCHES)[0]
            order = None
            if rng.random() < 0.8:
                order = str(rng.randint(10_000_000, 99_999_999))
                while order in orders:
                    order = str(rng.randint(10_000_000, 99_999_999))
                orders.add(order)
            lines = []
            for _ in range(rng.randint(1, 5)):
                qty = float(rng.randint(1, 4))
                price = money(rng.uniform(40, 1200))
                part = rng.random() < 0.4
                lines.append({
                    "InventoryID": rng.choice(stock_ids) if part else rng.choice(("LABOR", "SERVICE")),
                    "TransactionDescription": rng.choice(INVOICE_LINES), "Qty": qty, "UOM": "EA",
                    "UnitPrice": price, "ExtendedPrice": money(qty * price), "DiscountAmount": 0.0,
                    "Amount": money(qty * price), "Account": "41000" if part else rng.choice(INCOME_ACCOUNTS),
                    "Subaccount": rng.choice(SUBACCOUNTS)[0], "Branch": branch})
            amount = money(sum(line["Amount"] for line in lines))
            roll = rng.random()
            status = "Balanced" if roll < 0.3 else "Open" if roll < 0.7 else "On Hold" if roll < 0.8 else "Closed"
            ref = f"AR{n + 1:06d}"
            invoice = self._store("Invoice", {
                "Type": "Invoice", "ReferenceNbr": ref, "Customer": customer, "CustomerOrder": order,
                "Date": date, "DueDate": due, "PostPeriod": period, "Terms": "30D", "Amount": amount,
                "Balance": amount, "TaxTotal": 0.0, "Status": status, "Hold": status == "On Hold",
                "Description": f"Job {order or n + 1}", "Project": "X", "LocationID": "MAIN",
                "LinkARAccount": "11000", "LinkBranch": branch, "CreatedDateTime": created,
                "LastModifiedDateTime": modified, "Details": lines})
            if payments >= payments_wanted:
                continue
            if status == "Closed" or (status == "Open" and rng.random() < 0.35):
                paid = amount if status == "Closed" else money(amount * rng.choice((0.25, 0.5)))
                if status == "Open":
                    invoice["Balance"] = money(amount - paid)
                else:
                    invoice["Balance"] = 0.0
                payments += 1
                self._seed_payment(rng, payments, moments, customer, branch, paid, invoice, released=True)
            elif status == "Open" and rng.random() < 0.2:
                payments += 1
                self._seed_payment(rng, payments, moments, customer, branch, invoice["Balance"], invoice, released=False)
        while payments < payments_wanted:
            payments += 1
            self._seed_payment(rng, payments, moments, rng.choice(customer_ids), rng.choice(BRANCHES)[0],
                               money(rng.uniform(50, 2000)), None, released=True)
        self.tables["Invoice"].counter = records
        self.tables["Payment"].counter = payments

    def _seed_payment(self, rng: random.Random, n: int, moments: Callable[[], tuple[str, str]], customer: str,
                      branch: str, amount: float, invoice: dict[str, Any] | None, *, released: bool) -> None:
        created, modified = moments()
        date, _, _ = self._doc_dates(rng, created)
        applications = []
        if invoice is not None:
            applications.append({"DocType": "Invoice", "ReferenceNbr": invoice["ReferenceNbr"], "AmountPaid": amount,
                                 "CashDiscountTaken": 0.0, "BalanceWriteOff": 0.0, "DocLineNbr": None,
                                 "CustomerOrder": invoice.get("CustomerOrder"), "Description": invoice.get("Description"),
                                 "Balance": invoice["Balance"]})
        applied = money(sum(a["AmountPaid"] for a in applications))
        available = money(amount - applied)
        status = ("Closed" if available == 0 else "Open") if released else "Balanced"
        self._store("Payment", {
            "Type": "Payment", "ReferenceNbr": f"PM{n:06d}", "CustomerID": customer, "CustomerLocationID": "MAIN",
            "PaymentMethod": rng.choice(("CHECK", "CREDITCARD", "ACH")), "CashAccount": "10100",
            "PaymentRef": str(rng.randint(1000, 999999)), "PaymentAmount": amount, "AvailableBalance": available,
            "AppliedToDocuments": applied, "ApplicationDate": date, "CurrencyID": "USD", "Status": status,
            "Hold": False, "Description": "Customer payment",
            "ExternalRef": f"ST-PAY-{rng.randint(100000, 999999)}" if rng.random() < 0.7 else None,
            "BranchID": branch, "CreatedDateTime": created, "LastModifiedDateTime": modified,
            "DocumentsToApply": applications,
            "ApplicationHistory": [{"DocType": a["DocType"], "ReferenceNbr": a["ReferenceNbr"],
                                    "AmountPaid": a["AmountPaid"], "Date": date} for a in applications] if released else []})

    # ---- control API ------------------------------------------------------------------------------

    def _entity_for(self, name: str) -> EntityDef:
        d = _BY_COLLECTION.get(name) or _BY_LOWER.get(name.lower())
        if d is None:
            raise KeyError(name)
        return d

    def get_entities(self, entity: str) -> list[dict[str, Any]]:
        d = self._entity_for(entity)
        table = self.tables[d.name]
        return [copy.deepcopy(table.by_id[table.by_key[k]]) for k in table.order]

    def put_entity(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        d = self._entity_for(entity)
        body = wrap_plain(d.shape, payload)
        try:
            rec = self._save(d, body, mode="upsert", branch=None, business_date=None)
        except ApiError as exc:
            raise ValueError(self._error_text(exc)) from None
        return copy.deepcopy(rec)

    @staticmethod
    def _error_text(exc: ApiError) -> str:
        if isinstance(exc.body, dict):
            parts = [exc.body.get("error") or exc.body.get("exceptionMessage") or exc.message]
            parts += [f"{'.'.join(map(str, path))}: {msg}" for path, msg in exc.body.get("_errors", [])]
            return " ".join(p for p in parts if p)
        return exc.message

    def tick(self, count: int) -> list[dict[str, Any]]:
        """Edit `count` records (a description, a phone number) so a poll sees them changed."""
        changed = []
        choices = ("Vendor", "Customer", "Bill", "Invoice", "Payment", "Account")
        for _ in range(max(0, count)):
            name = self._tick_rng.choice(choices)
            table = self.tables[name]
            if not table.order:
                continue
            key = table.order[self._tick_rng.randrange(len(table.order))]
            old = table.by_id[table.by_key[key]]
            rec = copy.deepcopy(old)
            stamp = self._tick_rng.randint(1000, 9999)
            if name in ("Vendor", "Customer"):
                rec["MainContact"]["Phone1"] = f"+1 ({self._tick_rng.randint(200, 989)}) 555-{stamp}"
            else:
                base = (rec.get("Description") or "").split(" (rev ")[0]
                rec["Description"] = f"{base} (rev {stamp})"
            rec[ENTITIES[name].change_field or "LastModifiedDateTime"] = iso(self._now())
            table.replace(old, rec)
            changed.append({"entity": name, "collection": ENTITIES[name].collection, "id": rec["id"],
                            "key": [rec.get(k) for k in ENTITIES[name].keys],
                            "LastModifiedDateTime": rec.get(ENTITIES[name].change_field or "")})
        return changed

    def active_sessions(self) -> int:
        with self.lock:
            now = time.time()
            for sid in [s for s, t in self.sessions.items() if t.expires_at <= now]:
                self.sessions.pop(sid, None)
                self._session_locks.pop(sid, None)
            return len(self.sessions)

    # ---- vendor error shapes ------------------------------------------------------------------------

    @staticmethod
    def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return json_response(body, status, headers)

    @staticmethod
    def error_body(message: str, status: int) -> dict[str, Any]:
        return {"message": "An error has occurred.", "exceptionMessage": message, "exceptionType": ERROR_TYPE,
                "stackTrace": "   at PX.Api.ContractBased.EntityService.Process(...)" if status >= 500 else None}

    def error_response(self, status: int, message: str) -> Response:
        body = self.error_body(message, status)
        return self._json({k: v for k, v in body.items() if v is not None}, status)

    def rate_limited_response(self, retry_after: float) -> Response:
        seconds = max(1, int(round(retry_after + 0.499)))
        headers = {"Retry-After": str(seconds)} if self.limits.retry_after_header else {}
        body = {"message": "An error has occurred.",
                "exceptionMessage": "The number of API requests exceeds the limit set by the license.",
                "exceptionType": "PX.Api.ApiRequestsLimitExceededException"}
        return self._json(body, 429, headers)

    def _api_error(self, exc: ApiError) -> Response:
        if exc.body is not None:
            body = {k: v for k, v in exc.body.items() if k != "_errors"} if isinstance(exc.body, dict) else exc.body
            return self._json(body, exc.status, exc.headers)
        response = self.error_response(exc.status, exc.message)
        for name, value in exc.headers.items():
            response.headers[name] = value
        return response

    @staticmethod
    def _oauth_error(error: str, description: str | None = None, status: int = 400) -> Response:
        body = {"error": error}
        if description:
            body["error_description"] = description
        return AcumaticaSandbox._json(body, status, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    # ---- routes -------------------------------------------------------------------------------------

    def register_vendor_routes(self, app: Flask) -> None:
        app.add_url_rule("/identity/connect/token", "acu_token", self._token, methods=["POST"])
        app.add_url_rule("/identity/connect/authorize", "acu_authorize", self._authorize, methods=["GET"])
        app.add_url_rule("/identity/.well-known/openid-configuration", "acu_discovery", self._discovery)
        app.add_url_rule("/entity/auth/login", "acu_login", self._login, methods=["POST"])
        app.add_url_rule("/entity/auth/logout", "acu_logout", self._logout, methods=["POST"])
        app.add_url_rule("/entity", "acu_endpoints", self._endpoints_route, methods=["GET"])
        app.add_url_rule("/entity/<endpoint>/<version>/<path:rest>", "acu_entity", self._entity_route,
                         methods=["GET", "PUT", "POST", "DELETE"])
        model_route(app, "/_sandbox/license", LicenseLimits, lambda: self.limits, self._apply_limits)
        model_route(app, "/_sandbox/settings", AcumaticaSettings, lambda: self.settings,
                    lambda settings: setattr(self, "settings", settings))
        app.add_url_rule("/_sandbox/sessions", "acu_sessions", self._sessions_route, methods=["GET"])

    def _apply_limits(self, limits: LicenseLimits) -> None:
        self.limits = limits
        self._rpm = RateWindow(limits.requests_per_minute, 60.0)

    def _sessions_route(self) -> Response:
        return self._json({"active": self.active_sessions(), "api_users": self.limits.api_users})

    # ---- OAuth 2 ------------------------------------------------------------------------------------

    def _discovery(self) -> Response:
        base = self.base_url
        return self._json({
            "issuer": f"{base}/identity",
            "authorization_endpoint": f"{base}/identity/connect/authorize",
            "token_endpoint": f"{base}/identity/connect/token",
            "scopes_supported": sorted(SCOPES),
            "grant_types_supported": ["authorization_code", "password", "refresh_token"],
            "response_types_supported": ["code"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        })

    def _client_ok(self, client_id: str | None, client_secret: str | None) -> bool:
        if not client_id or "@" not in client_id:
            return False
        guid, tenant = client_id.rsplit("@", 1)
        return (guid.upper() == self.client_guid and tenant.casefold() == self.settings.tenant.casefold()
                and secrets.compare_digest(client_secret or "", self.client_secret))

    def _issue(self, subject: str, scopes: tuple[str, ...], client_id: str) -> Response:
        ttl = self.settings.token_ttl
        access, refresh = self.tokens.issue(subject, ttl, scopes=scopes, with_refresh="offline_access" in scopes,
                                            extra={"kind": "access", "client_id": client_id.upper()})
        with self.lock:
            self.stats.tokens_issued += 1
        body: dict[str, Any] = {"access_token": access, "expires_in": ttl, "token_type": "Bearer",
                                "scope": " ".join(scopes)}
        if refresh:
            body["refresh_token"] = refresh
        return self._json(body, 200, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _token(self) -> Response:
        if request.mimetype != "application/x-www-form-urlencoded":
            return self._oauth_error("invalid_request", "The request must be form-encoded.")
        form = request.form
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if request.authorization is not None and request.authorization.type == "basic":
            client_id = request.authorization.username or client_id
            client_secret = request.authorization.password or client_secret
        grant = form.get("grant_type")
        if not grant:
            return self._oauth_error("invalid_request", "grant_type is missing")
        if grant not in ("password", "refresh_token", "authorization_code"):
            return self._oauth_error("unsupported_grant_type")
        if not self._client_ok(client_id, client_secret):
            self.stats.bump("token_refused")
            return self._oauth_error("invalid_client")
        assert client_id is not None
        if grant == "password":
            username, password = form.get("username"), form.get("password")
            if not username or not password:
                return self._oauth_error("invalid_request", "username and password are required")
            if username.casefold() != self.username.casefold() or not secrets.compare_digest(password, self.password):
                self.stats.bump("token_refused")
                return self._oauth_error("invalid_grant", "invalid_username_or_password")
            requested = tuple(sorted(set((form.get("scope") or "").split())))
            if not requested or not set(requested) <= SCOPES:
                return self._oauth_error("invalid_scope")
            return self._issue(self.username, requested, client_id)
        if grant == "refresh_token":
            issued = self.tokens.use_refresh(form.get("refresh_token") or "")
            if (issued is None or issued.expires_at <= time.time()
                    or issued.extra.get("client_id") != client_id.upper()):
                self.stats.bump("token_refused")
                return self._oauth_error("invalid_grant")
            return self._issue(issued.subject, issued.scopes, client_id)
        code = form.get("code") or ""
        with self.lock:
            grant_info = self.auth_codes.pop(code, None)
        if (grant_info is None or grant_info["expires_at"] <= time.time()
                or grant_info["client_id"] != client_id.upper()
                or grant_info["redirect_uri"] != form.get("redirect_uri")):
            return self._oauth_error("invalid_grant")
        return self._issue(self.username, grant_info["scopes"], client_id)

    def _authorize(self) -> Response:
        args = request.args
        client_id = args.get("client_id") or ""
        guid = client_id.rsplit("@", 1)[0].upper() if "@" in client_id else ""
        if guid != self.client_guid:
            return self._oauth_error("unauthorized_client")
        if args.get("response_type") != "code":
            return self._oauth_error("unsupported_response_type")
        redirect_uri = args.get("redirect_uri") or ""
        if not redirect_uri.startswith(("http://", "https://")):
            return self._oauth_error("invalid_request", "redirect_uri is required")
        scopes = tuple(sorted(set((args.get("scope") or "api").split())))
        if not set(scopes) <= SCOPES:
            return self._oauth_error("invalid_scope")
        code = secrets.token_urlsafe(24)
        with self.lock:
            self.auth_codes[code] = {"client_id": client_id.upper(), "redirect_uri": redirect_uri, "scopes": scopes,
                                     "expires_at": time.time() + AUTH_CODE_TTL_SECONDS}
        query = {"code": code, "scope": " ".join(scopes)}
        if args.get("state"):
            query["state"] = args["state"]
        separator = "&" if "?" in redirect_uri else "?"
        response = Response(status=302)
        response.headers["Location"] = f"{redirect_uri}{separator}{urlencode(query)}"
        return response

    # ---- cookie sessions ----------------------------------------------------------------------------

    def _login(self) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return self.error_response(400, "The request body must be a JSON object with name and password.")
        name, password = body.get("name"), body.get("password")
        tenant, branch = body.get("tenant"), body.get("branch")
        ok = (isinstance(name, str) and isinstance(password, str)
              and name.casefold() == self.username.casefold()
              and secrets.compare_digest(password, self.password)
              and (not tenant or str(tenant).casefold() == self.settings.tenant.casefold()))
        if not ok:
            self.stats.bump("login_refused")
            return self.error_response(self.settings.login_failure_status, "Invalid credentials. Please try again.")
        if branch and self.tables["Branch"].find((branch,)) is None:
            return self.error_response(self.settings.login_failure_status, f"Branch '{branch}' cannot be found in the system.")
        with self.lock:
            previous = request.cookies.get(".ASPXAUTH")
            if previous and previous in self.sessions:
                self.sessions.pop(previous).expires_at = 0
            limit = self.limits.api_users
            if limit and self.active_sessions() >= limit:
                self.stats.bump("login_limit_refused")
                return self.error_response(
                    self.limits.login_limit_status,
                    f"API Login Limit: the license allows {limit} concurrent API users and all are signed in. "
                    "Sign out of unused sessions or try again later.")
            sid, _ = self.tokens.issue(name, self.settings.session_timeout, scopes=("api",),
                                       extra={"kind": "session", "branch": branch})
            issued = self.tokens.check(sid)
            assert issued is not None
            self.sessions[sid] = issued
            self.stats.bump("sessions_opened")
        response = Response(status=204)
        response.set_cookie("ASP.NET_SessionId", secrets.token_hex(12), path="/", httponly=True)
        response.set_cookie(".ASPXAUTH", sid, path="/", httponly=True)
        response.set_cookie("Locale", str(body.get("locale") or "en-US"), path="/")
        return response

    def _logout(self) -> Response:
        sid = request.cookies.get(".ASPXAUTH")
        with self.lock:
            if sid and sid in self.sessions:
                self.sessions.pop(sid).expires_at = 0
                self._session_locks.pop(sid, None)
                self.stats.bump("sessions_closed")
            bearer = self._bearer()
            if bearer and bearer in self.sessions:
                self.sessions.pop(bearer)
                self.stats.bump("sessions_closed")
        response = Response(status=204)
        for name in (".ASPXAUTH", "ASP.NET_SessionId"):
            response.delete_cookie(name, path="/")
        return response

    @staticmethod
    def _bearer() -> str | None:
        return bearer_token(request.headers.get("Authorization", ""))

    def _authenticate(self) -> Principal:
        bearer = self._bearer()
        if bearer is not None:
            issued = self.tokens.check(bearer)
            if issued is None or issued.extra.get("kind") != "access":
                raise ApiError(401, NOT_AUTHORIZED, body={"message": NOT_AUTHORIZED})
            if "api" not in issued.scopes:
                raise ApiError(403, "The access token does not grant the 'api' scope.")
            if self.settings.oauth_sessions_count:
                self._hold_oauth_session(bearer, issued)
            return Principal("oauth", bearer, issued.scopes, None, issued)
        sid = request.cookies.get(".ASPXAUTH")
        if sid:
            issued = self.tokens.check(sid)
            if issued is not None and issued.extra.get("kind") == "session" and sid in self.sessions:
                issued.expires_at = time.time() + self.settings.session_timeout  # sliding expiry
                return Principal("cookie", sid, issued.scopes, issued.extra.get("branch"), issued)
        raise ApiError(401, NOT_AUTHORIZED, body={"message": NOT_AUTHORIZED})

    def _hold_oauth_session(self, bearer: str, issued: IssuedToken) -> None:
        with self.lock:
            if bearer in self.sessions:
                return
            limit = self.limits.api_users
            if limit and self.active_sessions() >= limit:
                raise ApiError(self.limits.login_limit_status,
                               f"API Login Limit: the license allows {limit} concurrent API users.")
            self.sessions[bearer] = issued

    # ---- the entity endpoint ------------------------------------------------------------------------

    def _endpoints_route(self) -> Response:
        """GET /entity: the instance's build and the web-service endpoints it publishes."""
        try:
            self._authenticate()
        except ApiError as exc:
            return self._api_error(exc)
        return self._json({"version": {"acumaticaBuildVersion": "23.209.0016"},
                           "endpoints": [{"name": ENDPOINT_NAME, "version": v, "href": f"{self.base_url}/entity/{ENDPOINT_NAME}/{v}/"}
                                         for v in self.settings.endpoint_versions]})

    def _entity_route(self, endpoint: str, version: str, rest: str) -> Response:
        try:
            principal = self._authenticate()
            if endpoint != ENDPOINT_NAME or version not in self.settings.endpoint_versions:
                raise ApiError(404, f"The endpoint {endpoint}/{version} is not found. "
                               f"Published: {', '.join(f'{ENDPOINT_NAME}/{v}' for v in self.settings.endpoint_versions)}.")
            allowed, wait, _ = self._rpm.hit("license")
            if not allowed:
                self.stats.bump("license_rpm_refused")
                return self.rate_limited_response(wait)
            limits = self.limits
            if not self._gate.enter(limits.concurrent_requests, limits.request_queue, limits.queue_timeout):
                self.stats.bump("license_concurrency_refused")
                return self.rate_limited_response(1.0)
            try:
                lock = self._session_lock(principal)
                with lock if lock is not None else _NULL_LOCK:
                    if self.settings.processing_ms:
                        time.sleep(self.settings.processing_ms / 1000)
                    g.acu_version = version
                    return self._dispatch(request.method, rest, principal)
            finally:
                self._gate.leave()
        except ApiError as exc:
            return self._api_error(exc)
        except Exception as exc:  # a server fault still answers in the vendor's error shape
            return self.error_response(500, f"{type(exc).__name__}: {exc}")

    def _session_lock(self, principal: Principal) -> threading.Lock | None:
        """One request at a time per session, unless the token carries api:concurrent_access."""
        if principal.kind == "oauth" and "api:concurrent_access" in principal.scopes:
            return None
        with self.lock:
            return self._session_locks.setdefault(principal.ident, threading.Lock())

    def _dispatch(self, method: str, rest: str, principal: Principal) -> Response:
        segments = [s for s in rest.split("/") if s != ""]
        if not segments:
            raise ApiError(404, "The entity name is missing from the URL.")
        if segments[0].lower() == "files" and method == "GET" and len(segments) == 2:
            return self._download(segments[1])
        d = _BY_LOWER.get(segments[0].lower())
        if d is None:
            raise ApiError(404, f"The entity '{segments[0]}' is not found in the endpoint.")
        branch = request.headers.get("PX-CbApiBranch") or principal.branch
        if branch and self.tables["Branch"].find((branch,)) is None:
            raise ApiError(400, f"Branch '{branch}' cannot be found in the system.")
        business_date = request.headers.get("PX-CbApiBusinessDate")
        if business_date and parse_dt(business_date) is None:
            raise ApiError(400, f"The business date '{business_date}' is not a valid date.")
        rest_segments = segments[1:]
        self._settle_operations()
        if method == "GET":
            if not rest_segments:
                return self._list(d)
            if rest_segments == ["$adHocSchema"]:
                return self._json(self._schema(d.shape))
            if len(rest_segments) == 3 and rest_segments[1].lower() == "status":
                return self._operation_status(d, rest_segments[0], rest_segments[2])
            return self._get_one(d, rest_segments)
        if method == "PUT":
            if len(rest_segments) >= 3 and rest_segments[-2].lower() == "files":
                return self._attach(d, rest_segments[:-2], rest_segments[-1])
            self._require_json()
            if rest_segments:
                raise ApiError(405, "PUT is allowed on the entity collection only.")
            return self._put(d, branch, business_date)
        if method == "POST":
            if len(rest_segments) != 1:
                raise ApiError(404, "No action is found at this address.")
            self._require_json()
            return self._invoke(d, rest_segments[0])
        if not rest_segments:
            raise ApiError(405, "DELETE needs a record id or key values.")
        return self._delete(d, rest_segments)

    @staticmethod
    def _require_json() -> None:
        if request.content_length and request.mimetype != "application/json":
            raise ApiError(415, f"The request entity's media type '{request.mimetype}' is not supported for this resource.",
                           body={"message": f"The request entity's media type '{request.mimetype}' is not supported "
                                            "for this resource."})

    # ---- reading ------------------------------------------------------------------------------------

    def _int_arg(self, name: str) -> int | None:
        raw = request.args.get(name)
        if raw is None or raw == "":
            return None
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if value < 0:
            raise ApiError(400, f"The value '{raw}' of {name} is not a non-negative integer.")
        return value

    def _list(self, d: EntityDef) -> Response:
        top, skip = self._int_arg("$top"), self._int_arg("$skip") or 0
        text = request.args.get("$filter")
        expand, select = odata.path_tree(request.args.get("$expand")), request.args.get("$select")
        custom = request.args.get("$custom")
        predicate, terms = None, []
        if text:
            try:
                node = parse_filter(text, d.shape.kinds(), d.name)
            except FilterError as exc:
                raise ApiError(400, str(exc)) from None
            compiled = compile_filter(node)
            predicate, terms = (lambda rec: compiled(rec) is True), equality_terms(node)
        with self.lock:
            table = self.tables[d.name]
            ids = table.select(predicate, text or "", terms)
            end = len(ids) if top is None else skip + top
            page = [table.by_id[i] for i in ids[skip:end]]
            select_tree = odata.path_tree(select) if select else None
            body = [self._render(d, rec, expand, select_tree, custom, n) for n, rec in enumerate(page, 1)]
        return self._json(body)

    def _locate(self, d: EntityDef, segments: list[str]) -> dict[str, Any]:
        """A record by its id, or by its key values joined with `/` or `|` (`Bill/Bill|000123`)."""
        table = self.tables[d.name]
        segments = [part for segment in segments for part in segment.split("|")]
        if len(segments) == 1 and re.fullmatch(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", segments[0]):
            rec = table.by_id.get(segments[0].lower())
        elif len(segments) == len(d.keys):
            rec = table.find(tuple(segments))
        else:
            raise ApiError(400, f"The entity '{d.name}' is addressed by {len(d.keys)} key values "
                                f"({', '.join(d.keys)}) or by its id; {len(segments)} given.")
        if rec is None:
            raise ApiError(404, "No entity satisfies the condition.")
        return rec

    def _get_one(self, d: EntityDef, segments: list[str]) -> Response:
        expand = odata.path_tree(request.args.get("$expand"))
        select = request.args.get("$select")
        with self.lock:
            rec = self._locate(d, segments)
            body = self._render(d, rec, expand, odata.path_tree(select) if select else None, request.args.get("$custom"), 1)
        return self._json(body)

    def _schema(self, shape: Shape) -> dict[str, Any]:
        out: dict[str, Any] = {name: {"type": _VALUE_TYPES[kind]} for name, kind in shape.fields.items()}
        for name, sub in shape.linked.items():
            out[name] = self._schema(sub)
        for name, sub in shape.details.items():
            out[name] = [self._schema(sub)]
        return out

    def _version(self) -> str:
        """The endpoint version of the current request (the pinned one outside a request)."""
        if has_request_context():
            return getattr(g, "acu_version", self.settings.endpoint_versions[0])
        return self.settings.endpoint_versions[0]

    def _render(self, d: EntityDef, rec: dict[str, Any], expand: dict[str, Any], select: dict[str, Any] | None,
                custom: str | None, row_number: int) -> dict[str, Any]:
        out: dict[str, Any] = {"id": rec["id"], "rowNumber": row_number, "note": {"value": rec.get("note") or ""}}
        self._render_level(d.shape, rec, out, expand, select)
        out["custom"] = self._render_custom(rec.get("custom") or {}, custom)
        if "files" in expand:
            out["files"] = [dict(f) for f in rec.get("files") or []]
        version = self._version()
        out["_links"] = {
            "self": f"/entity/{ENDPOINT_NAME}/{version}/{d.name}/{rec['id']}",
            "files:put": f"/entity/{ENDPOINT_NAME}/{version}/files/{d.graph}/{d.view}/{rec['id']}/{{filename}}",
        }
        return out

    def _render_level(self, shape: Shape, src: dict[str, Any], out: dict[str, Any], expand: dict[str, Any],
                      select: dict[str, Any] | None) -> None:
        for name in shape.fields:
            if select is not None and name not in select:
                continue
            value = src.get(name)
            out[name] = {} if value is None else {"value": value}
        for name, sub in shape.linked.items():
            if name not in expand or (select is not None and name not in select):
                continue
            obj = src.get(name) or {}
            child: dict[str, Any] = {"id": obj.get("id"), "rowNumber": 1, "note": {"value": ""}}
            self._render_level(sub, obj, child, expand[name], (select or {}).get(name) or None)
            child["custom"] = {}
            out[name] = child
        for name, sub in shape.details.items():
            if name not in expand or (select is not None and name not in select):
                continue
            rows = []
            for number, row in enumerate(src.get(name) or [], 1):
                child = {"id": row["id"], "rowNumber": number, "note": {"value": row.get("note") or ""}}
                self._render_level(sub, row, child, expand[name], (select or {}).get(name) or None)
                child["custom"] = {}
                rows.append(child)
            out[name] = rows

    @staticmethod
    def _render_custom(stored: dict[str, Any], requested: str | None) -> dict[str, Any]:
        if not requested:
            return {}
        out: dict[str, Any] = {}
        for item in requested.split(","):
            view, _, name = item.strip().partition(".")
            value = (stored.get(view) or {}).get(name)
            if value is not None:
                out.setdefault(view, {})[name] = value
        return out

    # ---- writing ------------------------------------------------------------------------------------

    def _put(self, d: EntityDef, branch: str | None, business_date: str | None) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        if request.headers.get("If-None-Match", "").strip() == "*":
            mode = "insert"
        elif request.headers.get("If-Match", "").strip() == "*":
            mode = "update"
        else:
            mode = "upsert"
        with self.lock:
            rec = self._save(d, body, mode=mode, branch=branch, business_date=business_date)
            select = request.args.get("$select")
            out = self._render(d, rec, odata.path_tree(request.args.get("$expand")), odata.path_tree(select) if select else None,
                               request.args.get("$custom"), 1)
        return self._json(out)

    def _save(self, d: EntityDef, body: dict[str, Any], *, mode: str, branch: str | None,
              business_date: str | None) -> dict[str, Any]:
        """Upsert one record: locate, merge, default, validate, commit; raises ApiError."""
        table = self.tables[d.name]
        with self.lock:
            existing = None
            rid = body.get("id")
            if rid:
                existing = table.by_id.get(str(rid).lower())
            key_values = []
            for key in d.keys:
                raw = body.get(key)
                value = raw.get("value") if isinstance(raw, dict) else None
                key_values.append(value if value not in (None, "") else d.key_defaults.get(key))
            if existing is None and all(v not in (None, "") for v in key_values):
                existing = table.find(tuple(key_values))
            if mode == "insert" and existing is not None:
                raise ApiError(self.settings.precondition_status, f"The {d.name} record already exists.")
            if mode == "update" and existing is None:
                raise ApiError(self.settings.precondition_status, f"The {d.name} record to update cannot be found.")
            errors: list[tuple[tuple[Any, ...], str]] = []
            candidate = copy.deepcopy(existing) if existing is not None else self._blank(d.shape)
            if existing is None:
                candidate.update({"note": "", "custom": {}, "files": []})
            touched = self._merge(d.shape, candidate, body, (), errors, d.readonly)
            for key, value in zip(d.keys, key_values):
                if existing is not None:
                    if key in touched and norm(candidate.get(key)) != norm(existing.get(key)) and rid:
                        errors.append(((key,), "The key field cannot be changed."))
                    candidate[key] = existing.get(key)
                elif candidate.get(key) in (None, "") and value not in (None, ""):
                    candidate[key] = value
            numbered = d.numbering[0] if d.numbering else None
            if not errors:  # values that failed conversion stop the save before any business rule
                context = {"branch": branch, "business_date": business_date, "touched": touched}
                getattr(self, f"_rules_{d.name.lower()}")(candidate, existing, context, errors)
            if existing is None:
                for key in d.keys:
                    if candidate.get(key) in (None, "") and key != numbered:
                        errors.append(((key,), f"'{key}' cannot be empty."))
            if errors:
                if existing is None and numbered and candidate.get(numbered) in (None, ""):
                    candidate[numbered] = "<NEW>"  # what the screen shows before a number is assigned
                self._refuse(d, candidate, errors, existing is None)
            if existing is None and numbered and candidate.get(numbered) in (None, ""):
                candidate[numbered] = table.next_number()
            self._clean(candidate)
            now = iso(self._now())
            if d.change_field:
                candidate[d.change_field] = now
            if existing is None:
                if d.created_field:
                    candidate[d.created_field] = now
                if table.find(tuple(candidate.get(k) for k in d.keys)) is not None:
                    raise ApiError(self.settings.precondition_status, f"The {d.name} record already exists.")
                table.add(candidate)
            else:
                table.replace(existing, candidate)
            return candidate

    def _merge(self, shape: Shape, target: dict[str, Any], body: dict[str, Any], path: tuple[Any, ...],
               errors: list[tuple[tuple[Any, ...], str]], readonly: frozenset[str] = frozenset()) -> set[str]:
        """Apply a value-object body onto a stored record; returns the names it set."""
        touched: set[str] = set()
        for name, raw in body.items():
            if name in ("id", "rowNumber", "delete", "_links", "files", "error"):
                continue
            if name == "note":
                if not _is_value_object(raw):
                    raise ApiError(400, "The 'note' field must be an object with a 'value' property.")
                target["note"] = raw.get("value") or ""
                touched.add(name)
            elif name == "custom":
                if isinstance(raw, dict):
                    for view, fields in raw.items():
                        if isinstance(fields, dict):
                            target.setdefault("custom", {}).setdefault(view, {}).update(fields)
            elif name in shape.fields:
                if not _is_value_object(raw):
                    where = "/".join(str(p) for p in (*path, name) if not _looks_like_id(p))
                    raise ApiError(400, f"Cannot deserialize the field '{where}': expected an object with a "
                                        "'value' property.")
                if name in readonly:
                    continue
                try:
                    target[name] = coerce(shape.fields[name], raw.get("value"))
                except ValueError as exc:
                    target[name] = raw.get("value")
                    errors.append(((*path, name), str(exc)))
                touched.add(name)
            elif name in shape.linked:
                if not isinstance(raw, dict):
                    raise ApiError(400, f"Cannot deserialize the linked entity '{name}': expected an object.")
                target.setdefault(name, self._blank(shape.linked[name]))
                self._merge(shape.linked[name], target[name], raw, (*path, name), errors)
                touched.add(name)
            elif name in shape.details:
                if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
                    raise ApiError(400, f"Cannot deserialize the detail collection '{name}': expected an array of objects.")
                self._merge_rows(shape.details[name], target.setdefault(name, []), raw, (*path, name), errors)
                touched.add(name)
        return touched

    def _merge_rows(self, shape: Shape, rows: list[dict[str, Any]], incoming: list[dict[str, Any]],
                    path: tuple[Any, ...], errors: list[tuple[tuple[Any, ...], str]]) -> None:
        """Rows with a known id are updated (or removed with `delete: true`); rows without one are added."""
        by_id = {row["id"]: row for row in rows}
        for raw in incoming:
            rid = str(raw.get("id") or "").lower()
            if raw.get("delete"):
                if rid in by_id:
                    rows.remove(by_id.pop(rid))
                continue
            row = by_id.get(rid)
            if row is None:
                row = {"id": self._new_id(), "_new": True}
                rows.append(row)
                by_id[row["id"]] = row
            row["_touched"] = self._merge(shape, row, raw, (*path, row["id"]), errors)

    def _refuse(self, d: EntityDef, candidate: dict[str, Any], errors: list[tuple[tuple[Any, ...], str]],
                inserting: bool) -> None:
        expand = {name: {} for name in d.shape.details}
        expand.update({name: {} for name in d.shape.linked})
        body = self._render(d, self._clean(candidate), expand, None, None, 1)
        for path, message in errors:
            self._place_error(body, path, message)
        verb = "Inserting" if inserting else "Updating"
        headline = f"{verb} '{d.name}' record raised at least one error. Please review the errors."
        body["error"] = " ".join([headline, *(message for path, message in errors if not path)])
        body["_errors"] = [(tuple(p for p in path if not _looks_like_id(p)), m) for path, m in errors]
        raise ApiError(self.settings.validation_status, body["error"], body=body)

    @staticmethod
    def _place_error(body: dict[str, Any], path: tuple[Any, ...], message: str) -> None:
        node: Any = body
        if not path:
            return
        for part in path[:-1]:
            if isinstance(node, dict) and isinstance(node.get(part), list):
                node = node[part]
            elif isinstance(node, list):
                node = next((row for row in node if row.get("id") == part), None)
            elif isinstance(node, dict):
                node = node.get(part)
            if node is None:
                return
        if isinstance(node, dict):
            slot = node.get(path[-1])
            if not isinstance(slot, dict):
                slot = node[path[-1]] = {}
            slot["error"] = message

    @staticmethod
    def _clean(rec: dict[str, Any]) -> dict[str, Any]:
        """Drop the merge bookkeeping keys from detail rows."""
        for value in rec.values():
            if isinstance(value, list):
                for row in value:
                    if isinstance(row, dict):
                        row.pop("_new", None)
                        row.pop("_touched", None)
        return rec

    # ---- business rules ---------------------------------------------------------------------------

    def _check_ref(self, entity: str, value: Any, path: tuple[Any, ...], label: str,
                   errors: list[tuple[tuple[Any, ...], str]]) -> dict[str, Any] | None:
        """The referenced record, or None with an error when it is missing or inactive."""
        if value in (None, ""):
            return None
        rec = self.tables[entity].find((value,))
        if rec is None:
            errors.append((path, f"{label} '{value}' cannot be found in the system."))
        elif rec.get("Active") is False:
            errors.append((path, f"{label} '{value}' is inactive."))
            return None
        return rec

    def _business_day(self, context: dict[str, Any]) -> datetime:
        stamp = parse_dt(context.get("business_date")) if context.get("business_date") else None
        stamp = stamp or datetime.fromtimestamp(self._now(), timezone.utc)
        return stamp.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)

    def _rules_vendor(self, rec: dict[str, Any], existing: dict[str, Any] | None, context: dict[str, Any],
                      errors: list[tuple[tuple[Any, ...], str]]) -> None:
        if existing is None:
            for name, value in (("Status", "Active"), ("VendorClass", "DEFAULT"), ("Terms", "30D"), ("CurrencyID", "USD"),
                                ("PaymentMethod", "CHECK"), ("CashAccount", "10100"), ("APAccount", "20000"),
                                ("APSubaccount", "000-000"), ("F1099Vendor", False)):
                if rec.get(name) is None:
                    rec[name] = value
        if not (rec.get("VendorName") or "").strip():
            errors.append((("VendorName",), "'Vendor Name' cannot be empty."))
        if rec.get("LegalName") is None:
            rec["LegalName"] = rec.get("VendorName")
        if rec.get("Status") not in VENDOR_STATUSES:
            errors.append((("Status",), f"'{rec.get('Status')}' is not a valid vendor status."))
        self._check_ref("Account", rec.get("APAccount"), ("APAccount",), "Account", errors)
        self._check_ref("Subaccount", rec.get("APSubaccount"), ("APSubaccount",), "Subaccount", errors)
        self._clean(rec)

    def _rules_customer(self, rec: dict[str, Any], existing: dict[str, Any] | None, context: dict[str, Any],
                        errors: list[tuple[tuple[Any, ...], str]]) -> None:
        if existing is None:
            for name, value in (("Status", "Active"), ("CustomerClass", "DEFAULT"), ("Terms", "30D"),
                                ("CurrencyID", "USD"), ("CreditLimit", 0.0)):
                if rec.get(name) is None:
                    rec[name] = value
        if not (rec.get("CustomerName") or "").strip():
            errors.append((("CustomerName",), "'Customer Name' cannot be empty."))
        if rec.get("Status") not in CUSTOMER_STATUSES:
            errors.append((("Status",), f"'{rec.get('Status')}' is not a valid customer status."))
        if (rec.get("CreditLimit") or 0) < 0:
            errors.append((("CreditLimit",), "The credit limit cannot be negative."))
        if rec.get("Email") is None and (rec.get("MainContact") or {}).get("Email"):
            rec["Email"] = rec["MainContact"]["Email"]
        self._clean(rec)

    def _document_defaults(self, rec: dict[str, Any], existing: dict[str, Any] | None, context: dict[str, Any],
                           partner: dict[str, Any] | None) -> None:
        """Date, hold, terms, due date and period of a new AP/AR document."""
        if existing is not None:
            return
        day = self._business_day(context)
        if rec.get("Date") is None:
            rec["Date"] = day.isoformat()
        if rec.get("Hold") is None:
            rec["Hold"] = self.settings.hold_on_entry
        if rec.get("Terms") is None:
            rec["Terms"] = (partner or {}).get("Terms") or "30D"
        date = parse_dt(rec.get("Date")) or day
        if rec.get("DueDate") is None:
            days = int(re.sub(r"\D", "", str(rec.get("Terms"))) or 30)
            rec["DueDate"] = (date + timedelta(days=days)).isoformat()
        if rec.get("PostPeriod") is None:
            rec["PostPeriod"] = f"{date.month:02d}{date.year}"

    def _released_edit(self, rec: dict[str, Any], existing: dict[str, Any] | None, context: dict[str, Any],
                       editable: frozenset[str], errors: list[tuple[tuple[Any, ...], str]]) -> bool:
        """A released document keeps its amounts and lines; only a few fields may change."""
        if existing is None or existing.get("Status") not in RELEASED:
            return False
        self._clean(rec)
        for name in context["touched"] - editable:
            if rec.get(name) != existing.get(name):
                errors.append(((), f"The document has been released; '{name}' cannot be changed."))
                break
        return True

    def _lines(self, rec: dict[str, Any], branch_field: str, cost: bool, default_account: str, context: dict[str, Any],
               errors: list[tuple[tuple[Any, ...], str]]) -> float:
        price, extended = ("UnitCost", "ExtendedCost") if cost else ("UnitPrice", "ExtendedPrice")
        total = 0.0
        for row in rec.get("Details") or []:
            touched = row.pop("_touched", set())
            is_new = row.pop("_new", False)
            path = ("Details", row["id"])
            if is_new:
                row.setdefault("Qty", None)
                if row.get("Qty") is None:
                    row["Qty"] = 1.0
                if row.get("Account") is None:
                    row["Account"] = default_account
                if row.get("Subaccount") is None:
                    row["Subaccount"] = "000-000"
                if row.get("Branch") is None:
                    row["Branch"] = rec.get(branch_field) or context.get("branch") or "HQ"
                if row.get("UOM") is None:
                    row["UOM"] = "EA"
            qty = float(row.get("Qty") or 0)
            if "Amount" in touched and price not in touched:
                amount = float(row.get("Amount") or 0)
                row[price] = money(amount / qty) if qty else 0.0
                row[extended] = money(amount)
            else:
                row[extended] = money(qty * float(row.get(price) or 0))
                row["Amount"] = money(row[extended] - float(row.get("DiscountAmount") or 0))
            self._check_ref("Account", row.get("Account"), (*path, "Account"), "Account", errors)
            if row.get("Account") in (None, ""):
                errors.append(((*path, "Account"), "'Account' cannot be empty."))
            self._check_ref("Subaccount", row.get("Subaccount"), (*path, "Subaccount"), "Subaccount", errors)
            self._check_ref("Branch", row.get("Branch"), (*path, "Branch"), "Branch", errors)
            item = row.get("InventoryID")
            if item not in (None, "") and str(item).upper() not in NON_STOCK_ITEMS:
                if self.tables["StockItem"].find((item,)) is None:
                    errors.append(((*path, "InventoryID"), f"Inventory ID '{item}' cannot be found in the system."))
            if qty < 0:
                errors.append(((*path, "Qty"), "The quantity cannot be negative."))
            total += float(row.get("Amount") or 0)
        return money(total)

    def _rules_bill(self, rec: dict[str, Any], existing: dict[str, Any] | None, context: dict[str, Any],
                    errors: list[tuple[tuple[Any, ...], str]]) -> None:
        if rec.get("Type") in (None, ""):
            rec["Type"] = "Bill"
        if rec["Type"] not in BILL_TYPES:
            errors.append((("Type",), f"'{rec['Type']}' is not a valid bill type. Use one of: {', '.join(BILL_TYPES)}."))
        if self._released_edit(rec, existing, context, frozenset({"Description", "note", "ApprovedForPayment", "DueDate"}), errors):
            self._clean(rec)
            return
        vendor = None
        if rec.get("Vendor") in (None, ""):
            errors.append((("Vendor",), "'Vendor' cannot be empty."))
        else:
            vendor = self.tables["Vendor"].find((rec["Vendor"],))
            if vendor is None:
                errors.append((("Vendor",), f"Vendor '{rec['Vendor']}' cannot be found in the system."))
            elif vendor.get("Status") in ("Inactive", "On Hold"):
                errors.append((("Vendor",), f"The vendor status is '{vendor['Status']}'."))
        if vendor is not None and existing is None:
            rec["CurrencyID"] = rec.get("CurrencyID") or vendor.get("CurrencyID")
        if rec.get("BranchID") is None:
            rec["BranchID"] = context.get("branch") or "HQ"
        self._check_ref("Branch", rec.get("BranchID"), ("BranchID",), "Branch", errors)
        self._document_defaults(rec, existing, context, vendor)
        if self.settings.duplicate_vendor_ref_error and rec.get("VendorRef") and rec.get("Vendor"):
            table = self.tables["Bill"]
            same_ref = table.index["VendorRef"].get(norm(rec["VendorRef"]), set())
            same_vendor = table.index["Vendor"].get(norm(rec["Vendor"]), set())
            for other_id in same_ref & same_vendor:
                if other_id != rec["id"]:
                    other = table.by_id[other_id]
                    errors.append((("VendorRef",), f"The document {other['Type']} {other['ReferenceNbr']} with the same "
                                                    f"vendor reference number '{rec['VendorRef']}' already exists."))
                    break
        details_total = self._lines(rec, "BranchID", True, self.settings.default_expense_account, context, errors)
        if rec.get("Details"):
            rec["Amount"] = details_total
        rec["Amount"] = money(rec.get("Amount") or 0)
        if rec["Amount"] < 0:
            errors.append((("Amount",), "The document amount cannot be negative."))
        rec["TaxTotal"] = money(rec.get("TaxTotal") or 0)
        rec["Balance"] = rec["Amount"]
        rec["Status"] = "On Hold" if rec.get("Hold") else "Balanced"
        rec.setdefault("ApprovedForPayment", False)
        self._clean(rec)

    def _rules_invoice(self, rec: dict[str, Any], existing: dict[str, Any] | None, context: dict[str, Any],
                       errors: list[tuple[tuple[Any, ...], str]]) -> None:
        if rec.get("Type") in (None, ""):
            rec["Type"] = "Invoice"
        if rec["Type"] not in INVOICE_TYPES:
            errors.append((("Type",), f"'{rec['Type']}' is not a valid invoice type. Use one of: {', '.join(INVOICE_TYPES)}."))
        if self._released_edit(rec, existing, context, frozenset({"Description", "note", "DueDate"}), errors):
            self._clean(rec)
            return
        customer = None
        if rec.get("Customer") in (None, ""):
            errors.append((("Customer",), "'Customer' cannot be empty."))
        else:
            customer = self.tables["Customer"].find((rec["Customer"],))
            if customer is None:
                errors.append((("Customer",), f"Customer '{rec['Customer']}' cannot be found in the system."))
            elif customer.get("Status") == "Inactive":
                errors.append((("Customer",), "The customer status is 'Inactive'."))
        if rec.get("LinkBranch") is None:
            rec["LinkBranch"] = context.get("branch") or "HQ"
        if rec.get("LinkARAccount") is None:
            rec["LinkARAccount"] = "11000"
        self._check_ref("Branch", rec.get("LinkBranch"), ("LinkBranch",), "Branch", errors)
        self._document_defaults(rec, existing, context, customer)
        total = self._lines(rec, "LinkBranch", False, self.settings.default_income_account, context, errors)
        if rec.get("Details"):
            rec["Amount"] = total
        rec["Amount"] = money(rec.get("Amount") or 0)
        rec["TaxTotal"] = money(rec.get("TaxTotal") or 0)
        rec["Balance"] = rec["Amount"]
        rec["Status"] = "On Hold" if rec.get("Hold") else "Balanced"
        self._clean(rec)

    def _rules_payment(self, rec: dict[str, Any], existing: dict[str, Any] | None, context: dict[str, Any],
                       errors: list[tuple[tuple[Any, ...], str]]) -> None:
        if rec.get("Type") in (None, ""):
            rec["Type"] = "Payment"
        if rec["Type"] not in PAYMENT_TYPES:
            errors.append((("Type",), f"'{rec['Type']}' is not a valid payment type. Use one of: {', '.join(PAYMENT_TYPES)}."))
        if self._released_edit(rec, existing, context, frozenset({"Description", "note"}), errors):
            self._clean(rec)
            return
        customer = None
        if rec.get("CustomerID") in (None, ""):
            errors.append((("CustomerID",), "'Customer' cannot be empty."))
        else:
            customer = self.tables["Customer"].find((rec["CustomerID"],))
            if customer is None:
                errors.append((("CustomerID",), f"Customer '{rec['CustomerID']}' cannot be found in the system."))
        if existing is None:
            for name, value in (("PaymentMethod", "CHECK"), ("CashAccount", "10100"), ("CurrencyID", "USD"),
                                ("CustomerLocationID", "MAIN")):
                if rec.get(name) is None:
                    rec[name] = value
            if rec.get("BranchID") is None:
                rec["BranchID"] = context.get("branch") or "HQ"
            if rec.get("ApplicationDate") is None:
                rec["ApplicationDate"] = self._business_day(context).isoformat()
            if rec.get("Hold") is None:
                rec["Hold"] = self.settings.hold_on_entry
        cash = self._check_ref("Account", rec.get("CashAccount"), ("CashAccount",), "Cash account", errors)
        if cash is not None and not cash.get("CashAccount"):
            errors.append((("CashAccount",), f"Account '{rec['CashAccount']}' is not a cash account."))
        amount = money(rec.get("PaymentAmount") or 0)
        rec["PaymentAmount"] = amount
        if amount <= 0 and rec["Type"] in ("Payment", "Prepayment"):
            errors.append((("PaymentAmount",), "The payment amount must be greater than zero."))
        applied = 0.0
        invoices = self.tables["Invoice"]
        for row in rec.get("DocumentsToApply") or []:
            row.pop("_touched", None)
            row.pop("_new", None)
            path = ("DocumentsToApply", row["id"])
            row["DocType"] = row.get("DocType") or "Invoice"
            invoice = invoices.find((row["DocType"], row.get("ReferenceNbr")))
            if invoice is None or (customer is not None and norm(invoice.get("Customer")) != norm(rec.get("CustomerID"))):
                errors.append(((*path, "ReferenceNbr"),
                               f"{row['DocType']} '{row.get('ReferenceNbr')}' cannot be found in the system."))
                continue
            if invoice.get("Status") != "Open":
                errors.append(((*path, "ReferenceNbr"),
                               f"{row['DocType']} '{row.get('ReferenceNbr')}' is not released or is already closed "
                               f"(status '{invoice.get('Status')}')."))
                continue
            if row.get("AmountPaid") is None:
                row["AmountPaid"] = min(float(invoice.get("Balance") or 0), max(0.0, amount - applied))
            row["AmountPaid"] = money(row["AmountPaid"])
            if row["AmountPaid"] > float(invoice.get("Balance") or 0) + 0.004:
                errors.append(((*path, "AmountPaid"),
                               f"The amount paid exceeds the balance {invoice.get('Balance'):.2f} of the document."))
            row["Balance"] = invoice.get("Balance")
            row["CustomerOrder"] = invoice.get("CustomerOrder")
            row.setdefault("CashDiscountTaken", 0.0)
            row.setdefault("BalanceWriteOff", 0.0)
            applied += row["AmountPaid"]
        applied = money(applied)
        if applied > amount + 0.004:
            errors.append(((), f"The application total {applied:.2f} exceeds the payment amount {amount:.2f}."))
        rec["AppliedToDocuments"] = applied
        rec["AvailableBalance"] = money(amount - applied)
        rec["Status"] = "On Hold" if rec.get("Hold") else "Balanced"
        self._clean(rec)

    def _rules_account(self, rec: dict[str, Any], existing: dict[str, Any] | None, context: dict[str, Any],
                       errors: list[tuple[tuple[Any, ...], str]]) -> None:
        if rec.get("Type") not in ACCOUNT_TYPES:
            errors.append((("Type",), f"'{rec.get('Type')}' is not a valid account type. Use one of: {', '.join(ACCOUNT_TYPES)}."))
        if existing is None:
            table = self.tables["Account"]
            table.counter += 1
            rec["AccountID"] = table.counter
            for name, value in (("Active", True), ("CashAccount", False), ("CurrencyID", "USD"), ("PostOption", "Detail")):
                if rec.get(name) is None:
                    rec[name] = value
            if rec.get("AccountClass") is None and rec.get("Type") in ACCOUNT_TYPES:
                rec["AccountClass"] = rec["Type"].upper()

    def _rules_subaccount(self, rec: dict[str, Any], existing: dict[str, Any] | None, context: dict[str, Any],
                          errors: list[tuple[tuple[Any, ...], str]]) -> None:
        code = str(rec.get("SubaccountCD") or "")
        if not SUBACCOUNT_FORMAT.match(code):
            errors.append((("SubaccountCD",), f"'{code}' does not match the subaccount segment mask XXX-XXX."))
        if existing is None:
            table = self.tables["Subaccount"]
            table.counter += 1
            rec["SubaccountID"] = table.counter
            for name, value in (("Active", True), ("Secured", False)):
                if rec.get(name) is None:
                    rec[name] = value

    def _rules_branch(self, rec: dict[str, Any], existing: dict[str, Any] | None, context: dict[str, Any],
                      errors: list[tuple[tuple[Any, ...], str]]) -> None:
        if existing is None:
            for name, value in (("Active", True), ("Country", "US"), ("BaseCurrency", "USD")):
                if rec.get(name) is None:
                    rec[name] = value
            rec["BranchName"] = rec.get("BranchName") or rec.get("BranchID")

    def _rules_stockitem(self, rec: dict[str, Any], existing: dict[str, Any] | None, context: dict[str, Any],
                         errors: list[tuple[tuple[Any, ...], str]]) -> None:
        if existing is None:
            for name, value in (("ItemStatus", "Active"), ("ItemType", "Finished Good"), ("BaseUOM", "EA"),
                                ("DefaultWarehouseID", "MAIN")):
                if rec.get(name) is None:
                    rec[name] = value
        if not (rec.get("Description") or "").strip():
            errors.append((("Description",), "'Description' cannot be empty."))

    def _delete(self, d: EntityDef, segments: list[str]) -> Response:
        with self.lock:
            rec = self._locate(d, segments)
            if rec.get("Status") in RELEASED and d.name in ("Bill", "Invoice", "Payment"):
                raise ApiError(self.settings.validation_status, "The document has been released and cannot be deleted.")
            references = {"Vendor": ("Bill", "Vendor"), "Customer": ("Invoice", "Customer")}.get(d.name)
            if references and self.tables[references[0]].index[references[1]].get(norm(rec[d.keys[0]])):
                raise ApiError(self.settings.validation_status,
                               f"The {d.name.lower()} '{rec[d.keys[0]]}' cannot be deleted because documents refer to it.")
            self.tables[d.name].remove(rec)
        return Response(status=204)

    # ---- files ----------------------------------------------------------------------------------

    def _attach(self, d: EntityDef, segments: list[str], filename: str) -> Response:
        with self.lock:
            rec = self._locate(d, segments)
            file_id = self._new_id()
            keys = " ".join(str(rec.get(k)) for k in d.keys)
            self.files[file_id] = (filename, request.get_data(), request.mimetype or "application/octet-stream")
            version = self._version()
            rec.setdefault("files", []).append({"id": file_id, "filename": f"{d.name} ({keys})\\{filename}",
                                                "href": f"/entity/{ENDPOINT_NAME}/{version}/files/{file_id}"})
            self.tables[d.name].touch()
        return Response(status=204)

    def _download(self, file_id: str) -> Response:
        with self.lock:
            stored = self.files.get(file_id.lower())
        if stored is None:
            raise ApiError(404, "The file cannot be found.")
        name, data, mimetype = stored
        response = Response(data, status=200, mimetype=mimetype)
        response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    # ---- actions --------------------------------------------------------------------------------

    def _invoke(self, d: EntityDef, action: str) -> Response:
        handler_name = next((h for a, h in d.actions.items() if a.lower() == action.lower()), None)
        if handler_name is None:
            raise ApiError(404, f"The action '{action}' is not found in the entity '{d.name}'.")
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "The action body must be a JSON object with 'entity' and 'parameters'.")
        target = body.get("entity") or body.get("Entity")
        if not isinstance(target, dict):
            raise ApiError(400, "The action body has no 'entity' to apply the action to.")
        with self.lock:
            rec = None
            if target.get("id"):
                rec = self.tables[d.name].by_id.get(str(target["id"]).lower())
            else:
                values = []
                for key in d.keys:
                    raw = target.get(key)
                    value = raw.get("value") if isinstance(raw, dict) else raw
                    values.append(value if value not in (None, "") else d.key_defaults.get(key))
                if all(values):
                    rec = self.tables[d.name].find(tuple(values))
            if rec is None:
                raise ApiError(404, "No entity satisfies the condition.")
            if rec.get("Hold"):
                raise ApiError(self.settings.validation_status, "The document is on hold and cannot be released.")
            if rec.get("Status") != "Balanced":
                raise ApiError(self.settings.validation_status,
                               f"The document status is '{rec.get('Status')}'; only a Balanced document can be released.")
            op = Operation(self._new_id(), d.name, action, rec["id"], time.monotonic(), self.settings.action_pending_polls)
            self.operations[op.id] = op
            self._pending[op.id] = op
            self.stats.bump("actions_started")
        version = self._version()
        response = Response(status=202)
        response.headers["Location"] = f"/entity/{ENDPOINT_NAME}/{version}/{d.name}/{action}/status/{op.id}"
        return response

    def _operation_status(self, d: EntityDef, action: str, op_id: str) -> Response:
        with self.lock:
            op = self.operations.get(op_id.lower())
            if op is None or op.entity != d.name or op.action.lower() != action.lower():
                raise ApiError(404, "Process Not Found.")
            if not op.done and op.pending_polls > 0:
                op.pending_polls -= 1
                return Response(status=202)
            self._complete(op)
            if op.error:
                raise ApiError(self.settings.validation_status, op.error)
        return Response(status=204)

    def _settle_operations(self) -> None:
        """Actions run on the server whether or not anyone polls: finish those past their time."""
        if not self._pending:
            return
        with self.lock:
            cutoff = time.monotonic() - self.settings.action_seconds
            for op in list(self._pending.values()):
                if not op.done and op.started <= cutoff:
                    self._complete(op)

    def _complete(self, op: Operation) -> None:
        if op.done:
            return
        op.done = True
        self._pending.pop(op.id, None)
        table = self.tables[op.entity]
        old = table.by_id.get(op.record_id)
        if old is None:
            op.error = "The document was deleted before the process finished."
            return
        if old.get("Status") != "Balanced" or old.get("Hold"):
            op.error = f"The document status is '{old.get('Status')}'; only a Balanced document can be released."
            return
        rec = copy.deepcopy(old)
        now = iso(self._now())
        if op.entity == "Payment":
            invoices = self.tables["Invoice"]
            for row in rec.get("DocumentsToApply") or []:
                invoice = invoices.find((row.get("DocType") or "Invoice", row.get("ReferenceNbr")))
                if invoice is None or invoice.get("Status") != "Open" or invoice["Balance"] + 0.004 < row["AmountPaid"]:
                    op.error = (f"The application to {row.get('DocType')} {row.get('ReferenceNbr')} is no longer "
                                "possible; the document balance changed.")
                    return
            for row in rec.get("DocumentsToApply") or []:
                old_invoice = invoices.find((row.get("DocType") or "Invoice", row.get("ReferenceNbr")))
                assert old_invoice is not None
                invoice = copy.deepcopy(old_invoice)
                invoice["Balance"] = money(invoice["Balance"] - row["AmountPaid"])
                if invoice["Balance"] <= 0:
                    invoice["Balance"], invoice["Status"] = 0.0, "Closed"
                invoice["LastModifiedDateTime"] = now
                invoices.replace(old_invoice, invoice)
                row["Balance"] = invoice["Balance"]
                rec.setdefault("ApplicationHistory", []).append({
                    "id": self._new_id(), "DocType": row.get("DocType"), "ReferenceNbr": row.get("ReferenceNbr"),
                    "AmountPaid": row["AmountPaid"], "Date": rec.get("ApplicationDate")})
            rec["Status"] = "Closed" if rec.get("AvailableBalance", 0) <= 0 else "Open"
        else:
            rec["Status"] = "Open" if (rec.get("Balance") or 0) > 0 else "Closed"
            if op.entity == "Bill":
                rec["ApprovedForPayment"] = True
        if ENTITIES[op.entity].change_field:
            rec[ENTITIES[op.entity].change_field or ""] = now
        table.replace(old, rec)
        self.stats.bump("actions_completed")


class _NullLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_NULL_LOCK = _NullLock()


def _looks_like_id(part: Any) -> bool:
    return isinstance(part, str) and len(part) == 36 and part.count("-") == 4
