"""Procore's facts and value forms: limits, error wording, errors, money and time, and the
writable attributes of each resource with the coercion (and message) each one takes."""

from __future__ import annotations

import calendar
import re
import time
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable, Mapping

Fields = dict[str, Callable[[Any], Any]]

API = "/rest/v1.0"
ACCESS_TOKEN_TTL = 5400  # Procore access tokens live 90 minutes
AUTH_CODE_TTL = 600  # authorization codes live 10 minutes
HOURLY_LIMIT = 3600  # documented default requests per hour per app (varies per app)
HOURLY_WINDOW = 3600.0
SPIKE_WINDOW = 10.0  # (Round 2) the spike limit is counted over 10 seconds
SPIKE_LIMIT = 25  # the rate-limiting guide's example: 25 requests per spike window (per app)
DEFAULT_PER_PAGE = 100  # (unconfirmed) page size when per_page is absent
MAX_PER_PAGE = 10_000  # the pagination guide's highest accepted per_page
SYNC_MAX_ITEMS = 1000  # sync actions take at most 1000 resources per call
IDEMPOTENCY_KEEP = 10_000  # remembered Idempotency-Token answers before the oldest go
QUERY_CACHE_SIZE = 256  # filtered id lists kept so paging a result set is O(page)
OOB_REDIRECT = "urn:ietf:wg:oauth:2.0:oob"

RATE_LIMIT_MESSAGE = "You have surpassed the max number of requests for an hour. Please wait until your limit resets."
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
DIRECT_COST_BUSY_MESSAGE = "Direct Cost is being updated by another request. Try again later."

PO_STATUSES = ("Draft", "Processing", "Submitted", "Partially Received", "Received", "Approved", "Closed")
PO_LOCKED_FROM_DRAFT = {"Approved", "Partially Received", "Received", "Closed"}
DC_TYPES = ("invoice", "expense", "payroll")
DC_STATUSES = ("draft", "pending", "revise_and_resubmit", "approved")
EXTENDED_TYPES = ("manual", "calculated")
ACCOUNTING_METHODS = ("amount", "unit")
# (Round 2) base_type is one of these; a type's code is company data.
LINE_ITEM_BASE_TYPES = ("equipment", "materials", "commitment", "owner_cost", "professional_services", "other")
DEFAULT_LINE_ITEM_TYPES = (
    ("L", "Labor", "professional_services"),
    ("M", "Materials", "materials"),
    ("E", "Equipment", "equipment"),
    ("S", "Subcontract", "commitment"),
    ("O", "Other", "other"),
)
# Where a write names its container rather than carrying it as an attribute.
SCOPE_KEYS = ("id", "company_id", "project_id", "direct_cost_id", "purchase_order_contract_id")


class ApiError(Exception):
    """A vendor error answer raised from deep inside a handler."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, dict(headers or {})


def error(status: int, message: str) -> ApiError:
    """Procore's generic error: a message under `error` (the 4xx body shape is unconfirmed)."""
    return ApiError(status, {"error": message})


def field_errors(status: int, errors: Mapping[str, list[str]]) -> ApiError:
    """Procore's validation error: a field map under `errors`."""
    return ApiError(status, {"errors": dict(errors)})


def not_found(model: str, rid: Any) -> ApiError:
    return error(404, f"Couldn't find {model} with 'id'={rid}")


# ---- money and time -------------------------------------------------------------------------


def iso(ts: int | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def money(value: Decimal | None) -> str | None:
    """Money as Procore sends it: a string such as "1000.0" or "12.5"."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return text if "." in text else text + ".0"


def parse_instant(text: str, *, end: bool) -> float:
    """Epoch seconds for an ISO-8601 datetime or a bare date (a date ends at 23:59:59)."""
    text = text.strip().strip('"').strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        seconds = calendar.timegm(date.fromisoformat(text).timetuple())
        return seconds + 86399.999 if end else float(seconds)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def parse_range(raw: str) -> tuple[float | None, float | None]:
    """`start...end` as epoch seconds; either side may be empty (open)."""
    text = raw.strip().strip('"')
    if "..." not in text:
        raise ValueError(raw)
    start, end = text.split("...", 1)
    return (parse_instant(start, end=False) if start.strip() else None,
            parse_instant(end, end=True) if end.strip() else None)


def safe_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


# ---- attribute coercion: what a create/update body may carry ---------------------------------


def _as_str(value: Any) -> str | None:
    if isinstance(value, (bool, dict, list)):
        raise ValueError("is invalid")
    return None if value is None else str(value)


def _as_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError("is invalid")


def _as_int(value: Any) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    raise ValueError("is invalid")


def _as_number(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value)) if not isinstance(value, bool) else Decimal("NaN")
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise ValueError("is not a number")
    return number


def _as_date(value: Any) -> str | None:
    try:
        return None if value is None or value == "" else date.fromisoformat(str(value)[:10]).isoformat()
    except ValueError:
        raise ValueError("is not a valid date") from None


def _as_int_list(value: Any) -> list[int]:
    if value is not None and not isinstance(value, list):
        raise ValueError("is invalid")
    return [int(_as_int(v) or 0) for v in value or []]


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


def _fields(spec: str, **enums: Callable[[Any], Any]) -> Fields:
    """A resource's writable attributes in order: `name` is text, `name:X` is coerced as X
    (B bool, I int, N number, D date, L list of ints, E one of `enums[name]`)."""
    kinds = {"S": _as_str, "B": _as_bool, "I": _as_int, "N": _as_number, "D": _as_date, "L": _as_int_list}
    named = (word.partition(":") for word in spec.split())
    return {name: enums[name] if kind == "E" else kinds[kind or "S"] for name, _, kind in named}


VENDOR_FIELDS = _fields("""
    name abbreviated_name origin_id origin_code origin_data address city state_code zip country_code
    business_phone mobile_phone fax_number email_address website primary_contact_id:I is_active:B
    authorized_bidder:B prequalified:B labor_union union_member:B non_union_prevailing_wage:B license_number
    notes vendor_group_id:I parent_id:I trade_name trade_ids:L standard_cost_code_ids:L bidding""")
PROJECT_FIELDS = _fields("""
    name project_number description address city state_code zip country_code phone active:B origin_id
    origin_data origin_code estimated_start_date:D estimated_completion_date:D square_feet:I""")
PO_FIELDS = _fields("""
    number title vendor_id:I description status:E executed:B execution_date:D contract_date:D delivery_date:D
    issued_on_date:D letter_of_intent_date:D approval_letter_date:D returned_date:D
    signed_contract_received_date:D payment_terms retainage_percent:N accounting_method:E bill_to_address
    ship_to_address ship_via private:B assignee_id:I origin_id origin_code origin_data currency_iso_code
    currency_exchange_rate:N""", status=_enum(PO_STATUSES), accounting_method=_enum(ACCOUNTING_METHODS))
LINE_FIELDS = _fields("""
    amount:N cost_code_id:I wbs_code_id:I line_item_type_id:I description quantity:N unit_cost:N uom
    extended_type:E tax_code_id:I origin_id origin_data""", extended_type=_enum(EXTENDED_TYPES))
DC_FIELDS = _fields("""
    direct_cost_type invoice_number vendor_id:I employee_id:I direct_cost_date:D received_date:D
    payment_date:D status:E terms description origin_id origin_data currency_iso_code
    currency_exchange_rate:N""", status=_enum(DC_STATUSES))
LINE_ITEM_TYPE_FIELDS = _fields("code name base_type:E origin_id origin_data", base_type=_enum(LINE_ITEM_BASE_TYPES))
COST_CODE_FIELDS = _fields("name code parent_id:I standard_cost_code_id:I origin_id origin_data position:I")
