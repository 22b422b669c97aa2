"""Refusals are worded in the reader's language from the error's code and values: no English
sentence from the domain reaches a Chinese reply, and the till API still answers in English."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.errors import (
    CouponNotUsable,
    DomainError,
    InvalidInput,
    OffsetNotAllowed,
    Reason,
    RefundTooLarge,
    UnknownCoupon,
)
from domain.models import Member
from handlers.api import REASON_MESSAGES, api_message
from handlers.texts import Texts, load_texts
from tests.conftest import STAFF_ID, Conversation
from tests.fake_telegram import message_update

MEMBER = 4242
LANGUAGE_CODE = {"en": "en", "zh": "zh-hans"}


def words(text: str) -> str:
    """What a person reads as words: without markup, ids and codes in <code>, or commands."""
    text = re.sub(r"<code>.*?</code>", "", text)
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"/[a-z_]+", "", text)


def assert_all_chinese(text: str) -> None:
    letters = re.findall(r"[A-Za-z]+", words(text))
    assert not letters, f"English in a Chinese reply: {letters} in {text!r}"


async def _register(chat: Conversation, session: AsyncSession) -> str:
    await chat.send(message_update(MEMBER, "/start", first_name="Lin"))
    await session.rollback()
    code = await session.scalar(select(Member.code).where(Member.telegram_id == MEMBER))
    assert code is not None
    return code


async def _staff(chat: Conversation, text: str, lang: str) -> str:
    await chat.send(message_update(STAFF_ID, text, language_code=LANGUAGE_CODE[lang]))
    reply = chat.fake.calls_of("sendMessage")[-1]
    assert reply.params["chat_id"] == str(STAFF_ID)
    return str(reply.params["text"])


async def test_chinese_staff_read_refusals_in_chinese(
    chat: Conversation, session: AsyncSession
) -> None:
    code = await _register(chat, session)
    bad_amount = await _staff(chat, f"/sale {code} 12.3x", "zh")
    assert bad_amount == "未执行：<b>金额</b>须为数字金额，最多两位小数，例如 199.00。未做任何更改。"
    assert_all_chinese(bad_amount)
    zero = await _staff(chat, f"/sale {code} 0", "zh")
    assert zero == "未执行：<b>金额</b>须大于零。未做任何更改。"
    too_big = await _staff(chat, f"/sale {code} 99999999", "zh")
    assert "超过了单笔订单上限（¥" in too_big
    assert_all_chinese(too_big)

    await _staff(chat, f"/sale {code} 100.00 o-1", "zh")
    await _staff(chat, "/refund o-1 40.00", "zh")
    refused = await _staff(chat, "/refund o-1 70.00", "zh")
    assert refused == "未执行：订单 <code>o-1</code> 仅剩 ¥60.00 可退。未做任何更改。"
    assert_all_chinese(refused)
    bad_refund = await _staff(chat, "/refund o-1 abc", "zh")
    assert_all_chinese(bad_refund)
    assert "金额" in bad_refund


async def test_english_staff_read_the_same_refusals_in_english(
    chat: Conversation, session: AsyncSession
) -> None:
    code = await _register(chat, session)
    bad_amount = await _staff(chat, f"/sale {code} 12.3x", "en")
    assert bad_amount == (
        "Not done: the <b>amount</b> must be written as a number such as 199.00, with at most "
        "two decimals. Nothing was changed."
    )
    await _staff(chat, f"/sale {code} 100.00 o-1", "en")
    await _staff(chat, "/refund o-1 40.00", "en")
    refused = await _staff(chat, "/refund o-1 70.00", "en")
    assert refused == (
        "Not done: only CN¥60.00 of order <code>o-1</code> is left to refund. Nothing was changed."
    )


async def test_till_api_still_answers_in_english(
    chat: Conversation, session: AsyncSession, api: httpx.AsyncClient
) -> None:
    code = await _register(chat, session)
    order = await api.post("/api/v1/orders", json={"order_id": "T1", "member": code, "amount": "100.00"})
    assert order.status_code == 201
    refused = await api.post("/api/v1/orders/T1/refunds", json={"refund_id": "R1", "amount": "170.00"})
    assert refused.status_code == 409  # well formed, but more than is left of the order
    assert refused.json() == {
        "error": "refund_too_large", "field": "amount",
        "message": "only 100.00 of order T1 is left to refund",
    }
    too_big = await api.post("/api/v1/orders", json={"order_id": "T2", "member": code, "amount": "999999999"})
    assert too_big.status_code == 422
    assert too_big.json() == {
        "error": "invalid_input", "field": "amount",
        "message": "must be a decimal amount with ASCII digits and at most two decimals, "
        "from 0.01 up to 100000.00",
    }


# Each refusal the domain can make on a field, with the values it carries.
SAMPLES: list[DomainError] = [
    InvalidInput("order_id", Reason.LENGTH, min_length=1, max_length=64),
    InvalidInput("order_id", Reason.ID_CHARACTERS, max_length=64),
    InvalidInput("amount", Reason.NOT_MONEY),
    InvalidInput("amount", Reason.NOT_POSITIVE),
    InvalidInput("amount", Reason.ABOVE_MAX, limit=10_000_000),
    InvalidInput("redeem_points", Reason.NEGATIVE),
    InvalidInput("occurred_at", Reason.NO_TIMEZONE),
    InvalidInput("occurred_at", Reason.IN_FUTURE),
    InvalidInput("occurred_at", Reason.TOO_OLD, days=30),
    InvalidInput("kind", Reason.UNKNOWN_KIND, kinds=["review", "share"]),
    OffsetNotAllowed("redeem_points", Reason.OFFSET_STEP, step=1),
    OffsetNotAllowed("redeem_points", Reason.OFFSET_CAP, max_points=50, percent=50, amount=100),
    OffsetNotAllowed("redeem_points", Reason.OFFSET_BALANCE, balance=100),
    UnknownCoupon("coupon_code", Reason.COUPON_UNKNOWN),
    CouponNotUsable("coupon_code", Reason.COUPON_OTHER_MEMBER),
    *(CouponNotUsable("coupon_code", Reason.COUPON_STATUS, status=s) for s in ("used", "expired", "void")),
    CouponNotUsable("coupon_code", Reason.COUPON_NOT_VALID_NOW),
    CouponNotUsable("coupon_code", Reason.COUPON_MIN_SPEND, min_spend=10_000),
    CouponNotUsable("coupon_code", Reason.COUPON_JUST_USED),
    RefundTooLarge("amount", Reason.REFUND_OVER_LEFT, left=6_000, order_id="1042"),
]


def test_every_reason_is_sampled_and_worded_for_the_till() -> None:
    assert {e.reason for e in SAMPLES} == set(Reason)
    assert set(REASON_MESSAGES) == set(Reason)


@pytest.mark.parametrize("error", SAMPLES, ids=lambda e: f"{e.code}-{e.reason}")
def test_every_refusal_is_worded_in_both_languages_and_for_the_till(error: DomainError) -> None:
    texts: Texts = load_texts()
    context = {**error.details, "reason": error.reason, "details": error.details, "staff": True}
    zh = texts.render("zh", f"errors/{error.code}", **context)
    en = texts.render("en", f"errors/{error.code}", **context)
    assert zh.startswith("未执行：") and zh.endswith("未做任何更改。")
    assert_all_chinese(zh)
    assert "无效" not in zh  # a specific wording, not the fallback
    assert en.startswith("Not done: ") and " is not valid." not in en
    assert api_message(error) == REASON_MESSAGES[error.reason](error.details)
