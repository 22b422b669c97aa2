"""``/audit [member code | phone | @username]`` for admins: what staff and admins did, newest
first, a page at a time (edited in place). Read only: nothing in the bot edits or deletes an
audit line. Members and staff get nothing of it."""

from __future__ import annotations

from dataclasses import dataclass

from aiogram import Router
from aiogram.filters import Command, CommandObject
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from babel.dates import format_datetime
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain import care
from domain.catalog import reward_names
from domain.models import Member
from domain.shop import Shop
from handlers.callbacks import AuditPage
from handlers.editing import edit_in_place
from handlers.staff import IsStaff
from handlers.stats import IsAdmin, only_admins, only_admins_press
from handlers.texts import LOCALES, Texts

PAGE = 10
MONEY_FIELDS = ("value", "min_spend", "amount")


def _word(texts: Texts, lang: str, key: str, fallback: str) -> str:
    try:
        return texts.label(lang, key)
    except KeyError:
        return fallback


def _value(texts: Texts, lang: str, shop: Shop, field: str, value: object) -> str:
    """A before or after value in the admin's words: yes/no, a status, a tier's name, points,
    money."""
    if value is None:
        return texts.label(lang, "audit_value_none")
    if isinstance(value, bool):
        return texts.label(lang, f"audit_value_{str(value).lower()}")
    if isinstance(value, int):
        return texts.money(lang, value) if field in MONEY_FIELDS else texts.number(
            lang, value, signed=field == "change"
        )
    text = str(value)
    if any(t.key == text for t in shop.program.tiers):
        return shop.program.tier(text).name.get(lang)
    return _word(texts, lang, f"audit_value_{text}", text)


@dataclass(frozen=True)
class _Row:
    at: str
    role: str
    actor: int
    action: str
    code: str | None
    subject: str | None
    changes: list[tuple[str, str, str]]
    reason: str


async def _screen(
    session: AsyncSession, shop: Shop, texts: Texts, lang: str, member_id: int, older_than: int,
) -> tuple[str, InlineKeyboardMarkup | None]:
    page = await care.audit_page(
        session, member_id=member_id or None, older_than=older_than or None, size=PAGE
    )
    names = await reward_names(session, shop)
    await session.commit()
    locale = LOCALES.get(lang, "en")

    def subject(text: str | None) -> str | None:
        if text is None or not text.startswith("reward:"):
            return text.removeprefix("template:") if text else None
        name = names.get(text.removeprefix("reward:"))
        return name.get(lang) if name is not None else text

    rows = [
        _Row(
            at=format_datetime(line.at.astimezone(shop.tz), "short", locale=locale),
            role=_word(texts, lang, f"audit_role_{line.actor_role}", line.actor_role),
            actor=line.actor_telegram_id,
            action=_word(texts, lang, "audit_action_" + line.action.replace(".", "_"),
                         line.action),
            code=page.codes.get(line.member_id) if line.member_id is not None else None,
            subject=subject(line.subject),
            changes=[
                (_word(texts, lang, f"audit_field_{key}", key),
                 _value(texts, lang, shop, key, line.before[key]) if key in line.before else "",
                 _value(texts, lang, shop, key, line.after[key]) if key in line.after else "")
                for key in dict.fromkeys([*line.before, *line.after])
            ],
            reason=line.reason,
        )
        for line in page.lines
    ]
    code = page.codes.get(member_id) if member_id else None
    if member_id and code is None:
        code = await session.scalar(select(Member.code).where(Member.id == member_id))
        await session.commit()
    text = texts.render(lang, "audit/page", rows=rows, member_code=code, first=not older_than)
    buttons = []
    if older_than:
        buttons.append(InlineKeyboardButton(
            text=texts.label(lang, "audit_newest"),
            callback_data=AuditPage(member_id=member_id).pack()))
    if page.older and page.lines:
        buttons.append(InlineKeyboardButton(
            text=texts.label(lang, "audit_older"),
            callback_data=AuditPage(member_id=member_id, older_than=page.lines[-1].id).pack()))
    return text, InlineKeyboardMarkup(inline_keyboard=[buttons]) if buttons else None


async def show_audit(
    message: Message, command: CommandObject, session: AsyncSession, shop: Shop, texts: Texts,
    lang: str,
) -> None:
    query = (command.args or "").strip()
    member_id = (await care.find(session, shop, query)).id if query else 0
    text, markup = await _screen(session, shop, texts, lang, member_id, 0)
    await message.answer(text, reply_markup=markup)


async def page(
    query: CallbackQuery, callback_data: AuditPage, session: AsyncSession, shop: Shop,
    texts: Texts, lang: str,
) -> None:
    text, markup = await _screen(
        session, shop, texts, lang, max(callback_data.member_id, 0),
        max(callback_data.older_than, 0),
    )
    await edit_in_place(query, text=text, markup=markup)


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(show_audit, Command("audit"), IsStaff(), IsAdmin())
    router.message.register(only_admins, Command("audit"))
    router.callback_query.register(page, AuditPage.filter(), IsAdmin())
    router.callback_query.register(only_admins_press, AuditPage.filter())
    return router
