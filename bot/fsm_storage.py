"""aiogram FSM storage in the database (table ``fsm_states``): a conversation in progress (an
admin's half-built campaign, a member's survey comment) survives a restart.

aiogram reads the state of every update. On SQLite, where one process owns the database
file (bot/coordination.py locks it), that is kept free: every row is read once when the bot
starts (the table holds only conversations in progress: a row goes when its conversation ends)
and served from memory afterwards. On PostgreSQL several workers share the conversations (an
admin's next answer may reach another worker), so with ``shared`` every read is one SELECT by
primary key. Every change is written through, in its own short write transaction, before
aiogram goes on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiogram.exceptions import DataNotDictLikeError
from aiogram.fsm.state import State
from aiogram.fsm.storage.base import BaseStorage, DefaultKeyBuilder, StateType, StorageKey
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.clock import Clock, SystemClock
from domain.models import FsmRecord
from domain.sql import insert_unless_exists, table_of
from domain.transaction import write_transaction


class DatabaseStorage(BaseStorage):
    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], clock: Clock | None = None,
        *, shared: bool = False,
    ) -> None:
        self.session_factory = session_factory
        self.shared = shared
        self.clock = clock or SystemClock()
        self.keys = DefaultKeyBuilder(with_bot_id=True, with_destiny=True)
        self._records: dict[str, tuple[str | None, dict[str, Any]]] | None = None

    async def load(self) -> None:
        """Read every conversation in progress (at start-up; nothing to keep when shared)."""
        if self.shared:
            return
        async with self.session_factory() as session:
            query = select(FsmRecord.key, FsmRecord.state, FsmRecord.data)
            rows = (await session.execute(query)).all()
            await session.commit()
        self._records = {key: (state, json.loads(data)) for key, state, data in rows}

    async def _all(self) -> dict[str, tuple[str | None, dict[str, Any]]]:
        if self._records is None:
            await self.load()
        assert self._records is not None
        return self._records

    async def _record(self, key: StorageKey) -> tuple[str | None, dict[str, Any]]:
        """The conversation's state and data: from memory, or from the shared table."""
        name = self.keys.build(key)
        if not self.shared:
            return (await self._all()).get(name, (None, {}))
        async with self.session_factory() as session:
            row = (await session.execute(
                select(FsmRecord.state, FsmRecord.data).where(FsmRecord.key == name)
            )).one_or_none()
            await session.commit()
        return (None, {}) if row is None else (row[0], json.loads(row[1]))

    async def _write(self, key: StorageKey, state: str | None, data: dict[str, Any]) -> None:
        name = self.keys.build(key)
        async with self.session_factory() as session, write_transaction(session):
            if state is None and not data:
                await session.execute(delete(FsmRecord).where(FsmRecord.key == name))
            else:
                values = {"state": state, "data": json.dumps(data, ensure_ascii=False),
                          "updated_at": self.clock.now()}
                changed = await session.execute(
                    update(FsmRecord).where(FsmRecord.key == name).values(**values)
                )
                if not changed.rowcount:  # type: ignore[attr-defined]
                    await session.execute(
                        insert_unless_exists(session, table_of(FsmRecord), "key")
                        .values(key=name, **values)
                    )
        if self.shared:  # nothing kept in memory: every read goes to the table
            return
        records = await self._all()
        if state is None and not data:
            records.pop(name, None)
        else:
            records[name] = (state, data)

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        name = state.state if isinstance(state, State) else state
        _, data = await self._record(key)
        await self._write(key, name, data)

    async def get_state(self, key: StorageKey) -> str | None:
        return (await self._record(key))[0]

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        if not isinstance(data, dict):
            msg = f"Data must be a dict or dict-like object, got {type(data).__name__}"
            raise DataNotDictLikeError(msg)
        state, _ = await self._record(key)
        await self._write(key, state, json.loads(json.dumps(data)))

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        _, data = await self._record(key)
        copied: dict[str, Any] = json.loads(json.dumps(data))
        return copied

    async def close(self) -> None:
        self._records = None
