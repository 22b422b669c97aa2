"""The daily jobs at scale: a typical day and the worst day, beside a plain scan of what the
jobs must read, with the jobs' own peak memory and how long a till waits meanwhile.

For each day a database of N members with histories is generated relative to that day
(bench/generate.py, untimed). Then, in one run:

* **scan**: one plain pass over what the jobs read: every member row and every points lot
  (``COUNT``/``SUM`` over both tables), best of two, before and after the jobs;
* **jobs**: every daily job of the catalogue, end to end, as the scheduler runs them, in a
  child process whose peak resident memory (``ru_maxrss``) is the jobs' alone;
* **till**: meanwhile, a trickle of real till orders (``orders.place_order`` for generated
  members, one every 50 ms, from the parent process on the same file) whose longest wait is
  the time a shop's till waited for the database while the jobs ran;
* **again**: the same day run a second time must write nothing.

The typical day is a mid-month day with no reminder due (7 or 30 days before a month end)
and nothing to expire: the generator leaves the lots of past month ends unexpired, so
yesterday's expiry runs first, untimed (the state the jobs find on a real mid-month morning,
as the generator already leaves the stages as yesterday's lifecycle run would). The worst
day is the 1st of a month, when the lots of the month before all expire at once (with the
generator's backlog of earlier month ends on top, kept: a worst case). The growth figure runs the worst day at one tenth of
the members as well and divides the times (linear is 10x).

Usage::

    python bench/jobs.py [--members 1000000] [--quick] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as time_of_day
from multiprocessing.connection import Connection
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import _code, generate
from bot.db import create_engine, create_session_factory
from bot.settings import DEFAULT_PROGRAM_FILE
from domain import orders
from domain.clock import FixedClock
from domain.jobs import JobReport
from domain.program import load_program
from domain.schedule import JOBS, run_job
from domain.shop import Shop

TYPICAL_DAY = date(2026, 3, 17)  # no month end 7 or 30 days ahead, nothing due to expire
WORST_DAY = date(2026, 4, 1)  # lots that expired on 31 March all go today
DAILY = [name for name, job in JOBS.items() if job.every == "day"]
TZ = ZoneInfo("Asia/Shanghai")


def _shop(today: date) -> Shop:
    clock = FixedClock(datetime.combine(today, time_of_day(11), tzinfo=TZ))
    return Shop(load_program(DEFAULT_PROGRAM_FILE), clock, TZ)


def scan(path: Path) -> float:
    """One plain pass over members and points lots; best of two."""
    best = float("inf")
    for _ in range(2):
        db = sqlite3.connect(path)
        started = time.perf_counter()
        db.execute("SELECT COUNT(*), SUM(points_balance), SUM(LENGTH(code)) FROM members").fetchone()
        db.execute("SELECT COUNT(*), SUM(remaining), MIN(expires_on) FROM points_lots").fetchone()
        best = min(best, time.perf_counter() - started)
        db.close()
    return best


async def _run_one(path: Path, today: date, name: str) -> JobReport:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        return await run_job(create_session_factory(engine), _shop(today), name, today=today)
    finally:
        await engine.dispose()


def _run_jobs_child(path: str, today: date, out: Connection) -> None:
    async def main() -> tuple[float, dict[str, tuple[float, int, int]]]:
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        factory = create_session_factory(engine)
        results: dict[str, tuple[float, int, int]] = {}
        started = time.perf_counter()
        for name in DAILY:
            t0 = time.perf_counter()
            report = await run_job(factory, _shop(today), name, today=today)
            results[name] = (time.perf_counter() - t0, report.written, report.changed)
        total = time.perf_counter() - started
        await engine.dispose()
        return total, results

    total, results = asyncio.run(main())
    out.send((total, results, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


@dataclass
class DayRun:
    day: date
    members: int
    jobs_s: float
    scan_s: float
    rss_mib: float
    till_orders: int
    till_wait_max_s: float
    till_wait_p50_s: float
    second_run_pushes: int
    per_job: dict[str, tuple[float, int, int]]


async def _trickle(path: Path, today: date, members: int, stop: asyncio.Event) -> list[float]:
    """Till orders every 50 ms until ``stop``; each one's time from request to answer."""
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    factory = create_session_factory(engine)
    shop = _shop(today)
    rng = random.Random(11)
    waits: list[float] = []
    n = 0
    while not stop.is_set():
        n += 1
        request = orders.OrderRequest(
            order_id=f"bench-till-{today}-{n}", member=_code(rng.randrange(1, members + 1)),
            amount=rng.randrange(100, 50_000),
        )
        started = time.perf_counter()
        async with factory() as session:
            await orders.place_order(session, shop, request)
        waits.append(time.perf_counter() - started)
        await asyncio.sleep(0.05)
    await engine.dispose()
    return waits


def _jobs_in_child(path: Path, today: date) -> tuple[float, dict[str, tuple[float, int, int]], float]:
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    child = multiprocessing.get_context("spawn").Process(
        target=_run_jobs_child, args=(str(path), today, theirs)
    )
    child.start()
    total, results, rss = ours.recv()
    child.join()
    return total, results, rss


async def _day_with_till(path: Path, today: date, members: int) -> tuple[
    float, dict[str, tuple[float, int, int]], float, list[float]
]:
    stop = asyncio.Event()
    trickle = asyncio.create_task(_trickle(path, today, members, stop))
    try:
        total, results, rss = await asyncio.to_thread(_jobs_in_child, path, today)
    finally:
        stop.set()
    return total, results, rss, await trickle


def run_day(workdir: Path, day: date, members: int) -> DayRun:
    path = workdir / f"jobs-{day}-{members}.db"
    started = time.perf_counter()
    counts = generate(path, members, day)
    print(f"  generated {counts} for {day} in {time.perf_counter() - started:.0f}s (untimed)",
          file=sys.stderr)
    if day == TYPICAL_DAY:
        yesterday = day - timedelta(days=1)
        report = asyncio.run(_run_one(path, yesterday, "expire"))
        print(f"  yesterday's expiry ({yesterday}), untimed: {report.changed:,} lots and coupons",
              file=sys.stderr)
    scan_before = scan(path)
    total, results, rss, waits = asyncio.run(_day_with_till(path, day, members))
    scan_after = scan(path)
    _, again_results, _ = _jobs_in_child(path, day)
    waits.sort()
    run = DayRun(
        day=day, members=members, jobs_s=total, scan_s=min(scan_before, scan_after),
        rss_mib=rss, till_orders=len(waits), till_wait_max_s=waits[-1] if waits else 0.0,
        till_wait_p50_s=waits[len(waits) // 2] if waits else 0.0,
        second_run_pushes=sum(r[1] for r in again_results.values()), per_job=results,
    )
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return run


def goal(name: str, value: float, op: str, target: float) -> str:
    met = value >= target if op == ">=" else value <= target
    return f"goal {name}: {value:.3f} (target {op} {target:g}) {'met' if met else 'not met'}"


def report(run: DayRun, label: str) -> None:
    print(f"{label}: local day {run.day}, {run.members:,} members")
    for name, (seconds, written, changed) in run.per_job.items():
        print(f"  {name:<26} {seconds:7.2f}s  pushes {written:>8,}  other changes {changed:>8,}")
    print(f"  daily jobs end to end: {run.jobs_s:.2f}s; scan of members and lots: "
          f"{run.scan_s:.3f}s; ratio jobs/scan = {run.jobs_s / run.scan_s:.1f}")
    print(f"  jobs' peak RSS: {run.rss_mib:.0f} MiB")
    print(f"  till meanwhile: {run.till_orders} orders, wait p50 {run.till_wait_p50_s * 1000:.0f}"
          f" ms, longest {run.till_wait_max_s * 1000:.0f} ms")
    print(f"  second run of the same day: {run.second_run_pushes} new pushes (must be 0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true",
                        help="100,000 members (growth from 10,000): a few minutes")
    parser.add_argument("--keep", type=Path, help="generate the databases in this folder")
    args = parser.parse_args()
    members = 100_000 if args.quick else args.members
    with tempfile.TemporaryDirectory(prefix="bench-jobs-", dir=args.keep) as folder:
        workdir = Path(folder)
        typical = run_day(workdir, TYPICAL_DAY, members)
        report(typical, "typical day")
        worst = run_day(workdir, WORST_DAY, members)
        report(worst, "worst day")
        small = run_day(workdir, WORST_DAY, members // 10)
        report(small, "worst day, a tenth of the members")
        shutil.rmtree(workdir, ignore_errors=True)
    growth = worst.jobs_s / small.jobs_s
    print(f"growth from {small.members:,} to {worst.members:,} members (worst day): "
          f"{growth:.1f}x (linear: 10x)")
    print(goal("jobs_worst_s", worst.jobs_s, "<=", 15))
    print(goal("jobs_worst_scan_ratio", worst.jobs_s / worst.scan_s, "<=", 5))
    print(goal("jobs_till_wait_s", max(worst.till_wait_max_s, typical.till_wait_max_s), "<=", 1))
    print(goal("jobs_typical_scan_ratio", typical.jobs_s / typical.scan_s, "<=", 2))
    print(goal("jobs_growth_100k_1m", growth, "<=", 11))


if __name__ == "__main__":
    main()
