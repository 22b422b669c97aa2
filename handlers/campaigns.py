"""/campaign: an admin builds a campaign in a conversation (aiogram FSM, kept in the database
by bot/fsm_storage.py, so a half-built campaign survives a restart): audience, message, offer,
when, a preview exactly as members will see it, then confirm. Every screen is editable from
the menu and the whole thing can be dropped at any step. Nobody but an admin gets anywhere:
every press is re-checked (``IsAdmin``), whatever callback data it carries."""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Any

from aiogram import Router
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from domain import campaigns
from domain.audit import Actor
from domain.campaigns import ALL, Audience, CampaignSpec, CouponOffer, Offer, Variant
from domain.lifecycle import ACTIVE, CHURNED, DORMANT, NEW
from domain.money import MoneyFormatError, parse_money
from domain.shop import Shop
from handlers.callbacks import CampaignAction, CampaignEdit, CampaignStep
from handlers.campaign_push import compose
from handlers.campaign_reports import list_campaigns, show_report
from handlers.campaign_writer import CampaignWriter
from handlers.editing import edit_in_place
from handlers.outbox_signal import OutboxSignal
from handlers.staff import IsStaff
from handlers.stats import IsAdmin, only_admins, only_admins_press
from handlers.texts import LANGUAGES, Texts

STAGES = (NEW, ACTIVE, DORMANT, CHURNED)
MAX_TEXT = 900  # a photo's caption holds 1,024 characters, with the offer lines after it
MAX_DAYS = 3650
MAX_POINTS = 100_000
CLEAR = "-"


class Builder(StatesGroup):
    editing = State()  # pressing buttons on the screens
    typing = State()  # the screen asked for a value (data["field"])


class BadInput(Exception):
    """What the admin typed cannot be used; ``reason`` is worded by campaign/bad_input."""

    def __init__(self, reason: str, **values: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.values = values


# ---- the draft in the conversation's data ---------------------------------------------------


class Draft:
    """The campaign being built and where the admin is in it (FSM data, JSON)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.spec = CampaignSpec.model_validate(data.get("spec") or {})
        self.draft_id: int | None = data.get("draft_id")
        self.variant: str = data.get("variant", "A")
        self.tier: str = data.get("tier", ALL)
        self.field: str = data.get("field", "")
        self.coupon_kind: str = data.get("coupon_kind", "amount_off")

    def dump(self) -> dict[str, Any]:
        return {
            "spec": self.spec.model_dump(mode="json"), "draft_id": self.draft_id,
            "variant": self.variant, "tier": self.tier, "field": self.field,
            "coupon_kind": self.coupon_kind,
        }

    @property
    def current(self) -> Variant:
        return self.spec.variant(self.variant)


async def _load(state: FSMContext) -> Draft:
    return Draft(await state.get_data())


async def _save(state: FSMContext, draft: Draft, *, typing: bool = False) -> None:
    await state.set_data(draft.dump())
    await state.set_state(Builder.typing if typing else Builder.editing)


# ---- screens --------------------------------------------------------------------------------


def _button(text: str, data: CampaignEdit | CampaignStep | CampaignAction) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data.pack())


def _mark(texts: Texts, lang: str, on: bool, text: str) -> str:
    return texts.label(lang, "campaign_on" if on else "campaign_off", name=text)


def _variant_row(
    texts: Texts, lang: str, draft: Draft, screen: str
) -> list[list[InlineKeyboardButton]]:
    if not draft.spec.split:
        return []
    return [[
        _button(
            _mark(texts, lang, draft.variant == name,
                  texts.label(lang, f"campaign_variant_{name}")),
            CampaignEdit(field="variant", value=f"{name}_{screen}"),
        )
        for name in ("A", "B")
    ]]


def _keyboard(rows: list[list[InlineKeyboardButton]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[row for row in rows if row])


class _Buttons:
    """Buttons of one screen in the admin's language."""

    def __init__(self, texts: Texts, lang: str) -> None:
        self.texts = texts
        self.lang = lang

    def edit(self, key: str, field: str, value: str = "") -> InlineKeyboardButton:
        return _button(self.texts.label(self.lang, key), CampaignEdit(field=field, value=value))

    def ask(self, key: str, field: str) -> InlineKeyboardButton:
        return self.edit(key, "ask", field)

    def toggle(self, on: bool, name: str, field: str, value: str = "") -> InlineKeyboardButton:
        text = _mark(self.texts, self.lang, on, name)
        return _button(text, CampaignEdit(field=field, value=value))

    def step(self, key: str, step: str) -> InlineKeyboardButton:
        return _button(self.texts.label(self.lang, key), CampaignStep(step=step))


async def _screen(
    step: str, draft: Draft, session: AsyncSession, shop: Shop, texts: Texts, lang: str
) -> tuple[str, InlineKeyboardMarkup]:
    spec = draft.spec
    program = shop.program
    tiers = {t.key: t.name.get(lang) for t in program.tiers}
    b = _Buttons(texts, lang)
    back = [b.step("campaign_back", "menu")]
    if step == "audience":
        audience = spec.audience
        reach = await campaigns.reach(session, shop, audience)
        text = texts.render(lang, "campaign/audience", a=audience, reach=reach, tiers=tiers)
        tier_row = []
        for key, name in tiers.items():
            mode = ""
            if audience.tier == key:
                mode = "exactly" if audience.tier_exact else "at_least"
            label = texts.label(lang, f"campaign_tier_{mode}", name=name)
            tier_row.append(_button(label, CampaignEdit(field="tier", value=key)))
        stage = [
            b.toggle(s in audience.stages, texts.label(lang, f"stats_stage_{s}"), "stage", s)
            for s in STAGES
        ]
        language = [
            b.toggle(code in audience.languages, texts.label(lang, f"campaign_language_{code}"),
                     "language", code)
            for code in LANGUAGES
        ]
        rows = [
            tier_row, stage, language,
            [b.edit(f"campaign_phone_{_phone_key(audience.has_phone)}", "phone")],
            [b.ask("campaign_ask_bought_within", "bought_within"),
             b.ask("campaign_ask_not_bought_within", "not_bought_within")],
            [b.ask("campaign_ask_birthday_month", "birthday_month"),
             b.ask("campaign_ask_joined", "joined")],
            [b.edit("campaign_clear_audience", "clear"), *back],
        ]
        return text, _keyboard(rows)
    if step == "message":
        text = texts.render(lang, "campaign/message", spec=spec, variant=draft.variant,
                            current=draft.current)
        rows = [
            *_variant_row(texts, lang, draft, "message"),
            [b.ask("campaign_ask_text_all", "text_*"),
             *[b.ask(f"campaign_ask_text_{code}", f"text_{code}") for code in LANGUAGES]],
            [b.ask("campaign_ask_photo", "photo"),
             *([b.edit("campaign_photo_clear", "photo_clear")] if spec.photo else [])],
            [b.edit(f"campaign_cta_choice_{spec.cta or 'none'}", "cta")],
            [b.toggle(spec.split, texts.label(lang, "campaign_split"), "split"),
             b.toggle(spec.kind == "survey", texts.label(lang, "campaign_survey"), "survey")],
            back,
        ]
        return text, _keyboard(rows)
    if step == "offer":
        templates = await campaigns.coupon_templates(session, shop)
        text = texts.render(lang, "campaign/offer", spec=spec, variant=draft.variant,
                            current=draft.current, target=draft.tier, tiers=tiers)
        targets = [
            b.toggle(draft.tier == ALL, texts.label(lang, "campaign_all_tiers"), "target", ALL),
            *[b.toggle(draft.tier == key, name, "target", key) for key, name in tiers.items()],
        ]
        rows = [
            *_variant_row(texts, lang, draft, "offer"),
            targets,
            *[[_button(texts.coupon(lang, kind=t.kind, value=t.value, min_spend=t.min_spend),
                       CampaignEdit(field="template", value=t.template or ""))]
              for t in templates],
            [b.edit(f"campaign_new_{kind}", "new_coupon", kind)
             for kind in campaigns.COUPON_KINDS],
            [b.ask("campaign_ask_points", "points"), b.edit("campaign_no_offer", "no_offer")],
            back,
        ]
        return text, _keyboard(rows)
    if step == "when":
        text = texts.render(lang, "campaign/when", start_at=_local(shop, spec.start_at))
        rows = [[b.edit("campaign_when_now", "now"), b.ask("campaign_ask_when", "when")], back]
        return text, _keyboard(rows)
    reach = await campaigns.reach(session, shop, spec.audience)
    text = texts.render(lang, "campaign/menu", spec=spec, reach=reach, tiers=tiers,
                        start_at=_local(shop, spec.start_at))
    offer = [b.step("campaign_step_offer", "offer")] if spec.kind == "message" else []
    rows = [
        [b.step("campaign_step_audience", "audience"), b.step("campaign_step_message", "message")],
        [*offer, b.step("campaign_step_when", "when")],
        [b.step("campaign_step_preview", "preview"), b.step("campaign_quit", "quit")],
    ]
    return text, _keyboard(rows)


def _phone_key(has_phone: bool | None) -> str:
    return "any" if has_phone is None else ("yes" if has_phone else "no")


def _local(shop: Shop, instant: datetime | None) -> datetime | None:
    return instant.astimezone(shop.tz) if instant is not None else None


# ---- commands and presses -----------------------------------------------------------------


async def start_building(
    message: Message, state: FSMContext, session: AsyncSession, shop: Shop, texts: Texts,
    lang: str,
) -> None:
    draft = Draft({})
    await _save(state, draft)
    text, markup = await _screen("menu", draft, session, shop, texts, lang)
    await message.answer(text, reply_markup=markup)


async def go_to(
    query: CallbackQuery, callback_data: CampaignStep, state: FSMContext, session: AsyncSession,
    shop: Shop, texts: Texts, lang: str, outbox_signal: OutboxSignal,
) -> None:
    if await state.get_state() is None:
        await query.answer(texts.render(lang, "campaign/expired"), show_alert=True)
        return
    draft = await _load(state)
    step = callback_data.step
    if step == "quit":
        await state.clear()
        await edit_in_place(query, text=texts.render(lang, "campaign/quit"))
        return
    if step == "preview":
        await _preview(query, draft, state, session, shop, texts, lang)
        return
    await _save(state, draft)
    text, markup = await _screen(step, draft, session, shop, texts, lang)
    await edit_in_place(query, text=text, markup=markup)


async def edit(
    query: CallbackQuery, callback_data: CampaignEdit, state: FSMContext,
    session: AsyncSession, shop: Shop, texts: Texts, lang: str,
) -> None:
    if await state.get_state() is None:
        await query.answer(texts.render(lang, "campaign/expired"), show_alert=True)
        return
    draft = await _load(state)
    field, value = callback_data.field, callback_data.value
    spec = draft.spec
    audience = spec.audience
    step = "audience"
    if field == "ask":
        draft.field = value
        await _save(state, draft, typing=True)
        await query.answer()
        assert query.bot is not None
        await query.bot.send_message(
            query.from_user.id, texts.render(lang, "campaign/ask", field=value,
                                             variant=draft.variant if spec.split else "",
                                             coupon_kind=draft.coupon_kind),
        )
        return
    if field == "tier" and value in {t.key for t in shop.program.tiers}:
        if audience.tier != value:
            audience.tier, audience.tier_exact = value, False
        elif not audience.tier_exact:
            audience.tier_exact = True
        else:
            audience.tier, audience.tier_exact = None, False
    elif field == "stage" and value in STAGES:
        _toggle(audience.stages, value)
    elif field == "language" and value in LANGUAGES:
        _toggle(audience.languages, value)
    elif field == "phone":
        audience.has_phone = {None: True, True: False, False: None}[audience.has_phone]
    elif field == "clear":
        spec.audience = Audience()
    else:
        step = await _edit_message_or_offer(draft, field, value, session, shop)
    await _save(state, draft)
    text, markup = await _screen(step, draft, session, shop, texts, lang)
    await edit_in_place(query, text=text, markup=markup)


def _toggle(values: list[str], value: str) -> None:
    if value in values:
        values.remove(value)
    else:
        values.append(value)


async def _edit_message_or_offer(
    draft: Draft, field: str, value: str, session: AsyncSession, shop: Shop
) -> str:
    """A press on the message, offer or when screen; the screen to show next."""
    spec = draft.spec
    if field == "variant" and value in ("A_message", "B_message", "A_offer", "B_offer"):
        draft.variant, screen = value.split("_")
        return screen
    if field == "photo_clear":
        spec.photo = None
    elif field == "cta":
        order: list[campaigns.Cta | None] = [None, *campaigns.CTAS]
        spec.cta = order[(order.index(spec.cta) + 1) % len(order)]
    elif field == "split":
        if spec.split:
            spec.variants = spec.variants[:1]
            draft.variant = "A"
        else:
            spec.variants = [spec.variants[0], spec.variants[0].model_copy(deep=True)]
    elif field == "survey":
        spec.kind = "message" if spec.kind == "survey" else "survey"
        if spec.kind == "survey":
            for variant in spec.variants:
                variant.offers = {}
    else:
        draft.field = "offer"
        if field == "target" and (value == ALL or value in {t.key for t in shop.program.tiers}):
            draft.tier = value
        elif field == "template":
            templates = await campaigns.coupon_templates(session, shop)
            found = next((t for t in templates if t.template == value), None)
            if found is not None:
                _set_offer(draft, Offer(coupon=found))
        elif field == "no_offer":
            _set_offer(draft, None)
        elif field == "now":
            spec.start_at = None
            return "when"
        return "offer"
    return "message"


def _set_offer(draft: Draft, offer: Offer | None) -> None:
    offers = draft.current.offers
    if offer is None:
        offers.pop(draft.tier, None)
    else:
        offers[draft.tier] = offer
    if draft.tier == ALL:  # one offer for every tier replaces the per-tier ones
        for key in [k for k in offers if k != ALL]:
            offers.pop(key)


async def edit_with_ask(
    query: CallbackQuery, callback_data: CampaignEdit, state: FSMContext,
    session: AsyncSession, shop: Shop, texts: Texts, lang: str,
) -> None:
    """A new coupon's kind was chosen: ask for its figures; other presses edit as usual."""
    if callback_data.field != "new_coupon":
        await edit(query, callback_data, state, session, shop, texts, lang)
        return
    if await state.get_state() is None:
        await query.answer(texts.render(lang, "campaign/expired"), show_alert=True)
        return
    draft = await _load(state)
    if callback_data.value not in campaigns.COUPON_KINDS:
        await query.answer()
        return
    draft.coupon_kind = callback_data.value
    draft.field = "coupon"
    await _save(state, draft, typing=True)
    await query.answer()
    assert query.bot is not None
    await query.bot.send_message(
        query.from_user.id,
        texts.render(lang, "campaign/ask", field="coupon", variant="",
                     coupon_kind=draft.coupon_kind),
    )


async def typed(
    message: Message, state: FSMContext, session: AsyncSession, shop: Shop, texts: Texts,
    lang: str,
) -> None:
    """The value a screen asked for; a bad one is explained and asked for again."""
    draft = await _load(state)
    field = draft.field
    try:
        step = _apply_typed(draft, field, message, shop)
    except BadInput as bad:
        await message.answer(
            texts.render(lang, "campaign/bad_input", field=field, reason=bad.reason, v=bad.values,
                         coupon_kind=draft.coupon_kind)
        )
        return
    draft.field = "offer" if step == "offer" else ""
    await _save(state, draft)
    text, markup = await _screen(step, draft, session, shop, texts, lang)
    await message.answer(text, reply_markup=markup)


def _apply_typed(draft: Draft, field: str, message: Message, shop: Shop) -> str:
    spec = draft.spec
    raw = (message.text or message.caption or "").strip()
    if field == "photo":
        if not message.photo:
            raise BadInput("not_photo")
        spec.photo = message.photo[-1].file_id
        return "message"
    if field.startswith("text_"):
        lang = field.removeprefix("text_")
        if not raw:
            raise BadInput("empty")
        if len(raw) > MAX_TEXT:
            raise BadInput("too_long", limit=MAX_TEXT, length=len(raw))
        texts = draft.current.texts
        if lang == ALL:
            texts.clear()
        texts[lang] = raw
        return "message"
    audience = spec.audience
    if field in ("bought_within", "not_bought_within"):
        days = None if raw == CLEAR else _whole(raw, 1, MAX_DAYS)
        setattr(audience, field, days)
        return "audience"
    if field == "birthday_month":
        audience.birthday_month = None if raw == CLEAR else _whole(raw, 1, 12)
        return "audience"
    if field == "joined":
        if raw == CLEAR:
            audience.joined_from = audience.joined_to = None
            return "audience"
        parts = raw.split()
        if len(parts) != 2:
            raise BadInput("two_dates")
        first, last = (_day(part) for part in parts)
        if first > last:
            raise BadInput("dates_order")
        audience.joined_from, audience.joined_to = first, last
        return "audience"
    if field == "points":
        _set_offer(draft, Offer(points=_whole(raw, 1, MAX_POINTS)))
        return "offer"
    if field == "coupon":
        _set_offer(draft, Offer(coupon=_coupon(draft.coupon_kind, raw)))
        return "offer"
    if field == "when":
        found = re.fullmatch(r"(\d{4}-\d{2}-\d{2})\s+(\d{1,2}):(\d{2})", raw)
        if found is None:
            raise BadInput("not_datetime")
        try:
            local = datetime.combine(
                _day(found[1]), time(int(found[2]), int(found[3])), tzinfo=shop.tz
            )
        except ValueError as exc:
            raise BadInput("not_datetime") from exc
        if local <= shop.now():
            raise BadInput("in_past")
        spec.start_at = local
        return "when"
    raise BadInput("unexpected")


def _whole(raw: str, low: int, high: int) -> int:
    if not raw.isdigit():
        raise BadInput("not_number", low=low, high=high)
    value = int(raw)
    if not low <= value <= high:
        raise BadInput("out_of_range", low=low, high=high)
    return value


def _day(raw: str) -> date:
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise BadInput("not_date") from exc


def _money(raw: str) -> int:
    try:
        return parse_money(raw)
    except MoneyFormatError as exc:
        raise BadInput("not_money") from exc


def _coupon(kind: str, raw: str) -> CouponOffer:
    parts = raw.split()
    if kind == "free_item":
        if len(parts) != 2:
            raise BadInput("coupon_shape")
        return CouponOffer(kind="free_item", value=0, min_spend=_money(parts[0]),
                           valid_days=_whole(parts[1], 1, MAX_DAYS))
    if len(parts) != 3:
        raise BadInput("coupon_shape")
    value = _whole(parts[0], 1, 99) if kind == "percent_off" else _money(parts[0])
    if value <= 0:
        raise BadInput("not_positive")
    return CouponOffer(kind=kind, value=value, min_spend=_money(parts[1]),
                       valid_days=_whole(parts[2], 1, MAX_DAYS))


# ---- preview and confirm ------------------------------------------------------------------


def _missing(spec: CampaignSpec) -> str | None:
    """What the campaign still needs before it can go out, or None."""
    for variant in spec.variants:
        if spec.kind == "message" and not (
            variant.texts.get(ALL) or all(variant.texts.get(code) for code in LANGUAGES)
        ):
            return "text"
    return None


async def _preview(
    query: CallbackQuery, draft: Draft, state: FSMContext, session: AsyncSession, shop: Shop,
    texts: Texts, lang: str,
) -> None:
    spec = draft.spec
    missing = _missing(spec)
    if missing is not None:
        await query.answer(texts.render(lang, "campaign/missing", what=missing), show_alert=True)
        return
    actor = Actor(query.from_user.id, "admin")
    draft.draft_id = await campaigns.save_draft(session, shop, actor, spec, draft.draft_id)
    await _save(state, draft)
    await query.answer()
    bot = query.bot
    assert bot is not None
    me = await bot.me()
    admin = query.from_user.id
    tiers = [t.key for t in shop.program.tiers]
    languages = await _preview_languages(session, shop, spec, lang)
    for name in ("A", "B") if spec.split else ("A",):
        offers = spec.variant(name).offers
        shown = [t for t in tiers if t in offers] or [tiers[0]]
        if ALL in offers:
            shown = [tiers[0]]
        for tier, member_lang in ((t, code) for t in shown for code in languages):
            # Labelled in the admin's language; the message itself in the members'.
            await bot.send_message(admin, texts.render(
                lang, "campaign/preview_head", variant=name if spec.split else "",
                tier=shop.program.tier(tier).name.get(lang),
                per_tier=ALL not in offers and bool(offers),
                language=texts.label(lang, f"campaign_language_{member_lang}")
                if languages != [lang] else "",
            ))
            push = compose(texts, shop, spec, campaign_id=draft.draft_id, variant=name,
                           lang=member_lang, tier=tier, bot_username=me.username or "")
            if push.photo is not None:
                await bot.send_photo(
                    admin, push.photo, caption=push.text, reply_markup=push.markup
                )
            else:
                await bot.send_message(admin, push.text, reply_markup=push.markup)
    reach = await campaigns.reach(session, shop, spec.audience)
    markup = _keyboard([
        [_button(texts.label(lang, "campaign_confirm"),
                 CampaignAction(action="confirm", campaign_id=draft.draft_id))],
        [_button(texts.label(lang, "campaign_edit"), CampaignStep(step="menu")),
         _button(texts.label(lang, "campaign_quit"), CampaignStep(step="quit"))],
    ])
    await bot.send_message(
        admin,
        texts.render(lang, "campaign/confirm_ask", reach=reach,
                     start_at=_local(shop, spec.start_at)),
        reply_markup=markup,
    )


async def _preview_languages(
    session: AsyncSession, shop: Shop, spec: CampaignSpec, admin_lang: str
) -> list[str]:
    """The languages members will read the campaign in: those of the audience's members (or
    of its language filter, or the admin's own while it reaches nobody)."""
    found = await campaigns.audience_languages(session, shop, spec.audience)
    wanted = found or set(spec.audience.languages) or {admin_lang}
    return [code for code in LANGUAGES if code in wanted]


async def act(
    query: CallbackQuery, callback_data: CampaignAction, state: FSMContext,
    session: AsyncSession, shop: Shop, texts: Texts, lang: str, campaign_writer: CampaignWriter,
) -> None:
    """Confirm, cancel, stop or show one campaign (every admin action audited). A campaign
    confirmed for now is written in the background: the press is answered at once."""
    actor = Actor(query.from_user.id, "admin")
    campaign_id = callback_data.campaign_id
    action = callback_data.action
    if action == "confirm":
        start = await campaigns.confirm(session, shop, actor, campaign_id)
        draft = await _load(state)
        if draft.draft_id == campaign_id:
            await state.clear()
        await edit_in_place(query, text=texts.render(
            lang, "campaign/confirmed", id=campaign_id,
            start_at=_local(shop, start) if start > shop.now() else None,
        ))
        if start <= shop.now():
            campaign_writer.start()
        return
    if action == "cancel":
        await campaigns.cancel(session, shop, actor, campaign_id)
    elif action == "stop":
        await campaigns.stop(session, shop, actor, campaign_id)
    await show_report(query, session, shop, texts, lang, campaign_id)


async def _not_a_command(message: Message) -> bool:
    return not (message.text or "").startswith("/")


def build_router() -> Router:
    router = Router(name=__name__)
    # IsStaff first: a staff command, so typing it never registers anyone.
    router.message.register(start_building, Command("campaign"), IsStaff(), IsAdmin())
    router.message.register(list_campaigns, Command("campaigns"), IsStaff(), IsAdmin())
    router.message.register(only_admins, Command("campaign", "campaigns"))
    router.message.register(
        typed, StateFilter(Builder.typing), IsAdmin(), _not_a_command,
    )
    router.callback_query.register(go_to, CampaignStep.filter(), IsAdmin())
    router.callback_query.register(edit_with_ask, CampaignEdit.filter(), IsAdmin())
    router.callback_query.register(act, CampaignAction.filter(), IsAdmin())
    for data in (CampaignStep, CampaignEdit, CampaignAction):
        router.callback_query.register(only_admins_press, data.filter())
    return router
