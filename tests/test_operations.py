"""What an operator reads: one log line per update and per till request, no personal data and
no secret in them, and a health check that reveals nothing about the database."""

from __future__ import annotations

import logging

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from bot.app import App
from bot.http import create_http_app
from bot.logs import RedactSecrets, RepeatLimit
from domain.models import Member
from tests.conftest import POS_TOKEN, TEST_TOKEN, Conversation
from tests.fake_telegram import message_update


async def test_one_line_per_update_with_member_id_and_no_personal_data(
    chat: Conversation, session: AsyncSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="companion.updates")
    await chat.send(message_update(5150, "/start", first_name="Xiaohong", username="xh_secret"))
    await chat.send(message_update(5150, "/points", first_name="Xiaohong", username="xh_secret"))
    member_id = await session.scalar(select(Member.id).where(Member.telegram_id == 5150))
    lines = [r.getMessage() for r in caplog.records if r.name == "companion.updates"]
    assert len(lines) == 2, lines
    assert " /start " in lines[0] and " ok " in lines[0]
    assert f"member={member_id} " in lines[1] and " /points " in lines[1]
    assert lines[1].endswith(" ms")
    assert not any("Xiaohong" in line or "xh_secret" in line or "5150" in line for line in lines)


async def test_one_line_per_till_request_with_route_not_raw_path(
    app: App, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="companion.requests")
    response = await api.get("/api/v1/members/+8613800138000")
    assert response.status_code == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "companion.requests"]
    assert len(lines) == 1, lines
    assert lines[0].startswith("GET /api/v1/members/{code_or_phone} member=- 404 ")
    assert "13800138000" not in lines[0]


def test_secrets_are_redacted_from_messages_and_tracebacks() -> None:
    redact = RedactSecrets([TEST_TOKEN, POS_TOKEN])
    try:
        raise RuntimeError(f"GET https://api.telegram.org/bot{TEST_TOKEN}/getMe failed")
    except RuntimeError as exc:
        record = logging.LogRecord(
            "aiohttp", logging.ERROR, __file__, 1, "request to %s failed", (str(exc),),
            (type(exc), exc, exc.__traceback__),
        )
    assert redact.filter(record)
    text = logging.Formatter().format(record)
    assert TEST_TOKEN not in text and "bot<secret>/getMe" in text
    assert "RuntimeError" in text  # the traceback is kept, only the secret is gone


async def test_health_reveals_nothing_about_the_database(tmp_path) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    engine = create_async_engine(f"sqlite+aiosqlite:///{blocker / 'x.db'}")
    transport = httpx.ASGITransport(app=create_http_app(engine))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/healthz")
    await engine.dispose()
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "unavailable"}


def test_a_line_that_repeats_without_end_is_let_through_a_few_times_a_window() -> None:
    limit = RepeatLimit(burst=3, window=60.0)

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, None, None)

    passed = [limit.filter(record("socket.accept() out of system resource")) for _ in range(1000)]
    assert passed.count(True) == 3
    assert limit.filter(record("another line"))  # other lines are not held back
    # The next window lets it through again and says how many were held back.
    key = ("asyncio", "socket.accept() out of system resource")
    started, seen, dropped = limit._seen[key]
    limit._seen[key] = (started - 61, seen, dropped)
    again = record("socket.accept() out of system resource")
    assert limit.filter(again)
    assert again.getMessage().endswith("(and 997 more like it before)")
