"""Keyboards, labelled from templates/<lang>/labels.toml."""

from __future__ import annotations

from aiogram.types import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    ReplyKeyboardMarkup,
    WebAppInfo,
)

from handlers.callbacks import LanguageChoice, ProfileAction, ProfileLanguage, SpendCodeAsk
from handlers.texts import LANGUAGES, Texts


def main_menu(texts: Texts, lang: str) -> ReplyKeyboardMarkup:
    def button(key: str, *, request_contact: bool = False) -> KeyboardButton:
        return KeyboardButton(
            text=texts.label(lang, key), request_contact=True if request_contact else None
        )

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


def language_picker(
    texts: Texts, current: str, *, from_profile: bool = False
) -> InlineKeyboardMarkup:
    """The languages, the current one ticked; from the profile, with a way back to it."""
    choices = [
        InlineKeyboardButton(
            text=("✓ " if lang == current else "") + texts.label(lang, f"language_{lang}"),
            callback_data=(
                ProfileLanguage(language=lang) if from_profile else LanguageChoice(language=lang)
            ).pack(),
        )
        for lang in LANGUAGES
    ]
    rows = [choices]
    if from_profile:
        rows.append([back_to_profile(texts, current)])
    return InlineKeyboardMarkup(inline_keyboard=rows)


def back_to_profile(texts: Texts, lang: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(
        text=texts.label(lang, "profile_back"), callback_data=ProfileAction(action="show").pack()
    )


def card_actions(texts: Texts, lang: str) -> InlineKeyboardMarkup:
    """Under the member card: a one-time code to spend points at the till."""
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=texts.label(lang, "card_pay_with_points"),
                    callback_data=SpendCodeAsk().pack(),
                )
            ]
        ]
    )


def member_center_rows(
    texts: Texts, lang: str, webapp_url: str | None, page: str
) -> list[list[InlineKeyboardButton]]:
    """"Open member center" on ``page`` of the Mini App; nothing when it is off."""
    if not webapp_url:
        return []
    return [[InlineKeyboardButton(
        text=texts.label(lang, "webapp_open"), web_app=WebAppInfo(url=f"{webapp_url}/{page}")
    )]]
