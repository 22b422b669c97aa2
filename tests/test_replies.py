"""A reply refused by Telegram's flood control (429 with retry_after) reaches the member after
the wait, instead of being lost; the outbox sender's own sends are not retried behind its back
(it pauses every push itself: tests/test_sender.py)."""

from __future__ import annotations

import contextlib
import logging
import time

import pytest
from aiogram.exceptions import TelegramRetryAfter
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import App
from bot.replies import OUTBOX_SEND
from domain.shop import Shop
from tests.conftest import Conversation
from tests.fake_telegram import message_update
from tests.test_sender import _member, _push

MEMBER = 5151


async def test_a_reply_refused_by_flood_control_arrives_after_the_wait(chat: Conversation) -> None:
    await chat.send(message_update(MEMBER, "/start", first_name="Lin"))
    chat.fake.fail_next(
        "sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1, chat_id=MEMBER
    )
    started = time.monotonic()
    await chat.send(message_update(MEMBER, "/points"))
    sends = [c for c in chat.fake.calls_of("sendMessage") if str(c.params["chat_id"]) == str(MEMBER)]
    assert [c.failed for c in sends[-2:]] == [True, False]  # refused once, then answered
    assert "points" in sends[-1].params["text"].lower()
    assert time.monotonic() - started >= 1.0  # after the wait Telegram named


async def test_a_long_flood_wait_is_not_slept_through(chat: Conversation) -> None:
    await chat.send(message_update(MEMBER, "/start", first_name="Lin"))
    chat.fake.fail_next(
        "sendMessage", 429, "Too Many Requests: retry after 120", retry_after=120, chat_id=MEMBER
    )
    started = time.monotonic()
    with contextlib.suppress(TelegramRetryAfter):  # the update is logged as failed
        await chat.send(message_update(MEMBER, "/points"))
    assert time.monotonic() - started < 10  # given up at once, not slept for two minutes
    sends = [c for c in chat.fake.calls_of("sendMessage") if str(c.params["chat_id"]) == str(MEMBER)]
    refused = next(i for i, c in enumerate(sends) if c.failed)
    assert not any("points" in c.params["text"].lower() for c in sends[refused + 1:])


async def test_the_senders_own_429_pauses_the_sender_not_retried_behind_it(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop,
    caplog: pytest.LogCaptureFixture,
) -> None:
    member_id = await _member(chat, session, 5252)
    await _push(session, shop, member_id, "flood-reply-1")
    chat.fake.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    with caplog.at_level(logging.WARNING):
        assert await app.sender.deliver_pending() == 1
    said = [(r.name, r.getMessage()) for r in caplog.records]
    assert ("bot.sender", "flood control: pausing 1 s") in said  # every push waits
    assert not any(name == "bot.replies" for name, _ in said)
    assert OUTBOX_SEND.get() is False  # the mark does not outlive the sender's request
