"""Referral rules that could be gamed or that exposed too much: invite links carry a referral
token (never the member code a till accepts), a first purchase dated before the friend joined
pays no referral, and a full refund of the friend's first purchase takes the reward back."""

from __future__ import annotations

import asyncio
import io
import json
import re
from datetime import timedelta
from typing import Any

import httpx
import zxingcpp
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import points, referrals
from domain.member_code import ALPHABET
from domain.models import GrowthEntry, LedgerEntry, Member, PointsLot, Push
from domain.shop import Shop
from domain.transaction import write_transaction
from tests.conftest import Conversation
from tests.fake_telegram import BOT_USERNAME, message_update

INVITER = 4242
FRIEND = 5151
OTHER = 6161
LINK = re.compile(rf"https://t\.me/{BOT_USERNAME}\?start=ref_(\w+)")


async def _code(session: AsyncSession, telegram_id: int) -> str:
    await session.rollback()
    code = await session.scalar(select(Member.code).where(Member.telegram_id == telegram_id))
    assert code is not None
    return code


async def _invite(chat: Conversation, telegram_id: int, lang: str = "en") -> tuple[str, Any]:
    """The token in the member's /invite link, and the photo message."""
    await chat.send(message_update(telegram_id, "/invite", language_code=lang))
    photo = chat.fake.calls_of("sendPhoto")[-1]
    found = LINK.search(photo.params["caption"])
    assert found is not None, photo.params["caption"]
    return found[1], photo


async def _state(session: AsyncSession, code: str) -> dict[str, int]:
    """What the shop keeps for a member; checks balance == sum(ledger) == lots - debt."""
    await session.rollback()
    member = await session.scalar(select(Member).where(Member.code == code))
    assert member is not None
    ledger = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.member_id == member.id
        )
    )
    lots = await session.scalar(
        select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(
            PointsLot.member_id == member.id
        )
    )
    assert member.points_balance == ledger == lots - member.points_debt
    referral = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.member_id == member.id, LedgerEntry.kind == "referral"
        )
    )
    growth = await session.scalar(
        select(func.coalesce(func.sum(GrowthEntry.amount), 0)).where(
            GrowthEntry.member_id == member.id, GrowthEntry.kind == "referral"
        )
    )
    pushes = await session.scalar(
        select(func.count(Push.id)).where(
            Push.member_id == member.id, Push.kind.in_(("referral_reward", "referral_taken_back"))
        )
    )
    return {
        "balance": member.points_balance, "debt": member.points_debt,
        "referral_points": int(referral or 0), "referral_growth": int(growth or 0),
        "pushes": int(pushes or 0),
    }


async def _pair(
    chat: Conversation, session: AsyncSession, lang: str = "en"
) -> tuple[str, str]:
    """An inviter and a friend who joined through the inviter's /invite link."""
    await chat.send(message_update(INVITER, "/start", first_name="Wei", language_code=lang))
    token, _ = await _invite(chat, INVITER, lang)
    await chat.send(
        message_update(FRIEND, f"/start ref_{token}", first_name="Mei", language_code=lang)
    )
    return await _code(session, INVITER), await _code(session, FRIEND)


def _texts_to(chat: Conversation, telegram_id: int) -> list[str]:
    return [
        c.params["text"] for c in chat.fake.calls_of("sendMessage")
        if c.params["chat_id"] == str(telegram_id)
    ]


async def _order(
    api: httpx.AsyncClient, order_id: str, member: str, amount: str, **extra: str
) -> httpx.Response:
    return await api.post(
        "/api/v1/orders", json={"order_id": order_id, "member": member, "amount": amount, **extra}
    )


async def _refund(
    api: httpx.AsyncClient, order_id: str, refund_id: str, amount: str
) -> httpx.Response:
    return await api.post(
        f"/api/v1/orders/{order_id}/refunds", json={"refund_id": refund_id, "amount": amount}
    )


# ------------------------------------------------------------------------ links and tokens


async def test_invite_link_and_qr_carry_a_token_never_the_member_code(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(INVITER, "/start", first_name="Wei"))
    code = await _code(session, INVITER)
    token, photo = await _invite(chat, INVITER)
    assert len(token) == 12 and set(token) <= set(ALPHABET) and code not in token
    caption = photo.params["caption"]
    assert code not in caption and f"{code[:4]}-{code[4:]}" not in caption
    image = Image.open(io.BytesIO(photo.params["photo"]["bytes"]))
    [qr] = [barcode.text for barcode in zxingcpp.read_barcodes(image)]
    assert qr == f"https://t.me/{BOT_USERNAME}?start=ref_{token}"
    assert code not in photo.params["photo"]["upload"]
    buttons = [b for row in photo.params["reply_markup"]["inline_keyboard"] for b in row]
    assert all(code not in b.get("url", "") + b.get("callback_data", "") for b in buttons)

    again, _ = await _invite(chat, INVITER)
    assert again == token  # one link for good: links already shared keep working

    # A till holding the token gets nothing: it is not a member code.
    assert (await api.get(f"/api/v1/members/{token}")).status_code == 404
    assert (await _order(api, "T1", token, "10.00")).status_code == 404

    # Opening the link registers the friend with the inviter credited.
    await chat.send(message_update(FRIEND, f"/start ref_{token}", first_name="Mei"))
    assert "Wei" in _texts_to(chat, FRIEND)[-1]
    await session.rollback()
    referrer = await session.scalar(
        select(Member.referrer_id).where(Member.telegram_id == FRIEND)
    )
    assert referrer == await session.scalar(select(Member.id).where(Member.code == code))


async def test_old_link_with_a_member_code_still_credits_the_inviter(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(INVITER, "/start", first_name="Wei"))
    inviter = await _code(session, INVITER)
    await chat.send(message_update(FRIEND, f"/start ref_{inviter}", first_name="Mei"))
    friend = await _code(session, FRIEND)
    assert (await _order(api, "L1", friend, "10.00")).status_code == 201
    assert (await _state(session, inviter))["referral_points"] == 200


async def test_a_made_up_token_credits_nobody(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(INVITER, "/start", first_name="Wei"))
    token, _ = await _invite(chat, INVITER)
    wrong = ("0" if token[0] != "0" else "1") + token[1:]
    for n, payload in enumerate((wrong, token.lower()[:11], "ZZZZZZZZZZZZZZZZ")):
        await chat.send(message_update(OTHER + n, f"/start ref_{payload}", first_name="X"))
        assert "Welcome to the club" in _texts_to(chat, OTHER + n)[-1]
    await session.rollback()
    credited = await session.scalar(
        select(func.count(Member.id)).where(Member.referrer_id.is_not(None))
    )
    assert credited == 0


async def test_two_first_invites_at_once_end_with_one_token(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
    chat: Conversation,
) -> None:
    await chat.send(message_update(INVITER, "/start", first_name="Wei"))
    code = await _code(session, INVITER)

    # All four read the member (no token yet) before any of them asks for one: otherwise a
    # fast first task may have stored its token before a slow one has even read the row.
    everyone_read = asyncio.Barrier(4)

    async def token() -> str:
        async with session_factory() as own:
            member = await own.scalar(select(Member).where(Member.code == code))
            assert member is not None and member.referral_token is None
            await own.commit()
            await everyone_read.wait()
            return await referrals.referral_token(own, member)

    tokens = await asyncio.gather(*(token() for _ in range(4)))
    await session.rollback()
    stored = await session.scalar(select(Member.referral_token).where(Member.code == code))
    assert set(tokens) == {stored}


# ------------------------------------------------------------------ purchases before joining


async def test_an_order_dated_before_joining_never_pays_the_referral(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    inviter, friend = await _pair(chat, session)
    before = {"balance": 100, "debt": 0, "referral_points": 0, "referral_growth": 0, "pushes": 0}
    earlier = (shop.now() - timedelta(days=25)).isoformat()
    old = await _order(api, "OLD-1", friend, "60.00", occurred_at=earlier)
    assert old.status_code == 201, old.text
    assert old.json()["points_earned"] == 60  # the friend earns as usual
    assert await _state(session, inviter) == before

    # They were not new to the shop: their first purchase after joining pays nothing either.
    later = await _order(api, "NEW-1", friend, "80.00")
    assert later.status_code == 201
    assert await _state(session, inviter) == before
    await chat.app.sender.deliver_pending()
    assert not any("first purchase" in text for text in _texts_to(chat, INVITER))
    await chat.send(message_update(INVITER, "/invite"))
    caption = chat.fake.calls_of("sendPhoto")[-1].params["caption"]
    assert "Friends joined: <b>1</b>" in caption and "Friends who bought: <b>0</b>" in caption
    inviter_id = await session.scalar(select(Member.id).where(Member.code == inviter))
    assert inviter_id is not None
    board = await referrals.monthly_leaderboard(session, shop, inviter_id)
    assert board.rows == [] and board.mine == 0


async def test_a_till_clock_a_little_behind_still_counts_a_friend_who_joined_at_the_counter(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    inviter, friend = await _pair(chat, session)
    behind = (shop.now() - timedelta(minutes=2)).isoformat()
    assert (await _order(api, "C1", friend, "10.00", occurred_at=behind)).status_code == 201
    assert (await _state(session, inviter))["referral_points"] == 200


# ---------------------------------------------------------------------------------- refunds


async def test_full_refund_of_the_first_purchase_takes_the_reward_back_once(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    inviter, friend = await _pair(chat, session)
    assert (await _order(api, "F1", friend, "60.00")).status_code == 201
    rewarded = {
        "balance": 300, "debt": 0, "referral_points": 200, "referral_growth": 50, "pushes": 1,
    }
    assert await _state(session, inviter) == rewarded
    await chat.app.sender.deliver_pending()
    seen = len(_texts_to(chat, INVITER))

    refund = await _refund(api, "F1", "R1", "60.00")
    assert refund.status_code == 201, refund.text
    taken = {"balance": 100, "debt": 0, "referral_points": 0, "referral_growth": 0, "pushes": 2}
    assert await _state(session, inviter) == taken
    assert (await _state(session, friend))["balance"] == 100  # the friend's own points too

    replay = await _refund(api, "F1", "R1", "60.00")
    assert replay.status_code == 201 and replay.headers.get("Idempotent-Replayed") == "true"
    assert await _state(session, inviter) == taken

    await chat.app.sender.deliver_pending()
    [told] = _texts_to(chat, INVITER)[seen:]  # one push, not one per replay
    assert "taken back" in told and "−200" in told and "−50" in told
    assert "Mei" not in told and friend not in told and "F1" not in told

    # The reward no longer counts: the cap has its place back, the counts drop it.
    inviter_id = await session.scalar(select(Member.id).where(Member.code == inviter))
    assert inviter_id is not None
    summary = await referrals.referral_summary(session, shop, inviter_id)
    assert (summary.purchased, summary.points, summary.growth) == (0, 0, 0)
    assert summary.rewarded_this_month == 0
    assert (await referrals.monthly_leaderboard(session, shop, inviter_id)).mine == 0


async def test_partial_refund_leaves_the_reward_and_the_last_part_takes_it_back(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    inviter, friend = await _pair(chat, session)
    assert (await _order(api, "P1", friend, "60.00")).status_code == 201
    assert (await _refund(api, "P1", "R1", "59.99")).status_code == 201
    kept = {"balance": 300, "debt": 0, "referral_points": 200, "referral_growth": 50, "pushes": 1}
    assert await _state(session, inviter) == kept
    assert (await _refund(api, "P1", "R2", "0.01")).status_code == 201
    assert (await _state(session, inviter))["referral_points"] == 0


async def test_refund_of_a_later_order_leaves_the_reward(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    inviter, friend = await _pair(chat, session)
    assert (await _order(api, "A1", friend, "60.00")).status_code == 201
    assert (await _order(api, "A2", friend, "30.00")).status_code == 201
    assert (await _refund(api, "A2", "R1", "30.00")).status_code == 201
    assert (await _state(session, inviter))["referral_points"] == 200


async def test_a_reward_already_spent_is_taken_back_as_debt(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    inviter, friend = await _pair(chat, session)
    assert (await _order(api, "D1", friend, "60.00")).status_code == 201
    # The inviter spends their points (at the till or on a reward; the ledger is the same).
    await session.rollback()
    member_id = await session.scalar(select(Member.id).where(Member.code == inviter))
    assert member_id is not None
    async with write_transaction(session):
        await points.spend(
            session, shop, member_id, kind="offset", amount=250, reason="spent", key="t:spend"
        )
    assert (await _state(session, inviter))["balance"] < 200
    before = await _state(session, inviter)
    assert (await _refund(api, "D1", "R1", "60.00")).status_code == 201
    after = await _state(session, inviter)  # checks balance == ledger == lots - debt
    assert after["balance"] == before["balance"] - 200 and after["balance"] < 0
    assert after["debt"] == -after["balance"]


async def test_inviter_reads_no_friend_identifier_and_chinese_words(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    inviter, friend = await _pair(chat, session, lang="zh-hans")
    assert (await _order(api, "FRIEND-ORDER-7", friend, "60.00")).status_code == 201
    assert (await _refund(api, "FRIEND-ORDER-7", "R7", "60.00")).status_code == 201
    assert (await _state(session, inviter))["referral_points"] == 0
    await chat.app.sender.deliver_pending()
    told = _texts_to(chat, INVITER)[-1]
    assert "邀请奖励已扣回" in told and "−200" in told and "美" not in told

    await chat.send(message_update(INVITER, "/points", language_code="zh-hans"))
    history = _texts_to(chat, INVITER)[-1]
    assert "好友首单奖励" in history and "好友首单退款，奖励扣回" in history
    await chat.send(message_update(INVITER, "/mydata", language_code="zh-hans"))
    raw = chat.fake.calls_of("sendDocument")[-1].params["document"]["bytes"].decode()
    for shown in (history, told, raw):
        assert friend not in shown and "FRIEND-ORDER-7" not in shown
    data = json.loads(raw)
    lines = [e for e in data["ledger"] if e["kind"] == "referral"]
    assert [(e["amount"], e["reference"], e["description"]) for e in lines] == [
        (200, None, "好友首单奖励"), (-200, None, "好友首单退款，奖励扣回"),
    ]
    growth = [e["amount"] for e in data["growth"] if e["kind"] == "referral"]
    assert growth == [50, -50]
