"""Webhook mode and the single-process rule of SQLite, as an operator runs `python -m bot`."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiogram import Bot
from aiogram.types import Update
from fastapi import FastAPI

from bot.webhook import WebhookReceiver
from tests.conftest import POSTGRES_URL, TEST_TOKEN
from tests.fake_telegram import FakeTelegram, message_update
from tests.test_process import PYTHON, _env, _free_port, _read_until, _run

SECRET = "shop-webhook-secret_42"
pytestmark = pytest.mark.skipif(
    POSTGRES_URL is not None, reason="runs the default SQLite configuration"
)


async def _health(port: int) -> dict[str, object]:
    async with httpx.AsyncClient() as client:
        for _ in range(100):
            try:
                answer = await client.get(f"http://127.0.0.1:{port}/healthz")
                return dict(answer.json())
            except httpx.ConnectError:
                await asyncio.sleep(0.1)
    raise AssertionError("no /healthz")


async def test_webhook_mode_checks_the_secret_and_answers(tmp_path: Path) -> None:
    port = _free_port()
    async with FakeTelegram() as fake:
        env = _env(
            BOT_TOKEN=TEST_TOKEN, TELEGRAM_API_URL=fake.base_url, API_PORT=str(port),
            WEBHOOK_URL="https://shop.example/tg/hook", WEBHOOK_SECRET=SECRET,
        )
        process = await asyncio.create_subprocess_exec(
            PYTHON, "-m", "bot", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            registered = await fake.wait_for("setWebhook", timeout=120)
            assert registered.params["url"] == "https://shop.example/tg/hook"
            assert registered.params["secret_token"] == SECRET
            allowed = registered.params["allowed_updates"]
            assert "message" in allowed and "callback_query" in allowed
            assert not fake.calls_of("getUpdates")  # no long polling beside the webhook
            fake.webhook_targets = [f"http://127.0.0.1:{port}/tg/hook"]
            health = await _health(port)
            # One process on SQLite: it is the scheduler and the sender.
            assert health["scheduler"] is True and health["sender"] is True

            impostor = await fake.deliver(
                message_update(5151, "/start", first_name="Mallory"), secret="guess"
            )
            unsigned = await fake.deliver(
                message_update(5151, "/start", first_name="Mallory"), secret=""
            )
            assert (impostor, unsigned) == (401, 401)
            assert await fake.deliver(message_update(6262, "/start", first_name="Ann")) == 200
            welcome = await fake.wait_for(
                "sendMessage", lambda c: c.params.get("chat_id") == "6262", timeout=15
            )
            assert "Welcome to the club" in welcome.params["text"]
            await asyncio.sleep(0.5)
            assert not [c for c in fake.calls if c.params.get("chat_id") == "5151"]
        finally:
            process.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, out.decode()[-2000:]
        # Stopping one worker leaves the webhook for the others.
        assert fake.webhook is not None

        env = _env(BOT_TOKEN=TEST_TOKEN, TELEGRAM_API_URL=fake.base_url)
        code, info = await _run("webhook", "info", cwd=tmp_path, env=env)
        assert code == 0, info
        assert "url: https://shop.example/tg/hook" in info and "message" in info
        code, deleted = await _run("webhook", "delete", cwd=tmp_path, env=env)
        assert code == 0 and "webhook deleted" in deleted
        assert fake.webhook is None
        code, info = await _run("webhook", "info", cwd=tmp_path, env=env)
        assert "url: (none: long polling)" in info


async def test_bad_webhook_settings_name_themselves(tmp_path: Path) -> None:
    code, out = await _run(
        cwd=tmp_path, env=_env(BOT_TOKEN=TEST_TOKEN, WEBHOOK_URL="http://shop.example/hook")
    )
    assert code == 2 and "WEBHOOK_URL is invalid" in out and "Traceback" not in out
    code, out = await _run(cwd=tmp_path, env=_env(
        BOT_TOKEN=TEST_TOKEN, WEBHOOK_URL="https://shop.example/hook", WEBHOOK_SECRET="a b",
    ))
    assert code == 2 and "WEBHOOK_SECRET is invalid" in out


async def test_second_process_on_one_sqlite_file_refuses_with_one_line(tmp_path: Path) -> None:
    async with FakeTelegram() as fake:
        env = _env(BOT_TOKEN=TEST_TOKEN, TELEGRAM_API_URL=fake.base_url,
                   API_PORT=str(_free_port()))
        first = await asyncio.create_subprocess_exec(
            PYTHON, "-m", "bot", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        assert first.stdout is not None
        try:
            await _read_until(first.stdout, "running: HTTP", timeout=120)
            code, out = await _run(
                cwd=tmp_path, env={**env, "API_PORT": str(_free_port())}
            )
            assert code == 3
            lines = out.strip().splitlines()
            assert len(lines) == 1, out
            assert "companion.db is already used by a running bot" in lines[0]
            assert "PostgreSQL" in lines[0]
        finally:
            first.send_signal(signal.SIGTERM)
            await asyncio.wait_for(first.communicate(), 30)
        assert first.returncode == 0
        # Once the first has stopped, the file is free again.
        second = await asyncio.create_subprocess_exec(
            PYTHON, "-m", "bot", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        assert second.stdout is not None
        try:
            await _read_until(second.stdout, "running: HTTP", timeout=120)
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.wait_for(second.communicate(), 30)
        assert second.returncode == 0


class _Dispatcher:
    """Notes the updates fed to it (the receiver's only use of the dispatcher)."""

    def __init__(self) -> None:
        self.handled: list[int] = []

    async def feed_update(self, bot: Bot, update: Update) -> None:
        await asyncio.sleep(0.05)
        self.handled.append(update.update_id)


async def test_an_update_still_arriving_when_the_worker_stops_is_refused_not_dropped() -> None:
    """SIGTERM's drain begins while an update's body is still coming in: the update must be
    answered 503 (Telegram delivers it again, to another worker), not 200 and then handled
    after the drain, when the worker is already closing its bot and database."""
    dispatcher = _Dispatcher()
    receiver = WebhookReceiver(Bot("42:TEST"), dispatcher, SECRET)  # type: ignore[arg-type]
    app = FastAPI()
    receiver.install(app, "/tg/hook")
    body = json.dumps(message_update(7373, "/points"))
    arriving, rest = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield body[:20].encode()
        arriving.set()
        await rest.wait()
        yield body[20:].encode()

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        posting = asyncio.create_task(client.post(
            "/tg/hook", content=slow_body(),
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
        ))
        await arriving.wait()
        draining = asyncio.create_task(receiver.drain(5))
        await asyncio.sleep(0)
        rest.set()
        answer = await posting
        await draining
        handled_by_drain = list(dispatcher.handled)
        await asyncio.sleep(0.2)
    assert answer.status_code == 503
    assert dispatcher.handled == handled_by_drain == []
