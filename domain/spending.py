"""Spending points needs the member at the till: a one-time spend code.

The member code is printed on the card and shown to every cashier: it is for earning. To spend
points (or to let a till see the codes of their coupons) the member taps "Pay with points" in
the chat and shows a QR code carrying a spend code: valid a few minutes (the program's
``points.spend_code_minutes``) and used by one order only. A till puts the scanned text where it
would put the member code; the order is then for that member and may redeem points.

A spend code looks like no other code: "P", ten characters of the member-code alphabet and a
check character (12 in all; member codes have 8, coupon codes 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain import card_code
from domain.errors import DomainError, MemberFrozen, MemberNotFound
from domain.growth import BEHAVIOUR, PURCHASE, GrowthTotal, total_of, window_start
from domain.member_code import check_character, new_code, normalize_code, normalize_member_code
from domain.members import DELETED, FROZEN, find_member
from domain.models import GrowthEntry, Member, SpendCode
from domain.phone import normalize_phone
from domain.shop import Shop
from domain.transaction import write_transaction

PREFIX = "P"
DATA_LENGTH = 10  # 32**10 ≈ 10**15 codes, each alive a few minutes
SPEND_CODE_LENGTH = len(PREFIX) + DATA_LENGTH + 1
GROUP = 4


class SpendProofRequired(DomainError):
    """Points were to be spent on an order identified by the static member code or phone."""

    code = "spend_proof_required"
    default_message = "spending points needs the member's one-time spend code"


class SpendCodeRefused(DomainError):
    """A spend code that cannot be used (any more); ``field`` names where it was given."""

    code = "spend_code_refused"
    default_message = "the spend code cannot be used"


class SpendCodeUnknown(SpendCodeRefused):
    code = "spend_code_unknown"
    default_message = "no such spend code"


class SpendCodeExpired(SpendCodeRefused):
    code = "spend_code_expired"
    default_message = "the spend code has expired"


class SpendCodeUsed(SpendCodeRefused):
    code = "spend_code_used"
    default_message = "the spend code has already been used"


@dataclass(frozen=True)
class SpendProof:
    """The member's presence, verified by a door other than a spend code (e.g. the member
    confirmed the spending in the chat). Never built from what a till sends."""

    member_id: int


@dataclass(frozen=True)
class IssuedSpendCode:
    code: str
    expires_at: datetime
    minutes: int


@dataclass(frozen=True)
class TillIdentity:
    """Whom a till named, and whether it proved the member is there (a valid spend code)."""

    member: Member
    spend_code: str | None = None

    @property
    def present(self) -> bool:
        return self.spend_code is not None


def new_spend_code() -> str:
    data = PREFIX + new_code(DATA_LENGTH)[:-1]
    return data + check_character(data)


def normalize_spend_code(text: str) -> str | None:
    """The canonical spend code for a scanned or typed text, or None when it is not one."""
    code = normalize_code(text, SPEND_CODE_LENGTH)
    return code if code is not None and code.startswith(PREFIX) else None


def format_spend_code(code: str) -> str:
    """Grouped for reading aloud: 'P3KQ-7M2Z-XW4E'."""
    return "-".join(code[i : i + GROUP] for i in range(0, len(code), GROUP))


async def issue(session: AsyncSession, shop: Shop, member_id: int) -> IssuedSpendCode:
    """A new one-time spend code for the member, valid ``points.spend_code_minutes``. A frozen
    member gets none: their points cannot be used at the till."""
    minutes = shop.program.points.spend_code_minutes
    async with write_transaction(session):
        member = await session.get(Member, member_id, populate_existing=True)
        if member is None or member.status == DELETED:
            raise MemberNotFound(query="")
        if member.status == FROZEN:
            raise MemberFrozen(member_code=member.code, note=member.frozen_reason)
        now = shop.now()
        while True:
            code = new_spend_code()
            if await session.scalar(select(SpendCode.id).where(SpendCode.code == code)) is None:
                break
        expires = now + timedelta(minutes=minutes)
        session.add(
            SpendCode(member_id=member.id, code=code, created_at=now, expires_at=expires)
        )
    return IssuedSpendCode(code=code, expires_at=expires, minutes=minutes)


def _refusal(row: SpendCode | None, now: datetime, field: str) -> SpendCodeRefused:
    if row is None:
        return SpendCodeUnknown(field=field)
    if row.used_at is not None:
        return SpendCodeUsed(field=field)
    if row.expires_at <= now:
        return SpendCodeExpired(field=field)
    return SpendCodeRefused(field=field)


async def identify(
    session: AsyncSession, shop: Shop, query: str, *, field: str = "member"
) -> TillIdentity:
    """The member a till names by spend code, member code or phone. A spend code must be
    unused and unexpired (it is not consumed here: see ``consume``); it proves presence. A
    rotating card code (``domain.card_code``) stands for the member code while it is valid."""
    if card_code.looks_like_card_code(query):
        query = card_code.member_code_of(shop, query, field=field)
    code = normalize_spend_code(query)
    if code is None:
        return TillIdentity(await find_member(session, shop, query))
    row = await session.scalar(
        select(SpendCode).where(SpendCode.code == code).execution_options(populate_existing=True)
    )
    if row is None or row.used_at is not None or row.expires_at <= shop.now():
        raise _refusal(row, shop.now(), field)
    member = await session.get(Member, row.member_id, populate_existing=True)
    if member is None or member.status == DELETED:
        raise SpendCodeUnknown(field=field)
    return TillIdentity(member, spend_code=code)


@dataclass(frozen=True)
class Buyer:
    """What an order needs of the member a till named, read in one locked statement."""

    id: int
    code: str
    status: str
    frozen_reason: str | None
    tier: str
    birthday_month: int | None
    points_balance: int
    points_debt: int
    referrer_id: int | None
    first_purchase_at: datetime | None
    last_purchase_at: datetime | None
    plus_state: str  # PLUS (domain.plus): its factor joins the purchase points' multiplier
    plus_until: datetime | None
    growth: GrowthTotal  # the tier window's growth, up to now, before this order
    spend_code: str | None = None  # the valid one-time spend code the till gave, if any

    @property
    def present(self) -> bool:
        return self.spend_code is not None


_BUYER_COLUMNS = (
    Member.id, Member.code, Member.status, Member.frozen_reason, Member.tier,
    Member.birthday_month, Member.points_balance, Member.points_debt, Member.referrer_id,
    Member.first_purchase_at, Member.last_purchase_at, Member.plus_state, Member.plus_until,
)


def _window_sum(source: str) -> Any:
    """The member's growth of ``source`` over the tier window (``window_sums``' sum), with the
    window's ends as bound parameters."""
    return (
        select(func.coalesce(func.sum(GrowthEntry.amount), 0))
        .where(
            GrowthEntry.member_id == Member.__table__.c.id, GrowthEntry.source == source,
            GrowthEntry.occurred_at > bindparam("window_start"),
            GrowthEntry.occurred_at <= bindparam("window_end"),
        )
        .scalar_subquery()
    )


# Built once: an order's lookup is then neither built nor keyed again (issue 12).
_BUYER = select(
    *_BUYER_COLUMNS, _window_sum(PURCHASE), _window_sum(BEHAVIOUR)
).with_for_update(key_share=True, of=Member)
_BUYER_BY_SPEND_CODE = (
    _BUYER.add_columns(SpendCode.used_at, SpendCode.expires_at)
    .join(SpendCode, SpendCode.member_id == Member.id)
    .where(SpendCode.code == bindparam("lookup"))
)
_BUYER_BY_CODE = _BUYER.where(Member.code == bindparam("lookup"))
_BUYER_BY_PHONE = _BUYER.where(Member.phone == bindparam("lookup"))


async def identify_buyer(
    session: AsyncSession, shop: Shop, query: str, *, field: str = "member"
) -> Buyer:
    """``identify`` for an order, in one statement per lookup: the member (by spend code,
    member code or phone, as ``find_member`` looks them up) with the growth of the tier window,
    the member's row locked until commit (PostgreSQL; SQLite holds the write lock already).
    Refuses as ``identify`` does; a frozen member raises MemberFrozen."""
    if card_code.looks_like_card_code(query):
        query = card_code.member_code_of(shop, query, field=field)
    end = shop.now()
    window = {"window_start": window_start(shop, end), "window_end": end}
    spend_code = normalize_spend_code(query)
    row: Any = None
    if spend_code is not None:
        row = (
            await session.execute(_BUYER_BY_SPEND_CODE, {"lookup": spend_code, **window})
        ).one_or_none()
        now = shop.now()
        if row is None or row.status == DELETED:
            raise SpendCodeUnknown(field=field)
        if row.used_at is not None:
            raise SpendCodeUsed(field=field)
        if row.expires_at <= now:
            raise SpendCodeExpired(field=field)
    else:
        code = normalize_member_code(query)
        if code is not None:
            row = (
                await session.execute(_BUYER_BY_CODE, {"lookup": code, **window})
            ).one_or_none()
        if row is None:
            phone = normalize_phone(query, shop.phone_region)
            if phone is not None:
                row = (
                    await session.execute(_BUYER_BY_PHONE, {"lookup": phone, **window})
                ).one_or_none()
        if row is None or row.status == DELETED:
            raise MemberNotFound(query=query)
    if row.status == FROZEN:
        raise MemberFrozen(member_code=row.code, note=row.frozen_reason)
    count = len(_BUYER_COLUMNS)
    fields: dict[str, Any] = {
        column.key: value for column, value in zip(_BUYER_COLUMNS, row[:count], strict=True)
    }
    return Buyer(
        **fields, growth=total_of(shop, int(row[count]), int(row[count + 1])),
        spend_code=spend_code,
    )


async def consume(
    session: AsyncSession, shop: Shop, code: str, *, member_id: int, order_id: str,
    field: str = "member",
) -> None:
    """Use the spend code for ``order_id``, inside the caller's transaction: one atomic
    conditional update, so of two orders racing with one code exactly one spends it."""
    now = shop.now()
    used = await session.execute(
        update(SpendCode)
        .where(
            SpendCode.code == code, SpendCode.member_id == member_id,
            SpendCode.used_at.is_(None), SpendCode.expires_at > now,
        )
        .values(used_at=now, order_id=order_id)
        .execution_options(synchronize_session=False)
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]
        row = await session.scalar(
            select(SpendCode).where(SpendCode.code == code)
            .execution_options(populate_existing=True)
        )
        raise _refusal(row, now, field)
