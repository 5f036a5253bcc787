"""Value conversion and `$filter` comparison of the Acumatica sandbox, pinned case by case
(the wording of a refused value is what a client shows its user)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from sandboxes.acumatica.model import _compare, coerce


@pytest.mark.parametrize(("kind", "value", "expected"), [
    ("string", 12, "12"), ("decimal", "1500.5", 1500.5), ("decimal", 1.23456789, 1.234568), ("int", 2.0, 2),
    ("int", "3", 3), ("bool", "TRUE", True), ("bool", False, False),
    ("datetime", "2025-01-01", "2025-01-01T00:00:00.000+00:00"),
    ("datetime", "2025-01-01T10:00:00 02:00", "2025-01-01T08:00:00.000+00:00"), ("decimal", None, None),
])
def test_values_convert_to_the_field_kind(kind: str, value: object, expected: object) -> None:
    assert coerce(kind, value) == expected


@pytest.mark.parametrize(("kind", "value", "word"), [
    ("string", {"a": 1}, "String"), ("decimal", "nan", "Decimal"), ("decimal", True, "Decimal"), ("int", 1.5, "Int"),
    ("int", "inf", "Int"), ("bool", "yes", "Boolean"), ("bool", 1, "Boolean"), ("datetime", "soon", "DateTime"),
    ("datetime", 20250101, "DateTime"),
])
def test_a_value_that_does_not_convert_is_refused_in_acumaticas_words(kind: str, value: object, word: str) -> None:
    with pytest.raises(ValueError) as refused:
        coerce(kind, value)
    assert str(refused.value) == f"The value '{value}' cannot be converted to {word}."


def test_filter_comparisons_treat_null_dates_and_text_as_acumatica_does() -> None:
    day = datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert _compare("eq", None, None) and not _compare("ne", None, None) and _compare("ne", None, "x")
    assert not _compare("gt", None, 1) and not _compare("lt", 1, None)
    assert _compare("eq", day, "2025-01-01T00:00:00Z") and not _compare("gt", day, "not a date")
    assert _compare("eq", "ABC  ", "abc") and _compare("eq", True, "true") and _compare("lt", 1, "2")
    assert _compare("eq", "x", 0) is False
