"""Lifecycle stages (new, active, dormant, churned) and the offers that go with entering them.

A member's stage follows from the days since their last purchase (or since sign-up when they
never bought): under ``dormant_days`` → active (or new, when they never bought); from
``dormant_days`` → dormant; from ``churned_days`` → churned. Entering a stage records the day,
so an offer goes out once per spell.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.jobs import JobReport, PlannedPush, apply_plan, due_batches
from domain.models import Member
from domain.shop import Shop
from domain.transaction import read_transaction, write_transaction

NEW, ACTIVE, DORMANT, CHURNED = "new", "active", "dormant", "churned"
STAGES = (NEW, ACTIVE, DORMANT, CHURNED)


def _start_of(day: date, shop: Shop) -> datetime:
    return datetime.combine(day, time.min, tzinfo=shop.tz)


def _days_since_at_least(shop: Shop, today: date, days: int) -> datetime:
    """A reference instant lies ``days`` or more local days before ``today`` iff it is before
    the returned instant."""
    return _start_of(today - timedelta(days=days - 1), shop)


def stage_expression(shop: Shop, today: date):  # type: ignore[no-untyped-def]
    rules = shop.program.lifecycle
    reference = func.coalesce(Member.last_purchase_at, Member.created_at)
    return case(
        (reference < _days_since_at_least(shop, today, rules.churned_days), CHURNED),
        (reference < _days_since_at_least(shop, today, rules.dormant_days), DORMANT),
        (Member.last_purchase_at.is_not(None), ACTIVE),
        else_=NEW,
    )


def _reference_within(
    since: datetime | None, before: datetime | None, *, bought: bool
) -> ColumnElement[bool]:
    """The member's reference instant (last purchase, or sign-up when they never bought) lies
    in [since, before): one range over ix_members_stage_activity (stage, last_purchase_at,
    created_at), for members who bought (``bought``) or who never did."""
    column = Member.last_purchase_at if bought else Member.created_at
    bounds: list[ColumnElement[bool]] = [
        Member.last_purchase_at.is_not(None) if bought else Member.last_purchase_at.is_(None)
    ]
    if since is not None:
        bounds.append(column >= since)
    if before is not None:
        bounds.append(column < before)
    return and_(*bounds)


def stage_is(shop: Shop, today: date, stage: str) -> list[ColumnElement[bool]]:
    """``stage_expression(shop, today) == stage``, as the index ranges it covers (an OR of
    them): what is due is found by range, not by evaluating every member."""
    rules = shop.program.lifecycle
    churned = _days_since_at_least(shop, today, rules.churned_days)
    dormant = _days_since_at_least(shop, today, rules.dormant_days)
    settled = max(churned, dormant)  # neither churned nor dormant from here on
    if stage == CHURNED:
        return [_reference_within(None, churned, bought=b) for b in (True, False)]
    if stage == DORMANT:
        if churned >= dormant:
            return []
        return [_reference_within(churned, dormant, bought=b) for b in (True, False)]
    if stage == ACTIVE:
        return [_reference_within(settled, None, bought=True)]
    return [_reference_within(settled, None, bought=False)]


def _other_stages(stage: str) -> list[str]:
    return [s for s in STAGES if s != stage]


async def evaluate_stages(session: AsyncSession, shop: Shop, today: date, *, dry_run: bool) -> int:
    """Move every member whose stage changed into the new one, dated today. Only those are
    read: for each stage, the members in another stage whose reference instant lies in the
    stage's range (index ranges on the stage and the last purchase or sign-up; a day's
    changes are the members whose reference crossed a threshold). Returns how many changed
    (or would change)."""
    moving = [
        (stage, and_(Member.stage.in_(_other_stages(stage)), due, Member.status != "deleted"))
        for stage in STAGES
        for due in stage_is(shop, today, stage)
    ]
    if dry_run:
        counted = 0
        for _stage, where in moving:
            counted += int(await session.scalar(select(func.count(Member.id)).where(where)) or 0)
        return counted
    changed = 0
    async with write_transaction(session):
        for stage, where in moving:
            result = await session.execute(
                update(Member).where(where).values(stage=stage, stage_since=today)
                .execution_options(synchronize_session=False)
            )
            changed += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return changed


def _columns() -> Select[int, str | None, str, str, date | None]:
    return select(Member.id, Member.first_name, Member.tier, Member.stage, Member.stage_since)


def _payload(row: Row[Any], shop: Shop, today: date) -> dict[str, object]:
    return {"name": row.first_name or "", "tier": row.tier, "stage": row.stage}


async def first_order_nudges(
    session: AsyncSession, shop: Shop, today: date
) -> AsyncIterator[list[PlannedPush]]:
    """Members who joined ``first_order_nudge_day`` days ago and have not bought yet."""
    joined = today - timedelta(days=shop.program.lifecycle.first_order_nudge_day)
    query = _columns().where(
        Member.status == "active",
        Member.first_purchase_at.is_(None),
        Member.created_at >= _start_of(joined, shop),
        Member.created_at < _start_of(joined + timedelta(days=1), shop),
    )
    async for batch in due_batches(
        session, query, Member.id,
        lambda row: PlannedPush(row.id, "first_order_nudge", f"first_order_nudge:{row.id}",
                                _payload(row, shop, today)),
    ):
        yield batch


def _stage_offer(stage: str, kind: str, template: str):  # type: ignore[no-untyped-def]
    async def plan(
        session: AsyncSession, shop: Shop, today: date
    ) -> AsyncIterator[list[PlannedPush]]:
        # Members entering the stage today: after evaluate_stages that is stage_since == today
        # (ix_members_stage_since); in a dry run (no evaluation written) it is those the
        # evaluation would move (the ranges of stage_is).
        ranges = stage_is(shop, today, stage)
        if not ranges:
            return
        entering = or_(
            # (The stage re-checked row by row: the index to use here is the day.)
            and_(
                Member.stage == stage, Member.stage_since == today,
                stage_expression(shop, today) == stage,
            ),
            *(and_(Member.stage.in_(_other_stages(stage)), due) for due in ranges),
        )
        query = _columns().where(
            Member.status == "active", entering,
            # An offer is marketing: a member who turned offers off gets none, so no coupon
            # is made for them either (it would sit unannounced in /coupons).
            Member.marketing_opt_in.is_(True),
        )
        async for batch in due_batches(
            session, query, Member.id,
            lambda row: PlannedPush(
                row.id, kind, f"{kind}:{row.id}:{today.isoformat()}",
                _payload(row, shop, today), marketing=True, coupon_template=template,
            ),
        ):
            yield batch

    return plan


dormant_wakeups = _stage_offer(DORMANT, "dormant_wakeup", "dormant_wakeup")
churned_winbacks = _stage_offer(CHURNED, "churned_winback", "churned_winback")


async def run_lifecycle(
    session_factory: async_sessionmaker[AsyncSession], shop: Shop, today: date, dry_run: bool
) -> JobReport:
    """Daily: stages, then the offers of the day (first-order nudge, wake-up, win-back)."""
    report = JobReport("lifecycle", today.isoformat(), dry_run)
    async with session_factory() as session:
        report.changed = await evaluate_stages(session, shop, today, dry_run=dry_run)
    for plan in (first_order_nudges, dormant_wakeups, churned_winbacks):
        await apply_plan(session_factory, shop, today, plan, report)
    return report


@dataclass(frozen=True)
class CallbackEntry:
    """One member on the staff's call-back list."""

    display_name: str
    tier: str
    phone: str | None
    code: str
    last_purchase_day: date | None


async def callback_list(
    session: AsyncSession, shop: Shop, *, limit: int = 50
) -> list[CallbackEntry]:
    """High-value churned members for the staff to call: churned, at or above the program's
    call-back tier, longest gone first, with the local day of their last purchase."""
    rules = shop.program.lifecycle
    tiers = [t.key for t in shop.program.tiers[shop.program.tier_index(rules.callback_min_tier):]]
    async with read_transaction(session):
        found = (
            await session.scalars(
                select(Member)
                .where(Member.status == "active", Member.stage == CHURNED, Member.tier.in_(tiers))
                .order_by(Member.last_purchase_at, Member.id)
                .limit(limit)
            )
        ).all()
    return [
        CallbackEntry(
            display_name=m.display_name, tier=m.tier, phone=m.phone, code=m.code,
            last_purchase_day=shop.local_date(m.last_purchase_at) if m.last_purchase_at else None,
        )
        for m in found
    ]
