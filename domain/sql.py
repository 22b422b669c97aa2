"""The one place that picks a dialect's SQL: shared code asks for the construct it needs."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert


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
