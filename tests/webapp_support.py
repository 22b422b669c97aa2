"""What the Mini App's tests share: init data signed as Telegram signs it, an app with the Mini
App on, and members with points."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import App, create_app
from bot.settings import Settings
from domain.clock import FixedClock
from domain.models import Member
from domain.program import Program
from tests.conftest import POS_TOKEN, TEST_TOKEN, Conversation
from tests.fake_telegram import FakeTelegram, message_update

WEBAPP_URL = "https://shop.example/app"


def sign_init_data(
    user_id: int, auth_date: datetime, *, token: str = TEST_TOKEN, first_name: str = "Ann",
    language_code: str = "en",
) -> str:
    """Init data as Telegram hands it to a Mini App: the fields and their HMAC-SHA256 hash
    keyed with HMAC("WebAppData", bot token)."""
    fields = {
        "query_id": "AAE-test",
        "user": json.dumps(
            {"id": user_id, "first_name": first_name, "language_code": language_code},
            separators=(",", ":"),
        ),
        "auth_date": str(int(auth_date.timestamp())),
    }
    check = "\n".join(f"{k}={v}" for k, v in sorted(fields.items()))
    secret = hmac.new(b"WebAppData", token.encode(), hashlib.sha256).digest()
    fields["hash"] = hmac.new(secret, check.encode(), hashlib.sha256).hexdigest()
    return urlencode(fields)


def tma(init_data: str) -> dict[str, str]:
    return {"Authorization": f"tma {init_data}"}


async def start_app(
    settings: Settings, clock: FixedClock, program: Program, fake: FakeTelegram, **extra: Any
) -> App:
    configured = settings.model_copy(
        update={"telegram_api_url": fake.base_url, "webapp_url": WEBAPP_URL, **extra}
    )
    application = create_app(configured, clock=clock, program=program)
    dispatcher = application.dispatcher
    await dispatcher.emit_startup(
        bot=application.bot, dispatcher=dispatcher, **dispatcher.workflow_data
    )
    return application


@pytest.fixture
async def webapp_app(
    settings: Settings, clock: FixedClock, program: Program, fake_telegram: FakeTelegram
) -> AsyncIterator[App]:
    application = await start_app(settings, clock, program, fake_telegram)
    yield application
    await application.close()


@pytest.fixture
def webapp_chat(webapp_app: App, fake_telegram: FakeTelegram) -> Conversation:
    return Conversation(webapp_app, fake_telegram)


@pytest.fixture
async def http(webapp_app: App) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=webapp_app.http)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        yield client


async def join(
    chat: Conversation, session: AsyncSession, user_id: int, *, first_name: str = "Ann",
    language_code: str = "en",
) -> Member:
    await chat.send(message_update(
        user_id, "/start", first_name=first_name, language_code=language_code
    ))
    await session.rollback()
    member = await session.scalar(
        select(Member).where(Member.telegram_id == user_id).execution_options(
            populate_existing=True
        )
    )
    assert member is not None
    session.expunge(member)  # a snapshot: later rollbacks do not expire it
    return member


async def buy(client: httpx.AsyncClient, member_code: str, order_id: str, amount: str) -> None:
    """A purchase at the till, through the till API (points the honest way)."""
    answer = await client.post(
        "/api/v1/orders", json={"order_id": order_id, "member": member_code, "amount": amount},
        headers={"Authorization": f"Bearer {POS_TOKEN}"},
    )
    assert answer.status_code == 201, answer.text
