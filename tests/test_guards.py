"""Rules that cannot be gamed with crafted input: a redemption screen redeems once whatever is
pressed, buttons act only in the member's private chat, ids are refused the same way through
every door, and crafted numbers in buttons or commands get a polite refusal, not a crash."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.middlewares import Throttle
from domain import points, rewards
from domain.coupons import issue_coupon
from domain.models import Coupon, LedgerEntry, Member, Order
from domain.transaction import write_transaction
from handlers.callbacks import CouponOpen, DeleteStep, RewardRedeem
from tests.conftest import STAFF_ID, Conversation
from tests.fake_telegram import Call, callback_update, message_update

MEMBER = 4242
GROUP = -4001  # a group chat the member is in
GENERIC_ERROR = "something went wrong"


def _no_flood_limit(chat: Conversation) -> None:
    """The presses here are a robot's: every one must reach the handlers, not the flood
    notice."""
    for middleware in chat.app.dispatcher.update.outer_middleware:
        if isinstance(middleware, Throttle):
            middleware.limit = 10_000


async def _register(
    chat: Conversation, session: AsyncSession, language: str = "en", points_given: int = 0
) -> Member:
    _no_flood_limit(chat)
    await chat.send(message_update(MEMBER, "/start", first_name="Lin", language_code=language))
    await session.rollback()
    member = await session.scalar(select(Member).where(Member.telegram_id == MEMBER))
    assert member is not None
    if points_given:
        async with write_transaction(session):
            await points.earn(
                session, chat.app.shop, member.id, kind="adjustment", amount=points_given,
                reason="test", key=f"test:{member.id}",
            )
    return member


def _answers(chat: Conversation) -> list[Call]:
    return chat.fake.calls_of("answerCallbackQuery")


async def _reward_coupons(session: AsyncSession, member_id: int) -> int:
    await session.rollback()
    return int(
        await session.scalar(
            select(func.count(Coupon.id)).where(
                Coupon.member_id == member_id, Coupon.source == "reward:five_off"
            )
        )
        or 0
    )


# ------------------------------------------------------------------ the double-tap guard


async def test_racing_crafted_confirmations_redeem_once(
    chat: Conversation, session: AsyncSession
) -> None:
    member = await _register(chat, session, points_given=10_000)  # five_off: 500, at most 5
    member_id = member.id
    await session.rollback()
    balance = await session.scalar(select(Member.points_balance).where(Member.id == member_id))
    assert balance == 10_100
    await chat.send(chat.fake.press(MEMBER, RewardRedeem(key="five_off", confirmed=False).pack()))
    screen = chat.fake.calls_of("editMessageText")[-1]
    shown = [b["callback_data"] for row in screen.params["reply_markup"]["inline_keyboard"]
             for b in row if b["callback_data"].startswith("rwr:")]
    assert len(shown) == 1
    # the screen's own button pressed twice, and every count a crafted client could try
    crafted = [shown[0], shown[0]] + [f"rwr:five_off:1:{seen}" for seen in
                                      ("-1", "0", "1", "2", "3", "", "00000000000000000")]
    answered = len(_answers(chat))
    await asyncio.gather(*(chat.send(chat.fake.press(MEMBER, data)) for data in crafted))
    refusals = [a.params["text"] for a in _answers(chat)[answered:] if "text" in a.params]
    assert len(refusals) == len(crafted) - 1  # the one redemption edits the screen instead
    assert all("Already done" in text for text in refusals), refusals

    assert await _reward_coupons(session, member_id) == 1
    await session.rollback()
    kept = await session.scalar(select(Member.points_balance).where(Member.id == member_id))
    spent = await session.scalar(
        select(func.count(LedgerEntry.id)).where(
            LedgerEntry.member_id == member_id, LedgerEntry.kind == "reward"
        )
    )
    assert kept == balance - 500 and spent == 1

    # A fresh confirmation screen redeems again: the guard stops taps, not members.
    await chat.send(chat.fake.press(MEMBER, RewardRedeem(key="five_off", confirmed=False).pack()))
    again = chat.fake.calls_of("editMessageText")[-1]
    fresh = [b["callback_data"] for row in again.params["reply_markup"]["inline_keyboard"]
             for b in row if b["callback_data"].startswith("rwr:")]
    assert fresh != shown
    await chat.send(chat.fake.press(MEMBER, fresh[0]))
    assert await _reward_coupons(session, member_id) == 2


async def test_a_confirmation_is_the_members_own(
    chat: Conversation, session: AsyncSession
) -> None:
    """Another member's token (or one for another reward) redeems nothing."""
    member = await _register(chat, session, points_given=10_000)
    someone_else = rewards.confirmation_token(chat.app.shop, member.id + 1, "five_off", 0)
    other_reward = rewards.confirmation_token(chat.app.shop, member.id, "free_item", 0)
    for token in (someone_else, other_reward):
        data = RewardRedeem(key="five_off", confirmed=True, token=token).pack()
        await chat.send(chat.fake.press(MEMBER, data))
        assert "Already done" in _answers(chat)[-1].params["text"]
    assert await _reward_coupons(session, member.id) == 0


# ------------------------------------------------------------------ buttons in groups


async def test_buttons_pressed_in_a_group_do_nothing_but_say_so(
    chat: Conversation, session: AsyncSession
) -> None:
    member = await _register(chat, session, language="zh-hans")
    async with write_transaction(session):
        coupon = await issue_coupon(
            session, chat.app.shop, member.id, source="test", kind="amount_off", value=500,
            min_spend=0, valid_days=30,
        )
        coupon_id = coupon.id
    edits = len(chat.fake.calls_of("editMessageText"))
    presses = [
        CouponOpen(coupon_id=coupon_id).pack(),  # the coupon's QR would be posted to the group
        DeleteStep(step="confirm").pack(),
        DeleteStep(step="reason", reason="privacy").pack(),  # the erasure itself
        RewardRedeem(key="five_off", confirmed=False).pack(),
    ]
    for data in presses:
        await chat.send(
            callback_update(MEMBER, data, chat_id=GROUP, language_code="zh-hans")
        )
        answer = _answers(chat)[-1].params
        assert "按钮只在与我的私聊中有效" in answer["text"], data
        assert str(answer.get("show_alert")).lower() == "true"
    assert not chat.fake.calls_of("sendPhoto")
    assert len(chat.fake.calls_of("editMessageText")) == edits
    await session.rollback()
    kept = await session.get(Member, member.id, populate_existing=True)
    assert kept is not None and kept.status == "active" and kept.first_name == "Lin"

    # the same coupon button in the member's private chat opens it
    await chat.send(callback_update(MEMBER, CouponOpen(coupon_id=coupon_id).pack()))
    assert chat.fake.calls_of("sendPhoto")[-1].params["chat_id"] == str(MEMBER)


async def test_group_press_in_english(chat: Conversation, session: AsyncSession) -> None:
    await _register(chat, session)
    await chat.send(callback_update(MEMBER, DeleteStep(step="confirm").pack(), chat_id=GROUP))
    assert "only in our private chat" in _answers(chat)[-1].params["text"]


# ------------------------------------------------------------------ crafted ids and numbers


@pytest.mark.parametrize("coupon_id", ["12345678901234567890123", "-5", "2147483648"])
async def test_crafted_coupon_ids_are_not_found_politely(
    chat: Conversation, session: AsyncSession, coupon_id: str
) -> None:
    await _register(chat, session)
    await chat.send(callback_update(MEMBER, f"cpn:{coupon_id}"))
    assert _answers(chat)[-1].params["text"] == "Coupon not found."
    assert not chat.fake.calls_of("sendPhoto")


async def test_a_crafted_birthday_month_is_refused_not_crashed(
    chat: Conversation, session: AsyncSession
) -> None:
    await _register(chat, session)
    await chat.send(callback_update(MEMBER, "bday:day:100000000000000000000:0"))
    answer = _answers(chat)[-1].params["text"]
    assert "not a date I can use" in answer


async def _staff_says(chat: Conversation, text: str, language: str = "en") -> str:
    await chat.send(message_update(STAFF_ID, text, language_code=language))
    return str(chat.fake.calls_of("sendMessage")[-1].params["text"])


async def _orders(session: AsyncSession) -> list[str]:
    await session.rollback()
    return list((await session.scalars(select(Order.order_id).order_by(Order.id))).all())


@pytest.mark.parametrize("order_id", ["订单1", "o/1", "a" * 65, "１２３", "o1\u200b"])
async def test_sale_refuses_order_ids_the_api_refuses(
    chat: Conversation, session: AsyncSession, order_id: str
) -> None:
    code = (await _register(chat, session)).code
    reply = await _staff_says(chat, f"/sale {code} 10.00 {order_id}")
    assert "Not done" in reply and "<b>order id</b>" in reply
    assert GENERIC_ERROR not in reply.lower()
    assert await _orders(session) == []


async def test_sale_id_refusal_in_chinese(chat: Conversation, session: AsyncSession) -> None:
    code = (await _register(chat, session)).code
    reply = await _staff_says(chat, f"/sale {code} 10.00 订单1", language="zh-hans")
    assert "<b>订单号</b>只能包含英文字母、数字及 . _ : - 符号" in reply


async def test_every_order_the_chat_takes_can_be_refunded_through_the_api(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    code = (await _register(chat, session)).code
    await _staff_says(chat, f"/sale {code} 10.00 till-7:A.b_c")
    await _staff_says(chat, f"/sale {code} 12.00")  # the chat's own id for the sale
    ids = await _orders(session)
    assert len(ids) == 2
    for n, order_id in enumerate(ids):
        refund = await api.post(
            f"/api/v1/orders/{order_id}/refunds", json={"refund_id": f"r{n}", "amount": "1.00"}
        )
        assert refund.status_code == 201, (order_id, refund.text)


async def test_staff_refund_refuses_a_crafted_order_id(
    chat: Conversation, session: AsyncSession
) -> None:
    await _register(chat, session)
    reply = await _staff_says(chat, "/refund o\x00x 1.00")
    assert "Not done" in reply and "<b>order id</b>" in reply


@pytest.mark.parametrize("amount", ["1e999999", "1e5", "NaN", "Infinity", "٣", "１０"])
async def test_sale_with_a_crafted_amount_is_refused_politely(
    chat: Conversation, session: AsyncSession, amount: str
) -> None:
    code = (await _register(chat, session)).code
    reply = await _staff_says(chat, f"/sale {code} {amount}")
    assert "must be written as a number such as 199.00" in reply
    assert await _orders(session) == []
