"""/language: English or Chinese, remembered for the member."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.texts import LANGUAGES, Texts
from domain import members
from domain.models import Member
from handlers.callbacks import LanguageChoice
from handlers.filters import MenuButton
from handlers.keyboards import language_picker, main_menu


async def choose(message: Message, texts: Texts, lang: str) -> None:
    await message.answer(
        texts.render(lang, "language_choose"), reply_markup=language_picker(texts, lang)
    )


async def chosen(
    query: CallbackQuery,
    callback_data: LanguageChoice,
    session: AsyncSession,
    texts: Texts,
    member: Member,
) -> None:
    lang = callback_data.language
    await members.set_language(session, member, lang)
    await query.answer()
    if query.message is not None:
        # Edit the picker in place; the reply keyboard can only change with a new message.
        await query.bot.edit_message_text(  # type: ignore[union-attr]
            text=texts.render(lang, "language_choose"),
            chat_id=query.message.chat.id,
            message_id=query.message.message_id,
            reply_markup=language_picker(texts, lang),
        )
        await query.bot.send_message(  # type: ignore[union-attr]
            query.message.chat.id,
            texts.render(lang, "language_set"),
            reply_markup=main_menu(texts, lang),
        )


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(choose, Command("language"))
    router.message.register(choose, MenuButton("menu_language"))
    router.callback_query.register(chosen, LanguageChoice.filter(F.language.in_(LANGUAGES)))
    return router
