"""/card: the member card, a QR code photo with the member's standing as its caption."""

from __future__ import annotations

import asyncio

from aiogram import Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command
from aiogram.types import BufferedInputFile, Message
from sqlalchemy.ext.asyncio import AsyncSession

from domain import members
from domain.models import Member
from domain.shop import Shop
from handlers.filters import MenuButton
from handlers.media import qr_png
from handlers.texts import Texts


async def card(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, member: Member, lang: str
) -> None:
    view = await members.member_card(session, shop, member)
    caption = texts.render(lang, "card_caption", card=view)
    if member.card_file_id:
        try:
            await message.answer_photo(member.card_file_id, caption=caption)
            return
        except TelegramBadRequest:
            pass  # the file_id is no longer valid (e.g. another bot token): upload again
    png = await asyncio.to_thread(qr_png, member.code)  # ~10 ms of CPU: off the event loop
    photo = BufferedInputFile(png, filename=f"card-{member.code}.png")
    sent = await message.answer_photo(photo, caption=caption)
    if sent.photo:
        await members.remember_card_file(session, member, sent.photo[-1].file_id)


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(card, Command("card"))
    router.message.register(card, MenuButton("menu_card"))
    return router
