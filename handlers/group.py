"""Outside private chats the bot only points to a private chat."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.types import Message

from handlers.texts import Texts


async def pointer(message: Message, texts: Texts, lang: str, bot_username: str) -> None:
    await message.reply(texts.render(lang, "group", bot_username=bot_username))


async def ignore(message: Message) -> None:
    """Ordinary group chatter is none of the bot's business."""


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.filter(F.chat.type != ChatType.PRIVATE)
    router.message.register(pointer, F.text.startswith("/") | F.new_chat_members)
    router.message.register(ignore)
    return router
