"""PLUS, the paid membership: bought as a monthly Telegram Stars subscription, on beside the
earned tiers (PLUS is bought, tiers are earned: growth and tiers are untouched).

A member's PLUS is a state on the member row: ``none``, ``trial`` (free, once in a lifetime) or
``paid``, on until ``plus_until``. While on, purchase points are multiplied by the program's
``plus.points_multiplier`` on top of the tier's and the day's promotion (domain.orders), the
card shows a PLUS badge and /benefits its services. Each paid period (first payment or a
renewal Telegram charges) is a ``StarPayment`` row, unique by Telegram's charge id, and issues
the period's coupon pack once. Cancelling keeps PLUS to the end of the paid period; the daily
expiry job ends it and tells the member once; an admin's refund ends it at once and voids the
period's unused coupons.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import catalog, outbox
from domain.coupons import ACTIVE as COUPON_ACTIVE
from domain.coupons import VOID, issue_coupon
from domain.errors import DomainError, MemberFrozen, MemberNotFound
from domain.jobs import JobReport, PlannedPush, coupon_payload, due_batches
from domain.members import DELETED, FROZEN
from domain.models import Coupon, Member, StarPayment
from domain.program import LocalizedList
from domain.reminders import local_day_window
from domain.shop import Shop
from domain.sql import insert_unless_exists, table_of
from domain.transaction import read_transaction, write_transaction

NONE, TRIAL, PAID = "none", "trial", "paid"
REFUNDED = "refunded"
PERIOD = timedelta(days=30)
SUBSCRIPTION_PERIOD_SECONDS = 2592000  # Telegram's only subscription period: 30 days
CURRENCY = "XTR"  # Telegram Stars
PAYLOAD_PREFIX = "plus:"
COUPON_SOURCE = "plus:"  # coupons.source: "plus:<star payment id>"
TRIAL_REMINDER_DAYS = 3
# A renewing subscription is not ended at once when its period is over: Telegram's renewal
# payment may arrive a little after the period's last instant.
RENEWAL_GRACE = timedelta(hours=24)

ACTIVATED_PUSH = "plus_activated"
RENEWED_PUSH = "plus_renewed"
ENDED_PUSH = "plus_ended"
TRIAL_ENDING_PUSH = "plus_trial_ending"
REFUNDED_PUSH = "plus_refunded"


class PlusUnavailable(DomainError):
    code = "plus_unavailable"
    default_message = "the shop does not sell PLUS"


class PlusAlreadyActive(DomainError):
    code = "plus_already_active"
    default_message = "PLUS is already active"


class PlusTrialUsed(DomainError):
    code = "plus_trial_used"
    default_message = "the free trial was already used"


class PlusNotRenewing(DomainError):
    code = "plus_not_renewing"
    default_message = "there is no renewing PLUS subscription to change"


class PlusPaymentNotFound(DomainError):
    code = "plus_payment_not_found"
    default_message = "no PLUS payment with that charge id"


class PlusAlreadyRefunded(DomainError):
    code = "plus_already_refunded"
    default_message = "that PLUS payment was already refunded"


def is_active(state: str, until: datetime | None, at: datetime) -> bool:
    """PLUS is on at ``at``: a trial or a paid period that has not ended."""
    return state != NONE and until is not None and at < until


def extra_multiplier(shop: Shop, state: str, until: datetime | None, at: datetime) -> Decimal:
    """The factor PLUS adds to purchase points at ``at`` (1 when off or not sold); it is
    multiplied with the tier's and the day's promotion."""
    rules = shop.program.plus
    if rules.enabled and is_active(state, until, at):
        return rules.points_multiplier
    return Decimal(1)


def invoice_payload(member_id: int) -> str:
    """What the subscription invoice carries, so a payment is matched to the member it was
    made for."""
    return f"{PAYLOAD_PREFIX}{member_id}"


def member_of_payload(payload: str) -> int | None:
    if not payload.startswith(PAYLOAD_PREFIX):
        return None
    rest = payload.removeprefix(PAYLOAD_PREFIX)
    return int(rest) if rest.isdigit() else None


@dataclass(frozen=True)
class PlusStanding:
    """What /plus shows a member: the offer and where the member stands."""

    enabled: bool
    price_stars: int
    trial_days: int
    multiplier: Decimal
    pack: list[Any]  # the program's CouponTemplate of each pack coupon
    services: LocalizedList
    state: str  # none | trial | paid (as it stands now: an ended one is none)
    until: date | None  # the last local day of PLUS, when on
    cancelled: bool
    trial_available: bool
    frozen: bool

    @property
    def active(self) -> bool:
        return self.state != NONE


async def _standing(session: AsyncSession, shop: Shop, member: Member) -> PlusStanding:
    rules = shop.program.plus
    now = shop.now()
    on = is_active(member.plus_state, member.plus_until, now)
    async with read_transaction(session):
        templates = await catalog.templates_by_key(session, shop, rules.coupon_pack)
    pack = [templates[key] for key in rules.coupon_pack]
    return PlusStanding(
        enabled=rules.enabled, price_stars=rules.price_stars, trial_days=rules.trial_days,
        multiplier=rules.points_multiplier, pack=[t for t in pack if t is not None],
        services=rules.services, state=member.plus_state if on else NONE,
        until=shop.local_date(member.plus_until) if on and member.plus_until else None,
        cancelled=on and member.plus_cancelled,
        trial_available=rules.trial_days > 0 and not member.plus_trial_used and not on,
        frozen=member.status == FROZEN,
    )


async def standing(session: AsyncSession, shop: Shop, member_id: int) -> PlusStanding:
    """The member's PLUS and the shop's offer, read fresh."""
    async with read_transaction(session):
        member = await session.get(Member, member_id, populate_existing=True)
    if member is None or member.status == DELETED:
        raise MemberNotFound(member_id=member_id)
    return await _standing(session, shop, member)


async def _locked_member(session: AsyncSession, member_id: int) -> Member:
    member = await session.get(
        Member, member_id, populate_existing=True, with_for_update=True
    )
    if member is None or member.status == DELETED:
        raise MemberNotFound(member_id=member_id)
    return member


def _may_buy(shop: Shop, member: Member) -> None:
    """Refusals before any payment: not sold, frozen, or a paid PLUS already on."""
    if not shop.program.plus.enabled:
        raise PlusUnavailable()
    if member.status == FROZEN:
        raise MemberFrozen(member_code=member.code, note=member.frozen_reason)
    if member.plus_state == PAID and is_active(PAID, member.plus_until, shop.now()):
        raise PlusAlreadyActive()


async def check_join(session: AsyncSession, shop: Shop, member_id: int) -> PlusStanding:
    """Before the subscription invoice is sent: the member may buy PLUS now."""
    async with read_transaction(session):
        member = await session.get(Member, member_id, populate_existing=True)
        if member is None or member.status == DELETED:
            raise MemberNotFound(member_id=member_id)
        _may_buy(shop, member)
    return await _standing(session, shop, member)


async def checkout_refusal(
    session: AsyncSession, shop: Shop, telegram_id: int, payload: str, currency: str, total: int
) -> str | None:
    """Telegram's pre-checkout question, answered in one read (Telegram waits 10 seconds at
    most): None to accept, else why not (a template names it in the member's words)."""
    async with read_transaction(session):
        member = await session.scalar(
            select(Member).where(Member.telegram_id == telegram_id)
            .execution_options(populate_existing=True)
        )
    if member is None or member.status == DELETED:
        return "not_member"
    if member_of_payload(payload) != member.id:
        return "not_member"
    try:
        _may_buy(shop, member)
    except PlusUnavailable:
        return "unavailable"
    except MemberFrozen:
        return "frozen"
    except PlusAlreadyActive:
        return "already_active"
    if currency != CURRENCY or total != shop.program.plus.price_stars:
        return "price_changed"
    return None


async def start_trial(session: AsyncSession, shop: Shop, member_id: int) -> PlusStanding:
    """The free trial: PLUS for ``trial_days`` without payment, once in a member's lifetime
    (no coupon pack: the pack comes with each paid period)."""
    rules = shop.program.plus
    async with write_transaction(session):
        member = await _locked_member(session, member_id)
        _may_buy(shop, member)
        if rules.trial_days <= 0 or member.plus_trial_used:
            raise PlusTrialUsed()
        if is_active(member.plus_state, member.plus_until, shop.now()):
            raise PlusAlreadyActive()
        member.plus_state, member.plus_trial_used = TRIAL, True
        member.plus_until = shop.now() + timedelta(days=rules.trial_days)
        member.plus_cancelled = False
    return await _standing(session, shop, member)


@dataclass(frozen=True)
class StarsPayment:
    """A ``successful_payment`` as Telegram delivered it."""

    charge_id: str
    stars: int
    expires_at: datetime | None  # subscription_expiration_date
    is_recurring: bool
    is_first_recurring: bool


@dataclass(frozen=True)
class PaymentOutcome:
    applied: bool  # False: this charge was already recorded (a redelivery)
    until: datetime | None
    coupons: list[dict[str, Any]] = field(default_factory=list)


async def record_payment(
    session: AsyncSession, shop: Shop, member_id: int, payment: StarsPayment
) -> PaymentOutcome:
    """Activate or extend PLUS for a Stars payment, once per Telegram charge id: the period
    ends at Telegram's ``subscription_expiration_date`` when given (else 30 days after the
    current end, or now), the period's coupon pack is issued, and the member is told through
    the outbox. A payment delivered twice changes nothing the second time."""
    async with write_transaction(session):
        member = await _locked_member(session, member_id)  # payments of one member in turn
        now = shop.now()
        # A paid period still running: the new one follows it (two payments never overlap).
        current = member.plus_until if member.plus_state == PAID else None
        if current is not None and current <= now:
            current = None
        start = current or now
        end = payment.expires_at or start + PERIOD
        if end <= start:  # Telegram's date came first: the period is the 30 days before it
            start = end - PERIOD
        payments = table_of(StarPayment)
        payment_pk = await session.scalar(
            insert_unless_exists(session, payments, "charge_id")
            .values(
                member_id=member.id, stars=payment.stars, charge_id=payment.charge_id,
                period_start=start, period_end=end, is_recurring=payment.is_recurring,
                status=PAID, created_at=now,
            )
            .returning(payments.c.id)
        )
        if payment_pk is None:  # the same charge again: already applied
            return PaymentOutcome(applied=False, until=member.plus_until)
        renewal = payment.is_recurring and not payment.is_first_recurring
        member.plus_state = PAID
        member.plus_until = max(end, current) if current is not None else end
        member.plus_cancelled = False
        issued = []
        templates = await catalog.templates_by_key(session, shop, shop.program.plus.coupon_pack)
        for key in shop.program.plus.coupon_pack:
            template = templates[key]
            if template is None:
                continue
            coupon = await issue_coupon(
                session, shop, member.id, source=f"{COUPON_SOURCE}{payment_pk}",
                kind=template.kind, value=template.value, min_spend=template.min_spend,
                valid_days=template.valid_days,
            )
            issued.append(coupon_payload(shop, template, coupon.code, coupon.valid_until))
        await outbox.enqueue(
            session, shop, member_id=member.id,
            kind=RENEWED_PUSH if renewal else ACTIVATED_PUSH,
            key=f"plus_payment:{payment.charge_id}",
            payload={
                "until": shop.local_date(member.plus_until).isoformat(),
                "multiplier": str(shop.program.plus.points_multiplier.normalize()),
                "coupons": issued,
            },
        )
    return PaymentOutcome(applied=True, until=member.plus_until, coupons=issued)


async def _renewing_charge(session: AsyncSession, shop: Shop, member: Member) -> str:
    """The charge id of the member's current paid subscription (what Telegram's
    editUserStarSubscription names)."""
    if member.plus_state != PAID or not is_active(PAID, member.plus_until, shop.now()):
        raise PlusNotRenewing()
    charge = await session.scalar(
        select(StarPayment.charge_id)
        .where(StarPayment.member_id == member.id, StarPayment.status == PAID)
        .order_by(StarPayment.created_at.desc(), StarPayment.id.desc())
        .limit(1)
    )
    if charge is None:
        raise PlusNotRenewing()
    return charge


async def subscription_charge(
    session: AsyncSession, shop: Shop, member_id: int, *, cancelled: bool
) -> str:
    """Before asking Telegram to stop (``cancelled``) or resume the renewals: the charge id of
    the member's paid subscription, which must be renewing (or cancelled) now."""
    async with read_transaction(session):
        member = await session.get(Member, member_id, populate_existing=True)
        if member is None or member.status == DELETED:
            raise MemberNotFound(member_id=member_id)
        if member.plus_cancelled == cancelled:
            raise PlusNotRenewing()
        return await _renewing_charge(session, shop, member)


async def set_cancelled(
    session: AsyncSession, shop: Shop, member_id: int, *, cancelled: bool
) -> PlusStanding:
    """Record that Telegram stopped (or resumed) the renewals: PLUS stays on to the end of the
    period already paid either way."""
    async with write_transaction(session):
        member = await _locked_member(session, member_id)
        await _renewing_charge(session, shop, member)
        member.plus_cancelled = cancelled
    return await _standing(session, shop, member)


@dataclass(frozen=True)
class RefundTarget:
    telegram_id: int
    member_id: int
    stars: int


async def refund_target(session: AsyncSession, charge_id: str) -> RefundTarget:
    """Whom Telegram must refund for ``charge_id`` (refundStarPayment needs the user)."""
    async with read_transaction(session):
        row = (
            await session.execute(
                select(StarPayment.status, StarPayment.stars, Member.id, Member.telegram_id)
                .join(Member, Member.id == StarPayment.member_id)
                .where(StarPayment.charge_id == charge_id)
            )
        ).one_or_none()
    if row is None or row.telegram_id is None:
        raise PlusPaymentNotFound(charge_id=charge_id)
    if row.status == REFUNDED:
        raise PlusAlreadyRefunded(charge_id=charge_id)
    return RefundTarget(telegram_id=row.telegram_id, member_id=row.id, stars=row.stars)


@dataclass(frozen=True)
class RefundOutcome:
    stars: int
    coupons_voided: int


async def record_refund(
    session: AsyncSession, shop: Shop, charge_id: str, reason: str
) -> RefundOutcome:
    """Telegram refunded ``charge_id``: the payment is marked refunded with the reason, PLUS
    ends now, the period's unused coupons are void, and the member is told."""
    now = shop.now()
    async with write_transaction(session):
        payment = await session.scalar(
            select(StarPayment).where(StarPayment.charge_id == charge_id)
            .with_for_update().execution_options(populate_existing=True)
        )
        if payment is None:
            raise PlusPaymentNotFound(charge_id=charge_id)
        if payment.status == REFUNDED:
            raise PlusAlreadyRefunded(charge_id=charge_id)
        member = await _locked_member(session, payment.member_id)
        payment.status, payment.refund_reason, payment.refunded_at = REFUNDED, reason[:255], now
        member.plus_state, member.plus_until, member.plus_cancelled = NONE, now, False
        voided = await session.execute(
            update(Coupon)
            .where(
                Coupon.source == f"{COUPON_SOURCE}{payment.id}", Coupon.status == COUPON_ACTIVE
            )
            .values(status=VOID)
            .execution_options(synchronize_session=False)
        )
        count = int(voided.rowcount or 0)  # type: ignore[attr-defined]
        await outbox.enqueue(
            session, shop, member_id=member.id, kind=REFUNDED_PUSH,
            key=f"plus_refund:{charge_id}",
            payload={"stars": payment.stars, "coupons_voided": count},
        )
    return RefundOutcome(stars=payment.stars, coupons_voided=count)


async def run_expiry(
    session_factory: async_sessionmaker[AsyncSession], shop: Shop, today: date, dry_run: bool
) -> JobReport:
    """Daily: PLUS whose period is over ends (a renewing subscription after a day's grace for
    Telegram's renewal), and each member is told once (the push's key names the period)."""
    report = JobReport("plus_expiry", today.isoformat(), dry_run)
    now = shop.now()
    over = (
        # IN, not != NONE: a range of ix_members_plus (state, until), not every member read.
        Member.plus_state.in_((TRIAL, PAID))
        & (Member.plus_until <= now)
        & (
            (Member.plus_state == TRIAL) | Member.plus_cancelled
            | (Member.plus_until <= now - RENEWAL_GRACE)
        )
    )
    async with session_factory() as session:
        while True:
            async with write_transaction(session):
                rows = (
                    await session.execute(
                        select(Member.id, Member.plus_state, Member.plus_until)
                        .where(
                            over,
                            # The due ids by ix_members_plus first: ORDER BY id LIMIT over
                            # the filter itself walks every member in id order on SQLite.
                            Member.id.in_(select(Member.id).where(over).limit(500)),
                        )
                        .order_by(Member.id).with_for_update()
                    )
                ).all()
                if not rows or dry_run:
                    report.members += len(rows)
                    break
                await session.execute(
                    update(Member)
                    .where(Member.id.in_([r.id for r in rows]), over)
                    .values(plus_state=NONE, plus_cancelled=False)
                    .execution_options(synchronize_session=False)
                )
                for row in rows:
                    written = await outbox.enqueue(
                        session, shop, member_id=row.id, kind=ENDED_PUSH,
                        key=f"plus_ended:{row.id}:{row.plus_until.isoformat()}",
                        payload={
                            "trial": row.plus_state == TRIAL,
                            "until": shop.local_date(row.plus_until).isoformat(),
                        },
                    )
                    report.written += int(written)
                report.members += len(rows)
                report.changed += len(rows)
    return report


async def trial_reminders(
    session: AsyncSession, shop: Shop, today: date
) -> AsyncIterator[list[PlannedPush]]:
    """Members whose free trial ends in three days: told once, with the price, so they can
    join before it ends."""
    if not shop.program.plus.enabled:
        return
    start, end = local_day_window(shop, today + timedelta(days=TRIAL_REMINDER_DAYS))
    query = select(Member.id, Member.plus_until).where(
        Member.plus_state == TRIAL, Member.plus_until >= start, Member.plus_until < end,
        Member.status != DELETED,
    )

    def build(row: Row[Any]) -> PlannedPush:
        last_day = shop.local_date(row.plus_until)
        return PlannedPush(
            member_id=row.id, kind=TRIAL_ENDING_PUSH,
            key=f"plus_trial_ending:{row.id}:{last_day.isoformat()}",
            payload={"until": last_day.isoformat(), "price": shop.program.plus.price_stars},
        )

    async for batch in due_batches(session, query, Member.id, build):
        yield batch
