"""Replies to members wait out Telegram's flood control instead of being lost.

Telegram answers 429 with ``retry_after`` when a bot sends too fast. The outbox sender handles
that itself (it pauses every push, bot/sender.py) and marks its own requests with
:data:`OUTBOX_SEND`. Every other request (a reply to a member's message, an edit, a callback's
answer) is retried here after the wait Telegram names, a few times, so a busy moment across
several workers costs the member a short wait, not their answer.
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response, TelegramType

log = logging.getLogger(__name__)

# True inside the outbox sender's own requests: it paces and pauses them itself.
OUTBOX_SEND: ContextVar[bool] = ContextVar("outbox_send", default=False)
ATTEMPTS = 3
LONGEST_WAIT_SECONDS = 30


class RetryAfterFloodControl(BaseRequestMiddleware):
    def __init__(self, sleep: Any = asyncio.sleep) -> None:
        self._sleep = sleep

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        attempt = 1
        while True:
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                if (
                    OUTBOX_SEND.get() or attempt >= ATTEMPTS
                    or exc.retry_after > LONGEST_WAIT_SECONDS
                ):
                    raise
                log.warning(
                    "flood control on %s: retrying in %s s", type(method).__name__,
                    exc.retry_after,
                )
                attempt += 1
                await self._sleep(exc.retry_after)
