"""A worker giving a role up (SIGTERM, a rolling restart) hands it over only when its work
under way is done, so the next holder never does the same work beside it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from bot.app import App, _schedule


async def test_giving_the_scheduler_up_waits_for_the_job_run_under_way(app: App) -> None:
    """Pausing APScheduler stops new runs, not one already writing: the role (and with it the
    next holder's catch-up of the same occasion) must wait until that run has ended."""
    started, ended = asyncio.Event(), asyncio.Event()

    async def monthly_report() -> None:  # a job run that takes a while
        started.set()
        await asyncio.sleep(0.5)
        ended.set()

    app.scheduler.start(paused=True)
    try:
        app.scheduler.add_job(
            monthly_report, "date", id="slow",
            run_date=datetime.now(app.settings.tz) + timedelta(milliseconds=100),
        )
        resign = asyncio.Event()
        holding = asyncio.create_task(_schedule(app, resign))
        async with asyncio.timeout(10):
            await started.wait()
        resign.set()
        await holding
        assert ended.is_set(), "the role was given up while the job was still running"
        assert app.running_jobs.count == 0
    finally:
        app.scheduler.shutdown(wait=False)
