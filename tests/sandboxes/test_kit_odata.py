"""The shared OData `$filter` reader, once for every sandbox that serves OData."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from sandboxes.kit import odata
from sandboxes.kit.odata import Dialect, FilterSyntaxError, parse_filter


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


FULL = Dialect(
    typed={"datetimeoffset": iso, "datetime": iso, "guid": str.lower},
    parse_datetime=iso,
    functions={"contains": 2, "startswith": 2, "substringof": 2, "tolower": 1},
    number_suffixes=True,
    exponents=True,
    lambdas=True,
)
BARE = Dialect(parse_datetime=iso, decimal_numbers=True, booleans=False, negation=False)
FOLDED = Dialect(parse_datetime=iso, fold_keywords=True)


def field(*path: str) -> tuple:
    return ("field", path)


def lit(value: object) -> tuple:
    return ("lit", value)


@pytest.mark.parametrize("op", ["eq", "ne", "gt", "ge", "lt", "le"])
def test_each_comparison_keeps_its_operator(op: str) -> None:
    assert parse_filter(f"Amount {op} 5", FULL) == ("cmp", op, field("Amount"), lit(5))


def test_and_binds_tighter_than_or_and_parentheses_group() -> None:
    a, b, c = (("cmp", "eq", field(n), lit(1)) for n in "ABC")
    assert parse_filter("A eq 1 or B eq 1 and C eq 1", FULL) == ("or", a, ("and", b, c))
    assert parse_filter("(A eq 1 or B eq 1) and C eq 1", FULL) == ("and", ("or", a, b), c)
    assert parse_filter("not (A eq 1)", FULL) == ("not", a)


def test_doubled_quotes_are_one_quote() -> None:
    assert parse_filter("Name eq 'O''Brien'''", FULL) == ("cmp", "eq", field("Name"), lit("O'Brien'"))
    assert parse_filter("Name eq ''", FULL)[3] == lit("")


def test_literals_numbers_booleans_null() -> None:
    assert parse_filter("A eq 1.5m", FULL)[3] == lit(1.5)
    assert parse_filter("A eq -2L", FULL)[3] == lit(-2)
    assert parse_filter("A eq 1e3", FULL)[3] == lit(1000.0)
    assert parse_filter("A eq true", FULL)[3] == lit(True)
    assert parse_filter("A eq null", FULL)[3] == lit(None)
    assert parse_filter("A eq 10.50", BARE)[3] == lit(Decimal("10.50"))


def test_datetime_literals_typed_and_plain() -> None:
    want = iso("2024-05-01T00:00:00+00:00")
    assert parse_filter("D ge datetimeoffset'2024-05-01T00:00:00Z'", FULL)[3] == lit(want)
    assert parse_filter("D ge datetime'2024-05-01T00:00:00+00:00'", FULL)[3] == lit(want)
    assert parse_filter("D ge 2024-05-01T00:00:00Z", FULL)[3] == lit(want)
    assert parse_filter("G eq guid'AB-CD'", FULL)[3] == lit("ab-cd")


def test_a_bad_datetime_literal_names_the_literal_and_prefix() -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter("D gt datetimeoffset'yesterday'", FULL)
    assert (caught.value.reason, caught.value.details) == ("bad_literal", {"literal": "yesterday", "prefix": "datetimeoffset"})


def test_a_dialect_without_typed_literals_reads_the_prefix_as_a_name() -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter("D gt datetime'2024-05-01'", BARE)
    assert caught.value.reason == "unexpected_token"


def test_functions_their_arity_and_unknown_ones() -> None:
    assert parse_filter("contains(Name,'ac')", FULL) == ("call", "contains", (field("Name"), lit("ac")))
    assert parse_filter("startswith(tolower(Name), 'a')", FULL) == (
        "call", "startswith", (("call", "tolower", (field("Name"),)), lit("a")))
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter("contains(Name)", FULL)
    assert (caught.value.reason, caught.value.details) == (
        "arity", {"name": "contains", "arity": 2, "arguments": "two arguments"})
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter("endswith(Name,'x')", FULL)
    assert (caught.value.reason, caught.value.details["name"]) == ("unknown_function", "endswith")


def test_paths_and_lambdas() -> None:
    assert parse_filter("Contact/Email eq 'a'", FULL)[2] == field("Contact", "Email")
    assert parse_filter("Lines/any(d: d/Part eq 'P1')", FULL) == (
        "any", ("Lines",), "d", ("cmp", "eq", field("d", "Part"), lit("P1")))


def test_keywords_are_exact_unless_the_dialect_folds_them() -> None:
    with pytest.raises(FilterSyntaxError):
        parse_filter("A EQ 1", FULL)
    assert parse_filter("A EQ 1 AND B Eq NULL", FOLDED) == (
        "and", ("cmp", "eq", field("A"), lit(1)), ("cmp", "eq", field("B"), lit(None)))


def test_a_dialect_without_not_or_booleans() -> None:
    assert parse_filter("A eq true", BARE)[3] == field("true")
    with pytest.raises(FilterSyntaxError):
        parse_filter("not (A eq 1)", BARE)


@pytest.mark.parametrize(("text", "reason", "details"), [
    ("", "empty", {}),
    ("   ", "empty", {}),
    ("A eq", "unexpected_end", {}),
    ("A eq 1 and", "unexpected_end", {}),
    ("(A eq 1", "unexpected_end", {}),
    ("(A eq 1 B", "expected", {"expected": ")", "token": "B"}),
    ("contains(A 'x')", "expected_in_call", {"expected": ")", "token": "'x'", "function": "contains"}),
    ("A eq 1)", "unexpected_token", {"token": ")"}),
    ("A eq #", "unexpected_text", {"position": 5, "text": "#"}),
    ("A eq 'open", "unexpected_text", {"position": 5, "text": "'open"}),
])
def test_syntax_errors_carry_a_reason(text: str, reason: str, details: dict) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter(text, FULL)
    assert (caught.value.reason, caught.value.details) == (reason, details)


def test_check_field_rejects_as_the_property_is_read() -> None:
    seen: list[tuple[str, ...]] = []

    def check(path: tuple[str, ...]) -> None:
        seen.append(path)
        if path == ("Colour",):
            raise LookupError(path)

    with pytest.raises(LookupError):
        parse_filter("Name eq 'x' and Colour eq 'red'", FULL, check)
    assert seen == [("Name",), ("Colour",)]


def test_conjuncts_and_equality_terms() -> None:
    node = parse_filter("A eq 1 and ('x' eq B and C gt 2) and D eq null or E eq 3", FULL)
    assert odata.conjuncts(node) == [node]  # the top is an `or`: no conjunct may narrow
    node = parse_filter("A eq 1 and ('x' eq B and C gt 2) and D eq null", FULL)
    assert odata.equality_terms(node) == [(("A",), 1), (("B",), "x")]


def test_orderby() -> None:
    assert odata.parse_orderby("A desc, B,C asc") == [("A", True), ("B", False), ("C", False)]
    assert odata.parse_orderby("A DESC,,B", fold_direction=True, skip_empty=True) == [("A", True), ("B", False)]
    for bad in ("A DESC", "A,,B", "A desc x"):
        with pytest.raises(ValueError):
            odata.parse_orderby(bad)


def test_messages_use_the_vendor_templates_with_fallbacks() -> None:
    templates = {"unexpected_end": "ends: {filter}", "expected": "want {expected} got {token}",
                 "unexpected_token": "bad {token}"}
    cases = {"": "ends: ", "contains(A 'x')": "want ) got 'x'", "nope(A)": "bad ("}
    for text, wording in cases.items():
        with pytest.raises(FilterSyntaxError) as caught:
            parse_filter(text, FULL)
        assert caught.value.message(templates, filter=text) == wording


def test_select_and_expand_lists_and_trees() -> None:
    assert odata.split_names(" A, B,,C ") == ["A", "B", "C"]
    assert odata.split_names(None) == [] and odata.split_names("") == []
    assert odata.path_tree("Details, MainContact/Address,MainContact/Email,,") == {
        "Details": {}, "MainContact": {"Address": {}, "Email": {}}}
    assert odata.path_tree(None) == {}
