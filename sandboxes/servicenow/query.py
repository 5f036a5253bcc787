"""Encoded queries (`sysparm_query`): `^` ANDs, `^OR` ORs, `^NQ` new branches, ORDERBY clauses.

Clauses naming an unknown column or malformed are dropped (the instance's default), and
reported in `Query.ignored` for `glide.invalid_query.returns_no_rows`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

_OPERATORS = (
    "!=", ">=", "<=", "NOT LIKE", "NOTLIKE", "NOT IN", "NOTIN", "ISNOTEMPTY", "ISEMPTY", "STARTSWITH",
    "ENDSWITH", "BETWEEN", "ANYTHING", "NSAMEAS", "SAMEAS", "LIKE", "IN", "=", ">", "<",
)
_CONDITION = re.compile(r"^([a-z_][a-z0-9_]*)(" + "|".join(re.escape(op) for op in _OPERATORS) + r")(.*)$", re.S)
_DATE_GENERATE = re.compile(r"^javascript:gs\.dateGenerate\('(\d{4}-\d{2}-\d{2})',\s*'(\d{2}:\d{2}:\d{2})'\)$")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_ESCAPED_CARET = "\x00"
_ORDERING = {">": (1,), ">=": (0, 1), "<": (-1,), "<=": (-1, 0)}

Row = dict[str, str]


def compare(left: str, right: str) -> int:
    """Numbers compare as numbers, everything else (dates included) as text."""
    a, b = (float(left), float(right)) if _NUMBER.match(left) and _NUMBER.match(right) else (left, right)
    return (a > b) - (a < b)  # type: ignore[operator]


def sort_key(value: str) -> tuple[int, float, str]:
    return (0, float(value), "") if _NUMBER.match(value) else (1, 0.0, value)


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: str

    def compile(self) -> Callable[[Row], bool]:
        f, v, op = self.field, self.value, self.op
        if op in ("=", "!="):
            return (lambda r: r.get(f, "") == v) if op == "=" else (lambda r: r.get(f, "") != v)
        if op in _ORDERING:
            wanted = _ORDERING[op]
            return lambda r: (x := r.get(f, "")) != "" and compare(x, v) in wanted
        if op == "BETWEEN":
            low, _, high = v.partition("@")
            return lambda r: (x := r.get(f, "")) != "" and compare(x, low) >= 0 and compare(x, high) <= 0
        if op in ("LIKE", "NOT LIKE", "NOTLIKE"):
            needle, negate = v.lower(), op != "LIKE"
            return lambda r: (needle in r.get(f, "").lower()) != negate
        if op in ("STARTSWITH", "ENDSWITH"):
            test = str.startswith if op == "STARTSWITH" else str.endswith
            return lambda r: test(r.get(f, "").lower(), v.lower())
        if op in ("IN", "NOT IN", "NOTIN"):
            options, negate = frozenset(v.split(",")), op != "IN"
            return lambda r: (r.get(f, "") in options) != negate
        if op in ("ISEMPTY", "ISNOTEMPTY"):
            return lambda r: (r.get(f, "") == "") == (op == "ISEMPTY")
        if op in ("SAMEAS", "NSAMEAS"):
            return lambda r: (r.get(f, "") == r.get(v, "")) == (op == "SAMEAS")
        return lambda r: True  # ANYTHING


@dataclass
class Query:
    """A parsed encoded query: `^NQ` branches of AND-ed OR-groups, plus ORDERBY clauses."""

    branches: list[list[list[Condition]]]
    order: list[tuple[str, bool]]  # (column, descending)
    ignored: list[str]  # clauses dropped as invalid, as the instance does by default

    def matcher(self) -> Callable[[Row], bool] | None:
        if not self.branches:
            return None
        compiled = [[[c.compile() for c in group] for group in branch] for branch in self.branches]
        if len(compiled) == 1 and all(len(group) == 1 for group in compiled[0]):
            checks = [group[0] for group in compiled[0]]
            return lambda row: all(check(row) for check in checks)
        return lambda row: any(all(any(p(row) for p in group) for group in branch) for branch in compiled)

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
