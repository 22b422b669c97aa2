"""Conversations end to end: registration, the member card, phone sharing, language, groups."""

from __future__ import annotations

import io

import zxingcpp
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.member_code import normalize_member_code
from domain.models import LedgerEntry, Member
from tests.conftest import Conversation
from tests.fake_telegram import message_update

USER = 4242


def _menu_texts(call_params: dict) -> list[str]:
    markup = call_params["reply_markup"]
    return [button["text"] for row in markup["keyboard"] for button in row]


async def _member(session: AsyncSession, telegram_id: int = USER) -> Member:
    await session.rollback()  # a fresh snapshot: the bot wrote in its own sessions
    member = await session.scalar(
        select(Member).where(Member.telegram_id == telegram_id).execution_options(populate_existing=True)
    )
    assert member is not None
    return member


async def test_start_registers_once_with_code_bonus_and_menu(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "/start", first_name="Lin", language_code="en"))
    welcome = chat.fake.calls_of("sendMessage")[-1]
    assert welcome.params["chat_id"] == str(USER)
    assert "Welcome to the club, <b>Lin</b>" in welcome.params["text"]
    assert "100</b> points" in welcome.params["text"]
    assert "💳 My card" in _menu_texts(welcome.params)

    member = await _member(session)
    assert normalize_member_code(member.code) == member.code
    assert member.code.replace("-", "") in welcome.params["text"].replace("-", "")
    assert member.points_balance == 100
    ledger_sum = await session.scalar(
        select(func.sum(LedgerEntry.amount)).where(LedgerEntry.member_id == member.id)
    )
    assert ledger_sum == 100

    await chat.send(message_update(USER, "/start", first_name="Lin"))
    again = chat.fake.calls_of("sendMessage")[-1]
    assert "Welcome back" in again.params["text"]
    assert await session.scalar(select(func.count(Member.id))) == 1
    assert (await _member(session)).points_balance == 100


async def test_chinese_user_gets_chinese_and_referral_is_recorded(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "/start", first_name="Inviter"))
    inviter = await _member(session)
    inviter_id, inviter_code = inviter.id, inviter.code
    await chat.send(
        message_update(5151, f"/start ref_{inviter_code}", first_name="小明", language_code="zh-hans")
    )
    welcome = chat.fake.calls_of("sendMessage")[-1]
    assert "欢迎加入会员" in welcome.params["text"]
    assert "Inviter" in welcome.params["text"]
    assert "💳 会员卡" in _menu_texts(welcome.params)
    friend = await _member(session, 5151)
    assert friend.referrer_id == inviter_id
    assert friend.language == "zh"


async def test_self_or_unknown_referral_is_ignored(chat: Conversation, session: AsyncSession) -> None:
    await chat.send(message_update(USER, "/start ref_NOTACODE"))
    member = await _member(session)
    assert member.referrer_id is None
    assert "Welcome to the club" in chat.fake.calls_of("sendMessage")[-1].params["text"]


async def test_card_uploads_qr_once_then_reuses_file_id(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "/start", first_name="Lin"))
    await chat.send(message_update(USER, "/card"))
    first = chat.fake.calls_of("sendPhoto")[-1]
    upload = first.params["photo"]
    assert isinstance(upload, dict) and upload["bytes"].startswith(b"\x89PNG")
    caption = first.params["caption"]
    member = await _member(session)
    assert "Lin" in caption
    assert f"{member.code[:4]}-{member.code[4:]}" in caption
    assert "Tier: <b>Member</b>" in caption
    assert "Points: <b>100</b>" in caption
    assert "Growth (12 months): 0" in caption
    assert "5,000 growth to <b>Silver</b>: 5% off, ×1.2 points" in caption
    assert "Member since 10 Mar 2026" in caption
    assert member.card_file_id

    await chat.send(message_update(USER, "💳 My card"))
    second = chat.fake.calls_of("sendPhoto")[-1]
    assert second.params["photo"] == member.card_file_id
    assert len(chat.fake.calls_of("sendPhoto")) == 2


async def test_card_qr_decodes_to_member_code(chat: Conversation, session: AsyncSession) -> None:
    await chat.send(message_update(USER, "/card", first_name="Lin"))  # first contact registers
    member = await _member(session)
    photo = chat.fake.calls_of("sendPhoto")[-1]
    image = Image.open(io.BytesIO(photo.params["photo"]["bytes"]))
    assert [barcode.text for barcode in zxingcpp.read_barcodes(image)] == [member.code]
    assert member.points_balance == 100


async def test_own_phone_is_stored_in_e164(chat: Conversation, session: AsyncSession) -> None:
    await chat.send(message_update(USER, "/start"))
    contact = {"phone_number": "8613812345678", "first_name": "Lin", "user_id": USER}
    await chat.send(message_update(USER, "", contact=contact))
    reply = chat.fake.calls_of("sendMessage")[-1]
    assert "+8613812345678" in reply.params["text"]
    assert (await _member(session)).phone == "+8613812345678"


async def test_someone_elses_contact_is_refused(chat: Conversation, session: AsyncSession) -> None:
    await chat.send(message_update(USER, "/start"))
    contact = {"phone_number": "8613812345678", "first_name": "Bob", "user_id": 777}
    await chat.send(message_update(USER, "", contact=contact))
    reply = chat.fake.calls_of("sendMessage")[-1]
    assert "your own" in reply.params["text"]
    assert (await _member(session)).phone is None


async def test_phone_of_another_member_is_refused(chat: Conversation, session: AsyncSession) -> None:
    for user in (USER, 5151):
        await chat.send(message_update(user, "/start"))
        contact = {"phone_number": "+86 138 1234 5678", "first_name": "X", "user_id": user}
        await chat.send(message_update(user, "", contact=contact))
    assert "another member" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert (await _member(session, 5151)).phone is None
    assert (await _member(session, USER)).phone == "+8613812345678"


async def test_language_switch_edits_picker_and_resends_menu(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "/start"))
    await chat.send(message_update(USER, "/language"))
    picker = chat.fake.calls_of("sendMessage")[-1]
    buttons = [b["callback_data"] for row in picker.params["reply_markup"]["inline_keyboard"] for b in row]
    assert len(buttons) == 2
    zh_button = next(b for b in buttons if b.endswith("zh"))
    await chat.send(chat.fake.press(USER, zh_button, picker.message_id))
    edit = chat.fake.calls_of("editMessageText")[-1]
    assert not edit.failed and edit.params["message_id"] == str(picker.message_id)
    assert "请选择语言" in edit.params["text"]
    confirmation = chat.fake.calls_of("sendMessage")[-1]
    assert "中文" in confirmation.params["text"]
    assert "💳 会员卡" in _menu_texts(confirmation.params)
    assert (await _member(session)).language == "zh"
    await chat.send(message_update(USER, "/card"))
    assert "会员码" in chat.fake.calls_of("sendPhoto")[-1].params["caption"]


async def test_group_gets_only_a_pointer_and_registers_nobody(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "/card", chat_id=-100123, chat_type="supergroup"))
    reply = chat.fake.calls_of("sendMessage")[-1]
    assert reply.params["chat_id"] == "-100123"
    assert "t.me/companion_test_bot" in reply.params["text"]
    assert chat.fake.calls_of("sendPhoto") == []
    await chat.send(message_update(USER, "hello all", chat_id=-100123, chat_type="supergroup"))
    assert len(chat.fake.calls_of("sendMessage")) == 1
    await session.rollback()
    assert await session.scalar(select(func.count(Member.id))) == 0


async def test_unknown_text_gets_help_with_menu(chat: Conversation) -> None:
    await chat.send(message_update(USER, "/start"))  # a member's first text is welcomed instead
    await chat.send(message_update(USER, "what is this"))
    reply = chat.fake.calls_of("sendMessage")[-1]
    assert "/card" in reply.params["text"]
    assert "💳 My card" in _menu_texts(reply.params)
    await chat.send(message_update(USER, "/nonsense"))
    assert "/card" in chat.fake.calls_of("sendMessage")[-1].params["text"]


async def test_commands_registered_in_both_languages(chat: Conversation) -> None:
    # emitted at start-up, before the fixture cleared the calls: register again and look
    from bot.app import register_commands

    await register_commands(chat.app.bot, chat.app.texts)
    calls = chat.fake.calls_of("setMyCommands")
    by_language = {c.params.get("language_code"): c.params["commands"] for c in calls}
    assert {c["command"] for c in by_language[None]} >= {"start", "card", "language", "help"}
    assert any("会员卡" in c["description"] for c in by_language["zh"])
