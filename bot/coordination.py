"""Several workers on one database: who schedules, who sends, and SQLite's single process.

PostgreSQL is where workers agree; nothing else is shared between them.

- A *role* (the scheduler, the outbox sender, the long poller) is a session-level advisory lock
  (``pg_try_advisory_lock``) held on a connection of its own, outside the pool. The worker
  holding it does the role's duty; the others try again every ``RETRY_SECONDS``. When the
  holder dies its connection closes and PostgreSQL frees the lock at once (a vanished machine:
  within the TCP keepalive set below, ~25 s), so another worker takes over within
  ``RETRY_SECONDS`` of that. The holder checks its connection as often: when the check fails
  it stops the duty, as the lock may be someone else's by now.
- The outbox signal crosses processes with ``NOTIFY``: a push written by any worker wakes the
  elected sender (the outbox's insert trigger notifies at commit), which ``LISTEN``s on its
  role connection.
- On SQLite a second process on the same file refuses to start (``lock_sqlite_file``), so the
  one process holds every role trivially.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import IO, Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from handlers.outbox_signal import OutboxSignal

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
CHECK_TIMEOUT_SECONDS = 5.0
OUTBOX_CHANNEL = "companion_outbox"
# Two 32-bit keys: the application ("MC") and the role. Other programs on the same database
# choose their own first key.
APPLICATION_KEY = 0x4D43
ROLE_KEYS = {"scheduler": 1, "sender": 2, "poller": 3}
# The server notices a client machine that vanished (no FIN) after about idle + interval*count.
KEEPALIVE = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5",
             "tcp_keepalives_count": "3"}

Duty = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def worker_name() -> str:
    """This worker, as other workers and the log see it: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"[:64]


class DatabaseInUse(Exception):
    """Another process already runs the bot on this SQLite file."""


def lock_sqlite_file(database_url: str) -> IO[str] | None:
    """On SQLite, an exclusive lock on ``<database>.lock`` for as long as the returned file
    stays open (the process's life); None for other databases. Raises ``DatabaseInUse``."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    assert url.database is not None
    path = Path(url.database).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    handle = lock_path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise DatabaseInUse(
            f"{path} is already used by a running bot ({holder}); SQLite serves one process: "
            "stop that one, or use PostgreSQL (DATABASE_URL=postgresql+asyncpg://...) "
            "for several workers"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle


def coordination_engine(database_url: str) -> AsyncEngine | None:
    """Connections for the roles (not pooled, with TCP keepalive), or None on SQLite."""
    if make_url(database_url).get_backend_name() == "sqlite":
        return None
    return create_async_engine(
        database_url, poolclass=NullPool, connect_args={"server_settings": KEEPALIVE}
    )


class Role:
    """A duty exactly one worker does at a time (see the module docstring).

    ``run`` keeps trying to hold the role until ``stopping`` is set; while held it runs
    ``duty(resign)``, which must return soon after ``resign`` is set. ``engine`` None (SQLite)
    means the role is this process's from the start."""

    def __init__(
        self,
        name: str,
        engine: AsyncEngine | None,
        *,
        retry_seconds: float = RETRY_SECONDS,
        on_connection: Callable[[AsyncConnection], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.key = ROLE_KEYS[name]
        self.engine = engine
        self.retry_seconds = retry_seconds
        self.on_connection = on_connection
        self.held = False

    async def run(self, duty: Duty, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            connection = await self._acquire()
            if connection is None and self.engine is not None:
                await _wait(stopping, self.retry_seconds)
                continue
            self.held = True
            log.info("this worker holds the %s", self.name)
            try:
                await self._serve(duty, stopping, connection)
            finally:
                self.held = False
                await self._release(connection)
            log.info("this worker no longer holds the %s", self.name)
            if not stopping.is_set():
                await _wait(stopping, self.retry_seconds)

    async def _serve(
        self, duty: Duty, stopping: asyncio.Event, connection: AsyncConnection | None
    ) -> None:
        resign = asyncio.Event()
        working = asyncio.create_task(duty(resign), name=self.name)
        try:
            while not stopping.is_set() and not working.done():
                await _wait(stopping, self.retry_seconds, working)
                if (
                    connection is not None and not stopping.is_set() and not working.done()
                    and not await self._still_connected(connection)
                ):
                    log.warning("%s: lost the database connection, resigning", self.name)
                    break
        finally:
            resign.set()
            try:
                await working
            except Exception:
                log.exception("%s stopped with an error", self.name)

    async def _acquire(self) -> AsyncConnection | None:
        if self.engine is None:
            return None
        connection: AsyncConnection | None = None
        try:
            connection = await self.engine.connect()
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            got = await connection.scalar(
                text("SELECT pg_try_advisory_lock(:app, :role)"),
                {"app": APPLICATION_KEY, "role": self.key},
            )
            if got:
                if self.on_connection is not None:
                    await self.on_connection(connection)
                return connection
        except Exception:  # the database is away: try again later
            log.warning("%s: cannot reach the database to take the role", self.name,
                        exc_info=True)
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
        return None

    async def _still_connected(self, connection: AsyncConnection) -> bool:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                await connection.scalar(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def _release(self, connection: AsyncConnection | None) -> None:
        if connection is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                await connection.scalar(
                    text("SELECT pg_advisory_unlock(:app, :role)"),
                    {"app": APPLICATION_KEY, "role": self.key},
                )
        with contextlib.suppress(Exception):
            await connection.invalidate()  # closes it: the session (and any lock) ends


async def _wait(
    stopping: asyncio.Event, seconds: float, also: asyncio.Task[Any] | None = None
) -> None:
    waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(stopping.wait())}
    if also is not None:
        waiters.add(also)
    _, pending = await asyncio.wait(waiters, timeout=seconds, return_when="FIRST_COMPLETED")
    for waiter in pending:
        if waiter is not also:
            waiter.cancel()


class SharedOutboxSignal(OutboxSignal):
    """Wakes this process's sender; on PostgreSQL the elected sender in any worker also wakes
    on ``NOTIFY companion_outbox``, which the outbox's insert trigger (migration 0012) sends
    when the writing transaction commits: no statement of its own, folded per transaction."""

    async def listen(self, connection: AsyncConnection) -> None:
        """Wake the local sender on every notification to the role's connection."""
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.add_listener(OUTBOX_CHANNEL, lambda *_: OutboxSignal.wake(self))


async def migrate_alone(database_url: str) -> None:
    """Apply pending migrations while holding an advisory lock on PostgreSQL, so workers
    started together migrate one after another (the later ones find nothing to do)."""
    from bot.db import migrate

    engine = coordination_engine(database_url)
    if engine is None:
        await asyncio.to_thread(migrate, database_url)
        return
    try:
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            keys = {"app": APPLICATION_KEY, "role": 0}
            await connection.scalar(text("SELECT pg_advisory_lock(:app, :role)"), keys)
            try:
                await asyncio.to_thread(migrate, database_url)
            finally:
                await connection.scalar(text("SELECT pg_advisory_unlock(:app, :role)"), keys)
    finally:
        await engine.dispose()
