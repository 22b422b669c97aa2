"""Expiry reminders: points that run out in 30 and 7 days, coupons that run out in 3.

Both are service messages (not marketing): they protect what the member already holds. Each
is a plan for ``domain.jobs.apply_plan``: set-based queries, keyset-paginated so memory stays
bounded whatever the size of the tables, one push per member and occasion (the key says which).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.coupons import ACTIVE as COUPON_ACTIVE
from domain.coupons import format_coupon_code
from domain.jobs import BATCH, PlannedPush, due_batches
from domain.members import DELETED
from domain.models import Coupon, Member, PointsLot
from domain.shop import Shop

POINTS_EXPIRY = "points_expiry"
COUPON_EXPIRY = "coupon_expiry"


def local_day_window(shop: Shop, day: date) -> tuple[datetime, datetime]:
    """The instants [start of ``day``, start of the next day) of the shop's local day (stored
    and compared as UTC)."""
    start = datetime.combine(day, time.min, tzinfo=shop.tz)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=shop.tz)
    return start, end


def _member_payload(row: Row[Any]) -> dict[str, Any]:
    return {"name": row.first_name or "", "tier": row.tier}


async def points_expiry_reminders(
    session: AsyncSession, shop: Shop, today: date
) -> AsyncIterator[list[PlannedPush]]:
    """For each of the program's reminder days N (30 and 7 by default): every member with
    points whose last day is ``today + N`` gets the amount, the date and the balance once.
    Members who left, and members whose balance is not positive (a refund debt ate it), are
    left alone."""
    for days in shop.program.expiry.reminder_days:
        expires_on = today + timedelta(days=days)
        amount = func.sum(PointsLot.remaining).label("amount")
        query = (
            select(
                PointsLot.member_id, Member.first_name, Member.tier, Member.points_balance,
                amount,
            )
            .join(Member, Member.id == PointsLot.member_id)
            .where(
                PointsLot.expires_on == expires_on,
                PointsLot.remaining > 0,
                Member.status != DELETED,
                Member.points_balance > 0,
            )
            .group_by(PointsLot.member_id, Member.first_name, Member.tier, Member.points_balance)
        )

        def build(row: Row[Any], days: int = days, expires_on: date = expires_on) -> PlannedPush:
            payload = {
                **_member_payload(row),
                "amount": int(row.amount),
                "expires_on": expires_on.isoformat(),
                "days": days,
                "balance": int(row.points_balance),
            }
            key = f"{POINTS_EXPIRY}:{row.member_id}:{expires_on.isoformat()}:{days}"
            return PlannedPush(row.member_id, POINTS_EXPIRY, key, payload, marketing=False)

        async for batch in due_batches(session, query, PointsLot.member_id, build, size=BATCH):
            yield batch


async def coupon_expiry_reminders(
    session: AsyncSession, shop: Shop, today: date
) -> AsyncIterator[list[PlannedPush]]:
    """Every active coupon whose last valid instant falls on the local day ``today + N``
    (N = the program's ``coupons.expiry_reminder_days``) is recalled to its owner once."""
    days = shop.program.coupons.expiry_reminder_days
    last_day = today + timedelta(days=days)
    start, end = local_day_window(shop, last_day)
    query = (
        select(
            Coupon.id, Coupon.member_id, Coupon.code, Coupon.kind, Coupon.value,
            Coupon.min_spend, Coupon.valid_until, Coupon.source,
            Member.first_name, Member.tier,
        )
        .join(Member, Member.id == Coupon.member_id)
        .where(
            Coupon.status == COUPON_ACTIVE,
            Coupon.valid_until >= start,
            Coupon.valid_until < end,
            Member.status != DELETED,
        )
    )

    def build(row: Row[Any]) -> PlannedPush:
        payload = {
            **_member_payload(row),
            "code": row.code,
            "grouped_code": format_coupon_code(row.code),
            "kind": row.kind,
            "value": row.value,  # minor units (percent for percent_off): templates word them
            "min_spend": row.min_spend,
            "valid_until": shop.local_date(row.valid_until).isoformat(),
            "source": row.source,
            "days": days,
        }
        key = f"{COUPON_EXPIRY}:{row.id}"
        return PlannedPush(row.member_id, COUPON_EXPIRY, key, payload, marketing=False)

    async for batch in due_batches(session, query, Coupon.id, build, size=BATCH):
        yield batch

