"""/card: the member card, a QR code photo with the member's standing as its caption; under it
"Pay with points", a one-time QR code that lets the till spend the member's points."""

from __future__ import annotations

import asyncio

from aiogram import Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command
from aiogram.types import BufferedInputFile, CallbackQuery, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from domain import members, plus, spending
from domain.models import Member
from domain.shop import Shop
from handlers.callbacks import SpendCodeAsk
from handlers.filters import MenuButton
from handlers.keyboards import card_actions
from handlers.media import qr_png
from handlers.texts import Texts


async def card(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, member: Member, lang: str
) -> None:
    view = await members.member_card(session, shop, member)
    badge = plus.is_active(member.plus_state, member.plus_until, shop.now())
    caption = texts.render(lang, "card_caption", card=view, plus=badge)
    # A frozen member's points cannot be used at the till: no button to try.
    markup: InlineKeyboardMarkup | None = None if view.frozen else card_actions(texts, lang)
    if member.card_file_id:
        try:
            await message.answer_photo(member.card_file_id, caption=caption, reply_markup=markup)
            return
        except TelegramBadRequest:
            pass  # the file_id is no longer valid (e.g. another bot token): upload again
    png = await asyncio.to_thread(qr_png, member.code)  # ~10 ms of CPU: off the event loop
    photo = BufferedInputFile(png, filename=f"card-{member.code}.png")
    sent = await message.answer_photo(photo, caption=caption, reply_markup=markup)
    if sent.photo:
        await members.remember_card_file(session, member, sent.photo[-1].file_id)


async def pay_with_points(
    query: CallbackQuery, session: AsyncSession, shop: Shop, texts: Texts,
    member: Member | None, lang: str,
) -> None:
    """A new spend code for the member who pressed, as a QR code; never reused, never cached."""
    if member is None:
        await query.answer()
        return
    issued = await spending.issue(session, shop, member.id)
    await query.answer()
    png = await asyncio.to_thread(qr_png, issued.code)
    caption = texts.render(
        lang, "card_spend_code", code=spending.format_spend_code(issued.code),
        minutes=issued.minutes, balance=member.points_balance,
    )
    chat_id = query.message.chat.id if query.message is not None else query.from_user.id
    await query.bot.send_photo(  # type: ignore[union-attr]
        chat_id, BufferedInputFile(png, filename="pay-with-points.png"), caption=caption
    )


def build_router() -> Router:
    router = Router(name=__name__)
    router.callback_query.register(pay_with_points, SpendCodeAsk.filter())
    router.message.register(card, Command("card"))
    router.message.register(card, MenuButton("menu_card"))
    return router
