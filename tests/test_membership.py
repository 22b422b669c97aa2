"""Who is a member: nobody joins silently, staff commands make no members, buttons and updates
from strangers make none either, and the sign-up gifts are given once per Telegram account
(a keyed hash of the Telegram id is all that stays after erasure)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from sqlalchemy import func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.settings import Settings
from domain.clock import FixedClock
from domain.models import Coupon, FormerAccount, LedgerEntry, Member
from handlers import build_router
from handlers.callbacks import DeleteStep
from handlers.start import staff_commands
from tests.conftest import ADMIN_ID, STAFF_ID, TEST_TOKEN, Conversation
from tests.fake_telegram import callback_update, message_update, my_chat_member_update

USER = 4242
FRIEND = 5151


async def _members(session: AsyncSession, telegram_id: int | None = None) -> list[Member]:
    await session.rollback()  # a fresh snapshot: the bot wrote in its own sessions
    query = select(Member).execution_options(populate_existing=True).order_by(Member.id)
    if telegram_id is not None:
        query = query.where(Member.telegram_id == telegram_id)
    return list((await session.scalars(query)).all())


def _menu(params: dict[str, Any]) -> list[str]:
    return [b["text"] for row in params["reply_markup"]["keyboard"] for b in row]


def _texts(chat: Conversation) -> list[str]:
    return [c.params["text"] for c in chat.fake.calls_of("sendMessage")]


async def _leave(chat: Conversation, clock: FixedClock, user: int = USER) -> None:
    """/delete, confirm, skip the reason: the member's data is erased."""
    await chat.send(message_update(user, "/delete"))
    clock.advance(seconds=5)
    update = callback_update(user, DeleteStep(step="reason", reason="").pack())
    update["callback_query"]["message"]["date"] = int(clock.now().timestamp())
    await chat.send(update)
    assert "reply_markup" not in chat.fake.calls_of("editMessageText")[-1].params  # farewell


async def test_first_plain_message_welcomes_with_the_menu_and_registers_once(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "hello?", first_name="Lin"))
    assert len(chat.fake.calls_of("sendMessage")) == 1  # the welcome is the answer
    welcome = chat.fake.calls_of("sendMessage")[0]
    assert "Welcome to the club, <b>Lin</b>" in welcome.params["text"]
    assert "100</b> points" in welcome.params["text"]
    assert "💳 My card" in _menu(welcome.params)
    [member] = await _members(session)
    assert member.telegram_id == USER and member.points_balance == 100

    await chat.send(message_update(USER, "hello again"))
    assert "Welcome to the club" not in _texts(chat)[-1]  # the help this time
    assert len(await _members(session)) == 1


async def test_first_command_is_welcomed_then_answered(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "/points", language_code="zh-hans", first_name="小明"))
    texts = _texts(chat)
    assert len(texts) == 2
    assert "欢迎加入会员" in texts[0]
    assert "💳 会员卡" in _menu(chat.fake.calls_of("sendMessage")[0].params)
    assert "欢迎加入会员" not in texts[1]  # then the points they asked for
    assert len(await _members(session)) == 1


async def test_staff_commands_make_no_member(chat: Conversation, session: AsyncSession) -> None:
    await chat.send(message_update(USER, "/start", first_name="Lin"))
    [customer] = await _members(session)
    session.expunge(customer)  # keep its values readable after later snapshots
    await chat.send(message_update(STAFF_ID, f"/sale {customer.code} 10.00 o-1"))
    assert "Welcome" not in _texts(chat)[-1]
    await chat.send(message_update(ADMIN_ID, f"/setbirthday {customer.code} 07-01"))
    assert customer.code[:4] in _texts(chat)[-1]  # done for the member, by a non-member admin
    await chat.send(message_update(ADMIN_ID, "/callbacks"))
    await chat.send(message_update(STAFF_ID, f"/freeze {customer.code} test"))
    await chat.send(message_update(STAFF_ID, f"/unfreeze {customer.code}"))
    await chat.send(message_update(STAFF_ID, "/refund o-1 10.00"))
    await chat.send(message_update(FRIEND, "/sale ABCD-EFGH 10.00"))  # not staff: refused
    assert "Welcome" not in _texts(chat)[-1]
    assert all("Welcome" not in t for t in _texts(chat)[1:])
    assert [m.telegram_id for m in await _members(session)] == [USER]
    assert (await _members(session, USER))[0].birthday_month == 7


def test_every_staff_command_is_known_to_the_registration() -> None:
    assert staff_commands(build_router()) == {
        "sale", "refund", "freeze", "unfreeze", "callbacks", "setbirthday",
        "stats", "export",  # admins' (handlers/stats.py)
        "plusrefund",  # admins' (handlers/plus.py)
        "member",  # staff's (handlers/care.py)
        "catalog", "audit",  # admins' (handlers/catalog.py, handlers/audit.py)
        "campaign", "campaigns",  # admins' (handlers/campaigns.py)
    }


async def test_strangers_buttons_groups_and_blocks_make_no_member(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(callback_update(USER, DeleteStep(step="confirm").pack()))
    answer = chat.fake.calls_of("answerCallbackQuery")[-1]
    assert answer.params["text"] == "Please send /start to join the club first."
    await chat.send(callback_update(FRIEND, DeleteStep(step="confirm").pack(), language_code="zh"))
    answer = chat.fake.calls_of("answerCallbackQuery")[-1]
    assert answer.params["text"] == "请先发送 /start 加入会员。"
    await chat.send(message_update(USER, "hi all", chat_id=-100123, chat_type="supergroup"))
    await chat.send(my_chat_member_update(USER, "member"))
    assert chat.fake.calls_of("sendMessage") == []
    assert await _members(session) == []


async def test_card_without_a_sender_is_ignored(chat: Conversation, session: AsyncSession) -> None:
    update = message_update(USER, "/card")
    del update["message"]["from"]
    await chat.send(update)  # used to raise AttributeError
    assert chat.fake.calls_of("sendPhoto") == [] and chat.fake.calls_of("sendMessage") == []
    assert await _members(session) == []


async def test_leaving_and_returning_gives_no_second_bonus_coupon_or_referral(
    chat: Conversation, session: AsyncSession, clock: FixedClock
) -> None:
    await chat.send(message_update(FRIEND, "/start", first_name="Inviter"))
    [inviter] = await _members(session, FRIEND)
    inviter_id, inviter_code = inviter.id, inviter.code
    await chat.send(message_update(USER, f"/start ref_{inviter_code}", first_name="Lin"))
    [first] = await _members(session, USER)
    first_id = first.id
    assert first.points_balance == 100 and first.referrer_id == inviter_id
    await _leave(chat, clock)

    # the stored hash is keyed, not the raw id nor its plain hash
    await session.rollback()
    hashes = list((await session.scalars(select(FormerAccount.telegram_hash))).all())
    expected = hmac.new(chat.app.shop.member_hash_secret, b"4242", hashlib.sha256).hexdigest()
    assert hashes == [expected]
    assert str(USER) not in hashes[0] and hashes[0] != hashlib.sha256(b"4242").hexdigest()
    assert {c.key for c in inspect(FormerAccount).columns} == {"telegram_hash"}  # no time

    clock.advance(days=3)
    await chat.send(message_update(USER, f"/start ref_{inviter_code}", first_name="Lin"))
    back = chat.fake.calls_of("sendMessage")[-1]
    assert "Welcome back, <b>Lin</b>" in back.params["text"]
    assert "points" not in back.params["text"].split("\n")[0]
    assert "💳 My card" in _menu(back.params)
    [again] = await _members(session, USER)
    session.expunge(again)
    assert again.id != first_id and again.points_balance == 0 and again.referrer_id is None
    coupons = await session.scalar(
        select(func.count(Coupon.id)).where(Coupon.member_id == again.id)
    )
    entries = await session.scalar(
        select(func.count(LedgerEntry.id)).where(LedgerEntry.member_id == again.id)
    )
    assert coupons == 0 and entries == 0

    # a first purchase earns the inviter nothing for a returning person
    await chat.send(message_update(STAFF_ID, f"/sale {again.code} 100.00 o-r"))
    assert "100" in _texts(chat)[-1]  # the sale went through
    await session.rollback()
    referral = select(func.count(LedgerEntry.id)).where(
        LedgerEntry.member_id == inviter_id, LedgerEntry.kind == "referral"
    )
    assert await session.scalar(referral) == 0

    # leaving a second time keeps one hash; a different new person still gets everything
    await _leave(chat, clock)
    await session.rollback()
    assert await session.scalar(select(func.count()).select_from(FormerAccount)) == 1
    await chat.send(message_update(6161, "/start", first_name="Mei", language_code="zh-hans"))
    assert "欢迎加入会员" in _texts(chat)[-1]
    [newcomer] = await _members(session, 6161)
    assert newcomer.points_balance == 100
    welcome = select(func.count(Coupon.id)).where(
        Coupon.member_id == newcomer.id, Coupon.source == "welcome"
    )
    assert await session.scalar(welcome) == 1


async def test_returning_by_writing_is_welcomed_back_in_chinese(
    chat: Conversation, session: AsyncSession, clock: FixedClock
) -> None:
    await chat.send(message_update(USER, "/start", language_code="zh-hans", first_name="小明"))
    await _leave(chat, clock)
    await chat.send(message_update(USER, "你好", language_code="zh-hans", first_name="小明"))
    back = _texts(chat)[-1]
    assert "欢迎回来" in back and "入会礼" in back
    assert "Welcome" not in back and "points" not in back
    [member] = await _members(session, USER)
    assert member.points_balance == 0


def test_hash_secret_comes_from_the_setting_or_the_token() -> None:
    def settings(**values: str) -> Settings:
        return Settings(_env_file=None, **values)  # type: ignore[call-arg,arg-type]

    derived = settings(bot_token=TEST_TOKEN)
    empty = settings(bot_token=TEST_TOKEN, member_hash_secret="")
    other = settings(bot_token="987654321:another-token-xyz")
    chosen = settings(bot_token=TEST_TOKEN, member_hash_secret="s3cret")
    assert derived.member_hash_key() == empty.member_hash_key()  # stable, empty means unset
    assert derived.member_hash_key() != other.member_hash_key()
    assert TEST_TOKEN.encode() not in derived.member_hash_key()
    assert chosen.member_hash_key() == b"s3cret"
    assert "s3cret" not in repr(chosen)
