"""Campaigns: a message (or an NPS survey) to an audience of members, with an optional offer.

An admin builds a campaign (``CampaignSpec``: audience, text per language, photo, a button into
the bot, a coupon or bonus points per tier, or an A/B split), previews it, and confirms it.
Its row then moves through its states, each step one conditional UPDATE, so a double confirm,
two admins or a restart move it once::

    draft → planned → writing → running      (planned → cancelled; writing/running → stopped)

Writing is set-based: ``INSERT ... SELECT`` over the members who match the audience, by member
id ranges, one narrow row per member in the campaign's queue (``campaign_recipients``, keyed by
campaign and member: a second write of the same range adds nothing), the A/B variant computed
in SQL from the campaign and member ids. Members who opted out of marketing are recorded
``skipped``: reached, never messaged. A full outbox row per member (key, payload, indexes)
would cost fifty scans of the members at a million; the queue costs about two.

Feeding: once a campaign runs, the sender asks for pushes just ahead of what it sends
(``feed_ahead``): the next recipients become outbox rows keyed ``campaign:<id>:<member>``
(``ON CONFLICT DO NOTHING``: a member's push is made once whatever runs twice) and leave the
queue, in one transaction. The sender delivers them like every push (rate, quiet hours,
opt-out, blocked members). A stop skips the pushes not sent and the recipients not fed.

The offer is granted when Telegram has accepted the message, in the transaction that marks the
push sent (``delivered``), once per member per campaign (``campaign_deliveries``' key): what
the report counts as granted is what members were told about.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    String,
    and_,
    case,
    cast,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from domain import care, catalog, coupons, points
from domain.audit import Actor, record
from domain.errors import DomainError
from domain.lifecycle import stage_expression
from domain.models import (
    Campaign,
    CampaignDelivery,
    CampaignRecipient,
    Coupon,
    Member,
    NpsAnswer,
    Order,
    Push,
)
from domain.shop import Shop
from domain.sql import insert_unless_exists, table_of, within_days
from domain.transaction import read_transaction, write_transaction

DRAFT, PLANNED, WRITING, RUNNING = "draft", "planned", "writing", "running"
CANCELLED, STOPPED = "cancelled", "stopped"
PUSH_KIND = "campaign"
SURVEY_KIND = "nps"
ALL = "*"  # one text for every language, one offer for every tier
WRITE_BATCH = 250_000  # member ids per write transaction
REVENUE_DAYS = 14
# Below this many recipients per variant (or fewer than MIN_EXPECTED uses or non-uses expected
# in either), a difference in use rate is not tested: "not enough data yet".
MIN_SAMPLE = 30
MIN_EXPECTED = 5
Z_95 = 1.96
Cta = Literal["rewards", "coupons", "checkin"]
CTAS: tuple[Cta, ...] = ("rewards", "coupons", "checkin")
COUPON_KINDS = ("amount_off", "percent_off", "free_item")


class CampaignStateError(DomainError):
    """The campaign is not in a state that allows this (already confirmed, started, over)."""

    code = "campaign_state"
    default_message = "the campaign cannot do that in its current state"


class CampaignNotFound(DomainError):
    code = "campaign_not_found"
    default_message = "no such campaign"


# ---- what a campaign is -------------------------------------------------------------------


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Audience(_Spec):
    """Who a campaign reaches; every filter left empty reaches everyone."""

    tier: str | None = None
    tier_exact: bool = False  # False: this tier or above
    stages: list[str] = Field(default_factory=list)
    languages: list[str] = Field(default_factory=list)
    bought_within: int | None = None  # days
    not_bought_within: int | None = None  # days (never bought counts as not within)
    birthday_month: int | None = None
    has_phone: bool | None = None
    joined_from: date | None = None
    joined_to: date | None = None


class CouponOffer(_Spec):
    kind: Literal["amount_off", "percent_off", "free_item"]
    value: int  # minor units, or percent
    min_spend: int = 0
    valid_days: int = 30
    template: str | None = None  # the coupon template it came from


class Offer(_Spec):
    coupon: CouponOffer | None = None
    points: int = 0

    @property
    def empty(self) -> bool:
        return self.coupon is None and self.points <= 0


class Variant(_Spec):
    texts: dict[str, str] = Field(default_factory=dict)  # language (or ALL) → text
    offers: dict[str, Offer] = Field(default_factory=dict)  # tier key (or ALL) → offer

    def text_for(self, lang: str) -> str:
        return self.texts.get(lang) or self.texts.get(ALL) or next(iter(self.texts.values()), "")

    def offer_for(self, tier: str) -> Offer | None:
        offer = self.offers.get(tier) or self.offers.get(ALL)
        return None if offer is None or offer.empty else offer


class CampaignSpec(_Spec):
    kind: Literal["message", "survey"] = "message"
    audience: Audience = Field(default_factory=Audience)
    variants: list[Variant] = Field(default_factory=lambda: [Variant()])  # A, and B to split
    photo: str | None = None  # a Telegram file_id
    cta: Cta | None = None
    start_at: datetime | None = None  # None: at once

    @property
    def split(self) -> bool:
        return len(self.variants) > 1

    def variant(self, name: str) -> Variant:
        return self.variants[1] if name == "B" and self.split else self.variants[0]


async def coupon_templates(session: AsyncSession, shop: Shop) -> list[CouponOffer]:
    """The coupon templates an offer can be made from: the live catalog's, not paused, as
    they stand now (an admin's change in /catalog shows here at once)."""
    async with read_transaction(session):
        templates = await catalog.coupon_templates(session, shop)
    return [
        CouponOffer(
            kind=t.kind, value=t.value, min_spend=t.min_spend, valid_days=t.valid_days,
            template=t.key,
        )
        for t in templates
    ]


# ---- the audience, in SQL -------------------------------------------------------------------


def _start_of_day(shop: Shop, day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=shop.tz)


def audience_conditions(shop: Shop, audience: Audience) -> list[ColumnElement[bool]]:
    """The WHERE clauses of the members an audience reaches (only members still here)."""
    today = shop.today()
    program = shop.program
    where: list[ColumnElement[bool]] = [
        Member.status != "deleted", Member.telegram_id.is_not(None)
    ]
    if audience.tier is not None:
        if audience.tier_exact:
            where.append(Member.tier == audience.tier)
        else:
            index = program.tier_index(audience.tier)
            where.append(Member.tier.in_([t.key for t in program.tiers[index:]]))
    if audience.stages:
        where.append(stage_expression(shop, today).in_(audience.stages))
    if audience.languages:
        where.append(Member.language.in_(audience.languages))
    if audience.bought_within is not None:
        since = _start_of_day(shop, today - timedelta(days=audience.bought_within))
        where.append(Member.last_purchase_at >= since)
    if audience.not_bought_within is not None:
        since = _start_of_day(shop, today - timedelta(days=audience.not_bought_within))
        where.append(or_(Member.last_purchase_at.is_(None), Member.last_purchase_at < since))
    if audience.birthday_month is not None:
        where.append(Member.birthday_month == audience.birthday_month)
    if audience.has_phone is not None:
        where.append(
            Member.phone.is_not(None) if audience.has_phone else Member.phone.is_(None)
        )
    if audience.joined_from is not None:
        where.append(Member.created_at >= _start_of_day(shop, audience.joined_from))
    if audience.joined_to is not None:
        where.append(
            Member.created_at < _start_of_day(shop, audience.joined_to + timedelta(days=1))
        )
    return where


@dataclass(frozen=True)
class Reach:
    members: int
    marketing: int  # of them, members who accept marketing messages


async def reach(session: AsyncSession, shop: Shop, audience: Audience) -> Reach:
    """How many members the audience reaches, and how many accept marketing: one COUNT."""
    row = (
        await session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(case((Member.marketing_opt_in.is_(True), 1), else_=0)), 0),
            ).where(*audience_conditions(shop, audience))
        )
    ).one()
    await session.commit()
    return Reach(int(row[0]), int(row[1]))


async def audience_languages(session: AsyncSession, shop: Shop, audience: Audience) -> set[str]:
    """The languages of the members the audience reaches (a preview is shown in each)."""
    async with read_transaction(session):
        found = await session.scalars(
            select(Member.language).where(*audience_conditions(shop, audience)).distinct()
        )
        return {str(language) for language in found}


# ---- A/B: the variant of a member, reproducible ---------------------------------------------

_MIX = 1_000_003
_MULTIPLIER = 2_654_435_761  # Knuth's multiplicative hash
_LOW_BITS = 1 << 20  # bits 0-16 of the product depend only on these bits of its factor
_BIT = 1 << 16


def variant_of(campaign_id: int, member_id: int) -> str:
    """A or B, the same every time for a campaign and member (bit 16 of a multiplicative hash
    of both): the mirror of ``variant_sql``."""
    mixed = (member_id + campaign_id * _MIX) % _LOW_BITS
    return "B" if (mixed * _MULTIPLIER) % (2 * _BIT) >= _BIT else "A"


def variant_sql(campaign_id: int) -> ColumnElement[str]:
    """``variant_of`` in SQL (integers below 2^53 on every dialect)."""
    mixed = (cast(Member.id, BigInteger) + campaign_id * _MIX) % _LOW_BITS
    return case(((mixed * _MULTIPLIER) % (2 * _BIT) >= _BIT, "B"), else_="A")


# ---- building, confirming, starting ------------------------------------------------------


def _subject(campaign_id: int) -> str:
    return f"campaign:{campaign_id}"


async def save_draft(
    session: AsyncSession, shop: Shop, actor: Actor, spec: CampaignSpec,
    campaign_id: int | None = None,
) -> int:
    """Keep the campaign being built as a draft (a preview needs its id for the confirm
    button); an existing draft is replaced, anything past draft is refused."""
    now = shop.now()
    body = spec.model_dump_json()
    async with write_transaction(session):
        if campaign_id is not None:
            changed = await session.execute(
                update(Campaign)
                .where(Campaign.id == campaign_id, Campaign.state == DRAFT)
                .values(spec=body, kind=spec.kind, start_at=spec.start_at)
            )
            if changed.rowcount:  # type: ignore[attr-defined]
                return campaign_id
        campaign = Campaign(
            kind=spec.kind, state=DRAFT, spec=body, start_at=spec.start_at,
            created_by=actor.telegram_id, created_at=now, written_upto=0, written=0,
        )
        session.add(campaign)
        await session.flush()
        record(session, actor, "campaign.draft", now, subject=_subject(campaign.id),
               after={"kind": spec.kind})
        return campaign.id


async def _state(session: AsyncSession, campaign_id: int) -> str:
    state = await session.scalar(select(Campaign.state).where(Campaign.id == campaign_id))
    if state is None:
        raise CampaignNotFound(campaign_id=campaign_id)
    return state


async def confirm(session: AsyncSession, shop: Shop, actor: Actor, campaign_id: int) -> datetime:
    """draft → planned, once: a second confirm (the same admin twice, or another admin at the
    same moment) finds it planned and is refused. Returns when it starts."""
    now = shop.now()
    async with write_transaction(session):
        spec_text = await session.scalar(
            select(Campaign.spec).where(Campaign.id == campaign_id)
        )
        if spec_text is None:
            raise CampaignNotFound(campaign_id=campaign_id)
        spec = CampaignSpec.model_validate_json(spec_text)
        start = spec.start_at if spec.start_at is not None and spec.start_at > now else now
        moved = await session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.state == DRAFT)
            .values(state=PLANNED, confirmed_by=actor.telegram_id, confirmed_at=now,
                    start_at=start)
        )
        if not moved.rowcount:  # type: ignore[attr-defined]
            raise CampaignStateError(state=await _state(session, campaign_id))
        record(session, actor, "campaign.confirm", now, subject=_subject(campaign_id),
               before={"state": DRAFT}, after={"state": PLANNED, "start_at": start})
    return start


async def cancel(session: AsyncSession, shop: Shop, actor: Actor, campaign_id: int) -> None:
    """A planned campaign that has not started: it never will."""
    now = shop.now()
    async with write_transaction(session):
        moved = await session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.state.in_((DRAFT, PLANNED)))
            .values(state=CANCELLED, ended_at=now)
        )
        if not moved.rowcount:  # type: ignore[attr-defined]
            raise CampaignStateError(state=await _state(session, campaign_id))
        record(session, actor, "campaign.cancel", now, subject=_subject(campaign_id),
               after={"state": CANCELLED})


async def stop(session: AsyncSession, shop: Shop, actor: Actor, campaign_id: int) -> int:
    """A campaign being written or sent stops: its pushes not yet sent and its recipients not
    yet fed are skipped (and the writer, between two ranges, finds it stopped; the feed takes
    only running campaigns). Returns how many were held back."""
    now = shop.now()
    async with write_transaction(session):
        moved = await session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.state.in_((WRITING, RUNNING)))
            .values(state=STOPPED, ended_at=now)
        )
        if not moved.rowcount:  # type: ignore[attr-defined]
            raise CampaignStateError(state=await _state(session, campaign_id))
        held = await session.execute(
            update(Push)
            .where(Push.campaign_id == campaign_id, Push.status == "pending")
            .values(status="skipped", last_error="campaign stopped")
        )
        unfed = await session.execute(
            update(CampaignRecipient)
            .where(CampaignRecipient.campaign_id == campaign_id,
                   CampaignRecipient.skipped.is_(False))
            .values(skipped=True)
        )
        count = int(held.rowcount or 0) + int(unfed.rowcount or 0)  # type: ignore[attr-defined]
        record(session, actor, "campaign.stop", now, subject=_subject(campaign_id),
               after={"state": STOPPED, "held_back": count})
    return count


async def start_due(session: AsyncSession, shop: Shop, *, resume: bool = False) -> list[int]:
    """Start every planned campaign whose time has come (planned → writing, claimed by one
    conditional UPDATE: whoever else tries finds it taken), write its recipients, and mark it
    running (the sender's feed then makes their pushes). ``resume`` (at start-up) also
    finishes writes a stopped process left half done: the keys make a range written twice add
    nothing. Returns the campaigns written."""
    now = shop.now()
    started = []
    due = list(
        await session.scalars(
            select(Campaign.id).where(
                or_(
                    and_(Campaign.state == PLANNED, Campaign.start_at <= now),
                    Campaign.state == WRITING if resume else literal(False),
                )
            ).order_by(Campaign.id)
        )
    )
    await session.commit()
    for campaign_id in due:
        async with write_transaction(session):
            claimed = await session.execute(
                update(Campaign)
                .where(Campaign.id == campaign_id, Campaign.state == PLANNED)
                .values(state=WRITING, started_at=now)
            )
        if not claimed.rowcount and not resume:  # type: ignore[attr-defined]
            continue
        if await write_pushes(session, shop, campaign_id):
            started.append(campaign_id)
    return started


async def write_pushes(session: AsyncSession, shop: Shop, campaign_id: int) -> bool:
    """Write a campaign's recipients, one ``INSERT ... SELECT`` per range of member ids, each
    range in its own transaction with the campaign's progress; ends writing → running. False
    when the campaign was stopped meanwhile (what was written is skipped by the stop)."""
    row = (
        await session.execute(
            select(Campaign.spec, Campaign.written_upto, Campaign.state).where(
                Campaign.id == campaign_id
            )
        )
    ).one()
    last_id = int(await session.scalar(select(func.coalesce(func.max(Member.id), 0))) or 0)
    await session.commit()
    if row.state != WRITING:
        return False
    spec = CampaignSpec.model_validate_json(row.spec)
    after = int(row.written_upto)
    while True:
        upto = min(after + WRITE_BATCH, last_id)
        async with write_transaction(session):
            written = 0
            if upto > after:
                written = await _write_range(session, shop, campaign_id, spec, after, upto)
            moved = await session.execute(
                update(Campaign)
                .where(Campaign.id == campaign_id, Campaign.state == WRITING)
                .values(
                    written_upto=upto, written=Campaign.written + written,
                    state=WRITING if upto < last_id else RUNNING,
                )
            )
            if not moved.rowcount:  # type: ignore[attr-defined]
                await session.rollback()
                return False
        if upto >= last_id:
            return True
        after = upto


async def _write_range(
    session: AsyncSession, shop: Shop, campaign_id: int, spec: CampaignSpec, after: int, upto: int
) -> int:
    variant = variant_sql(campaign_id) if spec.split else literal("A")
    members = select(
        literal(campaign_id),
        Member.id,
        variant,
        case((Member.marketing_opt_in.is_(True), False), else_=True),
    ).where(Member.id > after, Member.id <= upto, *audience_conditions(shop, spec.audience))
    table = table_of(CampaignRecipient)
    statement = insert_unless_exists(session, table, "campaign_id", "member_id").from_select(
        ["campaign_id", "member_id", "variant", "skipped"], members
    )
    result = await session.execute(statement)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# ---- feeding the outbox, just ahead of the sender --------------------------------------------


async def feed_ahead(session: AsyncSession, shop: Shop, ahead: int) -> int:
    """Make pushes from the running campaigns' recipients until ``ahead`` campaign pushes of
    reachable members wait to be sent (the sender calls this before each pass, so a million
    recipients become pushes a few hundred at a time). Returns the recipients fed."""
    return await _feed(session, shop, ahead, top_up=True)


async def feed(session: AsyncSession, shop: Shop, limit: int) -> int:
    """Turn the next ``limit`` recipients of running campaigns (oldest campaign first, by
    member id) into their pushes and take them off the queue, in one transaction. Returns the
    recipients fed. Run twice or at once by two, a member's push is still made once: its key."""
    return await _feed(session, shop, limit, top_up=False)


async def _feed(session: AsyncSession, shop: Shop, limit: int, *, top_up: bool) -> int:
    # Asked before every pass of the sender: by the running campaigns (few), each a look at
    # the start of its key range, never a walk through a stopped campaign's skipped rows.
    queued = select(Campaign.id).where(
        Campaign.state == RUNNING,
        select(CampaignRecipient.member_id)
        .where(CampaignRecipient.campaign_id == Campaign.id).exists(),
    ).limit(1)
    async with read_transaction(session):
        if await session.scalar(queued) is None:
            return 0
    now = shop.now()
    fed = 0
    async with write_transaction(session):
        # The campaigns' rows locked (PostgreSQL; SQLite's write is IMMEDIATE): a stop or a
        # second feeder waits for this one, then finds the recipients gone.
        running = (
            await session.execute(
                select(Campaign.id, Campaign.kind).where(Campaign.state == RUNNING)
                .order_by(Campaign.id).with_for_update()
            )
        ).all()
        room = limit
        if top_up and running:
            waiting = await session.scalar(
                select(func.count()).select_from(Push)
                .join(Member, Member.id == Push.member_id)
                .where(Push.campaign_id.in_([row.id for row in running]),
                       Push.status == "pending", Member.reachable.is_(True))
            )
            room -= int(waiting or 0)
        for campaign_id, kind in running:
            if room <= 0:
                break
            taken = await _feed_campaign(session, now, campaign_id, kind, room)
            fed += taken
            room -= taken
    return fed


async def _feed_campaign(
    session: AsyncSession, now: datetime, campaign_id: int, kind: str, limit: int
) -> int:
    """The campaign's next ``limit`` recipients (by member id) become pushes and leave."""
    recipient = CampaignRecipient
    first = (
        select(recipient.member_id).where(recipient.campaign_id == campaign_id)
        .order_by(recipient.member_id).limit(limit).subquery()
    )
    upto = await session.scalar(select(func.max(first.c.member_id)))
    if upto is None:
        return 0
    batch = and_(recipient.campaign_id == campaign_id, recipient.member_id <= upto)
    push_kind = SURVEY_KIND if kind == "survey" else PUSH_KIND
    prefix = f'{{"campaign": {campaign_id}, "variant": "'
    pushes = select(
        literal(f"campaign:{campaign_id}:") + cast(recipient.member_id, String),
        recipient.member_id,
        literal(push_kind),
        literal(prefix) + recipient.variant + literal('"}'),
        literal(True),
        case((recipient.skipped.is_(True), "skipped"), else_="pending"),
        literal(0),
        literal(now, type_=Push.not_before.type),
        literal(now, type_=Push.created_at.type),
        case((recipient.skipped.is_(True), "member opted out of marketing"), else_=None),
        literal(campaign_id),
    ).where(batch)
    await session.execute(
        insert_unless_exists(session, table_of(Push), "key").from_select(
            ["key", "member_id", "kind", "payload", "marketing", "status", "attempts",
             "not_before", "created_at", "last_error", "campaign_id"],
            pushes,
        )
    )
    taken = await session.execute(delete(recipient).where(batch))
    return int(taken.rowcount or 0)  # type: ignore[attr-defined]


# ---- delivery: what the sender asks ------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """What a member's campaign message needs: the campaign, its state and their variant."""

    campaign_id: int
    state: str
    spec: CampaignSpec
    variant: str

    @property
    def live(self) -> bool:
        return self.state in (WRITING, RUNNING)


async def delivery(
    session: AsyncSession, campaign_id: int, variant: str
) -> Delivery | None:
    row = (
        await session.execute(
            select(Campaign.state, Campaign.spec).where(Campaign.id == campaign_id)
        )
    ).one_or_none()
    if row is None:
        return None
    return Delivery(campaign_id, row.state, CampaignSpec.model_validate_json(row.spec), variant)


async def delivered(
    session: AsyncSession, shop: Shop, campaign_id: int, member_id: int, tier: str, variant: str,
) -> bool:
    """Record that a member got the campaign's message and grant its offer (their tier's, of
    their variant), in the caller's transaction (the one that marks the push sent). Once per
    member per campaign: False when already recorded."""
    now = shop.now()
    table = table_of(CampaignDelivery)
    inserted = await session.scalar(
        insert_unless_exists(session, table, "campaign_id", "member_id")
        .values(campaign_id=campaign_id, member_id=member_id, variant=variant, points=0,
                delivered_at=now)
        .returning(table.c.member_id)
    )
    if inserted is None:
        return False
    spec_text = await session.scalar(select(Campaign.spec).where(Campaign.id == campaign_id))
    if spec_text is None:
        return True
    offer = CampaignSpec.model_validate_json(spec_text).variant(variant).offer_for(tier)
    if offer is None:
        return True
    coupon_id = None
    if offer.coupon is not None:
        coupon = await coupons.issue_coupon(
            session, shop, member_id, source=_subject(campaign_id), kind=offer.coupon.kind,
            value=offer.coupon.value, min_spend=offer.coupon.min_spend,
            valid_days=offer.coupon.valid_days,
        )
        coupon_id = coupon.id
    if offer.points > 0:
        await points.earn(
            session, shop, member_id, kind="campaign", amount=offer.points,
            reason=f"campaign {campaign_id}", key=f"campaign:{campaign_id}:{member_id}",
            source_ref=_subject(campaign_id),
        )
    await session.execute(
        update(CampaignDelivery)
        .where(CampaignDelivery.campaign_id == campaign_id,
               CampaignDelivery.member_id == member_id)
        .values(coupon_id=coupon_id, points=max(offer.points, 0))
    )
    return True


# ---- NPS ------------------------------------------------------------------------------------


class NotInSurvey(DomainError):
    """The member was not sent this survey (or it is not a survey): nothing is recorded."""

    code = "nps_not_asked"
    default_message = "this survey was not sent to you"


async def answer_nps(
    session: AsyncSession, shop: Shop, member_id: int, campaign_id: int, score: int
) -> bool:
    """The member's score for a survey they were sent; their first answer stands. True when
    this answer was recorded."""
    if not 0 <= score <= 10:
        raise NotInSurvey()
    async with write_transaction(session):
        asked = await session.scalar(
            select(CampaignDelivery.member_id)
            .join(Campaign, Campaign.id == CampaignDelivery.campaign_id)
            .where(CampaignDelivery.campaign_id == campaign_id,
                   CampaignDelivery.member_id == member_id, Campaign.kind == "survey")
        )
        if asked is None:
            raise NotInSurvey()
        table = table_of(NpsAnswer)
        inserted = await session.scalar(
            insert_unless_exists(session, table, "campaign_id", "member_id")
            .values(campaign_id=campaign_id, member_id=member_id, score=score,
                    answered_at=shop.now())
            .returning(table.c.member_id)
        )
    return inserted is not None


async def comment_nps(
    session: AsyncSession, member_id: int, campaign_id: int, comment: str
) -> bool:
    """The optional comment after a score, kept once."""
    async with write_transaction(session):
        changed = await session.execute(
            update(NpsAnswer)
            .where(NpsAnswer.campaign_id == campaign_id, NpsAnswer.member_id == member_id,
                   NpsAnswer.comment.is_(None))
            .values(comment=comment[:1000])
        )
    return bool(changed.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class NpsFigures:
    campaign_id: int
    answers: int
    distribution: list[int]  # answers per score 0..10
    promoters: int
    detractors: int
    comments: int

    @property
    def nps(self) -> int | None:
        """% promoters (9-10) minus % detractors (0-6), rounded; None without answers."""
        if not self.answers:
            return None
        return round(100 * (self.promoters - self.detractors) / self.answers)


async def nps_figures(session: AsyncSession, campaign_id: int) -> NpsFigures:
    rows = (
        await session.execute(
            select(NpsAnswer.score, func.count(), func.count(NpsAnswer.comment))
            .where(NpsAnswer.campaign_id == campaign_id)
            .group_by(NpsAnswer.score)
        )
    ).all()
    distribution = [0] * 11
    comments = 0
    for score, count, commented in rows:
        distribution[int(score)] = int(count)
        comments += int(commented)
    return NpsFigures(
        campaign_id, sum(distribution), distribution, sum(distribution[9:]),
        sum(distribution[:7]), comments,
    )


async def latest_nps(session: AsyncSession, until: datetime | None = None) -> NpsFigures | None:
    """The figures of the latest survey with answers (answered before ``until``)."""
    query = select(NpsAnswer.campaign_id).order_by(NpsAnswer.answered_at.desc()).limit(1)
    if until is not None:
        query = query.where(NpsAnswer.answered_at < until)
    campaign_id = await session.scalar(query)
    if campaign_id is None:
        return None
    return await nps_figures(session, campaign_id)


# ---- the report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantFigures:
    name: str
    delivered: int
    coupons: int
    used: int

    @property
    def use_rate(self) -> float | None:
        return self.used / self.delivered if self.delivered else None


@dataclass(frozen=True)
class ABTest:
    a: VariantFigures
    b: VariantFigures
    enough: bool  # MIN_SAMPLE per variant and MIN_EXPECTED uses and non-uses expected
    difference: float | None  # B's use rate minus A's
    z: float | None
    significant: bool  # |z| > 1.96: larger than chance at the 95% level


def two_proportion_test(a: VariantFigures, b: VariantFigures) -> ABTest:
    """The pooled two-proportion z-test of the variants' use rates."""
    n1, n2, x1, x2 = a.delivered, b.delivered, a.used, b.used
    difference = (x2 / n2 - x1 / n1) if n1 and n2 else None
    pooled = (x1 + x2) / (n1 + n2) if n1 + n2 else 0.0
    enough = (
        min(n1, n2) >= MIN_SAMPLE
        and min(n1, n2) * pooled >= MIN_EXPECTED
        and min(n1, n2) * (1 - pooled) >= MIN_EXPECTED
    )
    if not enough or difference is None:
        return ABTest(a, b, False, difference, None, False)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = difference / spread if spread else 0.0
    return ABTest(a, b, True, difference, z, abs(z) > Z_95)


@dataclass(frozen=True)
class CampaignReport:
    id: int
    kind: str
    state: str
    spec: CampaignSpec
    start_at: datetime | None
    started_at: datetime | None
    reached: int
    pending: int
    sent: int
    skipped: int
    failed: int
    blocked: int
    coupons: int
    coupons_used: int
    points: int
    revenue: int
    ab: ABTest | None
    nps: NpsFigures | None
    statuses: dict[str, int] = field(default_factory=dict)
    # Calls staff made to recipients (the call-back list) within the revenue window, by outcome.
    callbacks: dict[str, int] = field(default_factory=dict)


async def report(session: AsyncSession, shop: Shop, campaign_id: int) -> CampaignReport:
    """A campaign's figures, each one set-based statement."""
    campaign = await session.get(Campaign, campaign_id)
    if campaign is None:
        raise CampaignNotFound(campaign_id=campaign_id)
    spec = CampaignSpec.model_validate_json(campaign.spec)
    blocked_case = case((Push.last_error == "blocked by the member", "blocked"), else_=Push.status)
    statuses = {
        str(status): int(count)
        for status, count in await session.execute(
            select(blocked_case, func.count())
            .where(Push.campaign_id == campaign_id)
            .group_by(blocked_case)
        )
    }
    # Recipients not yet fed wait (or were skipped: opted out, or the campaign stopped).
    for skipped, count in await session.execute(
        select(CampaignRecipient.skipped, func.count())
        .where(CampaignRecipient.campaign_id == campaign_id)
        .group_by(CampaignRecipient.skipped)
    ):
        status = "skipped" if skipped else "pending"
        statuses[status] = statuses.get(status, 0) + int(count)
    used = case((Coupon.status == "used", 1), else_=0)
    by_variant = {
        str(variant): (int(delivered), int(issued), int(used_count or 0), int(granted or 0))
        for variant, delivered, issued, used_count, granted in await session.execute(
            select(
                CampaignDelivery.variant, func.count(), func.count(CampaignDelivery.coupon_id),
                func.sum(used), func.sum(CampaignDelivery.points),
            )
            .outerjoin(Coupon, Coupon.id == CampaignDelivery.coupon_id)
            .where(CampaignDelivery.campaign_id == campaign_id)
            .group_by(CampaignDelivery.variant)
        )
    }
    revenue = 0
    callbacks: dict[str, int] = {}
    if campaign.started_at is not None:
        end = campaign.started_at + timedelta(days=REVENUE_DAYS)
        recipients = select(CampaignDelivery.member_id).where(
            CampaignDelivery.campaign_id == campaign_id
        )
        counts = await care.outcome_counts(
            session, since=campaign.started_at, until=end, members=recipients
        )
        callbacks = {outcome: n for outcome, n in counts.items() if n}
        # Each recipient's own window: from their delivery (a campaign sent over hours or
        # held by quiet hours reaches members on different days) to 14 days after it.
        revenue = int(
            await session.scalar(
                select(func.coalesce(func.sum(Order.paid), 0))
                .join(CampaignDelivery, CampaignDelivery.member_id == Order.member_id)
                .where(
                    CampaignDelivery.campaign_id == campaign_id,
                    within_days(
                        session, Order.occurred_at, CampaignDelivery.delivered_at, REVENUE_DAYS
                    ),
                )
            )
            or 0
        )
    ab = None
    if spec.split:
        figures = {
            name: VariantFigures(name, *by_variant.get(name, (0, 0, 0, 0))[:3])
            for name in ("A", "B")
        }
        ab = two_proportion_test(figures["A"], figures["B"])
    nps = await nps_figures(session, campaign_id) if spec.kind == "survey" else None
    await session.commit()
    return CampaignReport(
        id=campaign.id, kind=campaign.kind, state=campaign.state, spec=spec,
        start_at=campaign.start_at, started_at=campaign.started_at,
        reached=sum(statuses.values()), pending=statuses.get("pending", 0),
        sent=statuses.get("sent", 0), skipped=statuses.get("skipped", 0),
        failed=statuses.get("failed", 0), blocked=statuses.get("blocked", 0),
        coupons=sum(v[1] for v in by_variant.values()),
        coupons_used=sum(v[2] for v in by_variant.values()),
        points=sum(v[3] for v in by_variant.values()), revenue=revenue, ab=ab, nps=nps,
        statuses=statuses, callbacks=callbacks,
    )


async def recent_campaigns(session: AsyncSession, limit: int = 5) -> Sequence[int]:
    """The newest confirmed campaigns' ids (drafts are the builders' own)."""
    ids = list(
        await session.scalars(
            select(Campaign.id).where(Campaign.state != DRAFT)
            .order_by(Campaign.id.desc()).limit(limit)
        )
    )
    await session.commit()
    return ids


def payload_of(text: str) -> dict[str, Any]:
    """A campaign push's payload: its campaign and variant."""
    data: dict[str, Any] = json.loads(text)
    return data
