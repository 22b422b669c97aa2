"""The shop's own scheduled news: last month's report to every admin on the 1st, and an alert
the day the month's benefit cost so far crosses the red line (once a month)."""

from __future__ import annotations

from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.analytics import Period, build_report, cost_report
from domain.jobs import AdminNotice, JobReport
from domain.models import JobRun
from domain.shop import Shop
from domain.transaction import write_transaction

ALERTED = "red_line_alert:sent"  # job_runs row: the month an alert last went out for


async def run_monthly_report(
    session_factory: async_sessionmaker[AsyncSession], shop: Shop, today: date, dry_run: bool
) -> JobReport:
    """On the 1st: the month before, for every admin."""
    period = Period.month_of(today, back=1)
    async with session_factory() as session:
        report = await build_report(session, shop, period)
        await session.commit()
    job = JobReport("monthly_report", today.strftime("%Y-%m"), dry_run)
    job.notices.append(AdminNotice("monthly_report", report, job.occasion))
    return job


async def run_red_line_alert(
    session_factory: async_sessionmaker[AsyncSession], shop: Shop, today: date, dry_run: bool
) -> JobReport:
    """Daily: the month so far against the red line; the first day it is over, an alert, and
    none again that month."""
    month = today.strftime("%Y-%m")
    job = JobReport("red_line_alert", today.isoformat(), dry_run)
    async with session_factory() as session:
        sent = await session.get(JobRun, ALERTED)
        if sent is not None and sent.occasion == month:
            await session.commit()
            return job
        # The cost figures only: the full report's member pass is for the monthly report.
        report = await cost_report(session, shop, Period(today.replace(day=1), today))
        await session.commit()
        if not report.cost.over:
            return job
        job.notices.append(AdminNotice("red_line_alert", report, month))
        if dry_run:
            return job
        async with write_transaction(session):
            row = await session.get(JobRun, ALERTED, with_for_update=True)
            if row is not None and row.occasion == month:  # a racing run sent it
                job.notices.clear()
                return job
            if row is None:
                row = JobRun(name=ALERTED, occasion=month, started_at=shop.now(), result="")
                session.add(row)
            row.occasion, row.started_at, row.finished_at = month, shop.now(), shop.now()
            row.result = f"benefit cost {report.cost.ratio}% of revenue"
    return job
