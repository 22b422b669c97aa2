"""Outer middlewares: in-flight tracking, one DB session per update, the member and language."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.enums import ChatType
from aiogram.types import Chat, TelegramObject, Update, User
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from handlers.texts import Texts
from domain import members
from domain.shop import Shop

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


class InFlight(BaseMiddleware):
    """Remembers the updates being handled, so shutdown can let them finish."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            return await handler(event, data)
        finally:
            if task is not None:
                self.tasks.discard(task)

    async def wait(self, timeout: float) -> None:
        current = asyncio.current_task()
        pending = {t for t in self.tasks if t is not current and not t.done()}
        if pending:
            await asyncio.wait(pending, timeout=timeout)


class DatabaseSession(BaseMiddleware):
    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self.session_factory = session_factory

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        async with self.session_factory() as session:
            data["session"] = session
            return await handler(event, data)


def _is_start(update: Update) -> bool:
    text = update.message.text if update.message is not None else None
    return bool(text) and text.split(maxsplit=1)[0].split("@")[0] == "/start"  # type: ignore[union-attr]


class CurrentMember(BaseMiddleware):
    """Loads the member once per update (registering on first contact in a private chat, except
    for /start, which registers with its invitation code) and picks the member's language."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        chat: Chat | None = data.get("event_chat")
        session: AsyncSession = data["session"]
        shop: Shop = data["shop"]
        member = None
        if user is not None and not user.is_bot:
            member = await members.member_by_telegram_id(session, user.id)
            private = chat is None or chat.type == ChatType.PRIVATE
            wrote = isinstance(event, Update) and (
                event.message is not None or event.callback_query is not None
            )
            if member is None and private and wrote and not _is_start(event):  # type: ignore[arg-type]
                profile = members.TelegramProfile(
                    user.id, user.first_name, user.last_name, user.username, user.language_code
                )
                member = (await members.register(session, shop, profile)).member
            if session.in_transaction():
                await session.commit()  # end the read: use cases begin their own transactions
            if member is not None and wrote and private and not member.reachable:
                await members.set_reachable(session, member, True)  # they wrote again
        data["member"] = member
        data["lang"] = member.language if member else members.language_for(
            user.language_code if user else None
        )
        return await handler(event, data)


class Throttle(BaseMiddleware):
    """At most ``limit`` updates per ``seconds`` from one user; a flood gets one polite notice
    and the rest are dropped until the user slows down."""

    def __init__(self, texts: Texts, *, limit: int = 8, seconds: float = 4.0) -> None:
        self.texts = texts
        self.limit = limit
        self.seconds = seconds
        self.recent: dict[int, deque[float]] = {}
        self.warned: set[int] = set()

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        if user is None or not isinstance(event, Update) or (
            event.message is None and event.callback_query is None
        ):
            return await handler(event, data)
        now = time.monotonic()
        times = self.recent.setdefault(user.id, deque())
        while times and now - times[0] > self.seconds:
            times.popleft()
        if len(times) >= self.limit:
            if user.id not in self.warned:
                self.warned.add(user.id)
                lang = members.language_for(user.language_code)
                text = self.texts.render(lang, "throttled")
                if event.message is not None:
                    await event.message.answer(text)
                elif event.callback_query is not None:
                    await event.callback_query.answer(text, show_alert=True)
            return None
        times.append(now)
        self.warned.discard(user.id)
        if len(self.recent) > 10_000:  # forget quiet users now and then
            self.recent = {k: v for k, v in self.recent.items() if v and now - v[-1] < self.seconds}
        return await handler(event, data)
