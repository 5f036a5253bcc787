"""SYSPRO e.net Solutions connector (the ServiceTitan <-> SYSPRO pair).

SYSPRO's REST host is unusual: every call is a `GET` with XML in the query string, a
session (`UserId`) comes from `Logon` and holds a licence seat until `Logoff`, and business
errors arrive inside an HTTP 200 body (text starting `ERROR` or `ErrorDescription` elements).
So this module keeps three things the HTTP core cannot know:

- sessions: `session()` logs on once per batch (a polling cycle, one record's write) and
  always logs off, also when the work failed; nested blocks in one thread share the session,
  so its posts go one at a time; the fleet's shared session slots (Redis, leased) keep
  concurrent sessions of every worker within the licence's seats (`max_sessions`); a session
  the host has expired is replaced once, in place.
- reads: COMFND table queries (or the read-only OData service) walked by the kit's keyset
  paginator on (change column, key columns), so equal change dates and records changing
  mid-poll neither skip nor repeat a row; filters are sent as one level of bracketed AND
  groups joined by OR. `iter_changed`, `get` and `find` are the base connector's, on the
  entity declarations and their external keys.
- writes: business-object XML built with `xml.etree` (APSTIN, PORTOI, INVTMA, APSSSP); the
  output XML is parsed for `ErrorDescription`s, which become `FatalError`s carrying SYSPRO's
  own text. Posts are not blindly retried: after a transient failure the record is looked up
  by its external key first, so a post the host did apply is never sent twice.

No message ever carries a password or a session id.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
import xml.etree.ElementTree as ET
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable, ClassVar, Iterator, Literal, Mapping, Sequence, cast
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import requests
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from connectors.base import CheckStep, Connector, EntitySpec, SettingsModel, VendorModel, timed_check
from mlconnector.http import (
    AuthError,
    BasicAuth,
    ConnectorError,
    FatalError,
    HttpClient,
    HttpRuntime,
    KeysetPaging,
    NoAuth,
    NotFoundError,
    Page,
    Paginator,
    RateLimit,
    RetriableError,
    RetryPolicy,
    RetrySettings,
)
from mlconnector.redaction import register_secret, redact_text

log = logging.getLogger(__name__)

VENDOR = "syspro"
MAX_PAGE_SIZE = 5000  # (unconfirmed) COMFND has no documented ReturnRows cap; bigger pages make slow URLs/answers
DEFAULT_PAGE_SIZE = 500  # rows per COMFND call: few calls per 15-minute poll, answers well under a second
DETAIL_BATCH_SIZE = 25  # POs whose lines one call fetches; keeps the query string near 6 KB
XML_DECLARATION = '<?xml version="1.0" encoding="Windows-1252"?>'
XSD_NAMESPACE = "http://www.w3.org/2001/XMLSchema-instance"
MAX_MESSAGE = 1000  # keep vendor error text readable in audit rows


# ------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------


class SysproConfig(SettingsModel):
    """What a customer's SYSPRO deployment varies. Unconfirmed vendor facts are settings here."""

    api_base: str = Field(
        description="e.net REST base URL, http(s)://host:port/SYSPROWCFService/Rest (the port is the site's choice); a "
                    "trailing slash is removed.",
    )
    company_id: str | None = Field(None, description="Company to log on to instead of the credentials' company_id.")
    page_size: int = Field(
        DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE,
        description="Rows per COMFND query call (ReturnRows); SYSPRO documents no cap, so the maximum here is "
                    "unconfirmed.",
    )
    detail_batch_size: int = Field(
        DETAIL_BATCH_SIZE, ge=1, le=100,
        description="Purchase orders whose lines one query call fetches; the query travels in the URL, so bigger "
                    "batches mean longer URLs.",
    )
    connect_timeout: float = Field(5.0, description="Seconds to wait for a connection to be established on each call.")
    read_timeout: float = Field(60.0, description="Seconds to wait for the answer to a logon, query or OData read.")
    post_timeout: float = Field(
        180.0,
        description="Seconds to wait for a business-object post or setup, which runs SYSPRO's own validation and GL "
                    "postings.",
    )
    max_sessions: int = Field(
        1, ge=1,
        description="e.net sessions the whole fleet may hold at once for this host and company (the licence's seats); "
                    "each holds a seat until logoff.",
    )
    seat_wait_seconds: float = Field(
        60.0, ge=0,
        description="Seconds to wait for a free seat before the record is retried later.",
    )
    logon_attempts: int = Field(3, ge=1, description="Logon attempts when the host refuses for lack of licences.")
    retry: RetrySettings = Field(
        default_factory=RetrySettings,
        description="In-call retries of transient failures (connection errors, timeouts, 429, 5xx), with exponential "
                    "backoff or the vendor's Retry-After.",
    )
    rate_limit_per_second: int | None = Field(
        None,
        description="Client-side limit in requests per second; SYSPRO documents no limit, so set one only to spare a "
                    "small host. Unset: no limit.",
    )
    read_via: Literal["enet", "odata"] = Field(
        "enet",
        description="enet: reads through e.net COMFND queries; odata: reads through the read-only SYSPRO 8 OData "
                    "service (2021 R2 and later), which needs odata_base and no e.net session.",
    )
    odata_base: str = Field(
        "",
        description="OData service URL for the company, likely https://host/SYSPROOData/<CompanyId> (layout "
                    "unconfirmed); required when read_via is odata.",
    )
    server_timezone: str = Field(
        "UTC",
        description="IANA time zone of the SYSPRO server; SYSPRO stores local time without an offset, so dates are read"
                    " in this zone.",
    )
    since_overlap_seconds: float = Field(
        0.0, ge=0,
        description="Seconds re-read before the start of each change window, to cover clock skew with the server.",
    )
    change_columns: dict[str, str] = Field(
        default_factory=dict,
        description="Per-entity override of the change-detection column (default LastChangeDate, unconfirmed), e.g. "
                    "{\"suppliers\": \"LastChangeDate\"}.",
    )
    po_reference_field: str = Field(
        "CustomerPoNumber",
        description="Purchase-order element and column holding the source system's PO number, used to find a PO already"
                    " posted.",
    )
    posting_period: Literal["C", "P", "B"] = Field(
        "C",
        description="GL period for posts: C current, P previous, B the one before previous.",
    )
    # (unconfirmed in the vendor notes) business-object codes for supplier setup and stock adjustments;
    # both appear in a public integration library generated from SYSPRO's schemas.
    supplier_setup_object: str = Field(
        "APSSSP",
        description="Business object for supplier add and update (APSSSP, root SetupApSupplier; unconfirmed).",
    )
    adjustment_object: str = Field(
        "INVTMA",
        description="Business object for stock adjustments (INVTMA, root PostInvAdjustments; unconfirmed).",
    )
    allow_non_stock_items: bool = Field(
        False,
        description="Purchase-order posts: set AllowNonStockItems, accepting lines for non-stocked items.",
    )
    allow_zero_price: bool = Field(
        False,
        description="Purchase-order posts: set AllowZeroPrice, accepting lines with a zero price.",
    )
    # (unconfirmed wording) how the host words session, seat and credential failures
    session_error_pattern: str = Field(
        r"(?i)session|user ?id|not logged on|log ?on again",
        description="Regular expression for host errors meaning the session is gone (the connector logs on again); the "
                    "wording is unconfirmed.",
    )
    seat_error_pattern: str = Field(
        r"(?i)licen[cs]e|seats?\b",
        description="Regular expression for host errors meaning no licence seat is free (logon is retried); the wording"
                    " is unconfirmed.",
    )
    credential_error_pattern: str = Field(
        r"(?i)password|operator .*not found|company .*not found|not authori[sz]ed",
        description="Regular expression for host errors meaning a wrong operator, password or company (not retried); "
                    "the wording is unconfirmed.",
    )

    @field_validator("api_base", "odata_base")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _odata_needs_base(self) -> "SysproConfig":
        if self.read_via == "odata" and not self.odata_base:
            raise ValueError("read_via='odata' needs odata_base")
        ZoneInfo(self.server_timezone)
        return self


class SysproCredentials(SettingsModel):
    """An e.net operator and the company it logs on to (SYSPRO has no OAuth: a Logon opens a session)."""

    operator: str = Field(description="e.net operator code the connector logs on as.")
    operator_password: SecretStr = Field(description="Password of the operator.")
    company_id: str = Field(description="SYSPRO company to log on to (Config company_id overrides it).")
    company_password: SecretStr = Field(SecretStr(""), description="Company password; empty at many sites.")


# ------------------------------------------------------------------------------------------
# Records read from SYSPRO (SQL column names as aliases; padded text trimmed)
# ------------------------------------------------------------------------------------------


class SysproRecord(VendorModel):
    """Base of SYSPRO rows: text arrives blank-padded and empty means 'not set'."""

    changed_at: datetime | None = None  # the entity's change column, as aware UTC

    @model_validator(mode="before")
    @classmethod
    def _blank_is_missing(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        text_fields = cls._text_aliases()
        cleaned: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, str):
                value = value.strip()
                if not value and key not in text_fields:
                    continue
            cleaned[key] = value
        return cleaned

    @classmethod
    def _text_aliases(cls) -> set[str]:
        cached = _TEXT_FIELDS.get(cls)
        if cached is None:
            cached = _TEXT_FIELDS[cls] = {
                name for field_name, info in cls.model_fields.items() if info.annotation is str
                for name in (field_name, info.alias) if name
            }
        return cached


_TEXT_FIELDS: dict[type, set[str]] = {}  # per model: names whose blank value is a real empty string


def _yes(value: Any) -> bool:
    return str(value).strip().upper() in ("Y", "YES", "TRUE", "1")


class Supplier(SysproRecord):
    supplier: str = Field(alias="Supplier")
    name: str = Field("", alias="SupplierName")
    short_name: str = Field("", alias="SupShortName")
    address_1: str = Field("", alias="SupAddr1")
    address_2: str = Field("", alias="SupAddr2")
    address_3: str = Field("", alias="SupAddr3")
    address_4: str = Field("", alias="SupAddr4")
    address_5: str = Field("", alias="SupAddr5")
    postal_code: str = Field("", alias="SupPostalCode")
    telephone: str = Field("", alias="Telephone")
    email: str = Field("", alias="Email")
    contact: str = Field("", alias="Contact")
    currency: str = Field("", alias="Currency")
    terms_code: str = Field("", alias="TermsCode")
    supplier_class: str = Field("", alias="SupplierClass")
    branch: str = Field("", alias="Branch")
    post_date: date | None = Field(None, alias="PostDate")
    on_hold: bool = Field(False, alias="OnHold")
    tax_registration: str = Field("", alias="TaxRegnNum")
    added_on: date | None = Field(None, alias="DateSuppAdded")

    @field_validator("on_hold", mode="before")
    @classmethod
    def _on_hold_flag(cls, value: Any) -> bool:
        return _yes(value)


class ApInvoice(SysproRecord):
    supplier: str = Field(alias="Supplier")
    invoice: str = Field(alias="Invoice")
    document_type: str = Field("", alias="DocumentType")
    invoice_date: date | None = Field(None, alias="InvoiceDate")
    due_date: date | None = Field(None, alias="DueDate")
    reference: str = Field("", alias="Reference")
    notation: str = Field("", alias="Notation")
    currency: str = Field("", alias="Currency")
    original_value: Decimal | None = Field(None, alias="OrigInvValue")
    tax_value: Decimal | None = Field(None, alias="TaxValue")
    balance: Decimal | None = Field(None, alias="MthInvBal1")
    journal: int | None = Field(None, alias="Journal")
    entry_number: int | None = Field(None, alias="EntryNumber")
    branch: str = Field("", alias="Branch")


class PurchaseOrderLine(SysproRecord):
    purchase_order: str = Field(alias="PurchaseOrder")
    line: int = Field(alias="Line")
    line_type: str = Field("", alias="LineType")  # 1 stocked, 4 freight, 5 misc charge, 6 comment, 7 non-stocked
    stock_code: str = Field("", alias="MStockCode")
    description: str = Field("", alias="MStockDes")
    warehouse: str = Field("", alias="MWarehouse")
    order_qty: Decimal | None = Field(None, alias="MOrderQty")
    received_qty: Decimal | None = Field(None, alias="MReceivedQty")
    price: Decimal | None = Field(None, alias="MPrice")
    uom: str = Field("", alias="MOrderUom")
    ledger_code: str = Field("", alias="MGlCode")
    due_date: date | None = Field(None, alias="MLatestDueDate")
    comment: str = Field("", alias="MComment")


class PurchaseOrder(SysproRecord):
    purchase_order: str = Field(alias="PurchaseOrder")
    supplier: str = Field("", alias="Supplier")
    status: str = Field("", alias="OrderStatus")  # 9 complete, * cancelled
    order_date: date | None = Field(None, alias="OrderEntryDate")
    due_date: date | None = Field(None, alias="OrderDueDate")
    warehouse: str = Field("", alias="Warehouse")
    buyer: str = Field("", alias="Buyer")
    currency: str = Field("", alias="Currency")
    reference: str = ""  # the configured reference column (`po_reference_field`)
    lines: list[PurchaseOrderLine] = Field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status not in ("9", "*")


class WarehouseStock(SysproRecord):
    warehouse: str = Field(alias="Warehouse")
    description: str = Field("", alias="Description")
    qty_on_hand: Decimal | None = Field(None, alias="QtyOnHand")
    available_qty: Decimal | None = Field(None, alias="AvailableQty")
    qty_on_order: Decimal | None = Field(None, alias="QtyOnOrder")
    unit_cost: Decimal | None = Field(None, alias="UnitCost")


class StockItem(SysproRecord):
    stock_code: str = Field(alias="StockCode")
    description: str = Field("", alias="Description")
    long_description: str = Field("", alias="LongDesc")
    uom: str = Field("", alias="StockUom")
    product_class: str = Field("", alias="ProductClass")
    supplier: str = Field("", alias="Supplier")
    part_category: str = Field("", alias="PartCategory")
    warehouse_to_use: str = Field("", alias="WarehouseToUse")
    added_on: date | None = Field(None, alias="DateStkAdded")
    warehouses: list[WarehouseStock] = Field(default_factory=list)  # filled by `get_stock_levels`


class InventoryMovement(SysproRecord):
    journal: int = Field(alias="Journal")
    journal_entry: int = Field(alias="JournalEntry")
    stock_code: str = Field("", alias="StockCode")
    warehouse: str = Field("", alias="Warehouse")
    year: int | None = Field(None, alias="TrnYear")
    month: int | None = Field(None, alias="TrnMonth")
    movement_type: str = Field("", alias="MovementType")
    transaction_type: str = Field("", alias="TrnType")  # A adjustment, P physical count, R receipt, I issue
    quantity: Decimal | None = Field(None, alias="TrnQty")
    value: Decimal | None = Field(None, alias="TrnValue")
    reference: str = Field("", alias="Reference")
    notation: str = Field("", alias="Notation")


# ------------------------------------------------------------------------------------------
# What the pair writes
# ------------------------------------------------------------------------------------------


class LedgerLine(BaseModel):
    ledger_code: str
    value: Decimal
    notation: str = ""


class ApInvoiceIn(BaseModel):
    """One AP invoice for APSTIN; `value` is gross (including tax)."""

    supplier: str = Field(min_length=1)
    invoice: str = Field(min_length=1, max_length=20)
    value: Decimal
    invoice_date: date
    due_date: date | None = None
    reference: str = ""
    notation: str = ""
    tax_code: str = ""
    tax_value: Decimal | None = None  # None: SYSPRO calculates tax (AutomaticTaxCalculation)
    transaction_code: Literal["I", "C", "D"] = "I"
    branch: str = ""  # the AP branch the invoice belongs to
    distribution: list[LedgerLine] = Field(default_factory=list)


class SupplierIn(BaseModel):
    """Supplier master fields for APSSSP; None leaves a field as SYSPRO has it."""

    supplier: str = Field(min_length=1, max_length=15)
    name: str | None = Field(None, max_length=50)
    short_name: str | None = None
    address: list[str] | None = Field(None, max_length=5)
    postal_code: str | None = None
    telephone: str | None = None
    email: str | None = None
    contact: str | None = None
    currency: str | None = None
    terms_code: str | None = None
    supplier_class: str | None = None
    branch: str | None = None
    on_hold: bool | None = None
    tax_registration: str | None = None

    def elements(self) -> list[tuple[str, str]]:
        """(APSSSP element, value) for every field that is set, in schema order."""
        address = None if self.address is None else (list(self.address) + [""] * 5)[:5]
        on_hold = None if self.on_hold is None else ("Y" if self.on_hold else "N")
        ordered = [
            ("SupplierName", self.name), ("SupShortName", self.short_name), ("Telephone", self.telephone),
            ("Contact", self.contact), ("Branch", self.branch), ("TermsCode", self.terms_code),
            ("Currency", self.currency),
            *[(f"SupAddr{i}", None if address is None else address[i - 1]) for i in range(1, 6)],
            ("SupPostalCode", self.postal_code), ("SupplierClass", self.supplier_class),
            ("TaxRegnNum", self.tax_registration), ("OnHold", on_hold), ("Email", self.email),
        ]
        return [(tag, value) for tag, value in ordered if value is not None]


class PurchaseOrderLineIn(BaseModel):
    stock_code: str = ""
    quantity: Decimal | None = None
    price: Decimal | None = None
    warehouse: str = ""
    description: str = ""
    uom: str = ""
    ledger_code: str = ""
    due_date: date | None = None
    line: int | None = None  # an existing line to change or delete (with `action`)
    action: Literal["A", "C", "D"] | None = None


class PurchaseOrderIn(BaseModel):
    supplier: str = Field(min_length=1)
    purchase_order: str = ""  # blank: SYSPRO assigns the next number
    reference: str = ""  # the source system's PO number (idempotency key)
    order_date: date | None = None
    due_date: date | None = None
    warehouse: str = ""
    buyer: str = ""
    lines: list[PurchaseOrderLineIn] = Field(default_factory=list)
    comments: list[str] = Field(default_factory=list)
    freight: Decimal | None = None


class InventoryAdjustmentIn(BaseModel):
    stock_code: str = Field(min_length=1)
    warehouse: str = Field(min_length=1)
    quantity: Decimal  # the change (or, with physical_count, the counted quantity)
    reference: str = ""  # the source adjustment's id (idempotency key)
    notation: str = ""
    physical_count: bool = False
    ledger_code: str = ""
    unit_of_measure: str = ""
    transaction_date: date | None = None


class PostResult(VendorModel):
    """What a business-object call did."""

    business_object: str
    validate_only: bool = False
    already_existed: bool = False  # found by its external key; nothing was posted
    items_processed: int = 0
    items_invalid: int = 0
    keys: dict[str, str] = Field(default_factory=dict)  # e.g. PurchaseOrder, Journal, JournalEntry


# ------------------------------------------------------------------------------------------
# Entity declarations: adding an entity is one line here plus its model.
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSpec(EntitySpec[Any]):
    """A SYSPRO table read by keyset on (change column, key columns)."""

    keys: tuple[str, ...] = ()
    types: Mapping[str, str] = field(default_factory=dict)  # non-text key columns: "int"
    lines: "TableSpec | None" = None  # child rows joined on keys[0] (PO lines)


def _table(name: str, table: str, change_column: str | None, model: type[BaseModel], keys: tuple[str, ...],
           *also_found_by: tuple[str, ...], **options: Any) -> TableSpec:
    """The key columns are the record's id and its first external key; `also_found_by` names the others."""
    return TableSpec(name, table, keys[-1], change_column, model, external_keys=(keys, *also_found_by), keys=keys,
                     **options)


PO_LINES = _table("purchase_order_lines", "PorMasterDetail", None, PurchaseOrderLine, ("PurchaseOrder", "Line"),
                  types={"Line": "int"})
# (unconfirmed) change columns: SYSPRO's own audit columns differ by release; each is a setting
# (`change_columns`), as is the column holding the source system's PO number (`po_reference_field`).
ENTITIES: dict[str, TableSpec] = {spec.name: spec for spec in (
    _table("suppliers", "ApSupplier", "LastChangeDate", Supplier, ("Supplier",)),
    _table("ap_invoices", "ApInvoice", "LastChangeDate", ApInvoice, ("Supplier", "Invoice")),
    _table("purchase_orders", "PorMasterHdr", "LastChangeDate", PurchaseOrder, ("PurchaseOrder",), lines=PO_LINES),
    _table("stock_items", "InvMaster", "LastChangeDate", StockItem, ("StockCode",)),
    # A posted adjustment is found again by the reference it carried (the source adjustment's id).
    _table("inventory_movements", "InvMovements", "EntryDate", InventoryMovement, ("Journal", "JournalEntry"),
           ("Reference",), types={"Journal": "int", "JournalEntry": "int"}),
)}


# ------------------------------------------------------------------------------------------
# Filters: OR of AND groups, so COMFND's brackets never nest deeper than one level.
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cmp:
    column: str
    op: Literal["EQ", "NE", "LT", "LE", "GT", "GE"]
    value: Any


Group = tuple[Cmp, ...]  # AND
Where = list[Group]  # OR of groups; [] or [()] means everything


def _and(left: Where, right: Where) -> Where:
    return [a + b for a in (left or [()]) for b in (right or [()])]


def _after(order: Sequence[str], last: Sequence[Any]) -> Where:
    """Rows strictly after `last` in `order` (keyset continuation), as OR of AND groups."""
    groups: Where = []
    for i, column in enumerate(order):
        groups.append(tuple(Cmp(order[k], "EQ", last[k]) for k in range(i)) + (Cmp(column, "GT", last[i]),))
    return groups


# ------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------


def _decode(content: bytes) -> str:
    """The body as text, unwrapping the JSON string or `<string>` some REST hosts add."""
    text = content.decode("cp1252", errors="replace")
    stripped = text.strip()
    if len(stripped) >= 2 and stripped[0] == stripped[-1] == '"':
        return stripped[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if stripped.startswith("<string"):
        try:
            return ET.fromstring(stripped).text or ""
        except ET.ParseError:
            return text
    return text


def _error_text(response: requests.Response) -> tuple[str, Any]:
    """The host's own words from a non-200 answer (HTML 'Request Error' page, OData JSON, text)."""
    content_type = response.headers.get("Content-Type", "")
    if "json" in content_type:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict) and error.get("message"):
                return str(error["message"]), body
    text = _decode(response.content)
    if "<" in text and "html" in content_type:
        parts = [re.sub(r"\s+", " ", p).strip() for p in re.findall(r"<p[^>]*>(.*?)</p>", text, re.S | re.I)]
        parts = [p for p in parts if p and p.lower() != "request error"]
        if parts:
            return " ".join(parts)[:MAX_MESSAGE], None
        text = re.sub(r"<[^>]+>", " ", text)
    return re.sub(r"\s+", " ", text).strip()[:MAX_MESSAGE], None


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'))}"


def _number(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _element(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    if text is not None:
        child.text = text
    return child


def _document(root_tag: str, schema: str) -> ET.Element:
    root = ET.Element(root_tag)
    root.set("xmlns:xsd", XSD_NAMESPACE)
    root.set("xsd:noNamespaceSchemaLocation", schema)
    return root


def _serialize(root: ET.Element) -> str:
    return XML_DECLARATION + ET.tostring(root, encoding="unicode")


def _parameters(root_tag: str, schema: str, values: Sequence[tuple[str, str]]) -> str:
    root = _document(root_tag, schema)
    parameters = _element(root, "Parameters")
    for tag, value in values:
        _element(parameters, tag, value)
    return _serialize(root)


def _business_errors(root: ET.Element) -> list[dict[str, str]]:
    """Every non-empty ErrorDescription/ErrorMessage with the field that holds it."""
    found: list[dict[str, str]] = []
    for parent in root.iter():
        for child in parent:
            if child.tag in ("ErrorDescription", "ErrorMessage") and (child.text or "").strip():
                found.append({
                    "field": parent.tag,
                    "value": (parent.findtext("Value") or "").strip(),
                    "number": (parent.findtext("ErrorNumber") or "").strip(),
                    "description": (child.text or "").strip(),
                })
    return found


def _status_counts(root: ET.Element) -> tuple[int, int]:
    status = root.find("StatusOfItems")
    if status is None:
        return 0, 0

    def number(*names: str) -> int:
        for name in names:
            text = status.findtext(name)
            if text and text.strip().isdigit():
                return int(text.strip())
        return 0

    return number("ItemsProcessed", "RecordsRead"), number("ItemsInvalid", "RecordsInvalid")


@dataclass
class _Session:
    """A logged-on e.net session shared by the nested `session()` blocks of one thread."""

    user_id: str = ""
    users: int = 1
    seat: ExitStack | None = None  # the fleet-wide seat slot, released at logoff
    retired: list[str] = field(default_factory=list)  # ids replaced after the host expired them


# ------------------------------------------------------------------------------------------
# Readers: COMFND over e.net, or the OData service
# ------------------------------------------------------------------------------------------


class _EnetReader:
    """COMFND table queries; needs an open session."""

    def __init__(self, connector: "SysproConnector") -> None:
        self.connector = connector

    def literal(self, value: Any) -> str:
        if isinstance(value, datetime):
            return value.isoformat(timespec="milliseconds")
        if isinstance(value, date):
            return value.isoformat()
        return str(value)

    def fetch(self, table: str, where: Where, order: Sequence[str], limit: int) -> tuple[list[dict[str, str]], bool]:
        query = ET.Element("Query")
        query.set("xmlns:xsd", XSD_NAMESPACE)
        query.set("xsd:noNamespaceSchemaLocation", "COMFND.XSD")
        _element(query, "TableName", table)
        _element(query, "ReturnRows", str(limit))
        groups = [g for g in where if g]
        if groups:
            where_element = _element(query, "Where")
            for index, group in enumerate(groups):
                for position, cmp in enumerate(group):
                    expression = _element(where_element, "Expression")
                    _element(expression, "OpenBracket", "(" if position == 0 else "")
                    if index or position:
                        _element(expression, "AndOr", "Or" if position == 0 else "And")
                    _element(expression, "Column", cmp.column)
                    _element(expression, "Condition", cmp.op)
                    _element(expression, "Value", self.literal(cmp.value))
                    _element(expression, "CloseBracket", ")" if position == len(group) - 1 else "")
        order_element = _element(query, "OrderBy")
        for column in order:
            _element(order_element, "Column", column)
        root = self.connector._call("Query/Query", "COMFND", _serialize(query))
        rows = [{child.tag: child.text or "" for child in row} for row in root.findall("Row")]
        return rows, len(rows) >= limit


class _ODataReader:
    """The read-only OData service: basic auth, no licence seat."""

    def __init__(self, connector: "SysproConnector", client: HttpClient) -> None:
        self.connector = connector
        self.client = client

    def literal(self, value: Any) -> str:
        if isinstance(value, datetime):
            aware = value if value.tzinfo else value.replace(tzinfo=self.connector._zone)
            return aware.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, (int, Decimal, float)):
            return str(value)
        return "'" + str(value).replace("'", "''") + "'"

    def fetch(self, table: str, where: Where, order: Sequence[str], limit: int) -> tuple[list[dict[str, str]], bool]:
        params: dict[str, str] = {"$top": str(limit), "$orderby": ",".join(order)}
        groups = [g for g in where if g]
        if groups:
            params["$filter"] = " or ".join(
                "(" + " and ".join(f"{c.column} {c.op.lower()} {self.literal(c.value)}" for c in g) + ")" for g in groups
            )
        body = self.client.get_json(table, params=params, endpoint=f"odata {table}") or {}
        rows = [
            {k: ("" if v is None else str(v)) for k, v in row.items()} for row in body.get("value", [])
        ]
        return rows, bool(body.get("@odata.nextLink")) or len(rows) >= limit


# ------------------------------------------------------------------------------------------
# The connector
# ------------------------------------------------------------------------------------------


class SysproConnector(Connector):
    system: ClassVar[str] = VENDOR
    Config: ClassVar[type[BaseModel]] = SysproConfig
    Credentials: ClassVar[type[BaseModel]] = SysproCredentials
    entities: dict[str, TableSpec]

    def __init__(self, config: SysproConfig, credentials: SysproCredentials, runtime: HttpRuntime) -> None:
        self.config = config
        self.credentials = credentials
        self.company_id = config.company_id or credentials.company_id
        self._zone = ZoneInfo(config.server_timezone)
        register_secret(credentials.operator_password.get_secret_value())
        register_secret(credentials.company_password.get_secret_value())
        session = runtime.session(VENDOR)
        host = urlsplit(config.api_base).netloc
        limit = RateLimit(config.rate_limit_per_second) if config.rate_limit_per_second else None
        shared: dict[str, Any] = {
            "vendor": VENDOR, "auth": NoAuth(), "session": session, "rate_limiter": runtime.rate_limiter,
            "rate_limit": limit, "rate_key": f"{VENDOR}:{host}:{self.company_id}", "error_extractor": _error_text,
        }
        self.entities = {name: self._for_deployment(spec) for name, spec in ENTITIES.items()}
        retry = config.retry.policy()
        self._reads = HttpClient(base_url=config.api_base, timeout=(config.connect_timeout, config.read_timeout),
                                 retry=retry, **shared)
        # Posts are retried here, after an idempotency look-up, never blindly by the client.
        self._writes = HttpClient(base_url=config.api_base, timeout=(config.connect_timeout, config.post_timeout),
                                  retry=RetryPolicy(max_tries=1), **shared)
        self._odata: HttpClient | None = None
        if config.odata_base:
            self._odata = HttpClient(
                base_url=config.odata_base, timeout=(config.connect_timeout, config.read_timeout), retry=retry,
                **{**shared, "auth": BasicAuth(credentials.operator, credentials.operator_password.get_secret_value())},
            )
        self._slots = runtime.slots
        self._seat_name = f"{VENDOR}:{host}:{self.company_id.upper()}"  # seats are licensed per host and company
        self._local = threading.local()
        self.last_logoff: str = ""  # "0" after a clean Logoff, else the host's answer (for check())

    def _for_deployment(self, spec: TableSpec) -> TableSpec:
        """The declaration with this deployment's change column, and for POs its reference column
        as a second external key."""
        change = self.config.change_columns.get(spec.name) or spec.change_field
        keys = spec.external_keys
        if spec.model is PurchaseOrder:
            keys = (*keys, (self.config.po_reference_field,))
        return replace(spec, change_field=change, external_keys=keys)

    # ---- construction ---------------------------------------------------------------------------

    @classmethod
    def create(cls, config: dict[str, Any], credentials: dict[str, Any], runtime: HttpRuntime) -> "SysproConnector":
        return cls(SysproConfig.model_validate(config), SysproCredentials.model_validate(credentials), runtime)

    @classmethod
    def settings_from_sandbox_info(cls, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"api_base": info["api_base"]}, dict(info["credentials"])

    @property
    def call_count(self) -> int:
        return self._reads.calls + self._writes.calls + (self._odata.calls if self._odata else 0)

    # ---- sessions -------------------------------------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[None]:
        """Logon -> work -> Logoff (always). Nested blocks in one thread share the session."""
        current: _Session | None = getattr(self._local, "session", None)
        if current is not None:
            current.users += 1
            try:
                yield
            finally:
                self._release(current)
            return
        seat = ExitStack()
        seat.enter_context(self._slots.hold(self._seat_name, self.config.max_sessions,
                                            wait=self.config.seat_wait_seconds, vendor=VENDOR))
        state = _Session(seat=seat)
        self._local.session = state
        try:
            state.user_id = self._logon()
        except BaseException:
            self._release(state)
            raise
        try:
            yield
        finally:
            self._release(state)

    def _release(self, state: _Session) -> None:
        state.users -= 1
        if state.users > 0:
            return
        if getattr(self._local, "session", None) is state:
            self._local.session = None
        try:
            if state.user_id:
                self._logoff(state.user_id)
        finally:
            if state.seat is not None:
                state.seat.close()
                state.seat = None

    def _logon(self) -> str:
        credentials = self.credentials
        params = [
            ("Operator", credentials.operator),
            ("OperatorPassword", credentials.operator_password.get_secret_value()),
            ("CompanyId", self.company_id),
            ("CompanyPassword", credentials.company_password.get_secret_value()),
        ]
        message = ""
        for attempt in range(self.config.logon_attempts):
            response = self._reads.request("GET", "Logon", params=params, endpoint="Logon")
            body = _decode(response.content).strip()
            if body and not body.upper().startswith("ERROR"):
                return body
            message = self._clean(body or "empty answer to Logon")
            if re.search(self.config.seat_error_pattern, message):
                if attempt + 1 < self.config.logon_attempts:
                    time.sleep(random.uniform(0, min(self.config.retry.max_wait, self.config.retry.base * 2**attempt)))
                continue
            if re.search(self.config.credential_error_pattern, message):
                raise AuthError(message, vendor=VENDOR, endpoint="Logon")
            raise FatalError(message, vendor=VENDOR, endpoint="Logon")
        raise RetriableError(message, vendor=VENDOR, endpoint="Logon", retry_after=self.config.retry.max_wait)

    def _logoff(self, user_id: str) -> None:
        try:
            response = self._reads.request("GET", "Logoff", params=[("UserId", user_id)], endpoint="Logoff")
            self.last_logoff = _decode(response.content).strip()
        except ConnectorError as exc:
            self.last_logoff = self._clean(exc.message, user_id)
        if self.last_logoff != "0":
            log.warning("SYSPRO Logoff was refused: %s", self._clean(self.last_logoff, user_id))

    def _clean(self, text: str, *extra: str) -> str:
        """Vendor text with session ids and passwords removed, trimmed for audit rows."""
        state: _Session | None = getattr(self._local, "session", None)
        ids = list(extra) + ([state.user_id, *state.retired] if state else [])
        for user_id in ids:
            if user_id and user_id.strip():
                text = text.replace(user_id.strip(), "***")
        return redact_text(text.strip())[:MAX_MESSAGE]

    def _scrubbed(self, error: ConnectorError) -> ConnectorError:
        """The same error with any session id in its message or details removed."""
        kwargs: dict[str, Any] = {"vendor": error.vendor, "status": error.status, "endpoint": error.endpoint,
                                  "details": _scrub_details(error.details, self._clean)}
        if isinstance(error, RetriableError):
            return RetriableError(self._clean(error.message), retry_after=error.retry_after, **kwargs)
        return type(error)(self._clean(error.message), **kwargs)

    # ---- one business-object call -------------------------------------------------------------

    def _call(self, kind: str, business_object: str, xml_in: str, xml_parameters: str | None = None,
              *, write: bool = False) -> ET.Element:
        """One call inside `session()`; a session the host expired is replaced once."""
        state: _Session | None = getattr(self._local, "session", None)
        if state is None or not state.user_id:
            raise RuntimeError("SYSPRO business-object calls need an open session(): use `with connector.session():`")
        client = self._writes if write else self._reads
        for attempt in (1, 2):
            params = [("UserId", state.user_id), ("BusinessObject", business_object)]  # UserId first: see _scrubbed
            if xml_parameters is not None:
                params.append(("XmlParameters", xml_parameters))
            params.append(("XmlIn", xml_in))
            try:
                response = client.request("GET", kind, params=params, endpoint=f"{kind} {business_object}")
            except ConnectorError as exc:
                raise self._scrubbed(exc) from None
            text = _decode(response.content)
            if text.lstrip()[:5].upper() == "ERROR":
                message = self._clean(text)
                if attempt == 1 and re.search(self.config.session_error_pattern, message):
                    state.retired.append(state.user_id)
                    state.user_id = ""
                    state.user_id = self._logon()
                    continue
                raise FatalError(f"{business_object}: {message}", vendor=VENDOR, endpoint=kind,
                                 details={"kind": "host", "business_object": business_object})
            try:
                root = ET.fromstring(text)
            except ET.ParseError:
                raise FatalError(f"{business_object}: answer is not XML: {self._clean(text)[:200]}",
                                 vendor=VENDOR, endpoint=kind) from None
            errors = _business_errors(root)
            processed, invalid = _status_counts(root)
            if errors or invalid:
                described = "; ".join(
                    e["description"] + (f" ({e['field']})" if e["field"] not in ("Item", "item") else "") for e in errors
                ) or f"{invalid} item(s) invalid"
                raise FatalError(
                    self._clean(f"{business_object}: {described}"), vendor=VENDOR, endpoint=kind,
                    details={"kind": "business", "business_object": business_object, "errors": errors,
                             "items_processed": processed, "items_invalid": invalid},
                )
            return root
        raise AssertionError("unreachable")

    # ---- reading ---------------------------------------------------------------------------------

    def _reading(self) -> AbstractContextManager[Any]:
        return self.session() if self.config.read_via == "enet" else nullcontext()

    def _reader(self) -> _EnetReader | _ODataReader:
        if self.config.read_via == "odata" and self._odata is not None:
            return _ODataReader(self, self._odata)
        return _EnetReader(self)

    def _change_column(self, spec: TableSpec) -> str:
        return spec.change_field or spec.keys[0]

    def _typed(self, spec: TableSpec, column: str, raw: str) -> Any:
        """A row's text value as the typed value a keyset condition compares against."""
        if column == self._change_column(spec) and spec.change_field:
            return self._to_server(self._server_time(raw))
        if spec.types.get(column) == "int":
            return int(Decimal(raw.strip()))
        return raw

    def _server_time(self, raw: str) -> datetime:
        text = raw.strip()
        if text.endswith("Z"):
            return datetime.fromisoformat(text[:-1]).replace(tzinfo=timezone.utc)
        parsed = datetime.fromisoformat(text)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=self._zone)

    def _to_server(self, moment: datetime) -> datetime:
        """A watermark as the host compares it: naive local time for COMFND, aware UTC for OData."""
        aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        aware = aware.replace(microsecond=aware.microsecond // 1000 * 1000)  # the host keeps milliseconds
        if self.config.read_via == "odata":
            return aware.astimezone(timezone.utc)
        return aware.astimezone(self._zone).replace(tzinfo=None)

    def _record(self, spec: TableSpec, row: dict[str, str]) -> Any:
        data: dict[str, Any] = dict(row)
        change = self._change_column(spec)
        if spec.change_field and row.get(change, "").strip():
            data["changed_at"] = self._server_time(row[change]).astimezone(timezone.utc)
        if spec.model is PurchaseOrder:
            data["reference"] = row.get(self.config.po_reference_field, "")
        return spec.model.model_validate(data)

    def _with_lines(self, orders: list[PurchaseOrder]) -> list[PurchaseOrder]:
        """Attach lines to a page of PO headers, a batch of POs per call."""
        spec = PO_LINES
        by_number = {order.purchase_order.upper(): order for order in orders}
        numbers = list(by_number)
        for start in range(0, len(numbers), self.config.detail_batch_size):
            batch = numbers[start:start + self.config.detail_batch_size]
            where: Where = [(Cmp("PurchaseOrder", "EQ", number),) for number in batch]
            for row in self.rows(spec, {"where": where, "order": spec.keys}):
                owner = by_number.get(row.get("PurchaseOrder", "").strip().upper())
                if owner is not None:
                    owner.lines.append(self._record(spec, row))
        return orders

    def spec(self, entity: str) -> TableSpec:
        return super().spec(entity)  # type: ignore[return-value]

    # ---- hooks the base reads are built on ------------------------------------------------------

    def paginator(self, spec: EntitySpec[Any], params: Mapping[str, Any], *, stable: bool) -> Paginator:
        """Keyset on the listing's order (which ends with the key): equal change dates and rows
        changing mid-poll neither skip nor repeat a row, so a change window needs nothing more."""
        return KeysetPaging(tuple(params["order"]), self.config.page_size)

    def pages(self, spec: EntitySpec[Any], params: Mapping[str, Any], *, stable: bool = False) -> Iterator[Page]:
        """Inside one e.net session (a licence seat, always logged off) unless reads go through OData."""
        with self._reading():
            yield from super().pages(spec, params, stable=stable)

    def fetch_page(self, spec: EntitySpec[Any], request: dict[str, Any]) -> Page:
        """`where` and `order` select and sort; `after` (the last row's order values) continues."""
        table = cast(TableSpec, spec)
        order: Sequence[str] = request["order"]
        where: Where = request["where"]
        if "after" in request:
            last = [self._typed(table, column, value or "") for column, value in zip(order, request["after"])]
            where = _and(where, _after(order, last))
        rows, more = self._reader().fetch(spec.path, where, order, int(request["limit"]))
        return Page(rows, has_more=more)

    def parse_rows(self, spec: EntitySpec[Any], rows: Sequence[Any]) -> list[BaseModel]:
        table = cast(TableSpec, spec)
        records = [self._record(table, row) for row in rows]
        return self._with_lines(records) if table.lines is not None else records

    def changed_params(self, spec: EntitySpec[Any], since: datetime | None, until: datetime) -> dict[str, Any]:
        table = cast(TableSpec, spec)
        change = self._change_column(table)
        group: Group = ()
        if since is not None:
            start = since - timedelta(seconds=self.config.since_overlap_seconds)
            group += (Cmp(change, "GE", self._to_server(start)),)
        group += (Cmp(change, "LT", self._to_server(until)),)
        return {"where": [group], "order": (change, *table.keys)}

    def key_params(self, spec: EntitySpec[Any], key: Mapping[str, Any]) -> dict[str, Any]:
        table = cast(TableSpec, spec)
        return {"where": [tuple(Cmp(column, "EQ", value) for column, value in key.items())], "order": table.keys}

    def read_one(self, spec: EntitySpec[Any], key: Any) -> BaseModel:
        """By the table's key columns: one value, or a tuple for a composite key (Supplier, Invoice)."""
        table = cast(TableSpec, spec)
        values = tuple(key) if isinstance(key, (tuple, list)) else (key,)
        if len(values) != len(table.keys):
            raise ValueError(f"{spec.name} is read by {', '.join(table.keys)}; got {key!r}")
        found = self.find(spec.name, **dict(zip(table.keys, values)))
        if found is None:
            raise NotFoundError(f"{spec.name} {'/'.join(map(str, values))} not found", vendor=VENDOR, endpoint=spec.path)
        return found

    def _find(self, spec: TableSpec, where: Where) -> Any | None:
        """The first row a condition selects: for look-ups by a name, which names no record alone."""
        with self._reading():
            rows, _ = self._reader().fetch(spec.path, where, spec.keys, 1)
            return self.parse_rows(spec, rows[:1])[0] if rows else None

    # ---- look-ups (idempotency) ------------------------------------------------------------------

    def find_supplier(self, code: str | None = None, *, name: str | None = None) -> Supplier | None:
        """By supplier code, else the first by exact name (SYSPRO compares names case-insensitively)."""
        if code:
            found = self.find("suppliers", Supplier=code)
            if found is not None:
                return cast(Supplier, found)
        if name:
            return self._find(self.spec("suppliers"), [(Cmp("SupplierName", "EQ", name),)])
        return None

    def iter_new_ap_invoices(self, since: date | None) -> Iterator[ApInvoice]:
        """AP invoices dated or posted on or after `since` (all if None): the transactional
        filter on `InvoiceDate` and `PostDate`, which are days, so the watermark's day is read
        again each poll and the caller dedupes by key and version."""
        spec = self.spec("ap_invoices")
        where: Where = [(Cmp("InvoiceDate", "GE", since),), (Cmp("PostDate", "GE", since),)] if since else []
        for row in self.rows(spec, {"where": where, "order": spec.keys}):
            yield cast(ApInvoice, self._record(spec, row))

    def iter_ap_invoices_dated(self, start: date, end: date) -> Iterator[ApInvoice]:
        """AP invoices whose `InvoiceDate` is on or after `start` and before `end` (the same
        transactional filter, bounded both ways), in key order; within a session."""
        spec = self.spec("ap_invoices")
        where: Where = [(Cmp("InvoiceDate", "GE", start), Cmp("InvoiceDate", "LT", end))]
        for row in self.rows(spec, {"where": where, "order": spec.keys}):
            yield cast(ApInvoice, self._record(spec, row))

    def find_ap_invoice(self, supplier: str, invoice: str) -> ApInvoice | None:
        """SYSPRO keys an AP invoice on (Supplier, Invoice)."""
        return cast("ApInvoice | None", self.find("ap_invoices", Supplier=supplier, Invoice=invoice))

    def find_purchase_order(self, purchase_order: str | None = None, *, reference: str | None = None) -> PurchaseOrder | None:
        """By SYSPRO PO number, else by the source system's PO number (`po_reference_field`)."""
        if purchase_order:
            found = self.find("purchase_orders", PurchaseOrder=purchase_order)
            if found is not None:
                return cast(PurchaseOrder, found)
        if reference:
            return cast("PurchaseOrder | None", self.find("purchase_orders", **{self.config.po_reference_field: reference}))
        return None

    def find_stock_item(self, stock_code: str) -> StockItem | None:
        return cast("StockItem | None", self.find("stock_items", StockCode=stock_code))

    def find_inventory_movement(self, reference: str, *, stock_code: str | None = None,
                                warehouse: str | None = None) -> InventoryMovement | None:
        """The movement an adjustment posted with this reference (our source id), narrowed by item and place."""
        narrow = {k: v for k, v in (("StockCode", stock_code), ("Warehouse", warehouse)) if v}
        return cast("InventoryMovement | None", self.find("inventory_movements", Reference=reference, **narrow))


    def get_stock_levels(self, stock_code: str, warehouse: str | None = None) -> StockItem:
        """INVQRY: the stock item with its per-warehouse quantities (e.net only)."""
        query = _document("Query", "INVQRY.XSD")
        _element(_element(query, "Key"), "StockCode", stock_code)
        option = _element(query, "Option")
        for tag in ("IncludeHistory", "IncludeBins", "IncludeLots", "IncludeSerials"):
            _element(option, tag, "N")
        selector = _element(_element(query, "Filter"), "Warehouse")
        selector.set("FilterType", "S" if warehouse else "A")
        if warehouse:
            selector.set("FilterValue", warehouse)
        with self.session():
            root = self._call("Query/Query", "INVQRY", _serialize(query))
        item = root.find(".//StockItem")
        if item is None:
            raise FatalError(f"INVQRY: no StockItem in the answer for '{stock_code}'", vendor=VENDOR)
        record = StockItem.model_validate({child.tag: child.text or "" for child in item})
        record.warehouses = [
            WarehouseStock.model_validate({child.tag: child.text or "" for child in element})
            for element in root.iter("WarehouseItem")
        ]
        return record

    # ---- posting ----------------------------------------------------------------------------------

    def _post(self, kind: str, business_object: str, xml_parameters: str, xml_in: str,
              find: Callable[[], Any] | None) -> tuple[ET.Element | None, Any]:
        """Post once; after a transient failure or a rejection, look the record up before retrying."""
        policy = self.config.retry
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._call(kind, business_object, xml_in, xml_parameters, write=True), None
            except RetriableError as exc:
                found = find() if find is not None and exc.status != 429 else None
                if found is not None:
                    return None, found
                if attempt >= policy.max_tries or time.monotonic() - started > policy.max_time:
                    raise
                wait = exc.retry_after if exc.retry_after is not None else random.uniform(
                    0, min(policy.max_wait, policy.base * policy.factor ** (attempt - 1)))
                time.sleep(min(float(wait), policy.max_wait))
            except FatalError as exc:
                if find is not None and isinstance(exc.details, dict) and exc.details.get("kind") == "business":
                    found = find()  # a duplicate of our own earlier post, or of another worker's
                    if found is not None:
                        return None, found
                raise

    def _result(self, business_object: str, root: ET.Element | None, *, validate_only: bool,
                keys: dict[str, str] | None = None) -> PostResult:
        processed, invalid = _status_counts(root) if root is not None else (0, 0)
        return PostResult(business_object=business_object, validate_only=validate_only,
                          items_processed=processed, items_invalid=invalid, keys=keys or {})

    def post_ap_invoice(self, invoice: ApInvoiceIn | Mapping[str, Any], *, validate_only: bool = False,
                        skip_existing: bool = True) -> PostResult:
        """APSTIN: post one AP invoice, unless (supplier, invoice) is already in SYSPRO."""
        document = ApInvoiceIn.model_validate(invoice)
        keys = {"Supplier": document.supplier, "Invoice": document.invoice}
        with self.session():
            def find() -> ApInvoice | None:
                return self.find_ap_invoice(document.supplier, document.invoice)

            if skip_existing and not validate_only and find() is not None:
                return PostResult(business_object="APSTIN", already_existed=True, keys=keys)
            parameters = _parameters("PostApInvoice", "APSTIN.XSD", [
                ("PostingPeriod", self.config.posting_period), ("IgnoreWarnings", "N"),
                ("ApplyIfEntireDocumentValid", "Y"), ("ValidateOnly", "Y" if validate_only else "N"),
                ("PostZeroAdjustments", "N"), ("LedgerDistributionCurrency", "L"),
                ("AutomaticTaxCalculation", "Y" if document.tax_value is None else "N"),
            ])
            root, found = self._post("Transaction/Post", "APSTIN", parameters, self._apstin_xml(document),
                                     None if validate_only else find)
        if found is not None:
            return PostResult(business_object="APSTIN", already_existed=True, keys=keys)
        item = root.find("Item") if root is not None else None
        for tag in ("Journal", "EntryNumber"):
            if item is not None and (item.findtext(tag) or "").strip():
                keys[tag] = (item.findtext(tag) or "").strip()
        return self._result("APSTIN", root, validate_only=validate_only, keys=keys)

    @staticmethod
    def _apstin_xml(document: ApInvoiceIn) -> str:
        root = _document("PostApInvoice", "APSTINDOC.XSD")
        item = _element(root, "Item")
        _element(item, "Supplier", document.supplier)
        _element(item, "TransactionCode", document.transaction_code)
        _element(item, "Branch", document.branch or None)
        _element(item, "Invoice", document.invoice)
        _element(item, "EntryNumber")
        _element(item, "TransactionValue", _money(document.value))
        _element(item, "Notation", document.notation)
        _element(item, "TransactionReference", document.reference or document.invoice)
        _element(item, "InvoiceDate", document.invoice_date.isoformat())
        _element(item, "DueDate", document.due_date.isoformat() if document.due_date else None)
        _element(item, "DiscountDate")
        _element(item, "TaxCode", document.tax_code or None)
        if document.tax_value is not None:
            _element(item, "TaxValue", _money(document.tax_value))
        for line in document.distribution:
            distribution = _element(item, "LedgerDistribution")
            _element(distribution, "LedgerCode", line.ledger_code)
            _element(distribution, "LedgerValue", _money(line.value))
            _element(distribution, "LedgerNotation", line.notation)
        return _serialize(root)

    def _setup(self, method: Literal["Add", "Update", "Delete"], supplier: SupplierIn, validate_only: bool) -> PostResult:
        parameters = _parameters("SetupApSupplier", "APSSSP.XSD", [
            ("IgnoreWarnings", "N"), ("ApplyIfEntireDocumentValid", "Y"), ("ValidateOnly", "Y" if validate_only else "N"),
        ])
        root = _document("SetupApSupplier", "APSSSPDOC.XSD")
        item = _element(root, "Item")
        _element(_element(item, "Key"), "Supplier", supplier.supplier)
        if method != "Delete":
            for tag, value in supplier.elements():
                _element(item, tag, value)
        with self.session():
            out = self._call(f"Setup/{method}", self.config.supplier_setup_object, _serialize(root), parameters, write=True)
        return self._result(self.config.supplier_setup_object, out, validate_only=validate_only,
                            keys={"Supplier": supplier.supplier})

    def add_supplier(self, supplier: SupplierIn | Mapping[str, Any], *, validate_only: bool = False) -> PostResult:
        """APSSSP Setup/Add, unless the supplier code already exists."""
        document = SupplierIn.model_validate(supplier)
        with self.session():
            if not validate_only and self.find_supplier(document.supplier) is not None:
                return PostResult(business_object=self.config.supplier_setup_object, already_existed=True,
                                  keys={"Supplier": document.supplier})
            return self._setup("Add", document, validate_only)

    def update_supplier(self, code: str, changes: SupplierIn | Mapping[str, Any], *,
                        validate_only: bool = False) -> PostResult:
        """APSSSP Setup/Update: only the fields that are set change."""
        data = changes.model_dump() if isinstance(changes, SupplierIn) else dict(changes)
        document = SupplierIn.model_validate({**data, "supplier": code})
        return self._setup("Update", document, validate_only)

    def post_purchase_order(self, order: PurchaseOrderIn | Mapping[str, Any], *, validate_only: bool = False,
                            update_existing: bool = False) -> PostResult:
        """PORTOI: add a PO, or (update_existing) change the one found by number or reference."""
        document = PurchaseOrderIn.model_validate(order)

        def find() -> PurchaseOrder | None:
            if not (document.purchase_order or document.reference):
                return None
            return self.find_purchase_order(document.purchase_order or None, reference=document.reference or None)

        with self.session():
            existing = None if validate_only else find()
            if existing is not None and not update_existing:
                return PostResult(business_object="PORTOI", already_existed=True,
                                  keys={"PurchaseOrder": existing.purchase_order})
            action = "C" if existing is not None else "A"
            number = existing.purchase_order if existing is not None else document.purchase_order
            parameters = self._portoi_parameters(validate_only)
            root, found = self._post("Transaction/Post", "PORTOI", parameters,
                                     self._portoi_xml(document, action, number),
                                     find if action == "A" and not validate_only else None)
        if found is not None:
            return PostResult(business_object="PORTOI", already_existed=True, keys={"PurchaseOrder": found.purchase_order})
        posted = (root.findtext("Order/Key/PurchaseOrder") or "").strip() if root is not None else ""
        return self._result("PORTOI", root, validate_only=validate_only,
                            keys={"PurchaseOrder": posted or number, "Action": action})

    def cancel_purchase_order(self, purchase_order: str) -> PostResult:
        """PORTOI with OrderActionType D: SYSPRO marks the PO cancelled."""
        root = _document("PostPurchaseOrders", "PORTOIDOC.XSD")
        header = _element(_element(root, "Orders"), "OrderHeader")
        _element(header, "OrderActionType", "D")
        _element(header, "PurchaseOrder", purchase_order)
        with self.session():
            out = self._call("Transaction/Post", "PORTOI", _serialize(root), self._portoi_parameters(False), write=True)
        return self._result("PORTOI", out, validate_only=False, keys={"PurchaseOrder": purchase_order, "Action": "D"})

    def _portoi_parameters(self, validate_only: bool) -> str:
        return _parameters("PostPurchaseOrders", "PORTOI.XSD", [
            ("ValidateOnly", "Y" if validate_only else "N"), ("IgnoreWarnings", "N"),
            ("AllowNonStockItems", "Y" if self.config.allow_non_stock_items else "N"),
            ("AllowZeroPrice", "Y" if self.config.allow_zero_price else "N"), ("ValidateWorkingDays", "N"),
            ("AllowPoWhenBlanketPo", "N"), ("DefaultMemoCode", ""), ("FixedExchangeRate", "N"),
            ("DefaultMemoDays", ""), ("AllowBlankLedgerCode", "Y"), ("DefaultDeliveryAddress", ""),
            ("CalcDueDate", "N"), ("InsertDangerousGoodsText", "N"), ("InsertAdditionalPOText", "N"), ("Status", "1"),
        ])

    def _portoi_xml(self, document: PurchaseOrderIn, action: str, number: str) -> str:
        root = _document("PostPurchaseOrders", "PORTOIDOC.XSD")
        orders = _element(root, "Orders")
        header = _element(orders, "OrderHeader")
        _element(header, "OrderActionType", action)
        _element(header, "Supplier", document.supplier)
        _element(header, "OrderDate", document.order_date.isoformat() if document.order_date else None)
        _element(header, "DueDate", document.due_date.isoformat() if document.due_date else None)
        _element(header, "Warehouse", document.warehouse or None)
        _element(header, "PurchaseOrder", number or None)
        _element(header, self.config.po_reference_field, document.reference or None)
        _element(header, "Buyer", document.buyer or None)
        details = _element(orders, "OrderDetails")
        for line in document.lines:
            stock = _element(details, "StockLine")
            _element(stock, "PurchaseOrderLine", str(line.line) if line.line else None)
            _element(stock, "LineActionType", line.action or ("C" if line.line else "A"))
            if (line.action or "") == "D":
                continue
            _element(stock, "StockCode", line.stock_code or None)
            _element(stock, "StockDescription", line.description or None)
            _element(stock, "Warehouse", line.warehouse or None)
            _element(stock, "OrderQty", _number(line.quantity) if line.quantity is not None else None)
            _element(stock, "OrderUom", line.uom or None)
            _element(stock, "Price", _number(line.price) if line.price is not None else None)
            _element(stock, "LedgerCode", line.ledger_code or None)
            _element(stock, "LatestDueDate", line.due_date.isoformat() if line.due_date else None)
        for text in document.comments:
            comment = _element(details, "CommentLine")
            _element(comment, "LineActionType", "A")
            _element(comment, "Comment", text)
        if document.freight is not None:
            freight = _element(details, "FreightLine")
            _element(freight, "LineActionType", "A")
            _element(freight, "FreightValue", _money(document.freight))
        return _serialize(root)

    def post_inventory_adjustment(self, adjustment: InventoryAdjustmentIn | Mapping[str, Any], *,
                                  validate_only: bool = False) -> PostResult:
        """INVTMA: adjust (or count) one stock code in one warehouse, once per reference."""
        document = InventoryAdjustmentIn.model_validate(adjustment)

        def find() -> InventoryMovement | None:
            if not document.reference:
                return None
            return self.find_inventory_movement(document.reference, stock_code=document.stock_code,
                                                warehouse=document.warehouse)

        keys = {"StockCode": document.stock_code, "Warehouse": document.warehouse}
        with self.session():
            existing = None if validate_only else find()
            if existing is not None:
                return PostResult(business_object=self.config.adjustment_object, already_existed=True,
                                  keys={**keys, "Journal": str(existing.journal), "JournalEntry": str(existing.journal_entry)})
            parameters = _parameters("PostInvAdjustments", "INVTMA.XSD", [
                ("TransactionDate", document.transaction_date.isoformat() if document.transaction_date else ""),
                ("PhysicalCount", "Y" if document.physical_count else "N"), ("PostingPeriod", self.config.posting_period),
                ("IgnoreWarnings", "N"), ("ApplyIfEntireDocumentValid", "Y"),
                ("ValidateOnly", "Y" if validate_only else "N"), ("IgnoreAnalysis", "Y"),
            ])
            root = _document("PostInvAdjustments", "INVTMADOC.XSD")
            item = _element(root, "Item")
            _element(item, "Journal")
            _element(item, "Warehouse", document.warehouse)
            _element(item, "StockCode", document.stock_code)
            _element(item, "Quantity", _number(document.quantity))
            _element(item, "UnitOfMeasure", document.unit_of_measure or None)
            _element(item, "Reference", document.reference or None)
            _element(item, "Notation", document.notation or None)
            _element(item, "LedgerCode", document.ledger_code or None)
            out, found = self._post("Transaction/Post", self.config.adjustment_object, parameters, _serialize(root),
                                    None if validate_only else find)
        if found is not None:
            return PostResult(business_object=self.config.adjustment_object, already_existed=True,
                              keys={**keys, "Journal": str(found.journal), "JournalEntry": str(found.journal_entry)})
        posted = out.find("Item") if out is not None else None
        for tag in ("Journal", "JournalEntry"):
            if posted is not None and (posted.findtext(tag) or "").strip():
                keys[tag] = (posted.findtext(tag) or "").strip()
        return self._result(self.config.adjustment_object, out, validate_only=validate_only, keys=keys)

    # ---- check --------------------------------------------------------------------------------------

    def get_version(self) -> str:
        """`GetVersion`: the host's version as plain text, answered without a session."""
        response = self._reads.request("GET", "GetVersion", endpoint="GetVersion")
        body = _decode(response.content).strip()
        if not body or body.upper().startswith("ERROR"):
            raise FatalError(f"GetVersion: {self._clean(body or 'empty answer')}", vendor=VENDOR, endpoint="GetVersion")
        return body

    def _probe(self, spec: TableSpec) -> str:
        """One row read by a query naming the change column, so a wrong column is a verdict."""
        if not spec.change_field:
            rows, _ = self._reader().fetch(spec.path, [], spec.keys, 1)
            return f"{spec.path}: {len(rows)} row(s) readable"
        where: Where = [(Cmp(spec.change_field, "GE", self._to_server(datetime(2000, 1, 1, tzinfo=timezone.utc))),)]
        rows, _ = self._reader().fetch(spec.path, where, (spec.change_field, *spec.keys), 1)
        return f"{spec.path}.{spec.change_field} answers a change query (confirmed; {len(rows)} row(s))"

    def _probe_object(self, kind: str, business_object: str, root_tag: str, item_tag: str = "Item") -> str:
        """The business object answers a validate-only call of an empty item: its own
        validation errors confirm it exists and is licensed; the host's `ERROR` says it is not."""
        parameters = _parameters(root_tag, f"{business_object}.XSD", [("ValidateOnly", "Y"), ("IgnoreWarnings", "N")])
        document = _document(root_tag, f"{business_object}DOC.XSD")
        _element(document, item_tag)
        try:
            self._call(kind, business_object, _serialize(document), parameters, write=True)
        except FatalError as error:
            if not (isinstance(error.details, dict) and error.details.get("kind") == "business"):
                raise FatalError(f"{business_object} not confirmed: {error.message}", vendor=VENDOR,
                                 endpoint=kind) from None
        return f"{business_object} answers {kind} (confirmed)"

    def check(self) -> list[CheckStep]:
        """GetVersion (no session), Logon, a change-column query per entity, the business
        objects the pair posts through answering, Logoff. The unconfirmed vendor facts (the
        supplier and stock-adjustment objects, the change columns) are each a step of their own,
        so what could not be confirmed is named."""
        steps: list[CheckStep] = [timed_check("GetVersion", lambda: f"SYSPRO {self.get_version()} reachable")]
        objects = (("Transaction/Post", "APSTIN", "PostApInvoice", "Item"),
                   ("Transaction/Post", "PORTOI", "PostPurchaseOrders", "Orders"),
                   ("Transaction/Post", self.config.adjustment_object, "PostInvAdjustments", "Item"),
                   ("Setup/Add", self.config.supplier_setup_object, "SetupApSupplier", "Item"))
        with ExitStack() as stack:
            logon = timed_check("logon", lambda: stack.enter_context(self.session()) or "session opened")
            steps.append(logon)
            if logon.ok:
                for name, spec in self.entities.items():
                    steps.append(timed_check(f"read {name}", lambda spec=spec: self._probe(spec)))
                for kind, business_object, root_tag, item_tag in objects:
                    steps.append(timed_check(f"object {business_object}", lambda k=kind, b=business_object, r=root_tag,
                                             i=item_tag: self._probe_object(k, b, r, i)))
        if logon.ok:
            steps.append(CheckStep("logoff", self.last_logoff == "0", 0.0,
                                   "session closed" if self.last_logoff == "0" else self.last_logoff))
        return steps


def _scrub_details(details: Any, clean: Callable[[str], str]) -> Any:
    if isinstance(details, str):
        return clean(details)
    if isinstance(details, dict):
        return {k: _scrub_details(v, clean) for k, v in details.items()}
    if isinstance(details, list):
        return [_scrub_details(v, clean) for v in details]
    return details
