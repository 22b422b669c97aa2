"""The rewards mall: coupons, gifts and services for points.

The catalog is the program's ``rewards``; what is left of each lives in ``reward_stock``,
seeded from the program the first time the reward is redeemed. A redemption takes the points
and issues the coupon in one transaction, and every refusal (frozen, tier too low, over the
member's limit, not enough points, out of stock) leaves everything as it was.

Races: the member's row is locked first, so one member's concurrent redemptions are counted
one after the other against the limit; stock is taken by one conditional UPDATE
(``remaining > 0``) whose row count decides; points by the ledger's conditional spend.

Double taps: a confirmation screen carries a token (``confirmation_token``) keyed with the
shop's secret and bound to the member, the reward and how many of it the member had when
shown. A redemption from the chat is made only with the token for the count the member has
now, so one screen redeems once, however often (or with whatever crafted data) it is pressed.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain import points
from domain.coupons import REWARD_SOURCE, coupon_view, issue_coupon
from domain.errors import DomainError, InsufficientPoints, MemberFrozen, MemberNotFound
from domain.idempotency import with_retry_on_race
from domain.members import FROZEN
from domain.models import Coupon, Member, RewardStock
from domain.program import Reward, Tier
from domain.shop import Shop
from domain.transaction import read_transaction, write_transaction

LEDGER_KIND = "reward"
CONFIRMATION_PURPOSE = "reward confirmation"
CONFIRMATION_LENGTH = 16  # hex characters: fits a callback's 64 bytes with a 25-character key


class RewardNotFound(DomainError):
    code = "reward_not_found"
    default_message = "no such reward in the mall"


class RewardOutOfStock(DomainError):
    code = "reward_out_of_stock"
    default_message = "the reward is out of stock"


class RewardLimitReached(DomainError):
    code = "reward_limit_reached"
    default_message = "the member has redeemed this reward as often as allowed"


class RewardAlreadyRedeemed(DomainError):
    code = "reward_already_redeemed"
    default_message = "this confirmation was already used"


class RewardTierTooLow(DomainError):
    code = "reward_tier_too_low"
    default_message = "the reward needs a higher tier"


class RewardUnaffordable(InsufficientPoints):
    """Not enough points for a reward: says the cost and what is missing."""

    code = "reward_unaffordable"


def source_of(reward_key: str) -> str:
    """The coupon source of a reward's coupons; the per-member limit counts these."""
    return f"{REWARD_SOURCE}{reward_key}"


def find_reward(shop: Shop, key: str) -> Reward:
    """The program's reward with that key, or RewardNotFound (e.g. a crafted or old button)."""
    reward = next((r for r in shop.program.rewards if r.key == key), None)
    if reward is None:
        raise RewardNotFound(key=key)
    return reward


@dataclass(frozen=True)
class Offer:
    """A reward as one member sees it now."""

    reward: Reward
    remaining: int
    redeemed: int  # how many times this member has redeemed it
    balance: int
    min_tier: Tier | None
    tier_ok: bool

    @property
    def affordable(self) -> bool:
        return self.balance >= self.reward.cost

    @property
    def missing(self) -> int:
        return max(self.reward.cost - self.balance, 0)

    @property
    def in_stock(self) -> bool:
        return self.remaining > 0

    @property
    def limit_reached(self) -> bool:
        return self.redeemed >= self.reward.per_member_limit

    @property
    def available(self) -> bool:
        return self.tier_ok and self.affordable and self.in_stock and not self.limit_reached


def _tier_ok(shop: Shop, reward: Reward, member_tier: str) -> bool:
    if reward.min_tier is None:
        return True
    program = shop.program
    return program.tier_index(member_tier) >= program.tier_index(reward.min_tier)


def _min_tier(shop: Shop, reward: Reward) -> Tier | None:
    return shop.program.tier(reward.min_tier) if reward.min_tier is not None else None


async def _remaining(session: AsyncSession, shop: Shop) -> dict[str, int]:
    rows = (await session.execute(select(RewardStock.reward_key, RewardStock.remaining))).all()
    stored = {key: int(left) for key, left in rows}
    return {r.key: stored.get(r.key, r.stock) for r in shop.program.rewards}


async def _redeemed(session: AsyncSession, member_id: int) -> dict[str, int]:
    rows = (
        await session.execute(
            select(Coupon.source, func.count(Coupon.id))
            .where(Coupon.member_id == member_id, Coupon.source.startswith(REWARD_SOURCE))
            .group_by(Coupon.source)
        )
    ).all()
    return {str(source).removeprefix(REWARD_SOURCE): int(n) for source, n in rows}


async def catalog(session: AsyncSession, shop: Shop, member: Member) -> list[Offer]:
    """Every reward of the program, in the program's order, as ``member`` sees it: what is
    left, how often the member has redeemed it, whether tier and balance allow it."""
    async with read_transaction(session):
        remaining = await _remaining(session, shop)
        redeemed = await _redeemed(session, member.id)
        balance = await session.scalar(
            select(Member.points_balance).where(Member.id == member.id)
        )
    return [
        Offer(
            reward=reward,
            remaining=remaining[reward.key],
            redeemed=redeemed.get(reward.key, 0),
            balance=int(balance or 0),
            min_tier=_min_tier(shop, reward),
            tier_ok=_tier_ok(shop, reward, member.tier),
        )
        for reward in shop.program.rewards
    ]


async def offer(session: AsyncSession, shop: Shop, member: Member, key: str) -> Offer:
    """One reward as ``member`` sees it. Raises RewardNotFound for a key not in the program."""
    find_reward(shop, key)
    return next(o for o in await catalog(session, shop, member) if o.reward.key == key)


def check_redeemable(offer: Offer, member: Member) -> None:
    """Raise the refusal a redemption would meet now, if any (a preview: ``redeem`` decides)."""
    if member.status == FROZEN:
        raise MemberFrozen()
    _check(offer.reward, offer.min_tier, tier_ok=offer.tier_ok, redeemed=offer.redeemed,
           balance=offer.balance)
    if not offer.in_stock:
        raise RewardOutOfStock(name=offer.reward.name)


def _check(
    reward: Reward, min_tier: Tier | None, *, tier_ok: bool, redeemed: int, balance: int
) -> None:
    if not tier_ok:
        assert min_tier is not None
        raise RewardTierTooLow(name=reward.name, tier_name=min_tier.name)
    if redeemed >= reward.per_member_limit:
        raise RewardLimitReached(name=reward.name, limit=reward.per_member_limit)
    if balance < reward.cost:
        raise RewardUnaffordable(
            name=reward.name, cost=reward.cost, balance=balance, needed=reward.cost,
            missing=reward.cost - balance,
        )


@dataclass(frozen=True)
class Redemption:
    reward: Reward
    coupon_id: int
    code: str
    grouped_code: str
    valid_until: date  # the last local day
    cost: int
    balance: int


def confirmation_token(shop: Shop, member_id: int, key: str, redeemed: int) -> str:
    """The token of a confirmation screen: for this member and reward, when they had
    ``redeemed`` of it. Keyed with the shop's secret, so nobody can make up the token of a
    later count; a redemption with it makes the count, and so the token, stale."""
    message = f"{member_id}:{key}:{redeemed}".encode()
    digest = hmac.new(shop.secret_for(CONFIRMATION_PURPOSE), message, hashlib.sha256)
    return digest.hexdigest()[:CONFIRMATION_LENGTH]


async def redeem(
    session: AsyncSession, shop: Shop, member_id: int, key: str, *, confirmation: str | None
) -> Redemption:
    """Take the reward's points and issue its coupon, in one transaction. Refuses, changing
    nothing, a frozen member (MemberFrozen), a tier below the reward's (RewardTierTooLow), a
    member at the reward's limit (RewardLimitReached), a balance below the cost
    (RewardUnaffordable) and an empty stock (RewardOutOfStock). ``confirmation`` is the token
    of the screen the member confirmed on (``confirmation_token``); any other value, a second
    use of the same screen (a double tap) among them, is refused (RewardAlreadyRedeemed).
    None only for a door without a confirmation screen: every chat press gives a token."""
    reward = find_reward(shop, key)
    source = source_of(reward.key)

    async def attempt() -> Redemption:
        async with write_transaction(session):
            member = await session.scalar(
                select(Member)
                .where(Member.id == member_id)
                # FOR NO KEY UPDATE, as domain.points locks: it does not conflict with the
                # key-share lock a concurrent order of this member holds, so no deadlock.
                .with_for_update(key_share=True)
                .execution_options(populate_existing=True)
            )
            if member is None:
                raise MemberNotFound(member_id=member_id)
            if member.status == FROZEN:
                raise MemberFrozen()
            # Counted under the member's lock: a concurrent redemption of the same member
            # waits here and then sees this one's coupon.
            redeemed = int(
                await session.scalar(
                    select(func.count(Coupon.id)).where(
                        Coupon.member_id == member_id, Coupon.source == source
                    )
                )
                or 0
            )
            _check(
                reward, _min_tier(shop, reward), tier_ok=_tier_ok(shop, reward, member.tier),
                redeemed=redeemed, balance=member.points_balance,
            )
            expected = confirmation_token(shop, member_id, reward.key, redeemed)
            if confirmation is not None and not hmac.compare_digest(
                confirmation.encode(), expected.encode()
            ):
                raise RewardAlreadyRedeemed()
            await _take_one(session, reward)
            coupon = await issue_coupon(
                session, shop, member_id, source=source, kind=reward.kind, value=reward.value,
                min_spend=reward.min_spend, valid_days=reward.valid_days,
            )
            posting = await points.spend(
                session, shop, member_id, kind=LEDGER_KIND, amount=reward.cost,
                reason=f"reward {reward.key}",
                # Unique per redemption; a twin that slipped past the lock would collide here.
                key=f"{source}:{member_id}:{redeemed + 1}",
                source_ref=f"coupon:{coupon.code}",
            )
            view = coupon_view(shop, coupon)
            return Redemption(
                reward=reward, coupon_id=coupon.id, code=coupon.code,
                grouped_code=view.grouped_code, valid_until=view.valid_until,
                cost=reward.cost, balance=posting.balance,
            )

    return await with_retry_on_race(session, attempt)


async def _take_one(session: AsyncSession, reward: Reward) -> None:
    """One unit of stock, or RewardOutOfStock. The row is seeded from the program the first
    time; on PostgreSQL two first redemptions may both insert it, and the loser's unique
    violation makes ``with_retry_on_race`` run the redemption again, finding the row."""
    exists = await session.scalar(
        select(RewardStock.reward_key).where(RewardStock.reward_key == reward.key)
    )
    if exists is None:
        await session.execute(
            insert(RewardStock).values(reward_key=reward.key, remaining=reward.stock)
        )
    taken = await session.execute(
        update(RewardStock)
        .where(RewardStock.reward_key == reward.key, RewardStock.remaining > 0)
        .values(remaining=RewardStock.remaining - 1)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise RewardOutOfStock(name=reward.name)

