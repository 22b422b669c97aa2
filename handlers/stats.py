"""/stats and /export for the people who run the program (ADMIN_IDS): the figures of a period
as a summary with a button per section (edited in place), the charts as images, and the
members and the points ledger as spreadsheets. Anyone else is refused, learning nothing."""

from __future__ import annotations

import asyncio
from datetime import date

from aiogram import Router
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    User,
)
from babel.dates import format_date
from sqlalchemy.ext.asyncio import AsyncSession

from domain import analytics
from domain.analytics import Period, Report
from domain.analytics_export import audit_rows, ledger_rows, member_rows
from domain.money import MINOR_PER_UNIT
from domain.shop import Shop
from handlers import charts, spreadsheets
from handlers.callbacks import StatsView
from handlers.editing import edit_in_place
from handlers.staff import IsStaff
from handlers.texts import LOCALES, Texts

SECTIONS = ("members", "lifecycle", "sales", "points", "benefits", "engagement", "pushes")
CHARTS = ("pyramid", "funnel", "revenue", "points")
PERIODS = ("this", "last", "3m", "12m")
HISTORY_MONTHS = 12  # the monthly charts look back this far when the period is shorter


class IsAdmin(Filter):
    """Admin ids reach the doors as workflow data from the settings."""

    async def __call__(self, event: Message | CallbackQuery, admin_ids: frozenset[int]) -> bool:
        user: User | None = event.from_user
        return user is not None and user.id in admin_ids


async def only_admins(message: Message, texts: Texts, lang: str) -> None:
    """What anyone but an admin gets for an admin's command (staff commands make nobody a
    member: routers register this after the admin's handler)."""
    await message.answer(texts.render(lang, "stats/only_admins"))


async def only_admins_press(query: CallbackQuery, texts: Texts, lang: str) -> None:
    """What anyone but an admin gets for a press on an admin's button, whatever it carries."""
    await query.answer(texts.render(lang, "stats/only_admins"), show_alert=True)


def period_for(key: str, today: date) -> Period:
    if key == "last":
        return Period.month_of(today, back=1)
    if key == "3m":
        return Period.months_to(today, 3)
    if key == "12m":
        return Period.months_to(today, 12)
    return Period.month_of(today)


def month_label(lang: str, period: Period) -> str:
    pattern = "y年M月" if lang == "zh" else "MMM y"
    return format_date(period.first, pattern, locale=LOCALES.get(lang, "en"))


def names(texts: Texts, lang: str, shop: Shop) -> dict[str, dict[str, str]]:
    """Tier, stage, benefit and message names in ``lang``, for the section templates."""
    program = shop.program

    def source(key: str) -> str:
        for reward in program.rewards:
            if key == f"reward:{reward.key}":
                return reward.name.get(lang)
        return _label_or(texts, lang, f"stats_source_{key}", "stats_source_other")

    def kind(key: str) -> str:
        return _label_or(texts, lang, f"stats_push_{key}", "stats_push_other")

    return {
        "tiers": {t.key: t.name.get(lang) for t in program.tiers},
        "stages": {s: texts.label(lang, f"stats_stage_{s}") for s in analytics.STAGES},
        "sources": _Lookup(source),
        "kinds": _Lookup(kind),
    }


def _label_or(texts: Texts, lang: str, key: str, fallback: str) -> str:
    """The label ``key``, or ``fallback`` for a source or kind the labels do not name (a
    campaign's coupons, a message kind added later)."""
    try:
        return texts.label(lang, key)
    except KeyError:
        return texts.label(lang, fallback)


class _Lookup(dict[str, str]):
    """A mapping that words any key it is asked for."""

    def __init__(self, word: object) -> None:
        super().__init__()
        self.word = word

    def __missing__(self, key: str) -> str:
        value: str = self.word(key)  # type: ignore[operator]
        self[key] = value
        return value


def section_text(texts: Texts, lang: str, shop: Shop, view: str, report: Report) -> str:
    named = names(texts, lang, shop)
    return texts.render(
        lang, f"stats/{view}", r=report, names=named["tiers"], stages=named["stages"],
        sources=named["sources"], kinds=named["kinds"], soon=analytics.EXPIRING_DAYS,
        days=analytics.CONVERSION_DAYS,
    )


def keyboard(texts: Texts, lang: str, view: str, period: str) -> InlineKeyboardMarkup:
    def button(key: str, target: str) -> InlineKeyboardButton:
        return InlineKeyboardButton(
            text=texts.label(lang, key),
            callback_data=StatsView(view=target, period=period).pack(),
        )

    sections = [
        button(f"stats_section_{s}", s) for s in ("summary", *SECTIONS) if s != view
    ]
    chart_buttons = [button(f"stats_chart_{c}", f"chart_{c}") for c in CHARTS]
    def period_button(p: str) -> InlineKeyboardButton:
        name = texts.label(lang, f"stats_period_{p}")
        if p == period:
            name = texts.label(lang, "stats_period_chosen", name=name)
        return InlineKeyboardButton(
            text=name, callback_data=StatsView(view=view, period=p).pack()
        )

    periods = [period_button(p) for p in PERIODS]
    rows = [sections[i:i + 2] for i in range(0, len(sections), 2)]
    rows += [chart_buttons[:2], chart_buttons[2:], periods[:2], periods[2:]]
    return InlineKeyboardMarkup(inline_keyboard=rows)


async def _report(session: AsyncSession, shop: Shop, period: Period) -> Report:
    report = await analytics.build_report(session, shop, period)
    await session.commit()  # end the read
    return report


async def stats(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, lang: str
) -> None:
    period = period_for("this", shop.today())
    report = await _report(session, shop, period)
    await message.answer(
        section_text(texts, lang, shop, "summary", report),
        reply_markup=keyboard(texts, lang, "summary", "this"),
    )


async def show(
    query: CallbackQuery, callback_data: StatsView, session: AsyncSession, shop: Shop,
    texts: Texts, lang: str,
) -> None:
    key = callback_data.period if callback_data.period in PERIODS else "this"
    period = period_for(key, shop.today())
    view = callback_data.view
    if view.startswith("chart_") and view.removeprefix("chart_") in CHARTS:
        await send_chart(query, session, shop, texts, lang, view.removeprefix("chart_"), period)
        return
    view = view if view in SECTIONS else "summary"
    report = await _report(session, shop, period)
    await edit_in_place(
        query, text=section_text(texts, lang, shop, view, report),
        markup=keyboard(texts, lang, view, key),
    )


async def chart_for(
    session: AsyncSession, shop: Shop, texts: Texts, lang: str, name: str, period: Period
) -> charts.Chart:
    """The chart ``name`` for ``period``, worded in ``lang``."""
    label = texts.label
    money_axis = label(lang, "stats_money_axis", currency=shop.program.currency)
    if name in ("pyramid", "funnel"):
        report = await _report(session, shop, period)
        if name == "pyramid":
            return charts.Chart(
                "pyramid", label(lang, "stats_title_pyramid"),
                [t.name.get(lang) for t in shop.program.tiers],
                [
                    charts.Series(label(lang, "stats_tier_actual"),
                                  [t.members for t in report.members.tiers]),
                    charts.Series(label(lang, "stats_tier_target"), report.members.pyramid_target),
                ],
                axis_label=label(lang, "stats_members_axis"),
            )
        return charts.Chart(
            "funnel", label(lang, "stats_title_funnel"),
            [label(lang, f"stats_stage_{s}") for s in analytics.STAGES],
            [charts.Series(label(lang, "stats_members_axis"),
                           [report.lifecycle.stages[s] for s in analytics.STAGES])],
            axis_label=label(lang, "stats_members_axis"),
        )
    span = period if len(period.months()) > 1 else Period.months_to(period.last, HISTORY_MONTHS)
    history = await analytics.monthly_history(session, shop, span)
    await session.commit()
    months = [month_label(lang, m.period) for m in history]
    if name == "revenue":
        red = shop.program.benefits.cost_red_line_percent
        return charts.Chart(
            "bars", label(lang, "stats_title_revenue"), months,
            [
                charts.Series(label(lang, "stats_revenue"),
                              [m.revenue / MINOR_PER_UNIT for m in history]),
                charts.Series(label(lang, "stats_benefit_cost"),
                              [m.benefit_cost / MINOR_PER_UNIT for m in history]),
            ],
            axis_label=money_axis,
            line=charts.Series(label(lang, "stats_red_line", percent=red),
                               [m.revenue * red / 100 / MINOR_PER_UNIT for m in history]),
        )
    return charts.Chart(
        "lines", label(lang, "stats_title_points"), months,
        [
            charts.Series(label(lang, "stats_points_earned"), [m.earned for m in history]),
            charts.Series(label(lang, "stats_points_spent"), [m.spent for m in history]),
            charts.Series(label(lang, "stats_points_expired"), [m.expired for m in history]),
        ],
        axis_label=label(lang, "stats_points_axis"),
    )


async def send_chart(
    query: CallbackQuery, session: AsyncSession, shop: Shop, texts: Texts, lang: str,
    name: str, period: Period,
) -> None:
    await query.answer()
    chart = await chart_for(session, shop, texts, lang, name, period)
    png = await asyncio.to_thread(charts.render, chart)
    caption = texts.render(lang, "stats/chart_caption", title=chart.title, period=period)
    assert query.bot is not None
    await query.bot.send_photo(
        query.from_user.id, BufferedInputFile(png, filename=f"{name}.png"), caption=caption
    )


def _export_period(arg: str | None, today: date) -> Period | None:
    if not arg:
        return Period.month_of(today)
    try:
        year, month = (int(part) for part in arg.split("-"))
        return Period.month(year, month)
    except ValueError:
        return None


async def export(
    message: Message, command: CommandObject, session: AsyncSession, shop: Shop, texts: Texts,
    lang: str,
) -> None:
    args = (command.args or "").split()
    what = args[0] if args else ""
    period = _export_period(args[1] if len(args) > 1 else None, shop.today())
    if what not in ("members", "ledger", "audit") or period is None or len(args) > 2:
        await message.answer(texts.render(lang, "stats/export_usage"))
        return
    if what == "members":
        content, rows = await spreadsheets.members_csv(
            texts, lang, shop, member_rows(session, shop, period)
        )
    elif what == "audit":
        content, rows = await spreadsheets.audit_csv(
            texts, lang, audit_rows(session, shop, period)
        )
    else:
        content, rows = await spreadsheets.ledger_csv(
            texts, lang, ledger_rows(session, shop, period)
        )
    name = texts.label(lang, f"stats_export_{what}_file")
    await message.answer_document(
        BufferedInputFile(content, filename=f"{name}-{period.first:%Y-%m}.csv"),
        caption=texts.render(lang, "stats/export_caption", what=what, period=period, rows=rows),
    )


def build_router() -> Router:
    router = Router(name=__name__)
    # IsStaff first: the commands are staff commands, so typing one never registers anyone.
    router.message.register(stats, Command("stats"), IsStaff(), IsAdmin())
    router.message.register(export, Command("export"), IsStaff(), IsAdmin())
    router.message.register(only_admins, Command("stats", "export"))
    router.callback_query.register(show, StatsView.filter(), IsAdmin())
    router.callback_query.register(only_admins_press, StatsView.filter())
    return router
