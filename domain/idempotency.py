"""Idempotent requests, as payment APIs do them: the same id with the same body gives the
first answer again; the same id with another body is refused."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")
ATTEMPTS = 3


def fingerprint(fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def with_retry_on_race(session: AsyncSession, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run a use case; when a concurrent twin committed the same unique key first (PostgreSQL
    reports it as an IntegrityError once the twin commits), run it again: the second run finds
    the stored answer. On SQLite the write lock serialises twins and this never triggers."""
    for remaining in range(ATTEMPTS - 1, -1, -1):
        try:
            return await attempt()
        except IntegrityError:
            if session.in_transaction():
                await session.rollback()
            if remaining == 0:
                raise
    raise AssertionError("unreachable")
