"""SQLite statements take one trip to the connection's thread (bot/sqlite_driver.py), and
nothing else changes: every row comes back, long results and streams included, row counts and
new ids are right, errors and rollbacks behave as before (issue 12)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import bindparam, text
from sqlalchemy.exc import IntegrityError

from bot.db import create_engine


@pytest.fixture
async def engine(tmp_path: Path) -> Any:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'trips.db'}")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER UNIQUE)"))
    yield engine
    await engine.dispose()


def _count_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hand-offs to aiosqlite's thread from now on (each one a queued function)."""
    trips: list[str] = []
    original = aiosqlite.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    return trips


async def test_a_read_is_one_trip_to_the_connection_thread(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))  # the pool's connection is open now
        trips = _count_trips(monkeypatch)
        rows = (await connection.execute(text("SELECT 41 + 1, 'x'"))).all()
        during = list(trips)
    assert [tuple(r) for r in rows] == [(42, "x")]
    # aiosqlite's own cursor took four: open the cursor, execute, fetch, close.
    assert during == ["_run"]


async def test_long_results_streams_counts_and_new_ids_are_all_right(engine: Any) -> None:
    total = 2_007  # more rows than any one fetch asks for
    async with engine.begin() as connection:
        inserted = await connection.execute(
            text("INSERT INTO t (n) VALUES (:n)"), [{"n": n} for n in range(total)]
        )
        assert inserted.rowcount == total
        one = await connection.execute(text("INSERT INTO t (n) VALUES (-1)"))
        assert one.lastrowid == total + 1
        changed = await connection.execute(
            text("UPDATE t SET n = n + 1000000 WHERE n < :below").bindparams(
                bindparam("below")
            ),
            {"below": 10},
        )
        assert changed.rowcount == 11  # 0..9 and -1
    async with engine.connect() as connection:
        every = (await connection.execute(text("SELECT n FROM t ORDER BY id"))).scalars().all()
        assert len(every) == total + 1
        assert every[10:13] == [10, 11, 12] and every[-2] == total - 1
        streamed = await connection.stream(text("SELECT n FROM t ORDER BY id"))
        seen = [n async for n in streamed.scalars()]
        assert seen == every
        partial = await connection.stream(text("SELECT n FROM t ORDER BY id"))
        first = await partial.fetchmany(3)
        await partial.close()  # a long result left half read is closed, the connection reused
        assert [r[0] for r in first] == every[:3]
        assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar() == total + 1


async def test_an_error_rolls_back_as_before(engine: Any) -> None:
    async with engine.begin() as connection:
        await connection.execute(text("INSERT INTO t (n) VALUES (1)"))
    with pytest.raises(IntegrityError):
        async with engine.begin() as connection:
            await connection.execute(text("INSERT INTO t (n) VALUES (2)"))
            await connection.execute(text("INSERT INTO t (n) VALUES (1)"))
    async with engine.connect() as connection:
        kept = (await connection.execute(text("SELECT n FROM t ORDER BY n"))).scalars().all()
    assert kept == [1]
