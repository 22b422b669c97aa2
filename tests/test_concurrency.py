"""Races: many requests for the same member (or the same idempotency key) at once.

Every concurrent task has its own AsyncSession (or, through the till API, its own request and
so its own session); the tasks are released together by an ``asyncio.Barrier``. On SQLite the
write transactions serialise on BEGIN IMMEDIATE; on PostgreSQL (TEST_DATABASE_URL) they really
overlap, so the unique keys, row locks and ``with_retry_on_race`` are what keep the books right.

After each race the member's books are checked: balance == sum(ledger) == sum(lots.remaining)
- debt, and each ledger entry's ``balance_after`` is the running sum of the entries before it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import members, points, spending
from domain.errors import InsufficientPoints
from domain.models import (
    BehaviourEvent,
    GrowthEntry,
    LedgerEntry,
    Member,
    Order,
    PointsLot,
    Push,
    Refund,
    TierChange,
)
from domain.points import Posting
from domain.shop import Shop
from domain.transaction import write_transaction

T = TypeVar("T")
RACE_TIMEOUT = 45  # seconds; SQLite's busy timeout is 15 s, so a wait this long is a bug
SessionFactory = async_sessionmaker[AsyncSession]
ORDERS = "/api/v1/orders"


async def race(n: int, task: Callable[[int], Awaitable[T]]) -> list[T | BaseException]:
    """Run ``task(0..n-1)`` concurrently, all released at the same moment; exceptions are
    returned in place of results."""
    barrier = asyncio.Barrier(n)

    async def run(i: int) -> T:
        await barrier.wait()
        return await task(i)

    async with asyncio.timeout(RACE_TIMEOUT):
        return await asyncio.gather(*(run(i) for i in range(n)), return_exceptions=True)


def _profile(telegram_id: int) -> members.TelegramProfile:
    return members.TelegramProfile(
        telegram_id=telegram_id, first_name="Lin", last_name=None, username=None,
        language_code="en",
    )


async def _new_member(
    session_factory: SessionFactory, shop: Shop, telegram_id: int = 4242
) -> Member:
    """A freshly registered member: 100 sign-up points."""
    async with session_factory() as session:
        registration = await members.register(session, shop, _profile(telegram_id))
    assert registration.created
    assert registration.member.points_balance == 100
    return registration.member


async def _spend_codes(
    session_factory: SessionFactory, shop: Shop, member: Member, n: int
) -> list[str]:
    """``n`` one-time spend codes of the member ("Pay with points" tapped ``n`` times)."""
    async with session_factory() as session:
        return [(await spending.issue(session, shop, member.id)).code for _ in range(n)]


async def _books(session_factory: SessionFactory, member_id: int) -> dict[str, int]:
    """The member's balance and debt, after checking the ledger invariants."""
    async with session_factory() as session:
        member = await session.get(Member, member_id)
        assert member is not None
        entries = (
            await session.execute(
                select(LedgerEntry.id, LedgerEntry.amount, LedgerEntry.balance_after)
                .where(LedgerEntry.member_id == member_id)
                .order_by(LedgerEntry.id)
            )
        ).all()
        lots = await session.scalar(
            select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(
                PointsLot.member_id == member_id
            )
        )
        bad_lots = await session.scalar(
            select(func.count(PointsLot.id)).where(
                PointsLot.member_id == member_id,
                (PointsLot.remaining < 0) | (PointsLot.remaining > PointsLot.amount),
            )
        )
    running = 0
    for entry_id, amount, balance_after in entries:
        running += amount
        assert balance_after == running, f"entry {entry_id}: balance_after {balance_after}"
    assert member.points_balance == running == lots - member.points_debt, (
        f"balance {member.points_balance}, ledger {running}, lots {lots}, "
        f"debt {member.points_debt}"
    )
    assert bad_lots == 0
    return {"balance": member.points_balance, "debt": member.points_debt}


async def _count(session_factory: SessionFactory, query: Any) -> int:
    async with session_factory() as session:
        return int(await session.scalar(query) or 0)


def _unexpected(results: Sequence[object], allowed: tuple[type, ...]) -> list[object]:
    return [r for r in results if isinstance(r, BaseException) and not isinstance(r, allowed)]


def _responses(results: Sequence[httpx.Response | BaseException]) -> list[httpx.Response]:
    """The HTTP answers; fails, naming them, if any request raised instead (a 500)."""
    errors = Counter(
        f"{type(r).__name__}: {str(r).splitlines()[0]}"
        for r in results
        if isinstance(r, BaseException)
    )
    assert not errors, f"{sum(errors.values())} of {len(results)} requests raised: {dict(errors)}"
    return [r for r in results if isinstance(r, httpx.Response)]


def _statuses(responses: Sequence[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def _texts(responses: Sequence[httpx.Response]) -> list[str]:
    return [f"{r.status_code} {r.text}" for r in responses]


# 1. Double spend, straight through the domain ---------------------------------------------


async def test_concurrent_spends_never_overdraw(
    session_factory: SessionFactory, shop: Shop
) -> None:
    member = await _new_member(session_factory, shop)

    async def spend(i: int) -> Posting:
        async with session_factory() as session, write_transaction(session):
            return await points.spend(
                session, shop, member.id, kind="offset", amount=10,
                reason=f"race {i}", key=f"race-spend:{i}",
            )

    results = await race(30, spend)

    assert not _unexpected(results, (InsufficientPoints,))
    postings = [r for r in results if isinstance(r, Posting)]
    refused = [r for r in results if isinstance(r, InsufficientPoints)]
    assert len(postings) == 10 and len(refused) == 20
    assert sorted(p.balance for p in postings) == list(range(0, 100, 10))
    assert await _books(session_factory, member.id) == {"balance": 0, "debt": 0}
    spends = select(func.count(LedgerEntry.id)).where(
        LedgerEntry.member_id == member.id, LedgerEntry.kind == "offset"
    )
    assert await _count(session_factory, spends) == 10


# 2. Double spend through the till API -----------------------------------------------------


async def test_concurrent_orders_redeeming_points_never_overdraw(
    api: httpx.AsyncClient, session_factory: SessionFactory, shop: Shop
) -> None:
    member = await _new_member(session_factory, shop)
    # 0.20 with 10 points (0.10, the 50% cap) leaves 0.10 to pay: it earns no points back,
    # so the 100 sign-up points cover exactly 10 such orders. (An order of 100.00 would earn
    # 99 points and every one of the 30 would go through: see the next test.)
    codes = await _spend_codes(session_factory, shop, member, 30)

    async def post(i: int) -> httpx.Response:
        return await api.post(
            ORDERS,
            json={"order_id": f"S{i}", "member": codes[i], "amount": "0.20",
                  "redeem_points": 10},
        )

    responses = _responses(await race(30, post))

    assert _statuses(responses) == {201: 10, 409: 20}, _texts(responses)
    for response in responses:
        body = response.json()
        if response.status_code == 201:
            assert body["points_redeemed"] == 10 and body["points_earned"] == 0
        else:
            assert body["field"] == "redeem_points" and body["error"] == "offset_not_allowed"
    assert await _books(session_factory, member.id) == {"balance": 0, "debt": 0}
    placed = select(func.count(Order.id)).where(Order.member_id == member.id)
    assert await _count(session_factory, placed) == 10  # refused orders leave no row behind


async def test_concurrent_orders_earning_and_spending_lose_no_update(
    api: httpx.AsyncClient, session_factory: SessionFactory, shop: Shop
) -> None:
    """Orders of 100.00 redeeming 10 points each: every order earns 99 points back, so all of
    them go through and the balance must end at exactly 100 + 10 × (99 - 10).

    On PostgreSQL this exposes a deadlock: each order's INSERT INTO orders takes FOR KEY SHARE
    on the member row (foreign key), then ``points.earn`` → ``_lock_member`` asks for FOR
    UPDATE on that row, which conflicts with the twins' KEY SHARE locks."""
    member = await _new_member(session_factory, shop)
    codes = await _spend_codes(session_factory, shop, member, 10)

    async def post(i: int) -> httpx.Response:
        return await api.post(
            ORDERS,
            json={"order_id": f"E{i}", "member": codes[i], "amount": "100.00",
                  "redeem_points": 10},
        )

    responses = _responses(await race(10, post))

    assert _statuses(responses) == {201: 10}, _texts(responses)
    bodies = [r.json() for r in responses]
    assert all(b["points_redeemed"] == 10 and b["points_earned"] == 99 for b in bodies)
    assert await _books(session_factory, member.id) == {"balance": 100 + 10 * 89, "debt": 0}
    purchases = select(func.count(LedgerEntry.id)).where(
        LedgerEntry.member_id == member.id, LedgerEntry.kind == "purchase"
    )
    assert await _count(session_factory, purchases) == 10


async def test_concurrent_purchases_and_events_for_one_member(
    api: httpx.AsyncClient, session_factory: SessionFactory, shop: Shop
) -> None:
    """Two tills and the review system crediting the same member at once (distinct ids): every
    request is credited, none is lost or refused (the same PostgreSQL deadlock as above)."""
    member = await _new_member(session_factory, shop)

    async def post(i: int) -> httpx.Response:
        if i % 2:
            return await api.post(
                f"/api/v1/members/{member.code}/events",
                json={"event_id": f"ev-m{i}", "kind": "review"},
            )
        return await api.post(
            ORDERS, json={"order_id": f"M{i}", "member": member.code, "amount": "10.00"}
        )

    responses = _responses(await race(6, post))

    assert _statuses(responses) == {201: 6}, _texts(responses)
    expected = 100 + 3 * 10 + 3 * 30
    assert await _books(session_factory, member.id) == {"balance": expected, "debt": 0}


# 3. Replayed orders -----------------------------------------------------------------------


async def test_order_posted_ten_times_at_once_is_credited_once(
    api: httpx.AsyncClient, session_factory: SessionFactory, shop: Shop
) -> None:
    member = await _new_member(session_factory, shop)
    order = {"order_id": "R-1", "member": member.code, "amount": "123.45"}

    responses = _responses(await race(10, lambda _i: api.post(ORDERS, json=order)))

    assert _statuses(responses) == {201: 10}, _texts(responses)
    first = responses[0].json()
    assert all(r.json() == first for r in responses)
    assert sum(r.headers.get("Idempotent-Replayed") != "true" for r in responses) == 1
    assert first["points_earned"] == 123 and first["balance"] == 223
    assert await _books(session_factory, member.id) == {"balance": 223, "debt": 0}
    purchases = select(func.count(LedgerEntry.id)).where(
        LedgerEntry.kind == "purchase", LedgerEntry.source_ref == "order:R-1"
    )
    assert await _count(session_factory, purchases) == 1
    assert await _count(session_factory, select(func.count(Order.id))) == 1
    growth = select(func.count(GrowthEntry.id)).where(GrowthEntry.member_id == member.id)
    assert await _count(session_factory, growth) == 1
    receipts = select(func.count(Push.id)).where(Push.key == "receipt:R-1")
    assert await _count(session_factory, receipts) == 1


async def test_same_order_id_with_different_bodies_racing(
    api: httpx.AsyncClient, session_factory: SessionFactory, shop: Shop
) -> None:
    member = await _new_member(session_factory, shop)
    amounts = ["50.00", "60.00"] * 5

    async def post(i: int) -> httpx.Response:
        return await api.post(
            ORDERS, json={"order_id": "R-2", "member": member.code, "amount": amounts[i]}
        )

    responses = _responses(await race(10, post))

    by_amount: dict[str, list[httpx.Response]] = {"50.00": [], "60.00": []}
    for amount, response in zip(amounts, responses, strict=True):
        by_amount[amount].append(response)
    winners = [a for a, rs in by_amount.items() if any(r.status_code == 201 for r in rs)]
    assert len(winners) == 1, {a: _texts(rs) for a, rs in by_amount.items()}
    winner, loser = winners[0], ({"50.00", "60.00"} - {winners[0]}).pop()
    won, lost = by_amount[winner], by_amount[loser]
    assert all(r.status_code == 201 for r in won), _texts(won)
    assert all(r.json() == won[0].json() for r in won)
    assert all(r.status_code == 409 for r in lost), _texts(lost)
    assert all(r.json()["error"] == "idempotency_conflict" for r in lost)
    earned = int(float(winner))
    assert won[0].json()["points_earned"] == earned
    assert await _books(session_factory, member.id) == {"balance": 100 + earned, "debt": 0}
    purchases = select(func.count(LedgerEntry.id)).where(
        LedgerEntry.kind == "purchase", LedgerEntry.source_ref == "order:R-2"
    )
    assert await _count(session_factory, purchases) == 1


# 4. Refund races --------------------------------------------------------------------------


async def _place(api: httpx.AsyncClient, order: dict[str, Any]) -> dict[str, Any]:
    placed = await api.post(ORDERS, json=order)
    assert placed.status_code == 201, placed.text
    body: dict[str, Any] = placed.json()
    return body


async def _refunds(
    api: httpx.AsyncClient, order_id: str, refund_id: str, amount: str
) -> httpx.Response:
    return await api.post(
        f"{ORDERS}/{order_id}/refunds", json={"refund_id": refund_id, "amount": amount}
    )


async def test_concurrent_partial_refunds_never_exceed_the_order(
    api: httpx.AsyncClient, session_factory: SessionFactory, shop: Shop
) -> None:
    member = await _new_member(session_factory, shop)
    placed = await _place(api, {"order_id": "F-1", "member": member.code, "amount": "100.00"})
    assert placed["balance"] == 200

    responses = _responses(
        await race(10, lambda i: _refunds(api, "F-1", f"F-1-r{i}", "30.00"))
    )

    assert _statuses(responses) == {201: 3, 409: 7}, _texts(responses)
    ok = [r.json() for r in responses if r.status_code == 201]
    assert sorted(b["refunded_total"] for b in ok) == ["30.00", "60.00", "90.00"]
    assert all(b["points_taken_back"] == 30 for b in ok)
    refused = [r.json() for r in responses if r.status_code == 409]
    assert all(b["field"] == "amount" and b["error"] == "refund_too_large" for b in refused)
    async with session_factory() as session:
        order = await session.scalar(select(Order).where(Order.order_id == "F-1"))
        assert order is not None
        assert order.refunded == 9000 and order.points_taken_back == 90
        assert order.growth_taken_back == 90
    assert await _count(session_factory, select(func.count(Refund.id))) == 3
    assert await _books(session_factory, member.id) == {"balance": 110, "debt": 0}


async def test_concurrent_refunds_returning_offset_points(
    api: httpx.AsyncClient, session_factory: SessionFactory, shop: Shop
) -> None:
    """An order paid half with points: racing refunds give the points back exactly once."""
    member = await _new_member(session_factory, shop)
    [code] = await _spend_codes(session_factory, shop, member, 1)
    placed = await _place(
        api, {"order_id": "G-1", "member": code, "amount": "2.00", "redeem_points": 100}
    )
    assert placed["points_earned"] == 1 and placed["balance"] == 1

    responses = _responses(await race(10, lambda i: _refunds(api, "G-1", f"G-1-r{i}", "1.00")))

    assert _statuses(responses) == {201: 2, 409: 8}, _texts(responses)
    ok = [r.json() for r in responses if r.status_code == 201]
    assert sum(b["points_returned"] for b in ok) == 100
    assert sum(b["points_taken_back"] for b in ok) == 1
    assert await _books(session_factory, member.id) == {"balance": 100, "debt": 0}


async def test_same_refund_posted_ten_times_at_once_is_credited_once(
    api: httpx.AsyncClient, session_factory: SessionFactory, shop: Shop
) -> None:
    member = await _new_member(session_factory, shop)
    await _place(api, {"order_id": "H-1", "member": member.code, "amount": "100.00"})

    responses = _responses(await race(10, lambda _i: _refunds(api, "H-1", "H-1-r", "30.00")))

    assert _statuses(responses) == {201: 10}, _texts(responses)
    first = responses[0].json()
    assert all(r.json() == first for r in responses)
    assert sum(r.headers.get("Idempotent-Replayed") != "true" for r in responses) == 1
    assert first["points_taken_back"] == 30 and first["balance"] == 170
    clawbacks = select(func.count(LedgerEntry.id)).where(
        LedgerEntry.member_id == member.id, LedgerEntry.kind == "refund"
    )
    assert await _count(session_factory, clawbacks) == 1
    assert await _count(session_factory, select(func.count(Refund.id))) == 1
    assert await _books(session_factory, member.id) == {"balance": 170, "debt": 0}


# 5. Behaviour events ----------------------------------------------------------------------


async def test_event_posted_ten_times_at_once_is_credited_once(
    api: httpx.AsyncClient, session_factory: SessionFactory, shop: Shop
) -> None:
    member = await _new_member(session_factory, shop)
    url = f"/api/v1/members/{member.code}/events"

    responses = _responses(
        await race(10, lambda _i: api.post(url, json={"event_id": "ev-1", "kind": "review"}))
    )

    assert _statuses(responses) == {201: 10}, _texts(responses)
    first = responses[0].json()
    assert all(r.json() == first for r in responses)
    assert first["points_earned"] == 30 and first["balance"] == 130
    assert await _books(session_factory, member.id) == {"balance": 130, "debt": 0}
    entries = select(func.count(LedgerEntry.id)).where(
        LedgerEntry.idempotency_key == "event:ev-1"
    )
    assert await _count(session_factory, entries) == 1
    assert await _count(session_factory, select(func.count(BehaviourEvent.id))) == 1
    growth = select(func.count(GrowthEntry.id)).where(
        GrowthEntry.idempotency_key == "event:ev-1"
    )
    assert await _count(session_factory, growth) == 1


async def test_same_event_id_with_different_kinds_racing(
    api: httpx.AsyncClient, session_factory: SessionFactory, shop: Shop
) -> None:
    member = await _new_member(session_factory, shop)
    url = f"/api/v1/members/{member.code}/events"
    kinds = ["review", "share"] * 5

    responses = _responses(
        await race(10, lambda i: api.post(url, json={"event_id": "ev-2", "kind": kinds[i]}))
    )

    by_kind: dict[str, set[int]] = {"review": set(), "share": set()}
    for kind, response in zip(kinds, responses, strict=True):
        by_kind[kind].add(response.status_code)
    assert sorted(by_kind.values(), key=min) == [{201}, {409}], by_kind
    winner = next(k for k, codes in by_kind.items() if codes == {201})
    earned = {"review": 30, "share": 50}[winner]
    assert await _books(session_factory, member.id) == {"balance": 100 + earned, "debt": 0}


# 6. Registration --------------------------------------------------------------------------


async def test_concurrent_registrations_create_one_member(
    session_factory: SessionFactory, shop: Shop
) -> None:
    async def register(_i: int) -> members.Registration:
        async with session_factory() as session:
            return await members.register(session, shop, _profile(777))

    results = await race(10, register)

    assert not _unexpected(results, ())
    registrations = [r for r in results if isinstance(r, members.Registration)]
    assert len(registrations) == 10
    assert sum(r.created for r in registrations) == 1
    assert len({r.member.id for r in registrations}) == 1
    member_id = registrations[0].member.id
    rows = select(func.count(Member.id)).where(Member.telegram_id == 777)
    assert await _count(session_factory, rows) == 1
    async with session_factory() as session:
        entries = (
            await session.execute(
                select(LedgerEntry.kind, LedgerEntry.amount).where(
                    LedgerEntry.member_id == member_id
                )
            )
        ).all()
    assert [tuple(e) for e in entries] == [("signup", 100)]
    joined = select(func.count(TierChange.id)).where(TierChange.member_id == member_id)
    assert await _count(session_factory, joined) == 1
    assert await _books(session_factory, member_id) == {"balance": 100, "debt": 0}
