"""Epicor Kinetic's values as every pair reading Epicor needs them: amounts (document currency
when Epicor filled it), quantities, dates, GL accounts as people write them, and a header's
child rows under their OData navigation names. Pure functions, no I/O.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Mapping

CENT = Decimal("0.01")
SEGMENT_SEPARATOR = "|"  # GLAccount as Epicor stores it ("5100|100"); people write "5100-100"


def decimal(value: Any) -> Decimal:
    """A number Epicor sent (float, string, Decimal, empty) as a Decimal."""
    try:
        return Decimal(str(value if value not in (None, "") else 0))
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None


def amount(row: Mapping[str, Any], name: str) -> Decimal:
    """The document-currency amount (`Doc<name>`) when Epicor filled it, else the base one:
    Epicor leaves Doc* at zero on rows entered in base currency."""
    document = decimal(row.get(f"Doc{name}"))
    return document if document else decimal(row.get(name))


def money(value: Any) -> Decimal:
    """A currency amount rounded to the cent."""
    return decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def number_text(value: Any) -> str:
    """A quantity or unit cost without trailing zeros ("40.0" -> "40", "2.50000" -> "2.5")."""
    text = format(decimal(value).normalize(), "f")
    return text if text != "-0" else "0"


def day(value: Any) -> str:
    """yyyy-mm-dd ('' when Epicor has none)."""
    if value in (None, ""):
        return ""
    if isinstance(value, (date, datetime)):
        return value.isoformat()[:10]
    return str(value)[:10]


def gl_account(value: Any) -> str:
    """Epicor's stored GL account ("5100|100") as people write it ("5100-100")."""
    return str(value or "").replace(SEGMENT_SEPARATOR, "-")


def children(document: Mapping[str, Any], navigation: str) -> list[dict[str, Any]]:
    """A header's child rows under its OData navigation name or the model's `lines`."""
    rows = document.get(navigation)
    if rows is None and navigation in ("PODetails", "APInvDtls"):
        rows = document.get("lines")
    return [dict(row) for row in (rows or [])]
