"""/points: balance, what expires soon, and the history page by page (edited in place)."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from domain import points
from domain.models import Member
from domain.shop import Shop
from handlers.callbacks import PointsPage
from handlers.editing import edit_in_place
from handlers.filters import MenuButton
from handlers.keyboards import member_center_rows
from handlers.texts import Texts


async def _render(
    session: AsyncSession, shop: Shop, texts: Texts, member: Member, lang: str, page: int,
    webapp_url: str | None = None,
) -> tuple[str, InlineKeyboardMarkup | None]:
    seen = await points.overview(session, shop, member.id, page=page)
    text = texts.render(lang, "points/overview", o=seen, soon_days=points.SOON_DAYS)
    buttons = []
    if seen.page > 0:
        buttons.append(
            InlineKeyboardButton(
                text=texts.label(lang, "points_newer"),
                callback_data=PointsPage(page=seen.page - 1).pack(),
            )
        )
    if seen.page + 1 < seen.pages:
        buttons.append(
            InlineKeyboardButton(
                text=texts.label(lang, "points_older"),
                callback_data=PointsPage(page=seen.page + 1).pack(),
            )
        )
    rows = [buttons] if buttons else []
    rows += member_center_rows(texts, lang, webapp_url, "points")
    return text, InlineKeyboardMarkup(inline_keyboard=rows) if rows else None


async def show(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, member: Member, lang: str,
    webapp_url: str | None = None,
) -> None:
    text, markup = await _render(session, shop, texts, member, lang, 0, webapp_url)
    await message.answer(text, reply_markup=markup)


async def turn_page(
    query: CallbackQuery, callback_data: PointsPage, session: AsyncSession, shop: Shop,
    texts: Texts, member: Member, lang: str, webapp_url: str | None = None,
) -> None:
    # The page shows the presser's own ledger: nothing in the callback names a member.
    text, markup = await _render(
        session, shop, texts, member, lang, callback_data.page, webapp_url
    )
    await edit_in_place(query, text=text, markup=markup)


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(show, Command("points"))
    router.message.register(show, MenuButton("menu_points"))
    router.callback_query.register(turn_page, PointsPage.filter())
    return router
