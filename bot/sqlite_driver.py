"""SQLite through aiosqlite with one trip to the connection's thread per statement.

aiosqlite runs each call on the connection's own thread, and SQLAlchemy's adapter makes four
calls per query: open a cursor, execute, fetch the rows, close the cursor. Every trip is a hand-
off to that thread and back (a queue put, a wake-up of the event loop through its self-pipe,
and the awaiting task resumed through every middleware and router above it): measured, the
trips were most of a member card's cost outside aiogram. Here a statement is run whole in one
call: execute, read its rows (up to ``CHUNK_ROWS``; a longer result fetches the rest when
asked, as a streamed one does) and close the cursor, and what SQLAlchemy reads afterwards
(``description``, ``rowcount``, ``lastrowid``, the rows) is served from what that call
returned. Same connection, same order of statements, same transactions: only fewer trips.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import aiosqlite

CHUNK_ROWS = 1_000  # rows read in the statement's own trip; a longer result reads on demand

T = TypeVar("T")
_Outcome = tuple[Any, int, Any, list[Any], sqlite3.Cursor | None]


def _run(
    connection: sqlite3.Connection, sql: str, parameters: Any, many: bool
) -> _Outcome:
    """On the connection's thread: the statement, its first rows, and the cursor if more
    rows remain (else it is closed here)."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchmany(CHUNK_ROWS) if cursor.description else []
    except BaseException:
        cursor.close()
        raise
    more = cursor.description is not None and len(rows) == CHUNK_ROWS
    outcome = (cursor.description, cursor.rowcount, cursor.lastrowid, rows)
    if not more:
        cursor.close()
        return (*outcome, None)
    return (*outcome, cursor)


class OneTripCursor:
    """The part of aiosqlite's cursor SQLAlchemy's adapter uses, one trip per statement."""

    arraysize = 1

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: Any = None
        self._rows: list[Any] = []
        self._open: sqlite3.Cursor | None = None  # a result longer than CHUNK_ROWS

    async def __aenter__(self) -> OneTripCursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _trip(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on the connection's thread."""
        result: T = await self._connection._execute(function, *args)  # type: ignore[no-untyped-call]
        return result

    async def _statement(self, sql: str, parameters: Any, many: bool) -> None:
        await self.close()  # a cursor used again: the last result is done with
        conn = self._connection._conn  # raises when closed, as aiosqlite does
        outcome = await self._trip(_run, conn, sql, parameters, many)
        self.description, self.rowcount, self.lastrowid, self._rows, self._open = outcome

    async def execute(self, sql: str, parameters: Any = ()) -> OneTripCursor:
        await self._statement(sql, parameters, False)
        return self

    async def executemany(self, sql: str, parameters: Sequence[Any]) -> OneTripCursor:
        await self._statement(sql, parameters, True)
        return self

    async def _more(self, size: int | None) -> None:
        """Read on from a long result (one trip) until ``size`` rows are at hand, or all."""
        cursor = self._open
        if cursor is None:
            return
        wanted = None if size is None else size - len(self._rows)
        if wanted is not None and wanted <= 0:
            return
        rows: list[Any] = await (
            self._trip(cursor.fetchall) if wanted is None else self._trip(cursor.fetchmany, wanted)
        )
        self._rows.extend(rows)
        if wanted is None or len(rows) < wanted:
            await self.close()

    async def fetchall(self) -> list[Any]:
        await self._more(None)
        rows, self._rows = self._rows, []
        return rows

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        size = self.arraysize if size is None else size
        await self._more(size)
        rows, self._rows = self._rows[:size], self._rows[size:]
        return rows

    async def fetchone(self) -> Any:
        rows = await self.fetchmany(1)
        return rows[0] if rows else None

    async def close(self) -> None:
        cursor, self._open = self._open, None
        if cursor is not None:
            await self._trip(cursor.close)


class OneTripConnection(aiosqlite.Connection):
    """aiosqlite's connection whose cursors run a statement in one trip."""

    def cursor(self) -> OneTripCursor:  # type: ignore[override]
        return OneTripCursor(self)


def connect(database: str, *, iter_chunk_size: int = 64, **kwargs: Any) -> OneTripConnection:
    """``aiosqlite.connect`` for SQLAlchemy's ``async_creator_fn`` (same arguments)."""

    def connector() -> sqlite3.Connection:
        connection: sqlite3.Connection = sqlite3.connect(database, **kwargs)
        return connection

    connection = OneTripConnection(connector, iter_chunk_size)
    connection._thread.daemon = True  # as SQLAlchemy does for its own
    return connection
