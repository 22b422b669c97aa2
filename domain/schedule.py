"""The catalogue of scheduled jobs: what runs when (local time), as plain functions."""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import analytics_jobs, birthdays, lifecycle, plus, reminders, tier_jobs
from domain.jobs import Job, JobReport, Plan, Runner, apply_plan, report_progress
from domain.models import Coupon, PointsLot
from domain.points import due_lots, expire_lots
from domain.shop import Shop
from domain.transaction import write_transaction


async def run_expiry(
    session_factory: async_sessionmaker[AsyncSession], shop: Shop, today: date, dry_run: bool
) -> JobReport:
    """Daily, just after midnight: points lots and coupons whose last day has passed."""
    report = JobReport("expire", today.isoformat(), dry_run)
    async with session_factory() as session:
        if dry_run:
            lots = await session.scalar(
                select(func.count(PointsLot.id)).where(
                    PointsLot.expires_on < today, PointsLot.remaining > 0
                )
            )
            coupons = await session.scalar(
                select(func.count(Coupon.id)).where(
                    Coupon.status == "active", Coupon.valid_until < shop.now()
                )
            )
            report.changed = int(lots or 0) + int(coupons or 0)
            return report
        # The due lots read once; a batch a transaction: tills never wait behind the whole
        # expiry for the write lock.
        batches = await due_lots(session, on=today)
        await session.commit()
        report_progress(known=sum(len(lot_ids) for lot_ids in batches))
        for lot_ids in batches:
            async with write_transaction(session):
                report.changed += await expire_lots(session, shop, lot_ids, on=today)
            report_progress(done=len(lot_ids))
        async with write_transaction(session):
            result = await session.execute(
                update(Coupon)
                .where(Coupon.status == "active", Coupon.valid_until < shop.now())
                .values(status="expired")
                .execution_options(synchronize_session=False)
            )
            report.changed += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return report


def pushes_job(name: str, plan: Plan, occasion_of: str) -> Runner:
    """A runner that writes what ``plan`` decides, as job ``name``."""

    async def run(
        session_factory: async_sessionmaker[AsyncSession], shop: Shop, today: date, dry_run: bool
    ) -> JobReport:
        occasion = today.isoformat() if occasion_of == "day" else today.strftime("%Y-%m")
        return await apply_plan(
            session_factory, shop, today, plan, JobReport(name, occasion, dry_run)
        )

    return run


MEMBER_DAY = 0  # a monthly job on day 0 runs on the program's member day

JOBS: dict[str, Job] = {
    job.name: job
    for job in (
        Job("expire", "expire points and coupons that ran out", "day", 0, 5, run=run_expiry),
        Job("points_expiry_reminders", "points expiring in 30 and 7 days", "day", 10, 0,
            run=pushes_job("points_expiry_reminders", reminders.points_expiry_reminders, "day")),
        Job("coupon_expiry_reminders", "coupons expiring in 3 days", "day", 10, 5,
            run=pushes_job("coupon_expiry_reminders", reminders.coupon_expiry_reminders, "day")),
        Job("birthdays", "birthday gifts by tier", "day", 9, 30,
            run=pushes_job("birthdays", birthdays.birthday_gifts, "day")),
        Job("lifecycle", "stages; first-order nudge, dormant wake-up, churned win-back",
            "day", 11, 0, run=lifecycle.run_lifecycle),
        Job("downgrade_warnings", "tiers at risk at the next review: gap, date, protection",
            "month", 10, 30, day=1,
            run=pushes_job("downgrade_warnings", tier_jobs.downgrade_warnings, "month")),
        Job("member_day", "member-day reminder to members who accept marketing", "month",
            9, 30, day=MEMBER_DAY,
            run=pushes_job("member_day", tier_jobs.member_day_reminders, "month")),
        Job("annual_review", "tier re-evaluation, each member told the result", "year", 9, 0,
            day=1, run=tier_jobs.run_annual_review),
        Job("postponed_reviews", "re-check downgrades postponed by the protection task",
            "month", 9, 0, day=1, run=tier_jobs.run_postponed_reviews),
        Job("monthly_report", "last month's figures to every admin", "month", 9, 0, day=1,
            run=analytics_jobs.run_monthly_report),
        Job("plus_expiry", "PLUS whose period is over ends, each member told once", "day",
            0, 10, run=plus.run_expiry),
        Job("plus_trial_reminders", "PLUS free trials ending in 3 days", "day", 10, 10,
            run=pushes_job("plus_trial_reminders", plus.trial_reminders, "day")),
        Job("red_line_alert", "admins alerted when the month's benefit cost crosses the red "
            "line (once a month)", "day", 20, 30, run=analytics_jobs.run_red_line_alert),
    )
}


async def run_job(
    session_factory: async_sessionmaker[AsyncSession], shop: Shop, name: str, *,
    today: date | None = None, dry_run: bool = False,
) -> JobReport:
    """Run one job now for ``today`` (the shop's local date by default)."""
    job = JOBS[name]
    assert job.run is not None
    return await job.run(session_factory, shop, today or shop.today(), dry_run)
