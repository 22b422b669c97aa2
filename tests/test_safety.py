"""Safety: flood control, frozen members, blocked chats, staff-only commands."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import Member
from tests.conftest import STAFF_ID, Conversation
from tests.fake_telegram import message_update, my_chat_member_update

USER = 4242


async def _member(session: AsyncSession) -> Member:
    await session.rollback()
    member = await session.scalar(select(Member).where(Member.telegram_id == USER))
    assert member is not None
    return member


async def test_flood_gets_one_notice_and_is_dropped(chat: Conversation) -> None:
    await chat.send(message_update(USER, "/start"))
    chat.fake.clear()
    await asyncio.gather(*(chat.send(message_update(USER, "/help")) for _ in range(20)))
    texts = [c.params["text"] for c in chat.fake.calls_of("sendMessage")]
    notices = [t for t in texts if "a little fast" in t]
    assert len(notices) == 1
    assert len(texts) < 12  # at most the limit answered plus the one notice


async def test_frozen_member_is_told_without_the_note_and_till_refuses(
    chat: Conversation, session: AsyncSession, api: httpx.AsyncClient
) -> None:
    await chat.send(message_update(USER, "/start"))
    code = (await _member(session)).code
    await chat.send(message_update(STAFF_ID, f"/freeze {code} suspected abuse"))
    assert "is frozen: suspected abuse" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    await chat.send(message_update(USER, "/card"))
    caption = chat.fake.calls_of("sendPhoto")[-1].params["caption"]
    assert "account is on hold" in caption and "suspected abuse" not in caption
    order = await api.post("/api/v1/orders", json={"order_id": "f1", "member": code, "amount": "10.00"})
    assert order.status_code == 403
    await chat.send(message_update(STAFF_ID, f"/unfreeze {code}"))
    assert (await _member(session)).status == "active"
    order = await api.post("/api/v1/orders", json={"order_id": "f1", "member": code, "amount": "10.00"})
    assert order.status_code == 201


async def test_only_staff_can_freeze(chat: Conversation, session: AsyncSession) -> None:
    await chat.send(message_update(USER, "/start"))
    code = (await _member(session)).code
    await chat.send(message_update(USER, f"/freeze {code} because"))
    assert "staff only" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert (await _member(session)).status == "active"


async def test_blocking_marks_unreachable_until_they_write(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "/start"))
    await chat.send(my_chat_member_update(USER, "kicked"))
    assert (await _member(session)).reachable is False
    await chat.send(message_update(USER, "hello"))
    assert (await _member(session)).reachable is True


async def test_blocked_stranger_is_not_registered(chat: Conversation, session: AsyncSession) -> None:
    await chat.send(my_chat_member_update(777, "kicked"))
    await session.rollback()
    assert await session.scalar(select(Member.id).where(Member.telegram_id == 777)) is None
