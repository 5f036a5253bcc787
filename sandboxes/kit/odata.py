"""One OData `$filter` reader for every sandbox that serves OData.

The grammar (comparisons, `and`/`or`/`not`, parentheses, `''` inside strings, numbers,
booleans, `null`, functions, `any`/`all` lambdas) is the same everywhere; what a vendor
accepts differs only in its literal forms and functions, so those are a `Dialect`.
Parsing yields a small tuple tree that each sandbox checks and compiles against its own
columns, so the vendor's type rules and messages stay in the vendor's module:

    ("lit", value)                      a literal
    ("field", ("A", "B"))               a property path, `A/B`
    ("cmp", op, left, right)            op in eq ne gt ge lt le
    ("and", left, right) | ("or", left, right) | ("not", node)
    ("call", name, (arg, ...))          a function call
    ("any" | "all", path, variable, body)

Errors are `FilterSyntaxError` with a `reason` and the details a vendor's message needs.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Mapping

Node = tuple
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt,
    "ge": operator.ge, "lt": operator.lt, "le": operator.le,
}
ISO_DATETIME = r"\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:\d{2})?"


class FilterSyntaxError(ValueError):
    """A `$filter` that does not parse; `reason` is one of:

    unexpected_text (position, text), empty, unexpected_end, unexpected_token (token),
    expected (expected, token), expected_in_call (expected, token, function),
    bad_literal (literal, prefix), unknown_function (name), arity (name, arity).
    """

    # A vendor that words two reasons alike gives a template for the second only.
    FALLBACK = {"empty": "unexpected_end", "expected_in_call": "expected", "unknown_function": "unexpected_token"}

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details

    def message(self, templates: Mapping[str, str], **context: Any) -> str:
        """The vendor's wording: `templates[reason]` formatted with the details and `context`."""
        reason = self.reason
        while reason not in templates:
            reason = self.FALLBACK[reason]
        return templates[reason].format(**self.details, **context)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one pattern cache entry each
class Dialect:
    """What one vendor's OData accepts; the grammar itself is not configurable."""

    typed: Mapping[str, Callable[[str], Any]] = field(default_factory=dict)  # prefix'...' -> value
    bare_datetime: str | None = ISO_DATETIME  # regex of an unquoted date/time literal
    parse_datetime: Callable[[str], Any] | None = None  # raises ValueError when not a date/time
    functions: Mapping[str, int] = field(default_factory=dict)  # name -> number of arguments
    number_suffixes: bool = False  # `1.5m`, `2L`: EDM type suffixes accepted and dropped
    exponents: bool = False  # `1e3`
    decimal_numbers: bool = False  # numbers as `Decimal` rather than int/float
    booleans: bool = True  # `true`/`false` are literals (else they read as property names)
    negation: bool = True  # `not` is an operator
    lambdas: bool = False  # `Nav/any(d: ...)`, `Nav/all(d: ...)`
    fold_keywords: bool = False  # `AND`, `Eq`, `NULL` accepted as keywords


_ARGUMENTS = {1: "one argument", 2: "two arguments"}  # arity in words, for messages


class _Tokens:
    """The token pattern of a dialect, built once."""

    def __init__(self, dialect: Dialect) -> None:
        parts = [r"(?P<punct>[(),/:])"]
        if dialect.typed:
            prefixes = "|".join(sorted((re.escape(p) for p in dialect.typed), key=len, reverse=True))
            parts.append(rf"(?P<typed>(?:{prefixes})'(?:[^']|'')*')")
        parts.append(r"(?P<string>'(?:[^']|'')*')")
        if dialect.bare_datetime:
            parts.append(rf"(?P<datetime>{dialect.bare_datetime})")
        number = r"-?\d+(?:\.\d+)?"
        if dialect.exponents:
            number += r"(?:[eE][+-]?\d+)?"
        parts.append(rf"(?P<number>{number}){'[mMdDfFlL]?' if dialect.number_suffixes else ''}")
        parts.append(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)")
        self.pattern = re.compile(r"\s*(?:" + "|".join(parts) + ")")  # one match a token, blanks included

    def split(self, text: str) -> list[tuple[str, str]]:
        tokens: list[tuple[str, str]] = []
        text = text.rstrip()
        match_at, pos, end = self.pattern.match, 0, len(text)
        while pos < end:
            match = match_at(text, pos)
            if match is None:
                pos += len(text[pos:]) - len(text[pos:].lstrip())
                raise FilterSyntaxError("unexpected_text", position=pos, text=text[pos:pos + 20])
            kind = match.lastgroup or ""
            tokens.append((kind, match.group(kind)))
            pos = match.end()
        return tokens


_PATTERNS: dict[Dialect, _Tokens] = {}


def tokenize(text: str, dialect: Dialect) -> list[tuple[str, str]]:
    """`text` as (kind, text) tokens; kinds: punct typed string datetime number name."""
    tokens = _PATTERNS.get(dialect)
    if tokens is None:
        tokens = _PATTERNS[dialect] = _Tokens(dialect)
    return tokens.split(text)


def parse_filter(text: str, dialect: Dialect,
                 check_field: Callable[[tuple[str, ...]], None] | None = None) -> Node:
    """The tree of `text`; `check_field` may reject a property as soon as it is read."""
    return _Parser(text, dialect, check_field).parse()


class _Parser:
    """Recursive descent: `or` binds loosest, then `and`, then `not`, then comparisons."""

    def __init__(self, text: str, dialect: Dialect, check_field: Callable[[tuple[str, ...]], None] | None) -> None:
        self.dialect = dialect
        self.tokens = tokenize(text, dialect)
        self.count = len(self.tokens)
        fold = dialect.fold_keywords
        # Each token's keyword reading ('' when it cannot be one), and '' past the end.
        self.words = [(t.lower() if fold else t) if kind == "name" else "" for kind, t in self.tokens] + [""]
        self.pos = 0
        self.check_field = check_field

    def parse(self) -> Node:
        if not self.tokens:
            raise FilterSyntaxError("empty")
        node = self._or()
        if self.pos != self.count:
            raise FilterSyntaxError("unexpected_token", token=self.tokens[self.pos][1])
        return node

    def _word(self) -> str:
        """The next token as a keyword candidate, or '' when it cannot be one."""
        return self.words[self.pos]

    def _punct(self, value: str) -> bool:
        return self.pos < self.count and self.tokens[self.pos] == ("punct", value)

    def _take(self) -> tuple[str, str]:
        if self.pos >= self.count:
            raise FilterSyntaxError("unexpected_end")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _expect(self, value: str, function: str | None = None) -> None:
        kind, text = self._take()
        if (kind, text) != ("punct", value) and function:
            raise FilterSyntaxError("expected_in_call", expected=value, token=text, function=function)
        if (kind, text) != ("punct", value):
            raise FilterSyntaxError("expected", expected=value, token=text)

    def _or(self) -> Node:
        node = self._and()
        while self._word() == "or":
            self.pos += 1
            node = ("or", node, self._and())
        return node

    def _and(self) -> Node:
        node = self._not()
        while self._word() == "and":
            self.pos += 1
            node = ("and", node, self._not())
        return node

    def _not(self) -> Node:
        if self.dialect.negation and self._word() == "not":
            self.pos += 1
            return ("not", self._not())
        left = self._operand()
        op = self._word()
        if op in COMPARISONS:
            self.pos += 1
            return ("cmp", op, left, self._operand())
        return left

    def _operand(self) -> Node:
        kind, text = self._take()
        if (kind, text) == ("punct", "("):
            node = self._or()
            self._expect(")")
            return node
        if kind == "string":
            return ("lit", text[1:-1].replace("''", "'"))
        if kind == "typed":
            prefix, quoted = text.split("'", 1)
            return ("lit", self._convert(self.dialect.typed[prefix], quoted[:-1].replace("''", "'"), prefix))
        if kind == "datetime":
            return ("lit", self._convert(self.dialect.parse_datetime, text, None))
        if kind == "number":
            digits = text.rstrip("mMdDfFlL")
            if self.dialect.decimal_numbers:
                return ("lit", Decimal(digits))
            return ("lit", float(digits) if any(c in digits for c in ".eE") else int(digits))
        if kind == "name":
            return self._name(text)
        raise FilterSyntaxError("unexpected_token", token=text)

    def _name(self, text: str) -> Node:
        word = text.lower() if self.dialect.fold_keywords else text
        if self.dialect.booleans and word in ("true", "false"):
            return ("lit", word == "true")
        if word == "null":
            return ("lit", None)
        if self._punct("("):
            return self._call(word)
        path = [text]
        while self._punct("/"):
            self.pos += 1
            segment = self._take()[1]
            if self.dialect.lambdas and segment in ("any", "all") and self._punct("("):
                self.pos += 1
                variable = self._take()[1]
                self._expect(":")
                body = self._or()
                self._expect(")")
                return (segment, tuple(path), variable, body)
            path.append(segment)
        if self.check_field is not None:
            self.check_field(tuple(path))
        return ("field", tuple(path))

    def _call(self, name: str) -> Node:
        arity = self.dialect.functions.get(name)
        if arity is None:
            raise FilterSyntaxError("unknown_function", name=name, token="(")
        self.pos += 1  # '('
        args = [self._or()]
        while self._punct(","):
            self.pos += 1
            args.append(self._or())
        self._expect(")", function=name)
        if len(args) != arity:
            raise FilterSyntaxError("arity", name=name, arity=arity, arguments=_ARGUMENTS.get(arity, f"{arity} arguments"))
        return ("call", name, tuple(args))

    @staticmethod
    def _convert(convert: Callable[[str], Any] | None, literal: str, prefix: str | None) -> Any:
        try:
            if convert is None:
                raise ValueError(literal)
            return convert(literal)
        except ValueError:
            raise FilterSyntaxError("bad_literal", literal=literal, prefix=prefix or "date") from None


def conjuncts(node: Node) -> list[Node]:
    """The parts of a top-level `and` chain (a planner's candidates for index look-ups)."""
    if node[0] == "and":
        return conjuncts(node[1]) + conjuncts(node[2])
    return [node]


def equality_terms(node: Node) -> list[tuple[tuple[str, ...], Any]]:
    """`path eq literal` terms (either side) of the top-level `and` chain, literal not null."""
    terms = []
    for part in conjuncts(node):
        if part[0] != "cmp" or part[1] != "eq":
            continue
        left, right = part[2], part[3]
        if left[0] == "lit":
            left, right = right, left
        if left[0] == "field" and right[0] == "lit" and right[1] is not None:
            terms.append((left[1], right[1]))
    return terms


def split_names(text: str | None) -> list[str]:
    """`$select` / `$expand` as a list: `A, B,,C` -> ["A", "B", "C"]."""
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def path_tree(text: str | None) -> dict[str, Any]:
    """Nested `$select` / `$expand` paths as a tree: 'Details,Contact/Address' ->
    {'Details': {}, 'Contact': {'Address': {}}}."""
    tree: dict[str, Any] = {}
    for item in split_names(text):
        node = tree
        for part in (p.strip() for p in item.split("/")):
            if part:
                node = node.setdefault(part, {})
    return tree


def parse_orderby(text: str, *, fold_direction: bool = False, skip_empty: bool = False) -> list[tuple[str, bool]]:
    """`A desc, B` -> [("A", True), ("B", False)]; ValueError(item) on a malformed item.

    `fold_direction` accepts `DESC`/`Asc`; `skip_empty` passes over `A,,B`'s empty item.
    """
    order: list[tuple[str, bool]] = []
    for item in text.split(","):
        bits = item.split()
        if not bits and skip_empty:
            continue
        direction = (bits[1].lower() if fold_direction else bits[1]) if len(bits) == 2 else "asc"
        if not bits or len(bits) > 2 or direction not in ("asc", "desc"):
            raise ValueError(item.strip())
        order.append((bits[0], direction == "desc"))
    return order
