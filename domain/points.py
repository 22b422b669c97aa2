"""The points ledger: every change is an entry; earned points are lots with an expiry date.

Invariants, kept by every function here and checked by the tests:
- ``members.points_balance == sum(ledger_entries.amount)`` for each member;
- ``points_balance == sum(points_lots.remaining) - points_debt``;
- a lot's ``remaining`` is never negative nor above what it was earned with.

Functions here never commit: they run inside the caller's write transaction.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation

from sqlalchemy import String, and_, bindparam, cast, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.catalog import reward_names
from domain.errors import InsufficientPoints, MemberNotFound
from domain.expiry import expiry_date
from domain.models import Coupon, LedgerEntry, LotDraw, Member, Order, PointsLot, UTCDateTime
from domain.program import Localized
from domain.shop import Shop
from domain.sql import table_of
from domain.transaction import read_transaction


@dataclass(frozen=True)
class Posting:
    """What one ledger entry did."""

    entry_id: int
    amount: int
    balance: int


async def entry_exists(session: AsyncSession, key: str) -> bool:
    found = await session.scalar(select(LedgerEntry.id).where(LedgerEntry.idempotency_key == key))
    return found is not None


async def _lock_member(session: AsyncSession, member_id: int) -> tuple[int, int]:
    """Balance and debt, with the member's row locked until commit (PostgreSQL; SQLite holds
    the database write lock already)."""
    row = (
        await session.execute(
            select(Member.points_balance, Member.points_debt)
            .where(Member.id == member_id)
            # FOR NO KEY UPDATE on PostgreSQL: it does not conflict with the key-share locks that
            # inserting an order or event referencing the member takes, so concurrent credits to
            # one member queue instead of deadlocking.
            .with_for_update(key_share=True)
        )
    ).one_or_none()
    if row is None:
        raise MemberNotFound(member_id=member_id)
    return int(row[0]), int(row[1])


async def _append(
    session: AsyncSession,
    shop: Shop,
    member_id: int,
    *,
    kind: str,
    amount: int,
    balance_after: int,
    reason: str,
    key: str,
    source_ref: str | None,
) -> int:
    """Insert one ledger entry (one Core statement); its id."""
    entry_id = await session.scalar(
        insert(table_of(LedgerEntry))
        .values(
            member_id=member_id, kind=kind, amount=amount, balance_after=balance_after,
            reason=reason, source_ref=source_ref, idempotency_key=key, created_at=shop.now(),
        )
        .returning(table_of(LedgerEntry).c.id)
    )
    assert entry_id is not None
    return int(entry_id)


def credit_split(amount: int, debt: int) -> tuple[int, int]:
    """How a credit of ``amount`` divides: (debt repaid first, what goes into a new lot)."""
    repay = min(amount, debt)
    return repay, amount - repay


async def record_earning(
    session: AsyncSession,
    shop: Shop,
    member_id: int,
    *,
    kind: str,
    amount: int,
    to_lot: int,
    balance_after: int,
    reason: str,
    key: str,
    source_ref: str | None = None,
    earned_on: date | None = None,
) -> int:
    """The ledger entry and the lot of a credit whose member row the caller has already
    updated (balance + amount, debt - the repaid part) in this transaction; the entry id."""
    entry_id = await _append(
        session, shop, member_id, kind=kind, amount=amount, balance_after=balance_after,
        reason=reason, key=key, source_ref=source_ref,
    )
    if to_lot > 0:
        day = earned_on or shop.today()
        await session.execute(
            insert(table_of(PointsLot)).values(
                member_id=member_id, entry_id=entry_id, earned_on=day,
                expires_on=expiry_date(day, shop.program.expiry), amount=to_lot,
                remaining=to_lot,
            )
        )
    return entry_id


async def record_spending(
    session: AsyncSession,
    shop: Shop,
    member_id: int,
    *,
    kind: str,
    amount: int,
    balance_after: int,
    reason: str,
    key: str,
    source_ref: str | None = None,
) -> int:
    """The ledger entry and the lot draws of a spending whose guarded balance update
    (``... WHERE points_balance >= amount``) the caller has already made; the entry id."""
    entry_id = await _append(
        session, shop, member_id, kind=kind, amount=-amount, balance_after=balance_after,
        reason=reason, key=key, source_ref=source_ref,
    )
    taken = await _draw_lots(session, member_id, entry_id, amount, first_lot=None)
    if taken != amount:  # the lots and the balance disagree: never let that commit
        raise RuntimeError(f"lots of member {member_id} cover {taken}, not {amount}")
    return entry_id


async def earn(
    session: AsyncSession,
    shop: Shop,
    member_id: int,
    *,
    kind: str,
    amount: int,
    reason: str,
    key: str,
    source_ref: str | None = None,
    earned_on: date | None = None,
) -> Posting:
    """Credit earned points as a new lot; an outstanding debt is repaid first."""
    if amount <= 0:
        raise ValueError("earn takes a positive amount")
    balance, debt = await _lock_member(session, member_id)
    repay, to_lot = credit_split(amount, debt)
    new_balance = balance + amount
    await session.execute(
        update(Member)
        .where(Member.id == member_id)
        .values(points_balance=new_balance, points_debt=debt - repay)
    )
    entry_id = await record_earning(
        session, shop, member_id, kind=kind, amount=amount, to_lot=to_lot,
        balance_after=new_balance, reason=reason, key=key, source_ref=source_ref,
        earned_on=earned_on,
    )
    return Posting(entry_id, amount, new_balance)


async def _draw_lots(
    session: AsyncSession, member_id: int, entry_id: int, amount: int, *, first_lot: int | None
) -> int:
    """Take up to ``amount`` from the member's lots, earliest expiry first (``first_lot``
    before all others); record the draws. Returns how much was taken. Three statements: the
    lots (locked), one UPDATE run for the drawn lots, one INSERT of the draws."""
    order = [PointsLot.expires_on.is_(None), PointsLot.expires_on, PointsLot.id]
    if first_lot is not None:
        order.insert(0, (PointsLot.id == first_lot).desc())
    lots = (
        await session.execute(
            select(PointsLot.id, PointsLot.remaining)
            .where(PointsLot.member_id == member_id, PointsLot.remaining > 0)
            .order_by(*order)
            .with_for_update(key_share=True)
        )
    ).all()
    taken = 0
    draws: list[dict[str, int]] = []
    for lot_id, remaining in lots:
        if taken >= amount:
            break
        share = min(int(remaining), amount - taken)
        taken += share
        draws.append({"entry_id": entry_id, "lot_id": lot_id, "amount": share})
    if draws:
        table = table_of(PointsLot)
        await session.execute(
            update(table)
            .where(table.c.id == bindparam("drawn_lot"))
            .values(remaining=table.c.remaining - bindparam("drawn")),
            [{"drawn_lot": d["lot_id"], "drawn": d["amount"]} for d in draws],
        )
        await session.execute(insert(table_of(LotDraw)), draws)
    return taken


async def spend(
    session: AsyncSession,
    shop: Shop,
    member_id: int,
    *,
    kind: str,
    amount: int,
    reason: str,
    key: str,
    source_ref: str | None = None,
) -> Posting:
    """Spend points, earliest-expiring first. Raises InsufficientPoints and changes nothing
    when the balance does not cover it. The guard is one conditional UPDATE."""
    if amount <= 0:
        raise ValueError("spend takes a positive amount")
    new_balance = await session.scalar(
        update(Member)
        .where(Member.id == member_id, Member.points_balance >= amount)
        .values(points_balance=Member.points_balance - amount)
        .returning(Member.points_balance)
    )
    if new_balance is None:
        balance = await session.scalar(select(Member.points_balance).where(Member.id == member_id))
        if balance is None:
            raise MemberNotFound(member_id=member_id)
        raise InsufficientPoints(balance=balance, needed=amount)
    entry_id = await record_spending(
        session, shop, member_id, kind=kind, amount=amount, balance_after=new_balance,
        reason=reason, key=key, source_ref=source_ref,
    )
    return Posting(entry_id, -amount, new_balance)


async def claw_back(
    session: AsyncSession,
    shop: Shop,
    member_id: int,
    *,
    kind: str,
    amount: int,
    reason: str,
    key: str,
    source_ref: str | None = None,
    from_entry: int | None = None,
) -> Posting:
    """Take back earned points (a refund). Drawn from the lot ``from_entry`` created, then the
    earliest-expiring others; what the lots no longer hold becomes debt, so the balance may go
    below zero and later earnings repay it first."""
    if amount <= 0:
        raise ValueError("claw_back takes a positive amount")
    balance, debt = await _lock_member(session, member_id)
    new_balance = balance - amount
    entry_id = await _append(
        session, shop, member_id, kind=kind, amount=-amount, balance_after=new_balance,
        reason=reason, key=key, source_ref=source_ref,
    )
    first_lot = None
    if from_entry is not None:
        first_lot = await session.scalar(
            select(PointsLot.id).where(PointsLot.entry_id == from_entry)
        )
    taken = await _draw_lots(session, member_id, entry_id, amount, first_lot=first_lot)
    await session.execute(
        update(Member)
        .where(Member.id == member_id)
        .values(points_balance=new_balance, points_debt=debt + (amount - taken))
    )
    return Posting(entry_id, -amount, new_balance)


async def give_back(
    session: AsyncSession,
    shop: Shop,
    member_id: int,
    *,
    spent_entry: int,
    amount: int,
    kind: str,
    reason: str,
    key: str,
    source_ref: str | None = None,
) -> Posting:
    """Return up to ``amount`` of what ``spent_entry`` took, into the very lots it came from
    (so returned points keep their original expiry; a lot that has expired meanwhile is
    expired again by the next expiry run). Debt is repaid first, as with any credit. What
    went back is recorded as a negative draw of ``spent_entry``, so partial returns add up."""
    if amount <= 0:
        raise ValueError("give_back takes a positive amount")
    balance, debt = await _lock_member(session, member_id)
    draws = (
        await session.execute(
            select(LotDraw.lot_id, func.sum(LotDraw.amount))
            .where(LotDraw.entry_id == spent_entry)
            .group_by(LotDraw.lot_id)
            .order_by(LotDraw.lot_id.desc())
        )
    ).all()
    repay = min(amount, debt)
    to_lots = amount - repay
    new_balance = balance + amount
    entry_id = await _append(
        session, shop, member_id, kind=kind, amount=amount, balance_after=new_balance,
        reason=reason, key=key, source_ref=source_ref,
    )
    for lot_id, owed in draws:  # net of earlier returns: those are negative draws
        if to_lots <= 0:
            break
        lot = await session.get(PointsLot, lot_id, with_for_update=True)
        assert lot is not None
        share = min(int(owed), to_lots, lot.amount - lot.remaining)
        if share > 0:
            lot.remaining += share
            to_lots -= share
            session.add(LotDraw(entry_id=spent_entry, lot_id=lot_id, amount=-share))
    if to_lots > 0:  # the lots were already refilled by earlier returns: refuse the excess
        raise RuntimeError(f"entry {spent_entry} cannot take back {amount} points")
    await session.execute(
        update(Member)
        .where(Member.id == member_id)
        .values(points_balance=new_balance, points_debt=debt - repay)
    )
    await session.flush()
    return Posting(entry_id, amount, new_balance)


async def expire_lot(
    session: AsyncSession, shop: Shop, lot_id: int, *, key: str
) -> Posting | None:
    """Expire what is left of one lot (only that: earlier spending is not touched)."""
    lot = await session.get(PointsLot, lot_id, with_for_update=True)
    if lot is None or lot.remaining <= 0:
        return None
    balance, _debt = await _lock_member(session, lot.member_id)
    amount = lot.remaining
    new_balance = balance - amount
    entry_id = await _append(
        session, shop, lot.member_id, kind="expiry", amount=-amount, balance_after=new_balance,
        reason="expired", key=key, source_ref=f"lot:{lot.id}",
    )
    session.add(LotDraw(entry_id=entry_id, lot_id=lot.id, amount=amount))
    lot.remaining = 0
    await session.execute(
        update(Member).where(Member.id == lot.member_id).values(points_balance=new_balance)
    )
    await session.flush()
    return Posting(entry_id, -amount, new_balance)


@dataclass(frozen=True)
class ExpiringPoints:
    expires_on: date
    amount: int


async def expiring_points(
    session: AsyncSession, member_id: int, *, until: date | None = None
) -> list[ExpiringPoints]:
    """Which points expire when (earliest first), optionally only up to ``until``."""
    query = (
        select(PointsLot.expires_on, func.sum(PointsLot.remaining))
        .where(
            PointsLot.member_id == member_id,
            PointsLot.remaining > 0,
            PointsLot.expires_on.is_not(None),
        )
        .group_by(PointsLot.expires_on)
        .order_by(PointsLot.expires_on)
    )
    if until is not None:
        query = query.where(PointsLot.expires_on <= until)
    rows = (await session.execute(query)).all()
    return [ExpiringPoints(day, int(total)) for day, total in rows if day is not None]


EXPIRY_BATCH = 10_000  # lots a transaction: well under a second, so a till waits little


async def due_lots(
    session: AsyncSession, *, on: date, size: int | None = None
) -> list[list[int]]:
    """The lots due to expire on ``on`` (last day before it, points left), read once from the
    live-lots index, in batches of ``size`` ordered by member then lot: a batch writes the
    rows of a run of members, so each page of members and lots is written about once, and no
    batch reads the due lots again."""
    rows = (
        await session.execute(
            select(PointsLot.member_id, PointsLot.id).where(
                PointsLot.expires_on < on, PointsLot.remaining > 0
            )
        )
    ).all()
    ids = [lot_id for _member_id, lot_id in sorted(rows)]
    size = size or EXPIRY_BATCH
    return [ids[start:start + size] for start in range(0, len(ids), size)]


async def expire_due(
    session: AsyncSession, shop: Shop, *, on: date, batch: int | None = None
) -> int:
    """Expire every lot whose last day is before ``on`` (local date), in the caller's write
    transaction. Returns the number of lots expired. The daily job commits after each batch
    instead (``domain.schedule.run_expiry``)."""
    expired = 0
    for lot_ids in await due_lots(session, on=on, size=batch):
        expired += await expire_lots(session, shop, lot_ids, on=on)
    return expired


async def expire_lots(session: AsyncSession, shop: Shop, lot_ids: list[int], *, on: date) -> int:
    """Expire the lots ``lot_ids`` that are still due on ``on``: what is left of each goes,
    nothing more, as one ledger entry and one draw per lot. Set-based statements whatever the
    batch's size, all in the database; a lot spent meanwhile (by a till) gives what it still
    holds, one emptied meanwhile is skipped, so a second run finds nothing. Returns the number
    of lots expired. Never commits."""
    if not lot_ids:
        return 0
    due = and_(PointsLot.id.in_(lot_ids), PointsLot.expires_on < on, PointsLot.remaining > 0)
    if session.get_bind().dialect.name != "sqlite":
        # Members in id order, as every other writer locks them: no deadlock on PostgreSQL.
        # (SQLite's write transaction holds the whole database already.)
        await session.execute(
            select(Member.id)
            .where(Member.id.in_(select(PointsLot.member_id).where(due).scalar_subquery()))
            .order_by(Member.id)
            .with_for_update(key_share=True)
        )
    # One key per lot and run: a lot refilled by a refund can expire again in a later run.
    prefix = f"expiry:{uuid.uuid4().hex[:12]}:"
    key = literal(prefix).concat(cast(PointsLot.id, String))
    taken_before = func.sum(PointsLot.remaining).over(
        partition_by=PointsLot.member_id, order_by=PointsLot.id
    )
    await session.execute(
        insert(LedgerEntry).from_select(
            ["member_id", "kind", "amount", "balance_after", "reason", "source_ref",
             "idempotency_key", "created_at"],
            select(
                PointsLot.member_id, literal("expiry"), -PointsLot.remaining,
                Member.points_balance - taken_before, literal("expired"),
                literal("lot:").concat(cast(PointsLot.id, String)), key,
                literal(shop.now(), UTCDateTime()),
            )
            .join(Member, Member.id == PointsLot.member_id)
            .where(due)
            # Entry ids in each member's lot order: balance_after runs down with them.
            .order_by(PointsLot.member_id, PointsLot.id),
        )
    )
    await session.execute(
        insert(LotDraw).from_select(
            ["entry_id", "lot_id", "amount"],
            select(LedgerEntry.id, PointsLot.id, PointsLot.remaining)
            .join(LedgerEntry, LedgerEntry.idempotency_key == key)
            .where(due),
        )
    )
    taken = (
        select(PointsLot.member_id, func.sum(PointsLot.remaining).label("taken"))
        .where(due)
        .group_by(PointsLot.member_id)
        .subquery()
    )
    await session.execute(
        update(Member).where(Member.id == taken.c.member_id)
        .values(points_balance=Member.points_balance - taken.c.taken)
        .execution_options(synchronize_session=False)
    )
    result = await session.execute(
        update(PointsLot).where(due).values(remaining=0)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _history_entries(
    session: AsyncSession, member_id: int, *, page: int, per_page: int
) -> tuple[list[LedgerEntry], int, int]:
    """One page of the member's ledger entries, newest first, with the page (clamped) and
    the number of pages."""
    total = int(
        await session.scalar(
            select(func.count(LedgerEntry.id)).where(LedgerEntry.member_id == member_id)
        )
        or 0
    )
    pages = max(1, -(-total // per_page))
    page = min(max(page, 0), pages - 1)
    rows = (
        await session.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.member_id == member_id)
            .order_by(LedgerEntry.id.desc())
            .offset(page * per_page)
            .limit(per_page)
        )
    ).all()
    return list(rows), page, pages


# ------------------------------------------------------------------ what the member reads

SOON_DAYS = 30
ORDER_REF = "order:"
COUPON_REF = "coupon:"
REWARD_SOURCE = "reward:"
# The reason orders.py writes on purchase points: "order <id> at <tier> ×<multiplier>", and
# " with PLUS" after it when the member's PLUS multiplied them.
_PURCHASE_REASON = re.compile(r" at (?P<tier>.+) ×(?P<multiplier>[0-9.]+)(?P<plus> with PLUS)?$")


@dataclass(frozen=True)
class PurchaseRef:
    """The member's own order a ledger line comes from, as they know it: when and how much."""

    day: date  # local
    amount: int  # minor units, after the tier discount


@dataclass(frozen=True)
class LedgerLine:
    """One line of the points history, described by its cause rather than internal keys:
    ``kind`` (purchase, offset, refund, expiry, signup, checkin, reward, referral, ...), the
    member's own purchase it belongs to, the reward's name, the tier and multiplier a
    purchase earned at. A referral line carries nothing of the friend (code or order)."""

    kind: str
    amount: int
    day: date  # local
    purchase: PurchaseRef | None = None
    reward_name: Localized | None = None
    tier_name: Localized | None = None
    multiplier: Decimal | None = None
    plus: bool = False  # the member's PLUS multiplied this purchase's points


@dataclass(frozen=True)
class PointsOverview:
    balance: int
    expiring: list[ExpiringPoints]  # within ``SOON_DAYS``, earliest first
    later: ExpiringPoints | None  # the first expiry after that
    lines: list[LedgerLine]
    page: int
    pages: int


def _tier_of(shop: Shop, reason: str) -> tuple[Localized | None, Decimal | None]:
    """Tier and multiplier of a purchase entry, from the reason orders.py wrote."""
    found = _PURCHASE_REASON.search(reason)
    if found is None:
        return None, None
    try:
        multiplier = Decimal(found["multiplier"]).normalize()
    except InvalidOperation:
        return None, None
    named = found["tier"]
    tier = next(
        (t for t in shop.program.tiers if named in (t.key, t.name.en, t.name.zh)), None
    )
    return (tier.name if tier is not None else None), multiplier


async def describe_entries(
    session: AsyncSession, shop: Shop, member_id: int, entries: list[LedgerEntry]
) -> list[LedgerLine]:
    """Ledger entries as the member reads them: their purchases (day, amount) and rewards
    (the program's localized name) looked up by reference, only among their own."""
    order_ids = {
        e.source_ref.removeprefix(ORDER_REF)
        for e in entries
        if e.source_ref and e.source_ref.startswith(ORDER_REF) and e.kind != "referral"
    }
    codes = {
        e.source_ref.removeprefix(COUPON_REF)
        for e in entries
        if e.source_ref and e.source_ref.startswith(COUPON_REF)
    }
    purchases: dict[str, PurchaseRef] = {}
    if order_ids:
        rows = await session.execute(
            select(Order.order_id, Order.occurred_at, Order.amount).where(
                Order.member_id == member_id, Order.order_id.in_(order_ids)
            )
        )
        purchases = {
            order_id: PurchaseRef(shop.local_date(at), amount) for order_id, at, amount in rows
        }
    rewards: dict[str, Localized] = {}
    if codes:
        names = await reward_names(session, shop)  # the live catalog's, admin-added items too
        issued = await session.execute(
            select(Coupon.code, Coupon.source).where(
                Coupon.member_id == member_id, Coupon.code.in_(codes)
            )
        )
        for code, source in issued:
            name = names.get(source.removeprefix(REWARD_SOURCE))
            if source.startswith(REWARD_SOURCE) and name is not None:
                rewards[code] = name
    lines = []
    for entry in entries:
        ref = entry.source_ref or ""
        purchase = None
        if entry.kind != "referral" and ref.startswith(ORDER_REF):
            purchase = purchases.get(ref.removeprefix(ORDER_REF))
        tier_name, multiplier = (
            _tier_of(shop, entry.reason) if entry.kind == "purchase" else (None, None)
        )
        with_plus = entry.kind == "purchase" and entry.reason.endswith(" with PLUS")
        lines.append(
            LedgerLine(
                kind=entry.kind, amount=entry.amount, day=shop.local_date(entry.created_at),
                purchase=purchase, reward_name=rewards.get(ref.removeprefix(COUPON_REF)),
                tier_name=tier_name, multiplier=multiplier, plus=with_plus,
            )
        )
    return lines


async def overview(
    session: AsyncSession, shop: Shop, member_id: int, *, page: int, per_page: int = 8
) -> PointsOverview:
    """What /points shows: the balance, what expires within ``SOON_DAYS`` (and the next
    expiry after that), and one page of the history, newest first. One read transaction."""
    async with read_transaction(session):
        balance = await session.scalar(select(Member.points_balance).where(Member.id == member_id))
        if balance is None:
            raise MemberNotFound(member_id=member_id)
        schedule = await expiring_points(session, member_id)
        history = await _history_entries(session, member_id, page=page, per_page=per_page)
        entries, page, pages = history
        lines = await describe_entries(session, shop, member_id, entries)
    soon_until = shop.today() + timedelta(days=SOON_DAYS)
    return PointsOverview(
        balance=int(balance),
        expiring=[item for item in schedule if item.expires_on <= soon_until],
        later=next((item for item in schedule if item.expires_on > soon_until), None),
        lines=lines, page=page, pages=pages,
    )
