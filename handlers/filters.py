"""Filters shared by the routers."""

from __future__ import annotations

from typing import Any

from aiogram.filters import Filter
from aiogram.types import Message, TelegramObject
from magic_filter import MagicFilter

from handlers.texts import Texts


class MenuButton(Filter):
    """A press of a main-menu button, in whichever language the member sees it."""

    def __init__(self, key: str) -> None:
        self.key = key

    async def __call__(self, message: Message, texts: Texts) -> bool:
        return message.text is not None and message.text in texts.labels_everywhere(self.key)


class Matches(Filter):
    """A magic filter (``F.chat.type == ...``) checked on the event loop. aiogram runs a bare
    magic filter, like any plain function, in a worker thread: a thread hop per check, on
    every message that reaches the router."""

    def __init__(self, rule: MagicFilter) -> None:
        self.rule = rule

    async def __call__(self, event: TelegramObject) -> Any:
        return self.rule.resolve(event)
