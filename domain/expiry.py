"""When earned points expire, by the program's rule."""

from __future__ import annotations

import calendar
from datetime import date, timedelta

from domain.program import ExpiryRules


def _add_months(day: date, months: int) -> tuple[int, int]:
    index = day.year * 12 + (day.month - 1) + months
    return index // 12, index % 12 + 1


def expiry_date(earned_on: date, rules: ExpiryRules) -> date | None:
    """The last local day on which points earned on ``earned_on`` can still be spent."""
    if rules.rule == "never":
        return None
    if rules.rule == "days":
        return earned_on + timedelta(days=rules.days)
    year, month = _add_months(earned_on, rules.months)
    if rules.rule == "end_of_year":
        return date(year, 12, 31)
    return date(year, month, calendar.monthrange(year, month)[1])
