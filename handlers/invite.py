"""/invite: the member's personal link as a QR code photo, what it brought, and the monthly
leaderboard, switched in place by editing the caption."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)
from sqlalchemy.ext.asyncio import AsyncSession

from domain import referrals
from domain.models import Member
from domain.shop import Shop
from handlers.callbacks import InviteView
from handlers.editing import edit_in_place
from handlers.filters import Matches, MenuButton
from handlers.media import qr_png
from handlers.texts import Texts

LINK = "link"
LEADERBOARD = "leaderboard"


def _view_button(texts: Texts, lang: str, label: str, view: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(
        text=texts.label(lang, label), callback_data=InviteView(view=view).pack()
    )


def _share_url(texts: Texts, lang: str, shop: Shop, link: str) -> str:
    text = texts.render(lang, "invite/share_text", program=shop.program)
    return "https://t.me/share/url?" + urlencode({"url": link, "text": text})


async def _screen(
    view: str, session: AsyncSession, shop: Shop, texts: Texts, member: Member, lang: str,
    bot_username: str,
) -> tuple[str, InlineKeyboardMarkup, str | None]:
    """Caption, buttons and (for the link view) the link to draw as a QR code."""
    if view == LEADERBOARD:
        board = await referrals.monthly_leaderboard(session, shop, member.id)
        back = [[_view_button(texts, lang, "invite_back", LINK)]]
        caption = texts.render(lang, "invite/leaderboard", board=board, me=member.id)
        return caption, InlineKeyboardMarkup(inline_keyboard=back), None
    invitation = await referrals.invitation(session, shop, member, bot_username)
    share = InlineKeyboardButton(
        text=texts.label(lang, "invite_share"),
        url=_share_url(texts, lang, shop, invitation.link),
    )
    buttons = [[share], [_view_button(texts, lang, "invite_leaderboard", LEADERBOARD)]]
    caption = texts.render(lang, "invite/link", inv=invitation, program=shop.program)
    return caption, InlineKeyboardMarkup(inline_keyboard=buttons), invitation.link


async def invite(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, member: Member, lang: str,
    bot_username: str,
) -> None:
    caption, keyboard, link = await _screen(LINK, session, shop, texts, member, lang, bot_username)
    assert link is not None
    png = await asyncio.to_thread(qr_png, link)  # CPU work: off the event loop
    photo = BufferedInputFile(png, filename="invite.png")  # no member code in anything shared
    await message.answer_photo(photo, caption=caption, reply_markup=keyboard)


async def switch_view(
    query: CallbackQuery, callback_data: InviteView, session: AsyncSession, shop: Shop,
    texts: Texts, member: Member, lang: str, bot_username: str,
) -> None:
    # Nothing in the data to re-check: every view is built from the presser's own member row.
    caption, keyboard, _ = await _screen(
        callback_data.view, session, shop, texts, member, lang, bot_username
    )
    await edit_in_place(query, caption=caption, markup=keyboard)


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(invite, Command("invite"))
    router.message.register(invite, MenuButton("menu_invite"))
    router.callback_query.register(
        switch_view,
        InviteView.filter(F.view.in_((LINK, LEADERBOARD))),
        Matches(F.message.chat.type == ChatType.PRIVATE),
    )
    return router
