"""The outbox: pushes are written in the transaction that causes them, delivered later."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import Push
from domain.shop import Shop


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
    """Write a push unless one with the same key exists. True when written."""
    if await session.scalar(select(Push.id).where(Push.key == key)) is not None:
        return False
    now = shop.now()
    session.add(
        Push(
            key=key, member_id=member_id, kind=kind,
            payload=json.dumps(payload, ensure_ascii=False, sort_keys=True),
            marketing=marketing, status="pending", attempts=0,
            not_before=not_before or now, created_at=now,
        )
    )
    await session.flush()
    return True
