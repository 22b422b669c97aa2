"""Profile: birthday set once (staff can correct) with the 30-day gift rule, marketing opt-in,
the profile message and its buttons."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import members
from domain.clock import FixedClock
from domain.models import Member
from domain.profile import (
    BirthdayAlreadySet,
    InvalidBirthday,
    birthday_in,
    gift_from_year,
    parse_birthday,
    set_birthday,
)
from domain.shop import Shop
from handlers.callbacks import ProfileAction
from tests.conftest import STAFF_ID, Conversation
from tests.fake_telegram import callback_update, message_update

USER = 4242
OTHER = 5151


async def _member(session: AsyncSession, telegram_id: int = USER) -> Member:
    await session.rollback()  # a fresh snapshot: the bot wrote in its own sessions
    member = await session.scalar(
        select(Member)
        .where(Member.telegram_id == telegram_id)
        .execution_options(populate_existing=True)
    )
    assert member is not None
    return member


def _last_text(chat: Conversation, method: str = "sendMessage") -> str:
    return str(chat.fake.calls_of(method)[-1].params["text"])


def _buttons(params: dict) -> dict[str, str]:
    """Inline buttons as text → callback data."""
    rows = params["reply_markup"]["inline_keyboard"]
    return {b["text"]: b["callback_data"] for row in rows for b in row}


async def _register(
    session: AsyncSession, shop: Shop, telegram_id: int = USER, name: str = "Lin"
) -> Member:
    profile = members.TelegramProfile(telegram_id, name, None, None, "en")
    return (await members.register(session, shop, profile)).member


# ---------------------------------------------------------------- the 30-day rule


@pytest.mark.parametrize(
    ("today", "birthday", "gift_from"),
    [
        (date(2026, 3, 10), (4, 8), 2027),  # 29 days ahead: waits
        (date(2026, 3, 10), (4, 9), 2027),  # exactly 30 days ahead: still waits (inclusive)
        (date(2026, 3, 10), (4, 10), 2026),  # 31 days ahead: this year's gift
        (date(2026, 3, 10), (3, 10), 2027),  # today
        (date(2026, 3, 10), (3, 9), 2027),  # already passed: next year's is the first
        (date(2026, 3, 10), (12, 31), 2026),
        (date(2026, 12, 20), (1, 5), 2028),  # next birthday in January 2027 is too close
        (date(2026, 12, 20), (1, 25), 2027),  # 36 days ahead, in the next year
        (date(2026, 2, 10), (2, 29), 2027),  # kept on 28 Feb 2026: 18 days ahead
        (date(2027, 3, 1), (2, 29), 2028),  # next one is 29 Feb 2028
    ],
)
def test_gift_year_on_both_sides_of_30_days(
    today: date, birthday: tuple[int, int], gift_from: int
) -> None:
    assert gift_from_year(today, *birthday) == gift_from


@given(
    today=st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 12, 31)),
    born=st.dates(min_value=date(2000, 1, 1), max_value=date(2000, 12, 31)),  # a leap year
)
def test_first_gift_is_the_first_birthday_more_than_30_days_away(today: date, born: date) -> None:
    year = gift_from_year(today, born.month, born.day)
    assert (birthday_in(year, born.month, born.day) - today).days > 30
    earlier = birthday_in(year - 1, born.month, born.day)
    assert earlier < today or (earlier - today).days <= 30


async def test_rule_counts_local_days(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    # 17:00 UTC on 9 March is 01:00 on 10 March in Shanghai: 9 April is 30 local days away.
    clock.set(datetime(2026, 3, 9, 17, 0, tzinfo=UTC))
    member = await _register(session, shop)
    saved = await set_birthday(session, shop, member, 4, 9)
    assert saved.gift_from == 2027
    await session.rollback()
    stored = await session.get(Member, member.id, populate_existing=True)
    assert stored is not None
    assert (stored.birthday_month, stored.birthday_day, stored.birthday_gift_from) == (4, 9, 2027)
    assert stored.birthday_set_at == clock.now()


async def test_birthday_within_30_days_waits_a_year_in_chat(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "/birthday 04-08"))
    reply = _last_text(chat)
    assert "8 April" in reply and "in 2027" in reply and "waits a year" in reply
    waiting = await _member(session)
    assert (waiting.birthday_month, waiting.birthday_day, waiting.birthday_year) == (4, 8, None)
    assert waiting.birthday_gift_from == 2027

    await chat.send(message_update(OTHER, "/birthday 1990-04-10"))
    reply = _last_text(chat)
    assert "10 April 1990" in reply and "start with this year's birthday" in reply
    assert "2027" not in reply
    on_time = await _member(session, OTHER)
    assert (on_time.birthday_year, on_time.birthday_gift_from) == (1990, 2026)


# ---------------------------------------------------------------- set once, staff corrects


async def test_birthday_is_set_once_and_second_change_changes_nothing(
    chat: Conversation, session: AsyncSession, clock: FixedClock
) -> None:
    await chat.send(message_update(USER, "/birthday 05-20"))
    first = await _member(session)
    set_at = first.birthday_set_at
    clock.advance(days=3)
    await chat.send(message_update(USER, "/birthday 1988-06-01"))
    assert "already saved as <b>20 May</b>" in _last_text(chat)
    assert "staff" in _last_text(chat)
    again = await _member(session)
    assert (again.birthday_month, again.birthday_day, again.birthday_year) == (5, 20, None)
    assert again.birthday_gift_from == 2026 and again.birthday_set_at == set_at

    await chat.send(message_update(USER, "/birthday"))
    assert "saved as <b>20 May</b>" in _last_text(chat)


async def test_two_racing_first_birthdays_store_exactly_one(
    session_factory: async_sessionmaker[AsyncSession], shop: Shop
) -> None:
    async with session_factory() as setup:
        member_id = (await _register(setup, shop)).id

    async def attempt(month: int, day: int) -> str:
        async with session_factory() as own:
            member = await own.get(Member, member_id)
            assert member is not None
            try:
                await set_birthday(own, shop, member, month, day)
            except BirthdayAlreadySet:
                return "refused"
            return f"{month}-{day}"

    outcomes = await asyncio.gather(attempt(7, 1), attempt(8, 2))
    assert sorted(outcomes)[-1] == "refused" and outcomes.count("refused") == 1
    async with session_factory() as check:
        stored = await check.get(Member, member_id)
        assert stored is not None
        winner = next(o for o in outcomes if o != "refused")
        assert f"{stored.birthday_month}-{stored.birthday_day}" == winner


async def test_staff_corrects_a_birthday_by_code_or_phone(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "/birthday 05-20"))
    code = (await _member(session)).code
    await chat.send(message_update(STAFF_ID, f"/setbirthday {code[:4]}-{code[4:]} 1990-03-21"))
    reply = chat.fake.calls_of("sendMessage")[-1]
    assert reply.params["chat_id"] == str(STAFF_ID)
    assert "21 March 1990" in reply.params["text"] and "2027" in reply.params["text"]
    corrected = await _member(session)
    assert (corrected.birthday_month, corrected.birthday_day, corrected.birthday_year) == (
        3, 21, 1990,
    )
    assert corrected.birthday_gift_from == 2027  # 11 days ahead: the same rule applies

    contact = {"phone_number": "8613812345678", "first_name": "Lin", "user_id": USER}
    await chat.send(message_update(USER, "", contact=contact))
    await chat.send(message_update(STAFF_ID, "/setbirthday +86 138 1234 5678 09-01"))
    assert "1 September" in _last_text(chat)
    again = await _member(session)
    assert (again.birthday_month, again.birthday_day, again.birthday_year) == (9, 1, None)
    assert again.birthday_gift_from == 2026

    await chat.send(message_update(STAFF_ID, "/setbirthday NOTACODE 09-01"))
    assert "No member has that code" in _last_text(chat)
    await chat.send(message_update(STAFF_ID, "/setbirthday"))
    assert "Usage" in _last_text(chat)


async def test_non_staff_cannot_set_someone_elses_birthday(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "/birthday 05-20"))
    code = (await _member(session)).code
    await chat.send(message_update(OTHER, f"/setbirthday {code} 01-01"))
    reply = chat.fake.calls_of("sendMessage")[-1]
    assert reply.params["chat_id"] == str(OTHER)
    assert "for shop staff only" in reply.params["text"]
    unchanged = await _member(session)
    assert (unchanged.birthday_month, unchanged.birthday_day) == (5, 20)


# ---------------------------------------------------------------- invalid dates


async def test_invalid_birthday_is_explained_and_changes_nothing(
    chat: Conversation, session: AsyncSession
) -> None:
    # Two members share the attempts: the flood throttle allows 8 updates in 4 s per user.
    texts = ("02-30", "13-01", "00-10", "hello", "2027-01-01", "1899-05-05", "1990-02-29",
             "03/21/1990")
    for index, text in enumerate(texts):
        user = (USER, OTHER)[index % 2]
        await chat.send(message_update(user, f"/birthday {text}"))
        reply = _last_text(chat)
        assert "not a date I can use" in reply and "1990-03-21" in reply, text
        assert (await _member(session, user)).birthday_month is None, text
    await chat.send(message_update(USER, "/birthday 03-21"))  # still free to set it once
    assert (await _member(session)).birthday_day == 21


@pytest.mark.parametrize(
    ("text", "stored"), [("02-29", (2, 29, None)), ("2000-02-29", (2, 29, 2000)),
                         ("3/7", (3, 7, None)), ("1990.12.31", (12, 31, 1990))],
)
async def test_leap_day_and_other_spellings_are_accepted(
    session: AsyncSession, shop: Shop, text: str, stored: tuple[int, int, int | None]
) -> None:
    member = await _register(session, shop)
    saved = await set_birthday(session, shop, member, *parse_birthday(text))
    assert (saved.month, saved.day, saved.year) == stored


async def test_domain_refuses_unreal_dates(session: AsyncSession, shop: Shop) -> None:
    member = await _register(session, shop)
    for month, day, year in ((2, 30, None), (4, 31, None), (2, 29, 2023), (1, 1, 2030)):
        with pytest.raises(InvalidBirthday):
            await set_birthday(session, shop, member, month, day, year)
    await session.rollback()
    stored = await session.get(Member, member.id, populate_existing=True)
    assert stored is not None and stored.birthday_month is None


# ---------------------------------------------------------------- the profile message


async def test_profile_shows_what_is_kept_and_how_to_add_a_birthday(chat: Conversation) -> None:
    await chat.send(message_update(USER, "/profile", first_name="Lin", last_name="Wei"))
    sent = chat.fake.calls_of("sendMessage")[-1]
    text = sent.params["text"]
    assert "<b>Lin Wei</b>" in text
    assert "Phone: not shared" in text
    assert "Birthday: not set yet: tap “🎂 Add my birthday” below" in text
    assert "Language: English" in text
    assert "Offers and news: <b>on</b>" in text
    buttons = _buttons(sent.params)
    assert buttons["🔕 Stop offers and news"] == ProfileAction(action="marketing_off").pack()
    assert set(buttons) == {
        "🔕 Stop offers and news", "🎂 Add my birthday", "🌐 Language",
        "🗑 Leave and delete my data",
    }

    contact = {"phone_number": "8613812345678", "first_name": "Lin", "user_id": USER}
    await chat.send(message_update(USER, "", contact=contact))
    await chat.send(message_update(USER, "/birthday 04-08"))
    await chat.send(message_update(USER, "👤 Profile"))
    sent = chat.fake.calls_of("sendMessage")[-1]
    assert "Phone: <code>+8613812345678</code>" in sent.params["text"]
    assert "Birthday: 8 April" in sent.params["text"]
    assert "Birthday gifts start with your birthday in 2027" in sent.params["text"]
    assert "🎂 Add my birthday" not in _buttons(sent.params)


async def test_profile_in_chinese(chat: Conversation) -> None:
    await chat.send(message_update(USER, "/start", first_name="小明", language_code="zh-hans"))
    await chat.send(message_update(USER, "👤 个人资料", language_code="zh-hans"))
    sent = chat.fake.calls_of("sendMessage")[-1]
    text = sent.params["text"]
    assert "手机号：未绑定" in text and "生日：尚未填写" in text and "语言：中文" in text
    assert "优惠与活动消息：<b>已开启</b>" in text
    assert "🔕 不再接收优惠与活动消息" in _buttons(sent.params)
    await chat.send(message_update(USER, "/birthday 1995-04-08", language_code="zh-hans"))
    reply = _last_text(chat)
    assert "1995年4月8日" in reply and "2027 年的生日" in reply
    await chat.send(message_update(USER, "/birthday 05-01", language_code="zh-hans"))
    assert "生日只能填写一次" in _last_text(chat) and "1995年4月8日" in _last_text(chat)
    await chat.send(message_update(USER, "/birthday 1995-02-30", language_code="zh-hans"))
    assert "这不是一个有效的生日日期" in _last_text(chat)


async def test_marketing_toggle_edits_in_place_and_persists(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "/profile"))
    profile_message = chat.fake.calls_of("sendMessage")[-1]
    sent_before = len(chat.fake.calls_of("sendMessage"))
    off = _buttons(profile_message.params)["🔕 Stop offers and news"]
    shown = profile_message.message_id
    await chat.send(chat.fake.press(USER, off, shown))
    edit = chat.fake.calls_of("editMessageText")[-1]
    assert not edit.failed
    assert edit.params["message_id"] == str(shown) and edit.params["chat_id"] == str(USER)
    assert "Offers and news: <b>off</b>" in edit.params["text"]
    assert "receipts" in edit.params["text"]  # service messages still arrive
    on = _buttons(edit.params)["🔔 Get offers and news"]
    assert len(chat.fake.calls_of("sendMessage")) == sent_before  # nothing new was sent
    assert chat.fake.calls_of("answerCallbackQuery")
    assert (await _member(session)).marketing_opt_in is False

    await chat.send(callback_update(USER, off, message_id=shown))  # an old button: still off
    assert (await _member(session)).marketing_opt_in is False
    await chat.send(chat.fake.press(USER, on, shown))
    assert "Offers and news: <b>on</b>" in _last_text(chat, "editMessageText")
    assert (await _member(session)).marketing_opt_in is True


async def test_language_and_birthday_buttons_edit_the_profile_in_place(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "/profile"))
    profile = chat.fake.calls_of("sendMessage")[-1]
    sent_before = len(chat.fake.calls_of("sendMessage"))
    buttons = _buttons(profile.params)

    await chat.send(chat.fake.press(USER, buttons["🌐 Language"], profile.message_id))
    picker = chat.fake.calls_of("editMessageText")[-1]
    assert not picker.failed and picker.params["message_id"] == str(profile.message_id)
    assert "Choose your language" in picker.params["text"]
    choices = _buttons(picker.params)
    assert set(choices) == {"✓ English", "中文", "👤 Back to my profile"}
    assert len(chat.fake.calls_of("sendMessage")) == sent_before  # nothing new was sent

    await chat.send(chat.fake.press(USER, choices["中文"], profile.message_id))
    again = chat.fake.calls_of("editMessageText")[-1]
    assert not again.failed and "语言：中文" in again.params["text"]  # the profile, in Chinese
    menu = chat.fake.calls_of("sendMessage")[-1]  # the reply keyboard changes with a message
    assert "中文" in menu.params["text"] and "keyboard" in menu.params["reply_markup"]
    assert (await _member(session)).language == "zh"

    await chat.send(chat.fake.press(USER, buttons["🎂 Add my birthday"], profile.message_id))
    months = chat.fake.calls_of("editMessageText")[-1]
    assert not months.failed and "请先选择月份" in months.params["text"]
    assert len(chat.fake.calls_of("sendMessage")) == sent_before + 1  # only the menu


async def test_marketing_toggle_in_the_domain_changes_only_that_member(
    session: AsyncSession, shop: Shop
) -> None:
    from domain.profile import set_marketing

    first = await _register(session, shop, USER)
    second = await _register(session, shop, OTHER)
    first_id, second_id = first.id, second.id
    await set_marketing(session, first, False)
    assert first.marketing_opt_in is False
    await session.rollback()
    rows = {
        row.id: row.marketing_opt_in
        for row in await session.execute(select(Member.id, Member.marketing_opt_in))
    }
    assert rows == {first_id: False, second_id: True}
