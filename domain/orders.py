"""Orders and refunds from the shop's tills: coupon, points offset, earning, clawback.

Each use case claims its id (order_id, refund_id) first, inside one write transaction, so a
retried or racing request can never credit twice: the twin waits for the first to commit and
then replays its stored answer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Generic, TypeVar

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert

from domain import audit, coupons, outbox, plus, points, referrals, spending
from domain.audit import Actor
from domain.errors import (
    DomainError,
    IdempotencyConflict,
    InvalidInput,
    OffsetNotAllowed,
    OrderNotFound,
    Reason,
    RefundTooLarge,
)
from domain.growth import PURCHASE, add_growth, total_of, window_start
from domain.idempotency import Fingerprint, check_request_id, fingerprint, with_retry_on_race
from domain.models import Member, Order, Refund
from domain.money import MINOR_PER_UNIT, format_money
from domain.shop import Shop
from domain.spending import Buyer, SpendProof, SpendProofRequired
from domain.sql import insert_unless_exists, table_of
from domain.tiers import progress, recheck_after_refund, record_change, upgrade_for
from domain.transaction import write_transaction

CLOCK_SKEW = timedelta(minutes=5)
PLUS_MARK = " with PLUS"  # ends a purchase entry's reason when PLUS multiplied its points


@dataclass(frozen=True)
class OrderRequest:
    order_id: str
    member: str  # member code or phone number (earning only), or a one-time spend code
    amount: int  # minor units, after the tier discount
    occurred_at: datetime | None = None
    redeem_points: int = 0
    coupon_code: str | None = None
    # The member's presence proven by another door than a spend code; never from a till.
    spend_proof: SpendProof | None = None


@dataclass(frozen=True)
class OrderReceipt:
    order_id: str
    member_code: str
    amount: str
    coupon_code: str | None
    coupon_discount: str
    points_redeemed: int
    points_offset: str
    to_pay: str
    points_earned: int
    growth_earned: int
    balance: int
    tier: str
    previous_tier: str
    tier_changed: bool
    next_tier: str | None
    growth_to_next_tier: int
    occurred_at: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


R = TypeVar("R")

# An order's own statements, built once with bound parameters: SQLAlchemy then neither builds
# nor keys them again per order (it was about a third of an order's CPU, issue 12).
_ORDERS, _MEMBERS = table_of(Order), table_of(Member)
_CLAIMS: dict[str, Insert] = {}
_ORDER_FIGURES = ("coupon_id", "coupon_discount", "points_redeemed", "offset", "paid",
                  "points_earned", "growth_earned", "earn_entry_id", "spend_entry_id", "response")
_FILL_ORDER = (
    update(_ORDERS).where(_ORDERS.c.id == bindparam("order_pk"))
    .values({name: bindparam(f"v_{name}") for name in _ORDER_FIGURES})
)
_MEMBER_BOUGHT = (
    update(_MEMBERS).where(_MEMBERS.c.id == bindparam("member_pk"))
    .values(
        points_balance=_MEMBERS.c.points_balance - bindparam("spend") + bindparam("earned"),
        points_debt=bindparam("v_debt"), last_purchase_at=bindparam("v_last"),
        first_purchase_at=bindparam("v_first"), tier=bindparam("v_tier"),
    )
    .returning(_MEMBERS.c.points_balance)
)
# Spending is guarded: the balance must hold it (a member in debt may earn, not spend).
_MEMBER_SPENT = _MEMBER_BOUGHT.where(_MEMBERS.c.points_balance >= bindparam("spend"))


def _claim(session: AsyncSession) -> Insert:
    """``INSERT INTO orders ... ON CONFLICT (order_id) DO NOTHING RETURNING id``."""
    dialect = session.get_bind().dialect.name
    statement = _CLAIMS.get(dialect)
    if statement is None:
        columns = ("order_id", "request_hash", "member_id", "amount", "occurred_at",
                   "created_at")
        statement = _CLAIMS[dialect] = (
            insert_unless_exists(session, _ORDERS, "order_id")
            .values({name: bindparam(f"v_{name}") for name in columns})
            .returning(_ORDERS.c.id)
        )
    return statement


@dataclass(frozen=True)
class Outcome(Generic[R]):
    result: R
    replayed: bool


def _validate_order(shop: Shop, request: OrderRequest) -> datetime:
    rules = shop.program.orders
    check_request_id("order_id", request.order_id)
    if request.amount <= 0:
        raise InvalidInput("amount", Reason.NOT_POSITIVE)
    if request.amount > rules.max_amount:
        raise InvalidInput("amount", Reason.ABOVE_MAX, limit=rules.max_amount)
    if request.redeem_points < 0:
        raise InvalidInput("redeem_points", Reason.NEGATIVE)
    now = shop.now()
    occurred = request.occurred_at or now
    if occurred.tzinfo is None:
        raise InvalidInput("occurred_at", Reason.NO_TIMEZONE)
    if occurred > now + CLOCK_SKEW:
        raise InvalidInput("occurred_at", Reason.IN_FUTURE)
    if occurred < now - timedelta(days=rules.max_age_days):
        raise InvalidInput("occurred_at", Reason.TOO_OLD, days=rules.max_age_days)
    return occurred


def points_to_money(shop: Shop, points_amount: int) -> int:
    """Minor units a number of points is worth at the till (100 points = 1.00)."""
    return points_amount * MINOR_PER_UNIT // shop.program.points.offset_points_per_unit


def money_to_points(shop: Shop, minor: int) -> int:
    return minor * shop.program.points.offset_points_per_unit // MINOR_PER_UNIT


def max_offset_points(shop: Shop, amount: int, balance: int) -> int:
    """The most points a member may use on an order of ``amount`` (cap and balance)."""
    cap_minor = amount * shop.program.points.offset_max_percent // 100
    return max(0, min(money_to_points(shop, cap_minor), balance))


def points_multiplier(
    shop: Shop, tier: str, birthday_month: int | None, at: datetime,
    plus_factor: Decimal = Decimal(1),
) -> Decimal:
    """Tier multiplier × the best promotion of the day (member day or birthday month;
    promotions do not stack) × PLUS's factor while the member has PLUS (``plus_factor``,
    from ``domain.plus.extra_multiplier``)."""
    rules = shop.program.points
    local = at.astimezone(shop.tz)
    promotion = Decimal(1)
    if rules.member_day and local.day == rules.member_day:
        promotion = max(promotion, rules.member_day_multiplier)
    if birthday_month == local.month:
        promotion = max(promotion, rules.birthday_month_multiplier)
    return shop.program.tier(tier).points_multiplier * promotion * plus_factor


def purchase_points(shop: Shop, paid: int, multiplier: Decimal) -> int:
    """Points for what was paid: per 1.00 × the multiplier, rounded down."""
    value = Decimal(paid) / MINOR_PER_UNIT * shop.program.points.per_currency_unit * multiplier
    return int(value.to_integral_value(rounding=ROUND_DOWN))


def _order_fingerprint(shop: Shop, request: OrderRequest) -> Fingerprint:
    return fingerprint(
        shop,
        {
            "member": request.member.strip().upper(),
            "amount": request.amount,
            "occurred_at": request.occurred_at.isoformat() if request.occurred_at else None,
            "redeem_points": request.redeem_points,
            "coupon_code": (request.coupon_code or "").strip().upper() or None,
        }
    )


def _receipt_push(
    shop: Shop, receipt: OrderReceipt, order: Order, plus_factor: Decimal
) -> dict[str, object]:
    """The receipt push: the receipt, with its local day and its money in minor units for
    the templates to format in the member's language and the shop's currency, and PLUS's
    factor when it multiplied the points."""
    return asdict(receipt) | {
        "day": shop.local_date(order.occurred_at).isoformat(),
        "amount_minor": order.amount, "coupon_discount_minor": order.coupon_discount,
        "points_offset_minor": order.offset, "paid_minor": order.paid,
        "plus_multiplier": str(plus_factor.normalize()) if plus_factor != 1 else None,
    }


async def _stored_answer(
    session: AsyncSession, order_id: str, digest: Fingerprint
) -> Outcome[OrderReceipt] | None:
    """The answer stored for ``order_id`` (a replay), None when there is no such order;
    IdempotencyConflict when it was stored for another request body."""
    stored = (
        await session.execute(
            select(Order.request_hash, Order.response).where(Order.order_id == order_id)
        )
    ).one_or_none()
    if stored is None:
        return None
    if not digest.matches(stored.request_hash):
        raise IdempotencyConflict(id=order_id)
    return Outcome(OrderReceipt(**json.loads(stored.response)), replayed=True)


async def place_order(
    session: AsyncSession, shop: Shop, request: OrderRequest, *, actor: Actor | None = None
) -> Outcome[OrderReceipt]:
    """Apply coupon and points offset, earn points and growth on what remains to pay, upgrade
    the tier at once, and queue the member's receipt: one transaction, once per order_id.

    A handful of statements: the member with their growth (locked), the claim (``INSERT ...
    ON CONFLICT DO NOTHING RETURNING``: a twin that finds the id taken replays the stored
    answer), one guarded UPDATE of the member, the ledger entries with their lot or draws,
    the growth entry, the order's figures, the receipt push; with ``actor`` (a sale staff
    record in the chat), its audit line too. A till's order (no actor) has none."""
    occurred = _validate_order(shop, request)
    digest = _order_fingerprint(shop, request)

    async def attempt() -> Outcome[OrderReceipt]:
        async with write_transaction(session, brief=True):
            try:
                buyer = await spending.identify_buyer(session, shop, request.member)
                _check_spend_proof(request, buyer)
            except DomainError:
                # An order already stored under this id answers first, whatever became of the
                # member or their spend code since (a retry after the code was used replays).
                stored = await _stored_answer(session, request.order_id, digest)
                if stored is not None:
                    return stored
                raise
            now = shop.now()
            order_pk = await session.scalar(
                _claim(session),
                {
                    "v_order_id": request.order_id, "v_request_hash": digest.digest,
                    "v_member_id": buyer.id, "v_amount": request.amount,
                    "v_occurred_at": occurred, "v_created_at": now,
                },
            )
            if order_pk is None:  # the claim: a twin placed it first (and has committed)
                stored = await _stored_answer(session, request.order_id, digest)
                if stored is None:  # cannot be: the conflicting row is committed
                    raise RuntimeError(f"order {request.order_id} claimed but not found")
                return stored
            order = Order(
                id=order_pk, order_id=request.order_id, request_hash=digest.digest,
                member_id=buyer.id, amount=request.amount, occurred_at=occurred,
                created_at=now, coupon_id=None, coupon_discount=0, points_redeemed=0, offset=0,
                paid=0, points_earned=0, growth_earned=0, earn_entry_id=None,
                spend_entry_id=None,
            )  # never added to the session: its row is written with Core statements
            if buyer.spend_code is not None:
                # After the claim, so a retried twin of this order replays instead of being
                # told that its code is used; with it, so a refused order uses no code.
                await spending.consume(
                    session, shop, buyer.spend_code, member_id=buyer.id,
                    order_id=order.order_id,
                )
            receipt = await _fill_order(session, shop, buyer, order, request)
            await session.execute(
                _FILL_ORDER,
                {"order_pk": order_pk, "v_response": receipt.to_json()}
                | {f"v_{name}": getattr(order, name) for name in _ORDER_FIGURES[:-1]},
            )
            plus_factor = plus.extra_multiplier(
                shop, buyer.plus_state, buyer.plus_until, order.occurred_at
            )
            await outbox.enqueue(
                session, shop, member_id=buyer.id, kind="receipt",
                key=f"receipt:{order.order_id}",
                payload=_receipt_push(shop, receipt, order, plus_factor),
            )
            if actor is not None:
                audit.record(
                    session, actor, "order.sale", now, member_id=buyer.id,
                    subject=f"order:{order.order_id}"[:120],
                    before={"points": receipt.balance - receipt.points_earned
                            + receipt.points_redeemed},
                    after={"points": receipt.balance, "amount": order.amount},
                )
            return Outcome(receipt, replayed=False)

    return await with_retry_on_race(session, attempt)


def _check_spend_proof(request: OrderRequest, buyer: Buyer) -> None:
    """The static member code or phone earns; spending points needs the member there."""
    if request.redeem_points <= 0 or buyer.present:
        return
    proof = request.spend_proof
    if proof is None or proof.member_id != buyer.id:
        raise SpendProofRequired(field="redeem_points")


def _offset_for(shop: Shop, request: OrderRequest, after_coupon: int) -> int:
    """The money the redeemed points take off (step and cap checked)."""
    rules = shop.program.points
    step = max(rules.offset_points_per_unit // MINOR_PER_UNIT, 1)
    if request.redeem_points % step:
        raise OffsetNotAllowed("redeem_points", Reason.OFFSET_STEP, step=step)
    offset = points_to_money(shop, request.redeem_points)
    cap = after_coupon * rules.offset_max_percent // 100
    if offset > cap:
        raise OffsetNotAllowed(
            "redeem_points", Reason.OFFSET_CAP, max_points=money_to_points(shop, cap),
            percent=rules.offset_max_percent, amount=after_coupon,
        )
    return offset


async def _fill_order(
    session: AsyncSession, shop: Shop, buyer: Buyer, order: Order, request: OrderRequest
) -> OrderReceipt:
    rules = shop.program
    key = f"order:{order.order_id}"
    after_coupon = order.amount
    coupon_code = None
    if request.coupon_code:
        applied = await coupons.redeem_for_order(
            session, request.coupon_code, member_id=buyer.id, amount=order.amount,
            at=order.occurred_at, order_id=order.order_id,
        )
        order.coupon_id, order.coupon_discount = applied.coupon_id, applied.discount
        coupon_code = applied.code
        after_coupon -= applied.discount

    spend = request.redeem_points
    if spend:
        order.points_redeemed, order.offset = spend, _offset_for(shop, request, after_coupon)
        after_coupon -= order.offset
    order.paid = after_coupon

    plus_factor = plus.extra_multiplier(
        shop, buyer.plus_state, buyer.plus_until, order.occurred_at
    )
    multiplier = points_multiplier(
        shop, buyer.tier, buyer.birthday_month, order.occurred_at, plus_factor
    )
    earned = purchase_points(shop, order.paid, multiplier)
    growth = order.paid * rules.growth.per_currency_unit // MINOR_PER_UNIT
    order.points_earned, order.growth_earned = earned, growth

    # The tier: the window's growth read with the member, plus this order's if it falls in
    # the window (as check_upgrade would count it once the growth entry is written).
    now = shop.now()
    window_growth = buyer.growth.purchase + (
        growth if window_start(shop, now) < order.occurred_at <= now else 0
    )
    counted = total_of(shop, window_growth, buyer.growth.behaviour).counted
    outcome = upgrade_for(shop, buyer.tier, counted)

    # One guarded UPDATE of the member: offset spent, points earned (debt repaid first),
    # purchase dates, tier. The row is locked since it was read, so the figures read hold.
    repay, to_lot = points.credit_split(earned, buyer.points_debt)
    if spend and spend > buyer.points_balance:
        raise OffsetNotAllowed(
            "redeem_points", Reason.OFFSET_BALANCE, balance=buyer.points_balance
        )
    first_purchase = buyer.first_purchase_at is None
    last = buyer.last_purchase_at
    balance = await session.scalar(
        _MEMBER_SPENT if spend else _MEMBER_BOUGHT,
        {
            "member_pk": buyer.id, "spend": spend, "earned": earned,
            "v_debt": buyer.points_debt - repay,
            "v_last": order.occurred_at if last is None or last < order.occurred_at else last,
            "v_first": buyer.first_purchase_at or order.occurred_at, "v_tier": outcome.after,
        },
    )
    if balance is None:  # cannot be under the lock; never let a spend pass unguarded
        raise OffsetNotAllowed(
            "redeem_points", Reason.OFFSET_BALANCE, balance=buyer.points_balance
        )
    if spend:
        order.spend_entry_id = await points.record_spending(
            session, shop, buyer.id, kind="offset", amount=spend,
            balance_after=buyer.points_balance - spend,
            reason=f"order {order.order_id}", key=f"{key}:offset", source_ref=key,
        )
    if earned > 0:
        tier_name = rules.tier(buyer.tier).name.en
        order.earn_entry_id = await points.record_earning(
            session, shop, buyer.id, kind="purchase", amount=earned, to_lot=to_lot,
            balance_after=int(balance),
            reason=f"order {order.order_id} at {tier_name} ×{multiplier.normalize()}"
            + (PLUS_MARK if plus_factor != 1 else ""),
            key=f"{key}:earn", source_ref=key, earned_on=shop.local_date(order.occurred_at),
        )
    await add_growth(
        session, buyer.id, kind="purchase", source=PURCHASE, amount=growth,
        reason=f"order {order.order_id}", key=f"{key}:growth", occurred_at=order.occurred_at,
    )
    if outcome.changed:
        await record_change(session, shop, buyer.id, outcome, "upgrade")
    if first_purchase and buyer.referrer_id is not None:
        member = await session.get(Member, buyer.id, populate_existing=True)
        assert member is not None
        await referrals.on_first_purchase(
            session, shop, member, order.order_id, order.occurred_at
        )
    standing = progress(shop, outcome.after, outcome.growth)
    return OrderReceipt(
        order_id=order.order_id,
        member_code=buyer.code,
        amount=format_money(order.amount),
        coupon_code=coupon_code,
        coupon_discount=format_money(order.coupon_discount),
        points_redeemed=order.points_redeemed,
        points_offset=format_money(order.offset),
        to_pay=format_money(order.paid),
        points_earned=order.points_earned,
        growth_earned=order.growth_earned,
        balance=int(balance),
        tier=outcome.after,
        previous_tier=outcome.before,
        tier_changed=outcome.changed,
        next_tier=standing.next_tier.key if standing.next_tier else None,
        growth_to_next_tier=standing.gap,
        occurred_at=order.occurred_at.isoformat(),
    )


@dataclass(frozen=True)
class RefundReceipt:
    refund_id: str
    order_id: str
    amount: str
    refunded_total: str
    cash_to_return: str
    points_taken_back: int
    points_returned: int
    growth_taken_back: int
    balance: int
    tier: str
    tier_changed: bool

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def _share(total: int, refunded: int, amount: int) -> int:
    """``total`` × refunded / amount, rounded down: cumulative, so a full refund is exact."""
    return total * refunded // amount


async def refund_order(
    session: AsyncSession, shop: Shop, *, order_id: str, refund_id: str, amount: int,
    actor: Actor | None = None,
) -> Outcome[RefundReceipt]:
    """Take back the points and growth of the refunded share and return its offset points.
    Refunds never exceed the order; refund_id is idempotent; the tier is re-checked. With
    ``actor`` (a refund staff record in the chat), its audit line goes with it."""
    check_request_id("order_id", order_id)
    check_request_id("refund_id", refund_id)
    if amount <= 0:
        raise InvalidInput("amount", Reason.NOT_POSITIVE)
    digest = fingerprint(shop, {"order_id": order_id, "amount": amount})

    async def attempt() -> Outcome[RefundReceipt]:
        async with write_transaction(session, brief=True):
            existing = await session.scalar(select(Refund).where(Refund.refund_id == refund_id))
            if existing is not None:
                if not digest.matches(existing.request_hash):
                    raise IdempotencyConflict(id=refund_id)
                return Outcome(RefundReceipt(**json.loads(existing.response)), replayed=True)
            order = await session.scalar(
                select(Order).where(Order.order_id == order_id).with_for_update()
            )
            if order is None:
                raise OrderNotFound(order_id=order_id)
            refund = Refund(
                refund_id=refund_id, request_hash=digest.digest, order_pk=order.id, amount=amount,
                created_at=shop.now(),
            )
            session.add(refund)
            await session.flush()  # the claim
            receipt = await _apply_refund(session, shop, order, refund)
            refund.response = receipt.to_json()
            if actor is not None:
                audit.record(
                    session, actor, "order.refund", shop.now(), member_id=order.member_id,
                    subject=f"order:{order.order_id}"[:120],
                    before={"points": receipt.balance + receipt.points_taken_back
                            - receipt.points_returned},
                    after={"points": receipt.balance, "amount": amount},
                )
            return Outcome(receipt, replayed=False)

    return await with_retry_on_race(session, attempt)


async def _apply_refund(
    session: AsyncSession, shop: Shop, order: Order, refund: Refund
) -> RefundReceipt:
    left = order.amount - order.refunded
    if refund.amount > left:
        raise RefundTooLarge(
            "amount", Reason.REFUND_OVER_LEFT, left=left, order_id=order.order_id
        )
    refunded = order.refunded + refund.amount
    take_points = _share(order.points_earned, refunded, order.amount) - order.points_taken_back
    give_points = _share(order.points_redeemed, refunded, order.amount) - order.points_returned
    take_growth = _share(order.growth_earned, refunded, order.amount) - order.growth_taken_back
    cash = _share(order.paid, refunded, order.amount) - order.cash_returned
    key = f"refund:{refund.refund_id}"
    if take_points > 0:
        await points.claw_back(
            session, shop, order.member_id, kind="refund", amount=take_points,
            reason=f"refund of order {order.order_id}", key=f"{key}:clawback",
            source_ref=f"order:{order.order_id}", from_entry=order.earn_entry_id,
        )
    if give_points > 0 and order.spend_entry_id is not None:
        await points.give_back(
            session, shop, order.member_id, spent_entry=order.spend_entry_id,
            amount=give_points, kind="refund", reason=f"offset returned, order {order.order_id}",
            key=f"{key}:offset", source_ref=f"order:{order.order_id}",
        )
    await add_growth(
        session, order.member_id, kind="refund", source=PURCHASE, amount=-take_growth,
        reason=f"refund of order {order.order_id}", key=f"{key}:growth",
        # dated like the purchase, so both leave the window together
        occurred_at=order.occurred_at,
    )
    order.refunded = refunded
    order.points_taken_back += take_points
    order.points_returned += give_points
    order.growth_taken_back += take_growth
    order.cash_returned += cash
    if refunded == order.amount and order.coupon_id is not None:
        await coupons.reinstate(session, order.coupon_id, now=shop.now())
    if refunded == order.amount:  # the inviter's reward, if this order paid one (PROGRAM.md)
        await referrals.on_full_refund(session, shop, order)
    outcome = await recheck_after_refund(session, shop, order.member_id)
    await session.flush()
    balance = int(
        await session.scalar(select(Member.points_balance).where(Member.id == order.member_id))
        or 0
    )
    # The member's own receipt of the refund, in the refund's transaction; keyed by the
    # refund id, so a replayed refund (answered from its stored receipt) pushes nothing.
    await outbox.enqueue(
        session, shop, member_id=order.member_id, kind="refund",
        key=f"{key}:push",
        payload={
            "purchase_day": shop.local_date(order.occurred_at).isoformat(),
            "purchase_amount": order.amount, "refund_amount": refund.amount,
            "full": refunded == order.amount, "cash_returned": cash,
            "points_taken_back": take_points, "points_returned": give_points,
            "growth_taken_back": take_growth, "balance": balance,
            "tier": outcome.after, "previous_tier": outcome.before,
            "tier_changed": outcome.changed,
        },
    )
    return RefundReceipt(
        refund_id=refund.refund_id,
        order_id=order.order_id,
        amount=format_money(refund.amount),
        refunded_total=format_money(refunded),
        cash_to_return=format_money(cash),
        points_taken_back=take_points,
        points_returned=give_points,
        growth_taken_back=take_growth,
        balance=balance,
        tier=outcome.after,
        tier_changed=outcome.changed,
    )
