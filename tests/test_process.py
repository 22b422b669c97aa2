"""`python -m bot` as a newcomer runs it: settings errors, migrations, polling, health, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
from aiohttp import web
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from bot.http import create_http_app
from tests.conftest import POSTGRES_URL, TEST_TOKEN
from tests.fake_telegram import FakeTelegram, message_update

ROOT = Path(__file__).resolve().parent.parent
# The interpreter whose installed package is under test: CI points this at a fresh venv that
# holds only the built wheel, so these tests prove the wheel starts, not just the checkout.
PYTHON = os.environ.get("COMPANION_PYTHON") or sys.executable


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if k not in {"BOT_TOKEN", "DATABASE_URL", "PYTHONPATH"}
    }
    env.update(extra)
    return env


async def _run(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "bot", *args, cwd=cwd, env=env,
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
            PYTHON, "-m", "bot", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        try:
            # Commands in both languages: English is the default list, Chinese for zh users.
            await fake.wait_for(
                "setMyCommands", lambda c: c.params.get("language_code") == "zh", timeout=120
            )
            registered = {
                c.params.get("language_code"): c.params["commands"]
                for c in fake.calls_of("setMyCommands")
            }
            assert {"card", "checkin", "points"} <= {c["command"] for c in registered[None]}
            assert any(c["description"] == "我的会员卡与二维码" for c in registered["zh"])
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


async def test_missing_templates_refuse_start_with_one_line(tmp_path: Path) -> None:
    # As a wheel without its templates would: the package cannot be imported.
    script = (
        "import sys; sys.modules['companion_templates'] = None; "
        "from bot.__main__ import main; sys.exit(main([]))"
    )
    process = await asyncio.create_subprocess_exec(
        PYTHON, "-c", script, cwd=tmp_path, env=_env(BOT_TOKEN=TEST_TOKEN),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    text = out.decode()
    assert process.returncode == 2, text
    assert "templates" in text and "Traceback" not in text
    assert len(text.strip().splitlines()) == 1


async def test_env_example_copied_as_is_starts(tmp_path: Path) -> None:
    """The README says: copy .env.example to .env and fill in the token. Nothing else."""
    source = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert "\nBOT_TOKEN=\n" in source
    (tmp_path / ".env").write_text(
        source.replace("\nBOT_TOKEN=\n", f"\nBOT_TOKEN={TEST_TOKEN}\n"), encoding="utf-8"
    )
    code, out = await _run("migrate", cwd=tmp_path, env=_env())
    assert code == 0, out
    assert "database is up to date" in out
    assert (tmp_path / "data" / "companion.db").exists()


class _FakeOnPort(FakeTelegram):
    """The fake Bot API on a port chosen in advance, so it can come up after the bot."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.wanted_port = port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.wanted_port).start()
        self._port = self.wanted_port


async def _read_until(stream: asyncio.StreamReader, needle: str, timeout: float) -> str:
    seen = ""

    async def scan() -> str:
        nonlocal seen
        while needle not in seen:
            line = await stream.readline()
            if not line:
                raise AssertionError(f"process ended before {needle!r}:\n{seen[-2000:]}")
            seen += line.decode()
        return seen

    return await asyncio.wait_for(scan(), timeout)


@pytest.mark.skipif(POSTGRES_URL is not None, reason="runs the default SQLite configuration")
async def test_unreachable_telegram_is_retried_with_a_clear_line(tmp_path: Path) -> None:
    telegram_port, api_port = _free_port(), _free_port()
    env = _env(
        BOT_TOKEN=TEST_TOKEN, TELEGRAM_API_URL=f"http://127.0.0.1:{telegram_port}",
        API_PORT=str(api_port),
    )
    process = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "bot", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        seen = await _read_until(process.stdout, "retrying in", timeout=120)
        assert f"Telegram cannot be reached at http://127.0.0.1:{telegram_port}" in seen
        assert "Traceback" not in seen and TEST_TOKEN not in seen
        # Telegram comes back: the bot carries on by itself and answers.
        async with _FakeOnPort(telegram_port) as fake:
            await fake.wait_for("setMyCommands", timeout=60)
            fake.push_update(message_update(4242, "/start", first_name="Patient"))
            welcome = await fake.wait_for(
                "sendMessage", lambda c: c.params.get("chat_id") == "4242", timeout=15
            )
            assert "Welcome" in welcome.params["text"]
            process.send_signal(signal.SIGTERM)
            out, _ = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, out.decode()[-2000:]
    assert TEST_TOKEN not in out.decode()


@pytest.mark.skipif(POSTGRES_URL is not None, reason="runs the default SQLite configuration")
async def test_stopping_while_telegram_is_unreachable_exits_cleanly(tmp_path: Path) -> None:
    env = _env(
        BOT_TOKEN=TEST_TOKEN, TELEGRAM_API_URL=f"http://127.0.0.1:{_free_port()}",
        API_PORT=str(_free_port()),
    )
    process = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "bot", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    await _read_until(process.stdout, "retrying in", timeout=120)
    process.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, out.decode()[-2000:]
    assert "Traceback" not in out.decode()
