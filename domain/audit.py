"""The audit trail: every admin and staff action, written with the change it records.

A use case that changes something on a person's behalf calls :func:`record` inside its own
transaction, before it commits: the change and its audit line land together or not at all.
There is no function that edits or deletes a line. What goes in ``before`` and ``after`` is
figures and keys (points, tier, price, stock), never a member's personal data, so erasing a
member leaves nothing personal behind in the audit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import AuditEntry

Role = Literal["admin", "staff"]


@dataclass(frozen=True)
class Actor:
    """The person acting: their Telegram id and the role they act in."""

    telegram_id: int
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    now: datetime,
    *,
    member_id: int | None = None,
    subject: str | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    reason: str = "",
) -> AuditEntry:
    """Add one audit line to the session's transaction (the caller commits with its change)."""
    entry = AuditEntry(
        at=now,
        actor_telegram_id=actor.telegram_id,
        actor_role=actor.role,
        action=action,
        member_id=member_id,
        subject=subject,
        before=_json(before),
        after=_json(after),
        reason=reason,
    )
    session.add(entry)
    return entry


def _json(values: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(values or {}), ensure_ascii=False, sort_keys=True, default=str)


@dataclass(frozen=True)
class AuditLine:
    id: int
    at: datetime
    actor_telegram_id: int
    actor_role: str
    action: str
    member_id: int | None
    subject: str | None
    before: dict[str, Any]
    after: dict[str, Any]
    reason: str


async def recent(
    session: AsyncSession,
    *,
    member_id: int | None = None,
    older_than: int | None = None,
    limit: int = 10,
) -> Sequence[AuditLine]:
    """The newest lines first, for one member or for all; ``older_than`` pages back by id."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if member_id is not None:
        query = query.where(AuditEntry.member_id == member_id)
    if older_than is not None:
        query = query.where(AuditEntry.id < older_than)
    rows = (await session.scalars(query)).all()
    return [
        AuditLine(
            id=row.id,
            at=row.at,
            actor_telegram_id=row.actor_telegram_id,
            actor_role=row.actor_role,
            action=row.action,
            member_id=row.member_id,
            subject=row.subject,
            before=json.loads(row.before),
            after=json.loads(row.after),
            reason=row.reason,
        )
        for row in rows
    ]
