"""Coupons: unique code, value, minimum spend, validity, owner, single use."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import CouponNotUsable, UnknownCoupon
from domain.member_code import new_code, normalize_code
from domain.models import Coupon
from domain.money import format_money
from domain.shop import Shop

COUPON_DATA_LENGTH = 9
COUPON_CODE_LENGTH = COUPON_DATA_LENGTH + 1
ACTIVE = "active"
USED = "used"


def normalize_coupon_code(text: str) -> str | None:
    return normalize_code(text, COUPON_CODE_LENGTH)


async def issue_coupon(
    session: AsyncSession,
    shop: Shop,
    member_id: int,
    *,
    source: str,
    kind: str,
    value: int,
    min_spend: int,
    valid_days: int,
) -> Coupon:
    """A new coupon for a member, valid from now for ``valid_days`` days."""
    while True:
        code = new_code(COUPON_DATA_LENGTH)
        if await session.scalar(select(Coupon.id).where(Coupon.code == code)) is None:
            break
    now = shop.now()
    coupon = Coupon(
        code=code, member_id=member_id, source=source, kind=kind, value=value,
        min_spend=min_spend, valid_from=now, valid_until=now + timedelta(days=valid_days),
        status=ACTIVE, created_at=now,
    )
    session.add(coupon)
    await session.flush()
    return coupon


def discount_for(coupon: Coupon, amount: int) -> int:
    """Money off ``amount``: a free item is handed over by the till, not taken off the total."""
    if coupon.kind == "amount_off":
        return min(coupon.value, amount)
    if coupon.kind == "percent_off":
        return amount * coupon.value // 100
    return 0


@dataclass(frozen=True)
class AppliedCoupon:
    coupon_id: int
    code: str
    kind: str
    discount: int


async def redeem_for_order(
    session: AsyncSession, text: str, *, member_id: int, amount: int, at: datetime, order_id: str
) -> AppliedCoupon:
    """Check a coupon against the order and use it, exactly once even when orders race."""
    code = normalize_coupon_code(text)
    coupon = None
    if code is not None:
        coupon = await session.scalar(select(Coupon).where(Coupon.code == code))
    if coupon is None:
        raise UnknownCoupon("coupon_code", "no such coupon")
    if coupon.member_id != member_id:
        raise CouponNotUsable("coupon_code", "this coupon belongs to another member")
    if coupon.status != ACTIVE:
        raise CouponNotUsable("coupon_code", f"this coupon is {coupon.status}")
    if not coupon.valid_from <= at <= coupon.valid_until:
        raise CouponNotUsable("coupon_code", "this coupon is not valid at the time of the order")
    if amount < coupon.min_spend:
        raise CouponNotUsable(
            "coupon_code", f"this coupon needs a minimum spend of {format_money(coupon.min_spend)}"
        )
    used = await session.execute(
        update(Coupon)
        .where(Coupon.id == coupon.id, Coupon.status == ACTIVE)
        .values(status=USED, used_at=at, used_order_id=order_id)
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]
        raise CouponNotUsable("coupon_code", "this coupon has just been used")
    return AppliedCoupon(coupon.id, coupon.code, coupon.kind, discount_for(coupon, amount))


async def reinstate(session: AsyncSession, coupon_id: int, *, now: datetime) -> None:
    """A fully refunded order gives its coupon back, while the coupon is still valid."""
    await session.execute(
        update(Coupon)
        .where(Coupon.id == coupon_id, Coupon.status == USED, Coupon.valid_until >= now)
        .values(status=ACTIVE, used_at=None, used_order_id=None)
    )


async def usable_coupons(session: AsyncSession, member_id: int, *, at: datetime) -> list[Coupon]:
    return list(
        (
            await session.scalars(
                select(Coupon)
                .where(
                    Coupon.member_id == member_id,
                    Coupon.status == ACTIVE,
                    Coupon.valid_from <= at,
                    Coupon.valid_until >= at,
                )
                .order_by(Coupon.valid_until, Coupon.id)
            )
        ).all()
    )
