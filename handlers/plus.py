"""/plus: the paid membership, sold as a monthly Telegram Stars subscription.

The offer and the member's PLUS with Join / Start trial / Stop or resume renewing; the
subscription invoice link (``createInvoiceLink`` in XTR with a 30-day ``subscription_period``);
Telegram's pre-checkout question answered at once; each ``successful_payment`` recorded once
by its charge id; an admin's ``/plusrefund``. What the member is told after a payment comes
through the outbox, written with the payment.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiogram import Bot, F, Router
from aiogram.filters import Command, CommandObject
from aiogram.types import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LabeledPrice,
    Message,
    PreCheckoutQuery,
    User,
)
from sqlalchemy.ext.asyncio import AsyncSession

from domain import plus
from domain.models import Member
from domain.shop import Shop
from handlers.callbacks import PlusAction
from handlers.filters import Matches
from handlers.outbox_signal import OutboxSignal
from handlers.staff import IsStaff
from handlers.texts import Texts


class IsAdmin(IsStaff):
    """Admins only (``admin_ids`` workflow data); a staff command, so it registers nobody."""

    async def __call__(self, message: Message, admin_ids: frozenset[int]) -> bool:
        user: User | None = message.from_user
        return user is not None and user.id in admin_ids


def _buttons(texts: Texts, lang: str, s: plus.PlusStanding) -> InlineKeyboardMarkup | None:
    def button(action: str, key: str, **values: int) -> list[InlineKeyboardButton]:
        return [
            InlineKeyboardButton(
                text=texts.label(lang, key, **values),
                callback_data=PlusAction(action=action).pack(),
            )
        ]

    rows = []
    if not s.frozen and s.state != plus.PAID:
        rows.append(button("join", "plus_join", stars=s.price_stars))
        if s.trial_available:
            rows.append(button("trial", "plus_trial", days=s.trial_days))
    elif s.state == plus.PAID:
        rows.append(
            button("resume", "plus_resume") if s.cancelled else button("cancel", "plus_cancel")
        )
    return InlineKeyboardMarkup(inline_keyboard=rows) if rows else None


async def overview(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, member: Member, lang: str
) -> None:
    s = await plus.standing(session, shop, member.id)
    if not s.enabled:
        raise plus.PlusUnavailable()
    await message.answer(
        texts.render(lang, "plus/overview", s=s), reply_markup=_buttons(texts, lang, s)
    )


async def press(
    query: CallbackQuery, callback_data: PlusAction, bot: Bot, session: AsyncSession,
    shop: Shop, texts: Texts, member: Member | None, lang: str,
) -> None:
    """Every press acts on the member who pressed, whatever message it was on."""
    if member is None or query.message is None:
        await query.answer()
        return
    action = callback_data.action
    if action == "join":
        s = await plus.check_join(session, shop, member.id)
        link = await bot.create_invoice_link(
            title=texts.label(lang, "plus_invoice_title"),
            description=texts.label(lang, "plus_invoice_description"),
            payload=plus.invoice_payload(member.id),
            provider_token="",  # Telegram Stars take no payment provider
            currency=plus.CURRENCY,
            prices=[
                LabeledPrice(label=texts.label(lang, "plus_price_label"), amount=s.price_stars)
            ],
            subscription_period=plus.SUBSCRIPTION_PERIOD_SECONDS,
        )
        pay = InlineKeyboardButton(
            text=texts.label(lang, "plus_pay", stars=s.price_stars), url=link
        )
        await query.answer()
        await query.message.answer(
            texts.render(lang, "plus/invoice", stars=s.price_stars),
            reply_markup=InlineKeyboardMarkup(inline_keyboard=[[pay]]),
        )
    elif action == "trial":
        s = await plus.start_trial(session, shop, member.id)
        await query.answer()
        await query.message.answer(texts.render(lang, "plus/trial_started", s=s))
    elif action in ("cancel", "resume"):
        cancel = action == "cancel"
        charge = await plus.subscription_charge(session, shop, member.id, cancelled=cancel)
        await bot.edit_user_star_subscription(
            user_id=query.from_user.id, telegram_payment_charge_id=charge, is_canceled=cancel
        )
        s = await plus.set_cancelled(session, shop, member.id, cancelled=cancel)
        await query.answer()
        await query.message.answer(texts.render(lang, "plus/cancelled", s=s))
    else:
        await query.answer()


async def pre_checkout(
    query: PreCheckoutQuery, session: AsyncSession, shop: Shop, texts: Texts, lang: str
) -> None:
    """Telegram waits at most 10 seconds: one read, then the answer."""
    refusal = await plus.checkout_refusal(
        session, shop, query.from_user.id, query.invoice_payload, query.currency,
        query.total_amount,
    )
    if refusal is None:
        await query.answer(ok=True)
    else:
        await query.answer(
            ok=False, error_message=texts.render(lang, "plus/checkout_refused", reason=refusal)
        )


async def paid(
    message: Message, session: AsyncSession, shop: Shop, member: Member,
    outbox_signal: OutboxSignal,
) -> None:
    """A first payment or a renewal: recorded once by its charge id; the member is told
    through the outbox (activation or renewal, with the period's coupons)."""
    payment = message.successful_payment
    assert payment is not None
    expires = payment.subscription_expiration_date
    await plus.record_payment(
        session, shop, member.id,
        plus.StarsPayment(
            charge_id=payment.telegram_payment_charge_id, stars=payment.total_amount,
            expires_at=datetime.fromtimestamp(expires, UTC) if expires else None,
            is_recurring=bool(payment.is_recurring),
            is_first_recurring=bool(payment.is_first_recurring),
        ),
    )
    outbox_signal.wake()


async def refund(
    message: Message, command: CommandObject, bot: Bot, session: AsyncSession, shop: Shop,
    texts: Texts, lang: str, outbox_signal: OutboxSignal,
) -> None:
    parts = (command.args or "").split(maxsplit=1)
    if len(parts) != 2:
        await message.answer(texts.render(lang, "plus/refund_usage"))
        return
    charge, reason = parts
    target = await plus.refund_target(session, charge)
    await bot.refund_star_payment(user_id=target.telegram_id, telegram_payment_charge_id=charge)
    outcome = await plus.record_refund(session, shop, charge, reason)
    outbox_signal.wake()
    await message.answer(texts.render(lang, "plus/refund_done", r=outcome))


async def not_admin(message: Message, texts: Texts, lang: str) -> None:
    await message.answer(texts.render(lang, "plus/admins_only"))


def build_router() -> Router:
    router = Router(name=__name__)
    router.pre_checkout_query.register(pre_checkout)
    router.message.register(paid, Matches(F.successful_payment))
    router.message.register(refund, Command("plusrefund"), IsAdmin())
    router.message.register(not_admin, Command("plusrefund"))
    router.message.register(overview, Command("plus"))
    router.callback_query.register(press, PlusAction.filter())
    return router
