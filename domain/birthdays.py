"""Birthday gifts by tier: on the member's birthday (local), a greeting and the tier's gift.

Silver gets a buy-one-get-one coupon, Gold a free birthday item, Black Gold a gift pack (each a
coupon from the program's template ``birthday_<gift>``); a tier without a gift still gets a warm
greeting, which tells of the birthday month's multiplied points. A 29 February birthday is
celebrated on 28 February in a common year. A birthday set within 30 days before its date waits
a year (``members.birthday_gift_from``, see domain.profile). Once per member and year.
"""

from __future__ import annotations

import calendar
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.jobs import PlannedPush, due_batches
from domain.members import ACTIVE
from domain.models import Member
from domain.shop import Shop

BIRTHDAY = "birthday"
NO_GIFT = "none"


def birthdays_celebrated_on(today: date) -> list[tuple[int, int]]:
    """The (month, day) birthdays celebrated on ``today``: 29 February joins 28 February in a
    common year."""
    days = [(today.month, today.day)]
    if today.month == 2 and today.day == 28 and not calendar.isleap(today.year):
        days.append((2, 29))
    return days


def multiplier_text(multiplier: Decimal) -> str:
    """'2' for Decimal('2.0'), '1.5' for Decimal('1.50'): how a multiplier reads in a push."""
    return format(multiplier.normalize(), "f")


async def birthday_gifts(
    session: AsyncSession, shop: Shop, today: date
) -> AsyncIterator[list[PlannedPush]]:
    """Active members whose birthday is ``today`` (local) and whose gifts have started
    (``birthday_gift_from`` empty or not after this year): a birthday push each, with the
    tier's gift coupon when the tier has one."""
    program = shop.program
    multiplier = multiplier_text(program.points.birthday_month_multiplier)
    query = select(Member.id, Member.first_name, Member.tier).where(
        Member.status == ACTIVE,
        or_(*(
            and_(Member.birthday_month == month, Member.birthday_day == day)
            for month, day in birthdays_celebrated_on(today)
        )),
        or_(Member.birthday_gift_from.is_(None), Member.birthday_gift_from <= today.year),
    )

    def build(row: Row[Any]) -> PlannedPush:
        gift = program.tier(row.tier).birthday_gift
        payload = {
            "name": row.first_name or "", "tier": row.tier, "gift": gift,
            "multiplier": multiplier,
        }
        return PlannedPush(
            row.id, BIRTHDAY, f"{BIRTHDAY}:{row.id}:{today.year}", payload, marketing=False,
            coupon_template=f"birthday_{gift}" if gift != NO_GIFT else None,
        )

    async for batch in due_batches(session, query, Member.id, build):
        yield batch
