"""Coupons: unique code, value, minimum spend, validity, owner, single use.

Every source (rewards mall, welcome, referral, birthday, lifecycle offers) issues through
``issue_coupon``; tills use one through ``redeem_for_order``; members see theirs through
``member_coupons`` and ``member_coupon``, which only ever show the member's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.catalog import reward_names
from domain.errors import CouponNotUsable, DomainError, Reason, UnknownCoupon
from domain.member_code import new_code, normalize_code
from domain.models import Coupon
from domain.program import Localized
from domain.shop import Shop
from domain.transaction import read_transaction

COUPON_DATA_LENGTH = 9
COUPON_CODE_LENGTH = COUPON_DATA_LENGTH + 1
CODE_GROUP = 5
ACTIVE = "active"
USED = "used"
VOID = "void"
EXPIRED = "expired"
REWARD_SOURCE = "reward:"
LARGEST_ID = 2**31 - 1  # coupons.id is an INTEGER: PostgreSQL refuses any larger value


class CouponNotFound(DomainError):
    """No coupon of this member has that id (it may be someone else's: say nothing of it)."""

    code = "coupon_not_found"
    default_message = "no such coupon"


class CouponUnavailable(DomainError):
    """The member's own coupon can no longer be used; ``state`` says why."""

    code = "coupon_unavailable"
    default_message = "the coupon can no longer be used"


def normalize_coupon_code(text: str) -> str | None:
    """The canonical coupon code for what a person typed, or None when it is not valid."""
    return normalize_code(text, COUPON_CODE_LENGTH)


def format_coupon_code(code: str) -> str:
    """Grouped for reading aloud at the till: '7XK2M-9QPAB'."""
    return "-".join(code[i : i + CODE_GROUP] for i in range(0, len(code), CODE_GROUP))


def last_valid_instant(shop: Shop, issued: datetime, valid_days: int) -> datetime:
    """The end of the local day ``valid_days`` after ``issued``: a member told "valid until
    9 Apr" can use it all that day."""
    last_day = shop.local_date(issued) + timedelta(days=valid_days)
    return datetime.combine(last_day, time(23, 59, 59), tzinfo=shop.tz)


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
    """A new coupon for a member, valid from now through the local day ``valid_days`` days
    ahead. Runs in the caller's write transaction."""
    while True:
        code = new_code(COUPON_DATA_LENGTH)
        if await session.scalar(select(Coupon.id).where(Coupon.code == code)) is None:
            break
    now = shop.now()
    coupon = Coupon(
        code=code, member_id=member_id, source=source, kind=kind, value=value,
        min_spend=min_spend, valid_from=now, valid_until=last_valid_instant(shop, now, valid_days),
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
    """Check a coupon against the order (owner, status, validity, minimum spend) and use it,
    exactly once even when orders race: the use is one conditional UPDATE on its status.
    Runs in the caller's write transaction; every refusal is on the field ``coupon_code``."""
    code = normalize_coupon_code(text)
    coupon = None
    if code is not None:
        coupon = await session.scalar(
            select(Coupon).where(Coupon.code == code).execution_options(populate_existing=True)
        )
    if coupon is None:
        raise UnknownCoupon("coupon_code", Reason.COUPON_UNKNOWN)
    if coupon.member_id != member_id:
        raise CouponNotUsable("coupon_code", Reason.COUPON_OTHER_MEMBER)
    if coupon.status != ACTIVE:
        raise CouponNotUsable("coupon_code", Reason.COUPON_STATUS, status=coupon.status)
    if not coupon.valid_from <= at <= coupon.valid_until:
        raise CouponNotUsable("coupon_code", Reason.COUPON_NOT_VALID_NOW)
    if amount < coupon.min_spend:
        raise CouponNotUsable(
            "coupon_code", Reason.COUPON_MIN_SPEND, min_spend=coupon.min_spend
        )
    used = await session.execute(
        update(Coupon)
        .where(Coupon.id == coupon.id, Coupon.status == ACTIVE)
        .values(status=USED, used_at=at, used_order_id=order_id)
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]
        raise CouponNotUsable("coupon_code", Reason.COUPON_JUST_USED)
    return AppliedCoupon(coupon.id, coupon.code, coupon.kind, discount_for(coupon, amount))


async def reinstate(session: AsyncSession, coupon_id: int, *, now: datetime) -> None:
    """A fully refunded order gives its coupon back, while the coupon is still valid."""
    await session.execute(
        update(Coupon)
        .where(Coupon.id == coupon_id, Coupon.status == USED, Coupon.valid_until >= now)
        .values(status=ACTIVE, used_at=None, used_order_id=None)
    )


async def usable_coupons(session: AsyncSession, member_id: int, *, at: datetime) -> list[Coupon]:
    """The member's coupons that a till would accept at ``at``, the soonest to expire first."""
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


@dataclass(frozen=True)
class CouponView:
    """A coupon as its owner sees it: dates are local, the code grouped for reading."""

    id: int
    code: str
    grouped_code: str
    kind: str
    value: int  # minor units, or percent for percent_off
    min_spend: int
    valid_until: date  # the last local day it can be used
    source: str
    reward_name: Localized | None  # for coupons from the rewards mall

    @property
    def origin(self) -> str:
        """The source without its detail: 'reward', 'welcome', 'birthday_free_item', ..."""
        return self.source.split(":", 1)[0]


def coupon_view(
    shop: Shop, coupon: Coupon, *, reward_names: Mapping[str, Localized] | None = None
) -> CouponView:
    """How ``coupon`` is shown to its owner (local last day, grouped code, reward name).
    ``reward_names`` are the live catalog's names (``domain.catalog.reward_names``); without
    them the program's names are used."""
    reward_name = None
    if coupon.source.startswith(REWARD_SOURCE):
        key = coupon.source.removeprefix(REWARD_SOURCE)
        if reward_names is not None and key in reward_names:
            reward_name = reward_names[key]
        else:
            reward = next((r for r in shop.program.rewards if r.key == key), None)
            reward_name = reward.name if reward is not None else None
    return CouponView(
        id=coupon.id,
        code=coupon.code,
        grouped_code=format_coupon_code(coupon.code),
        kind=coupon.kind,
        value=coupon.value,
        min_spend=coupon.min_spend,
        valid_until=shop.local_date(coupon.valid_until),
        source=coupon.source,
        reward_name=reward_name,
    )


async def member_coupons(session: AsyncSession, shop: Shop, member_id: int) -> list[CouponView]:
    """The member's usable coupons now, the soonest to expire first."""
    async with read_transaction(session):
        found = await usable_coupons(session, member_id, at=shop.now())
        names = await _names(session, shop, found)
    return [coupon_view(shop, coupon, reward_names=names) for coupon in found]


async def _names(
    session: AsyncSession, shop: Shop, found: list[Coupon]
) -> Mapping[str, Localized] | None:
    """The live catalog's item names, read only when a coupon came from the mall."""
    if not any(c.source.startswith(REWARD_SOURCE) for c in found):
        return None
    return await reward_names(session, shop)


async def member_coupon(
    session: AsyncSession, shop: Shop, member_id: int, coupon_id: int
) -> CouponView:
    """One of the member's own coupons, to show at the till. Raises CouponNotFound when the
    id is not the member's (nothing of another member's coupon is revealed) and
    CouponUnavailable when it is used, void or out of its validity. An id no coupon can have
    (from a crafted button: zero, negative, beyond the database's integers) is not found."""
    if not 0 < coupon_id <= LARGEST_ID:
        raise CouponNotFound(coupon_id=coupon_id)
    async with read_transaction(session):
        coupon = await session.scalar(
            select(Coupon)
            .where(Coupon.id == coupon_id, Coupon.member_id == member_id)
            .execution_options(populate_existing=True)
        )
        names = await _names(session, shop, [coupon] if coupon is not None else [])
    if coupon is None:
        raise CouponNotFound(coupon_id=coupon_id)
    now = shop.now()
    if coupon.status != ACTIVE:
        raise CouponUnavailable(state=coupon.status)
    if now > coupon.valid_until:
        raise CouponUnavailable(state=EXPIRED)
    if now < coupon.valid_from:
        raise CouponUnavailable(state="not_yet")
    return coupon_view(shop, coupon, reward_names=names)
