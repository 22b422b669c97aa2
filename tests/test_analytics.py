"""The shop's figures for February 2026 of the history in tests/analytics_history.py, each
worked out by hand; on SQLite, and on PostgreSQL when TEST_DATABASE_URL is set."""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from domain.analytics import (
    BenefitFigures,
    Period,
    PushFigures,
    build_report,
    cost_report,
    monthly_history,
    tier_discount_estimate,
)
from domain.clock import FixedClock
from domain.program import BenefitRules, Program
from domain.shop import Shop
from tests.analytics_history import build_history

FEBRUARY = Period.month(2026, 2)


@pytest.fixture
async def report(session: AsyncSession, shop: Shop, clock: FixedClock):  # type: ignore[no-untyped-def]
    await build_history(session, shop, clock)
    found = await build_report(session, shop, FEBRUARY)
    await session.commit()
    return found


async def test_members_and_the_pyramid(report) -> None:  # type: ignore[no-untyped-def]
    m = report.members
    assert (m.total, m.new) == (6, 3)  # D, E, F joined in February
    assert [(t.key, t.members, t.share) for t in m.tiers] == [
        ("member", 4, Decimal("66.6")), ("silver", 1, Decimal("16.6")),
        ("gold", 1, Decimal("16.6")), ("black_gold", 0, Decimal("0.0")),
    ]
    # 4 members per silver, 1 silver per gold, no black gold to compare with.
    assert [t.ratio_to_next for t in m.tiers] == [Decimal("4.0"), Decimal("1.0"), None, None]
    assert m.pyramid_target == [5, 0, 0, 0]  # 1000:100:10:1 of 6, rounded down
    # With 6 members each upper tier's share is the single top member: C's 12-month growth
    # 1,500 + 100 + 150 - 50 refunded, plus 50 for the referral (within the 30% cap).
    assert [t.suggested_threshold for t in m.tiers] == [None, 1750, 1750, 1750]


async def test_lifecycle(report) -> None:  # type: ignore[no-untyped-def]
    life = report.lifecycle
    assert life.stages == {"new": 2, "active": 3, "dormant": 0, "churned": 1}
    assert life.moves == {"new": 2, "active": 3, "dormant": 0, "churned": 1}
    # A and B had not bought for 60+ days on 1 February; A came back.
    assert (life.lapsed_at_start, life.reactivated, life.reactivation_rate) == (
        2, 1, Decimal("50.0")
    )
    # B crossed 90 days on 23 February; of A, B, C only A was churned already.
    assert (life.churned, life.churn_rate) == (1, Decimal("50.0"))
    # A, C, D bought and E checked in.
    assert (life.monthly_active, life.active_share) == (4, Decimal("66.6"))


async def test_sales(report) -> None:  # type: ignore[no-untyped-def]
    s = report.sales
    assert (s.orders, s.gross, s.refunds, s.revenue) == (4, 63000, 5000, 58000)
    assert s.paid == 63000 - 1000 - 200  # the welcome coupon and A's 200 points
    assert (s.buyers, s.repeat_buyers, s.repeat_rate) == (3, 1, Decimal("33.3"))
    assert (s.average_order, s.frequency, s.arpu) == (15750, Decimal("1.33"), 9666)
    assert [(t.key, t.orders, t.revenue) for t in report.members.tiers] == [
        ("member", 1, 30000), ("silver", 1, 8000), ("gold", 2, 25000), ("black_gold", 0, 0),
    ]


async def test_points(report) -> None:  # type: ignore[no-untyped-def]
    p = report.points
    # sign-ups 3 x 100, purchases 298 + 100 + 70 + 150, referral 200, check-ins 15, review 30
    assert p.earned == 300 + 618 + 200 + 15 + 30
    assert (p.spent, p.returned, p.expired, p.clawed_back) == (200 + 1500, 0, 0, 50)
    assert p.outstanding == (298 + 30) + 150 + 500 + 170 + 115 + 100  # A with the review
    assert p.liability == 1363  # 100 points = 1.00
    assert p.expiring_soon == 0


async def test_benefit_cost_against_the_red_line(report) -> None:  # type: ignore[no-untyped-def]
    c = report.cost
    assert (c.coupon_discounts, c.points_offsets, c.reward_items) == (1000, 200, 1500)
    # Estimated from the amounts at each tier's percent: 30000*2/98 + 8000*5/95 + 25000*10/90
    assert c.tier_discounts == 612 + 421 + 2777
    assert (c.total, c.revenue, c.ratio, c.red_line, c.over) == (
        6510, 58000, Decimal("11.2"), 8, True
    )
    assert c.benefits == [
        BenefitFigures("reward:free_item", granted=1, used=0, use_rate=Decimal("0.0"),
                       converted=1, conversion_rate=Decimal("100.0"), cost=1500),
        BenefitFigures("welcome", granted=3, used=1, use_rate=Decimal("33.3"),
                       converted=1, conversion_rate=Decimal("33.3"), cost=1000),
    ]


async def test_engagement_and_pushes(report) -> None:  # type: ignore[no-untyped-def]
    e = report.engagement
    assert (e.checkins, e.checkin_members, e.checkin_share) == (3, 1, Decimal("16.6"))
    assert e.streaks == [(1, 6, 1), (7, 20, 0), (21, None, 0)]
    assert (e.inviters, e.referred_joined, e.referred_first_purchase) == (1, 1, 1)
    assert (e.reviews, e.shares) == (1, 0)
    assert report.pushes == [
        PushFigures("receipt", written=4, sent=1, pending=2, skipped=0, failed=0, blocked=1),
        PushFigures("referral_reward", written=1, sent=0, pending=1, skipped=0, failed=0,
                    blocked=0),
        PushFigures("refund", written=1, sent=0, pending=1, skipped=0, failed=0, blocked=0),
    ]


async def test_monthly_history_matches_the_report(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    await build_history(session, shop, clock)
    months = await monthly_history(session, shop, Period.months_to(date(2026, 3, 1), 3))
    assert [(m.period.first, m.revenue, m.benefit_cost, m.earned, m.spent, m.expired)
            for m in months] == [
        # January: C's 1,500.00 at Gold's estimated 10%, 100 + 1,500 points earned.
        (date(2026, 1, 1), 150000, tier_discount_estimate(10, 150000), 1600, 0, 0),
        (date(2026, 2, 1), 58000, 6510, 1163, 1700, 0),
        (date(2026, 3, 1), 0, 0, 0, 0, 0),
    ]


def test_red_line_defaults_to_eight_percent(program: Program) -> None:
    raw = program.model_dump(mode="json", exclude={"benefits"})
    assert Program.model_validate(raw).benefits == BenefitRules(cost_red_line_percent=8)


def test_periods() -> None:
    assert Period.month_of(date(2026, 1, 15), back=1) == Period.month(2025, 12)
    assert Period.months_to(date(2026, 3, 9), 3) == Period(date(2026, 1, 1), date(2026, 3, 31))
    with pytest.raises(ValueError):
        Period(date(2026, 3, 2), date(2026, 3, 1))


async def test_the_red_line_watch_counts_the_cost_like_the_report(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    await build_history(session, shop, clock)
    full = await build_report(session, shop, FEBRUARY)
    light = await cost_report(session, shop, FEBRUARY)
    await session.commit()
    assert light.period == FEBRUARY
    assert light.cost == dataclasses.replace(full.cost, benefits=[])
    assert light.cost.total > 0 and light.cost.revenue > 0  # the history has both


async def test_members_who_left_and_members_active_twice(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    """The report's three reads must agree on who counts: D, who bought in February and then
    left, stays in the sales and leaves every member figure; A, who bought and also checked
    in, is one active member, not two."""
    from domain import checkin
    from domain.models import Member
    from domain.privacy import erase_member
    from tests.analytics_history import local

    history = await build_history(session, shop, clock)
    clock.set(local(2026, 2, 16, 12))
    await checkin.check_in(session, shop, history.ids["A"])
    clock.set(local(2026, 3, 1))
    leaver = await session.get(Member, history.ids["D"])
    assert leaver is not None
    assert await erase_member(session, shop, leaver, reason=None)
    found = await build_report(session, shop, FEBRUARY)
    await session.commit()

    assert (found.members.total, found.members.new) == (5, 2)
    assert [(t.key, t.members) for t in found.members.tiers] == [
        ("member", 4), ("silver", 0), ("gold", 1), ("black_gold", 0),
    ]
    assert found.lifecycle.stages == {"new": 2, "active": 2, "dormant": 0, "churned": 1}
    assert (found.lifecycle.lapsed_at_start, found.lifecycle.reactivated) == (2, 1)
    assert (found.lifecycle.churned, found.lifecycle.churn_rate) == (1, Decimal("50.0"))
    # A and C bought, E checked in; A's check-in adds no one.
    assert (found.lifecycle.monthly_active, found.lifecycle.active_share) == (3, Decimal("60.0"))
    assert (found.engagement.checkins, found.engagement.checkin_members) == (4, 2)
    # D's order stays a sale, under the tier D had.
    assert (found.sales.orders, found.sales.gross, found.sales.buyers) == (4, 63000, 3)
    assert [(t.key, t.orders) for t in found.members.tiers][1] == ("silver", 1)
