"""On SQLite a till order crosses to the driver's thread twice, not once per step of every
statement (issue 12): the shop's tills wait less, and what they are answered and what the
member keeps stay the same, a refused order leaving nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiosqlite
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import App
from domain.models import LedgerEntry, Member, Order
from tests.conftest import Conversation
from tests.fake_telegram import message_update


@contextmanager
def driver_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The hand-offs to aiosqlite's thread meanwhile (each one a queued function)."""
    trips: list[str] = []
    handoff = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", repr(fn)))
        return await handoff(self, fn, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(aiosqlite.Connection, "_execute", counted)
        yield trips


async def test_an_order_takes_two_trips_to_the_sqlite_thread(
    app: App, api: httpx.AsyncClient, chat: Conversation, session: AsyncSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if app.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's driver thread")
    await chat.send(message_update(6161, "/start", first_name="Mei"))
    code = await session.scalar(select(Member.code).where(Member.telegram_id == 6161))
    assert code is not None
    await api.post("/api/v1/orders", json={"order_id": "T0", "member": code, "amount": "1.00"})
    with driver_trips(monkeypatch) as trips:
        placed = await api.post(
            "/api/v1/orders", json={"order_id": "T1", "member": code, "amount": "120.00"}
        )
        refused = await api.post(
            "/api/v1/orders",
            json={"order_id": "T2", "member": code, "amount": "10.00", "coupon_code": "NOPE"},
        )
    assert placed.status_code == 201, placed.text
    assert placed.json()["points_earned"] == 120 and placed.json()["balance"] == 221
    assert refused.status_code == 404, refused.text
    # BEGIN IMMEDIATE (may wait for the lock) and COMMIT, then BEGIN and ROLLBACK; it was
    # about 37 for the order alone, up to four per statement.
    assert len(trips) <= 4, trips
    await session.rollback()
    assert await session.scalar(
        select(func.sum(LedgerEntry.amount)).join(Member).where(Member.code == code)
    ) == 221
    assert await session.scalar(select(Order.id).where(Order.order_id == "T2")) is None
    # Reads go through the driver's thread again after the writes (a long read never holds
    # the event loop), and answer what was kept.
    with driver_trips(monkeypatch) as trips:
        looked_up = await api.get(f"/api/v1/members/{code}")
    assert looked_up.status_code == 200 and looked_up.json()["balance"] == 221
    assert trips, "the lookup ran on the event loop's thread"
