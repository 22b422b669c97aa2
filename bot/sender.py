"""Delivers the outbox: pending pushes, rendered per kind and language, sent to each member.

How a push travels
    Due pushes (``pending``, ``not_before`` reached, member reachable) are read oldest first,
    in keyset-paginated batches, by one short read transaction each, and handed to a few
    concurrent workers (Telegram answers take 50-200 ms, so one sender at a time would never
    reach the allowed rate). Every send takes a slot from one global limiter (evenly spaced,
    ``rate_per_second``, 29 by default, under Telegram's 30, and never more than that many
    messages in any one second as Telegram counts them, see ``SendLimiter``) and waits until at
    least a second has passed since the last message to the same chat; other chats go on
    meanwhile. With ``PAID_BROADCAST`` the shop pays Telegram in Stars for up to 1,000 messages
    a second (``allow_paid_broadcast``) and the rate is that. Waiting
    uses real time (``time.monotonic``); the shop clock decides what is due, quiet hours and
    backoff times.

What Telegram answers
    * accepted: the push is marked ``sent`` in its own short write transaction at once;
    * 429 (flood control): all sending pauses for the ``retry_after`` given, then the same
      push is tried again; it does not count as a failed attempt;
    * 403 (the member blocked the bot): the member becomes unreachable and the push
      ``failed`` ("blocked by the member"). Pushes of unreachable members are not selected:
      they stay ``pending`` until the member writes again (bot/middlewares.py) or unblocks
      (handlers/chat_member.py), and are delivered then, if still wanted;
    * network errors, timeouts, 5xx: ``attempts`` + 1 and ``not_before`` moved by 2^attempts
      seconds (at most an hour); after ``MAX_ATTEMPTS`` the push ``failed`` with the reason;
    * other refusals (400, 404: chat not found, text refused): ``failed`` at once, with it.

Admins' messages
    The monthly report and the red-line alert go to admins, who need not be members: they
    wait in their own outbox (``admin_messages``, bot/admin_notices.py). Each pass delivers
    them first, outside quiet hours, at the same pace and with the same answers to Telegram's
    errors (a 403 only fails the message: an admin is not a member to mark unreachable).

Campaigns
    A running campaign's recipients wait in their own narrow queue; each pass first turns the
    next of them into pushes, so that two batches of campaign pushes wait
    (``domain.campaigns.feed_ahead``). The workers' elected sender is the only one that feeds.

What is not sent
    A member who left (status ``deleted`` or no chat) fails the push ("member left"). A
    marketing push to a member who opted out is ``skipped``. Quiet hours (21:00-09:00 local)
    hold back every marketing push and every kind but the ones the member's own action caused
    and the account notices (``UNQUIET_KINDS``: receipt, refund, referral reward, account on
    hold / active again): their ``not_before`` moves to the next 09:00 local. A kind without a
    template fails ("no template") and is logged.

Stopping and restarting
    No transaction is held while waiting on Telegram or on the limiters. A sender that is
    stopped (``stopping`` set) or cancelled lets the sends already in flight finish and be
    recorded, and sends nothing more; what it did not send stays ``pending`` and the next
    sender delivers it: none lost, none twice. One window cannot be closed without Telegram
    taking part: if the process dies (power cut, SIGKILL) after Telegram accepted a message
    but before the "sent" commit, that push is sent again after the restart.

Several workers
    Each batch is claimed before it is sent: ``SELECT ... FOR UPDATE SKIP LOCKED`` and the
    claim (``claimed_by``, ``claimed_until`` = now + ``LEASE_SECONDS``) in one write
    transaction, so two senders never hold one push. A sender sends a claimed push only while
    its lease has ``LEASE_MARGIN_SECONDS`` left, and gives back what it did not send at the
    end of the pass; a push claimed by a sender that died returns when the lease runs out.
    The rate and the per-chat spacing live in this process, so the workers elect one sender
    (bot/coordination.py): any worker writes pushes, one sends them all. A worker that takes
    the sender over does not know what the previous one sent in its last second (to the shop
    and to each chat), so it waits ``handover_seconds`` (a second) before its first send: the
    previous sender gave the role up only after its last answer from Telegram.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiogram import Bot
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNotFound,
    TelegramRetryAfter,
)
from jinja2 import TemplateNotFound
from sqlalchemy import ColumnElement, and_, not_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.replies import OUTBOX_SEND
from domain import campaigns
from domain.jobs import QUIET_END, QUIET_START, next_morning
from domain.models import AdminMessage, Member, Push
from domain.shop import Shop
from domain.transaction import read_transaction, write_transaction
from handlers.outbox_signal import OutboxSignal
from handlers.rich_push import ComposedPush, RichPushKind
from handlers.texts import Texts

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
MAX_BACKOFF_SECONDS = 3600
BATCH = 200
WORKERS = 8
CHAT_INTERVAL_SECONDS = 1.0
PAID_BROADCAST_RATE = 1000.0  # Telegram's limit with allow_paid_broadcast
# A claimed push is this sender's for a minute (two batches take ~15 s at 29/s); it is sent
# only while 15 s of that remain, so a lease never runs out during a send.
LEASE_SECONDS = 60.0
LEASE_MARGIN_SECONDS = 15.0
# Caused by the member's own action a moment ago, or a change of their account that the till
# and the chat already show (frozen, active again): expected at any hour.
UNQUIET_KINDS = frozenset(
    {"receipt", "refund", "referral_reward", "account_frozen", "account_unfrozen",
     "plus_activated", "plus_renewed", "plus_refunded"}
)

T = TypeVar("T")


def render_push(
    texts: Texts, shop: Shop, member: Member, kind: str, payload: dict[str, object]
) -> str:
    """A push's text in the member's language, from templates/<lang>/pushes/<kind>.html."""
    return texts.render(
        member.language, f"pushes/{kind}", p=payload, member=member, program=shop.program
    )


def in_quiet_hours(shop: Shop, instant: datetime) -> bool:
    """21:00-09:00 in the shop's time zone."""
    local = instant.astimezone(shop.tz).time()
    return not QUIET_END <= local < QUIET_START


def _waits_out_quiet_hours() -> ColumnElement[bool]:
    """Marketing, or not caused by the member's own action just now."""
    return or_(Push.marketing.is_(True), Push.kind.not_in(UNQUIET_KINDS))


class _Stopped(Exception):
    """The sender is stopping: leave the push pending for the next run."""


class SendLimiter:
    """One global rate and at least a second between two messages to one chat, in real time.

    Slots are evenly spaced (1/rate apart). On top, a send may start only while the messages
    in flight plus those answered within the last second are fewer than ``rate``: a message
    reaches Telegram between its start and its answer, so whatever reaches Telegram within
    any one second was, when the last of them started, either in flight or answered less than
    a second before, and so never more than ``rate`` arrive in any second, however a busy
    event loop or the network bunches them. A flood-control answer pauses every slot until
    its retry_after has passed."""

    def __init__(
        self, rate_per_second: float, chat_interval: float = CHAT_INTERVAL_SECONDS
    ) -> None:
        self.interval = 1.0 / rate_per_second
        self.chat_interval = chat_interval
        self.per_second = max(1, int(rate_per_second))
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._in_flight = 0
        self._answered: deque[float] = deque()
        self._chats: dict[int, _ChatGate] = {}

    def chat(self, chat_id: int) -> _ChatGate:
        gate = self._chats.get(chat_id)
        if gate is None:
            if len(self._chats) > 10_000:
                self._forget_idle_chats()
            gate = self._chats[chat_id] = _ChatGate()
        return gate

    def _forget_idle_chats(self) -> None:
        horizon = time.monotonic() - self.chat_interval
        for chat_id, gate in list(self._chats.items()):
            if not gate.lock.locked() and gate.last_sent < horizon:
                del self._chats[chat_id]

    def pause(self, seconds: float) -> None:
        resume = time.monotonic() + seconds
        self._paused_until = max(self._paused_until, resume)
        self._next_slot = max(self._next_slot, self._paused_until)

    def _window_wait(self, now: float) -> float:
        """How long until in-flight plus answered-within-a-second messages are under the rate
        (0.01 s when only an answer can free a place)."""
        while self._answered and now - self._answered[0] >= 1.0:
            self._answered.popleft()
        if self._in_flight + len(self._answered) < self.per_second:
            return 0.0
        if self._answered:
            return self._answered[0] + 1.0 - now
        return 0.01

    def answered(self) -> None:
        """A message started by ``slot`` has its answer (whatever it was)."""
        self._in_flight -= 1
        self._answered.append(time.monotonic())

    async def slot(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        """Wait for the next global slot (and out any pause)."""
        while True:
            now = time.monotonic()
            if self._paused_until > now:
                await sleep(self._paused_until - now)
                continue
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval
            if slot > now:
                await sleep(slot - now)
            if self._paused_until > time.monotonic():
                continue  # flood control came in meanwhile: a new slot after the pause
            while (wait := self._window_wait(time.monotonic())) > 0:
                await sleep(wait)
            self._in_flight += 1  # the caller calls answered() once Telegram has answered
            return


class _ChatGate:
    """One chat's turn: a lock (its messages go one after another) and when the last went."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.last_sent = float("-inf")


@dataclass(frozen=True)
class _Due:
    """A due push with what sending it needs (copied out of the read transaction)."""

    push_id: int
    kind: str
    payload: str
    marketing: bool
    attempts: int
    member: Member
    claimed_at: float  # time.monotonic() when claimed


class OutboxSender:
    """Delivers due pushes; ``run`` keeps doing so until stopped."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        bot: Bot,
        texts: Texts,
        shop: Shop,
        signal: OutboxSignal,
        *,
        rate_per_second: float = 29.0,
        paid_broadcast: bool = False,
        workers: int = WORKERS,
        batch_size: int = BATCH,
        poll_seconds: float = 2.0,
        max_attempts: int = MAX_ATTEMPTS,
        claimant: str = "sender",
        lease_seconds: float = LEASE_SECONDS,
        rich: dict[str, RichPushKind] | None = None,
        handover_seconds: float = 0.0,
    ) -> None:
        self.session_factory = session_factory
        self.handover_seconds = handover_seconds
        self.rich = rich or {}
        self.bot = bot
        self.texts = texts
        self.shop = shop
        self.signal = signal
        self.workers = workers
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self.paid_broadcast = paid_broadcast
        self.claimant = claimant
        self.lease_seconds = lease_seconds
        self.limiter = SendLimiter(PAID_BROADCAST_RATE if paid_broadcast else rate_per_second)
        self._stopping = asyncio.Event()
        self._pass = asyncio.Lock()  # one delivery pass at a time: a push is never sent twice

    async def run(self, stopping: asyncio.Event) -> None:
        """Deliver until ``stopping`` is set; wake on the signal or every ``poll_seconds``.
        Begins with ``handover_seconds`` of silence: another worker may have sent until then."""
        self._stopping = stopping
        if self.handover_seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.handover_seconds)
        while not stopping.is_set():
            try:
                handled = await self.deliver_pending()
            except Exception:  # a broken pass must not end delivery for good
                log.exception("outbox delivery failed")
                handled = 0
            if not handled and not stopping.is_set():
                await self.signal.wait(self.poll_seconds)

    async def deliver_pending(self) -> int:
        """Deliver every push due now (one pass, oldest first); returns how many were handled:
        sent, failed, skipped or put back after a transient error. Pushes only moved out of
        quiet hours are not counted."""
        async with self._pass:
            await self._feed_campaigns()
            handled = await self._deliver_admin_messages()
            handled += await self._settle_undeliverable()
            queue: asyncio.Queue[_Due | None] = asyncio.Queue(maxsize=self.batch_size)
            counts = [0] * self.workers
            blocked: set[int] = set()
            try:
                async with asyncio.TaskGroup() as group:
                    for index in range(self.workers):
                        group.create_task(self._work(queue, counts, index, blocked))
                    # Cancelled here, the task group cancels the workers: each finishes and
                    # records the send it has in flight; the rest stays pending.
                    async with aclosing(self._due_pushes()) as pushes:
                        async for due in pushes:
                            if self._stopping.is_set():
                                break
                            await queue.put(due)
                    for _ in range(self.workers):
                        await queue.put(None)
            except ExceptionGroup as failed:  # the reading failed (workers catch their own)
                raise failed.exceptions[0] from None
            finally:
                await self._give_back()
            return handled + sum(counts)

    async def _feed_campaigns(self) -> None:
        """Running campaigns' recipients become pushes just ahead of this sender (two batches
        waiting): only the elected sender feeds, and a million recipients never sit in the
        outbox at once."""
        async with self.session_factory() as session:
            await campaigns.feed_ahead(session, self.shop, 2 * self.batch_size)

    async def _give_back(self) -> None:
        """Claims of this pass whose pushes are still pending go back to the queue."""
        async with self.session_factory() as session, write_transaction(session):
            await session.execute(
                update(Push)
                .where(Push.claimed_by == self.claimant, Push.status == "pending")
                .values(claimed_by=None, claimed_until=None)
            )

    async def _deliver_admin_messages(self) -> int:
        """The admins' outbox (bot/admin_notices.py), a few messages a month, before the
        members' pushes and at the same pace; outside quiet hours only. A 429 pauses the
        sender and leaves the rest for the next pass; a refusal for good fails the message;
        anything else is tried again later, as for pushes."""
        now = self.shop.now()
        if in_quiet_hours(self.shop, now):
            return 0
        handled = 0
        async with self.session_factory() as session:
            async with read_transaction(session):
                due = (await session.execute(
                    select(AdminMessage.id, AdminMessage.chat_id, AdminMessage.body,
                           AdminMessage.attempts)
                    .where(AdminMessage.status == "pending", AdminMessage.not_before <= now)
                    .order_by(AdminMessage.id)
                    .limit(self.batch_size)
                )).all()
            for message_id, chat_id, text, attempts in due:
                try:
                    outcome = await self._send_to_admin(chat_id, text, attempts)
                except _Stopped:
                    break
                if outcome is None:  # flood control: paused, and the rest waits
                    break
                async with write_transaction(session):
                    await session.execute(
                        update(AdminMessage)
                        .where(AdminMessage.id == message_id, AdminMessage.status == "pending")
                        .values(**outcome)
                    )
                handled += 1
        return handled

    async def _send_to_admin(
        self, chat_id: int, text: str, attempts: int
    ) -> dict[str, Any] | None:
        """One admin message through the limiter: the columns to record, or None after a 429."""
        gate = self.limiter.chat(chat_id)
        async with gate.lock:
            wait = gate.last_sent + self.limiter.chat_interval - time.monotonic()
            if wait > 0:
                await self._sleep(wait)
            await self.limiter.slot(self._sleep)
            marked = OUTBOX_SEND.set(True)
            try:
                await self.bot.send_message(chat_id, text)
            except TelegramRetryAfter as exc:
                log.warning("flood control: pausing %s s", exc.retry_after)
                self.limiter.pause(exc.retry_after)
                return None
            except (TelegramForbiddenError, TelegramBadRequest, TelegramNotFound) as exc:
                return {"status": "failed", "last_error": exc.message[:255]}
            except Exception as exc:  # network, timeout, 5xx: try again later
                return self._retry_later(attempts, exc)
            finally:
                OUTBOX_SEND.reset(marked)
                self.limiter.answered()
                gate.last_sent = time.monotonic()
        return {"status": "sent", "sent_at": self.shop.now()}

    def _retry_later(self, attempts: int, exc: Exception) -> dict[str, Any]:
        """What to record after a passing error: one more attempt and a backoff of
        2^attempts seconds (at most an hour), or ``failed`` after the last attempt."""
        attempts += 1
        reason = (str(exc) or type(exc).__name__)[:255]
        if attempts >= self.max_attempts:
            return {"status": "failed", "attempts": attempts, "last_error": reason}
        backoff = timedelta(seconds=min(2**attempts, MAX_BACKOFF_SECONDS))
        return {
            "attempts": attempts, "last_error": reason, "not_before": self.shop.now() + backoff,
        }

    # ------------------------------------------------------------------ selection

    async def _settle_undeliverable(self) -> int:
        """Set-based, before sending: pushes to members who left fail, marketing to members who
        opted out is skipped, and in quiet hours whatever may wait moves to 09:00 local."""
        now = self.shop.now()
        due = and_(Push.status == "pending", Push.not_before <= now)
        left = select(Member.id).where(
            or_(Member.status == "deleted", Member.telegram_id.is_(None))
        )
        opted_out = select(Member.id).where(Member.marketing_opt_in.is_(False))
        async with self.session_factory() as session, write_transaction(session):
            gone = await session.execute(
                update(Push)
                .where(due, Push.member_id.in_(left))
                .values(status="failed", last_error="member left")
            )
            skipped = await session.execute(
                update(Push)
                .where(due, Push.marketing.is_(True), Push.member_id.in_(opted_out))
                .values(status="skipped", last_error="member opted out of marketing")
            )
            if in_quiet_hours(self.shop, now):
                await session.execute(
                    update(Push)
                    .where(due, _waits_out_quiet_hours())
                    .values(not_before=next_morning(self.shop, now))
                )
        return int(gone.rowcount or 0) + int(skipped.rowcount or 0)  # type: ignore[attr-defined]

    async def _due_pushes(self) -> AsyncGenerator[_Due, None]:
        """Due pushes of reachable members, oldest first, a batch per short write that claims
        them (rows another sender holds are skipped, not waited for)."""
        after = 0
        async with self.session_factory() as session:
            while True:
                now = self.shop.now()
                wall = datetime.now(UTC)  # leases are about processes: real time
                query = (
                    select(Push.id)
                    .join(Member, Member.id == Push.member_id)
                    .where(
                        Push.status == "pending", Push.not_before <= now, Push.id > after,
                        or_(Push.claimed_until.is_(None), Push.claimed_until < wall),
                        Member.reachable.is_(True), Member.status != "deleted",
                        Member.telegram_id.is_not(None),
                    )
                    .order_by(Push.id)
                    .limit(self.batch_size)
                    .with_for_update(of=Push, skip_locked=True)
                )
                if in_quiet_hours(self.shop, now):
                    query = query.where(not_(_waits_out_quiet_hours()))
                async with write_transaction(session):
                    ids = list((await session.scalars(query)).all())
                    rows = []
                    if ids:
                        await session.execute(
                            update(Push).where(Push.id.in_(ids)).values(
                                claimed_by=self.claimant,
                                claimed_until=wall + timedelta(seconds=self.lease_seconds),
                            )
                        )
                        rows = list((await session.execute(
                            select(Push.id, Push.kind, Push.payload, Push.marketing,
                                   Push.attempts, Member)
                            .join(Member, Member.id == Push.member_id)
                            .where(Push.id.in_(ids))
                            .order_by(Push.id)
                        )).all())
                claimed_at = time.monotonic()
                session.expunge_all()
                for push_id, kind, payload, marketing, attempts, member in rows:
                    yield _Due(push_id, kind, payload, marketing, attempts, member, claimed_at)
                if len(ids) < self.batch_size:
                    return
                after = ids[-1]

    # ------------------------------------------------------------------ sending

    async def _work(
        self, queue: asyncio.Queue[_Due | None], counts: list[int], index: int, blocked: set[int]
    ) -> None:
        async with self.session_factory() as session:
            while (due := await queue.get()) is not None:
                if self._stopping.is_set() or due.member.id in blocked:
                    continue  # stays pending
                try:
                    if await self._deliver(session, due, blocked):
                        counts[index] += 1
                except _Stopped:
                    continue
                except Exception:  # one push must not stop the others
                    log.exception("push %s could not be delivered", due.push_id)

    async def _deliver(self, session: AsyncSession, due: _Due, blocked: set[int]) -> bool:
        """Send one push and record the outcome; False when it was left for later."""
        member = due.member
        if due.marketing and not member.marketing_opt_in:  # opted out since the pass began
            return await self._record(
                session, due.push_id, status="skipped", last_error="member opted out of marketing"
            )
        if (due.marketing or due.kind not in UNQUIET_KINDS) and in_quiet_hours(
            self.shop, self.shop.now()
        ):
            morning = next_morning(self.shop, self.shop.now())
            await self._record(session, due.push_id, not_before=morning)
            return False
        try:
            composed = await self._compose(session, member, due)
            if composed is None:
                return await self._record(
                    session, due.push_id, status="skipped", last_error="campaign stopped"
                )
        except TemplateNotFound:
            log.error("push %s: no template for kind %r", due.push_id, due.kind)
            return await self._record(
                session, due.push_id, status="failed", last_error="no template"
            )
        except Exception as exc:
            log.exception("push %s could not be rendered", due.push_id)
            return await self._record(
                session, due.push_id, status="failed", last_error=f"render: {exc}"[:255]
            )
        assert member.telegram_id is not None  # members who left were settled before
        gate = self.limiter.chat(member.telegram_id)
        async with gate.lock:
            while True:
                wait = gate.last_sent + self.limiter.chat_interval - time.monotonic()
                if wait > 0:
                    await self._sleep(wait)
                await self.limiter.slot(self._sleep)
                if time.monotonic() - due.claimed_at > self.lease_seconds - LEASE_MARGIN_SECONDS:
                    self.limiter.answered()  # the slot goes unused: the claim is running out
                    raise _Stopped  # given back at the end of the pass, claimed afresh
                try:
                    return await _finish_even_if_cancelled(
                        self._send_and_record(session, due, composed, gate, blocked)
                    )
                except TelegramRetryAfter as exc:
                    log.warning("flood control: pausing %s s", exc.retry_after)
                    self.limiter.pause(exc.retry_after)

    async def _compose(
        self, session: AsyncSession, member: Member, due: _Due
    ) -> ComposedPush | None:
        payload = json.loads(due.payload)
        kind = self.rich.get(due.kind)
        if kind is None:
            return ComposedPush(render_push(self.texts, self.shop, member, due.kind, payload))
        async with read_transaction(session):
            return await kind.compose(session, member, payload)

    async def _send_and_record(
        self, session: AsyncSession, due: _Due, composed: ComposedPush, gate: _ChatGate,
        blocked: set[int],
    ) -> bool:
        """One request to Telegram and, at once, its outcome in the database."""
        member = due.member
        paid = True if self.paid_broadcast else None
        # The sender paces these requests and pauses on a 429 itself: not retried by the bot.
        marked = OUTBOX_SEND.set(True)
        try:
            try:
                if composed.photo is not None:
                    await self.bot.send_photo(
                        member.telegram_id,  # type: ignore[arg-type]
                        composed.photo, caption=composed.text, reply_markup=composed.markup,
                        allow_paid_broadcast=paid,
                    )
                else:
                    await self.bot.send_message(
                        member.telegram_id,  # type: ignore[arg-type]
                        composed.text, reply_markup=composed.markup, allow_paid_broadcast=paid,
                    )
            finally:
                OUTBOX_SEND.reset(marked)
                self.limiter.answered()
        except TelegramRetryAfter:
            raise
        except TelegramForbiddenError:
            blocked.add(member.id)
            async with write_transaction(session):
                await session.execute(
                    update(Member).where(Member.id == member.id).values(reachable=False)
                )
                await _settle(
                    session, due.push_id, status="failed", last_error="blocked by the member"
                )
            return True
        except (TelegramBadRequest, TelegramNotFound) as exc:
            return await self._record(
                session, due.push_id, status="failed", last_error=exc.message[:255]
            )
        except Exception as exc:  # network, timeout, 5xx: try again later
            return await self._record(session, due.push_id, **self._retry_later(due.attempts, exc))
        finally:
            gate.last_sent = time.monotonic()
        kind = self.rich.get(due.kind)
        if kind is None:
            return await self._record(
                session, due.push_id, status="sent", sent_at=self.shop.now()
            )
        async with write_transaction(session):
            if await _settle(session, due.push_id, status="sent", sent_at=self.shop.now()):
                await kind.delivered(session, member, json.loads(due.payload))
        return True

    async def _record(self, session: AsyncSession, push_id: int, **values: Any) -> bool:
        async with write_transaction(session):
            await _settle(session, push_id, **values)
        return True

    async def _sleep(self, seconds: float) -> None:
        """Sleep, unless the sender is stopping: then leave the push for the next run."""
        if self._stopping.is_set():
            raise _Stopped
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return
        raise _Stopped


async def _settle(session: AsyncSession, push_id: int, **values: Any) -> bool:
    """Settle a pending push (and end its claim); False when it was settled already (e.g.
    skipped by a campaign's stop)."""
    settled = await session.execute(
        update(Push).where(Push.id == push_id, Push.status == "pending")
        .values(claimed_by=None, claimed_until=None, **values)
    )
    return bool(settled.rowcount)  # type: ignore[attr-defined]


async def _finish_even_if_cancelled(work: Awaitable[T]) -> T:
    """Run ``work`` to its end even when the caller is cancelled meanwhile (then re-raise):
    a message Telegram may already have must be recorded before the sender goes."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            try:
                await task
            except Exception:
                log.exception("push in flight at cancellation")
        raise


