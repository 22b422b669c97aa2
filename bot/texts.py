"""Every word a person reads comes from templates/: Jinja2 messages (HTML, autoescaped) and
short labels (buttons, command descriptions) in a TOML file per language."""

from __future__ import annotations

import tomllib
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from domain.member_code import format_member_code
from domain.money import format_money

LANGUAGES = ("en", "zh")


def _number(value: int | Decimal) -> str:
    return f"{value:,}"


def _day(value: date | datetime, lang: str = "en") -> str:
    if lang == "zh":
        return f"{value.year}年{value.month}月{value.day}日"
    return value.strftime("%-d %b %Y")


class Texts:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.env = Environment(
            loader=FileSystemLoader(directory),
            autoescape=select_autoescape(enabled_extensions=("html",), default=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self.env.filters["money"] = format_money
        self.env.filters["number"] = _number
        self.env.filters["day"] = _day
        self.env.filters["member_code"] = format_member_code
        self._labels = {lang: self._load_labels(lang) for lang in LANGUAGES}

    def _load_labels(self, lang: str) -> dict[str, str]:
        """labels.toml and labels_<topic>.toml of one language, merged; a key twice is an error."""
        labels: dict[str, str] = {}
        for path in sorted((self.directory / lang).glob("labels*.toml")):
            with path.open("rb") as handle:
                raw = tomllib.load(handle)
            for key, value in raw.items():
                if key in labels:
                    raise ValueError(f"{path}: label {key!r} is defined twice")
                labels[str(key)] = str(value)
        return labels

    def render(self, lang: str, name: str, /, **context: Any) -> str:
        """Render templates/<lang>/<name>.html with ``lang`` in the context."""
        template = self.env.get_template(f"{_lang(lang)}/{name}.html")
        return template.render(lang=_lang(lang), **context).strip()

    def label(self, lang: str, key: str, /, **context: Any) -> str:
        text = self._labels[_lang(lang)][key]
        return text.format(**context) if context else text

    def labels_everywhere(self, key: str) -> frozenset[str]:
        """A label in every language: a menu button press matches whichever the member sees."""
        return frozenset(self._labels[lang][key] for lang in LANGUAGES)

    def commands(self, lang: str) -> list[tuple[str, str]]:
        """(command, description) pairs from the labels named ``command_<name>``."""
        return [
            (key.removeprefix("command_"), text)
            for key, text in self._labels[_lang(lang)].items()
            if key.startswith("command_")
        ]


def _lang(lang: str) -> str:
    return lang if lang in LANGUAGES else "en"


@cache
def load_texts(directory: Path) -> Texts:
    return Texts(directory)
