"""Scheduled jobs as plain functions, and how they run: in batches, once per occasion.

Most jobs decide pushes (often with a coupon each): such a job is a *plan* that yields batches
of ``PlannedPush`` from set-based queries, and ``apply_plan`` writes each batch (coupons and
outbox rows) in one transaction, skipping keys already written, so running a job twice, or
two overlapping runs, creates nothing new. A dry run walks the same plan and writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal, TypeVar

from sqlalchemy import Row, Select, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from domain import catalog
from domain.coupons import COUPON_DATA_LENGTH, last_valid_instant
from domain.idempotency import with_retry_on_race
from domain.member_code import new_code
from domain.models import Coupon, JobRun, Push
from domain.program import CouponTemplate
from domain.shop import Shop
from domain.sql import table_of
from domain.transaction import write_transaction

BATCH = 2000

# How far a running job has come, for a command line's progress bar (bot/jobs_cli.py):
# called with the rows just handled and the rows newly known to be coming. Unset (nothing
# to tell) when the scheduler runs the jobs.
JobProgress = Callable[[int, int], object]
job_progress: ContextVar[JobProgress | None] = ContextVar("job_progress", default=None)


def report_progress(*, done: int = 0, known: int = 0) -> None:
    tell = job_progress.get()
    if tell is not None:
        tell(done, known)
QUIET_START = time(21, 0)
QUIET_END = time(9, 0)


@dataclass(frozen=True)
class PlannedPush:
    member_id: int
    kind: str
    key: str
    payload: dict[str, Any]
    marketing: bool = False
    coupon_template: str | None = None  # a coupon from the program's templates, granted with it


@dataclass(frozen=True)
class AdminNotice:
    """A message for every admin (who may not be a member, so it is not a push): the
    template under stats/, what it shows, and the occasion it is for. The bot queues it in
    the admins' outbox before the job's run is recorded, once per admin and occasion."""

    template: str  # "monthly_report" | "red_line_alert"
    report: Any  # domain.analytics.Report
    occasion: str  # e.g. the month: one message per admin and occasion


@dataclass
class JobReport:
    name: str
    occasion: str
    dry_run: bool
    members: int = 0  # members reached (pushes planned or written)
    written: int = 0  # pushes written now (0 in a dry run)
    changed: int = 0  # other rows changed (stages, expired lots, coupons, tiers)
    samples: list[PlannedPush] = field(default_factory=list)
    notices: list[AdminNotice] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would reach" if self.dry_run else "reached"
        notices = f"; {len(self.notices)} notice(s) for admins" if self.notices else ""
        return (
            f"{self.name} [{self.occasion}]: {verb} {self.members} member(s); "
            f"{self.written} push(es) written; {self.changed} other change(s){notices}"
        )


Plan = Callable[[AsyncSession, Shop, date], AsyncIterator[list[PlannedPush]]]
Runner = Callable[
    [async_sessionmaker[AsyncSession], Shop, date, bool], Awaitable[JobReport]
]


@dataclass(frozen=True)
class Job:
    name: str
    description: str
    every: Literal["day", "month", "year"]
    hour: int = 9
    minute: int = 0
    day: int = 1  # day of month (monthly) or of January (yearly)
    run: Runner | None = None

    def occasion(self, today: date) -> str:
        if self.every == "day":
            return today.isoformat()
        if self.every == "month":
            return today.strftime("%Y-%m")
        return str(today.year)


T = TypeVar("T")


async def keyset_batches(
    session: AsyncSession,
    query: Select[*tuple[Any, ...]],
    key: InstrumentedAttribute[int],
    build: Callable[[Row[Any]], T],
    *,
    size: int | None = None,
) -> AsyncIterator[list[T]]:
    """Walk ``query`` in pages of ``size`` rows (default ``domain.jobs.BATCH``) ordered by
    ``key`` (an integer id, the first column of each row), ending the read between pages:
    bounded memory, no long snapshot."""
    size = size or BATCH
    last = 0
    while True:
        rows = (await session.execute(query.where(key > last).order_by(key).limit(size))).all()
        await session.commit()
        if not rows:
            return
        last = rows[-1][0]
        yield [build(row) for row in rows]


async def due_batches(
    session: AsyncSession,
    query: Select[*tuple[Any, ...]],
    key: InstrumentedAttribute[int],
    build: Callable[[Row[Any]], T],
    *,
    size: int | None = None,
) -> AsyncIterator[list[T]]:
    """Like ``keyset_batches``, for a job's few rows due today out of a large table: the due
    keys first, in one read that the query's own filter drives through its index, then pages
    of ``size`` rows read by key, the filter applied again (a row no longer due is left out).
    Memory holds the due keys and one page.

    Not ``ORDER BY key LIMIT n`` over the filter: on SQLite that walks the whole table in key
    order looking for the few rows due, every page."""
    size = size or BATCH
    found = (await session.execute(query.with_only_columns(key))).scalars().all()
    await session.commit()
    keys = sorted({int(k) for k in found})
    report_progress(known=len(keys))
    for start in range(0, len(keys), size):
        page = keys[start:start + size]
        rows = (await session.execute(query.where(key.in_(page)).order_by(key))).all()
        await session.commit()
        if rows:
            yield [build(row) for row in rows]


def next_morning(shop: Shop, instant: datetime) -> datetime:
    """The instant itself, or the end of quiet hours (09:00 local) when it falls inside them."""
    local = instant.astimezone(shop.tz)
    if QUIET_END <= local.time() < QUIET_START:
        return instant
    day = local.date() if local.time() < QUIET_END else local.date() + timedelta(days=1)
    return datetime.combine(day, QUIET_END, tzinfo=shop.tz)


async def apply_plan(
    session_factory: async_sessionmaker[AsyncSession],
    shop: Shop,
    today: date,
    plan: Plan,
    report: JobReport,
    *,
    samples: int = 3,
) -> JobReport:
    """Walk ``plan``; unless dry, write each batch's coupons and pushes in one transaction."""
    async with session_factory() as reader, session_factory() as writer:
        async for batch in plan(reader, shop, today):
            if not batch:
                continue
            report.members += len(batch)
            if len(report.samples) < samples:
                report.samples.extend(batch[: samples - len(report.samples)])
            if not report.dry_run:
                report.written += await _write_batch(writer, shop, batch)
            report_progress(done=len(batch))
    return report


async def new_coupon_codes(session: AsyncSession, count: int) -> list[str]:
    """``count`` fresh coupon codes, checked against the table in one query."""
    codes: set[str] = set()
    while len(codes) < count:
        wanted = {new_code(COUPON_DATA_LENGTH) for _ in range(count - len(codes))}
        taken = set(
            (await session.scalars(select(Coupon.code).where(Coupon.code.in_(wanted)))).all()
        )
        codes |= wanted - taken
    return list(codes)


def coupon_payload(
    shop: Shop, template: CouponTemplate, code: str, valid_until: datetime
) -> dict[str, str | int]:
    """How a granted coupon is told in its push's payload: minor units (a percentage for
    percent_off), which the templates word."""
    return {
        "code": code, "kind": template.kind,
        "value": template.value, "min_spend": template.min_spend,
        "valid_until": shop.local_date(valid_until).isoformat(),
    }


async def _write_batch(session: AsyncSession, shop: Shop, batch: list[PlannedPush]) -> int:
    """One transaction: the batch's new coupons and outbox rows, a few statements in all."""

    async def attempt() -> int:
        async with write_transaction(session):
            keys = [p.key for p in batch]
            existing = set(
                (await session.scalars(select(Push.key).where(Push.key.in_(keys)))).all()
            )
            fresh = [p for p in batch if p.key not in existing]
            if not fresh:
                return 0
            now = shop.now()
            coupons, pushes = [], []
            codes = await new_coupon_codes(session, sum(1 for p in fresh if p.coupon_template))
            # The live catalog's templates as they stand now (an admin may have changed one).
            templates = await catalog.templates_by_key(
                session, shop, {p.coupon_template for p in fresh if p.coupon_template}
            )
            for planned in fresh:
                payload = dict(planned.payload)
                template = (
                    templates[planned.coupon_template] if planned.coupon_template else None
                )
                if template is not None:
                    code = codes.pop()
                    until = last_valid_instant(shop, now, template.valid_days)
                    coupons.append(
                        {
                            "code": code, "member_id": planned.member_id,
                            "source": planned.coupon_template, "kind": template.kind,
                            "value": template.value, "min_spend": template.min_spend,
                            "valid_from": now, "valid_until": until, "status": "active",
                            "created_at": now,
                        }
                    )
                    payload["coupon"] = coupon_payload(shop, template, code, until)
                pushes.append(
                    {
                        "key": planned.key, "member_id": planned.member_id,
                        "kind": planned.kind,
                        "payload": json.dumps(payload, ensure_ascii=False, sort_keys=True),
                        "marketing": planned.marketing, "status": "pending", "attempts": 0,
                        "not_before": next_morning(shop, now), "created_at": now,
                    }
                )
            # Core inserts (one executemany each): the ORM's bulk path costs more per row than
            # the rows themselves.
            if coupons:
                await session.execute(insert(table_of(Coupon)), coupons)
            await session.execute(insert(table_of(Push)), pushes)
            return len(pushes)

    return await with_retry_on_race(session, attempt)


async def record_run(
    session: AsyncSession, shop: Shop, job: Job, occasion: str, *, finished: JobReport | None
) -> None:
    """Remember that ``job`` ran (or started) for ``occasion``."""
    async with write_transaction(session):
        row = await session.get(JobRun, job.name, with_for_update=True)
        if row is None:
            row = JobRun(name=job.name, occasion=occasion, started_at=shop.now(), result="")
            session.add(row)
        if finished is None:
            row.occasion, row.started_at, row.finished_at = occasion, shop.now(), None
        else:
            row.finished_at = shop.now()
            row.result = finished.summary()


async def last_occasion(session: AsyncSession, name: str) -> str | None:
    row = await session.get(JobRun, name)
    return row.occasion if row is not None and row.finished_at is not None else None
