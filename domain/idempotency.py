"""Idempotent requests, as payment APIs do them: the same id with the same body gives the
first answer again; the same id with another body is refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import InvalidInput, Reason
from domain.shop import Shop

T = TypeVar("T")
ATTEMPTS = 3
# A request id (order, refund, event) as the till API's schema accepts it: ASCII only, so
# one order id is the same everywhere (chat, till, logs) and refundable through every door.
REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}", re.ASCII)
ID_MAX_LENGTH = 64
FINGERPRINT_PURPOSE = "request fingerprint"


def check_request_id(field: str, value: str) -> None:
    """Refuse an id the till API would refuse (InvalidInput naming ``field``)."""
    if not value or len(value) > ID_MAX_LENGTH:
        raise InvalidInput(field, Reason.LENGTH, min_length=1, max_length=ID_MAX_LENGTH)
    if REQUEST_ID.fullmatch(value) is None:
        raise InvalidInput(field, Reason.ID_CHARACTERS, max_length=ID_MAX_LENGTH)


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()


@dataclass(frozen=True)
class Fingerprint:
    """What is kept of a request to tell a replay from another body under the same id: an
    HMAC-SHA256 keyed with the shop's secret, so what was typed (often a phone number) cannot
    be found again by hashing guesses."""

    digest: str  # stored with the request
    unkeyed: str  # how the same request was stored before fingerprints were keyed

    def matches(self, stored: str) -> bool:
        # A retry of a request stored before the keys were introduced is still a replay.
        return hmac.compare_digest(stored, self.digest) or hmac.compare_digest(
            stored, self.unkeyed
        )


def fingerprint(shop: Shop, fields: dict[str, Any]) -> Fingerprint:
    """The keyed fingerprint of a request's fields (any order of keys gives the same)."""
    canonical = _canonical(fields)
    key = shop.secret_for(FINGERPRINT_PURPOSE)
    return Fingerprint(
        digest=hmac.new(key, canonical, hashlib.sha256).hexdigest(),
        unkeyed=hashlib.sha256(canonical).hexdigest(),
    )


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
