"""Member care at the counter: a member's card as a cashier needs it, points adjusted by hand,
coupons granted from the templates, and what came of calling members on the call-back list.

Every change is one transaction with its audit line (``domain.audit``) and, when the member is
told, the push. Staff are held to the program's ``[care]`` limits (per adjustment, per local
day, coupon grants per day); admins are not. A deduction never takes a balance below zero
unless an admin confirms it; it is then drawn from the lots as far as they go and the rest
becomes debt, which later earnings repay first (``domain.points``), so expiry stays right.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain import audit, outbox, points
from domain.audit import Actor
from domain.catalog import coupon_template
from domain.coupons import CouponView, coupon_view, issue_coupon, usable_coupons
from domain.errors import DomainError, MemberNotFound
from domain.growth import growth_total
from domain.members import DELETED, FROZEN, find_member
from domain.models import AuditEntry, CallbackOutcome, LedgerEntry, Member, PointAdjustment
from domain.points import LedgerLine, describe_entries
from domain.shop import Shop
from domain.sql import lock_until_commit
from domain.tiers import TierProgress, progress
from domain.transaction import read_transaction, write_transaction

LEDGER_KIND = "adjustment"
ADJUSTED_PUSH = "points_adjusted"
GRANTED_PUSH = "coupon_granted"
GRANT_SOURCE = "grant:"
OUTCOMES = ("called", "no_answer", "won_back")
LEDGER_LINES = 10
# The call-back list shows this many members with outcome buttons (3 each: Telegram allows
# 100 buttons on a message).
CALLBACK_BUTTONS_FOR = 30
MAX_ADJUSTMENT = 1_000_000
MAX_REASON = 255
# Advisory lock namespaces (PostgreSQL) of a staff member's day: their adjustments and their
# grants each wait for the one before, so two at the same moment cannot both pass the limit.
STAFF_ADJUST_LOCK = 1
STAFF_GRANT_LOCK = 2


class ReasonRequired(DomainError):
    code = "care_reason_required"
    default_message = "an adjustment needs a reason"


class AdjustmentInvalid(DomainError):
    """Not a whole number of points, or zero, or beyond any sensible size (``maximum``)."""

    code = "care_amount_invalid"
    default_message = "not a number of points"


class OverStaffLimit(DomainError):
    """A staff member's adjustment or grant goes beyond the program's ``[care]`` limit:
    ``scope`` is "adjustment", "day" or "grants"; ``limit`` and ``left`` the figures."""

    code = "care_over_limit"
    default_message = "over the staff limit"


class BelowZero(DomainError):
    """The deduction would take the balance below zero: only an admin may, by confirming.
    ``balance`` and ``points`` the figures; ``admin`` whether the refused actor is one."""

    code = "care_below_zero"
    default_message = "the deduction would take the balance below zero"


class UnknownTemplate(DomainError):
    code = "care_unknown_template"
    default_message = "no such coupon template, or it is paused"


def parse_points(text: str) -> int:
    """Points an adjustment adds (or, negative, takes) from what a person typed: "200",
    "+200", "-150", "1,000". AdjustmentInvalid for anything else, zero among them."""
    cleaned = text.strip().replace(",", "").replace(" ", "").replace("_", "")
    sign = -1 if cleaned.startswith(("-", "−")) else 1
    digits = cleaned[1:] if cleaned[:1] in ("+", "-", "−") else cleaned
    if not digits.isdigit() or int(digits) == 0 or int(digits) > MAX_ADJUSTMENT:
        raise AdjustmentInvalid(maximum=MAX_ADJUSTMENT)
    return sign * int(digits)


def check_staff_amount(shop: Shop, actor: Actor, amount: int) -> None:
    """Refuse at once an amount over a staff member's per-adjustment limit (the chat asks the
    amount before the reason; ``adjust_points`` checks again)."""
    limit = shop.program.care.staff_adjust_max_points
    if not actor.is_admin and abs(amount) > limit:
        raise OverStaffLimit(scope="adjustment", limit=limit, left=0)


async def find(session: AsyncSession, shop: Shop, query: str) -> Member:
    """A member by member code, phone number or @username (a member who left is not found)."""
    query = query.strip()
    if query.startswith("@") and len(query) > 1:
        async with read_transaction(session):
            member = await session.scalar(
                select(Member)
                .where(func.lower(Member.username) == query[1:].lower(), Member.status != DELETED)
                .order_by(Member.id.desc())
                .limit(1)
                .execution_options(populate_existing=True)
            )
        if member is None:
            raise MemberNotFound(query=query)
        return member
    async with read_transaction(session):
        return await find_member(session, shop, query)


@dataclass(frozen=True)
class CareCard:
    """A member as the cashier sees them in ``/member``."""

    member_id: int
    code: str
    name: str
    username: str | None
    phone: str | None
    language: str
    balance: int
    debt: int
    progress: TierProgress
    stage: str
    last_purchase: date | None
    frozen: bool
    frozen_note: str | None  # staff only
    coupons: list[CouponView]
    lines: list[LedgerLine]  # the last ``LEDGER_LINES``, newest first
    reasons: list[str]  # each line's own reason as staff wrote it (adjustments), else ""


async def card(session: AsyncSession, shop: Shop, member_id: int) -> CareCard:
    """The member's card for staff, in one read."""
    async with read_transaction(session):
        member = await session.scalar(
            select(Member).where(Member.id == member_id, Member.status != DELETED)
            .execution_options(populate_existing=True)
        )
        if member is None:
            raise MemberNotFound(member_id=member_id)
        growth = await growth_total(session, shop, member.id)
        found = await usable_coupons(session, member.id, at=shop.now())
        entries = list((await session.scalars(
            select(LedgerEntry).where(LedgerEntry.member_id == member.id)
            .order_by(LedgerEntry.id.desc()).limit(LEDGER_LINES)
        )).all())
        lines = await describe_entries(session, shop, member.id, entries)
    return CareCard(
        member_id=member.id, code=member.code, name=member.display_name,
        username=member.username, phone=member.phone, language=member.language,
        balance=member.points_balance, debt=member.points_debt,
        progress=progress(shop, member.tier, growth.counted), stage=member.stage,
        last_purchase=(
            shop.local_date(member.last_purchase_at) if member.last_purchase_at else None
        ),
        frozen=member.status == FROZEN, frozen_note=member.frozen_reason,
        coupons=[coupon_view(shop, c) for c in found], lines=lines,
        reasons=[e.reason if e.kind == LEDGER_KIND else "" for e in entries],
    )


def _day_start(shop: Shop) -> datetime:
    return datetime.combine(shop.today(), time(0), tzinfo=shop.tz)


async def adjusted_today(session: AsyncSession, shop: Shop, actor: Actor) -> int:
    """Points ``actor`` has added and taken (both count) since the local day began."""
    total = await session.scalar(
        select(func.coalesce(func.sum(func.abs(PointAdjustment.amount)), 0)).where(
            PointAdjustment.actor_telegram_id == actor.telegram_id,
            PointAdjustment.at >= _day_start(shop),
        )
    )
    return int(total or 0)


async def below_zero(session: AsyncSession, member_id: int, amount: int) -> int | None:
    """The balance a deduction of ``amount`` (negative) would leave when that is below zero,
    else None: the chat asks an admin to confirm first."""
    async with read_transaction(session):
        balance = await session.scalar(
            select(Member.points_balance).where(Member.id == member_id)
        )
    if balance is None:
        raise MemberNotFound(member_id=member_id)
    after = int(balance) + amount
    return after if amount < 0 and after < 0 else None


@dataclass(frozen=True)
class Adjustment:
    code: str
    amount: int
    before: int
    balance: int


async def adjust_points(
    session: AsyncSession, shop: Shop, actor: Actor, member_id: int, amount: int, reason: str,
    *, key: str, below_zero_confirmed: bool = False,
) -> Adjustment:
    """Add (``amount`` > 0) or take points by hand, with a reason, in one transaction: the
    ledger entry (lots: a credit is a new lot, a deduction draws the earliest-expiring first),
    the audit line, and the member's push. Refuses, changing nothing: no reason
    (ReasonRequired), a staff member over the per-adjustment or per-day limit
    (OverStaffLimit), a deduction below zero that is not an admin's confirmed one
    (BelowZero). ``key`` makes a retried request (the same chat message) count once."""
    reason = " ".join(reason.split())[:MAX_REASON]
    if not reason:
        raise ReasonRequired()
    if amount == 0 or abs(amount) > MAX_ADJUSTMENT:
        raise AdjustmentInvalid(maximum=MAX_ADJUSTMENT)
    rules = shop.program.care
    check_staff_amount(shop, actor, amount)
    ledger_key = f"adjust:{key}"
    async with write_transaction(session):
        if not actor.is_admin:  # the day's sum is read and added to by one of them at a time
            await lock_until_commit(session, STAFF_ADJUST_LOCK, actor.telegram_id)
        member = await session.scalar(
            select(Member).where(Member.id == member_id, Member.status != DELETED)
            .with_for_update(key_share=True).execution_options(populate_existing=True)
        )
        if member is None:
            raise MemberNotFound(member_id=member_id)
        before = member.points_balance
        if await points.entry_exists(session, ledger_key):  # a retry: already done
            return Adjustment(member.code, amount, before - amount, before)
        if not actor.is_admin:
            done = await adjusted_today(session, shop, actor)
            left = max(rules.staff_adjust_daily_points - done, 0)
            if abs(amount) > left:
                raise OverStaffLimit(
                    scope="day", limit=rules.staff_adjust_daily_points, left=left
                )
        if amount < 0 and before + amount < 0 and not (actor.is_admin and below_zero_confirmed):
            raise BelowZero(balance=before, points=-amount, admin=actor.is_admin)
        entry_reason = reason  # the staff's own words, shown to staff on the card only
        if amount > 0:
            posting = await points.earn(
                session, shop, member.id, kind=LEDGER_KIND, amount=amount, reason=entry_reason,
                key=ledger_key,
            )
        elif before + amount >= 0:
            posting = await points.spend(
                session, shop, member.id, kind=LEDGER_KIND, amount=-amount,
                reason=entry_reason, key=ledger_key,
            )
        else:  # an admin confirmed: the lots give what they hold, the rest is debt
            posting = await points.claw_back(
                session, shop, member.id, kind=LEDGER_KIND, amount=-amount,
                reason=entry_reason, key=ledger_key,
            )
        now = shop.now()
        session.add(PointAdjustment(
            member_id=member.id, actor_telegram_id=actor.telegram_id, actor_role=actor.role,
            amount=amount, entry_id=posting.entry_id, at=now,
        ))
        audit.record(
            session, actor, "points.adjust", now, member_id=member.id,
            before={"points": before}, after={"points": posting.balance, "change": amount},
            reason=reason,
        )
        # Not marketing: the member is told of any change to their points. The reason is the
        # staff's and stays with the staff.
        await outbox.enqueue(
            session, shop, member_id=member.id, kind=ADJUSTED_PUSH,
            key=f"{ADJUSTED_PUSH}:{posting.entry_id}",
            payload={"amount": amount, "balance": posting.balance},
        )
        return Adjustment(member.code, amount, before, posting.balance)


async def granted_today(session: AsyncSession, shop: Shop, actor: Actor) -> int:
    """Coupons ``actor`` has granted since the local day began (from the audit)."""
    return int(await session.scalar(
        select(func.count(AuditEntry.id)).where(
            AuditEntry.actor_telegram_id == actor.telegram_id,
            AuditEntry.action == "coupon.grant",
            AuditEntry.at >= _day_start(shop),
        )
    ) or 0)


@dataclass(frozen=True)
class Grant:
    code: str  # the member's
    coupon: CouponView


async def grant_coupon(
    session: AsyncSession, shop: Shop, actor: Actor, member_id: int, template_key: str,
) -> Grant:
    """Issue the member a coupon from a template of the live catalog, with the audit line and
    the member's push. A staff member is held to ``care.staff_coupon_grants_per_day``
    (OverStaffLimit); an unknown or paused template is refused (UnknownTemplate)."""
    async with write_transaction(session):
        if not actor.is_admin:  # the day's count is read and added to by one at a time
            await lock_until_commit(session, STAFF_GRANT_LOCK, actor.telegram_id)
        template = await coupon_template(session, shop, template_key)
        if template is None:
            raise UnknownTemplate(key=template_key)
        member = await session.scalar(
            select(Member).where(Member.id == member_id, Member.status != DELETED)
            .with_for_update(key_share=True).execution_options(populate_existing=True)
        )
        if member is None:
            raise MemberNotFound(member_id=member_id)
        if not actor.is_admin:
            limit = shop.program.care.staff_coupon_grants_per_day
            done = await granted_today(session, shop, actor)
            if done >= limit:
                raise OverStaffLimit(scope="grants", limit=limit, left=0)
        coupon = await issue_coupon(
            session, shop, member.id, source=f"{GRANT_SOURCE}{template.key}"[:32],
            kind=template.kind, value=template.value, min_spend=template.min_spend,
            valid_days=template.valid_days,
        )
        view = coupon_view(shop, coupon)
        audit.record(
            session, actor, "coupon.grant", shop.now(), member_id=member.id,
            subject=f"template:{template.key}",
            after={"kind": template.kind, "value": template.value,
                   "min_spend": template.min_spend, "valid_days": template.valid_days},
        )
        await outbox.enqueue(
            session, shop, member_id=member.id, kind=GRANTED_PUSH,
            key=f"{GRANTED_PUSH}:{coupon.id}",
            payload={"coupon": {
                "kind": coupon.kind, "value": coupon.value, "min_spend": coupon.min_spend,
                "code": view.grouped_code, "valid_until": view.valid_until.isoformat(),
            }},
        )
        return Grant(member.code, view)


async def record_outcome(
    session: AsyncSession, shop: Shop, actor: Actor, member_code: str, outcome: str
) -> str:
    """What came of calling a member on the call-back list, with its audit line. The
    member's code back, for the reply."""
    if outcome not in OUTCOMES:
        raise AdjustmentInvalid()
    async with write_transaction(session):
        member = await find_member(session, shop, member_code)
        now = shop.now()
        last = await session.scalar(
            select(CallbackOutcome.outcome).where(CallbackOutcome.member_id == member.id)
            .order_by(CallbackOutcome.id.desc()).limit(1)
        )
        session.add(CallbackOutcome(
            member_id=member.id, outcome=outcome, actor_telegram_id=actor.telegram_id, at=now,
        ))
        audit.record(
            session, actor, "callback.outcome", now, member_id=member.id,
            before={"outcome": last}, after={"outcome": outcome},
        )
        return member.code


async def last_outcomes(session: AsyncSession, member_ids: list[int]) -> dict[int, str]:
    """The latest call-back outcome of each of these members that has one."""
    if not member_ids:
        return {}
    latest = (
        select(func.max(CallbackOutcome.id))
        .where(CallbackOutcome.member_id.in_(member_ids))
        .group_by(CallbackOutcome.member_id)
    )
    rows = await session.execute(
        select(CallbackOutcome.member_id, CallbackOutcome.outcome)
        .where(CallbackOutcome.id.in_(latest))
    )
    return {int(m): str(o) for m, o in rows}


async def last_outcomes_by_code(session: AsyncSession, codes: list[str]) -> dict[str, str]:
    """``last_outcomes`` keyed by member code, for the call-back list."""
    if not codes:
        return {}
    ids = dict((await session.execute(
        select(Member.id, Member.code).where(Member.code.in_(codes))
    )).all())
    return {ids[m]: o for m, o in (await last_outcomes(session, list(ids))).items()}


async def outcome_counts(
    session: AsyncSession, *, since: datetime | None = None, until: datetime | None = None,
    members: Select[int] | None = None,
) -> dict[str, int]:
    """How many calls ended each way (``OUTCOMES``, every one present) in ``[since, until)``,
    to the ``members`` a query selects (all when None): for a campaign's report or the
    shop's figures."""
    query = select(CallbackOutcome.outcome, func.count(CallbackOutcome.id)).group_by(
        CallbackOutcome.outcome
    )
    if members is not None:
        query = query.where(CallbackOutcome.member_id.in_(members))
    if since is not None:
        query = query.where(CallbackOutcome.at >= since)
    if until is not None:
        query = query.where(CallbackOutcome.at < until)
    counts = dict.fromkeys(OUTCOMES, 0)
    for outcome, n in await session.execute(query):
        counts[str(outcome)] = int(n)
    return counts


@dataclass(frozen=True)
class AuditPageView:
    """One page of the audit for admins: the lines, newest first, the member code of each
    line's member, and whether older lines exist."""

    lines: list[audit.AuditLine]
    codes: dict[int, str]
    older: bool


async def audit_page(
    session: AsyncSession, *, member_id: int | None, older_than: int | None, size: int = 10
) -> AuditPageView:
    """A page of the audit (one read), for one member or all."""
    async with read_transaction(session):
        found = list(await audit.recent(
            session, member_id=member_id, older_than=older_than, limit=size + 1
        ))
        lines = found[:size]
        ids = {line.member_id for line in lines if line.member_id is not None}
        codes = dict((await session.execute(
            select(Member.id, Member.code).where(Member.id.in_(ids))
        )).all()) if ids else {}
    return AuditPageView(lines, codes, older=len(found) > size)
