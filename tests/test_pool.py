"""Updates waiting for a database connection get one in the order they asked (bot/pool.py):
under load a newcomer no longer takes the connection an older waiter was woken for, which
left a few /card updates waiting over a second while the median took milliseconds (issue 12).
Timeouts and cancelled waiters lose no connection."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bot.db import create_engine


@pytest.fixture
async def engine(tmp_path: Path) -> Any:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}", pool_size=1,
                           pool_timeout=0.2)
    yield engine
    await engine.dispose()


async def _use(engine: Any, name: str, order: list[str]) -> None:
    async with engine.connect() as connection:
        order.append(name)
        await connection.execute(text("SELECT 1"))


async def test_a_connection_given_back_goes_to_the_update_waiting_longest(engine: Any) -> None:
    order: list[str] = []
    holder = await engine.connect()  # the only connection
    waiting = asyncio.create_task(_use(engine, "waited", order))
    await asyncio.sleep(0.05)
    await holder.close()
    await _use(engine, "came later", order)  # asks before the waiter has run again
    await waiting
    assert order == ["waited", "came later"]


async def test_a_waiter_that_times_out_or_is_cancelled_loses_no_connection(engine: Any) -> None:
    holder = await engine.connect()
    with pytest.raises(PoolTimeout):
        await _use(engine, "timed out", [])
    cancelled = asyncio.create_task(_use(engine, "cancelled", []))
    await asyncio.sleep(0.02)
    await holder.close()  # handed to the waiter, which is cancelled before it runs
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    order: list[str] = []
    await asyncio.wait_for(_use(engine, "after", order), 1)
    assert order == ["after"]


async def test_the_pool_says_nothing_in_the_bot_log_when_disposed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLAlchemy names a pool's logger after its class, so the fair pool logged its dispose
    and recreate at INFO on every stop; the bot's logging quiets it like SQLAlchemy's own."""
    import logging

    from bot.logs import quiet_libraries

    quiet_libraries()
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'quiet.db'}")
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    with caplog.at_level(logging.INFO):  # the bot runs at INFO
        await engine.dispose()
    assert not [r for r in caplog.records if r.name.startswith("bot.pool")]
