"""Staff at the counter: /sale and /refund through the same use cases as the till API;
/freeze and /unfreeze for a suspicious member."""

from __future__ import annotations

from dataclasses import asdict

from aiogram import Router
from aiogram.filters import Command, CommandObject, Filter
from aiogram.types import Message, User
from sqlalchemy.ext.asyncio import AsyncSession

from domain import members, orders
from domain.audit import Actor
from domain.errors import InvalidInput, Reason
from domain.money import MoneyFormatError, parse_money
from domain.shop import Shop
from handlers.outbox_signal import OutboxSignal
from handlers.texts import Texts


class IsStaff(Filter):
    """Staff ids (admins included) reach the doors as workflow data from the settings."""

    async def __call__(self, message: Message, staff_ids: frozenset[int]) -> bool:
        user: User | None = message.from_user
        return user is not None and user.id in staff_ids


def _amount(text: str) -> int:
    try:
        return parse_money(text)
    except MoneyFormatError as exc:
        raise InvalidInput("amount", Reason.NOT_MONEY) from exc


def _request_id(message: Message) -> str:
    # One chat message is one sale: a re-delivered update can never count twice.
    return f"tg{message.chat.id}-{message.message_id}"


async def sale(
    message: Message, command: CommandObject, session: AsyncSession, shop: Shop, texts: Texts,
    lang: str, outbox_signal: OutboxSignal, admin_ids: frozenset[int],
) -> None:
    args = (command.args or "").split()
    if len(args) not in (2, 3):
        await message.answer(texts.render(lang, "staff/sale_usage"))
        return
    order_id = args[2] if len(args) == 3 else _request_id(message)
    outcome = await orders.place_order(
        session, shop,
        orders.OrderRequest(order_id=order_id, member=args[0], amount=_amount(args[1])),
        actor=actor_of(message.from_user, admin_ids),
    )
    outbox_signal.wake()
    await message.answer(
        texts.render(
            lang, "staff/sale_done", r=asdict(outcome.result), replayed=outcome.replayed,
            program=shop.program,
        )
    )


async def refund(
    message: Message, command: CommandObject, session: AsyncSession, shop: Shop, texts: Texts,
    lang: str, outbox_signal: OutboxSignal, admin_ids: frozenset[int],
) -> None:
    args = (command.args or "").split()
    if len(args) != 2:
        await message.answer(texts.render(lang, "staff/refund_usage"))
        return
    outcome = await orders.refund_order(
        session, shop, order_id=args[0], refund_id=_request_id(message), amount=_amount(args[1]),
        actor=actor_of(message.from_user, admin_ids),
    )
    outbox_signal.wake()  # the member's refund notice, if any
    await message.answer(
        texts.render(
            lang, "staff/refund_done", r=asdict(outcome.result), replayed=outcome.replayed,
            program=shop.program,
        )
    )


def actor_of(user: User | None, admin_ids: frozenset[int]) -> Actor:
    """Who acts, in which role: for the audit line of what they change."""
    assert user is not None
    return Actor(user.id, "admin" if user.id in admin_ids else "staff")


async def freeze(
    message: Message, command: CommandObject, session: AsyncSession, shop: Shop, texts: Texts,
    lang: str, outbox_signal: OutboxSignal, admin_ids: frozenset[int],
) -> None:
    parts = (command.args or "").split(maxsplit=1)
    if len(parts) != 2:
        await message.answer(texts.render(lang, "staff/freeze_usage"))
        return
    hold = await members.freeze(
        session, shop, parts[0], parts[1], actor=actor_of(message.from_user, admin_ids)
    )
    outbox_signal.wake()
    await message.answer(texts.render(lang, "staff/frozen", hold=hold))


async def unfreeze(
    message: Message, command: CommandObject, session: AsyncSession, shop: Shop, texts: Texts,
    lang: str, outbox_signal: OutboxSignal, admin_ids: frozenset[int],
) -> None:
    parts = (command.args or "").split()
    if len(parts) != 1:
        await message.answer(texts.render(lang, "staff/freeze_usage"))
        return
    hold = await members.unfreeze(
        session, shop, parts[0], actor=actor_of(message.from_user, admin_ids)
    )
    outbox_signal.wake()
    await message.answer(texts.render(lang, "staff/frozen", hold=hold))


async def not_staff(message: Message, texts: Texts, lang: str) -> None:
    await message.answer(texts.render(lang, "staff/only"))


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(sale, Command("sale"), IsStaff())
    router.message.register(refund, Command("refund"), IsStaff())
    router.message.register(freeze, Command("freeze"), IsStaff())
    router.message.register(unfreeze, Command("unfreeze"), IsStaff())
    router.message.register(
        not_staff, Command("sale", "refund", "freeze", "unfreeze", "callbacks")
    )
    return router
