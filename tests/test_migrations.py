"""Storage: the schema is exactly what the migrations build, on SQLite and PostgreSQL, and the
migrations go down and up again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from bot.db import alembic_config, create_engine, migrate
from domain.models import Base
from tests.conftest import POSTGRES_URL


async def _differences(url: str) -> list[object]:
    engine = create_engine(url)
    async with engine.connect() as connection:
        diff = await connection.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )
    await engine.dispose()
    return list(diff)


async def test_models_match_the_migrated_schema(database_url: str) -> None:
    assert await _differences(database_url) == []


async def test_sqlite_pragmas_and_write_lock(database_url: str) -> None:
    if POSTGRES_URL:
        pytest.skip("SQLite pragmas only")
    engine = create_engine(database_url)
    async with engine.connect() as connection:
        assert (await connection.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar() == 1
        assert (await connection.execute(text("PRAGMA busy_timeout"))).scalar() >= 5000
    await engine.dispose()


@pytest.mark.skipif(POSTGRES_URL is not None, reason="down/up on a scratch SQLite file")
async def test_migrations_go_down_and_up(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'updown.db'}"
    await asyncio.to_thread(migrate, url)
    await asyncio.to_thread(command.downgrade, alembic_config(url), "base")
    engine = create_engine(url)
    async with engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    await engine.dispose()
    assert set(tables) <= {"alembic_version"}
    await asyncio.to_thread(migrate, url)
    assert await _differences(url) == []
