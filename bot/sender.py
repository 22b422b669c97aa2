"""Delivers the outbox: pending pushes, rendered per kind and language, sent to each member.

Kept simple here (the scheduler issue adds rate limits, quiet hours and opt-outs): a push is
marked sent after Telegram accepted it; flood control waits the retry_after it was given; a
blocked chat fails the push; other errors retry with backoff, then give up with the reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import timedelta

from aiogram import Bot
from aiogram.exceptions import TelegramForbiddenError, TelegramRetryAfter
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.texts import Texts
from domain.models import Member, Push
from domain.shop import Shop
from domain.transaction import write_transaction
from handlers.outbox_signal import OutboxSignal

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
BATCH = 50


def render_push(texts: Texts, shop: Shop, member: Member, kind: str, payload: dict[str, object]) -> str:
    """A push's text in the member's language, from templates/<lang>/pushes/<kind>.html."""
    return texts.render(member.language, f"pushes/{kind}", p=payload, member=member, program=shop.program)


@dataclass
class OutboxSender:
    session_factory: async_sessionmaker[AsyncSession]
    bot: Bot
    texts: Texts
    shop: Shop
    signal: OutboxSignal
    poll_seconds: float = 2.0

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                sent = await self.deliver_pending()
            except Exception:  # keep delivering whatever one batch did
                log.exception("outbox delivery failed")
                sent = 0
            if not sent:
                await self.signal.wait(self.poll_seconds)

    async def deliver_pending(self) -> int:
        """Deliver one batch of due pushes; returns how many were handled."""
        async with self.session_factory() as session:
            rows = (
                await session.execute(
                    select(Push, Member)
                    .join(Member, Member.id == Push.member_id)
                    .where(Push.status == "pending", Push.not_before <= self.shop.now())
                    .order_by(Push.id)
                    .limit(BATCH)
                )
            ).all()
            await session.commit()
            for push, member in rows:
                await self._deliver(session, push, member)
            return len(rows)

    async def _deliver(self, session: AsyncSession, push: Push, member: Member) -> None:
        if member.telegram_id is None:
            await self._finish(session, push, "failed", "member has no chat")
            return
        text = render_push(self.texts, self.shop, member, push.kind, json.loads(push.payload))
        while True:
            try:
                await self.bot.send_message(member.telegram_id, text)
            except TelegramRetryAfter as exc:
                await asyncio.sleep(exc.retry_after)
                continue
            except TelegramForbiddenError:
                await self._finish(session, push, "failed", "blocked by the member")
                return
            except Exception as exc:  # transient: network, 5xx
                await self._retry_later(session, push, str(exc)[:255])
                return
            await self._finish(session, push, "sent", None)
            return

    async def _finish(
        self, session: AsyncSession, push: Push, status: str, error: str | None
    ) -> None:
        async with write_transaction(session):
            await session.execute(
                update(Push)
                .where(Push.id == push.id, Push.status == "pending")
                .values(
                    status=status, last_error=error, attempts=Push.attempts + 1,
                    sent_at=self.shop.now() if status == "sent" else None,
                )
            )

    async def _retry_later(self, session: AsyncSession, push: Push, error: str) -> None:
        attempts = push.attempts + 1
        async with write_transaction(session):
            await session.execute(
                update(Push)
                .where(Push.id == push.id, Push.status == "pending")
                .values(
                    attempts=attempts, last_error=error,
                    status="failed" if attempts >= MAX_ATTEMPTS else "pending",
                    not_before=self.shop.now() + timedelta(seconds=2**attempts),
                )
            )
