"""Referrals: the welcome coupon at sign-up, the inviter's reward at the friend's first purchase
(capped per local calendar month), taken back when that purchase is refunded in full, what a
member's invitations brought, a monthly leaderboard.

Only members new to the shop count: the inviter is recorded once, when the friend registers
(domain.members.register), so a member who already exists can never be "invited" later and
nobody can invite themselves; a first purchase dated before the friend joined shows they were
not new either. An inviter who is frozen or has left gets nothing.

An invite link carries the member's referral token, never their member code: invite links are
shared widely, and a member code is what a till accepts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import ColumnElement, String, and_, cast, exists, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.orm.util import AliasedClass

from domain import catalog, outbox, points
from domain.coupons import issue_coupon
from domain.errors import MemberFrozen
from domain.growth import BEHAVIOUR, add_growth
from domain.member_code import ALPHABET, normalize_member_code
from domain.models import Coupon, GrowthEntry, LedgerEntry, Member, Order, Push
from domain.program import CouponTemplate
from domain.shop import Shop
from domain.tiers import check_upgrade, recheck_after_refund
from domain.transaction import read_transaction, write_transaction

WELCOME = "welcome"
REFERRAL = "referral"
ACTIVE = "active"  # domain.members.ACTIVE; not imported, as members imports this module
FROZEN = "frozen"
DELETED = "deleted"
START_PREFIX = "ref_"  # the /start parameter handlers/start.py reads
# 12 random Crockford characters: 60 bits, not guessable, and never the length of a member code
# (8), so a link's payload is read one way only. No check character: nobody types it.
TOKEN_LENGTH = 12
CLAWBACK = ":clawback"  # suffix of the keys that take a reward back (ledger and growth)
REWARD_PUSH = "referral_reward"  # written once per friend whose first purchase counted
TAKEN_BACK_PUSH = "referral_taken_back"
# A till's clock may run a little behind ours (orders allow the same skew ahead): a friend who
# joins at the counter and pays at once must not look like an earlier customer.
JOIN_TOLERANCE = timedelta(minutes=5)


def invite_link(bot_username: str, token: str) -> str:
    """The member's personal link: opening it starts the bot with ``ref_<referral token>``."""
    return f"https://t.me/{bot_username}?start={START_PREFIX}{token}"


def new_referral_token() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(TOKEN_LENGTH))


async def referral_token(session: AsyncSession, member: Member) -> str:
    """The member's referral token, made the first time it is asked for. Two /invite presses at
    once both try a conditional UPDATE (only while the column is NULL) and then read the row
    back, so both show the one token that won."""
    if member.referral_token is not None:
        return member.referral_token
    async with write_transaction(session):
        await session.execute(
            update(Member)
            .where(Member.id == member.id, Member.referral_token.is_(None))
            .values(referral_token=new_referral_token())
            .execution_options(synchronize_session=False)
        )
        token = await session.scalar(
            select(Member.referral_token).where(Member.id == member.id)
        )
    assert token is not None
    return token


async def find_referrer(session: AsyncSession, invited_by: str) -> Member | None:
    """The active member whose invite link carried ``invited_by`` (what followed ``ref_``).

    Links carry a referral token. Links shared before tokens existed carry the inviter's member
    code: they still credit the inviter, since breaking links members already shared would hurt
    them for nothing, as a member code alone no longer lets a till spend points (PROGRAM.md, At
    the till); no link the bot makes carries a member code any more."""
    token = invited_by.strip().upper()
    if len(token) == TOKEN_LENGTH and all(ch in ALPHABET for ch in token):
        found = Member.referral_token == token
    else:
        code = normalize_member_code(invited_by)
        if code is None:
            return None
        found = Member.code == code
    referrer: Member | None = await session.scalar(
        select(Member).where(found, Member.status == ACTIVE)
    )
    return referrer


def month_bounds(shop: Shop, year: int, month: int) -> tuple[datetime, datetime]:
    """The instants at which a local calendar month starts and the next one starts."""
    start = datetime(year, month, 1, tzinfo=shop.tz)
    following = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=shop.tz)
    return start, following


async def on_registered(
    session: AsyncSession, shop: Shop, member: Member, referrer: Member | None
) -> CouponTemplate | None:
    """Called inside the registration transaction of a new member: every new member, invited
    or not, gets the first-order (welcome) coupon, once, as the live catalog has it now. The
    inviter gets nothing yet. Returns the template given, or None."""
    template = await catalog.coupon_template(session, shop, WELCOME)
    if template is None:  # a shop may run without a welcome coupon (or paused it)
        return None
    issued = await session.scalar(
        select(Coupon.id).where(Coupon.member_id == member.id, Coupon.source == WELCOME)
    )
    if issued is not None:
        return None
    await issue_coupon(
        session, shop, member.id, source=WELCOME, kind=template.kind, value=template.value,
        min_spend=template.min_spend, valid_days=template.valid_days,
    )
    return template


def _kept(entry: type[LedgerEntry] | type[GrowthEntry], member_id: int) -> ColumnElement[bool]:
    """The member's referral rewards (points or growth) that were not taken back."""
    taken = aliased(entry, name="taken")
    return and_(
        entry.member_id == member_id, entry.kind == REFERRAL, entry.amount > 0,
        ~exists().where(taken.idempotency_key == entry.idempotency_key + CLAWBACK),
    )


async def _rewarded_in_month(session: AsyncSession, shop: Shop, inviter_id: int) -> int:
    """Rewards paid this local month and kept: one taken back (its friend's first purchase
    refunded in full) frees its place under the monthly cap, which limits what an inviter
    keeps; every friend is still rewarded once at most."""
    local = shop.now().astimezone(shop.tz)
    start, end = month_bounds(shop, local.year, local.month)
    if shop.program.points.referral > 0:
        rewards = select(func.count(LedgerEntry.id)).where(
            _kept(LedgerEntry, inviter_id),
            LedgerEntry.created_at >= start, LedgerEntry.created_at < end,
        )
    else:  # a program that rewards referrals with growth only
        rewards = select(func.count(GrowthEntry.id)).where(
            _kept(GrowthEntry, inviter_id),
            GrowthEntry.occurred_at >= start, GrowthEntry.occurred_at < end,
        )
    return int(await session.scalar(rewards) or 0)


def _reward_key(friend_id: int) -> str:
    return f"{REFERRAL}:{friend_id}"


async def on_first_purchase(
    session: AsyncSession, shop: Shop, member: Member, order_id: str, occurred_at: datetime
) -> None:
    """Called inside the order transaction of a member's first purchase: the inviter, if any
    and still active, gets the referral points and growth (never twice for one friend, at most
    the monthly cap), a tier check and a push. Beyond the cap the inviter gets no points and a
    gentle note instead. A first purchase dated before the member joined pays nothing, then or
    ever: it earns the member their points, but shows they were not new to the shop."""
    if member.referrer_id is None or member.referrer_id == member.id:
        return
    # PROGRAM.md, Risk controls: only for members new to the shop. A till may date an order up
    # to 30 days back; one dated before the sign-up means the friend already bought here, so
    # their first purchase after joining does not count either (it is not their first). The
    # caller only calls this for the purchase that sets first_purchase_at, so later orders
    # never come here.
    if occurred_at < member.created_at - JOIN_TOLERANCE:
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
    key = _reward_key(member.id)
    push_key = f"{REWARD_PUSH}:{member.id}"
    if await _handled(session, key, push_key):
        return
    cap = rules.points.referral_monthly_cap
    if await _rewarded_in_month(session, shop, inviter.id) >= cap:
        await outbox.enqueue(
            session, shop, member_id=inviter.id, kind=REWARD_PUSH, key=push_key,
            payload={"capped": True, "cap": cap, "points": 0, "growth": 0},
        )
        return
    earned, growth = rules.points.referral, rules.growth.referral
    # Nothing of the friend (their code) in the inviter's rows; the order (in source_ref, never
    # shown to the inviter) is how a full refund of it finds the reward again.
    reason = "referral: a friend's first purchase"
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
        session, shop, member_id=inviter.id, kind=REWARD_PUSH, key=push_key,
        payload={
            # never the friend's name: one member's push does not name another
            "capped": False, "cap": cap, "points": earned, "growth": growth,
            "balance": int(balance or 0), "tier": outcome.after, "previous_tier": outcome.before,
            "tier_changed": outcome.changed,
        },
    )


def _order_ref(order_id: str) -> str:
    return f"order:{order_id}"


async def on_full_refund(session: AsyncSession, shop: Shop, order: Order) -> None:
    """Called inside the refund transaction that refunds ``order`` in full: when it was the
    friend's first purchase that paid their inviter the referral reward, the reward is taken
    back as any refund takes points back (from its lot first, then the others, the rest as
    debt; PROGRAM.md, Refunds), with its growth and a tier re-check, and the inviter is told
    (never who the friend is). Once: the clawback is keyed by the friend. A partial refund
    leaves the reward, and so does a refund of any other order of the friend."""
    friend = (
        await session.execute(
            select(Member.referrer_id, Member.first_purchase_at).where(
                Member.id == order.member_id
            )
        )
    ).one_or_none()
    if friend is None or friend.referrer_id is None:
        return
    key = _reward_key(order.member_id)
    rewarded = (
        await session.execute(
            select(LedgerEntry.id, LedgerEntry.amount, LedgerEntry.source_ref)
            .where(LedgerEntry.idempotency_key == key)
        )
    ).one_or_none()
    growth = (
        await session.execute(
            select(GrowthEntry.amount, GrowthEntry.occurred_at)
            .where(GrowthEntry.idempotency_key == key)
        )
    ).one_or_none()
    if rewarded is None and growth is None:
        return  # nothing paid: no inviter, capped, frozen, or a purchase from before joining
    # Which order paid the reward: the points entry names it; a program paying growth only has
    # none, and then it is the order dated as the friend's first purchase.
    if rewarded is not None:
        if rewarded.source_ref != _order_ref(order.order_id):
            return
    elif friend.first_purchase_at != order.occurred_at:
        return
    inviter_id = friend.referrer_id
    status = await session.scalar(select(Member.status).where(Member.id == inviter_id))
    if status is None or status == DELETED:
        return  # an erased inviter's points went with the membership
    if await points.entry_exists(session, key + CLAWBACK) or await session.scalar(
        select(GrowthEntry.id).where(GrowthEntry.idempotency_key == key + CLAWBACK)
    ) is not None:
        return
    reason = "referral taken back: a friend's first purchase was refunded"
    taken = 0
    if rewarded is not None and rewarded.amount > 0:
        taken = rewarded.amount
        # kind "referral" as the reward, negative: the inviter's referral totals are net, and
        # the line is worded from its kind without the friend's order (domain.points).
        await points.claw_back(
            session, shop, inviter_id, kind=REFERRAL, amount=taken, reason=reason,
            key=key + CLAWBACK, source_ref=rewarded.source_ref, from_entry=rewarded.id,
        )
    growth_taken = 0
    if growth is not None and growth.amount > 0:
        growth_taken = growth.amount
        await add_growth(
            session, inviter_id, kind=REFERRAL, source=BEHAVIOUR, amount=-growth_taken,
            reason=reason, key=key + CLAWBACK,
            # dated like the reward, so both leave the 12-month window together
            occurred_at=growth.occurred_at,
        )
    outcome = await recheck_after_refund(session, shop, inviter_id)
    await session.flush()
    balance = await session.scalar(select(Member.points_balance).where(Member.id == inviter_id))
    await outbox.enqueue(
        session, shop, member_id=inviter_id, kind=TAKEN_BACK_PUSH,
        key=f"{TAKEN_BACK_PUSH}:{order.member_id}",
        payload={
            "points": taken, "growth": growth_taken, "balance": int(balance or 0),
            "tier": outcome.after, "previous_tier": outcome.before,
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


def _counted_friend(friend: type[Member] | AliasedClass[Member]) -> ColumnElement[bool]:
    """A friend whose first purchase counted as a referral: it was handled as one (the inviter
    was rewarded or, beyond the cap, told; a purchase dated before the friend joined never is)
    and it was not refunded in full (the reward is then taken back). The first purchase is the
    friend's order dated ``first_purchase_at``."""
    handled = aliased(Push, name="handled")
    refunded_first = aliased(Order, name="refunded_first")
    return and_(
        friend.first_purchase_at.is_not(None),
        exists().where(
            handled.key == literal(f"{REWARD_PUSH}:") + cast(friend.id, String)
        ),
        ~exists().where(
            refunded_first.member_id == friend.id,
            refunded_first.occurred_at == friend.first_purchase_at,
            refunded_first.refunded >= refunded_first.amount,
        ),
    )


@dataclass(frozen=True)
class ReferralSummary:
    joined: int  # friends who signed up through the member's link
    purchased: int  # of them, those whose first purchase counts (see _counted_friend)
    points: int  # referral points earned
    growth: int  # referral growth earned
    rewarded_this_month: int
    monthly_cap: int


async def referral_summary(session: AsyncSession, shop: Shop, member_id: int) -> ReferralSummary:
    """How many friends joined through the member's link, how many bought, and what the
    referrals earned the member (points and growth, all time, net of rewards taken back)."""
    async with read_transaction(session):
        joined = await session.scalar(
            select(func.count(Member.id)).where(Member.referrer_id == member_id)
        )
        purchased = await session.scalar(
            select(func.count(Member.id)).where(
                Member.referrer_id == member_id, _counted_friend(Member)
            )
        )
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
        joined=int(joined or 0), purchased=int(purchased or 0), points=int(earned or 0),
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
    first (active inviters only; friends whose purchase counts as a referral only; ties share
    a rank, then by earliest member)."""
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
            _counted_friend(friend),
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
                _counted_friend(Member),
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
    """The member's personal link (with their referral token, made on the first /invite) and
    what it brought. A frozen member is refused: their link would promise rewards that are
    not paid."""
    if member.status == FROZEN:
        raise MemberFrozen()
    token = await referral_token(session, member)
    summary = await referral_summary(session, shop, member.id)
    return Invitation(invite_link(bot_username, token), summary)
