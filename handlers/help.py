"""/help and the answer to anything the bot does not understand."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message

from handlers.filters import MenuButton
from handlers.keyboards import main_menu
from handlers.texts import Texts


async def help_(message: Message, texts: Texts, lang: str) -> None:
    await message.answer(texts.render(lang, "help"), reply_markup=main_menu(texts, lang))


async def stale_button(query: CallbackQuery) -> None:
    """A button from an old or foreign message: acknowledge it, do nothing."""
    await query.answer()


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(help_, Command("help"))
    router.message.register(help_, MenuButton("menu_help"))
    router.message.register(help_)
    router.callback_query.register(stale_button)
    return router
