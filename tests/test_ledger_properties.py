"""The points ledger under random use: property-based tests over sequences of orders (with and
without a points offset, some backdated), refunds (partial, full, too large), replays, refused
requests, expiry runs and time passing (up to more than a year at a time), for 1 to 3 members.

Every step drives the real use cases (``members.register``, ``orders.place_order``,
``orders.refund_order``, ``points.expire_due`` in a write transaction) and is then checked by
SQL against the ledger's invariants and against a small model kept here from the receipts:

1. ``members.points_balance == sum(ledger_entries.amount)`` (and each ``balance_after`` is the
   running sum);
2. ``points_balance == sum(points_lots.remaining) - points_debt``, the debt never negative and
   only ever what the balance is below zero;
3. ``0 <= remaining <= amount`` for every lot;
4. no point created or lost: the ledger's entries, by kind and sign, are exactly what the use
   cases reported (sign-up, earned, redeemed, taken back, returned, expired);
5. refunds never exceed the order, and a fully refunded order has taken back exactly its
   points and returned exactly its offset;
6. an expiry run removes what is left of the lots that are due, and nothing else;

and that spending draws on the earliest-expiring points first, a refund takes points back from
the order's own lot first, and returned offset points go back into the lots they came from.
A refused request (a ``DomainError``) must change nothing at all.

A second property test gives one member many offsets refunded in pieces, where returned points
must find their lots. Each example runs on a fresh database: a copy of a migrated SQLite file,
or, when TEST_DATABASE_URL is set, that PostgreSQL database emptied first (with fewer examples).
A failure names every step of its history; LEDGER_SHRINK=1 also shrinks it (slow).
The plain tests at the end pin the expiry rules, and two refund bugs found here, on fixed dates.
"""

from __future__ import annotations

import asyncio
import calendar
import itertools
import os
import shutil
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import create_engine, create_session_factory
from bot.settings import DEFAULT_PROGRAM_FILE
from domain import members, orders, plus, points, spending
from domain.clock import FixedClock
from domain.errors import (
    DomainError,
    IdempotencyConflict,
    InvalidInput,
    MemberNotFound,
    OffsetNotAllowed,
    OrderNotFound,
    RefundTooLarge,
)
from domain.expiry import expiry_date
from domain.models import (
    Base,
    GrowthEntry,
    LedgerEntry,
    LotDraw,
    Member,
    Order,
    PointsLot,
    Push,
    Refund,
)
from domain.program import PlusRules, Program, load_program
from domain.shop import Shop
from domain.spending import SpendProof, SpendProofRequired
from domain.transaction import write_transaction
from tests.conftest import POSTGRES_URL

TZ = ZoneInfo("Asia/Shanghai")
# The shipped program with PLUS on: only members who start a trial or pay get its factor.
PROGRAM = load_program(DEFAULT_PROGRAM_FILE).model_copy(
    update={
        "plus": PlusRules(
            enabled=True, price_stars=100, trial_days=30, points_multiplier=Decimal("1.5")
        )
    }
)
PLUS_FACTOR = Decimal("1.5")
MAX_EXAMPLES = 25 if POSTGRES_URL else 30
# A failing history is reported as found, with every step in the assertion message: shrinking
# one takes minutes on a slow machine. LEDGER_SHRINK=1 shrinks it to a minimal history.
# No "explain" phase either (it re-runs the failing example step by step), nor "target" (its
# hill climbing re-runs examples without bound).
PHASES = [Phase.explicit, Phase.generate] + (
    [Phase.shrink] if os.environ.get("LEDGER_SHRINK") else []
)


def _end_of_month_a_year_later(day: date) -> date:
    """The program's rule, computed here independently: the end of the month 12 months on."""
    year = day.year + 1
    return date(year, day.month, calendar.monthrange(year, day.month)[1])


def test_default_program_is_what_these_tests_assume() -> None:
    rules = PROGRAM.points
    assert (PROGRAM.expiry.rule, PROGRAM.expiry.months) == ("end_of_month", 12)
    assert (rules.offset_points_per_unit, rules.offset_max_percent, rules.signup) == (100, 50, 100)
    assert (rules.per_currency_unit, rules.member_day) == (1, 18)


# --- a fresh database per example --------------------------------------------------------------


class Databases:
    """Hands out an empty migrated database per Hypothesis example."""

    def __init__(self, template: Path | None, workdir: Path, postgres_url: str | None) -> None:
        self.template = template
        self.workdir = workdir
        self.postgres_url = postgres_url
        self.counter = itertools.count()

    @asynccontextmanager
    async def fresh(self) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
        if self.postgres_url:
            url = self.postgres_url
            path = None
        else:
            assert self.template is not None
            # A new name each time: a stale -wal file next to a reused name would be replayed.
            path = self.workdir / f"example-{next(self.counter)}.db"
            shutil.copyfile(self.template, path)
            url = f"sqlite+aiosqlite:///{path}"
        engine = create_engine(url)
        try:
            if self.postgres_url:
                tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
                async with engine.begin() as connection:
                    await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            yield create_session_factory(engine)
        finally:
            await engine.dispose()
            if path is not None:
                _remove_sqlite_files(path)


def _remove_sqlite_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def databases(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Databases]:
    if POSTGRES_URL:
        yield Databases(None, Path(), request.getfixturevalue("_postgres_migrated"))
        return
    template: Path = request.getfixturevalue("_sqlite_template")
    yield Databases(template, tmp_path_factory.mktemp("ledger-examples"), None)


# --- reading the ledger back -------------------------------------------------------------------


@dataclass(frozen=True)
class Lot:
    id: int
    member_id: int
    entry_id: int
    earned_on: date
    expires_on: date | None
    amount: int
    remaining: int


@dataclass(frozen=True)
class Entry:
    id: int
    member_id: int
    kind: str
    amount: int
    balance_after: int
    source_ref: str | None


@dataclass(frozen=True)
class Snapshot:
    members: dict[int, tuple[int, int, str]]  # id -> (balance, debt, tier)
    entries: list[Entry]
    lots: dict[int, Lot]
    draws: list[tuple[int, int, int, int]]  # (id, entry_id, lot_id, amount)
    orders: dict[str, tuple[Any, ...]]
    refunds: list[tuple[str, int, int]]  # (refund_id, order_pk, amount)
    growth_rows: int
    push_rows: int

    def draws_of(self, entry_id: int) -> dict[int, int]:
        taken: dict[int, int] = defaultdict(int)
        for _id, entry, lot, amount in self.draws:
            if entry == entry_id:
                taken[lot] += amount
        return dict(taken)


async def snapshot(factory: async_sessionmaker[AsyncSession]) -> Snapshot:
    async with factory() as s:
        member_rows = (
            await s.execute(select(Member.id, Member.points_balance, Member.points_debt, Member.tier))
        ).all()
        entries = [
            Entry(*row)
            for row in (
                await s.execute(
                    select(
                        LedgerEntry.id, LedgerEntry.member_id, LedgerEntry.kind, LedgerEntry.amount,
                        LedgerEntry.balance_after, LedgerEntry.source_ref,
                    ).order_by(LedgerEntry.id)
                )
            ).all()
        ]
        lots = {
            row[0]: Lot(*row)
            for row in (
                await s.execute(
                    select(
                        PointsLot.id, PointsLot.member_id, PointsLot.entry_id, PointsLot.earned_on,
                        PointsLot.expires_on, PointsLot.amount, PointsLot.remaining,
                    )
                )
            ).all()
        }
        draws = [
            tuple(row)
            for row in (
                await s.execute(
                    select(LotDraw.id, LotDraw.entry_id, LotDraw.lot_id, LotDraw.amount).order_by(LotDraw.id)
                )
            ).all()
        ]
        order_rows = (
            await s.execute(
                select(
                    Order.order_id, Order.id, Order.member_id, Order.amount, Order.points_redeemed,
                    Order.paid, Order.points_earned, Order.refunded, Order.points_taken_back,
                    Order.points_returned, Order.earn_entry_id, Order.spend_entry_id,
                    Order.growth_earned, Order.growth_taken_back,
                )
            )
        ).all()
        refunds = [
            tuple(row)
            for row in (
                await s.execute(select(Refund.refund_id, Refund.order_pk, Refund.amount).order_by(Refund.id))
            ).all()
        ]
        growth_rows = await s.scalar(select(func.count(GrowthEntry.id)))
        push_rows = await s.scalar(select(func.count(Push.id)))
    return Snapshot(
        members={row[0]: (int(row[1]), int(row[2]), row[3]) for row in member_rows},
        entries=entries,
        lots=lots,
        draws=draws,  # type: ignore[arg-type]
        orders={row[0]: tuple(row[1:]) for row in order_rows},
        refunds=refunds,  # type: ignore[arg-type]
        growth_rows=int(growth_rows or 0),
        push_rows=int(push_rows or 0),
    )


def _others(snap: Snapshot, member_id: int) -> tuple[Any, ...]:
    """Everything of the other members' points."""
    return (
        {k: v for k, v in snap.members.items() if k != member_id},
        [e for e in snap.entries if e.member_id != member_id],
        {k: v for k, v in snap.lots.items() if v.member_id != member_id},
    )


# --- the model ---------------------------------------------------------------------------------


@dataclass
class MemberModel:
    id: int
    code: str
    signup: int = 0
    earned: int = 0
    redeemed: int = 0
    taken: int = 0
    returned: int = 0
    expired: int = 0
    # PLUS, as the model expects it: its state, its end, the trial used, its paid charges.
    plus_state: str = "none"
    plus_until: datetime | None = None
    trial_used: bool = False
    charges: list[str] = field(default_factory=list)

    def plus_at(self, at: datetime) -> bool:
        return self.plus_state != "none" and self.plus_until is not None and at < self.plus_until

    @property
    def balance(self) -> int:
        return self.signup + self.earned - self.redeemed - self.taken + self.returned - self.expired


@dataclass
class OrderModel:
    order_id: str
    member: MemberModel
    request: orders.OrderRequest
    receipt: orders.OrderReceipt
    amount: int
    earned: int
    redeemed: int
    earn_entry: int | None
    spend_entry: int | None
    refunded: int = 0
    taken: int = 0
    returned: int = 0
    # What the offset drew from each lot and has not been given back yet.
    outstanding: dict[int, int] = field(default_factory=dict)


@dataclass
class RefundModel:
    refund_id: str
    order_id: str
    amount: int
    receipt: orders.RefundReceipt


def _draw_key(lot: Lot, first_lot: int | None) -> tuple[int, date]:
    """What the draw order may depend on: the lot named first, then the expiry date (lots that
    expire on the same day are interchangeable)."""
    return (0 if lot.id == first_lot else 1, lot.expires_on or date.max)


def expected_draws(
    lots: list[Lot], amount: int, *, first_lot: int | None = None, by_expiry: bool = True
) -> dict[Any, int]:
    """Greedy, earliest-expiring first (``first_lot`` before all others), by draw key.
    ``by_expiry=False`` draws in the order the lots were recorded instead (for statistics)."""
    ordered = sorted(
        (lot for lot in lots if lot.remaining > 0),
        key=lambda lot: (_draw_key(lot, first_lot), lot.id) if by_expiry else (lot.id,),
    )
    taken: dict[Any, int] = defaultdict(int)
    left = amount
    for lot in ordered:
        if left <= 0:
            break
        share = min(lot.remaining, left)
        taken[_draw_key(lot, first_lot)] += share
        left -= share
    return dict(taken)


def actual_draws(draws: dict[int, int], lots: dict[int, Lot], *, first_lot: int | None = None) -> dict[Any, int]:
    by_key: dict[Any, int] = defaultdict(int)
    for lot_id, amount in draws.items():
        by_key[_draw_key(lots[lot_id], first_lot)] += amount
    return dict(by_key)


def expected_purchase_points(paid: int, tier: str, at: datetime, with_plus: bool = False) -> int:
    rules = PROGRAM.points
    local = at.astimezone(TZ)
    promotion = rules.member_day_multiplier if local.day == rules.member_day else Decimal(1)
    factor = PLUS_FACTOR if with_plus else Decimal(1)  # multiplied with the tier's and the day's
    value = (
        Decimal(paid) / 100 * rules.per_currency_unit * PROGRAM.tier(tier).points_multiplier * promotion
        * factor
    )
    return int(value.to_integral_value(rounding=ROUND_DOWN))


# --- operations --------------------------------------------------------------------------------

_offset = st.one_of(
    st.tuples(st.just("within"), st.integers(1, 100)),  # percent of the most allowed
    st.tuples(st.just("within"), st.integers(1, 100)),
    st.just(("most",)),  # the cap or the whole balance
    st.just(("everything",)),  # the whole balance, on an order large enough for it
)
_bad_offset = st.one_of(
    st.tuples(st.just("over_cap"), st.integers(1, 300)),
    st.tuples(st.just("over_balance"), st.integers(1, 300)),
    st.tuples(st.just("raw"), st.integers(1, 3_000)),  # within or beyond
)
_redeem = st.one_of(st.just(("none",)), _offset, _offset, _bad_offset)
_amount = st.one_of(
    st.integers(1, 5_000),  # up to 50.00: a few points, rounding at the edges
    st.integers(5_000, 200_000),
    st.integers(5_000, 200_000),
    st.integers(200_000, 3_000_000),  # up to 30,000.00: tiers are reached
)
# Most orders happen now; some come from a till that syncs late (up to 30 days back), so their
# points may expire before points recorded earlier.
_hours_back = st.one_of(st.just(0), st.integers(1, 30 * 24 - 1))
_order = st.tuples(st.just("order"), st.integers(0, 2), _amount, _redeem, _hours_back)
_refund_size = st.one_of(
    st.just(("rest",)),
    st.tuples(st.just("part"), st.integers(1, 99)),  # percent of what is left
    st.tuples(st.just("part"), st.integers(1, 99)),
    st.tuples(st.just("part"), st.integers(1, 60)),
    st.tuples(st.just("over"), st.integers(1, 10_000)),
    st.tuples(st.just("raw"), st.integers(1, 500_000)),
)
# Which order: any, or one whose offset is not fully returned yet (partial refunds of those
# are where returned points must find their way back into the right lots).
_refund = st.tuples(
    st.just("refund"), st.integers(0, 30), _refund_size, st.sampled_from(["any", "offset", "offset"])
)
_advance = st.tuples(
    st.just("advance"),
    st.one_of(st.integers(0, 45), st.integers(0, 45), st.integers(0, 400)),  # days
    st.integers(0, 23),  # hours
)
_expire = st.just(("expire",))
_replay = st.tuples(st.sampled_from(["replay_order", "replay_refund"]), st.integers(0, 30))
_refused = st.tuples(
    st.just("refused"),
    st.sampled_from(
        ["unknown_member", "unknown_order", "zero_refund", "order_conflict", "refund_conflict", "order_too_large",
         "spend_without_proof"]
    ),
    st.integers(0, 30),
)
_plus = st.tuples(st.just("plus"), st.integers(0, 2), st.sampled_from(["trial", "pay", "pay", "refund"]))
OPERATIONS = st.one_of(
    _order, _order, _order, _order, _refund, _refund, _refund, _advance, _advance, _expire, _expire,
    _replay, _refused, _plus,
)
# One member spending and getting offsets back in pieces, over a few weeks: where returned
# points must find the very lots they came from.
_offset_order = st.tuples(st.just("order"), st.just(0), _amount, _offset, _hours_back)
_partial_refund = st.tuples(
    st.just("refund"),
    st.integers(0, 30),
    st.one_of(
        st.tuples(st.just("part"), st.integers(1, 60)),
        st.tuples(st.just("part"), st.integers(1, 60)),
        st.just(("rest",)),
    ),
    st.sampled_from(["any", "offset", "offset"]),
)
OFFSET_REFUNDS = st.one_of(
    _order, _offset_order, _offset_order, _partial_refund, _partial_refund, _partial_refund,
    st.tuples(st.just("advance"), st.integers(0, 20), st.integers(0, 23)),
)


class Scenario:
    def __init__(self, factory: async_sessionmaker[AsyncSession], shop: Shop, clock: FixedClock) -> None:
        self.factory = factory
        self.shop = shop
        self.clock = clock
        self.members: list[MemberModel] = []
        self.orders: list[OrderModel] = []
        self.refunds: list[RefundModel] = []
        self.ids = itertools.count(1)
        self.log: list[str] = []
        self.seen: set[str] = set()  # what the example exercised, for --hypothesis-show-statistics

    def note(self, line: str) -> None:
        self.log.append(f"[{self.shop.today()}] {line}")

    def where(self) -> str:
        return "\n  ".join(["after:", *self.log])

    # ---- setup

    async def register(self, count: int) -> None:
        for i in range(count):
            async with self.factory() as s:
                registration = await members.register(
                    s, self.shop,
                    members.TelegramProfile(7000 + i, f"M{i}", None, None, "en"),
                )
                model = MemberModel(registration.member.id, registration.member.code)
            model.signup = PROGRAM.points.signup
            self.members.append(model)
            self.note(f"register member {model.id}")
        await self.check()

    # ---- running a use case

    async def refused(self, what: str, call: Callable[[AsyncSession], Any], error: type[DomainError]) -> None:
        """The call must be refused with ``error`` and change nothing."""
        before = await snapshot(self.factory)
        async with self.factory() as s:
            try:
                await call(s)
            except DomainError as exc:
                assert isinstance(exc, error), (
                    f"{what}: refused with {exc!r}, expected {error.__name__}; {self.where()}"
                )
            except Exception as exc:
                raise AssertionError(f"{what}: crashed with {exc!r} instead of a refusal; {self.where()}") from exc
            else:
                raise AssertionError(f"{what}: accepted, expected {error.__name__}; {self.where()}")
        after = await snapshot(self.factory)
        assert after == before, f"{what}: a refused request changed the database; {self.where()}"
        self.note(f"{what}: refused ({error.__name__})")
        self.seen.add(f"refused: {error.__name__}")

    async def accepted(self, what: str, call: Callable[[AsyncSession], Any]) -> Any:
        async with self.factory() as s:
            try:
                return await call(s)
            except DomainError as exc:
                raise AssertionError(f"{what}: refused with {exc!r}; {self.where()}") from exc
            except Exception as exc:
                raise AssertionError(f"{what}: crashed with {exc!r}; {self.where()}") from exc

    # ---- operations

    async def run(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "order":
            await self.order(*op[1:])
        elif kind == "refund":
            await self.refund(*op[1:])
        elif kind == "advance":
            self.clock.advance(days=op[1], hours=op[2])
            self.note(f"advance {op[1]} days {op[2]} hours")
        elif kind == "expire":
            await self.expire()
        elif kind == "replay_order":
            await self.replay_order(op[1])
        elif kind == "replay_refund":
            await self.replay_refund(op[1])
        elif kind == "refused":
            await self.refused_request(op[1], op[2])
        elif kind == "plus":
            await self.plus(op[1], op[2])
        else:  # pragma: no cover
            raise AssertionError(kind)
        await self.check()

    async def order(self, who: int, amount: int, redeem_spec: tuple[Any, ...], hours_back: int) -> None:
        member = self.members[who % len(self.members)]
        before = await snapshot(self.factory)
        balance, debt, tier = before.members[member.id]
        assert balance == member.balance, f"model and database disagree before an order; {self.where()}"
        rules = PROGRAM.points
        if redeem_spec[0] == "everything" and balance > 0:
            balance_minor = balance * 100 // rules.offset_points_per_unit
            amount = max(amount, -(-balance_minor * 100 // rules.offset_max_percent))
        cap_minor = amount * rules.offset_max_percent // 100
        cap_points = cap_minor * rules.offset_points_per_unit // 100
        most = max(0, min(cap_points, balance))
        redeem = {
            "none": lambda: 0,
            "within": lambda: most * redeem_spec[-1] // 100,
            "most": lambda: most,
            "everything": lambda: max(balance, 0),
            "over_cap": lambda: cap_points + redeem_spec[-1],
            "over_balance": lambda: max(balance, 0) + redeem_spec[-1],
            "raw": lambda: redeem_spec[-1],
        }[redeem_spec[0]]()
        occurred = self.clock.now() - timedelta(hours=hours_back) if hours_back else None
        order_id = f"o{next(self.ids)}"
        request = orders.OrderRequest(
            order_id=order_id, member=member.code, amount=amount, occurred_at=occurred,
            redeem_points=redeem,
            # the member is at the till (through the API: their one-time spend code)
            spend_proof=SpendProof(member.id) if redeem else None,
        )
        offset = redeem * 100 // rules.offset_points_per_unit
        what = f"order {order_id} of member {member.id}: amount {amount}, redeem {redeem} (balance {balance})"
        if amount > PROGRAM.orders.max_amount:
            await self.refused(what, lambda s: orders.place_order(s, self.shop, request), InvalidInput)
            return
        if redeem and (offset > cap_minor or redeem > balance):
            await self.refused(what, lambda s: orders.place_order(s, self.shop, request), OffsetNotAllowed)
            return
        outcome = await self.accepted(what, lambda s: orders.place_order(s, self.shop, request))
        receipt: orders.OrderReceipt = outcome.result
        assert not outcome.replayed
        after = await snapshot(self.factory)
        at = occurred or self.clock.now()
        paid = amount - offset
        earned = expected_purchase_points(paid, tier, at, member.plus_at(at))
        assert receipt.points_redeemed == redeem, what
        assert receipt.points_earned == earned, f"{what}: earned {receipt.points_earned}, expected {earned}"
        _pk, _m, _a, _r, db_paid, _e, _rf, _t, _rt, earn_entry, spend_entry, *_ = after.orders[order_id]
        assert db_paid == paid, what

        if redeem:
            assert spend_entry is not None, what
            spent = after.draws_of(spend_entry)
            assert sum(spent.values()) == redeem, f"{what}: the offset drew {spent}; {self.where()}"
            member_lots = [lot for lot in before.lots.values() if lot.member_id == member.id]
            assert actual_draws(spent, before.lots) == expected_draws(member_lots, redeem), (
                f"{what}: spending must draw on the earliest-expiring points first: it drew "
                f"{ {before.lots[k].expires_on: v for k, v in spent.items()} } from lots "
                f"{ {lot.id: (lot.expires_on, lot.remaining) for lot in member_lots if lot.remaining} }; "
                f"{self.where()}"
            )
            self.seen.add("offset spent")
            if len(spent) > 1:
                self.seen.add("offset drawn from several lots")
            if expected_draws(member_lots, redeem) != expected_draws(member_lots, redeem, by_expiry=False):
                self.seen.add("offset where the earliest-expiring lots are not the oldest recorded")
        else:
            assert spend_entry is None, what
            spent = {}

        assert _others(after, member.id) == _others(before, member.id), f"{what} touched other members"
        new_lots = [lot for lot in after.lots.values() if lot.id not in before.lots]
        expected_lot = earned - min(earned, debt)
        if earned:
            assert earn_entry is not None, what
            assert [lot.entry_id for lot in new_lots] == ([earn_entry] if expected_lot else []), what
        else:
            assert earn_entry is None and not new_lots, what
        for lot in new_lots:
            local_day = at.astimezone(TZ).date()
            assert (lot.earned_on, lot.amount, lot.remaining) == (local_day, expected_lot, expected_lot), what
            assert lot.expires_on == _end_of_month_a_year_later(local_day), (
                f"{what}: a lot earned {local_day} expires {lot.expires_on}"
            )

        member.earned += earned
        member.redeemed += redeem
        assert receipt.balance == member.balance, f"{what}: receipt balance {receipt.balance}, model {member.balance}"
        self.orders.append(
            OrderModel(
                order_id, member, request, receipt, amount, earned, redeem, earn_entry, spend_entry,
                outstanding=dict(spent),
            )
        )
        self.note(f"{what}: earned {earned}")

    async def refund(self, index: int, size: tuple[Any, ...], pick: str) -> None:
        refund_id = f"r{next(self.ids)}"
        if not self.orders:
            await self.refused(
                f"refund {refund_id} of a missing order",
                lambda s: orders.refund_order(s, self.shop, order_id="nope", refund_id=refund_id, amount=100),
                OrderNotFound,
            )
            return
        candidates = self.orders
        if pick == "offset":
            candidates = [o for o in self.orders if o.returned < o.redeemed] or self.orders
        order = candidates[index % len(candidates)]
        left = order.amount - order.refunded
        amount = {
            "rest": lambda: max(left, 1),
            "part": lambda: max(1, left * size[-1] // 100),
            "over": lambda: left + size[-1],
            "raw": lambda: size[-1],
        }[size[0]]()
        what = f"refund {refund_id} of {amount} on order {order.order_id} ({left} of {order.amount} left)"

        def call(s: AsyncSession) -> Any:
            return orders.refund_order(s, self.shop, order_id=order.order_id, refund_id=refund_id, amount=amount)

        if amount > left:
            await self.refused(what, call, RefundTooLarge)
            return
        before = await snapshot(self.factory)
        outcome = await self.accepted(what, call)
        receipt: orders.RefundReceipt = outcome.result
        after = await snapshot(self.factory)
        refunded = order.refunded + amount
        take = order.earned * refunded // order.amount - order.taken
        give = order.redeemed * refunded // order.amount - order.returned
        assert (receipt.points_taken_back, receipt.points_returned) == (take, give), (
            f"{what}: took back {receipt.points_taken_back} and returned {receipt.points_returned}, "
            f"expected {take} and {give}"
        )
        new_entries = [e for e in after.entries if e.id > (before.entries[-1].id if before.entries else 0)]
        clawbacks = [e for e in new_entries if e.kind == "refund" and e.amount < 0]
        returns = [e for e in new_entries if e.kind == "refund" and e.amount > 0]
        assert [e.amount for e in clawbacks] == ([-take] if take else []), what
        assert [e.amount for e in returns] == ([give] if give else []), what
        assert {e.kind for e in new_entries} <= {"refund"}, what

        assert _others(after, order.member.id) == _others(before, order.member.id), f"{what} touched other members"
        member_lots = [lot for lot in before.lots.values() if lot.member_id == order.member.id]
        clawed = after.draws_of(clawbacks[0].id) if clawbacks else {}
        if take:
            own = next((lot.id for lot in member_lots if lot.entry_id == order.earn_entry), None)
            assert actual_draws(clawed, before.lots, first_lot=own) == expected_draws(
                member_lots, take, first_lot=own
            ), (
                f"{what}: the clawback must draw on the order's own lot ({own}) first, then the "
                f"earliest-expiring: it drew {clawed} from lots "
                f"{ {lot.id: (lot.expires_on, lot.remaining) for lot in member_lots if lot.remaining} }; "
                f"{self.where()}"
            )
        # What went back into each lot: its change plus what the clawback took from it.
        refilled = {
            lot.id: after.lots[lot.id].remaining - lot.remaining + clawed.get(lot.id, 0)
            for lot in member_lots
        }
        refilled = {lot_id: n for lot_id, n in refilled.items() if n}
        for lot_id, n in refilled.items():
            assert n > 0, f"{what}: lot {lot_id} lost {-n} points beyond the clawback's draws; {self.where()}"
            assert n <= order.outstanding.get(lot_id, 0), (
                f"{what}: returned offset points must go back into the lots the offset drew them from: "
                f"{n} went into lot {lot_id} ({before.lots[lot_id].expires_on}), of which the offset has "
                f"{order.outstanding.get(lot_id, 0)} left to give back (it drew "
                f"{ {k: (before.lots[k].expires_on, v) for k, v in order.outstanding.items()} } outstanding); "
                f"{self.where()}"
            )
            order.outstanding[lot_id] -= n

        order.refunded, order.taken, order.returned = refunded, order.taken + take, order.returned + give
        order.member.taken += take
        order.member.returned += give
        assert receipt.balance == order.member.balance, what
        self.refunds.append(RefundModel(refund_id, order.order_id, amount, receipt))
        self.seen.add("full refund" if refunded == order.amount else "partial refund")
        if give:
            self.seen.add("offset returned")
        if after.members[order.member.id][1] > before.members[order.member.id][1]:
            self.seen.add("refund left a debt")
        if any(before.lots[k].expires_on and before.lots[k].expires_on < self.shop.today() for k in refilled):
            self.seen.add("offset returned into an expired lot")
        self.note(f"{what}: took back {take}, returned {give}")

    async def plus(self, who: int, action: str) -> None:
        """PLUS taken, paid for or refunded: the member's PLUS is what the model expects, and
        the ledger is untouched (PLUS changes what later orders earn, nothing already held)."""
        member = self.members[who % len(self.members)]
        if action == "refund":  # a member with a payment to refund, when there is one
            member = next((m for m in [member, *self.members] if m.charges), member)
        now = self.clock.now()
        what = f"PLUS {action} of member {member.id}"
        if action == "trial":
            if member.trial_used or member.plus_at(now):
                paid = member.plus_state == "paid" and member.plus_at(now)
                error = plus.PlusAlreadyActive if paid else plus.PlusTrialUsed
                await self.refused(what, lambda s: plus.start_trial(s, self.shop, member.id), error)
                return
            await self.accepted(what, lambda s: plus.start_trial(s, self.shop, member.id))
            member.plus_state, member.plus_until = "trial", now + timedelta(days=30)
            member.trial_used = True
        elif action == "pay":
            charge = f"c{next(self.ids)}"
            payment = plus.StarsPayment(charge, 100, None, True, not member.charges)
            await self.accepted(what, lambda s: plus.record_payment(s, self.shop, member.id, payment))
            running = member.plus_state == "paid" and member.plus_at(now)
            start = member.plus_until if running and member.plus_until else now
            member.plus_state, member.plus_until = "paid", start + timedelta(days=30)
            member.charges.append(charge)
        else:
            if not member.charges:
                return
            charge = member.charges.pop()
            await self.accepted(what, lambda s: plus.record_refund(s, self.shop, charge, "test"))
            member.plus_state, member.plus_until = "none", now
        self.note(what)
        self.seen.add(f"plus {action}")
        async with self.factory() as s:
            row = (
                await s.execute(
                    select(Member.plus_state, Member.plus_until).where(Member.id == member.id)
                )
            ).one()
        assert (row.plus_state, row.plus_until) == (member.plus_state, member.plus_until), (
            f"{what}: PLUS is {tuple(row)}, expected {member.plus_state} until "
            f"{member.plus_until}; {self.where()}"
        )

    async def expire(self) -> None:
        before = await snapshot(self.factory)
        today = self.shop.today()
        due = {
            lot.id: lot
            for lot in before.lots.values()
            if lot.expires_on is not None and lot.expires_on < today and lot.remaining > 0
        }
        last_entry = before.entries[-1].id if before.entries else 0

        async def run(s: AsyncSession) -> int:
            async with write_transaction(s):
                return await points.expire_due(s, self.shop, on=today)

        expired = await self.accepted("expiry run", run)
        after = await snapshot(self.factory)
        assert expired == len(due), f"expiry run on {today}: {expired} lots, expected {len(due)}"
        for lot in after.lots.values():
            if lot.id in due:
                assert lot.remaining == 0, f"expiry run on {today} left {lot} partly"
            else:
                assert lot == before.lots[lot.id], (
                    f"expiry run on {today} touched a lot that was not due: {before.lots[lot.id]} -> {lot}"
                )
            assert lot.expires_on is None or lot.expires_on >= today or lot.remaining == 0
        new_entries = [e for e in after.entries if e.id > last_entry]
        assert all(e.kind == "expiry" for e in new_entries), new_entries
        assert {e.source_ref: e.amount for e in new_entries} == {
            f"lot:{lot.id}": -lot.remaining for lot in due.values()
        }, f"expiry run on {today} must remove exactly what is left of each due lot"
        assert len(new_entries) == len(due)
        for model in self.members:
            model.expired += sum(lot.remaining for lot in due.values() if lot.member_id == model.id)
        # A second run the same day does nothing.
        assert await self.accepted("second expiry run", run) == 0
        assert await snapshot(self.factory) == after, "a second expiry run changed something"
        if due:
            self.seen.add("expiry removed points")
        self.note(f"expiry run: {len(due)} lots, {sum(lot.remaining for lot in due.values())} points")

    async def replay_order(self, index: int) -> None:
        if not self.orders:
            return
        order = self.orders[index % len(self.orders)]
        request = order.request
        if request.occurred_at and request.occurred_at < self.clock.now() - timedelta(
            days=PROGRAM.orders.max_age_days
        ):
            # An order dated too far back is refused before it is looked up: still no change.
            await self.refused(
                f"replay of order {order.order_id}",
                lambda s: orders.place_order(s, self.shop, request), InvalidInput,
            )
            return
        before = await snapshot(self.factory)
        outcome = await self.accepted(
            f"replay of order {order.order_id}", lambda s: orders.place_order(s, self.shop, request)
        )
        assert outcome.replayed and outcome.result == order.receipt
        assert await snapshot(self.factory) == before, "a replayed order changed something"
        self.note(f"replay of order {order.order_id}")

    async def replay_refund(self, index: int) -> None:
        if not self.refunds:
            return
        refund = self.refunds[index % len(self.refunds)]
        before = await snapshot(self.factory)
        outcome = await self.accepted(
            f"replay of refund {refund.refund_id}",
            lambda s: orders.refund_order(
                s, self.shop, order_id=refund.order_id, refund_id=refund.refund_id, amount=refund.amount
            ),
        )
        assert outcome.replayed and outcome.result == refund.receipt
        assert await snapshot(self.factory) == before, "a replayed refund changed something"
        self.note(f"replay of refund {refund.refund_id}")

    async def refused_request(self, kind: str, index: int) -> None:
        shop = self.shop
        if kind == "unknown_member":
            request = orders.OrderRequest(order_id=f"o{next(self.ids)}", member="13800000000", amount=1000)
            await self.refused("order of an unknown member", lambda s: orders.place_order(s, shop, request), MemberNotFound)
        elif kind == "order_too_large":
            member = self.members[index % len(self.members)]
            request = orders.OrderRequest(
                order_id=f"o{next(self.ids)}", member=member.code, amount=PROGRAM.orders.max_amount + 1
            )
            await self.refused("order above the largest amount", lambda s: orders.place_order(s, shop, request), InvalidInput)
        elif kind == "spend_without_proof":
            member = self.members[index % len(self.members)]
            request = orders.OrderRequest(
                order_id=f"o{next(self.ids)}", member=member.code, amount=10_000, redeem_points=100
            )
            await self.refused(
                "points spent with the static member code", lambda s: orders.place_order(s, shop, request),
                SpendProofRequired,
            )
        elif kind == "unknown_order":
            await self.refused(
                "refund of an unknown order",
                lambda s: orders.refund_order(s, shop, order_id="missing", refund_id=f"r{next(self.ids)}", amount=1),
                OrderNotFound,
            )
        elif kind == "zero_refund" and self.orders:
            order = self.orders[index % len(self.orders)]
            await self.refused(
                "refund of nothing",
                lambda s: orders.refund_order(s, shop, order_id=order.order_id, refund_id=f"r{next(self.ids)}", amount=0),
                InvalidInput,
            )
        elif kind == "order_conflict" and self.orders:
            order = self.orders[index % len(self.orders)]
            request = orders.OrderRequest(
                order_id=order.order_id, member=order.member.code, amount=order.amount + 1
            )
            await self.refused(
                f"order {order.order_id} again with another amount",
                lambda s: orders.place_order(s, shop, request), IdempotencyConflict,
            )
        elif kind == "refund_conflict" and self.refunds:
            refund = self.refunds[index % len(self.refunds)]
            await self.refused(
                f"refund {refund.refund_id} again with another amount",
                lambda s: orders.refund_order(
                    s, shop, order_id=refund.order_id, refund_id=refund.refund_id, amount=refund.amount + 1
                ),
                IdempotencyConflict,
            )

    # ---- the invariants, after every step

    async def check(self) -> None:
        snap = await snapshot(self.factory)
        where = self.where()
        by_member: dict[int, list[Entry]] = defaultdict(list)
        for entry in snap.entries:
            by_member[entry.member_id].append(entry)
        for model in self.members:
            balance, debt, _tier = snap.members[model.id]
            ledger = by_member[model.id]
            lots = [lot for lot in snap.lots.values() if lot.member_id == model.id]
            # 1. the balance is the sum of the ledger, entry by entry
            assert balance == sum(e.amount for e in ledger), (
                f"member {model.id}: balance {balance} != ledger sum {sum(e.amount for e in ledger)}; {where}"
            )
            running = 0
            for entry in ledger:
                running += entry.amount
                assert entry.amount != 0 and entry.balance_after == running, (
                    f"member {model.id}: entry {entry} does not carry the running balance {running}; {where}"
                )
            # 2. the balance is what the lots hold, less the debt
            assert debt >= 0, f"member {model.id}: negative debt {debt}; {where}"
            assert balance == sum(lot.remaining for lot in lots) - debt, (
                f"member {model.id}: balance {balance} != lots {sum(lot.remaining for lot in lots)} "
                f"- debt {debt}; {where}"
            )
            assert debt == max(0, -balance), (
                f"member {model.id}: debt {debt} while the balance is {balance}; {where}"
            )
            # 3. lots within bounds
            for lot in lots:
                assert 0 <= lot.remaining <= lot.amount, f"lot out of bounds: {lot}; {where}"
            # 4. no point created or lost: the ledger by kind is what the use cases reported
            totals: dict[tuple[str, bool], int] = defaultdict(int)
            for entry in ledger:
                totals[(entry.kind, entry.amount > 0)] += entry.amount
            expected = {
                ("signup", True): model.signup,
                ("purchase", True): model.earned,
                ("offset", False): -model.redeemed,
                ("refund", False): -model.taken,
                ("refund", True): model.returned,
                ("expiry", False): -model.expired,
            }
            assert {k: v for k, v in totals.items() if v} == {k: v for k, v in expected.items() if v}, (
                f"member {model.id}: ledger by kind {dict(totals)} != reported {expected}; {where}"
            )
            assert balance == model.balance, f"member {model.id}: balance {balance}, model {model.balance}; {where}"
        # 5. refunds never exceed the order; a full refund undoes exactly the order's points
        refunded_by_pk: dict[int, int] = defaultdict(int)
        for _refund_id, order_pk, amount in snap.refunds:
            refunded_by_pk[order_pk] += amount
        per_ref: dict[tuple[str, str, bool], int] = defaultdict(int)
        for entry in snap.entries:
            if entry.source_ref and entry.source_ref.startswith("order:"):
                per_ref[(entry.source_ref, entry.kind, entry.amount > 0)] += entry.amount
        assert set(snap.orders) == {o.order_id for o in self.orders}, where
        for order in self.orders:
            pk, _m, amount, redeemed, _paid, earned, refunded, taken, returned, *_ = snap.orders[order.order_id]
            assert refunded == refunded_by_pk[pk] == order.refunded <= amount, (
                f"order {order.order_id}: refunded {refunded}, refunds sum {refunded_by_pk[pk]}, "
                f"amount {amount}; {where}"
            )
            assert (earned, redeemed, taken, returned) == (
                order.earned, order.redeemed, order.taken, order.returned
            ), f"order {order.order_id}: {(earned, redeemed, taken, returned)}; {where}"
            assert 0 <= taken <= earned and 0 <= returned <= redeemed, where
            if refunded == amount:
                assert (taken, returned) == (earned, redeemed), (
                    f"fully refunded order {order.order_id} took back {taken} of {earned} and returned "
                    f"{returned} of {redeemed}; {where}"
                )
            ref = f"order:{order.order_id}"
            assert per_ref[(ref, "purchase", True)] == earned, where
            assert per_ref[(ref, "offset", False)] == -redeemed, where
            assert per_ref[(ref, "refund", False)] == -taken, where
            assert per_ref[(ref, "refund", True)] == returned, where

    async def drain(self) -> None:
        """Far in the future every lot has expired: nothing is left but the debt."""
        self.clock.advance(days=800)
        self.note("advance 800 days")
        await self.expire()
        await self.check()
        snap = await snapshot(self.factory)
        assert all(lot.remaining == 0 for lot in snap.lots.values())
        for model in self.members:
            balance, debt, _tier = snap.members[model.id]
            assert balance == -debt <= 0


async def run_scenario(
    databases: Databases,
    start: datetime,
    opening: list[tuple[int, int]],
    operations: list[tuple[Any, ...]],
) -> None:
    """Register one member per opening order, place those orders, then run the operations."""
    clock = FixedClock(start)
    shop = Shop(program=PROGRAM, clock=clock, tz=TZ, phone_region="CN")
    async with databases.fresh() as factory:
        scenario = Scenario(factory, shop, clock)
        try:
            await scenario.register(len(opening))
            for who, (amount, hours_back) in enumerate(opening):
                await scenario.run(("order", who, amount, ("none",), hours_back))
            for op in operations:
                await scenario.run(op)
            await scenario.drain()
        finally:
            for seen in sorted(scenario.seen):
                event(seen)


_start = st.builds(
    lambda days, hours: datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=days, hours=hours),
    st.integers(0, 365),
    st.integers(0, 23),
)


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the working tree
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    start=_start,
    opening=st.lists(st.tuples(_amount, _hours_back), min_size=1, max_size=3),
    operations=st.lists(OPERATIONS, min_size=8, max_size=30),
)
def test_ledger_invariants_hold_over_random_histories(
    databases: Databases,
    start: datetime,
    opening: list[tuple[int, int]],
    operations: list[tuple[Any, ...]],
) -> None:
    asyncio.run(run_scenario(databases, start, opening, operations))


@settings(
    max_examples=MAX_EXAMPLES // 2,
    deadline=None,
    database=None,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    start=_start,
    opening=st.lists(st.tuples(_amount, _hours_back), min_size=1, max_size=1),
    operations=st.lists(OFFSET_REFUNDS, min_size=6, max_size=20),
)
def test_ledger_invariants_hold_over_offsets_refunded_in_pieces(
    databases: Databases,
    start: datetime,
    opening: list[tuple[int, int]],
    operations: list[tuple[Any, ...]],
) -> None:
    asyncio.run(run_scenario(databases, start, opening, operations))


# --- the expiry rules on fixed dates -----------------------------------------------------------


def _at(year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    """A local (Shanghai) wall-clock time as the UTC instant the clock holds."""
    return datetime(year, month, day, hour, minute, tzinfo=TZ).astimezone(UTC)


async def _register(session: AsyncSession, shop: Shop, telegram_id: int = 4242) -> Member:
    registration = await members.register(
        session, shop, members.TelegramProfile(telegram_id, "Lin", None, None, "en")
    )
    return registration.member


async def _lots(session: AsyncSession, member_id: int) -> list[tuple[int, date | None, int, int]]:
    await session.rollback()
    rows = await session.execute(
        select(PointsLot.id, PointsLot.expires_on, PointsLot.amount, PointsLot.remaining)
        .where(PointsLot.member_id == member_id)
        .order_by(PointsLot.id)
    )
    return [tuple(row) for row in rows.all()]  # type: ignore[misc]


async def _balance(session: AsyncSession, member_id: int) -> int:
    await session.rollback()
    balance = await session.scalar(select(Member.points_balance).where(Member.id == member_id))
    ledger = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(LedgerEntry.member_id == member_id)
    )
    assert balance == ledger
    return int(balance or 0)


async def _expire(session: AsyncSession, shop: Shop) -> int:
    async with write_transaction(session):
        return await points.expire_due(session, shop, on=shop.today())


async def _order(session: AsyncSession, shop: Shop, order_id: str, code: str, amount: int, **kw: Any) -> orders.OrderReceipt:
    if kw.get("redeem_points"):  # spending: the member shows a one-time spend code, not the card
        member_id = await session.scalar(select(Member.id).where(Member.code == code))
        assert member_id is not None
        code = (await spending.issue(session, shop, member_id)).code
    return (await orders.place_order(session, shop, orders.OrderRequest(order_id, code, amount, **kw))).result


def test_expiry_date_is_the_end_of_the_month_twelve_months_later(program: Program) -> None:
    rules = program.expiry
    assert expiry_date(date(2026, 1, 15), rules) == date(2027, 1, 31)
    assert expiry_date(date(2026, 1, 31), rules) == date(2027, 1, 31)
    assert expiry_date(date(2026, 2, 1), rules) == date(2027, 2, 28)
    assert expiry_date(date(2027, 2, 15), rules) == date(2028, 2, 29)
    assert expiry_date(date(2026, 12, 31), rules) == date(2027, 12, 31)


async def test_points_earned_on_15_january_expire_after_31_january_next_year(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    clock.set(_at(2026, 1, 15))
    member = await _register(session, shop)
    [(_id, expires_on, amount, remaining)] = await _lots(session, member.id)
    assert (expires_on, amount, remaining) == (date(2027, 1, 31), 100, 100)

    clock.set(_at(2027, 1, 31, 23, 59))  # the last local minute they can be spent
    assert await _expire(session, shop) == 0
    assert await _balance(session, member.id) == 100
    assert await points.expiring_points(session, member.id) == [points.ExpiringPoints(date(2027, 1, 31), 100)]

    clock.advance(minutes=1)  # 1 February, local midnight
    assert shop.today() == date(2027, 2, 1)
    assert await _expire(session, shop) == 1
    assert await _balance(session, member.id) == 0
    assert await _expire(session, shop) == 0  # a second run does nothing
    await session.rollback()
    entries = (
        await session.execute(
            select(LedgerEntry.kind, LedgerEntry.amount).where(LedgerEntry.member_id == member.id).order_by(LedgerEntry.id)
        )
    ).all()
    assert [tuple(e) for e in entries] == [("signup", 100), ("expiry", -100)]


async def test_spending_draws_on_the_earliest_expiring_lot_first(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    clock.set(_at(2026, 1, 15))
    member = await _register(session, shop)  # 100, expiring 2027-01-31
    clock.set(_at(2026, 2, 10))
    await _order(session, shop, "A", member.code, 20_000)  # 200, expiring 2027-02-28
    await _order(session, shop, "B", member.code, 40_000, redeem_points=150)
    lots = await _lots(session, member.id)
    assert [(expires, remaining) for _id, expires, _amount, remaining in lots] == [
        (date(2027, 1, 31), 0),
        (date(2027, 2, 28), 150),
        (date(2027, 2, 28), 398),  # what order B earned on 398.50 paid
    ]


async def test_spending_draws_on_the_earliest_expiring_lot_even_when_it_was_recorded_later(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    """A till that syncs late posts an order dated last month: its points expire before the
    sign-up bonus, though recorded after it. They must be spent first."""
    clock.set(_at(2026, 3, 10))
    member = await _register(session, shop)  # 100, expiring 2027-03-31
    await _order(session, shop, "late", member.code, 20_000, occurred_at=_at(2026, 2, 25))
    assert [(e, r) for _id, e, _a, r in await _lots(session, member.id)] == [
        (date(2027, 3, 31), 100),
        (date(2027, 2, 28), 200),
    ]
    await _order(session, shop, "spend", member.code, 40_000, redeem_points=150)
    lots = await _lots(session, member.id)
    assert [(e, r) for _id, e, _a, r in lots[:2]] == [
        (date(2027, 3, 31), 100),
        (date(2027, 2, 28), 50),
    ], (
        "spend() must draw on the earliest-expiring lot first, not the first recorded (regression: "
        "domain/points.py _draw_lots once ordered by PointsLot.id when no lot was named); got "
        f"{[(e, r) for _id, e, _a, r in lots]}"
    )


async def test_an_expiry_after_a_partial_spend_removes_only_the_rest_of_the_lot(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    clock.set(_at(2026, 1, 15))
    member = await _register(session, shop)  # 100, expiring 2027-01-31
    clock.set(_at(2026, 2, 10))
    await _order(session, shop, "A", member.code, 10_000, redeem_points=30)  # earns 99 (Feb lot)
    assert await _balance(session, member.id) == 169
    clock.set(_at(2027, 2, 1, 0, 0))
    assert await _expire(session, shop) == 1
    assert await _balance(session, member.id) == 99
    lots = await _lots(session, member.id)
    assert [(e, a, r) for _id, e, a, r in lots] == [(date(2027, 1, 31), 100, 0), (date(2027, 2, 28), 99, 99)]
    await session.rollback()
    expiry = (
        await session.execute(select(LedgerEntry.amount, LedgerEntry.source_ref).where(LedgerEntry.kind == "expiry"))
    ).all()
    assert [tuple(e) for e in expiry] == [(-70, f"lot:{lots[0][0]}")]


async def test_expiring_points_lists_amounts_by_date(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    clock.set(_at(2026, 1, 15))
    member = await _register(session, shop)  # 100 → 2027-01-31
    clock.set(_at(2026, 1, 20))
    await _order(session, shop, "A", member.code, 5_000)  # 50 → 2027-01-31
    clock.set(_at(2026, 3, 3))
    await _order(session, shop, "B", member.code, 12_345)  # 123 → 2027-03-31
    clock.set(_at(2026, 4, 2))
    await _order(session, shop, "C", member.code, 40_000, redeem_points=120)  # 120 from January; 398 → 2027-04-30
    await session.rollback()
    assert await points.expiring_points(session, member.id) == [
        points.ExpiringPoints(date(2027, 1, 31), 30),
        points.ExpiringPoints(date(2027, 3, 31), 123),
        points.ExpiringPoints(date(2027, 4, 30), 398),
    ]
    assert await points.expiring_points(session, member.id, until=date(2027, 3, 31)) == [
        points.ExpiringPoints(date(2027, 1, 31), 30),
        points.ExpiringPoints(date(2027, 3, 31), 123),
    ]
    assert await points.expiring_points(session, member.id, until=date(2027, 1, 30)) == []


async def test_returned_offset_points_of_an_expired_lot_expire_again(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    clock.set(_at(2026, 1, 15))
    member = await _register(session, shop)  # 100 → 2027-01-31
    clock.set(_at(2027, 1, 20))
    await _order(session, shop, "A", member.code, 10_000, redeem_points=40)  # 40 from the January lot
    clock.set(_at(2027, 2, 2))
    assert await _expire(session, shop) == 1  # the 60 left of it
    assert await _balance(session, member.id) == 100 - 40 + 99 - 60
    refund = await orders.refund_order(session, shop, order_id="A", refund_id="A-r", amount=10_000)
    assert (refund.result.points_taken_back, refund.result.points_returned) == (99, 40)
    assert await _balance(session, member.id) == 40  # back into the January lot ...
    assert await _expire(session, shop) == 1  # ... which expires them at the next run
    assert await _balance(session, member.id) == 0


async def test_partial_refunds_return_offset_points_into_the_lots_they_came_from(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    """Order F's offset drew 100 from the January lot and 10 from a February lot. Refunded in two
    halves, those 110 points must go back as 100 (January) and 10 (February)."""
    clock.set(_at(2026, 1, 15))
    member = await _register(session, shop)  # lot 1: 100 → 2027-01-31
    clock.set(_at(2026, 2, 10))
    await _order(session, shop, "A", member.code, 10_000)  # lot 2: 100 → 2027-02-28
    await _order(session, shop, "B", member.code, 5_000)  # lot 3: 50 → 2027-02-28
    clock.set(_at(2026, 3, 10))
    await _order(session, shop, "F", member.code, 30_000, redeem_points=110)  # 100 of lot 1, 10 of lot 2
    await _order(session, shop, "E", member.code, 100_000, redeem_points=120)  # 90 of lot 2, 30 of lot 3
    lots = await _lots(session, member.id)
    assert [r for *_x, r in lots[:3]] == [0, 0, 20]
    await orders.refund_order(session, shop, order_id="F", refund_id="F-1", amount=15_000)
    await orders.refund_order(session, shop, order_id="F", refund_id="F-2", amount=15_000)
    lots = await _lots(session, member.id)
    assert [(e, r) for _id, e, _a, r in lots[:2]] == [(date(2027, 1, 31), 100), (date(2027, 2, 28), 10)], (
        "returned offset points must go back into the lots they came from, net of earlier partial "
        "returns (regression: domain/points.py give_back once refilled each lot up to everything the "
        "spend drew, on every partial refund, moving points from the January lot into the February "
        f"lot); lots: {lots[:3]}"
    )


async def test_a_full_refund_still_works_after_partial_refunds_of_another_offset(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    """The same history as above, then order E (whose offset drew 90 of lot 2 and 30 of lot 3)
    is refunded in full: its 120 points must come back."""
    clock.set(_at(2026, 1, 15))
    member = await _register(session, shop)
    clock.set(_at(2026, 2, 10))
    await _order(session, shop, "A", member.code, 10_000)
    await _order(session, shop, "B", member.code, 5_000)
    clock.set(_at(2026, 3, 10))
    await _order(session, shop, "F", member.code, 30_000, redeem_points=110)
    await _order(session, shop, "E", member.code, 100_000, redeem_points=120)
    await orders.refund_order(session, shop, order_id="F", refund_id="F-1", amount=15_000)
    await orders.refund_order(session, shop, order_id="F", refund_id="F-2", amount=15_000)
    before = await _balance(session, member.id)
    try:
        refund = await orders.refund_order(session, shop, order_id="E", refund_id="E-1", amount=100_000)
    except RuntimeError as exc:
        pytest.fail(
            f"a valid full refund of order E crashed with {exc!r} (regression: domain/points.py "
            "give_back once let F's partial refunds fill lot 2 with E's share, so E's offset could "
            "not be returned and the refund could never be made)"
        )
    assert refund.result.points_returned == 120
    assert await _balance(session, member.id) == before - refund.result.points_taken_back + 120
