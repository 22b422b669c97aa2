"""Daily expiry reminders: points 30 and 7 days ahead, coupons 3 days ahead (local days).

The clock fixture stands at 10:00 in Shanghai on 10 Mar 2026: points expiring on 9 Apr are
30 days away, on 17 Mar 7 days; coupons whose last local day is 13 Mar are 3 days away.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import reminders
from domain.coupons import issue_coupon
from domain.members import TelegramProfile, register
from domain.models import Coupon, Member, PointsLot, Push
from domain.points import earn
from domain.schedule import run_job
from domain.shop import Shop
from domain.transaction import write_transaction
from tests.conftest import Conversation

TODAY = date(2026, 3, 10)
SHANGHAI = ZoneInfo("Asia/Shanghai")
SIGNUP_POINTS = 100  # the sign-up bonus, expiring 31 Mar 2027: never in these windows


async def _member(
    session: AsyncSession, shop: Shop, telegram_id: int, name: str, language: str = "en"
) -> int:
    registration = await register(
        session, shop, TelegramProfile(telegram_id, name, None, None, language)
    )
    return registration.member.id


async def _lot(
    session: AsyncSession, shop: Shop, member_id: int, amount: int, expires_on: date, *,
    remaining: int | None = None,
) -> None:
    async with write_transaction(session):
        posting = await earn(
            session, shop, member_id, kind="test", amount=amount, reason="test",
            key=f"test:{member_id}:{amount}:{expires_on}",
        )
        await session.execute(
            update(PointsLot)
            .where(PointsLot.entry_id == posting.entry_id)
            .values(expires_on=expires_on, remaining=amount if remaining is None else remaining)
        )


async def _set(session: AsyncSession, member_id: int, **values: Any) -> None:
    async with write_transaction(session):
        await session.execute(update(Member).where(Member.id == member_id).values(**values))


async def _pushes(session: AsyncSession, kind: str) -> dict[str, tuple[int, dict[str, Any]]]:
    await session.rollback()
    rows = (
        await session.execute(
            select(Push.key, Push.member_id, Push.payload).where(Push.kind == kind)
        )
    ).all()
    return {key: (member_id, json.loads(payload)) for key, member_id, payload in rows}


def _texts_to(chat: Conversation, telegram_id: int) -> list[str]:
    return [
        call.params["text"] for call in chat.fake.calls_of("sendMessage")
        if call.params["chat_id"] == str(telegram_id)
    ]


async def test_points_expiring_in_30_and_7_days_are_reminded_once_with_amount_and_date(
    chat: Conversation, session: AsyncSession, session_factory: async_sessionmaker[AsyncSession],
    shop: Shop,
) -> None:
    in_30 = await _member(session, shop, 5001, "Lin")
    await _lot(session, shop, in_30, 300, date(2026, 4, 9))
    await _lot(session, shop, in_30, 200, date(2026, 4, 9))  # same day: one reminder, summed
    await _lot(session, shop, in_30, 50, date(2026, 4, 9), remaining=0)  # spent already
    in_31 = await _member(session, shop, 5002, "Bo")
    await _lot(session, shop, in_31, 400, date(2026, 4, 10))
    in_7 = await _member(session, shop, 5003, "梅", language="zh-hans")
    await _lot(session, shop, in_7, 1200, date(2026, 3, 17))
    in_8 = await _member(session, shop, 5004, "Kai")
    await _lot(session, shop, in_8, 700, date(2026, 3, 18))

    report = await run_job(session_factory, shop, "points_expiry_reminders", today=TODAY)
    assert report.written == 2

    pushes = await _pushes(session, "points_expiry")
    assert set(pushes) == {
        f"points_expiry:{in_30}:2026-04-09:30", f"points_expiry:{in_7}:2026-03-17:7",
    }
    member_id, payload = pushes[f"points_expiry:{in_30}:2026-04-09:30"]
    assert member_id == in_30
    assert payload["amount"] == 500 and payload["expires_on"] == "2026-04-09"
    assert payload["days"] == 30 and payload["balance"] == SIGNUP_POINTS + 550
    assert payload["name"] == "Lin" and payload["tier"] == "member"
    assert pushes[f"points_expiry:{in_7}:2026-03-17:7"][1]["amount"] == 1200
    marketing = await session.scalars(select(Push.marketing).where(Push.kind == "points_expiry"))
    assert not any(marketing.all())  # a service message: opting out of offers does not mute it

    again = await run_job(session_factory, shop, "points_expiry_reminders", today=TODAY)
    assert again.written == 0
    assert len(await _pushes(session, "points_expiry")) == 2

    assert await chat.app.sender.deliver_pending() == 2
    [english] = _texts_to(chat, 5001)
    assert "500 of your points expire on 9 Apr 2026" in english and "in 30 days" in english
    assert "650" in english  # the balance
    [chinese] = _texts_to(chat, 5003)
    assert "1,200 积分将于2026年3月17日到期" in chinese and "仅剩一周" in chinese
    assert "普通会员" in chinese
    assert _texts_to(chat, 5002) == [] and _texts_to(chat, 5004) == []


async def test_members_who_left_or_owe_points_get_no_points_reminder(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
) -> None:
    left = await _member(session, shop, 5011, "Gone")
    await _lot(session, shop, left, 300, date(2026, 4, 9))
    await _set(session, left, status="deleted", telegram_id=None)
    owing = await _member(session, shop, 5012, "Owes")
    await _lot(session, shop, owing, 300, date(2026, 4, 9))
    await _set(session, owing, points_balance=0, points_debt=400)
    frozen = await _member(session, shop, 5013, "Frozen")  # still a member: still told
    await _lot(session, shop, frozen, 300, date(2026, 4, 9))
    await _set(session, frozen, status="frozen")
    spent = await _member(session, shop, 5014, "Spent")  # nothing left of the lot due
    await _lot(session, shop, spent, 300, date(2026, 4, 9), remaining=0)

    report = await run_job(session_factory, shop, "points_expiry_reminders", today=TODAY)

    assert report.written == 1
    assert set(await _pushes(session, "points_expiry")) == {
        f"points_expiry:{frozen}:2026-04-09:30"
    }


async def test_reminders_page_through_members_in_batches(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reminders, "BATCH", 2)
    members = [await _member(session, shop, 5061 + i, f"M{i}") for i in range(5)]
    for i, member in enumerate(members):
        await _lot(session, shop, member, 10 + i, date(2026, 4, 9))
        await _lot(session, shop, member, 100, date(2026, 4, 9))  # two lots, one group

    batches = [
        batch async for batch in reminders.points_expiry_reminders(session, shop, TODAY)
    ]

    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert [(p.member_id, p.payload["amount"]) for batch in batches for p in batch] == [
        (member, 110 + i) for i, member in enumerate(members)
    ]


async def test_dry_run_counts_reminders_and_writes_nothing(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
) -> None:
    member = await _member(session, shop, 5021, "Lin")
    await _lot(session, shop, member, 300, date(2026, 3, 17))

    report = await run_job(
        session_factory, shop, "points_expiry_reminders", today=TODAY, dry_run=True
    )

    assert report.members == 1 and report.written == 0
    assert report.samples[0].payload["amount"] == 300
    assert await _pushes(session, "points_expiry") == {}


async def _coupon(
    session: AsyncSession, shop: Shop, member_id: int, valid_until: datetime, *,
    status: str = "active", kind: str = "amount_off", value: int = 1000, min_spend: int = 5000,
    source: str = "welcome",
) -> tuple[int, str]:
    async with write_transaction(session):
        coupon = await issue_coupon(
            session, shop, member_id, source=source, kind=kind, value=value,
            min_spend=min_spend, valid_days=30,
        )
        coupon_id, code = coupon.id, coupon.code
        await session.execute(
            update(Coupon).where(Coupon.id == coupon_id)
            .values(valid_until=valid_until, status=status)
        )
    return coupon_id, code


def _shanghai(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """An instant of March 2026 given in Shanghai local time, as UTC."""
    return datetime(2026, 3, day, hour, minute, second, tzinfo=SHANGHAI).astimezone(UTC)


async def test_coupons_ending_in_3_local_days_are_reminded_once(
    chat: Conversation, session: AsyncSession, session_factory: async_sessionmaker[AsyncSession],
    shop: Shop,
) -> None:
    lin = await _member(session, shop, 5031, "Lin")
    mei = await _member(session, shop, 5032, "梅", language="zh")
    # The last second of local 13 Mar: what issue_coupon gives.
    in_3, in_3_code = await _coupon(session, shop, lin, _shanghai(13, 23, 59, 59))
    # Early on local 13 Mar, still 12 Mar in UTC: due.
    early, _ = await _coupon(
        session, shop, mei, _shanghai(13, 0, 30), kind="percent_off", value=15, min_spend=10000,
    )
    # Early on local 14 Mar, still 13 Mar in UTC: not yet.
    await _coupon(session, shop, lin, _shanghai(14, 0, 30))
    await _coupon(session, shop, lin, _shanghai(14, 23, 59, 59))  # 4 days ahead
    await _coupon(session, shop, lin, _shanghai(13, 20), status="used")  # nothing to remind of
    gone = await _member(session, shop, 5033, "Gone")
    await _coupon(session, shop, gone, _shanghai(13, 20))
    await _set(session, gone, status="deleted", telegram_id=None)

    report = await run_job(session_factory, shop, "coupon_expiry_reminders", today=TODAY)
    assert report.written == 2

    pushes = await _pushes(session, "coupon_expiry")
    assert set(pushes) == {f"coupon_expiry:{in_3}", f"coupon_expiry:{early}"}
    member_id, payload = pushes[f"coupon_expiry:{in_3}"]
    assert member_id == lin
    assert payload["code"] == in_3_code and payload["valid_until"] == "2026-03-13"
    assert payload["kind"] == "amount_off" and payload["value"] == 1000
    assert payload["min_spend"] == 5000 and payload["source"] == "welcome"
    assert pushes[f"coupon_expiry:{early}"][1]["valid_until"] == "2026-03-13"

    again = await run_job(session_factory, shop, "coupon_expiry_reminders", today=TODAY)
    assert again.written == 0
    assert len(await _pushes(session, "coupon_expiry")) == 2

    assert await chat.app.sender.deliver_pending() == 2
    [english] = _texts_to(chat, 5031)
    assert "<b>CN¥10 off orders of CN¥50 or more</b> is valid until <b>13 Mar 2026</b>" in english
    assert f"{in_3_code[:5]}-{in_3_code[5:]}" in english
    [chinese] = _texts_to(chat, 5032)
    assert "满¥100享8.5折券" in chinese and "2026年3月13日</b>到期" in chinese
    assert "还有 3 天" in chinese


async def test_coupon_window_follows_the_shops_day_not_utcs(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
) -> None:
    """Run for local 11 Mar (3 days ahead: local 14 Mar). A coupon ending at 00:30 local on
    14 Mar is 13 Mar in UTC; a UTC-day window would miss it and take the one before."""
    lin = await _member(session, shop, 5041, "Lin")
    due, _ = await _coupon(session, shop, lin, _shanghai(14, 0, 30))
    await _coupon(session, shop, lin, _shanghai(13, 23, 59, 59))  # local 13 Mar: yesterday's

    report = await run_job(
        session_factory, shop, "coupon_expiry_reminders", today=date(2026, 3, 11)
    )

    assert report.written == 1
    assert set(await _pushes(session, "coupon_expiry")) == {f"coupon_expiry:{due}"}


async def test_nothing_due_means_no_reminder(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
) -> None:
    await _member(session, shop, 5051, "Lin")  # only the sign-up points, due in 2027

    points = await run_job(session_factory, shop, "points_expiry_reminders", today=TODAY)
    coupons = await run_job(session_factory, shop, "coupon_expiry_reminders", today=TODAY)

    assert points.members == 0 and coupons.members == 0
    await session.rollback()
    assert await session.scalar(select(func.count(Push.id))) == 0
