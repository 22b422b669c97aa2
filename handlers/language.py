"""/language: English or Chinese, remembered for the member."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from domain import members
from domain.models import Member
from handlers.callbacks import LanguageChoice
from handlers.editing import edit_in_place
from handlers.filters import MenuButton
from handlers.keyboards import language_picker, main_menu
from handlers.member_center import set_menu_button
from handlers.texts import LANGUAGES, Texts


async def choose(message: Message, texts: Texts, lang: str) -> None:
    await message.answer(
        texts.render(lang, "language_choose"), reply_markup=language_picker(texts, lang)
    )


async def switch_language(
    query: CallbackQuery, session: AsyncSession, texts: Texts, member: Member, lang: str,
    webapp_url: str | None = None,
) -> None:
    """Speak ``lang`` with the member who pressed from now on. The reply keyboard can only
    change with a new message, so one is sent, and only when the language did change."""
    if member.language == lang:
        return
    await members.set_language(session, member, lang)
    await query.bot.send_message(  # type: ignore[union-attr]
        query.from_user.id, texts.render(lang, "language_set"), reply_markup=main_menu(texts, lang)
    )
    if query.bot is not None:
        await set_menu_button(query.bot, texts, webapp_url, query.from_user.id, lang)


async def chosen(
    query: CallbackQuery,
    callback_data: LanguageChoice,
    session: AsyncSession,
    texts: Texts,
    member: Member,
    webapp_url: str | None = None,
) -> None:
    lang = callback_data.language
    # Tapping the language already ticked changes nothing, and that is fine.
    await edit_in_place(
        query, text=texts.render(lang, "language_choose"), markup=language_picker(texts, lang)
    )
    await switch_language(query, session, texts, member, lang, webapp_url)


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(choose, Command("language"))
    router.message.register(choose, MenuButton("menu_language"))
    router.callback_query.register(chosen, LanguageChoice.filter(F.language.in_(LANGUAGES)))
    return router
