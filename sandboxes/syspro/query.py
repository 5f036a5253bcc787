"""COMFND `Where` and OData `$filter` as one small tree, compiled to a predicate and read by
one planner for keyed look-ups and change-column lower bounds.

    ("cmp", column, op, value) | ("and", [nodes]) | ("or", [nodes]) | ("true",)

Columns in the tree are the stored names; `names` maps the names a query may use to them.
"""

from __future__ import annotations

import re
from itertools import islice
import xml.etree.ElementTree as ET
from datetime import date, datetime
from typing import Any, Callable, Mapping

from sandboxes.kit import odata

from .tables import Table, coerce, norm, parse_datetime_text, sort_key

Node = tuple
_COMPARE = {op.upper(): compare for op, compare in odata.COMPARISONS.items()}  # COMFND's EQ ... GE
OPERATORS = {*_COMPARE, "LIKE"}
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


UNKNOWN_COLUMN = "Column '{column}' not found in table '{table}'"  # COMFND's wording
UNKNOWN_PROPERTY = "Could not find a property named '{column}' on type '{table}'"  # OData's


class QueryError(ValueError):
    """A malformed query; the REST host answers it as `ERROR: ...` text, OData as a 400."""


def compile_node(node: Node) -> Callable[[dict[str, Any]], bool]:
    kind = node[0]
    if kind == "true":
        return lambda row: True
    if kind in ("and", "or"):
        parts = [compile_node(child) for child in node[1]]
        join = all if kind == "and" else any
        return lambda row: join(part(row) for part in parts)
    _, column, op, value = node
    if op == "LIKE":
        pattern = re.compile(
            "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in str(value).rstrip()),
            re.IGNORECASE | re.DOTALL,
        )
        return lambda row: row.get(column) is not None and bool(pattern.fullmatch(str(row[column]).rstrip()))
    target, compare = norm(value), _COMPARE[op]

    def test(row: dict[str, Any]) -> bool:
        current = row.get(column)
        if current is None or target is None:
            return op in ("EQ", "NE") and compare(current is None, target is None)
        current = norm(current)
        if isinstance(current, date) and not isinstance(current, datetime) and isinstance(target, datetime):
            current = datetime.combine(current, datetime.min.time())
        return compare(current, target)

    return test


def _implied(node: Node, leaf: Callable[[Node], Any], both: Callable[[list[Any]], Any],
             either: Callable[[list[Any]], Any]) -> Any:
    """What `node` implies about one column, or None: `leaf` reads a comparison, `both` joins what
    the parts of an AND imply, `either` what every branch of an OR implies."""
    if node[0] == "or":
        found = [_implied(child, leaf, both, either) for child in node[1]]
        return None if not found or None in found else either(found)
    found = [_implied(part, leaf, both, either) if part[0] == "or" else leaf(part) if part[0] == "cmp" else None
             for part in (node[1] if node[0] == "and" else [node])]
    found = [value for value in found if value is not None]
    return both(found) if found else None


def pinned_values(node: Node, column: str) -> set[Any] | None:
    """Values `column` must take for `node` to hold (EQ conjuncts, OR of such); None if open."""
    return _implied(node, lambda c: {norm(c[3])} if c[1] == column and c[2] == "EQ" and c[3] is not None else None,
                    lambda found: found[0], lambda found: set().union(*found))


def lower_bound(node: Node, column: str) -> datetime | None:
    """The smallest `column` value any matching row can have, when the filter implies one."""
    return _implied(node, lambda c: c[3] if c[1] == column and c[2] in ("EQ", "GE", "GT") and isinstance(c[3], datetime)
                    else None, max, min)


def run_query(table: Table, node: Node, order_by: list[tuple[str, bool]], *, limit: int | None,
              skip: int = 0) -> tuple[list[dict[str, Any]], int | None]:
    """Rows matching `node` in `order_by` order (column, descending); total when cheap to know."""
    predicate = compile_node(node)
    wanted = None if limit is None else skip + limit
    first = pinned_values(node, table.key[0])
    if first is not None:  # keyed look-up: the first key column pinned (index bucket)
        rows = _ordered([row for value in first for row in table.children(value) if predicate(row)], order_by)
        return rows[skip:wanted], len(rows)
    natural = [(table.change, False)] + [(k, False) for k in table.key]
    if table.change and order_by and order_by == natural[: len(order_by)]:
        # keyset page: ordered by (change, key...) ascending, walk the change order from its bound
        # (as ever here, a page of 0 rows from the start still holds the first match)
        matches = filter(predicate, table.changed_since(lower_bound(node, table.change)))
        return list(islice(matches, skip, None if wanted is None else max(wanted, 1))), None
    rows = _ordered([row for row in table.store.rows() if predicate(row)], order_by or [(k, False) for k in table.key])
    return rows[skip:wanted], len(rows)


def _ordered(rows: list[dict[str, Any]], order_by: list[tuple[str, bool]]) -> list[dict[str, Any]]:
    for column, descending in reversed(order_by):
        rows.sort(key=lambda row: sort_key(row.get(column)), reverse=descending)
    return rows


# ---- COMFND `Where` and OData `$filter`: both read by the kit's OData parser ----------------------


def resolve(names: Mapping[str, str], column: str, table: Table, message: str) -> str:
    """The stored name of a column a query names; QueryError(`message`) when the table lacks it."""
    if column not in names:
        raise QueryError(message.format(column=column, table=table.name))
    return names[column]


def parse_comfnd_where(where: ET.Element | None, table: Table, names: Mapping[str, str]) -> Node:
    """COMFND expressions: `AndOr` joins to the previous one, brackets may nest ('((' / '))').

    Each expression becomes a placeholder name, so the bracket and AND/OR grammar is the kit's."""
    if where is None:
        return ("true",)
    words: list[str] = []
    atoms: dict[str, Node] = {}
    for index, expression in enumerate(where.findall("Expression")):
        if index:
            words.append((expression.findtext("AndOr") or "").strip().lower() or "and")
        words.extend("(" for _ in (expression.findtext("OpenBracket") or "").strip())
        name = (expression.findtext("Column") or "").strip()
        column = resolve(names, name, table, UNKNOWN_COLUMN)
        condition = (expression.findtext("Condition") or "EQ").strip().upper()
        if condition not in OPERATORS:
            raise QueryError(f"Invalid condition '{condition}'")
        raw = expression.findtext("Value") or ""
        try:
            value = raw if condition == "LIKE" else coerce(table.columns[column], raw)
        except ValueError:
            raise QueryError(f"Invalid value '{raw}' for column '{name}'") from None
        words.append(f"x{index}")
        atoms[f"x{index}"] = ("cmp", column, condition, value)
        words.extend(")" for _ in (expression.findtext("CloseBracket") or "").strip())
    if not atoms:
        return ("true",)
    try:
        return _as_where(odata.parse_filter(" ".join(words), DIALECT), table, names, atoms)
    except odata.FilterSyntaxError:
        raise QueryError("Unbalanced brackets in query") from None


def parse_odata_filter(text: str, table: Table, names: Mapping[str, str]) -> Node:
    if not text.strip():
        return ("true",)
    try:
        return _as_where(odata.parse_filter(text, DIALECT), table, names)
    except odata.FilterSyntaxError as exc:
        raise QueryError(exc.message(FILTER_MESSAGES, filter=text.strip())) from None


def _as_where(node: odata.Node, table: Table, names: Mapping[str, str],
              atoms: Mapping[str, Node] | None = None) -> Node:
    tag = node[0]
    if tag in ("and", "or"):
        parts: list[Node] = []
        for child in (_as_where(node[1], table, names, atoms), _as_where(node[2], table, names, atoms)):
            parts.extend(child[1] if child[0] == tag else [child])
        return (tag, parts)
    if atoms is not None:
        return atoms[node[1][0]]  # a placeholder: the grammar admits nothing else here
    if tag == "cmp" and node[2][0] == "field" and node[3][0] == "lit":
        name, literal = "/".join(node[2][1]), node[3][1]
        column = resolve(names, name, table, UNKNOWN_PROPERTY)
        try:
            value = coerce(table.columns[column], literal) if literal is not None else None
        except (ValueError, TypeError):
            raise QueryError(f"Invalid literal for '{name}'") from None
        return ("cmp", column, node[1].upper(), value)
    left = node[2] if tag == "cmp" else node
    if left[0] == "field":
        raise QueryError(f"Expected a comparison after '{'/'.join(left[1])}'")
    raise QueryError("Malformed query expression")
