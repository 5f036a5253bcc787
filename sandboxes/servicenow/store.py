"""The instance's dictionary (what tables and columns exist), its tables in memory, and encoded
queries (`sysparm_query`: `^` ANDs, `^OR` ORs, `^NQ` new branches, ORDERBY clauses).

Every stored value is a string, as on the real instance; rows are replaced, never mutated,
so they can be rendered outside the lock. Declared tables drop unknown columns on writes.
Query clauses naming an unknown column or malformed are dropped (the instance's default),
and reported in `Query.ignored` for `glide.invalid_query.returns_no_rows`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from sandboxes.kit.store import Table as KitTable, exact, hex_ids

Row = dict[str, str]
QUERY_CACHE_SIZE = 32  # matched-id lists kept per table, so paging through a poll costs O(page)
SYS_FIELDS = ("sys_id", "sys_created_on", "sys_created_by", "sys_updated_on", "sys_updated_by", "sys_mod_count")
IMPORT_ROW_FIELDS = (
    "sys_import_set", "sys_import_row", "sys_import_state", "sys_import_state_comment",
    "sys_target_sys_id", "sys_target_table", "sys_transform_map", "sys_row_error",
)

# ---- the dictionary ----


@dataclass(frozen=True)
class TableDef:
    """What the instance's dictionary says about one table."""

    columns: tuple[str, ...]
    references: dict[str, str] = field(default_factory=dict)  # column -> referenced table
    display: str = "name"  # the display column (reference display values, import results)
    mandatory: tuple[str, ...] = ()  # enforced by a data policy on insert and update
    number_prefix: str = ""  # auto-numbered tables ("PO0010001")


def _cols(text: str, staging: bool = False) -> tuple[str, ...]:
    """Columns from a blank-separated list; a staging table also has the import-row fields."""
    return tuple(text.split()) + (IMPORT_ROW_FIELDS if staging else ())


_SUPPLIER = ("name legal_name company tax_id street city state zip country phone email website currency "
             "payment_term active erp_source u_correlation_id")
# A supplier's bank account (payment details); staging names are snake_case labels (unconfirmed).
_SUPPLIER_PAYMENT = ("supplier bank_name account_name bank_account_number routing_number iban swift_code "
                     "currency primary active u_correlation_id")
_PO_STAGING = ("erp_po_number erp_source legal_entity order_type po_amount po_amount_currency po_status "
               "supplier_company_name payment_term cost_center order_date u_correlation_id")
_PO_LINE_STAGING = "purchase_order line_number description quantity unit_price line_amount cost_center u_correlation_id"
# Invoice staging column names are snake_case forms of the documented labels (unconfirmed).
_INVOICE_STAGING = (
    "external_invoice_number external_invoice_source erp_source invoice_date other_charges amount_invoiced currency "
    "discounts final_tax invoice_type legal_entity purchase_order erp_number payment_terms invoice_line_count "
    "supplier due_date remit_to_street remit_to_city remit_to_state remit_to_zip remit_to_country u_correlation_id")
_INVOICE_LINE_STAGING = ("invoice line_number description quantity unit_price line_amount cost_center gl_account "
                         "u_correlation_id")

TABLES: dict[str, TableDef] = {
    "sys_user": TableDef(_cols("user_name first_name last_name name email active")),
    "core_company": TableDef(
        _cols("name vendor customer manufacturer vendor_type street city state zip country phone fax website notes "
              "parent u_correlation_id"), references={"parent": "core_company"}, mandatory=("name",)),
    "sn_fin_supplier": TableDef(_cols(_SUPPLIER), references={"company": "core_company"}, mandatory=("name",)),
    "sn_fin_supplier_payment": TableDef(_cols(_SUPPLIER_PAYMENT), references={"supplier": "sn_fin_supplier"},
                                        display="bank_name", mandatory=("supplier",)),
    "cmn_cost_center": TableDef(
        _cols("name account_number manager parent valid_from valid_to location u_correlation_id"),
        references={"manager": "sys_user", "parent": "cmn_cost_center"}, mandatory=("name",)),
    "sn_fin_gl_account": TableDef(_cols("name account_number account_type active"), mandatory=("name",)),
    "sn_shop_purchase_order": TableDef(
        _cols("number erp_number supplier legal_entity order_type total_amount currency status payment_term "
              "cost_center erp_source order_date u_correlation_id"),
        references={"supplier": "sn_fin_supplier", "cost_center": "cmn_cost_center"},
        display="number", number_prefix="PO"),
    "sn_shop_purchase_order_line": TableDef(
        _cols("purchase_order line_number description quantity unit_price amount cost_center u_correlation_id"),
        references={"purchase_order": "sn_shop_purchase_order", "cost_center": "cmn_cost_center"},
        display="description", mandatory=("purchase_order",)),
    "sn_shop_invoice": TableDef(
        _cols("number external_invoice_number external_invoice_source erp_source invoice_date due_date other_charges "
              "total_amount currency discounts tax_amount invoice_type legal_entity purchase_order supplier "
              "erp_number payment_terms status u_correlation_id"),
        references={"purchase_order": "sn_shop_purchase_order", "supplier": "sn_fin_supplier"},
        display="number", number_prefix="INV"),
    "sn_shop_invoice_line": TableDef(
        _cols("invoice line_number description quantity unit_price amount cost_center gl_account u_correlation_id"),
        references={"invoice": "sn_shop_invoice", "cost_center": "cmn_cost_center"},
        display="description", mandatory=("invoice",)),
    "proc_po": TableDef(_cols("number vendor short_description status total_cost po_date u_correlation_id"),
                        references={"vendor": "core_company"}, display="number", number_prefix="PO"),
    "proc_po_item": TableDef(_cols("purchase_order short_description ordered_quantity cost total_cost status"),
                             references={"purchase_order": "proc_po"}, display="short_description"),
    "sys_import_set": TableDef(_cols("number table_name state mode multi_import_set"), display="number"),
    "sys_multi_import_set": TableDef(_cols("number state"), display="number"),
    "sn_fcms_intg_imp_supplier": TableDef(_cols(_SUPPLIER, staging=True)),
    "sn_fcms_intg_supplier_payment_inbound_stage": TableDef(_cols(_SUPPLIER_PAYMENT, staging=True),
                                                            display="bank_name"),
    "sn_fcms_intg_imp_order": TableDef(_cols(_PO_STAGING, staging=True), display="erp_po_number"),
    "sn_fcms_intg_imp_order_line": TableDef(_cols(_PO_LINE_STAGING, staging=True), display="description"),
    "sn_fcms_intg_imp_receipt": TableDef(_cols("erp_receipt_number purchase_order u_correlation_id", staging=True)),
    "sn_spend_intg_imp_invoice": TableDef(_cols(_INVOICE_STAGING, staging=True), display="external_invoice_number"),
    "sn_spend_intg_imp_invoice_line": TableDef(_cols(_INVOICE_LINE_STAGING, staging=True), display="description"),
}

# ---- encoded queries ----

_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")


def compare(left: str, right: str) -> int:
    """Numbers compare as numbers, everything else (dates included) as text."""
    a, b = (float(left), float(right)) if _NUMBER.match(left) and _NUMBER.match(right) else (left, right)
    return (a > b) - (a < b)  # type: ignore[operator]


def sort_key(value: str) -> tuple[int, float, str]:
    return (0, float(value), "") if _NUMBER.match(value) else (1, 0.0, value)


def _between(value: str, bounds: str) -> bool:
    low, _, high = bounds.partition("@")
    return value != "" and compare(value, low) >= 0 and compare(value, high) <= 0


# Each operator as a test of (the row's value, the clause's value, the row); a blank value never
# meets an ordering. Longer spellings come first where one operator begins another.
_OPERATORS: dict[str, Callable[[str, str, Row], bool]] = {
    "!=": lambda x, v, row: x != v,
    ">=": lambda x, v, row: x != "" and compare(x, v) >= 0,
    "<=": lambda x, v, row: x != "" and compare(x, v) <= 0,
    "NOT LIKE": lambda x, v, row: v.lower() not in x.lower(),
    "NOTLIKE": lambda x, v, row: v.lower() not in x.lower(),
    "NOT IN": lambda x, v, row: x not in v.split(","),
    "NOTIN": lambda x, v, row: x not in v.split(","),
    "ISNOTEMPTY": lambda x, v, row: x != "",
    "ISEMPTY": lambda x, v, row: x == "",
    "STARTSWITH": lambda x, v, row: x.lower().startswith(v.lower()),
    "ENDSWITH": lambda x, v, row: x.lower().endswith(v.lower()),
    "BETWEEN": lambda x, v, row: _between(x, v),
    "ANYTHING": lambda x, v, row: True,
    "NSAMEAS": lambda x, v, row: x != row.get(v, ""),
    "SAMEAS": lambda x, v, row: x == row.get(v, ""),
    "LIKE": lambda x, v, row: v.lower() in x.lower(),
    "IN": lambda x, v, row: x in v.split(","),
    "=": lambda x, v, row: x == v,
    ">": lambda x, v, row: x != "" and compare(x, v) > 0,
    "<": lambda x, v, row: x != "" and compare(x, v) < 0,
}
_CONDITION = re.compile(r"^([a-z_][a-z0-9_]*)(" + "|".join(map(re.escape, _OPERATORS)) + r")(.*)$", re.S)
_DATE_GENERATE = re.compile(r"^javascript:gs\.dateGenerate\('(\d{4}-\d{2}-\d{2})',\s*'(\d{2}:\d{2}:\d{2})'\)$")
_ESCAPED_CARET = "\x00"
_BOUNDS = {">": "gt", ">=": "ge", "<": "lt", "<=": "le"}


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: str

    def __call__(self, row: Row) -> bool:
        return _OPERATORS[self.op](row.get(self.field, ""), self.value, row)


@dataclass
class Query:
    """A parsed encoded query: `^NQ` branches of AND-ed OR-groups, plus ORDERBY clauses."""

    branches: list[list[list[Condition]]]
    order: list[tuple[str, bool]]  # (column, descending)
    ignored: list[str]  # clauses dropped as invalid, as the instance does by default

    def matches(self, row: Row) -> bool:
        return not self.branches or any(all(any(c(row) for c in group) for group in branch)
                                        for branch in self.branches)

    def and_conditions(self) -> list[Condition]:
        """Conditions every match must meet (single-branch queries only), for index use."""
        return [group[0] for group in self.branches[0] if len(group) == 1] if len(self.branches) == 1 else []


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
            if token.startswith("ORDERBY"):
                desc = token.startswith("ORDERBYDESC")
                order.append((token[len("ORDERBYDESC" if desc else "ORDERBY"):], desc))
                continue
            joins_previous = token.startswith("OR") and bool(branch)
            condition = _parse_condition(token[2:] if joins_previous else token, columns)
            if condition is None:
                ignored.append(token)
            elif joins_previous:
                branch[-1].append(condition)
            else:
                branch.append([condition])
        if branch:
            branches.append(branch)
    pairs = list(pairs)
    pair_conditions = [[Condition(k, "=", v)] for k, v in pairs if k in columns]
    ignored.extend(k for k, _ in pairs if k not in columns)
    if pair_conditions:
        branches = [branch + pair_conditions for branch in branches] or [pair_conditions]
    return Query(branches, [(column, desc) for column, desc in order if column in columns], ignored)


def _parse_condition(token: str, columns: set[str]) -> Condition | None:
    match = _CONDITION.match(token)
    if not match or match.group(1) not in columns:
        return None
    column, op, value = match.groups()
    value = value.replace(_ESCAPED_CARET, "^")
    if value.startswith("javascript:"):
        generated = _DATE_GENERATE.match(value)
        if not generated:
            return None
        value = f"{generated.group(1)} {generated.group(2)}"
    return Condition(column, op, value)


# ---- tables ----


class Table(KitTable):
    """One table: rows keyed by sys_id in insertion order (the kit store), with what the
    dictionary says about it and the columns it has now. Rows are replaced, never mutated."""

    def __init__(self, name: str, definition: TableDef | None) -> None:
        self.definition = definition or TableDef(())
        self.declared = definition is not None  # declared tables drop unknown columns on writes
        self.columns: set[str] = set(SYS_FIELDS) | set(self.definition.columns)
        super().__init__("sys_id", normalise=exact, ids=hex_ids(), order="insertion", cache_size=QUERY_CACHE_SIZE,
                         name=name)

    def put(self, row: Row) -> Row:
        self.columns.update(row)
        return super().put(row)

    def find(self, column: str, value: str) -> list[Row]:
        """Rows whose `column` equals `value`, oldest first."""
        if value == "":  # a row without the column counts as blank
            return [row for row in self.rows() if row.get(column, "") == ""]
        return self.lookup(column, value)

    def select(self, query: Query) -> list[Row]:
        """Matching rows in the query's order, kept until the table next changes (paging a
        poll re-asks the same question)."""
        return self.cached((repr(query.branches), tuple(query.order)), lambda: self._select(query))

    def _select(self, query: Query) -> list[Row]:
        conditions = query.and_conditions()
        equality = next((c for c in conditions if c.op == "="), None)
        bounds: dict[str, str] = {}
        for c in conditions:
            if c.field == "sys_updated_on" and c.op in _BOUNDS:
                name = _BOUNDS[c.op]
                tighter = max if name in ("gt", "ge") else min
                bounds[name] = tighter(bounds[name], c.value) if name in bounds else c.value
        by_updated = query.order[:1] == [("sys_updated_on", False)] and query.order[1:] in ([], [("sys_id", False)])
        if equality is not None:
            candidates = self.find(equality.field, equality.value)
        elif bounds or by_updated:
            candidates = self.range("sys_updated_on", **bounds)  # type: ignore[arg-type]
        else:
            candidates = self.rows()
        matched = [row for row in candidates if query.matches(row)]
        if equality is None and by_updated:
            matched.sort(key=lambda row: (row["sys_updated_on"], row["sys_id"]))
        elif query.order:
            for column, desc in reversed(query.order):
                matched.sort(key=lambda row: sort_key(row.get(column, "")), reverse=desc)
        elif equality is None and bounds:
            position = self.cached("positions", lambda: {row["sys_id"]: i for i, row in enumerate(self.rows())})
            matched.sort(key=lambda row: position[row["sys_id"]])
        return matched
