"""/points end to end: balance, expiring points with dates, history pages edited in place."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain import orders
from domain.clock import FixedClock
from domain.models import Member
from domain.shop import Shop
from tests.conftest import Conversation
from tests.fake_telegram import message_update

USER = 4242


async def _code(chat: Conversation, session: AsyncSession, language: str = "en") -> str:
    await chat.send(message_update(USER, "/start", first_name="Lin", language_code=language))
    await session.rollback()
    code = await session.scalar(select(Member.code).where(Member.telegram_id == USER))
    assert code is not None
    return code


async def _buy(session: AsyncSession, shop: Shop, code: str, order_id: str, amount: int) -> None:
    await orders.place_order(session, shop, orders.OrderRequest(order_id, code, amount))


async def test_points_shows_balance_expiry_and_history(
    chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    clock.set(datetime(2025, 3, 20, 4, 0, tzinfo=UTC))
    code = await _code(chat, session)  # 100 points on 2025-03-20: expire after 2026-03-31
    clock.set(datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    await _buy(session, shop, code, "1042", 19900)
    await chat.send(message_update(USER, "/points"))
    text = chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert "Your points: 299" in text
    assert "100 points on 31 Mar 2026" in text  # within 30 days
    assert "199 points on" not in text.split("History")[0].split("Next after that")[0]
    assert "Next after that: 199 points on 31 Mar 2027" in text
    assert "+199</code> Purchase, CN¥199.00 · 10 Mar 2026" in text
    assert "1042" not in text  # the till's order id is not the member's business
    assert "+100</code> Welcome bonus" in text


async def test_history_pages_edit_in_place(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    code = await _code(chat, session, language="zh-CN")
    for i in range(10):
        await _buy(session, shop, code, f"o{i}", 1000 + i * 100)
    await chat.send(message_update(USER, "/points"))
    first = chat.fake.calls_of("sendMessage")[-1]
    assert "第 1/2 页" in first.params["text"]
    assert "消费 ¥18.00 ·" in first.params["text"] and "o9" not in first.params["text"]
    buttons = first.params["reply_markup"]["inline_keyboard"][0]
    assert [b["text"] for b in buttons] == ["较早 ▶"]
    await chat.send(chat.fake.press(USER, buttons[0]["callback_data"], first.message_id))
    edit = chat.fake.calls_of("editMessageText")[-1]
    assert not edit.failed and edit.params["message_id"] == str(first.message_id)
    assert "第 2/2 页" in edit.params["text"] and "入会礼" in edit.params["text"]
    assert [b["text"] for b in edit.params["reply_markup"]["inline_keyboard"][0]] == ["◀ 较新"]
    assert len(chat.fake.calls_of("sendMessage")) == 2  # the welcome and the first /points only
