"""/profile, /birthday, /setbirthday (staff), /mydata and /delete: the member's own data."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyKeyboardRemove,
)
from sqlalchemy.ext.asyncio import AsyncSession

from handlers.texts import Texts
from domain import members, privacy
from domain import profile as profiles
from domain.models import Member
from domain.points import LedgerLine
from domain.shop import Shop
from handlers.callbacks import DeleteStep, ProfileAction
from handlers.filters import MenuButton
from handlers.keyboards import language_picker
from handlers.staff import IsStaff

# Telegram's clock and ours may differ a little (and Telegram's dates are whole seconds): only
# a button clearly older than the member counts as one from an earlier, deleted membership.
CLOCK_SLACK = timedelta(seconds=2)


def _member_known(_: Message | CallbackQuery, member: Member | None = None) -> bool:
    return member is not None


def _button(text: str, data: ProfileAction | DeleteStep) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data.pack())


def _profile_keyboard(texts: Texts, lang: str, member: Member) -> InlineKeyboardMarkup:
    toggle = "marketing_off" if member.marketing_opt_in else "marketing_on"
    second_row = [_button(texts.label(lang, "profile_language"), ProfileAction(action="language"))]
    if member.birthday_month is None:
        second_row.insert(
            0, _button(texts.label(lang, "profile_birthday"), ProfileAction(action="birthday"))
        )
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [_button(texts.label(lang, f"profile_{toggle}"), ProfileAction(action=toggle))],
            second_row,
            [_button(texts.label(lang, "profile_delete"), ProfileAction(action="delete"))],
        ]
    )


def _confirm_keyboard(texts: Texts, lang: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [_button(texts.label(lang, "profile_delete_yes"), DeleteStep(step="confirm"))],
            [_button(texts.label(lang, "profile_delete_cancel"), DeleteStep(step="cancel"))],
        ]
    )


def _reason_keyboard(texts: Texts, lang: str) -> InlineKeyboardMarkup:
    rows = [
        [_button(texts.label(lang, f"profile_reason_{r}"), DeleteStep(step="reason", reason=r))]
        for r in privacy.EXIT_REASONS
    ]
    rows.append(
        [_button(texts.label(lang, "profile_reason_skip"), DeleteStep(step="reason", reason=""))]
    )
    return InlineKeyboardMarkup(inline_keyboard=rows)


def _back_keyboard(texts: Texts, lang: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [_button(texts.label(lang, "profile_back"), ProfileAction(action="show"))]
        ]
    )


def _profile_text(texts: Texts, lang: str, shop: Shop, member: Member) -> str:
    return texts.render(lang, "profile/view", member=member, this_year=shop.today().year)


async def _edit(
    query: CallbackQuery, bot: Bot, text: str, markup: InlineKeyboardMarkup | None = None
) -> None:
    """Edit the pressed message in place; pressing the same button twice changes nothing."""
    if query.message is None:
        return
    try:
        await bot.edit_message_text(
            text=text, chat_id=query.message.chat.id, message_id=query.message.message_id,
            reply_markup=markup,
        )
    except TelegramBadRequest as exc:
        if "not modified" not in exc.message:
            raise


async def show_profile(
    message: Message, shop: Shop, texts: Texts, lang: str, member: Member
) -> None:
    await message.answer(
        _profile_text(texts, lang, shop, member),
        reply_markup=_profile_keyboard(texts, lang, member),
    )


async def profile_again(
    query: CallbackQuery, bot: Bot, shop: Shop, texts: Texts, lang: str, member: Member
) -> None:
    await query.answer()
    await _edit(
        query, bot, _profile_text(texts, lang, shop, member),
        _profile_keyboard(texts, lang, member),
    )


async def marketing(
    query: CallbackQuery, callback_data: ProfileAction, bot: Bot, session: AsyncSession,
    shop: Shop, texts: Texts, lang: str, member: Member,
) -> None:
    await profiles.set_marketing(session, member, callback_data.action == "marketing_on")
    await query.answer()
    await _edit(
        query, bot, _profile_text(texts, lang, shop, member),
        _profile_keyboard(texts, lang, member),
    )


async def language(query: CallbackQuery, texts: Texts, lang: str) -> None:
    await query.answer()
    if query.message is not None:
        await query.message.answer(
            texts.render(lang, "language_choose"), reply_markup=language_picker(texts, lang)
        )


async def birthday_help(query: CallbackQuery, texts: Texts, lang: str, member: Member) -> None:
    await query.answer()
    if query.message is not None:
        await query.message.answer(
            texts.render(lang, "profile/birthday_how", member=member)
        )


async def birthday(
    message: Message, command: CommandObject, session: AsyncSession, shop: Shop, texts: Texts,
    lang: str, member: Member,
) -> None:
    if not command.args:
        await message.answer(texts.render(lang, "profile/birthday_how", member=member))
        return
    month, day, year = profiles.parse_birthday(command.args)
    saved = await profiles.set_birthday(session, shop, member, month, day, year)
    await message.answer(
        texts.render(lang, "profile/birthday_saved", b=saved, this_year=shop.today().year)
    )


async def staff_set_birthday(
    message: Message, command: CommandObject, session: AsyncSession, shop: Shop, texts: Texts,
    lang: str,
) -> None:
    args = (command.args or "").rsplit(maxsplit=1)
    if len(args) != 2:
        await message.answer(texts.render(lang, "profile/setbirthday_usage"))
        return
    month, day, year = profiles.parse_birthday(args[1])
    target = await members.find_member(session, shop, args[0])
    saved = await profiles.set_birthday(session, shop, target, month, day, year, by_staff=True)
    await message.answer(
        texts.render(lang, "profile/setbirthday_done", code=target.code, b=saved)
    )


async def not_staff(message: Message, texts: Texts, lang: str) -> None:
    await message.answer(texts.render(lang, "staff/only"))


class _ExportWords:
    """The export's descriptions in the member's language, from the same templates and
    coupon wording as the chat."""

    def __init__(self, texts: Texts, shop: Shop, lang: str) -> None:
        self.texts, self.shop, self.lang = texts, shop, lang

    def ledger_line(self, line: LedgerLine) -> str:
        return self.texts.render(self.lang, "points/line", line=line)

    def tier_change(self, reason: str, before: str | None, after: str) -> str:
        return self.texts.render(
            self.lang, "profile/mydata_tier", reason=reason, before=before, after=after,
            program=self.shop.program,
        )

    def coupon(self, kind: str, value: int, min_spend: int, source: str) -> str:
        key = source.removeprefix("reward:")
        reward = next((r for r in self.shop.program.rewards if r.key == key), None)
        if source.startswith("reward:") and reward is not None and kind == "free_item":
            return reward.name.get(self.lang)  # as /coupons names it
        return self.texts.coupon(self.lang, kind=kind, value=value, min_spend=min_spend)


async def my_data(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, lang: str, member: Member
) -> None:
    document = await privacy.export_member_data(
        session, shop, member, words=_ExportWords(texts, shop, lang)
    )
    content = json.dumps(document, ensure_ascii=False, indent=2).encode()
    await message.answer_document(
        BufferedInputFile(content, filename=f"member-data-{member.code}.json"),
        caption=texts.render(lang, "profile/mydata"),
    )


async def delete(message: Message, texts: Texts, lang: str) -> None:
    await message.answer(
        texts.render(lang, "profile/delete_confirm"), reply_markup=_confirm_keyboard(texts, lang)
    )


async def delete_from_profile(query: CallbackQuery, bot: Bot, texts: Texts, lang: str) -> None:
    await query.answer()
    await _edit(
        query, bot, texts.render(lang, "profile/delete_confirm"), _confirm_keyboard(texts, lang)
    )


async def delete_confirmed(query: CallbackQuery, bot: Bot, texts: Texts, lang: str) -> None:
    await query.answer()
    await _edit(
        query, bot, texts.render(lang, "profile/delete_reason"), _reason_keyboard(texts, lang)
    )


async def delete_cancelled(query: CallbackQuery, bot: Bot, texts: Texts, lang: str) -> None:
    await query.answer()
    await _edit(
        query, bot, texts.render(lang, "profile/delete_cancelled"), _back_keyboard(texts, lang)
    )


def _from_earlier_membership(query: CallbackQuery, member: Member) -> bool:
    """A button on a message the bot last sent or edited before this member existed was left
    by a deleted membership of the same person, who was registered afresh by this very press
    (or by a second tap racing the first): it must not erase the new membership."""
    message = query.message
    if not isinstance(message, Message):  # gone or inaccessible: no date to trust
        return True
    shown = (
        datetime.fromtimestamp(message.edit_date, UTC) if message.edit_date else message.date
    )
    return shown < member.created_at - CLOCK_SLACK


async def leave(
    query: CallbackQuery, callback_data: DeleteStep, bot: Bot, session: AsyncSession, shop: Shop,
    texts: Texts, lang: str, member: Member,
) -> None:
    """Erase the member who pressed: never anyone named by the button."""
    if _from_earlier_membership(query, member):
        await query.answer()
        await _edit(query, bot, texts.render(lang, "profile/delete_stale", code=member.code))
        return
    erased = await privacy.erase_member(session, shop, member, reason=callback_data.reason or None)
    await query.answer()
    if not erased or query.message is None:
        return  # a second tap while the first was erasing: the first says goodbye
    await _edit(query, bot, texts.render(lang, "profile/farewell"))
    await bot.send_message(
        query.message.chat.id, texts.render(lang, "profile/farewell_menu"),
        reply_markup=ReplyKeyboardRemove(),
    )


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.filter(_member_known)
    router.callback_query.filter(_member_known)
    router.message.register(show_profile, Command("profile"))
    router.message.register(show_profile, MenuButton("menu_profile"))
    router.message.register(birthday, Command("birthday"))
    router.message.register(staff_set_birthday, Command("setbirthday"), IsStaff())
    router.message.register(not_staff, Command("setbirthday"))
    router.message.register(my_data, Command("mydata"))
    router.message.register(delete, Command("delete"))
    router.callback_query.register(profile_again, ProfileAction.filter(F.action == "show"))
    router.callback_query.register(
        marketing, ProfileAction.filter(F.action.in_({"marketing_on", "marketing_off"}))
    )
    router.callback_query.register(language, ProfileAction.filter(F.action == "language"))
    router.callback_query.register(birthday_help, ProfileAction.filter(F.action == "birthday"))
    router.callback_query.register(delete_from_profile, ProfileAction.filter(F.action == "delete"))
    router.callback_query.register(delete_confirmed, DeleteStep.filter(F.step == "confirm"))
    router.callback_query.register(delete_cancelled, DeleteStep.filter(F.step == "cancel"))
    router.callback_query.register(
        leave,
        DeleteStep.filter((F.step == "reason") & F.reason.in_({*privacy.EXIT_REASONS, ""})),
    )
    return router
