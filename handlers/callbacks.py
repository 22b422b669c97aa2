"""Every callback's data, as CallbackData classes: no magic strings anywhere else."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData


class LanguageChoice(CallbackData, prefix="lang"):
    language: str
