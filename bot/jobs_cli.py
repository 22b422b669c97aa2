"""`python -m bot jobs list` and `python -m bot jobs run NAME [--dry-run] [--date D]`. A run
shows a progress bar on a terminal (stderr) and stays quiet under cron."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tqdm import tqdm

from bot.db import create_engine, create_session_factory
from bot.scheduler import job_day
from bot.sender import render_push
from bot.settings import Settings
from domain import catalog
from domain.clock import SystemClock
from domain.coupons import COUPON_CODE_LENGTH, last_valid_instant
from domain.jobs import JobReport, PlannedPush, coupon_payload, job_progress, last_occasion
from domain.models import JobRun, Member, Push
from domain.program import Program
from domain.schedule import JOBS, run_job
from domain.shop import Shop
from handlers.texts import load_texts

EXIT_USAGE = 2
PREVIEW_CODE = "X" * COUPON_CODE_LENGTH  # a dry run grants no coupon, so has no code to show
NAME_KEYS = frozenset({"name", "friend"})  # payload fields naming a person


def _when(name: str, shop: Shop) -> str:
    job = JOBS[name]
    at = f"{job.hour:02d}:{job.minute:02d}"
    if job.every == "day":
        return f"daily at {at}"
    if job.every == "month":
        return f"monthly on day {job_day(job, shop)} at {at}"
    return f"yearly on 1 January at {at}"


async def jobs_command(settings: Settings, program: Program, args: argparse.Namespace) -> int:
    shop = Shop(program=program, clock=SystemClock(), tz=settings.tz,
                phone_region=settings.phone_region)
    engine = create_engine(settings.database_url)
    session_factory = create_session_factory(engine)
    try:
        if args.jobs_command == "list":
            async with session_factory() as session:
                for name, job in JOBS.items():
                    row = await session.get(JobRun, name)
                    ran = row is not None and row.finished_at is not None
                    last = f"last ran for {row.occasion}" if ran else "never ran"  # type: ignore[union-attr]
                    print(f"{name:<26} {_when(name, shop):<28} {last:<24} {job.description}")
            return 0
        if args.name not in JOBS:
            print(f"error: no job named {args.name!r}; see `python -m bot jobs list`")
            return EXIT_USAGE
        try:
            day = date.fromisoformat(args.date) if args.date else shop.today()
        except ValueError:
            print(f"error: --date {args.date!r} is not a date like 2026-03-10")
            return EXIT_USAGE
        with _progress_bar(args.name):
            report = await run_job(
                session_factory, shop, args.name, today=day, dry_run=args.dry_run
            )
        print(report.summary())
        await _print_samples(session_factory, shop, report)
        if not args.dry_run:
            async with session_factory() as session:
                print(f"(job_runs: last occasion {await last_occasion(session, args.name)})")
        return 0
    finally:
        await engine.dispose()


@contextmanager
def _progress_bar(name: str) -> Iterator[None]:
    """A bar of the rows the job has handled, out of those it knows are coming (the total
    grows as the job finds them); on a terminal only, gone when the job ends."""
    with tqdm(desc=name, unit=" rows", file=sys.stderr, leave=False,
              disable=not sys.stderr.isatty()) as bar:

        def tell(done: int, known: int) -> None:  # a batch at a time: drawn each time
            if known:
                bar.total = (bar.total or 0) + known
            bar.n += done
            bar.refresh()

        token = job_progress.set(tell)
        try:
            yield
        finally:
            job_progress.reset(token)


async def _print_samples(
    session_factory: async_sessionmaker[AsyncSession], shop: Shop, report: JobReport
) -> None:
    """A few of the job's messages as members read them. A real run shows the pushes it wrote
    (with the coupon codes granted); a dry run a preview of what it would write. Names are
    left out: this output goes to cron logs, so members are named by their code only."""
    texts = load_texts(currency=shop.program.currency)
    async with session_factory() as session:
        for planned in report.samples:
            member = await session.scalar(select(Member).where(Member.id == planned.member_id))
            if member is None:
                continue
            if report.dry_run:
                payload = await _preview(session, shop, planned)
            else:
                written = await session.scalar(select(Push.payload).where(Push.key == planned.key))
                if written is None:
                    continue
                payload = json.loads(written)
            text = render_push(
                texts, shop, _nameless(member), planned.kind, _nameless_payload(payload)
            )
            print(f"\n--- sample to member {member.code} ({member.language}) ---\n{text}")
        if report.dry_run and any(p.coupon_template for p in report.samples):
            print(f"\n(dry run: {PREVIEW_CODE} stands for the coupon codes a real run grants)")


async def _preview(
    session: AsyncSession, shop: Shop, planned: PlannedPush
) -> dict[str, Any]:
    """A dry run grants no coupon: the payload a real run would write now, with a stand-in
    code (domain.jobs._write_batch), from the live catalog's template."""
    payload = dict(planned.payload)
    key = planned.coupon_template
    template = await catalog.coupon_template(session, shop, key) if key else None
    if template is not None:
        until = last_valid_instant(shop, shop.now(), template.valid_days)
        payload["coupon"] = coupon_payload(shop, template, PREVIEW_CODE, until)
    return payload


def _nameless(member: Member) -> Member:
    """A detached copy of the member without names, to render a sample with."""
    return Member(
        code=member.code, language=member.language, tier=member.tier,
        points_balance=member.points_balance, points_debt=member.points_debt,
        status=member.status, marketing_opt_in=member.marketing_opt_in,
        created_at=member.created_at,
    )


def _nameless_payload(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: ("" if k in NAME_KEYS else v) for k, v in payload.items()}
