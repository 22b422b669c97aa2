"""Staff replies name what the shop knows (the member code, its own order id), never the
bot's internal ids (refund request ids made from the chat, row ids)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.member_code import format_member_code
from domain.models import Member, Refund
from tests.conftest import STAFF_ID, Conversation
from tests.fake_telegram import message_update

MEMBER = 4444


async def test_sale_and_refund_replies_show_no_internal_ids(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(MEMBER, "/start"))
    await session.rollback()
    code = await session.scalar(select(Member.code).where(Member.telegram_id == MEMBER))
    assert code is not None

    await chat.send(message_update(STAFF_ID, f"/sale {code} 100.00 1042", message_id=501))
    sale = chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert sale.startswith(
        f"✅ Order <code>1042</code> for member <code>{format_member_code(code)}</code>\n"
    )

    await chat.send(message_update(STAFF_ID, "/refund 1042 40.00", message_id=502))
    refund = chat.fake.calls_of("sendMessage")[-1].params["text"]
    await session.rollback()
    refund_id = await session.scalar(select(Refund.refund_id))
    assert refund_id is not None and refund_id not in refund and "502" not in refund
    assert refund.startswith("↩️ Refund of order <code>1042</code>: 40.00")
