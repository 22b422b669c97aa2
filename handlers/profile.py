"""/profile, /birthday, /setbirthday (staff), /mydata and /delete: the member's own data.

Every screen reached from the profile is the profile message edited in place. The birthday is
chosen with buttons (month, then day, then a confirmation); ``/birthday 03-21`` still works for
those who type it. Nothing in the callback data names a member: each press acts on the member
who pressed, and each birthday step refuses once that member's birthday is set.
"""

from __future__ import annotations

import calendar
import json
from datetime import UTC, date, datetime, timedelta

from aiogram import Bot, F, Router
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

from domain import members, privacy
from domain import profile as profiles
from domain.models import Member
from domain.points import LedgerLine
from domain.shop import Shop
from handlers.callbacks import BirthdayPick, DeleteStep, ProfileAction, ProfileLanguage
from handlers.editing import edit_in_place
from handlers.filters import MenuButton
from handlers.keyboards import back_to_profile, language_picker
from handlers.language import switch_language
from handlers.staff import IsStaff, actor_of, not_staff
from handlers.texts import LANGUAGES, Texts

# Telegram's clock and ours may differ a little (and Telegram's dates are whole seconds): only
# a button clearly older than the member counts as one from an earlier, deleted membership.
CLOCK_SLACK = timedelta(seconds=2)
MONTHS_PER_ROW = 3
DAYS_PER_ROW = 7
_LEAP_YEAR = 2000  # the day buttons of February include the 29th


async def _member_known(
    _: Message | CallbackQuery, member: Member | None = None, staff_command: bool = False
) -> bool:
    return member is not None or staff_command  # /setbirthday needs no membership


def _button(
    text: str, data: ProfileAction | DeleteStep | BirthdayPick
) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data.pack())


def _rows(buttons: list[InlineKeyboardButton], width: int) -> list[list[InlineKeyboardButton]]:
    return [buttons[i : i + width] for i in range(0, len(buttons), width)]


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
    return InlineKeyboardMarkup(inline_keyboard=[[back_to_profile(texts, lang)]])


def _gift_waits(today: date, month: int, day: int) -> bool:
    """Whether a birthday set on ``today`` waits a year for its gift (the 30-day rule of
    domain/profile.py): its first gift is not the birthday coming next."""
    upcoming = profiles.next_birthday(today, month, day)
    return profiles.gift_from_year(today, month, day) > upcoming.year


def _profile_text(texts: Texts, lang: str, shop: Shop, member: Member) -> str:
    waited = (
        member.birthday_month is not None
        and member.birthday_day is not None
        and member.birthday_set_at is not None
        and _gift_waits(
            shop.local_date(member.birthday_set_at), member.birthday_month, member.birthday_day
        )
    )
    return texts.render(
        lang, "profile/view", member=member, this_year=shop.today().year, waited=waited
    )


async def _show_profile_in_place(
    query: CallbackQuery, texts: Texts, lang: str, shop: Shop, member: Member
) -> None:
    await edit_in_place(
        query, text=_profile_text(texts, lang, shop, member),
        markup=_profile_keyboard(texts, lang, member),
    )


async def show_profile(
    message: Message, shop: Shop, texts: Texts, lang: str, member: Member
) -> None:
    await message.answer(
        _profile_text(texts, lang, shop, member),
        reply_markup=_profile_keyboard(texts, lang, member),
    )


async def profile_again(
    query: CallbackQuery, shop: Shop, texts: Texts, lang: str, member: Member
) -> None:
    await _show_profile_in_place(query, texts, lang, shop, member)


async def marketing(
    query: CallbackQuery, callback_data: ProfileAction, session: AsyncSession,
    shop: Shop, texts: Texts, lang: str, member: Member,
) -> None:
    await profiles.set_marketing(session, member, callback_data.action == "marketing_on")
    await _show_profile_in_place(query, texts, lang, shop, member)


async def language(query: CallbackQuery, texts: Texts, lang: str) -> None:
    await edit_in_place(
        query, text=texts.render(lang, "language_choose"),
        markup=language_picker(texts, lang, from_profile=True),
    )


async def language_chosen(
    query: CallbackQuery, callback_data: ProfileLanguage, session: AsyncSession, shop: Shop,
    texts: Texts, member: Member, webapp_url: str | None = None,
) -> None:
    """Back to the profile, now in the chosen language."""
    chosen = callback_data.language
    await switch_language(query, session, texts, member, chosen, webapp_url)
    await _show_profile_in_place(query, texts, chosen, shop, member)


# ------------------------------------------------------------------ birthday, with buttons


def _month_keyboard(texts: Texts, lang: str) -> InlineKeyboardMarkup:
    months = [
        _button(texts.label(lang, f"profile_month_{m}"), BirthdayPick(step="day", month=m))
        for m in range(1, 13)
    ]
    return InlineKeyboardMarkup(
        inline_keyboard=[*_rows(months, MONTHS_PER_ROW), [back_to_profile(texts, lang)]]
    )


def _day_keyboard(texts: Texts, lang: str, month: int) -> InlineKeyboardMarkup:
    days = [
        _button(texts.number(lang, d), BirthdayPick(step="confirm", month=month, day=d))
        for d in range(1, calendar.monthrange(_LEAP_YEAR, month)[1] + 1)
    ]
    return InlineKeyboardMarkup(
        inline_keyboard=[
            *_rows(days, DAYS_PER_ROW),
            [
                _button(texts.label(lang, "profile_birthday_months"), BirthdayPick(step="month")),
                back_to_profile(texts, lang),
            ],
        ]
    )


def _save_keyboard(texts: Texts, lang: str, month: int, day: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                _button(
                    texts.label(lang, "profile_birthday_save"),
                    BirthdayPick(step="save", month=month, day=day),
                )
            ],
            [_button(texts.label(lang, "profile_birthday_again"), BirthdayPick(step="month"))],
            [back_to_profile(texts, lang)],
        ]
    )


async def _birthday_is_set(query: CallbackQuery, texts: Texts, lang: str, member: Member) -> bool:
    """A press on a birthday step after the birthday was set (an old message, a second tap)
    changes nothing: the message says so and leads back to the profile."""
    if member.birthday_month is None:
        return False
    await edit_in_place(
        query,
        text=texts.render(
            lang, "errors/birthday_already_set", month=member.birthday_month,
            day=member.birthday_day, year=member.birthday_year,
        ),
        markup=_back_keyboard(texts, lang),
    )
    return True


async def birthday_months(query: CallbackQuery, texts: Texts, lang: str, member: Member) -> None:
    if await _birthday_is_set(query, texts, lang, member):
        return
    await edit_in_place(
        query, text=texts.render(lang, "profile/birthday_month"),
        markup=_month_keyboard(texts, lang),
    )


async def birthday_days(
    query: CallbackQuery, callback_data: BirthdayPick, shop: Shop, texts: Texts, lang: str,
    member: Member,
) -> None:
    if await _birthday_is_set(query, texts, lang, member):
        return
    month = callback_data.month
    profiles.check_birthday(shop.today(), month, 1, None)  # a crafted month is refused
    await edit_in_place(
        query, text=texts.render(lang, "profile/birthday_day", month=month),
        markup=_day_keyboard(texts, lang, month),
    )


async def birthday_confirm(
    query: CallbackQuery, callback_data: BirthdayPick, shop: Shop, texts: Texts, lang: str,
    member: Member,
) -> None:
    if await _birthday_is_set(query, texts, lang, member):
        return
    today = shop.today()
    month, day = callback_data.month, callback_data.day
    profiles.check_birthday(today, month, day, None)
    await edit_in_place(
        query,
        text=texts.render(
            lang, "profile/birthday_confirm", month=month, day=day, this_year=today.year,
            waits=_gift_waits(today, month, day),
            gift_from=profiles.gift_from_year(today, month, day),
        ),
        markup=_save_keyboard(texts, lang, month, day),
    )


async def birthday_save(
    query: CallbackQuery, callback_data: BirthdayPick, session: AsyncSession, shop: Shop,
    texts: Texts, lang: str, member: Member,
) -> None:
    if await _birthday_is_set(query, texts, lang, member):
        return
    today = shop.today()
    saved = await profiles.set_birthday(session, shop, member, callback_data.month,
                                        callback_data.day)
    await edit_in_place(
        query,
        text=texts.render(
            lang, "profile/birthday_saved", b=saved, this_year=today.year,
            waits=_gift_waits(today, saved.month, saved.day),
        ),
        markup=_back_keyboard(texts, lang),
    )


async def birthday(
    message: Message, command: CommandObject, session: AsyncSession, shop: Shop, texts: Texts,
    lang: str, member: Member,
) -> None:
    """``/birthday``: the month buttons; ``/birthday 03-21`` sets it straight away."""
    if not command.args:
        if member.birthday_month is not None:
            await message.answer(texts.render(lang, "profile/birthday_how", member=member))
            return
        await message.answer(
            texts.render(lang, "profile/birthday_month"), reply_markup=_month_keyboard(texts, lang)
        )
        return
    month, day, year = profiles.parse_birthday(command.args)
    today = shop.today()
    saved = await profiles.set_birthday(session, shop, member, month, day, year)
    await message.answer(
        texts.render(
            lang, "profile/birthday_saved", b=saved, this_year=today.year,
            waits=_gift_waits(today, month, day),
        )
    )


async def staff_set_birthday(
    message: Message, command: CommandObject, session: AsyncSession, shop: Shop, texts: Texts,
    lang: str, admin_ids: frozenset[int],
) -> None:
    args = (command.args or "").rsplit(maxsplit=1)
    if len(args) != 2:
        await message.answer(texts.render(lang, "profile/setbirthday_usage"))
        return
    month, day, year = profiles.parse_birthday(args[1])
    target = await members.find_member(session, shop, args[0])
    saved = await profiles.set_birthday(
        session, shop, target, month, day, year, by_staff=True,
        actor=actor_of(message.from_user, admin_ids),
    )
    await message.answer(
        texts.render(lang, "profile/setbirthday_done", code=target.code, b=saved)
    )


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


async def delete_from_profile(query: CallbackQuery, texts: Texts, lang: str) -> None:
    await edit_in_place(
        query, text=texts.render(lang, "profile/delete_confirm"),
        markup=_confirm_keyboard(texts, lang),
    )


async def delete_confirmed(query: CallbackQuery, texts: Texts, lang: str) -> None:
    await edit_in_place(
        query, text=texts.render(lang, "profile/delete_reason"),
        markup=_reason_keyboard(texts, lang),
    )


async def delete_cancelled(query: CallbackQuery, texts: Texts, lang: str) -> None:
    await edit_in_place(
        query, text=texts.render(lang, "profile/delete_cancelled"),
        markup=_back_keyboard(texts, lang),
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
        stale = texts.render(lang, "profile/delete_stale", code=member.code)
        await edit_in_place(query, text=stale)
        return
    erased = await privacy.erase_member(session, shop, member, reason=callback_data.reason or None)
    if not erased:
        await query.answer()
        return  # a second tap while the first was erasing: the first says goodbye
    await edit_in_place(query, text=texts.render(lang, "profile/farewell"))
    await bot.send_message(
        query.from_user.id, texts.render(lang, "profile/farewell_menu"),
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
    router.callback_query.register(
        language_chosen, ProfileLanguage.filter(F.language.in_(LANGUAGES))
    )
    router.callback_query.register(birthday_months, ProfileAction.filter(F.action == "birthday"))
    router.callback_query.register(birthday_months, BirthdayPick.filter(F.step == "month"))
    router.callback_query.register(birthday_days, BirthdayPick.filter(F.step == "day"))
    router.callback_query.register(birthday_confirm, BirthdayPick.filter(F.step == "confirm"))
    router.callback_query.register(birthday_save, BirthdayPick.filter(F.step == "save"))
    router.callback_query.register(delete_from_profile, ProfileAction.filter(F.action == "delete"))
    router.callback_query.register(delete_confirmed, DeleteStep.filter(F.step == "confirm"))
    router.callback_query.register(delete_cancelled, DeleteStep.filter(F.step == "cancel"))
    router.callback_query.register(
        leave,
        DeleteStep.filter((F.step == "reason") & F.reason.in_({*privacy.EXIT_REASONS, ""})),
    )
    return router
