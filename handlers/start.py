"""/start: registration, with an optional invitation code; the welcome every new member gets
(also when they joined by writing something else first: bot/middlewares.py CurrentMember);
and what someone who is not a member yet gets when they press an old button."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatType
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import CallbackQuery, Message
from sqlalchemy.ext.asyncio import AsyncSession

from domain import members
from domain.models import Member
from domain.shop import Shop
from handlers.filters import Matches
from handlers.keyboards import main_menu
from handlers.member_center import set_menu_button
from handlers.staff import IsStaff
from handlers.texts import Texts

REFERRAL_PREFIX = "ref_"


def telegram_profile(message: Message) -> members.TelegramProfile:
    user = message.from_user
    assert user is not None
    return members.TelegramProfile(
        user.id, user.first_name, user.last_name, user.username, user.language_code
    )


async def greet(
    message: Message, registration: members.Registration, shop: Shop, texts: Texts,
    webapp_url: str | None = None,
) -> None:
    """The welcome (a returning person's welcome back, or an existing member's greeting) and
    the main menu: the same whether they joined with /start or by writing first. With the
    Mini App on, the member's menu button opens it, labelled in their language."""
    member = registration.member
    lang = member.language
    if registration.returning:
        text = texts.render(lang, "welcome_returning", name=member.display_name, code=member.code)
    elif registration.created:
        text = texts.render(
            lang,
            "welcome",
            name=member.display_name,
            code=member.code,
            bonus=shop.program.points.signup,
            referrer_name=registration.referrer.display_name if registration.referrer else None,
            next_tier=shop.program.next_tier(member.tier),
            welcome_coupon=registration.welcome_coupon,
        )
    else:
        text = texts.render(lang, "welcome_back", name=member.display_name, code=member.code)
    await message.answer(text, reply_markup=main_menu(texts, lang))
    if message.bot is not None:
        await set_menu_button(message.bot, texts, webapp_url, message.chat.id, lang)


async def start(
    message: Message, command: CommandObject, session: AsyncSession, shop: Shop, texts: Texts,
    webapp_url: str | None = None,
) -> None:
    args = command.args or ""
    # ref_<referral token> from an invite link (or ref_<member code> from an old one)
    invited_by = args.removeprefix(REFERRAL_PREFIX) if args.startswith(REFERRAL_PREFIX) else None
    registration = await members.register(
        session, shop, telegram_profile(message), invited_by=invited_by
    )
    await greet(message, registration, shop, texts, webapp_url)


async def join_first(query: CallbackQuery, texts: Texts, lang: str) -> None:
    """A button pressed by someone who is not a member (an old message from a membership they
    deleted, or a forwarded one): no membership is made by a press, they are asked to /start."""
    await query.answer(texts.render(lang, "start_first"), show_alert=True)


async def no_sender(message: Message) -> None:
    """A private message without a sender (a channel-style update): nobody to answer."""


async def _not_a_member(_: Message | CallbackQuery, member: Member | None = None) -> bool:
    return member is None


def staff_commands(router: Router) -> frozenset[str]:
    """Every command a handler under ``router`` serves only to staff (guarded by ``IsStaff``):
    typing one never makes anyone a member."""
    found: set[str] = set()
    for handler in router.message.handlers:
        filters = [f.callback for f in handler.filters or ()]
        if any(isinstance(f, IsStaff) for f in filters):
            for command in (f for f in filters if isinstance(f, Command)):
                found.update(c for c in command.commands if isinstance(c, str))
    for child in router.sub_routers:
        found |= staff_commands(child)
    return frozenset(found)


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(
        no_sender, Matches((F.chat.type == ChatType.PRIVATE) & F.from_user.is_(None)),
        _not_a_member,
    )
    router.message.register(start, CommandStart())
    router.callback_query.register(join_first, _not_a_member)
    return router
