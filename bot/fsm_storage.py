"""aiogram FSM storage in the database (table ``fsm_states``): a conversation in progress (an
admin's half-built campaign, a member's survey comment) survives a restart.

aiogram reads the state of every update. To keep that free, every row is read once when the
bot starts (the table holds only conversations in progress: a row goes when its conversation
ends) and served from memory afterwards; every change is written through, in its own short
write transaction, before aiogram goes on. One bot process per database (as for the sender).
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
        self, session_factory: async_sessionmaker[AsyncSession], clock: Clock | None = None
    ) -> None:
        self.session_factory = session_factory
        self.clock = clock or SystemClock()
        self.keys = DefaultKeyBuilder(with_bot_id=True, with_destiny=True)
        self._records: dict[str, tuple[str | None, dict[str, Any]]] | None = None

    async def load(self) -> None:
        """Read every conversation in progress (at start-up)."""
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

    async def _write(self, key: StorageKey, state: str | None, data: dict[str, Any]) -> None:
        records = await self._all()
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
        if state is None and not data:
            records.pop(name, None)
        else:
            records[name] = (state, data)

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        name = state.state if isinstance(state, State) else state
        _, data = (await self._all()).get(self.keys.build(key), (None, {}))
        await self._write(key, name, data)

    async def get_state(self, key: StorageKey) -> str | None:
        return (await self._all()).get(self.keys.build(key), (None, {}))[0]

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        if not isinstance(data, dict):
            msg = f"Data must be a dict or dict-like object, got {type(data).__name__}"
            raise DataNotDictLikeError(msg)
        state, _ = (await self._all()).get(self.keys.build(key), (None, {}))
        await self._write(key, state, json.loads(json.dumps(data)))

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        _, data = (await self._all()).get(self.keys.build(key), (None, {}))
        copied: dict[str, Any] = json.loads(json.dumps(data))
        return copied

    async def close(self) -> None:
        self._records = None
