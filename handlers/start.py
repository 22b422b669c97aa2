"""/start: registration on first contact, with an optional invitation code."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import CommandObject, CommandStart
from aiogram.types import Message
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.texts import Texts
from domain import members
from domain.shop import Shop
from handlers.keyboards import main_menu

REFERRAL_PREFIX = "ref_"


async def start(
    message: Message, command: CommandObject, session: AsyncSession, shop: Shop, texts: Texts
) -> None:
    assert message.from_user is not None
    args = command.args or ""
    referrer_code = args.removeprefix(REFERRAL_PREFIX) if args.startswith(REFERRAL_PREFIX) else None
    user = message.from_user
    profile = members.TelegramProfile(
        user.id, user.first_name, user.last_name, user.username, user.language_code
    )
    registration = await members.register(session, shop, profile, referrer_code=referrer_code)
    member = registration.member
    lang = member.language
    if registration.created:
        text = texts.render(
            lang,
            "welcome",
            name=member.display_name,
            code=member.code,
            bonus=shop.program.points.signup,
            referrer_name=registration.referrer.display_name if registration.referrer else None,
            next_tier=shop.program.next_tier(member.tier),
            welcome_coupon=shop.program.coupon_template("welcome"),
        )
    else:
        text = texts.render(lang, "welcome_back", name=member.display_name, code=member.code)
    await message.answer(text, reply_markup=main_menu(texts, lang))


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(start, CommandStart())
    return router
