"""One use case = one transaction, committed once, rolled back on any error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession

# Read by the engine's "begin" hook: on SQLite such a transaction starts with BEGIN IMMEDIATE,
# taking the write lock up front instead of failing to upgrade a read lock under load.
WRITE_OPTIONS = {"companion_write": True}


@asynccontextmanager
async def write_transaction(session: AsyncSession) -> AsyncIterator[AsyncSession]:
    """A write transaction on ``session``, which must not be inside one already."""
    if session.in_transaction():
        # A read the caller made before (e.g. loading the member) is finished first, so the
        # write lock is taken at BEGIN. Nothing is pending: reads only.
        await session.commit()
    await session.connection(execution_options=WRITE_OPTIONS)
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
