"""Growth value: never spent, decides the tier. Behaviour growth is capped at its share."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, ScalarSelect, case, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from domain.models import GrowthEntry
from domain.shop import Shop
from domain.sql import table_of

PURCHASE = "purchase"
BEHAVIOUR = "behaviour"


def months_before(instant: datetime, months: int) -> datetime:
    index = instant.year * 12 + (instant.month - 1) - months
    year, month = index // 12, index % 12 + 1
    day = min(instant.day, calendar.monthrange(year, month)[1])
    return instant.replace(year=year, month=month, day=day)


@dataclass(frozen=True)
class GrowthTotal:
    purchase: int
    behaviour: int
    counted: int  # what decides the tier: purchase + behaviour within its cap


def counted_growth(purchase: int, behaviour: int, cap_percent: int) -> int:
    """Behaviour may be at most ``cap_percent`` of the counted total:
    b <= cap/100 * (p + b)  <=>  b <= p * cap / (100 - cap)."""
    purchase = max(purchase, 0)
    behaviour = max(behaviour, 0)
    allowed = purchase * cap_percent // (100 - cap_percent)
    return purchase + min(behaviour, allowed)


async def add_growth(
    session: AsyncSession,
    member_id: int,
    *,
    kind: str,
    source: str,
    amount: int,
    reason: str,
    key: str,
    occurred_at: datetime,
) -> None:
    """Append a growth entry (negative for a refund, dated like the purchase it undoes)."""
    if amount == 0:
        return
    await session.execute(
        insert(table_of(GrowthEntry)).values(
            member_id=member_id, kind=kind, source=source, amount=amount, reason=reason,
            idempotency_key=key, occurred_at=occurred_at,
        )
    )


def window_start(shop: Shop, end: datetime) -> datetime:
    """Growth dated after this and up to ``end`` counts for the tier."""
    return months_before(end, shop.program.tier_rules.window_months)


def window_sums(
    shop: Shop, member_id: ColumnElement[int], end: datetime
) -> tuple[ScalarSelect[int], ScalarSelect[int]]:
    """The window's purchase and behaviour sums as scalar subqueries of ``member_id``, to
    read with a member in one statement (``total_of`` turns them into the total)."""
    start = window_start(shop, end)
    window = (
        GrowthEntry.member_id == member_id,
        GrowthEntry.occurred_at > start,
        GrowthEntry.occurred_at <= end,
    )
    return tuple(  # type: ignore[return-value]
        select(func.coalesce(func.sum(GrowthEntry.amount), 0))
        .where(GrowthEntry.source == source, *window)
        .scalar_subquery()
        for source in (PURCHASE, BEHAVIOUR)
    )


def total_of(shop: Shop, purchase: int, behaviour: int) -> GrowthTotal:
    cap = shop.program.growth.behaviour_share_cap_percent
    return GrowthTotal(purchase, behaviour, counted_growth(purchase, behaviour, cap))


async def growth_total(
    session: AsyncSession, shop: Shop, member_id: int, *, at: datetime | None = None
) -> GrowthTotal:
    """Growth over the program's window (12 months) ending at ``at`` (now by default)."""
    end = at or shop.now()
    start = window_start(shop, end)
    purchase_sum = func.coalesce(
        func.sum(case((GrowthEntry.source == PURCHASE, GrowthEntry.amount), else_=0)), 0
    )
    behaviour_sum = func.coalesce(
        func.sum(case((GrowthEntry.source == BEHAVIOUR, GrowthEntry.amount), else_=0)), 0
    )
    row = (
        await session.execute(
            select(purchase_sum, behaviour_sum).where(
                GrowthEntry.member_id == member_id,
                GrowthEntry.occurred_at > start,
                GrowthEntry.occurred_at <= end,
            )
        )
    ).one()
    purchase, behaviour = int(row[0]), int(row[1])
    cap = shop.program.growth.behaviour_share_cap_percent
    return GrowthTotal(purchase, behaviour, counted_growth(purchase, behaviour, cap))


def growth_window_sums(
    shop: Shop, member_id: ColumnElement[int] | InstrumentedAttribute[int], *,
    at: datetime | None = None,
) -> tuple[ScalarSelect[int], ScalarSelect[int]]:
    """Purchase and behaviour growth over the program's window ending at ``at``, as two
    correlated scalar subqueries on ``member_id``: the same sums as ``growth_total``, to load
    with the member in one statement (``growth_from_sums`` makes the total)."""
    end = at or shop.now()
    start = months_before(end, shop.program.tier_rules.window_months)
    return growth_sums_between(member_id, start, end)


def growth_sums_between(
    member_id: ColumnElement[int] | InstrumentedAttribute[int],
    start: datetime | ColumnElement[datetime], end: datetime | ColumnElement[datetime],
) -> tuple[ScalarSelect[int], ScalarSelect[int]]:
    """``growth_window_sums`` with the window's bounds given (values or bound parameters, so
    a statement built once serves every read)."""

    def window_sum(source: str) -> ScalarSelect[int]:
        return (
            select(func.coalesce(func.sum(GrowthEntry.amount), 0))
            .where(
                GrowthEntry.member_id == member_id,
                GrowthEntry.source == source,
                GrowthEntry.occurred_at > start,
                GrowthEntry.occurred_at <= end,
            )
            .scalar_subquery()
        )

    return window_sum(PURCHASE), window_sum(BEHAVIOUR)


def growth_from_sums(shop: Shop, purchase: int, behaviour: int) -> GrowthTotal:
    cap = shop.program.growth.behaviour_share_cap_percent
    return GrowthTotal(purchase, behaviour, counted_growth(purchase, behaviour, cap))
