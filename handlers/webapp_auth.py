"""Who is asking, for the Mini App: Telegram's init data, and nothing else.

Every call under ``/app/api`` carries ``Authorization: tma <initData>``, the string Telegram
hands the page (``Telegram.WebApp.initData``). Its HMAC is checked with the bot token
(aiogram's ``safe_parse_webapp_init_data``) and its ``auth_date`` against a maximum age, which
aiogram leaves to us. The user in it is the member. No cookie, no password: forged, tampered,
expired or missing init data is one and the same 401, which says nothing more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aiogram.utils.web_app import WebAppUser, safe_parse_webapp_init_data

from handlers.texts import Texts

SCHEME = "tma"
FUTURE_SKEW = timedelta(minutes=5)  # a phone whose clock runs a little ahead


@dataclass
class WebAppConfig:
    """What the Mini App's doors need from the composition root."""

    bot_token: str
    url: str  # the public address of /app
    texts: Texts
    admin_ids: frozenset[int] = frozenset()
    max_age: timedelta = timedelta(hours=24)
    rotating_code: bool = False
    # Known once the bot has asked Telegram who it is (start-up); the invite link needs it.
    bot_username: str = field(default="")
    # Sets a member's own menu button in their language (chat id, language); the root binds it
    # to the bot.
    menu_button: Callable[[int, str], Awaitable[None]] | None = None


def verified_user(
    config: WebAppConfig, authorization: str | None, now: datetime
) -> WebAppUser | None:
    """The Telegram user of a genuine, fresh ``tma`` header; None for anything else."""
    scheme, _, init_data = (authorization or "").partition(" ")
    init_data = init_data.strip()
    if scheme.lower() != SCHEME or not init_data:
        return None
    try:
        parsed = safe_parse_webapp_init_data(config.bot_token, init_data)
    except (ValueError, TypeError):  # a bad signature, or a signed text that does not parse
        return None
    age = now - parsed.auth_date
    if parsed.user is None or age > config.max_age or age < -FUTURE_SKEW:
        return None
    return parsed.user
