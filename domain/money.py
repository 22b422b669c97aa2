"""Money as integer minor units (cents/fen); parsing and formatting of decimal strings."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, InvalidOperation

MINOR_PER_UNIT = 100


class MoneyFormatError(ValueError):
    """A string is not a decimal amount with at most two places."""


def parse_money(text: str) -> int:
    """Parse "199.00" (or "199", "199.5") into minor units; reject more than two decimals."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError) as exc:
        raise MoneyFormatError(f"not a decimal amount: {text!r}") from exc
    if not value.is_finite():
        raise MoneyFormatError(f"not a finite amount: {text!r}")
    scaled = value * MINOR_PER_UNIT
    if scaled != scaled.to_integral_value():
        raise MoneyFormatError(f"more than two decimal places: {text!r}")
    return int(scaled)


def format_money(minor: int) -> str:
    """Format minor units as a decimal string with two places: 19900 -> "199.00"."""
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), MINOR_PER_UNIT)
    return f"{sign}{whole}.{cents:02d}"


def floor_units(minor: int, per_unit: Decimal | int = 1) -> int:
    """Whole units earned on an amount: floor(minor / 100 * per_unit), never negative."""
    if minor <= 0:
        return 0
    value = Decimal(minor) / MINOR_PER_UNIT * Decimal(per_unit)
    return int(value.to_integral_value(rounding=ROUND_DOWN))
