"""Webhook mode: Telegram posts each update to ``WEBHOOK_URL``; any worker may receive it.

The receiver checks ``X-Telegram-Bot-Api-Secret-Token`` before reading the body (wrong or
missing: 401, nothing processed), answers at once and handles the update in a task of its
own, which shutdown waits for. An update that fails is logged and not retried: Telegram has
its 200 already, so it never comes back to fail again. While the worker is stopping it answers
503, so Telegram (or nginx, to another worker) delivers that update again later: none lost.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.types import Update
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from bot.settings import Settings

log = logging.getLogger(__name__)

SECRET_HEADER = "x-telegram-bot-api-secret-token"  # noqa: S105 (a header name)
MAX_UPDATE_BYTES = 1024 * 1024  # an update is a few KB; Telegram's largest are far under this


class WebhookReceiver:
    """The webhook route and the updates it is handling."""

    def __init__(self, bot: Bot, dispatcher: Dispatcher, secret: str) -> None:
        self.bot = bot
        self.dispatcher = dispatcher
        self.secret = secret.encode()
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self.received = 0

    def install(self, app: FastAPI, path: str) -> None:
        app.add_api_route(path, self.receive, methods=["POST"], include_in_schema=False)

    async def receive(self, request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self.secret):
            return JSONResponse(
                {"error": "unauthorized", "message": "wrong secret token", "field": None}, 401
            )
        body = await request.body()
        if len(body) > MAX_UPDATE_BYTES:
            return JSONResponse(
                {"error": "too_large", "message": "not an update", "field": None}, 413
            )
        # Checked once the body is in, with no await until the task exists: an update whose
        # body was still arriving when the drain began is refused, not answered and dropped.
        if self.closing:
            return JSONResponse(
                {"error": "stopping", "message": "this worker is stopping", "field": None}, 503
            )
        try:
            update = Update.model_validate_json(body, context={"bot": self.bot})
        except ValidationError:
            # Answered 200: a body Telegram cannot make valid would come back forever.
            log.warning("webhook: a request that is not an update was ignored")
            return Response(status_code=200)
        self.received += 1
        task = asyncio.create_task(self._handle(update), name=f"update-{update.update_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return Response(status_code=200)

    async def _handle(self, update: Update) -> None:
        try:
            await self.dispatcher.feed_update(self.bot, update)
        except Exception:
            log.exception("update %s failed; it is not retried", update.update_id)

    async def drain(self, seconds: float) -> None:
        """Refuse new updates (503) and let those in hand finish."""
        self.closing = True
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=seconds)


async def register(bot: Bot, dispatcher: Dispatcher, settings: Settings) -> None:
    """setWebhook with the secret and the update types the routers use, listed explicitly
    (every worker does it at start: the same values, so it is harmless)."""
    assert settings.webhook_url is not None
    await bot.set_webhook(
        settings.webhook_url,
        secret_token=settings.webhook_secret_value(),
        allowed_updates=dispatcher.resolve_used_update_types(),
        drop_pending_updates=False,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="webhook_command", metavar="WEBHOOK_COMMAND",
                                     required=True)
    commands.add_parser("info", help="what Telegram knows of the webhook (URL, queue, errors)")
    delete = commands.add_parser(
        "delete", help="remove the webhook (to go back to long polling)"
    )
    delete.add_argument("--drop-pending", action="store_true",
                        help="also drop the updates Telegram is holding")


async def webhook_command(settings: Settings, args: argparse.Namespace) -> int:
    from bot.app import create_bot

    bot = create_bot(settings)
    try:
        if args.webhook_command == "delete":
            await bot.delete_webhook(drop_pending_updates=args.drop_pending)
            print("webhook deleted" + (", pending updates dropped" if args.drop_pending else ""))
            return 0
        info = await bot.get_webhook_info()
        shown: dict[str, Any] = {
            "url": info.url or "(none: long polling)",
            "pending updates": info.pending_update_count,
            "allowed updates": ", ".join(info.allowed_updates or []) or "(Telegram's default)",
            "max connections": info.max_connections,
            "last error": (
                f"{info.last_error_date:%Y-%m-%d %H:%M:%S} {info.last_error_message}"
                if info.last_error_date else "none"
            ),
        }
        for name, value in shown.items():
            print(f"{name}: {value}")
        return 0
    finally:
        await bot.session.close()
