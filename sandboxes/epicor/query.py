"""OData reads as Epicor's REST v2 answers them: `$filter` checked and compiled against the
table's columns, index-assisted narrowing, `$orderby`, `$select`, `$expand`, paging."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Callable, Iterable

from flask import request

from sandboxes.epicor.rules import EntitySet
from sandboxes.epicor.store import EpicorError, Table, fmt_date, fmt_datetime, no_property, odata_error, parse_datetime
from sandboxes.kit import odata
from sandboxes.kit import store as kit

# ---- OData $filter -------------------------------------------------------------------------

EDM = {"str": "Edm.String", "int": "Edm.Int32", "float": "Edm.Decimal", "bool": "Edm.Boolean",
       "datetime": "Edm.DateTimeOffset"}
OP_KIND = {"eq": "Equal", "ne": "NotEqual", "gt": "GreaterThan", "ge": "GreaterThanOrEqual",
           "lt": "LessThan", "le": "LessThanOrEqual"}
# OData v4 as Epicor's REST v2 serves it: typed and plain date/time literals, v3's substringof too.
DIALECT = odata.Dialect(
    typed={"datetimeoffset": parse_datetime, "datetime": parse_datetime, "date": parse_datetime,
           "guid": str, "time": str},
    parse_datetime=parse_datetime,
    functions={"contains": 2, "startswith": 2, "endswith": 2, "substringof": 2, "tolower": 1, "toupper": 1},
    number_suffixes=True,
    exponents=True,
    lambdas=True,
)


FILTER_MESSAGES = {
    "unexpected_text": "Syntax error at position {position} in '{filter}'.",
    "unexpected_end": "Syntax error: unexpected end of '{filter}'.",
    "expected": "Syntax error: expected '{expected}' at '{token}' in '{filter}'.",
    "bad_literal": "The date/time literal '{literal}' is not valid.",
    "arity": "The function '{name}' takes {arguments}.",
    "unexpected_token": "Syntax error: unexpected '{token}' in '{filter}'.",
}


def parse_filter(text: str) -> tuple:
    """The filter's tree; an ODataException with Epicor's wording when it does not parse."""
    try:
        return odata.parse_filter(text, DIALECT)
    except odata.FilterSyntaxError as exc:
        raise odata_error(exc.message(FILTER_MESSAGES, filter=text)) from None


Evaluator = Callable[[dict[str, Any], dict[str, dict[str, Any]]], Any]
Children = Callable[[dict[str, Any]], list[dict[str, Any]]]


def _to_dt(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(value)  # stored values are canonical and zone-less
    except (TypeError, ValueError):
        return parse_datetime(str(value))


def _canonical(name: str, value: datetime) -> str | None:
    """The literal in the column's own stored form, when that form can express it exactly,
    so the comparison is a plain string comparison."""
    if name == "ChangeDate":
        return fmt_datetime(value) if value.microsecond % 1000 == 0 else None
    if (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0):
        return fmt_date(value)
    return None


class FilterCompiler:
    """Turns the AST into closures with types checked once, the way OData rejects
    `Name eq 5` before running anything."""

    def __init__(self, table: Table, navigation: dict[str, tuple[Children, Table]] | None = None,
                 variables: dict[str, Table] | None = None) -> None:
        self.table = table
        self.navigation = navigation or {}  # navigation property -> (a row's children, their table)
        self.variables = variables or {}  # lambda variable -> its table

    def predicate(self, node: tuple) -> Evaluator:
        fn, kind = self.value(node)
        if kind not in ("bool", "any"):
            raise odata_error("The $filter expression must evaluate to a boolean.")
        return fn

    def value(self, node: tuple) -> tuple[Evaluator, str]:
        tag = node[0]
        if tag == "lit":
            literal = node[1]
            kind = ("null" if literal is None else "bool" if isinstance(literal, bool) else
                    "datetime" if isinstance(literal, datetime) else type(literal).__name__)
            return (lambda row, env, v=literal: v), kind
        if tag == "field":
            return self.path(node[1])
        if tag in ("and", "or"):
            left, right = self.predicate(node[1]), self.predicate(node[2])
            if tag == "and":
                return (lambda row, env: bool(left(row, env)) and bool(right(row, env))), "bool"
            return (lambda row, env: bool(left(row, env)) or bool(right(row, env))), "bool"
        if tag == "not":
            inner = self.predicate(node[1])
            return (lambda row, env: not inner(row, env)), "bool"
        if tag == "cmp":
            return self.comparison(node[1], node[2], node[3]), "bool"
        if tag == "call":
            return self.call(node[1], node[2])
        if tag in ("any", "all"):
            return self.lambda_(tag, node[1], node[2], node[3]), "bool"
        raise odata_error("Unsupported $filter expression.")

    def path(self, segments: tuple[str, ...]) -> tuple[Evaluator, str]:
        if len(segments) == 2 and segments[0] in self.variables:
            table, variable, name = self.variables[segments[0]], segments[0], segments[1]
            if name not in table.fields:
                raise no_property(name, table.row_type)
            return (lambda row, env: env[variable].get(name)), table.types[name]
        name = "/".join(segments)
        if len(segments) != 1 or name not in self.table.fields:
            raise no_property(name, self.table.row_type)
        return (lambda row, env: row.get(name)), self.table.types[name]

    def call(self, name: str, args: tuple[tuple, ...]) -> tuple[Evaluator, str]:
        compiled = [self.value(a) for a in args]
        if name in ("tolower", "toupper"):
            inner = compiled[0][0]
            conv = str.lower if name == "tolower" else str.upper
            return (lambda row, env: None if (v := inner(row, env)) is None else conv(str(v))), "str"
        (a, _), (b, _) = compiled
        if name == "substringof":
            a, b = b, a
        test = {"contains": lambda x, y: y in x, "substringof": lambda x, y: y in x,
                "startswith": str.startswith, "endswith": str.endswith}[name]

        def run(row: dict[str, Any], env: dict[str, dict[str, Any]]) -> bool:
            x, y = a(row, env), b(row, env)
            if x is None or y is None:
                return False
            return bool(test(str(x).casefold(), str(y).casefold()))

        return run, "bool"

    def lambda_(self, kind: str, path: tuple[str, ...], variable: str, body: tuple) -> Evaluator:
        if len(path) != 1 or path[0] not in self.navigation:
            raise odata_error(f"Could not find a navigation property named '{'/'.join(path)}' on type "
                              f"'{self.table.row_type}'.")
        children, child_table = self.navigation[path[0]]
        test = FilterCompiler(self.table, self.navigation, {**self.variables, variable: child_table}).predicate(body)
        combine = any if kind == "any" else all

        def run(row: dict[str, Any], env: dict[str, dict[str, Any]]) -> bool:
            return combine(test(row, {**env, variable: child}) for child in children(row))

        return run

    def comparison(self, op: str, left: tuple, right: tuple) -> Evaluator:
        lf, lk = self.value(left)
        rf, rk = self.value(right)
        compare = odata.COMPARISONS[op]
        kinds = {lk, rk}
        if "null" in kinds:
            if op not in ("eq", "ne"):
                return lambda row, env: False
            want_equal = op == "eq"
            return lambda row, env: ((lf(row, env) in (None, "")) if lk != "null" else
                                     (rf(row, env) in (None, ""))) == want_equal
        if "datetime" in kinds:
            for kind, node in ((lk, left), (rk, right)):
                if kind not in ("datetime", "str") or (kind == "str" and node[0] != "lit"):
                    raise self._incompatible(lk, rk, op)
            lv = _to_dt(left[1]) if left[0] == "lit" else None
            rv = _to_dt(right[1]) if right[0] == "lit" else None
            text = _canonical(left[1][0], rv) if rv is not None and left[0] == "field" and len(left[1]) == 1 else None
            if text is not None:
                return lambda row, env: (v := lf(row, env)) not in (None, "") and compare(v, text)
            if right[0] == "lit":
                return lambda row, env: (v := lf(row, env)) not in (None, "") and compare(_to_dt(v), rv)
            if left[0] == "lit":
                return lambda row, env: (v := rf(row, env)) not in (None, "") and compare(lv, _to_dt(v))
            return lambda row, env: ((a := lf(row, env)) not in (None, "") and (b := rf(row, env)) not in (None, "")
                                     and compare(_to_dt(a), _to_dt(b)))
        if kinds <= {"int", "float"} or kinds == {"str"}:  # strings compare without case
            fold = (lambda v: str(v).casefold()) if kinds == {"str"} else (lambda v: v)
            return lambda row, env: ((a := lf(row, env)) is not None and (b := rf(row, env)) is not None
                                     and compare(fold(a), fold(b)))
        if kinds == {"bool"}:
            return lambda row, env: compare(bool(lf(row, env)), bool(rf(row, env)))
        raise self._incompatible(lk, rk, op)

    @staticmethod
    def _incompatible(lk: str, rk: str, op: str) -> EpicorError:
        return odata_error(
            "A binary operator with incompatible types was detected. Found operand types "
            f"'{EDM.get(lk, lk)}' and '{EDM.get(rk, rk)}' for operator kind '{OP_KIND[op]}'."
        )


class QueryMixin:
    def _navigation(self, entity_set: EntitySet) -> dict[str, tuple[Children, Table]]:
        return {nav: ((lambda row, n=nav: self.nav_children(entity_set.table, n, row)), self.tables[child])
                for nav, child in entity_set.navigation.items()}

    def query(self, service: str, entity_set: EntitySet, table: Table, args: Any) -> dict[str, Any]:
        """One OData page: filter (index-assisted), order, count, skip/top (capped), select, expand."""
        navigation = self._navigation(entity_set)
        top = self._top(args)
        skip = self._int_option(args, "$skip", 0)
        select = self._select(table, args.get("$select"))
        expand = self._expand(entity_set, table, args.get("$expand"))
        order = self._orderby(table, args.get("$orderby"))
        text = args.get("$filter")
        children = tuple(self.tables[c].version for c in entity_set.navigation.values())  # `any()` reads them

        def compute() -> list[dict[str, Any]]:
            if not text:
                rows = list(table.rows())
            else:
                ast = parse_filter(text)
                test = FilterCompiler(table, navigation).predicate(ast)
                candidates, ordered = self._narrow(table, ast)
                rows = [row for row in candidates if test(row, {})]
                if not order and not ordered:
                    rows.sort(key=table.key_of)
            if order:
                self._sort(table, rows, order)
            return rows

        # Paging with $skip re-asks the same question; answer it from the last result.
        rows = table.cached((children, text or "", args.get("$orderby") or ""), compute)
        payload: dict[str, Any] = {"@odata.context": f"{self._root(service)}/$metadata#{entity_set.name}"}
        if str(args.get("$count", "")).lower() == "true" or args.get("$inlinecount") == "allpages":
            payload["@odata.count"] = len(rows)
        page = rows[skip: skip + top]
        payload["value"] = [self._shape(table.name, row, select, expand) for row in page]
        return payload

    @staticmethod
    def _narrow(table: Table, ast: tuple) -> tuple[Iterable[dict[str, Any]], bool]:
        """A superset of the matches, found by an index, a key or a stamp when a conjunct allows;
        the full predicate still runs on every candidate. Returns (rows, already in key order)."""
        terms = [(p[1], p[2][1][0], p[3][1]) for p in odata.conjuncts(ast)
                 if p[0] == "cmp" and p[2][0] == "field" and p[3][0] == "lit" and len(p[2][1]) == 1]
        for op, name, literal in terms:
            if op == "eq" and name in table.indexed and literal is not None:
                return table.lookup(name, literal), True
            if op == "eq" and table.key == (name,) and literal is not None:
                row = table.get(literal)
                return ([row] if row is not None else []), True
        for op, name, literal in terms:
            if name == "SysRevID" and op in ("gt", "ge") and isinstance(literal, int):
                return table.changed_since(literal, inclusive=op == "ge"), False
            if name == "ChangeDate" and op in ("gt", "ge") and isinstance(literal, datetime) and name in table.fields:
                return table.range(name, ge=fmt_datetime(literal)[:19]), False
        return table.rows(), True

    def _top(self, args: Any) -> int:
        """`$top`, or the page size when it is absent; never more than the cap."""
        return min(self._int_option(args, "$top", self.settings.page_size), self.settings.max_top)

    @staticmethod
    def _int_option(args: Any, name: str, default: int) -> int:
        raw = args.get(name)
        if raw in (None, ""):
            return default
        try:
            value = int(raw)
        except ValueError:
            value = -1
        if value < 0:
            raise odata_error(f"Invalid value '{raw}' for {name} query option found.")
        return value

    @staticmethod
    def _names(table: Table, text: str | None, known: Any) -> list[str]:
        """`$select` / `$expand` names, each one `known` to the row type."""
        names = odata.split_names(text)
        for name in names:
            if name not in known:
                raise no_property(name, table.row_type)
        return names

    def _select(self, table: Table, text: str | None) -> list[str] | None:
        names = self._names(table, text, {*table.fields, "*"})
        return None if not names or "*" in names else names

    def _expand(self, entity_set: EntitySet, table: Table, text: str | None) -> list[str]:
        return self._names(table, text, entity_set.navigation)

    @staticmethod
    def _orderby(table: Table, text: str | None) -> list[tuple[str, bool]]:
        if not text:
            return []
        try:
            order = odata.parse_orderby(text)
        except ValueError:
            raise odata_error(f"Syntax error in $orderby '{text}'.") from None
        for name, _ in order:
            if name not in table.fields:
                raise no_property(name, table.row_type)
        return order

    @staticmethod
    def _sort(table: Table, rows: list[dict[str, Any]], order: list[tuple[str, bool]]) -> None:
        """Stable: NULLs first, strings by the case-insensitive collation, keys break ties."""
        def part(row: dict[str, Any], name: str) -> tuple[bool, Any]:
            value = row.get(name)
            return (False, 0) if value is None else (True, kit.casefold(value))

        if not any(descending for _, descending in order):
            names = [name for name, _ in order]
            rows.sort(key=lambda r: (*(part(r, n) for n in names), table.key_of(r)))
            return
        rows.sort(key=table.key_of)
        for name, descending in reversed(order):
            rows.sort(key=lambda r, n=name: part(r, n), reverse=descending)

    def _shape(self, table_name: str, row: dict[str, Any], select: list[str] | None,
               expand: list[str]) -> dict[str, Any]:
        out = {k: row[k] for k in select} if select else dict(row)
        for nav in expand:
            out[nav] = [dict(child) for child in self.nav_children(table_name, nav, row)]
        return out

    def _single(self, service: str, entity_set: EntitySet, table: Table, row: dict[str, Any],
                args: Any) -> dict[str, Any]:
        select = self._select(table, args.get("$select"))
        expand = self._expand(entity_set, table, args.get("$expand"))
        return {"@odata.context": f"{self._root(service)}/$metadata#{entity_set.name}/$entity",
                **self._shape(table.name, row, select, expand)}

    def _nav_query(self, service: str, entity_set: EntitySet, row: dict[str, Any], nav: str) -> dict[str, Any]:
        if nav not in entity_set.navigation:
            raise no_property(nav, f"Erp.Tablesets.{entity_set.table}Row")
        child_table = self.tables[entity_set.navigation[nav]]
        children = self.nav_children(entity_set.table, nav, row)
        args = request.args
        text = args.get("$filter")
        if text:
            test = FilterCompiler(child_table).predicate(parse_filter(text))
            children = [c for c in children if test(c, {})]
        order = self._orderby(child_table, args.get("$orderby"))
        if order:
            self._sort(child_table, children, order)
        top = self._top(args)
        skip = self._int_option(args, "$skip", 0)
        select = self._select(child_table, args.get("$select"))
        return {"@odata.context": f"{self._root(service)}/$metadata#{nav}",
                "value": [{k: c[k] for k in select} if select else dict(c) for c in children[skip: skip + top]]}


def parse_resource(rest: str) -> tuple[str, Any, str | None]:
    """`APInvoices('EPIC06',233,'INV-88')/APInvDtls` -> ('APInvoices', ['EPIC06', 233, 'INV-88'], 'APInvDtls')."""
    if not rest:
        return "", None, None
    match = re.match(r"[A-Za-z_$][A-Za-z0-9_.]*", rest)
    if not match:
        raise odata_error(f"Resource '{rest}' is not valid.")
    name = match.group(0)
    pos = match.end()
    keys: Any = None
    if pos < len(rest) and rest[pos] == "(":
        keys, pos = _parse_keys(rest, pos + 1)
    nav = None
    if pos < len(rest):
        if rest[pos] != "/":
            raise odata_error(f"Resource '{rest}' is not valid.")
        nav = rest[pos + 1:].strip("/") or None
    return name, keys, nav


_KEY_PART = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)\s*=)?\s*(?:'((?:[^']|'')*)'|(-?\d+))?\s*")


def _parse_keys(text: str, pos: int) -> tuple[Any, int]:
    """The key values after `(` up to `)`, positional or `Name=value`, and where they end."""
    positional: list[Any] = []
    named: dict[str, Any] = {}
    while True:
        match = _KEY_PART.match(text, pos)
        label, quoted, number = match.groups()  # type: ignore[union-attr]
        pos = match.end()  # type: ignore[union-attr]
        if quoted is None and number is None:
            raise odata_error("Unterminated string in key." if text[pos:pos + 1] == "'" else "Bad key segment.")
        value = quoted.replace("''", "'") if quoted is not None else int(number)
        if label:
            named[label] = value
        else:
            positional.append(value)
        if pos >= len(text):
            raise odata_error("Unterminated key segment.")
        if text[pos] == ")":
            return (named if named else positional), pos + 1
        if text[pos] != ",":
            raise odata_error("Bad key segment.")
        pos += 1
