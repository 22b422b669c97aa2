"""Outside private chats the bot only points to a private chat, and its buttons do nothing."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.filters import Filter
from aiogram.types import CallbackQuery, Message

from handlers.filters import Matches
from handlers.texts import Texts


class OutsidePrivateChat(Filter):
    """A button press on a message outside the presser's private chat with the bot (a group,
    or no message at all, as for inline messages)."""

    async def __call__(self, query: CallbackQuery) -> bool:
        return query.message is None or query.message.chat.type != ChatType.PRIVATE


async def pointer(message: Message, texts: Texts, lang: str, bot_username: str) -> None:
    await message.reply(texts.render(lang, "group", bot_username=bot_username))


async def ignore(message: Message) -> None:
    """Ordinary group chatter is none of the bot's business."""


async def button_elsewhere(query: CallbackQuery, texts: Texts, lang: str) -> None:
    """A member's buttons act only in their private chat: a coupon's code shown to a group, or
    an erasure confirmed there, would act on the member before others. Say so; do nothing."""
    await query.answer(texts.render(lang, "group_button"), show_alert=True)


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.filter(Matches(F.chat.type != ChatType.PRIVATE))
    router.message.register(pointer, Matches(F.text.startswith("/") | F.new_chat_members))
    router.message.register(ignore)
    # Before every other router (handlers.build_router): no callback outside a private chat
    # reaches a handler that acts.
    router.callback_query.register(button_elsewhere, OutsidePrivateChat())
    return router
