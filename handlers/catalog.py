"""``/catalog`` for admins: the rewards mall's items and the coupon templates as they stand,
each change made from the chat (a button, then the new value typed as a reply) and applied at
once: the next member who opens the mall sees it. Anyone else gets nothing changed."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from domain import catalog
from domain.audit import Actor
from domain.catalog import CatalogItem, CatalogValueInvalid, TemplateEntry
from domain.money import MoneyFormatError, parse_money
from domain.program import Localized
from domain.shop import Shop
from handlers.callbacks import CatalogAction
from handlers.editing import edit_in_place
from handlers.filters import Matches
from handlers.staff import IsStaff, actor_of
from handlers.stats import IsAdmin, only_admins, only_admins_press
from handlers.texts import Texts

MONEY_FIELDS = ("value", "min_spend")


class CatalogInput(StatesGroup):
    value = State()  # a new value for data["field"] of data["key"]
    new_names = State()
    new_cost = State()
    new_kind = State()
    new_value = State()


def _button(text: str, data: CatalogAction) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data.pack())


def _worth(texts: Texts, lang: str, kind: str, value: int, min_spend: int) -> str:
    return texts.coupon(lang, kind=kind, value=value, min_spend=min_spend)


async def _list_screen(
    session: AsyncSession, shop: Shop, texts: Texts, lang: str
) -> tuple[str, InlineKeyboardMarkup]:
    items = await catalog.read_rewards(session, shop)
    text = texts.render(lang, "catalog/list", items=items, program=shop.program)
    mark = texts.label(lang, "catalog_paused_mark")
    rows = [
        [_button(texts.label(lang, "catalog_item_button", name=i.reward.name.get(lang),
                             cost=texts.number(lang, i.reward.cost),
                             paused=mark if i.paused else ""),
                 CatalogAction(action="item", key=i.reward.key))]
        for i in items
    ]
    rows.append([_button(texts.label(lang, "catalog_new"), CatalogAction(action="new")),
                 _button(texts.label(lang, "catalog_templates"),
                         CatalogAction(action="templates"))])
    return text, InlineKeyboardMarkup(inline_keyboard=rows)


async def _item_screen(
    session: AsyncSession, shop: Shop, texts: Texts, lang: str, key: str, notice: str = ""
) -> tuple[str, InlineKeyboardMarkup]:
    items = await catalog.read_rewards(session, shop)
    item = next((i for i in items if i.reward.key == key), None)
    if item is None:
        raise catalog.CatalogItemNotFound(key=key)
    return _item_view(texts, lang, shop, item, notice)


def _item_view(
    texts: Texts, lang: str, shop: Shop, item: CatalogItem, notice: str = ""
) -> tuple[str, InlineKeyboardMarkup]:
    r = item.reward
    text = texts.render(
        lang, "catalog/item", i=item, notice=notice, program=shop.program,
        worth=_worth(texts, lang, r.kind, r.value, r.min_spend),
    )

    def edit(field: str) -> InlineKeyboardButton:
        return _button(texts.label(lang, f"catalog_edit_{field}"),
                       CatalogAction(action="edit", key=r.key, field=field))

    toggle = "catalog_resume" if item.paused else "catalog_pause"
    rows = [
        [edit("cost"), edit("stock")],
        [edit("per_member_limit"), edit("min_tier")],
        [edit("valid_days"),
         _button(texts.label(lang, toggle),
                 CatalogAction(action="toggle", key=r.key, field="paused"))],
        [_button(texts.label(lang, "catalog_back"), CatalogAction(action="list"))],
    ]
    return text, InlineKeyboardMarkup(inline_keyboard=rows)


async def _templates_screen(
    session: AsyncSession, shop: Shop, texts: Texts, lang: str
) -> tuple[str, InlineKeyboardMarkup]:
    entries = await catalog.read_templates(session, shop)
    worth = {e.template.key: _worth(texts, lang, e.template.kind, e.template.value,
                                    e.template.min_spend) for e in entries}
    text = texts.render(lang, "catalog/templates", entries=entries, worth=worth)
    rows = [
        [_button(texts.label(lang, "catalog_template_button", worth=worth[e.template.key],
                             paused=texts.label(lang, "catalog_paused_mark")
                             if e.paused else ""),
                 CatalogAction(action="template", key=e.template.key))]
        for e in entries
    ]
    rows.append([_button(texts.label(lang, "catalog_back"), CatalogAction(action="list"))])
    return text, InlineKeyboardMarkup(inline_keyboard=rows)


def _template_view(
    texts: Texts, lang: str, entry: TemplateEntry, notice: str = ""
) -> tuple[str, InlineKeyboardMarkup]:
    t = entry.template
    text = texts.render(
        lang, "catalog/template", e=entry, notice=notice,
        worth=_worth(texts, lang, t.kind, t.value, t.min_spend),
    )

    def edit(field: str) -> InlineKeyboardButton:
        return _button(texts.label(lang, f"catalog_edit_t_{field}"),
                       CatalogAction(action="edit", key=t.key, field=f"t_{field}"))

    toggle = "catalog_resume" if entry.paused else "catalog_pause"
    rows = [[edit("valid_days"),
             _button(texts.label(lang, toggle),
                     CatalogAction(action="toggle", key=t.key, field="t_paused"))]]
    if t.kind != "free_item":
        rows.insert(0, [edit("value"), edit("min_spend")])
    rows.append([_button(texts.label(lang, "catalog_back"), CatalogAction(action="templates"))])
    return text, InlineKeyboardMarkup(inline_keyboard=rows)


async def _template_screen(
    session: AsyncSession, shop: Shop, texts: Texts, lang: str, key: str, notice: str = ""
) -> tuple[str, InlineKeyboardMarkup]:
    entry = next(
        (e for e in await catalog.read_templates(session, shop) if e.template.key == key), None
    )
    if entry is None:
        raise catalog.CatalogItemNotFound(key=key)
    return _template_view(texts, lang, entry, notice)


async def show_catalog(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, lang: str,
    state: FSMContext,
) -> None:
    await state.clear()
    text, markup = await _list_screen(session, shop, texts, lang)
    await message.answer(text, reply_markup=markup)


def _cancel(texts: Texts, lang: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[
        _button(texts.label(lang, "catalog_cancel"), CatalogAction(action="cancel"))
    ]])


async def press(
    query: CallbackQuery, callback_data: CatalogAction, session: AsyncSession, shop: Shop,
    texts: Texts, lang: str, admin_ids: frozenset[int], state: FSMContext,
) -> None:
    action, key, field = callback_data.action, callback_data.key, callback_data.field
    actor = actor_of(query.from_user, admin_ids)
    if action == "item":
        text, markup = await _item_screen(session, shop, texts, lang, key)
    elif action == "templates":
        text, markup = await _templates_screen(session, shop, texts, lang)
    elif action == "template":
        text, markup = await _template_screen(session, shop, texts, lang, key)
    elif action == "toggle" and field == "paused":
        item = await catalog.reward(session, shop, key)
        if item is None:
            raise catalog.CatalogItemNotFound(key=key)
        changed = await catalog.change_reward(
            session, shop, actor, key, "paused", not item.paused
        )
        text, markup = await _item_screen(
            session, shop, texts, lang, key,
            notice=texts.render(lang, "catalog/changed", field="paused", value=changed.paused),
        )
    elif action == "toggle" and field == "t_paused":
        entry = next((e for e in await catalog.read_templates(session, shop)
                      if e.template.key == key), None)
        if entry is None:
            raise catalog.CatalogItemNotFound(key=key)
        done = await catalog.change_template(session, shop, actor, key, "paused", not entry.paused)
        text, markup = _template_view(
            texts, lang, done,
            notice=texts.render(lang, "catalog/changed", field="paused", value=done.paused),
        )
    elif action == "edit" and field == "min_tier":
        text = texts.render(lang, "catalog/ask_tier")
        choices = [_button(t.name.get(lang), CatalogAction(
            action="set", key=key, field="min_tier", value=t.key)) for t in shop.program.tiers]
        rows = [choices[i:i + 2] for i in range(0, len(choices), 2)]
        rows.append([_button(texts.label(lang, "catalog_no_tier"), CatalogAction(
            action="set", key=key, field="min_tier", value=catalog.NO_TIER))])
        rows.append([_button(texts.label(lang, "catalog_back"),
                             CatalogAction(action="item", key=key))])
        markup = InlineKeyboardMarkup(inline_keyboard=rows)
    elif action == "set" and field == "min_tier":
        value = catalog.parse_value(shop, "min_tier", callback_data.value)
        await catalog.change_reward(session, shop, actor, key, "min_tier", value)
        text, markup = await _item_screen(
            session, shop, texts, lang, key,
            notice=texts.render(lang, "catalog/changed", field="min_tier", value=value),
        )
    elif action == "edit":
        await state.set_state(CatalogInput.value)
        await state.set_data({"key": key, "field": field})
        await query.answer()
        assert query.bot is not None
        await query.bot.send_message(
            query.from_user.id, texts.render(lang, "catalog/ask_value", field=field),
            reply_markup=_cancel(texts, lang),
        )
        return
    elif action == "new":
        await state.set_state(CatalogInput.new_names)
        await state.set_data({})
        await query.answer()
        assert query.bot is not None
        await query.bot.send_message(
            query.from_user.id, texts.render(lang, "catalog/ask_names"),
            reply_markup=_cancel(texts, lang),
        )
        return
    elif action == "newkind":
        await _new_kind(query, callback_data, session, shop, texts, lang, actor, state)
        return
    elif action == "cancel":
        await state.clear()
        text, markup = texts.render(lang, "catalog/cancelled"), None
    else:
        text, markup = await _list_screen(session, shop, texts, lang)
    await edit_in_place(query, text=text, markup=markup)


async def value_given(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, lang: str,
    admin_ids: frozenset[int], state: FSMContext,
) -> None:
    data = await state.get_data()
    key, field = str(data["key"]), str(data["field"])
    actor = actor_of(message.from_user, admin_ids)
    typed = message.text or ""
    if field.startswith("t_"):
        name = field.removeprefix("t_")
        entry = next((e for e in await catalog.read_templates(session, shop)
                      if e.template.key == key), None)
        if entry is None:
            raise catalog.CatalogItemNotFound(key=key)
        percent = name == "value" and entry.template.kind == "percent_off"
        value = _money(typed, name) if name in MONEY_FIELDS and not percent else int(
            catalog.parse_value(shop, "valid_days" if name == "valid_days" else "percent",
                                typed) or 0
        )
        done = await catalog.change_template(session, shop, actor, key, name, value)
        await state.clear()
        text, markup = _template_view(
            texts, lang, done,
            notice=texts.render(lang, "catalog/changed", field=name, value=value),
        )
    else:
        new = catalog.parse_value(shop, field, typed)
        await catalog.change_reward(session, shop, actor, key, field, new)
        await state.clear()
        text, markup = await _item_screen(
            session, shop, texts, lang, key,
            notice=texts.render(lang, "catalog/changed", field=field, value=new),
        )
    await message.answer(text, reply_markup=markup)


def _money(text: str, field: str) -> int:
    try:
        minor = parse_money(text.strip())
    except MoneyFormatError as exc:
        raise CatalogValueInvalid(field=field, money=True) from exc
    if minor < 0 or (field == "value" and minor == 0):
        raise CatalogValueInvalid(field=field, money=True)
    return minor


async def names_given(message: Message, texts: Texts, lang: str, state: FSMContext) -> None:
    lines = [line.strip() for line in (message.text or "").splitlines() if line.strip()]
    if len(lines) != 2 or any(len(line) > catalog.MAX_NAME for line in lines):
        raise CatalogValueInvalid(field="names")
    await state.update_data(name_en=lines[0], name_zh=lines[1])
    await state.set_state(CatalogInput.new_cost)
    await message.answer(texts.render(lang, "catalog/ask_cost"), reply_markup=_cancel(texts, lang))


async def cost_given(
    message: Message, shop: Shop, texts: Texts, lang: str, state: FSMContext
) -> None:
    cost = catalog.parse_value(shop, "cost", message.text or "")
    await state.update_data(cost=cost)
    await state.set_state(CatalogInput.new_kind)
    rows = [[_button(texts.label(lang, f"catalog_kind_{kind}"),
                     CatalogAction(action="newkind", value=kind))] for kind in catalog.KINDS]
    rows.append([_button(texts.label(lang, "catalog_cancel"), CatalogAction(action="cancel"))])
    await message.answer(
        texts.render(lang, "catalog/ask_kind"),
        reply_markup=InlineKeyboardMarkup(inline_keyboard=rows),
    )


async def _new_kind(
    query: CallbackQuery, callback_data: CatalogAction, session: AsyncSession, shop: Shop,
    texts: Texts, lang: str, actor: Actor, state: FSMContext,
) -> None:
    if await state.get_state() != CatalogInput.new_kind.state:
        raise catalog.CatalogItemNotFound(key="")
    kind = callback_data.value
    if kind not in catalog.KINDS:
        raise CatalogValueInvalid(field="kind")
    await state.update_data(kind=kind)
    if kind == "free_item":
        text, markup = await _create(session, shop, texts, lang, actor, state, value=0)
        await edit_in_place(query, text=text, markup=markup)
        return
    await state.set_state(CatalogInput.new_value)
    await edit_in_place(
        query, text=texts.render(lang, "catalog/ask_new_value", kind=kind),
        markup=_cancel(texts, lang),
    )


async def new_value_given(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, lang: str,
    admin_ids: frozenset[int], state: FSMContext,
) -> None:
    data = await state.get_data()
    typed = message.text or ""
    if data.get("kind") == "percent_off":
        value = int(catalog.parse_value(shop, "percent", typed) or 0)
        if not 1 <= value <= 100:
            raise CatalogValueInvalid(field="percent", minimum=1, maximum=100)
    else:
        value = _money(typed, "value")
    actor = actor_of(message.from_user, admin_ids)
    text, markup = await _create(session, shop, texts, lang, actor, state, value=value)
    await message.answer(text, reply_markup=markup)


async def _create(
    session: AsyncSession, shop: Shop, texts: Texts, lang: str, actor: Actor,
    state: FSMContext, *, value: int,
) -> tuple[str, InlineKeyboardMarkup]:
    data = await state.get_data()
    item = await catalog.add_reward(
        session, shop, actor, name=Localized(en=str(data["name_en"]), zh=str(data["name_zh"])),
        cost=int(data["cost"]), kind=str(data["kind"]), value=value,
    )
    await state.clear()
    return await _item_screen(
        session, shop, texts, lang, item.reward.key, notice=texts.render(lang, "catalog/added")
    )


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(show_catalog, Command("catalog"), IsStaff(), IsAdmin())
    router.message.register(only_admins, Command("catalog"))
    typed = Matches(F.text & ~F.text.startswith("/"))
    admin = IsAdmin()
    router.message.register(value_given, StateFilter(CatalogInput.value), admin, typed)
    router.message.register(names_given, StateFilter(CatalogInput.new_names), admin, typed)
    router.message.register(cost_given, StateFilter(CatalogInput.new_cost), admin, typed)
    router.message.register(new_value_given, StateFilter(CatalogInput.new_value), admin, typed)
    router.callback_query.register(press, CatalogAction.filter(), admin)
    router.callback_query.register(only_admins_press, CatalogAction.filter())
    return router
