"""Every word a person reads comes from templates/: Jinja2 messages (HTML, autoescaped) and
short labels (buttons, command descriptions) in a TOML file per language.

The templates ship inside the package (as ``companion_templates``), so an installed wheel
finds them through ``importlib.resources`` the same way a checkout does. Numbers, money,
dates and plurals are formatted by Babel in the reader's locale, never by hand.
"""

from __future__ import annotations

import tomllib
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import format_date, format_time
from babel.numbers import format_currency, format_decimal
from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_context, select_autoescape
from jinja2.runtime import Context

from domain.member_code import format_member_code
from domain.money import MINOR_PER_UNIT, parse_money

LANGUAGES = ("en", "zh")
TEMPLATES_PACKAGE = "companion_templates"
# The Babel locale each language is formatted in (Chinese as written in mainland China).
LOCALES = {"en": "en", "zh": "zh_Hans_CN"}
_DATE_PATTERNS = {"en": "d MMM y", "zh": "y年M月d日"}


class TemplatesMissing(Exception):
    """The templates or labels cannot be found or are incomplete: the bot cannot answer."""


def templates_dir() -> Path:
    """The folder holding the templates, wherever the package is installed."""
    try:
        root = resources.files(TEMPLATES_PACKAGE)
    except ModuleNotFoundError as exc:
        raise TemplatesMissing(
            f"the templates package {TEMPLATES_PACKAGE!r} is not installed"
        ) from exc
    return Path(str(root))


def _lang(lang: str) -> str:
    return lang if lang in LANGUAGES else "en"


@cache
def _locale(lang: str) -> Locale:
    """The Babel locale of a language, parsed once: given a name, every format call parses it
    again (about 0.1 ms of a member card's three numbers and a date)."""
    return Locale.parse(LOCALES[_lang(lang)])


def _context_lang(context: Context) -> str:
    """The language of the template being rendered: its folder, so imported macros (which do
    not see the caller's context) still format in the reader's language."""
    folder = (context.name or "").split("/", 1)[0]
    return folder if folder in LANGUAGES else _lang(str(context.get("lang", "en")))


class Texts:
    """The Jinja environment and the labels of every language, checked complete on load."""

    def __init__(self, directory: Path, *, currency: str = "CNY") -> None:
        self.directory = directory
        self.currency = currency
        self._check_complete()
        self.env = Environment(
            loader=FileSystemLoader(directory),
            autoescape=select_autoescape(enabled_extensions=("html",), default=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            auto_reload=False,  # templates do not change under a running bot
        )
        self.env.filters["money"] = self._money_filter
        self.env.filters["number"] = self._number_filter
        self.env.filters["day"] = self._day_filter
        self.env.filters["plural"] = self._plural_filter
        self.env.filters["member_code"] = format_member_code
        self.env.filters["coupon"] = self._coupon_filter
        self.env.filters["price"] = self._price_filter
        self.env.filters["clock"] = self._clock_filter
        self._labels = {lang: self._load_labels(lang) for lang in LANGUAGES}
        for lang in LANGUAGES:
            if not self._labels[lang]:
                raise TemplatesMissing(f"no labels for {lang!r} in {directory}")
        missing = set(self._labels["en"]) ^ set(self._labels["zh"])
        if missing:
            raise TemplatesMissing(
                f"labels not defined in both languages: {', '.join(sorted(missing))}"
            )

    def _check_complete(self) -> None:
        names: dict[str, set[str]] = {}
        for lang in LANGUAGES:
            folder = self.directory / lang
            if not folder.is_dir():
                raise TemplatesMissing(f"no templates for {lang!r}: {folder} is missing")
            names[lang] = {p.relative_to(folder).as_posix() for p in folder.rglob("*.html")}
            if not names[lang]:
                raise TemplatesMissing(f"no templates for {lang!r} in {folder}")
        lonely = names["en"] ^ names["zh"]
        if lonely:
            raise TemplatesMissing(
                f"templates not written in both languages: {', '.join(sorted(lonely))}"
            )

    def _load_labels(self, lang: str) -> dict[str, str]:
        """labels.toml and labels_<topic>.toml of one language, merged; a key twice is an error."""
        labels: dict[str, str] = {}
        for path in sorted((self.directory / lang).glob("labels*.toml")):
            with path.open("rb") as handle:
                raw = tomllib.load(handle)
            for key, value in raw.items():
                if key in labels:
                    raise TemplatesMissing(f"{path}: label {key!r} is defined twice")
                labels[str(key)] = str(value)
        return labels

    # Formatting, shared by templates (as filters) and labels (as methods).
    def number(self, lang: str, value: int | Decimal, *, signed: bool = False) -> str:
        """1234 -> "1,234"; ``signed`` shows the sign of gains too: "+1,234" / "-1,234"."""
        text = format_decimal(value, locale=_locale(lang))
        return f"+{text}" if signed and value > 0 else text

    def money(self, lang: str, minor: int) -> str:
        """Minor units in the shop's currency: 248050 -> "CN¥2,480.50" / "¥2,480.50"."""
        amount = Decimal(minor) / MINOR_PER_UNIT
        return format_currency(amount, self.currency, locale=_locale(lang))

    def price(self, lang: str, minor: int) -> str:
        """Money as a price is said in an offer: whole amounts without ".00" ("CN¥50",
        "¥50"), others as ``money`` does ("CN¥9.90")."""
        if minor % MINOR_PER_UNIT:
            return self.money(lang, minor)
        locale = _locale(lang)
        pattern = locale.currency_formats["standard"].pattern
        whole = pattern.replace(".00", "")
        return format_currency(
            minor // MINOR_PER_UNIT, self.currency, locale=locale, format=whole,
            currency_digits=False,
        )

    def coupon(
        self, lang: str, *, kind: str, value: int | str, min_spend: int | str = 0
    ) -> str:
        """What a coupon is worth, in the one wording every screen and push uses
        ("CN¥10 off orders over CN¥50" / "满¥50减¥10券"), from the ``coupon_*`` labels.

        ``value`` is minor units (a percentage for ``percent_off``) and ``min_spend`` minor
        units; decimal strings ("10.00"), as pushes queued by earlier versions carry them,
        are read too."""
        percent = int(Decimal(str(value))) if kind == "percent_off" else 0
        amount = 0 if kind == "percent_off" else _minor(value)
        minimum = _minor(min_spend)
        key = f"coupon_{kind}" + ("_min" if minimum and kind != "free_item" else "")
        return self.label(
            lang, key, value=self.price(lang, amount), min_spend=self.price(lang, minimum),
            percent=percent, rate=self.number(lang, Decimal(100 - percent) / 10),
        )

    def day(self, lang: str, value: date | datetime) -> str:
        return format_date(value, _DATE_PATTERNS[_lang(lang)], locale=_locale(lang))

    def plural(self, lang: str, count: int, one: str, other: str) -> str:
        """The word for ``count`` by the language's plural rules (Chinese has one form)."""
        form = _locale(lang).plural_form(count)
        return one if form == "one" else other

    @pass_context
    def _money_filter(self, context: Context, minor: int) -> str:
        return self.money(_context_lang(context), minor)

    @pass_context
    def _price_filter(self, context: Context, minor: int) -> str:
        return self.price(_context_lang(context), minor)

    @pass_context
    def _number_filter(
        self, context: Context, value: int | Decimal, signed: bool = False
    ) -> str:
        return self.number(_context_lang(context), value, signed=signed)

    @pass_context
    def _coupon_filter(self, context: Context, coupon: Any) -> str:
        """``{{ c|coupon }}`` for anything with kind, value and min_spend (a coupon, a
        reward, a coupon template, a push payload's coupon)."""
        def get(name: str) -> Any:
            return coupon[name] if isinstance(coupon, dict) else getattr(coupon, name)

        return self.coupon(
            _context_lang(context), kind=get("kind"), value=get("value"),
            min_spend=get("min_spend"),
        )

    @pass_context
    def _day_filter(
        self, context: Context, value: date | datetime | str, lang: str | None = None
    ) -> str:
        """A date, or an ISO date as push payloads carry them ("2026-03-13")."""
        if isinstance(value, str):
            value = date.fromisoformat(value)
        return self.day(lang or _context_lang(context), value)

    @pass_context
    def _clock_filter(self, context: Context, value: datetime) -> str:
        """The time of day, as the reader's locale writes it ("14:30")."""
        lang = _context_lang(context)
        return format_time(value, "HH:mm", locale=_locale(lang))

    @pass_context
    def _plural_filter(self, context: Context, count: int, one: str, other: str) -> str:
        return self.plural(_context_lang(context), count, one, other)

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


def _minor(amount: int | str) -> int:
    return parse_money(amount) if isinstance(amount, str) else int(amount)


@cache
def load_texts(directory: Path | None = None, currency: str = "CNY") -> Texts:
    """The texts of the installed templates (or of ``directory``), loaded once per process."""
    return Texts(directory or templates_dir(), currency=currency)
