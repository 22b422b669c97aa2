"""Staff at the counter (/sale, /refund) and the member's receipt, delivered via the outbox."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import LedgerEntry, Member, Push
from tests.conftest import STAFF_ID, Conversation
from tests.fake_telegram import message_update

MEMBER = 4242


async def _register(chat: Conversation, session: AsyncSession, language: str = "en") -> str:
    await chat.send(message_update(MEMBER, "/start", first_name="Lin", language_code=language))
    await session.rollback()
    code = await session.scalar(select(Member.code).where(Member.telegram_id == MEMBER))
    assert code is not None
    return code


async def _balance(session: AsyncSession) -> int:
    await session.rollback()
    balance = await session.scalar(select(Member.points_balance).where(Member.telegram_id == MEMBER))
    assert balance is not None
    return balance


async def test_sale_by_staff_credits_and_member_gets_receipt(
    chat: Conversation, session: AsyncSession
) -> None:
    code = await _register(chat, session)
    await chat.send(message_update(STAFF_ID, f"/sale {code[:4]}-{code[4:]} 199.00 1042", first_name="Cashier"))
    staff_reply = chat.fake.calls_of("sendMessage")[-1]
    assert staff_reply.params["chat_id"] == str(STAFF_ID)
    assert "1042" in staff_reply.params["text"] and "+199" in staff_reply.params["text"]
    assert await _balance(session) == 299

    delivered = await chat.app.sender.deliver_pending()
    assert delivered == 1
    receipt = chat.fake.calls_of("sendMessage")[-1]
    assert receipt.params["chat_id"] == str(MEMBER)
    assert "+199" in receipt.params["text"] and "299" in receipt.params["text"]
    assert "4,801 growth to <b>Silver</b>" in receipt.params["text"]
    assert await chat.app.sender.deliver_pending() == 0  # sent once


async def test_upgrade_receipt_congratulates_in_chinese(chat: Conversation, session: AsyncSession) -> None:
    code = await _register(chat, session, language="zh-hans")
    await chat.send(message_update(STAFF_ID, f"/sale {code} 5000.00 big-1"))
    await chat.app.sender.deliver_pending()
    receipt = chat.fake.calls_of("sendMessage")[-1]
    assert receipt.params["chat_id"] == str(MEMBER)
    assert "恭喜您升级为银卡会员" in receipt.params["text"]
    assert "9.5折" in receipt.params["text"]
    await chat.send(message_update(MEMBER, "/card"))
    caption = chat.fake.calls_of("sendPhoto")[-1].params["caption"]
    assert "银卡会员" in caption and "5,100" in caption and "成长值（近12个月）：5,000" in caption


async def test_same_chat_message_twice_counts_once(chat: Conversation, session: AsyncSession) -> None:
    code = await _register(chat, session)
    update = message_update(STAFF_ID, f"/sale {code} 10.00", message_id=77)
    await chat.send(update)
    await chat.send({**update, "update_id": update["update_id"] + 1000})
    assert "already recorded" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert await _balance(session) == 110


async def test_refund_by_staff(chat: Conversation, session: AsyncSession) -> None:
    code = await _register(chat, session)
    await chat.send(message_update(STAFF_ID, f"/sale {code} 100.00 o-1"))
    await chat.send(message_update(STAFF_ID, "/refund o-1 40.00"))
    reply = chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert "Cash to return: <b>40.00</b>" in reply and "taken back 40" in reply
    assert await _balance(session) == 160
    await chat.send(message_update(STAFF_ID, "/refund o-1 70.00"))
    assert "60.00" in chat.fake.calls_of("sendMessage")[-1].params["text"]  # what is left
    assert await _balance(session) == 160


async def test_non_staff_is_refused_and_nothing_changes(chat: Conversation, session: AsyncSession) -> None:
    code = await _register(chat, session)
    await chat.send(message_update(MEMBER, f"/sale {code} 1000.00"))
    assert "staff only" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    await chat.send(message_update(MEMBER, "/refund x 1.00"))
    assert "staff only" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert await _balance(session) == 100
    assert await session.scalar(select(func.count(Push.id))) == 0


async def test_bad_staff_input_gets_clear_answers(chat: Conversation, session: AsyncSession) -> None:
    code = await _register(chat, session)
    await chat.send(message_update(STAFF_ID, "/sale"))
    assert "Usage" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    await chat.send(message_update(STAFF_ID, f"/sale {code} -5"))
    assert "amount" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    await chat.send(message_update(STAFF_ID, "/sale NOBODY123 5.00"))
    assert "No member" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    await chat.send(message_update(STAFF_ID, "/refund nope 5.00"))
    assert "no order" in chat.fake.calls_of("sendMessage")[-1].params["text"].lower()
    await session.rollback()
    entries = await session.scalar(
        select(func.count(LedgerEntry.id)).join(Member).where(Member.telegram_id == MEMBER)
    )
    assert entries == 1  # the sign-up bonus only
