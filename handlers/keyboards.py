"""Keyboards, labelled from templates/<lang>/labels.toml."""

from __future__ import annotations

from aiogram.types import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
)

from handlers.texts import LANGUAGES, Texts
from handlers.callbacks import LanguageChoice


def main_menu(texts: Texts, lang: str) -> ReplyKeyboardMarkup:
    def button(key: str, **kwargs: bool) -> KeyboardButton:
        return KeyboardButton(text=texts.label(lang, key), **kwargs)

    return ReplyKeyboardMarkup(
        keyboard=[
            [button("menu_card"), button("menu_checkin")],
            [button("menu_points"), button("menu_rewards")],
            [button("menu_coupons"), button("menu_invite")],
            [button("menu_benefits"), button("menu_profile")],
            [button("menu_phone", request_contact=True), button("menu_help")],
        ],
        resize_keyboard=True,
        is_persistent=True,
        input_field_placeholder=texts.label(lang, "input_placeholder"),
    )


def language_picker(texts: Texts, current: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=("✓ " if lang == current else "") + texts.label(lang, f"language_{lang}"),
                    callback_data=LanguageChoice(language=lang).pack(),
                )
                for lang in LANGUAGES
            ]
        ]
    )
