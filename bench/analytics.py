"""The monthly report on a large shop: bench/generate.py's members (1,000,000 by default)
with orders and ledger over 13 months, reported for the last complete month through
domain.analytics.build_report, against one plain scan of the ledger in the same run (best
of three before and three after). For information it also times the plain reads that any
exact report over these tables must make: their sum is the floor of the ratio.

Goals: under 10 s, under 5x the plain scan, peak RSS under 300 MB. The data set is generated
in a child process (its memory is not this one's) and kept for the next run.

    python bench/analytics.py [--members 1000000] [--db /tmp/companion-bench-1000000.db]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from bot.db import create_engine, create_session_factory
from bot.settings import DEFAULT_PROGRAM_FILE
from domain.analytics import Period, build_report
from domain.clock import FixedClock
from domain.growth import months_before
from domain.program import load_program
from domain.shop import Shop

TODAY = "2026-03-10"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(path: Path) -> tuple[float, float, object, float, float]:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    factory = create_session_factory(engine)
    shop = Shop(
        program=load_program(DEFAULT_PROGRAM_FILE),
        clock=FixedClock(datetime(2026, 3, 10, 2, 0, tzinfo=UTC)),
        tz=ZoneInfo("Asia/Shanghai"),
    )
    async def ledger_scan() -> float:
        """The plain scan, best of three (the first also opens the connection)."""
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            await session.execute(text("SELECT count(*), sum(amount) FROM ledger_entries"))
            best = min(best, time.perf_counter() - started)
        await session.commit()
        return best

    async with factory() as session:
        scan = await ledger_scan()
        period = Period.month_of(date.fromisoformat(TODAY), back=1)
        started = time.perf_counter()
        report = await build_report(session, shop, period)
        took = time.perf_counter() - started
        await session.commit()
        rss = peak_rss_mib()
        floor = await unavoidable_reads(session, shop, period)
        await session.commit()
        scan = min(scan, await ledger_scan())  # before and after the report: a load that
        # came or went in between does not tilt the ratio
    await engine.dispose()
    return scan, took, report, floor, rss


def _naive(instant: datetime) -> str:
    return instant.astimezone(UTC).replace(tzinfo=None).isoformat(" ")


async def unavoidable_reads(session: AsyncSession, shop: Shop, period: Period) -> float:
    """For information: the reads no exact report over these tables can skip, each in its
    leanest form (one aggregate, no figure worked out): every buyer's last order over the
    churn window (lifecycle), every member's 12-month growth (the 1:10 thresholds), the
    members counted by tier, stage and status (from their covering index), and the period's
    ledger by kind (points)."""
    start, end = period.bounds(shop)
    churn = start - timedelta(days=shop.program.lifecycle.churned_days)
    window = months_before(shop.now(), shop.program.tier_rules.window_months)
    reads = [
        ("SELECT count(*), max(last) FROM (SELECT member_id, max(occurred_at) AS last "
         "FROM orders WHERE occurred_at >= :a AND occurred_at < :b GROUP BY +member_id)",
         {"a": _naive(churn), "b": _naive(end)}),
        ("SELECT count(*), max(g) FROM (SELECT member_id, sum(amount) AS g "
         "FROM growth_entries WHERE occurred_at > :a GROUP BY member_id)",
         {"a": _naive(window)}),
        ("SELECT tier, stage, status, count(*) FROM members GROUP BY tier, stage, status", {}),
        ("SELECT kind, sum(amount) FROM ledger_entries "
         "WHERE created_at >= :a AND created_at < :b GROUP BY kind",
         {"a": _naive(start), "b": _naive(end)}),
    ]
    started = time.perf_counter()
    for sql, params in reads:
        await session.execute(text(sql), params)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path)
    args = parser.parse_args()
    path = args.db or Path(f"/tmp/companion-bench-{args.members}.db")
    if not path.exists():
        print(f"generating {args.members:,} members in {path} ...", flush=True)
        subprocess.run(
            [sys.executable, str(Path(__file__).with_name("generate.py")), str(path),
             "--members", str(args.members), "--today", TODAY],
            check=True,
        )
    # A file from an older schema gains its indexes, in a child (its memory is not the report's).
    subprocess.run(
        [sys.executable, "-c", f"from bot.db import migrate; migrate('sqlite+aiosqlite:///{path}')"],
        check=True, cwd=Path(__file__).resolve().parent.parent,
    )
    scan, took, report, floor, rss = asyncio.run(run(path))
    r = report  # type: ignore[assignment]
    print(f"period {r.period.first} .. {r.period.last}: {r.members.total:,} members, "  # type: ignore[attr-defined]
          f"{r.sales.orders:,} orders, revenue {r.sales.revenue / 100:,.2f}, "  # type: ignore[attr-defined]
          f"benefit cost {r.cost.ratio}% (red line {r.cost.red_line}%), "  # type: ignore[attr-defined]
          f"points earned {r.points.earned:,} spent {r.points.spent:,}")  # type: ignore[attr-defined]
    print(f"plain ledger scan: {scan:.2f} s; monthly report: {took:.2f} s; "
          f"ratio {took / scan:.1f}x; peak RSS {rss:.0f} MiB")
    print(f"for information: the plain reads any exact report needs (last order per buyer "
          f"over the churn window, 12-month growth per member, members by tier and stage, the "
          f"period's ledger by kind) alone: {floor:.2f} s, {floor / scan:.1f}x the scan")
    ratio = took / scan if scan else float("inf")
    print(f"goal analytics_s: {took:.2f} (target <= 10) {'met' if took <= 10 else 'not met'}")
    print(f"goal analytics_scan_ratio: {ratio:.1f} (target <= 5) "
          f"{'met' if ratio <= 5 else 'not met'}")
    print(f"goal analytics_rss_mib: {rss:.0f} (target <= 300) {'met' if rss <= 300 else 'not met'}")


if __name__ == "__main__":
    main()
