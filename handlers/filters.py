"""Filters shared by the routers."""

from __future__ import annotations

from aiogram.filters import Filter
from aiogram.types import Message

from handlers.texts import Texts


class MenuButton(Filter):
    """A press of a main-menu button, in whichever language the member sees it."""

    def __init__(self, key: str) -> None:
        self.key = key

    async def __call__(self, message: Message, texts: Texts) -> bool:
        return message.text is not None and message.text in texts.labels_everywhere(self.key)
