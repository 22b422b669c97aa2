"""Engine, sessions and migrations. The schema exists only through Alembic migrations."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from bot.pool import FairAsyncQueuePool
from bot.sqlite_driver import OneTripConnection, one_trip_dbapi
from domain.transaction import (
    BRIEF_WRITE_OPTIONS,
    SINGLE_READ_OPTIONS,
    WRITE_OPTIONS,
    queue_writers,
)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 15_000
# Connections are kept, not opened per update: on SQLite a new one costs a driver thread and
# four PRAGMAs, and the default pool (5 kept + 10 opened and closed on demand) opened one every
# few updates under load. SQLite keeps the same 15 in all, all open: more readers than WAL's
# eight read marks make readers sleep in SQLite's busy handler while a writer commits
# (measured: p99 of /card rose from ~0.4 s to ~3 s with 50 connections). A PostgreSQL server
# serves concurrent readers well: 20 kept, up to 50 under a burst.
SQLITE_POOL = {"pool_size": 15, "max_overflow": 0}
SERVER_POOL = {"pool_size": 20, "max_overflow": 30}


def _prepare_sqlite_path(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; on SQLite with WAL, a busy timeout, foreign keys and write locks up
    front."""
    is_sqlite = make_url(url).get_backend_name() == "sqlite"
    if is_sqlite:
        _prepare_sqlite_path(url)
        # Not bound to the driver's thread: a brief write runs its statements inline.
        kwargs.setdefault(
            "connect_args",
            {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        if make_url(url).get_driver_name() == "aiosqlite":
            kwargs.setdefault("module", one_trip_dbapi())  # one driver trip per statement
    if make_url(url).database not in (None, "", ":memory:"):
        for setting, value in (SQLITE_POOL if is_sqlite else SERVER_POOL).items():
            kwargs.setdefault(setting, value)
        kwargs.setdefault("poolclass", FairAsyncQueuePool)  # waiting updates served in order
    engine = create_async_engine(url, **kwargs)
    _configure_single_reads(engine)
    if is_sqlite:
        _configure_sqlite(engine)
        queue_writers(engine)
    return engine


def _configure_single_reads(engine: AsyncEngine) -> None:
    """A transaction marked ``SINGLE_READ_OPTIONS`` runs in autocommit: no BEGIN, no
    COMMIT. (On SQLite the "begin" hook below leaves BEGIN out instead.)"""
    single_key = next(iter(SINGLE_READ_OPTIONS))
    if engine.dialect.name == "sqlite":
        return

    @event.listens_for(engine.sync_engine, "set_connection_execution_options")
    def _autocommit(_connection: Connection, options: dict[str, Any]) -> None:
        if options.get(single_key):
            options["isolation_level"] = "AUTOCOMMIT"


def _configure_sqlite(engine: AsyncEngine) -> None:
    _skip_idle_ends(engine)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when a transaction begins.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    write_key = next(iter(WRITE_OPTIONS))
    brief_key = next(iter(BRIEF_WRITE_OPTIONS.keys() - WRITE_OPTIONS.keys()))
    single_key = next(iter(SINGLE_READ_OPTIONS))

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        options = connection.get_execution_options()
        dbapi_connection = connection.connection.dbapi_connection
        one_trip = dbapi_connection if isinstance(dbapi_connection, OneTripConnection) else None
        if one_trip is not None:  # never inherited: SQLite may have ended the last one itself
            one_trip.inline = False
        if options.get(single_key):
            return  # one statement: atomic by itself in SQLite's autocommit mode
        mode = "IMMEDIATE" if options.get(write_key) else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")
        if one_trip is not None and options.get(brief_key):  # the write lock is held
            one_trip.inline = True  # so the rest runs on this thread


def _skip_idle_ends(engine: AsyncEngine) -> None:
    """COMMIT or ROLLBACK with no transaction open does nothing in SQLite, yet through aiosqlite
    each costs a trip to the connection's thread: the pool's rollback of every returned
    connection, the COMMIT of a lone read. Skip them when SQLite says no transaction is open."""
    dialect = engine.sync_engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def in_transaction(dbapi_connection: Any) -> bool:
        try:
            return bool(dbapi_connection.driver_connection.in_transaction)
        except Exception:  # a closed connection: let the driver decide, as without this
            return True

    def commit_if_open(dbapi_connection: Any) -> None:
        if in_transaction(dbapi_connection):
            commit(dbapi_connection)

    def rollback_if_open(dbapi_connection: Any) -> None:
        if in_transaction(dbapi_connection):
            rollback(dbapi_connection)

    dialect.do_commit = commit_if_open  # type: ignore[method-assign]
    dialect.do_rollback = rollback_if_open  # type: ignore[method-assign]


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(database_url: str, revision: str = "head") -> None:
    """Apply pending migrations (blocking; call outside a running event loop or in a thread)."""
    if make_url(database_url).get_backend_name() == "sqlite":
        _prepare_sqlite_path(database_url)
    command.upgrade(alembic_config(database_url), revision)


async def migrate_async(database_url: str, revision: str = "head") -> None:
    await asyncio.to_thread(migrate, database_url, revision)
