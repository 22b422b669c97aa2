"""Times the daily jobs end to end on a database of 1,000,000 members (bench/generate.py),
beside a single plain scan of the members table in the same run; reports peak memory.

    python bench/jobs.py [--members N] [--db PATH] [--reuse]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import sqlite3
import sys
import time
from datetime import date, datetime
from datetime import time as time_of_day
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import generate  # noqa: E402
from bot.db import create_engine, create_session_factory  # noqa: E402
from bot.settings import DEFAULT_PROGRAM_FILE  # noqa: E402
from domain.clock import FixedClock  # noqa: E402
from domain.program import load_program  # noqa: E402
from domain.schedule import JOBS, run_job  # noqa: E402
from domain.shop import Shop  # noqa: E402

DEFAULT_TODAY = "2026-03-10"
DAILY = [name for name, job in JOBS.items() if job.every == "day"]


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _scan(url: str) -> float:
    from sqlalchemy import text

    engine = create_engine(url)
    started = time.perf_counter()
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT COUNT(*), SUM(points_balance), SUM(LENGTH(code)) FROM members")
            )
        ).one()
    elapsed = time.perf_counter() - started
    await engine.dispose()
    print(f"  plain scan of members: {row[0]:,} rows in {elapsed:.2f}s")
    return elapsed


async def _jobs(url: str, today: date) -> tuple[float, dict[str, tuple[float, int, int]]]:
    tz = ZoneInfo("Asia/Shanghai")
    clock = FixedClock(datetime.combine(today, time_of_day(11), tzinfo=tz))
    shop = Shop(load_program(DEFAULT_PROGRAM_FILE), clock, tz)
    engine = create_engine(url)
    factory = create_session_factory(engine)
    results = {}
    started = time.perf_counter()
    for name in DAILY:
        t0 = time.perf_counter()
        report = await run_job(factory, shop, name, today=today)
        results[name] = (time.perf_counter() - t0, report.written, report.changed)
        print(f"  {name:<26} {results[name][0]:7.2f}s  pushes {report.written:>8,}  "
              f"other changes {report.changed:>8,}")
    total = time.perf_counter() - started
    await engine.dispose()
    return total, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/companion-bench-jobs.db"))
    parser.add_argument("--reuse", action="store_true", help="reuse a generated database")
    parser.add_argument(
        "--today", default=DEFAULT_TODAY,
        help="the local day the jobs run for (histories are generated relative to it)",
    )
    args = parser.parse_args()
    today = date.fromisoformat(args.today)
    pristine = args.db.with_suffix(".pristine.db")
    if not (args.reuse and pristine.exists()):
        started = time.perf_counter()
        counts = generate(pristine, args.members, today)
        print(f"generated {counts} in {time.perf_counter() - started:.0f}s (not timed below)")
    for suffix in ("", "-wal", "-shm"):
        Path(str(args.db) + suffix).unlink(missing_ok=True)
    shutil.copyfile(pristine, args.db)
    url = f"sqlite+aiosqlite:///{args.db}"
    members = sqlite3.connect(args.db).execute("SELECT COUNT(*) FROM members").fetchone()[0]
    print(f"jobs run for local day {today}")
    print(f"database: {args.db} ({args.db.stat().st_size / 2**20:.0f} MiB), {members:,} members")

    scan_before = asyncio.run(_scan(url))
    total, _ = asyncio.run(_jobs(url, today))
    scan_after = asyncio.run(_scan(url))
    scan = min(scan_before, scan_after)
    print()
    print(f"daily jobs end to end: {total:.1f}s")
    print(f"plain scan (best of 2): {scan:.2f}s")
    print(f"ratio jobs/scan = {total / scan:.0f}")
    print(f"peak memory (max RSS of this process): {_peak_mib():.0f} MiB")
    again, results = asyncio.run(_jobs(url, today))
    written = sum(r[1] for r in results.values())
    print(f"second run of the same day: {again:.1f}s, {written} new pushes (must be 0)")


if __name__ == "__main__":
    main()
