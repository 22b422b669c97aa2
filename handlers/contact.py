"""Phone sharing: only the member's own contact, stored in E.164."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from domain import members
from domain.models import Member
from domain.shop import Shop
from handlers.filters import Matches
from handlers.keyboards import main_menu
from handlers.texts import Texts


async def contact(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, member: Member, lang: str
) -> None:
    assert message.contact is not None
    phone = await members.share_phone(
        session,
        shop,
        member,
        contact_user_id=message.contact.user_id,
        phone_number=message.contact.phone_number,
    )
    await message.answer(
        texts.render(lang, "phone_saved", phone=phone), reply_markup=main_menu(texts, lang)
    )


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(contact, Matches(F.contact))
    return router
