"""Logs an operator can use: one line per update and per till request (member id, status,
duration; never a phone number or a name), no start-up noise, and no secret in any line."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiogram import BaseMiddleware
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.types import TelegramObject, Update
from sqlalchemy import inspect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

update_log = logging.getLogger("companion.updates")
request_log = logging.getLogger("companion.requests")

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

# Libraries that log a line per job added, per update handled or per request: ours replace them.
# bot.pool: SQLAlchemy names a pool's logger after its class, so our fair pool logs as
# "bot.pool.FairAsyncQueuePool" (dispose and recreate at INFO) where SQLAlchemy's own are quiet.
_NOISY = ("apscheduler", "aiogram.event", "aiogram.dispatcher", "uvicorn.access", "alembic",
          "httpx", "bot.pool")


class RedactSecrets(logging.Filter):
    """Replaces every secret (the bot token, the till token) in a record with a placeholder,
    whichever library wrote it (aiogram and aiohttp put the token in request URLs)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in self.secrets:
            redacted = redacted.replace(secret, "<secret>")
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks are formatted later; render them now so the secret can be taken out.
            formatter = logging.Formatter()
            text = formatter.formatException(record.exc_info)
            for secret in self.secrets:
                text = text.replace(secret, "<secret>")
            redacted = f"{redacted}\n{text}"
            record.exc_info = None
            record.exc_text = None
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        return True


class RepeatLimit(logging.Filter):
    """A line that can repeat without end (asyncio's "socket.accept() out of system resource"
    under a connection flood, a failing dependency) is let through ``burst`` times a window;
    the rest are counted and summed up in one line when the next window lets it through."""

    def __init__(self, burst: int = 5, window: float = 60.0) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._seen: dict[tuple[str, object], tuple[float, int, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = time.monotonic()
        started, passed, dropped = self._seen.get(key, (now, 0, 0))
        if now - started > self.window:
            if dropped:
                record.msg = f"{record.getMessage()} (and {dropped} more like it before)"
                record.args = None
            started, passed, dropped = now, 0, 0
        if passed >= self.burst:
            self._seen[key] = (started, passed, dropped + 1)
            return False
        self._seen[key] = (started, passed + 1, dropped)
        if len(self._seen) > 10_000:  # never grows without end itself
            self._seen.clear()
        return True


def configure_logging(secrets: Iterable[str] = ()) -> None:
    """Plain lines on stderr, secrets redacted, the libraries' per-event chatter quieted."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    redact, repeats = RedactSecrets(secrets), RepeatLimit()
    for handler in logging.getLogger().handlers:
        handler.addFilter(repeats)
        handler.addFilter(redact)
    quiet_libraries()


def quiet_libraries() -> None:
    """The libraries' per-event chatter (and our pool's, named after its class) at WARNING."""
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)


def _update_kind(update: Update) -> str:
    if update.message is not None:
        text = update.message.text or ""
        return text.split(maxsplit=1)[0].split("@")[0] if text.startswith("/") else "message"
    if update.callback_query is not None:
        data = update.callback_query.data or ""
        return f"button:{data.split(':', 1)[0]}"
    return update.event_type


def _member_id(member: object) -> object:
    """The member's id without touching the database: by now the update's session is closed
    and the object may be expired, so its identity key is read, not its attribute."""
    if member is None:
        return "-"
    state = inspect(member, raiseerr=False)
    identity = state.identity if state is not None else None
    return identity[0] if identity else "-"


class UpdateLog(BaseMiddleware):
    """One line per update: its id, what it was (a command or a button's prefix, never the
    text), the member id, the outcome and the time it took."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        started = time.perf_counter()
        status = "ok"
        try:
            result = await handler(event, data)
            if result is UNHANDLED:
                status = "unhandled"
            return result
        except Exception:
            status = "error"
            raise
        finally:
            if isinstance(event, Update):
                update_log.info(
                    "update %s %s member=%s %s %.0f ms", event.update_id, _update_kind(event),
                    _member_id(data.get("member")), status,
                    (time.perf_counter() - started) * 1000,
                )


class RequestLog:
    """ASGI middleware: one line per HTTP request with the route (not the raw path, which may
    hold a phone number), the status, the member id a route recorded, and the duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "(no route)"
            member = scope.get("state", {}).get("member_id", "-")
            request_log.info(
                "%s %s member=%s %s %.0f ms", scope["method"], path, member, status,
                (time.perf_counter() - started) * 1000,
            )
