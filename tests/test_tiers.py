"""Tiers and growth as domain rules, on a migrated database with the injected clock."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain import members, orders
from domain.clock import FixedClock
from domain.events import record_event
from domain.growth import BEHAVIOUR, add_growth, counted_growth, growth_total
from domain.models import Member, TierChange
from domain.shop import Shop
from domain.tiers import annual_review, downgrade_risk
from domain.transaction import write_transaction


async def _member(session: AsyncSession, shop: Shop, telegram_id: int = 1) -> Member:
    profile = members.TelegramProfile(telegram_id, "Ann", None, None, "en")
    return (await members.register(session, shop, profile)).member


async def _buy(session: AsyncSession, shop: Shop, member: Member, order_id: str, amount: str) -> orders.OrderReceipt:
    minor = int(amount.replace(".", ""))
    outcome = await orders.place_order(
        session, shop, orders.OrderRequest(order_id=order_id, member=member.code, amount=minor)
    )
    return outcome.result


async def _tier(session: AsyncSession, member_id: int) -> str:
    await session.commit()
    tier = await session.scalar(
        select(Member.tier).where(Member.id == member_id).execution_options(populate_existing=True)
    )
    assert tier is not None
    return tier


def test_behaviour_growth_is_capped_at_its_share() -> None:
    assert counted_growth(700, 1000, 30) == 1000  # 300 of behaviour: 30% of 1,000
    assert counted_growth(700, 100, 30) == 800
    assert counted_growth(0, 5000, 30) == 0  # check-ins alone never make a tier


async def test_upgrade_is_immediate_with_history(session: AsyncSession, shop: Shop) -> None:
    member = await _member(session, shop)
    receipt = await _buy(session, shop, member, "o1", "4999.00")
    assert receipt.tier == "member" and receipt.growth_to_next_tier == 1
    receipt = await _buy(session, shop, member, "o2", "1.00")
    assert receipt.tier == "silver" and receipt.tier_changed
    assert receipt.points_earned == 1  # earned at the tier the order started at
    history = (await session.scalars(select(TierChange).where(TierChange.member_id == member.id))).all()
    assert [(h.from_tier, h.to_tier, h.reason) for h in history] == [
        (None, "member", "joined"), ("member", "silver", "upgrade"),
    ]


async def test_tier_multiplier_member_day_and_birthday(session: AsyncSession, shop: Shop, clock: FixedClock) -> None:
    member = await _member(session, shop)
    await _buy(session, shop, member, "big", "20000.00")  # gold: x1.5
    assert (await _buy(session, shop, member, "g1", "100.00")).points_earned == 150
    clock.set(datetime(2026, 3, 18, 2, 0, tzinfo=UTC))  # the 18th: member day x2
    assert (await _buy(session, shop, member, "g2", "100.00")).points_earned == 300
    async with write_transaction(session):
        await session.execute(Member.__table__.update().values(birthday_month=3, birthday_day=30))
    # birthday month and member day do not stack: the better one applies
    assert (await _buy(session, shop, member, "g3", "100.00")).points_earned == 300
    clock.set(datetime(2026, 3, 19, 2, 0, tzinfo=UTC))
    assert (await _buy(session, shop, member, "g4", "100.00")).points_earned == 300


async def test_refund_takes_back_an_upgrade_it_bought(session: AsyncSession, shop: Shop) -> None:
    member = await _member(session, shop)
    await _buy(session, shop, member, "a", "3000.00")
    await _buy(session, shop, member, "b", "2500.00")
    assert await _tier(session, member.id) == "silver"
    await orders.refund_order(session, shop, order_id="b", refund_id="rb", amount=250000)
    assert await _tier(session, member.id) == "member"
    total = await growth_total(session, shop, member.id)
    assert total.counted == 3000


async def test_annual_review_steps_down_at_most_one(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    member = await _member(session, shop)
    await _buy(session, shop, member, "huge", "60000.00")
    assert await _tier(session, member.id) == "black_gold"
    clock.set(datetime(2027, 6, 1, 2, 0, tzinfo=UTC))  # the purchase has left the window
    async with write_transaction(session):
        outcome = await annual_review(session, shop, member.id, on=date(2028, 1, 1))
    assert (outcome.before, outcome.after) == ("black_gold", "gold")
    async with write_transaction(session):
        outcome = await annual_review(session, shop, member.id, on=date(2029, 1, 1))
    assert outcome.after == "silver"
    assert await _tier(session, member.id) == "silver"


async def test_annual_review_keeps_a_tier_the_growth_still_reaches(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    member = await _member(session, shop)
    await _buy(session, shop, member, "s", "6000.00")
    clock.set(datetime(2026, 12, 20, 2, 0, tzinfo=UTC))
    async with write_transaction(session):
        outcome = await annual_review(session, shop, member.id, on=date(2027, 1, 1))
    assert not outcome.changed and outcome.after == "silver"


async def test_downgrade_risk_tells_gap_and_date(session: AsyncSession, shop: Shop, clock: FixedClock) -> None:
    member = await _member(session, shop)
    clock.set(datetime(2025, 12, 20, 2, 0, tzinfo=UTC))
    await _buy(session, shop, member, "old", "4000.00")
    clock.set(datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    await _buy(session, shop, member, "new", "1500.00")
    assert await _tier(session, member.id) == "silver"
    risk = await downgrade_risk(session, shop, member.id, on=date(2026, 12, 1))
    # at the review on 2027-01-01 only the 1,500 of March still counts
    assert risk is not None
    assert (risk.growth_kept, risk.gap, risk.review_on) == (1500, 3500, date(2027, 1, 1))
    await _buy(session, shop, member, "more", "3500.00")
    assert await downgrade_risk(session, shop, member.id, on=date(2026, 12, 1)) is None


async def test_behaviour_events_alone_cannot_lift_a_tier(session: AsyncSession, shop: Shop) -> None:
    member = await _member(session, shop)
    async with write_transaction(session):
        for i in range(11):  # 5,495 growth of earlier behaviours, without 1,099 round trips
            await add_growth(
                session, member.id, kind="share", source=BEHAVIOUR, amount=500 if i < 10 else 495,
                reason="share", key=f"seed:{i}", occurred_at=shop.now(),
            )
    receipt = await record_event(session, shop, member_query=member.code, event_id="s", kind="share")
    assert receipt.result.growth_earned == 5 and not receipt.result.tier_changed
    assert await _tier(session, member.id) == "member"
    total = await growth_total(session, shop, member.id)
    assert (total.behaviour, total.counted) == (5500, 0)
