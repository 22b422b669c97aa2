"""Conversations in the database: kept across a restart, and shared between workers."""

from __future__ import annotations

from aiogram.fsm.storage.base import StorageKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.fsm_storage import DatabaseStorage

KEY = StorageKey(bot_id=1, chat_id=42, user_id=42)


async def test_a_conversation_survives_a_restart(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    first = DatabaseStorage(session_factory)
    await first.load()
    await first.set_state(KEY, "Campaign:message")
    await first.set_data(KEY, {"text": "Hello"})
    restarted = DatabaseStorage(session_factory)
    await restarted.load()
    assert await restarted.get_state(KEY) == "Campaign:message"
    assert await restarted.get_data(KEY) == {"text": "Hello"}


async def test_two_workers_see_each_others_answers_at_once(
    session_factory: async_sessionmaker[AsyncSession],
) -> None:
    one = DatabaseStorage(session_factory, shared=True)
    two = DatabaseStorage(session_factory, shared=True)
    await one.load()
    await two.load()
    assert await two.get_state(KEY) is None
    await one.set_state(KEY, "Campaign:audience")
    await one.update_data(KEY, {"tier": "gold"})
    # The admin's next update reaches the other worker: it sees the step and the draft.
    assert await two.get_state(KEY) == "Campaign:audience"
    assert await two.get_data(KEY) == {"tier": "gold"}
    await two.set_state(KEY, None)
    await two.set_data(KEY, {})
    assert await one.get_state(KEY) is None and await one.get_data(KEY) == {}
