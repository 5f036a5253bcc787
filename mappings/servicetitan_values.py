"""ServiceTitan's values as every pair reads them: amounts, quantities and nested objects.

ServiceTitan sends accounting amounts as strings and CRM and inventory amounts as numbers,
and leaves nested objects out or null; a value that is neither is a MappingError naming it,
which fails the record with that reason instead of writing a wrong amount.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from mlconnector.errors import MappingError

CENT = Decimal("0.01")


def money(value: Any) -> Decimal:
    """An amount to the cent; missing or empty is zero."""
    if value in (None, ""):
        return Decimal("0")
    try:
        return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise MappingError(f"not an amount: {value!r}") from None


def quantity(value: Any) -> Decimal:
    """A quantity as sent (not rounded); missing or empty is zero."""
    try:
        return Decimal(str(value if value not in (None, "") else 0))
    except InvalidOperation:
        raise MappingError(f"not a quantity: {value!r}") from None


def named(value: Any) -> dict[str, Any]:
    """A nested object ({"id", "name", ...}), or an empty one when ServiceTitan left it out."""
    return value if isinstance(value, dict) else {}
