"""`python -m bot` as a newcomer runs it: settings errors, migrations, polling, health, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from bot.http import create_http_app
from tests.conftest import POSTGRES_URL, TEST_TOKEN
from tests.fake_telegram import FakeTelegram, message_update

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"BOT_TOKEN", "DATABASE_URL"}}
    env.update(extra)
    return env


async def _run(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 180)
    return process.returncode or 0, out.decode()


async def test_missing_token_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    code, out = await _run(cwd=tmp_path, env=_env())
    assert code == 2
    assert "BOT_TOKEN is not set" in out and "@BotFather" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("TIMEZONE", "Mars/Olympus", "TIMEZONE is invalid"),
        ("API_PORT", "eighty", "API_PORT is invalid"),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL is invalid"),
        ("STAFF_IDS", "12,abc", "STAFF_IDS is invalid"),
    ],
)
async def test_malformed_setting_names_it(tmp_path: Path, name: str, value: str, expected: str) -> None:
    code, out = await _run(cwd=tmp_path, env=_env(BOT_TOKEN=TEST_TOKEN, **{name: value}))
    assert code == 2
    assert expected in out
    assert "Traceback" not in out


async def test_broken_program_file_names_file_and_field(tmp_path: Path) -> None:
    program = tmp_path / "program.toml"
    source = (ROOT / "bot" / "default_program.toml").read_text(encoding="utf-8")
    program.write_text(source.replace("threshold = 5000", "threshold = -5"), encoding="utf-8")
    code, out = await _run(cwd=tmp_path, env=_env(BOT_TOKEN=TEST_TOKEN, PROGRAM_FILE=str(program)))
    assert code == 2
    assert str(program) in out and "tiers.1.threshold" in out
    assert "Traceback" not in out


async def test_help_lists_commands(tmp_path: Path) -> None:
    code, out = await _run("--help", cwd=tmp_path, env=_env())
    assert code == 0
    assert "migrate" in out and "run" in out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(POSTGRES_URL is not None, reason="runs the default SQLite configuration")
async def test_bot_runs_answers_serves_health_and_stops_cleanly(tmp_path: Path) -> None:
    port = _free_port()
    async with FakeTelegram() as fake:
        env = _env(
            BOT_TOKEN=TEST_TOKEN, TELEGRAM_API_URL=fake.base_url, API_PORT=str(port)
        )
        # Default DATABASE_URL: data/companion.db under the working directory, folder created.
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await fake.wait_for("setMyCommands", timeout=120)  # aiogram imports slowly
            fake.push_update(message_update(31337, "/start", first_name="Newcomer"))
            welcome = await fake.wait_for(
                "sendMessage", lambda c: c.params.get("chat_id") == "31337", timeout=15
            )
            assert "Welcome to the club" in welcome.params["text"]
            async with httpx.AsyncClient() as client:
                for _ in range(50):
                    try:
                        health = await client.get(f"http://127.0.0.1:{port}/healthz")
                        break
                    except httpx.ConnectError:
                        await asyncio.sleep(0.1)
                assert health.status_code == 200
            assert (tmp_path / "data" / "companion.db").exists()
        finally:
            process.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, out.decode()[-2000:]


async def test_health_is_503_when_database_unreachable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    engine = create_async_engine(f"sqlite+aiosqlite:///{blocker / 'x.db'}")
    app = create_http_app(engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/healthz")
    assert response.status_code == 503
    await engine.dispose()
