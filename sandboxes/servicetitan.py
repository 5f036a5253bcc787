"""ServiceTitan API v2 simulator: the auth host and the API host in one Flask app.

It answers the modules the integration pairs use (accounting, crm, inventory, settings, and
the jobs the webhooks announce) with the vendor's paths, headers, envelopes, field names
and RFC 7807 errors, shaped exactly as the vendor's OpenAPI specs describe the responses
(every response schema there forbids extra properties). It also signs and delivers
webhooks with the vendor's retry schedule. Facts marked (unconfirmed) in
shared/vendor-apis/servicetitan.md are settings here, defaulting to the documented guess.
"""

from __future__ import annotations

import base64
import bisect
import collections
import fnmatch
import hashlib
import heapq
import hmac
import itertools
import json
import random
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Callable, Iterable, Literal

import requests
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from sandboxes.base import RateWindow, Sandbox, SandboxOptions
from sandboxes.kit.clock import MILLISECOND_US, Clock
from sandboxes.kit.tokens import bearer_token

# ---- vendor facts and tunables -------------------------------------------------------------

DEFAULT_TOKEN_TTL = 900  # ServiceTitan access tokens live 15 minutes
DEFAULT_RATE_LIMIT = 60  # requests per second per (app key, tenant)
DEFAULT_TENANT_ID = 1234567  # the tenant id of the vendor's own examples
DEFAULT_PAGE_SIZE = 50  # the vendor's default when pageSize is absent
MAX_PAGE_SIZE = 5000  # (unconfirmed) the largest pageSize honoured; larger requests are clamped
EXPORT_PAGE_SIZE = 500  # (unconfirmed) rows per export-feed response
MAX_IDS = 50  # the spec caps `ids` lookups at 50
WEBHOOK_RETRY_SCHEDULE = (10.0, 30.0, 60.0, 300.0)  # seconds between delivery attempts
WEBHOOK_TIMEOUT = 5.0  # (unconfirmed) how long a delivery waits for the receiver
WEBHOOK_WORKERS = 8  # delivery threads; deliveries never block the API call that caused them
WEBHOOK_LOG_LIMIT = 20_000  # deliveries kept for GET /_sandbox/webhooks
WEBHOOK_SIGNATURE_HEADER = "X-ServiceTitan-Signature"  # (unconfirmed) what receivers read
WEBHOOK_ENCODING = "hex"  # (unconfirmed) hex or base64 digest
QUERY_CACHE_SIZE = 64  # filtered id lists kept per table, so paging one query is O(page)

APP_KEY_MISSING = "Application key not present, check ST-App-Key header value."
APP_KEY_INVALID = "Application key is invalid, check ST-App-Key header value."  # (unconfirmed)
VALIDATION_TITLE = "One or more validation errors occurred."

PROBLEM_TYPES = {
    400: "https://tools.ietf.org/html/rfc7231#section-6.5.1",
    401: "https://tools.ietf.org/html/rfc7235#section-3.1",
    403: "https://tools.ietf.org/html/rfc7231#section-6.5.3",
    404: "https://tools.ietf.org/html/rfc7231#section-6.5.4",
    405: "https://tools.ietf.org/html/rfc7231#section-6.5.5",
    409: "https://tools.ietf.org/html/rfc7231#section-6.5.8",
    429: "https://tools.ietf.org/html/rfc6585#section-4",
    500: "https://tools.ietf.org/html/rfc7231#section-6.6.1",
    502: "https://tools.ietf.org/html/rfc7231#section-6.6.3",
    503: "https://tools.ietf.org/html/rfc7231#section-6.6.4",
    504: "https://tools.ietf.org/html/rfc7231#section-6.6.5",
}
STATUS_TITLES = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}

PO_STATUSES = ("Pending", "Sent", "PartiallyReceived", "Received", "Exported", "Canceled")
SEED_PO_STATUSES = ("Pending", "Sent", "Sent", "PartiallyReceived", "Received", "Received", "Received",
                    "Exported", "Canceled")  # a seeded tenant's mix, weighted
PO_LOCKED_STATUSES = frozenset({"Received", "Exported", "Canceled"})  # (unconfirmed) no edits after receipt
SYNC_STATUSES = ("Pending", "Posted", "Exported")
PAYMENT_TYPES = {1: "Cash", 2: "Check", 3: "Credit Card", 4: "ACH", 5: "Financing"}
DELIVERY_OPTIONS = ("Manual", "EmailAsExcel", "EmailAsPdf", "EmailAsPdfRollupView", "Electronic",
                    "MarkAsSent", "EmailAsExcelAndPdf", "VendorPortal")
CANCEL_REASONS = ("NotRequired", "Duplicate", "Accidental", "VendorIssue", "Other", "JobCanceled")

_CENT = Decimal("0.01")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SEED_START_US = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()) * 1_000_000
SEED_SPAN_US = 600 * 86_400 * 1_000_000  # seeded history spans ~20 months, all in the past


# ---- small helpers ---------------------------------------------------------------------------

def iso(us: int) -> str:
    """UTC ISO-8601 with milliseconds, the way the vendor prints date-times."""
    seconds, micros = divmod(us, 1_000_000)
    t = time.gmtime(seconds)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min,
                                                     t.tm_sec, micros // 1000)


def parse_when(text: str) -> int:
    """Microseconds since the epoch from an ISO date or date-time; naive means UTC."""
    value = text.strip()
    if not value:
        raise ValueError("empty date")
    if value.endswith(("z", "Z")):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def money(value: Decimal | float | int | str) -> str:
    """Accounting amounts travel as strings with two decimals."""
    return str(Decimal(str(value)).quantize(_CENT, rounding=ROUND_HALF_UP))


def dec(value: Any) -> Decimal:
    try:
        return Decimal(str(value if value not in (None, "") else 0))
    except InvalidOperation:
        return Decimal(0)


def num(value: float | Decimal) -> float:
    """Inventory and CRM amounts travel as JSON numbers."""
    return float(Decimal(str(value)).quantize(_CENT, rounding=ROUND_HALF_UP))


def sign_webhook(key: str, body: bytes, encoding: str = WEBHOOK_ENCODING) -> str:
    """HMAC-SHA256 of the raw body, hex or base64: what a receiver must recompute."""
    digest = hmac.new(key.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode() if encoding == "base64" else digest.hex()


def _address(street: str = "", unit: str = "", city: str = "", state: str = "", zip_: str = "",
             country: str = "USA") -> dict[str, Any]:
    return {"street": street, "unit": unit, "city": city, "state": state, "zip": zip_, "country": country}




class ApiError(Exception):
    """Answered as the vendor's RFC 7807 problem body."""

    def __init__(self, status: int, title: str, errors: dict[str, list[str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.errors = errors or {}
        self.headers = headers or {}


class RateLimited(Exception):
    def __init__(self, wait: float) -> None:
        super().__init__("rate limited")
        self.wait = wait


def invalid(field_name: str, message: str) -> ApiError:
    return ApiError(400, VALIDATION_TITLE, {field_name: [message]})


# ---- storage -----------------------------------------------------------------------------------

@dataclass(slots=True)
class Row:
    """One record: `view` is exactly the vendor's read view; the rest is bookkeeping."""

    view: dict[str, Any]
    created_us: int
    modified_us: int
    seq: int = 0
    active: bool = True
    external: dict[str, dict[str, str]] = field(default_factory=dict)  # app guid -> key -> value
    extra: dict[str, Any] = field(default_factory=dict)


class Table:
    """Rows of one entity with a change log (export feeds) and a per-version query cache."""

    def __init__(self, name: str, first_id: int) -> None:
        self.name = name
        self.rows: dict[int, Row] = {}
        self.next_id = first_id
        self.seq = 0
        self.log: list[tuple[int, int]] = []  # (seq, id) in change order; stale entries skipped
        self.version = 0
        self._cache: collections.OrderedDict[Any, list[int]] = collections.OrderedDict()

    def allocate(self) -> int:
        rid = self.next_id
        self.next_id += 1
        return rid

    def put(self, row: Row) -> None:
        rid = row.view["id"]
        self.rows[rid] = row
        self.next_id = max(self.next_id, rid + 1)
        self.stamp(row)

    def stamp(self, row: Row) -> None:
        """Record a change: a new log position for the export feed, caches invalidated."""
        self.seq += 1
        row.seq = self.seq
        self.log.append((row.seq, row.view["id"]))
        self.version += 1
        if len(self.log) > 2 * len(self.rows) + 1024:
            self.log = sorted((r.seq, r.view["id"]) for r in self.rows.values())

    def query(self, key: Any, predicate: Callable[[Row], bool] | None,
              sort: tuple[str, bool]) -> list[int]:
        cache_key = (self.version, key, sort)
        hit = self._cache.get(cache_key)
        if hit is not None:
            self._cache.move_to_end(cache_key)
            return hit
        rows = self.rows
        if predicate is None:
            ids = list(rows)
        else:
            ids = [rid for rid, row in rows.items() if predicate(row)]
        attr, descending = sort
        if attr == "id":
            ids.sort(reverse=descending)
        else:
            ids.sort(key=lambda rid: (getattr(rows[rid], attr), rid), reverse=descending)
        self._cache[cache_key] = ids
        while len(self._cache) > QUERY_CACHE_SIZE:
            self._cache.popitem(last=False)
        return ids

    def first_seq_since(self, since_us: int) -> int:
        """Export position just before the first change at or after `since_us`."""
        candidates = [row.seq for row in self.rows.values() if row.modified_us >= since_us]
        return min(candidates) - 1 if candidates else self.seq

    def export_after(self, after_seq: int, limit: int) -> tuple[list[Row], int, bool]:
        """Up to `limit` rows changed after `after_seq`, in change order, and the new position."""
        start = bisect.bisect_right(self.log, (after_seq, float("inf")))
        found: list[Row] = []
        position = after_seq
        index = start
        while index < len(self.log) and len(found) < limit:
            seq, rid = self.log[index]
            row = self.rows.get(rid)
            if row is not None and row.seq == seq:
                found.append(row)
            position = seq
            index += 1
        has_more = False
        while index < len(self.log):
            seq, rid = self.log[index]
            row = self.rows.get(rid)
            if row is not None and row.seq == seq:
                has_more = True
                break
            position = seq  # only stale entries so far: safe to skip past them
            index += 1
        return found, position, has_more


@dataclass(frozen=True)
class Resource:
    """One vendor collection: where it lives, how it filters, which events it raises."""

    entity: str  # control-API name, e.g. "purchase_orders"
    module: str  # accounting | crm | inventory | settings | jpm
    path: str  # collection path below /{module}/v2/tenant/{tenant}/
    scope: str  # (unconfirmed beyond the documented examples) OAuth scope, ":r"/":w" appended
    first_id: int
    active_param: str | None = None  # "active" (True/Any/False) or "activeState"
    sorts: tuple[str, ...] = ()  # fields `sort` accepts; empty: the endpoint has no sort
    by_id: bool = False  # GET {path}/{id} exists
    export: str | None = None  # export feed path
    export_adds_active: bool = False  # the export schema carries `active`, the read view not


RESOURCES: dict[str, Resource] = {r.entity: r for r in (
    Resource("purchase_orders", "inventory", "purchase-orders", "tn.inv.purchaseorders", 90_001,
             sorts=("Id",), by_id=True, export="export/purchase-orders"),
    Resource("vendors", "inventory", "vendors", "tn.inv.vendors", 501, active_param="active",
             sorts=("Id", "ModifiedOn", "CreatedOn"), by_id=True),
    Resource("adjustments", "inventory", "adjustments", "tn.inv.adjustments", 30_001, active_param="active",
             sorts=("Id", "ModifiedOn", "CreatedOn"), export="export/adjustments"),
    Resource("warehouses", "inventory", "warehouses", "tn.inv.warehouses", 11, active_param="active",
             sorts=("Id", "ModifiedOn", "CreatedOn")),
    Resource("inventory_bills", "accounting", "inventory-bills", "tn.acc.inventorybills", 70_001,
             export="export/inventory-bills", export_adds_active=True),
    Resource("ap_bills", "accounting", "ap-bills", "tn.acc.apbills", 75_001, by_id=True),
    Resource("ap_payments", "accounting", "ap-payments", "tn.acc.appayments", 78_001,
             sorts=("Id", "ModifiedOn", "CreatedOn")),
    Resource("invoices", "accounting", "invoices", "tn.acc.invoices", 40_001, active_param="activeState",
             sorts=("Id", "ModifiedOn", "CreatedOn"), export="export/invoices"),
    Resource("payments", "accounting", "payments", "tn.acc.payments", 60_001, active_param="activeState",
             sorts=("Id", "ModifiedOn", "CreatedOn"), export="export/payments"),
    Resource("gl_accounts", "accounting", "gl-accounts", "tn.acc.glaccounts", 2_001, active_param="active",
             sorts=("Id", "ModifiedOn", "CreatedOn"), by_id=True),
    Resource("customers", "crm", "customers", "tn.crm.customers", 10_001, active_param="active",
             sorts=("Id", "ModifiedOn", "CreatedOn"), by_id=True, export="export/customers"),
    Resource("business_units", "settings", "business-units", "tn.stt.businessunits", 1, active_param="active",
             by_id=True, export="export/business-units"),
    Resource("jobs", "jpm", "jobs", "tn.jpm.jobs", 20_001, sorts=("Id", "ModifiedOn", "CreatedOn"), by_id=True),
)}

ALL_SCOPES = tuple(sorted(f"{r.scope}:{mode}" for r in RESOURCES.values() for mode in ("r", "w")))
SORT_FIELDS = {"id": "id", "modifiedon": "modified_us", "modified": "modified_us",
               "createdon": "created_us", "created": "created_us"}


# ---- seed reference data ---------------------------------------------------------------------

BUSINESS_UNITS = (
    ("HVAC - Residential Service", "HVAC", "Residential", "HVAC-RES"),
    ("HVAC - Commercial Install", "HVAC", "Commercial", "HVAC-COM"),
    ("Plumbing - Service", "Plumbing", "Residential", "PLB-SVC"),
    ("Plumbing - Replacement", "Plumbing", "Residential", "PLB-RPL"),
    ("Electrical - Service", "Electrical", "Residential", "ELE-SVC"),
    ("Drains & Sewer", "Plumbing", "Commercial", "DRN-SWR"),
)

GL_ACCOUNTS = (  # number, name, type, subtype, default account type
    ("1010", "Operating Checking", "Bank", "Checking", "CheckingAccount"),
    ("1050", "Undeposited Funds", "Other Current Asset", "UndepositedFunds", "UndepositedFunds"),
    ("1100", "Accounts Receivable", "Accounts Receivable", "AccountsReceivable", "AccountsReceivable"),
    ("1200", "Inventory Asset", "Other Current Asset", "Inventory", "Inventory"),
    ("2000", "Accounts Payable", "Accounts Payable", "AccountsPayable", "AccountsPayable"),
    ("2200", "Sales Tax Payable", "Other Current Liability", "SalesTaxPayable", "SalesTaxPayable"),
    ("4000", "Service Revenue", "Income", "ServiceFeeIncome", "Revenue"),
    ("4100", "Installation Revenue", "Income", "SalesOfProductIncome", None),
    ("4200", "Material Sales", "Income", "SalesOfProductIncome", None),
    ("5000", "COGS - Materials", "Cost of Goods Sold", "SuppliesMaterialsCogs", "CostOfGoodsSoldMaterials"),
    ("5100", "COGS - Equipment", "Cost of Goods Sold", "EquipmentRentalCos", "CostOfGoodsSoldEquipment"),
    ("5200", "Freight In", "Cost of Goods Sold", "ShippingFreightDeliveryCos", "CostOfGoodsSoldShipping"),
    ("6100", "Shop Supplies", "Expense", "SuppliesMaterials", None),
    ("6200", "Vehicle Fuel", "Expense", "Auto", None),
    ("6300", "Rent", "Expense", "RentOrLeaseOfBuildings", None),
    ("6400", "Utilities", "Expense", "Utilities", None),
    ("6500", "Tools & Small Equipment", "Expense", "EquipmentRental", None),
)

SKUS = (  # code, name, type, cost
    ("CU-3/8", "Copper Line Set 3/8in x 50ft", "Material", 38.00),
    ("CU-7/8", "Copper Pipe 7/8in x 10ft", "Material", 64.50),
    ("PVC-2", "PVC Pipe 2in Sch40 x 10ft", "Material", 12.75),
    ("PEX-1/2", "PEX Tubing 1/2in x 100ft", "Material", 41.20),
    ("FLT-16x25", "Pleated Filter 16x25x1 MERV 11", "Material", 9.80),
    ("CAP-45/5", "Run Capacitor 45/5 MFD 440V", "Material", 18.40),
    ("CONT-30A", "Contactor 30A 24V Coil", "Material", 22.15),
    ("R410A-25", "Refrigerant R-410A 25lb Cylinder", "Material", 289.00),
    ("TSTAT-T6", "Thermostat T6 Pro Programmable", "Material", 95.00),
    ("BRKR-20A", "Breaker 20A Single Pole", "Material", 7.60),
    ("WIRE-12/2", "Romex 12/2 NM-B 250ft", "Material", 118.00),
    ("VALVE-BALL-1", "Ball Valve 1in Brass", "Material", 16.90),
    ("FLEX-DUCT-8", "Flex Duct 8in x 25ft R6", "Material", 52.30),
    ("MOTOR-1/2", "Condenser Fan Motor 1/2 HP", "Material", 142.00),
    ("WH-50G", "Water Heater 50 Gal Gas", "Equipment", 845.00),
    ("AC-3T-16S", "Condenser 3 Ton 16 SEER", "Equipment", 2450.00),
    ("FURN-80K", "Gas Furnace 80k BTU 96%", "Equipment", 1780.00),
    ("DISP-3/4", "Disposal 3/4 HP", "Equipment", 189.00),
    ("PANEL-200", "Load Center 200A 40 Space", "Equipment", 312.00),
)

SERVICES = (  # name, price, revenue account number
    ("Diagnostic Fee", 89.00, "4000"), ("Maintenance Tune-Up", 149.00, "4000"),
    ("Drain Cleaning - Main Line", 325.00, "4000"), ("Electrical Troubleshooting (per hour)", 135.00, "4000"),
    ("System Installation Labor", 1450.00, "4100"), ("Water Heater Install Labor", 650.00, "4100"),
)

# Families of near-duplicate vendors: the same supplier typed differently over the years.
VENDOR_FAMILIES = (
    (("Acme Supply Co", "100 Industrial Pkwy", "Suite 200", "Fresno", "CA", "93725"),
     ("ACME Supply Company", "100 Industrial Parkway", "Ste 200", "Fresno", "CA", "93725"),
     ("Acme Supply, Inc.", "100 Industrial Pkwy.", "", "Fresno", "CA", "93725-1234")),
    (("Ferguson Enterprises", "2750 S Orange Ave", "", "Fresno", "CA", "93725"),
     ("Ferguson Enterprises, LLC", "2750 South Orange Avenue", "", "Fresno", "CA", "93725")),
    (("Johnstone Supply", "4410 N Blackstone Ave", "", "Fresno", "CA", "93726"),
     ("Johnstone Supply #412", "4410 N. Blackstone Ave", "", "Fresno", "CA", "93726")),
    (("Grainger", "1715 N Fine Ave", "", "Fresno", "CA", "93727"),
     ("W.W. Grainger Inc", "1715 North Fine Avenue", "", "Fresno", "CA", "93727")),
    (("United Refrigeration", "3010 E Jensen Ave", "", "Fresno", "CA", "93706"),
     ("United Refrigeration Inc.", "3010 E. Jensen Ave", "Bldg B", "Fresno", "CA", "93706")),
    (("R.E. Michel Company", "455 W Shaw Ave", "", "Clovis", "CA", "93612"),
     ("RE Michel Co", "455 West Shaw Avenue", "", "Clovis", "CA", "93612")),
    (("Winsupply of Fresno", "2424 E Dakota Ave", "", "Fresno", "CA", "93726"),),
    (("Carrier Enterprise", "5110 E Clinton Way", "Suite 101", "Fresno", "CA", "93727"),),
    (("Graybar Electric", "3750 W Ashlan Ave", "", "Fresno", "CA", "93722"),),
    (("Hajoca Corporation", "1605 H St", "", "Fresno", "CA", "93721"),),
    (("Lennox PartsPlus", "7045 N Abby St", "", "Fresno", "CA", "93720"),),
    (("Gensco Inc", "2525 S East Ave", "", "Fresno", "CA", "93706"),),
    (("Baker Distributing", "4795 E Hedges Ave", "", "Fresno", "CA", "93703"),),
    (("Rexel USA", "1350 N Blackstone Ave", "", "Fresno", "CA", "93703"),),
    (("Consolidated Supply Co", "333 W Olive Ave", "", "Merced", "CA", "95348"),),
    (("Morrison Supply", "880 N Gateway Blvd", "", "Visalia", "CA", "93291"),),
)

FIRST_NAMES = ("James", "Maria", "Robert", "Linda", "Michael", "Patricia", "David", "Jennifer", "Carlos",
               "Susan", "Daniel", "Karen", "Jose", "Nancy", "Thomas", "Lisa", "Kevin", "Angela", "Brian",
               "Sandra", "Hector", "Michelle", "Steven", "Emily")
LAST_NAMES = ("Garcia", "Smith", "Johnson", "Martinez", "Brown", "Lopez", "Davis", "Hernandez", "Miller",
              "Wilson", "Anderson", "Nguyen", "Thompson", "Ramirez", "Moore", "Patel", "Clark", "Lewis",
              "Walker", "Young", "Allen", "King", "Wright", "Torres")
COMPANY_WORDS = ("Valley", "Sierra", "Central", "Golden State", "Riverpark", "Sunnyside", "Tower District",
                 "Fig Garden", "Woodward", "Copper River")
COMPANY_KINDS = ("Dental Group", "Property Management", "Storage", "Apartments", "Church", "Veterinary Clinic",
                 "Auto Body", "Bakery", "Fitness", "School District Office")
STREETS = ("N Blackstone Ave", "E Shaw Ave", "W Herndon Ave", "N Cedar Ave", "E Bullard Ave", "N Palm Ave",
           "W Shields Ave", "E Kings Canyon Rd", "N First St", "W Barstow Ave", "E Nees Ave", "N Maple Ave",
           "W Sierra Ave", "E Olive Ave", "N Fresno St", "S Clovis Ave")
CITIES = (("Fresno", "93704"), ("Fresno", "93711"), ("Fresno", "93720"), ("Fresno", "93726"),
          ("Clovis", "93611"), ("Clovis", "93619"), ("Madera", "93637"), ("Visalia", "93291"),
          ("Hanford", "93230"), ("Sanger", "93657"), ("Selma", "93662"), ("Reedley", "93654"))
EXPENSES = (("PG&E electric service", "6400"), ("Shop rent", "6300"), ("Fleet fuel cards", "6200"),
            ("Shop consumables", "6100"), ("Tool replacement", "6500"))
ADJUSTMENT_TYPES = ("Cycle Count", "Damaged", "Shrinkage", "Found Stock")


# ---- webhooks --------------------------------------------------------------------------------

@dataclass
class Subscription:
    id: str
    url: str
    hmac_key: str | None
    events: tuple[str, ...]
    header: str
    encoding: str

    def wants(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.events)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "events": list(self.events), "header": self.header,
                "encoding": self.encoding, "signed": bool(self.hmac_key)}


@dataclass
class Delivery:
    id: int
    subscription: Subscription
    event_id: str
    event_type: str
    body: bytes
    generation: int
    duplicate: bool = False
    state: str = "pending"  # pending | retrying | delivered | failed | dropped
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "subscription_id": self.subscription.id, "url": self.subscription.url,
                "event_id": self.event_id, "event_type": self.event_type, "state": self.state,
                "duplicate": self.duplicate, "attempts": list(self.attempts)}


class WebhookHub:
    """Signed deliveries on a thread pool, retried on the vendor's schedule, never blocking."""

    def __init__(self, sandbox: "ServiceTitanSandbox") -> None:
        self._sandbox = sandbox
        self._cond = threading.Condition()
        self._subs: dict[str, Subscription] = {}
        self._log: collections.deque[Delivery] = collections.deque(maxlen=WEBHOOK_LOG_LIMIT)
        self._retries: list[tuple[float, int, Delivery]] = []
        self._pending = 0
        self._generation = 0
        self._ids = itertools.count(1)
        self._rng = random.Random(sandbox.options.seed + 3)
        self._executor: ThreadPoolExecutor | None = None
        self._scheduler: threading.Thread | None = None
        self._local = threading.local()

    # -- subscriptions
    def subscribe(self, url: str, hmac_key: str | None, events: Iterable[str], header: str, encoding: str) -> str:
        sub = Subscription(f"wh_{uuid.uuid4().hex[:12]}", url, hmac_key or None, tuple(events), header, encoding)
        with self._cond:
            self._subs[sub.id] = sub
        return sub.id

    def unsubscribe(self, sub_id: str) -> bool:
        with self._cond:
            return self._subs.pop(sub_id, None) is not None

    def describe(self) -> dict[str, Any]:
        with self._cond:
            return {"subscriptions": [s.describe() for s in self._subs.values()],
                    "deliveries": [d.describe() for d in self._log], "pending": self._pending}

    # -- events
    def emit(self, event_type: str, tenant_id: int, data: dict[str, Any]) -> None:
        """Queue one event for every matching subscription; returns at once."""
        with self._cond:
            subs = [s for s in self._subs.values() if s.wants(event_type)]
            if not subs:
                return
            envelope = {"eventId": str(uuid.uuid4()), "eventType": event_type, "tenantId": tenant_id,
                        "createdOn": iso(self._sandbox.clock.now_us()), "data": data}
            body = json.dumps(envelope, separators=(",", ":")).encode()
            faults = self._sandbox.faults
            stats = self._sandbox.stats
            for sub in subs:
                delivery = Delivery(next(self._ids), sub, envelope["eventId"], event_type, body, self._generation)
                self._log.append(delivery)
                if faults.webhook_drop_rate and self._rng.random() < faults.webhook_drop_rate:
                    delivery.state = "dropped"
                    stats.bump("webhooks_dropped")
                    continue
                copies = [delivery]
                if faults.webhook_duplicate_rate and self._rng.random() < faults.webhook_duplicate_rate:
                    twin = Delivery(next(self._ids), sub, delivery.event_id, event_type, body, self._generation,
                                    duplicate=True)
                    self._log.append(twin)
                    copies.append(twin)
                    stats.bump("webhooks_duplicated")
                for item in copies:
                    self._pending += 1
                    stats.bump("webhooks_emitted")
                    self._pool().submit(self._attempt, item)

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def retry_now(self) -> None:
        """Make every scheduled retry due now (tests that do not want to wait)."""
        with self._cond:
            self._retries = [(0.0, n, d) for _, n, d in self._retries]
            heapq.heapify(self._retries)
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._generation += 1
            self._subs.clear()
            self._log.clear()
            self._retries.clear()
            self._pending = 0
            self._cond.notify_all()

    # -- delivery machinery
    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=WEBHOOK_WORKERS, thread_name_prefix="st-webhook")
        return self._executor

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _attempt(self, delivery: Delivery) -> None:
        sub = delivery.subscription
        headers = {"Content-Type": "application/json"}
        if sub.hmac_key:
            headers[sub.header] = sign_webhook(sub.hmac_key, delivery.body, sub.encoding)
        status: int | None = None
        error: str | None = None
        started = self._sandbox.clock.now_us()
        try:
            response = self._session().post(sub.url, data=delivery.body, headers=headers,
                                             timeout=self._sandbox.webhook_timeout)
            status = response.status_code
            response.close()
        except requests.RequestException as exc:
            error = type(exc).__name__
        ok = status is not None and 200 <= status < 300
        stats = self._sandbox.stats
        with self._cond:
            if delivery.generation != self._generation:
                return
            delivery.attempts.append({"at": iso(started), "status": status, "error": error})
            if ok:
                delivery.state = "delivered"
                stats.bump("webhooks_sent")
                self._finish()
                return
            stats.bump("webhooks_failed")
            schedule = self._sandbox.webhook_retry_schedule
            made = len(delivery.attempts)
            if made <= len(schedule):
                delay = schedule[made - 1] * self._sandbox.webhook_retry_scale
                delivery.state = "retrying"
                heapq.heappush(self._retries, (time.monotonic() + delay, delivery.id, delivery))
                self._ensure_scheduler()
                self._cond.notify_all()
            else:
                delivery.state = "failed"
                stats.bump("webhooks_given_up")
                self._finish()

    def _finish(self) -> None:
        self._pending -= 1
        self._cond.notify_all()

    def _ensure_scheduler(self) -> None:
        if self._scheduler is None or not self._scheduler.is_alive():
            self._scheduler = threading.Thread(target=self._run_scheduler, name="st-webhook-retries", daemon=True)
            self._scheduler.start()

    def _run_scheduler(self) -> None:
        while True:
            with self._cond:
                while not self._retries:
                    self._cond.wait()
                due, _, delivery = self._retries[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._retries)
                if delivery.generation != self._generation:
                    continue
            self._pool().submit(self._attempt, delivery)


# ---- the sandbox -------------------------------------------------------------------------------

class ServiceTitanSandbox(Sandbox):
    """ServiceTitan's auth and API hosts. State lives in `self.tables` under `self.lock`."""

    vendor = "servicetitan"

    # Event names are (unconfirmed); each entity maps to (created, updated) event types.
    event_types: dict[str, tuple[str | None, str | None]] = {
        "purchase_orders": ("purchase-order.created", "purchase-order.updated"),
        "inventory_bills": ("inventory-bill.created", "inventory-bill.updated"),
        "ap_bills": ("ap-bill.created", None),
        "invoices": ("invoice.created", "invoice.updated"),
        "payments": ("payment.created", None),
        "ap_payments": ("ap-payment.created", None),
        "customers": ("customer.created", "customer.updated"),
        "vendors": ("vendor.created", "vendor.updated"),
        "jobs": ("job.created", None),
    }

    def __init__(
        self,
        options: SandboxOptions | None = None,
        *,
        tenant_id: int = DEFAULT_TENANT_ID,
        webhook_retry_scale: float = 1.0,
        webhook_retry_schedule: tuple[float, ...] = WEBHOOK_RETRY_SCHEDULE,
        webhook_timeout: float = WEBHOOK_TIMEOUT,
        max_page_size: int = MAX_PAGE_SIZE,
        export_page_size: int = EXPORT_PAGE_SIZE,
        unique_vendor_names: bool = True,  # (unconfirmed) ServiceTitan refuses a second vendor of one name
        seed_scope: Literal["all", "purchasing"] = "all",
    ) -> None:
        options = options or SandboxOptions()
        # "purchasing": vendors and `records` received purchase orders, each with its
        # inventory bill, and nothing else; large backfills without a tenant's whole history.
        self.seed_scope = seed_scope
        creds = random.Random(f"servicetitan-credentials-{options.seed}")
        self.tenant_id = tenant_id
        self.client_id = f"cid.{''.join(creds.choices('abcdefghijklmnopqrstuvwxyz0123456789', k=24))}"
        self.client_secret = f"cs1.{''.join(creds.choices('abcdefghijklmnopqrstuvwxyz0123456789', k=48))}"
        self.app_key = f"ak1.{''.join(creds.choices('abcdefghijklmnopqrstuvwxyz0123456789', k=36))}"
        self.token_ttl = options.token_ttl or DEFAULT_TOKEN_TTL
        limit = DEFAULT_RATE_LIMIT if options.rate_limit is None else options.rate_limit
        self.rate = RateWindow(limit or None)
        self.app_scopes: set[str] = set(ALL_SCOPES)
        self.webhook_retry_scale = webhook_retry_scale
        self.webhook_retry_schedule = tuple(webhook_retry_schedule)
        self.webhook_timeout = webhook_timeout
        self.max_page_size = max_page_size
        self.export_page_size = export_page_size
        self.unique_vendor_names = unique_vendor_names
        self.clock = Clock(MILLISECOND_US)
        self.tables: dict[str, Table] = {}
        self._item_ids = itertools.count(1_000_001)
        self._location_ids = itertools.count(110_001)
        self._tick_rng = random.Random(options.seed + 2)
        self._gl_cache: tuple[int, dict[str, dict[str, Any]]] = (-1, {})
        self.webhooks: WebhookHub | None = None  # built once the base class has set options
        super().__init__(options)
        self.webhooks = WebhookHub(self)

    # ---- Sandbox contract ----------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "api_base": self.base_url,
            "token_url": f"{self.base_url}/connect/token",
            "credentials": {"client_id": self.client_id, "client_secret": self.client_secret,
                            "app_key": self.app_key, "tenant": self.tenant_id},
        }

    def clear_state(self) -> None:
        self.tables = {name: Table(name, res.first_id) for name, res in RESOURCES.items()}
        self._item_ids = itertools.count(1_000_001)
        self._location_ids = itertools.count(110_001)
        self._tick_rng = random.Random(self.options.seed + 2)
        self._gl_cache = (-1, {})
        self.rate.limit = DEFAULT_RATE_LIMIT if self.options.rate_limit is None else (self.options.rate_limit or None)
        self.rate.reset()
        self.app_scopes = set(ALL_SCOPES)
        if getattr(self, "webhooks", None) is not None:
            self.webhooks.clear()

    def get_entities(self, entity: str) -> list[dict[str, Any]]:
        table = self.tables[self._entity_name(entity)]
        return [json.loads(json.dumps(row.view)) for row in table.rows.values()]

    def wait_for_deliveries(self, timeout: float = 10.0) -> bool:
        """True once no webhook delivery is queued, in flight or waiting for a retry."""
        assert self.webhooks is not None
        return self.webhooks.wait_idle(timeout)

    # ---- seeding ---------------------------------------------------------------------------

    def seed(self, rng: random.Random, records: int) -> None:
        n = max(1, records)
        stamps = _SeedClock(rng)
        self._seed_settings(rng, stamps)
        vendors = self._seed_vendors(rng, stamps, max(20, n // 10))
        if self.seed_scope == "purchasing":
            pos = self._seed_purchase_orders(rng, stamps, n, vendors, statuses=("Received",))
            for po in pos:
                self._bill_from_po(po, stamps.after(po.modified_us))
            for table in self.tables.values():
                self._restamp_in_time_order(table)
            return
        customers = self._seed_customers(rng, stamps, n)
        pos = self._seed_purchase_orders(rng, stamps, n, vendors)
        bills = [self._bill_from_po(po, stamps.after(po.modified_us)) for po in pos
                 if po.view["status"] in ("Received", "Exported")]
        self._seed_ap_bills(rng, stamps, max(4, n // 4), vendors, pos)
        self._seed_ap_payments(rng, stamps, bills)
        invoices = self._seed_invoices(rng, stamps, n, customers)
        self._seed_payments(rng, stamps, invoices)
        self._seed_adjustments(rng, stamps, max(4, n // 4))
        for table in self.tables.values():
            self._restamp_in_time_order(table)

    def _restamp_in_time_order(self, table: Table) -> None:
        """Seeded rows enter the change log in modification order, as history would have."""
        table.log.clear()
        table.seq = 0
        for row in sorted(table.rows.values(), key=lambda r: (r.modified_us, r.view["id"])):
            table.seq += 1
            row.seq = table.seq
            table.log.append((row.seq, row.view["id"]))
        table.version += 1

    def _insert(self, entity: str, view: dict[str, Any], created_us: int, modified_us: int, **meta: Any) -> Row:
        if "createdOn" in view:
            view["createdOn"] = iso(created_us)
        if "modifiedOn" in view:
            view["modifiedOn"] = iso(modified_us)
        row = Row(view, created_us, modified_us, **meta)
        if "active" in view:
            row.active = bool(view["active"])
        self.tables[entity].put(row)
        return row

    def _seed_settings(self, rng: random.Random, stamps: "_SeedClock") -> None:
        tenant_ref = {"id": self.tenant_id, "name": "Central Valley Home Services", "accountCode": "CVHS",
                      "franchiseId": None, "conceptCode": None, "modifiedOn": iso(SEED_START_US)}
        for index, (name, trade, division, code) in enumerate(BUSINESS_UNITS):
            created = stamps.early()
            table = self.tables["business_units"]
            city, zip_ = CITIES[index % len(CITIES)]
            view = {
                "id": table.allocate(), "active": True, "name": name, "officialName": f"Central Valley {name}",
                "email": f"{code.lower()}@cvhs.example", "currency": "USD", "phoneNumber": "5595550100",
                "invoiceHeader": None, "invoiceMessage": "Thank you for your business.", "defaultTaxRate": 0.0798,
                "authorizationParagraph": None, "acknowledgementParagraph": None,
                "address": {**_address(f"{1200 + index * 10} {STREETS[index]}", "", city, "CA", zip_),
                            "latitude": 36.7378, "longitude": -119.7871, "isManualCoordinates": False,
                            "isMilitary": False},
                "materialSku": None, "quickbooksClass": code, "accountCode": code, "franchiseId": None,
                "conceptCode": None, "corporateContractNumber": None,
                "trade": {"id": 100 + index, "name": trade}, "division": {"id": 200 + index, "name": division},
                "tagTypeIds": [], "tenant": dict(tenant_ref), "createdOn": None, "modifiedOn": None,
                "externalData": [],
            }
            self._insert("business_units", view, created, stamps.after(created))
        for number, name, type_, subtype, default in GL_ACCOUNTS:
            created = stamps.early()
            table = self.tables["gl_accounts"]
            view = {"id": table.allocate(), "name": name, "number": number, "description": f"{number} {name}",
                    "type": type_, "subtype": subtype, "active": True, "isIntacctGroup": False,
                    "isIntacctBankAccount": type_ == "Bank", "source": "AccountingSystem",
                    "defaultAccountType": default, "createdOn": None, "modifiedOn": None}
            self._insert("gl_accounts", view, created, stamps.after(created))
        for index, (name, street, city) in enumerate((("Main Warehouse", "2900 S Chestnut Ave", "Fresno"),
                                                      ("Clovis Yard", "700 Pollasky Ave", "Clovis"),
                                                      ("Visalia Depot", "1300 N Ben Maddox Way", "Visalia"))):
            created = stamps.early()
            table = self.tables["warehouses"]
            view = {"id": table.allocate(), "name": name, "active": True,
                    "address": _address(street, "", city, "CA", "93725"), "inventoryTemplateId": None,
                    "createdOn": None, "modifiedOn": None, "externalData": []}
            self._insert("warehouses", view, created, stamps.after(created))

    def _seed_vendors(self, rng: random.Random, stamps: "_SeedClock", count: int) -> list[Row]:
        rows: list[Row] = []
        names = [variant for family in VENDOR_FAMILIES for variant in family]
        branch = 0
        while len(rows) < count:
            if len(rows) < len(names):
                name, street, unit, city, state, zip_ = names[len(rows)]
            else:
                family = VENDOR_FAMILIES[branch % len(VENDOR_FAMILIES)][0]
                branch += 1
                city, zip_ = CITIES[branch % len(CITIES)]
                name = f"{family[0]} - {city} #{100 + branch}"
                street, unit, state = f"{rng.randint(100, 9999)} {rng.choice(STREETS)}", "", "CA"
            created = stamps.early()
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            slug = "".join(ch for ch in name.lower() if ch.isalnum())[:16]
            view = self._vendor_view(name, rng.random() > 0.05, _address(street, unit, city, state, zip_),
                                     {"firstName": first, "lastName": last,
                                      "phone": f"559555{rng.randint(1000, 9999)}",
                                      "email": f"ap@{slug}.example", "fax": ""},
                                     memo=rng.choice(("", "Net 30", "Will-call counter opens 6am", "COD only")),
                                     delivery=rng.choice(DELIVERY_OPTIONS[:3]))
            rows.append(self._insert("vendors", view, created, stamps.after(created)))
        return rows

    def _vendor_view(self, name: str, active: bool, address: dict[str, Any], contact: dict[str, Any],
                     memo: str = "", delivery: str = "Manual", tax_rate: float = 0.0) -> dict[str, Any]:
        return {"id": self.tables["vendors"].allocate(), "name": name, "active": active,
                "isTruckReplenishment": False, "isMobileCreationRestricted": False, "memo": memo,
                "deliveryOption": delivery, "defaultTaxRate": tax_rate, "contactInfo": contact,
                "address": address, "createdOn": None, "modifiedOn": None, "externalData": [],
                "customFields": []}

    def _seed_customers(self, rng: random.Random, stamps: "_SeedClock", count: int) -> list[Row]:
        rows = []
        for _ in range(count):
            created = stamps.any()
            commercial = rng.random() < 0.25
            if commercial:
                name = f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_KINDS)}"
            else:
                name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
            city, zip_ = rng.choice(CITIES)
            address = {**_address(f"{rng.randint(100, 9999)} {rng.choice(STREETS)}",
                                  rng.choice(("", "", "", "Apt 4", "Unit B", "Suite 120")), city, "CA", zip_),
                       "latitude": round(36.7 + rng.random() * 0.2, 6),
                       "longitude": round(-119.9 + rng.random() * 0.3, 6)}
            view = self._customer_view(name, "Commercial" if commercial else "Residential", address)
            view["balance"] = 0.0
            row = self._insert("customers", view, created, stamps.after(created))
            phone = f"559{rng.randint(2000000, 9999999)}"
            email = f"{name.split()[0].lower()}.{view['id']}@mail.example"
            location = self._attach_location(row, name, address, [("Phone", phone), ("Email", email)])
            row.extra["contacts"] = [dict(c) for c in location["contacts"]]
            rows.append(row)
        return rows

    def _customer_view(self, name: str, type_: str, address: dict[str, Any]) -> dict[str, Any]:
        return {"id": self.tables["customers"].allocate(), "active": True, "name": name, "type": type_,
                "address": address, "customFields": [], "balance": 0.0, "taxExempt": False, "tagTypeIds": [],
                "doNotMail": False, "doNotService": False, "nationalAccount": False, "createdOn": None,
                "createdById": 1, "modifiedOn": None, "mergedToId": None, "paymentTermId": None,
                "creditLimit": None, "creditLimitBalance": None, "externalData": []}

    def _attach_location(self, customer: Row, name: str, address: dict[str, Any],
                         contacts: list[tuple[str, str]]) -> dict[str, Any]:
        contact_views = [{"id": next(self._location_ids) + 500_000, "type": kind, "value": value, "memo": None}
                         for kind, value in contacts]
        location = {"taxZoneId": None, "id": next(self._location_ids), "customerId": customer.view["id"],
                    "active": True, "name": name, "address": dict(address), "customFields": [],
                    "createdOn": customer.view["createdOn"], "createdById": 1,
                    "modifiedOn": customer.view["modifiedOn"], "mergedToId": None, "zoneId": None,
                    "taxExempt": False, "tagTypeIds": [], "externalData": [], "contacts": contact_views}
        customer.extra.setdefault("locations", []).append(location)
        return location

    def _po_item(self, sku_index: int, quantity: float, created: str, received: float = 0.0,
                 status: str = "Pending") -> dict[str, Any]:
        code, name, type_, cost = SKUS[sku_index % len(SKUS)]
        return {"id": next(self._item_ids), "skuId": 8_801 + sku_index % len(SKUS), "description": name,
                "createdOn": created, "modifiedOn": created, "skuName": name, "skuCode": code, "skuType": type_,
                "vendorPartNumber": code.replace("-", ""), "quantity": float(quantity),
                "quantityReceived": float(received), "cost": num(cost), "total": num(Decimal(str(cost)) * Decimal(str(quantity))),
                "serialNumbers": [], "status": status, "chargeable": True, "budgetCodeId": None}

    def _seed_purchase_orders(self, rng: random.Random, stamps: "_SeedClock", count: int,
                              vendors: list[Row], statuses: tuple[str, ...] = SEED_PO_STATUSES) -> list[Row]:
        rows = []
        warehouses = list(self.tables["warehouses"].rows)
        units = list(self.tables["business_units"].rows)
        for _ in range(count):
            created = stamps.any()
            status = rng.choice(statuses)
            vendor = rng.choice(vendors)
            warehouse = self.tables["warehouses"].rows[rng.choice(warehouses)].view
            stamp = iso(created)
            view = self._po_view(vendor.view["id"], rng.choice(units), rng.choice(warehouses), stamp,
                                 dict(warehouse["address"]))
            view["status"] = status
            view["jobId"] = rng.choice((None, None, rng.randint(20_001, 20_001 + count)))
            view["summary"] = rng.choice(("Coil stock", "Truck restock", "Job materials", "Water heater swap",
                                          "Panel upgrade parts", "Filters for maintenance agreements"))
            view["requiredOn"] = iso(created + 3 * 86_400_000_000)
            view["tax"] = num(rng.choice((0, 0, 12.5, 32.5, 48.75)))
            view["shipping"] = num(rng.choice((0, 0, 0, 25, 45)))
            received = status in ("Received", "Exported")
            for line in range(rng.randint(1, 5)):
                quantity = float(rng.choice((1, 2, 4, 5, 10, 12, 25)))
                got = quantity if received else (quantity / 2 if status == "PartiallyReceived" and line == 0 else 0)
                view["items"].append(self._po_item(rng.randrange(len(SKUS)), quantity, stamp, got,
                                                   "Received" if received else "Pending"))
            modified = stamps.after(created)
            if status != "Pending":
                view["sentOn"] = iso(created + 3_600_000_000)
            if received:
                view["receivedOn"] = iso(modified)
            self._recompute("purchase_orders", view)
            rows.append(self._insert("purchase_orders", view, created, modified))
        return rows

    def _po_view(self, vendor_id: int, unit_id: int, location_id: int, date: str,
                 ship_to: dict[str, Any]) -> dict[str, Any]:
        pid = self.tables["purchase_orders"].allocate()
        return {"id": pid, "number": f"PO-{pid - 88_000}", "invoiceId": None, "jobId": None, "projectId": None,
                "status": "Pending", "typeId": 1, "vendorId": vendor_id, "technicianId": None, "shipTo": ship_to,
                "businessUnitId": unit_id, "inventoryLocationId": location_id, "batchId": None,
                "budgetCodeId": None, "vendorDocumentNumber": "", "date": date, "requiredOn": None, "sentOn": None,
                "receivedOn": None, "createdOn": None, "modifiedOn": None, "total": 0.0, "tax": 0.0,
                "shipping": 0.0, "summary": "", "items": [], "customFields": []}

    def _gl_ref(self, number: str) -> dict[str, Any] | None:
        """The GL reference lines carry; looked up by account number, cached per GL version."""
        table = self.tables["gl_accounts"]
        if self._gl_cache[0] != table.version:
            refs = {v["number"]: {"id": v["id"], "name": v["name"], "number": v["number"], "type": v["type"],
                                  "detailType": v["subtype"]} for v in (r.view for r in table.rows.values())}
            self._gl_cache = (table.version, refs)
        return self._gl_cache[1].get(number)  # shared: GL references are never edited in place

    def _named(self, entity: str, rid: int | None, field_name: str = "name") -> dict[str, Any] | None:
        row = self.tables[entity].rows.get(rid) if rid is not None else None
        return {"id": row.view["id"], "name": row.view[field_name]} if row else None

    def _bill_from_po(self, po: Row, modified_us: int) -> Row:
        """An inventory bill as receiving a PO creates it: lines priced from the PO."""
        v = po.view
        table = self.tables["inventory_bills"]
        bill_id = table.allocate()
        vendor = self.tables["vendors"].rows.get(v["vendorId"])
        asset = self._gl_ref("1200")
        cogs = self._gl_ref("5000")
        items = []
        for order, item in enumerate(v["items"], start=1):
            items.append({
                "order": order, "name": item["skuName"], "description": item["description"],
                "quantity": money(item["quantityReceived"] or item["quantity"]), "cost": money(item["cost"]),
                "inventoryLocation": self.tables["warehouses"].rows[v["inventoryLocationId"]].view["name"]
                if v["inventoryLocationId"] in self.tables["warehouses"].rows else None,
                "serialNumber": None, "generalLedgerAccount": cogs if v["jobId"] else asset,
                "costOfSaleAccount": cogs, "assetAccount": asset, "id": next(self._item_ids),
                "skuId": item["skuId"], "receiptItemId": None, "skuType": item["skuType"],
                "skuCode": item["skuCode"], "budgetCodeId": None})
        received_us = parse_when(v["receivedOn"]) if v["receivedOn"] else modified_us
        view = {
            "id": bill_id, "purchaseOrderId": v["id"], "syncStatus": "Exported" if v["status"] == "Exported" else "Pending",
            "referenceNumber": f"INV-{(bill_id * 7919) % 900_000 + 100_000}",
            "vendorNumber": f"ACCT-{v['vendorId']:05d}", "summary": v["summary"],
            "billDate": iso(received_us), "billAmount": "0.00", "taxAmount": money(v["tax"]),
            "shippingAmount": money(v["shipping"]), "createdBy": "Receiving",
            "createdOn": None, "modifiedOn": None, "termName": "Net 30",
            "dueDate": iso(received_us + 30 * 86_400_000_000), "shipToDescription": "Warehouse",
            "postDate": None, "batch": None, "businessUnit": self._named("business_units", v["businessUnitId"]),
            "taxZone": None, "vendor": {"id": v["vendorId"], "name": vendor.view["name"] if vendor else None},
            "shipTo": dict(v["shipTo"]), "budgetCodeId": None, "items": items, "customFields": [],
            "jobId": v["jobId"], "jobNumber": str(v["jobId"]) if v["jobId"] else None,
        }
        self._recompute("inventory_bills", view)
        return self._insert("inventory_bills", view, modified_us, modified_us, extra={"billType": "Procurement"})

    def _seed_ap_bills(self, rng: random.Random, stamps: "_SeedClock", count: int, vendors: list[Row],
                       pos: list[Row]) -> None:
        units = list(self.tables["business_units"].rows)
        received = [po for po in pos if po.view["status"] in ("Received", "Exported")]
        for _ in range(count):
            created = stamps.any()
            vendor = rng.choice(vendors).view
            procurement = bool(received) and rng.random() < 0.5
            po = rng.choice(received).view if procurement else None
            table = self.tables["ap_bills"]
            bill_id = table.allocate()
            view = {
                "id": bill_id, "purchaseOrderId": po["id"] if po else None, "syncStatus": rng.choice(SYNC_STATUSES),
                "status": rng.choice(("Unreconciled", "Reconciled", "Reconciled", "Discrepancy")),
                "source": "Purchasing" if po else "Standalone", "billType": "Procurement" if po else "ApBill",
                "postDate": None, "referenceNumber": f"AP-{bill_id}", "vendorNumber": f"ACCT-{vendor['id']:05d}",
                "summary": po["summary"] if po else "Monthly expense", "billDate": iso(created),
                "earlyDiscountDate": None, "billAmount": "0.00", "vendorInvoiceTotal": "0.00",
                "taxAmount": money(po["tax"] if po else 0), "shippingAmount": money(po["shipping"] if po else 0),
                "createdBy": "AP Clerk", "createdOn": None, "modifiedOn": None, "termName": "Net 30",
                "dueDate": iso(created + 30 * 86_400_000_000), "doNotPay": False, "dateCanceled": None,
                "canceledBy": None, "shipToDescription": None, "batch": None,
                "businessUnit": self._named("business_units", rng.choice(units)), "taxZone": None,
                "vendor": {"id": vendor["id"], "name": vendor["name"]}, "remittanceVendorInfo": None,
                "shipTo": None, "budgetCodeId": None, "items": [], "expenseItems": [], "customFields": [],
                "jobId": None, "jobNumber": None,
            }
            if po:
                for order, item in enumerate(po["items"], start=1):
                    view["items"].append({
                        "order": order, "name": item["skuName"], "description": item["description"],
                        "quantity": money(item["quantity"]), "cost": money(item["cost"]), "inventoryLocation": None,
                        "vendorPartNumber": item["vendorPartNumber"], "serialNumber": None,
                        "generalLedgerAccount": self._gl_ref("1200"), "costOfSaleAccount": self._gl_ref("5000"),
                        "assetAccount": self._gl_ref("1200"), "id": next(self._item_ids), "skuId": item["skuId"],
                        "receiptItemId": None, "skuType": item["skuType"], "skuCode": item["skuCode"],
                        "budgetCodeId": None})
            else:
                for _line in range(rng.randint(1, 3)):
                    text, number = rng.choice(EXPENSES)
                    view["expenseItems"].append({
                        "id": next(self._item_ids), "amount": money(rng.randint(40, 2400) + rng.choice((0, 0.5, 0.99))),
                        "description": text, "generalLedgerAccount": self._gl_ref(number), "job": None,
                        "businessUnit": view["businessUnit"], "budgetCodeId": None, "projectLabelIds": []})
            self._recompute("ap_bills", view)
            self._insert("ap_bills", view, created, stamps.after(created))

    def _seed_ap_payments(self, rng: random.Random, stamps: "_SeedClock", bills: list[Row]) -> None:
        checking = self._gl_ref("1010")
        for bill in bills:
            if rng.random() < 0.5:
                continue
            b = bill.view
            created = stamps.after(bill.modified_us)
            table = self.tables["ap_payments"]
            amount = num(dec(b["billAmount"]))
            view = {"id": table.allocate(), "active": True, "createdOn": None, "modifiedOn": None,
                    "date": iso(created), "approvedDate": iso(created), "method": rng.choice(("AccountingSystem", "ServiceTitan")),
                    "name": f"Check {rng.randint(10000, 99999)}", "printCheck": False, "amount": amount,
                    "errorMessage": None, "status": "Paid", "syncStatus": rng.choice(SYNC_STATUSES),
                    "batch": None, "glAccount": checking, "businessUnit": b["businessUnit"],
                    "vendor": dict(b["vendor"]), "remittanceVendor": None,
                    "splits": [{"id": next(self._item_ids), "active": True, "createdOn": iso(created),
                                "documentId": None, "inventoryBillId": b["id"], "amount": amount}],
                    "customFields": []}
            self._insert("ap_payments", view, created, stamps.after(created))

    def _seed_invoices(self, rng: random.Random, stamps: "_SeedClock", count: int, customers: list[Row]) -> list[Row]:
        rows = []
        units = list(self.tables["business_units"].rows)
        for _ in range(count):
            customer = rng.choice(customers)
            created = stamps.after(customer.created_us)
            job = self._make_job(customer, rng.choice(units), created)
            view = self._invoice_view(customer, job, created)
            view["reviewStatus"] = rng.choice(("Reviewed", "Invoiced", "NeedsReview", "ReadyForBilling"))
            view["sentStatus"] = rng.choice(("Sent", "Sent", "NotSent", "Opened"))
            view["syncStatus"] = rng.choice(SYNC_STATUSES)
            service = rng.choice(SERVICES)
            stamp = view["invoiceDate"]
            view["items"].append(self._invoice_item(service[0], 1, service[1], "Service", service[2], None, stamp, 1))
            for order in range(2, rng.randint(2, 5)):
                sku = rng.randrange(len(SKUS))
                code, name, type_, cost = SKUS[sku]
                view["items"].append(self._invoice_item(name, rng.choice((1, 1, 2, 3)), round(cost * 1.65, 2),
                                                        type_, "4200", 8_801 + sku, stamp, order, cost))
            self._recompute("invoices", view)
            rows.append(self._insert("invoices", view, created, stamps.after(created), extra={"paid": Decimal(0)}))
            job.view["invoiceId"] = view["id"]
        return rows

    def _make_job(self, customer: Row, unit_id: int, created: int) -> Row:
        table = self.tables["jobs"]
        jid = table.allocate()
        location = (customer.extra.get("locations") or [{"id": None}])[0]
        view = {"id": jid, "jobNumber": str(jid), "customerId": customer.view["id"], "locationId": location["id"],
                "businessUnitId": unit_id, "jobTypeId": 1, "jobStatus": "Completed", "priority": "Normal",
                "summary": "", "completedOn": iso(created), "invoiceId": None, "total": 0.0,
                "createdOn": None, "modifiedOn": None}
        return self._insert("jobs", view, created, created)

    def _invoice_view(self, customer: Row, job: Row | None, created: int) -> dict[str, Any]:
        table = self.tables["invoices"]
        iid = table.allocate()
        c = customer.view
        location = (customer.extra.get("locations") or [None])[0]
        unit = job.view["businessUnitId"] if job else next(iter(self.tables["business_units"].rows))
        address = {k: c["address"].get(k) for k in ("street", "unit", "city", "state", "zip", "country")}
        return {
            "id": iid, "syncStatus": "Pending", "budgetCodeId": None, "referenceNumber": str(iid - 10_000),
            "invoiceDate": iso(created), "dueDate": iso(created + 30 * 86_400_000_000), "subTotal": "0.00",
            "salesTax": "0.00", "salesTaxCode": {"id": 3, "name": "Fresno County", "taxRate": 0.0798},
            "taxZoneId": 3, "total": "0.00", "balance": "0.00", "invoiceType": {"id": 1, "name": "Service"},
            "customer": {"id": c["id"], "name": c["name"]}, "customerAddress": address,
            "location": {"id": location["id"], "name": location["name"]} if location else None,
            "locationAddress": dict(address), "businessUnit": self._named("business_units", unit),
            "termName": "Due Upon Receipt", "createdBy": "Technician", "batch": None, "depositedOn": None,
            "createdOn": None, "modifiedOn": None, "adjustmentToId": None,
            "job": {"id": job.view["id"], "number": job.view["jobNumber"], "type": "Service Call"} if job else None,
            "projectId": None, "royalty": {"status": "Pending", "date": None, "sentOn": None, "memo": None},
            "employeeInfo": None, "commissionEligibilityDate": None, "sentStatus": "NotSent",
            "reviewStatus": "NeedsReview", "assignedTo": None, "summary": "", "items": [], "customFields": [],
            "active": True, "discountTotal": "0.00", "importId": None, "exportId": None, "materialSkuId": None,
            "membershipId": None, "paidOn": None, "invoiceConfiguration": "JobInvoice",
        }

    def _invoice_item(self, name: str, quantity: float, price: float, type_: str, account: str,
                      sku_id: int | None, stamp: str, order: int, cost: float = 0.0) -> dict[str, Any]:
        return {"id": next(self._item_ids), "description": name, "quantity": money(quantity), "cost": money(cost),
                "totalCost": money(Decimal(str(cost)) * Decimal(str(quantity))), "budgetCodeId": None,
                "inventoryLocationId": None, "inventoryLocation": None, "price": money(price), "type": type_,
                "skuName": name, "skuId": sku_id or 7_001, "total": "0.00", "inventory": type_ != "Service",
                "taxable": type_ != "Service", "isChargeable": True, "generalLedgerAccount": self._gl_ref(account),
                "costOfSaleAccount": self._gl_ref("5000") if type_ != "Service" else None,
                "assetAccount": self._gl_ref("1200") if type_ != "Service" else None, "membershipTypeId": 0,
                "itemGroup": None, "displayName": name, "soldHours": None, "createdOn": stamp, "modifiedOn": stamp,
                "serviceDate": stamp, "order": order, "businessUnit": None, "createdById": 1,
                "displayInAmount": True, "importId": None, "exportId": None, "inventoryStatus": None,
                "addOn": False, "memberPrice": None, "technicianId": None, "installedEquipmentId": None,
                "estimateItemId": None}

    def _seed_payments(self, rng: random.Random, stamps: "_SeedClock", invoices: list[Row]) -> None:
        for invoice in invoices:
            if rng.random() > 0.7:
                continue
            created = stamps.after(invoice.created_us)
            total = dec(invoice.view["total"])
            amount = total if rng.random() < 0.85 else (total / 2).quantize(_CENT)
            if amount <= 0:
                continue
            self._new_payment(rng.choice(list(PAYMENT_TYPES)), [(invoice, amount)], amount,
                              invoice.view["customer"]["id"], created, memo="", check=None,
                              sync=rng.choice(SYNC_STATUSES), modified=stamps.after(created))

    def _seed_adjustments(self, rng: random.Random, stamps: "_SeedClock", count: int) -> None:
        warehouses = list(self.tables["warehouses"].rows)
        units = list(self.tables["business_units"].rows)
        for _ in range(count):
            created = stamps.any()
            table = self.tables["adjustments"]
            aid = table.allocate()
            stamp = iso(created)
            view = {"id": aid, "active": rng.random() > 0.05, "number": f"ADJ-{aid - 29_000}",
                    "referenceNumber": f"CC-{aid}", "type": rng.choice(ADJUSTMENT_TYPES),
                    "inventoryLocationId": rng.choice(warehouses), "businessUnitId": rng.choice(units),
                    "projectId": None, "invoiceId": None, "createdById": 1, "memo": "", "date": stamp,
                    "createdOn": None, "modifiedOn": None, "batchId": None, "batch": None,
                    "syncStatus": rng.choice(SYNC_STATUSES), "canceledReason": None, "canceledById": None,
                    "dateCanceled": None, "externalData": [], "items": [], "customFields": []}
            for _line in range(rng.randint(1, 3)):
                sku = rng.randrange(len(SKUS))
                view["items"].append(self._adjustment_item(sku, float(rng.choice((-3, -1, 1, 2, 5))), stamp))
            self._recompute("adjustments", view)
            self._insert("adjustments", view, created, stamps.after(created))

    def _adjustment_item(self, sku: int, quantity: float, stamp: str) -> dict[str, Any]:
        code, name, _type, cost = SKUS[sku % len(SKUS)]
        return {"id": next(self._item_ids), "skuId": 8_801 + sku % len(SKUS), "description": name,
                "createdOn": stamp, "modifiedOn": stamp, "name": name, "code": code, "quantity": quantity,
                "cost": num(cost), "totalCost": 0.0, "createdById": 1, "active": True, "budgetCodeId": None,
                "serialNumbers": []}

    # ---- derived amounts -----------------------------------------------------------------

    def _recompute(self, entity: str, view: dict[str, Any]) -> None:
        """Keep totals consistent with lines, the way the vendor computes them."""
        if entity == "purchase_orders":
            subtotal = Decimal(0)
            for item in view["items"]:
                item["total"] = num(dec(item["quantity"]) * dec(item["cost"]))
                subtotal += dec(item["total"])
            view["total"] = num(subtotal + dec(view["tax"]) + dec(view["shipping"]))
        elif entity in ("inventory_bills", "ap_bills"):
            subtotal = sum((dec(i["quantity"]) * dec(i["cost"]) for i in view["items"]), Decimal(0))
            subtotal += sum((dec(e["amount"]) for e in view.get("expenseItems") or ()), Decimal(0))
            view["billAmount"] = money(subtotal + dec(view["taxAmount"]) + dec(view["shippingAmount"]))
            if "vendorInvoiceTotal" in view:
                view["vendorInvoiceTotal"] = view["billAmount"]
        elif entity == "invoices":
            subtotal = taxable = Decimal(0)
            for item in view["items"]:
                item["total"] = money(dec(item["quantity"]) * dec(item["price"]))
                subtotal += dec(item["total"])
                if item["taxable"]:
                    taxable += dec(item["total"])
            rate = dec((view.get("salesTaxCode") or {}).get("taxRate", 0))
            view["subTotal"] = money(subtotal)
            view["salesTax"] = money(taxable * rate)
            view["total"] = money(subtotal + dec(view["salesTax"]))
            view["balance"] = view["total"]
        elif entity == "adjustments":
            for item in view["items"]:
                item["totalCost"] = num(dec(item["quantity"]) * dec(item["cost"]))

    def _refresh_invoice_balance(self, invoice: Row, paid_on: str | None) -> None:
        total = dec(invoice.view["total"])
        paid = invoice.extra.get("paid", Decimal(0))
        invoice.view["balance"] = money(total - paid)
        invoice.view["paidOn"] = (paid_on or invoice.view["paidOn"]) if paid >= total > 0 else None

    # ---- changes and events ------------------------------------------------------------------

    def _touch(self, entity: str, row: Row, now_us: int | None = None) -> None:
        now = now_us if now_us is not None else self.clock.now_us()
        row.modified_us = now
        row.view["modifiedOn"] = iso(now)
        if "active" in row.view:
            row.active = bool(row.view["active"])
        self.tables[entity].stamp(row)

    def _emit(self, entity: str, kind: str, row: Row) -> None:
        created, updated = self.event_types.get(entity, (None, None))
        event_type = created if kind == "created" else updated
        if event_type and self.webhooks is not None:
            self.webhooks.emit(event_type, self.tenant_id, row.view)  # serialized at once, under the lock

    def _create(self, entity: str, view: dict[str, Any], extra: dict[str, Any] | None = None) -> Row:
        now = self.clock.now_us()
        row = self._insert(entity, view, now, now, extra=extra or {})
        self._emit(entity, "created", row)
        return row

    def _changed(self, entity: str, row: Row) -> None:
        self._touch(entity, row)
        self._emit(entity, "updated", row)

    def _receive(self, po: Row) -> Row | None:
        """Receiving a PO in full creates its inventory bill (once)."""
        v = po.view
        now = self.clock.now_us()
        v["receivedOn"] = iso(now)
        for item in v["items"]:
            item["quantityReceived"] = item["quantity"]
            item["status"] = "Received"
            item["modifiedOn"] = iso(now)
        if any(b.view["purchaseOrderId"] == v["id"] for b in self.tables["inventory_bills"].rows.values()):
            return None
        bill = self._bill_from_po(po, now)
        self._emit("inventory_bills", "created", bill)
        return bill

    # ---- control API: tick / put_entity ----------------------------------------------------

    _TICK_WEIGHTS = (("purchase_orders", 3), ("customers", 2), ("invoices", 2), ("vendors", 1),
                     ("inventory_bills", 1), ("payments", 1), ("ap_bills", 1), ("adjustments", 1))

    def tick(self, count: int, entity: str | None = None) -> list[dict[str, Any]]:
        """Change `count` records (of `entity`, or a weighted mix) the way daily work would."""
        rng = self._tick_rng
        names = [n for n, w in self._TICK_WEIGHTS for _ in range(w)] if entity is None else [self._entity_name(entity)]
        changed = []
        for _ in range(max(0, count)):
            name = rng.choice(names)
            table = self.tables[name]
            if not table.rows:
                continue
            row = _random_row(table, rng)
            self._tick_one(name, row, rng)
            changed.append({"entity": name, "id": row.view["id"], "modifiedOn": row.view.get("modifiedOn")})
        return changed

    def _tick_one(self, entity: str, row: Row, rng: random.Random) -> None:
        v = row.view
        if entity == "purchase_orders":
            following = {"Pending": "Sent", "Sent": "PartiallyReceived", "PartiallyReceived": "Received"}
            nxt = following.get(v["status"])
            if nxt:
                v["status"] = nxt
                if nxt == "Sent":
                    v["sentOn"] = iso(self.clock.now_us())
                elif nxt == "PartiallyReceived":
                    v["items"][0]["quantityReceived"] = v["items"][0]["quantity"] / 2 if v["items"] else 0
                self._changed(entity, row)
                if nxt == "Received":
                    self._receive(row)
                return
            v["summary"] = f"{v['summary'].split(' (')[0]} (rev {rng.randint(2, 99)})"
        elif entity == "customers":
            v["doNotMail"] = not v["doNotMail"]
        elif entity == "invoices":
            v["reviewStatus"] = rng.choice(("Reviewed", "Invoiced", "ReadyForBilling", "OnHold"))
        elif entity == "vendors":
            v["contactInfo"]["phone"] = f"559555{rng.randint(1000, 9999)}"
        elif entity == "inventory_bills":
            v["summary"] = f"{(v['summary'] or '').split(' (')[0]} (rev {rng.randint(2, 99)})"
        elif entity == "payments":
            v["memo"] = f"Reviewed {rng.randint(1, 999)}"
        elif entity == "ap_bills":
            v["status"] = rng.choice(("Unreconciled", "Reconciled", "Discrepancy"))
        else:
            if "memo" in v:
                v["memo"] = f"Updated {rng.randint(1, 999)}"
            elif "summary" in v:
                v["summary"] = f"Updated {rng.randint(1, 999)}"
        self._changed(entity, row)

    def put_entity(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        name = self._entity_name(entity)
        table = self.tables[name]
        payload = dict(payload)
        if "externalData" in payload:
            raise ValueError("externalData is per application: set it with the vendor PATCH endpoint")
        if name == "purchase_orders" and payload.get("status", "Pending") not in PO_STATUSES:
            raise ValueError(f"status must be one of {', '.join(PO_STATUSES)}")
        rid = payload.pop("id", None)
        existing = table.rows.get(int(rid)) if rid is not None else None
        if existing is not None:
            before = existing.view.get("status")
            self._apply(name, existing.view, payload)
            self._recompute_if(name, existing.view, payload)
            self._changed(name, existing)
            if name == "purchase_orders" and before != "Received" and existing.view["status"] == "Received":
                self._receive(existing)
            return json.loads(json.dumps(existing.view))
        view = self._template(name)
        if rid is not None:
            view["id"] = int(rid)
        self._apply(name, view, payload)
        self._recompute_if(name, view, payload)
        extra = {"paid": Decimal(0)} if name == "invoices" else {}
        row = self._create(name, view, extra)
        if name == "customers" and not row.extra.get("locations"):
            self._attach_location(row, view["name"], view["address"], [])
        if name == "purchase_orders" and view["status"] == "Received":
            self._receive(row)
        return json.loads(json.dumps(row.view))

    def _recompute_if(self, entity: str, view: dict[str, Any], payload: dict[str, Any]) -> None:
        totals = {"total", "billAmount", "subTotal", "balance", "vendorInvoiceTotal"}
        if not totals & set(payload):
            self._recompute(entity, view)

    def _apply(self, entity: str, view: dict[str, Any], payload: dict[str, Any]) -> None:
        for key, value in payload.items():
            if key not in view:
                raise ValueError(f"unknown field {key!r} for {entity}")
            if key == "items" and isinstance(value, list):
                view["items"] = [self._merge_item(entity, view, item) for item in value]
            elif isinstance(value, dict) and isinstance(view[key], dict):
                view[key] = {**view[key], **value}
            else:
                view[key] = value
        if entity in ("inventory_bills", "ap_bills") and "vendor" in payload and "id" in (payload["vendor"] or {}):
            vendor = self.tables["vendors"].rows.get(payload["vendor"]["id"])
            if vendor and not payload["vendor"].get("name"):
                view["vendor"]["name"] = vendor.view["name"]

    def _merge_item(self, entity: str, view: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
        current = {i["id"]: i for i in view.get("items") or []}
        base = current.get(item.get("id")) or self._item_template(entity)
        unknown = set(item) - set(base)
        if unknown:
            raise ValueError(f"unknown item field(s) {sorted(unknown)} for {entity}")
        return {**base, **item}

    def _item_template(self, entity: str) -> dict[str, Any]:
        stamp = iso(self.clock.now_us())
        if entity == "purchase_orders":
            return self._po_item(0, 1, stamp)
        if entity == "adjustments":
            return self._adjustment_item(0, 1, stamp)
        if entity == "invoices":
            return self._invoice_item("Service", 1, 0, "Service", "4000", None, stamp, 1)
        if entity in ("inventory_bills", "ap_bills"):
            code, name, type_, cost = SKUS[0]
            item = {"order": 1, "name": name, "description": name, "quantity": "1.00", "cost": money(cost),
                    "inventoryLocation": None, "serialNumber": None, "generalLedgerAccount": self._gl_ref("1200"),
                    "costOfSaleAccount": self._gl_ref("5000"), "assetAccount": self._gl_ref("1200"),
                    "id": next(self._item_ids), "skuId": 8_801, "receiptItemId": None, "skuType": type_,
                    "skuCode": code, "budgetCodeId": None}
            if entity == "ap_bills":
                item = {**{k: item[k] for k in ("order", "name", "description", "quantity", "cost",
                                                "inventoryLocation")}, "vendorPartNumber": code,
                        **{k: item[k] for k in ("serialNumber", "generalLedgerAccount", "costOfSaleAccount",
                                                "assetAccount", "id", "skuId", "receiptItemId", "skuType",
                                                "skuCode", "budgetCodeId")}}
            return item
        raise ValueError(f"{entity} has no items")

    def _template(self, entity: str) -> dict[str, Any]:
        """A complete, valid record of `entity` for put_entity to fill in."""
        now = self.clock.now_us()
        first = lambda name: next(iter(self.tables[name].rows), None)  # noqa: E731
        if entity == "vendors":
            return self._vendor_view("New Vendor", True, _address(), {"firstName": "", "lastName": "", "phone": "",
                                                                     "email": "", "fax": ""})
        if entity == "customers":
            return self._customer_view("New Customer", "Residential",
                                       {**_address("1 Main St", "", "Fresno", "CA", "93721"), "latitude": None,
                                        "longitude": None})
        if entity == "purchase_orders":
            warehouse = first("warehouses")
            view = self._po_view(first("vendors") or 0, first("business_units") or 0, warehouse or 0, iso(now),
                                 _address("2900 S Chestnut Ave", "", "Fresno", "CA", "93725"))
            view["items"] = [self._po_item(0, 1, iso(now))]
            return view
        if entity == "inventory_bills":
            view = {"id": self.tables[entity].allocate(), "purchaseOrderId": None, "syncStatus": "Pending",
                    "referenceNumber": None, "vendorNumber": None, "summary": None, "billDate": iso(now),
                    "billAmount": "0.00", "taxAmount": "0.00", "shippingAmount": "0.00", "createdBy": "Sandbox",
                    "createdOn": None, "modifiedOn": None, "termName": "Net 30", "dueDate": iso(now + 30 * 86_400_000_000),
                    "shipToDescription": None, "postDate": None, "batch": None,
                    "businessUnit": self._named("business_units", first("business_units")), "taxZone": None,
                    "vendor": self._named("vendors", first("vendors")), "shipTo": None, "budgetCodeId": None,
                    "items": [], "customFields": [], "jobId": None, "jobNumber": None}
            view["referenceNumber"] = f"INV-{view['id']}"
            return view
        if entity == "ap_bills":
            view = {"id": self.tables[entity].allocate(), "purchaseOrderId": None, "syncStatus": "Pending",
                    "status": "Unreconciled", "source": "Standalone", "billType": "ApBill", "postDate": None,
                    "referenceNumber": None, "vendorNumber": None, "summary": None, "billDate": iso(now),
                    "earlyDiscountDate": None, "billAmount": "0.00", "vendorInvoiceTotal": "0.00",
                    "taxAmount": "0.00", "shippingAmount": "0.00", "createdBy": "Sandbox", "createdOn": None,
                    "modifiedOn": None, "termName": "Net 30", "dueDate": iso(now + 30 * 86_400_000_000),
                    "doNotPay": False, "dateCanceled": None, "canceledBy": None, "shipToDescription": None,
                    "batch": None, "businessUnit": self._named("business_units", first("business_units")),
                    "taxZone": None, "vendor": self._named("vendors", first("vendors")),
                    "remittanceVendorInfo": None, "shipTo": None, "budgetCodeId": None, "items": [],
                    "expenseItems": [], "customFields": [], "jobId": None, "jobNumber": None}
            view["referenceNumber"] = f"AP-{view['id']}"
            return view
        if entity == "invoices":
            customer = self.tables["customers"].rows.get(first("customers"))
            if customer is None:
                raise ValueError("create a customer before an invoice")
            return self._invoice_view(customer, None, now)
        if entity == "payments":
            return {"active": True, "appliedTo": [], "authCode": None, "batch": None,
                    "businessUnit": self._named("business_units", first("business_units")), "checkNumber": None,
                    "createdBy": "Sandbox", "createdOn": None, "customer": self._named("customers", first("customers")),
                    "customFields": [], "date": iso(now), "deposit": None, "generalLedgerAccount": self._gl_ref("1050"),
                    "id": self.tables[entity].allocate(), "memo": None, "modifiedOn": None, "referenceNumber": None,
                    "refundedPaymentId": None, "syncStatus": "Pending", "total": "0.00", "type": "Check",
                    "typeId": "2", "unappliedAmount": "0.00"}
        if entity == "ap_payments":
            return {"id": self.tables[entity].allocate(), "active": True, "createdOn": None, "modifiedOn": None,
                    "date": iso(now), "approvedDate": None, "method": "AccountingSystem", "name": None,
                    "printCheck": False, "amount": 0.0, "errorMessage": None, "status": "Unpaid",
                    "syncStatus": "Pending", "batch": None, "glAccount": self._gl_ref("1010"),
                    "businessUnit": None, "vendor": self._named("vendors", first("vendors")),
                    "remittanceVendor": None, "splits": [], "customFields": []}
        if entity == "adjustments":
            aid = self.tables[entity].allocate()
            return {"id": aid, "active": True, "number": f"ADJ-{aid - 29_000}", "referenceNumber": "",
                    "type": ADJUSTMENT_TYPES[0], "inventoryLocationId": first("warehouses") or 0,
                    "businessUnitId": first("business_units"), "projectId": None, "invoiceId": None,
                    "createdById": 1, "memo": "", "date": iso(now), "createdOn": None, "modifiedOn": None,
                    "batchId": None, "batch": None, "syncStatus": "Pending", "canceledReason": None,
                    "canceledById": None, "dateCanceled": None, "externalData": [], "items": [], "customFields": []}
        if entity == "business_units":
            view = json.loads(json.dumps(self.tables[entity].rows[first(entity)].view))
            view.update({"id": self.tables[entity].allocate(), "name": "New Business Unit", "externalData": []})
            return view
        if entity == "gl_accounts":
            return {"id": self.tables[entity].allocate(), "name": "New Account", "number": None, "description": None,
                    "type": "Expense", "subtype": None, "active": True, "isIntacctGroup": False,
                    "isIntacctBankAccount": False, "source": "ManuallyCreated", "defaultAccountType": None,
                    "createdOn": None, "modifiedOn": None}
        if entity == "warehouses":
            return {"id": self.tables[entity].allocate(), "name": "New Warehouse", "active": True,
                    "address": _address(), "inventoryTemplateId": None, "createdOn": None, "modifiedOn": None,
                    "externalData": []}
        if entity == "jobs":
            jid = self.tables[entity].allocate()
            return {"id": jid, "jobNumber": str(jid), "customerId": first("customers"), "locationId": None,
                    "businessUnitId": first("business_units"), "jobTypeId": 1, "jobStatus": "Scheduled",
                    "priority": "Normal", "summary": "", "completedOn": None, "invoiceId": None, "total": 0.0,
                    "createdOn": None, "modifiedOn": None}
        raise KeyError(entity)

    @staticmethod
    def _entity_name(entity: str) -> str:
        name = entity.replace("-", "_")
        aliases = {"purchaseorders": "purchase_orders", "inventorybills": "inventory_bills", "apbills": "ap_bills",
                   "appayments": "ap_payments", "glaccounts": "gl_accounts", "businessunits": "business_units"}
        name = aliases.get(name.replace("_", ""), name)
        if name not in RESOURCES:
            raise KeyError(entity)
        return name

    # ---- vendor error shapes ------------------------------------------------------------------

    def problem(self, status: int, title: str, errors: dict[str, list[str]] | None = None,
                headers: dict[str, str] | None = None) -> Response:
        body = {"type": PROBLEM_TYPES.get(status, "about:blank"), "title": title, "status": status,
                "traceId": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01", "errors": errors or {}, "data": {}}
        response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
        for key, value in (headers or {}).items():
            response.headers[key] = value
        return response

    def rate_limited_response(self, retry_after: float) -> Response:
        seconds = max(1, int(-(-retry_after // 1)))
        return self.problem(429, "Too Many Requests", {}, {"Retry-After": str(seconds)})

    def error_response(self, status: int, message: str) -> Response:
        return self.problem(status, STATUS_TITLES.get(status, message) if message == "Injected fault" else message)

    # ---- the vendor API -------------------------------------------------------------------

    def register_vendor_routes(self, app: Flask) -> None:
        app.json.sort_keys = False  # keep the vendor's field order on the wire

        @app.errorhandler(ApiError)
        def _api_error(exc: ApiError) -> Response:
            return self.problem(exc.status, exc.title, exc.errors, exc.headers)

        @app.errorhandler(RateLimited)
        def _rate_limited(exc: RateLimited) -> Response:
            return self.rate_limited_response(exc.wait)

        @app.errorhandler(HTTPException)
        def _http_error(exc: HTTPException) -> Response:
            if request.path.startswith("/_sandbox/"):
                return Response(json.dumps({"error": exc.description}), status=exc.code, mimetype="application/json")
            return self.problem(exc.code or 500, exc.name)

        app.add_url_rule("/connect/token", "st_token", self._token, methods=["POST"])
        for res in RESOURCES.values():
            base = f"/{res.module}/v2/tenant/<int:tenant>/{res.path}"
            if res.entity == "inventory_bills":
                app.add_url_rule(base, "st_inventory_bills_array", self._lister(res, bare=True), methods=["GET"])
                app.add_url_rule(base + "/paginated", "st_inventory_bills", self._lister(res), methods=["GET"])
            else:
                app.add_url_rule(base, f"st_{res.entity}", self._lister(res), methods=["GET"])
            if res.by_id:
                app.add_url_rule(base + "/<int:rid>", f"st_{res.entity}_get", self._getter(res), methods=["GET"])
            if res.export:
                app.add_url_rule(f"/{res.module}/v2/tenant/<int:tenant>/{res.export}", f"st_{res.entity}_export",
                                 self._exporter(res), methods=["GET"])
        writes: list[tuple[str, str, str, Callable[..., Any]]] = [
            ("POST", "/inventory/v2/tenant/<int:tenant>/vendors", "st_vendor_create", self._create_vendor),
            ("PATCH", "/inventory/v2/tenant/<int:tenant>/vendors/<int:rid>", "st_vendor_update", self._update_vendor),
            ("POST", "/inventory/v2/tenant/<int:tenant>/purchase-orders", "st_po_create", self._create_po),
            ("PATCH", "/inventory/v2/tenant/<int:tenant>/purchase-orders/<int:rid>", "st_po_update", self._update_po),
            ("PATCH", "/inventory/v2/tenant/<int:tenant>/purchase-orders/<int:rid>/cancellation", "st_po_cancel",
             self._cancel_po),
            ("PATCH", "/inventory/v2/tenant/<int:tenant>/adjustments/<int:rid>", "st_adjustment_update",
             self._update_adjustment),
            ("POST", "/crm/v2/tenant/<int:tenant>/customers", "st_customer_create", self._create_customer),
            ("PATCH", "/crm/v2/tenant/<int:tenant>/customers/<int:rid>", "st_customer_update", self._update_customer),
            ("POST", "/accounting/v2/tenant/<int:tenant>/payments", "st_payment_create", self._create_payment),
            ("PATCH", "/accounting/v2/tenant/<int:tenant>/payments/<int:rid>", "st_payment_update", self._update_payment),
            ("POST", "/accounting/v2/tenant/<int:tenant>/payments/status", "st_payment_status", self._payment_status),
            ("POST", "/accounting/v2/tenant/<int:tenant>/gl-accounts", "st_gl_create", self._create_gl_account),
            ("POST", "/accounting/v2/tenant/<int:tenant>/inventory-bills/markasexported", "st_bills_exported",
             self._marker("inventory_bills")),
            ("POST", "/accounting/v2/tenant/<int:tenant>/ap-bills/markasexported", "st_apbills_exported",
             self._marker("ap_bills")),
            ("POST", "/accounting/v2/tenant/<int:tenant>/invoices/markasexported", "st_invoices_exported",
             self._marker("invoices")),
            ("POST", "/accounting/v2/tenant/<int:tenant>/ap-payments/markasexported", "st_appayments_exported",
             self._marker("ap_payments")),
        ]
        for method, rule, name, view_func in writes:
            app.add_url_rule(rule, name, view_func, methods=[method])
        self._register_webhook_control(app)

    def _register_webhook_control(self, app: Flask) -> None:
        @app.post("/_sandbox/webhooks")
        def _subscribe() -> tuple[Response, int] | Response:
            body = request.get_json(silent=True) or {}
            url = body.get("url")
            events = body.get("events") or ["*"]
            encoding = body.get("encoding", WEBHOOK_ENCODING)
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                return _json({"error": "url (http or https) is required"}, 400)
            if encoding not in ("hex", "base64"):
                return _json({"error": "encoding must be hex or base64"}, 400)
            if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
                return _json({"error": "events must be a list of event types"}, 400)
            sub_id = self.webhooks.subscribe(url, body.get("hmac_key"), events,
                                             body.get("header") or WEBHOOK_SIGNATURE_HEADER, encoding)
            return _json({"id": sub_id}, 201)

        @app.get("/_sandbox/webhooks")
        def _webhooks() -> Response:
            return _json(self.webhooks.describe())

        @app.delete("/_sandbox/webhooks/<sub_id>")
        def _unsubscribe(sub_id: str) -> tuple[Response, int] | Response:
            if not self.webhooks.unsubscribe(sub_id):
                return _json({"error": f"unknown subscription {sub_id}"}, 404)
            return _json({"ok": True})

        @app.post("/_sandbox/webhooks/flush")
        def _flush() -> Response:
            body = request.get_json(silent=True) or {}
            if body.get("retry_now"):
                self.webhooks.retry_now()
            idle = self.webhooks.wait_idle(float(body.get("timeout", 10)))
            return _json({"idle": idle, "pending": self.webhooks.describe()["pending"]})

        @app.post("/_sandbox/tick/<entity>")
        def _tick_entity(entity: str) -> tuple[Response, int] | Response:
            body = request.get_json(silent=True) or {}
            try:
                with self.lock:
                    changed = self.tick(int(body.get("count", 1)), entity)
            except KeyError:
                return _json({"error": f"unknown entity {entity}"}, 404)
            return _json({"changed": changed})

        @app.get("/_sandbox/scopes")
        def _scopes() -> Response:
            return _json({"scopes": sorted(self.app_scopes)})

        @app.post("/_sandbox/scopes")
        def _set_scopes() -> tuple[Response, int] | Response:
            body = request.get_json(silent=True) or {}
            scopes = body.get("scopes")
            if not isinstance(scopes, list) or not set(scopes) <= set(ALL_SCOPES):
                return _json({"error": "scopes must be a list drawn from " + " ".join(ALL_SCOPES)}, 400)
            self.app_scopes = set(scopes)
            return _json({"scopes": sorted(self.app_scopes)})

    # ---- auth --------------------------------------------------------------------------------

    def _token(self) -> Response:
        def refuse(error: str, status: int = 400, description: str | None = None) -> Response:
            body = {"error": error, **({"error_description": description} if description else {})}
            return Response(json.dumps(body), status=status, mimetype="application/json",
                            headers={"Cache-Control": "no-store"})

        if request.mimetype != "application/x-www-form-urlencoded":
            return refuse("invalid_request", description="The request must be form-encoded.")
        form = request.form
        if form.get("grant_type") != "client_credentials":
            return refuse("unsupported_grant_type")
        client_id = form.get("client_id", "")
        client_secret = form.get("client_secret", "")
        if not (hmac.compare_digest(client_id, self.client_id) and hmac.compare_digest(client_secret, self.client_secret)):
            return refuse("invalid_client")
        requested = set(form.get("scope", "").split()) or set(self.app_scopes)
        if not requested <= self.app_scopes:
            return refuse("invalid_scope")
        scopes = tuple(sorted(requested))
        token, _ = self.tokens.issue(client_id, self.token_ttl, scopes=scopes, extra={"tenant": self.tenant_id})
        self.stats.token_issued()
        body = {"access_token": token, "expires_in": self.token_ttl, "token_type": "Bearer", "scope": " ".join(scopes)}
        return Response(json.dumps(body), mimetype="application/json", headers={"Cache-Control": "no-store"})

    def _authorize(self, tenant: int, scope: str, write: bool) -> None:
        app_key = request.headers.get("ST-App-Key") or request.args.get("servicetitanapplicationkey")
        if not app_key:
            raise ApiError(401, APP_KEY_MISSING)
        if not hmac.compare_digest(app_key, self.app_key):
            raise ApiError(401, APP_KEY_INVALID)
        token = bearer_token(request.headers.get("Authorization", ""))
        if not token:
            raise ApiError(401, "Authorization has been denied for this request.",
                           headers={"WWW-Authenticate": "Bearer"})
        issued = self.tokens.check(token)
        if issued is None:
            raise ApiError(401, "The access token is invalid or has expired.",
                           headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        if issued.extra.get("tenant") != tenant:
            raise ApiError(403, f"Tenant {tenant} has not installed this application.")
        needed = f"{scope}:{'w' if write else 'r'}"
        if needed not in issued.scopes:
            raise ApiError(403, f"The access token does not grant the scope {needed}.")
        allowed, wait, _ = self.rate.hit(f"{app_key}:{tenant}")
        if not allowed:
            raise RateLimited(wait)

    # ---- reads --------------------------------------------------------------------------------

    def _lister(self, res: Resource, bare: bool = False) -> Callable[..., Response]:
        def handler(tenant: int) -> Response:
            self._authorize(tenant, res.scope, write=False)
            args = request.args
            page = _int_arg(args, "page", 1, minimum=1)
            page_size = min(_int_arg(args, "pageSize", DEFAULT_PAGE_SIZE, minimum=1), self.max_page_size)
            include_total = _bool_arg(args, "includeTotal", False)
            sort = self._sort_arg(res, args.get("sort"))
            key, predicate = self._filters(res, args)
            guid = args.get("externalDataApplicationGuid")
            with self.lock:  # serialize under the lock: views are live records
                table = self.tables[res.entity]
                ids = table.query(key, predicate, sort)
                start = (page - 1) * page_size
                data = [self._read_view(res, table.rows[rid], guid) for rid in ids[start:start + page_size]]
                total = len(ids)
                if bare:
                    return _json(data)
                return _json({"page": page, "pageSize": page_size, "hasMore": total > start + page_size,
                              "totalCount": total if include_total else None, "data": data})

        return handler

    def _getter(self, res: Resource) -> Callable[..., Response]:
        def handler(tenant: int, rid: int) -> Response:
            self._authorize(tenant, res.scope, write=False)
            with self.lock:
                row = self.tables[res.entity].rows.get(rid)
                if row is None:
                    raise self._not_found(res.entity, rid)
                return _json(self._read_view(res, row, request.args.get("externalDataApplicationGuid")))

        return handler

    def _exporter(self, res: Resource) -> Callable[..., Response]:
        def handler(tenant: int) -> Response:
            self._authorize(tenant, res.scope, write=False)
            args = request.args
            _bool_arg(args, "includeRecentChanges", False)
            # (unconfirmed) export feeds take no page size in the spec; honour one if sent
            size = min(_int_arg(args, "pageSize", self.export_page_size, minimum=1), self.max_page_size)
            raw = args.get("from")
            with self.lock:
                table = self.tables[res.entity]
                position = self._export_position(res, table, raw)
                rows, position, has_more = table.export_after(position, size)
                data = [self._export_view(res, row) for row in rows]
                return _json({"hasMore": has_more, "continueFrom": _encode_token(res.entity, position), "data": data})

        return handler

    def _export_position(self, res: Resource, table: Table, raw: str | None) -> int:
        if not raw:
            return 0
        decoded = _decode_token(raw)
        if decoded is not None:
            entity, position = decoded
            if entity != res.entity:
                raise invalid("from", "The continuation token belongs to another export.")
            return position
        try:
            return table.first_seq_since(parse_when(raw))
        except ValueError:
            raise invalid("from", f"The value '{raw}' is neither a continuation token nor a date.") from None

    def _read_view(self, res: Resource, row: Row, guid: str | None) -> dict[str, Any]:
        if guid and row.external.get(guid) and "externalData" in row.view:
            pairs = [{"key": k, "value": v} for k, v in row.external[guid].items()]
            return {**row.view, "externalData": pairs}
        return row.view

    def _export_view(self, res: Resource, row: Row) -> dict[str, Any]:
        return {**row.view, "active": row.active} if res.export_adds_active else row.view

    def _sort_arg(self, res: Resource, raw: str | None) -> tuple[str, bool]:
        if not raw or not res.sorts:
            return ("id", False)
        text = raw.strip()
        descending = text.startswith("-")
        name = text.lstrip("+- ")
        allowed = {s.lower() for s in res.sorts}
        if name.lower() == "modified" and "modifiedon" in allowed:
            name = "ModifiedOn"
        if name.lower() not in allowed:
            raise invalid("sort", f"Sorting by '{name}' is not supported. Available fields are: {', '.join(res.sorts)}.")
        return (SORT_FIELDS[name.lower()], descending)

    def _filters(self, res: Resource, args: Any) -> tuple[tuple[Any, ...], Callable[[Row], bool] | None]:
        """Normalized cache key and one predicate for the query string of a list call."""
        key: list[Any] = []
        checks: list[Callable[[Row], bool]] = []
        ids = _list_arg(args, "ids")
        if ids:
            try:
                wanted = frozenset(int(i) for i in ids)
            except ValueError:
                raise invalid("ids", "Ids must be a comma-separated list of integers.") from None
            if len(wanted) > MAX_IDS:
                raise invalid("ids", f"The maximum number of ids is {MAX_IDS}.")
            key.append(("ids", tuple(sorted(wanted))))
            checks.append(lambda r, w=wanted: r.view["id"] in w)
        for name, attr, after in (("createdOnOrAfter", "created_us", True), ("createdBefore", "created_us", False),
                                  ("modifiedOnOrAfter", "modified_us", True), ("modifiedBefore", "modified_us", False)):
            raw = args.get(name)
            if raw:
                bound = _when_arg(name, raw)
                key.append((name, bound))
                if after:
                    checks.append(lambda r, a=attr, b=bound: getattr(r, a) >= b)
                else:
                    checks.append(lambda r, a=attr, b=bound: getattr(r, a) < b)
        if res.active_param == "active":
            mode = (args.get("active") or "True").strip().lower()
            if mode not in ("true", "any", "false"):
                raise invalid("active", f"The value '{args.get('active')}' is not valid. Values: True, Any, False.")
            key.append(("active", mode))
            if mode != "any":
                checks.append(lambda r, m=(mode == "true"): r.active is m)
        elif res.active_param == "activeState":
            mode = (args.get("activeState") or "ActiveOnly").strip().lower()
            if mode not in ("activeonly", "inactiveonly", "all"):
                raise invalid("activeState", "Values: ActiveOnly, InactiveOnly, All.")
            key.append(("activeState", mode))
            if mode != "all":
                checks.append(lambda r, m=(mode == "activeonly"): r.active is m)
        self._entity_filters(res, args, key, checks)
        if not checks:
            return tuple(key), None
        if len(checks) == 1:
            return tuple(key), checks[0]
        return tuple(key), lambda r: all(check(r) for check in checks)

    def _entity_filters(self, res: Resource, args: Any, key: list[Any], checks: list[Callable[[Row], bool]]) -> None:
        def exact(param: str, field_name: str, cast: Callable[[str], Any] = str) -> None:
            raw = args.get(param)
            if raw not in (None, ""):
                try:
                    value = cast(raw)
                except ValueError:
                    raise invalid(param, f"The value '{raw}' is not valid.") from None
                key.append((param, value))
                checks.append(lambda r, f=field_name, v=value: r.view.get(f) == v)

        def one_of(param: str, getter: Callable[[Row], Any]) -> None:
            values = _list_arg(args, param)
            if values:
                wanted = frozenset(v.lower() for v in values)
                key.append((param, tuple(sorted(wanted))))
                checks.append(lambda r, w=wanted: str(getter(r) or "").lower() in w)

        def date_range(after_param: str, before_param: str, field_name: str) -> None:
            for param, after in ((after_param, True), (before_param, False)):
                raw = args.get(param)
                if raw:
                    bound = _when_arg(param, raw)
                    key.append((param, bound))
                    checks.append(lambda r, b=bound, a=after: (r.view.get(field_name) is not None) and
                                  ((parse_when(r.view[field_name]) >= b) if a else (parse_when(r.view[field_name]) < b)))

        entity = res.entity
        if entity == "purchase_orders":
            exact("status", "status")
            exact("number", "number")
            exact("jobId", "jobId", int)
            date_range("dateOnOrAfter", "dateBefore", "date")
        elif entity in ("inventory_bills", "ap_bills"):
            exact("billNumber", "referenceNumber")
            one_of("syncStatuses", lambda r: r.view["syncStatus"])
            date_range("dateFrom", "dateTo", "billDate")
            ids = _list_arg(args, "businessUnitIds")
            if ids:
                wanted = frozenset(_int_value("businessUnitIds", i) for i in ids)
                key.append(("businessUnitIds", tuple(sorted(wanted))))
                checks.append(lambda r, w=wanted: (r.view["businessUnit"] or {}).get("id") in w)
            if entity == "ap_bills":
                exact("billType", "billType")
            number = args.get("purchaseOrderNumber")
            if number:
                orders = frozenset(rid for rid, po in self.tables["purchase_orders"].rows.items()
                                   if po.view["number"] == number)
                key.append(("purchaseOrderNumber", number))
                checks.append(lambda r, o=orders: r.view["purchaseOrderId"] in o)
        elif entity == "invoices":
            exact("number", "referenceNumber")
            raw = args.get("customerId")
            if raw:
                cid = _int_value("customerId", raw)
                key.append(("customerId", cid))
                checks.append(lambda r, c=cid: (r.view["customer"] or {}).get("id") == c)
            raw = args.get("jobId")
            if raw:
                jid = _int_value("jobId", raw)
                key.append(("jobId", jid))
                checks.append(lambda r, j=jid: (r.view["job"] or {}).get("id") == j)
            one_of("statuses", lambda r: r.view["syncStatus"])
            date_range("invoicedOnOrAfter", "invoicedOnBefore", "invoiceDate")
        elif entity == "payments":
            raw = args.get("customerId")
            if raw:
                cid = _int_value("customerId", raw)
                key.append(("customerId", cid))
                checks.append(lambda r, c=cid: (r.view["customer"] or {}).get("id") == c)
            applied = _list_arg(args, "appliedToInvoiceIds")
            if applied:
                wanted = frozenset(_int_value("appliedToInvoiceIds", i) for i in applied)
                key.append(("appliedToInvoiceIds", tuple(sorted(wanted))))
                checks.append(lambda r, w=wanted: any(a["appliedTo"] in w for a in r.view["appliedTo"] or ()))
            one_of("statuses", lambda r: r.view["syncStatus"])
            date_range("paidOnAfter", "paidOnBefore", "date")
        elif entity == "ap_payments":
            one_of("syncStatuses", lambda r: r.view["syncStatus"])
        elif entity == "customers":
            raw = args.get("name")
            if raw:
                needle = raw.strip().lower()
                key.append(("name", needle))
                checks.append(lambda r, n=needle: n in r.view["name"].lower())
        elif entity == "adjustments":
            exact("number", "number")
            one_of("syncStatuses", lambda r: r.view["syncStatus"])
        elif entity == "gl_accounts":
            one_of("names", lambda r: r.view["name"])
            one_of("numbers", lambda r: r.view["number"])
            one_of("types", lambda r: r.view["type"])
        elif entity == "business_units":
            raw = args.get("name")
            if raw:
                key.append(("name", raw.lower()))
                checks.append(lambda r, n=raw.lower(): r.view["name"].lower() == n)
        if entity in ("vendors", "customers", "adjustments", "warehouses"):
            ext_key = args.get("externalDataKey")
            ext_values = _list_arg(args, "externalDataValues")
            if ext_key or ext_values:
                if not (ext_key and ext_values):
                    raise invalid("externalDataKey", "'externalDataKey' and 'externalDataValues' must be provided together.")
                if len(ext_values) > MAX_IDS:
                    raise invalid("externalDataValues", f"The maximum number of values is {MAX_IDS}.")
                guid = args.get("externalDataApplicationGuid")
                wanted = frozenset(ext_values)
                key.append(("external", guid, ext_key, tuple(sorted(wanted))))

                def external_match(r: Row, k: str = ext_key, w: frozenset[str] = wanted, g: str | None = guid) -> bool:
                    stores = [r.external.get(g, {})] if g else r.external.values()
                    return any(store.get(k) in w for store in stores)

                checks.append(external_match)

    def _not_found(self, entity: str, rid: int) -> ApiError:
        label = entity.rstrip("s").replace("_", " ").capitalize()
        return ApiError(404, f"{label} with id {rid} was not found.", {"id": [f"{label} {rid} does not exist."]})

    # ---- writes ----------------------------------------------------------------------------

    def _body(self) -> dict[str, Any] | list[Any]:
        raw = request.get_data(cache=True)
        if not raw:
            raise invalid("request", "A non-empty request body is required.")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise invalid("$", f"The JSON value could not be converted: {exc.msg}.") from None
        return body

    def _create_vendor(self, tenant: int) -> Response:
        self._authorize(tenant, RESOURCES["vendors"].scope, write=True)
        body = _object(self._body())
        errors = _required(body, {"name": str, "active": bool, "isTruckReplenishment": bool, "taxRate": (int, float),
                                  "restrictedMobileCreation": bool, "address": dict})
        if isinstance(body.get("address"), dict):
            errors.update(_required(body["address"], dict.fromkeys(("street", "unit", "city", "state", "zip", "country"), str),
                                    prefix="Address."))
        errors.update(self._vendor_rules(body))
        if errors:
            raise ApiError(400, VALIDATION_TITLE, errors)
        external = _parse_external(body.get("externalData"))
        with self.lock:
            if self.unique_vendor_names and self._vendor_named(body["name"]) is not None:
                raise invalid("Name", f"A vendor named '{body['name']}' already exists.")
            contact = {k: body.get(k) or "" for k in ("firstName", "lastName", "phone", "email", "fax")}
            view = self._vendor_view(body["name"].strip(), body["active"], _pick_address(body["address"]), contact,
                                     memo=body.get("memo") or "", delivery=body.get("deliveryOption") or "Manual",
                                     tax_rate=float(body["taxRate"]))
            view["isTruckReplenishment"] = body["isTruckReplenishment"]
            view["isMobileCreationRestricted"] = body["restrictedMobileCreation"]
            row = self._create("vendors", view)
            _apply_external(row, external)
            return _json({"id": view["id"]})

    def _vendor_rules(self, body: dict[str, Any]) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        if "name" in body and isinstance(body["name"], str) and not body["name"].strip():
            errors["Name"] = ["The Name field is required."]
        if body.get("deliveryOption") is not None and body["deliveryOption"] not in DELIVERY_OPTIONS:
            errors["DeliveryOption"] = [f"The value '{body['deliveryOption']}' is not valid."]
        if isinstance(body.get("taxRate"), (int, float)) and not 0 <= body["taxRate"] <= 1:
            errors["TaxRate"] = ["The tax rate must be between 0 and 1."]
        return errors

    def _vendor_named(self, name: str, exclude: int | None = None) -> Row | None:
        wanted = name.strip().lower()
        for row in self.tables["vendors"].rows.values():
            if row.view["name"].strip().lower() == wanted and row.view["id"] != exclude:
                return row
        return None

    def _update_vendor(self, tenant: int, rid: int) -> Response:
        self._authorize(tenant, RESOURCES["vendors"].scope, write=True)
        body = _object(self._body())
        errors = _types(body, {"name": str, "active": bool, "memo": str, "firstName": str, "lastName": str,
                               "phone": str, "email": str, "fax": str, "isTruckReplenishment": bool,
                               "taxRate": (int, float), "restrictedMobileCreation": bool, "address": dict})
        if isinstance(body.get("address"), dict):
            errors.update(_required(body["address"], dict.fromkeys(("street", "unit", "city", "state", "zip", "country"), str),
                                    prefix="Address."))
        errors.update(self._vendor_rules(body))
        if errors:
            raise ApiError(400, VALIDATION_TITLE, errors)
        external = _parse_external(body.get("externalData"))
        with self.lock:
            row = self.tables["vendors"].rows.get(rid)
            if row is None:
                raise self._not_found("vendors", rid)
            if "name" in body and self.unique_vendor_names and self._vendor_named(body["name"], exclude=rid):
                raise invalid("Name", f"A vendor named '{body['name']}' already exists.")
            _apply_external(row, external)
            v = row.view
            for key in ("name", "active", "memo", "isTruckReplenishment", "deliveryOption"):
                if key in body:
                    v[key] = body[key].strip() if key == "name" else body[key]
            for key in ("firstName", "lastName", "phone", "email", "fax"):
                if key in body:
                    v["contactInfo"][key] = body[key] or ""
            if "taxRate" in body:
                v["defaultTaxRate"] = float(body["taxRate"])
            if "restrictedMobileCreation" in body:
                v["isMobileCreationRestricted"] = body["restrictedMobileCreation"]
            if "address" in body:
                v["address"] = _pick_address(body["address"])
            self._changed("vendors", row)
            return _json({"id": rid})

    def _po_item_errors(self, items: Any, update: bool) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        if not isinstance(items, list):
            return {"Items": ["The Items field must be a list."]}
        fields = {"skuId": int, "description": str, "vendorPartNumber": str, "quantity": (int, float), "cost": (int, float)}
        if update:
            fields = {"id": int, **fields}
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                errors[f"Items[{index}]"] = ["An object is required."]
                continue
            errors.update(_required(item, fields, prefix=f"Items[{index}]."))
            if isinstance(item.get("quantity"), (int, float)) and item["quantity"] <= 0:
                errors[f"Items[{index}].Quantity"] = ["Quantity must be greater than 0."]
            if isinstance(item.get("cost"), (int, float)) and item["cost"] < 0:
                errors[f"Items[{index}].Cost"] = ["Cost must not be negative."]
        return errors

    def _po_reference_errors(self, body: dict[str, Any]) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        if "vendorId" in body and body["vendorId"] not in self.tables["vendors"].rows:
            errors["VendorId"] = ["Vendor not found."]
        if "businessUnitId" in body and body["businessUnitId"] not in self.tables["business_units"].rows:
            errors["BusinessUnitId"] = ["Business unit not found."]
        if "inventoryLocationId" in body and body["inventoryLocationId"] not in self.tables["warehouses"].rows:
            errors["InventoryLocationId"] = ["Inventory location not found."]
        for index, item in enumerate(body.get("items") or []):
            if isinstance(item, dict) and isinstance(item.get("skuId"), int) and not 8_801 <= item["skuId"] < 8_801 + len(SKUS):
                errors[f"Items[{index}].SkuId"] = ["Sku not found."]
        return errors

    def _create_po(self, tenant: int) -> Response:
        self._authorize(tenant, RESOURCES["purchase_orders"].scope, write=True)
        body = _object(self._body())
        errors = _required(body, {"vendorId": int, "typeId": int, "businessUnitId": int, "inventoryLocationId": int,
                                  "shipTo": dict, "impactsTechnicianPayroll": bool, "date": str, "requiredOn": str,
                                  "tax": (int, float), "shipping": (int, float), "items": list})
        errors.update(self._po_item_errors(body.get("items", []), update=False))
        for name in ("date", "requiredOn"):
            if isinstance(body.get(name), str) and not _is_when(body[name]):
                errors[name[0].upper() + name[1:]] = [f"The value '{body[name]}' is not a valid date-time."]
        if errors:
            raise ApiError(400, VALIDATION_TITLE, errors)
        with self.lock:
            errors = self._po_reference_errors(body)
            if errors:
                raise ApiError(400, VALIDATION_TITLE, errors)
            ship = body["shipTo"].get("address") or {}
            view = self._po_view(body["vendorId"], body["businessUnitId"], body["inventoryLocationId"],
                                 iso(parse_when(body["date"])),
                                 _address(ship.get("street", ""), ship.get("unit", ""), ship.get("city", ""),
                                          ship.get("state", ""), ship.get("zip", ""), ship.get("country", "")))
            view.update({"typeId": body["typeId"], "jobId": body.get("jobId"), "technicianId": body.get("technicianId"),
                         "projectId": body.get("projectId"), "requiredOn": iso(parse_when(body["requiredOn"])),
                         "tax": num(body["tax"]), "shipping": num(body["shipping"]), "summary": body.get("memo") or "",
                         "vendorDocumentNumber": body.get("vendorInvoiceNumber") or ""})
            view["items"] = [self._po_item_from_request(item) for item in body["items"]]
            self._recompute("purchase_orders", view)
            self._create("purchase_orders", view)
            return _json({"id": view["id"]})

    def _po_item_from_request(self, item: dict[str, Any], current: dict[str, Any] | None = None) -> dict[str, Any]:
        stamp = iso(self.clock.now_us())
        base = dict(current) if current else self._po_item(item["skuId"] - 8_801, item["quantity"], stamp)
        base.update({"skuId": item["skuId"], "description": item["description"],
                     "vendorPartNumber": item["vendorPartNumber"], "quantity": float(item["quantity"]),
                     "cost": num(item["cost"]), "budgetCodeId": item.get("budgetCodeId"), "modifiedOn": stamp})
        if not current:
            code, name, type_, _cost = SKUS[(item["skuId"] - 8_801) % len(SKUS)]
            base.update({"skuCode": code, "skuName": name, "skuType": type_})
        return base

    def _update_po(self, tenant: int, rid: int) -> Response:
        self._authorize(tenant, RESOURCES["purchase_orders"].scope, write=True)
        body = _object(self._body())
        errors = _types(body, {"vendorId": int, "typeId": int, "businessUnitId": int, "inventoryLocationId": int,
                               "jobId": int, "technicianId": int, "projectId": int, "shipTo": dict,
                               "vendorInvoiceNumber": str, "impactsTechnicianPayroll": bool, "memo": str, "date": str,
                               "requiredOn": str, "tax": (int, float), "shipping": (int, float), "items": list})
        if "items" in body:
            errors.update(self._po_item_errors(body["items"], update=True))
        for name in ("date", "requiredOn"):
            if isinstance(body.get(name), str) and not _is_when(body[name]):
                errors[name[0].upper() + name[1:]] = [f"The value '{body[name]}' is not a valid date-time."]
        if errors:
            raise ApiError(400, VALIDATION_TITLE, errors)
        with self.lock:
            row = self.tables["purchase_orders"].rows.get(rid)
            if row is None:
                raise self._not_found("purchase_orders", rid)
            v = row.view
            if v["status"] in PO_LOCKED_STATUSES:
                raise invalid("Status", f"Purchase order {v['number']} is {v['status']} and can no longer be updated.")
            errors = self._po_reference_errors(body)
            current = {item["id"]: item for item in v["items"]}
            for index, item in enumerate(body.get("items") or []):
                if item["id"] and item["id"] not in current:
                    errors[f"Items[{index}].Id"] = [f"Purchase order item {item['id']} not found."]
            if errors:
                raise ApiError(400, VALIDATION_TITLE, errors)
            for key in ("vendorId", "typeId", "businessUnitId", "inventoryLocationId", "jobId", "technicianId",
                        "projectId"):
                if key in body:
                    v[key] = body[key]
            if "memo" in body:
                v["summary"] = body["memo"]
            if "vendorInvoiceNumber" in body:
                v["vendorDocumentNumber"] = body["vendorInvoiceNumber"]
            for key in ("date", "requiredOn"):
                if key in body:
                    v[key] = iso(parse_when(body[key]))
            for key in ("tax", "shipping"):
                if key in body:
                    v[key] = num(body[key])
            if "shipTo" in body:
                ship = body["shipTo"].get("address") or {}
                v["shipTo"] = _address(ship.get("street", ""), ship.get("unit", ""), ship.get("city", ""),
                                       ship.get("state", ""), ship.get("zip", ""), ship.get("country", ""))
            for item in body.get("items") or []:
                if item["id"]:
                    current[item["id"]].update(self._po_item_from_request(item, current[item["id"]]))
                else:
                    v["items"].append(self._po_item_from_request(item))
            self._recompute("purchase_orders", v)
            self._changed("purchase_orders", row)
            return _json({"id": rid})

    def _cancel_po(self, tenant: int, rid: int) -> Response:
        self._authorize(tenant, RESOURCES["purchase_orders"].scope, write=True)
        body = _object(self._body()) if request.get_data() else {}
        reason = body.get("canceledReason")
        if reason is not None and reason not in CANCEL_REASONS:
            raise invalid("CanceledReason", f"The value '{reason}' is not valid.")
        with self.lock:
            row = self.tables["purchase_orders"].rows.get(rid)
            if row is None:
                raise self._not_found("purchase_orders", rid)
            if row.view["status"] in ("Received", "Exported", "Canceled"):
                raise invalid("Status", f"Purchase order {row.view['number']} is {row.view['status']} and cannot be canceled.")
            row.view["status"] = "Canceled"
            self._changed("purchase_orders", row)
            return _json({"id": rid})

    def _update_adjustment(self, tenant: int, rid: int) -> Response:
        self._authorize(tenant, RESOURCES["adjustments"].scope, write=True)
        body = _object(self._body())
        unknown = set(body) - {"externalData"}
        if unknown:
            raise invalid(_pascal(sorted(unknown)[0]), "This field cannot be updated.")
        external = _parse_external(body.get("externalData"))
        with self.lock:
            row = self.tables["adjustments"].rows.get(rid)
            if row is None:
                raise self._not_found("adjustments", rid)
            _apply_external(row, external)
            self._changed("adjustments", row)
            return _json({"id": rid})

    def _create_customer(self, tenant: int) -> Response:
        self._authorize(tenant, RESOURCES["customers"].scope, write=True)
        body = _object(self._body())
        errors = _required(body, {"name": str, "locations": list, "address": dict})
        address_fields = dict.fromkeys(("street", "city", "state", "zip", "country"), str)
        if isinstance(body.get("address"), dict):
            errors.update(_required(body["address"], address_fields, prefix="Address."))
        if isinstance(body.get("locations"), list):
            if not body["locations"]:
                errors["Locations"] = ["At least one location is required."]
            for index, location in enumerate(body["locations"]):
                loc = location if isinstance(location, dict) else {}
                errors.update(_required(loc, {"name": str, "address": dict}, prefix=f"Locations[{index}]."))
                if isinstance(loc.get("address"), dict):
                    errors.update(_required(loc["address"], address_fields, prefix=f"Locations[{index}].Address."))
                errors.update(_contact_errors(loc.get("contacts"), f"Locations[{index}].Contacts"))
        if body.get("type") is not None and body["type"] not in ("Residential", "Commercial"):
            errors["Type"] = [f"The value '{body['type']}' is not valid."]
        errors.update(_contact_errors(body.get("contacts"), "Contacts"))
        if isinstance(body.get("name"), str) and not body["name"].strip():
            errors["Name"] = ["The Name field is required."]
        if errors:
            raise ApiError(400, VALIDATION_TITLE, errors)
        external = _parse_external(body.get("externalData"))
        with self.lock:
            view = self._customer_view(body["name"].strip(), body.get("type") or "Residential",
                                       _pick_address(body["address"], geo=True))
            for key in ("doNotMail", "doNotService", "nationalAccount", "taxExempt", "paymentTermId",
                        "creditLimit", "creditLimitBalance", "tagTypeIds"):
                if body.get(key) is not None:
                    view[key] = body[key]
            now = self.clock.now_us()
            row = self._insert("customers", view, now, now)
            _apply_external(row, external)
            row.extra["contacts"] = [{"id": next(self._location_ids) + 500_000, "type": c["type"],
                                      "value": c["value"], "memo": c.get("memo")} for c in body.get("contacts") or []]
            for location in body["locations"]:
                self._attach_location(row, location["name"], _pick_address(location["address"], geo=True),
                                      [(c["type"], c["value"]) for c in location.get("contacts") or []])
            self._emit("customers", "created", row)
            guid = external[0] if external else None
            response = {**self._read_view(RESOURCES["customers"], row, guid),
                        "locations": row.extra.get("locations", []), "contacts": row.extra["contacts"]}
            return _json(response)

    def _update_customer(self, tenant: int, rid: int) -> Response:
        self._authorize(tenant, RESOURCES["customers"].scope, write=True)
        body = _object(self._body())
        errors = _types(body, {"name": str, "type": str, "address": dict, "doNotMail": bool, "doNotService": bool,
                               "nationalAccount": bool, "active": bool, "tagTypeIds": list, "taxExempt": bool,
                               "paymentTermId": int, "creditLimit": (int, float), "creditLimitBalance": (int, float),
                               "customFields": list, "externalData": dict})
        if isinstance(body.get("address"), dict):
            errors.update(_required(body["address"], {**dict.fromkeys(("street", "unit", "city", "state", "zip", "country"), str),
                                                      "latitude": (int, float), "longitude": (int, float)},
                                    prefix="Address."))
        if body.get("type") is not None and body["type"] not in ("Residential", "Commercial"):
            errors["Type"] = [f"The value '{body['type']}' is not valid."]
        if isinstance(body.get("name"), str) and not body["name"].strip():
            errors["Name"] = ["The Name field is required."]
        if errors:
            raise ApiError(400, VALIDATION_TITLE, errors)
        external = _parse_external(body.get("externalData"))
        with self.lock:
            row = self.tables["customers"].rows.get(rid)
            if row is None:
                raise self._not_found("customers", rid)
            _apply_external(row, external)
            for key in ("name", "type", "doNotMail", "doNotService", "nationalAccount", "active", "tagTypeIds",
                        "taxExempt", "paymentTermId", "creditLimit", "creditLimitBalance"):
                if key in body:
                    row.view[key] = body[key].strip() if key == "name" else body[key]
            if "address" in body:
                row.view["address"] = _pick_address(body["address"], geo=True)
            self._changed("customers", row)
            return _json(self._read_view(RESOURCES["customers"], row, external[0] if external else None))

    def _split_errors(self, splits: Any, customer_id: int | None) -> tuple[dict[str, list[str]], list[tuple[Row, Decimal]]]:
        errors: dict[str, list[str]] = {}
        applied: list[tuple[Row, Decimal]] = []
        if splits is None:
            return errors, applied
        if not isinstance(splits, list):
            return {"Splits": ["The Splits field must be a list."]}, applied
        for index, split in enumerate(splits):
            if not isinstance(split, dict) or not isinstance(split.get("invoiceId"), int):
                errors[f"Splits[{index}].InvoiceId"] = ["The InvoiceId field is required."]
                continue
            invoice = self.tables["invoices"].rows.get(split["invoiceId"])
            if invoice is None:
                errors[f"Splits[{index}].InvoiceId"] = [f"Invoice {split['invoiceId']} not found."]
                continue
            if customer_id is not None and (invoice.view["customer"] or {}).get("id") != customer_id:
                errors[f"Splits[{index}].InvoiceId"] = [f"Invoice {split['invoiceId']} belongs to another customer."]
                continue
            amount = dec(split.get("amount"))
            if amount <= 0:
                errors[f"Splits[{index}].Amount"] = ["The split amount must be greater than 0."]
                continue
            applied.append((invoice, amount.quantize(_CENT)))
        return errors, applied

    def _create_payment(self, tenant: int) -> Response:
        self._authorize(tenant, RESOURCES["payments"].scope, write=True)
        body = _object(self._body())
        errors = _required(body, {"typeId": int})
        errors.update(_types(body, {"amount": (int, float), "customerId": int, "memo": str, "checkNumber": str,
                                    "authCode": str, "exportId": str, "paidOn": str, "splits": list, "status": str}))
        if body.get("status") is not None and body["status"] not in SYNC_STATUSES:
            errors["Status"] = [f"The value '{body['status']}' is not valid."]
        if isinstance(body.get("paidOn"), str) and not _is_when(body["paidOn"]):
            errors["PaidOn"] = [f"The value '{body['paidOn']}' is not a valid date-time."]
        if errors:
            raise ApiError(400, VALIDATION_TITLE, errors)
        with self.lock:
            errors = {}
            if body["typeId"] not in PAYMENT_TYPES:
                errors["TypeId"] = [f"Payment type {body['typeId']} not found."]
            customer_id = body.get("customerId")
            if customer_id is not None and customer_id not in self.tables["customers"].rows:
                errors["CustomerId"] = [f"Customer {customer_id} not found."]
            split_errors, applied = self._split_errors(body.get("splits"), customer_id)
            errors.update(split_errors)
            applied_total = sum((amount for _, amount in applied), Decimal(0))
            amount = dec(body["amount"]).quantize(_CENT) if body.get("amount") is not None else applied_total
            if applied_total > amount:
                errors["Splits"] = [f"The splits total {money(applied_total)} exceeds the payment amount {money(amount)}."]
            if amount <= 0:
                errors["Amount"] = ["The payment amount must be greater than 0."]
            if customer_id is None and not applied:
                errors["CustomerId"] = ["A customer or at least one invoice split is required."]
            if errors:
                raise ApiError(400, VALIDATION_TITLE, errors)
            if customer_id is None:
                customer_id = applied[0][0].view["customer"]["id"]
            paid_on = parse_when(body["paidOn"]) if body.get("paidOn") else self.clock.now_us()
            row = self._new_payment(body["typeId"], applied, amount, customer_id, paid_on, memo=body.get("memo"),
                                    check=body.get("checkNumber"), sync=body.get("status") or "Pending",
                                    auth_code=body.get("authCode"), export_id=body.get("exportId"))
            return _json(self._payment_response(row))

    def _new_payment(self, type_id: int, applied: list[tuple[Row, Decimal]], amount: Decimal, customer_id: int,
                     paid_on: int, *, memo: str | None, check: str | None, sync: str, auth_code: str | None = None,
                     export_id: str | None = None, modified: int | None = None) -> Row:
        """Record a payment and apply it to its invoices, reducing their balances."""
        table = self.tables["payments"]
        customer = self.tables["customers"].rows[customer_id]
        unit = applied[0][0].view["businessUnit"] if applied else None
        view = {"active": True, "appliedTo": [], "authCode": auth_code, "batch": None, "businessUnit": unit,
                "checkNumber": check, "createdBy": "Office", "createdOn": None,
                "customer": {"id": customer_id, "name": customer.view["name"]}, "customFields": [],
                "date": iso(paid_on), "deposit": None, "generalLedgerAccount": self._gl_ref("1050"),
                "id": table.allocate(), "memo": memo, "modifiedOn": None, "referenceNumber": None,
                "refundedPaymentId": None, "syncStatus": sync, "total": money(amount), "type": PAYMENT_TYPES[type_id],
                "typeId": str(type_id), "unappliedAmount": "0.00"}
        view["referenceNumber"] = f"PMT-{view['id']}"
        extra = {"exportId": export_id, "splits": [], "typeId": type_id}
        seeding = modified is not None
        stamp = paid_on if seeding else self.clock.now_us()
        row = self._insert("payments", view, stamp, modified if seeding else stamp, extra=extra)
        self._apply_splits(row, applied, amount, emit=not seeding)
        if not seeding:
            self._emit("payments", "created", row)
        return row

    def _apply_splits(self, row: Row, applied: list[tuple[Row, Decimal]], amount: Decimal, emit: bool) -> None:
        now = iso(self.clock.now_us()) if emit else row.view["date"]
        row.view["appliedTo"] = []
        row.extra["splits"] = []
        for invoice, split in applied:
            invoice.extra["paid"] = invoice.extra.get("paid", Decimal(0)) + split
            self._refresh_invoice_balance(invoice, row.view["date"])
            row.view["appliedTo"].append({"appliedAmount": money(split), "appliedBy": "Office",
                                          "appliedId": next(self._item_ids), "appliedOn": now,
                                          "appliedTo": invoice.view["id"],
                                          "appliedToReferenceNumber": invoice.view["referenceNumber"]})
            row.extra["splits"].append({"amount": float(split), "invoiceId": invoice.view["id"],
                                        "invoiceNumber": invoice.view["referenceNumber"]})
            if emit:
                self._changed("invoices", invoice)
        row.view["unappliedAmount"] = money(amount - sum((s for _, s in applied), Decimal(0)))

    def _payment_response(self, row: Row) -> dict[str, Any]:
        v = row.view
        return {"active": v["active"], "authCode": v["authCode"], "checkNumber": v["checkNumber"],
                "customerId": (v["customer"] or {}).get("id"), "exportId": row.extra.get("exportId"),
                "id": v["id"], "memo": v["memo"], "paidOn": v["date"], "splits": list(row.extra.get("splits", [])),
                "status": v["syncStatus"], "transactionStatus": "Success", "typeId": row.extra.get("typeId", int(v["typeId"]))}

    def _update_payment(self, tenant: int, rid: int) -> Response:
        self._authorize(tenant, RESOURCES["payments"].scope, write=True)
        body = _object(self._body())
        errors = _required(body, {"typeId": int, "splits": list})
        errors.update(_types(body, {"active": bool, "authCode": str, "checkNumber": str, "exportId": str, "memo": str,
                                    "paidOn": str, "status": str}))
        if body.get("status") is not None and body["status"] not in SYNC_STATUSES:
            errors["Status"] = [f"The value '{body['status']}' is not valid."]
        if errors:
            raise ApiError(400, VALIDATION_TITLE, errors)
        with self.lock:
            row = self.tables["payments"].rows.get(rid)
            if row is None:
                raise self._not_found("payments", rid)
            if body["typeId"] not in PAYMENT_TYPES:
                raise invalid("TypeId", f"Payment type {body['typeId']} not found.")
            split_errors, applied = self._split_errors(body["splits"], (row.view["customer"] or {}).get("id"))
            total = dec(row.view["total"])
            if sum((a for _, a in applied), Decimal(0)) > total:
                split_errors["Splits"] = ["The splits total exceeds the payment amount."]
            if split_errors:
                raise ApiError(400, VALIDATION_TITLE, split_errors)
            for applied_row in row.view["appliedTo"]:  # undo the previous application
                invoice = self.tables["invoices"].rows.get(applied_row["appliedTo"])
                if invoice is not None:
                    invoice.extra["paid"] = invoice.extra.get("paid", Decimal(0)) - dec(applied_row["appliedAmount"])
                    self._refresh_invoice_balance(invoice, None)
            self._apply_splits(row, applied, total, emit=True)
            v = row.view
            v["typeId"], v["type"] = str(body["typeId"]), PAYMENT_TYPES[body["typeId"]]
            row.extra["typeId"] = body["typeId"]
            for key, target in (("active", "active"), ("authCode", "authCode"), ("checkNumber", "checkNumber"),
                                ("memo", "memo"), ("status", "syncStatus")):
                if key in body:
                    v[target] = body[key]
            if "paidOn" in body:
                v["date"] = iso(parse_when(body["paidOn"]))
            if "exportId" in body:
                row.extra["exportId"] = body["exportId"]
            self._changed("payments", row)
            return _json(self._payment_response(row))

    def _payment_status(self, tenant: int) -> Response:
        self._authorize(tenant, RESOURCES["payments"].scope, write=True)
        body = _object(self._body())
        errors = _required(body, {"paymentIds": list, "status": str})
        if not errors and body["status"] not in SYNC_STATUSES:
            errors["Status"] = [f"The value '{body['status']}' is not valid."]
        if errors:
            raise ApiError(400, VALIDATION_TITLE, errors)
        with self.lock:
            table = self.tables["payments"]
            missing = [pid for pid in body["paymentIds"] if pid not in table.rows]
            if missing:
                raise invalid("PaymentIds", f"Payments not found: {', '.join(map(str, missing))}.")
            for pid in body["paymentIds"]:
                row = table.rows[pid]
                row.view["syncStatus"] = body["status"]
                self._touch("payments", row)
        return Response(status=200)

    def _create_gl_account(self, tenant: int) -> Response:
        self._authorize(tenant, RESOURCES["gl_accounts"].scope, write=True)
        body = _object(self._body())
        errors = _types(body, dict.fromkeys(("name", "number", "description", "type", "subtype"), str))
        if not body.get("name"):
            errors["Name"] = ["The Name field is required."]
        if errors:
            raise ApiError(400, VALIDATION_TITLE, errors)
        with self.lock:
            if body.get("number") and any(r.view["number"] == body["number"] for r in self.tables["gl_accounts"].rows.values()):
                raise ApiError(409, f"A GL account with number {body['number']} already exists.",
                               {"Number": [f"Number {body['number']} is already in use."]})
            view = self._template("gl_accounts")
            view.update({k: body.get(k) for k in ("name", "number", "description", "type", "subtype") if k in body})
            view["source"] = "PublicApi"
            row = self._create("gl_accounts", view)
            return _json(row.view, 201)

    def _marker(self, entity: str) -> Callable[..., Response]:
        """markasexported: sets syncStatus to Exported and answers one verdict per id."""
        id_field = {"inventory_bills": "inventoryBillId", "ap_bills": "billId", "invoices": "invoiceId",
                    "ap_payments": "apPaymentId"}[entity]
        label = {"inventory_bills": "Inventory bill", "ap_bills": "Bill", "invoices": "Invoice",
                 "ap_payments": "AP payment"}[entity]

        def handler(tenant: int) -> Response:
            self._authorize(tenant, RESOURCES[entity].scope, write=True)
            body = self._body()
            if entity in ("inventory_bills", "ap_bills"):
                list_field = "inventoryBillIds" if entity == "inventory_bills" else "billIds"
                errors = _required(_object(body), {list_field: list})
                if errors:
                    raise ApiError(400, VALIDATION_TITLE, errors)
                ids = body[list_field]
            else:
                if not isinstance(body, list) or not all(isinstance(i, dict) for i in body):
                    raise invalid("$", "A JSON array of objects is required.")
                ids = [item.get(id_field) for item in body]
            if not all(isinstance(i, int) for i in ids):
                raise invalid(id_field, "Every id must be an integer.")
            verdicts = []
            with self.lock:
                table = self.tables[entity]
                for rid in ids:
                    row = table.rows.get(rid)
                    if row is None:
                        verdicts.append({id_field: rid, "success": False, "errorMessage": f"{label} {rid} not found."})
                        continue
                    # (unconfirmed) exporting changes only the sync status: no modifiedOn bump, no event
                    row.view["syncStatus"] = "Exported"
                    verdicts.append({id_field: rid, "success": True, "errorMessage": None})
            return _json(verdicts)

        return handler


# ---- module helpers -------------------------------------------------------------------------

class _SeedClock:
    """Deterministic past timestamps for seeded history (all before any live change)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def early(self) -> int:
        return SEED_START_US + self._rng.randrange(0, 30 * 86_400) * 1_000_000

    def any(self) -> int:
        return SEED_START_US + self._rng.randrange(30 * 86_400, SEED_SPAN_US // 1_000_000 - 40 * 86_400) * 1_000_000 \
            + self._rng.randrange(1000) * 1000

    def after(self, us: int) -> int:
        return min(us + self._rng.randrange(0, 20 * 86_400) * 1_000_000 + self._rng.randrange(1000) * 1000,
                   SEED_START_US + SEED_SPAN_US)


def _random_row(table: Table, rng: random.Random) -> Row:
    """A random row without listing the table: ids are dense, so a few probes find one."""
    first = next(iter(table.rows))
    for _ in range(8):
        row = table.rows.get(rng.randint(first, table.next_id - 1))
        if row is not None:
            return row
    return table.rows[rng.choice(list(table.rows))]


def _pick_address(raw: dict[str, Any], geo: bool = False) -> dict[str, Any]:
    """Only the address fields the read view has (request bodies may carry others)."""
    address = {key: raw.get(key) if key != "unit" else raw.get(key) or "" for key in
               ("street", "unit", "city", "state", "zip", "country")}
    if geo:
        address.update(latitude=raw.get("latitude"), longitude=raw.get("longitude"))
    return address


def _parse_external(external: Any) -> tuple[str, list[tuple[str, str | None]], str] | None:
    """Validate an externalData patch: (application guid, key/value pairs, patch mode)."""
    if not external:
        return None
    if not isinstance(external, dict) or not external.get("applicationGuid"):
        raise invalid("ExternalData.ApplicationGuid", "The ApplicationGuid field is required.")
    try:
        guid = str(uuid.UUID(str(external["applicationGuid"])))
    except ValueError:
        raise invalid("ExternalData.ApplicationGuid", "The value is not a valid GUID.") from None
    pairs = external.get("externalData")
    if not isinstance(pairs, list) or not all(isinstance(p, dict) and isinstance(p.get("key"), str) for p in pairs):
        raise invalid("ExternalData.ExternalData", "A list of {key, value} pairs is required.")
    mode = external.get("patchMode") or "Replace"
    if mode not in ("Replace", "Merge"):
        raise invalid("ExternalData.PatchMode", f"The value '{mode}' is not valid.")
    return guid, [(p["key"], None if p.get("value") is None else str(p["value"])) for p in pairs], mode


def _apply_external(row: Row, parsed: tuple[str, list[tuple[str, str | None]], str] | None) -> None:
    if parsed is None:
        return
    guid, pairs, mode = parsed
    store = row.external.setdefault(guid, {})
    if mode == "Replace":
        store.clear()
    for key, value in pairs:
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, separators=(",", ":")), status=status, mimetype="application/json")


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("$", "A JSON object is required.")
    return body


def _pascal(name: str) -> str:
    return name[0].upper() + name[1:]


def _type_ok(value: Any, expected: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool) and expected is not bool and (not isinstance(expected, tuple) or bool not in expected):
        return False
    return isinstance(value, expected)


def _required(body: dict[str, Any], fields: dict[str, Any], prefix: str = "") -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for name, expected in fields.items():
        label = prefix + _pascal(name)
        if body.get(name) is None:
            errors[label] = [f"The {_pascal(name)} field is required."]
        elif not _type_ok(body[name], expected):
            errors[label] = [f"The value for {_pascal(name)} is not valid."]
    return errors


def _types(body: dict[str, Any], fields: dict[str, Any]) -> dict[str, list[str]]:
    return {_pascal(name): [f"The value for {_pascal(name)} is not valid."]
            for name, expected in fields.items() if body.get(name) is not None and not _type_ok(body[name], expected)}


def _contact_errors(contacts: Any, label: str) -> dict[str, list[str]]:
    if contacts is None:
        return {}
    if not isinstance(contacts, list):
        return {label: ["A list of contacts is required."]}
    errors = {}
    for index, contact in enumerate(contacts):
        if not isinstance(contact, dict) or contact.get("type") not in ("Phone", "Email", "Fax", "MobilePhone"):
            errors[f"{label}[{index}].Type"] = ["The value is not valid. Values: Phone, Email, Fax, MobilePhone."]
        elif not isinstance(contact.get("value"), str) or not contact["value"]:
            errors[f"{label}[{index}].Value"] = ["The Value field is required."]
    return errors


def _int_value(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise invalid(name, f"The value '{raw}' is not valid.") from None


def _int_arg(args: Any, name: str, default: int, minimum: int) -> int:
    raw = args.get(name)
    if raw in (None, ""):
        return default
    value = _int_value(name, raw)
    if value < minimum:
        raise invalid(name, f"The field {name} must be at least {minimum}.")
    return value


def _bool_arg(args: Any, name: str, default: bool) -> bool:
    raw = args.get(name)
    if raw in (None, ""):
        return default
    lowered = raw.strip().lower()
    if lowered not in ("true", "false"):
        raise invalid(name, f"The value '{raw}' is not valid.")
    return lowered == "true"


def _list_arg(args: Any, name: str) -> list[str]:
    return [part.strip() for raw in args.getlist(name) for part in raw.split(",") if part.strip()]


def _is_when(text: str) -> bool:
    try:
        parse_when(text)
    except ValueError:
        return False
    return True


def _when_arg(name: str, raw: str) -> int:
    try:
        return parse_when(raw)
    except ValueError:
        raise invalid(name, f"The value '{raw}' is not valid.") from None


_TOKEN_PREFIX = "c1"


def _encode_token(entity: str, position: int) -> str:
    payload = f"{_TOKEN_PREFIX}|{entity}|{position}".encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def _decode_token(raw: str) -> tuple[str, int] | None:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        prefix, entity, position = text.split("|")
        if prefix != _TOKEN_PREFIX:
            return None
        return entity, int(position)
    except (ValueError, UnicodeDecodeError):
        return None


__all__ = ["ServiceTitanSandbox", "sign_webhook", "RESOURCES", "ALL_SCOPES", "APP_KEY_MISSING"]
