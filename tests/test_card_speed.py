"""The member card's path stays lean: one read per card, filters on the event loop, connections
kept, one upload per member even when two first cards arrive together (issue 12)."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from datetime import timedelta
from typing import Any

import pytest
import segno
from aiogram import Router
from aiogram.dispatcher.event.handler import CallableObject
from aiogram.filters import Command
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import App
from domain.clock import FixedClock
from domain.growth import BEHAVIOUR, PURCHASE, add_growth
from domain.models import Member
from domain.transaction import write_transaction
from handlers import build_router
from handlers.media import QR_MASK, qr_png
from tests.conftest import POSTGRES_URL, Conversation
from tests.fake_telegram import message_update

USER = 4242


async def _member(session: AsyncSession, telegram_id: int = USER) -> Member:
    await session.rollback()
    member = await session.scalar(
        select(Member).where(Member.telegram_id == telegram_id)
        .execution_options(populate_existing=True)
    )
    assert member is not None
    return member


def _statements(app: App) -> list[str]:
    """Every statement the app sends to the database from now on (BEGIN included on SQLite)."""
    seen: list[str] = []

    @event.listens_for(app.engine.sync_engine, "before_cursor_execute")
    def _seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    return seen


def _callables(router: Router) -> list[tuple[str, CallableObject]]:
    found: list[tuple[str, CallableObject]] = []
    for name, observer in router.observers.items():
        found += [(f"{router.name} {name} filter", f) for f in observer._handler.filters or ()]
        for handler in observer.handlers:
            found.append((f"{router.name} {name} handler {handler.callback}", handler))
            found += [(f"{router.name} {name} {handler.callback}", f) for f in handler.filters or ()]
    for child in router.sub_routers:
        found += _callables(child)
    return found


def test_no_filter_or_handler_runs_in_a_worker_thread() -> None:
    """aiogram runs a plain (non-async) filter or handler in a thread: a hop per check, on
    every update that reaches it. Magic filters go through handlers.filters.Matches."""
    in_threads = [name for name, c in _callables(build_router()) if not c.awaitable]
    assert in_threads == []


STAFF_AND_ADMIN_COMMANDS = {
    "stats", "export", "member", "callbacks", "catalog", "audit", "campaign", "campaigns",
    "sale", "refund", "freeze", "unfreeze",
}


async def test_a_members_card_skips_the_staff_routers_handlers(
    chat: Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Routers whose handlers all need a command or a conversation state are passed with one
    check (handlers.filters.gate_routers); staff commands and answers still reach them (their
    own tests)."""
    await chat.send(message_update(USER, "/start", first_name="Lin"))
    checked: list[str] = []
    original = Command.__call__

    async def counted(self: Command, message: Any, *args: Any, **kwargs: Any) -> Any:
        checked.extend(str(c) for c in self.commands)
        return await original(self, message, *args, **kwargs)

    monkeypatch.setattr(Command, "__call__", counted)
    await chat.send(message_update(USER, "/card"))
    await chat.send(message_update(USER, "💳 My card"))
    assert len(chat.fake.calls_of("sendPhoto")) == 2
    assert STAFF_AND_ADMIN_COMMANDS.isdisjoint(checked)


async def test_a_card_shown_again_is_one_read_with_the_right_growth(
    chat: Conversation, app: App, session: AsyncSession, clock: FixedClock
) -> None:
    await chat.send(message_update(USER, "/start", first_name="Lin"))
    member = await _member(session)
    now = clock.now()
    async with write_transaction(session):
        entries = [  # purchase and behaviour in the window, a purchase before it
            (PURCHASE, 3_000, now - timedelta(days=30)),
            (BEHAVIOUR, 2_000, now - timedelta(days=3)),
            (PURCHASE, 9_000, now - timedelta(days=400)),
        ]
        for number, (source, amount, at) in enumerate(entries):
            await add_growth(
                session, member.id, kind="test", source=source, amount=amount,
                reason="test", key=f"test:{number}", occurred_at=at,
            )
    await chat.send(message_update(USER, "/card"))  # the first card: uploads, stores file_id

    statements = _statements(app)
    await chat.send(message_update(USER, "/card"))
    again = chat.fake.calls_of("sendPhoto")[-1]
    assert again.params["photo"] == (await _member(session)).card_file_id
    # 3,000 purchase; behaviour counts for at most 30% of the total: 3,000 * 30 / 70 = 1,285
    assert "Growth (12 months): 4,285" in again.params["caption"]
    # No BEGIN, no second read. On PostgreSQL (several workers) the conversation state is
    # shared through the database: one more read, by primary key, of fsm_states.
    assert statements == (["SELECT", "SELECT"] if POSTGRES_URL else ["SELECT"])


async def test_two_first_cards_at_once_upload_one_image(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "/start", first_name="Lin"))
    await asyncio.gather(
        chat.send(message_update(USER, "/card", message_id=2)),
        chat.send(message_update(USER, "💳 My card", message_id=3)),
    )
    photos = [call.params["photo"] for call in chat.fake.calls_of("sendPhoto")]
    uploads = [p for p in photos if isinstance(p, dict)]
    assert len(photos) == 2 and len(uploads) == 1
    member = await _member(session)
    assert member.card_file_id is not None
    assert [p for p in photos if not isinstance(p, dict)] == [member.card_file_id]


async def test_first_cards_of_many_members_are_all_remembered(
    chat: Conversation, session: AsyncSession
) -> None:
    users = [USER + n for n in range(12)]
    for user in users:
        await chat.send(message_update(user, "/start", first_name="Lin"))
    await asyncio.gather(*(chat.send(message_update(u, "/card", message_id=2)) for u in users))
    await asyncio.gather(*(chat.send(message_update(u, "/card", message_id=3)) for u in users))
    photos = [call.params["photo"] for call in chat.fake.calls_of("sendPhoto")]
    assert len(photos) == 24
    assert sum(isinstance(p, dict) for p in photos) == 12  # the second round: by file_id
    for user in users:
        assert (await _member(session, user)).card_file_id in photos


async def test_concurrent_updates_keep_their_database_connections(
    chat: Conversation, app: App
) -> None:
    users = [USER + n for n in range(18)]  # more than SQLite keeps: they queue
    for user in users:
        await chat.send(message_update(user, "/start", first_name="Lin"))
    opened: list[object] = []
    event.listen(app.engine.sync_engine, "connect", lambda *_: opened.append(1))
    for round_no in range(3):
        await asyncio.gather(
            *(chat.send(message_update(u, "/card", message_id=10 + round_no)) for u in users)
        )
        if round_no == 0:
            first_round = len(opened)
    assert len(opened) == first_round  # later rounds open no new connection


def _pixels(png: bytes) -> tuple[bytes, bytes]:
    """A PNG's header and its decompressed image rows (scanlines with their filter bytes)."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    chunks: dict[bytes, bytes] = {}
    at = 8
    while at < len(png):
        (length,) = struct.unpack(">I", png[at:at + 4])
        name, data = png[at + 4:at + 8], png[at + 8:at + 8 + length]
        assert struct.unpack(">I", png[at + 8 + length:at + 12 + length])[0] == zlib.crc32(
            name + data
        )
        chunks[name] = chunks.get(name, b"") + data
        at += 12 + length
    return chunks[b"IHDR"], zlib.decompress(chunks[b"IDAT"])


@pytest.mark.parametrize("scale", [1, 5, 12])
def test_the_card_qr_is_pixel_for_pixel_segnos_image(scale: int) -> None:
    """The QR code is written a row at a time (issue 12): the member sees the very image
    segno draws, for member codes and spend codes of every length."""
    for data in ("7Q4M-2XK9", "ABCDEFGH", "https://t.me/shop_bot?start=ref-7Q4M2XK9", "0" * 70):
        drawn = io.BytesIO()
        segno.make(data, error="m", micro=False, mask=QR_MASK).save(
            drawn, kind="png", scale=scale, border=4
        )
        assert _pixels(qr_png(data, scale=scale)) == _pixels(drawn.getvalue())
