"""The daily jobs read only what is due: the lifecycle job finds the members whose stage
changes today by range (domain.lifecycle.stage_is) instead of evaluating everyone, and must
still move exactly the members the rule moves (a missed day caught up, a member back from
dormancy, a never-buyer lapsing) and leave the others, with their stage's date, alone."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import members, points
from domain.clock import FixedClock
from domain.lifecycle import evaluate_stages
from domain.errors import InsufficientPoints
from domain.models import LedgerEntry, Member, PointsLot, Push
from domain.schedule import run_job
from domain.shop import Shop
from domain.transaction import write_transaction
from tests.test_concurrency import _books, race

TODAY = date(2026, 3, 10)
EARLIER = date(2026, 1, 1)


async def _member(
    session: AsyncSession, shop: Shop, telegram_id: int, *, stage: str, bought_days_ago: int | None,
    joined_days_ago: int = 400, marketing: bool = True,
) -> int:
    profile = members.TelegramProfile(telegram_id, f"M{telegram_id}", None, None, "en")
    member_id = (await members.register(session, shop, profile)).member.id
    noon = lambda days: datetime.combine(TODAY - timedelta(days=days), time(12), tzinfo=shop.tz)  # noqa: E731
    bought = noon(bought_days_ago) if bought_days_ago is not None else None
    async with write_transaction(session):
        await session.execute(
            update(Member).where(Member.id == member_id).values(
                created_at=noon(joined_days_ago), last_purchase_at=bought, first_purchase_at=bought,
                stage=stage, stage_since=EARLIER, marketing_opt_in=marketing,
            )
        )
    return member_id


async def _stages(session: AsyncSession) -> dict[int, tuple[str, date | None]]:
    await session.rollback()
    rows = (await session.execute(select(Member.telegram_id, Member.stage, Member.stage_since))).all()
    return {int(t): (s, since) for t, s, since in rows}


async def test_only_members_whose_stage_changes_today_are_moved_and_dated(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
    clock: FixedClock,
) -> None:
    clock.set(datetime.combine(TODAY, time(11), tzinfo=shop.tz))
    # Due today: crossed 60 days today; 62 days while still active (missed runs caught up);
    # never bought and joined 60 days ago; dormant who bought again yesterday; dormant for
    # 90 days now; new who bought (the stage job has not seen the purchase yet).
    await _member(session, shop, 1, stage="active", bought_days_ago=60)
    await _member(session, shop, 2, stage="active", bought_days_ago=62)
    await _member(session, shop, 3, stage="new", bought_days_ago=None, joined_days_ago=60)
    await _member(session, shop, 4, stage="dormant", bought_days_ago=1)
    await _member(session, shop, 5, stage="dormant", bought_days_ago=90)
    await _member(session, shop, 6, stage="new", bought_days_ago=3, joined_days_ago=10)
    # Not due: each already in the stage its days give.
    await _member(session, shop, 11, stage="active", bought_days_ago=59)
    await _member(session, shop, 12, stage="dormant", bought_days_ago=89)
    await _member(session, shop, 13, stage="churned", bought_days_ago=300)
    await _member(session, shop, 14, stage="new", bought_days_ago=None, joined_days_ago=59)
    await _member(session, shop, 15, stage="churned", bought_days_ago=None, joined_days_ago=500)

    async with session_factory() as dry:
        assert await evaluate_stages(dry, shop, TODAY, dry_run=True) == 6

    report = await run_job(session_factory, shop, "lifecycle", today=TODAY)

    assert report.changed == 6
    stages = await _stages(session)
    assert {t: stages[t] for t in (1, 2, 3, 4, 5, 6)} == {
        1: ("dormant", TODAY), 2: ("dormant", TODAY), 3: ("dormant", TODAY),
        4: ("active", TODAY), 5: ("churned", TODAY), 6: ("active", TODAY),
    }
    assert {t: stages[t] for t in (11, 12, 13, 14, 15)} == {
        11: ("active", EARLIER), 12: ("dormant", EARLIER), 13: ("churned", EARLIER),
        14: ("new", EARLIER), 15: ("churned", EARLIER),
    }
    ids = dict((await session.execute(select(Member.id, Member.telegram_id))).all())
    offers = {(p.kind, ids[p.member_id]) for p in (await session.scalars(select(Push))).all()}
    assert offers == {
        ("dormant_wakeup", 1), ("dormant_wakeup", 2), ("dormant_wakeup", 3),
        ("churned_winback", 5),
    }
    again = await run_job(session_factory, shop, "lifecycle", today=TODAY)
    assert (again.changed, again.written) == (0, 0)


async def test_a_dry_run_finds_the_offers_the_run_would_make(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
    clock: FixedClock,
) -> None:
    clock.set(datetime.combine(TODAY, time(11), tzinfo=shop.tz))
    await _member(session, shop, 1, stage="active", bought_days_ago=61)
    await _member(session, shop, 2, stage="dormant", bought_days_ago=95)
    await _member(session, shop, 3, stage="active", bought_days_ago=70, marketing=False)
    await _member(session, shop, 4, stage="dormant", bought_days_ago=70)  # already dormant

    report = await run_job(session_factory, shop, "lifecycle", today=TODAY, dry_run=True)

    assert report.changed == 3
    assert sorted((p.kind, p.payload["name"]) for p in report.samples) == [
        ("churned_winback", "M2"), ("dormant_wakeup", "M1"),
    ]
    assert (await _stages(session))[1] == ("active", EARLIER)


async def test_expiry_in_batches_while_tills_earn_and_spend_keeps_every_book(
    session_factory: async_sessionmaker[AsyncSession], shop: Shop, clock: FixedClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The expiry reads its due lots once and writes them a batch a transaction; tills that
    earn and spend for the same members meanwhile (really overlapping on PostgreSQL) lose
    nothing: each lot expires what it still holds when its batch runs, and every book holds."""
    clock.set(datetime.combine(TODAY, time(0, 5), tzinfo=shop.tz))
    monkeypatch.setattr(points, "EXPIRY_BATCH", 3)
    ids = []
    for n in range(6):
        async with session_factory() as s:
            member_id = (await members.register(s, shop, members.TelegramProfile(
                7000 + n, f"M{n}", None, None, "en"))).member.id
            async with write_transaction(s):
                for k in range(2):  # two lots that ran out at the end of last year
                    await points.earn(s, shop, member_id, kind="purchase", amount=40 + k,
                                      reason="order", key=f"old:{member_id}:{k}",
                                      earned_on=date(2024, 12, 1))
        ids.append(member_id)

    async def till(i: int) -> None:
        member_id = ids[i % len(ids)]
        async with session_factory() as s:
            for round_ in range(3):
                async with write_transaction(s):
                    if (i + round_) % 2:
                        await points.earn(s, shop, member_id, kind="purchase", amount=7,
                                          reason="order", key=f"till:{i}:{round_}")
                    else:
                        try:
                            await points.spend(s, shop, member_id, kind="offset", amount=30,
                                               reason="order", key=f"spend:{i}:{round_}")
                        except InsufficientPoints:
                            pass

    async def task(i: int) -> object:
        if i == 0:
            return await run_job(session_factory, shop, "expire", today=TODAY)
        return await till(i)

    results = await race(7, task)
    assert not [r for r in results if isinstance(r, BaseException)], results
    for member_id in ids:
        await _books(session_factory, member_id)
    async with session_factory() as s:
        due_left = await s.scalar(
            select(func.count(PointsLot.id)).where(
                PointsLot.expires_on < TODAY, PointsLot.remaining > 0
            )
        )
        expiry_entries = await s.scalar(
            select(func.count(LedgerEntry.id)).where(LedgerEntry.kind == "expiry")
        )
    assert due_left == 0
    again = await run_job(session_factory, shop, "expire", today=TODAY)
    assert again.changed == 0
    async with session_factory() as s:
        assert await s.scalar(
            select(func.count(LedgerEntry.id)).where(LedgerEntry.kind == "expiry")
        ) == expiry_entries
