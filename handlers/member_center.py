"""The member's own chat menu button: it opens the member center, labelled in their language.

The bot sets one default button for every chat at start-up (in English); once a member's
language is known (they joined, or changed it in the chat or the member center) their chat gets
its own, in that language. Only with the Mini App on (WEBAPP_URL)."""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import MenuButtonWebApp, WebAppInfo

from handlers.texts import Texts

log = logging.getLogger(__name__)


async def set_menu_button(
    bot: Bot, texts: Texts, webapp_url: str | None, chat_id: int, lang: str
) -> None:
    """The member center's button in ``chat_id``'s menu, in ``lang``. A refusal (a member who
    blocked the bot, flood control) is logged and ignored: the button is a convenience, the
    default one still opens the member center, and the member's answer must not wait on it."""
    if not webapp_url:
        return
    button = MenuButtonWebApp(
        text=texts.label(lang, "webapp_menu_button"), web_app=WebAppInfo(url=webapp_url)
    )
    try:
        await bot.set_chat_menu_button(chat_id=chat_id, menu_button=button)
    except TelegramAPIError as exc:
        log.info("the menu button of chat %s was not set: %s", chat_id, exc)
