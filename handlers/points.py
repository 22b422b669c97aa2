"""/points: balance, what expires soon, and the history page by page (edited in place)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.texts import Texts
from domain import points
from domain.models import Member
from domain.shop import Shop
from domain.transaction import read_transaction
from handlers.callbacks import PointsPage
from handlers.editing import edit_in_place
from handlers.filters import MenuButton

SOON_DAYS = 30


@dataclass(frozen=True)
class _Line:
    kind: str
    amount: int
    reason: str
    source_ref: str | None
    local_day: date


async def _render(
    session: AsyncSession, shop: Shop, texts: Texts, member: Member, lang: str, page: int
) -> tuple[str, InlineKeyboardMarkup | None]:
    async with read_transaction(session):
        balance = await session.scalar(select(Member.points_balance).where(Member.id == member.id))
        schedule = await points.expiring_points(session, member.id)
        history = await points.history_page(session, member.id, page=page)
    soon_until = shop.today() + timedelta(days=SOON_DAYS)
    expiring = [item for item in schedule if item.expires_on <= soon_until]
    later = next((item for item in schedule if item.expires_on > soon_until), None)
    lines = [
        _Line(x.kind, x.amount, x.reason, x.source_ref, shop.local_date(x.at)) for x in history.lines
    ]
    text = texts.render(
        lang, "points/overview", balance=balance or 0, expiring=expiring, later=later,
        lines=lines, page=history.page, pages=history.pages,
    )
    buttons = []
    if history.page > 0:
        buttons.append(
            InlineKeyboardButton(
                text=texts.label(lang, "points_newer"),
                callback_data=PointsPage(page=history.page - 1).pack(),
            )
        )
    if history.page + 1 < history.pages:
        buttons.append(
            InlineKeyboardButton(
                text=texts.label(lang, "points_older"),
                callback_data=PointsPage(page=history.page + 1).pack(),
            )
        )
    return text, InlineKeyboardMarkup(inline_keyboard=[buttons]) if buttons else None


async def show(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, member: Member, lang: str
) -> None:
    text, markup = await _render(session, shop, texts, member, lang, 0)
    await message.answer(text, reply_markup=markup)


async def turn_page(
    query: CallbackQuery, callback_data: PointsPage, session: AsyncSession, shop: Shop,
    texts: Texts, member: Member, lang: str,
) -> None:
    # The page shows the presser's own ledger: nothing in the callback names a member.
    text, markup = await _render(session, shop, texts, member, lang, callback_data.page)
    await edit_in_place(query, text=text, markup=markup)


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(show, Command("points"))
    router.message.register(show, MenuButton("menu_points"))
    router.callback_query.register(turn_page, PointsPage.filter())
    return router
