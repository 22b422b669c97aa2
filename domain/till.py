"""What a till is told about a member: the lookup a cashier does before ringing up a sale.

The static member code or phone (printed on the card, known to many) tells what a cashier needs
to check the person and ring up the sale, never the codes of the member's coupons; the
member's one-time spend code ("Pay with points") tells those too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from domain import coupons, orders, spending
from domain.growth import growth_total
from domain.shop import Shop
from domain.transaction import read_transaction


@dataclass(frozen=True)
class TillCoupon:
    code: str | None  # only for a till holding the member's spend code
    kind: str
    value: int  # minor units, or a percentage for percent_off
    min_spend: int
    valid_until: datetime


@dataclass(frozen=True)
class TillView:
    code: str
    name: str
    tier: str
    tier_name: str
    discount_percent: int
    balance: int
    growth: int
    max_offset_points: int | None
    max_offset_minor: int | None
    coupons: list[TillCoupon]
    can_redeem_points: bool  # the till holds a valid spend code: an order with it may spend


async def look_up(
    session: AsyncSession, shop: Shop, query: str, *, amount: int | None = None
) -> TillView:
    """The member by spend code, member code or phone, in one read: tier and discount,
    balance, growth, the largest points offset for ``amount`` (minor units) and the coupons
    usable now, with their codes only for a spend code (which this does not use up)."""
    async with read_transaction(session):
        identity = await spending.identify(session, shop, query, field="code_or_phone")
        member = identity.member
        growth = await growth_total(session, shop, member.id)
        usable = await coupons.usable_coupons(session, member.id, at=shop.now())
    tier = shop.program.tier(member.tier)
    max_points = (
        orders.max_offset_points(shop, amount, member.points_balance)
        if amount is not None else None
    )
    return TillView(
        code=member.code, name=member.display_name, tier=tier.key, tier_name=tier.name.en,
        discount_percent=tier.discount_percent, balance=member.points_balance,
        growth=growth.counted, max_offset_points=max_points,
        max_offset_minor=orders.points_to_money(shop, max_points) if max_points is not None
        else None,
        coupons=[
            TillCoupon(
                c.code if identity.present else None, c.kind, c.value, c.min_spend,
                c.valid_until,
            )
            for c in usable
        ],
        can_redeem_points=identity.present,
    )
