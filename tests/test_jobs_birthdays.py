"""Daily birthday gifts by tier, on the member's local birthday, once a year.

Silver: buy-one-get-one coupon; Gold: free birthday item; Black Gold: gift pack; Member: a
greeting with the birthday month's ×2 points and no coupon. The shop is in Asia/Shanghai.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.clock import FixedClock
from domain.members import TelegramProfile, register
from domain.models import Coupon, Member, Push
from domain.schedule import run_job
from domain.shop import Shop
from domain.transaction import write_transaction
from tests.conftest import Conversation

TODAY = date(2026, 3, 10)


async def _member(
    session: AsyncSession, shop: Shop, telegram_id: int, name: str, *, birthday: tuple[int, int],
    tier: str = "member", language: str = "en", **values: Any,
) -> int:
    registration = await register(
        session, shop, TelegramProfile(telegram_id, name, None, None, language)
    )
    member_id = registration.member.id
    async with write_transaction(session):
        await session.execute(
            update(Member).where(Member.id == member_id).values(
                birthday_month=birthday[0], birthday_day=birthday[1], tier=tier, **values
            )
        )
    return member_id


async def _pushes(session: AsyncSession) -> dict[str, tuple[int, dict[str, Any]]]:
    await session.rollback()
    rows = (
        await session.execute(
            select(Push.key, Push.member_id, Push.payload).where(Push.kind == "birthday")
        )
    ).all()
    return {key: (member_id, json.loads(payload)) for key, member_id, payload in rows}


async def _coupons(session: AsyncSession) -> dict[int, list[str]]:
    """Birthday coupons by member (everyone also holds the welcome coupon from sign-up)."""
    await session.rollback()
    rows = (
        await session.execute(
            select(Coupon.member_id, Coupon.source).where(Coupon.source.like("birthday%"))
        )
    ).all()
    found: dict[int, list[str]] = {}
    for member_id, source in rows:
        found.setdefault(member_id, []).append(source)
    return found


def _texts_to(chat: Conversation, telegram_id: int) -> list[str]:
    return [
        call.params["text"] for call in chat.fake.calls_of("sendMessage")
        if call.params["chat_id"] == str(telegram_id)
    ]


async def test_birthday_today_gets_the_tiers_gift_once_and_tomorrow_waits(
    chat: Conversation, session: AsyncSession, session_factory: async_sessionmaker[AsyncSession],
    shop: Shop,
) -> None:
    member = await _member(session, shop, 6001, "Lin", birthday=(3, 10))
    silver = await _member(session, shop, 6002, "Bo", birthday=(3, 10), tier="silver")
    gold = await _member(
        session, shop, 6003, "梅", birthday=(3, 10), tier="gold", language="zh-hans"
    )
    black_gold = await _member(session, shop, 6004, "Ada", birthday=(3, 10), tier="black_gold")
    tomorrow = await _member(session, shop, 6005, "Kai", birthday=(3, 11), tier="gold")
    waits = await _member(  # set within 30 days of the date: the gift starts next year
        session, shop, 6006, "Wai", birthday=(3, 10), tier="gold", birthday_gift_from=2027
    )
    gone = await _member(session, shop, 6007, "Gone", birthday=(3, 10), tier="gold")
    async with write_transaction(session):
        await session.execute(
            update(Member).where(Member.id == gone).values(status="deleted", telegram_id=None)
        )

    report = await run_job(session_factory, shop, "birthdays", today=TODAY)
    assert report.written == 4

    pushes = await _pushes(session)
    assert set(pushes) == {
        f"birthday:{m}:2026" for m in (member, silver, gold, black_gold)
    }
    _, payload = pushes[f"birthday:{gold}:2026"]
    assert payload["gift"] == "free_item" and payload["tier"] == "gold"
    assert payload["multiplier"] == "2" and payload["name"] == "梅"
    assert payload["coupon"]["kind"] == "free_item"
    assert "coupon" not in pushes[f"birthday:{member}:2026"][1]
    assert await _coupons(session) == {
        silver: ["birthday_buy_one_get_one"], gold: ["birthday_free_item"],
        black_gold: ["birthday_gift_pack"],
    }
    assert tomorrow not in await _coupons(session) and waits not in await _coupons(session)
    marketing = await session.scalars(select(Push.marketing).where(Push.kind == "birthday"))
    assert not any(marketing.all())  # the member's benefit, not an offer

    again = await run_job(session_factory, shop, "birthdays", today=TODAY)
    assert again.written == 0
    assert len(await _pushes(session)) == 4
    assert sum(len(found) for found in (await _coupons(session)).values()) == 3

    assert await chat.app.sender.deliver_pending() == 4
    [greeting] = _texts_to(chat, 6001)
    assert "Happy birthday, Lin!" in greeting and "×2 points" in greeting
    assert "Coupon code" not in greeting
    assert "From Silver on, your birthday also brings a buy-one-get-one" in greeting
    gold_code = payload["coupon"]["code"]
    [chinese] = _texts_to(chat, 6003)
    assert "梅，生日快乐！" in chinese and "金卡会员" in chinese and "生日免费单品券" in chinese
    assert f"{gold_code[:5]}-{gold_code[5:]}" in chinese and "2 倍积分" in chinese
    [pack] = _texts_to(chat, 6004)
    assert "Black Gold" in pack and "a birthday gift pack" in pack
    assert "valid until 9 Apr 2026" in pack  # 30 days, through the last local day
    [silver_text] = _texts_to(chat, 6002)
    assert "a buy-one-get-one coupon" in silver_text
    assert _texts_to(chat, 6005) == [] and _texts_to(chat, 6006) == []

    next_day = await run_job(session_factory, shop, "birthdays", today=date(2026, 3, 11))
    assert next_day.written == 1
    assert f"birthday:{tomorrow}:2026" in await _pushes(session)


async def test_a_gift_that_waited_comes_the_next_year(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
) -> None:
    waits = await _member(
        session, shop, 6011, "Wai", birthday=(3, 10), tier="silver", birthday_gift_from=2027
    )
    frozen = await _member(
        session, shop, 6012, "Ice", birthday=(3, 10), tier="silver", status="frozen"
    )

    assert (await run_job(session_factory, shop, "birthdays", today=TODAY)).written == 0
    report = await run_job(session_factory, shop, "birthdays", today=date(2027, 3, 10))

    assert report.written == 1
    assert set(await _pushes(session)) == {f"birthday:{waits}:2027"}
    assert frozen not in await _coupons(session)


async def test_29_february_is_celebrated_on_28_february_in_a_common_year(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
) -> None:
    leapling = await _member(session, shop, 6021, "Leap", birthday=(2, 29))
    plain = await _member(session, shop, 6022, "Plain", birthday=(2, 28))

    common = await run_job(session_factory, shop, "birthdays", today=date(2027, 2, 28))
    assert common.written == 2
    assert set(await _pushes(session)) == {
        f"birthday:{leapling}:2027", f"birthday:{plain}:2027",
    }

    # In a leap year each has their own day.
    on_28 = await run_job(session_factory, shop, "birthdays", today=date(2028, 2, 28))
    on_29 = await run_job(session_factory, shop, "birthdays", today=date(2028, 2, 29))
    assert on_28.written == 1 and on_29.written == 1
    assert set(await _pushes(session)) >= {f"birthday:{plain}:2028", f"birthday:{leapling}:2028"}
    assert (await run_job(session_factory, shop, "birthdays", today=date(2027, 3, 1))).written == 0


async def test_the_local_birthday_counts_while_utc_is_still_the_day_before(
    chat: Conversation, session: AsyncSession, session_factory: async_sessionmaker[AsyncSession],
    shop: Shop, clock: FixedClock,
) -> None:
    today_local = await _member(session, shop, 6031, "Lin", birthday=(3, 10), tier="gold")
    today_utc = await _member(session, shop, 6032, "Bo", birthday=(3, 9), tier="gold")
    clock.set(datetime(2026, 3, 9, 20, 0, tzinfo=UTC))  # 04:00 on 10 Mar in Shanghai

    report = await run_job(session_factory, shop, "birthdays")  # today: the shop's local date

    assert report.written == 1
    assert set(await _pushes(session)) == {f"birthday:{today_local}:2026"}
    assert today_utc not in await _coupons(session)
    # Written at night, delivered after the quiet hours: 09:00 local.
    assert await chat.app.sender.deliver_pending() == 0
    clock.set(datetime(2026, 3, 10, 1, 0, tzinfo=UTC))
    assert await chat.app.sender.deliver_pending() == 1
    [text] = _texts_to(chat, 6031)
    assert "Happy birthday, Lin!" in text and "valid until 9 Apr 2026" in text
