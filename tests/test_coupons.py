"""Coupons: the member's list and QR code in the chat, only ever their own; use at the till
through POST /api/v1/orders, checked for owner, validity, minimum spend and prior use, and used
exactly once when orders race."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain import coupons
from domain.clock import FixedClock
from domain.models import Coupon, LedgerEntry, Member, Order, PointsLot
from domain.shop import Shop
from domain.transaction import write_transaction
from handlers.callbacks import CouponOpen, RewardView
from handlers.media import qr_png
from tests.conftest import Conversation
from tests.fake_telegram import Call, callback_update, message_update

MEMBER = 4242
OTHER = 4343


async def _member_with_coupon(
    chat: Conversation, session: AsyncSession, shop: Shop, user_id: int = MEMBER,
    language: str = "en",
) -> tuple[int, int, str]:
    """A registered member whose only coupon is 20.00 off 100.00, valid 30 days:
    (member id, coupon id, code)."""
    await chat.send(message_update(user_id, "/start", first_name="Lin", language_code=language))
    await session.rollback()
    member_id = await session.scalar(select(Member.id).where(Member.telegram_id == user_id))
    assert member_id is not None
    async with write_transaction(session):
        await session.execute(delete(Coupon).where(Coupon.member_id == member_id))
        coupon = await coupons.issue_coupon(
            session, shop, member_id, source="campaign", kind="amount_off", value=2000,
            min_spend=10000, valid_days=30,
        )
        coupon_id, code = coupon.id, coupon.code
    return member_id, coupon_id, code


def _grouped(code: str) -> str:
    return f"{code[:5]}-{code[5:]}"


def _buttons(call: Call) -> list[dict[str, str]]:
    return [b for row in call.params["reply_markup"]["inline_keyboard"] for b in row]


def _alerts(chat: Conversation) -> list[str]:
    return [
        c.params["text"]
        for c in chat.fake.calls_of("answerCallbackQuery")
        if str(c.params.get("show_alert")).lower() == "true"
    ]


async def _coupon_state(session: AsyncSession, coupon_id: int) -> tuple[str, str | None]:
    await session.rollback()
    row = (
        await session.execute(
            select(Coupon.status, Coupon.used_order_id).where(Coupon.id == coupon_id)
        )
    ).one()
    return row[0], row[1]


async def _balance(session: AsyncSession, member_id: int) -> int:
    """The balance, checked against the ledger and the lots."""
    await session.rollback()
    balance = await session.scalar(select(Member.points_balance).where(Member.id == member_id))
    ledger = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.member_id == member_id
        )
    )
    lots = await session.scalar(
        select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(
            PointsLot.member_id == member_id
        )
    )
    assert balance == ledger == lots
    return int(balance or 0)


async def _orders(session: AsyncSession) -> list[str]:
    await session.rollback()
    return list((await session.scalars(select(Order.order_id).order_by(Order.id))).all())


# ---------------------------------------------------------------------- in the chat


async def test_list_and_open_a_coupon_in_english(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    _, coupon_id, code = await _member_with_coupon(chat, session, shop)
    await chat.send(message_update(MEMBER, "/coupons"))
    listing = chat.fake.calls_of("sendMessage")[-1]
    assert "Your coupons</b> (1)" in listing.params["text"]
    assert "CN¥20 off orders of CN¥100 or more</b>, until 9 Apr 2026" in listing.params["text"]
    [button] = _buttons(listing)
    assert button == {
        "text": "🎟 CN¥20 off orders of CN¥100 or more · until 9 Apr",
        "callback_data": CouponOpen(coupon_id=coupon_id).pack(),
    }

    await chat.send(callback_update(MEMBER, button["callback_data"], message_id=31))
    photo = chat.fake.calls_of("sendPhoto")[-1]
    assert photo.params["chat_id"] == str(MEMBER)
    assert photo.params["photo"]["bytes"] == qr_png(code)  # the QR code carries the code
    caption = photo.params["caption"]
    assert "<b>CN¥20 off orders of CN¥100 or more</b>" in caption
    assert "Minimum spend: CN¥100.00" in caption
    assert "Valid until: 9 Apr 2026" in caption
    assert f"<code>{_grouped(code)}</code>" in caption
    assert not _alerts(chat)


async def test_list_and_open_a_coupon_in_chinese(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    _, coupon_id, code = await _member_with_coupon(chat, session, shop, language="zh-hans")
    await chat.send(message_update(MEMBER, "🎟 优惠券", language_code="zh-hans"))
    listing = chat.fake.calls_of("sendMessage")[-1]
    assert "我的优惠券</b>（1 张）" in listing.params["text"]
    assert "满¥100减¥20券</b>，2026年4月9日到期" in listing.params["text"]
    assert _buttons(listing)[0]["text"] == "🎟 满¥100减¥20券 · 4月9日到期"
    await chat.send(callback_update(MEMBER, CouponOpen(coupon_id=coupon_id).pack()))
    caption = chat.fake.calls_of("sendPhoto")[-1].params["caption"]
    assert "最低消费：¥100.00" in caption and "有效期至：2026年4月9日" in caption
    assert _grouped(code) in caption


async def test_crafted_callback_cannot_open_another_members_coupon(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    _, coupon_id, code = await _member_with_coupon(chat, session, shop)
    await _member_with_coupon(chat, session, shop, user_id=OTHER)
    chat.fake.clear()
    await chat.send(callback_update(OTHER, CouponOpen(coupon_id=coupon_id).pack()))
    assert _alerts(chat) == ["Coupon not found."]
    assert not chat.fake.calls_of("sendPhoto")
    assert not any(code in str(c.params) for c in chat.fake.calls)
    await chat.send(callback_update(OTHER, CouponOpen(coupon_id=999_999).pack()))
    assert _alerts(chat)[-1] == "Coupon not found."
    assert not chat.fake.calls_of("sendPhoto")
    assert await _coupon_state(session, coupon_id) == ("active", None)


async def test_used_coupon_leaves_the_list_and_cannot_be_shown(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member_id, coupon_id, code = await _member_with_coupon(chat, session, shop)
    member_code = await session.scalar(select(Member.code).where(Member.id == member_id))
    used = await api.post(
        "/api/v1/orders",
        json={"order_id": "U1", "member": member_code, "amount": "120.00", "coupon_code": code},
    )
    assert used.status_code == 201, used.text

    await chat.send(message_update(MEMBER, "/coupons"))
    empty = chat.fake.calls_of("sendMessage")[-1]
    assert "no coupons to use right now" in empty.params["text"]
    assert "/rewards" in empty.params["text"]
    [to_rewards] = _buttons(empty)
    assert to_rewards["callback_data"] == RewardView(key="").pack()
    await chat.send(chat.fake.press(MEMBER, to_rewards["callback_data"], empty.message_id))
    assert "Rewards mall" in chat.fake.calls_of("editMessageText")[-1].params["text"]

    await chat.send(callback_update(MEMBER, CouponOpen(coupon_id=coupon_id).pack()))
    assert _alerts(chat)[-1] == "This coupon has already been used."
    assert not chat.fake.calls_of("sendPhoto")


async def test_expired_coupon_is_not_listed(
    chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    _, coupon_id, _ = await _member_with_coupon(chat, session, shop, language="zh-hans")
    clock.advance(days=31)
    await chat.send(message_update(MEMBER, "/coupons", language_code="zh-hans"))
    assert "您目前没有可用的优惠券" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    await chat.send(callback_update(MEMBER, CouponOpen(coupon_id=coupon_id).pack()))
    assert _alerts(chat)[-1] == "该优惠券已过期。"
    assert not chat.fake.calls_of("sendPhoto")


async def test_coupon_is_valid_through_its_last_local_day(
    chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    member_id, coupon_id, code = await _member_with_coupon(chat, session, shop)
    assert coupons.normalize_coupon_code(coupons.format_coupon_code(code).lower()) == code
    end = coupons.last_valid_instant(shop, shop.now(), 30)
    assert end.astimezone(shop.tz).isoformat() == "2026-04-09T23:59:59+08:00"
    clock.set(end)
    await session.rollback()
    assert [c.id for c in await coupons.member_coupons(session, shop, member_id)] == [coupon_id]
    clock.advance(seconds=1)
    assert await coupons.member_coupons(session, shop, member_id) == []


# ---------------------------------------------------------------------- at the till


async def test_coupon_used_by_two_racing_orders_applies_once(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member_id, coupon_id, code = await _member_with_coupon(chat, session, shop)
    member_code = await session.scalar(select(Member.code).where(Member.id == member_id))

    async def order(order_id: str) -> httpx.Response:
        return await api.post(
            "/api/v1/orders",
            json={"order_id": order_id, "member": member_code, "amount": "150.00",
                  "coupon_code": _grouped(code)},
        )

    first, second = await asyncio.gather(order("R1"), order("R2"))
    by_status = {r.status_code: r for r in (first, second)}
    assert sorted(by_status) == [201, 409], (first.text, second.text)
    won = by_status[201].json()
    assert won["coupon_code"] == code and won["coupon_discount"] == "20.00"
    assert won["to_pay"] == "130.00"
    refused = by_status[409].json()
    assert refused["field"] == "coupon_code" and refused["error"] == "coupon_not_usable"

    assert await _coupon_state(session, coupon_id) == ("used", won["order_id"])
    assert await _orders(session) == [won["order_id"]]  # the refused order left nothing
    assert await _balance(session, member_id) == 100 + 130


async def test_till_refuses_a_coupon_that_is_not_usable_and_changes_nothing(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession, shop: Shop,
    clock: FixedClock,
) -> None:
    owner_id, coupon_id, code = await _member_with_coupon(chat, session, shop)
    other_id, _, _ = await _member_with_coupon(chat, session, shop, user_id=OTHER)
    owner = await session.scalar(select(Member.code).where(Member.id == owner_id))
    other = await session.scalar(select(Member.code).where(Member.id == other_id))

    async def refused(order_id: str, member: str | None, amount: str, why: str) -> None:
        response = await api.post(
            "/api/v1/orders",
            json={"order_id": order_id, "member": member, "amount": amount, "coupon_code": code},
        )
        # the coupon exists but this order may not use it: a conflict with its state
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["field"] == "coupon_code" and why in body["message"]
        assert await _coupon_state(session, coupon_id) == ("active", None)
        assert await _orders(session) == []
        assert await _balance(session, owner_id) == await _balance(session, other_id) == 100

    await refused("X1", other, "150.00", "belongs to another member")
    await refused("X2", owner, "99.99", "minimum spend of 100.00")
    clock.advance(days=31)
    await refused("X3", owner, "150.00", "not valid at the time of the order")
    # A sale recorded offline within the coupon's validity may still use it.
    ok = await api.post(
        "/api/v1/orders",
        json={"order_id": "X4", "member": owner, "amount": "150.00", "coupon_code": code,
              "occurred_at": (shop.now() - timedelta(days=2)).isoformat()},
    )
    assert ok.status_code == 201, ok.text
    assert await _coupon_state(session, coupon_id) == ("used", "X4")
