"""Turn the message a button was pressed on into the next screen: the one way handlers edit.

Telegram answers an edit that changes nothing with 400 "message is not modified" (a member
tapping the button of the screen already shown, or a double tap): that is success here, not
an error. A message that is gone (deleted by the member) or can no longer be edited is replaced
by a new one, so the press still shows its screen.
"""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardMarkup

log = logging.getLogger(__name__)

_NOT_MODIFIED = "message is not modified"
_GONE = ("message to edit not found", "message can't be edited")


async def edit_in_place(
    query: CallbackQuery,
    *,
    text: str | None = None,
    caption: str | None = None,
    markup: InlineKeyboardMarkup | None = None,
) -> None:
    """Answer the press, then show ``text`` (a text message) or ``caption`` (a photo's) with
    ``markup`` on the pressed message. Exactly one of ``text`` and ``caption`` is given."""
    if (text is None) == (caption is None):
        raise ValueError("give exactly one of text and caption")
    bot = query.bot
    assert bot is not None, "a callback query from the dispatcher carries its bot"
    await query.answer()
    message = query.message
    if message is None:  # an inline-mode message: nothing of ours to edit
        await _send_instead(bot, query.from_user.id, text or caption or "", markup)
        return
    chat_id, message_id = message.chat.id, message.message_id
    try:
        if text is not None:
            await bot.edit_message_text(
                text=text, chat_id=chat_id, message_id=message_id, reply_markup=markup
            )
        else:
            await bot.edit_message_caption(
                caption=caption, chat_id=chat_id, message_id=message_id, reply_markup=markup
            )
    except TelegramBadRequest as exc:
        if _NOT_MODIFIED in exc.message:
            return  # already showing this screen
        if not any(reason in exc.message for reason in _GONE):
            raise
        log.info("message %s in chat %s cannot be edited; sending anew", message_id, chat_id)
        await _send_instead(bot, chat_id, text or caption or "", markup)


async def _send_instead(
    bot: Bot, chat_id: int, text: str, markup: InlineKeyboardMarkup | None
) -> None:
    await bot.send_message(chat_id, text, reply_markup=markup)
