"""The member's data: a copy on request, and erasure when the member leaves.

Erasure removes who the member was (names, username, phone, birthday, the Telegram id) and
what they could still use (active coupons, undelivered messages), and keeps what the shop's
accounts need: the member row itself (status "deleted", code only), its ledger, lots, orders
and refunds, so every balance still equals the sum of its ledger. The Telegram id is cleared,
so the same person writing again is registered as a new member; only a keyed one-way hash of
it is kept apart (``FormerAccount``, with no time and no link to the row), so that new
membership comes without a second sign-up bonus or welcome coupon.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any, Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.members import account_hash
from domain.models import (
    Badge,
    CheckIn,
    Coupon,
    ExitSurvey,
    FormerAccount,
    GrowthEntry,
    LedgerEntry,
    Member,
    Order,
    PointsLot,
    Push,
    Refund,
    SpendCode,
    TierChange,
)
from domain.money import format_money
from domain.points import LedgerLine, describe_entries
from domain.shop import Shop
from domain.transaction import write_transaction

# One tap in the exit survey; no free text, so nothing in it can name anyone.
EXIT_REASONS = ("too_many_messages", "not_useful", "privacy", "moving_away", "other")
DELETED = "deleted"
REFERRAL = "referral"
LEFT = "member left"
EMPTY_PAYLOAD = "{}"
REFERRAL_PUSH = "referral_reward"
FRIEND = "friend"  # the friend's first name, in referral pushes written before it was left out


def _when(shop: Shop, instant: datetime | None) -> str | None:
    """An instant in the shop's local time, ISO 8601 with its offset."""
    return instant.astimezone(shop.tz).isoformat() if instant is not None else None


def _day(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _money(minor: int) -> str:
    return format_money(minor)


class ExportWords(Protocol):
    """How the export describes its entries in the member's own language (the doors word
    them; the domain gives codes and values)."""

    def ledger_line(self, line: LedgerLine) -> str: ...

    def tier_change(self, reason: str, before: str | None, after: str) -> str: ...

    def coupon(self, kind: str, value: int, min_spend: int, source: str) -> str: ...


async def _all(session: AsyncSession, query: Any) -> Iterable[Any]:
    return (await session.scalars(query)).all()


async def export_member_data(
    session: AsyncSession, shop: Shop, member: Member, *, words: ExportWords | None = None
) -> dict[str, Any]:
    """Everything kept about the member, as a JSON-serialisable document: profile, points
    ledger and lots, coupons, orders with refunds, growth, tier history, check-ins and badges.
    Instants are local ISO 8601 with offset, days ISO dates, money decimal strings in the
    program's currency. Entries carry language-neutral codes (``kind``, ``reason``) and,
    given ``words``, a ``description`` in the member's language; nothing in it names another
    member (a referral line says a friend bought, not who or which order). Reads only; the
    read is ended before returning."""
    try:
        fresh = await session.scalar(
            select(Member).where(Member.id == member.id).execution_options(populate_existing=True)
        )
        assert fresh is not None
        document: dict[str, Any] = {
            "exported_at": _when(shop, shop.now()),
            "currency": shop.program.currency,
            "profile": {
                "member_code": fresh.code,
                "telegram_id": fresh.telegram_id,
                "first_name": fresh.first_name,
                "last_name": fresh.last_name,
                "username": fresh.username,
                "phone": fresh.phone,
                "language": fresh.language,
                "birthday": _birthday(shop, fresh),
                "marketing_opt_in": fresh.marketing_opt_in,
                "status": fresh.status,
                "tier": fresh.tier,
                "points_balance": fresh.points_balance,
                "points_debt": fresh.points_debt,
                # that a friend invited them, not who: the friend's code is the friend's
                "invited_by_a_friend": fresh.referrer_id is not None,
                "joined_at": _when(shop, fresh.created_at),
                "first_purchase_at": _when(shop, fresh.first_purchase_at),
                "last_purchase_at": _when(shop, fresh.last_purchase_at),
            },
        }
        mid = fresh.id
        entries = list(
            await _all(
                session, select(LedgerEntry).where(LedgerEntry.member_id == mid)
                .order_by(LedgerEntry.id)
            )
        )
        lines = await describe_entries(session, shop, mid, entries)
        document["ledger"] = [
            {
                "id": e.id, "at": _when(shop, e.created_at), "kind": e.kind, "amount": e.amount,
                "balance_after": e.balance_after,
                # the member's own order or coupon; a referral's order is the friend's
                "reference": None if e.kind == REFERRAL else e.source_ref,
            }
            | _described(words.ledger_line(line) if words else None)
            for e, line in zip(entries, lines, strict=True)
        ]
        document["points_lots"] = [
            {
                "ledger_entry_id": lot.entry_id, "earned_on": _day(lot.earned_on),
                "expires_on": _day(lot.expires_on), "amount": lot.amount,
                "remaining": lot.remaining,
            }
            for lot in await _all(
                session, select(PointsLot).where(PointsLot.member_id == mid).order_by(PointsLot.id)
            )
        ]
        document["coupons"] = [
            {
                "code": c.code, "source": c.source, "kind": c.kind,
                "value": c.value if c.kind == "percent_off" else _money(c.value),
                "min_spend": _money(c.min_spend), "valid_from": _when(shop, c.valid_from),
                "valid_until": _when(shop, c.valid_until), "status": c.status,
                "used_at": _when(shop, c.used_at), "used_order_id": c.used_order_id,
                "issued_at": _when(shop, c.created_at),
            }
            | _described(words.coupon(c.kind, c.value, c.min_spend, c.source) if words else None)
            for c in await _all(
                session, select(Coupon).where(Coupon.member_id == mid).order_by(Coupon.id)
            )
        ]
        orders = list(
            await _all(session, select(Order).where(Order.member_id == mid).order_by(Order.id))
        )
        refunds = list(
            await _all(
                session,
                select(Refund)
                .join(Order, Order.id == Refund.order_pk)
                .where(Order.member_id == mid)
                .order_by(Refund.id),
            )
        )
        document["orders"] = [
            {
                "order_id": o.order_id, "at": _when(shop, o.occurred_at),
                "amount": _money(o.amount), "coupon_discount": _money(o.coupon_discount),
                "points_redeemed": o.points_redeemed, "points_offset": _money(o.offset),
                "paid": _money(o.paid), "points_earned": o.points_earned,
                "growth_earned": o.growth_earned, "refunded": _money(o.refunded),
                "refunds": [
                    {"refund_id": r.refund_id, "amount": _money(r.amount),
                     "at": _when(shop, r.created_at)}
                    for r in refunds if r.order_pk == o.id
                ],
            }
            for o in orders
        ]
        document["growth"] = [
            {
                "at": _when(shop, g.occurred_at), "kind": g.kind, "source": g.source,
                "amount": g.amount,
            }
            | _described(
                words.ledger_line(LedgerLine(g.kind, g.amount, shop.local_date(g.occurred_at)))
                if words else None
            )
            for g in await _all(
                session, select(GrowthEntry).where(GrowthEntry.member_id == mid)
                .order_by(GrowthEntry.occurred_at, GrowthEntry.id)
            )
        ]
        document["tier_history"] = [
            {
                "at": _when(shop, t.created_at), "from": t.from_tier, "to": t.to_tier,
                "reason": t.reason, "growth": t.growth,
            }
            | _described(words.tier_change(t.reason, t.from_tier, t.to_tier) if words else None)
            for t in await _all(
                session, select(TierChange).where(TierChange.member_id == mid)
                .order_by(TierChange.id)
            )
        ]
        document["checkins"] = [
            {"day": _day(c.day), "streak": c.streak, "points": c.points}
            for c in await _all(
                session, select(CheckIn).where(CheckIn.member_id == mid).order_by(CheckIn.day)
            )
        ]
        document["badges"] = [
            {"kind": b.kind, "earned_on": _day(b.earned_on)}
            for b in await _all(
                session, select(Badge).where(Badge.member_id == mid).order_by(Badge.id)
            )
        ]
        return document
    finally:
        if session.in_transaction():
            await session.commit()  # reads only: ends the snapshot before the upload


def _described(description: str | None) -> dict[str, str]:
    return {"description": description} if description is not None else {}


def _birthday(shop: Shop, member: Member) -> dict[str, Any] | None:
    if member.birthday_month is None:
        return None
    return {
        "month": member.birthday_month,
        "day": member.birthday_day,
        "year": member.birthday_year,
        "gifts_from_year": member.birthday_gift_from,
        "set_at": _when(shop, member.birthday_set_at),
    }


def _survey_time(shop: Shop) -> datetime:
    """The exit survey keeps only the month (its first local midnight), so its time cannot be
    matched with the moment an account was deleted."""
    local = shop.now().astimezone(shop.tz)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def erase_member(
    session: AsyncSession, shop: Shop, member: Member, *, reason: str | None
) -> bool:
    """Erase the member's personal data in one transaction: names, username, phone, birthday,
    Telegram id and card image cleared, status "deleted"; active coupons void; pending pushes
    failed ("member left"); what every push to them said emptied, and the member's name taken
    out of other members' pushes that told of them; the exit survey's reason (one of
    EXIT_REASONS) saved apart, with no link to the member; the keyed hash of the Telegram id
    remembered (``FormerAccount``) so the sign-up gifts are not given twice. The ledger, lots,
    orders and refunds stay with the anonymised row.

    Returns False and changes nothing when the member was already erased (a double tap)."""
    if reason is not None and reason not in EXIT_REASONS:
        raise ValueError(f"unknown exit reason {reason!r}")
    async with write_transaction(session):
        now = shop.now()
        telegram_id = await session.scalar(
            select(Member.telegram_id).where(Member.id == member.id, Member.status != DELETED)
        )
        erased = await session.execute(
            update(Member)
            .where(Member.id == member.id, Member.status != DELETED)
            .values(
                telegram_id=None, first_name=None, last_name=None, username=None, phone=None,
                birthday_month=None, birthday_day=None, birthday_year=None,
                birthday_gift_from=None, birthday_set_at=None, card_file_id=None,
                frozen_reason=None, marketing_opt_in=False, reachable=False,
                referral_token=None,  # shared links stop pointing at anyone
                status=DELETED, deleted_at=now,
            )
            .execution_options(synchronize_session="fetch")
        )
        if erased.rowcount != 1:  # type: ignore[attr-defined]
            return False
        await session.execute(
            update(Coupon)
            .where(Coupon.member_id == member.id, Coupon.status == "active")
            .values(status="void")
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            update(Push)
            .where(Push.member_id == member.id, Push.status == "pending")
            .values(status="failed", last_error=LEFT)
            .execution_options(synchronize_session=False)
        )
        # Spend codes not used yet can never be used now; used ones stay with their orders.
        await session.execute(
            delete(SpendCode).where(SpendCode.member_id == member.id, SpendCode.used_at.is_(None))
        )
        await _scrub_pushes(session, member.id)
        if reason is not None:
            session.add(ExitSurvey(reason=reason, created_at=_survey_time(shop)))
        if telegram_id is not None:
            digest = account_hash(shop.member_hash_secret, telegram_id)
            if await session.get(FormerAccount, digest) is None:  # left once before already
                session.add(FormerAccount(telegram_hash=digest))
    return True


async def _scrub_pushes(session: AsyncSession, member_id: int) -> None:
    """The member's pushes keep only what the shop's statistics need (kind, status, times):
    their payloads, which named the member and told their birthday, order or coupons, are
    emptied, sent ones too. An inviter's referral push (keyed by the friend's id, as
    domain.referrals writes it) named the friend before payloads stopped naming other
    members: that name goes too, the rest of the inviter's message stays."""
    await session.execute(
        update(Push)
        .where(Push.member_id == member_id, Push.payload != EMPTY_PAYLOAD)
        .values(payload=EMPTY_PAYLOAD)
        .execution_options(synchronize_session=False)
    )
    told = await session.execute(
        select(Push.id, Push.payload).where(
            Push.kind == REFERRAL_PUSH, Push.key == f"{REFERRAL_PUSH}:{member_id}"
        )
    )
    for push_id, payload in told.all():
        fields = json.loads(payload)
        if fields.pop(FRIEND, None) is not None:
            await session.execute(
                update(Push).where(Push.id == push_id)
                .values(payload=json.dumps(fields, ensure_ascii=False, sort_keys=True))
                .execution_options(synchronize_session=False)
            )
