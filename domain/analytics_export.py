"""Rows for the shop's spreadsheets: its members, and the points ledger of a period, read in
keyset pages (bounded memory on a large shop; no long snapshot)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.analytics import Period, utc
from domain.models import LedgerEntry, Member
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
    last = 0
    while True:
        page = (
            await session.scalars(
                select(Member)
                .where(Member.id > last, Member.created_at < utc(end))
                .order_by(Member.id).limit(PAGE)
            )
        ).all()
        await session.commit()
        if not page:
            return
        last = page[-1].id

        def day(instant: datetime | None) -> date | None:
            return shop.local_date(instant) if instant is not None else None

        yield [
            MemberRow(
                code=m.code,
                name=" ".join(p for p in (m.first_name, m.last_name) if p),
                language=m.language, tier=m.tier, stage=m.stage, status=m.status,
                balance=m.points_balance, joined=shop.local_date(m.created_at),
                first_purchase=day(m.first_purchase_at), last_purchase=day(m.last_purchase_at),
                accepts_offers=m.marketing_opt_in,
            )
            for m in page
        ]


async def ledger_rows(
    session: AsyncSession, shop: Shop, period: Period
) -> AsyncIterator[list[LedgerRow]]:
    """The period's ledger entries in the order they were written, in pages."""
    start, end = period.bounds(shop)
    last = 0
    while True:
        page = (
            await session.execute(
                select(
                    LedgerEntry.id, LedgerEntry.created_at, Member.code, LedgerEntry.kind,
                    LedgerEntry.amount, LedgerEntry.balance_after,
                )
                .join(Member, Member.id == LedgerEntry.member_id)
                .where(
                    LedgerEntry.id > last,
                    LedgerEntry.created_at >= utc(start), LedgerEntry.created_at < utc(end),
                )
                .order_by(LedgerEntry.id).limit(PAGE)
            )
        ).all()
        await session.commit()
        if not page:
            return
        last = page[-1][0]
        yield [
            LedgerRow(
                at=created.astimezone(shop.tz), member_code=code, kind=kind, points=amount,
                balance_after=after,
            )
            for _, created, code, kind, amount, after in page
        ]
