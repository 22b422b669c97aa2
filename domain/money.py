"""Money as integer minor units (cents/fen); parsing and formatting of decimal strings."""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, Decimal

MINOR_PER_UNIT = 100
# ASCII digits only (str.isdigit and \\d also take "٣" and "０"), no sign, no exponent, at most
# two decimals, and never more than 12 digits before the point: "1e999999" is not money.
_MONEY = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,2})?")


class MoneyFormatError(ValueError):
    """A string is not a decimal amount with at most two places."""


def parse_money(text: str) -> int:
    """Parse "199.00" (or "199", "199.5") into minor units; anything else is refused: other
    scripts' digits, signs, exponents, more than two decimals."""
    cleaned = text.strip() if isinstance(text, str) else ""
    if not _MONEY.fullmatch(cleaned):
        raise MoneyFormatError("not a decimal amount such as 199.00")
    whole, _, cents = cleaned.partition(".")
    return int(whole) * MINOR_PER_UNIT + int(cents.ljust(2, "0") or 0)


def _below(limit: int) -> str:
    """A regular expression for the whole numbers 1 .. limit - 1 (no leading zeros)."""
    digits = str(limit)
    options = [f"[1-9][0-9]{{{n - 1}}}" if n > 1 else "[1-9]" for n in range(1, len(digits))]
    for i, digit in enumerate(digits):
        low = 1 if i == 0 else 0
        if int(digit) > low:
            rest = len(digits) - i - 1
            options.append(
                digits[:i] + f"[{low}-{int(digit) - 1}]" + (f"[0-9]{{{rest}}}" if rest else "")
            )
    return "|".join(options)


def amount_pattern(max_minor: int) -> str:
    """The exact set of amount strings a door accepts, as a regular expression (for the API
    schema): ASCII digits, at most two decimals, more than zero, at most ``max_minor`` (taken
    down to whole units)."""
    top = max_minor // MINOR_PER_UNIT
    whole = _below(top)
    return (
        r"^(?:0\.(?:[1-9][0-9]?|0[1-9])"
        + (rf"|(?:{whole})(?:\.[0-9]{{1,2}})?" if whole else "")
        + rf"|{top}(?:\.0{{1,2}})?)$"
    )


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
