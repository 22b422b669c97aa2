"""What a till is told about a member: the lookup a cashier does before ringing up a sale."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from domain import coupons, members, orders
from domain.growth import growth_total
from domain.shop import Shop
from domain.transaction import read_transaction


@dataclass(frozen=True)
class TillCoupon:
    code: str
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


async def look_up(
    session: AsyncSession, shop: Shop, query: str, *, amount: int | None = None
) -> TillView:
    """The member by code or phone, in one read: tier and discount, balance, growth, the
    largest points offset for ``amount`` (minor units) and the coupons usable now."""
    async with read_transaction(session):
        member = await members.find_member(session, shop, query)
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
            TillCoupon(c.code, c.kind, c.value, c.min_spend, c.valid_until) for c in usable
        ],
    )
