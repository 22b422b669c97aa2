"""/benefits: every tier's benefits, the member's tier marked, and the path to the next one."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from domain import benefits as domain_benefits
from domain import plus
from domain.models import Member
from domain.shop import Shop
from handlers.filters import MenuButton
from handlers.texts import Texts


async def benefits(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, member: Member, lang: str
) -> None:
    overview = await domain_benefits.benefits_overview(session, shop, member)
    # PLUS (when the shop sells it): its services are listed beside the tiers'.
    has_plus = plus.is_active(member.plus_state, member.plus_until, shop.now())
    await message.answer(
        texts.render(
            lang, "benefits/table", overview=overview, plus=shop.program.plus, has_plus=has_plus
        )
    )


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(benefits, Command("benefits"))
    router.message.register(benefits, MenuButton("menu_benefits"))
    return router
