"""Tier jobs: monthly downgrade warnings, the member-day reminder and the 1 January review
(with the protection task and its re-check a month later), run as the scheduler runs them,
on members placed on both sides of each threshold, in Shanghai time."""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import members, orders
from domain.checkin import check_in
from domain.clock import FixedClock
from domain.growth import BEHAVIOUR, PURCHASE, add_growth
from domain.models import Member, Push, TierChange
from domain.schedule import run_job
from domain.shop import Shop
from domain.tier_jobs import run_postponed_reviews
from domain.transaction import write_transaction
from tests.conftest import Conversation

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(*parts: int) -> datetime:
    """An instant given in the shop's local time (Asia/Shanghai, UTC+8)."""
    return datetime(*parts, tzinfo=SHANGHAI)  # type: ignore[misc]


async def _member(
    session: AsyncSession, shop: Shop, telegram_id: int, *, name: str = "Ann",
    language: str = "en", tier: str | None = None, **columns: Any,
) -> int:
    profile = members.TelegramProfile(telegram_id, name, None, None, language)
    member_id = (await members.register(session, shop, profile)).member.id
    values = {**columns, **({"tier": tier} if tier else {})}
    if values:
        async with write_transaction(session):
            await session.execute(update(Member).where(Member.id == member_id).values(**values))
    return member_id


async def _growth(
    session: AsyncSession, member_id: int, amount: int, at: datetime, source: str = PURCHASE
) -> None:
    async with write_transaction(session):
        await add_growth(
            session, member_id, kind=source, source=source, amount=amount, reason="test",
            key=f"test:{member_id}:{at.isoformat()}:{source}:{amount}", occurred_at=at,
        )


async def _buy(
    session: AsyncSession, shop: Shop, member_id: int, order_id: str, amount: int
) -> None:
    code = await session.scalar(select(Member.code).where(Member.id == member_id))
    assert code is not None
    await orders.place_order(
        session, shop, orders.OrderRequest(order_id=order_id, member=code, amount=amount)
    )


async def _pushes(session: AsyncSession, kind: str) -> dict[int, dict[str, Any]]:
    """Pushes of ``kind`` by member id (payload plus key and marketing flag)."""
    await session.rollback()
    rows = (await session.execute(select(Push).where(Push.kind == kind))).scalars().all()
    by_member = {}
    for push in rows:
        assert push.member_id not in by_member, "two pushes of one kind for one member"
        by_member[push.member_id] = {
            **json.loads(push.payload), "_key": push.key, "_marketing": push.marketing,
            "_not_before": push.not_before,
        }
    return by_member


async def _tiers(session: AsyncSession) -> dict[int, str]:
    await session.rollback()
    rows = (await session.execute(select(Member.id, Member.tier))).all()
    return {int(member_id): tier for member_id, tier in rows}


async def _history(session: AsyncSession, reason: str) -> list[tuple[int, str | None, str, int]]:
    await session.rollback()
    rows = await session.execute(
        select(TierChange.member_id, TierChange.from_tier, TierChange.to_tier, TierChange.growth)
        .where(TierChange.reason == reason)
        .order_by(TierChange.member_id)
    )
    return [tuple(row) for row in rows.all()]  # type: ignore[misc]


async def _count(session: AsyncSession, model: Any) -> int:
    await session.rollback()
    return int(await session.scalar(select(func.count()).select_from(model)) or 0)


# --- Downgrade warnings ------------------------------------------------------------------


async def test_downgrade_warning_on_both_sides_of_the_threshold(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
    clock: FixedClock,
) -> None:
    short = await _member(session, shop, 1, tier="silver")
    await _growth(session, short, 4999, local(2026, 6, 1, 12))
    # Kept exactly at the threshold, thanks to growth 30 minutes into the window (local time:
    # still 2025-12-31 in UTC, so a window computed in UTC would miss it).
    kept = await _member(session, shop, 2, tier="silver")
    await _growth(session, kept, 4999, local(2026, 6, 1, 12))
    await _growth(session, kept, 1, local(2026, 1, 1, 0, 30))
    # 6,000 earned, but just before the window: none of it counts at the review.
    aged = await _member(session, shop, 3, tier="silver")
    await _growth(session, aged, 6000, local(2025, 12, 31, 23, 30))
    # 20,000 in all, but behaviour counts for at most 30%: 13,999 + 5,999 = 19,998.
    capped = await _member(session, shop, 4, tier="gold")
    await _growth(session, capped, 13999, local(2026, 3, 1, 12))
    await _growth(session, capped, 6001, local(2026, 4, 1, 12), source=BEHAVIOUR)
    black = await _member(session, shop, 5, tier="black_gold")
    await _growth(session, black, 100, local(2026, 5, 1, 12))
    lowest = await _member(session, shop, 6)  # the lowest tier cannot drop
    frozen = await _member(session, shop, 7, tier="silver", status="frozen")

    clock.set(local(2026, 12, 1, 10, 30))
    dry = await run_job(session_factory, shop, "downgrade_warnings", today=date(2026, 12, 1),
                        dry_run=True)
    assert dry.members == 4 and dry.written == 0
    assert await _count(session, Push) == 0

    report = await run_job(session_factory, shop, "downgrade_warnings", today=date(2026, 12, 1))
    assert report.written == 4
    warned = await _pushes(session, "downgrade_warning")
    assert set(warned) == {short, aged, capped, black}
    assert kept not in warned and lowest not in warned and frozen not in warned
    assert warned[short] | {"_not_before": None} == {
        "name": "Ann", "tier": "silver", "lower_tier": "member", "kept": 4999, "gap": 1,
        "review_on": "2027-01-01", "review_year": 2027, "review_month": 1, "review_day": 1,
        "protection_checkins": 3, "protection_available": True,
        "protection_year": 2026, "protection_month": 12, "protection_this_month": True,
        "_key": f"downgrade_warning:{short}:2026-12", "_marketing": False, "_not_before": None,
    }
    assert (warned[aged]["kept"], warned[aged]["gap"]) == (0, 5000)
    assert (warned[capped]["kept"], warned[capped]["gap"]) == (19998, 2)
    # One step down at most, whatever the growth reaches.
    assert (warned[black]["lower_tier"], warned[black]["gap"]) == ("gold", 49900)

    again = await run_job(session_factory, shop, "downgrade_warnings", today=date(2026, 12, 1))
    assert again.written == 0
    assert await _count(session, Push) == 4


async def test_a_march_warning_points_to_december_for_the_protection_task(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
    clock: FixedClock,
) -> None:
    used = await _member(session, shop, 1, tier="gold")
    async with write_transaction(session):
        session.add(TierChange(member_id=used, from_tier="gold", to_tier="gold",
                               reason="protected", growth=0, created_at=clock.now()))
    fresh = await _member(session, shop, 2, tier="gold")
    clock.set(local(2026, 4, 1, 10, 30))
    await run_job(session_factory, shop, "downgrade_warnings", today=date(2026, 4, 1))
    warned = await _pushes(session, "downgrade_warning")
    assert warned[fresh]["protection_this_month"] is False
    assert (warned[fresh]["protection_year"], warned[fresh]["protection_month"]) == (2026, 12)
    assert warned[fresh]["protection_available"] is True
    assert warned[used]["protection_available"] is False  # used in March: once a year


# --- Member day ----------------------------------------------------------------------------


async def test_member_day_reminder_only_to_members_who_accept_marketing(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
    clock: FixedClock,
) -> None:
    accepts = await _member(session, shop, 1, name="Bo", tier="silver")
    declines = await _member(session, shop, 2, marketing_opt_in=False)
    frozen = await _member(session, shop, 3, status="frozen")

    clock.set(local(2026, 3, 19, 9, 30))  # the day is over: a late run announces nothing
    late = await run_job(session_factory, shop, "member_day", today=date(2026, 3, 18))
    assert late.members == 0

    clock.set(local(2026, 3, 18, 9, 30))
    report = await run_job(session_factory, shop, "member_day", today=date(2026, 3, 18))
    assert report.written == 1
    reminded = await _pushes(session, "member_day")
    assert set(reminded) == {accepts}
    assert declines not in reminded and frozen not in reminded
    assert reminded[accepts] | {"_not_before": None} == {
        "name": "Bo", "tier": "silver", "multiplier": "2", "tier_multiplier": "1.2",
        "today_multiplier": "2.4", "_key": f"member_day:{accepts}:2026-03",
        "_marketing": True, "_not_before": None,
    }
    again = await run_job(session_factory, shop, "member_day", today=date(2026, 3, 18))
    assert again.written == 0 and await _count(session, Push) == 1


# --- The annual review -------------------------------------------------------------------


async def test_annual_review_steps_down_one_tier_and_tells_everyone(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
    clock: FixedClock,
) -> None:
    clock.set(local(2025, 12, 5, 10))
    black = await _member(session, shop, 1, name="Bea")
    await _buy(session, shop, black, "bg", 60_000_00)  # black gold, a year before the window
    clock.set(local(2026, 6, 1, 10))
    gold = await _member(session, shop, 2, name="Gus")
    await _buy(session, shop, gold, "g", 25_000_00)
    plain = await _member(session, shop, 3, name="Mia")
    assert await _tiers(session) == {black: "black_gold", gold: "gold", plain: "member"}
    before_history = await _count(session, TierChange)

    clock.set(local(2027, 1, 1, 8, 0))  # a catch-up run before the end of quiet hours
    dry = await run_job(session_factory, shop, "annual_review", today=date(2027, 1, 1),
                        dry_run=True)
    assert (dry.members, dry.written, dry.changed) == (3, 0, 1)
    assert [s.kind for s in dry.samples] == ["tier_review"] * 3
    assert dry.samples[0].payload["after"] == "gold"
    assert await _tiers(session) == {black: "black_gold", gold: "gold", plain: "member"}
    assert await _count(session, Push) == 2  # the two receipts only
    assert await _count(session, TierChange) == before_history

    report = await run_job(session_factory, shop, "annual_review", today=date(2027, 1, 1))
    assert (report.members, report.written, report.changed) == (3, 3, 1)
    assert await _tiers(session) == {black: "gold", gold: "gold", plain: "member"}
    assert await _history(session, "annual_review") == [(black, "black_gold", "gold", 0)]
    told = await _pushes(session, "tier_review")
    assert set(told) == {black, gold, plain}
    assert {k: told[black][k] for k in ("before", "after", "growth", "changed", "next_tier",
                                        "gap", "_key")} == {
        "before": "black_gold", "after": "gold", "growth": 0, "changed": True,
        "next_tier": "black_gold", "gap": 50000, "_key": f"tier_review:{black}:2027",
    }
    assert (told[gold]["after"], told[gold]["changed"], told[gold]["growth"]) == (
        "gold", False, 25000,
    )
    assert (told[plain]["after"], told[plain]["next_tier"], told[plain]["gap"]) == (
        "member", "silver", 5000,
    )
    assert told[plain]["_not_before"] == local(2027, 1, 1, 9, 0)  # not in quiet hours

    again = await run_job(session_factory, shop, "annual_review", today=date(2027, 1, 1))
    assert (again.members, again.written, again.changed) == (0, 0, 0)
    assert await _tiers(session) == {black: "gold", gold: "gold", plain: "member"}
    assert len(await _pushes(session, "tier_review")) == 3
    assert len(await _history(session, "annual_review")) == 1


async def test_overlapping_annual_reviews_step_down_once(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
    clock: FixedClock,
) -> None:
    ids = [await _member(session, shop, n, tier="black_gold") for n in range(1, 6)]
    clock.set(local(2027, 1, 1, 9, 0))
    reports = await asyncio.gather(
        run_job(session_factory, shop, "annual_review", today=date(2027, 1, 1)),
        run_job(session_factory, shop, "annual_review", today=date(2027, 1, 1)),
    )
    assert sum(r.written for r in reports) == 5 and sum(r.changed for r in reports) == 5
    assert set((await _tiers(session)).values()) == {"gold"}
    assert set(await _pushes(session, "tier_review")) == set(ids)
    assert len(await _history(session, "annual_review")) == 5


async def test_protection_task_postpones_a_due_downgrade_once_a_year(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
    clock: FixedClock,
) -> None:
    three = await _member(session, shop, 1, tier="gold")
    two = await _member(session, shop, 2, tier="gold")
    used = await _member(session, shop, 3, tier="gold")
    last_year = await _member(session, shop, 4, tier="gold")
    async with write_transaction(session):
        for member_id, when in ((used, local(2026, 6, 1, 9)), (last_year, local(2026, 1, 1, 9))):
            session.add(TierChange(member_id=member_id, from_tier="gold", to_tier="gold",
                                   reason="protected", growth=0, created_at=when))
    clock.set(local(2026, 11, 30, 10))  # November does not count
    await check_in(session, shop, two)
    december = {three: (3, 10, 20), two: (10, 20), used: (3, 10, 20), last_year: (3, 10, 20)}
    for day in (3, 10, 20):
        clock.set(local(2026, 12, day, 10))
        for member_id, days in december.items():
            if day in days:
                await check_in(session, shop, member_id)

    clock.set(local(2027, 1, 1, 9, 0))
    report = await run_job(session_factory, shop, "annual_review", today=date(2027, 1, 1))
    assert report.changed == 2
    tiers = await _tiers(session)
    assert (tiers[three], tiers[two], tiers[used], tiers[last_year]) == (
        "gold", "silver", "silver", "gold",
    )
    protected = await _history(session, "protected")
    assert (three, "gold", "gold", 0) in protected and (last_year, "gold", "gold", 0) in protected
    assert len(protected) == 4  # the two set up above, and the two granted now
    told = await _pushes(session, "tier_review")
    assert {k: told[three][k] for k in ("protected", "after", "changed", "recheck_on",
                                        "keep_gap", "checkins")} == {
        "protected": True, "after": "gold", "changed": False, "recheck_on": "2027-02-01",
        "keep_gap": 20000, "checkins": 3,
    }
    assert told[two]["protected"] is False and told[two]["after"] == "silver"

    # The same morning's warnings leave out those just told their re-check date.
    clock.set(local(2027, 1, 1, 10, 30))
    await run_job(session_factory, shop, "downgrade_warnings", today=date(2027, 1, 1))
    assert set(await _pushes(session, "downgrade_warning")) == {two, used}

    # A month later the postponed downgrades are looked at again: growth earned in January
    # keeps the tier; none steps down the member who never was protected.
    clock.set(local(2027, 1, 10, 10))
    await _buy(session, shop, last_year, "jan", 20_000_00)
    clock.set(local(2027, 2, 1, 9, 0))
    dry = await run_postponed_reviews(session_factory, shop, date(2027, 2, 1), True)
    assert (dry.members, dry.changed) == (2, 1)
    recheck = await run_postponed_reviews(session_factory, shop, date(2027, 2, 1), False)
    assert (recheck.members, recheck.written, recheck.changed) == (2, 2, 1)
    tiers = await _tiers(session)
    assert (tiers[three], tiers[two], tiers[used], tiers[last_year]) == (
        "silver", "silver", "silver", "gold",
    )
    assert await _history(session, "postponed_review") == [(three, "gold", "silver", 0)]
    again = await run_postponed_reviews(session_factory, shop, date(2027, 2, 1), False)
    assert (again.members, again.changed) == (0, 0)
    assert (await _tiers(session))[three] == "silver"


# --- What members read -------------------------------------------------------------------


async def test_members_read_the_tier_pushes_in_their_language(
    chat: Conversation, session: AsyncSession,
    session_factory: async_sessionmaker[AsyncSession], shop: Shop, clock: FixedClock,
) -> None:
    lin = await _member(session, shop, 4242, name="林", language="zh-hans", tier="silver")
    ann = await _member(session, shop, 4343, name="Ann", tier="silver")
    for member_id in (lin, ann):
        await _growth(session, member_id, 4999, local(2026, 6, 1, 12))

    def last_text(chat_id: int) -> str:
        calls = chat.fake.calls_of("sendMessage")
        sent = [c for c in calls if c.params["chat_id"] == str(chat_id)]
        return str(sent[-1].params["text"])

    clock.set(local(2026, 12, 1, 10, 30))
    await run_job(session_factory, shop, "downgrade_warnings", today=date(2026, 12, 1))
    assert await chat.app.sender.deliver_pending() == 2
    zh = last_text(4242)
    assert "银卡会员保级提醒" in zh and "2027年1月1日" in zh and "4,999" in zh
    assert "再获得 <b>1</b> 成长值即可保级" in zh and "普通会员" in zh
    assert "本月签到满 3 次" in zh and "推迟一个月" in zh
    en = last_text(4343)
    assert "Keep your Silver tier" in en and "<b>1 January 2027</b>" in en
    assert "Earn <b>1</b> more growth" in en and "you move to Member" in en
    assert "check in 3 times this month" in en and "postpone a downgrade by one month" in en

    clock.set(local(2026, 12, 18, 9, 30))
    await run_job(session_factory, shop, "member_day", today=date(2026, 12, 18))
    assert await chat.app.sender.deliver_pending() == 2
    assert "今天是会员日" in last_text(4242) and "<b>2.4 倍</b>" in last_text(4242)
    assert "member day" in last_text(4343) and "<b>×2.4</b>" in last_text(4343)

    clock.set(local(2027, 1, 1, 9, 30))
    await run_job(session_factory, shop, "annual_review", today=date(2027, 1, 1))
    assert await chat.app.sender.deliver_pending() == 2
    zh = last_text(4242)
    assert "您 2027 年的会员等级：普通会员" in zh and "4,999" in zh and "下调一级" in zh
    assert "再获得 1 成长值即可升级<b>银卡会员</b>" in zh
    en = last_text(4343)
    assert "Your tier for 2027: Member" in en and "<b>4,999</b>" in en
    assert "1 growth to <b>Silver</b>" in en


async def test_protected_member_reads_the_recheck_date(
    chat: Conversation, session: AsyncSession,
    session_factory: async_sessionmaker[AsyncSession], shop: Shop, clock: FixedClock,
) -> None:
    lin = await _member(session, shop, 4242, name="林", language="zh-hans", tier="gold")
    await _growth(session, lin, 15000, local(2026, 3, 1, 12))
    for day in (1, 2, 3):
        clock.set(local(2026, 12, day, 10))
        await check_in(session, shop, lin)
    clock.set(local(2027, 1, 1, 9, 30))
    await run_job(session_factory, shop, "annual_review", today=date(2027, 1, 1))
    await chat.app.sender.deliver_pending()
    text = str(chat.fake.calls_of("sendMessage")[-1].params["text"])
    assert "您保留了金卡会员" in text and "签到满 3 次" in text
    # 15,000 bought plus 3 from the check-ins count in the re-check's window
    assert "2027年2月1日" in text and "再获得 <b>4,997</b> 成长值" in text
