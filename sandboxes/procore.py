"""A simulator of Procore's REST API (v1.0) for the Epicor -> Procore pair.

What it reproduces: OAuth at `/oauth/token` (client credentials without a refresh token;
authorization code and refresh_token grants with single-use, rotating refresh tokens;
90-minute access tokens), the `Procore-Company-Id` header rule, bare-array list bodies
paged with `page`/`per_page` and the `Total`/`Per-Page`/`Link` headers, `filters[...]`
including `a...b` date ranges, soft delete with `filters[include_deleted]`, company-wide
`origin_id` uniqueness, `PATCH .../sync` batch upserts that always answer 200 with
`{"entities", "errors"}`, string-typed money, the hourly and spike rate-limit windows with
`X-Rate-Limit-*` headers (both enforced by default: 3600 per hour and the docs' 25 per 10 s;
the `rate_limit` option sets the hourly one, and 0 turns both off), and the vendor's error shapes.

Resources: vendors (company directory, near-duplicate names on purpose), projects, cost
codes per project, line item types, purchase order contracts with line items, and direct
costs with line items.

Facts marked "(unconfirmed)" in the vendor notes are settings (class attributes, also
changeable at run time through `POST /_sandbox/settings`) with the documented default.
"""

from __future__ import annotations

import calendar
import collections
import contextlib
import json
import math
import random
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import urlencode

from flask import Flask, Response, g, request

from sandboxes.base import Sandbox, SandboxOptions
from sandboxes.kit.clock import SECOND_US, Clock
from sandboxes.kit.tokens import bearer_token

API = "/rest/v1.0"

ACCESS_TOKEN_TTL = 5400  # Procore access tokens live 90 minutes
AUTH_CODE_TTL = 600  # authorization codes live 10 minutes
HOURLY_LIMIT = 3600  # documented default requests per hour per app (varies per app)
HOURLY_WINDOW = 3600.0
SPIKE_WINDOW = 10.0  # the spike limit is counted over 10 seconds
SPIKE_LIMIT = 25  # the rate-limiting guide's example: 25 requests per spike window (per app)
DEFAULT_PER_PAGE = 100  # (unconfirmed) page size when per_page is absent
MAX_PER_PAGE = 10_000  # the pagination guide's highest accepted per_page
SYNC_MAX_ITEMS = 1000  # sync actions take at most 1000 resources per call
IDEMPOTENCY_KEEP = 10_000  # remembered Idempotency-Token answers before the oldest go
QUERY_CACHE_SIZE = 256  # filtered id lists kept so paging a result set is O(page)
OOB_REDIRECT = "urn:ietf:wg:oauth:2.0:oob"

RATE_LIMIT_MESSAGE = (
    "You have surpassed the max number of requests for an hour. Please wait until your limit resets."
)
INVALID_TOKEN_MESSAGE = "The access token is invalid"
MISSING_COMPANY_MESSAGE = "Missing Procore-Company-Id header!"
NOT_CONNECTED_MESSAGE = "App is not connected to this company"
INVALID_CLIENT_DESCRIPTION = (
    "Client authentication failed due to unknown client, no client authentication included, "
    "or unsupported authentication method."
)
INVALID_GRANT_DESCRIPTION = (
    "The provided authorization grant is invalid, expired, revoked, does not match the "
    "redirection URI used in the authorization request, or was issued to another client."
)
INVALID_REFRESH_DESCRIPTION = "The refresh token is invalid"

PO_STATUSES = ("Draft", "Processing", "Submitted", "Partially Received", "Received", "Approved", "Closed")
PO_LOCKED_FROM_DRAFT = {"Approved", "Partially Received", "Received", "Closed"}
DC_TYPES = ("invoice", "expense", "payroll")
DC_STATUSES = ("draft", "pending", "revise_and_resubmit", "approved")
EXTENDED_TYPES = ("manual", "calculated")
ACCOUNTING_METHODS = ("amount", "unit")
# (Round 2) base_type is one of equipment, materials, commitment, owner_cost,
# professional_services, other; the codes are company data.
DEFAULT_LINE_ITEM_TYPES = (
    ("L", "Labor", "professional_services"),
    ("M", "Materials", "materials"),
    ("E", "Equipment", "equipment"),
    ("S", "Subcontract", "commitment"),
    ("O", "Other", "other"),
)


class ApiError(Exception):
    """A vendor error answer raised from deep inside a handler."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def _error(status: int, message: str) -> ApiError:
    """Procore's generic error: a message under `error` (the 4xx body shape is unconfirmed)."""
    return ApiError(status, {"error": message})


def _field_errors(status: int, errors: Mapping[str, list[str]]) -> ApiError:
    """Procore's validation error: a field map under `errors`."""
    return ApiError(status, {"errors": dict(errors)})


# ---- small value helpers ------------------------------------------------------------------


def _iso(ts: int | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _money(value: Decimal | None) -> str | None:
    """Money as Procore sends it: a string such as "1000.0" or "12.5"."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return text if "." in text else text + ".0"


def _parse_instant(text: str, *, end: bool) -> float:
    """Epoch seconds for an ISO-8601 datetime or a bare date (a date ends at 23:59:59)."""
    text = text.strip().strip('"').strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        day = date.fromisoformat(text)
        seconds = calendar.timegm(day.timetuple())
        return seconds + 86399.999 if end else float(seconds)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _parse_range(raw: str) -> tuple[float | None, float | None]:
    """`start...end` as epoch seconds; either side may be empty (open)."""
    text = raw.strip().strip('"')
    if "..." not in text:
        raise ValueError(raw)
    start, end = text.split("...", 1)
    return (
        _parse_instant(start, end=False) if start.strip() else None,
        _parse_instant(end, end=True) if end.strip() else None,
    )




# ---- attribute coercion (what a create/update body may carry) ------------------------------


def _wrapped(body: dict[str, Any], key: str) -> dict[str, Any]:
    """The one object a write wraps its attributes in (`{"vendor": {...}}`); missing is a field error."""
    attrs = body.get(key)
    if not isinstance(attrs, dict):
        raise _field_errors(400, {key: ["is missing"]})
    return attrs


def _as_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or isinstance(value, (dict, list)):
        raise ValueError("is invalid")
    return str(value)


def _as_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError("is invalid")


def _as_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("is invalid")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    raise ValueError("is invalid")


def _as_number(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("is not a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("is not a number") from None
    if not number.is_finite():
        raise ValueError("is not a number")
    return number


def _as_date(value: Any) -> str | None:
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(str(value)[:10]).isoformat()
    except ValueError:
        raise ValueError("is not a valid date") from None


def _as_int_list(value: Any) -> list[int]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("is invalid")
    return [int(_as_int(v) or 0) for v in value]


def _enum(choices: Iterable[str]) -> Callable[[Any], str | None]:
    canonical = {re.sub(r"[\s_]+", "_", c.lower()): c for c in choices}

    def coerce(value: Any) -> str | None:
        if value is None:
            return None
        found = canonical.get(re.sub(r"[\s_]+", "_", str(value).strip().lower()))
        if found is None:
            raise ValueError("is not included in the list")
        return found

    return coerce


S, B, I, N, D, L = _as_str, _as_bool, _as_int, _as_number, _as_date, _as_int_list

VENDOR_FIELDS: dict[str, Callable[[Any], Any]] = {
    "name": S, "abbreviated_name": S, "origin_id": S, "origin_code": S, "origin_data": S,
    "address": S, "city": S, "state_code": S, "zip": S, "country_code": S,
    "business_phone": S, "mobile_phone": S, "fax_number": S, "email_address": S, "website": S,
    "primary_contact_id": I, "is_active": B, "authorized_bidder": B, "prequalified": B,
    "labor_union": S, "union_member": B, "non_union_prevailing_wage": B, "license_number": S,
    "notes": S, "vendor_group_id": I, "parent_id": I, "trade_name": S, "trade_ids": L,
    "standard_cost_code_ids": L, "bidding": S,
}
PROJECT_FIELDS: dict[str, Callable[[Any], Any]] = {
    "name": S, "project_number": S, "description": S, "address": S, "city": S, "state_code": S,
    "zip": S, "country_code": S, "phone": S, "active": B, "origin_id": S, "origin_data": S,
    "origin_code": S, "estimated_start_date": D, "estimated_completion_date": D, "square_feet": I,
}
PO_FIELDS: dict[str, Callable[[Any], Any]] = {
    "number": S, "title": S, "vendor_id": I, "description": S, "status": _enum(PO_STATUSES),
    "executed": B, "execution_date": D, "contract_date": D, "delivery_date": D, "issued_on_date": D,
    "letter_of_intent_date": D, "approval_letter_date": D, "returned_date": D,
    "signed_contract_received_date": D, "payment_terms": S, "retainage_percent": N,
    "accounting_method": _enum(ACCOUNTING_METHODS), "bill_to_address": S, "ship_to_address": S,
    "ship_via": S, "private": B, "assignee_id": I, "origin_id": S, "origin_code": S,
    "origin_data": S, "currency_iso_code": S, "currency_exchange_rate": N,
}
LINE_FIELDS: dict[str, Callable[[Any], Any]] = {
    "amount": N, "cost_code_id": I, "wbs_code_id": I, "line_item_type_id": I, "description": S,
    "quantity": N, "unit_cost": N, "uom": S, "extended_type": _enum(EXTENDED_TYPES),
    "tax_code_id": I, "origin_id": S, "origin_data": S,
}
DC_FIELDS: dict[str, Callable[[Any], Any]] = {
    "direct_cost_type": S, "invoice_number": S, "vendor_id": I, "employee_id": I,
    "direct_cost_date": D, "received_date": D, "payment_date": D, "status": _enum(DC_STATUSES),
    "terms": S, "description": S, "origin_id": S, "origin_data": S, "currency_iso_code": S,
    "currency_exchange_rate": N,
}
COST_CODE_FIELDS: dict[str, Callable[[Any], Any]] = {
    "name": S, "code": S, "parent_id": I, "standard_cost_code_id": I, "origin_id": S,
    "origin_data": S, "position": I,
}


# ---- storage ---------------------------------------------------------------------------------


@dataclass
class _Table:
    """One resource type: rows by id, ids per scope (project or parent), live origin ids."""

    name: str
    next_id: int
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    by_scope: dict[int | None, list[int]] = field(default_factory=lambda: collections.defaultdict(list))
    by_origin: dict[str, int] = field(default_factory=dict)
    version: int = 0

    def live(self, rid: int | None, scope: int | None = None, *, scoped: bool = False) -> dict[str, Any] | None:
        row = self.rows.get(rid) if rid is not None else None
        if row is None or row["_deleted"] is not None:
            return None
        if scoped and row["_scope"] != scope:
            return None
        return row

    def insert(self, row: dict[str, Any], scope: int | None) -> dict[str, Any]:
        rid = self.next_id
        self.next_id += 1
        row["id"] = rid
        row["_scope"] = scope
        self.rows[rid] = row
        self.by_scope[scope].append(rid)
        if row.get("origin_id"):
            self.by_origin[row["origin_id"]] = rid
        self.version += 1
        return row

    def reindex_origin(self, row: dict[str, Any], old_origin: str | None) -> None:
        if old_origin and self.by_origin.get(old_origin) == row["id"]:
            del self.by_origin[old_origin]
        if row.get("origin_id") and row["_deleted"] is None:
            self.by_origin[row["origin_id"]] = row["id"]


@dataclass(frozen=True)
class _Kind:
    """How one resource type is written: its table, writable fields and business rules."""

    table: str
    fields: dict[str, Callable[[Any], Any]]
    defaults: dict[str, Any]
    validate: Callable[["ProcoreSandbox", dict[str, Any], dict[str, Any] | None, int | None, dict[str, list[str]]], None]
    parent_table: str | None = None  # line items touch their holder when they change


class _Windows:
    """Procore's two rate-limit windows per app: hourly and spike, counted on every call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[tuple[str, str], collections.deque[float]] = collections.defaultdict(collections.deque)

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()

    def hit(self, key: str, windows: list[tuple[str, int, float]], *, count: bool = True) -> tuple[bool, int, int, int] | None:
        """(allowed, limit, remaining, reset epoch) of the window closest to exhaustion."""
        if not windows:
            return None
        now = time.time()
        with self._lock:
            states = []
            for name, limit, seconds in windows:
                calls = self._calls[(key, name)]
                while calls and calls[0] <= now - seconds:
                    calls.popleft()
                states.append((name, limit, seconds, calls))
            allowed = all(len(calls) < limit for _, limit, _, calls in states)
            if allowed and count:
                for _, _, _, calls in states:
                    calls.append(now)
            _, limit, seconds, calls = min(states, key=lambda s: s[1] - len(s[3]))
            remaining = max(0, limit - len(calls))
            reset = math.ceil((calls[0] if calls else now) + seconds)
            return allowed, limit, remaining, reset


class ProcoreSandbox(Sandbox):
    """Procore's REST API in memory. Settings are class attributes; see `SETTINGS`."""

    vendor = "procore"

    # Settings (changeable per instance and at run time through POST /_sandbox/settings).
    spike_limit: int | None = SPIKE_LIMIT  # (Round 2) both windows enforced; the docs' example is 25 per 10 s
    spike_window: float = SPIKE_WINDOW
    max_per_page: int = MAX_PER_PAGE
    default_per_page: int = DEFAULT_PER_PAGE
    missing_company_status: int = 400  # the docs give the message, not the status (unconfirmed)
    po_status_style: str = "display"  # "display" ("Partially Received") as the spec spells it, or "snake"
    duplicate_origin_status: int = 422  # the docs say a duplicate origin_id gives 409 or 422
    strict_attributes: bool = True  # 406 for attributes the resource does not have
    send_retry_after: bool = True  # Retry-After on 429 is in one vendor doc only (unconfirmed)
    subcontractor_invoice_enabled: bool = False  # a per-company switch at Procore
    direct_cost_write_seconds: float = 0.0  # time a direct-cost write holds its record (409 when overlapped)
    inactive_vendors_listed: bool = False  # (unconfirmed) the vendor list shows active vendors only

    SETTINGS = (
        "hourly_limit", "spike_limit", "spike_window", "max_per_page", "default_per_page",
        "missing_company_status", "po_status_style", "duplicate_origin_status",
        "strict_attributes", "send_retry_after", "subcontractor_invoice_enabled",
        "direct_cost_write_seconds", "inactive_vendors_listed",
    )

    def __init__(self, options: SandboxOptions | None = None, **settings: Any) -> None:
        options = options or SandboxOptions()
        # options.rate_limit is the hourly limit per app; None: Procore's default; 0: off.
        self.hourly_limit: int | None = HOURLY_LIMIT if options.rate_limit is None else int(options.rate_limit)
        if options.rate_limit == 0:  # 0: not throttled at all, the spike window included
            self.spike_limit = None
        for name, value in settings.items():
            if name not in self.SETTINGS:
                raise TypeError(f"unknown Procore sandbox setting {name!r}")
            setattr(self, name, value)
        self._windows = _Windows()
        self._revoked: set[str] = set()
        self._pairs: dict[str, str] = {}  # access token -> refresh token issued with it
        self._codes: dict[str, tuple[str, str, float]] = {}  # auth code -> (client, redirect, expiry)
        self._idempotent: collections.OrderedDict[tuple[str, str], tuple[int, Any]] = collections.OrderedDict()
        self._busy_direct_costs: set[int] = set()
        self._query_cache: dict[tuple[Any, ...], tuple[int, list[int]]] = {}
        super().__init__(options)

    @property
    def token_ttl(self) -> int:
        return self.options.token_ttl if self.options.token_ttl is not None else ACCESS_TOKEN_TTL

    # ---- Sandbox contract ------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "api_base": self.base_url,
            "token_url": f"{self.base_url}/oauth/token",
            "credentials": {
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "company_id": self.company_id,
            },
        }

    def clear_state(self) -> None:
        self.clock = Clock(SECOND_US)
        self.tables: dict[str, _Table] = {
            "vendors": _Table("vendors", 8800),
            "projects": _Table("projects", 562949953421000),
            "cost_codes": _Table("cost_codes", 40100),
            "line_item_types": _Table("line_item_types", 3522600),
            "purchase_order_contracts": _Table("purchase_order_contracts", 1_200_000),
            "purchase_order_line_items": _Table("purchase_order_line_items", 7_000_000),
            "direct_costs": _Table("direct_costs", 300_000),
            "direct_cost_line_items": _Table("direct_cost_line_items", 9_000_000),
        }
        self._windows.clear()
        self._revoked.clear()
        self._pairs.clear()
        self._codes.clear()
        self._idempotent.clear()
        self._busy_direct_costs.clear()
        self._query_cache.clear()

    def seed(self, rng: random.Random, records: int) -> None:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        self._tick_rng = random.Random(self.options.seed + 2)  # ticks repeat after each reset
        self.company_id = rng.randint(4_000_000, 4_999_999)
        self.company_name = rng.choice(["Ridgeline Builders", "Harbor & Pine Construction", "Keystone General Contractors"])
        self.client_id = "".join(rng.choice(alphabet) for _ in range(43))
        self.client_secret = "".join(rng.choice(alphabet) for _ in range(43))
        self.user_id = rng.randint(1_000_000, 9_999_999)
        now = int(time.time())
        start = now - 180 * 86400

        def stamps() -> tuple[int, int]:
            created = rng.randint(start, now - 2 * 86400)
            return created, rng.randint(created, now - 86400)

        for code, name, base in DEFAULT_LINE_ITEM_TYPES:
            created, updated = stamps()
            self.tables["line_item_types"].insert(
                {"code": code, "name": name, "base_type": base, "origin_id": None, "origin_data": None,
                 "_created": created, "_updated": updated, "_deleted": None}, None)

        project_count = max(2, min(8, records // 25))
        for n in range(project_count):
            created, updated = stamps()
            city, state = rng.choice(CITIES)
            self.tables["projects"].insert({
                "name": f"{rng.choice(PROJECT_NAMES)} {['Phase', 'Building', 'Wing'][n % 3]} {n + 1}",
                "project_number": f"{24 + n // 4:02d}-{100 + n:03d}", "description": None,
                "address": f"{rng.randint(10, 9999)} {rng.choice(STREETS)}", "city": city,
                "state_code": state, "zip": f"{rng.randint(10000, 99999)}", "country_code": "US",
                "phone": None, "active": n < project_count - 1 or project_count == 2,
                "origin_id": f"JOB-{1000 + n}", "origin_data": None, "origin_code": None,
                "estimated_start_date": None, "estimated_completion_date": None, "square_feet": None,
                "_created": created, "_updated": updated, "_deleted": None,
            }, None)
        project_ids = list(self.tables["projects"].rows)

        leaf_codes: dict[int, list[int]] = {}
        for pid in project_ids:
            leaf_codes[pid] = []
            for position, (division, division_name, children) in enumerate(DIVISIONS):
                created, updated = stamps()
                parent = self.tables["cost_codes"].insert({
                    "name": division_name, "code": division, "parent_id": None,
                    "standard_cost_code_id": None, "origin_id": None, "origin_data": None,
                    "position": position, "_created": created, "_updated": updated, "_deleted": None,
                }, pid)
                for child_position, (code, name) in enumerate(children):
                    created, updated = stamps()
                    leaf = self.tables["cost_codes"].insert({
                        "name": name, "code": code, "parent_id": parent["id"],
                        "standard_cost_code_id": None, "origin_id": None, "origin_data": None,
                        "position": child_position, "_created": created, "_updated": updated,
                        "_deleted": None,
                    }, pid)
                    leaf_codes[pid].append(leaf["id"])

        vendor_ids: list[int] = []
        for n in range(records):
            created, updated = stamps()
            if n >= 8 and n % 9 == 0:
                twin = self.tables["vendors"].rows[rng.choice(vendor_ids)]
                name, address = _near_duplicate(rng, twin["name"]), _near_duplicate_address(rng, twin["address"])
                city, state, zip_code = twin["city"], twin["state_code"], twin["zip"]
            else:
                name = f"{rng.choice(VENDOR_PREFIXES)} {rng.choice(TRADES)} {rng.choice(SUFFIXES)}".strip()
                address = f"{rng.randint(10, 9999)} {rng.choice(STREETS)}"
                city, state = rng.choice(CITIES)
                zip_code = f"{rng.randint(10000, 99999)}"
            vendor = self.tables["vendors"].insert({
                **{k: None for k in VENDOR_FIELDS},
                "name": name, "abbreviated_name": re.sub(r"[^A-Z]", "", name.upper())[:6] or None,
                "address": address, "city": city, "state_code": state, "zip": zip_code,
                "country_code": "US",
                "business_phone": f"({rng.randint(200, 989)}) 555-{rng.randint(1000, 9999)}",
                "email_address": f"ap@{re.sub(r'[^a-z]', '', name.lower())[:18]}.example.com",
                "is_active": rng.random() > 0.08, "authorized_bidder": rng.random() > 0.5,
                "prequalified": rng.random() > 0.7, "union_member": False,
                "non_union_prevailing_wage": False, "trade_ids": [], "standard_cost_code_ids": [],
                "origin_id": f"ERP-V{10000 + n}" if rng.random() < 0.6 else None,
                "origin_code": None, "origin_data": None,
                "_created": created, "_updated": updated, "_deleted": None,
            }, None)
            vendor_ids.append(vendor["id"])

        types = list(self.tables["line_item_types"].rows)
        po_numbers: dict[int, int] = collections.Counter()
        for n in range(records):
            created, updated = stamps()
            pid = project_ids[n % len(project_ids)]
            po_numbers[pid] += 1
            status = rng.choice(PO_STATUSES)
            po = self.tables["purchase_order_contracts"].insert({
                **{k: None for k in PO_FIELDS},
                "number": f"PO-{po_numbers[pid]:04d}", "title": f"{rng.choice(TRADES)} materials",
                "vendor_id": rng.choice(vendor_ids), "description": None, "status": status,
                "executed": status in PO_LOCKED_FROM_DRAFT, "private": False,
                "accounting_method": "amount", "retainage_percent": Decimal(rng.choice([0, 5, 10])),
                "payment_terms": rng.choice(["Net 30", "Net 45", "Due on receipt"]),
                "contract_date": time.strftime("%Y-%m-%d", time.gmtime(created)),
                "origin_id": f"ERP-PO{50000 + n}" if rng.random() < 0.5 else None,
                "_created": created, "_updated": updated, "_deleted": None,
            }, pid)
            for position in range(rng.randint(1, 4)):
                quantity = Decimal(rng.randint(1, 40))
                unit_cost = Decimal(rng.randint(500, 250000)) / 100
                self.tables["purchase_order_line_items"].insert({
                    **{k: None for k in LINE_FIELDS},
                    "description": f"{rng.choice(MATERIALS)}", "quantity": quantity,
                    "unit_cost": unit_cost, "amount": quantity * unit_cost, "uom": rng.choice(["ea", "lf", "sf", "ls"]),
                    "extended_type": "calculated", "cost_code_id": rng.choice(leaf_codes[pid]),
                    "line_item_type_id": rng.choice(types), "position": position + 1,
                    "_created": created, "_updated": updated, "_deleted": None,
                }, po["id"])

        for n in range(records):
            created, updated = stamps()
            pid = project_ids[n % len(project_ids)]
            kind = "invoice" if rng.random() < 0.8 else rng.choice(["expense", "payroll"])
            vendor_id = rng.choice(vendor_ids) if kind == "invoice" else None
            dc = self.tables["direct_costs"].insert({
                **{k: None for k in DC_FIELDS},
                "direct_cost_type": kind, "vendor_id": vendor_id,
                "invoice_number": f"INV-{rng.randint(10000, 99999)}-{n}" if kind == "invoice" else None,
                "direct_cost_date": time.strftime("%Y-%m-%d", time.gmtime(created)),
                "status": rng.choice(DC_STATUSES), "terms": "Net 30",
                "origin_id": f"ERP-AP{70000 + n}" if rng.random() < 0.5 else None,
                "_created": created, "_updated": updated, "_deleted": None,
            }, pid)
            for position in range(rng.randint(1, 3)):
                amount = Decimal(rng.randint(1000, 900000)) / 100
                self.tables["direct_cost_line_items"].insert({
                    **{k: None for k in LINE_FIELDS},
                    "description": rng.choice(MATERIALS), "amount": amount, "quantity": Decimal(1),
                    "unit_cost": amount, "uom": "ls", "extended_type": "manual",
                    "cost_code_id": rng.choice(leaf_codes[pid]), "line_item_type_id": rng.choice(types),
                    "position": position + 1, "_created": created, "_updated": updated, "_deleted": None,
                }, dc["id"])

    def tick(self, count: int) -> list[dict[str, Any]]:
        changed: list[dict[str, Any]] = []
        names = ("vendors", "purchase_order_contracts", "direct_costs")
        keys = {name: list(self.tables[name].rows) for name in names}
        for n in range(max(0, count)):
            table = self.tables[names[n % len(names)]]
            candidates = keys[table.name]
            row = None
            for _ in range(20):  # skip soft-deleted records
                pick = table.rows[self._tick_rng.choice(candidates)] if candidates else None
                if pick is not None and pick["_deleted"] is None:
                    row = pick
                    break
            if row is None:
                continue
            if table.name == "vendors":
                row["business_phone"] = f"({self._tick_rng.randint(200, 989)}) 555-{self._tick_rng.randint(1000, 9999)}"
            elif table.name == "purchase_order_contracts":
                row["description"] = f"Revised scope {self._tick_rng.randint(1, 999)}"
            else:
                row["terms"] = self._tick_rng.choice(["Net 30", "Net 45", "Net 60"])
            row["_updated"] = self.clock.now_whole_seconds()
            table.version += 1
            changed.append({"entity": table.name, "id": row["id"], "updated_at": _iso(row["_updated"])})
        return changed

    def put_entity(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        kind_name = CONTROL_ENTITIES.get(entity)
        if kind_name is None:
            raise KeyError(entity)
        kind = KINDS[kind_name]
        table = self.tables[kind.table]
        attrs = dict(payload)
        stamps = {k: attrs.pop(k) for k in ("created_at", "updated_at", "deleted_at") if k in attrs}
        lines = attrs.pop("line_items", None)
        rid = attrs.pop("id", None)
        scope = self._control_scope(kind_name, attrs)
        current = table.rows.get(int(rid)) if rid is not None else None
        if rid is not None and current is None:
            raise ValueError(f"{entity} {rid} not found")
        if current is not None:
            scope = current["_scope"]
        row, errors = self._write(kind_name, attrs, current, scope)
        if errors:
            raise ValueError(json.dumps({"errors": errors}))
        assert row is not None
        for key, value in stamps.items():
            row["_" + key.split("_")[0]] = None if value is None else int(_parse_instant(str(value), end=False))
            if key == "deleted_at":
                table.reindex_origin(row, row.get("origin_id"))
        table.version += 1
        if lines:
            line_kind = "po_line" if kind_name == "po" else "dc_line"
            for line in lines:
                _, line_errors = self._write(line_kind, dict(line), None, row["id"])
                if line_errors:
                    raise ValueError(json.dumps({"errors": line_errors}))
        return self._control_json(entity, row)

    def get_entities(self, entity: str) -> list[dict[str, Any]]:
        if entity == "companies":
            return [self._company_json()]
        kind_name = CONTROL_ENTITIES.get(entity)
        table_name = KINDS[kind_name].table if kind_name else entity if entity == "line_item_types" else None
        if table_name is None:
            raise KeyError(entity)
        return [self._control_json(entity, row) for row in self.tables[table_name].rows.values()]

    # ---- vendor error shapes -----------------------------------------------------------------

    def rate_limited_response(self, retry_after: float) -> Response:
        wait = max(1, int(math.ceil(retry_after)))
        response = Response(RATE_LIMIT_MESSAGE, status=429, mimetype="text/plain")
        response.headers["X-Rate-Limit-Limit"] = str(self.spike_limit or self.hourly_limit or HOURLY_LIMIT)
        response.headers["X-Rate-Limit-Remaining"] = "0"
        response.headers["X-Rate-Limit-Reset"] = str(int(time.time()) + wait)
        if self.send_retry_after:
            response.headers["Retry-After"] = str(wait)
        return response

    def error_response(self, status: int, message: str) -> Response:
        response = self._json({"error": message}, status)
        if status == 503:  # platform overload answers 503 with Retry-After
            response.headers["Retry-After"] = str(max(1, self.faults.retry_after))
        return response

    # ---- plumbing ------------------------------------------------------------------------------

    @staticmethod
    def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        response = Response(json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json")
        for key, value in (headers or {}).items():
            response.headers[key] = value
        return response

    def _rate_windows(self) -> list[tuple[str, int, float]]:
        windows: list[tuple[str, int, float]] = []
        if self.hourly_limit:
            windows.append(("hourly", int(self.hourly_limit), HOURLY_WINDOW))
        if self.spike_limit:
            windows.append(("spike", int(self.spike_limit), float(self.spike_window)))
        return windows

    def _bearer(self) -> str:
        return bearer_token(request.headers.get("Authorization", "")) or ""

    def _token_record(self, token: str) -> Any:
        if not token or token in self._revoked:
            return None
        return self.tokens.check(token)

    def _guard(self) -> Response | None:
        """Rate limit, bearer token and company header, in that order, for every REST call."""
        if not request.path.startswith("/rest/"):
            return None
        issued = self._token_record(self._bearer())
        key = issued.subject if issued else f"anonymous:{request.remote_addr}"
        state = self._windows.hit(key, self._rate_windows())
        g.rate_state = state
        if state is not None and not state[0]:
            _, limit, _, reset = state
            response = Response(RATE_LIMIT_MESSAGE, status=429, mimetype="text/plain")
            if self.send_retry_after:
                response.headers["Retry-After"] = str(max(1, reset - int(time.time())))
            return response
        if issued is None:
            response = self._json({"error": INVALID_TOKEN_MESSAGE}, 401)
            response.headers["WWW-Authenticate"] = (
                f'Bearer realm="Procore", error="invalid_token", error_description="{INVALID_TOKEN_MESSAGE}"'
            )
            return response
        g.token = issued
        if request.path in (f"{API}/me", f"{API}/companies"):
            return None
        header = request.headers.get("Procore-Company-Id", "").strip()
        if not header:
            return self._json({"error": MISSING_COMPANY_MESSAGE}, int(self.missing_company_status))
        if header != str(self.company_id):
            return self._json({"error": NOT_CONNECTED_MESSAGE}, 403)
        return None

    def _rate_headers(self, response: Response) -> Response:
        if not request.path.startswith("/rest/") or "X-Rate-Limit-Limit" in response.headers:
            return response
        state = getattr(g, "rate_state", None)
        if state is None and self._rate_windows():
            issued = self._token_record(self._bearer())
            key = issued.subject if issued else f"anonymous:{request.remote_addr}"
            state = self._windows.hit(key, self._rate_windows(), count=False)
        if state is not None:
            _, limit, remaining, reset = state
            response.headers["X-Rate-Limit-Limit"] = str(limit)
            response.headers["X-Rate-Limit-Remaining"] = str(remaining)
            response.headers["X-Rate-Limit-Reset"] = str(reset)
        return response

    def _body(self) -> dict[str, Any]:
        if request.mimetype not in ("application/json", "") and request.get_data():
            raise _error(406, f"Unsupported content type {request.mimetype}; send application/json")
        raw = request.get_data()
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise _error(400, "Malformed JSON in request body") from None
        if not isinstance(body, dict):
            raise _error(400, "Request body must be a JSON object")
        return body

    def _company_param(self, body: Mapping[str, Any] | None = None) -> int:
        raw = request.args.get("company_id") or (body or {}).get("company_id")
        if raw in (None, ""):
            raise _field_errors(400, {"company_id": ["is missing"]})
        try:
            company = int(raw)
        except (TypeError, ValueError):
            raise _field_errors(400, {"company_id": ["is invalid"]}) from None
        if company != self.company_id:
            raise _error(403, NOT_CONNECTED_MESSAGE)
        return company

    def _project_param(self, body: Mapping[str, Any] | None = None, path_value: int | None = None) -> int:
        raw = path_value if path_value is not None else request.args.get("project_id") or (body or {}).get("project_id")
        if raw in (None, ""):
            raise _field_errors(400, {"project_id": ["is missing"]})
        try:
            project_id = int(raw)
        except (TypeError, ValueError):
            raise _field_errors(400, {"project_id": ["is invalid"]}) from None
        if self.tables["projects"].live(project_id) is None:
            raise _error(404, f"Couldn't find Project with 'id'={project_id}")
        return project_id

    def _remember(self, status: int, body: Any) -> Response:
        token = request.headers.get("Idempotency-Token")
        if token:
            self._idempotent[(token, request.path)] = (status, body)
            while len(self._idempotent) > IDEMPOTENCY_KEEP:
                self._idempotent.popitem(last=False)
        return self._json(body, status)

    def _replayed(self) -> Response | None:
        """The stored answer for a repeated Idempotency-Token (the vendor's Ruby client sends it)."""
        token = request.headers.get("Idempotency-Token")
        if token and (token, request.path) in self._idempotent:
            status, body = self._idempotent[(token, request.path)]
            return self._json(body, status)
        return None

    # ---- listing -------------------------------------------------------------------------------

    def _query(self, table: _Table, scope: int | None, *, extra: tuple[str, Callable[[dict[str, Any]], bool]] | None = None) -> list[int]:
        """Ids matching `filters[...]` and `sort`, cached per table version."""
        filters: list[tuple[str, list[str]]] = []
        for key in sorted(request.args):
            match = re.fullmatch(r"filters\[(\w+)\](\[\])?", key)
            if match:
                filters.append((match.group(1), request.args.getlist(key)))
        sort = request.args.get("sort", "")
        cache_key = (table.name, scope, tuple((k, tuple(v)) for k, v in filters), sort, extra[0] if extra else None)
        hit = self._query_cache.get(cache_key)
        if hit and hit[0] == table.version:
            return hit[1]
        predicates: list[Callable[[dict[str, Any]], bool]] = [extra[1]] if extra else []
        include_deleted = None
        candidates: Iterable[int] = table.by_scope.get(scope, [])
        for name, values in filters:
            value = values[-1]
            if name == "include_deleted":
                if value not in ("only", "with"):
                    raise _field_errors(400, {"filters[include_deleted]": ["does not have a valid value"]})
                include_deleted = value
            elif name in ("updated_at", "created_at"):
                try:
                    low, high = _parse_range(value)
                except ValueError:
                    raise _field_errors(400, {f"filters[{name}]": ["is invalid; use an ISO-8601 range start...end"]}) from None
                column = "_" + name.split("_")[0]
                predicates.append(lambda row, c=column, lo=low, hi=high: (lo is None or row[c] >= lo) and (hi is None or row[c] <= hi))
            elif name == "id":
                try:
                    wanted = {int(v) for raw in values for v in raw.strip("[]").split(",") if v.strip()}
                except ValueError:
                    raise _field_errors(400, {"filters[id]": ["is invalid"]}) from None
                predicates.append(lambda row, w=wanted: row["id"] in w)
            elif name == "origin_id":
                origins = {v.strip() for raw in values for v in (raw[1:-1].split(",") if raw.startswith("[") and raw.endswith("]") else [raw])}
                predicates.append(lambda row, w=origins: row.get("origin_id") in w)
                if include_deleted is None and len(origins) <= 16:
                    candidates = sorted(i for i in (table.by_origin.get(o) for o in origins) if i is not None and table.rows[i]["_scope"] == scope)
            elif name in ("status", "invoice_number", "vendor_id", "parent_id", "direct_cost_type"):
                wanted_text = {v.lower() for v in values}
                predicates.append(lambda row, f=name, w=wanted_text: str(row.get(f)).lower() in w)
            elif name == "search":
                needle = value.lower()
                predicates.append(lambda row, n=needle: any(n in str(row.get(f) or "").lower() for f in ("name", "abbreviated_name", "origin_code", "trade_name")))
            # Other documented filters (trade_id, standard_cost_code_id, ...) match everything here.
        if include_deleted is not None and any(name == "origin_id" for name, _ in filters):
            candidates = table.by_scope.get(scope, [])
        ids: list[int] = []
        for rid in candidates:
            row = table.rows[rid]
            deleted = row["_deleted"] is not None
            if (include_deleted is None and deleted) or (include_deleted == "only" and not deleted):
                continue
            if all(p(row) for p in predicates):
                ids.append(rid)
        if sort:
            descending = sort.startswith("-")
            column = sort.lstrip("-").split(",")[0]
            column = {"updated_at": "_updated", "created_at": "_created"}.get(column, column)
            if column in ("id", "_updated", "_created", "name", "number", "code"):
                ids.sort(key=lambda i: (table.rows[i].get(column) is None, table.rows[i].get(column) or 0), reverse=descending)
        if len(self._query_cache) >= QUERY_CACHE_SIZE:
            self._query_cache.clear()
        self._query_cache[cache_key] = (table.version, ids)
        return ids

    def _page(self, ids: list[int]) -> tuple[list[int], dict[str, str]]:
        """One page of `ids` and Procore's Total / Per-Page / Link headers."""
        try:
            page = int(request.args.get("page", 1))
            per_page = int(request.args.get("per_page", self.default_per_page))
        except ValueError:
            raise _field_errors(400, {"page": ["is invalid"]}) from None
        page = max(1, page)
        per_page = min(max(1, per_page), int(self.max_per_page))
        total = len(ids)
        last = max(1, math.ceil(total / per_page))
        headers = {"Total": str(total), "Per-Page": str(per_page)}
        if total > per_page:
            args = [(k, v) for k in request.args for v in request.args.getlist(k) if k not in ("page", "per_page")]

            def url(number: int) -> str:
                query = urlencode(args + [("page", number), ("per_page", per_page)])
                return f"{request.host_url.rstrip('/')}{request.path}?{query}"

            links = []
            if page > 1:
                links.append(f'<{url(1)}>; rel="first"')
            if page > 2:
                links.append(f'<{url(min(page - 1, last))}>; rel="prev"')
            if page < last:
                links.append(f'<{url(page + 1)}>; rel="next"')
            links.append(f'<{url(last)}>; rel="last"')
            headers["Link"] = ", ".join(links)
        start = (page - 1) * per_page
        return ids[start:start + per_page], headers

    def _list(self, table_name: str, scope: int | None, render: Callable[[dict[str, Any]], dict[str, Any]],
              extra: tuple[str, Callable[[dict[str, Any]], bool]] | None = None) -> Response:
        with self.lock:
            table = self.tables[table_name]
            ids, headers = self._page(self._query(table, scope, extra=extra))
            body = [render(table.rows[i]) for i in ids]
        return self._json(body, 200, headers)

    # ---- rendering -----------------------------------------------------------------------------

    def _public(self, row: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"id": row["id"]}
        for name in fields:
            value = row.get(name)
            out[name] = _money(value) if isinstance(value, Decimal) else value
        out["created_at"] = _iso(row["_created"])
        out["updated_at"] = _iso(row["_updated"])
        return out

    def _company_json(self) -> dict[str, Any]:
        return {"id": self.company_id, "name": self.company_name, "is_active": True}

    def _vendor_json(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out = self._public(row, VENDOR_FIELDS)
        out.update({
            "synced_to_erp": bool(row.get("origin_id")), "company": {"id": self.company_id, "name": self.company_name},
            "primary_contact": None, "vendor_group": None, "business_register": None,
            "attachments": [], "erp_custom_fields": {},
        })
        return out

    def _project_json(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out = self._public(row, PROJECT_FIELDS)
        out.update({
            "display_name": f"{row.get('project_number') or ''} - {row['name']}".strip(" -"),
            "company": {"id": self.company_id, "name": self.company_name},
            "project_stage": {"id": 3, "name": "Course of Construction"},
        })
        return out

    def _cost_code_json(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out = self._public(row, COST_CODE_FIELDS)
        parent = self.tables["cost_codes"].rows.get(row["parent_id"]) if row.get("parent_id") else None
        out.pop("parent_id", None)
        out["parent"] = {"id": parent["id"]} if parent else None
        out["full_code"] = self._full_code(row)
        out["sortable_code"] = out["full_code"]
        out["biller"] = "Project"
        out["biller_id"] = row["_scope"]
        out["biller_type"] = "Project"
        out["budgeted"] = False
        out["line_item_types"] = []
        out["deleted_at"] = _iso(row["_deleted"])
        return out

    def _full_code(self, row: Mapping[str, Any]) -> str:
        parts = [str(row["code"])]
        seen = {row["id"]}
        parent_id = row.get("parent_id")
        while parent_id and parent_id not in seen:
            parent = self.tables["cost_codes"].rows.get(parent_id)
            if parent is None:
                break
            parts.append(str(parent["code"]))
            seen.add(parent_id)
            parent_id = parent.get("parent_id")
        return "-".join(reversed(parts))

    def _line_type_json(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {"id": row["id"], "code": row["code"], "name": row["name"], "base_type": row["base_type"],
                "origin_id": row.get("origin_id"), "origin_data": row.get("origin_data")}

    def _line_json(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out = self._public(row, LINE_FIELDS)
        amount = row.get("amount") or Decimal(0)
        out["total_amount"] = _money(amount)
        out["extended_amount"] = _money(amount)
        out["position"] = row.get("position")
        code = self.tables["cost_codes"].rows.get(row.get("cost_code_id")) if row.get("cost_code_id") else None
        out["cost_code"] = {"id": code["id"], "name": code["name"], "full_code": self._full_code(code)} if code else None
        kind = self.tables["line_item_types"].rows.get(row.get("line_item_type_id")) if row.get("line_item_type_id") else None
        out["line_item_type"] = self._line_type_json(kind) if kind else None
        out["wbs_code"] = None
        return out

    def _lines(self, table_name: str, holder_id: int) -> list[dict[str, Any]]:
        table = self.tables[table_name]
        return [table.rows[i] for i in table.by_scope.get(holder_id, []) if table.rows[i]["_deleted"] is None]

    def _total(self, table_name: str, holder_id: int) -> Decimal:
        return sum((row.get("amount") or Decimal(0) for row in self._lines(table_name, holder_id)), Decimal(0))

    def _po_json(self, row: Mapping[str, Any], *, extended: bool = True) -> dict[str, Any]:
        out = self._public(row, PO_FIELDS)
        vendor = self.tables["vendors"].rows.get(row.get("vendor_id")) if row.get("vendor_id") else None
        project = self.tables["projects"].rows[row["_scope"]]
        total = self._total("purchase_order_line_items", row["id"])
        out.pop("vendor_id", None)
        out.pop("assignee_id", None)
        out.update({
            "vendor": {"id": vendor["id"], "company": vendor["name"]} if vendor else None,
            "project": {"id": project["id"], "name": project["name"]},
            "assignee": {"id": row["assignee_id"]} if row.get("assignee_id") else None,
            "grand_total": _money(total), "revised_contract": _money(total),
            "pending_change_orders": "0.0", "approved_change_orders": "0.0",
            "draft_change_orders_amount": "0.0", "pending_revised_contract": _money(total),
            "total_payments": "0.0", "remaining_balance_outstanding": _money(total),
            "percentage_paid": "0.0", "deleted_at": _iso(row["_deleted"]),
        })
        if self.po_status_style == "snake" and out.get("status"):
            out["status"] = out["status"].lower().replace(" ", "_")
        if extended:
            out["line_items"] = [self._line_json(line) for line in self._lines("purchase_order_line_items", row["id"])]
        else:
            for name in ("bill_to_address", "ship_to_address", "ship_via", "origin_data", "letter_of_intent_date",
                         "approval_letter_date", "returned_date", "signed_contract_received_date"):
                out.pop(name, None)
        return out

    def _dc_json(self, row: Mapping[str, Any], *, with_lines: bool = False) -> dict[str, Any]:
        out = self._public(row, DC_FIELDS)
        vendor = self.tables["vendors"].rows.get(row.get("vendor_id")) if row.get("vendor_id") else None
        lines = self._lines("direct_cost_line_items", row["id"])
        out.update({
            "vendor": {"id": vendor["id"], "name": vendor["name"]} if vendor else None,
            "vendor_name": vendor["name"] if vendor else None,
            "employee": None, "grand_total": _money(sum((l.get("amount") or Decimal(0) for l in lines), Decimal(0))),
            "line_items_count": len(lines), "attachments": [], "attachments_count": 0,
            "currency_configuration": {"currency_iso_code": row.get("currency_iso_code") or "USD"},
            "deleted_at": _iso(row["_deleted"]),
        })
        if with_lines:
            out["line_items"] = [self._line_json(line) for line in lines]
        return out

    def _render(self, kind_name: str, row: Mapping[str, Any]) -> dict[str, Any]:
        if kind_name == "vendor":
            return self._vendor_json(row)
        if kind_name == "project":
            return self._project_json(row)
        if kind_name == "po":
            return self._po_json(row)
        if kind_name == "dc":
            return self._dc_json(row, with_lines=True)
        if kind_name == "cost_code":
            return self._cost_code_json(row)
        out = self._line_json(row)
        out["purchase_order_contract_id" if kind_name == "po_line" else "direct_cost_id"] = row["_scope"]
        return out

    def _control_json(self, entity: str, row: Mapping[str, Any]) -> dict[str, Any]:
        if entity == "line_item_types":
            return self._line_type_json(row)
        kind_name = CONTROL_ENTITIES[entity]
        out = self._render(kind_name, row)
        if kind_name in ("po", "dc", "cost_code"):
            out["project_id"] = row["_scope"]
        out.setdefault("deleted_at", _iso(row["_deleted"]))
        return out

    def _control_scope(self, kind_name: str, attrs: dict[str, Any]) -> int | None:
        if kind_name in ("po", "dc", "cost_code"):
            raw = attrs.pop("project_id", None)
            project_id = int(raw) if raw is not None else next(iter(self.tables["projects"].rows))
            if project_id not in self.tables["projects"].rows:
                raise ValueError(f"project {project_id} not found")
            return project_id
        if kind_name == "po_line":
            return int(attrs.pop("purchase_order_contract_id"))
        if kind_name == "dc_line":
            return int(attrs.pop("direct_cost_id"))
        return None

    # ---- writing -------------------------------------------------------------------------------

    def _write(self, kind_name: str, attrs: Mapping[str, Any], current: dict[str, Any] | None,
               scope: int | None) -> tuple[dict[str, Any] | None, dict[str, list[str]]]:
        """Validate and apply one create (current None) or update; nothing changes on error."""
        kind = KINDS[kind_name]
        table = self.tables[kind.table]
        errors: dict[str, list[str]] = {}
        clean: dict[str, Any] = {}
        for name, value in attrs.items():
            if name in ("id", "company_id", "project_id", "direct_cost_id", "purchase_order_contract_id"):
                continue
            coerce = kind.fields.get(name)
            if coerce is None:
                if self.strict_attributes:
                    errors.setdefault(name, []).append("is not a valid attribute")
                continue
            try:
                clean[name] = coerce(value)
            except ValueError as exc:
                errors.setdefault(name, []).append(str(exc))
        if kind_name == "dc" and current is not None:
            clean.pop("direct_cost_type", None)  # the type can only be set when the item is created
        merged = {**(current or {**{k: None for k in kind.fields}, **kind.defaults}), **clean}
        merged["_changed"] = set(clean)
        if not errors:
            kind.validate(self, merged, current, scope, errors)
        merged.pop("_changed", None)
        origin = merged.get("origin_id")
        if origin:
            holder = table.by_origin.get(origin)
            if holder is not None and (current is None or holder != current["id"]):
                errors.setdefault("origin_id", []).append("has already been taken")
        if errors:
            return None, errors
        now = self.clock.now_whole_seconds()
        if current is None:
            row = {**merged, "_created": now, "_updated": now, "_deleted": None}
            if kind.parent_table is not None and row.get("position") is None:
                row["position"] = len(table.by_scope.get(scope, [])) + 1
            table.insert(row, scope)
        else:
            old_origin = current.get("origin_id")
            current.update(merged)
            current["_updated"] = now
            table.reindex_origin(current, old_origin)
            table.version += 1
            row = current
        if kind.parent_table is not None:
            parent = self.tables[kind.parent_table].rows.get(scope)
            if parent is not None:
                parent["_updated"] = now
                self.tables[kind.parent_table].version += 1
        return row, {}

    def _create(self, kind_name: str, attrs: Mapping[str, Any], scope: int | None) -> Response:
        """The single-create path: 201, or 406 / 422 (409 or 422 for a duplicate origin_id)."""
        replay = self._replayed()
        if replay is not None:
            return replay
        row, errors = self._write(kind_name, attrs, None, scope)
        if errors:
            raise self._write_error(errors)
        assert row is not None
        return self._remember(201, self._render(kind_name, row))

    def _update(self, kind_name: str, attrs: Mapping[str, Any], current: dict[str, Any]) -> Response:
        row, errors = self._write(kind_name, attrs, current, current["_scope"])
        if errors:
            raise self._write_error(errors)
        assert row is not None
        return self._json(self._render(kind_name, row), 200)

    def _write_error(self, errors: Mapping[str, list[str]]) -> ApiError:
        unknown = sorted(k for k, msgs in errors.items() if "is not a valid attribute" in msgs)
        if unknown:
            return _error(406, f"Unknown attribute(s): {', '.join(unknown)}")
        if errors.get("origin_id") == ["has already been taken"] and len(errors) == 1:
            return _field_errors(int(self.duplicate_origin_status), errors)
        return _field_errors(422, errors)

    def _sync(self, kind_name: str, items: Any, scope_of: Callable[[dict[str, Any]], tuple[int | None, str | None]],
              lookup_scope: int | None = None, accept: Callable[[dict[str, Any]], bool] | None = None) -> Response:
        """The sync action: always 200 with `entities` and `errors`, id before origin_id."""
        if not isinstance(items, list):
            raise _field_errors(400, {"updates": ["is missing"]})
        if len(items) > SYNC_MAX_ITEMS:
            raise _field_errors(400, {"updates": [f"must contain at most {SYNC_MAX_ITEMS} items"]})
        table = self.tables[KINDS[kind_name].table]
        entities: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for item in items:
            if not isinstance(item, dict):
                failures.append({"errors": {"base": ["must be an object"]}})
                continue
            def visible(row: dict[str, Any] | None) -> dict[str, Any] | None:
                if row is None or (lookup_scope is not None and row["_scope"] != lookup_scope):
                    return None
                return row if accept is None or accept(row) else None

            current = None
            if item.get("id") is not None:
                current = visible(table.live(_safe_int(item["id"])))
                if current is None:
                    failures.append({**item, "errors": {"id": ["Entity with this ID not found"]}})
                    continue
            elif item.get("origin_id"):
                # Found elsewhere in the company: not this scope's record, so the create below
                # meets the company-wide uniqueness rule.
                current = visible(table.live(table.by_origin.get(str(item["origin_id"]))))
            if current is not None:
                scope, problem = current["_scope"], None
            else:
                scope, problem = scope_of(item)
            if problem:
                failures.append({**item, "errors": {problem.split(" ", 1)[0]: [problem.split(" ", 1)[1]]}})
                continue
            row, errors = self._write(kind_name, item, current, scope)
            if errors:
                failures.append({**item, "errors": errors})
            else:
                assert row is not None
                entities.append(self._render(kind_name, row))
        return self._json({"entities": entities, "errors": failures}, 200)

    def _hold_direct_costs(self, ids: Iterable[int]) -> set[int]:
        """Mark direct costs as being written; a second writer meanwhile gets 409."""
        wanted = {i for i in ids if i is not None}
        with self.lock:
            if wanted & self._busy_direct_costs:
                raise _error(409, "Direct Cost is being updated by another request. Try again later.")
            self._busy_direct_costs |= wanted
        if self.direct_cost_write_seconds:
            time.sleep(float(self.direct_cost_write_seconds))
        return wanted

    def _release_direct_costs(self, held: set[int]) -> None:
        with self.lock:
            self._busy_direct_costs -= held

    # ---- routes --------------------------------------------------------------------------------

    def register_vendor_routes(self, app: Flask) -> None:
        app.before_request(self._guard)
        app.after_request(self._rate_headers)

        @app.errorhandler(ApiError)
        def _api_error(exc: ApiError) -> Response:
            return self._json(exc.body, exc.status, exc.headers)

        @app.errorhandler(404)
        def _not_found(exc: Exception) -> Response:
            return self._json({"error": "Not Found"}, 404)

        @app.errorhandler(405)
        def _not_allowed(exc: Exception) -> Response:
            return self._json({"error": "Method Not Allowed"}, 405)

        self._register_oauth(app)
        self._register_settings(app)
        self._register_directory(app)
        self._register_commitments(app)
        self._register_direct_costs(app)

    def _register_settings(self, app: Flask) -> None:
        @app.get("/_sandbox/settings")
        def _settings_get() -> Response:
            return self._json({name: getattr(self, name) for name in self.SETTINGS})

        @app.post("/_sandbox/settings")
        def _settings_set() -> Response:
            body = request.get_json(silent=True) or {}
            unknown = sorted(set(body) - set(self.SETTINGS))
            if unknown:
                return self._json({"error": f"unknown settings: {', '.join(unknown)}"}, 400)
            with self.lock:
                for name, value in body.items():
                    setattr(self, name, value)
                self._windows.clear()
            return self._json({name: getattr(self, name) for name in self.SETTINGS})

    # -- OAuth

    def _register_oauth(self, app: Flask) -> None:
        def oauth_error(status: int, error: str, description: str) -> Response:
            return self._json({"error": error, "error_description": description}, status)

        def params() -> dict[str, str]:
            if request.mimetype == "application/json":
                body = request.get_json(silent=True) or {}
                return {k: str(v) for k, v in body.items() if v is not None}
            return {k: v for k, v in request.form.items()}

        def issue(client_id: str, with_refresh: bool, owner: int | None) -> Response:
            created = int(time.time())
            access, refresh = self.tokens.issue(
                client_id, self.token_ttl, with_refresh=with_refresh,
                extra={"created_at": created, "owner": owner},
            )
            self.stats.bump("tokens_issued")
            body: dict[str, Any] = {"access_token": access, "token_type": "bearer",
                                    "expires_in": self.token_ttl, "created_at": created}
            if refresh:
                body["refresh_token"] = refresh
                with self.lock:
                    self._pairs[access] = refresh
            return self._json(body, 200, {"Cache-Control": "no-store", "Pragma": "no-cache"})

        @app.post("/oauth/token")
        def _token() -> Response:
            form = params()
            grant = form.get("grant_type", "")
            if not grant:
                return oauth_error(400, "invalid_request", "The request is missing a required parameter: grant_type.")
            if grant not in ("client_credentials", "authorization_code", "refresh_token"):
                return oauth_error(400, "unsupported_grant_type", "The authorization grant type is not supported by the authorization server.")
            if form.get("client_id") != self.client_id or not secrets.compare_digest(
                form.get("client_secret", "").encode(), self.client_secret.encode()
            ):
                return oauth_error(401, "invalid_client", INVALID_CLIENT_DESCRIPTION)
            if grant == "client_credentials":
                return issue(self.client_id, False, self.user_id)
            if grant == "authorization_code":
                with self.lock:
                    entry = self._codes.pop(form.get("code", ""), None)
                if entry is None or entry[2] < time.time() or entry[0] != self.client_id or entry[1] != form.get("redirect_uri", ""):
                    return oauth_error(400, "invalid_grant", INVALID_GRANT_DESCRIPTION)
                return issue(self.client_id, True, self.user_id)
            refresh = form.get("refresh_token", "")
            record = self.tokens.use_refresh(refresh) if refresh else None
            if record is None or record.subject != self.client_id:
                return oauth_error(400, "invalid_grant", INVALID_REFRESH_DESCRIPTION)
            return issue(self.client_id, True, record.extra.get("owner"))

        @app.get("/oauth/authorize")
        def _authorize() -> Response:
            if request.args.get("client_id") != self.client_id:
                return oauth_error(401, "invalid_client", INVALID_CLIENT_DESCRIPTION)
            if request.args.get("response_type") != "code":
                return oauth_error(400, "unsupported_response_type", "The authorization server does not support this response type.")
            redirect_uri = request.args.get("redirect_uri", "")
            if not redirect_uri:
                return oauth_error(400, "invalid_request", "The request is missing a required parameter: redirect_uri.")
            code = secrets.token_urlsafe(24)
            with self.lock:
                self._codes[code] = (self.client_id, redirect_uri, time.time() + AUTH_CODE_TTL)
            if redirect_uri == OOB_REDIRECT:
                location = f"{request.host_url.rstrip('/')}/oauth/authorize/native?code={code}"
            else:
                query = {"code": code, **({"state": request.args["state"]} if "state" in request.args else {})}
                location = f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{urlencode(query)}"
            response = Response("", status=302)
            response.headers["Location"] = location
            return response

        @app.get("/oauth/authorize/native")
        def _native() -> Response:
            return self._json({"code": request.args.get("code", "")})

        @app.post("/oauth/revoke")
        def _oauth_revoke() -> Response:
            form = params()
            token = form.get("token", "")
            with self.lock:
                if self.tokens.use_refresh(token) is None and token:
                    self._revoked.add(token)
                    paired = self._pairs.pop(token, None)
                    if paired:
                        self.tokens.use_refresh(paired)
            return self._json({}, 200)

        @app.get("/oauth/token/info")
        def _token_info() -> Response:
            token = self._bearer()
            issued = self._token_record(token)
            if issued is None:
                return oauth_error(401, "invalid_token", INVALID_TOKEN_MESSAGE)
            return self._json({
                "resource_owner_id": issued.extra.get("owner"), "scope": [],
                "expires_in": max(0, int(issued.expires_at - time.time())),
                "application": {"uid": issued.subject}, "created_at": issued.extra.get("created_at"),
            })

    # -- company directory: me, companies, projects, vendors, cost codes, line item types

    def _register_directory(self, app: Flask) -> None:
        @app.get(f"{API}/me")
        def _me() -> Response:
            return self._json({"id": self.user_id, "login": "integration@sandbox.example.com", "name": "ERP Integration"})

        @app.get(f"{API}/companies")
        def _companies() -> Response:
            return self._json([self._company_json()], 200, {"Total": "1", "Per-Page": str(DEFAULT_PER_PAGE)})

        @app.get(f"{API}/projects")
        def _projects() -> Response:
            self._company_param()
            return self._list("projects", None, self._project_json)

        @app.get(f"{API}/projects/<int:project_id>")
        def _project(project_id: int) -> Response:
            self._company_param()
            with self.lock:
                row = self.tables["projects"].live(project_id)
                if row is None:
                    raise _error(404, f"Couldn't find Project with 'id'={project_id}")
                return self._json(self._project_json(row))

        def vendor_listing(active: bool) -> tuple[str, Callable[[dict[str, Any]], bool]] | None:
            if active and self.inactive_vendors_listed:
                return None
            return ("active" if active else "inactive", lambda row: bool(row.get("is_active") is not False) == active)

        @app.get(f"{API}/vendors")
        def _vendors() -> Response:
            self._company_param()
            return self._list("vendors", None, self._vendor_json, vendor_listing(True))

        @app.get(f"{API}/companies/<int:company_id>/vendors/inactive")
        def _inactive_vendors(company_id: int) -> Response:
            if company_id != self.company_id:
                raise _error(403, NOT_CONNECTED_MESSAGE)
            return self._list("vendors", None, self._vendor_json, vendor_listing(False))

        @app.post(f"{API}/vendors")
        def _vendor_create() -> Response:
            body = self._body()
            self._company_param(body)
            attrs = _wrapped(body, "vendor")
            with self.lock:
                return self._create("vendor", attrs, None)

        @app.get(f"{API}/vendors/<int:vendor_id>")
        def _vendor_show(vendor_id: int) -> Response:
            self._company_param()
            with self.lock:
                row = self.tables["vendors"].live(vendor_id)
                if row is None:
                    raise _error(404, f"Couldn't find Vendor with 'id'={vendor_id}")
                return self._json(self._vendor_json(row))

        @app.patch(f"{API}/vendors/<int:vendor_id>")
        def _vendor_update(vendor_id: int) -> Response:
            body = self._body()
            self._company_param(body)
            attrs = _wrapped(body, "vendor")
            with self.lock:
                row = self.tables["vendors"].live(vendor_id)
                if row is None:
                    raise _error(404, f"Couldn't find Vendor with 'id'={vendor_id}")
                return self._update("vendor", attrs, row)

        @app.patch(f"{API}/vendors/sync")
        def _vendor_sync() -> Response:
            body = self._body()
            self._company_param(body)
            with self.lock:
                return self._sync("vendor", body.get("updates"), lambda item: (None, None))

        @app.get(f"{API}/line_item_types")
        def _line_item_types() -> Response:
            with self.lock:
                if request.args.get("project_id"):
                    self._project_param()
                else:
                    self._company_param()
            return self._list("line_item_types", None, self._line_type_json)

        @app.get(f"{API}/cost_codes")
        def _cost_codes() -> Response:
            with self.lock:
                project_id = self._project_param()
            return self._list("cost_codes", project_id, self._cost_code_json)

        @app.get(f"{API}/cost_codes/<int:code_id>")
        def _cost_code(code_id: int) -> Response:
            with self.lock:
                project_id = self._project_param()
                row = self.tables["cost_codes"].live(code_id, project_id, scoped=True)
                if row is None:
                    raise _error(404, f"Couldn't find CostCode with 'id'={code_id}")
                return self._json(self._cost_code_json(row))

        @app.post(f"{API}/cost_codes")
        def _cost_code_create() -> Response:
            body = self._body()
            attrs = _wrapped(body, "cost_code")
            with self.lock:
                project_id = self._project_param(body)
                return self._create("cost_code", attrs, project_id)

        @app.patch(f"{API}/cost_codes/sync")
        def _cost_code_sync() -> Response:
            body = self._body()
            with self.lock:
                project_id = self._project_param(body)
                return self._sync("cost_code", body.get("updates"), lambda item: (project_id, None), project_id)

    # -- purchase order contracts and their line items

    def _register_commitments(self, app: Flask) -> None:
        def po_row(po_id: int, project_id: int) -> dict[str, Any]:
            row = self.tables["purchase_order_contracts"].live(po_id, project_id, scoped=True)
            if row is None:
                raise _error(404, f"Couldn't find PurchaseOrderContract with 'id'={po_id}")
            return row

        @app.get(f"{API}/purchase_order_contracts")
        def _pos() -> Response:
            with self.lock:
                project_id = self._project_param()
            extended = request.args.get("view") == "extended"
            return self._list("purchase_order_contracts", project_id, lambda row: self._po_json(row, extended=extended))

        @app.post(f"{API}/purchase_order_contracts")
        def _po_create() -> Response:
            body = self._body()
            attrs = _wrapped(body, "purchase_order_contract")
            with self.lock:
                project_id = self._project_param(body)
                return self._create("po", attrs, project_id)

        @app.get(f"{API}/purchase_order_contracts/<int:po_id>")
        def _po_show(po_id: int) -> Response:
            with self.lock:
                return self._json(self._po_json(po_row(po_id, self._project_param())))

        @app.patch(f"{API}/purchase_order_contracts/<int:po_id>")
        def _po_update(po_id: int) -> Response:
            body = self._body()
            attrs = _wrapped(body, "purchase_order_contract")
            with self.lock:
                return self._update("po", attrs, po_row(po_id, self._project_param(body)))

        @app.delete(f"{API}/purchase_order_contracts/<int:po_id>")
        def _po_delete(po_id: int) -> Response:
            with self.lock:
                self._soft_delete("purchase_order_contracts", po_row(po_id, self._project_param()))
            return Response(status=204)

        @app.patch(f"{API}/purchase_order_contracts/sync")
        def _po_sync() -> Response:
            body = self._body()
            with self.lock:
                project_id = self._project_param(body)
                return self._sync("po", body.get("updates"), lambda item: (project_id, None), project_id)

        @app.get(f"{API}/purchase_order_contracts/<int:po_id>/line_items")
        def _po_lines(po_id: int) -> Response:
            with self.lock:
                po = po_row(po_id, self._project_param())
            return self._list("purchase_order_line_items", po["id"], self._line_json)

        @app.post(f"{API}/purchase_order_contracts/<int:po_id>/line_items")
        def _po_line_create(po_id: int) -> Response:
            body = self._body()
            attrs = _wrapped(body, "line_item")
            with self.lock:
                po = po_row(po_id, self._project_param(body))
                return self._create("po_line", attrs, po["id"])

        @app.patch(f"{API}/purchase_order_contracts/<int:po_id>/line_items/sync")
        def _po_line_sync(po_id: int) -> Response:
            body = self._body()
            with self.lock:
                po = po_row(po_id, self._project_param(body))
                return self._sync("po_line", body.get("updates"), lambda item: (po["id"], None), po["id"])

    # -- direct costs and their line items

    def _register_direct_costs(self, app: Flask) -> None:
        base = f"{API}/projects/<int:project_id>/direct_costs"

        def dc_row(dc_id: int, project_id: int) -> dict[str, Any]:
            row = self.tables["direct_costs"].live(dc_id, project_id, scoped=True)
            if row is None:
                raise _error(404, f"Couldn't find DirectCostItem with 'id'={dc_id}")
            return row

        @contextlib.contextmanager
        def dc_held(project_id: int, dc_id: int) -> Iterator[None]:
            """The project and direct cost exist; the cost is held from other writers while the body runs."""
            with self.lock:
                self._project_param(path_value=project_id)
                dc_row(dc_id, project_id)
            held = self._hold_direct_costs([dc_id])
            try:
                yield
            finally:
                self._release_direct_costs(held)

        @app.get(base)
        def _dcs(project_id: int) -> Response:
            with self.lock:
                self._project_param(path_value=project_id)
            extended = request.args.get("view") == "extended"
            return self._list("direct_costs", project_id, lambda row: self._dc_json(row, with_lines=extended))

        @app.post(base)
        def _dc_create(project_id: int) -> Response:
            body = self._body()
            attrs = _wrapped(body, "item")
            with self.lock:
                self._project_param(path_value=project_id)
                return self._create("dc", attrs, project_id)

        @app.get(f"{base}/<int:dc_id>")
        def _dc_show(project_id: int, dc_id: int) -> Response:
            with self.lock:
                self._project_param(path_value=project_id)
                return self._json(self._dc_json(dc_row(dc_id, project_id), with_lines=True))

        @app.patch(f"{base}/<int:dc_id>")
        def _dc_update(project_id: int, dc_id: int) -> Response:
            body = self._body()
            attrs = _wrapped(body, "item")
            with dc_held(project_id, dc_id), self.lock:
                return self._update("dc", attrs, dc_row(dc_id, project_id))

        @app.delete(f"{base}/<int:dc_id>")
        def _dc_delete(project_id: int, dc_id: int) -> Response:
            with dc_held(project_id, dc_id), self.lock:
                self._soft_delete("direct_costs", dc_row(dc_id, project_id))
            return Response(status=204)

        @app.patch(f"{base}/sync")
        def _dc_sync(project_id: int) -> Response:
            body = self._body()
            with self.lock:
                self._project_param(path_value=project_id)
                return self._sync("dc", body.get("updates"), lambda item: (project_id, None), project_id)

        @app.get(f"{base}/<int:dc_id>/line_items")
        def _dc_lines(project_id: int, dc_id: int) -> Response:
            with self.lock:
                self._project_param(path_value=project_id)
                dc_row(dc_id, project_id)
            return self._list("direct_cost_line_items", dc_id, self._line_json)

        @app.post(f"{base}/<int:dc_id>/line_items")
        def _dc_line_create(project_id: int, dc_id: int) -> Response:
            body = self._body()
            attrs = _wrapped(body, "line_item")
            with dc_held(project_id, dc_id), self.lock:
                return self._create("dc_line", attrs, dc_row(dc_id, project_id)["id"])

        @app.patch(f"{base}/line_items/sync")
        def _dc_line_sync(project_id: int) -> Response:
            body = self._body()
            items = body.get("updates")
            lines = self.tables["direct_cost_line_items"]
            with self.lock:
                self._project_param(path_value=project_id)
                touched: list[int] = []
                for item in items if isinstance(items, list) else []:
                    if isinstance(item, dict):
                        line = lines.live(_safe_int(item.get("id"))) or lines.live(lines.by_origin.get(str(item.get("origin_id") or "")))
                        touched.append(line["_scope"] if line else _safe_int(item.get("direct_cost_id")))

            def scope_of(item: dict[str, Any]) -> tuple[int | None, str | None]:
                dc_id = _safe_int(item.get("direct_cost_id"))
                if dc_id is None:
                    return None, "direct_cost_id can't be blank"
                if self.tables["direct_costs"].live(dc_id, project_id, scoped=True) is None:
                    return None, "direct_cost_id is invalid"
                return dc_id, None

            def in_project(line: dict[str, Any]) -> bool:
                return self.tables["direct_costs"].live(line["_scope"], project_id, scoped=True) is not None

            held = self._hold_direct_costs(i for i in touched if i is not None)
            try:
                with self.lock:
                    return self._sync("dc_line", items, scope_of, accept=in_project)
            finally:
                self._release_direct_costs(held)

    def _soft_delete(self, table_name: str, row: dict[str, Any]) -> None:
        table = self.tables[table_name]
        now = self.clock.now_whole_seconds()
        row["_deleted"] = now
        row["_updated"] = now
        table.reindex_origin(row, row.get("origin_id"))
        table.version += 1


def _safe_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


# ---- business rules per resource -----------------------------------------------------------------


def _required(row: Mapping[str, Any], name: str, errors: dict[str, list[str]]) -> None:
    if row.get(name) is None or (isinstance(row.get(name), str) and not row[name].strip()):
        errors.setdefault(name, []).append("can't be blank")


def _validate_vendor(sb: ProcoreSandbox, row: dict[str, Any], current: dict[str, Any] | None, scope: int | None,
                     errors: dict[str, list[str]]) -> None:
    _required(row, "name", errors)
    if row.get("name") and len(row["name"]) > 255:
        errors.setdefault("name", []).append("is too long (maximum is 255 characters)")
    if row.get("country_code") and not re.fullmatch(r"[A-Za-z]{2}", row["country_code"]):
        errors.setdefault("country_code", []).append("is invalid")
    if row.get("email_address") and "@" not in row["email_address"]:
        errors.setdefault("email_address", []).append("is invalid")
    if row.get("parent_id") is not None and sb.tables["vendors"].live(row["parent_id"]) is None:
        errors.setdefault("parent_id", []).append("is invalid")
    if row.get("is_active") is None:
        row["is_active"] = True


def _validate_project(sb: ProcoreSandbox, row: dict[str, Any], current: dict[str, Any] | None, scope: int | None,
                      errors: dict[str, list[str]]) -> None:
    _required(row, "name", errors)
    if row.get("active") is None:
        row["active"] = True


def _validate_po(sb: ProcoreSandbox, row: dict[str, Any], current: dict[str, Any] | None, scope: int | None,
                 errors: dict[str, list[str]]) -> None:
    table = sb.tables["purchase_order_contracts"]
    if row.get("vendor_id") is not None and sb.tables["vendors"].live(row["vendor_id"]) is None:
        errors.setdefault("vendor_id", []).append("is invalid")
    siblings = [table.rows[i] for i in table.by_scope.get(scope, []) if table.rows[i]["_deleted"] is None]
    if not row.get("number"):
        if current is None:  # Procore numbers a commitment itself when none is given
            taken = {s["number"] for s in siblings}
            serial = len(table.by_scope.get(scope, [])) + 1
            while str(serial) in taken:
                serial += 1
            row["number"] = str(serial)
        else:
            errors.setdefault("number", []).append("can't be blank")
    elif any(s["number"] == row["number"] and (current is None or s["id"] != current["id"]) for s in siblings):
        errors.setdefault("number", []).append("has already been taken")
    if current is not None and current.get("status") in PO_LOCKED_FROM_DRAFT and row.get("status") == "Draft":
        errors.setdefault("status", []).append(f"cannot change from {current['status']} to Draft")
    percent = row.get("retainage_percent")
    if percent is not None and not (Decimal(0) <= percent <= Decimal(100)):
        errors.setdefault("retainage_percent", []).append("must be between 0 and 100")
    if row.get("status") is None:
        row["status"] = "Draft"


def _validate_line(sb: ProcoreSandbox, row: dict[str, Any], current: dict[str, Any] | None, scope: int | None,
                   errors: dict[str, list[str]], *, holder_table: str) -> None:
    holder = sb.tables[holder_table].rows.get(scope)
    project_id = holder["_scope"] if holder else None
    code_id = row.get("cost_code_id")
    if code_id is not None and sb.tables["cost_codes"].live(code_id, project_id, scoped=True) is None:
        errors.setdefault("cost_code_id", []).append("is invalid")
    if row.get("line_item_type_id") is not None and sb.tables["line_item_types"].live(row["line_item_type_id"]) is None:
        errors.setdefault("line_item_type_id", []).append("is invalid")
    if row.get("wbs_code_id") is not None:
        errors.setdefault("wbs_code_id", []).append("is invalid")  # no WBS codes are configured here
    if current is None and holder_table == "direct_costs" and row.get("wbs_code_id") is None:
        # Direct cost lines need a WBS code, or a cost code and a line item type.
        if code_id is None:
            errors.setdefault("cost_code_id", []).append("can't be blank")
        if row.get("line_item_type_id") is None:
            errors.setdefault("line_item_type_id", []).append("can't be blank")
    quantity, unit_cost = row.get("quantity"), row.get("unit_cost")
    changed = row.get("_changed", set())
    if "extended_type" not in changed:
        # Sending an amount alone makes a line manual; sending quantity and unit cost alone
        # makes it calculated; otherwise the line keeps what it was.
        priced = quantity is not None and unit_cost is not None
        if "amount" in changed and not {"quantity", "unit_cost"} & changed:
            row["extended_type"] = "manual"
        elif {"quantity", "unit_cost"} & changed and "amount" not in changed and priced:
            row["extended_type"] = "calculated"
        elif current is None:
            row["extended_type"] = "calculated" if priced and row.get("amount") is None else "manual"
    if row["extended_type"] == "calculated":
        if quantity is None or unit_cost is None:
            errors.setdefault("extended_type", []).append("calculated needs quantity and unit_cost")
        else:
            row["amount"] = (quantity * unit_cost).quantize(Decimal("0.01"))
    elif row.get("amount") is None:
        row["amount"] = Decimal(0)


def _validate_dc(sb: ProcoreSandbox, row: dict[str, Any], current: dict[str, Any] | None, scope: int | None,
                 errors: dict[str, list[str]]) -> None:
    kinds = DC_TYPES + (("subcontractor_invoice",) if sb.subcontractor_invoice_enabled else ())
    if current is None:
        _required(row, "direct_cost_type", errors)
        if row.get("direct_cost_type") and row["direct_cost_type"] not in kinds:
            errors.setdefault("direct_cost_type", []).append("is not included in the list")
    if row.get("direct_cost_type") in ("invoice", "subcontractor_invoice"):
        _required(row, "invoice_number", errors)
        _required(row, "vendor_id", errors)
    if row.get("vendor_id") is not None and sb.tables["vendors"].live(row["vendor_id"]) is None:
        errors.setdefault("vendor_id", []).append("is invalid")
    if row.get("invoice_number") and row.get("vendor_id") is not None:
        table = sb.tables["direct_costs"]
        for rid in table.by_scope.get(scope, []):
            other = table.rows[rid]
            if (other["_deleted"] is None and other["invoice_number"] == row["invoice_number"]
                    and other["vendor_id"] == row["vendor_id"] and (current is None or rid != current["id"])):
                errors.setdefault("invoice_number", []).append("has already been taken for this vendor")
                break
    if row.get("status") is None:
        row["status"] = "draft"


def _validate_cost_code(sb: ProcoreSandbox, row: dict[str, Any], current: dict[str, Any] | None, scope: int | None,
                        errors: dict[str, list[str]]) -> None:
    _required(row, "name", errors)
    _required(row, "code", errors)
    table = sb.tables["cost_codes"]
    parent_id = row.get("parent_id")
    if parent_id is not None and table.live(parent_id, scope, scoped=True) is None:
        errors.setdefault("parent_id", []).append("is invalid")
    for rid in table.by_scope.get(scope, []):
        other = table.rows[rid]
        if (other["_deleted"] is None and other["code"] == row.get("code") and other.get("parent_id") == parent_id
                and (current is None or rid != current["id"])):
            errors.setdefault("code", []).append("has already been taken")
            break


KINDS: dict[str, _Kind] = {
    "vendor": _Kind("vendors", VENDOR_FIELDS, {"is_active": True, "trade_ids": [], "standard_cost_code_ids": []}, _validate_vendor),
    "project": _Kind("projects", PROJECT_FIELDS, {"active": True, "country_code": "US"}, _validate_project),
    "po": _Kind("purchase_order_contracts", PO_FIELDS, {"executed": False, "private": False, "accounting_method": "amount"}, _validate_po),
    "po_line": _Kind("purchase_order_line_items", LINE_FIELDS, {},
                     lambda sb, row, cur, scope, errs: _validate_line(sb, row, cur, scope, errs, holder_table="purchase_order_contracts"),
                     parent_table="purchase_order_contracts"),
    "dc": _Kind("direct_costs", DC_FIELDS, {}, _validate_dc),
    "dc_line": _Kind("direct_cost_line_items", LINE_FIELDS, {},
                     lambda sb, row, cur, scope, errs: _validate_line(sb, row, cur, scope, errs, holder_table="direct_costs"),
                     parent_table="direct_costs"),
    "cost_code": _Kind("cost_codes", COST_CODE_FIELDS, {}, _validate_cost_code),
}

CONTROL_ENTITIES: dict[str, str] = {
    "vendors": "vendor",
    "projects": "project",
    "purchase_order_contracts": "po",
    "purchase_order_line_items": "po_line",
    "direct_costs": "dc",
    "direct_cost_line_items": "dc_line",
    "cost_codes": "cost_code",
}


# ---- seed vocabulary -------------------------------------------------------------------------------

VENDOR_PREFIXES = ["Acme", "Summit", "Keystone", "Pioneer", "Allied", "Granite", "Bluewater", "Redwood",
                   "Northstar", "Ironclad", "Cornerstone", "Precision", "Valley", "Metro", "Coastal", "Sterling"]
TRADES = ["Concrete", "Electrical", "Plumbing", "Drywall", "Steel", "Roofing", "Mechanical", "Glazing",
          "Excavation", "Masonry", "Painting", "Flooring", "Fire Protection", "Lumber", "HVAC", "Paving"]
SUFFIXES = ["Inc.", "LLC", "Co.", "Corp.", "Supply", "Contractors", "Services", ""]
STREETS = ["Industrial Pkwy", "Main Street", "Commerce Dr", "Harbor Blvd", "Quarry Rd", "Elm Avenue",
           "Airport Way", "Mill Street", "Depot Road", "Canal Street"]
CITIES = [("Austin", "TX"), ("Denver", "CO"), ("Phoenix", "AZ"), ("Raleigh", "NC"), ("Boise", "ID"),
          ("Tacoma", "WA"), ("Omaha", "NE"), ("Columbus", "OH"), ("Sacramento", "CA"), ("Tampa", "FL")]
PROJECT_NAMES = ["Riverside Medical Center", "Eastgate Elementary", "Harbor Logistics Hub", "Civic Plaza",
                 "Northpoint Offices", "Lakeside Apartments", "Airport Terminal C", "Westfield Library"]
MATERIALS = ["Ready-mix concrete 4000 psi", "Rebar #5 grade 60", "12/2 MC cable", "Copper pipe 3/4in",
             "5/8in type X drywall", "W12x26 beam", "TPO roofing membrane", "Ductwork fabrication",
             "Storefront glazing", "Trench excavation", "CMU block 8in", "Epoxy floor coating"]
DIVISIONS = [
    ("01", "General Requirements", [("100", "Supervision"), ("500", "Temporary Facilities")]),
    ("03", "Concrete", [("100", "Concrete Forming"), ("200", "Reinforcing"), ("300", "Cast-in-Place Concrete")]),
    ("05", "Metals", [("100", "Structural Steel"), ("500", "Metal Fabrications")]),
    ("09", "Finishes", [("200", "Plaster and Gypsum Board"), ("900", "Painting")]),
    ("22", "Plumbing", [("100", "Plumbing Piping"), ("400", "Plumbing Fixtures")]),
    ("26", "Electrical", [("100", "Electrical Distribution"), ("500", "Lighting")]),
]


def _near_duplicate(rng: random.Random, name: str) -> str:
    """A second spelling of a vendor name, as ERPs and directories drift apart."""
    variants = [
        name.upper(),
        name.replace(" Inc.", ", Inc").replace(" LLC", " L.L.C.").replace(" Co.", " Company"),
        name.replace(".", "").replace(",", ""),
        name.replace(" ", "  ", 1),
        name.replace("&", "and") + (" Inc" if not name.endswith(("Inc.", "LLC", "Co.", "Corp.")) else ""),
    ]
    different = [v for v in variants if v != name]
    return rng.choice(different) if different else name.upper()


def _near_duplicate_address(rng: random.Random, address: str | None) -> str | None:
    if not address:
        return address
    swaps = [("Street", "St."), ("Avenue", "Ave"), ("Road", "Rd."), ("Drive", "Dr"), ("Boulevard", "Blvd"),
             ("Pkwy", "Parkway"), ("Blvd", "Boulevard"), ("Dr", "Drive"), ("Rd", "Road")]
    for long, short in swaps:
        if address.endswith(long):
            return address[: -len(long)] + short
    return address.upper() if rng.random() < 0.5 else address
