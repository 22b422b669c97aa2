"""The audit trail: a line lands with the change it records, or not at all."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from domain.audit import Actor, recent, record
from domain.models import AuditEntry

NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
ADMIN = Actor(telegram_id=900, role="admin")


async def test_a_line_is_kept_with_its_figures(session_factory) -> None:
    async with session_factory() as session, session.begin():
        record(
            session, ADMIN, "catalog.price", NOW, subject="reward:coffee",
            before={"points": 500}, after={"points": 400}, reason="winter menu",
        )
    async with session_factory() as session:
        (line,) = await recent(session)
    assert (line.action, line.subject, line.reason) == ("catalog.price", "reward:coffee", "winter menu")
    assert (line.before, line.after) == ({"points": 500}, {"points": 400})
    assert (line.actor_telegram_id, line.actor_role, line.at) == (900, "admin", NOW)


async def test_a_line_goes_with_a_change_that_is_rolled_back(session_factory) -> None:
    with pytest.raises(RuntimeError):
        async with session_factory() as session, session.begin():
            record(session, ADMIN, "points.adjust", NOW, after={"points": 50})
            raise RuntimeError("the change failed")
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(AuditEntry)) == 0


async def test_recent_pages_back_newest_first(session_factory) -> None:
    async with session_factory() as session, session.begin():
        for n in range(5):
            record(session, ADMIN, "points.adjust", NOW, after={"n": n})
    async with session_factory() as session:
        first = await recent(session, limit=2)
        second = await recent(session, limit=2, older_than=first[-1].id)
    assert [line.after["n"] for line in first + list(second)] == [4, 3, 2, 1]
