"""The till API keeps its contract: schemathesis runs every check and every phase (examples,
coverage, fuzzing and the stateful phase that follows the schema's links) against the real
app over HTTP, with a registered member to reach the ledger."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import App
from bot.http import EmbeddedServer, server_config
from domain.models import Member
from tests.conftest import POS_TOKEN, Conversation
from tests.fake_telegram import message_update

ROOT = Path(__file__).resolve().parent.parent
ST = shutil.which("st", path=str(Path(sys.executable).parent))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(ST is None, reason="schemathesis is in the test extras")
async def test_schemathesis_finds_nothing(
    app: App, chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(8080, "/start", first_name="Contract"))
    code = await session.scalar(select(Member.code).where(Member.telegram_id == 8080))
    assert code is not None
    port = _free_port()
    server = EmbeddedServer(server_config(app.http, "127.0.0.1", port))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        env = {**os.environ, "CONTRACT_MEMBER": code, "PYTHONPATH": str(ROOT)}
        process = await asyncio.create_subprocess_exec(
            str(ST), "--config-file", str(ROOT / "tests" / "schemathesis.toml"), "--no-color",
            "run", f"http://127.0.0.1:{port}/api/v1/openapi.json",
            "--header", f"Authorization: Bearer {POS_TOKEN}",
            "--max-examples", "40", "--workers", "1", "--seed", "20261201",
            cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 600)
    finally:
        server.should_exit = True
        await serving
    report = out.decode()
    assert process.returncode == 0, report[-6000:]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in report, report[-3000:]
    await session.rollback()
    orders = await session.scalar(select(Member.points_balance).where(Member.code == code))
    assert orders is not None and orders > 100  # generated orders reached the ledger
