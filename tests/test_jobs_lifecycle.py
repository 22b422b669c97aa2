"""Lifecycle stages and their offers, the scheduler's once-per-occasion runs and catch-up,
and the jobs CLI, with the injected clock in the shop's time zone (Asia/Shanghai)."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.scheduler import catch_up, latest_due, run_scheduled
from domain import members
from domain.clock import FixedClock
from domain.models import Coupon, JobRun, Member, Push
from domain.schedule import JOBS, run_job
from domain.shop import Shop
from domain.transaction import write_transaction
from handlers.outbox_signal import OutboxSignal
from tests.conftest import POSTGRES_URL, STAFF_ID, Conversation
from tests.fake_telegram import message_update

TODAY = date(2026, 3, 10)


async def _member_bought(
    session: AsyncSession, shop: Shop, telegram_id: int, *, days_ago: int | None, joined_days_ago: int = 200,
    tier: str = "member",
) -> int:
    """A member who joined ``joined_days_ago`` and last bought ``days_ago`` local days before
    TODAY (None: never), at noon local."""
    profile = members.TelegramProfile(telegram_id, f"M{telegram_id}", None, None, "en")
    member_id = (await members.register(session, shop, profile)).member.id
    noon = lambda days: datetime.combine(TODAY - timedelta(days=days), time(12), tzinfo=shop.tz)  # noqa: E731
    async with write_transaction(session):
        await session.execute(
            update(Member).where(Member.id == member_id).values(
                created_at=noon(joined_days_ago),
                last_purchase_at=noon(days_ago) if days_ago is not None else None,
                first_purchase_at=noon(days_ago) if days_ago is not None else None,
                tier=tier, stage="active" if days_ago is not None else "new",
            )
        )
    return member_id


async def _stages(session: AsyncSession) -> dict[int, str]:
    await session.rollback()
    rows = (await session.execute(select(Member.telegram_id, Member.stage))).all()
    return {int(t): s for t, s in rows}


async def test_stage_thresholds_and_offers_once_per_spell(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
    clock: FixedClock,
) -> None:
    clock.set(datetime.combine(TODAY, time(11), tzinfo=shop.tz))
    for days in (59, 60, 89, 90):
        await _member_bought(session, shop, days, days_ago=days)
    await _member_bought(session, shop, 7, days_ago=None, joined_days_ago=7)  # first-order nudge
    await _member_bought(session, shop, 8, days_ago=None, joined_days_ago=8)
    report = await run_job(session_factory, shop, "lifecycle", today=TODAY)
    stages = await _stages(session)
    assert (stages[59], stages[60], stages[89], stages[90]) == ("active", "dormant", "dormant", "churned")
    assert stages[7] == stages[8] == "new"
    pushes = {(p.kind, p.member_id) for p in (await session.scalars(select(Push))).all()}
    ids = dict((await session.execute(select(Member.telegram_id, Member.id))).all())
    assert pushes == {
        ("dormant_wakeup", ids[60]), ("dormant_wakeup", ids[89]), ("churned_winback", ids[90]),
        ("first_order_nudge", ids[7]),
    }
    coupons = (await session.scalars(select(Coupon).where(Coupon.source != "welcome"))).all()
    assert sorted((c.source, c.value, c.min_spend) for c in coupons) == [
        ("churned_winback", 5000, 20000), ("dormant_wakeup", 2000, 10000), ("dormant_wakeup", 2000, 10000),
    ]
    assert report.written == 4

    again = await run_job(session_factory, shop, "lifecycle", today=TODAY)
    assert again.written == 0 and again.changed == 0
    await session.rollback()
    assert await session.scalar(select(func.count(Push.id))) == 4
    # the next day 59 becomes 60 days (dormant) and 89 becomes 90 (churned): those two only
    clock.advance(days=1)
    later = await run_job(session_factory, shop, "lifecycle", today=TODAY + timedelta(days=1))
    assert later.written == 2
    assert {(p.kind, p.member_id) for p in later.samples} == {
        ("dormant_wakeup", ids[59]), ("churned_winback", ids[89]),
    }


async def test_a_member_who_returns_and_lapses_again_gets_a_new_offer(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop, clock: FixedClock
) -> None:
    member_id = await _member_bought(session, shop, 1, days_ago=60)
    await run_job(session_factory, shop, "lifecycle", today=TODAY)
    async with write_transaction(session):  # comes back and buys today
        await session.execute(
            update(Member).where(Member.id == member_id).values(
                last_purchase_at=datetime.combine(TODAY, time(12), tzinfo=shop.tz)
            )
        )
    await run_job(session_factory, shop, "lifecycle", today=TODAY)
    assert (await _stages(session))[1] == "active"
    lapsed = TODAY + timedelta(days=60)
    await run_job(session_factory, shop, "lifecycle", today=lapsed)
    await session.rollback()
    keys = sorted((await session.scalars(select(Push.key).where(Push.kind == "dormant_wakeup"))).all())
    assert keys == [f"dormant_wakeup:{member_id}:{TODAY}", f"dormant_wakeup:{member_id}:{lapsed}"]


async def test_dry_run_changes_nothing(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop
) -> None:
    await _member_bought(session, shop, 90, days_ago=90)
    report = await run_job(session_factory, shop, "lifecycle", today=TODAY, dry_run=True)
    assert report.changed == 1 and report.members == 1 and report.written == 0
    assert report.samples[0].kind == "churned_winback"
    await session.rollback()
    assert await session.scalar(select(func.count(Push.id))) == 0
    assert (await _stages(session))[90] == "active"


async def test_offers_reach_the_member_in_their_language(
    chat: Conversation, session: AsyncSession, session_factory: async_sessionmaker[AsyncSession],
    shop: Shop, clock: FixedClock,
) -> None:
    await chat.send(message_update(4242, "/start", first_name="丽", language_code="zh"))
    await session.rollback()
    async with write_transaction(session):
        await session.execute(
            update(Member).values(
                last_purchase_at=datetime.combine(TODAY - timedelta(days=60), time(12), tzinfo=shop.tz)
            )
        )
    clock.set(datetime.combine(TODAY, time(11), tzinfo=shop.tz))
    await run_job(chat.app.session_factory, shop, "lifecycle", today=TODAY)
    assert await chat.app.sender.deliver_pending() == 1
    text = chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert "好久不见" in text and "满¥100减¥20券" in text


async def test_callbacks_list_for_staff_only(
    chat: Conversation, session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
    clock: FixedClock,
) -> None:
    clock.set(datetime.combine(TODAY, time(11), tzinfo=shop.tz))
    await _member_bought(session, shop, 501, days_ago=95, tier="gold")
    await _member_bought(session, shop, 502, days_ago=95, tier="silver")
    await _member_bought(session, shop, 503, days_ago=30, tier="black_gold")
    await run_job(session_factory, shop, "lifecycle", today=TODAY)
    await chat.send(message_update(STAFF_ID, "/callbacks"))
    text = chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert "M501" in text and "Gold" in text
    assert "M502" not in text and "M503" not in text
    await chat.send(message_update(4242, "/callbacks"))
    assert "staff only" in chat.fake.calls_of("sendMessage")[-1].params["text"]


def test_latest_due_occasions(shop: Shop) -> None:
    at = lambda d, h: datetime.combine(d, time(h), tzinfo=shop.tz)  # noqa: E731
    daily = JOBS["lifecycle"]  # 11:00
    assert latest_due(daily, shop, at(TODAY, 12)) == TODAY
    assert latest_due(daily, shop, at(TODAY, 10)) == TODAY - timedelta(days=1)
    monthly = JOBS["downgrade_warnings"]  # 1st, 10:30
    assert latest_due(monthly, shop, at(TODAY, 9)) == date(2026, 3, 1)
    assert latest_due(monthly, shop, at(date(2026, 3, 1), 9)) == date(2026, 2, 1)
    member_day = JOBS["member_day"]  # the 18th
    assert latest_due(member_day, shop, at(TODAY, 12)) == date(2026, 2, 18)
    yearly = JOBS["annual_review"]
    assert latest_due(yearly, shop, at(TODAY, 12)) == date(2026, 1, 1)


async def test_missed_job_runs_once_on_start_and_scheduled_run_is_once_per_occasion(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
    clock: FixedClock,
) -> None:
    signal = OutboxSignal()
    await _member_bought(session, shop, 60, days_ago=60)
    clock.set(datetime.combine(TODAY, time(8), tzinfo=shop.tz))
    # First start: daily jobs catch up on yesterday; monthly/yearly only set a baseline.
    first = await catch_up(session_factory, shop, signal)
    assert "lifecycle" in first and "annual_review" not in first
    assert await catch_up(session_factory, shop, signal) == []
    # Down for three days: each daily job runs once when the bot comes back.
    clock.set(datetime.combine(TODAY + timedelta(days=3), time(12), tzinfo=shop.tz))
    back = await catch_up(session_factory, shop, signal)
    assert sorted(back) == sorted(n for n, j in JOBS.items() if j.every == "day")
    await session.rollback()
    row = await session.get(JobRun, "lifecycle")
    assert row is not None and row.occasion == (TODAY + timedelta(days=3)).isoformat()
    # A scheduled fire for an occasion that already ran does nothing.
    assert await run_scheduled("lifecycle", session_factory, shop, signal) is None


@pytest.mark.skipif(POSTGRES_URL is not None, reason="runs the CLI on its own SQLite file")
async def test_cli_list_and_dry_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BOT_TOKEN"}
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"

    async def run(*args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "jobs", *args, env=env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 180)
        return process.returncode or 0, out.decode()

    code, out = await run("list")
    assert code == 0 and "lifecycle" in out and "yearly on 1 January" in out
    code, out = await run("run", "lifecycle", "--dry-run", "--date", "2026-03-10")
    assert code == 0 and "would reach 0 member(s)" in out
    code, out = await run("run", "nope")
    assert code == 2 and "no job named" in out
