"""Schemathesis hooks for the till API's contract run (tests/test_api_contract.py).

An order's `occurred_at` must lie within the program's window (not in the future, at most 30
days back by default): the schema's description says so, but JSON Schema cannot state a window
that moves with the clock, so generated bodies outside it are left out rather than counted as
"valid data refused"."""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import schemathesis

WINDOW = timedelta(days=30)


@schemathesis.hook
def filter_body(context: Any, body: Any) -> bool:
    if not isinstance(body, dict) or not isinstance(body.get("occurred_at"), str):
        return True
    try:
        occurred = datetime.fromisoformat(body["occurred_at"].replace("Z", "+00:00"))
    except ValueError:
        return True  # not a date at all: the API must refuse it, let it through
    if occurred.tzinfo is None:
        return True
    now = datetime.now(UTC)
    return now - WINDOW + timedelta(hours=1) <= occurred <= now


# A member the test has registered: well-formed member references in generated requests are
# pointed at it, so orders, refunds, lookups and events reach the ledger instead of a 404.
# Malformed ones are left alone, so the API must still refuse them.
SEEDED_MEMBER = os.environ.get("CONTRACT_MEMBER", "")
_MEMBER = re.compile(r"^[0-9A-Za-z+()\-. ]{1,32}$")


def _seeded(value: Any) -> Any:
    if SEEDED_MEMBER and isinstance(value, str) and _MEMBER.fullmatch(value):
        return SEEDED_MEMBER
    return value


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if isinstance(body, dict) and "member" in body:
        body["member"] = _seeded(body["member"])
    return body


@schemathesis.hook
def map_path_parameters(context: Any, path_parameters: Any) -> Any:
    if isinstance(path_parameters, dict) and "code_or_phone" in path_parameters:
        path_parameters["code_or_phone"] = _seeded(path_parameters["code_or_phone"])
    return path_parameters


@schemathesis.hook("filter_body")
def within_the_offset_cap(context: Any, body: Any) -> bool:
    """Points may pay at most 50% of an order (100 points = 1.00): a rule across two fields
    that the schema's description states and JSON Schema cannot."""
    if not isinstance(body, dict):
        return True
    points, amount = body.get("redeem_points"), body.get("amount")
    if not isinstance(points, int | float) or isinstance(points, bool) or not isinstance(amount, str):
        return True
    try:
        minor = round(float(amount) * 100)
    except ValueError:
        return True
    return points <= minor // 2


@schemathesis.hook
def filter_query(context: Any, query: Any) -> bool:
    """The reports summary refuses `to` before `from` (a rule between two parameters)."""
    if not isinstance(query, dict):
        return True
    first, last = query.get("from"), query.get("to")
    if not (isinstance(first, str) and isinstance(last, str)):
        return True
    return not (len(first) == len(last) == 10 and last < first)


@schemathesis.hook("filter_body")
def a_birthday_that_can_be(context: Any, body: Any) -> bool:
    """The Mini App's birthday is a day its month has (29 February too), of a year from 1900
    up to now when a year is given (the fields' descriptions say so; JSON Schema cannot)."""
    if not isinstance(body, dict) or "month" not in body or "day" not in body:
        return True
    month, day, year = body.get("month"), body.get("day"), body.get("year")
    numbers = [v for v in (month, day, year) if v is not None]
    if not all(
        isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer()
        for v in numbers
    ):
        return True  # not whole numbers at all: the API must refuse them, let them through
    try:
        born = date(int(year) if year is not None else 2000, int(month), int(day))
    except (ValueError, OverflowError):
        return False
    return year is None or 1900 <= born.year <= 2025
