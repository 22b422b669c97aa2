"""Outer middlewares: in-flight tracking, one DB session per update, the member and language."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.enums import ChatType
from aiogram.types import Chat, Message, TelegramObject, Update, User
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import members
from domain.shop import Shop
from handlers.start import greet, telegram_profile
from handlers.texts import Texts

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

    async def wait(self, seconds: float) -> None:
        current = asyncio.current_task()
        pending = {t for t in self.tasks if t is not current and not t.done()}
        if pending:
            await asyncio.wait(pending, timeout=seconds)


class DatabaseSession(BaseMiddleware):
    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self.session_factory = session_factory

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        session = self.session_factory()
        try:
            data["session"] = session
            return await handler(event, data)
        finally:
            if session.in_transaction():
                async with session:  # a connection to give back: closed in a task of its own
                    pass
            else:
                # Use cases commit and the member read leaves none open: nothing to give back,
                # so no task (as ``async with`` makes for every update) to close it.
                await session.close()


def _command(message: Message) -> str | None:
    """The command a message starts with (``/sale@shop_bot 1`` → ``sale``), or None."""
    text = message.text or message.caption or ""
    if not text.startswith("/"):
        return None
    return text.split(maxsplit=1)[0][1:].split("@", 1)[0]


class CurrentMember(BaseMiddleware):
    """Loads the member once per update and picks the member's language.

    Nobody becomes a member silently. /start registers (handlers/start.py, with its invitation
    code); in a private chat, a first message of any other kind registers too, and then the
    person gets the same welcome and menu as with /start: for a command the command is
    answered after the welcome, anything else is answered by the welcome alone. A staff
    command (``staff_commands``) never registers anyone, nor does a button press, a group
    message or a block/unblock."""

    def __init__(self, staff_commands: frozenset[str] = frozenset()) -> None:
        self.staff_commands = staff_commands

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        user: User | None = data.get("event_from_user")
        chat: Chat | None = data.get("event_chat")
        session: AsyncSession = data["session"]
        member = None
        message = event.message if isinstance(event, Update) else None
        command = _command(message) if message is not None else None
        # Staff need no membership for their own commands (handlers check it, e.g. profile).
        data["staff_command"] = command in self.staff_commands
        growth = None
        if user is not None and not user.is_bot:
            shop: Shop = data["shop"]
            # One statement, no transaction left open: use cases begin their own.
            standing = await members.standing_by_telegram_id(session, shop, user.id)
            if standing is not None:
                member, growth = standing.member, standing.growth
            private = chat is None or chat.type == ChatType.PRIVATE
            wrote = isinstance(event, Update) and (
                event.message is not None or event.callback_query is not None
            )
            # Someone mid-conversation (a staff member typing an amount or a reason, an admin
            # a catalog value) is answering a question, not joining.
            answering = data.get("raw_state") is not None
            if (
                member is None and private and message is not None and not answering
                and command != "start" and command not in self.staff_commands
            ):
                registration = await members.register(session, shop, telegram_profile(message))
                member = registration.member
                if registration.created:
                    await greet(
                        message, registration, shop, data["texts"], data.get("webapp_url")
                    )
                    if command is None:
                        return None  # the welcome and the menu are the answer
            if member is not None and wrote and private and not member.reachable:
                await members.set_reachable(session, member, True)  # they wrote again
        data["member"] = member
        # The member's growth over the program's window as it was read with them (None when
        # they joined just now): handlers that show it need no second read.
        data["growth"] = growth
        data["lang"] = member.language if member else members.language_for(
            user.language_code if user else None
        )
        return await handler(event, data)


class Throttle(BaseMiddleware):
    """At most ``limit`` updates per ``seconds`` from one user; a flood gets one polite notice
    and the rest are dropped until the user slows down.

    Kept in this process's memory on purpose: with N workers behind a round-robin balancer a
    user may send up to N x ``limit`` before being slowed, and may get the notice from each
    worker. It guards a worker from a runaway client; nothing it lets through can corrupt
    anything (the domain's locks and unique keys do that, docs/deploy.md)."""

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
            self.recent = {
                k: v for k, v in self.recent.items() if v and now - v[-1] < self.seconds
            }
        return await handler(event, data)
