"""Behaviours the shop's other systems see (a review, a share): points and growth, once; a
congratulation push when the growth lifts the member's tier."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain import card_code, outbox, points
from domain.errors import IdempotencyConflict, InvalidInput, MemberFrozen, Reason
from domain.growth import BEHAVIOUR, add_growth
from domain.idempotency import check_request_id, fingerprint, with_retry_on_race
from domain.members import FROZEN, find_member
from domain.models import BehaviourEvent, Member
from domain.orders import Outcome
from domain.shop import Shop
from domain.tiers import check_upgrade
from domain.transaction import write_transaction

EVENT_KINDS = ("review", "share")
TIER_UPGRADE = "tier_upgrade"  # the push congratulating on a tier reached by a behaviour


@dataclass(frozen=True)
class EventReceipt:
    event_id: str
    kind: str
    member_code: str
    points_earned: int
    growth_earned: int
    balance: int
    tier: str
    tier_changed: bool


async def _event_member(
    session: AsyncSession, shop: Shop, member_query: str, event_id: str
) -> Member:
    """The member a till names by member code, phone or rotating card code. A till retrying an
    event after its card code has run out is still recognised, so that it gets the stored
    answer: the code must be genuine and name the member the event was recorded for."""
    if not card_code.looks_like_card_code(member_query):
        return await find_member(session, shop, member_query)
    try:
        return await find_member(
            session, shop, card_code.member_code_of(shop, member_query, field="code_or_phone")
        )
    except card_code.CardCodeRefused:
        named = card_code.member_code_of(
            shop, member_query, field="code_or_phone", any_age=True
        )
        recorded = await session.scalar(
            select(Member)
            .join(BehaviourEvent, BehaviourEvent.member_id == Member.id)
            .where(BehaviourEvent.event_id == event_id, Member.code == named)
        )
        if recorded is None:
            raise
        return recorded


async def record_event(
    session: AsyncSession, shop: Shop, *, member_query: str, event_id: str, kind: str
) -> Outcome[EventReceipt]:
    if kind not in EVENT_KINDS:
        raise InvalidInput("kind", Reason.UNKNOWN_KIND, kinds=list(EVENT_KINDS))
    check_request_id("event_id", event_id)

    async def attempt() -> Outcome[EventReceipt]:
        async with write_transaction(session):
            member = await _event_member(session, shop, member_query, event_id)
            digest = fingerprint(shop, {"member": member.id, "kind": kind})
            existing = await session.scalar(
                select(BehaviourEvent).where(BehaviourEvent.event_id == event_id)
            )
            if existing is not None:
                if not digest.matches(existing.request_hash):
                    raise IdempotencyConflict(id=event_id)
                return Outcome(EventReceipt(**json.loads(existing.response)), replayed=True)
            if member.status == FROZEN:
                raise MemberFrozen(member_code=member.code, note=member.frozen_reason)
            event = BehaviourEvent(
                event_id=event_id, request_hash=digest.digest, member_id=member.id, kind=kind,
                created_at=shop.now(),
            )
            session.add(event)
            await session.flush()
            earned = getattr(shop.program.points, kind)
            growth = getattr(shop.program.growth, kind)
            key = f"event:{event_id}"
            if earned > 0:
                await points.earn(
                    session, shop, member.id, kind=kind, amount=earned, reason=kind, key=key,
                    source_ref=key,
                )
            await add_growth(
                session, member.id, kind=kind, source=BEHAVIOUR, amount=growth, reason=kind,
                key=key, occurred_at=shop.now(),
            )
            outcome = await check_upgrade(session, shop, member.id)
            balance = await session.scalar(
                select(Member.points_balance).where(Member.id == member.id)
            )
            if outcome.went_up(shop):  # as an order's receipt does: congratulate, same commit
                await outbox.enqueue(
                    session, shop, member_id=member.id, kind=TIER_UPGRADE,
                    key=f"{TIER_UPGRADE}:event:{event_id}",
                    payload={
                        "tier": outcome.after, "previous_tier": outcome.before,
                        "behaviour": kind, "points_earned": earned,
                        "growth_earned": growth, "balance": int(balance or 0),
                    },
                )
            receipt = EventReceipt(
                event_id=event_id, kind=kind, member_code=member.code, points_earned=earned,
                growth_earned=growth, balance=int(balance or 0), tier=outcome.after,
                tier_changed=outcome.changed,
            )
            event.response = json.dumps(asdict(receipt), ensure_ascii=False)
            return Outcome(receipt, replayed=False)

    return await with_retry_on_race(session, attempt)
