"""One use case = one transaction, committed once, rolled back on any error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from time import perf_counter
from types import TracebackType
from weakref import WeakKeyDictionary

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

# Read by the engine's "begin" hook: on SQLite such a transaction starts with BEGIN IMMEDIATE,
# taking the write lock up front instead of failing to upgrade a read lock under load.
WRITE_OPTIONS = {"companion_write": True}
# A write transaction of a few short statements (a till order): on SQLite, once the write lock
# is held, they run on the caller's thread instead of each costing a trip to the driver's.
BRIEF_WRITE_OPTIONS = WRITE_OPTIONS | {"companion_brief": True}
# A transaction of exactly one read statement: the engine runs it without BEGIN and COMMIT (a
# lone statement is atomic by itself: SQLite's autocommit mode, PostgreSQL's autocommit),
# saving their round trips.
SINGLE_READ_OPTIONS = {"companion_single_read": True}


# Engines whose writers queue in-process before BEGIN (SQLite: one writer at a time anyway;
# queueing here is first-come first-served instead of SQLite's sleeping busy handler, which
# left the lock idle while waiters slept and made tail latency explode under load).
@dataclass
class GateStats:
    """How long write transactions waited for their turn at a writer gate (for benchmarks and
    diagnostics; counting costs two clock reads per write)."""

    writes: int = 0
    waited: int = 0  # writes that found another writer inside
    wait_seconds: float = 0.0
    longest_wait: float = 0.0


class WriterGate:
    """First-come first-served turn for the writers of one engine, with its waiting time."""

    __slots__ = ("_lock", "stats")

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.stats = GateStats()

    async def __aenter__(self) -> None:
        stats = self.stats
        stats.writes += 1
        if not self._lock.locked():
            await self._lock.acquire()
            return
        started = perf_counter()
        await self._lock.acquire()
        waited = perf_counter() - started
        stats.waited += 1
        stats.wait_seconds += waited
        stats.longest_wait = max(stats.longest_wait, waited)

    async def __aexit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self._lock.release()


_WRITE_GATES: WeakKeyDictionary[Engine, WriterGate] = WeakKeyDictionary()


def queue_writers(engine: AsyncEngine) -> None:
    """Make write transactions on ``engine`` wait their turn in this process."""
    _WRITE_GATES[engine.sync_engine] = WriterGate()


def gate_stats(engine: AsyncEngine) -> GateStats | None:
    """The waiting figures of ``engine``'s writer gate; None when its writers do not queue."""
    gate = _WRITE_GATES.get(engine.sync_engine)
    return gate.stats if gate is not None else None


def _gate(session: AsyncSession) -> AbstractAsyncContextManager[object]:
    bind = session.bind
    engine = bind.sync_engine if isinstance(bind, AsyncEngine) else None
    gate = _WRITE_GATES.get(engine) if engine is not None else None
    return gate if gate is not None else nullcontext()


@asynccontextmanager
async def write_transaction(
    session: AsyncSession, *, brief: bool = False
) -> AsyncIterator[AsyncSession]:
    """A write transaction on ``session``, which must not be inside one already. ``brief``:
    a handful of short statements (never a batch), which SQLite may run without hand-offs."""
    if session.in_transaction():
        # A read the caller made before (e.g. loading the member) is finished first, so the
        # write lock is taken at BEGIN. Nothing is pending: reads only.
        await session.commit()
    async with _gate(session):
        await session.connection(
            execution_options=BRIEF_WRITE_OPTIONS if brief else WRITE_OPTIONS
        )
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


@asynccontextmanager
async def read_transaction(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """Reads that end their transaction at once: no connection or SQLite snapshot is held
    while the caller then waits on the network."""
    try:
        yield session
    finally:
        if session.in_transaction():
            await session.commit()  # nothing pending: ends the read, keeps loaded objects
