"""The daily check-in: one per member and local day, with points, growth, streak bonuses, the
21-day challenge badge, a month calendar and a monthly leaderboard.

Rules (figures from the program):
- one check-in per local day (the shop's time zone): ``points.checkin`` points and
  ``growth.checkin`` behaviour growth (counted within the behaviour cap);
- the streak grows by one when the member checked in the day before, otherwise restarts at 1;
- every 7th consecutive day (7, 14, 21, ...) adds ``points.streak_7_bonus``;
- every completed 21-day challenge (streak 21, 42, 63, ...) adds ``points.streak_21_bonus``
  and a ``streak_21`` badge, so the badges count the completed challenges.

Each credit is its own ledger entry (kinds ``checkin``, ``checkin_streak_7``,
``checkin_streak_21``) keyed by member and local day, and the ``checkins`` row is unique per
member and day: a second press, even a racing one, credits nothing.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain import points
from domain.errors import DomainError, MemberFrozen, MemberNotFound
from domain.growth import BEHAVIOUR, add_growth
from domain.idempotency import with_retry_on_race
from domain.members import DELETED, FROZEN
from domain.models import Badge, CheckIn, Member
from domain.program import Program
from domain.shop import Shop
from domain.tiers import check_upgrade
from domain.transaction import write_transaction

STREAK_WEEK = 7
CHALLENGE_DAYS = 21
CHALLENGE_BADGE = "streak_21"
LEADERBOARD_SIZE = 10
KIND_CHECKIN = "checkin"
KIND_STREAK_7 = "checkin_streak_7"
KIND_STREAK_21 = "checkin_streak_21"


@dataclass(frozen=True)
class NextBonus:
    """The next streak day that pays a bonus, counted from the current streak."""

    days: int  # check-ins still needed, today's included when not yet done
    streak: int  # the streak that day reaches
    week_points: int  # the 7-day bonus paid that day (0 if none)
    challenge_points: int  # the 21-day challenge bonus paid that day (0 if none)
    challenge: bool  # that day completes a 21-day challenge (badge)

    @property
    def points(self) -> int:
        return self.week_points + self.challenge_points


@dataclass(frozen=True)
class MonthCalendar:
    """The days of one month a member checked in on, laid out in Monday-first weeks."""

    year: int
    month: int
    days: frozenset[date]
    today: date | None  # marked in the layout when it falls in this month

    @property
    def first(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def weeks(self) -> list[list[date | None]]:
        """Rows of seven cells, Monday first; None outside the month."""
        rows = calendar.Calendar(firstweekday=calendar.MONDAY).monthdatescalendar(
            self.year, self.month
        )
        return [[d if d.month == self.month else None for d in row] for row in rows]

    @property
    def count(self) -> int:
        return len(self.days)


@dataclass(frozen=True)
class CheckInStatus:
    """Where a member stands today: what the calendar message shows."""

    today: date
    checked_in_today: bool
    streak: int  # the running streak; 0 when the last check-in was before yesterday
    next_bonus: NextBonus
    calendar: MonthCalendar


@dataclass(frozen=True)
class CheckInResult:
    """What one check-in credited."""

    day: date
    streak: int
    base_points: int
    week_bonus: int  # the 7-day streak bonus, 0 on other days
    challenge_bonus: int  # the 21-day challenge bonus, 0 on other days
    badge: bool  # a 21-day challenge badge was earned
    growth: int
    balance: int
    tier_before: str
    tier_after: str
    status: CheckInStatus

    @property
    def points(self) -> int:
        return self.base_points + self.week_bonus + self.challenge_bonus

    @property
    def upgraded(self) -> bool:
        return self.tier_before != self.tier_after


class AlreadyCheckedIn(DomainError):
    """The member has checked in today already; nothing was credited. Carries the day's
    check-in (``day``, ``streak``, ``points``) and the ``status`` the calendar shows."""

    code = "already_checked_in"
    default_message = "already checked in today"

    def __init__(self, *, day: date, streak: int, points: int, status: CheckInStatus) -> None:
        super().__init__(day=day, streak=streak, points=points, status=status)
        self.day = day
        self.streak = streak
        self.points = points
        self.status = status


def next_bonus(program: Program, streak: int) -> NextBonus:
    """The first streak day after ``streak`` that pays a 7-day bonus or completes a 21-day
    challenge (the challenge's badge comes even if the shop set its bonus to 0)."""
    rules = program.points
    target = streak + 1
    while not (
        target % CHALLENGE_DAYS == 0 or (rules.streak_7_bonus > 0 and target % STREAK_WEEK == 0)
    ):
        target += 1
    challenge = target % CHALLENGE_DAYS == 0
    return NextBonus(
        days=target - streak,
        streak=target,
        week_points=rules.streak_7_bonus if target % STREAK_WEEK == 0 else 0,
        challenge_points=rules.streak_21_bonus if challenge else 0,
        challenge=challenge,
    )


def _month_bounds(year: int, month: int) -> tuple[date, date]:
    return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])


async def month_calendar(
    session: AsyncSession, shop: Shop, member_id: int, year: int, month: int
) -> MonthCalendar:
    """The local days of ``year``-``month`` the member checked in on."""
    return await _calendar(session, member_id, shop.today(), year, month)


async def _calendar(
    session: AsyncSession, member_id: int, today: date, year: int, month: int
) -> MonthCalendar:
    first, last = _month_bounds(year, month)
    days = await session.scalars(
        select(CheckIn.day).where(
            CheckIn.member_id == member_id, CheckIn.day >= first, CheckIn.day <= last
        )
    )
    return MonthCalendar(
        year, month, frozenset(days), today if (today.year, today.month) == (year, month) else None
    )


async def checkins_in_month(session: AsyncSession, member_id: int, year: int, month: int) -> int:
    """How many days of the (local) month the member checked in on."""
    first, last = _month_bounds(year, month)
    count = await session.scalar(
        select(func.count(CheckIn.id)).where(
            CheckIn.member_id == member_id, CheckIn.day >= first, CheckIn.day <= last
        )
    )
    return int(count or 0)


async def checkin_status(
    session: AsyncSession, shop: Shop, member_id: int, *, today: date | None = None
) -> CheckInStatus:
    """Today's standing: checked in or not, the running streak, the next bonus, this month.
    ``today`` is the local day (the shop's today by default)."""
    today = today or shop.today()
    rows = (
        await session.execute(
            select(CheckIn.day, CheckIn.streak)
            .where(CheckIn.member_id == member_id, CheckIn.day <= today)
            .order_by(CheckIn.day.desc())
            .limit(1)
        )
    ).all()
    streak = 0
    checked_in_today = False
    if rows:
        last_day, last_streak = rows[0]
        checked_in_today = last_day == today
        if last_day >= today - timedelta(days=1):  # yesterday's streak is still alive
            streak = int(last_streak)
    return CheckInStatus(
        today=today,
        checked_in_today=checked_in_today,
        streak=streak,
        next_bonus=next_bonus(shop.program, streak),
        calendar=await _calendar(session, member_id, today, today.year, today.month),
    )


async def check_in(session: AsyncSession, shop: Shop, member_id: int) -> CheckInResult:
    """Check the member in for today (local): points, growth, streak bonuses and the
    challenge badge, in one transaction. Raises AlreadyCheckedIn (nothing credited) when the
    member checked in today already, also when two presses race; MemberFrozen for a frozen
    member."""

    async def attempt() -> CheckInResult:
        async with write_transaction(session):
            # The member's row lock serialises twin presses on PostgreSQL; on SQLite the
            # write lock taken at BEGIN does.
            member = (
                await session.execute(
                    select(Member.status, Member.frozen_reason)
                    .where(Member.id == member_id)
                    .with_for_update(key_share=True)
                )
            ).one_or_none()
            if member is None or member.status == DELETED:
                raise MemberNotFound(member_id=member_id)
            if member.status == FROZEN:
                raise MemberFrozen()
            day = shop.today()
            done = (
                await session.execute(
                    select(CheckIn.streak, CheckIn.points).where(
                        CheckIn.member_id == member_id, CheckIn.day == day
                    )
                )
            ).one_or_none()
            if done is not None:
                raise AlreadyCheckedIn(
                    day=day, streak=int(done.streak), points=int(done.points),
                    status=await checkin_status(session, shop, member_id, today=day),
                )
            return await _credit(session, shop, member_id, day)

    return await with_retry_on_race(session, attempt)


async def _credit(session: AsyncSession, shop: Shop, member_id: int, day: date) -> CheckInResult:
    rules = shop.program
    previous = await session.scalar(
        select(CheckIn.streak).where(
            CheckIn.member_id == member_id, CheckIn.day == day - timedelta(days=1)
        )
    )
    streak = int(previous) + 1 if previous is not None else 1
    base = rules.points.checkin
    week_bonus = rules.points.streak_7_bonus if streak % STREAK_WEEK == 0 else 0
    completes_challenge = streak % CHALLENGE_DAYS == 0
    challenge_bonus = rules.points.streak_21_bonus if completes_challenge else 0
    # The claim first: a racing twin fails here on the unique (member_id, day).
    session.add(
        CheckIn(
            member_id=member_id, day=day, streak=streak,
            points=base + week_bonus + challenge_bonus, created_at=shop.now(),
        )
    )
    await session.flush()

    balance_before = await session.scalar(
        select(Member.points_balance).where(Member.id == member_id)
    )
    balance = int(balance_before or 0)
    ref = f"checkin:{day.isoformat()}"
    credits = (
        (KIND_CHECKIN, base, "daily check-in"),
        (KIND_STREAK_7, week_bonus, f"{streak}-day check-in streak"),
        (KIND_STREAK_21, challenge_bonus, "21-day check-in challenge"),
    )
    for kind, amount, reason in credits:
        if amount > 0:
            posting = await points.earn(
                session, shop, member_id, kind=kind, amount=amount, reason=reason,
                key=f"{kind}:{member_id}:{day.isoformat()}", source_ref=ref, earned_on=day,
            )
            balance = posting.balance
    if completes_challenge:
        session.add(Badge(member_id=member_id, kind=CHALLENGE_BADGE, earned_on=day))
        await session.flush()

    growth = rules.growth.checkin
    await add_growth(
        session, member_id, kind=KIND_CHECKIN, source=BEHAVIOUR, amount=growth,
        reason="daily check-in", key=f"{KIND_CHECKIN}:{member_id}:{day.isoformat()}",
        occurred_at=shop.now(),
    )
    tier = await check_upgrade(session, shop, member_id)
    return CheckInResult(
        day=day, streak=streak, base_points=base, week_bonus=week_bonus,
        challenge_bonus=challenge_bonus, badge=completes_challenge, growth=growth,
        balance=balance, tier_before=tier.before, tier_after=tier.after,
        status=await checkin_status(session, shop, member_id, today=day),
    )


# The monthly leaderboard.


@dataclass(frozen=True)
class LeaderboardRow:
    rank: int
    member_id: int
    name: str  # first name and last initial, or the start of the member code: never a full name
    checkins: int
    best_streak: int


@dataclass(frozen=True)
class MemberRank:
    rank: int
    of: int  # members who checked in this month
    checkins: int
    best_streak: int


def public_name(first_name: str | None, last_name: str | None, code: str) -> str:
    """A name others may see: the first word of the first name and the initial of the last
    name ("Lin W."), or the first 4 characters of the member code when there is no name."""
    first = (first_name or "").split()
    if not first:
        return code[:4]
    last = (last_name or "").strip()
    return f"{first[0][:16]} {last[0]}." if last else first[0][:16]


def _ranked(year: int, month: int) -> Select[tuple[int, int, int, int, int]]:
    """Members with check-ins in the month, ranked: most check-ins, then the longest streak
    reached in the month, then whoever made their last check-in earliest."""
    first, last = _month_bounds(year, month)
    totals = (
        select(
            CheckIn.member_id.label("member_id"),
            func.count(CheckIn.id).label("checkins"),
            func.max(CheckIn.streak).label("best_streak"),
            func.max(CheckIn.created_at).label("last_at"),
        )
        .join(Member, Member.id == CheckIn.member_id)
        .where(CheckIn.day >= first, CheckIn.day <= last, Member.status != DELETED)
        .group_by(CheckIn.member_id)
        .subquery()
    )
    order = (
        totals.c.checkins.desc(),
        totals.c.best_streak.desc(),
        totals.c.last_at.asc(),
        totals.c.member_id.asc(),
    )
    return select(
        totals.c.member_id,
        totals.c.checkins,
        totals.c.best_streak,
        func.row_number().over(order_by=order).label("rank"),
        func.count().over().label("of"),
    )


async def leaderboard(
    session: AsyncSession, shop: Shop, year: int, month: int, limit: int = LEADERBOARD_SIZE
) -> list[LeaderboardRow]:
    """The month's top members by check-ins (then best streak, then earliest last check-in),
    with names safe to show to other members."""
    ranked = _ranked(year, month).subquery()
    rows = (
        await session.execute(
            select(
                ranked.c.rank, ranked.c.member_id, ranked.c.checkins, ranked.c.best_streak,
                Member.first_name, Member.last_name, Member.code,
            )
            .join(Member, Member.id == ranked.c.member_id)
            .order_by(ranked.c.rank)
            .limit(limit)
        )
    ).all()
    return [
        LeaderboardRow(
            rank=int(row.rank), member_id=int(row.member_id),
            name=public_name(row.first_name, row.last_name, row.code),
            checkins=int(row.checkins), best_streak=int(row.best_streak),
        )
        for row in rows
    ]


async def rank_of(
    session: AsyncSession, shop: Shop, member_id: int, year: int, month: int
) -> MemberRank | None:
    """The member's place on the month's leaderboard; None without a check-in that month."""
    ranked = _ranked(year, month).subquery()
    row = (
        await session.execute(select(ranked).where(ranked.c.member_id == member_id))
    ).one_or_none()
    if row is None:
        return None
    return MemberRank(
        rank=int(row.rank), of=int(row.of), checkins=int(row.checkins),
        best_streak=int(row.best_streak),
    )
