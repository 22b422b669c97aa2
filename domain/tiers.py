"""Tiers: immediate upgrade, annual re-evaluation at most one step down, refund re-check,
history with reasons. Evaluation functions take a date so the scheduler only calls them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.growth import growth_total
from domain.models import Member, TierChange
from domain.program import Tier
from domain.shop import Shop
from domain.sql import table_of


@dataclass(frozen=True)
class TierOutcome:
    before: str
    after: str
    growth: int

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def went_up(self, shop: Shop) -> bool:
        program = shop.program
        return program.tier_index(self.after) > program.tier_index(self.before)


@dataclass(frozen=True)
class TierProgress:
    tier: Tier
    growth: int
    next_tier: Tier | None
    gap: int  # growth still needed for the next tier; 0 at the top


def progress(shop: Shop, tier_key: str, growth: int) -> TierProgress:
    tier = shop.program.tier(tier_key)
    nxt = shop.program.next_tier(tier_key)
    gap = max(nxt.threshold - growth, 0) if nxt else 0
    return TierProgress(tier, growth, nxt, gap)


async def record_change(
    session: AsyncSession, shop: Shop, member_id: int, outcome: TierOutcome, reason: str
) -> None:
    """The tier history row of a change whose ``members.tier`` the caller has set."""
    await session.execute(
        insert(table_of(TierChange)).values(
            member_id=member_id, from_tier=outcome.before, to_tier=outcome.after, reason=reason,
            growth=outcome.growth, created_at=shop.now(),
        )
    )


async def _set_tier(
    session: AsyncSession, shop: Shop, member_id: int, before: str, after: str, reason: str,
    growth: int,
) -> None:
    await session.execute(update(Member).where(Member.id == member_id).values(tier=after))
    await record_change(session, shop, member_id, TierOutcome(before, after, growth), reason)


def upgrade_for(shop: Shop, before: str, growth: int) -> TierOutcome:
    """The immediate upgrade that ``growth`` earns from tier ``before`` (never a downgrade)."""
    program = shop.program
    reached = program.tier_for_growth(growth)
    if program.tier_index(reached.key) > program.tier_index(before):
        return TierOutcome(before, reached.key, growth)
    return TierOutcome(before, before, growth)


async def _current(session: AsyncSession, member_id: int) -> str:
    tier = await session.scalar(select(Member.tier).where(Member.id == member_id))
    assert tier is not None
    return tier


async def check_upgrade(
    session: AsyncSession, shop: Shop, member_id: int, *, reason: str = "upgrade"
) -> TierOutcome:
    """Upgrade at once when the window's growth reaches a higher tier (never downgrades)."""
    before = await _current(session, member_id)
    growth = (await growth_total(session, shop, member_id)).counted
    outcome = upgrade_for(shop, before, growth)
    if outcome.changed:
        await _set_tier(session, shop, member_id, before, outcome.after, reason, growth)
    return outcome


async def recheck_after_refund(session: AsyncSession, shop: Shop, member_id: int) -> TierOutcome:
    """After a refund: a tier that the refunded purchase bought is taken back, down to what
    the remaining growth reaches, but never below the tier held before the last upgrade."""
    before = await _current(session, member_id)
    growth = (await growth_total(session, shop, member_id)).counted
    program = shop.program
    reached = program.tier_for_growth(growth)
    if program.tier_index(reached.key) >= program.tier_index(before):
        return TierOutcome(before, before, growth)
    last_upgrade = await session.scalar(
        select(TierChange)
        .where(TierChange.member_id == member_id, TierChange.to_tier == before)
        .order_by(TierChange.id.desc())
        .limit(1)
    )
    if last_upgrade is None or last_upgrade.reason != "upgrade" or last_upgrade.from_tier is None:
        return TierOutcome(before, before, growth)
    floor = program.tier_index(last_upgrade.from_tier)
    target = program.tiers[max(program.tier_index(reached.key), floor)].key
    if target == before:
        return TierOutcome(before, before, growth)
    await _set_tier(session, shop, member_id, before, target, "refund", growth)
    return TierOutcome(before, target, growth)


def _start_of(day: date, shop: Shop) -> datetime:
    return datetime.combine(day, time.min, tzinfo=shop.tz)


async def annual_review(
    session: AsyncSession, shop: Shop, member_id: int, *, on: date
) -> TierOutcome:
    """Re-evaluation (1 January): the tier becomes the one the previous window's growth
    reaches, at most ``max_steps_down`` steps down. Recorded with reason "annual_review"."""
    before = await _current(session, member_id)
    at = _start_of(on, shop)
    growth = (await growth_total(session, shop, member_id, at=at)).counted
    program = shop.program
    reached = program.tier_index(program.tier_for_growth(growth).key)
    current = program.tier_index(before)
    target = max(reached, current - program.tier_rules.max_steps_down)
    after = program.tiers[target].key
    if after != before:
        await _set_tier(session, shop, member_id, before, after, "annual_review", growth)
    return TierOutcome(before, after, growth)


@dataclass(frozen=True)
class DowngradeRisk:
    tier: str
    growth_kept: int  # growth that will still count at the review if nothing more is earned
    gap: int  # growth still needed to keep the tier
    review_on: date


def next_review(shop: Shop, today: date) -> date:
    month, day = (int(part) for part in shop.program.tier_rules.annual_review.split("-"))
    review = date(today.year, month, day)
    return review if review > today else date(today.year + 1, month, day)


async def downgrade_risk(
    session: AsyncSession, shop: Shop, member_id: int, *, on: date
) -> DowngradeRisk | None:
    """For the monthly warning: would the tier be lost at the next review if the member earned
    nothing more? Then the gap and the date; None when the tier is safe (or the lowest)."""
    tier_key = await _current(session, member_id)
    tier = shop.program.tier(tier_key)
    if shop.program.tier_index(tier_key) == 0:
        return None
    review = next_review(shop, on)
    kept = (await growth_total(session, shop, member_id, at=_start_of(review, shop))).counted
    # Growth dated after today cannot exist yet, so the window ending at the review holds
    # exactly what is already earned and will not have aged out by then.
    if kept >= tier.threshold:
        return None
    return DowngradeRisk(tier_key, kept, tier.threshold - kept, review)
