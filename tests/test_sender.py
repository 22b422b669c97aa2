"""The outbox sender against the fake Bot API: rates, flood control, blocked chats, transient
errors, a sender stopped half-way, quiet hours, opt-outs and both languages."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import App
from bot.sender import OutboxSender, SendLimiter
from domain.clock import FixedClock
from domain.models import Member, Push
from domain.orders import OrderReceipt
from domain.outbox import enqueue
from domain.shop import Shop
from domain.transaction import write_transaction
from handlers.outbox_signal import OutboxSignal
from tests.conftest import Conversation
from tests.fake_telegram import FakeTelegram, message_update


def _receipt(order_id: str, balance: int = 150) -> dict[str, Any]:
    """A receipt push's payload as domain/orders.py writes it (money also in minor units).
    The order id is not shown to the member, so the coupon code carries it."""
    return _MINOR_FIELDS | asdict(OrderReceipt(
        order_id=order_id, member_code="ABCD1234", amount="50.00",
        coupon_code=order_id,  # shown on the receipt: tells the tests' pushes apart
        coupon_discount="0.00", points_redeemed=0, points_offset="0.00", to_pay="50.00",
        points_earned=50, growth_earned=50, balance=balance, tier="member",
        previous_tier="member", tier_changed=False, next_tier="silver",
        growth_to_next_tier=4950, occurred_at="2026-03-10T02:00:00+00:00",
    ))


_MINOR_FIELDS: dict[str, Any] = {
    "day": "2026-03-10", "amount_minor": 5000, "coupon_discount_minor": 0,
    "points_offset_minor": 0, "paid_minor": 5000,
}


async def _member(chat: Conversation, session: AsyncSession, uid: int, lang: str = "en") -> int:
    await chat.send(message_update(uid, "/start", first_name=f"M{uid}", language_code=lang))
    await session.rollback()
    member_id = await session.scalar(select(Member.id).where(Member.telegram_id == uid))
    assert member_id is not None
    await session.rollback()
    return member_id


async def _push(
    session: AsyncSession, shop: Shop, member_id: int, key: str, *, kind: str = "receipt",
    payload: dict[str, Any] | None = None, marketing: bool = False,
) -> None:
    async with write_transaction(session):
        await enqueue(
            session, shop, member_id=member_id, kind=kind, key=key,
            payload=_receipt(key) if payload is None else payload, marketing=marketing,
        )


async def _state(session: AsyncSession, key: str) -> Push:
    await session.rollback()
    push = await session.scalar(select(Push).where(Push.key == key))
    assert push is not None
    return push


def _delivered(fake: FakeTelegram, uid: int, marker: str = "") -> list[str]:
    """Texts Telegram accepted for one chat (optionally only those containing ``marker``)."""
    return [
        str(c.params["text"]) for c in fake.calls_of("sendMessage")
        if not c.failed and c.params["chat_id"] == str(uid) and marker in str(c.params["text"])
    ]


class TimedBot:
    """The app's bot, noting when Telegram accepted each message and for which chat."""

    def __init__(self, app: App) -> None:
        self.bot = app.bot
        self.accepted: list[tuple[float, int]] = []

    async def send_message(self, chat_id: int, text: str, **options: Any) -> object:
        result = await self.bot.send_message(chat_id, text, **options)
        self.accepted.append((time.monotonic(), chat_id))
        return result


def _sender(app: App, bot: object | None = None, **options: Any) -> OutboxSender:
    return OutboxSender(
        app.session_factory, bot or app.bot,  # type: ignore[arg-type]
        app.texts, app.shop, OutboxSignal(), **options,
    )


# --- Rates -------------------------------------------------------------------------------


async def test_the_global_rate_spaces_messages_evenly(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop,
) -> None:
    members = [await _member(chat, session, 7100 + i) for i in range(10)]
    for i, member_id in enumerate(members):
        await _push(session, shop, member_id, f"rate-{i}")
    timed = TimedBot(app)

    started = time.monotonic()
    assert await _sender(app, timed, rate_per_second=5).deliver_pending() == 10
    elapsed = time.monotonic() - started

    assert elapsed >= 1.75  # 10 slots 0.2 s apart: the last one 1.8 s after the first
    times = sorted(t for t, _ in timed.accepted)
    assert all(b - a > 0.1 for a, b in zip(times, times[1:], strict=False))
    assert all(len(_delivered(chat.fake, 7100 + i, f"rate-{i}")) == 1 for i in range(10))


async def test_one_chat_gets_at_most_one_message_a_second_while_others_go_on(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop,
) -> None:
    busy = await _member(chat, session, 7201)
    other = await _member(chat, session, 7202)
    for i in range(3):  # told apart by their balances: 1,000, 1,001, 1,002
        await _push(session, shop, busy, f"busy-{i}", payload=_receipt(f"busy-{i}", 1000 + i))
    await _push(session, shop, other, "other-0")
    timed = TimedBot(app)

    assert await _sender(app, timed).deliver_pending() == 4

    to_busy = [t for t, c in timed.accepted if c == 7201]
    assert len(to_busy) == 3
    assert all(b - a >= 1.0 for a, b in zip(to_busy, to_busy[1:], strict=False))
    [to_other] = [t for t, c in timed.accepted if c == 7202]
    assert to_other < to_busy[1]  # did not wait behind the busy chat
    # and in the order they were written
    receipts = _delivered(chat.fake, 7201, "Thank you for your purchase")
    assert [t.split("Balance: <b>")[1].split("<")[0] for t in receipts] == [
        "1,000", "1,001", "1,002",
    ]


async def test_never_more_than_the_rate_reaches_telegram_in_any_second_however_bunched() -> None:
    """Messages reach Telegram somewhere between their start and their answer; a stalled
    loop or network bunches them. Whatever the delays, no one-second window of arrivals holds
    more than the rate."""
    limiter = SendLimiter(10.0)
    arrivals: list[float] = []
    rng = random.Random(7)

    async def send() -> None:
        await limiter.slot(asyncio.sleep)
        before, after = rng.uniform(0, 0.4), rng.uniform(0, 0.4)  # out, then the answer back
        await asyncio.sleep(before)
        arrivals.append(time.monotonic())
        await asyncio.sleep(after)
        limiter.answered()

    await asyncio.gather(*(send() for _ in range(40)))
    arrivals.sort()
    busiest = max(
        sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals
    )
    assert len(arrivals) == 40
    assert busiest <= 10
    assert arrivals[-1] - arrivals[0] < 6.0  # and it still moves at about the rate


async def test_paid_broadcast_sends_at_telegrams_paid_rate_and_says_so(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop,
) -> None:
    member_id = await _member(chat, session, 7150)
    await _push(session, shop, member_id, "paid-1")
    sender = _sender(app, paid_broadcast=True)
    assert sender.limiter.per_second == 1000
    assert await sender.deliver_pending() == 1
    [call] = [c for c in chat.fake.calls_of("sendMessage") if "paid-1" in c.params["text"]]
    assert str(call.params["allow_paid_broadcast"]).lower() == "true"
    plain = _sender(app)
    assert plain.limiter.per_second == 29  # Telegram allows 30 a second without paying


# --- What Telegram answers ---------------------------------------------------------------


async def test_flood_control_pauses_then_sends_each_push_once(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop,
) -> None:
    first = await _member(chat, session, 7301)
    second = await _member(chat, session, 7302)
    await _push(session, shop, first, "flood-1")
    await _push(session, shop, second, "flood-2")
    chat.fake.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)

    started = time.monotonic()
    assert await app.sender.deliver_pending() == 2
    assert time.monotonic() - started >= 1.0  # waited the retry_after it was given

    assert len(_delivered(chat.fake, 7301, "flood-1")) == 1
    assert len(_delivered(chat.fake, 7302, "flood-2")) == 1
    assert sum(c.failed for c in chat.fake.calls_of("sendMessage")) == 1
    for key in ("flood-1", "flood-2"):
        push = await _state(session, key)
        assert (push.status, push.attempts) == ("sent", 0)  # flood control is not a failure


async def test_a_member_who_blocked_the_bot_gets_nothing_until_they_write_again(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop,
) -> None:
    member_id = await _member(chat, session, 7401)
    friend = await _member(chat, session, 7402)
    await _push(session, shop, member_id, "blocked-1")
    await _push(session, shop, friend, "friend-1")
    chat.fake.fail_next("sendMessage", 403, "Forbidden: bot was blocked by the user", chat_id=7401)

    assert await app.sender.deliver_pending() == 2

    push = await _state(session, "blocked-1")
    assert (push.status, push.last_error) == ("failed", "blocked by the member")
    assert await session.scalar(select(Member.reachable).where(Member.id == member_id)) is False
    assert len(_delivered(chat.fake, 7402, "friend-1")) == 1

    await _push(session, shop, member_id, "blocked-2")
    assert await app.sender.deliver_pending() == 0
    assert _delivered(chat.fake, 7401, "blocked-") == []
    assert (await _state(session, "blocked-2")).status == "pending"

    await chat.send(message_update(7401, "hi"))  # they write again
    assert await app.sender.deliver_pending() == 1
    assert len(_delivered(chat.fake, 7401, "blocked-2")) == 1
    assert (await _state(session, "blocked-2")).status == "sent"
    assert _delivered(chat.fake, 7401, "blocked-1") == []


async def test_transient_errors_retry_with_backoff_then_give_up_with_the_reason(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock,
) -> None:
    member_id = await _member(chat, session, 7501)
    await _push(session, shop, member_id, "flaky")
    chat.fake.fail_next("sendMessage", 500, "Internal Server Error")

    assert await app.sender.deliver_pending() == 1
    push = await _state(session, "flaky")
    assert (push.status, push.attempts) == ("pending", 1)
    assert push.not_before == shop.now() + timedelta(seconds=2)
    assert "Internal Server Error" in (push.last_error or "")
    assert await app.sender.deliver_pending() == 0  # not before the backoff
    assert _delivered(chat.fake, 7501, "flaky") == []

    clock.advance(seconds=2)
    assert await app.sender.deliver_pending() == 1
    assert len(_delivered(chat.fake, 7501, "flaky")) == 1
    assert (await _state(session, "flaky")).status == "sent"

    await _push(session, shop, member_id, "hopeless")
    chat.fake.fail_next("sendMessage", 502, "Bad Gateway", times=5)
    waits = []
    for _ in range(5):
        assert await app.sender.deliver_pending() == 1
        push = await _state(session, "hopeless")
        waits.append(push.not_before - shop.now())
        clock.set(push.not_before)
    assert waits[:4] == [timedelta(seconds=s) for s in (2, 4, 8, 16)]
    assert (push.status, push.attempts) == ("failed", 5)
    assert "Bad Gateway" in (push.last_error or "")
    assert await app.sender.deliver_pending() == 0
    assert _delivered(chat.fake, 7501, "hopeless") == []


async def test_a_refused_message_or_a_missing_template_fails_at_once_and_the_rest_goes_on(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop,
) -> None:
    member_id = await _member(chat, session, 7601)
    await _push(session, shop, member_id, "refused")
    await _push(session, shop, member_id, "unknown", kind="no_such_kind", payload={})
    await _push(session, shop, member_id, "fine")
    chat.fake.fail_next("sendMessage", 400, "Bad Request: chat not found")

    assert await app.sender.deliver_pending() == 3

    refused = await _state(session, "refused")
    assert (refused.status, refused.last_error) == ("failed", "Bad Request: chat not found")
    unknown = await _state(session, "unknown")
    assert (unknown.status, unknown.last_error) == ("failed", "no template")
    assert len(_delivered(chat.fake, 7601, "fine")) == 1
    assert await app.sender.deliver_pending() == 0


async def test_a_member_who_left_gets_nothing(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop,
) -> None:
    member_id = await _member(chat, session, 7651)
    await _push(session, shop, member_id, "gone")
    async with write_transaction(session):
        await session.execute(
            update(Member).where(Member.id == member_id).values(status="deleted", telegram_id=None)
        )

    assert await app.sender.deliver_pending() == 1

    push = await _state(session, "gone")
    assert (push.status, push.last_error) == ("failed", "member left")
    assert _delivered(chat.fake, 7651, "gone") == []


# --- Stopping and restarting -------------------------------------------------------------


async def test_a_sender_stopped_half_way_resumes_and_sends_each_push_exactly_once(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop,
) -> None:
    uids = [7700 + i for i in range(12)]
    for uid in uids:
        await _push(session, shop, await _member(chat, session, uid), f"resume-{uid}")

    def sent_so_far() -> int:
        return sum(len(_delivered(chat.fake, uid, "resume-")) for uid in uids)

    first = _sender(app, rate_per_second=5)
    running = asyncio.create_task(first.run(asyncio.Event()))
    while sent_so_far() < 4:
        await asyncio.sleep(0.02)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)

    await session.rollback()
    statuses = Counter((await session.scalars(select(Push.status))).all())
    assert 4 <= statuses["sent"] < 12 and statuses["sent"] + statuses["pending"] == 12
    assert statuses["sent"] == sent_so_far()  # every message Telegram took is recorded

    assert await _sender(app).deliver_pending() == statuses["pending"]
    assert [len(_delivered(chat.fake, uid, f"resume-{uid}")) for uid in uids] == [1] * 12
    await session.rollback()
    assert set((await session.scalars(select(Push.status))).all()) == {"sent"}


async def test_a_sender_taking_over_from_another_worker_keeps_a_chat_to_one_message_a_second(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop,
) -> None:
    """The sender role moved (another worker stopped): the new holder cannot know that the
    previous one wrote to this chat a moment ago, so it waits a second before its first send."""
    member = await _member(chat, session, 7651)
    other = await _member(chat, session, 7652)
    await _push(session, shop, member, "handover-0", payload=_receipt("handover-0", 1000))
    timed = TimedBot(app)
    assert await _sender(app, timed, claimant="worker-a").deliver_pending() == 1
    await _push(session, shop, member, "handover-1", payload=_receipt("handover-1", 1001))
    await _push(session, shop, other, "handover-2")

    taking_over = _sender(app, timed, claimant="worker-b", handover_seconds=1.0)
    stopping = asyncio.Event()
    running = asyncio.create_task(taking_over.run(stopping))
    try:
        async with asyncio.timeout(10):
            while len(timed.accepted) < 3:
                await asyncio.sleep(0.02)
    finally:
        stopping.set()
        await running

    [first, second] = [t for t, c in timed.accepted if c == 7651]
    assert second - first >= 1.0
    assert len(_delivered(chat.fake, 7651, "handover-1")) == 1
    assert len(_delivered(chat.fake, 7652, "handover-2")) == 1


async def test_a_stopping_sender_finishes_what_is_in_flight_and_leaves_the_rest(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop,
) -> None:
    uids = [7800 + i for i in range(8)]
    for uid in uids:
        await _push(session, shop, await _member(chat, session, uid), f"stop-{uid}")
    stopping = asyncio.Event()
    running = asyncio.create_task(_sender(app, rate_per_second=4).run(stopping))
    while not chat.fake.calls_of("sendMessage")[len(uids):]:  # past the /start replies
        await asyncio.sleep(0.02)
    stopping.set()
    await asyncio.wait_for(running, 2)

    await session.rollback()
    statuses = Counter((await session.scalars(select(Push.status))).all())
    assert statuses["pending"] > 0 and statuses["sent"] >= 1

    assert await _sender(app).deliver_pending() == statuses["pending"]
    assert [len(_delivered(chat.fake, uid, f"stop-{uid}")) for uid in uids] == [1] * 8


# --- Quiet hours, opt-out, languages ------------------------------------------------------


def _member_day(name: str) -> dict[str, Any]:
    return {
        "name": name, "tier": "member", "multiplier": "2", "tier_multiplier": "1",
        "today_multiplier": "2",
    }


async def test_quiet_hours_hold_marketing_until_nine_but_a_receipt_goes_at_once(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock,
) -> None:
    member_id = await _member(chat, session, 7901)
    clock.set(datetime(2026, 3, 10, 14, 0, tzinfo=UTC))  # 22:00 in Shanghai
    await _push(
        session, shop, member_id, "md-night", kind="member_day", payload=_member_day("Ann"),
        marketing=True,
    )
    await _push(session, shop, member_id, "receipt-night")

    assert await app.sender.deliver_pending() == 1
    assert len(_delivered(chat.fake, 7901, "receipt-night")) == 1
    assert _delivered(chat.fake, 7901, "member day") == []
    waiting = await _state(session, "md-night")
    assert waiting.status == "pending"
    assert waiting.not_before == datetime(2026, 3, 11, 1, 0, tzinfo=UTC)  # 09:00 local

    clock.set(datetime(2026, 3, 11, 0, 59, tzinfo=UTC))  # 08:59: still quiet
    assert await app.sender.deliver_pending() == 0
    clock.set(datetime(2026, 3, 11, 1, 0, tzinfo=UTC))
    assert await app.sender.deliver_pending() == 1
    [text] = _delivered(chat.fake, 7901, "member day")
    assert "Hi Ann!" in text and "×2" in text


async def test_a_member_who_opted_out_gets_no_marketing_but_still_their_receipts(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop,
) -> None:
    member_id = await _member(chat, session, 7951)
    async with write_transaction(session):
        await session.execute(
            update(Member).where(Member.id == member_id).values(marketing_opt_in=False)
        )
    await _push(
        session, shop, member_id, "md-opted-out", kind="member_day",
        payload=_member_day("Ann"), marketing=True,
    )
    await _push(session, shop, member_id, "receipt-opted-out")

    assert await app.sender.deliver_pending() == 2

    assert (await _state(session, "md-opted-out")).status == "skipped"
    assert _delivered(chat.fake, 7951, "member day") == []
    assert len(_delivered(chat.fake, 7951, "receipt-opted-out")) == 1
    assert await app.sender.deliver_pending() == 0


async def test_pushes_are_rendered_in_each_members_language(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop,
) -> None:
    lin = await _member(chat, session, 7961, lang="zh-hans")
    ann = await _member(chat, session, 7962)
    async with write_transaction(session):
        await enqueue(session, shop, member_id=lin, kind="receipt", key="zh-1",
                      payload=_receipt("zh-1", balance=1234))
        await enqueue(session, shop, member_id=ann, kind="receipt", key="en-1",
                      payload=_receipt("en-1", balance=1234))
        await enqueue(session, shop, member_id=lin, kind="member_day", key="zh-md",
                      payload=_member_day("林"), marketing=True)

    assert await app.sender.deliver_pending() == 3

    [zh] = _delivered(chat.fake, 7961, "感谢您的惠顾")
    assert "积分余额：<b>1,234</b>" in zh and "实付：¥50.00" in zh
    assert "Thank you" not in zh
    [en] = _delivered(chat.fake, 7962, "Thank you for your purchase")
    assert "Balance: <b>1,234</b> points" in en and "Paid: CN¥50.00" in en
    assert "2026-03-10" not in en and "10 Mar 2026" in en
    [zh_day] = _delivered(chat.fake, 7961, "会员日")
    assert "林" in zh_day
