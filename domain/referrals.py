"""Referrals: the welcome coupon at sign-up, the inviter's reward at the friend's first purchase
(capped per local calendar month), what a member's invitations brought, a monthly leaderboard.

Only members new to the shop count: the inviter is recorded once, when the friend registers
(domain.members.register), so a member who already exists can never be "invited" later and
nobody can invite themselves. An inviter who is frozen or has left gets nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from domain import outbox, points
from domain.coupons import issue_coupon
from domain.errors import MemberFrozen
from domain.growth import BEHAVIOUR, add_growth
from domain.models import Coupon, GrowthEntry, LedgerEntry, Member, Push
from domain.shop import Shop
from domain.tiers import check_upgrade
from domain.transaction import read_transaction

WELCOME = "welcome"
REFERRAL = "referral"
ACTIVE = "active"  # domain.members.ACTIVE; not imported, as members imports this module
FROZEN = "frozen"
START_PREFIX = "ref_"  # the /start parameter handlers/start.py reads


def invite_link(bot_username: str, member_code: str) -> str:
    """The member's personal link: opening it starts the bot with ``ref_<member code>``."""
    return f"https://t.me/{bot_username}?start={START_PREFIX}{member_code}"


def month_bounds(shop: Shop, year: int, month: int) -> tuple[datetime, datetime]:
    """The instants at which a local calendar month starts and the next one starts."""
    start = datetime(year, month, 1, tzinfo=shop.tz)
    following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=shop.tz)
    return start, following


async def on_registered(
    session: AsyncSession, shop: Shop, member: Member, referrer: Member | None
) -> None:
    """Called inside the registration transaction of a new member: every new member, invited
    or not, gets the first-order (welcome) coupon, once. The inviter gets nothing yet."""
    template = shop.program.coupon_template(WELCOME)
    if template is None:  # a shop may run without a welcome coupon
        return
    issued = await session.scalar(
        select(Coupon.id).where(Coupon.member_id == member.id, Coupon.source == WELCOME)
    )
    if issued is not None:
        return
    await issue_coupon(
        session, shop, member.id, source=WELCOME, kind=template.kind, value=template.value,
        min_spend=template.min_spend, valid_days=template.valid_days,
    )


async def _rewarded_in_month(session: AsyncSession, shop: Shop, inviter_id: int) -> int:
    local = shop.now().astimezone(shop.tz)
    start, end = month_bounds(shop, local.year, local.month)
    if shop.program.points.referral > 0:
        rewards = select(func.count(LedgerEntry.id)).where(
            LedgerEntry.member_id == inviter_id, LedgerEntry.kind == REFERRAL,
            LedgerEntry.created_at >= start, LedgerEntry.created_at < end,
        )
    else:  # a program that rewards referrals with growth only
        rewards = select(func.count(GrowthEntry.id)).where(
            GrowthEntry.member_id == inviter_id, GrowthEntry.kind == REFERRAL,
            GrowthEntry.occurred_at >= start, GrowthEntry.occurred_at < end,
        )
    return int(await session.scalar(rewards) or 0)


async def on_first_purchase(
    session: AsyncSession, shop: Shop, member: Member, order_id: str
) -> None:
    """Called inside the order transaction of a member's first purchase: the inviter, if any
    and still active, gets the referral points and growth (never twice for one friend, at most
    the monthly cap), a tier check and a push. Beyond the cap the inviter gets no points and a
    gentle note instead."""
    if member.referrer_id is None or member.referrer_id == member.id:
        return
    rules = shop.program
    # The inviter's row is locked first, so two friends buying at once are counted one after
    # the other against the cap (PostgreSQL; SQLite already holds the write lock). FOR NO KEY
    # UPDATE: the friend's order already holds a KEY SHARE lock on this row (the foreign key
    # of its updated member row), and a FOR UPDATE would deadlock two such orders.
    inviter = (
        await session.execute(
            select(Member.id, Member.status).where(Member.id == member.referrer_id)
            .with_for_update(key_share=True)
        )
    ).one_or_none()
    if inviter is None or inviter.status != ACTIVE:
        return
    key = f"{REFERRAL}:{member.id}"
    push_key = f"referral_reward:{member.id}"
    if await _handled(session, key, push_key):
        return
    cap = rules.points.referral_monthly_cap
    if await _rewarded_in_month(session, shop, inviter.id) >= cap:
        await outbox.enqueue(
            session, shop, member_id=inviter.id, kind="referral_reward", key=push_key,
            payload={"capped": True, "cap": cap, "points": 0, "growth": 0},
        )
        return
    earned, growth = rules.points.referral, rules.growth.referral
    reason = f"referral: first purchase of member {member.code}, order {order_id}"
    if earned > 0:
        await points.earn(
            session, shop, inviter.id, kind=REFERRAL, amount=earned, reason=reason, key=key,
            source_ref=f"order:{order_id}",
        )
    await add_growth(
        session, inviter.id, kind=REFERRAL, source=BEHAVIOUR, amount=growth, reason=reason,
        key=key, occurred_at=shop.now(),
    )
    outcome = await check_upgrade(session, shop, inviter.id)
    balance = await session.scalar(select(Member.points_balance).where(Member.id == inviter.id))
    await outbox.enqueue(
        session, shop, member_id=inviter.id, kind="referral_reward", key=push_key,
        payload={
            # never the friend's name: one member's push does not name another
            "capped": False, "cap": cap, "points": earned, "growth": growth,
            "balance": int(balance or 0), "tier": outcome.after, "previous_tier": outcome.before,
            "tier_changed": outcome.changed,
        },
    )


async def _handled(session: AsyncSession, key: str, push_key: str) -> bool:
    """Whether this friend's referral was already rewarded or refused for the cap."""
    if await points.entry_exists(session, key):
        return True
    for found in (
        select(GrowthEntry.id).where(GrowthEntry.idempotency_key == key),
        select(Push.id).where(Push.key == push_key),
    ):
        if await session.scalar(found) is not None:
            return True
    return False


@dataclass(frozen=True)
class ReferralSummary:
    joined: int  # friends who signed up through the member's link
    purchased: int  # of them, those who made a first purchase
    points: int  # referral points earned
    growth: int  # referral growth earned
    rewarded_this_month: int
    monthly_cap: int


async def referral_summary(session: AsyncSession, shop: Shop, member_id: int) -> ReferralSummary:
    """How many friends joined through the member's link, how many bought, and what the
    referrals earned the member (points and growth, all time)."""
    async with read_transaction(session):
        joined, purchased = (
            await session.execute(
                select(
                    func.count(Member.id),
                    func.count(Member.first_purchase_at),
                ).where(Member.referrer_id == member_id)
            )
        ).one()
        earned = await session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                LedgerEntry.member_id == member_id, LedgerEntry.kind == REFERRAL
            )
        )
        growth = await session.scalar(
            select(func.coalesce(func.sum(GrowthEntry.amount), 0)).where(
                GrowthEntry.member_id == member_id, GrowthEntry.kind == REFERRAL
            )
        )
        this_month = await _rewarded_in_month(session, shop, member_id)
    return ReferralSummary(
        joined=int(joined), purchased=int(purchased), points=int(earned or 0),
        growth=int(growth or 0), rewarded_this_month=this_month,
        monthly_cap=shop.program.points.referral_monthly_cap,
    )


@dataclass(frozen=True)
class LeaderboardRow:
    rank: int  # equal counts share a rank
    member_id: int
    first_name: str | None
    initial: str | None  # of the last name: a leaderboard never shows full names
    friends: int  # friends whose first purchase fell in the month


async def referral_leaderboard(
    session: AsyncSession, shop: Shop, year: int, month: int, limit: int = 10
) -> list[LeaderboardRow]:
    """The inviters whose friends made their first purchase in a local calendar month, most
    first (active inviters only; ties share a rank, then by earliest member)."""
    start, end = month_bounds(shop, year, month)
    inviter = aliased(Member, name="inviter")
    friend = aliased(Member, name="friend")
    friends = func.count(friend.id).label("friends")
    query = (
        select(inviter.id, inviter.first_name, inviter.last_name, friends)
        .select_from(friend)
        .join(inviter, friend.referrer_id == inviter.id)
        .where(
            friend.first_purchase_at >= start,
            friend.first_purchase_at < end,
            friend.id != inviter.id,
            inviter.status == ACTIVE,
        )
        .group_by(inviter.id, inviter.first_name, inviter.last_name)
        .order_by(friends.desc(), inviter.id)
        .limit(limit)
    )
    async with read_transaction(session):
        rows = (await session.execute(query)).all()
    board: list[LeaderboardRow] = []
    for position, (member_id, first_name, last_name, count) in enumerate(rows, start=1):
        rank = board[-1].rank if board and board[-1].friends == count else position
        first, initial = _short_name(first_name, last_name)
        board.append(LeaderboardRow(rank, member_id, first, initial, int(count)))
    return board


def _short_name(first_name: str | None, last_name: str | None) -> tuple[str | None, str | None]:
    """First word of the first name and one initial: many people type their full name into
    Telegram's first-name field."""
    words = (first_name or "").split()
    rest = (last_name or "").split() or words[1:]
    return (words[0] if words else None), (rest[0][:1].upper() if rest else None)


@dataclass(frozen=True)
class MonthlyLeaderboard:
    month: date  # the first day of the local month
    rows: list[LeaderboardRow]
    mine: int  # the asking member's friends who made their first purchase this month


async def monthly_leaderboard(
    session: AsyncSession, shop: Shop, member_id: int, limit: int = 10
) -> MonthlyLeaderboard:
    """This local month's leaderboard, with the asking member's own count beside it."""
    today = shop.today()
    rows = await referral_leaderboard(session, shop, today.year, today.month, limit)
    start, end = month_bounds(shop, today.year, today.month)
    async with read_transaction(session):
        mine = await session.scalar(
            select(func.count(Member.id)).where(
                Member.referrer_id == member_id,
                Member.id != member_id,
                Member.first_purchase_at >= start,
                Member.first_purchase_at < end,
            )
        )
    return MonthlyLeaderboard(today.replace(day=1), rows, int(mine or 0))


@dataclass(frozen=True)
class Invitation:
    """What /invite shows a member."""

    link: str
    summary: ReferralSummary


async def invitation(
    session: AsyncSession, shop: Shop, member: Member, bot_username: str
) -> Invitation:
    """The member's personal link and what it brought. A frozen member is refused: their link
    would promise rewards that are not paid."""
    if member.status == FROZEN:
        raise MemberFrozen()
    summary = await referral_summary(session, shop, member.id)
    return Invitation(invite_link(bot_username, member.code), summary)
