"""`python -m bot jobs list` and `python -m bot jobs run NAME [--dry-run] [--date D]`."""

from __future__ import annotations

import argparse
from datetime import date

from sqlalchemy import select

from bot.db import create_engine, create_session_factory
from bot.scheduler import job_day
from bot.sender import render_push
from bot.settings import Settings
from handlers.texts import load_texts
from domain.clock import SystemClock
from domain.jobs import JobReport, PlannedPush, last_occasion
from domain.models import JobRun, Member
from domain.program import Program
from domain.schedule import JOBS, run_job
from domain.shop import Shop

EXIT_USAGE = 2


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
                    last = f"last ran for {row.occasion}" if row and row.finished_at else "never ran"
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
        report = await run_job(session_factory, shop, args.name, today=day, dry_run=args.dry_run)
        print(report.summary())
        await _print_samples(session_factory, shop, report)
        if not args.dry_run:
            async with session_factory() as session:
                print(f"(job_runs: last occasion {await last_occasion(session, args.name)})")
        return 0
    finally:
        await engine.dispose()


async def _print_samples(session_factory, shop: Shop, report: JobReport) -> None:  # type: ignore[no-untyped-def]
    texts = load_texts(currency=shop.program.currency)
    async with session_factory() as session:
        for planned in report.samples:
            member = await session.scalar(select(Member).where(Member.id == planned.member_id))
            if member is None:
                continue
            payload = _with_coupon_preview(shop, planned)
            text = render_push(texts, shop, member, planned.kind, payload)
            print(f"\n--- sample to member {member.code} ({member.language}) ---\n{text}")


def _with_coupon_preview(shop: Shop, planned: PlannedPush) -> dict[str, object]:
    """A dry run grants no coupon: show what the coupon would be."""
    payload = dict(planned.payload)
    template = shop.program.coupon_template(planned.coupon_template or "")
    if template is not None and "coupon" not in payload:
        from domain.money import format_money

        payload["coupon"] = {
            "code": "(new code)", "kind": template.kind, "value": format_money(template.value),
            "min_spend": format_money(template.min_spend), "valid_until": "",
        }
    return payload
