"""Freezing a member: the staff's note stays internal, the member is told neutrally in their
language when frozen and when active again, and their card says what they can still do."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.clock import FixedClock
from domain.models import Member, Push
from domain.transaction import write_transaction
from tests.conftest import STAFF_ID, Conversation
from tests.fake_telegram import message_update
from tests.test_errors_i18n import LANGUAGE_CODE, assert_all_chinese

MEMBER = 4343
NOTE = "suspicious many accounts"
ON_HOLD = {"en": "Your account is on hold", "zh": "您的账户已暂停使用"}
CARD_ON_HOLD = {"en": "account is on hold", "zh": "账户目前暂停使用"}
ACTIVE_AGAIN = {"en": "Your account is active again", "zh": "您的账户已恢复正常"}
REFUSED = {"en": "account is on hold", "zh": "账户目前暂停使用"}


async def _join(chat: Conversation, session: AsyncSession, lang: str) -> str:
    await chat.send(message_update(MEMBER, "/start", first_name="小林", language_code=LANGUAGE_CODE[lang]))
    await session.rollback()
    code = await session.scalar(select(Member.code).where(Member.telegram_id == MEMBER))
    assert code is not None
    return code


def _to_member(chat: Conversation, method: str = "sendMessage") -> list[str]:
    field = "caption" if method == "sendPhoto" else "text"
    return [
        str(c.params[field]) for c in chat.fake.calls_of(method)
        if c.params["chat_id"] == str(MEMBER)
    ]


def _reads_well(text: str, lang: str) -> None:
    assert NOTE not in text and "suspicious" not in text
    if lang == "zh":
        assert_all_chinese(text)


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_freeze_and_unfreeze_end_to_end(
    chat: Conversation, session: AsyncSession, api: httpx.AsyncClient, lang: str
) -> None:
    code = await _join(chat, session, lang)
    await chat.send(message_update(STAFF_ID, f"/freeze {code} {NOTE}"))
    staff_reply = chat.fake.calls_of("sendMessage")[-1]
    assert staff_reply.params["chat_id"] == str(STAFF_ID)
    assert NOTE in staff_reply.params["text"]  # staff keep seeing their note

    assert await chat.app.sender.deliver_pending() == 1
    [told] = [t for t in _to_member(chat) if ON_HOLD[lang] in t]
    _reads_well(told, lang)

    await chat.send(message_update(MEMBER, "/card", language_code=LANGUAGE_CODE[lang]))
    caption = _to_member(chat, "sendPhoto")[-1]
    assert CARD_ON_HOLD[lang] in caption and "/coupons" in caption
    _reads_well(caption, lang)

    await chat.send(message_update(MEMBER, "/checkin", language_code=LANGUAGE_CODE[lang]))
    refusal = _to_member(chat)[-1]
    assert REFUSED[lang] in refusal
    _reads_well(refusal, lang)

    # At the till and at the counter the member is refused; the cashier sees the note.
    order = await api.post("/api/v1/orders", json={"order_id": "F1", "member": code, "amount": "10.00"})
    assert order.status_code == 403 and NOTE not in order.text
    await chat.send(message_update(STAFF_ID, f"/sale {code} 10.00"))
    at_counter = chat.fake.calls_of("sendMessage")[-1]
    assert at_counter.params["chat_id"] == str(STAFF_ID) and NOTE in at_counter.params["text"]

    await chat.send(message_update(STAFF_ID, f"/unfreeze {code}"))
    assert await chat.app.sender.deliver_pending() == 1
    [again] = [t for t in _to_member(chat) if ACTIVE_AGAIN[lang] in t]
    _reads_well(again, lang)
    await chat.send(message_update(MEMBER, "/card", language_code=LANGUAGE_CODE[lang]))
    assert CARD_ON_HOLD[lang] not in _to_member(chat, "sendPhoto")[-1]


async def test_notices_are_not_marketing_and_not_held_by_quiet_hours(
    chat: Conversation, session: AsyncSession, clock: FixedClock
) -> None:
    code = await _join(chat, session, "en")
    async with write_transaction(session):
        await session.execute(update(Member).values(marketing_opt_in=False))
    clock.set(datetime(2026, 3, 10, 15, 0, tzinfo=UTC))  # 23:00 in Shanghai
    await chat.send(message_update(STAFF_ID, f"/freeze {code} {NOTE}"))
    assert await chat.app.sender.deliver_pending() == 1
    assert any(ON_HOLD["en"] in t for t in _to_member(chat))


async def test_only_a_change_of_standing_is_told(
    chat: Conversation, session: AsyncSession
) -> None:
    code = await _join(chat, session, "en")
    await chat.send(message_update(STAFF_ID, f"/unfreeze {code}"))  # was active: nothing to tell
    await chat.send(message_update(STAFF_ID, f"/freeze {code} {NOTE}"))
    await chat.send(message_update(STAFF_ID, f"/freeze {code} second thoughts"))
    assert "already frozen" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    await session.rollback()
    kinds = (await session.scalars(select(Push.kind).order_by(Push.id))).all()
    assert kinds == ["account_frozen"]
    assert await session.scalar(select(func.count(Push.id))) == 1
