"""Fixtures for the three layers: domain (injected clock, migrated database), conversations
(the real Bot and Dispatcher against a fake Bot API server) and storage (SQLite by default,
PostgreSQL when TEST_DATABASE_URL is set)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiogram.types import Update
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.app import App, create_app
from bot.db import create_engine, create_session_factory, migrate
from bot.settings import DEFAULT_PROGRAM_FILE, Settings
from domain.clock import FixedClock
from domain.models import Base
from domain.program import Program, load_program
from domain.shop import Shop
from tests.fake_telegram import FakeTelegram

TEST_TOKEN = "123456789:TEST-token-for-the-fake-bot-api"
STAFF_ID = 9001
ADMIN_ID = 9002
POS_TOKEN = "till-secret-token"
POSTGRES_URL = os.environ.get("TEST_DATABASE_URL")


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _postgres_migrated() -> str:
    assert POSTGRES_URL is not None
    migrate(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database for one test."""
    if POSTGRES_URL:
        url = request.getfixturevalue("_postgres_migrated")
        yield url
        return
    template: Path = request.getfixturevalue("_sqlite_template")
    path = tmp_path / "companion.db"
    shutil.copyfile(template, path)
    yield f"sqlite+aiosqlite:///{path}"


async def _truncate(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    await engine.dispose()


@pytest.fixture
async def clean_database(database_url: str) -> AsyncIterator[str]:
    if POSTGRES_URL:
        await _truncate(database_url)
    yield database_url


@pytest.fixture
def clock() -> FixedClock:
    # 10:00 in Shanghai on a Tuesday that is neither a member day nor the 1st.
    return FixedClock(datetime(2026, 3, 10, 2, 0, tzinfo=UTC))


@pytest.fixture(scope="session")
def program() -> Program:
    return load_program(DEFAULT_PROGRAM_FILE)


@pytest.fixture
def settings(clean_database: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        bot_token=TEST_TOKEN,
        database_url=clean_database,
        timezone="Asia/Shanghai",
        staff_ids=frozenset({STAFF_ID}),
        admin_ids=frozenset({ADMIN_ID}),
        pos_api_token=POS_TOKEN,
        api_port=0,
    )


@pytest.fixture
def shop(program: Program, clock: FixedClock, settings: Settings) -> Shop:
    return Shop(program=program, clock=clock, tz=settings.tz, phone_region="CN")


@pytest.fixture
async def session_factory(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings.database_url)
    yield create_session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def session(
    session_factory: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    async with session_factory() as session:
        yield session


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


class Conversation:
    """Sends updates through the real Dispatcher; the Bot's calls land in the fake server."""

    def __init__(self, app: App, fake: FakeTelegram) -> None:
        self.app = app
        self.fake = fake

    async def send(self, update: dict[str, Any]) -> None:
        parsed = Update.model_validate(update, context={"bot": self.app.bot})
        await self.app.dispatcher.feed_update(self.app.bot, parsed)


@pytest.fixture
async def app(
    settings: Settings, clock: FixedClock, program: Program, fake_telegram: FakeTelegram
) -> AsyncIterator[App]:
    configured = settings.model_copy(update={"telegram_api_url": fake_telegram.base_url})
    application = create_app(configured, clock=clock, program=program)
    dispatcher = application.dispatcher
    await dispatcher.emit_startup(bot=application.bot, dispatcher=dispatcher, **dispatcher.workflow_data)
    fake_telegram.clear()
    yield application
    await application.close()


@pytest.fixture
def chat(app: App, fake_telegram: FakeTelegram) -> Conversation:
    return Conversation(app, fake_telegram)


@pytest.fixture
async def api(app: App) -> AsyncIterator[Any]:
    """An HTTP client for the till API of ``app``, with the till's bearer token."""
    import httpx

    transport = httpx.ASGITransport(app=app.http)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://till.test",
        headers={"Authorization": f"Bearer {POS_TOKEN}"},
    ) as client:
        yield client
