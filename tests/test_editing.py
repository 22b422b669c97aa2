"""One edit-in-place helper: Telegram's "message is not modified" is success, a message that is
gone is replaced by a new one; the fake Bot API answers edits as Telegram does."""

from __future__ import annotations

import logging

import pytest

from handlers.callbacks import CheckinView, PointsPage
from tests.conftest import Conversation
from tests.fake_telegram import MESSAGE_NOT_MODIFIED, callback_update, message_update

USER = 4242


def _alerts(chat: Conversation) -> list[str]:
    return [
        c.params.get("text", "")
        for c in chat.fake.calls_of("answerCallbackQuery")
        if str(c.params.get("show_alert")).lower() == "true"
    ]


def _problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    ("language_code", "already"), [("en", "lang:en"), ("zh-hans", "lang:zh")]
)
async def test_tapping_the_ticked_language_changes_nothing_and_is_no_error(
    chat: Conversation, caplog: pytest.LogCaptureFixture, language_code: str, already: str
) -> None:
    await chat.send(message_update(USER, "/start", language_code=language_code))
    await chat.send(message_update(USER, "/language", language_code=language_code))
    picker = chat.fake.calls_of("sendMessage")[-1]
    sent_before = len(chat.fake.calls_of("sendMessage"))
    caplog.clear()

    with caplog.at_level(logging.INFO):
        await chat.send(
            chat.fake.press(USER, already, picker.message_id, language_code=language_code)
        )

    edit = chat.fake.calls_of("editMessageText")[-1]
    assert edit.failed and edit.description == MESSAGE_NOT_MODIFIED  # Telegram's own answer
    answered = chat.fake.calls_of("answerCallbackQuery")
    assert len(answered) == 1 and not _alerts(chat)  # the spinner stops, no error popup
    assert len(chat.fake.calls_of("sendMessage")) == sent_before  # no "something went wrong"
    assert _problems(caplog) == []  # and no traceback


async def test_double_press_on_a_view_is_no_error(
    chat: Conversation, caplog: pytest.LogCaptureFixture
) -> None:
    await chat.send(message_update(USER, "/checkin"))
    shown = chat.fake.calls_of("sendMessage")[-1]
    board = CheckinView(view="leaderboard").pack()
    await chat.send(chat.fake.press(USER, board, shown.message_id))
    caplog.clear()
    await chat.send(callback_update(USER, board, message_id=shown.message_id))  # the same tap

    first, second = chat.fake.calls_of("editMessageText")
    assert not first.failed and second.description == MESSAGE_NOT_MODIFIED
    assert len(chat.fake.calls_of("answerCallbackQuery")) == 2 and not _alerts(chat)
    assert _problems(caplog) == []


async def test_a_screen_whose_message_is_gone_is_sent_anew(chat: Conversation) -> None:
    await chat.send(message_update(USER, "/start"))
    sent_before = len(chat.fake.calls_of("sendMessage"))
    # A press on a message the member has since deleted: Telegram cannot find it to edit.
    await chat.send(callback_update(USER, PointsPage(page=0).pack(), message_id=9999))

    [edit] = chat.fake.calls_of("editMessageText")
    assert edit.failed and edit.description == "Bad Request: message to edit not found"
    sent = chat.fake.calls_of("sendMessage")
    assert len(sent) == sent_before + 1
    assert chat.fake.calls_of("answerCallbackQuery") and not _alerts(chat)
    await chat.send(message_update(USER, "/points"))  # the same screen the press asked for
    assert sent[-1].params["text"] == chat.fake.calls_of("sendMessage")[-1].params["text"]
