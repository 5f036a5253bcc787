"""`$filter` as Acumatica's contract-based REST reads it: the kit's OData parser with
Acumatica's dialect and wording, compiled against stored records."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from sandboxes.acumatica.model import T, norm, parse_dt
from sandboxes.kit import odata

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
    """The filter's tree; FilterError says why not, as Acumatica does."""

    def check(path: tuple[str, ...]) -> None:
        if "/".join(path) not in kinds:
            raise FilterError(f"The field '{'/'.join(path)}' is not found in the entity '{entity}'.")

    try:
        return odata.parse_filter(text, DIALECT, check)
    except odata.FilterSyntaxError as exc:
        raise FilterError(exc.message(FILTER_MESSAGES)) from None


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


MATCHES = {"substringof": lambda a, b: a in b, "startswith": str.startswith, "endswith": str.endswith}
CASES = {"tolower": str.lower, "toupper": str.upper, "trim": str.strip}


def compile_filter(node: tuple, kinds: dict[str, str]) -> Callable[[dict[str, Any]], Any]:
    """A record -> value function of the tree; a date field reads as a date, so dates compare as dates."""
    kind = node[0]
    if kind == "lit":
        value = node[1]
        return lambda rec: value
    if kind == "field":
        path, dated = node[1], kinds["/".join(node[1])] == T
        if len(path) == 1:
            name = path[0]
            return (lambda rec: parse_dt(rec.get(name))) if dated else (lambda rec: rec.get(name))

        def nested(rec: dict[str, Any]) -> Any:
            value: Any = rec
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            return parse_dt(value) if dated else value

        return nested
    if kind in ("and", "or"):
        left, right = compile_filter(node[1], kinds), compile_filter(node[2], kinds)
        if kind == "and":
            return lambda rec: left(rec) is True and right(rec) is True
        return lambda rec: left(rec) is True or right(rec) is True
    if kind == "not":
        inner = compile_filter(node[1], kinds)
        return lambda rec: inner(rec) is not True
    if kind == "cmp":
        op, left, right = node[1], compile_filter(node[2], kinds), compile_filter(node[3], kinds)
        return lambda rec: _compare(op, left(rec), right(rec))
    name, args = node[1], [compile_filter(a, kinds) for a in node[2]]
    if name in MATCHES:  # false when the searched text is null
        match, searched = MATCHES[name], args[1 if name == "substringof" else 0]
        return lambda rec: searched(rec) is not None and match(norm(args[0](rec)), norm(args[1](rec)))
    case = CASES[name]
    return lambda rec: None if args[0](rec) is None else case(str(args[0](rec)))


def equality_terms(node: tuple) -> list[tuple[str, Any]]:
    """`Field eq 'literal'` terms of the top-level `and` chain on own fields (for index lookups)."""
    return [(path[0], value) for path, value in odata.equality_terms(node) if len(path) == 1]

