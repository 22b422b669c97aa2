"""/checkin: the daily check-in, its month calendar and the monthly leaderboard."""

from __future__ import annotations

from datetime import date

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from domain import checkin
from domain.models import Member
from domain.shop import Shop
from domain.transaction import read_transaction
from handlers.callbacks import CheckinView
from handlers.editing import edit_in_place
from handlers.filters import MenuButton
from handlers.texts import Texts

CALENDAR = "calendar"
LEADERBOARD = "leaderboard"


def _switch_to(texts: Texts, lang: str, view: str) -> InlineKeyboardMarkup:
    """One button, to the other view (pressing the shown view would change nothing)."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=texts.label(lang, f"checkin_{view}"),
                    callback_data=CheckinView(view=view).pack(),
                )
            ]
        ]
    )


async def check_in(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, member: Member, lang: str
) -> None:
    try:
        result = await checkin.check_in(session, shop, member.id)
        text = texts.render(lang, "checkin/done", r=result, program=shop.program)
    except checkin.AlreadyCheckedIn as already:
        # Not a failure to the member: the same calendar message, saying nothing was added.
        text = texts.render(lang, "checkin/already", **already.details)
    await message.answer(text, reply_markup=_switch_to(texts, lang, LEADERBOARD))


async def show_view(
    query: CallbackQuery,
    callback_data: CheckinView,
    session: AsyncSession,
    shop: Shop,
    texts: Texts,
    member: Member,
    lang: str,
) -> None:
    # The views show only the presser's own data: nothing in the callback data is an id.
    today = shop.today()
    if callback_data.view == LEADERBOARD:
        async with read_transaction(session):
            board = await checkin.leaderboard(session, shop, today.year, today.month)
            own = await checkin.rank_of(session, shop, member.id, today.year, today.month)
        text = texts.render(
            lang, "checkin/leaderboard", board=board, own=own,
            month=date(today.year, today.month, 1),
        )
        markup = _switch_to(texts, lang, CALENDAR)
    else:
        async with read_transaction(session):
            status = await checkin.checkin_status(session, shop, member.id)
        text = texts.render(lang, "checkin/calendar", status=status)
        markup = _switch_to(texts, lang, LEADERBOARD)
    await edit_in_place(query, text=text, markup=markup)


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(check_in, Command("checkin"))
    router.message.register(check_in, MenuButton("menu_checkin"))
    router.callback_query.register(
        show_view, CheckinView.filter(F.view.in_((CALENDAR, LEADERBOARD)))
    )
    return router
