"""The one place that picks a dialect's SQL: shared code asks for the construct it needs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, func, literal, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.functions import FunctionElement


def insert_unless_exists(session: AsyncSession, model: Any, *conflict_columns: str) -> Insert:
    """``INSERT ... ON CONFLICT (columns) DO NOTHING`` for the session's database (SQLite and
    PostgreSQL both have it); with ``RETURNING`` it returns no row when the key was taken."""
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    if dialect not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"no INSERT ... ON CONFLICT DO NOTHING for {dialect}")
    statement: Insert = module.insert(model).on_conflict_do_nothing(
        index_elements=list(conflict_columns)
    )
    return statement


def table_of(model: type[Any]) -> Table:
    """A mapped class's table, for Core statements that skip the ORM's unit of work."""
    return cast(Table, model.__table__)


def within_days(
    session: AsyncSession, instant: Any, start: Any, days: int
) -> ColumnElement[bool]:
    """``start <= instant < start + days``, both columns (UTC timestamps): PostgreSQL adds an
    interval, SQLite compares Julian days (its timestamps are text)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        end = start + literal(timedelta(days=days))
        return cast(ColumnElement[bool], (instant >= start) & (instant < end))
    if dialect != "sqlite":
        raise NotImplementedError(f"no day arithmetic for {dialect}")
    return cast(
        ColumnElement[bool],
        (instant >= start) & (func.julianday(instant) < func.julianday(start) + days),
    )


_LOCK_KEY_BITS = 53  # Telegram ids stay below 2^53; the namespace sits above them


async def lock_until_commit(session: AsyncSession, namespace: int, key: int) -> None:
    """Serialise the transactions that take the same ``(namespace, key)`` until each ends:
    PostgreSQL's ``pg_advisory_xact_lock`` (one 64-bit key; the workers' role locks use the
    two-key space, which never meets it). SQLite needs nothing: its write transactions begin
    IMMEDIATE, one at a time."""
    if session.get_bind().dialect.name != "postgresql":
        return
    lock = (namespace << _LOCK_KEY_BITS) | (key % (1 << _LOCK_KEY_BITS))
    await session.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": lock})


class unindexed(FunctionElement[Any]):  # noqa: N801 - reads as a function in a query
    """A column that the query planner must not reach through an index: SQLite's unary ``+``.
    SQLite walks an index whenever the column is compared or grouped, even when the range
    covers nearly every row, and then pays a random table read per row; a plain scan (and a
    sort, for a GROUP BY) is several times faster there. PostgreSQL weighs it itself."""

    inherit_cache = True
    name = "unindexed"

    def __init__(self, column: ColumnElement[Any] | QueryableAttribute[Any]) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(unindexed)
def _unindexed(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + str(compiler.process(element.clauses, **kw))
