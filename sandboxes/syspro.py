"""A faithful simulator of SYSPRO e.net Solutions REST (the WCF host) and the read-only OData.

What it reproduces, from the vendor notes (`vendor-apis/syspro.md`):

- Every call is a `GET` under `/SYSPROWCFService/Rest` with case-insensitive paths and its
  parameters in the query string (XML documents URL-encoded). Answers are HTTP 200 with
  `Content-Type: application/octet-stream`, even for business errors.
- `Logon` answers a 34-hex-character UserId plus two spaces; every later call passes it as
  `UserId`. Sessions hold a licence seat until `Logoff` (answer `0`) or idle expiry. Session
  and logon failures are plain text starting `ERROR:`.
- Business objects: COMFND (generic table query over the in-memory tables) and INVQRY on
  `Query/Query`; APSTIN (AP invoices), PORTOI (purchase orders) and INVTMA (inventory
  adjustments) on `Transaction/Post`; APSSSP (supplier maintenance) on `Setup/Add|Update|Delete`.
  Output XML carries the Windows-1252 declaration, SYSPRO's root attributes, lowercase roots
  for transaction/setup output, per-field `Value`/`ErrorNumber`/`ErrorDescription` blocks and
  a zero-padded `StatusOfItems`. `ValidateOnly` and `ApplyIfEntireDocumentValid` are honoured.
- The SYSPRO 8 OData service (read-only, basic auth) at `/SYSPROOData/{CompanyId}/{Table}` with
  `$filter`, `$orderby`, `$top`, `$skip`, `$select`, `$count` and `@odata.nextLink`.

Facts the notes mark unconfirmed are marked "(unconfirmed)" where they are decided: licence
seats, idle expiry, COMFND's default row count, OData page size and a rate limit are settings
(`SysproSettings`, changeable at run time); the wording of session and seat errors, error
numbers, the change-date columns, the OData URL layout and a 429 from the host are named here.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable
from xml.sax.saxutils import escape

from flask import Flask, Response, jsonify, request
from pydantic import BaseModel, Field

from sandboxes.base import RateWindow, Sandbox, SandboxOptions, Stats
from sandboxes.kit import odata
from sandboxes.kit.clock import MILLISECOND_US, Clock
from sandboxes.kit.routes import model_route
from sandboxes.kit.tokens import TokenStore

REST_BASE = "/SYSPROWCFService/Rest"
ODATA_SITE = "/SYSPROOData"  # (unconfirmed) IIS site name of the OData service
XML_DECLARATION = '<?xml version="1.0" encoding="Windows-1252"?>'
ROOT_ATTRIBUTES = (
    "Language='05' Language2='EN' CssStyle='' DecFormat='1' DateFormat='01' Role='01' "
    "Version='8.0.000' OperatorPrimaryRole='   '"
)
SEED_EPOCH = datetime(2025, 1, 6, 7, 0, 0)  # seeded records changed within the 120 days after this
SEED_SPREAD_SECONDS = 120 * 86400

# Canonical spellings of the REST paths; requests in any letter case are folded onto these.
REST_PATHS = (
    "Logon", "Logoff", "GetLogonProfile", "GetVersion", "Query/Query", "Query/Browse", "Query/Fetch",
    "Transaction/Post", "Transaction/Build", "Setup/Add", "Setup/Update", "Setup/Delete",
)


class SysproSettings(BaseModel):
    """Behaviour a real site varies; readable and changeable at `/_sandbox/syspro/settings`."""

    seats: int = Field(10, ge=1)  # e.net licences; (unconfirmed) sites buy a handful
    session_idle_seconds: float = Field(1200, gt=0)  # (unconfirmed) idle expiry, 20 min
    comfnd_default_rows: int = Field(100, ge=1)  # (unconfirmed) rows when ReturnRows is absent
    odata_max_page_size: int = Field(1000, ge=1)  # (unconfirmed) server-driven paging size
    allow_negative_stock: bool = False
    rate_limit: float | None = None  # calls per second; SYSPRO documents no limit
    unlicensed_objects: list[str] = Field(default_factory=list)  # business objects this site lacks (ERROR text)
    host_version: str = "8.0.0.31"  # what GetVersion answers (a recorded SYSPRO 7 host said 7.0.0.6)


# ------------------------------------------------------------------------------------------
# Tables: typed columns, a primary-key dict, an index on the first key column and a sorted
# index on the change column, so keyed look-ups and keyset pages never scan the table.
# ------------------------------------------------------------------------------------------

STR, INT, DATE, DATETIME = "str", "int", "date", "datetime"


def dec(scale: int) -> str:
    return f"dec{scale}"


def _norm(value: Any) -> Any:
    """SQL Server's default collation: strings compare case-insensitively, trailing blanks ignored."""
    if isinstance(value, str):
        return value.rstrip().casefold()
    return value


def parse_datetime_text(text: str) -> datetime:
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1]
    if len(text) == 10:
        return datetime.strptime(text, "%Y-%m-%d")
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def coerce(kind: str, value: Any) -> Any:
    """A stored value of column type `kind` from text or JSON; ValueError when it does not fit."""
    if value is None:
        return None
    if kind == STR:
        return str(value)
    if kind == INT:
        if isinstance(value, str) and not value.strip():
            return None
        return int(Decimal(str(value).strip()))
    if kind.startswith("dec"):
        if isinstance(value, str) and not value.strip():
            return None
        try:
            return Decimal(str(value).strip()).quantize(Decimal(1).scaleb(-int(kind[3:])))
        except InvalidOperation:
            raise ValueError(f"not a number: {value!r}") from None
    if kind == DATE:
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        if not str(value).strip():
            return None
        return parse_datetime_text(str(value)).date()
    if kind == DATETIME:
        if isinstance(value, datetime):
            return value.replace(tzinfo=None)
        if not str(value).strip():
            return None
        return parse_datetime_text(str(value))
    raise ValueError(f"unknown column type {kind}")


def render(value: Any) -> str:
    """Column value as SYSPRO writes it in XML."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def to_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


@dataclasses.dataclass
class Table:
    name: str
    columns: dict[str, str]
    key: tuple[str, ...]
    change: str | None = None
    rows: dict[tuple[Any, ...], dict[str, Any]] = dataclasses.field(default_factory=dict)
    by_first_key: dict[Any, set[tuple[Any, ...]]] = dataclasses.field(default_factory=dict)
    change_index: list[tuple[datetime, tuple[Any, ...]]] = dataclasses.field(default_factory=list)

    def pk(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(_norm(row.get(column)) for column in self.key)

    def _index_entry(self, pk: tuple[Any, ...], row: dict[str, Any]) -> tuple[datetime, tuple[Any, ...]]:
        return (row.get(self.change) or datetime.min, pk)  # type: ignore[arg-type]

    def get(self, *key: Any) -> dict[str, Any] | None:
        return self.rows.get(tuple(_norm(k) for k in key))

    def upsert(self, row: dict[str, Any]) -> dict[str, Any]:
        pk = self.pk(row)
        old = self.rows.get(pk)
        if old is not None and self.change:
            self._unindex_change(pk, old)
        self.rows[pk] = row
        self.by_first_key.setdefault(pk[0], set()).add(pk)
        if self.change:
            bisect.insort(self.change_index, self._index_entry(pk, row))
        return row

    def delete(self, *key: Any) -> None:
        pk = tuple(_norm(k) for k in key)
        old = self.rows.pop(pk, None)
        if old is None:
            return
        self.by_first_key.get(pk[0], set()).discard(pk)
        if self.change:
            self._unindex_change(pk, old)

    def _unindex_change(self, pk: tuple[Any, ...], row: dict[str, Any]) -> None:
        entry = self._index_entry(pk, row)
        at = bisect.bisect_left(self.change_index, entry)
        if at < len(self.change_index) and self.change_index[at] == entry:
            del self.change_index[at]

    def bulk_load(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            pk = self.pk(row)
            self.rows[pk] = row
            self.by_first_key.setdefault(pk[0], set()).add(pk)
        if self.change:
            self.change_index = sorted(self._index_entry(pk, row) for pk, row in self.rows.items())

    def clear(self) -> None:
        self.rows.clear()
        self.by_first_key.clear()
        self.change_index.clear()


# ------------------------------------------------------------------------------------------
# Filters: one small AST shared by COMFND `Where` and OData `$filter`, compiled to a predicate
# and inspected by the planner for keyed look-ups and change-index lower bounds.
# ------------------------------------------------------------------------------------------


class QueryError(ValueError):
    """A malformed query; the REST host answers it as `ERROR: ...` text, OData as a 400."""


Node = tuple  # ("cmp", column, op, value) | ("and", [nodes]) | ("or", [nodes]) | ("true",)
OPERATORS = {"EQ", "NE", "LT", "LE", "GT", "GE", "LIKE"}


def compile_node(node: Node) -> Callable[[dict[str, Any]], bool]:
    kind = node[0]
    if kind == "true":
        return lambda row: True
    if kind in ("and", "or"):
        parts = [compile_node(child) for child in node[1]]
        if kind == "and":
            return lambda row: all(part(row) for part in parts)
        return lambda row: any(part(row) for part in parts)
    _, column, op, value = node
    if op == "LIKE":
        pattern = re.compile(
            "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in str(value).rstrip()),
            re.IGNORECASE | re.DOTALL,
        )
        return lambda row: row.get(column) is not None and bool(pattern.fullmatch(str(row[column]).rstrip()))
    target = _norm(value)

    def compare(row: dict[str, Any]) -> bool:
        current = row.get(column)
        if current is None or target is None:
            if op == "EQ":
                return current is None and target is None
            if op == "NE":
                return (current is None) != (target is None)
            return False
        current = _norm(current)
        if isinstance(current, date) and not isinstance(current, datetime) and isinstance(target, datetime):
            current = datetime.combine(current, datetime.min.time())
        if op == "EQ":
            return current == target
        if op == "NE":
            return current != target
        if op == "LT":
            return current < target
        if op == "LE":
            return current <= target
        if op == "GT":
            return current > target
        return current >= target

    return compare


def _conjuncts(node: Node) -> list[Node]:
    return list(node[1]) if node[0] == "and" else [node]


def pinned_values(node: Node, column: str) -> set[Any] | None:
    """Values `column` must take for `node` to hold (EQ conjuncts, OR of such); None if open."""
    if node[0] == "or":
        found: set[Any] = set()
        for child in node[1]:
            values = pinned_values(child, column)
            if values is None:
                return None
            found |= values
        return found
    for part in _conjuncts(node):
        if part[0] == "cmp" and part[1] == column and part[2] == "EQ" and part[3] is not None:
            return {_norm(part[3])}
        if part[0] == "or":
            values = pinned_values(part, column)
            if values is not None:
                return values
    return None


def lower_bound(node: Node, column: str) -> datetime | None:
    """The smallest `column` value any matching row can have, when the filter implies one."""
    if node[0] == "or":
        bounds = [lower_bound(child, column) for child in node[1]]
        if not bounds or any(b is None for b in bounds):
            return None
        return min(bounds)  # type: ignore[type-var]
    best: datetime | None = None
    for part in _conjuncts(node):
        candidate: datetime | None = None
        if part[0] == "cmp" and part[1] == column and part[2] in ("EQ", "GE", "GT") and isinstance(part[3], datetime):
            candidate = part[3]
        elif part[0] == "or":
            candidate = lower_bound(part, column)
        if candidate is not None and (best is None or candidate > best):
            best = candidate
    return best


def run_query(
    table: Table,
    node: Node,
    order_by: list[tuple[str, bool]],
    *,
    limit: int | None,
    skip: int = 0,
) -> tuple[list[dict[str, Any]], int | None]:
    """Rows matching `node` in `order_by` order (column, descending); total when cheap to know."""
    predicate = compile_node(node)
    wanted = None if limit is None else skip + limit
    # Keyed look-up: every key column pinned, or the first one pinned (index bucket).
    first = pinned_values(node, table.key[0])
    if first is not None:
        candidates: list[dict[str, Any]] = []
        for value in first:
            for pk in table.by_first_key.get(value, ()):
                row = table.rows[pk]
                if predicate(row):
                    candidates.append(row)
        rows = _ordered(candidates, order_by)
        return rows[skip:wanted], len(rows)
    # Keyset page: ordered by (change, key...) ascending, walk the change index from its bound.
    natural = [(table.change, False)] + [(k, False) for k in table.key]
    if table.change and order_by and order_by == natural[: len(order_by)] and len(order_by) >= 1:
        bound = lower_bound(node, table.change)
        start = 0 if bound is None else bisect.bisect_left(table.change_index, (bound, ()))
        out: list[dict[str, Any]] = []
        matched = 0
        for _, pk in table.change_index[start:]:
            row = table.rows[pk]
            if predicate(row):
                matched += 1
                if matched > skip:
                    out.append(row)
                if wanted is not None and matched >= wanted:
                    break
        return out, None
    matching = [row for row in table.rows.values() if predicate(row)]
    rows = _ordered(matching, order_by or [(k, False) for k in table.key])
    return rows[skip:wanted], len(rows)


def _ordered(rows: list[dict[str, Any]], order_by: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    for column, descending in reversed(order_by):
        rows.sort(key=lambda row: _none_first(row.get(column)), reverse=descending)
    return rows


def _none_first(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    value = _norm(value)
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, datetime.min.time())
    return (1, value)


# ---- COMFND `Where` ------------------------------------------------------------------------


def parse_comfnd_where(where: ET.Element | None, table: Table) -> Node:
    """COMFND expressions: `AndOr` joins to the previous one, brackets may nest ('((' / '))')."""
    if where is None:
        return ("true",)
    tokens: list[Any] = []
    for index, expression in enumerate(where.findall("Expression")):
        and_or = (expression.findtext("AndOr") or "").strip().upper()
        if index:
            tokens.append(and_or or "AND")
        tokens.extend("(" for _ in (expression.findtext("OpenBracket") or "").strip())
        column = (expression.findtext("Column") or "").strip()
        condition = (expression.findtext("Condition") or "EQ").strip().upper()
        if column not in table.columns:
            raise QueryError(f"Column '{column}' not found in table '{table.name}'")
        if condition not in OPERATORS:
            raise QueryError(f"Invalid condition '{condition}'")
        raw = expression.findtext("Value") or ""
        try:
            value = raw if condition == "LIKE" else coerce(table.columns[column], raw)
        except ValueError:
            raise QueryError(f"Invalid value '{raw}' for column '{column}'") from None
        tokens.append(("cmp", column, condition, value))
        tokens.extend(")" for _ in (expression.findtext("CloseBracket") or "").strip())
    if not tokens:
        return ("true",)
    parser = _BoolParser(tokens)
    node = parser.parse()
    return node


class _BoolParser:
    """Precedence: AND binds tighter than OR, brackets group."""

    def __init__(self, tokens: list[Any]) -> None:
        self.tokens = tokens
        self.at = 0

    def parse(self) -> Node:
        node = self._or()
        if self.at != len(self.tokens):
            raise QueryError("Unbalanced brackets in query")
        return node

    def _peek(self) -> Any:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _or(self) -> Node:
        parts = [self._and()]
        while self._peek() == "OR":
            self.at += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else ("or", parts)

    def _and(self) -> Node:
        parts = [self._atom()]
        while self._peek() == "AND":
            self.at += 1
            parts.append(self._atom())
        return parts[0] if len(parts) == 1 else ("and", parts)

    def _atom(self) -> Node:
        token = self._peek()
        if token == "(":
            self.at += 1
            node = self._or()
            if self._peek() != ")":
                raise QueryError("Unbalanced brackets in query")
            self.at += 1
            return node
        if isinstance(token, tuple):
            self.at += 1
            return token
        raise QueryError("Malformed query expression")


# ---- OData `$filter` ---------------------------------------------------------------------

_ODATA_OPS = {"eq": "EQ", "ne": "NE", "lt": "LT", "le": "LE", "gt": "GT", "ge": "GE"}
# SYSPRO's OData service: `column op literal` joined by and/or; plain ISO dates, no functions.
DIALECT = odata.Dialect(
    bare_datetime=r"\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?|\d{4}-\d{2}-\d{2}",
    parse_datetime=parse_datetime_text,
    decimal_numbers=True,
    booleans=False,
    negation=False,
)


FILTER_MESSAGES = {
    "unexpected_text": "Syntax error at position {position} in '{filter}'",
    "bad_literal": "Invalid date/time literal '{literal}'",
    "expected": "Unbalanced brackets in query",
    "unexpected_end": "Malformed query expression",
    "unexpected_token": "Malformed query expression",
}


def parse_odata_filter(text: str, table: Table) -> Node:
    """The filter as the same tree a COMFND `Where` gives, so one planner serves both."""
    if not text.strip():
        return ("true",)
    try:
        return _as_where(odata.parse_filter(text, DIALECT), table)
    except odata.FilterSyntaxError as exc:
        raise QueryError(exc.message(FILTER_MESSAGES, filter=text.strip())) from None


def _as_where(node: odata.Node, table: Table) -> Node:
    tag = node[0]
    if tag in ("and", "or"):
        parts: list[Node] = []
        for child in (_as_where(node[1], table), _as_where(node[2], table)):
            parts.extend(child[1] if child[0] == tag else [child])
        return (tag, parts)
    if tag == "cmp" and node[2][0] == "field" and node[3][0] == "lit":
        column, literal = "/".join(node[2][1]), node[3][1]
        if column not in table.columns:
            raise QueryError(f"Could not find a property named '{column}' on type '{table.name}'")
        try:
            value = coerce(table.columns[column], literal) if literal is not None else None
        except (ValueError, TypeError):
            raise QueryError(f"Invalid literal for '{column}'") from None
        return ("cmp", column, _ODATA_OPS[node[1]], value)
    left = node[2] if tag == "cmp" else node
    if left[0] == "field":
        raise QueryError(f"Expected a comparison after '{'/'.join(left[1])}'")
    raise QueryError("Malformed query expression")


# ------------------------------------------------------------------------------------------
# Sessions: e.net logons, each holding a licence seat until Logoff or idle expiry.
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class EnetSession:
    user_id: str
    operator: str
    company: str
    created: float
    last_used: float
    expired: bool = False


class SessionStore(TokenStore):
    """Logged-on e.net sessions. `expire_all`/`revoke_all` serve the shared control API."""

    def __init__(self, settings: Callable[[], SysproSettings], stats: Callable[[], Stats]) -> None:
        super().__init__()
        self._settings = settings
        self._stats = stats
        self._sessions: dict[str, EnetSession] = {}
        self._guard = threading.Lock()  # the base class's lock is not re-entrant; keep ours apart
        self.peak_open = 0

    def _live(self, user_id: str, now: float) -> EnetSession | None:
        session = self._sessions.get(user_id.strip().upper())
        if session is None:
            return None
        if session.expired or now - session.last_used > self._settings().session_idle_seconds:
            del self._sessions[session.user_id]
            self._stats().bump("sessions_expired")
            return None
        return session

    def _purge_idle(self, now: float) -> None:
        for user_id in list(self._sessions):
            self._live(user_id, now)

    def open(self, operator: str, company: str) -> str | None:
        """A new UserId, or None when every licence seat is taken."""
        now = time.time()
        with self._guard:
            self._purge_idle(now)
            if len(self._sessions) >= self._settings().seats:
                return None
            user_id = secrets.token_hex(17).upper()  # 34 uppercase hex characters
            self._sessions[user_id] = EnetSession(user_id, operator, company, now, now)
            self.peak_open = max(self.peak_open, len(self._sessions))
            return user_id

    def use(self, user_id: str) -> EnetSession | None:
        """The live session for `user_id` (trailing blanks allowed), refreshing its idle clock."""
        now = time.time()
        with self._guard:
            session = self._live(user_id, now)
            if session is not None:
                session.last_used = now
            return session

    def close(self, user_id: str) -> bool:
        with self._guard:
            session = self._live(user_id, time.time())
            if session is None:
                return False
            del self._sessions[session.user_id]
            return True

    def open_count(self) -> int:
        with self._guard:
            self._purge_idle(time.time())
            return len(self._sessions)

    def describe(self) -> list[dict[str, Any]]:
        now = time.time()
        with self._guard:
            return [
                {"user_id_prefix": s.user_id[:4], "operator": s.operator, "company": s.company,
                 "idle_seconds": round(now - s.last_used, 1), "expired": s.expired}
                for s in self._sessions.values()
            ]

    def expire_all(self) -> None:
        with self._guard:
            for session in self._sessions.values():
                session.expired = True
        super().expire_all()

    def revoke_all(self) -> None:
        with self._guard:
            self._sessions.clear()
            self.peak_open = 0
        super().revoke_all()


class SysproStats(Stats):
    """Request statistics plus live session gauges (open, peak) read at snapshot time."""

    def __init__(self, gauges: Callable[[], dict[str, int]]) -> None:
        self._gauges = gauges
        super().__init__()

    def snapshot(self) -> dict[str, Any]:
        snapshot = super().snapshot()
        for name in ("logons", "logoffs", "logon_failures", "seat_refusals", "sessions_expired", "stale_session_calls"):
            snapshot.setdefault(name, 0)
        snapshot.update(self._gauges())
        return snapshot




class _CaseFoldPaths:
    """WSGI middleware: the WCF host matches paths case-insensitively (`/logon` works)."""

    def __init__(self, app: Callable[..., Any], canonical: dict[str, str]) -> None:
        self.app = app
        self.canonical = canonical

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        folded = self.canonical.get(path.rstrip("/").lower())
        if folded is not None:
            environ["PATH_INFO"] = folded
        return self.app(environ, start_response)


# ------------------------------------------------------------------------------------------
# Business-object output helpers
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FieldError:
    field: str
    value: str
    number: int
    description: str

    def xml(self, lowercase: bool = False) -> str:
        tag = self.field.lower() if lowercase else self.field
        return (
            f"<{tag}><Value>{escape(self.value)}</Value><ErrorNumber>{self.number}</ErrorNumber>"
            f"<ErrorDescription>{escape(self.description)}</ErrorDescription></{tag}>"
        )


class BusinessError(Exception):
    """A failure the REST host reports as `ERROR: ...` text (exceptions inside e.net)."""


def _text(element: ET.Element | None, name: str, default: str = "") -> str:
    if element is None:
        return default
    found = element.find(name)
    if found is None or found.text is None:
        return default
    return found.text.strip()


def _flag(element: ET.Element | None, name: str, default: str) -> str:
    return (_text(element, name, default) or default).upper()[:1]


def _decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        return None
    return value if value.is_finite() else None


def _zero_pad(value: int) -> str:
    return f"{value:06d}"


# Error numbers: (unconfirmed) SYSPRO-style six-digit codes, stable so tests can assert them.
E_SUPPLIER_NOT_FOUND = 110402
E_SUPPLIER_ON_HOLD = 110405
E_SUPPLIER_EXISTS = 110401
E_DUPLICATE_INVOICE = 110420
E_BAD_VALUE = 110430
E_BAD_DATE = 110431
E_BAD_TRANSACTION_CODE = 110432
E_LEDGER_NOT_FOUND = 110440
E_DISTRIBUTION = 110441
E_REQUIRED = 100010
E_TOO_LONG = 100011
E_BAD_CURRENCY = 110450
E_HAS_TRANSACTIONS = 110460
E_PO_NOT_FOUND = 210301
E_PO_EXISTS = 210302
E_PO_CLOSED = 210303
E_PO_LINE = 210310
E_STOCK_NOT_FOUND = 240004
E_WAREHOUSE_NOT_FOUND = 240010
E_NOT_STOCKED = 240011
E_BAD_QUANTITY = 240020
E_NEGATIVE_STOCK = 240021
E_ZERO_PRICE = 210320
E_ACTION = 100020

WAREHOUSES = {"WH01": "Main warehouse", "WH02": "North branch", "VAN1": "Service van 1", "VAN2": "Service van 2"}
LEDGER_CODES = {
    "10-5500": "Materials", "10-5510": "Subcontractors", "10-5520": "Equipment rental",
    "10-5600": "Freight", "20-1400": "Inventory", "20-2100": "Accounts payable control",
    "30-6100": "Repairs and maintenance",
}
CURRENCIES = {"$", "USD", "CAD", "EUR", "GBP", "ZAR"}
SUPPLIER_FIELDS = (
    "SupplierName", "SupShortName", "SupAddr1", "SupAddr2", "SupAddr3", "SupAddr4", "SupAddr5",
    "SupPostalCode", "Telephone", "Email", "Contact", "Currency", "TermsCode", "SupplierClass",
    "Branch", "OnHold", "TaxRegnNum",
)


def _tables() -> dict[str, Table]:
    return {
        "ApSupplier": Table("ApSupplier", {
            "Supplier": STR, "SupplierName": STR, "SupShortName": STR, "SupAddr1": STR, "SupAddr2": STR,
            "SupAddr3": STR, "SupAddr4": STR, "SupAddr5": STR, "SupPostalCode": STR, "Telephone": STR,
            "Email": STR, "Contact": STR, "Currency": STR, "TermsCode": STR, "SupplierClass": STR,
            "Branch": STR, "OnHold": STR, "TaxRegnNum": STR, "DateSuppAdded": DATE, "LastChangeDate": DATETIME,
        }, ("Supplier",), "LastChangeDate"),
        "ApInvoice": Table("ApInvoice", {
            "Supplier": STR, "Invoice": STR, "DocumentType": STR, "InvoiceDate": DATE, "DueDate": DATE,
            "Reference": STR, "Notation": STR, "Currency": STR, "OrigInvValue": dec(2), "TaxValue": dec(2),
            "MthInvBal1": dec(2), "Journal": INT, "EntryNumber": INT, "Branch": STR, "PostDate": DATE,
            "LastChangeDate": DATETIME,
        }, ("Supplier", "Invoice"), "LastChangeDate"),
        "PorMasterHdr": Table("PorMasterHdr", {
            "PurchaseOrder": STR, "Supplier": STR, "OrderStatus": STR, "OrderEntryDate": DATE,
            "OrderDueDate": DATE, "Warehouse": STR, "Buyer": STR, "Currency": STR, "CustomerPoNumber": STR,
            "LastChangeDate": DATETIME,
        }, ("PurchaseOrder",), "LastChangeDate"),
        "PorMasterDetail": Table("PorMasterDetail", {
            "PurchaseOrder": STR, "Line": INT, "LineType": STR, "MStockCode": STR, "MStockDes": STR,
            "MWarehouse": STR, "MOrderQty": dec(6), "MReceivedQty": dec(6), "MPrice": dec(5),
            "MOrderUom": STR, "MGlCode": STR, "MLatestDueDate": DATE, "MComment": STR,
        }, ("PurchaseOrder", "Line")),
        "InvMaster": Table("InvMaster", {
            "StockCode": STR, "Description": STR, "LongDesc": STR, "StockUom": STR, "ProductClass": STR,
            "Supplier": STR, "PartCategory": STR, "WarehouseToUse": STR, "DateStkAdded": DATE,
            "LastChangeDate": DATETIME,
        }, ("StockCode",), "LastChangeDate"),
        "InvWarehouse": Table("InvWarehouse", {
            "StockCode": STR, "Warehouse": STR, "QtyOnHand": dec(6), "QtyAllocated": dec(6),
            "QtyOnOrder": dec(6), "UnitCost": dec(5), "LastChangeDate": DATETIME,
        }, ("StockCode", "Warehouse"), "LastChangeDate"),
        "InvMovements": Table("InvMovements", {
            "Journal": INT, "JournalEntry": INT, "StockCode": STR, "Warehouse": STR, "TrnYear": INT,
            "TrnMonth": INT, "MovementType": STR, "TrnType": STR, "TrnQty": dec(6), "TrnValue": dec(2),
            "Reference": STR, "Notation": STR, "EntryDate": DATETIME,
        }, ("Journal", "JournalEntry"), "EntryDate"),
    }


# Control-API entity names (and the table names themselves) -> table.
ENTITY_TABLES = {
    "suppliers": "ApSupplier", "ap_invoices": "ApInvoice", "purchase_orders": "PorMasterHdr",
    "purchase_order_lines": "PorMasterDetail", "stock_items": "InvMaster", "warehouse_stock": "InvWarehouse",
    "inventory_movements": "InvMovements",
}

_NAME_HEADS = ["Acme", "Summit", "Pioneer", "Keystone", "Bluewater", "Redwood", "Granite", "Northstar",
               "Valley", "Cascade", "Liberty", "Ironwood", "Harbor", "Prairie", "Sterling", "Café"]
_NAME_TRADES = ["Concrete", "Plumbing Supply", "Electrical", "HVAC Parts", "Lumber", "Pipe & Valve",
                "Fasteners", "Refrigeration", "Tool Rental", "Insulation", "Roofing", "Controls"]
_NAME_TAILS = ["", " Inc.", " LLC", " Co.", " Ltd", " Group", " Distributors"]
_STREETS = ["Main Street", "Oak Avenue", "Industrial Parkway", "Commerce Drive", "Mill Road", "Harbor Boulevard"]
_CITIES = [("Springfield", "IL", "62701"), ("Riverton", "WY", "82501"), ("Fairview", "TN", "37062"),
           ("Madison", "WI", "53703"), ("Georgetown", "TX", "78626"), ("Salem", "OR", "97301")]
_ITEMS = [("CAP", "Run capacitor 45/5 MFD", "EA"), ("FLT", "Pleated filter 16x25x1", "EA"),
          ("CPR", "Copper pipe 3/4 in type L", "FT"), ("THM", "Programmable thermostat", "EA"),
          ("VLV", "Ball valve 1 in brass", "EA"), ("REF", "Refrigerant R-410A 25 lb", "EA"),
          ("WIR", "Thermostat wire 18/8", "FT"), ("CON", "Contactor 2-pole 40A", "EA"),
          ("MTR", "Condenser fan motor 1/4 HP", "EA"), ("DUC", "Flex duct 6 in x 25 ft", "EA")]


def _near_duplicate(name: str, rng: Any) -> str:
    """The kind of twin an ERP accumulates: suffix, case, a typo, '&' vs 'and'."""
    choice = rng.randrange(5)
    if choice == 0:
        return name.upper()
    if choice == 1:
        return name.replace(" Inc.", "").replace(" LLC", "") + (" Inc" if " Inc." not in name else ", Inc.")
    if choice == 2 and len(name) > 6:
        i = rng.randrange(1, len(name) - 2)
        return name[:i] + name[i + 1] + name[i] + name[i + 2:]
    if choice == 3:
        return name.replace("&", "and") if "&" in name else name + " "
    return name.replace("Co.", "Company") if "Co." in name else name.replace(" ", "  ", 1)


class SysproSandbox(Sandbox):
    vendor = "syspro"

    OPERATOR = "ADMIN"
    OPERATOR_PASSWORD = "Sandbox-Op-Pass-1"
    COMPANY_ID = "EDU1"
    COMPANY_PASSWORD = "Co-Pass-7"
    COMPANY_NAME = "Outdoor Comfort Services (sandbox)"

    def __init__(self, options: SandboxOptions | None = None, settings: SysproSettings | None = None) -> None:
        options = options or SandboxOptions()
        base = settings or SysproSettings()
        updates: dict[str, Any] = {}
        if options.token_ttl:
            updates["session_idle_seconds"] = float(options.token_ttl)
        if options.rate_limit:
            updates["rate_limit"] = options.rate_limit
        self.settings = base.model_copy(update=updates)
        self.clock = Clock(MILLISECOND_US)
        self.tables = _tables()
        self.ledger_distribution: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        self._counters = {"po": 0, "ap_journal": 0, "inv_journal": 0}
        self._tick_cursor = 0
        super().__init__(options)
        self.stats = SysproStats(self._gauges)
        self.tokens = SessionStore(lambda: self.settings, lambda: self.stats)
        self._rate = RateWindow(self.settings.rate_limit)
        canonical = {f"{REST_BASE}/{p}".lower(): f"{REST_BASE}/{p}" for p in REST_PATHS}
        self.app.wsgi_app = _CaseFoldPaths(self.app.wsgi_app, canonical)  # type: ignore[method-assign]

    @property
    def sessions(self) -> SessionStore:
        return self.tokens  # type: ignore[return-value]

    def _gauges(self) -> dict[str, int]:
        store = self.tokens
        if not isinstance(store, SessionStore):
            return {"open_sessions": 0, "peak_open_sessions": 0}
        return {"open_sessions": store.open_count(), "peak_open_sessions": store.peak_open}

    # ---- description ---------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "api_base": f"{self.base_url}{REST_BASE}",
            "token_url": None,
            "credentials": {
                "operator": self.OPERATOR,
                "operator_password": self.OPERATOR_PASSWORD,
                "company_id": self.COMPANY_ID,
                "company_password": self.COMPANY_PASSWORD,
            },
        }

    def odata_base(self) -> str:
        return f"{self.base_url}{ODATA_SITE}/{self.COMPANY_ID}"

    # ---- state -----------------------------------------------------------------------------

    def clear_state(self) -> None:
        for table in self.tables.values():
            table.clear()
        self.ledger_distribution.clear()
        self._counters = {"po": 0, "ap_journal": 0, "inv_journal": 0}
        self._tick_cursor = 0
        if hasattr(self, "_rate"):
            self._rate.reset()
        if isinstance(self.tokens, SessionStore):
            self.tokens.revoke_all()

    def seed(self, rng: Any, records: int) -> None:
        count = max(int(records), 0)
        stamps: list[datetime] = []

        def stamp() -> datetime:
            # Every tenth record shares the previous stamp: equal change dates must page cleanly.
            if stamps and rng.random() < 0.1:
                value = stamps[-1]
            else:
                value = SEED_EPOCH + timedelta(milliseconds=rng.randrange(SEED_SPREAD_SECONDS * 1000))
            stamps.append(value)
            return value

        suppliers: list[dict[str, Any]] = []
        for i in range(count):
            code = f"S{i + 1:05d}"
            if suppliers and i % 7 == 6:
                twin = suppliers[rng.randrange(len(suppliers))]
                name = _near_duplicate(twin["SupplierName"], rng)
                addr1 = twin["SupAddr1"].replace("Street", "St.").replace("Avenue", "Ave")
                city = (twin["SupAddr3"], twin["SupAddr4"], twin["SupPostalCode"])
            else:
                name = f"{rng.choice(_NAME_HEADS)} {rng.choice(_NAME_TRADES)}{rng.choice(_NAME_TAILS)}"
                addr1 = f"{rng.randrange(10, 9999)} {rng.choice(_STREETS)}"
                city = rng.choice(_CITIES)
            suppliers.append({
                "Supplier": code, "SupplierName": name, "SupShortName": name[:20].upper(),
                "SupAddr1": addr1, "SupAddr2": rng.choice(["", "Suite 100", "Unit B", ""]),
                "SupAddr3": city[0], "SupAddr4": city[1], "SupAddr5": "USA", "SupPostalCode": city[2],
                "Telephone": f"555-{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}",
                "Email": f"ap@{re.sub(r'[^a-z]', '', name.lower())[:16] or 'supplier'}.example",
                "Contact": rng.choice(["Dana Reyes", "Sam Okafor", "Lee Park", "Chris Novak", ""]),
                "Currency": "$", "TermsCode": rng.choice(["30", "45", "60", "CO"]),
                "SupplierClass": rng.choice(["MAT", "SUB", "SVC"]), "Branch": "", "OnHold": "Y" if i % 23 == 22 else "N",
                "TaxRegnNum": "", "DateSuppAdded": (SEED_EPOCH - timedelta(days=rng.randrange(30, 2000))).date(),
                "LastChangeDate": stamp(),
            })
        self.tables["ApSupplier"].bulk_load(suppliers)

        stock: list[dict[str, Any]] = []
        warehouse_rows: list[dict[str, Any]] = []
        for i in range(max(count, 10)):
            prefix, description, uom = _ITEMS[i % len(_ITEMS)]
            code = f"{prefix}-{i + 1:05d}"
            stock.append({
                "StockCode": code, "Description": description, "LongDesc": f"{description} (catalog {i + 1})",
                "StockUom": uom, "ProductClass": prefix, "Supplier": suppliers[i % len(suppliers)]["Supplier"] if suppliers else "",
                "PartCategory": "B", "WarehouseToUse": "WH01",
                "DateStkAdded": (SEED_EPOCH - timedelta(days=rng.randrange(30, 900))).date(), "LastChangeDate": stamp(),
            })
            for warehouse in ("WH01", "VAN1") if i % 3 else ("WH01", "WH02", "VAN1"):
                warehouse_rows.append({
                    "StockCode": code, "Warehouse": warehouse,
                    "QtyOnHand": Decimal(rng.randrange(0, 400)).quantize(Decimal("0.000001")),
                    "QtyAllocated": Decimal(0).quantize(Decimal("0.000001")),
                    "QtyOnOrder": Decimal(0).quantize(Decimal("0.000001")),
                    "UnitCost": (Decimal(rng.randrange(150, 90000)) / 100).quantize(Decimal("0.00001")),
                    "LastChangeDate": stamp(),
                })
        self.tables["InvMaster"].bulk_load(stock)
        self.tables["InvWarehouse"].bulk_load(warehouse_rows)

        invoices: list[dict[str, Any]] = []
        for i in range(count):
            supplier = suppliers[rng.randrange(len(suppliers))]
            value = (Decimal(rng.randrange(2000, 2_500_000)) / 100).quantize(Decimal("0.01"))
            tax = (value * Decimal("0.08") / Decimal("1.08")).quantize(Decimal("0.01"))
            invoice_date = (SEED_EPOCH + timedelta(days=rng.randrange(0, 110))).date()
            self._counters["ap_journal"] = 1 + i // 50
            invoices.append({
                "Supplier": supplier["Supplier"], "Invoice": f"INV-{100000 + i * 7 + rng.randrange(7)}",
                "DocumentType": "I", "InvoiceDate": invoice_date, "DueDate": invoice_date + timedelta(days=30),
                "Reference": f"ST-{rng.randrange(10000, 99999)}", "Notation": rng.choice(["Materials", "Parts", "Service call", ""]),
                "Currency": "$", "OrigInvValue": value, "TaxValue": tax,
                "MthInvBal1": value if rng.random() < 0.7 else Decimal("0.00"),
                "Journal": self._counters["ap_journal"], "EntryNumber": i % 50 + 1, "PostDate": invoice_date,
                "LastChangeDate": stamp(),
            })
        self.tables["ApInvoice"].bulk_load(invoices)
        for row in invoices:
            self.ledger_distribution[self.tables["ApInvoice"].pk(row)] = [
                {"LedgerCode": "10-5500", "LedgerValue": row["OrigInvValue"] - row["TaxValue"], "LedgerNotation": "Materials"}
            ]

        headers: list[dict[str, Any]] = []
        lines: list[dict[str, Any]] = []
        for i in range(count):
            self._counters["po"] = i + 1
            number = f"P{i + 1:05d}"
            supplier = suppliers[rng.randrange(len(suppliers))]
            entered = (SEED_EPOCH + timedelta(days=rng.randrange(0, 110))).date()
            warehouse = rng.choice(["WH01", "WH01", "WH02"])
            headers.append({
                "PurchaseOrder": number, "Supplier": supplier["Supplier"], "OrderStatus": rng.choice(["1", "1", "4", "9", "*"]),
                "OrderEntryDate": entered, "OrderDueDate": entered + timedelta(days=14), "Warehouse": warehouse,
                "Buyer": rng.choice(["JDS", "AMK", "PLR"]), "Currency": "$",
                "CustomerPoNumber": f"ST-PO-{20000 + i}" if i % 2 == 0 else "", "LastChangeDate": stamp(),
            })
            for line in range(1, rng.randrange(1, 5) + 1):
                item = stock[rng.randrange(len(stock))]
                qty = Decimal(rng.randrange(1, 60)).quantize(Decimal("0.000001"))
                lines.append({
                    "PurchaseOrder": number, "Line": line, "LineType": "1", "MStockCode": item["StockCode"],
                    "MStockDes": item["Description"], "MWarehouse": warehouse, "MOrderQty": qty,
                    "MReceivedQty": Decimal(0).quantize(Decimal("0.000001")),
                    "MPrice": (Decimal(rng.randrange(150, 90000)) / 100).quantize(Decimal("0.00001")),
                    "MOrderUom": item["StockUom"], "MGlCode": "", "MLatestDueDate": entered + timedelta(days=14), "MComment": "",
                })
        self.tables["PorMasterHdr"].bulk_load(headers)
        self.tables["PorMasterDetail"].bulk_load(lines)

        movements: list[dict[str, Any]] = []
        for i in range(count):
            holding = warehouse_rows[rng.randrange(len(warehouse_rows))]
            self._counters["inv_journal"] = 1 + i // 20
            qty = Decimal(rng.choice([-5, -2, -1, 1, 2, 3, 10])).quantize(Decimal("0.000001"))
            entered = stamp()
            movements.append({
                "Journal": self._counters["inv_journal"], "JournalEntry": i % 20 + 1, "StockCode": holding["StockCode"],
                "Warehouse": holding["Warehouse"], "TrnYear": entered.year, "TrnMonth": entered.month,
                "MovementType": "I", "TrnType": rng.choice(["A", "A", "I", "R"]), "TrnQty": qty,
                "TrnValue": (qty * holding["UnitCost"]).quantize(Decimal("0.01")),
                "Reference": f"ADJ-{30000 + i}", "Notation": rng.choice(["Cycle count", "Damaged", "Van restock", ""]),
                "EntryDate": entered,
            })
        self.tables["InvMovements"].bulk_load(movements)

    # ---- control API hooks --------------------------------------------------------------------

    def _table_for(self, entity: str) -> Table:
        name = ENTITY_TABLES.get(entity, entity)
        if name not in self.tables:
            raise KeyError(entity)
        return self.tables[name]

    def get_entities(self, entity: str) -> list[dict[str, Any]]:
        table = self._table_for(entity)
        ordered = sorted(table.rows.values(), key=lambda r: tuple(_none_first(r.get(k)) for k in table.key))
        return [self._entity_json(table, row) for row in ordered]

    def put_entity(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        table = self._table_for(entity)
        payload = dict(payload)
        lines = payload.pop("lines", None)
        unknown = [k for k in payload if k not in table.columns]
        if unknown:
            raise ValueError(f"unknown {table.name} columns: {', '.join(sorted(unknown))}")
        missing = [k for k in table.key if payload.get(k) in (None, "")]
        existing = None if missing else table.get(*(payload[k] for k in table.key))
        if missing and not (table.name == "PorMasterHdr" and missing == ["PurchaseOrder"]):
            raise ValueError(f"{table.name} needs its key {', '.join(table.key)}")
        row: dict[str, Any] = dict(existing) if existing else {c: None for c in table.columns}
        for column, value in payload.items():
            row[column] = coerce(table.columns[column], value)
        if table.name == "PorMasterHdr" and not row.get("PurchaseOrder"):
            row["PurchaseOrder"] = self._next_po_number()
        if table.change and table.change not in payload:
            row[table.change] = self.clock.now_datetime()
        table.upsert(row)
        if table.name == "PorMasterHdr" and lines is not None:
            for line in list(self._po_lines(row["PurchaseOrder"])):
                self.tables["PorMasterDetail"].delete(line["PurchaseOrder"], line["Line"])
            for number, line in enumerate(lines, start=1):
                detail = {c: None for c in self.tables["PorMasterDetail"].columns}
                for column, value in {"Line": number, "LineType": "1", **line, "PurchaseOrder": row["PurchaseOrder"]}.items():
                    if column not in detail:
                        raise ValueError(f"unknown PorMasterDetail column: {column}")
                    detail[column] = coerce(self.tables["PorMasterDetail"].columns[column], value)
                self.tables["PorMasterDetail"].upsert(detail)
        return self._entity_json(table, row)

    def _entity_json(self, table: Table, row: dict[str, Any]) -> dict[str, Any]:
        out = {k: to_json(v) for k, v in row.items()}
        if table.name == "PorMasterHdr":
            out["lines"] = [{k: to_json(v) for k, v in line.items()} for line in self._po_lines(row["PurchaseOrder"])]
        if table.name == "ApInvoice":
            out["LedgerDistribution"] = [
                {k: to_json(v) for k, v in line.items()} for line in self.ledger_distribution.get(table.pk(row), [])
            ]
        return out

    def tick(self, count: int) -> list[dict[str, Any]]:
        """Change `count` records in turn: a supplier, an invoice, a PO, a stock item, ..."""
        changed: list[dict[str, Any]] = []
        order = ["ApSupplier", "ApInvoice", "PorMasterHdr", "InvMaster"]
        for _ in range(max(0, int(count))):
            name = order[self._tick_cursor % len(order)]
            table = self.tables[name]
            self._tick_cursor += 1
            if not table.rows:
                continue
            oldest = table.change_index[0][1]  # the least recently changed record moves next
            row = dict(table.rows[oldest])
            if name == "ApSupplier":
                row["Telephone"] = f"555-{self._tick_cursor % 900 + 100}-{self._tick_cursor % 9000 + 1000}"
            elif name == "ApInvoice":
                row["MthInvBal1"] = Decimal("0.00")
            elif name == "PorMasterHdr":
                row["OrderStatus"] = "4" if row["OrderStatus"] == "1" else row["OrderStatus"]
            else:
                row["LongDesc"] = f"{row['Description']} (rev {self._tick_cursor})"
            row[table.change] = self.clock.now_datetime()  # type: ignore[index]
            table.upsert(row)
            changed.append({"entity": name, "key": [row[k] for k in table.key], "changed_at": to_json(row[table.change])})  # type: ignore[index]
        return changed

    def _po_lines(self, purchase_order: str) -> list[dict[str, Any]]:
        detail = self.tables["PorMasterDetail"]
        keys = detail.by_first_key.get(_norm(purchase_order), set())
        return sorted((detail.rows[k] for k in keys), key=lambda r: r["Line"])

    def _next_po_number(self) -> str:
        while True:
            self._counters["po"] += 1
            number = f"P{self._counters['po']:05d}"
            if self.tables["PorMasterHdr"].get(number) is None:
                return number

    # ---- vendor error shapes --------------------------------------------------------------

    def rate_limited_response(self, retry_after: float) -> Response:
        # (unconfirmed) SYSPRO documents no limit; a throttling proxy in front of the WCF host
        # would answer 429 with Retry-After. The body keeps e.net's `ERROR:` text convention.
        response = Response(b"ERROR: Too many requests", status=429, mimetype="application/octet-stream")
        response.headers["Retry-After"] = str(max(1, int(round(retry_after + 0.499))))
        return response

    def error_response(self, status: int, message: str) -> Response:
        # The WCF host answers transport failures with its HTML "Request Error" page.
        body = (
            "<html><head><title>Request Error</title></head><body><div id=\"content\">"
            f"<p class=\"heading1\">Request Error</p><p>{escape(message)}</p></div></body></html>"
        )
        return Response(body, status=status, mimetype="text/html")

    # ---- routes -------------------------------------------------------------------------------

    def _apply_settings(self, settings: SysproSettings) -> None:
        self.settings = settings
        self._rate = RateWindow(settings.rate_limit)

    def register_vendor_routes(self, app: Flask) -> None:
        app.before_request(self._rate_gate)

        def text(body: str) -> Response:
            return Response(body.encode("cp1252", "xmlcharrefreplace"), status=200, mimetype="application/octet-stream")

        @app.get(f"{REST_BASE}/Logon")
        def logon() -> Response:
            return text(self._logon(request.args))

        @app.get(f"{REST_BASE}/Logoff")
        def logoff() -> Response:
            user_id = request.args.get("UserId", "")
            if self.sessions.close(user_id):
                self.stats.bump("logoffs")
                return text("0")
            return text(self._stale_message(user_id))

        @app.get(f"{REST_BASE}/GetVersion")
        def get_version() -> Response:
            return text(self.settings.host_version)  # answered without a session

        @app.get(f"{REST_BASE}/GetLogonProfile")
        def logon_profile() -> Response:
            session = self.sessions.use(request.args.get("UserId", ""))
            if session is None:
                return text(self._stale_message(request.args.get("UserId", "")))
            return text(
                f"{XML_DECLARATION}\n<LogonProfile {ROOT_ATTRIBUTES}><Operator>{escape(session.operator)}</Operator>"
                f"<CompanyId>{escape(session.company)}</CompanyId><CompanyName>{escape(self.COMPANY_NAME)}</CompanyName>"
                f"<SystemDate>{self.clock.now_datetime().date().isoformat()}</SystemDate></LogonProfile>"
            )

        def business_call(kind: str) -> Callable[[], Response]:
            def handler() -> Response:
                return text(self._business_call(kind, request.args))

            handler.__name__ = f"bo_{kind.replace('/', '_').lower()}"
            return handler

        for kind in ("Query/Query", "Query/Browse", "Query/Fetch", "Transaction/Post", "Transaction/Build",
                     "Setup/Add", "Setup/Update", "Setup/Delete"):
            app.add_url_rule(f"{REST_BASE}/{kind}", view_func=business_call(kind), methods=["GET"])

        @app.get(f"{ODATA_SITE}/<company>/")
        def odata_service(company: str) -> Response | tuple[Response, int]:
            refused = self._odata_auth(company)
            if refused is not None:
                return refused
            return jsonify({
                "@odata.context": f"{self.base_url}{ODATA_SITE}/{company}/$metadata",
                "value": [{"name": n, "kind": "EntitySet", "url": n} for n in self.tables],
            })

        @app.get(f"{ODATA_SITE}/<company>/<entity_set>")
        def odata_entity_set(company: str, entity_set: str) -> Response | tuple[Response, int]:
            refused = self._odata_auth(company)
            if refused is not None:
                return refused
            return self._odata_query(company, entity_set)

        model_route(app, "/_sandbox/syspro/settings", SysproSettings, lambda: self.settings, self._apply_settings)

        @app.get("/_sandbox/syspro/sessions")
        def list_sessions() -> Response:
            return jsonify({"open": self.sessions.open_count(), "peak": self.sessions.peak_open,
                            "sessions": self.sessions.describe()})

    def _rate_gate(self) -> Response | None:
        if request.path.startswith("/_sandbox/") or not hasattr(self, "_rate"):
            return None
        allowed, wait, _ = self._rate.hit("syspro")
        if not allowed:
            return self.rate_limited_response(wait)
        return None

    # ---- Logon / sessions -------------------------------------------------------------------

    def _logon(self, args: Any) -> str:
        operator = args.get("Operator", "")
        if operator.strip().upper() != self.OPERATOR:
            self.stats.bump("logon_failures")
            return f"ERROR: Operator '{operator.strip()}' not found"
        if args.get("OperatorPassword", "") != self.OPERATOR_PASSWORD:
            self.stats.bump("logon_failures")
            return "ERROR: Invalid operator password"
        company = args.get("CompanyId", "")
        if company.strip().upper() != self.COMPANY_ID:
            self.stats.bump("logon_failures")
            return f"ERROR: Company '{company.strip()}' not found"
        if args.get("CompanyPassword", "") != self.COMPANY_PASSWORD:
            self.stats.bump("logon_failures")
            return "ERROR: Invalid company password"
        user_id = self.sessions.open(self.OPERATOR, self.COMPANY_ID)
        if user_id is None:
            self.stats.bump("seat_refusals")
            seats = self.settings.seats
            # (unconfirmed) wording of the licence-limit refusal
            return f"ERROR: e.net licence limit reached - all {seats} of {seats} licences are in use"
        self.stats.bump("logons")
        with self.stats._lock:
            self.stats.tokens_issued += 1
        return user_id + "  "

    def _stale_message(self, user_id: str) -> str:
        self.stats.bump("stale_session_calls")
        # (unconfirmed) wording; the host echoes the id it could not find
        return f"ERROR: Session '{user_id.strip()}' is invalid or has expired - please log on again"

    # ---- business objects ---------------------------------------------------------------------

    QUERY_OBJECTS = {"COMFND", "INVQRY"}
    TRANSACTION_OBJECTS = {"APSTIN", "PORTOI", "INVTMA"}
    SETUP_OBJECTS = {"APSSSP"}

    def _business_call(self, kind: str, args: Any) -> str:
        user_id = args.get("UserId", "")
        if self.sessions.use(user_id) is None:
            return self._stale_message(user_id)
        business_object = args.get("BusinessObject", "").strip().upper()
        self.stats.bump(f"bo_{business_object or 'none'}")
        known = self.QUERY_OBJECTS | self.TRANSACTION_OBJECTS | self.SETUP_OBJECTS
        if business_object not in known or business_object in {o.upper() for o in self.settings.unlicensed_objects}:
            return f"ERROR: Business object '{business_object}' could not be found or is not licensed"
        expected = {"Query/Query": self.QUERY_OBJECTS, "Transaction/Post": self.TRANSACTION_OBJECTS,
                    "Setup/Add": self.SETUP_OBJECTS, "Setup/Update": self.SETUP_OBJECTS,
                    "Setup/Delete": self.SETUP_OBJECTS}.get(kind, set())
        if business_object not in expected:
            return f"ERROR: Business object '{business_object}' cannot be called with method {kind.replace('/', '.')}"
        try:
            xml_in = self._parse_xml(args.get("XmlIn", ""), "XmlIn")
            params = self._parse_xml(args.get("XmlParameters", ""), "XmlParameters", optional=True)
            with self.lock:
                if business_object == "COMFND":
                    return self._comfnd(xml_in)
                if business_object == "INVQRY":
                    return self._invqry(xml_in)
                if business_object == "APSTIN":
                    return self._apstin(params, xml_in)
                if business_object == "PORTOI":
                    return self._portoi(params, xml_in)
                if business_object == "INVTMA":
                    return self._invtma(params, xml_in)
                return self._apsssp(kind.split("/")[1], params, xml_in)
        except (BusinessError, QueryError) as exc:
            return f"ERROR: {exc}"

    @staticmethod
    def _parse_xml(text: str, name: str, optional: bool = False) -> ET.Element | None:
        if not text.strip():
            if optional:
                return None
            raise BusinessError(f"{name} is empty")
        try:
            return ET.fromstring(text)
        except ET.ParseError as exc:
            raise BusinessError(f"{name} is not well formed: {exc}") from None

    @staticmethod
    def _envelope(root: str, body: str) -> str:
        return f"{XML_DECLARATION}\n<{root} {ROOT_ATTRIBUTES}>\n{body}</{root}>\n"

    # ---- COMFND --------------------------------------------------------------------------------

    def _comfnd(self, query: ET.Element | None) -> str:
        assert query is not None
        table_name = _text(query, "TableName")
        table = self.tables.get(table_name)
        if table is None:
            raise QueryError(f"Table '{table_name}' not found")
        columns = [c.text.strip() for c in query.findall("Columns/Column") if c.text and c.text.strip()]
        for column in columns:
            if column not in table.columns:
                raise QueryError(f"Column '{column}' not found in table '{table.name}'")
        columns = columns or list(table.columns)
        order = [c.text.strip() for c in query.findall("OrderBy/Column") if c.text and c.text.strip()]
        for column in order:
            if column not in table.columns:
                raise QueryError(f"Column '{column}' not found in table '{table.name}'")
        rows_text = _text(query, "ReturnRows")
        try:
            limit = int(rows_text) if rows_text else self.settings.comfnd_default_rows
        except ValueError:
            raise QueryError(f"Invalid ReturnRows '{rows_text}'") from None
        node = parse_comfnd_where(query.find("Where"), table)
        rows, _ = run_query(table, node, [(c, False) for c in order] or [(k, False) for k in table.key], limit=max(limit, 0))
        parts = [
            f"<HeaderDetails><TableName>{table.name}</TableName><Columns>"
            + "".join(f"<Column>{c}</Column>" for c in columns)
            + "</Columns><OrderBy>" + "".join(f"<Column>{c}</Column>" for c in order) + "</OrderBy></HeaderDetails>\n"
        ]
        for row in rows:
            parts.append("<Row>" + "".join(f"<{c}>{escape(render(row.get(c)))}</{c}>" for c in columns) + "</Row>\n")
        parts.append(f"<RowsReturned>{len(rows):>7}</RowsReturned>\n")
        return self._envelope(table.name, "".join(parts))

    # ---- INVQRY ---------------------------------------------------------------------------------

    def _invqry(self, query: ET.Element | None) -> str:
        assert query is not None
        stock_code = _text(query.find("Key"), "StockCode")
        item = self.tables["InvMaster"].get(stock_code)
        if item is None:
            raise BusinessError(f"Stock code '{stock_code}' not found")
        selector = query.find("Filter/Warehouse")
        filter_type = (selector.get("FilterType", "A") if selector is not None else "A").upper()
        filter_value = selector.get("FilterValue", "") if selector is not None else ""
        wanted = {w.strip().upper() for w in filter_value.split(",") if w.strip()}
        holdings = self.tables["InvWarehouse"]
        body = [
            f"<QueryOptions><StockCode>{escape(item['StockCode'])}</StockCode></QueryOptions>\n<StockItem>"
            + "".join(f"<{c}>{escape(render(item.get(c)))}</{c}>" for c in
                      ("StockCode", "Description", "LongDesc", "StockUom", "ProductClass", "Supplier", "PartCategory"))
            + "</StockItem>\n"
        ]
        for pk in sorted(holdings.by_first_key.get(_norm(stock_code), ())):
            row = holdings.rows[pk]
            if filter_type in ("S", "L") and row["Warehouse"].upper() not in wanted:
                continue
            available = row["QtyOnHand"] - row["QtyAllocated"]
            body.append(
                f"<WarehouseItem><Warehouse>{escape(row['Warehouse'])}</Warehouse>"
                f"<Description>{escape(WAREHOUSES.get(row['Warehouse'], ''))}</Description>"
                f"<QtyOnHand>{row['QtyOnHand']}</QtyOnHand><AvailableQty>{available}</AvailableQty>"
                f"<QtyOnOrder>{row['QtyOnOrder']}</QtyOnOrder><UnitCost>{row['UnitCost']}</UnitCost></WarehouseItem>\n"
            )
        return self._envelope("InvQuery", "".join(body))

    # ---- shared posting rules -------------------------------------------------------------------

    @staticmethod
    def _posting_flags(params: ET.Element | None) -> tuple[bool, bool]:
        parameters = params.find("Parameters") if params is not None else None
        validate_only = _flag(parameters, "ValidateOnly", "N") == "Y"
        whole_document = _flag(parameters, "ApplyIfEntireDocumentValid", "Y") == "Y"
        return validate_only, whole_document

    @staticmethod
    def _status(processed: int, invalid: int) -> str:
        return (f"<StatusOfItems><ItemsProcessed>{_zero_pad(processed)}</ItemsProcessed>"
                f"<ItemsInvalid>{_zero_pad(invalid)}</ItemsInvalid></StatusOfItems>\n")

    # ---- APSTIN: post AP invoices -----------------------------------------------------------------

    def _apstin(self, params: ET.Element | None, document: ET.Element | None) -> str:
        assert document is not None
        validate_only, whole_document = self._posting_flags(params)
        parameters = params.find("Parameters") if params is not None else None
        automatic_tax = _flag(parameters, "AutomaticTaxCalculation", "Y") == "Y"
        items = document.findall("Item")
        if not items:
            raise BusinessError("No items supplied in XmlIn")
        checked: list[tuple[ET.Element, list[FieldError], dict[str, Any]]] = []
        seen: set[tuple[Any, ...]] = set()
        for item in items:
            errors: list[FieldError] = []
            record = self._validate_ap_invoice(item, errors, seen, automatic_tax)
            checked.append((item, errors, record))
        invalid = sum(1 for _, errors, _ in checked if errors)
        apply = not validate_only and not (whole_document and invalid)
        if apply and invalid < len(checked):
            self._counters["ap_journal"] += 1
        body: list[str] = []
        processed = 0
        entry = 0
        for number, (item, errors, record) in enumerate(checked, start=1):
            extra = ""
            if apply and not errors:
                entry += 1
                processed += 1
                record.update({"Journal": self._counters["ap_journal"], "EntryNumber": entry,
                               "PostDate": self.clock.now_datetime().date(), "LastChangeDate": self.clock.now_datetime()})
                distribution = record.pop("_distribution")
                self.tables["ApInvoice"].upsert(record)
                self.ledger_distribution[self.tables["ApInvoice"].pk(record)] = distribution
                extra = f"<Journal>{self._counters['ap_journal']}</Journal><EntryNumber>{entry}</EntryNumber>"
            body.append(
                f"<Item><Key><Supplier>{escape(_text(item, 'Supplier'))}</Supplier><Invoice>{escape(_text(item, 'Invoice'))}</Invoice></Key>"
                + "".join(error.xml() for error in errors) + extra + f"<ItemNumber>{_zero_pad(number)}</ItemNumber></Item>\n"
            )
        body.append(self._status(processed, invalid))
        return self._envelope("postapinvoice", "".join(body))

    def _validate_ap_invoice(self, item: ET.Element, errors: list[FieldError], seen: set[tuple[Any, ...]],
                             automatic_tax: bool) -> dict[str, Any]:
        supplier_code = _text(item, "Supplier")
        invoice = _text(item, "Invoice")
        supplier = self.tables["ApSupplier"].get(supplier_code) if supplier_code else None
        if not supplier_code:
            errors.append(FieldError("Supplier", "", E_REQUIRED, "Supplier is required"))
        elif supplier is None:
            errors.append(FieldError("Supplier", supplier_code, E_SUPPLIER_NOT_FOUND, f"Supplier '{supplier_code}' not found"))
        elif supplier["OnHold"] == "Y":
            errors.append(FieldError("Supplier", supplier_code, E_SUPPLIER_ON_HOLD, f"Supplier '{supplier_code}' is on hold"))
        if not invoice:
            errors.append(FieldError("Invoice", "", E_REQUIRED, "Invoice number is required"))
        elif len(invoice) > 20:
            errors.append(FieldError("Invoice", invoice, E_TOO_LONG, "Invoice number may not exceed 20 characters"))
        elif supplier is not None:
            key = (_norm(supplier["Supplier"]), _norm(invoice))
            if key in self.tables["ApInvoice"].rows or key in seen:
                errors.append(FieldError("Invoice", invoice, E_DUPLICATE_INVOICE,
                                         f"Invoice '{invoice}' already exists for supplier '{supplier['Supplier']}'"))
            seen.add(key)
        code = (_text(item, "TransactionCode") or "I").upper()
        if code not in ("I", "C", "D"):
            errors.append(FieldError("TransactionCode", code, E_BAD_TRANSACTION_CODE, f"Invalid transaction code '{code}'"))
        raw_value = _text(item, "TransactionValue")
        value = _decimal(raw_value)
        if value is None or value <= 0 or value != value.quantize(Decimal("0.01")):
            errors.append(FieldError("TransactionValue", raw_value, E_BAD_VALUE, f"Invalid transaction value '{raw_value}'"))
            value = None
        raw_date = _text(item, "InvoiceDate")
        invoice_date = self.clock.now_datetime().date()
        if raw_date:
            try:
                invoice_date = datetime.strptime(raw_date, "%Y-%m-%d").date()
            except ValueError:
                errors.append(FieldError("InvoiceDate", raw_date, E_BAD_DATE, f"Invalid invoice date '{raw_date}'"))
        due_date = None
        raw_due = _text(item, "DueDate")
        if raw_due:
            try:
                due_date = datetime.strptime(raw_due, "%Y-%m-%d").date()
            except ValueError:
                errors.append(FieldError("DueDate", raw_due, E_BAD_DATE, f"Invalid due date '{raw_due}'"))
        distribution: list[dict[str, Any]] = []
        for line in item.findall("LedgerDistribution"):
            ledger = _text(line, "LedgerCode")
            raw_line_value = _text(line, "LedgerValue")
            line_value = _decimal(raw_line_value)
            if ledger not in LEDGER_CODES:
                errors.append(FieldError("LedgerCode", ledger, E_LEDGER_NOT_FOUND, f"Ledger code '{ledger}' not found"))
            if line_value is None:
                errors.append(FieldError("LedgerValue", raw_line_value, E_BAD_VALUE, f"Invalid ledger value '{raw_line_value}'"))
                continue
            distribution.append({"LedgerCode": ledger, "LedgerValue": line_value.quantize(Decimal("0.01")),
                                 "LedgerNotation": _text(line, "LedgerNotation")})
        raw_tax = _text(item, "TaxValue")
        tax = _decimal(raw_tax) if raw_tax else None
        if raw_tax and tax is None:
            errors.append(FieldError("TaxValue", raw_tax, E_BAD_VALUE, f"Invalid tax value '{raw_tax}'"))
        if value is not None and distribution:
            spread = sum((d["LedgerValue"] for d in distribution), Decimal("0.00"))
            if tax is not None and spread + tax != value:
                errors.append(FieldError("TransactionValue", raw_value, E_DISTRIBUTION,
                                         f"Distribution total {spread + tax} does not equal invoice value {value}"))
            elif tax is None and (spread > value or (not automatic_tax and spread != value)):
                errors.append(FieldError("TransactionValue", raw_value, E_DISTRIBUTION,
                                         f"Distribution total {spread} does not balance to invoice value {value}"))
            if tax is None:
                tax = value - spread
        return {
            "Supplier": supplier["Supplier"] if supplier else supplier_code, "Invoice": invoice, "DocumentType": code,
            "InvoiceDate": invoice_date, "DueDate": due_date or invoice_date + timedelta(days=30),
            "Reference": _text(item, "TransactionReference"), "Notation": _text(item, "Notation"),
            "Currency": supplier["Currency"] if supplier else "", "OrigInvValue": value,
            "TaxValue": (tax or Decimal("0")).quantize(Decimal("0.01")), "MthInvBal1": value,
            "Journal": None, "EntryNumber": None, "Branch": _text(item, "Branch"), "LastChangeDate": None,
            "_distribution": distribution,
        }

    # ---- PORTOI: purchase orders --------------------------------------------------------------------

    def _portoi(self, params: ET.Element | None, document: ET.Element | None) -> str:
        assert document is not None
        validate_only, whole_document = self._posting_flags(params)
        parameters = params.find("Parameters") if params is not None else None
        allow_non_stock = _flag(parameters, "AllowNonStockItems", "N") == "Y"
        allow_zero_price = _flag(parameters, "AllowZeroPrice", "N") == "Y"
        status = _text(parameters, "Status", "1") or "1"
        orders = document.findall("Orders")
        if not orders:
            raise BusinessError("No orders supplied in XmlIn")
        plans = [self._plan_order(order, allow_non_stock, allow_zero_price, status) for order in orders]
        invalid = sum(1 for plan in plans if plan["errors"] or plan["line_errors"])
        apply = not validate_only and not (whole_document and invalid)
        body: list[str] = []
        processed = 0
        for number, plan in enumerate(plans, start=1):
            bad = bool(plan["errors"] or plan["line_errors"])
            if apply and not bad:
                plan["commit"]()
                processed += 1
            body.append(
                f"<Order><Key><PurchaseOrder>{escape(plan['number'])}</PurchaseOrder></Key>"
                + "".join(error.xml() for error in plan["errors"])
                + "".join(plan["line_errors"])
                + f"<ItemNumber>{_zero_pad(number)}</ItemNumber></Order>\n"
            )
        body.append(self._status(processed, invalid))
        return self._envelope("postpurchaseorders", "".join(body))

    def _plan_order(self, order: ET.Element, allow_non_stock: bool, allow_zero_price: bool, status: str) -> dict[str, Any]:
        header = order.find("OrderHeader")
        errors: list[FieldError] = []
        line_errors: list[str] = []
        action = _flag(header, "OrderActionType", "A")
        number = _text(header, "PurchaseOrder")
        headers = self.tables["PorMasterHdr"]
        existing = headers.get(number) if number else None
        plan: dict[str, Any] = {"errors": errors, "line_errors": line_errors, "number": number, "commit": lambda: None}
        if action not in ("A", "C", "D"):
            errors.append(FieldError("OrderActionType", action, E_ACTION, f"Invalid order action type '{action}'"))
            return plan
        if action == "A" and existing is not None:
            errors.append(FieldError("PurchaseOrder", number, E_PO_EXISTS, f"Purchase order '{number}' already exists"))
            return plan
        if action in ("C", "D"):
            if existing is None:
                errors.append(FieldError("PurchaseOrder", number, E_PO_NOT_FOUND, f"Purchase order '{number}' not found"))
                return plan
            if existing["OrderStatus"] in ("9", "*"):
                state = "complete" if existing["OrderStatus"] == "9" else "cancelled"
                errors.append(FieldError("PurchaseOrder", number, E_PO_CLOSED,
                                         f"Purchase order '{number}' is {state} and cannot be maintained"))
                return plan
        row = dict(existing) if existing else {c: None for c in headers.columns}
        if action == "D":
            def cancel() -> None:
                row.update({"OrderStatus": "*", "LastChangeDate": self.clock.now_datetime()})
                headers.upsert(row)
            plan["commit"] = cancel
            return plan
        supplier_code = _text(header, "Supplier") or (row.get("Supplier") or "")
        supplier = self.tables["ApSupplier"].get(supplier_code) if supplier_code else None
        if supplier is None:
            errors.append(FieldError("Supplier", supplier_code, E_SUPPLIER_NOT_FOUND, f"Supplier '{supplier_code}' not found"))
        elif supplier["OnHold"] == "Y" and action == "A":
            errors.append(FieldError("Supplier", supplier_code, E_SUPPLIER_ON_HOLD, f"Supplier '{supplier_code}' is on hold"))
        warehouse = (_text(header, "Warehouse") or row.get("Warehouse") or "WH01").upper()
        if warehouse not in WAREHOUSES:
            errors.append(FieldError("Warehouse", warehouse, E_WAREHOUSE_NOT_FOUND, f"Warehouse '{warehouse}' not found"))
        order_date = row.get("OrderEntryDate") or self.clock.now_datetime().date()
        due_date = row.get("OrderDueDate")
        for field, current in (("OrderDate", order_date), ("DueDate", due_date)):
            raw = _text(header, field)
            if raw:
                try:
                    parsed = datetime.strptime(raw, "%Y-%m-%d").date()
                except ValueError:
                    errors.append(FieldError(field, raw, E_BAD_DATE, f"Invalid date '{raw}'"))
                    continue
                if field == "OrderDate":
                    order_date = parsed
                else:
                    due_date = parsed
        current_lines = {line["Line"]: dict(line) for line in self._po_lines(number)} if existing else {}
        next_line = max(current_lines, default=0)
        new_lines = dict(current_lines)
        details = order.find("OrderDetails")
        for element in list(details) if details is not None else []:
            line_errs: list[FieldError] = []
            line_action = _flag(element, "LineActionType", "A")
            raw_line = _text(element, "PurchaseOrderLine")
            if line_action in ("C", "D"):
                try:
                    line_number = int(raw_line)
                except ValueError:
                    line_number = -1
                if line_number not in current_lines:
                    line_errs.append(FieldError("PurchaseOrderLine", raw_line, E_PO_LINE, f"Line '{raw_line}' not found on purchase order"))
                elif line_action == "D":
                    if (current_lines[line_number].get("MReceivedQty") or 0) > 0:
                        line_errs.append(FieldError("PurchaseOrderLine", raw_line, E_PO_LINE, f"Line '{raw_line}' has receipts and cannot be deleted"))
                    else:
                        new_lines.pop(line_number, None)
                if line_errs or line_action == "D":
                    line_errors.append(self._line_error_xml(element.tag, raw_line, line_errs))
                    continue
                line = dict(current_lines[line_number])
            else:
                next_line += 1
                line_number = next_line
                line = {c: None for c in self.tables["PorMasterDetail"].columns}
                line.update({"PurchaseOrder": number, "Line": line_number, "MReceivedQty": Decimal(0).quantize(Decimal("0.000001"))})
            self._apply_po_line(element, line, warehouse, due_date, allow_non_stock, allow_zero_price, line_errs)
            if line_errs:
                line_errors.append(self._line_error_xml(element.tag, str(line_number), line_errs))
            else:
                new_lines[line_number] = line
        if action == "A" and not new_lines and not line_errors:
            errors.append(FieldError("OrderDetails", "", E_REQUIRED, "At least one order line is required"))

        def commit() -> None:
            po = number or self._next_po_number()
            plan["number"] = po
            row.update({
                "PurchaseOrder": po, "Supplier": supplier["Supplier"] if supplier else supplier_code,
                "OrderStatus": row.get("OrderStatus") or status, "OrderEntryDate": order_date,
                "OrderDueDate": due_date or order_date + timedelta(days=14), "Warehouse": warehouse,
                "Buyer": _text(header, "Buyer") or row.get("Buyer") or "",
                "Currency": supplier["Currency"] if supplier else row.get("Currency") or "$",
                "CustomerPoNumber": _text(header, "CustomerPoNumber") or row.get("CustomerPoNumber") or "",
                "LastChangeDate": self.clock.now_datetime(),
            })
            headers.upsert(row)
            detail = self.tables["PorMasterDetail"]
            for old in current_lines:
                if old not in new_lines:
                    detail.delete(po, old)
            for line in new_lines.values():
                line["PurchaseOrder"] = po
                detail.upsert(line)

        plan["commit"] = commit
        return plan

    def _apply_po_line(self, element: ET.Element, line: dict[str, Any], warehouse: str, due_date: date | None,
                       allow_non_stock: bool, allow_zero_price: bool, errors: list[FieldError]) -> None:
        tag = element.tag
        if tag == "CommentLine":
            line.update({"LineType": "6", "MComment": _text(element, "Comment")})
            return
        if tag in ("FreightLine", "MiscChargeLine"):
            field = "FreightValue" if tag == "FreightLine" else "MiscChargeValue"
            raw = _text(element, field)
            value = _decimal(raw)
            if value is None or value < 0:
                errors.append(FieldError(field, raw, E_BAD_VALUE, f"Invalid {field} '{raw}'"))
                return
            line.update({"LineType": "4" if tag == "FreightLine" else "5", "MPrice": value.quantize(Decimal("0.00001")),
                         "MOrderQty": Decimal(1).quantize(Decimal("0.000001")),
                         "MStockDes": _text(element, "MiscDescription") or ("Freight" if tag == "FreightLine" else "Miscellaneous")})
            return
        if tag != "StockLine":
            errors.append(FieldError(tag, "", E_ACTION, f"Unknown order line type '{tag}'"))
            return
        stock_code = _text(element, "StockCode") or (line.get("MStockCode") or "")
        item = self.tables["InvMaster"].get(stock_code) if stock_code else None
        line_warehouse = (_text(element, "Warehouse") or line.get("MWarehouse") or warehouse).upper()
        if item is None and not allow_non_stock:
            errors.append(FieldError("StockCode", stock_code, E_STOCK_NOT_FOUND, f"Stock code '{stock_code}' not found"))
        elif item is None and not (_text(element, "StockDescription") or line.get("MStockDes")):
            errors.append(FieldError("StockDescription", "", E_REQUIRED, "Description is required for a non-stocked line"))
        if line_warehouse not in WAREHOUSES:
            errors.append(FieldError("Warehouse", line_warehouse, E_WAREHOUSE_NOT_FOUND, f"Warehouse '{line_warehouse}' not found"))
        elif item is not None and self.tables["InvWarehouse"].get(stock_code, line_warehouse) is None:
            errors.append(FieldError("Warehouse", line_warehouse, E_NOT_STOCKED,
                                     f"Stock code '{stock_code}' is not stocked in warehouse '{line_warehouse}'"))
        raw_qty = _text(element, "OrderQty") or (str(line["MOrderQty"]) if line.get("MOrderQty") is not None else "")
        qty = _decimal(raw_qty)
        if qty is None or qty <= 0:
            errors.append(FieldError("OrderQty", raw_qty, E_BAD_QUANTITY, f"Invalid order quantity '{raw_qty}'"))
        raw_price = _text(element, "Price") or (str(line["MPrice"]) if line.get("MPrice") is not None else "")
        price = _decimal(raw_price)
        if price is None or price < 0:
            errors.append(FieldError("Price", raw_price, E_BAD_VALUE, f"Invalid price '{raw_price}'"))
        elif price == 0 and not allow_zero_price:
            errors.append(FieldError("Price", raw_price, E_ZERO_PRICE, "Price may not be zero"))
        if errors:
            return
        raw_due = _text(element, "LatestDueDate")
        line_due = line.get("MLatestDueDate") or due_date
        if raw_due:
            try:
                line_due = datetime.strptime(raw_due, "%Y-%m-%d").date()
            except ValueError:
                errors.append(FieldError("LatestDueDate", raw_due, E_BAD_DATE, f"Invalid date '{raw_due}'"))
                return
        line.update({
            "LineType": "1" if item is not None else "7", "MStockCode": item["StockCode"] if item else stock_code,
            "MStockDes": _text(element, "StockDescription") or (item["Description"] if item else line.get("MStockDes") or ""),
            "MWarehouse": line_warehouse, "MOrderQty": qty.quantize(Decimal("0.000001")),  # type: ignore[union-attr]
            "MPrice": price.quantize(Decimal("0.00001")),  # type: ignore[union-attr]
            "MOrderUom": _text(element, "OrderUom") or (item["StockUom"] if item else line.get("MOrderUom") or "EA"),
            "MGlCode": _text(element, "LedgerCode") or line.get("MGlCode") or "", "MLatestDueDate": line_due, "MComment": "",
        })

    @staticmethod
    def _line_error_xml(tag: str, line: str, errors: list[FieldError]) -> str:
        if not errors:
            return ""
        return (f"<{tag}><PurchaseOrderLine>{escape(line)}</PurchaseOrderLine>"
                + "".join(error.xml() for error in errors) + f"</{tag}>")

    # ---- INVTMA: inventory adjustments -----------------------------------------------------------

    def _invtma(self, params: ET.Element | None, document: ET.Element | None) -> str:
        assert document is not None
        validate_only, whole_document = self._posting_flags(params)
        parameters = params.find("Parameters") if params is not None else None
        physical = _flag(parameters, "PhysicalCount", "N") == "Y"
        items = document.findall("Item")
        if not items:
            raise BusinessError("No items supplied in XmlIn")
        holdings = self.tables["InvWarehouse"]
        pending: dict[tuple[Any, ...], Decimal] = {}
        checked: list[tuple[ET.Element, list[FieldError], dict[str, Any] | None, Decimal]] = []
        for item in items:
            errors: list[FieldError] = []
            warehouse = _text(item, "Warehouse").upper()
            stock_code = _text(item, "StockCode")
            holding = None
            if not warehouse:
                errors.append(FieldError("Warehouse", "", E_REQUIRED, "Warehouse is required"))
            elif warehouse not in WAREHOUSES:
                errors.append(FieldError("Warehouse", warehouse, E_WAREHOUSE_NOT_FOUND, f"Warehouse '{warehouse}' not found"))
            if self.tables["InvMaster"].get(stock_code) is None:
                errors.append(FieldError("StockCode", stock_code, E_STOCK_NOT_FOUND, f"Stock code '{stock_code}' not found"))
            elif warehouse in WAREHOUSES:
                holding = holdings.get(stock_code, warehouse)
                if holding is None:
                    errors.append(FieldError("Warehouse", warehouse, E_NOT_STOCKED,
                                             f"Stock code '{stock_code}' is not stocked in warehouse '{warehouse}'"))
            raw_qty = _text(item, "Quantity")
            qty = _decimal(raw_qty)
            delta = Decimal(0)
            if qty is None or (not physical and qty == 0) or (physical and qty < 0):
                errors.append(FieldError("Quantity", raw_qty, E_BAD_QUANTITY, f"Invalid quantity '{raw_qty}'"))
            elif holding is not None:
                pk = holdings.pk(holding)
                on_hand = pending.get(pk, holding["QtyOnHand"])
                delta = (qty - on_hand) if physical else qty
                if on_hand + delta < 0 and not self.settings.allow_negative_stock:
                    errors.append(FieldError("Quantity", raw_qty, E_NEGATIVE_STOCK,
                                             f"Adjustment would make quantity on hand negative for stock code "
                                             f"'{stock_code}' in warehouse '{warehouse}'"))
                else:
                    pending[pk] = on_hand + delta
            checked.append((item, errors, holding, delta))
        invalid = sum(1 for _, errors, _, _ in checked if errors)
        apply = not validate_only and not (whole_document and invalid)
        if apply and invalid < len(checked):
            self._counters["inv_journal"] += 1
        body: list[str] = []
        processed = 0
        for number, (item, errors, holding, delta) in enumerate(checked, start=1):
            extra = ""
            if apply and not errors and holding is not None:
                processed += 1
                now = self.clock.now_datetime()
                updated = dict(holding)
                updated["QtyOnHand"] = (holding["QtyOnHand"] + delta).quantize(Decimal("0.000001"))
                updated["LastChangeDate"] = now
                holdings.upsert(updated)
                movement = {
                    "Journal": self._counters["inv_journal"], "JournalEntry": processed, "StockCode": holding["StockCode"],
                    "Warehouse": holding["Warehouse"], "TrnYear": now.year, "TrnMonth": now.month, "MovementType": "I",
                    "TrnType": "P" if physical else "A", "TrnQty": delta.quantize(Decimal("0.000001")),
                    "TrnValue": (delta * holding["UnitCost"]).quantize(Decimal("0.01")),
                    "Reference": _text(item, "Reference"), "Notation": _text(item, "Notation"), "EntryDate": now,
                }
                self.tables["InvMovements"].upsert(movement)
                extra = f"<Journal>{movement['Journal']}</Journal><JournalEntry>{movement['JournalEntry']}</JournalEntry>"
            body.append(
                f"<Item><Key><Warehouse>{escape(_text(item, 'Warehouse'))}</Warehouse><StockCode>{escape(_text(item, 'StockCode'))}</StockCode></Key>"
                + "".join(error.xml() for error in errors) + extra + f"<ItemNumber>{_zero_pad(number)}</ItemNumber></Item>\n"
            )
        body.append(self._status(processed, invalid))
        return self._envelope("postinvadjustments", "".join(body))

    # ---- APSSSP: supplier maintenance ---------------------------------------------------------------

    def _apsssp(self, method: str, params: ET.Element | None, document: ET.Element | None) -> str:
        assert document is not None
        validate_only, whole_document = self._posting_flags(params)
        items = document.findall("Item")
        if not items:
            raise BusinessError("No items supplied in XmlIn")
        suppliers = self.tables["ApSupplier"]
        plans: list[tuple[str, list[FieldError], Callable[[], None]]] = []
        seen: set[Any] = set()
        for item in items:
            errors: list[FieldError] = []
            code = _text(item.find("Key"), "Supplier")
            existing = suppliers.get(code) if code else None
            commit: Callable[[], None] = lambda: None
            if not code:
                errors.append(FieldError("Supplier", "", E_REQUIRED, "Supplier code is required"))
            elif len(code) > 15:
                errors.append(FieldError("Supplier", code, E_TOO_LONG, "Supplier code may not exceed 15 characters"))
            elif method == "Add" and (existing is not None or _norm(code) in seen):
                errors.append(FieldError("Supplier", code, E_SUPPLIER_EXISTS, f"Supplier '{code}' already exists"))
            elif method in ("Update", "Delete") and existing is None:
                errors.append(FieldError("Supplier", code, E_SUPPLIER_NOT_FOUND, f"Supplier '{code}' not found"))
            seen.add(_norm(code))
            values = {f: (item.findtext(f) or "").strip() for f in SUPPLIER_FIELDS if item.find(f) is not None}
            if method == "Add" and not values.get("SupplierName"):
                errors.append(FieldError("SupplierName", "", E_REQUIRED, "Supplier name is required"))
            if len(values.get("SupplierName", "")) > 50:
                errors.append(FieldError("SupplierName", values["SupplierName"], E_TOO_LONG, "Supplier name may not exceed 50 characters"))
            if "Currency" in values and values["Currency"] and values["Currency"] not in CURRENCIES:
                errors.append(FieldError("Currency", values["Currency"], E_BAD_CURRENCY, f"Currency '{values['Currency']}' not found"))
            if "OnHold" in values and values["OnHold"].upper() not in ("Y", "N"):
                errors.append(FieldError("OnHold", values["OnHold"], E_BAD_VALUE, "On hold must be 'Y' or 'N'"))
            if method == "Delete" and existing is not None and not errors:
                has_invoices = bool(self.tables["ApInvoice"].by_first_key.get(_norm(code)))
                has_orders = any(_norm(r["Supplier"]) == _norm(code) for r in self.tables["PorMasterHdr"].rows.values())
                if has_invoices or has_orders:
                    errors.append(FieldError("Supplier", code, E_HAS_TRANSACTIONS, f"Supplier '{code}' has transactions and cannot be deleted"))
            if not errors:
                commit = self._supplier_commit(method, code, existing, values)
            plans.append((code, errors, commit))
        invalid = sum(1 for _, errors, _ in plans if errors)
        apply = not validate_only and not (whole_document and invalid)
        body: list[str] = []
        for code, errors, commit in plans:
            if apply and not errors:
                commit()
            body.append(f"<item><key><supplier>{escape(code)}</supplier></key>"
                        + "".join(error.xml(lowercase=True) for error in errors) + "</item>\n")
        body.append(f"<StatusOfItems><RecordsRead>{len(plans)}</RecordsRead><RecordsInvalid>{invalid}</RecordsInvalid></StatusOfItems>\n")
        return self._envelope("setupapsupplier", "".join(body))

    def _supplier_commit(self, method: str, code: str, existing: dict[str, Any] | None,
                         values: dict[str, str]) -> Callable[[], None]:
        suppliers = self.tables["ApSupplier"]

        def commit() -> None:
            if method == "Delete":
                suppliers.delete(code)
                return
            row = dict(existing) if existing else {c: "" for c in suppliers.columns}
            if not existing:
                row.update({"Supplier": code.upper(), "Currency": "$", "OnHold": "N", "TermsCode": "30",
                            "DateSuppAdded": self.clock.now_datetime().date()})
            row.update({k: (v.upper() if k == "OnHold" else v) for k, v in values.items()})
            if not existing and not values.get("SupShortName"):
                row["SupShortName"] = values.get("SupplierName", "")[:20].upper()
            row["LastChangeDate"] = self.clock.now_datetime()
            suppliers.upsert(row)

        return commit

    # ---- OData -------------------------------------------------------------------------------------

    def _odata_auth(self, company: str) -> Response | None:
        auth = request.authorization
        if (auth is None or auth.type != "basic" or (auth.username or "").upper() != self.OPERATOR
                or auth.password != self.OPERATOR_PASSWORD):
            response = jsonify({"error": {"code": "", "message": "Authorization has been denied for this request."}})
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Basic realm="SYSPRO OData"'
            return response
        if company.upper() != self.COMPANY_ID:
            response = jsonify({"error": {"code": "", "message": f"Company '{company}' not found"}})
            response.status_code = 404
            return response
        return None

    def _odata_error(self, status: int, message: str) -> tuple[Response, int]:
        return jsonify({"error": {"code": "", "message": message}}), status

    def _odata_query(self, company: str, entity_set: str) -> Response | tuple[Response, int]:
        table = self.tables.get(entity_set)
        if table is None:
            return self._odata_error(404, f"No HTTP resource was found that matches the request URI '{request.url}'.")
        args = request.args
        try:
            node = parse_odata_filter(args.get("$filter", ""), table) if args.get("$filter") else ("true",)
            try:
                order = odata.parse_orderby(args.get("$orderby", ""), fold_direction=True, skip_empty=True)
            except ValueError as exc:
                raise QueryError(f"Invalid $orderby '{exc}'") from None
            for column, _ in order:
                if column not in table.columns:
                    raise QueryError(f"Invalid $orderby '{column}'")
            select = odata.split_names(args.get("$select"))
            for column in select:
                if column not in table.columns:
                    raise QueryError(f"Could not find a property named '{column}' on type '{table.name}'")
            top = int(args["$top"]) if "$top" in args else None
            skip = int(args.get("$skip", 0))
            if (top is not None and top < 0) or skip < 0:
                raise QueryError("$top and $skip must be non-negative")
        except (QueryError, ValueError) as exc:
            return self._odata_error(400, f"The query specified in the URI is not valid. {exc}")
        page = self.settings.odata_max_page_size
        take = page if top is None else min(top, page)
        with self.lock:
            rows, total = run_query(table, node, order or [(k, False) for k in table.key], limit=take + 1, skip=skip)
            if args.get("$count", "").lower() == "true" and total is None:
                total = len(run_query(table, node, [], limit=None)[0])
        more = len(rows) > take
        rows = rows[:take]
        body: dict[str, Any] = {"@odata.context": f"{self.base_url}{ODATA_SITE}/{company}/$metadata#{table.name}"}
        if args.get("$count", "").lower() == "true":
            body["@odata.count"] = total
        columns = select or list(table.columns)
        body["value"] = [{c: to_json(row.get(c)) for c in columns} for row in rows]
        remaining = None if top is None else top - take
        if more and (remaining is None or remaining > 0):
            params = {k: v for k, v in args.items() if k not in ("$skip", "$top")}
            params["$skip"] = str(skip + take)
            if remaining is not None:
                params["$top"] = str(remaining)
            from urllib.parse import urlencode

            body["@odata.nextLink"] = f"{self.base_url}{ODATA_SITE}/{company}/{table.name}?{urlencode(params)}"
        return jsonify(body)

