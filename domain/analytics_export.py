"""Rows for the shop's spreadsheets: its members, and the points ledger of a period, read in
keyset pages (``domain.jobs.keyset_batches``: bounded memory on a large shop; no long
snapshot)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.analytics import Period, utc
from domain.jobs import keyset_batches
from domain.models import AuditEntry, LedgerEntry, Member
from domain.shop import Shop

PAGE = 5000


@dataclass(frozen=True)
class MemberRow:
    code: str
    name: str
    language: str
    tier: str
    stage: str
    status: str
    balance: int
    joined: date
    first_purchase: date | None
    last_purchase: date | None
    accepts_offers: bool


@dataclass(frozen=True)
class LedgerRow:
    at: datetime  # local time
    member_code: str
    kind: str
    points: int
    balance_after: int


async def member_rows(
    session: AsyncSession, shop: Shop, period: Period
) -> AsyncIterator[list[MemberRow]]:
    """Members who had joined by the period's last day, oldest first, in pages."""
    _, end = period.bounds(shop)

    def day(instant: datetime | None) -> date | None:
        return shop.local_date(instant) if instant is not None else None

    def row(m: Row[Any]) -> MemberRow:
        return MemberRow(
            code=m.code,
            name=" ".join(p for p in (m.first_name, m.last_name) if p),
            language=m.language, tier=m.tier, stage=m.stage, status=m.status,
            balance=m.points_balance, joined=shop.local_date(m.created_at),
            first_purchase=day(m.first_purchase_at), last_purchase=day(m.last_purchase_at),
            accepts_offers=m.marketing_opt_in,
        )

    query = select(
        Member.id, Member.code, Member.first_name, Member.last_name, Member.language,
        Member.tier, Member.stage, Member.status, Member.points_balance, Member.created_at,
        Member.first_purchase_at, Member.last_purchase_at, Member.marketing_opt_in,
    ).where(Member.created_at < utc(end))
    async for page in keyset_batches(session, query, Member.id, row, size=PAGE):
        yield page


async def ledger_rows(
    session: AsyncSession, shop: Shop, period: Period
) -> AsyncIterator[list[LedgerRow]]:
    """The period's ledger entries in the order they were written, in pages."""
    start, end = period.bounds(shop)

    def row(e: Row[Any]) -> LedgerRow:
        return LedgerRow(
            at=e.created_at.astimezone(shop.tz), member_code=e.code, kind=e.kind,
            points=e.amount, balance_after=e.balance_after,
        )

    query = (
        select(
            LedgerEntry.id, LedgerEntry.created_at, Member.code, LedgerEntry.kind,
            LedgerEntry.amount, LedgerEntry.balance_after,
        )
        .join(Member, Member.id == LedgerEntry.member_id)
        .where(LedgerEntry.created_at >= utc(start), LedgerEntry.created_at < utc(end))
    )
    async for page in keyset_batches(session, query, LedgerEntry.id, row, size=PAGE):
        yield page


@dataclass(frozen=True)
class AuditRow:
    at: datetime  # local time
    role: str
    actor_telegram_id: int
    action: str
    member_code: str | None
    subject: str | None
    before: str  # JSON, as kept
    after: str
    reason: str


async def audit_rows(
    session: AsyncSession, shop: Shop, period: Period
) -> AsyncIterator[list[AuditRow]]:
    """The period's audit lines (every admin and staff action) in the order they were
    written, in pages."""
    start, end = period.bounds(shop)

    def row(a: Row[Any]) -> AuditRow:
        return AuditRow(
            at=a.at.astimezone(shop.tz), role=a.actor_role,
            actor_telegram_id=a.actor_telegram_id, action=a.action, member_code=a.code,
            subject=a.subject, before=a.before, after=a.after, reason=a.reason,
        )

    query = (
        select(
            AuditEntry.id, AuditEntry.at, AuditEntry.actor_role, AuditEntry.actor_telegram_id,
            AuditEntry.action, Member.code, AuditEntry.subject, AuditEntry.before,
            AuditEntry.after, AuditEntry.reason,
        )
        .outerjoin(Member, Member.id == AuditEntry.member_id)
        .where(AuditEntry.at >= utc(start), AuditEntry.at < utc(end))
    )
    async for page in keyset_batches(session, query, AuditEntry.id, row, size=PAGE):
        yield page
