"""A campaign to every member of a large shop: how long writing its outbox (the campaign's
recipients) takes, beside a plain scan of the members in the same run.

A database of N members with histories is generated (bench/generate.py, untimed). Then:

* **scan**: one plain pass over every member row (``COUNT``/``SUM`` over the members table
  through sqlite3), best of two, before and after the campaign;
* **plan**: the live reach count the admin sees (one set-based COUNT through the domain);
* **write**: an A/B campaign with a coupon per tier to everyone is confirmed and started
  through the domain (``campaigns.confirm`` then ``campaigns.start_due``: planned → writing,
  ``INSERT ... SELECT`` of its recipients by ranges of member ids, → running), end to end,
  timed: the goal;
* **again**: starting it again (a second confirm, a restart's resume) must write nothing;
* **feed** (for information, not a goal): every recipient turned into its push
  (``campaigns.feed`` in chunks of ``FEED_CHUNK``), as the sender does a few hundred at a time
  while it sends at Telegram's pace.

Usage::

    python bench/campaign.py [--members 1000000] [--quick] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from datetime import date, datetime
from datetime import time as time_of_day
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generate import generate
from bot.db import create_engine, create_session_factory
from bot.settings import DEFAULT_PROGRAM_FILE
from domain import campaigns
from domain.audit import Actor
from domain.campaigns import CampaignSpec, CouponOffer, Offer, Variant
from domain.clock import FixedClock
from domain.program import load_program
from domain.shop import Shop

DAY = date(2026, 3, 17)
TZ = ZoneInfo("Asia/Shanghai")
ADMIN = 1
FEED_CHUNK = 50_000


def _shop() -> Shop:
    clock = FixedClock(datetime.combine(DAY, time_of_day(11), tzinfo=TZ))
    return Shop(load_program(DEFAULT_PROGRAM_FILE), clock, TZ)


def scan(path: Path) -> float:
    """One plain pass over the members; best of two."""
    best = float("inf")
    for _ in range(2):
        db = sqlite3.connect(path)
        started = time.perf_counter()
        db.execute(
            "SELECT COUNT(*), SUM(LENGTH(code)), SUM(marketing_opt_in) FROM members"
        ).fetchone()
        best = min(best, time.perf_counter() - started)
        db.close()
    return best


def _spec(shop: Shop) -> CampaignSpec:
    """The holiday package as an A/B test: A a coupon per tier, B bonus points."""
    tiers = [t.key for t in shop.program.tiers]
    per_tier = {
        key: Offer(coupon=CouponOffer(kind="amount_off", value=1000 * (i + 1),
                                      min_spend=10000 * (i + 1), valid_days=14))
        for i, key in enumerate(tiers)
    }
    return CampaignSpec(
        variants=[
            Variant(texts={"en": "Happy holidays!", "zh": "节日快乐！"}, offers=per_tier),
            Variant(texts={"*": "Holiday points for you"}, offers={"*": Offer(points=200)}),
        ],
        cta="rewards",
    )


async def run_campaign(path: Path) -> tuple[float, float, int, int, int, float, int]:
    """(plan seconds, write seconds, reach, recipients written, written by a second start,
    feed seconds, pushes made)."""
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    factory = create_session_factory(engine)
    shop = _shop()
    spec = _spec(shop)
    actor = Actor(ADMIN, "admin")
    async with factory() as session:
        started = time.perf_counter()
        reach = await campaigns.reach(session, shop, spec.audience)
        plan_s = time.perf_counter() - started
        campaign_id = await campaigns.save_draft(session, shop, actor, spec)
        started = time.perf_counter()
        await campaigns.confirm(session, shop, actor, campaign_id)
        await campaigns.start_due(session, shop)
        write_s = time.perf_counter() - started
        report = await campaigns.report(session, shop, campaign_id)
        written = report.reached
        try:
            await campaigns.confirm(session, shop, actor, campaign_id)
        except campaigns.CampaignStateError:
            pass
        await campaigns.start_due(session, shop, resume=True)
        again = (await campaigns.report(session, shop, campaign_id)).reached - written
        started = time.perf_counter()
        fed = 0
        while chunk := await campaigns.feed(session, shop, FEED_CHUNK):
            fed += chunk
        feed_s = time.perf_counter() - started
    await engine.dispose()
    return plan_s, write_s, reach.members, written, again, feed_s, fed


def goal(name: str, value: float, target: float) -> str:
    met = value < target
    return f"goal {name}: {value:.3f} (target < {target:g}) {'met' if met else 'not met'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 members")
    parser.add_argument("--keep", type=Path, help="generate the database in this folder")
    args = parser.parse_args()
    members = 100_000 if args.quick else args.members
    with tempfile.TemporaryDirectory(prefix="bench-campaign-", dir=args.keep) as folder:
        path = Path(folder) / f"campaign-{members}.db"
        started = time.perf_counter()
        counts = generate(path, members, DAY)
        print(f"generated {counts} in {time.perf_counter() - started:.0f}s (untimed)",
              file=sys.stderr)
        scan_before = scan(path)
        plan_s, write_s, reach, written, again, feed_s, pushes = asyncio.run(run_campaign(path))
        scan_after = scan(path)
    scan_s = min(scan_before, scan_after)
    print(f"campaign to {members:,} members (A/B split, a coupon per tier, a button)")
    print(f"  plain scan of members:     {scan_s:8.3f}s (best of before/after)")
    print(f"  reach count (plan):        {plan_s:8.3f}s  reach {reach:,}")
    print(f"  confirm + write outbox:    {write_s:8.3f}s  recipients {written:,}")
    print(f"  ratio write/scan:          {write_s / scan_s:8.1f}")
    print(f"  second start:              {again} new recipients (must be 0)")
    print(f"  feed all pushes (info):    {feed_s:8.3f}s  pushes {pushes:,}")
    print(goal("campaign_write_s", write_s, 30))
    print(goal("campaign_scan_ratio", write_s / scan_s, 5))


if __name__ == "__main__":
    main()
