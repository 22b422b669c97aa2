"""On PostgreSQL a push written by any worker wakes the elected sender in another at once: the
outbox's insert trigger sends NOTIFY when the writing transaction commits, with no statement of
the writer's own."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.coordination import SharedOutboxSignal, coordination_engine
from domain import outbox
from domain.models import Member
from domain.shop import Shop
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="NOTIFY is PostgreSQL's")


async def test_a_push_committed_elsewhere_wakes_the_sender(
    database_url: str, session_factory: async_sessionmaker[AsyncSession], shop: Shop
) -> None:
    async with session_factory() as session, session.begin():
        member = Member(telegram_id=77, code="NOTIFY01", created_at=datetime.now(UTC))
        session.add(member)
    signal = SharedOutboxSignal()
    listener = coordination_engine(database_url)
    assert listener is not None
    try:
        async with listener.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await signal.listen(connection)
            await connection.execute(text("SELECT 1"))
            signal.event.clear()
            statements: list[str] = []
            engine = session_factory.kw["bind"]
            event.listen(
                engine.sync_engine, "before_cursor_execute",
                lambda _c, _cur, statement, *_: statements.append(statement),
            )
            async with session_factory() as session, session.begin():
                await outbox.enqueue(
                    session, shop, member_id=member.id, kind="test", key="notify:1", payload={}
                )
                await asyncio.sleep(0.3)
                assert not signal.event.is_set()  # not before the push is committed
            await asyncio.wait_for(signal.event.wait(), timeout=5)
            assert not any("notify" in s.lower() for s in statements)  # the trigger's doing
    finally:
        await listener.dispose()
