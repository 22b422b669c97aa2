"""Member care for staff and admins: ``/member <code | phone | @username>`` shows the member's
card as a cashier needs it, with buttons for what the role allows: adjust points (amount, then
a reason, as a short conversation), grant a coupon from the templates; the call-back list's
outcome buttons. Anyone else gets nothing changed: every press re-checks the role."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command, CommandObject, Filter, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from domain import care, lifecycle
from domain.audit import Actor
from domain.catalog import coupon_templates
from domain.errors import DomainError
from domain.shop import Shop
from handlers.callbacks import (
    AdjustConfirm,
    AuditPage,
    CallbackOutcomeChoice,
    CareGrant,
    MemberCare,
)
from handlers.editing import edit_in_place
from handlers.filters import Matches
from handlers.outbox_signal import OutboxSignal
from handlers.staff import IsStaff, actor_of, not_staff
from handlers.texts import Texts


class NothingPending(DomainError):
    """A confirmation pressed with no adjustment of the presser's waiting (pressed twice, or
    the conversation was cancelled)."""

    code = "care_nothing_pending"
    default_message = "nothing is waiting for confirmation"


class AdjustInput(StatesGroup):
    amount = State()
    reason = State()
    confirm = State()


class StaffPress(Filter):
    """A button press by staff (admins included)."""

    async def __call__(self, query: CallbackQuery, staff_ids: frozenset[int]) -> bool:
        return query.from_user is not None and query.from_user.id in staff_ids


def _button(text: str, data: object) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data.pack())  # type: ignore[attr-defined]


async def _card_screen(
    session: AsyncSession, shop: Shop, texts: Texts, lang: str, actor: Actor, member_id: int,
    notice: str = "",
) -> tuple[str, InlineKeyboardMarkup]:
    card = await care.card(session, shop, member_id)
    lines = [texts.render(lang, "points/line", line=line) for line in card.lines]
    text = texts.render(
        lang, "care/card", c=card, lines=list(zip(lines, card.lines, card.reasons, strict=True)),
        program=shop.program, notice=notice,
    )
    label = texts.label
    rows = [
        [_button(label(lang, "care_add"), MemberCare(action="add", member_id=member_id)),
         _button(label(lang, "care_deduct"), MemberCare(action="deduct", member_id=member_id))],
    ]
    if actor.is_admin or shop.program.care.staff_coupon_grants_per_day > 0:
        rows.append([_button(label(lang, "care_grant"),
                             MemberCare(action="grant", member_id=member_id))])
    last = [_button(label(lang, "care_refresh"), MemberCare(action="show", member_id=member_id))]
    if actor.is_admin:
        last.append(_button(label(lang, "care_audit"), AuditPage(member_id=member_id)))
    rows.append(last)
    return text, InlineKeyboardMarkup(inline_keyboard=rows)


async def member_card(
    message: Message, command: CommandObject, session: AsyncSession, shop: Shop, texts: Texts,
    lang: str, admin_ids: frozenset[int], state: FSMContext,
) -> None:
    query = (command.args or "").strip()
    if not query:
        await message.answer(texts.render(lang, "care/usage"))
        return
    await state.clear()  # a new card ends any adjustment left half-way
    found = await care.find(session, shop, query)
    actor = actor_of(message.from_user, admin_ids)
    text, markup = await _card_screen(session, shop, texts, lang, actor, found.id)
    await message.answer(text, reply_markup=markup)


async def press(
    query: CallbackQuery, callback_data: MemberCare, session: AsyncSession, shop: Shop,
    texts: Texts, lang: str, admin_ids: frozenset[int], state: FSMContext,
) -> None:
    actor = actor_of(query.from_user, admin_ids)
    member_id = callback_data.member_id
    if callback_data.action in ("add", "deduct"):
        card = await care.card(session, shop, member_id)  # the member exists, or a refusal
        await state.set_state(AdjustInput.amount)
        await state.set_data({"member_id": member_id, "sign": 1 if callback_data.action == "add"
                              else -1})
        await query.answer()
        assert query.bot is not None
        await query.bot.send_message(
            query.from_user.id,
            texts.render(lang, "care/ask_amount", c=card, add=callback_data.action == "add",
                         admin=actor.is_admin, rules=shop.program.care),
            reply_markup=_cancel(texts, lang, member_id),
        )
        return
    if callback_data.action == "cancel":
        await state.clear()
        await edit_in_place(query, text=texts.render(lang, "care/cancelled"))
        return
    if callback_data.action == "grant":
        templates = await coupon_templates(session, shop)
        await session.commit()
        rows = [
            [_button(texts.label(lang, "care_grant_item", worth=texts.coupon(
                lang, kind=t.kind, value=t.value, min_spend=t.min_spend), days=t.valid_days),
                CareGrant(member_id=member_id, template=t.key))]
            for t in templates
        ]
        rows.append([_button(texts.label(lang, "care_back"),
                             MemberCare(action="show", member_id=member_id))])
        await edit_in_place(
            query, text=texts.render(lang, "care/grant_choose"),
            markup=InlineKeyboardMarkup(inline_keyboard=rows),
        )
        return
    text, markup = await _card_screen(session, shop, texts, lang, actor, member_id)
    await edit_in_place(query, text=text, markup=markup)


def _cancel(texts: Texts, lang: str, member_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[[
        _button(texts.label(lang, "care_cancel"), MemberCare(action="cancel", member_id=member_id))
    ]])


async def amount_given(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, lang: str,
    admin_ids: frozenset[int], state: FSMContext,
) -> None:
    data = await state.get_data()
    amount = care.parse_points(message.text or "")
    amount = abs(amount) * int(data["sign"])
    care.check_staff_amount(shop, actor_of(message.from_user, admin_ids), amount)
    await state.update_data(amount=amount)
    await state.set_state(AdjustInput.reason)
    await message.answer(
        texts.render(lang, "care/ask_reason", amount=amount),
        reply_markup=_cancel(texts, lang, int(data["member_id"])),
    )


async def reason_given(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, lang: str,
    admin_ids: frozenset[int], state: FSMContext, outbox_signal: OutboxSignal,
) -> None:
    data = await state.get_data()
    reason = " ".join((message.text or "").split())
    if not reason or reason.startswith("/"):
        raise care.ReasonRequired()
    actor = actor_of(message.from_user, admin_ids)
    member_id, amount = int(data["member_id"]), int(data["amount"])
    key = f"{message.chat.id}-{message.message_id}"
    left = await care.below_zero(session, member_id, amount)
    if left is not None and actor.is_admin:
        await state.update_data(reason=reason, key=key)
        await state.set_state(AdjustInput.confirm)
        await message.answer(
            texts.render(lang, "care/confirm_below_zero", amount=amount, left=left),
            reply_markup=InlineKeyboardMarkup(inline_keyboard=[
                [_button(texts.label(lang, "care_confirm"), AdjustConfirm(member_id=member_id))],
                [_button(texts.label(lang, "care_cancel"),
                         MemberCare(action="cancel", member_id=member_id))],
            ]),
        )
        return
    await state.clear()
    done = await care.adjust_points(session, shop, actor, member_id, amount, reason, key=key)
    outbox_signal.wake()
    text, markup = await _card_screen(
        session, shop, texts, lang, actor, member_id,
        notice=texts.render(lang, "care/adjusted", a=done),
    )
    await message.answer(text, reply_markup=markup)


async def confirm_below_zero(
    query: CallbackQuery, callback_data: AdjustConfirm, session: AsyncSession, shop: Shop,
    texts: Texts, lang: str, admin_ids: frozenset[int], state: FSMContext,
    outbox_signal: OutboxSignal,
) -> None:
    actor = actor_of(query.from_user, admin_ids)
    data = await state.get_data()
    waiting = await state.get_state() == AdjustInput.confirm.state
    if not waiting or int(data.get("member_id", 0)) != callback_data.member_id:
        raise NothingPending()
    await state.clear()
    done = await care.adjust_points(
        session, shop, actor, callback_data.member_id, int(data["amount"]), str(data["reason"]),
        key=str(data["key"]), below_zero_confirmed=True,
    )
    outbox_signal.wake()
    text, markup = await _card_screen(
        session, shop, texts, lang, actor, callback_data.member_id,
        notice=texts.render(lang, "care/adjusted", a=done),
    )
    await edit_in_place(query, text=text, markup=markup)


async def grant(
    query: CallbackQuery, callback_data: CareGrant, session: AsyncSession, shop: Shop,
    texts: Texts, lang: str, admin_ids: frozenset[int], outbox_signal: OutboxSignal,
) -> None:
    actor = actor_of(query.from_user, admin_ids)
    done = await care.grant_coupon(
        session, shop, actor, callback_data.member_id, callback_data.template
    )
    outbox_signal.wake()
    text, markup = await _card_screen(
        session, shop, texts, lang, actor, callback_data.member_id,
        notice=texts.render(lang, "care/granted", g=done),
    )
    await edit_in_place(query, text=text, markup=markup)


async def callback_list_screen(
    session: AsyncSession, shop: Shop, texts: Texts, lang: str
) -> tuple[str, InlineKeyboardMarkup]:
    """The call-back list with its outcome buttons (three per member, numbered as listed)."""
    found = await lifecycle.callback_list(session, shop, limit=care.CALLBACK_BUTTONS_FOR)
    outcomes = await care.last_outcomes_by_code(session, [m.code for m in found])
    await session.commit()
    text = texts.render(
        lang, "staff/callbacks", members=found, program=shop.program,
        days=shop.program.lifecycle.churned_days,
    ) + texts.render(lang, "care/callback_outcomes", members=found, outcomes=outcomes)
    rows = [
        [_button(texts.label(lang, f"care_outcome_{o}", n=n), CallbackOutcomeChoice(
            code=m.code, outcome=o)) for o in care.OUTCOMES]
        for n, m in enumerate(found, start=1)
    ]
    return text, InlineKeyboardMarkup(inline_keyboard=rows)


async def callbacks(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, lang: str
) -> None:
    """High-value churned members for the staff to call, with what came of each call."""
    text, markup = await callback_list_screen(session, shop, texts, lang)
    await message.answer(text, reply_markup=markup)


async def outcome(
    query: CallbackQuery, callback_data: CallbackOutcomeChoice, session: AsyncSession,
    shop: Shop, texts: Texts, lang: str, admin_ids: frozenset[int],
) -> None:
    actor = actor_of(query.from_user, admin_ids)
    await care.record_outcome(session, shop, actor, callback_data.code, callback_data.outcome)
    text, markup = await callback_list_screen(session, shop, texts, lang)
    await edit_in_place(query, text=text, markup=markup)


async def not_staff_press(query: CallbackQuery, texts: Texts, lang: str) -> None:
    await query.answer(texts.render(lang, "staff/only"), show_alert=True)


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(member_card, Command("member"), IsStaff())
    router.message.register(callbacks, Command("callbacks"), IsStaff())
    router.message.register(not_staff, Command("member"))
    # Typed replies of a staff member's adjustment; a command ends nothing here (it goes on
    # to its own handler) except through its own screen.
    typed = Matches(F.text & ~F.text.startswith("/"))
    router.message.register(amount_given, StateFilter(AdjustInput.amount), IsStaff(), typed)
    router.message.register(reason_given, StateFilter(AdjustInput.reason), IsStaff(), typed)
    staff_press = StaffPress()
    router.callback_query.register(press, MemberCare.filter(), staff_press)
    router.callback_query.register(confirm_below_zero, AdjustConfirm.filter(), staff_press)
    router.callback_query.register(grant, CareGrant.filter(), staff_press)
    router.callback_query.register(outcome, CallbackOutcomeChoice.filter(), staff_press)
    for data in (MemberCare, AdjustConfirm, CareGrant, CallbackOutcomeChoice):
        router.callback_query.register(not_staff_press, data.filter())
    return router
