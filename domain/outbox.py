"""The outbox: pushes are written in the transaction that causes them, delivered later."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import AdminMessage, Push
from domain.shop import Shop
from domain.sql import insert_unless_exists, table_of


async def enqueue(
    session: AsyncSession,
    shop: Shop,
    *,
    member_id: int,
    kind: str,
    key: str,
    payload: dict[str, Any],
    marketing: bool = False,
    not_before: datetime | None = None,
) -> bool:
    """Write a push unless one with the same key exists (one ``INSERT ... ON CONFLICT DO
    NOTHING``, so racing writers of one key never fail). True when written."""
    now = shop.now()
    table = table_of(Push)
    written = await session.scalar(
        insert_unless_exists(session, table, "key")
        .values(
            key=key, member_id=member_id, kind=kind,
            payload=json.dumps(payload, ensure_ascii=False, sort_keys=True),
            marketing=marketing, status="pending", attempts=0,
            not_before=not_before or now, created_at=now,
        )
        .returning(table.c.id)
    )
    return written is not None


async def enqueue_for_admin(
    session: AsyncSession, shop: Shop, *, key: str, chat_id: int, text: str
) -> bool:
    """Write a message for an admin unless one with the same key exists; True when written."""
    now = shop.now()
    table = table_of(AdminMessage)
    written = await session.scalar(
        insert_unless_exists(session, table, "key")
        .values(
            key=key, chat_id=chat_id, body=text, status="pending", attempts=0,
            not_before=now, created_at=now,
        )
        .returning(table.c.id)
    )
    return written is not None
