"""aiosqlite with one trip to the connection's thread per statement.

SQLAlchemy's aiosqlite adapter makes up to four trips to the driver's thread for one statement
(open a cursor, execute, fetch the rows, close the cursor), each a queue hand-off and a wake-up
of the event loop, fought for under the GIL. Here one function runs all four in the driver's
thread and hands back the rows: a till order went from ~37 hand-offs to ~11 (issue 12).
Server-side cursors (streaming results) keep the library's own adapter.

A brief write transaction (``domain.transaction.write_transaction(brief=True)``: a till order, a
few short statements) goes further: once BEGIN IMMEDIATE holds the write lock (a trip: it may
wait for another process's writer), its statements run on the caller's thread, where nothing
can make them wait; COMMIT is a trip again (it may checkpoint the WAL). Long statements (the
daily jobs' batches) never run that way: they would hold the event loop. Inside a brief
transaction, go through the ``AsyncSession``: ``AsyncConnection.execute`` insists that the driver
awaited something and refuses a statement that ran inline (``AwaitRequired``).
"""

from __future__ import annotations

import sqlite3
from collections import deque
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_


def _run(
    connection: sqlite3.Connection, operation: str, parameters: Any, many: bool
) -> tuple[Any, list[Any], int, int | None]:
    """In the driver's thread: the whole statement, rows and all."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor that holds the results of its last statement; nothing of it lives in the
    driver's thread between statements, so opening and closing it cost no trip."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return 1

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass

    async def _async_soft_close(self) -> None:
        return None

    def close(self) -> None:
        self._rows.clear()

    def _trip(self, operation: Any, parameters: Any, many: bool) -> None:
        driver: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        adapted: OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        try:
            if adapted.inline:  # the write lock is held: nothing here can wait
                self._description, rows, self._rowcount, self._lastrowid = _run(
                    driver._conn, operation, parameters, many
                )
            else:
                self._description, rows, self._rowcount, self._lastrowid = await_(
                    driver._execute(  # type: ignore[no-untyped-call]
                        _run, driver._conn, operation, parameters, many
                    )
                )
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        self._rows = deque(rows)

    def execute(self, operation: Any, parameters: Any = None) -> None:
        self._trip(operation, parameters, many=False)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> None:
        self._trip(operation, seq_of_parameters, many=True)


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ("inline",)
    _cursor_cls = OneTripCursor  # type: ignore[assignment]

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        # Set by the engine's "begin" hook once a brief write transaction holds the write
        # lock; the transaction's end clears it.
        self.inline = False

    def commit(self) -> None:
        self.inline = False
        super().commit()

    def rollback(self) -> None:
        self.inline = False
        super().rollback()


class OneTripDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The aiosqlite DBAPI adapter whose connections use ``OneTripCursor``."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection)


def one_trip_dbapi() -> OneTripDbapi:
    """The ``module`` to give ``create_async_engine`` for a ``sqlite+aiosqlite`` URL."""
    return OneTripDbapi(aiosqlite, sqlite3)
