"""What the shop sees of its program: members, lifecycle, sales, points, benefit cost,
engagement and pushes for a period, as set-based SQL that runs alike on SQLite and PostgreSQL.

A period is a range of local days (``from`` and ``to`` both included), turned into UTC instants
at the shop's local midnights. Figures are integers (money in minor units, points); rates are
percentages rounded down to one decimal, ``None`` when there is nothing to divide by.

What the numbers rest on, so an operator can read them right:
* tiers and lifecycle stages are the members' *current* ones (the tables keep no daily
  snapshot); stage moves are members who entered their current stage within the period;
* revenue is the orders' amounts (after the tier price, before coupons and points) dated in
  the period, less the refunds made in it; "paid" is what was paid in cash after both;
* the tier discount is *estimated*: the till sends the amount after its tier discount and no
  field for the discount itself, so it is taken back from the amount at the member's current
  tier's percent (``amount * pct / (100 - pct)``, rounded down, per tier);
* a reward-mall item that is not an amount off (a free item, a gift at the counter) is valued
  at the points it cost, at the till's offset rate; amount-off rewards cost what they took off
  orders, counted with the coupon discounts.

The big figures come from one pass over the members joined with per-member aggregates of
their orders and check-ins, one pass over the period's ledger entries and one over the 12
months' growth: the monthly report on a million members stays a few table scans.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    case,
    func,
    literal,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from domain.campaigns import NpsFigures, latest_nps
from domain.growth import BEHAVIOUR, PURCHASE, months_before
from domain.models import (
    BehaviourEvent,
    CheckIn,
    Coupon,
    GrowthEntry,
    LedgerEntry,
    Member,
    Order,
    PointsLot,
    Push,
    Refund,
    StarPayment,
    UTCDateTime,
)
from domain.money import MINOR_PER_UNIT
from domain.shop import Shop
from domain.sql import unindexed

CONVERSION_DAYS = 14
EXPIRING_DAYS = 30
PYRAMID_STEP = 10  # the 1:10 rule: each tier about a tenth of the one below
STAGES = ("new", "active", "dormant", "churned")
OFFER_PUSHES = {  # push kind -> the coupon source(s) its offer carries
    "dormant_wakeup": ("dormant_wakeup",),
    "churned_winback": ("churned_winback",),
    "birthday": ("birthday_buy_one_get_one", "birthday_free_item", "birthday_gift_pack"),
}
BLOCKED_ERROR = "blocked by the member"  # bot/sender.py's reason for a 403
STREAK_BUCKETS = ((1, 6), (7, 20), (21, None))  # check-in streaks: under a week, week, challenge


def rate(part: int, whole: int) -> Decimal | None:
    """``part`` as a percentage of ``whole``, rounded down to one decimal; None for 0/0."""
    if whole <= 0:
        return None
    return (Decimal(part) * 100 / Decimal(whole)).quantize(Decimal("0.1"), ROUND_DOWN)


def ratio(part: int, whole: int, places: str = "0.01") -> Decimal | None:
    if whole <= 0:
        return None
    return (Decimal(part) / Decimal(whole)).quantize(Decimal(places), ROUND_DOWN)


@dataclass(frozen=True)
class Period:
    """Local days ``first`` to ``last``, both included."""

    first: date
    last: date

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError("a period ends on or after its first day")

    @classmethod
    def month(cls, year: int, month: int) -> Period:
        return cls(date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1]))

    @classmethod
    def month_of(cls, day: date, back: int = 0) -> Period:
        """The calendar month of ``day``, or the one ``back`` months before it."""
        index = day.year * 12 + day.month - 1 - back
        return cls.month(index // 12, index % 12 + 1)

    @classmethod
    def months_to(cls, day: date, count: int) -> Period:
        """The ``count`` calendar months ending with the month of ``day``."""
        return cls(cls.month_of(day, count - 1).first, cls.month_of(day).last)

    @property
    def key(self) -> str:
        return f"{self.first.isoformat()}_{self.last.isoformat()}"

    def bounds(self, shop: Shop) -> tuple[datetime, datetime]:
        """[start, end) in UTC: local midnight of ``first`` to local midnight after ``last``."""
        return local_midnight(shop, self.first), local_midnight(shop, self.last + timedelta(1))

    def months(self) -> list[Period]:
        """The calendar months the period touches, each cut to the period."""
        found, day = [], self.first
        while day <= self.last:
            month = Period.month_of(day)
            found.append(Period(max(month.first, self.first), min(month.last, self.last)))
            day = month.last + timedelta(days=1)
        return found


def local_midnight(shop: Shop, day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=shop.tz).astimezone(UTC)


def utc(instant: datetime) -> ColumnElement[datetime]:
    """A UTC instant as a bound parameter of the UTC column type (naive UTC on every dialect)."""
    return literal(instant, UTCDateTime())


# ---- figures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TierFigures:
    key: str
    members: int
    share: Decimal | None  # percent of all members
    ratio_to_next: Decimal | None  # members of this tier per member of the next one up
    revenue: int
    orders: int
    threshold: int
    suggested_threshold: int | None  # 12-month growth that would make 1000:100:10:1 today


@dataclass(frozen=True)
class MemberFigures:
    total: int
    new: int
    tiers: list[TierFigures]
    pyramid_target: list[int]  # 1000:100:10:1 on today's total, lowest tier first


@dataclass(frozen=True)
class LifecycleFigures:
    stages: dict[str, int]
    moves: dict[str, int]  # members who entered their current stage within the period
    churned: int  # crossed into "churned" within the period
    churn_rate: Decimal | None  # of the members not churned at the start
    lapsed_at_start: int  # dormant or churned when the period began
    reactivated: int  # of those, bought again within the period
    reactivation_rate: Decimal | None
    monthly_active: int  # a purchase or a check-in within the period
    active_share: Decimal | None


@dataclass(frozen=True)
class SalesFigures:
    orders: int
    revenue: int  # order amounts less refunds made in the period
    gross: int
    refunds: int
    paid: int
    buyers: int
    average_order: int | None
    frequency: Decimal | None  # orders per buying member
    arpu: int | None  # revenue per member
    repeat_buyers: int
    repeat_rate: Decimal | None


@dataclass(frozen=True)
class PointsFigures:
    earned: int
    spent: int
    returned: int  # offsets given back by refunds
    expired: int
    clawed_back: int
    outstanding: int
    liability: int  # minor units at the offset rate
    expiring_soon: int  # in the next EXPIRING_DAYS days


@dataclass(frozen=True)
class BenefitFigures:
    source: str  # coupon source: welcome, birthday_free_item, reward:<key>, ...
    granted: int
    used: int
    use_rate: Decimal | None
    converted: int  # owners who bought within CONVERSION_DAYS of getting it
    conversion_rate: Decimal | None
    cost: int


@dataclass(frozen=True)
class CostFigures:
    coupon_discounts: int
    points_offsets: int
    reward_items: int
    tier_discounts: int  # estimated
    total: int
    revenue: int
    ratio: Decimal | None  # percent of revenue
    red_line: int  # percent
    over: bool
    benefits: list[BenefitFigures]


@dataclass(frozen=True)
class EngagementFigures:
    checkins: int
    checkin_members: int
    checkin_share: Decimal | None
    streaks: list[tuple[int, int | None, int]]  # (from, to or None, members)
    inviters: int
    referred_joined: int
    referred_first_purchase: int
    reviews: int
    shares: int


@dataclass(frozen=True)
class PushFigures:
    kind: str
    written: int
    sent: int
    pending: int
    skipped: int
    failed: int
    blocked: int
    coupons_used: int | None = None  # offer pushes: members who used the offer's coupon
    use_rate: Decimal | None = None


@dataclass(frozen=True)
class PlusFigures:
    """PLUS, the paid membership: Stars taken in the period (refunds of the period's
    payments taken off), members with PLUS now, and how many trials turned into payment."""

    stars: int
    payments: int
    refunded: int  # payments of the period refunded since
    active: int  # trial or paid, now
    paid_active: int
    trials: int  # members who ever started the trial
    converted: int  # of them, members who ever paid
    conversion: Decimal | None


@dataclass(frozen=True)
class Report:
    period: Period
    generated_at: datetime
    members: MemberFigures
    lifecycle: LifecycleFigures
    sales: SalesFigures
    points: PointsFigures
    cost: CostFigures
    engagement: EngagementFigures
    pushes: list[PushFigures]
    plus: PlusFigures | None = None  # when the program sells PLUS
    nps: NpsFigures | None = None  # the latest NPS survey answered before the period's end


@dataclass(frozen=True)
class MonthFigures:
    """One month of the charts' history."""

    period: Period
    revenue: int
    benefit_cost: int
    earned: int
    spent: int
    expired: int


# ---- the report ---------------------------------------------------------------------------


@dataclass
class _MemberPass:
    total: int = 0
    new: int = 0
    tiers: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    stages: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    moves: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    tier_orders: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    tier_revenue: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    orders: int = 0
    gross: int = 0
    coupon: int = 0
    offset: int = 0
    paid: int = 0
    buyers: int = 0
    repeat: int = 0
    churned_at_start: int = 0
    existed_at_start: int = 0
    churned: int = 0
    lapsed: int = 0
    reactivated: int = 0
    active: int = 0
    checkins: int = 0
    checkin_members: int = 0
    streaks: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    outstanding: int = 0


def _count_if(condition: ColumnElement[bool]) -> Any:
    return func.sum(case((condition, 1), else_=0))


def _total(column: Any) -> Any:
    return func.coalesce(func.sum(column), 0)


@dataclass(frozen=True)
class _Cuts:
    """The instants the lifecycle figures compare a member's last activity with."""

    start: datetime
    end: datetime
    dormant: datetime  # inactive since before this at the start: lapsed
    churn: datetime  # ... since before this: churned at the start
    churn_end: datetime  # last active before this, at the end: churned by then

    def flags(self, created: Any, before: Any, latest: Any) -> list[ColumnElement[bool]]:
        """Lapsed at the start, churned at the start, churned within the period: a member's
        last activity before the start is ``before``, before the end ``latest`` (the join
        date when there was no order)."""
        existed = created < utc(self.start)
        return [
            and_(existed, before < utc(self.dormant)),
            and_(existed, before < utc(self.churn)),
            and_(latest >= utc(self.churn), latest < utc(self.churn_end)),
        ]


async def _member_pass(
    session: AsyncSession, shop: Shop, period: Period, start: datetime, end: datetime
) -> _MemberPass:
    """Three set-based reads, each only over the rows it needs: the members by tier, stage
    and status (figures that hang on the join date, as if nobody had bought); the members
    with orders in the churn window up to the period's end, correcting those figures by
    their orders; and the members who checked in during the period.

    Orders older than the churn window decide nothing that the join date does not: a member
    without an order since then was already churned (and lapsed) at the start."""
    rules = shop.program.lifecycle
    cuts = _Cuts(
        start=start, end=end,
        dormant=start - timedelta(days=rules.dormant_days),
        churn=start - timedelta(days=rules.churned_days),
        churn_end=end - timedelta(days=rules.churned_days),
    )
    joined = Member.created_at
    as_if_idle = cuts.flags(joined, joined, joined)
    found = _MemberPass()
    members = (
        select(
            Member.tier, Member.stage, Member.status,
            func.count(),
            _count_if(joined >= utc(start)),
            _count_if(and_(Member.stage_since >= period.first, Member.stage_since <= period.last)),
            _count_if(joined < utc(start)),
            *(_count_if(flag) for flag in as_if_idle),
        )
        # Nearly every member joined before the end: read the groups' index, not the date's.
        .where(unindexed(joined) < utc(end))
        .group_by(Member.tier, Member.stage, Member.status)
    )
    for row in (await session.execute(members)).all():
        tier, stage, status, *figures = row
        if status == "deleted":
            continue
        count, new, moved, existed, lapsed, churned_start, churned = (
            int(v or 0) for v in figures
        )
        found.total += count
        found.new += new
        found.tiers[tier] += count
        found.stages[stage] += count
        found.moves[stage] += moved
        found.existed_at_start += existed
        found.lapsed += lapsed
        found.churned_at_start += churned_start
        found.churned += churned
    found.outstanding = int(
        await session.scalar(
            select(_total(Member.points_balance)).where(
                Member.points_balance > 0, Member.status != "deleted",
                unindexed(joined) < utc(end),
            )
        )
        or 0
    )
    await _orders_pass(session, cuts, as_if_idle, found)
    await _checkins_pass(session, period, start, end, found)
    return found


async def _orders_pass(
    session: AsyncSession, cuts: _Cuts, as_if_idle: list[ColumnElement[bool]],
    found: _MemberPass,
) -> None:
    """The period's sales by tier, and the lifecycle figures of the members who bought within
    the churn window: their orders replace the join date the members' read assumed."""
    start, end = cuts.start, cuts.end
    # Two per-member aggregates, each plain: the period's sums, and the last order before
    # the start and before the end over the churn window (a CASE in every sum costs more
    # than the second pass). Sorting the orders beats walking the member index with a
    # table read per order.
    sums = (
        select(
            Order.member_id.label("member_id"),
            func.count().label("n"),
            func.sum(Order.amount).label("amount"),
            func.sum(Order.coupon_discount).label("coupon"),
            func.sum(Order.offset).label("offset"),
            func.sum(Order.paid).label("paid"),
        )
        .where(Order.occurred_at >= utc(start), Order.occurred_at < utc(end))
        .group_by(unindexed(Order.member_id))
        .subquery()
    )
    lasts = (
        select(
            Order.member_id.label("member_id"),
            func.max(case((Order.occurred_at < utc(start), Order.occurred_at))).label("before"),
            func.max(Order.occurred_at).label("last"),
        )
        .where(Order.occurred_at >= utc(cuts.churn), Order.occurred_at < utc(end))
        .group_by(unindexed(Order.member_id))
        .subquery()
    )
    joined = Member.created_at
    real = cuts.flags(
        joined, func.coalesce(lasts.c.before, joined), func.coalesce(lasts.c.last, joined)
    )
    bought = sums.c.n.is_not(None)
    rows = await session.execute(
        select(
            Member.tier, Member.status,
            _total(sums.c.n), _total(sums.c.amount), _total(sums.c.coupon),
            _total(sums.c.offset), _total(sums.c.paid),
            _count_if(bought), _count_if(sums.c.n >= 2), _count_if(and_(real[0], bought)),
            *(_count_if(flag) for flag in real),
            *(_count_if(flag) for flag in as_if_idle),
        )
        .select_from(lasts)
        .join(Member, Member.id == lasts.c.member_id)
        .outerjoin(sums, sums.c.member_id == lasts.c.member_id)
        .where(joined < utc(end))
        .group_by(Member.tier, Member.status)
    )
    for tier, status, *figures in rows.all():
        n, amount, coupon, offset, paid, buyers, repeat, reactivated, *flags = (
            int(v or 0) for v in figures
        )
        # Orders of members who left still count as sales; the members themselves do not.
        found.orders += n
        found.gross += amount
        found.coupon += coupon
        found.offset += offset
        found.paid += paid
        found.tier_orders[tier] += n
        found.tier_revenue[tier] += amount
        found.buyers += buyers
        found.repeat += repeat
        if status == "deleted":
            continue
        lapsed, churned_start, churned = (a - b for a, b in zip(flags[:3], flags[3:], strict=True))
        found.lapsed += lapsed
        found.churned_at_start += churned_start
        found.churned += churned
        found.reactivated += reactivated
        found.active += buyers


async def _checkins_pass(
    session: AsyncSession, period: Period, start: datetime, end: datetime, found: _MemberPass
) -> None:
    """Check-ins of the period: how many, by whom, their streaks, and the members active by
    a check-in alone (no order in the period)."""
    checkins = (
        select(
            CheckIn.member_id.label("member_id"),
            func.count().label("n"),
            func.max(CheckIn.streak).label("streak"),
        )
        .where(CheckIn.day >= period.first, CheckIn.day <= period.last)
        .group_by(CheckIn.member_id)
        .subquery()
    )
    bought = (
        select(Order.id)
        .where(
            Order.member_id == checkins.c.member_id,
            Order.occurred_at >= utc(start), Order.occurred_at < utc(end),
        )
        .exists()
    )
    streak = checkins.c.streak
    rows = await session.execute(
        select(
            Member.status, _total(checkins.c.n), func.count(), _count_if(~bought),
            *(
                _count_if(and_(streak >= low, streak <= high) if high else streak >= low)
                for low, high in STREAK_BUCKETS
            ),
        )
        .select_from(checkins)
        .join(Member, Member.id == checkins.c.member_id)
        .where(Member.created_at < utc(end))
        .group_by(Member.status)
    )
    for status, *figures in rows.all():
        if status == "deleted":
            continue
        checkins_n, members, only_checked_in, *streaks = (int(v or 0) for v in figures)
        found.checkins += checkins_n
        found.checkin_members += members
        found.active += only_checked_in
        for index, count in enumerate(streaks):
            found.streaks[index] += count


async def growth_thresholds(session: AsyncSession, shop: Shop, members: int) -> list[int | None]:
    """The 12-month growth (behaviour capped as for tiers) that the member ranked at the
    1:10 ladder's cut would need: for each tier above the first, the growth of the last member
    inside its share of today's ``members`` (1 of 1111 for the top of four tiers, 11 for the
    next, 111 for the one below)."""
    tiers = shop.program.tiers
    weights = [PYRAMID_STEP ** (len(tiers) - 1 - i) for i in range(len(tiers))]
    whole = sum(weights)
    ranks = [
        max(1, members * sum(weights[i:]) // whole) if members else 0 for i in range(len(tiers))
    ]
    ranks[0] = 0
    deepest = max(ranks)
    if not deepest:
        return [None] * len(tiers)
    end = shop.now()
    begin = months_before(end, shop.program.tier_rules.window_months)
    cap = shop.program.growth.behaviour_share_cap_percent
    purchase = func.sum(case((GrowthEntry.source == PURCHASE, GrowthEntry.amount), else_=0))
    behaviour = func.sum(case((GrowthEntry.source == BEHAVIOUR, GrowthEntry.amount), else_=0))
    per_member = (
        select(purchase.label("p"), behaviour.label("b"))
        .where(GrowthEntry.occurred_at > utc(begin), GrowthEntry.occurred_at <= utc(end))
        .group_by(GrowthEntry.member_id)
        .subquery()
    )
    p = case((per_member.c.p > 0, per_member.c.p), else_=0)
    b = case((per_member.c.b > 0, per_member.c.b), else_=0)
    allowed = p * cap / (100 - cap)
    counted = (p + case((b < allowed, b), else_=allowed)).label("g")
    values = [
        int(v) for v in (
            await session.scalars(select(counted).order_by(counted.desc()).limit(deepest))
        ).all()
    ]
    # Members without growth in the window count as 0 below the ones listed.
    return [
        None if i == 0 else (values[r - 1] if r <= len(values) else 0)
        for i, r in enumerate(ranks)
    ]


async def _ledger(
    session: AsyncSession, start: datetime, end: datetime
) -> dict[tuple[str, bool], int]:
    """The period's ledger: sums of gains and of losses by kind (one scan)."""
    gains = func.sum(case((LedgerEntry.amount > 0, LedgerEntry.amount), else_=0))
    losses = func.sum(case((LedgerEntry.amount < 0, LedgerEntry.amount), else_=0))
    rows = await session.execute(
        select(LedgerEntry.kind, gains, losses)
        .where(LedgerEntry.created_at >= utc(start), LedgerEntry.created_at < utc(end))
        .group_by(LedgerEntry.kind)
    )
    found: dict[tuple[str, bool], int] = {}
    for kind, gained, lost in rows.all():
        found[(kind, True)] = int(gained or 0)
        found[(kind, False)] = int(lost or 0)
    return found


def _points(
    shop: Shop, ledger: dict[tuple[str, bool], int], outstanding: int, expiring: int
) -> PointsFigures:
    def of(kinds: tuple[str, ...], gains: bool) -> int:
        return sum(v for (k, sign), v in ledger.items() if k in kinds and sign == gains)

    earned = sum(v for (k, sign), v in ledger.items() if sign and k != "refund")
    return PointsFigures(
        earned=earned,
        spent=-of(("offset", "reward"), False),
        returned=of(("refund",), True),
        expired=-of(("expiry",), False),
        clawed_back=-of(("refund",), False),
        outstanding=outstanding,
        liability=points_value(shop, outstanding),
        expiring_soon=expiring,
    )


def points_value(shop: Shop, points: int) -> int:
    """Minor units ``points`` are worth at the till's offset rate (100 points = 1.00)."""
    return points * MINOR_PER_UNIT // shop.program.points.offset_points_per_unit


def tier_discount_estimate(percent: int, amount: int) -> int:
    """The tier discount behind ``amount`` (paid after it): amount * pct / (100 - pct)."""
    return amount * percent // (100 - percent) if percent < 100 else 0


async def _benefits(
    session: AsyncSession, shop: Shop, start: datetime, end: datetime
) -> tuple[list[BenefitFigures], int]:
    """Per coupon source: granted in the period, used (by now), converted, cost; and the
    reward-mall items valued at their points."""
    granted_in = and_(Coupon.created_at >= utc(start), Coupon.created_at < utc(end))
    rows = (
        await session.execute(
            select(
                Coupon.source, Coupon.kind, func.count(),
                func.sum(case((Coupon.status == "used", 1), else_=0)),
            )
            .where(granted_in)
            .group_by(Coupon.source, Coupon.kind)
        )
    ).all()
    granted: dict[str, int] = defaultdict(int)
    used: dict[str, int] = defaultdict(int)
    items = 0
    rewards = {f"reward:{r.key}": r for r in shop.program.rewards}
    for source, kind, count, used_count in rows:
        granted[source] += int(count)
        used[source] += int(used_count or 0)
        reward = rewards.get(source)
        if reward is not None and kind != "amount_off" and kind != "percent_off":
            items += int(count) * points_value(shop, reward.cost)
    # First order of the owner at or after getting the coupon; within 14 days converts.
    first_order = (
        select(func.min(Order.occurred_at))
        .where(Order.member_id == Coupon.member_id, Order.occurred_at >= Coupon.created_at)
        .correlate(Coupon)
        .scalar_subquery()
    )
    converted: dict[str, int] = defaultdict(int)
    stream = await session.stream(
        select(Coupon.source, Coupon.created_at, first_order.label("first"))
        .where(granted_in)
    )
    window = timedelta(days=CONVERSION_DAYS)
    async for source, created, first in stream:
        if first is None:
            continue
        first_at = first if isinstance(first, datetime) else datetime.fromisoformat(str(first))
        first_at = first_at.replace(tzinfo=UTC) if first_at.tzinfo is None else first_at
        if first_at - created <= window:
            converted[source] += 1
    costs: dict[str, int] = dict(
        (
            await session.execute(
                select(Coupon.source, func.sum(Order.coupon_discount))
                .join(Coupon, Coupon.id == Order.coupon_id)
                .where(Order.occurred_at >= utc(start), Order.occurred_at < utc(end))
                .group_by(Coupon.source)
            )
        ).all()
    )
    for source, count in granted.items():
        reward = rewards.get(source)
        if reward is not None and reward.kind not in ("amount_off", "percent_off"):
            costs[source] = int(costs.get(source) or 0) + count * points_value(shop, reward.cost)
    sources = sorted(set(granted) | set(costs))
    return [
        BenefitFigures(
            source=s, granted=granted[s], used=used[s], use_rate=rate(used[s], granted[s]),
            converted=converted[s], conversion_rate=rate(converted[s], granted[s]),
            cost=int(costs.get(s) or 0),
        )
        for s in sources
    ], items


async def _pushes(
    session: AsyncSession, start: datetime, end: datetime
) -> list[PushFigures]:
    blocked = and_(Push.status == "failed", Push.last_error == BLOCKED_ERROR)
    rows = (
        await session.execute(
            select(
                Push.kind, func.count(),
                *(func.sum(case((Push.status == s, 1), else_=0))
                  for s in ("sent", "pending", "skipped", "failed")),
                func.sum(case((blocked, 1), else_=0)),
            )
            .where(Push.created_at >= utc(start), Push.created_at < utc(end))
            .group_by(Push.kind)
            .order_by(Push.kind)
        )
    ).all()
    sources = [s for group in OFFER_PUSHES.values() for s in group]
    used = dict(
        (
            await session.execute(
                select(Coupon.source, func.count())
                .where(
                    Coupon.source.in_(sources), Coupon.status == "used",
                    Coupon.created_at >= utc(start), Coupon.created_at < utc(end),
                )
                .group_by(Coupon.source)
            )
        ).all()
    )
    figures = []
    for kind, written, sent, pending, skipped, failed, blocked_n in rows:
        offer = OFFER_PUSHES.get(kind)
        coupons_used = sum(int(used.get(s, 0)) for s in offer) if offer else None
        figures.append(
            PushFigures(
                kind=kind, written=int(written), sent=int(sent or 0),
                pending=int(pending or 0), skipped=int(skipped or 0),
                failed=int(failed or 0) - int(blocked_n or 0), blocked=int(blocked_n or 0),
                coupons_used=coupons_used,
                use_rate=rate(coupons_used, int(written)) if coupons_used is not None else None,
            )
        )
    return figures


REPORT_STEPS = 8  # calls of ``progress`` while a report is built


async def build_report(
    session: AsyncSession, shop: Shop, period: Period,
    progress: Callable[[], object] | None = None,
) -> Report:
    """Every figure of the period, in one read (the caller ends the transaction).
    ``progress`` is called after each of REPORT_STEPS steps (a command line's progress bar)."""
    step = progress or (lambda: None)
    start, end = period.bounds(shop)
    program = shop.program
    found = await _member_pass(session, shop, period, start, end)
    step()
    suggested = await growth_thresholds(session, shop, found.total)
    step()
    refunds = int(
        await session.scalar(
            select(func.coalesce(func.sum(Refund.amount), 0)).where(
                Refund.created_at >= utc(start), Refund.created_at < utc(end)
            )
        )
        or 0
    )
    step()
    ledger = await _ledger(session, start, end)
    step()
    today = shop.today()
    expiring = int(
        await session.scalar(
            select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(
                PointsLot.expires_on >= today,
                PointsLot.expires_on < today + timedelta(days=EXPIRING_DAYS),
                PointsLot.remaining > 0,
            )
        )
        or 0
    )
    step()
    benefits, items = await _benefits(session, shop, start, end)
    step()
    behaviour = dict(
        (
            await session.execute(
                select(BehaviourEvent.kind, func.count())
                .where(
                    BehaviourEvent.created_at >= utc(start), BehaviourEvent.created_at < utc(end)
                )
                .group_by(BehaviourEvent.kind)
            )
        ).all()
    )
    joined = (
        await session.execute(
            select(func.count(), func.count(func.distinct(Member.referrer_id))).where(
                Member.referrer_id.is_not(None),
                Member.created_at >= utc(start), Member.created_at < utc(end),
            )
        )
    ).one()
    first_purchases = int(
        await session.scalar(
            select(func.count()).where(
                Member.referrer_id.is_not(None),
                Member.first_purchase_at >= utc(start), Member.first_purchase_at < utc(end),
            )
        )
        or 0
    )
    step()
    pushes = await _pushes(session, start, end)
    step()

    revenue = found.gross - refunds
    total = found.total
    tier_discounts = sum(
        tier_discount_estimate(t.discount_percent, found.tier_revenue.get(t.key, 0))
        for t in program.tiers
    )
    weights = [PYRAMID_STEP ** (len(program.tiers) - 1 - i) for i in range(len(program.tiers))]
    tiers = []
    for i, tier in enumerate(program.tiers):
        count = found.tiers.get(tier.key, 0)
        above = found.tiers.get(program.tiers[i + 1].key, 0) if i + 1 < len(program.tiers) else 0
        tiers.append(
            TierFigures(
                key=tier.key, members=count, share=rate(count, total),
                ratio_to_next=ratio(count, above, "0.1") if i + 1 < len(program.tiers) else None,
                revenue=found.tier_revenue.get(tier.key, 0),
                orders=found.tier_orders.get(tier.key, 0), threshold=tier.threshold,
                suggested_threshold=suggested[i],
            )
        )
    cost_total = found.coupon + found.offset + items + tier_discounts
    red_line = program.benefits.cost_red_line_percent
    cost_ratio = rate(cost_total, revenue)
    not_churned = found.existed_at_start - found.churned_at_start
    return Report(
        period=period,
        generated_at=shop.now(),
        members=MemberFigures(
            total=total, new=found.new, tiers=tiers,
            pyramid_target=[total * w // sum(weights) for w in weights],
        ),
        lifecycle=LifecycleFigures(
            stages={s: found.stages.get(s, 0) for s in STAGES},
            moves={s: found.moves.get(s, 0) for s in STAGES},
            churned=found.churned, churn_rate=rate(found.churned, not_churned),
            lapsed_at_start=found.lapsed, reactivated=found.reactivated,
            reactivation_rate=rate(found.reactivated, found.lapsed),
            monthly_active=found.active, active_share=rate(found.active, total),
        ),
        sales=SalesFigures(
            orders=found.orders, revenue=revenue, gross=found.gross, refunds=refunds,
            paid=found.paid, buyers=found.buyers,
            average_order=found.gross // found.orders if found.orders else None,
            frequency=ratio(found.orders, found.buyers),
            arpu=revenue // total if total else None,
            repeat_buyers=found.repeat, repeat_rate=rate(found.repeat, found.buyers),
        ),
        points=_points(shop, ledger, found.outstanding, expiring),
        cost=CostFigures(
            coupon_discounts=found.coupon, points_offsets=found.offset, reward_items=items,
            tier_discounts=tier_discounts, total=cost_total, revenue=revenue, ratio=cost_ratio,
            red_line=red_line,
            over=cost_ratio is not None and cost_ratio > red_line,
            benefits=benefits,
        ),
        engagement=EngagementFigures(
            checkins=found.checkins, checkin_members=found.checkin_members,
            checkin_share=rate(found.checkin_members, total),
            streaks=[
                (low, high, found.streaks.get(i, 0))
                for i, (low, high) in enumerate(STREAK_BUCKETS)
            ],
            inviters=int(joined[1] or 0), referred_joined=int(joined[0] or 0),
            referred_first_purchase=first_purchases,
            reviews=int(behaviour.get("review", 0)), shares=int(behaviour.get("share", 0)),
        ),
        pushes=pushes,
        plus=await _plus(session, shop, start, end) if program.plus.enabled else None,
        nps=await latest_nps(session, until=end),
    )


async def _plus(session: AsyncSession, shop: Shop, start: datetime, end: datetime) -> PlusFigures:
    """Two set-based reads: the period's Stars payments, and members' PLUS now."""
    paid = (
        await session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((StarPayment.status == "paid", StarPayment.stars),
                                            else_=0)), 0),
                func.coalesce(func.sum(case((StarPayment.status == "paid", 0), else_=1)), 0),
            ).where(StarPayment.created_at >= utc(start), StarPayment.created_at < utc(end))
        )
    ).one()
    now = shop.now()
    ever_paid = select(StarPayment.id).where(StarPayment.member_id == Member.id).exists()
    on = (Member.plus_state != "none") & (Member.plus_until > now)
    members = (
        await session.execute(
            select(
                func.coalesce(func.sum(case((on, 1), else_=0)), 0),
                func.coalesce(func.sum(case((on & (Member.plus_state == "paid"), 1), else_=0)), 0),
                func.coalesce(func.sum(case((Member.plus_trial_used, 1), else_=0)), 0),
                func.coalesce(
                    func.sum(case((Member.plus_trial_used & ever_paid, 1), else_=0)), 0
                ),
            )
        )
    ).one()
    trials, converted = int(members[2]), int(members[3])
    return PlusFigures(
        stars=int(paid[1]), payments=int(paid[0]), refunded=int(paid[2]),
        active=int(members[0]), paid_active=int(members[1]), trials=trials,
        converted=converted, conversion=rate(converted, trials),
    )


async def monthly_history(session: AsyncSession, shop: Shop, period: Period) -> list[MonthFigures]:
    """Revenue, benefit cost and points earned/spent/expired for each month of ``period``:
    one pass over the orders and one over the ledger, a column per month."""
    months = period.months()
    bounds = [m.bounds(shop) for m in months]

    def within(column: Any, start: datetime, end: datetime) -> ColumnElement[bool]:
        return and_(column >= utc(start), column < utc(end))

    start, end = period.bounds(shop)
    order_columns = []
    for s, e in bounds:
        inside = within(Order.occurred_at, s, e)
        order_columns += [
            func.sum(case((inside, Order.amount), else_=0)),
            func.sum(case((inside, Order.coupon_discount + Order.offset), else_=0)),
        ]
    order_row = (
        await session.execute(
            select(*order_columns).select_from(Order).join(Member, Member.id == Order.member_id)
            .where(within(Order.occurred_at, start, end))
        )
    ).one()
    by_tier = (
        await session.execute(
            select(Member.tier, *(
                func.sum(case((within(Order.occurred_at, s, e), Order.amount), else_=0))
                for s, e in bounds
            )).select_from(Order).join(Member, Member.id == Order.member_id)
            .where(within(Order.occurred_at, start, end)).group_by(Member.tier)
        )
    ).all()
    refund_row = (
        await session.execute(
            select(*(
                func.sum(case((within(Refund.created_at, s, e), Refund.amount), else_=0))
                for s, e in bounds
            )).where(within(Refund.created_at, start, end))
        )
    ).one()
    ledger_columns = []
    for s, e in bounds:
        inside = within(LedgerEntry.created_at, s, e)
        for kinds, sign in ((None, True), (("offset", "reward"), False), (("expiry",), False)):
            kind_ok = (
                LedgerEntry.kind != "refund" if kinds is None else LedgerEntry.kind.in_(kinds)
            )
            signed = LedgerEntry.amount > 0 if sign else LedgerEntry.amount < 0
            ledger_columns.append(
                func.sum(case((and_(inside, kind_ok, signed), LedgerEntry.amount), else_=0))
            )
    ledger_row = (
        await session.execute(
            select(*ledger_columns).where(within(LedgerEntry.created_at, start, end))
        )
    ).one()
    items = await _reward_items_by_month(session, shop, bounds, start, end)
    history = []
    for i, month in enumerate(months):
        tiers = sum(
            tier_discount_estimate(
                shop.program.tier(row[0]).discount_percent, int(row[i + 1] or 0)
            )
            for row in by_tier
        )
        history.append(
            MonthFigures(
                period=month,
                revenue=int(order_row[2 * i] or 0) - int(refund_row[i] or 0),
                benefit_cost=int(order_row[2 * i + 1] or 0) + tiers + items[i],
                earned=int(ledger_row[3 * i] or 0),
                spent=-int(ledger_row[3 * i + 1] or 0),
                expired=-int(ledger_row[3 * i + 2] or 0),
            )
        )
    return history


async def _reward_items_by_month(
    session: AsyncSession, shop: Shop, bounds: list[tuple[datetime, datetime]],
    start: datetime, end: datetime,
) -> list[int]:
    """Reward-mall items (not amounts off) taken in each month, at their points' value."""
    items = {
        f"reward:{r.key}": points_value(shop, r.cost) for r in shop.program.rewards
        if r.kind not in ("amount_off", "percent_off")
    }
    if not items:
        return [0] * len(bounds)
    rows = (
        await session.execute(
            select(Coupon.source, *(
                func.sum(case((and_(Coupon.created_at >= utc(s), Coupon.created_at < utc(e)), 1),
                              else_=0))
                for s, e in bounds
            ))
            .where(Coupon.source.in_(list(items)), Coupon.created_at >= utc(start),
                   Coupon.created_at < utc(end))
            .group_by(Coupon.source)
        )
    ).all()
    return [
        sum(int(row[i + 1] or 0) * items[row[0]] for row in rows) for i in range(len(bounds))
    ]


@dataclass(frozen=True)
class CostReport:
    """The benefit cost of a period against its revenue, without the rest of the report."""

    period: Period
    cost: CostFigures


async def cost_report(session: AsyncSession, shop: Shop, period: Period) -> CostReport:
    """The same cost figures as ``build_report`` (the per-benefit list left out), in three
    small statements: what the daily red-line watch needs, without the member pass."""
    start, end = period.bounds(shop)
    program = shop.program
    in_period = and_(Order.occurred_at >= utc(start), Order.occurred_at < utc(end))
    by_tier = (
        await session.execute(
            select(
                Member.tier, func.sum(Order.amount), func.sum(Order.coupon_discount),
                func.sum(Order.offset),
            )
            .join(Member, Member.id == Order.member_id)
            .where(in_period)
            .group_by(Member.tier)
        )
    ).all()
    refunds = int(
        await session.scalar(
            select(func.coalesce(func.sum(Refund.amount), 0)).where(
                Refund.created_at >= utc(start), Refund.created_at < utc(end)
            )
        )
        or 0
    )
    rewards = {f"reward:{r.key}": r for r in program.rewards}
    granted = (
        await session.execute(
            select(Coupon.source, Coupon.kind, func.count())
            .where(
                Coupon.created_at >= utc(start), Coupon.created_at < utc(end),
                Coupon.source.in_(list(rewards)),
            )
            .group_by(Coupon.source, Coupon.kind)
        )
    ).all()
    items = sum(
        int(count) * points_value(shop, rewards[source].cost)
        for source, kind, count in granted
        if kind not in ("amount_off", "percent_off")
    )
    revenue_by_tier = {tier: int(amount or 0) for tier, amount, _c, _o in by_tier}
    coupon = sum(int(c or 0) for _t, _a, c, _o in by_tier)
    offset = sum(int(o or 0) for _t, _a, _c, o in by_tier)
    tier_discounts = sum(
        tier_discount_estimate(t.discount_percent, revenue_by_tier.get(t.key, 0))
        for t in program.tiers
    )
    revenue = sum(revenue_by_tier.values()) - refunds
    total = coupon + offset + items + tier_discounts
    red_line = program.benefits.cost_red_line_percent
    ratio_ = rate(total, revenue)
    return CostReport(
        period=period,
        cost=CostFigures(
            coupon_discounts=coupon, points_offsets=offset, reward_items=items,
            tier_discounts=tier_discounts, total=total, revenue=revenue, ratio=ratio_,
            red_line=red_line, over=ratio_ is not None and ratio_ > red_line, benefits=[],
        ),
    )


async def benefit_cost_to_date(session: AsyncSession, shop: Shop) -> CostReport:
    """The month so far (its 1st to today): what the red-line alert watches."""
    today = shop.today()
    return await cost_report(session, shop, Period(today.replace(day=1), today))

