"""ServiceNow simulator: OAuth at `/oauth_token.do`, the Table API, the Import Set API with
transform maps, encoded queries, `X-Total-Count` / `Link` paging and optional per-hour
rate-limit rules.

Facts marked (unconfirmed) in the vendor notes are constructor settings or named constants
here, so a test can say which behaviour it relies on. Every stored value is a string, as
on the real instance; rows are replaced, never mutated, so they can be rendered outside
the lock. By default the instance is stock: no customer-made `u_` columns (unknown columns
are dropped silently on writes) and transform maps that coalesce on nothing; `custom_columns`
adds the columns a customer created, `u_correlation_id` then being the maps' coalesce key.
`sys_dictionary` lists every table's columns, as the instance's dictionary does.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import hmac
import json
import math
import random
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Literal
from urllib.parse import urlencode

from flask import Flask, Response, g, request
from pydantic import BaseModel, Field

from sandboxes.base import Sandbox, SandboxOptions
from sandboxes.kit.clock import SECOND_US, Clock
from sandboxes.kit.tokens import IssuedToken, TokenStore, basic_credentials

ACCESS_TOKEN_TTL = 1800  # seconds; the OAuth application registry's default access lifespan
REFRESH_TOKEN_TTL = 8_640_000  # 100 days; the registry's default refresh lifespan
DEFAULT_LIMIT = 10_000  # sysparm_limit default documented for the Table API
RATE_WINDOW_SECONDS = 3600  # rate-limit rules (sys_rate_limit_rules) count requests per hour
FAULT_RULE_LIMIT = 100  # the per-hour figure quoted on injected 429s when no rule is configured
QUERY_CACHE_SIZE = 32  # matched-id lists kept per table, so paging through a poll costs O(page)
ASYNC_TRANSFORM_DELAY = 0.05  # seconds before an insertMultiple import set is transformed
SEED_EPOCH = 1736121600  # 2025-01-06 00:00:00 UTC: seeded history starts here, whatever today is
SEED_SPAN = 180 * 86400  # seeded records were created over this many seconds
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
OAUTH_SCOPE = "useraccount"
# (unconfirmed) wording: newer releases say "User is not authenticated", older "User Not Authenticated".
UNAUTHENTICATED = ("User is not authenticated", "Required to provide Auth information")
NOT_FOUND = ("No Record found", "Record doesn't exist or ACL restricts the record retrieval")
SYS_FIELDS = ("sys_id", "sys_created_on", "sys_created_by", "sys_updated_on", "sys_updated_by", "sys_mod_count")
IMPORT_ROW_FIELDS = (
    "sys_import_set", "sys_import_row", "sys_import_state", "sys_import_state_comment",
    "sys_target_sys_id", "sys_target_table", "sys_transform_map", "sys_row_error",
)


# ---- table definitions --------------------------------------------------------------------


@dataclass(frozen=True)
class TableDef:
    """What the instance's dictionary says about one table."""

    columns: tuple[str, ...]
    references: dict[str, str] = field(default_factory=dict)  # column -> referenced table
    display: str = "name"  # the display column (reference display values, import results)
    mandatory: tuple[str, ...] = ()  # enforced by a data policy on insert and update
    number_prefix: str = ""  # auto-numbered tables ("PO0010001")


_SUPPLIER_COLUMNS = (
    "name", "legal_name", "company", "tax_id", "street", "city", "state", "zip", "country", "phone",
    "email", "website", "currency", "payment_term", "active", "erp_source", "u_correlation_id",
)
# A supplier's bank account (payment details); staging names are snake_case labels (unconfirmed).
_SUPPLIER_PAYMENT_COLUMNS = (
    "supplier", "bank_name", "account_name", "bank_account_number", "routing_number", "iban", "swift_code",
    "currency", "primary", "active", "u_correlation_id",
)
_PO_STAGING_COLUMNS = (
    "erp_po_number", "erp_source", "legal_entity", "order_type", "po_amount", "po_amount_currency",
    "po_status", "supplier_company_name", "payment_term", "cost_center", "order_date", "u_correlation_id",
)
_PO_LINE_STAGING_COLUMNS = (
    "purchase_order", "line_number", "description", "quantity", "unit_price", "line_amount",
    "cost_center", "u_correlation_id",
)
# Invoice staging column names are snake_case forms of the documented labels (unconfirmed).
_INVOICE_STAGING_COLUMNS = (
    "external_invoice_number", "external_invoice_source", "erp_source", "invoice_date", "other_charges",
    "amount_invoiced", "currency", "discounts", "final_tax", "invoice_type", "legal_entity",
    "purchase_order", "erp_number", "payment_terms", "invoice_line_count", "supplier", "due_date",
    "remit_to_street", "remit_to_city", "remit_to_state", "remit_to_zip", "remit_to_country",
    "u_correlation_id",
)
_INVOICE_LINE_STAGING_COLUMNS = (
    "invoice", "line_number", "description", "quantity", "unit_price", "line_amount", "cost_center",
    "gl_account", "u_correlation_id",
)

TABLES: dict[str, TableDef] = {
    "sys_user": TableDef(("user_name", "first_name", "last_name", "name", "email", "active"), display="name"),
    "core_company": TableDef(
        ("name", "vendor", "customer", "manufacturer", "vendor_type", "street", "city", "state", "zip",
         "country", "phone", "fax", "website", "notes", "parent", "u_correlation_id"),
        references={"parent": "core_company"}, mandatory=("name",),
    ),
    "sn_fin_supplier": TableDef(_SUPPLIER_COLUMNS, references={"company": "core_company"}, mandatory=("name",)),
    "sn_fin_supplier_payment": TableDef(_SUPPLIER_PAYMENT_COLUMNS, references={"supplier": "sn_fin_supplier"},
                                        display="bank_name", mandatory=("supplier",)),
    "cmn_cost_center": TableDef(
        ("name", "account_number", "manager", "parent", "valid_from", "valid_to", "location", "u_correlation_id"),
        references={"manager": "sys_user", "parent": "cmn_cost_center"}, mandatory=("name",),
    ),
    "sn_fin_gl_account": TableDef(("name", "account_number", "account_type", "active"), mandatory=("name",)),
    "sn_shop_purchase_order": TableDef(
        ("number", "erp_number", "supplier", "legal_entity", "order_type", "total_amount", "currency",
         "status", "payment_term", "cost_center", "erp_source", "order_date", "u_correlation_id"),
        references={"supplier": "sn_fin_supplier", "cost_center": "cmn_cost_center"},
        display="number", number_prefix="PO",
    ),
    "sn_shop_purchase_order_line": TableDef(
        ("purchase_order", "line_number", "description", "quantity", "unit_price", "amount", "cost_center",
         "u_correlation_id"),
        references={"purchase_order": "sn_shop_purchase_order", "cost_center": "cmn_cost_center"},
        display="description", mandatory=("purchase_order",),
    ),
    "sn_shop_invoice": TableDef(
        ("number", "external_invoice_number", "external_invoice_source", "erp_source", "invoice_date",
         "due_date", "other_charges", "total_amount", "currency", "discounts", "tax_amount", "invoice_type",
         "legal_entity", "purchase_order", "supplier", "erp_number", "payment_terms", "status",
         "u_correlation_id"),
        references={"purchase_order": "sn_shop_purchase_order", "supplier": "sn_fin_supplier"},
        display="number", number_prefix="INV",
    ),
    "sn_shop_invoice_line": TableDef(
        ("invoice", "line_number", "description", "quantity", "unit_price", "amount", "cost_center",
         "gl_account", "u_correlation_id"),
        references={"invoice": "sn_shop_invoice", "cost_center": "cmn_cost_center"},
        display="description", mandatory=("invoice",),
    ),
    "proc_po": TableDef(
        ("number", "vendor", "short_description", "status", "total_cost", "po_date", "u_correlation_id"),
        references={"vendor": "core_company"}, display="number", number_prefix="PO",
    ),
    "proc_po_item": TableDef(
        ("purchase_order", "short_description", "ordered_quantity", "cost", "total_cost", "status"),
        references={"purchase_order": "proc_po"}, display="short_description",
    ),
    "sys_import_set": TableDef(("number", "table_name", "state", "mode", "multi_import_set"), display="number"),
    "sys_multi_import_set": TableDef(("number", "state"), display="number"),
    "sn_fcms_intg_imp_supplier": TableDef(_SUPPLIER_COLUMNS + IMPORT_ROW_FIELDS),
    "sn_fcms_intg_supplier_payment_inbound_stage": TableDef(_SUPPLIER_PAYMENT_COLUMNS + IMPORT_ROW_FIELDS,
                                                            display="bank_name"),
    "sn_fcms_intg_imp_order": TableDef(_PO_STAGING_COLUMNS + IMPORT_ROW_FIELDS, display="erp_po_number"),
    "sn_fcms_intg_imp_order_line": TableDef(_PO_LINE_STAGING_COLUMNS + IMPORT_ROW_FIELDS, display="description"),
    "sn_fcms_intg_imp_receipt": TableDef(("erp_receipt_number", "purchase_order", "u_correlation_id") + IMPORT_ROW_FIELDS),
    "sn_spend_intg_imp_invoice": TableDef(_INVOICE_STAGING_COLUMNS + IMPORT_ROW_FIELDS, display="external_invoice_number"),
    "sn_spend_intg_imp_invoice_line": TableDef(_INVOICE_LINE_STAGING_COLUMNS + IMPORT_ROW_FIELDS, display="description"),
}


# ---- transform maps -----------------------------------------------------------------------


class ReferenceRule(BaseModel):
    """How a transform resolves a staged value into a reference (sys_id, else a match field)."""

    table: str
    match_fields: list[str] = Field(default_factory=lambda: ["name"])
    on_missing: Literal["reject", "ignore", "create"] = "reject"


class TransformMap(BaseModel):
    """A transform map: field map, coalesce key, reference rules and the script's checks."""

    name: str
    source_table: str
    target_table: str
    field_map: dict[str, str] = Field(default_factory=dict)  # staging column -> target column
    auto_map: bool = True  # staging columns named like a target column are copied as they are
    copy_empty: bool = False  # the map's "Copy empty fields" box: off, so blanks never wipe a target
    coalesce: list[str] = Field(default_factory=list)  # target columns identifying an existing row
    references: dict[str, ReferenceRule] = Field(default_factory=dict)  # keyed by target column
    choices: dict[str, list[str]] = Field(default_factory=dict)  # target column -> allowed values
    required: list[str] = Field(default_factory=list)  # staging columns the transform script demands
    date_fields: list[str] = Field(default_factory=list)  # staging columns that must be yyyy-mm-dd
    defaults: dict[str, str] = Field(default_factory=dict)  # target values the map always sets
    order: int = 100


def default_transform_maps(coalesce_column: str | None = None) -> list[TransformMap]:
    """The Source-to-Pay inbound maps for the staging tables the pair writes.

    A stock instance has no customer column to coalesce on and its maps document none, so by
    default every staged row inserts: a re-sent record becomes a second one unless the writer
    finds the existing target first. `coalesce_column` is the option a customer turns on (a
    `u_` column they added to the tables and made the maps' coalesce key)."""
    key = [coalesce_column] if coalesce_column else []
    supplier_ref = ReferenceRule(table="sn_fin_supplier", match_fields=["u_correlation_id", "name"])
    cost_center_ref = ReferenceRule(table="cmn_cost_center", match_fields=["account_number", "name"], on_missing="ignore")
    return [
        TransformMap(
            name="Supplier Inbound", source_table="sn_fcms_intg_imp_supplier", target_table="sn_fin_supplier",
            coalesce=key, required=["name"],
            references={"company": ReferenceRule(table="core_company", on_missing="ignore")},
        ),
        TransformMap(
            name="Supplier Payment Inbound", source_table="sn_fcms_intg_supplier_payment_inbound_stage",
            target_table="sn_fin_supplier_payment", coalesce=key, required=["supplier", "bank_account_number"],
            references={"supplier": supplier_ref},
        ),
        TransformMap(
            name="Purchase Order Inbound", source_table="sn_fcms_intg_imp_order", target_table="sn_shop_purchase_order",
            field_map={"erp_po_number": "erp_number", "po_amount": "total_amount", "po_amount_currency": "currency",
                       "po_status": "status", "supplier_company_name": "supplier"},
            coalesce=key, required=["erp_po_number", "supplier_company_name"],
            date_fields=["order_date"],
            references={"supplier": supplier_ref, "cost_center": cost_center_ref},
            choices={"order_type": ["Standard", "Blanket"]},
        ),
        TransformMap(
            name="Purchase Order Line Inbound", source_table="sn_fcms_intg_imp_order_line",
            target_table="sn_shop_purchase_order_line", field_map={"line_amount": "amount"},
            coalesce=key, required=["purchase_order", "line_number"],
            references={
                "purchase_order": ReferenceRule(table="sn_shop_purchase_order", match_fields=["u_correlation_id", "erp_number"]),
                "cost_center": cost_center_ref,
            },
        ),
        TransformMap(
            name="Invoice Inbound", source_table="sn_spend_intg_imp_invoice", target_table="sn_shop_invoice",
            field_map={"amount_invoiced": "total_amount", "final_tax": "tax_amount"},
            coalesce=key,
            required=["external_invoice_number", "external_invoice_source", "erp_source", "invoice_date", "other_charges"],
            date_fields=["invoice_date", "due_date"],
            references={
                "supplier": supplier_ref,
                "purchase_order": ReferenceRule(table="sn_shop_purchase_order", match_fields=["u_correlation_id", "erp_number"],
                                                on_missing="ignore"),
            },
            defaults={"status": "pending"},
        ),
        TransformMap(
            name="Invoice Line Inbound", source_table="sn_spend_intg_imp_invoice_line", target_table="sn_shop_invoice_line",
            field_map={"line_amount": "amount"}, coalesce=key, required=["invoice", "line_number"],
            references={
                "invoice": ReferenceRule(table="sn_shop_invoice", match_fields=["u_correlation_id", "external_invoice_number"]),
                "cost_center": cost_center_ref,
            },
        ),
    ]


# ---- encoded queries ------------------------------------------------------------------------

_OPERATORS = (
    "!=", ">=", "<=", "NOT LIKE", "NOTLIKE", "NOT IN", "NOTIN", "ISNOTEMPTY", "ISEMPTY", "STARTSWITH",
    "ENDSWITH", "BETWEEN", "ANYTHING", "NSAMEAS", "SAMEAS", "LIKE", "IN", "=", ">", "<",
)
_CONDITION = re.compile(r"^([a-z_][a-z0-9_]*)(" + "|".join(re.escape(op) for op in _OPERATORS) + r")(.*)$", re.S)
_DATE_GENERATE = re.compile(r"^javascript:gs\.dateGenerate\('(\d{4}-\d{2}-\d{2})',\s*'(\d{2}:\d{2}:\d{2})'\)$")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_SYS_ID = re.compile(r"^[0-9a-f]{32}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ESCAPED_CARET = "\x00"


def _compare(left: str, right: str) -> int:
    """Numbers compare as numbers, everything else (dates included) as text."""
    if _NUMBER.match(left) and _NUMBER.match(right):
        a, b = float(left), float(right)
    else:
        a, b = left, right  # type: ignore[assignment]
    return (a > b) - (a < b)


def _sort_key(value: str) -> tuple[int, float, str]:
    return (0, float(value), "") if _NUMBER.match(value) else (1, 0.0, value)


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: str

    def compile(self) -> Callable[[dict[str, str]], bool]:
        f, v, op = self.field, self.value, self.op
        if op == "=":
            return lambda r: r.get(f, "") == v
        if op == "!=":
            return lambda r: r.get(f, "") != v
        if op in (">", ">=", "<", "<="):
            wanted = {">": (1,), ">=": (0, 1), "<": (-1,), "<=": (-1, 0)}[op]
            return lambda r: (x := r.get(f, "")) != "" and _compare(x, v) in wanted
        if op == "BETWEEN":
            low, _, high = v.partition("@")
            return lambda r: (x := r.get(f, "")) != "" and _compare(x, low) >= 0 and _compare(x, high) <= 0
        if op in ("LIKE", "NOT LIKE", "NOTLIKE"):
            needle, negate = v.lower(), op != "LIKE"
            return lambda r: (needle in r.get(f, "").lower()) != negate
        if op == "STARTSWITH":
            return lambda r: r.get(f, "").lower().startswith(v.lower())
        if op == "ENDSWITH":
            return lambda r: r.get(f, "").lower().endswith(v.lower())
        if op in ("IN", "NOT IN", "NOTIN"):
            options, negate = frozenset(v.split(",")), op != "IN"
            return lambda r: (r.get(f, "") in options) != negate
        if op == "ISEMPTY":
            return lambda r: r.get(f, "") == ""
        if op == "ISNOTEMPTY":
            return lambda r: r.get(f, "") != ""
        if op == "SAMEAS":
            return lambda r: r.get(f, "") == r.get(v, "")
        if op == "NSAMEAS":
            return lambda r: r.get(f, "") != r.get(v, "")
        return lambda r: True  # ANYTHING


@dataclass
class Query:
    """A parsed encoded query: `^NQ` branches of AND-ed OR-groups, plus ORDERBY clauses."""

    branches: list[list[list[Condition]]]
    order: list[tuple[str, bool]]  # (column, descending)
    ignored: list[str]  # clauses dropped as invalid, as the instance does by default

    def matcher(self) -> Callable[[dict[str, str]], bool] | None:
        if not self.branches:
            return None
        compiled = [[[c.compile() for c in group] for group in branch] for branch in self.branches]
        if len(compiled) == 1 and all(len(group) == 1 for group in compiled[0]):
            checks = [group[0] for group in compiled[0]]
            return lambda row: all(check(row) for check in checks)
        return lambda row: any(all(any(p(row) for p in group) for group in branch) for branch in compiled)

    def and_conditions(self) -> list[Condition]:
        """Conditions every match must meet (single-branch queries only), for index use."""
        if len(self.branches) != 1:
            return []
        return [group[0] for group in self.branches[0] if len(group) == 1]


def _clean_value(value: str) -> str | None:
    value = value.replace(_ESCAPED_CARET, "^")
    if value.startswith("javascript:"):
        match = _DATE_GENERATE.match(value)
        return f"{match.group(1)} {match.group(2)}" if match else None
    return value


def parse_query(text: str, columns: set[str], pairs: Iterable[tuple[str, str]] = ()) -> Query:
    """Parse `sysparm_query` (plus plain name=value parameters) against a table's columns."""
    branches: list[list[list[Condition]]] = []
    order: list[tuple[str, bool]] = []
    ignored: list[str] = []
    text = (text or "").replace("^^", _ESCAPED_CARET)
    for branch_text in text.split("^NQ") if text else []:
        branch: list[list[Condition]] = []
        for token in branch_text.split("^"):
            if not token or token == "EQ" or token.startswith("GROUPBY"):
                continue
            if token.startswith("ORDERBYDESC"):
                order.append((token[len("ORDERBYDESC"):], True))
                continue
            if token.startswith("ORDERBY"):
                order.append((token[len("ORDERBY"):], False))
                continue
            joins_previous = token.startswith("OR") and bool(branch)
            condition = _parse_condition(token[2:] if joins_previous else token, columns)
            if condition is None:
                ignored.append(token)
                continue
            if joins_previous:
                branch[-1].append(condition)
            else:
                branch.append([condition])
        if branch:
            branches.append(branch)
    pair_conditions = [[Condition(k, "=", v)] for k, v in pairs if k in columns]
    ignored.extend(k for k, _ in pairs if k not in columns)
    if pair_conditions:
        branches = [branch + pair_conditions for branch in branches] or [pair_conditions]
    order = [(column, desc) for column, desc in order if column in columns]
    return Query(branches, order, ignored)


def _parse_condition(token: str, columns: set[str]) -> Condition | None:
    match = _CONDITION.match(token)
    if not match or match.group(1) not in columns:
        return None
    column, op, raw = match.groups()
    value = _clean_value(raw)
    if value is None:
        return None
    return Condition(column, op, value)


# ---- storage --------------------------------------------------------------------------------


class Table:
    """One table's rows, with a sorted sys_updated_on index, lazy equality indexes and a
    small cache of matched ids that any write invalidates."""

    def __init__(self, name: str, definition: TableDef | None) -> None:
        self.name = name
        self.definition = definition or TableDef(())
        self.declared = definition is not None  # declared tables drop unknown columns on writes
        self.columns: set[str] = set(SYS_FIELDS) | set(self.definition.columns)
        self.rows: dict[str, dict[str, str]] = {}
        self.seq: dict[str, int] = {}
        self.by_updated: list[tuple[str, str]] = []
        self.indexes: dict[str, dict[str, set[str]]] = {}
        self.cache: OrderedDict[Any, list[str]] = OrderedDict()
        self._next_seq = 0

    def insert(self, row: dict[str, str]) -> None:
        sys_id = row["sys_id"]
        self.rows[sys_id] = row
        self.seq[sys_id] = self._next_seq
        self._next_seq += 1
        bisect.insort(self.by_updated, (row["sys_updated_on"], sys_id))
        for column, index in self.indexes.items():
            index.setdefault(row.get(column, ""), set()).add(sys_id)
        self.columns.update(row)
        self.cache.clear()

    def replace(self, new: dict[str, str]) -> None:
        sys_id = new["sys_id"]
        old = self.rows[sys_id]
        self.rows[sys_id] = new
        if old["sys_updated_on"] != new["sys_updated_on"]:
            self._unindex_updated(old)
            bisect.insort(self.by_updated, (new["sys_updated_on"], sys_id))
        for column, index in self.indexes.items():
            before, after = old.get(column, ""), new.get(column, "")
            if before != after:
                index.get(before, set()).discard(sys_id)
                index.setdefault(after, set()).add(sys_id)
        self.columns.update(new)
        self.cache.clear()

    def delete(self, sys_id: str) -> None:
        old = self.rows.pop(sys_id)
        self.seq.pop(sys_id, None)
        self._unindex_updated(old)
        for column, index in self.indexes.items():
            index.get(old.get(column, ""), set()).discard(sys_id)
        self.cache.clear()

    def index(self, column: str) -> dict[str, set[str]]:
        index = self.indexes.get(column)
        if index is None:
            index = {}
            for sys_id, row in self.rows.items():
                index.setdefault(row.get(column, ""), set()).add(sys_id)
            self.indexes[column] = index
        return index

    def find(self, column: str, value: str) -> list[str]:
        """Ids whose `column` equals `value`, oldest first."""
        if column == "sys_id":
            return [value] if value in self.rows else []
        return sorted(self.index(column).get(value, ()), key=self.seq.__getitem__)

    def _unindex_updated(self, row: dict[str, str]) -> None:
        key = (row["sys_updated_on"], row["sys_id"])
        position = bisect.bisect_left(self.by_updated, key)
        if position < len(self.by_updated) and self.by_updated[position] == key:
            del self.by_updated[position]


@dataclass
class _ImportSet:
    sys_id: str
    number: str
    staging_table: str
    mode: str
    pending: list[str] = field(default_factory=list)  # staging row ids awaiting an async transform


class _OAuthTokens(TokenStore):
    """ServiceNow's tokens: refresh tokens live 100 days and can be reused until they expire."""

    def __init__(self, refresh_ttl: float) -> None:
        super().__init__()
        self.refresh_ttl = refresh_ttl

    def issue(self, subject: str, ttl: float, *, scopes: tuple[str, ...] = (), with_refresh: bool = False,
              extra: dict[str, Any] | None = None) -> tuple[str, str | None]:
        access, refresh = super().issue(subject, ttl, scopes=scopes, with_refresh=with_refresh, extra=extra)
        if refresh:
            with self._lock:
                self._refresh[refresh].expires_at = time.time() + self.refresh_ttl
        return access, refresh

    def peek_refresh(self, refresh: str) -> IssuedToken | None:
        with self._lock:
            issued = self._refresh.get(refresh)
            return issued if issued and issued.expires_at > time.time() else None


def _sn_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json")
    if headers:
        response.headers.update(headers)
    return response


def sn_error(status: int, message: str, detail: str | None = None, headers: dict[str, str] | None = None) -> Response:
    """The Table/Import Set API error envelope."""
    return _sn_json({"error": {"message": message, "detail": detail}, "status": "failure"}, status, headers)


def _as_string(value: Any) -> str:
    """Values are stored as strings; nested JSON is flattened with ':' turned into '='."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":")).replace(":", "=")
    return str(value)


def _int_arg(raw: str | None, default: int) -> int:
    try:
        return int(raw) if raw not in (None, "") else default
    except ValueError:
        return default


def _flag(raw: str | None) -> bool:
    return (raw or "").lower() == "true"


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison that also takes non-ASCII input (a 401, never a 500)."""
    return hmac.compare_digest(given.encode(), expected.encode())


# ---- the sandbox ------------------------------------------------------------------------------


class ServiceNowSandbox(Sandbox):
    """A ServiceNow instance: tables in memory, OAuth, the Table and Import Set APIs."""

    vendor = "servicenow"

    def __init__(
        self,
        options: SandboxOptions | None = None,
        *,
        allow_basic: bool = True,
        allow_client_credentials: bool = True,
        rotate_refresh_tokens: bool = False,  # (unconfirmed) refresh grants answer the same refresh token
        rate_window_seconds: float = RATE_WINDOW_SECONDS,
        invalid_query_returns_no_rows: bool = False,  # glide.invalid_query.returns_no_rows
        insert_multiple_sync: bool = False,  # a sys_rest_insert_multiple entry set to synchronous
        mandatory_status: int = 400,  # (unconfirmed) some releases answer data-policy failures with 403
        custom_columns: tuple[str, ...] = (),  # u_ columns a customer added; a stock instance has none
    ) -> None:
        self.custom_columns = tuple(custom_columns)
        self.allow_basic = allow_basic
        self.allow_client_credentials = allow_client_credentials
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.rate_window_seconds = rate_window_seconds
        self.invalid_query_returns_no_rows = invalid_query_returns_no_rows
        self.insert_multiple_sync = insert_multiple_sync
        self.mandatory_status = mandatory_status
        seed = (options or SandboxOptions()).seed
        secret_rng = random.Random(f"servicenow-credentials-{seed}")
        self.client_id = f"{secret_rng.getrandbits(128):032x}"
        self.client_secret = "".join(secret_rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!$")
                                     for _ in range(24))
        self.username = "ml.integration"
        self.password = f"Sn-{secret_rng.getrandbits(64):016x}!"
        self.rate_rule_id = f"{secret_rng.getrandbits(128):032x}"
        self._rate_lock = threading.Lock()
        self._rate_counts: dict[tuple[str, str], tuple[float, int]] = {}
        self._tables: dict[str, Table] = {}
        self._maps: dict[str, list[TransformMap]] = {}
        self._import_sets: dict[str, _ImportSet] = {}
        self._open_sets: dict[str, str] = {}
        self._counters: dict[str, int] = {}
        self.clock = Clock(SECOND_US)  # sys_updated_on is written to the second
        self._generation = 0
        self._tick_rng = random.Random(seed + 2)
        super().__init__(options)
        self.tokens = _OAuthTokens(REFRESH_TOKEN_TTL)

    # ---- Sandbox hooks ----------------------------------------------------------------------

    @property
    def access_ttl(self) -> float:
        return float(self.options.token_ttl or ACCESS_TOKEN_TTL)

    @property
    def rate_limit(self) -> float | None:
        """Requests per rule window per user and REST resource; None: no rule (the default)."""
        return self.options.rate_limit or None

    def info(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "api_base": self.base_url,
            "token_url": f"{self.base_url}/oauth_token.do",
            "credentials": {
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "username": self.username,
                "password": self.password,
            },
        }

    def clear_state(self) -> None:
        self._tables = {}
        self._maps = {}
        self._import_sets = {}
        self._open_sets = {}
        self._counters = {}
        self._generation += 1
        self._tick_rng = random.Random(self.options.seed + 2)
        with self._rate_lock:
            self._rate_counts.clear()
        coalesce = "u_correlation_id" if "u_correlation_id" in self.custom_columns else None
        for tmap in default_transform_maps(coalesce):
            self._register_map(tmap)

    def seed(self, rng: random.Random, records: int) -> None:
        _Seeder(self, rng, max(0, records)).run()

    def get_entities(self, entity: str) -> list[dict[str, Any]]:
        if entity == "transform_maps":
            return [m.model_dump() for maps in self._maps.values() for m in maps]
        table = self._tables.get(ENTITY_ALIASES.get(entity, entity))
        if table is None:
            raise KeyError(entity)
        return [dict(row) for row in table.rows.values()]

    def put_entity(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Create or change a record of any table (aliases: suppliers, purchase_orders, ...);
        `transform_maps` registers a transform map. System fields given here are honoured."""
        if entity == "transform_maps":
            tmap = TransformMap.model_validate(payload)
            self._register_map(tmap)
            return tmap.model_dump()
        table = self._table(ENTITY_ALIASES.get(entity, entity), create=True)
        values = {k: _as_string(v) for k, v in payload.items()}
        table.columns.update(k for k in values if k not in SYS_FIELDS)
        sys_id = values.get("sys_id", "")
        if sys_id in table.rows:
            return dict(self._update(table, sys_id, values, user="admin", honour_sys=True))
        return dict(self._insert(table, values, user="admin", honour_sys=True))

    def tick(self, count: int) -> list[dict[str, Any]]:
        changed: list[dict[str, Any]] = []
        keys = {name: list(self._tables[name].rows) for name in TICK_CHANGES if name in self._tables}
        candidates = [name for name, ids in keys.items() if ids]
        for i in range(max(0, count) if candidates else 0):
            table = self._tables[candidates[i % len(candidates)]]
            sys_id = self._tick_rng.choice(keys[table.name])
            column, make = TICK_CHANGES[table.name]
            row = self._update(table, sys_id, {column: make(self._tick_rng, table.rows[sys_id].get(column, ""))},
                               user="system", force=True)
            changed.append({"table": table.name, "sys_id": sys_id, "field": column,
                            "sys_updated_on": row["sys_updated_on"], "sys_mod_count": row["sys_mod_count"]})
        return changed

    def rate_limited_response(self, retry_after: float) -> Response:
        wait = max(1, math.ceil(retry_after))
        limit = int(self.rate_limit or FAULT_RULE_LIMIT)
        resource = "Import Set API" if "/import/" in request.path else "Table API"
        return sn_error(
            429, "Rate limit exceeded",
            f"Rate limit of {limit} requests per hour for {resource} exceeded",
            headers={"Retry-After": str(wait), "X-RateLimit-Limit": str(limit),
                     "X-RateLimit-Reset": str(int(time.time() + wait)), "X-RateLimit-Rule": self.rate_rule_id},
        )

    def error_response(self, status: int, message: str) -> Response:
        return sn_error(status, message, "The instance could not process the request")

    # ---- state helpers (callers hold self.lock) ---------------------------------------------

    def _clock(self) -> str:
        """UTC 'YYYY-MM-DD HH:MM:SS' that never runs backwards; equal values are normal."""
        return time.strftime(TIME_FORMAT, time.gmtime(self.clock.now_whole_seconds()))

    def _new_sys_id(self) -> str:
        return f"{random.getrandbits(128):032x}"

    def _next_number(self, prefix: str, start: int = 10001, width: int = 7) -> str:
        value = self._counters.get(prefix, start)
        self._counters[prefix] = value + 1
        return f"{prefix}{value:0{width}d}"

    def _table(self, name: str, create: bool = False) -> Table:
        table = self._tables.get(name)
        if table is None:
            definition = self._definition(name)
            if definition is None and not create:
                raise KeyError(name)
            table = self._tables[name] = Table(name, definition)
        return table

    def _definition(self, name: str) -> TableDef | None:
        """The table as this instance's dictionary has it: customer-made `u_` columns only
        when the instance was given them (a stock instance has none)."""
        definition = TABLES.get(name)
        if definition is None:
            return None
        columns = tuple(c for c in definition.columns if not c.startswith("u_") or c in self.custom_columns)
        return replace(definition, columns=columns)

    def _dictionary(self) -> Table:
        """`sys_dictionary` as the Table API reads it: one row per column of every known table
        (`name` the table, `element` the column), built from the tables as they stand now."""
        dictionary = Table("sys_dictionary", TableDef(("name", "element", "internal_type", "column_label"),
                                                      display="element"))
        names = sorted(set(TABLES) | set(self._tables))
        for name in names:
            table = self._table(name, create=True)
            for column in sorted(table.columns):
                row = {"sys_id": hashlib.md5(f"{name}.{column}".encode()).hexdigest(), "name": name, "element": column,
                       "internal_type": "string", "column_label": column.replace("_", " ").capitalize(),
                       "sys_created_on": "2025-01-06 00:00:00", "sys_created_by": "system",
                       "sys_updated_on": "2025-01-06 00:00:00", "sys_updated_by": "system", "sys_mod_count": "0"}
                dictionary.insert(row)
        return dictionary

    def _register_map(self, tmap: TransformMap) -> None:
        self._table(tmap.source_table, create=True)
        self._table(tmap.target_table, create=True)
        maps = [m for m in self._maps.get(tmap.source_table, []) if m.name != tmap.name]
        self._maps[tmap.source_table] = sorted(maps + [tmap], key=lambda m: m.order)

    def _insert(self, table: Table, values: dict[str, str], *, user: str, honour_sys: bool = False) -> dict[str, str]:
        now = self._clock()
        row = {column: "" for column in table.definition.columns}
        row.update({k: v for k, v in values.items() if k not in SYS_FIELDS})
        sys_id = values.get("sys_id", "")
        if not (_SYS_ID.match(sys_id) and sys_id not in table.rows):
            sys_id = self._new_sys_id()
        row.update(sys_id=sys_id, sys_created_on=now, sys_created_by=user, sys_updated_on=now,
                   sys_updated_by=user, sys_mod_count="0")
        if honour_sys:
            row.update({k: v for k, v in values.items() if k in SYS_FIELDS and k != "sys_id" and v})
        prefix = table.definition.number_prefix
        if prefix and not row.get("number"):
            row["number"] = self._next_number(prefix)
        table.insert(row)
        return row

    def _update(self, table: Table, sys_id: str, values: dict[str, str], *, user: str,
                honour_sys: bool = False, force: bool = False) -> dict[str, str]:
        """Apply changes; like GlideRecord, an update that changes nothing touches nothing."""
        old = table.rows[sys_id]
        changes = {k: v for k, v in values.items() if k not in SYS_FIELDS and old.get(k) != v}
        system = {k: v for k, v in values.items() if honour_sys and k in SYS_FIELDS and k != "sys_id" and v}
        if not changes and not system and not force:
            return old
        new = {**old, **changes}
        new.update(sys_updated_on=self._clock(), sys_updated_by=user, sys_mod_count=str(int(old["sys_mod_count"] or 0) + 1))
        new.update(system)
        table.replace(new)
        return new

    def _writable(self, table: Table, body: dict[str, Any], *, input_display: bool) -> dict[str, str]:
        """Request values as strings, dropping columns the table does not have (as the instance does)."""
        values: dict[str, str] = {}
        for key, raw in body.items():
            if key in SYS_FIELDS and key != "sys_id":
                continue
            if table.declared and key not in table.columns:
                continue
            value = _as_string(raw)
            ref_table = table.definition.references.get(key)
            if input_display and ref_table and value:
                value = self._resolve_display(ref_table, value)
            values[key] = value
        return values

    def _resolve_display(self, table_name: str, value: str) -> str:
        target = self._tables.get(table_name)
        if target is None or value in target.rows:
            return value
        found = target.find(target.definition.display, value)
        return found[0] if found else value

    def _missing_mandatory(self, table: Table, row: dict[str, str]) -> list[str]:
        return [c for c in table.definition.mandatory if not row.get(c)]

    def _select(self, table: Table, query: Query) -> list[str]:
        """Matching ids in the query's order, cached until the table next changes."""
        key = (repr(query.branches), tuple(query.order))
        cached = table.cache.get(key)
        if cached is not None:
            table.cache.move_to_end(key)
            return cached
        ordered = False
        candidates: Iterable[str]
        conditions = query.and_conditions()
        equality = next((c for c in conditions if c.op == "="), None)
        ranges = [c for c in conditions if c.field == "sys_updated_on" and c.op in (">", ">=", "<", "<=")]
        updated_first = bool(query.order) and query.order[0] == ("sys_updated_on", False) and \
            all(col == "sys_id" and not desc for col, desc in query.order[1:2]) and len(query.order) <= 2
        if equality is not None:
            candidates = table.find(equality.field, equality.value)
        elif ranges or updated_first:
            low, high = 0, len(table.by_updated)
            for c in ranges:
                if c.op == ">=":
                    low = max(low, bisect.bisect_left(table.by_updated, (c.value, "")))
                elif c.op == ">":
                    low = max(low, bisect.bisect_right(table.by_updated, (c.value, "\x7f")))
                elif c.op == "<":
                    high = min(high, bisect.bisect_left(table.by_updated, (c.value, "")))
                else:
                    high = min(high, bisect.bisect_right(table.by_updated, (c.value, "\x7f")))
            candidates = [sys_id for _, sys_id in table.by_updated[low:high]]
            ordered = updated_first
        else:
            candidates = table.rows.keys()
        match = query.matcher()
        rows = table.rows
        matched = [sys_id for sys_id in candidates if match is None or match(rows[sys_id])]
        if not ordered:
            if query.order:
                for column, desc in reversed(query.order):
                    matched.sort(key=lambda sid: _sort_key(rows[sid].get(column, "")), reverse=desc)
            elif equality is None and (ranges or updated_first):
                matched.sort(key=table.seq.__getitem__)
        table.cache[key] = matched
        if len(table.cache) > QUERY_CACHE_SIZE:
            table.cache.popitem(last=False)
        return matched

    def _display_of(self, table_name: str, sys_id: str) -> str:
        target = self._tables.get(table_name)
        row = target.rows.get(sys_id) if target else None
        return row.get(target.definition.display, "") if row and target else ""

    def _render(self, table: Table, row: dict[str, str], fields: list[str] | None, display: str, links: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        references = table.definition.references
        for column in fields if fields is not None else row:
            if column not in row:
                continue
            value = row[column]
            ref_table = references.get(column)
            if ref_table and value:
                link = f"{self.base_url}/api/now/table/{ref_table}/{value}"
                shown = self._display_of(ref_table, value) if display != "false" else ""
                if display == "true":
                    out[column] = {"link": link, "display_value": shown} if links else shown
                elif display == "all":
                    out[column] = {"display_value": shown, **({"link": link} if links else {}), "value": value}
                else:
                    out[column] = {"link": link, "value": value} if links else value
            elif display == "all":
                out[column] = {"display_value": value, "value": value}
            else:
                out[column] = value
        return out

    # ---- import sets --------------------------------------------------------------------------

    def _import_set(self, staging: str, mode: str, multi: str = "") -> _ImportSet:
        if mode == "synchronous" and staging in self._open_sets:
            return self._import_sets[self._open_sets[staging]]
        row = self._insert(self._table("sys_import_set"), {
            "number": self._next_number("ISET"), "table_name": staging, "state": "loading", "mode": mode,
            "multi_import_set": multi,
        }, user=self.username)
        iset = _ImportSet(row["sys_id"], row["number"], staging, mode)
        self._import_sets[iset.sys_id] = iset
        if mode == "synchronous":
            self._open_sets[staging] = iset.sys_id
        return iset

    def _stage(self, staging: Table, iset: _ImportSet, body: dict[str, Any], user: str) -> dict[str, str]:
        values = self._writable(staging, body, input_display=False)
        values.pop("sys_id", None)
        values.update(sys_import_set=iset.sys_id, sys_import_state="pending",
                      sys_import_row=str(len(staging.rows)))
        return self._insert(staging, values, user=user)

    def _run_transforms(self, staging: Table, row: dict[str, str], user: str) -> list[dict[str, Any]]:
        results = [self._transform(tmap, row, user) for tmap in self._maps.get(staging.name, [])]
        first = results[0] if results else {"status": "error", "error_message": "No transform map found"}
        self._update(staging, row["sys_id"], {
            "sys_import_state": "error" if first["status"] == "error" else first["status"],
            "sys_import_state_comment": first.get("error_message", first.get("status_message", "")),
            "sys_row_error": first.get("error_message", ""),
            "sys_target_sys_id": first.get("sys_id", "") if first["status"] != "error" else "",
            "sys_target_table": first.get("table", ""),
            "sys_transform_map": first.get("transform_map", ""),
        }, user=user)
        row_result = {"staging_sys_id": row["sys_id"]}
        return [{**r, **row_result} for r in results] or [{**first, **row_result, "sys_id": row["sys_id"]}]

    def _transform(self, tmap: TransformMap, staged: dict[str, str], user: str) -> dict[str, Any]:
        target = self._table(tmap.target_table, create=True)
        display = target.definition.display
        base = {"transform_map": tmap.name, "table": tmap.target_table, "display_name": display}

        def error(message: str) -> dict[str, Any]:
            return {**base, "display_value": "", "record_link": "", "status": "error", "sys_id": staged["sys_id"],
                    "error_message": message, "status_message": message}

        missing = [c for c in tmap.required if not staged.get(c)]
        if missing:
            return error(f"Mandatory field(s) missing: {', '.join(missing)}")
        bad_dates = [c for c in tmap.date_fields if staged.get(c) and not _DATE.match(staged[c])]
        if bad_dates:
            return error(f"Invalid date (expected yyyy-mm-dd): {', '.join(bad_dates)}")
        values: dict[str, str] = {}
        for column, value in staged.items():
            if column in SYS_FIELDS or column in IMPORT_ROW_FIELDS:
                continue
            if value == "" and not tmap.copy_empty:
                continue
            target_column = tmap.field_map.get(column) or (column if tmap.auto_map else None)
            if target_column and (not target.declared or target_column in target.columns):
                values[target_column] = value
        for column, rule in tmap.references.items():
            if not values.get(column):
                continue
            resolved = self._resolve_reference(rule, values[column], user)
            if resolved is None:
                if rule.on_missing == "reject":
                    return error(f"Reference field value rejected: {column} '{values[column]}' not found in {rule.table}")
                values.pop(column)
            else:
                values[column] = resolved
        for column, allowed in tmap.choices.items():
            if values.get(column) and values[column] not in allowed:
                return error(f"Choice field value rejected: {column} '{values[column]}'")
        values.update(tmap.defaults)
        existing = self._coalesce(target, tmap, values)
        if existing is not None:
            before = target.rows[existing]
            row = self._update(target, existing, values, user=user)
            status = "updated" if row is not before else "ignored"
        else:
            missing = self._missing_mandatory(target, values)
            if missing:
                return error(f"Data Policy Exception: The following fields are mandatory: {', '.join(missing)}")
            row = self._insert(target, values, user=user)
            status = "inserted"
        result = {**base, "display_value": row.get(display, ""),
                  "record_link": f"{self.base_url}/api/now/table/{tmap.target_table}/{row['sys_id']}",
                  "status": status, "sys_id": row["sys_id"]}
        if status == "ignored":
            result["status_message"] = "No field values changed"
        return result

    def _coalesce(self, target: Table, tmap: TransformMap, values: dict[str, str]) -> str | None:
        if not tmap.coalesce or any(not values.get(c) for c in tmap.coalesce):
            return None
        first, *rest = tmap.coalesce
        for sys_id in target.find(first, values[first]):
            if all(target.rows[sys_id].get(c, "") == values[c] for c in rest):
                return sys_id
        return None

    def _resolve_reference(self, rule: ReferenceRule, value: str, user: str) -> str | None:
        table = self._table(rule.table, create=True)
        if value in table.rows:
            return value
        for column in rule.match_fields:
            found = table.find(column, value)
            if found:
                return found[0]
        if rule.on_missing == "create":
            return self._insert(table, {table.definition.display: value}, user=user)["sys_id"]
        return None

    def _process_pending(self, iset_id: str, generation: int) -> None:
        with self.lock:
            iset = self._import_sets.get(iset_id)
            if iset is None or generation != self._generation:
                return
            staging = self._tables[iset.staging_table]
            for row_id in iset.pending:
                if row_id in staging.rows:
                    self._run_transforms(staging, staging.rows[row_id], self.username)
            iset.pending.clear()
            self._update(self._tables["sys_import_set"], iset.sys_id, {"state": "processed"}, user=self.username)

    def _import_response(self, iset: _ImportSet, results: list[dict[str, Any]]) -> dict[str, Any]:
        return {"import_set": iset.number, "staging_table": iset.staging_table, "result": results}

    # ---- auth and rate rules --------------------------------------------------------------------

    def _authenticate(self) -> tuple[str | None, Response | None]:
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "bearer" and credential:
            issued = self.tokens.check(credential.strip())
            if issued is not None:
                return issued.subject, None
        elif scheme.lower() == "basic" and credential and self.allow_basic:
            username, password = basic_credentials(credential)
            if _same(username, self.username) and _same(password, self.password):
                return username, None
        self.stats.bump("auth_failures")
        return None, sn_error(401, *UNAUTHENTICATED, headers={"WWW-Authenticate": 'Basic realm="Service-now"'})

    def _rate_check(self, user: str, resource: str) -> tuple[Response | None, dict[str, str]]:
        limit = self.rate_limit
        if not limit:
            return None, {}
        now = time.time()
        window = self.rate_window_seconds
        start = now - (now % window)
        reset = start + window
        headers = {"X-RateLimit-Limit": str(int(limit)), "X-RateLimit-Reset": str(int(math.ceil(reset))),
                   "X-RateLimit-Rule": self.rate_rule_id}
        with self._rate_lock:
            window_start, count = self._rate_counts.get((user, resource), (start, 0))
            if window_start != start:
                count = 0
            if count >= limit:
                wait = max(1, math.ceil(reset - now))
                return sn_error(429, "Rate limit exceeded",
                                f"Rate limit of {int(limit)} requests per hour for {resource} exceeded",
                                headers={**headers, "Retry-After": str(wait)}), headers
            self._rate_counts[(user, resource)] = (start, count + 1)
        return None, headers

    # ---- routes ------------------------------------------------------------------------------------

    def register_vendor_routes(self, app: Flask) -> None:
        table, record = "table/<table_name>", "table/<table_name>/<sys_id>"
        staging, staged = "import/<staging_table>", "import/<staging_table>/<sys_id>"
        routes: list[tuple[str, list[str], Callable[..., Response], str | None]] = [
            (table, ["GET"], self._table_list, "Table API"),
            (table, ["POST"], self._table_insert, "Table API"),
            (record, ["GET"], self._table_read, "Table API"),
            (record, ["PUT", "PATCH", "DELETE", "POST"], self._table_change, "Table API"),
            (staging, ["POST"], self._import_insert, "Import Set API"),
            (f"{staging}/insertMultiple", ["POST"], self._import_insert_multiple, "Import Set API"),
            (staged, ["GET"], self._import_read, "Import Set API"),
        ]
        for path, methods, handler, resource in routes:
            view = self._guarded(handler, resource or "")
            for prefix in ("/api/now", "/api/now/<any(v1,v2):version>"):  # unversioned and versioned paths
                app.add_url_rule(f"{prefix}/{path}", endpoint=handler.__name__, view_func=view, methods=methods)
        app.add_url_rule("/oauth_token.do", endpoint="oauth_token", view_func=self._oauth_token, methods=["POST"])
        app.add_url_rule("/_sandbox/import-cleanup", endpoint="import_cleanup", view_func=self._import_cleanup,
                         methods=["POST"])
        app.register_error_handler(404, self._unknown_resource)
        app.register_error_handler(405, self._method_not_supported)

    def _guarded(self, handler: Callable[..., Response], resource: str) -> Callable[..., Response]:
        """Auth, the Accept / Content-Type contract, then the rate rule of `resource`."""

        @functools.wraps(handler)
        def view(*args: Any, version: str = "v2", **kwargs: Any) -> Response:
            user, denied = self._authenticate()
            if denied is not None:
                return denied
            accept = request.headers.get("Accept", "")
            if accept and "json" not in accept and "*/*" not in accept:
                return sn_error(406, "Not Acceptable", "This instance answers application/json only")
            if request.method in ("POST", "PUT", "PATCH") and request.get_data(cache=True).strip() \
                    and request.mimetype != "application/json":
                return sn_error(415, "Unsupported Media Type",
                                f"Content-Type {request.mimetype or '(none)'} is not supported; use application/json")
            limited, headers = self._rate_check(user or "", resource)
            if limited is not None:
                return limited
            g.sn_user = user
            g.sn_version = version
            response = handler(*args, **kwargs)
            response.headers.update(headers)
            return response

        return view

    # -- request helpers --

    @staticmethod
    def _json_body() -> tuple[Any, Response | None]:
        raw = request.get_data(cache=True)
        if not raw.strip():
            return {}, None
        try:
            return json.loads(raw), None
        except ValueError:
            return None, sn_error(400, "Exception while reading request", "The payload is not valid JSON.")

    @staticmethod
    def _render_args() -> tuple[list[str] | None, str, bool]:
        raw_fields = request.args.get("sysparm_fields")
        fields = [f.strip() for f in raw_fields.split(",") if f.strip()] if raw_fields else None
        display = (request.args.get("sysparm_display_value") or "false").lower()
        links = not _flag(request.args.get("sysparm_exclude_reference_link"))
        return fields, display if display in ("true", "all") else "false", links

    def _known_table(self, name: str) -> Table | None:
        with self.lock:
            try:
                return self._table(name)
            except KeyError:
                return None

    def _mandatory_error(self, missing: list[str]) -> Response:
        return sn_error(self.mandatory_status, "Operation Failed",
                        f"Data Policy Exception: The following fields are mandatory: {', '.join(missing)}")

    # -- OAuth --

    def _oauth_token(self) -> Response:
        if request.mimetype != "application/x-www-form-urlencoded":
            return _sn_json({"error": "invalid_request", "error_description": "form-encoded body required"}, 400)
        form = request.form
        denied = _sn_json({"error_description": "access_denied", "error": "server_error"}, 401)
        if not (_same(form.get("client_id", ""), self.client_id) and _same(form.get("client_secret", ""), self.client_secret)):
            self.stats.bump("auth_failures")
            return denied
        grant = form.get("grant_type", "")
        refresh: str | None = None
        if grant == "password":
            if not (_same(form.get("username", ""), self.username) and _same(form.get("password", ""), self.password)):
                self.stats.bump("auth_failures")
                return denied
            access, refresh = self.tokens.issue(self.username, self.access_ttl, with_refresh=True,
                                                extra={"client_id": self.client_id})
        elif grant == "refresh_token":
            presented = form.get("refresh_token", "")
            use = self.tokens.use_refresh if self.rotate_refresh_tokens else self.tokens.peek_refresh
            issued = use(presented)
            if issued is None or issued.extra.get("client_id") != self.client_id:
                self.stats.bump("auth_failures")
                return denied
            access, rotated = self.tokens.issue(issued.subject, self.access_ttl, with_refresh=self.rotate_refresh_tokens,
                                                extra={"client_id": self.client_id})
            refresh = rotated or presented
        elif grant == "client_credentials" and self.allow_client_credentials:
            access, _ = self.tokens.issue(self.username, self.access_ttl)
        else:
            return _sn_json({"error": "unsupported_grant_type",
                             "error_description": f"grant_type {grant or '(none)'} is not supported"}, 400)
        self.stats.bump("tokens_issued")
        self.stats.bump(f"grant_{grant}")
        body: dict[str, Any] = {"access_token": access}
        if refresh:
            body["refresh_token"] = refresh
        body.update(scope=OAUTH_SCOPE, token_type="Bearer", expires_in=int(self.access_ttl))
        return _sn_json(body, 200, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    # -- Table API --

    def _table_list(self, table_name: str) -> Response:
        if table_name == "sys_dictionary":
            with self.lock:
                table: Table | None = self._dictionary()
        else:
            table = self._known_table(table_name)
        if table is None:
            return sn_error(400, f"Invalid table {table_name}", None)
        args = request.args
        limit = max(0, _int_arg(args.get("sysparm_limit"), DEFAULT_LIMIT))
        offset = max(0, _int_arg(args.get("sysparm_offset"), 0))
        fields, display, links = self._render_args()
        pairs = [(k, v) for k, v in args.items(multi=True) if not k.startswith("sysparm_")]
        with self.lock:
            query = parse_query(args.get("sysparm_query", ""), table.columns, pairs)
            ids = [] if query.ignored and self.invalid_query_returns_no_rows else self._select(table, query)
            result = [self._render(table, table.rows[sys_id], fields, display, links)
                      for sys_id in ids[offset:offset + limit]]
        if g.sn_version == "v1" and not result:
            return sn_error(404, *NOT_FOUND)
        headers: dict[str, str] = {}
        no_count = _flag(args.get("sysparm_no_count"))
        if not no_count:
            headers["X-Total-Count"] = str(len(ids))
        if not _flag(args.get("sysparm_suppress_pagination_header")):
            headers["Link"] = self._link_header(limit, offset, None if no_count else len(ids))
        return _sn_json({"result": result}, 200, headers)

    def _table_insert(self, table_name: str) -> Response:
        table = self._known_table(table_name)
        if table is None:
            return sn_error(400, f"Invalid table {table_name}", None)
        payload, bad = self._json_body()
        if bad is not None:
            return bad
        if not isinstance(payload, dict):
            return sn_error(400, "Exception while reading request", "One JSON object per request; multiple insert is not supported")
        fields, display, links = self._render_args()
        with self.lock:
            values = self._writable(table, payload, input_display=_flag(request.args.get("sysparm_input_display_value")))
            missing = self._missing_mandatory(table, values)
            if missing:
                return self._mandatory_error(missing)
            row = self._insert(table, values, user=g.sn_user)
            rendered = self._render(table, row, fields, display, links)
        return _sn_json({"result": rendered}, 201,
                        {"Location": f"{self.base_url}/api/now/table/{table_name}/{row['sys_id']}"})

    def _table_read(self, table_name: str, sys_id: str) -> Response:
        table = self._known_table(table_name)
        if table is None:
            return sn_error(400, f"Invalid table {table_name}", None)
        fields, display, links = self._render_args()
        with self.lock:
            row = table.rows.get(sys_id)
            if row is None:
                return sn_error(404, *NOT_FOUND)
            rendered = self._render(table, row, fields, display, links)
        return _sn_json({"result": rendered})

    def _table_change(self, table_name: str, sys_id: str) -> Response:
        method = request.method
        if method == "POST":  # X-HTTP-Method-Override tunnels PUT/PATCH/DELETE through POST
            method = request.headers.get("X-HTTP-Method-Override", "").upper()
            if method not in ("PUT", "PATCH", "DELETE"):
                return sn_error(405, "Method not Supported", "POST is not supported on a record; use PUT, PATCH or DELETE")
        table = self._known_table(table_name)
        if table is None:
            return sn_error(400, f"Invalid table {table_name}", None)
        if method == "DELETE":
            with self.lock:
                if sys_id not in table.rows:
                    return sn_error(404, *NOT_FOUND)
                table.delete(sys_id)
            return Response(status=204)
        payload, bad = self._json_body()
        if bad is not None:
            return bad
        if not isinstance(payload, dict):
            return sn_error(400, "Exception while reading request", "A JSON object is required")
        fields, display, links = self._render_args()
        with self.lock:
            if sys_id not in table.rows:
                return sn_error(404, *NOT_FOUND)
            values = self._writable(table, payload, input_display=_flag(request.args.get("sysparm_input_display_value")))
            values.pop("sys_id", None)
            missing = self._missing_mandatory(table, {**table.rows[sys_id], **values})
            if missing:
                return self._mandatory_error(missing)
            row = self._update(table, sys_id, values, user=g.sn_user)
            rendered = self._render(table, row, fields, display, links)
        return _sn_json({"result": rendered})

    # -- Import Set API --

    def _staging_table(self, name: str) -> Table | None:
        with self.lock:
            if name not in self._maps and name not in self._tables:
                return None
            return self._table(name, create=True)

    def _import_insert(self, staging_table: str) -> Response:
        staging = self._staging_table(staging_table)
        if staging is None:
            return sn_error(400, f"Invalid table {staging_table}", None)
        payload, bad = self._json_body()
        if bad is not None:
            return bad
        if not isinstance(payload, dict):
            return sn_error(400, "Exception while reading request", "A JSON object of name-value pairs is required")
        with self.lock:
            iset = self._import_set(staging_table, "synchronous")
            row = self._stage(staging, iset, payload, g.sn_user)
            results = self._run_transforms(staging, row, g.sn_user)
        self.stats.bump("import_rows")
        return _sn_json(self._import_response(iset, results), 201)

    def _import_insert_multiple(self, staging_table: str) -> Response:
        staging = self._staging_table(staging_table)
        if staging is None:
            return sn_error(400, f"Invalid table {staging_table}", None)
        payload, bad = self._json_body()
        if bad is not None:
            return bad
        records = payload.get("records") if isinstance(payload, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            return sn_error(400, "Exception while reading request", 'The body must be {"records": [{...}, ...]}')
        with self.lock:
            multi_id = request.args.get("multi_import_set_id", "")
            multi_table = self._table("sys_multi_import_set")
            if multi_id not in multi_table.rows:
                multi_id = self._insert(multi_table, {"number": self._next_number("MISET"), "state": "loading"},
                                        user=g.sn_user)["sys_id"]
            iset = self._import_set(staging_table, "asynchronous", multi_id)
            iset.pending.extend(self._stage(staging, iset, record, g.sn_user)["sys_id"] for record in records)
            generation = self._generation
        self.stats.bump("import_rows", len(records))
        if self.insert_multiple_sync:
            self._process_pending(iset.sys_id, generation)
        else:
            timer = threading.Timer(ASYNC_TRANSFORM_DELAY, self._process_pending, args=(iset.sys_id, generation))
            timer.daemon = True
            timer.start()
        return _sn_json({"import_set_id": iset.sys_id, "multi_import_set_id": multi_id}, 201)

    def _import_read(self, staging_table: str, sys_id: str) -> Response:
        with self.lock:
            staging = self._tables.get(staging_table)
            row = staging.rows.get(sys_id) if staging else None
            if row is None:
                return sn_error(404, *NOT_FOUND)
            iset = self._import_sets.get(row["sys_import_set"])
            result: dict[str, Any] = {
                "transform_map": row.get("sys_transform_map", ""), "table": row.get("sys_target_table", ""),
                "status": row.get("sys_import_state", ""), "sys_id": row.get("sys_target_sys_id", ""),
                "staging_sys_id": sys_id,
            }
            target = self._tables.get(result["table"])
            target_row = target.rows.get(result["sys_id"]) if target else None
            if target is not None and target_row is not None:
                display = target.definition.display
                result.update(display_name=display, display_value=target_row.get(display, ""),
                              record_link=f"{self.base_url}/api/now/table/{target.name}/{target_row['sys_id']}")
            if row.get("sys_row_error"):
                result["error_message"] = row["sys_row_error"]
            number = iset.number if iset else ""
        return _sn_json({"import_set": number, "staging_table": staging_table, "result": [result]})

    # -- sandbox-only control and vendor-shaped misses --

    def _import_cleanup(self) -> Response:
        """What the instance's scheduled import-set cleaner does: staging rows go away."""
        removed = 0
        with self.lock:
            for name in self._maps:
                table = self._tables.get(name)
                for sys_id in list(table.rows) if table else []:
                    table.delete(sys_id)  # type: ignore[union-attr]
                    removed += 1
            self._open_sets.clear()
        return _sn_json({"removed": removed})

    @staticmethod
    def _unknown_resource(error: Exception) -> Response:
        if request.path.startswith("/_sandbox/"):
            return _sn_json({"error": f"unknown control path {request.path}"}, 404)
        return sn_error(400, "Requested URI does not represent any resource", None)

    @staticmethod
    def _method_not_supported(error: Exception) -> Response:
        return sn_error(405, "Method not Supported", f"{request.method} is not supported on {request.path}")

    def _link_header(self, limit: int, offset: int, total: int | None) -> str:
        base = f"{self.base_url}{request.path}"
        kept = urlencode([(k, v) for k, v in request.args.items(multi=True) if k not in ("sysparm_offset", "sysparm_limit")])
        prefix = f"{base}?{kept}&" if kept else f"{base}?"

        def link(at: int, rel: str) -> str:
            return f'<{prefix}sysparm_limit={limit}&sysparm_offset={at}>;rel="{rel}"'

        parts = [link(0, "first")]
        if offset > 0:
            parts.append(link(offset - limit, "prev"))  # can go negative, as the instance's does
        if total is None or offset + limit < total:
            parts.append(link(offset + limit, "next"))
        if total is not None and limit > 0:
            parts.append(link(max(0, (total - 1) // limit * limit), "last"))
        return ",".join(parts)


# ---- control-API names and tick changes ------------------------------------------------------------

ENTITY_ALIASES = {
    "suppliers": "sn_fin_supplier",
    "vendors": "sn_fin_supplier",
    "supplier_payments": "sn_fin_supplier_payment",
    "companies": "core_company",
    "cost_centers": "cmn_cost_center",
    "gl_accounts": "sn_fin_gl_account",
    "purchase_orders": "sn_shop_purchase_order",
    "purchase_order_lines": "sn_shop_purchase_order_line",
    "invoices": "sn_shop_invoice",
    "ap_invoices": "sn_shop_invoice",
    "invoice_lines": "sn_shop_invoice_line",
    "import_sets": "sys_import_set",
    "users": "sys_user",
}

_PO_STATUSES = ("draft", "approved", "ordered", "partially_received", "received", "closed")
_INVOICE_STATUSES = ("pending", "approved", "scheduled", "paid")


def _next_in(cycle: tuple[str, ...]) -> Callable[[random.Random, str], str]:
    def change(rng: random.Random, current: str) -> str:
        return cycle[(cycle.index(current) + 1) % len(cycle)] if current in cycle else cycle[0]
    return change


def _phone(rng: random.Random, current: str) -> str:
    return f"({rng.randint(200, 989)}) 555-{rng.randint(0, 9999):04d}"


TICK_CHANGES: dict[str, tuple[str, Callable[[random.Random, str], str]]] = {
    "sn_fin_supplier": ("phone", _phone),
    "core_company": ("phone", _phone),
    "sn_shop_purchase_order": ("status", _next_in(_PO_STATUSES)),
    "sn_shop_invoice": ("status", _next_in(_INVOICE_STATUSES)),
    "cmn_cost_center": ("location", lambda rng, cur: rng.choice(_CITIES)[0]),
}


# ---- deterministic seed data -----------------------------------------------------------------------

_NAME_STEMS = (
    "Acme", "Apex", "Summit", "Bolt", "Granite", "Harbor", "Keystone", "Midwest", "Northern", "Pioneer",
    "Precision", "Quality", "Reliable", "Sterling", "Tri-County", "United", "Valley", "Allied", "Atlas",
    "Beacon", "Cardinal", "Delta", "Eagle", "Frontier", "Great Lakes", "Heartland", "Ironwood", "Liberty",
)
_NAME_TRADES = (
    "Concrete", "Supply", "Electric", "Plumbing", "Steel", "Fasteners", "Lumber", "HVAC", "Industrial",
    "Tool", "Pipe & Valve", "Safety", "Packaging", "Hydraulics", "Bearings", "Coatings",
)
_NAME_SUFFIXES = ("Inc.", "LLC", "Co.", "Corp.", "Company", "Ltd.")
_STREETS = ("Main", "Industrial", "Commerce", "Oak", "Maple", "Lake", "Park", "Mill", "Railroad", "Center")
_STREET_TYPES = (("Street", "St."), ("Avenue", "Ave."), ("Road", "Rd."), ("Drive", "Dr."), ("Boulevard", "Blvd."))
_CITIES = (
    ("Milwaukee", "WI", "532"), ("Minneapolis", "MN", "554"), ("Chicago", "IL", "606"), ("Detroit", "MI", "482"),
    ("Columbus", "OH", "432"), ("Indianapolis", "IN", "462"), ("Des Moines", "IA", "503"), ("St. Louis", "MO", "631"),
    ("Toronto", "ON", "M5V"), ("Houston", "TX", "770"),
)
_DEPARTMENTS = ("Operations", "Maintenance", "Engineering", "Production", "Facilities", "Logistics", "Quality", "IT")
_ITEMS = (
    "Hex bolt 1/2-13 x 2 zinc", "Ready-mix concrete 4000 PSI", "Copper pipe 3/4 in type L", "Safety glasses clear",
    "Pallet wrap 18 in", "Ball bearing 6204-2RS", "Hydraulic hose 1/2 in", "Epoxy floor coating 5 gal",
    "THHN wire 12 AWG 500 ft", "Rooftop unit filter 20x25x2", "Lumber 2x4x8 SPF", "Welding rod E7018 1/8",
)


class _Seeder:
    """Fills a sandbox deterministically: suppliers with near-duplicates, multi-line POs, invoices."""

    def __init__(self, sandbox: ServiceNowSandbox, rng: random.Random, records: int) -> None:
        self.sb = sandbox
        self.rng = rng
        self.n = records

    def run(self) -> None:
        for name in TABLES:
            self.sb._table(name)
        users = self._users()
        cost_centers = self._cost_centers(users)
        companies = self._companies()
        suppliers = self._suppliers(companies)
        purchase_orders = self._purchase_orders(suppliers, cost_centers)
        self._invoices(purchase_orders, suppliers, cost_centers)
        self._procurement_pos(companies)

    # -- helpers --

    def _times(self) -> tuple[str, str, str]:
        created = SEED_EPOCH + self.rng.randrange(SEED_SPAN)
        updated = min(SEED_EPOCH + SEED_SPAN, created + self.rng.randrange(30 * 86400))
        return (time.strftime(TIME_FORMAT, time.gmtime(created)), time.strftime(TIME_FORMAT, time.gmtime(updated)),
                str(self.rng.randint(0, 6) if updated > created else 0))

    def _add(self, table_name: str, values: dict[str, str]) -> dict[str, str]:
        table = self.sb._tables[table_name]
        created, updated, mods = self._times()
        row = {column: "" for column in table.definition.columns}
        row.update(values)
        prefix = table.definition.number_prefix
        if prefix and not row.get("number"):
            row["number"] = self.sb._next_number(prefix)
        row.update(sys_id=f"{self.rng.getrandbits(128):032x}", sys_created_on=created, sys_created_by="admin",
                   sys_updated_on=updated, sys_updated_by=self.rng.choice(("admin", "system", "ml.integration")),
                   sys_mod_count=mods)
        table.insert(row)
        return row

    def _address(self) -> dict[str, str]:
        street_type = self.rng.choice(_STREET_TYPES)
        city, state, zip_prefix = self.rng.choice(_CITIES)
        zip_code = f"{zip_prefix}{self.rng.randint(0, 99):02d}" if zip_prefix[0].isdigit() else f"{zip_prefix} {self.rng.randint(1, 9)}A{self.rng.randint(1, 9)}"
        return {"street": f"{self.rng.randint(100, 9999)} {self.rng.choice(_STREETS)} {street_type[0]}",
                "city": city, "state": state, "zip": zip_code, "country": "CA" if state == "ON" else "US"}

    def _money(self, low: float, high: float) -> str:
        return f"{self.rng.uniform(low, high):.2f}"

    # -- tables --

    def _users(self) -> list[dict[str, str]]:
        people = [("ml.integration", "Integration", "User")] + [
            (f"{first.lower()}.{last.lower()}", first, last)
            for first, last in (("Dana", "Kowalski"), ("Priya", "Raman"), ("Luis", "Ortega"), ("Mei", "Chen"),
                                ("Tom", "Becker"), ("Aisha", "Bello"))
        ]
        return [self._add("sys_user", {"user_name": u, "first_name": f, "last_name": l, "name": f"{f} {l}",
                                       "email": f"{u}@example.com", "active": "true"}) for u, f, l in people]

    def _cost_centers(self, users: list[dict[str, str]]) -> list[dict[str, str]]:
        count = max(8, min(60, self.n // 20))
        centers: list[dict[str, str]] = []
        for i in range(count):
            department = _DEPARTMENTS[i % len(_DEPARTMENTS)]
            parent = centers[i % len(_DEPARTMENTS)]["sys_id"] if i >= len(_DEPARTMENTS) else ""
            centers.append(self._add("cmn_cost_center", {
                "name": f"{department} - Plant {i // len(_DEPARTMENTS) + 1}",
                "account_number": f"{6000 + (i % len(_DEPARTMENTS)) * 100}-{i // len(_DEPARTMENTS) + 1:02d}",
                "manager": self.rng.choice(users[1:])["sys_id"], "parent": parent,
                "valid_from": "2024-01-01", "valid_to": "", "location": self.rng.choice(_CITIES)[0],
            }))
        for i, name in enumerate(("Materials expense", "Freight in", "Repairs and maintenance", "Utilities")):
            self._add("sn_fin_gl_account", {"name": name, "account_number": f"{6000 + i * 100}",
                                            "account_type": "expense", "active": "true"})
        return centers

    def _companies(self) -> list[dict[str, str]]:
        vendors: list[dict[str, str]] = []
        for i in range(self.n):
            if vendors and self.rng.random() < 0.08:
                vendors.append(self._add("core_company", self._near_duplicate(self.rng.choice(vendors))))
                continue
            name = f"{self.rng.choice(_NAME_STEMS)} {self.rng.choice(_NAME_TRADES)} {self.rng.choice(_NAME_SUFFIXES)}"
            vendors.append(self._add("core_company", {
                "name": name, "vendor": "true", "customer": "false", "manufacturer": "false",
                "vendor_type": "Supplier", "phone": f"({self.rng.randint(200, 989)}) 555-{self.rng.randint(0, 9999):04d}",
                "website": f"https://www.{re.sub(r'[^a-z]', '', name.lower())[:20]}.example.com", **self._address(),
            }))
        for i in range(max(1, self.n // 10)):
            self._add("core_company", {"name": f"{self.rng.choice(_NAME_STEMS)} Holdings {i + 1}", "vendor": "false",
                                       "customer": "true", "manufacturer": "false", **self._address()})
        return vendors

    def _near_duplicate(self, original: dict[str, str]) -> dict[str, str]:
        """A second record for the same supplier: other casing, suffix or street spelling."""
        name = original["name"]
        variant = self.rng.randrange(3)
        if variant == 0:
            name = name.upper().replace(".", "")
        elif variant == 1:
            stem = name.rsplit(" ", 1)[0]
            name = f"{stem} {self.rng.choice([s for s in _NAME_SUFFIXES if s not in name])}"
        else:
            name = name.replace("&", "and") if "&" in name else f"{name} "
        street = original["street"]
        for long, short in _STREET_TYPES:
            street = street.replace(long, short) if long in street else street.replace(short, long)
        return {**{k: original[k] for k in ("vendor", "customer", "manufacturer", "vendor_type", "city", "state",
                                            "zip", "country", "phone", "website")},
                "name": name, "street": street}

    def _suppliers(self, companies: list[dict[str, str]]) -> list[dict[str, str]]:
        return [self._add("sn_fin_supplier", {
            "name": company["name"], "legal_name": company["name"], "company": company["sys_id"],
            "tax_id": f"{self.rng.randint(10, 99)}-{self.rng.randint(1000000, 9999999)}",
            **{k: company[k] for k in ("street", "city", "state", "zip", "country", "phone", "website")},
            "email": f"ap@{company['website'].split('www.', 1)[-1]}" if company["website"] else "",
            "currency": "CAD" if company["country"] == "CA" else "USD",
            "payment_term": self.rng.choice(("Net 30", "Net 45", "Net 60", "2% 10 Net 30")),
            "active": "true" if self.rng.random() > 0.05 else "false", "erp_source": "",
        }) for company in companies]

    def _purchase_orders(self, suppliers: list[dict[str, str]], centers: list[dict[str, str]]) -> list[dict[str, str]]:
        orders: list[dict[str, str]] = []
        if not suppliers:
            return orders
        for i in range(self.n):
            supplier = self.rng.choice(suppliers)
            center = self.rng.choice(centers)
            lines = []
            for line_number in range(1, self.rng.randint(1, 4) + 1):
                quantity = self.rng.randint(1, 200)
                price = float(self._money(1, 450))
                lines.append((line_number, self.rng.choice(_ITEMS), quantity, price))
            total = sum(q * p for _, _, q, p in lines)
            order = self._add("sn_shop_purchase_order", {
                "erp_number": str(4000 + i), "supplier": supplier["sys_id"], "legal_entity": "ML Manufacturing US",
                "order_type": "Blanket" if self.rng.random() < 0.1 else "Standard", "total_amount": f"{total:.2f}",
                "currency": supplier["currency"], "status": self.rng.choice(_PO_STATUSES),
                "payment_term": supplier["payment_term"], "cost_center": center["sys_id"], "erp_source": "Epicor Kinetic",
                "order_date": time.strftime("%Y-%m-%d", time.gmtime(SEED_EPOCH + self.rng.randrange(SEED_SPAN))),
            })
            for line_number, item, quantity, price in lines:
                self._add("sn_shop_purchase_order_line", {
                    "purchase_order": order["sys_id"], "line_number": str(line_number), "description": item,
                    "quantity": str(quantity), "unit_price": f"{price:.2f}", "amount": f"{quantity * price:.2f}",
                    "cost_center": center["sys_id"],
                })
            orders.append(order)
        return orders

    def _invoices(self, orders: list[dict[str, str]], suppliers: list[dict[str, str]], centers: list[dict[str, str]]) -> None:
        for i in range(self.n // 2 if orders else 0):
            order = self.rng.choice(orders) if self.rng.random() < 0.8 else None
            supplier = order["supplier"] if order else self.rng.choice(suppliers)["sys_id"]
            count = self.rng.randint(1, 3)
            amounts = [float(self._money(20, 4000)) for _ in range(count)]
            tax = round(sum(amounts) * 0.07, 2)
            invoice_day = SEED_EPOCH + self.rng.randrange(SEED_SPAN)
            invoice = self._add("sn_shop_invoice", {
                "external_invoice_number": f"V{self.rng.randint(10000, 99999)}-{i + 1}",
                "external_invoice_source": "Epicor Kinetic", "erp_source": "Epicor Kinetic",
                "invoice_date": time.strftime("%Y-%m-%d", time.gmtime(invoice_day)),
                "due_date": time.strftime("%Y-%m-%d", time.gmtime(invoice_day + 30 * 86400)),
                "other_charges": "0.00", "total_amount": f"{sum(amounts) + tax:.2f}", "currency": "USD",
                "discounts": "0.00", "tax_amount": f"{tax:.2f}", "invoice_type": "PO" if order else "Non-PO",
                "legal_entity": "ML Manufacturing US", "purchase_order": order["sys_id"] if order else "",
                "supplier": supplier, "erp_number": str(9000 + i), "payment_terms": "Net 30",
                "status": self.rng.choice(_INVOICE_STATUSES),
            })
            for line_number, amount in enumerate(amounts, start=1):
                self._add("sn_shop_invoice_line", {
                    "invoice": invoice["sys_id"], "line_number": str(line_number), "description": self.rng.choice(_ITEMS),
                    "quantity": "1", "unit_price": f"{amount:.2f}", "amount": f"{amount:.2f}",
                    "cost_center": self.rng.choice(centers)["sys_id"], "gl_account": f"{6000 + self.rng.randrange(4) * 100}",
                })

    def _procurement_pos(self, companies: list[dict[str, str]]) -> None:
        for _ in range(self.n // 5 if companies else 0):
            items = [(self.rng.choice(_ITEMS), self.rng.randint(1, 50), float(self._money(5, 300)))
                     for _ in range(self.rng.randint(1, 3))]
            po = self._add("proc_po", {
                "vendor": self.rng.choice(companies)["sys_id"], "short_description": items[0][0],
                "status": self.rng.choice(("requested", "ordered", "received")),
                "total_cost": f"{sum(q * c for _, q, c in items):.2f}",
                "po_date": time.strftime("%Y-%m-%d", time.gmtime(SEED_EPOCH + self.rng.randrange(SEED_SPAN))),
            })
            for description, quantity, cost in items:
                self._add("proc_po_item", {"purchase_order": po["sys_id"], "short_description": description,
                                           "ordered_quantity": str(quantity), "cost": f"{cost:.2f}",
                                           "total_cost": f"{quantity * cost:.2f}", "status": po["status"]})
