"""Profile → Birthday with buttons: month, then day, then a confirmation, all in the profile
message edited in place; set once; the 30-day note only when it applies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.clock import FixedClock
from domain.models import Member
from handlers.callbacks import BirthdayPick
from tests.conftest import Conversation
from tests.fake_telegram import Call, message_update

USER = 4242
OTHER = 5151

EN = {
    "profile": "/profile", "add": "🎂 Add my birthday", "save": "✅ Yes, save my birthday",
    "months": "When is your birthday?", "days": "Choose the day",
    "wait_note": "within 30 days before the date waits a year",
    "already": "Your birthday is already saved as <b>{}</b>",
}
ZH = {
    "profile": "👤 个人资料", "add": "🎂 填写生日", "save": "✅ 确认保存生日",
    "months": "请先选择月份", "days": "请选择日期",
    "wait_note": "生日前 30 天内填写的生日，礼物需等到下一年",
    "already": "您的生日已保存为 <b>{}</b>",
}


async def _member(session: AsyncSession, telegram_id: int = USER) -> Member:
    await session.rollback()
    member = await session.scalar(
        select(Member).where(Member.telegram_id == telegram_id)
        .execution_options(populate_existing=True)
    )
    assert member is not None
    return member


def _buttons(call: Call) -> dict[str, str]:
    rows = call.params["reply_markup"]["inline_keyboard"]
    return {b["text"]: b["callback_data"] for row in rows for b in row}


class Picker:
    """The member taps through the profile message; every step must be an edit of it."""

    def __init__(self, chat: Conversation, language_code: str, words: dict[str, str]) -> None:
        self.chat, self.language_code, self.words = chat, language_code, words

    async def open(self) -> Call:
        await self.chat.send(
            message_update(USER, self.words["profile"], language_code=self.language_code)
        )
        self.profile = self.chat.fake.calls_of("sendMessage")[-1]
        self.sent = len(self.chat.fake.calls_of("sendMessage"))
        return await self.tap(self.profile, self.words["add"])

    async def tap(self, screen: Call, button: str) -> Call:
        await self.chat.send(
            self.chat.fake.press(
                USER, _buttons(screen)[button], self.profile.message_id,
                language_code=self.language_code,
            )
        )
        edit = self.chat.fake.calls_of("editMessageText")[-1]
        assert not edit.failed, edit.description
        assert edit.params["message_id"] == str(self.profile.message_id)
        assert len(self.chat.fake.calls_of("sendMessage")) == self.sent  # edited, never sent
        return edit


@pytest.mark.parametrize(
    ("language_code", "words", "month", "shown"),
    [("en", EN, "July", "1 July"), ("zh-hans", ZH, "7月", "7月1日")],
)
async def test_month_day_confirm_saves_once_in_place(
    chat: Conversation, session: AsyncSession, clock: FixedClock,
    language_code: str, words: dict[str, str], month: str, shown: str,
) -> None:
    await chat.send(message_update(USER, "/start", language_code=language_code))
    picker = Picker(chat, language_code, words)
    months = await picker.open()
    assert words["months"] in months.params["text"]
    assert len([b for b in _buttons(months) if b != EN["profile"]]) == 13  # 12 months + back

    days = await picker.tap(months, month)
    assert words["days"] in days.params["text"]
    assert [b for b in _buttons(days) if b.isdigit()] == [str(d) for d in range(1, 32)]

    confirm = await picker.tap(days, "1")
    assert shown in confirm.params["text"]
    assert words["wait_note"] not in confirm.params["text"]  # 1 July is months away
    assert (await _member(session)).birthday_month is None  # nothing saved before confirming

    saved = await picker.tap(confirm, words["save"])
    assert shown in saved.params["text"]
    member = await _member(session)
    assert (member.birthday_month, member.birthday_day, member.birthday_year) == (7, 1, None)
    assert member.birthday_gift_from == 2026 and member.birthday_set_at == clock.now()

    # The confirmation pressed again (a stale message, a double tap) is refused politely.
    clock.advance(hours=1)
    await chat.send(chat.fake.press(USER, _buttons(confirm)[words["save"]],
                                    picker.profile.message_id, language_code=language_code))
    refused = chat.fake.calls_of("editMessageText")[-1]
    assert not refused.failed and words["already"].format(shown) in refused.params["text"]
    assert not [c for c in chat.fake.calls_of("answerCallbackQuery") if c.params.get("text")]
    again = await _member(session)
    assert (again.birthday_month, again.birthday_day) == (7, 1)
    assert again.birthday_set_at == member.birthday_set_at
    # And the other steps too: the month buttons no longer lead anywhere.
    await chat.send(chat.fake.press(USER, BirthdayPick(step="day", month=2).pack(),
                                    picker.profile.message_id, language_code=language_code))
    assert words["already"].format(shown) in chat.fake.calls_of("editMessageText")[-1].params[
        "text"
    ]
    assert (await _member(session)).birthday_month == 7


@pytest.mark.parametrize(("language_code", "words"), [("en", EN), ("zh-hans", ZH)])
async def test_the_30_day_note_appears_only_for_a_date_it_applies_to(
    chat: Conversation, session: AsyncSession, language_code: str, words: dict[str, str]
) -> None:
    # Today is 10 March 2026: 8 April is 29 days ahead (waits), 10 April is 31 (does not).
    await chat.send(message_update(USER, "/start", language_code=language_code))
    picker = Picker(chat, language_code, words)
    months = await picker.open()
    april = "April" if language_code == "en" else "4月"
    days = await picker.tap(months, april)
    assert [b for b in _buttons(days) if b.isdigit()] == [str(d) for d in range(1, 31)]

    near = await picker.tap(days, "8")
    assert words["wait_note"] in near.params["text"] and "2027" in near.params["text"]
    far = await picker.tap(days, "10")
    assert words["wait_note"] not in far.params["text"] and "2027" not in far.params["text"]

    saved = await picker.tap(near, words["save"])
    assert words["wait_note"] in saved.params["text"]
    assert (await _member(session)).birthday_gift_from == 2027


async def test_february_offers_the_29th_and_a_crafted_date_is_refused(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "/start"))
    picker = Picker(chat, "en", EN)
    months = await picker.open()
    february = await picker.tap(months, "February")
    assert [b for b in _buttons(february) if b.isdigit()][-1] == "29"
    confirm = await picker.tap(february, "29")
    assert "29 February" in confirm.params["text"]

    for crafted in (BirthdayPick(step="save", month=2, day=30),
                    BirthdayPick(step="day", month=13)):
        await chat.send(chat.fake.press(USER, crafted.pack(), picker.profile.message_id))
        alert = chat.fake.calls_of("answerCallbackQuery")[-1]
        assert str(alert.params.get("show_alert")).lower() == "true"
        assert "something went wrong" not in alert.params["text"]
    assert (await _member(session)).birthday_month is None

    await picker.tap(confirm, EN["save"])
    assert ((await _member(session)).birthday_month, (await _member(session)).birthday_day) == (
        2, 29,
    )


async def test_a_birthday_not_waiting_does_not_claim_the_30_day_rule(
    chat: Conversation, session: AsyncSession, clock: FixedClock
) -> None:
    """On 20 December a 1 March birthday is 71 days away: its first gift is next year's, but
    not because of the 30-day wait, so the note does not say so."""
    clock.set(datetime(2026, 12, 20, 2, 0, tzinfo=UTC))
    await chat.send(message_update(USER, "/birthday 03-01"))
    reply = chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert "Birthday gifts start with your birthday in 2027." in reply
    assert EN["wait_note"] not in reply
    await chat.send(message_update(USER, "/profile"))
    profile = chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert "Birthday: 1 March" in profile and EN["wait_note"] not in profile

    # A birthday that did wait keeps the reason on the profile too.
    await chat.send(message_update(OTHER, "/birthday 01-05"))
    await chat.send(message_update(OTHER, "/profile"))
    assert EN["wait_note"] in chat.fake.calls_of("sendMessage")[-1].params["text"]


async def test_typed_birthday_command_still_works_and_bare_command_shows_the_months(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "/birthday"))
    months = chat.fake.calls_of("sendMessage")[-1]
    assert EN["months"] in months.params["text"] and "March" in _buttons(months)
    await chat.send(message_update(USER, "/birthday 1990-07-01"))
    assert (await _member(session)).birthday_year == 1990
    await chat.send(message_update(USER, "/birthday"))
    assert "Your birthday is saved as <b>1 July 1990</b>" in chat.fake.calls_of("sendMessage")[
        -1
    ].params["text"]
