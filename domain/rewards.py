"""The rewards mall: coupons, gifts and services for points.

The catalog is the live one (``domain.catalog``: items admins edit, seeded from the program);
what is left of each lives in ``reward_stock``, seeded the first time the reward is redeemed
or an admin sets it. A paused item is not in the mall. A redemption takes the points
and issues the coupon in one transaction, and every refusal (frozen, tier too low, over the
member's limit, not enough points, out of stock) leaves everything as it was.

Races: the member's row is locked first, so one member's concurrent redemptions are counted
one after the other against the limit; stock is taken by one conditional UPDATE
(``remaining > 0``) whose row count decides; points by the ledger's conditional spend.

Double taps: a confirmation screen carries a token (``confirmation_token``) keyed with the
shop's secret and bound to the member, the reward and how many of it the member had when
shown. A redemption from the chat is made only with the token for the count the member has
now, so one screen redeems once, however often (or with whatever crafted data) it is pressed.

Changes: each item has a version that every admin change raises. A confirmation screen carries
the version it showed; a redemption with another version (the price or terms changed while
the member looked) is refused (RewardChanged) and the chat asks again with the terms of now.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain import catalog as live_catalog
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


class RewardChanged(DomainError):
    """The item changed (price, terms) since the member's confirmation screen was shown."""

    code = "reward_changed"
    default_message = "the reward changed since it was shown"


class RewardTierTooLow(DomainError):
    code = "reward_tier_too_low"
    default_message = "the reward needs a higher tier"


class RewardUnaffordable(InsufficientPoints):
    """Not enough points for a reward: says the cost and what is missing."""

    code = "reward_unaffordable"


def source_of(reward_key: str) -> str:
    """The coupon source of a reward's coupons; the per-member limit counts these."""
    return f"{REWARD_SOURCE}{reward_key}"


async def find_reward(session: AsyncSession, shop: Shop, key: str) -> live_catalog.CatalogItem:
    """The mall's item with that key as it is now, or RewardNotFound (a crafted or old button,
    or an item an admin paused)."""
    item = await live_catalog.reward(session, shop, key)
    if item is None or item.paused:
        raise RewardNotFound(key=key)
    return item


@dataclass(frozen=True)
class Offer:
    """A reward as one member sees it now."""

    reward: Reward
    remaining: int
    redeemed: int  # how many times this member has redeemed it
    balance: int
    min_tier: Tier | None
    tier_ok: bool
    version: int = 0  # the item's version when read (domain.catalog)

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


async def _remaining(
    session: AsyncSession, items: list[live_catalog.CatalogItem]
) -> dict[str, int]:
    rows = (await session.execute(select(RewardStock.reward_key, RewardStock.remaining))).all()
    stored = {key: int(left) for key, left in rows}
    return {i.reward.key: stored.get(i.reward.key, i.reward.stock) for i in items}


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
    """Every item of the mall now (paused ones left out), in the catalog's order, as
    ``member`` sees it: what is left, how often the member has redeemed it, whether tier and
    balance allow it."""
    async with read_transaction(session):
        items = await live_catalog.rewards(session, shop)
        remaining = await _remaining(session, items)
        redeemed = await _redeemed(session, member.id)
        balance = await session.scalar(
            select(Member.points_balance).where(Member.id == member.id)
        )
    return [
        Offer(
            reward=item.reward,
            remaining=remaining[item.reward.key],
            redeemed=redeemed.get(item.reward.key, 0),
            balance=int(balance or 0),
            min_tier=_min_tier(shop, item.reward),
            tier_ok=_tier_ok(shop, item.reward, member.tier),
            version=item.version,
        )
        for item in items
    ]


async def offer(session: AsyncSession, shop: Shop, member: Member, key: str) -> Offer:
    """One reward as ``member`` sees it. Raises RewardNotFound for a key not in the mall."""
    found = next((o for o in await catalog(session, shop, member) if o.reward.key == key), None)
    if found is None:
        raise RewardNotFound(key=key)
    return found


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
    session: AsyncSession, shop: Shop, member_id: int, key: str, *, confirmation: str | None,
    version: int | None = None,
) -> Redemption:
    """Take the reward's points and issue its coupon, in one transaction. Refuses, changing
    nothing, a frozen member (MemberFrozen), a tier below the reward's (RewardTierTooLow), a
    member at the reward's limit (RewardLimitReached), a balance below the cost
    (RewardUnaffordable) and an empty stock (RewardOutOfStock). ``confirmation`` is the token
    of the screen the member confirmed on (``confirmation_token``); any other value, a second
    use of the same screen (a double tap) among them, is refused (RewardAlreadyRedeemed).
    None only for a door without a confirmation screen: every chat press gives a token.
    ``version`` is the item's version the screen showed: another one now (an admin changed
    the item meanwhile) is refused with RewardChanged, changing nothing."""
    source = source_of(key)

    async def attempt() -> Redemption:
        async with write_transaction(session):
            item = await find_reward(session, shop, key)
            if version is not None and item.version != version:
                raise RewardChanged(name=item.reward.name)
            reward = item.reward
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
            view = coupon_view(shop, coupon, reward_names={reward.key: reward.name})
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

