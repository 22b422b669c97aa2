"""Tier jobs: the monthly downgrade warning, the member-day reminder and the yearly tier
re-evaluation (with the protection task, and the re-check of the downgrade it postpones).

They work over keyset pages of member ids. One grouped query per page sums every member's
growth in the window (purchase and behaviour apart, then capped by
``domain.growth.counted_growth``, as ``growth_total`` does for one member), never a query per
member. The re-evaluation is ``domain.tiers.annual_review``'s rule, applied a page at a time:
the tier changes, their history and each member's push are written in one transaction per page.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import String, and_, case, cast, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql import ColumnElement, Select

from domain.growth import BEHAVIOUR, PURCHASE, counted_growth, months_before
from domain.idempotency import with_retry_on_race
from domain.jobs import BATCH, JobReport, PlannedPush, next_morning
from domain.members import ACTIVE
from domain.models import CheckIn, GrowthEntry, Member, Push, TierChange
from domain.shop import Shop
from domain.tiers import next_review
from domain.transaction import write_transaction

ANNUAL_REVIEW = "annual_review"
POSTPONED_REVIEW = "postponed_review"
PROTECTED = "protected"
# "Once a year": a protection granted within the 11 months before a review counts against it.
# Not 12: the one granted at the previous review (a year ago, or in its catch-up month) must
# not count, or the task could only be used every other year.
PROTECTION_LOOKBACK_MONTHS = 11


def _start_of(day: date, shop: Shop) -> datetime:
    return datetime.combine(day, time.min, tzinfo=shop.tz)


def _first_of_next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _first_of_previous_month(day: date) -> date:
    return (day.replace(day=1) - timedelta(days=1)).replace(day=1)


def _plain(value: Decimal) -> str:
    """2 → "2", 1.50 → "1.5", never "1E+1"."""
    return format(value.normalize(), "f")


def _date_fields(prefix: str, day: date) -> dict[str, Any]:
    return {
        f"{prefix}_on": day.isoformat(), f"{prefix}_year": day.year,
        f"{prefix}_month": day.month, f"{prefix}_day": day.day,
    }


@dataclass(frozen=True)
class Standing:
    """A member, their tier and the growth that counts in a window ending at some instant."""

    member_id: int
    name: str
    tier: str
    growth: int


def _standings_query(shop: Shop, end: datetime) -> Select[Any]:
    """Members with their purchase and behaviour growth in the window ending at ``end``:
    members LEFT JOIN growth_entries, grouped by member. Callers add the member filter."""
    start = months_before(end, shop.program.tier_rules.window_months)

    def summed(source: str) -> ColumnElement[Any]:
        return func.coalesce(
            func.sum(case((GrowthEntry.source == source, GrowthEntry.amount), else_=0)), 0
        )

    return (
        select(
            Member.id, Member.first_name, Member.tier,
            summed(PURCHASE).label("purchase"), summed(BEHAVIOUR).label("behaviour"),
        )
        .select_from(Member)
        .outerjoin(
            GrowthEntry,
            and_(
                GrowthEntry.member_id == Member.id,
                GrowthEntry.occurred_at > start,
                GrowthEntry.occurred_at <= end,
            ),
        )
        .group_by(Member.id, Member.first_name, Member.tier)
        .order_by(Member.id)
    )


async def _standings(session: AsyncSession, shop: Shop, query: Select[Any]) -> list[Standing]:
    cap = shop.program.growth.behaviour_share_cap_percent
    return [
        Standing(int(member_id), name or "", tier, counted_growth(int(bought), int(did), cap))
        for member_id, name, tier, bought, did in (await session.execute(query)).all()
    ]


async def _count_by_member(
    session: AsyncSession, model: type[CheckIn] | type[TierChange],
    *where: ColumnElement[bool],
) -> dict[int, int]:
    """Rows of ``model`` per member, for a page of members: one grouped query."""
    rows = await session.execute(
        select(model.member_id, func.count(model.id)).where(*where).group_by(model.member_id)
    )
    return {int(m): int(n) for m, n in rows.all()}


async def _protections_used(
    session: AsyncSession, shop: Shop, review_on: date, *members: ColumnElement[bool]
) -> dict[int, int]:
    """Protections granted to the members within the year before the review on ``review_on``."""
    since = months_before(_start_of(review_on, shop), PROTECTION_LOOKBACK_MONTHS)
    return await _count_by_member(
        session, TierChange, *members,
        TierChange.reason == PROTECTED, TierChange.created_at >= since,
    )


@dataclass(frozen=True)
class _Ladder:
    """The program's tiers as lists, for deciding thousands of members a page without
    scanning the tier list for each (an unknown key counts as the lowest tier, as in
    Program.tier_index)."""

    keys: list[str]
    thresholds: list[int]
    index: dict[str, int]
    max_steps_down: int

    @classmethod
    def of(cls, shop: Shop) -> _Ladder:
        tiers = shop.program.tiers
        return cls(
            [t.key for t in tiers], [t.threshold for t in tiers],
            {t.key: i for i, t in enumerate(tiers)}, shop.program.tier_rules.max_steps_down,
        )

    def threshold(self, tier: str) -> int:
        return self.thresholds[self.index.get(tier, 0)]

    def target(self, tier: str, growth: int) -> str:
        """The tier the growth reaches, at most ``max_steps_down`` below ``tier``
        (the rule of domain.tiers.annual_review)."""
        reached = bisect_right(self.thresholds, growth) - 1
        return self.keys[max(reached, self.index.get(tier, 0) - self.max_steps_down, 0)]

    def next_step(self, tier: str, growth: int) -> tuple[str | None, int]:
        """The next tier above ``tier`` and the growth still missing for it (0 at the top),
        as domain.tiers.progress gives them."""
        above = self.index.get(tier, 0) + 1
        if above >= len(self.keys):
            return None, 0
        return self.keys[above], max(self.thresholds[above] - growth, 0)


# --- Monthly: downgrade warnings ----------------------------------------------------------


async def downgrade_warnings(
    session: AsyncSession, shop: Shop, today: date
) -> AsyncIterator[list[PlannedPush]]:
    """On the 1st of each month: members above the lowest tier whose growth that will still
    count at the next review (the window ending on the review day) falls short of their tier.
    Each is told the gap, the date, the tier they would drop to and the protection task.

    Members whose downgrade was postponed today by the protection task are left out: their
    tier_review push already told them the re-check date and gap."""
    program = shop.program
    rules = program.tier_rules
    upper = [tier.key for tier in program.tiers[1:]]
    if not upper:
        return
    ladder = _Ladder.of(shop)
    review = next_review(shop, today)
    protection_month = review - timedelta(days=1)  # the month before the review
    postponed_today = (
        select(TierChange.id)
        .where(
            TierChange.member_id == Member.id, TierChange.reason == PROTECTED,
            TierChange.created_at >= _start_of(today, shop),
        )
        .exists()
    )
    page = _standings_query(shop, _start_of(review, shop)).where(
        Member.status == ACTIVE, Member.tier.in_(upper), ~postponed_today
    )
    last_id = 0
    while True:
        standings = await _standings(
            session, shop, page.where(Member.id > last_id).limit(BATCH)
        )
        if not standings:
            await session.commit()
            return
        last_id = standings[-1].member_id
        at_risk = [s for s in standings if s.growth < ladder.threshold(s.tier)]
        used = (
            await _protections_used(
                session, shop, review, TierChange.member_id.in_([s.member_id for s in at_risk])
            )
            if at_risk else {}
        )
        await session.commit()  # end the read between pages
        yield [
            PlannedPush(
                s.member_id, "downgrade_warning",
                f"downgrade_warning:{s.member_id}:{today:%Y-%m}",
                {
                    "name": s.name,
                    "tier": s.tier,
                    "lower_tier": ladder.target(s.tier, s.growth),
                    "kept": s.growth,
                    "gap": ladder.threshold(s.tier) - s.growth,
                    **_date_fields("review", review),
                    "protection_checkins": rules.protection_checkins,
                    "protection_available": used.get(s.member_id, 0) < rules.protection_per_year,
                    "protection_year": protection_month.year,
                    "protection_month": protection_month.month,
                    "protection_this_month": (today.year, today.month)
                    == (protection_month.year, protection_month.month),
                },
            )
            for s in at_risk
        ]


# --- Monthly: member day -------------------------------------------------------------------


async def member_day_reminders(
    session: AsyncSession, shop: Shop, today: date
) -> AsyncIterator[list[PlannedPush]]:
    """On the member day: every active member who accepts marketing messages is reminded
    that purchase points are multiplied today. Nothing when the program has no member day,
    or when the day is already over (a late catch-up run would announce a past day)."""
    rules = shop.program.points
    if not rules.member_day or shop.today() > today:
        return
    query = (
        select(Member.id, Member.first_name, Member.tier)
        .where(Member.status == ACTIVE, Member.marketing_opt_in.is_(True))
        .order_by(Member.id)
    )
    last_id = 0
    while True:
        rows = (
            await session.execute(query.where(Member.id > last_id).limit(BATCH))
        ).all()
        await session.commit()
        if not rows:
            return
        last_id = int(rows[-1].id)
        batch = []
        for row in rows:
            tier = shop.program.tier(row.tier)
            batch.append(
                PlannedPush(
                    int(row.id), "member_day", f"member_day:{row.id}:{today:%Y-%m}",
                    {
                        "name": row.first_name or "",
                        "tier": tier.key,
                        "multiplier": _plain(rules.member_day_multiplier),
                        "tier_multiplier": _plain(tier.points_multiplier),
                        "today_multiplier": _plain(
                            tier.points_multiplier * rules.member_day_multiplier
                        ),
                    },
                    marketing=True,
                )
            )
        yield batch


# --- Yearly: the tier re-evaluation --------------------------------------------------------


@dataclass(frozen=True)
class _Review:
    """One kind of re-evaluation: the annual one, or the re-check of a postponed downgrade.
    Each member's push for it is keyed f"{key_prefix}:{member_id}:{occasion}"."""

    name: str
    reason: str
    recheck: bool
    key_prefix: str
    occasion: Callable[[date], str]

    def key(self, member_id: int, today: date) -> str:
        return f"{self.key_prefix}:{member_id}:{self.occasion(today)}"

    def told(self, today: date) -> ColumnElement[bool]:
        """SQL: the member already has this occasion's push (the same key, built in SQL)."""
        key = (
            literal(f"{self.key_prefix}:", String) + cast(Member.id, String)
            + literal(f":{self.occasion(today)}", String)
        )
        return select(Push.id).where(Push.key == key).exists()


_ANNUAL = _Review(
    ANNUAL_REVIEW, ANNUAL_REVIEW, False, "tier_review", lambda today: str(today.year)
)
_RECHECK = _Review(
    "postponed_reviews", POSTPONED_REVIEW, True, "tier_recheck",
    lambda today: today.strftime("%Y-%m"),
)


@dataclass(frozen=True)
class _Decision:
    standing: Standing
    after: str
    protected: bool  # the downgrade was due and the protection task postponed it

    @property
    def changed(self) -> bool:
        return self.after != self.standing.tier


async def _decide(
    session: AsyncSession, shop: Shop, ladder: _Ladder, today: date, review: _Review,
    standings: list[Standing], page: tuple[int, int],
) -> list[_Decision]:
    rules = shop.program.tier_rules
    targets = {s.member_id: ladder.target(s.tier, s.growth) for s in standings}
    due = [
        s.member_id for s in standings
        if ladder.index[targets[s.member_id]] < ladder.index.get(s.tier, 0)
    ]
    protected: set[int] = set()
    if due and not review.recheck and rules.protection_per_year > 0:
        checkins = await _count_by_member(
            session, CheckIn, CheckIn.member_id > page[0], CheckIn.member_id <= page[1],
            CheckIn.day >= _first_of_previous_month(today), CheckIn.day < today.replace(day=1),
        )
        used = await _protections_used(
            session, shop, today, TierChange.member_id > page[0], TierChange.member_id <= page[1]
        )
        protected = {
            member_id for member_id in due
            if checkins.get(member_id, 0) >= rules.protection_checkins
            and used.get(member_id, 0) < rules.protection_per_year
        }
    return [
        _Decision(s, s.tier if s.member_id in protected else targets[s.member_id],
                  s.member_id in protected)
        for s in standings
    ]


async def _review_page(
    session: AsyncSession, shop: Shop, today: date, review: _Review, after_id: int, *,
    lock: bool,
) -> tuple[list[_Decision], list[PlannedPush], int | None]:
    """Decide one page of members; the page's last member id, or None past the end.
    Members already told this occasion's result are left alone (running twice does nothing)."""
    members = [Member.status == ACTIVE, ~review.told(today)]
    if review.recheck:
        members.append(
            select(TierChange.id)
            .where(
                TierChange.member_id == Member.id, TierChange.reason == PROTECTED,
                TierChange.created_at >= _start_of(_first_of_previous_month(today), shop),
                TierChange.created_at < _start_of(today.replace(day=1), shop),
            )
            .exists()
        )
    ids_query = (
        select(Member.id).where(*members, Member.id > after_id).order_by(Member.id).limit(BATCH)
    )
    if lock:  # the page's rows stay as read until the changes commit (PostgreSQL)
        ids_query = ids_query.with_for_update()
    ids = (await session.scalars(ids_query)).all()
    if not ids:
        return [], [], None
    page = (after_id, int(ids[-1]))
    # A fresh statement: on PostgreSQL it sees a twin run's pushes committed while this one
    # waited for the page's locks, so a member is never reviewed twice.
    standings = await _standings(
        session, shop,
        _standings_query(shop, _start_of(today, shop)).where(
            *members, Member.id > page[0], Member.id <= page[1]
        ),
    )
    ladder = _Ladder.of(shop)
    decisions = await _decide(session, shop, ladder, today, review, standings, page)
    recheck_on = _first_of_next_month(today)
    # For a postponed downgrade: the growth that already counts in the re-check's window.
    protected = [d.standing.member_id for d in decisions if d.protected]
    at_recheck: dict[int, int] = {}
    if protected:
        query = _standings_query(shop, _start_of(recheck_on, shop))
        at_recheck = {
            s.member_id: s.growth
            for s in await _standings(session, shop, query.where(Member.id.in_(protected)))
        }
    pushes = [
        _review_push(shop, ladder, today, review, d, recheck_on,
                     at_recheck.get(d.standing.member_id, 0))
        for d in decisions
    ]
    return decisions, pushes, page[1]


def _review_push(
    shop: Shop, ladder: _Ladder, today: date, review: _Review, decision: _Decision,
    recheck_on: date, growth_at_recheck: int,
) -> PlannedPush:
    standing = decision.standing
    next_tier, gap = ladder.next_step(decision.after, standing.growth)
    payload: dict[str, Any] = {
        "name": standing.name,
        "year": today.year,
        "before": standing.tier,
        "after": decision.after,
        "growth": standing.growth,
        "changed": decision.changed,
        "next_tier": next_tier,
        "gap": gap,
        "protected": decision.protected,
        "recheck": review.recheck,
    }
    if decision.protected:
        threshold = ladder.threshold(standing.tier)
        payload |= {
            **_date_fields("recheck", recheck_on),
            "checkins": shop.program.tier_rules.protection_checkins,
            "keep_gap": max(threshold - growth_at_recheck, 0),
        }
    return PlannedPush(
        standing.member_id, "tier_review", review.key(standing.member_id, today), payload
    )


async def _write_page(
    session: AsyncSession, shop: Shop, review: _Review, decisions: list[_Decision],
    pushes: list[PlannedPush],
) -> int:
    """The page's tier changes, their history and every member's push. Inside the caller's
    write transaction; returns how many tiers changed."""
    now = shop.now()
    by_tier: dict[str, list[int]] = {}
    for decision in decisions:
        if decision.changed:
            by_tier.setdefault(decision.after, []).append(decision.standing.member_id)
    for tier, member_ids in by_tier.items():
        await session.execute(
            update(Member).where(Member.id.in_(member_ids)).values(tier=tier)
            .execution_options(synchronize_session=False)
        )
    history = [
        {
            "member_id": d.standing.member_id, "from_tier": d.standing.tier, "to_tier": d.after,
            "reason": PROTECTED if d.protected else review.reason, "growth": d.standing.growth,
            "created_at": now,
        }
        for d in decisions if d.changed or d.protected
    ]
    if history:
        await session.execute(insert(TierChange), history)
    await _insert_pushes(session, shop, pushes, now)
    return sum(len(ids) for ids in by_tier.values())


async def _insert_pushes(
    session: AsyncSession, shop: Shop, pushes: Iterable[PlannedPush], now: datetime
) -> None:
    rows = [
        {
            "key": p.key, "member_id": p.member_id, "kind": p.kind,
            "payload": json.dumps(p.payload, ensure_ascii=False, sort_keys=True),
            "marketing": p.marketing, "status": "pending", "attempts": 0,
            "not_before": next_morning(shop, now), "created_at": now,
        }
        for p in pushes
    ]
    if rows:
        await session.execute(insert(Push), rows)


async def _run_review(
    session_factory: async_sessionmaker[AsyncSession], shop: Shop, today: date, dry_run: bool,
    review: _Review, *, samples: int = 3,
) -> JobReport:
    report = JobReport(review.name, review.occasion(today), dry_run)
    after_id: int | None = 0
    async with session_factory() as session:
        while after_id is not None:
            page_start = after_id
            if dry_run:
                decisions, pushes, after_id = await _review_page(
                    session, shop, today, review, page_start, lock=False
                )
                await session.commit()  # end the read between pages
                changed = sum(d.changed for d in decisions)
            else:

                async def attempt(
                    start: int = page_start,
                ) -> tuple[list[_Decision], list[PlannedPush], int | None, int]:
                    async with write_transaction(session):
                        decisions, pushes, last = await _review_page(
                            session, shop, today, review, start, lock=True
                        )
                        changed = await _write_page(session, shop, review, decisions, pushes)
                    return decisions, pushes, last, changed

                decisions, pushes, after_id, changed = await with_retry_on_race(session, attempt)
                report.written += len(pushes)
            report.members += len(pushes)
            report.changed += changed
            report.samples.extend(pushes[: max(samples - len(report.samples), 0)])
    return report


async def run_annual_review(
    session_factory: async_sessionmaker[AsyncSession], shop: Shop, today: date, dry_run: bool
) -> JobReport:
    """1 January (``today``): every active member's tier becomes the one that the growth of
    the window ending at the start of the day reaches, at most ``max_steps_down`` below the
    current tier; each member is told the result (push "tier_review"), in the transaction of
    the page's changes. A member whose downgrade is due keeps the tier this time when they
    checked in ``protection_checkins`` times in the month before and have not used the
    protection within the year (history row "protected"); ``run_postponed_reviews`` looks
    again a month later. A dry run decides and counts, and changes nothing."""
    return await _run_review(session_factory, shop, today, dry_run, _ANNUAL)


async def run_postponed_reviews(
    session_factory: async_sessionmaker[AsyncSession], shop: Shop, today: date, dry_run: bool
) -> JobReport:
    """On the 1st of the month after a protection (1 February): the downgrades the protection
    task postponed are re-evaluated with the window ending at the start of ``today`` — the
    same rule, without a second protection; each such member is told the result."""
    return await _run_review(session_factory, shop, today, dry_run, _RECHECK)
