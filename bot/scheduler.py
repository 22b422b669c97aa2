"""The scheduler: the job catalogue on APScheduler 3 (AsyncIOScheduler, the shop's time zone).

Each job runs at most once per occasion (its day, month or year), remembered in job_runs. At
start-up, a job whose latest occasion passed while the bot was down runs once (coalesced), so
nothing is missed and nothing is doubled; in-process misfires are coalesced with a grace time.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
from collections.abc import Awaitable, Callable
from datetime import date, datetime, time, timedelta

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_SUBMITTED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import campaigns
from domain.jobs import AdminNotice, Job, JobReport, last_occasion, record_run
from domain.schedule import JOBS, MEMBER_DAY
from domain.shop import Shop
from handlers.outbox_signal import OutboxSignal

log = logging.getLogger(__name__)
MISFIRE_GRACE_SECONDS = 6 * 3600
# Delivers the notices a job has for admins (bot/admin_notices.py).
Notify = Callable[[list[AdminNotice]], Awaitable[object]]


def job_day(job: Job, shop: Shop) -> int:
    return (shop.program.points.member_day or 18) if job.day == MEMBER_DAY else job.day


def trigger_for(job: Job, shop: Shop) -> CronTrigger:
    if job.every == "day":
        return CronTrigger(hour=job.hour, minute=job.minute, timezone=shop.tz)
    if job.every == "month":
        return CronTrigger(
            day=job_day(job, shop), hour=job.hour, minute=job.minute, timezone=shop.tz
        )
    return CronTrigger(month=1, day=job.day, hour=job.hour, minute=job.minute, timezone=shop.tz)


def _clamped(year: int, month: int, day: int) -> date:
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def latest_due(job: Job, shop: Shop, now: datetime) -> date | None:
    """The local date of the job's most recent scheduled run at or before ``now``."""
    local = now.astimezone(shop.tz)
    at = time(job.hour, job.minute)
    today = local.date()
    if job.every == "day":
        return today if local.time() >= at else today - timedelta(days=1)
    if job.every == "month":
        day = job_day(job, shop)
        this_month = _clamped(today.year, today.month, day)
        if (today, local.time()) >= (this_month, at):
            return this_month
        previous = today.replace(day=1) - timedelta(days=1)
        return _clamped(previous.year, previous.month, day)
    this_year = date(today.year, 1, job.day)
    if (today, local.time()) >= (this_year, at):
        return this_year
    return date(today.year - 1, 1, job.day)


async def run_scheduled(
    name: str,
    session_factory: async_sessionmaker[AsyncSession],
    shop: Shop,
    outbox_signal: OutboxSignal,
    today: date | None = None,
    notify: Notify | None = None,
) -> JobReport | None:
    """Run job ``name`` for its occasion unless that occasion already ran (a plain function:
    what APScheduler calls, and what start-up catch-up calls)."""
    job = JOBS[name]
    day = today or shop.today()
    occasion = job.occasion(day)
    async with session_factory() as session:
        if await last_occasion(session, name) == occasion:
            return None
        await record_run(session, shop, job, occasion, finished=None)
    assert job.run is not None
    report = await job.run(session_factory, shop, day, False)
    # Queued before the run counts as finished: a crash in between runs the job again, and
    # the notices' keys keep the second writing from doubling them.
    if report.notices and notify is not None:
        await notify(report.notices)
    async with session_factory() as session:
        await record_run(session, shop, job, occasion, finished=report)
    log.info("%s", report.summary())
    if report.written:
        outbox_signal.wake()
    return report


async def catch_up(
    session_factory: async_sessionmaker[AsyncSession], shop: Shop, outbox_signal: OutboxSignal,
    notify: Notify | None = None,
) -> list[str]:
    """Run once each job whose latest occasion passed without a run while the bot was down.
    A job never run before starts from now: monthly and yearly jobs wait for their next date
    (a fresh install does not send a year's review on its first day)."""
    ran = []
    for job in JOBS.values():
        due = latest_due(job, shop, shop.now())
        if due is None:
            continue
        async with session_factory() as session:
            previous = await last_occasion(session, job.name)
            if previous is None and job.every != "day":
                occasion = job.occasion(due)
                await record_run(session, shop, job, occasion, finished=None)
                baseline = JobReport(job.name, occasion, dry_run=False)
                await record_run(session, shop, job, occasion, finished=baseline)
                continue
        if previous != job.occasion(due):
            await run_scheduled(
                job.name, session_factory, shop, outbox_signal, today=due, notify=notify
            )
            ran.append(job.name)
    return ran


def schedule_jobs(
    scheduler: AsyncIOScheduler,
    session_factory: async_sessionmaker[AsyncSession],
    shop: Shop,
    outbox_signal: OutboxSignal,
    notify: Notify | None = None,
) -> None:
    for job in JOBS.values():
        scheduler.add_job(
            run_scheduled,
            trigger_for(job, shop),
            args=[job.name, session_factory, shop, outbox_signal, None, notify],
            id=job.name,
            name=job.description,
            misfire_grace_time=MISFIRE_GRACE_SECONDS,
            coalesce=True,
            max_instances=1,
            replace_existing=True,
        )


CAMPAIGN_CHECK_SECONDS = 60


async def start_campaigns(
    session_factory: async_sessionmaker[AsyncSession], shop: Shop, outbox_signal: OutboxSignal,
    *, resume: bool = False,
) -> list[int]:
    """Start the campaigns whose time has come (domain.campaigns.start_due)."""
    async with session_factory() as session:
        started = await campaigns.start_due(session, shop, resume=resume)
    if started:
        log.info("campaigns started: %s", started)
        outbox_signal.wake()
    return started


def schedule_campaigns(
    scheduler: AsyncIOScheduler,
    session_factory: async_sessionmaker[AsyncSession],
    shop: Shop,
    outbox_signal: OutboxSignal,
) -> None:
    """Scheduled campaigns start within a minute of their time."""
    scheduler.add_job(
        start_campaigns, "interval", seconds=CAMPAIGN_CHECK_SECONDS,
        args=[session_factory, shop, outbox_signal], id="campaigns",
        name="start scheduled campaigns", coalesce=True, max_instances=1, replace_existing=True,
    )


class RunningJobs:
    """The scheduler's job runs under way now (counted from APScheduler's events). Pausing the
    scheduler stops new runs, not these: a worker giving the scheduler up waits for them, so
    the next holder never starts the same occasion beside a run that is still writing."""

    def __init__(self, scheduler: AsyncIOScheduler) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()
        scheduler.add_listener(
            self._on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR
        )

    def _on_event(self, event: JobSubmissionEvent | JobExecutionEvent) -> None:
        self.count += 1 if event.code == EVENT_JOB_SUBMITTED else -1
        if self.count > 0:
            self._idle.clear()
        else:
            self.count = 0
            self._idle.set()

    async def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the runs under way to end; False if some still run."""
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            log.warning("%s scheduled job(s) still running after %.0f s", self.count, seconds)
            return False
        return True
