"""Drive a real aiogram Bot against the fake Telegram server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError, TelegramRetryAfter
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Update,
)

from tests.fake_telegram import (
    BOT_ID,
    MESSAGE_NOT_MODIFIED,
    FakeTelegram,
    callback_update,
    message_update,
    my_chat_member_update,
)

TOKEN = "123456:TEST-token"


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest_asyncio.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(fake.base_url))
    bot = Bot(token=TOKEN, session=session)
    try:
        yield bot
    finally:
        await bot.session.close()


@pytest.mark.asyncio
async def test_get_me(fake: FakeTelegram, bot: Bot) -> None:
    me = await bot.get_me()

    assert me.id == BOT_ID
    assert me.username == "companion_test_bot"
    assert me.first_name == "Companion"
    assert me.is_bot is True
    call = await fake.wait_for("getMe")
    assert call.token == TOKEN


@pytest.mark.asyncio
async def test_send_message_with_inline_keyboard(fake: FakeTelegram, bot: Bot) -> None:
    markup = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="Join", callback_data="join:1")]]
    )

    first = await bot.send_message(42, "Hello!", reply_markup=markup)
    second = await bot.send_message(42, "[not json, just text]")

    assert first.text == "Hello!"
    assert first.chat.id == 42
    assert first.from_user is not None and first.from_user.id == BOT_ID
    assert first.reply_markup is not None
    assert first.reply_markup.model_dump() == markup.model_dump()
    assert second.message_id == first.message_id + 1

    call = await fake.wait_for("sendMessage", lambda c: c.params["text"] == "Hello!")
    assert call.params["chat_id"] == "42"
    assert call.params["reply_markup"] == {
        "inline_keyboard": [[{"text": "Join", "callback_data": "join:1"}]]
    }
    assert fake.calls_of("sendMessage")[1].params["text"] == "[not json, just text]"


@pytest.mark.asyncio
async def test_send_photo_upload_then_resend_by_file_id(fake: FakeTelegram, bot: Bot) -> None:
    upload = BufferedInputFile(b"\x89PNG fake image", filename="card.png")

    uploaded = await bot.send_photo(7, upload, caption="Your card")
    assert uploaded.photo is not None and len(uploaded.photo) == 2
    assert uploaded.caption == "Your card"
    new_file_id = uploaded.photo[-1].file_id

    resent = await bot.send_photo(8, new_file_id)
    assert resent.photo is not None
    assert resent.photo[-1].file_id == new_file_id

    second_upload = await bot.send_photo(7, BufferedInputFile(b"other", filename="b.png"))
    assert second_upload.photo is not None
    assert second_upload.photo[-1].file_id != new_file_id

    upload_call, resend_call, _ = fake.calls_of("sendPhoto")
    assert upload_call.params["photo"]["upload"] == "card.png"
    assert upload_call.params["photo"]["bytes"] == b"\x89PNG fake image"
    assert upload_call.params["photo"]["size"] == len(b"\x89PNG fake image")
    assert resend_call.params["photo"] == new_file_id


@pytest.mark.asyncio
async def test_fail_next_retry_after(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail_next("sendMessage", 429, "Too Many Requests: retry after 3", retry_after=3)

    with pytest.raises(TelegramRetryAfter) as excinfo:
        await bot.send_message(1, "x")
    assert excinfo.value.retry_after == 3

    await bot.send_message(1, "y")  # only the next call fails
    failed, ok = fake.calls_of("sendMessage")
    assert failed.failed and not ok.failed


@pytest.mark.asyncio
async def test_fail_next_forbidden_for_one_chat(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail_next("sendMessage", 403, "Forbidden: bot was blocked by the user", chat_id=5)

    await bot.send_message(4, "other chat is unaffected")
    with pytest.raises(TelegramForbiddenError):
        await bot.send_message(5, "blocked")
    await bot.send_message(5, "unblocked again")


@pytest.mark.asyncio
async def test_rate_limit() -> None:
    async with FakeTelegram(rate_limit_per_second=2) as limited:
        session = AiohttpSession(api=TelegramAPIServer.from_base(limited.base_url))
        limited_bot = Bot(token=TOKEN, session=session)
        try:
            await limited_bot.send_message(1, "a")
            await limited_bot.send_message(1, "b")
            with pytest.raises(TelegramRetryAfter) as excinfo:
                await limited_bot.send_message(1, "c")
            assert excinfo.value.retry_after == 1
            assert limited.rate_limited == 1
        finally:
            await limited_bot.session.close()


@pytest.mark.asyncio
async def test_get_updates_delivers_pushed_update_once(fake: FakeTelegram, bot: Bot) -> None:
    fake.push_update(message_update(100, "/start ref_abc", update_id=500))

    updates = await bot.get_updates(offset=0, timeout=1)
    assert [u.update_id for u in updates] == [500]
    message = updates[0].message
    assert message is not None and message.text == "/start ref_abc"
    assert message.entities is not None and message.entities[0].length == len("/start")

    # Without confirming, the update is served again; after confirming, never.
    assert [u.update_id for u in await bot.get_updates(offset=500, timeout=1)] == [500]
    assert await bot.get_updates(offset=501, timeout=1) == []


@pytest.mark.asyncio
async def test_my_commands_round_trip(fake: FakeTelegram, bot: Bot) -> None:
    commands = [BotCommand(command="start", description="Start")]
    assert await bot.set_my_commands(commands, language_code="en")

    returned = await bot.get_my_commands(language_code="en")
    assert [c.model_dump() for c in returned] == [c.model_dump() for c in commands]
    assert await bot.get_my_commands() == []


@pytest.mark.asyncio
async def test_update_builders_validate_as_aiogram_updates() -> None:
    contact = {"phone_number": "+10000000000", "first_name": "Ann", "user_id": 9}
    for raw in (
        message_update(9, "", contact=contact),
        callback_update(9, "menu:open", message_id=3),
        my_chat_member_update(9, "kicked"),
        my_chat_member_update(9, "member"),
    ):
        update = Update.model_validate(raw)
        assert update.event_type in {"message", "callback_query", "my_chat_member"}


@pytest.mark.asyncio
async def test_get_updates_skips_types_not_allowed(fake: FakeTelegram, bot: Bot) -> None:
    fake.push_update(my_chat_member_update(9, "kicked"))
    fake.push_update(callback_update(9, "menu:open"))

    updates = await bot.get_updates(timeout=1, allowed_updates=["callback_query"])

    assert [u.event_type for u in updates] == ["callback_query"]


@pytest.mark.asyncio
async def test_edit_that_changes_nothing_is_refused_as_telegram_does(
    fake: FakeTelegram, bot: Bot
) -> None:
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="Next", callback_data="page:2")]]
    )
    sent = await bot.send_message(42, "Page 1", reply_markup=keyboard)

    with pytest.raises(TelegramBadRequest) as unchanged:
        await bot.edit_message_text("Page 1", chat_id=42, message_id=sent.message_id,
                                    reply_markup=keyboard)
    assert unchanged.value.message == MESSAGE_NOT_MODIFIED
    assert "message is not modified" in MESSAGE_NOT_MODIFIED

    # A new keyboard alone, or new text alone, is a change.
    await bot.edit_message_text("Page 1", chat_id=42, message_id=sent.message_id)
    await bot.edit_message_text("Page 2", chat_id=42, message_id=sent.message_id)
    shown = fake.message(42, sent.message_id)
    assert shown is not None and shown["text"] == "Page 2" and "reply_markup" not in shown
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text("Page 2", chat_id=42, message_id=sent.message_id)
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_reply_markup(chat_id=42, message_id=sent.message_id)

    failed = [c for c in fake.calls if c.failed]
    assert [c.description for c in failed] == [MESSAGE_NOT_MODIFIED] * 3


@pytest.mark.asyncio
async def test_caption_edits_are_remembered_per_chat(fake: FakeTelegram, bot: Bot) -> None:
    photo = await bot.send_photo(7, BufferedInputFile(b"png", filename="a.png"), caption="One")
    await bot.send_message(8, "other chat, other message")

    edited = await bot.edit_message_caption(chat_id=7, message_id=photo.message_id, caption="Two")
    assert not isinstance(edited, bool) and edited.caption == "Two"
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_caption(chat_id=7, message_id=photo.message_id, caption="Two")
    with pytest.raises(TelegramBadRequest, match="there is no text in the message to edit"):
        await bot.edit_message_text("text", chat_id=7, message_id=photo.message_id)
    # The same id in another chat is another (unknown) message.
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_caption(chat_id=8, message_id=photo.message_id, caption="Two")


@pytest.mark.asyncio
async def test_edit_of_an_unknown_message_is_not_found(fake: FakeTelegram, bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest) as missing:
        await bot.edit_message_text("hello", chat_id=42, message_id=999)
    assert missing.value.message == "Bad Request: message to edit not found"


@pytest.mark.asyncio
async def test_press_builds_a_callback_on_the_message_as_shown(
    fake: FakeTelegram, bot: Bot
) -> None:
    keyboard = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="Go", callback_data="go:1")]]
    )
    sent = await bot.send_message(9, "Choose", reply_markup=keyboard)
    assert fake.calls_of("sendMessage")[-1].message_id == sent.message_id

    update = Update.model_validate(fake.press(9, "go:1", sent.message_id))
    assert update.callback_query is not None and update.callback_query.data == "go:1"
    pressed = update.callback_query.message
    assert pressed is not None and pressed.message_id == sent.message_id
    assert pressed.text == "Choose" and pressed.reply_markup == keyboard
    with pytest.raises(AssertionError):
        fake.press(10, "go:1", sent.message_id)  # never sent to chat 10
