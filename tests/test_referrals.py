"""Referrals: the welcome coupon at sign-up, the inviter's reward at the friend's first purchase
(once, capped per month, never for oneself or an existing member), /invite and its leaderboard."""

from __future__ import annotations

import asyncio
import io
import re
from datetime import UTC, datetime

import httpx
import zxingcpp
from PIL import Image
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import members, orders, referrals
from domain.clock import FixedClock
from domain.models import Coupon, GrowthEntry, LedgerEntry, Member, Push
from domain.shop import Shop
from domain.transaction import write_transaction
from tests.conftest import Conversation
from tests.fake_telegram import BOT_USERNAME, message_update

INVITER = 4242
FRIEND = 5151
OTHER = 6161


async def _code(session: AsyncSession, telegram_id: int) -> str:
    await session.rollback()  # a fresh snapshot: the bot wrote in its own sessions
    code = await session.scalar(select(Member.code).where(Member.telegram_id == telegram_id))
    assert code is not None
    return code


async def _standing(session: AsyncSession, code: str) -> dict[str, int]:
    """What the shop keeps for a member from referrals; checks balance == sum(ledger)."""
    await session.rollback()
    member = await session.scalar(select(Member).where(Member.code == code))
    assert member is not None
    ledger = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.member_id == member.id
        )
    )
    assert member.points_balance == ledger
    referral_points = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.member_id == member.id, LedgerEntry.kind == "referral"
        )
    )
    growth = await session.scalar(
        select(func.coalesce(func.sum(GrowthEntry.amount), 0)).where(
            GrowthEntry.member_id == member.id,
            GrowthEntry.kind == "referral",
            GrowthEntry.source == "behaviour",
        )
    )
    pushes = await session.scalar(
        select(func.count(Push.id)).where(
            Push.member_id == member.id, Push.kind == "referral_reward"
        )
    )
    return {
        "balance": member.points_balance, "referral_points": int(referral_points or 0),
        "referral_growth": int(growth or 0), "pushes": int(pushes or 0),
    }


async def _welcome_coupons(session: AsyncSession, code: str) -> list[Coupon]:
    await session.rollback()
    return list(
        (
            await session.scalars(
                select(Coupon).join(Member, Member.id == Coupon.member_id)
                .where(Member.code == code, Coupon.source == "welcome")
            )
        ).all()
    )


async def _invite_payload(chat: Conversation, telegram_id: int, lang: str = "en") -> str:
    """What the member's invite link (from /invite) starts the bot with."""
    await chat.send(message_update(telegram_id, "/invite", language_code=lang))
    caption = chat.fake.calls_of("sendPhoto")[-1].params["caption"]
    found = re.search(rf"https://t\.me/{BOT_USERNAME}\?start=(ref_\w+)", caption)
    assert found is not None, caption
    return found[1]


async def _invite_pair(chat: Conversation, session: AsyncSession) -> tuple[str, str]:
    await chat.send(message_update(INVITER, "/start", first_name="Wei", last_name="Zhang"))
    inviter = await _code(session, INVITER)
    payload = await _invite_payload(chat, INVITER)
    await chat.send(message_update(FRIEND, f"/start {payload}", first_name="Mei"))
    return inviter, await _code(session, FRIEND)


async def _texts_to(chat: Conversation, telegram_id: int) -> list[str]:
    return [
        c.params["text"] for c in chat.fake.calls_of("sendMessage")
        if c.params["chat_id"] == str(telegram_id)
    ]


def _profile(
    telegram_id: int, first_name: str, last_name: str | None = None
) -> members.TelegramProfile:
    return members.TelegramProfile(telegram_id, first_name, last_name, None, "en")


async def _join(
    session: AsyncSession, shop: Shop, telegram_id: int, name: str, referrer: str | None = None,
    last_name: str | None = None,
) -> str:
    """Join; ``referrer`` is the inviter's member code, whose invite link (token) is used."""
    token = None
    if referrer is not None:
        await session.rollback()
        inviter = await session.scalar(select(Member).where(Member.code == referrer))
        assert inviter is not None
        token = await referrals.referral_token(session, inviter)
    registration = await members.register(
        session, shop, _profile(telegram_id, name, last_name), invited_by=token
    )
    return registration.member.code


async def _buy(
    session: AsyncSession, shop: Shop, code: str, order_id: str, amount: int = 6000
) -> None:
    await orders.place_order(
        session, shop, orders.OrderRequest(order_id=order_id, member=code, amount=amount)
    )


# --------------------------------------------------------------------------- sign-up


async def test_friend_joining_by_link_gets_welcome_coupon_and_inviter_nothing_yet(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    inviter, friend = await _invite_pair(chat, session)
    welcome = chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert "Welcome to the club, <b>Mei</b>" in welcome
    assert "welcome coupon" in welcome and "Wei Zhang" in welcome

    coupons = await _welcome_coupons(session, friend)
    assert len(coupons) == 1
    coupon = coupons[0]
    assert (coupon.kind, coupon.value, coupon.min_spend, coupon.status) == (
        "amount_off", 1000, 5000, "active"
    )
    assert coupon.valid_from == shop.now()
    assert (shop.local_date(coupon.valid_until) - shop.today()).days == 30

    assert len(await _welcome_coupons(session, inviter)) == 1  # every new member gets one
    assert await _standing(session, inviter) == {
        "balance": 100, "referral_points": 0, "referral_growth": 0, "pushes": 0,
    }


async def test_welcome_coupon_is_issued_once_and_in_chinese_welcome(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(OTHER, "/start", first_name="小红", language_code="zh-hans"))
    assert "满¥50减¥10券" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    await chat.send(message_update(OTHER, "/start", first_name="小红", language_code="zh-hans"))
    await chat.send(message_update(OTHER, "/card", language_code="zh-hans"))
    assert len(await _welcome_coupons(session, await _code(session, OTHER))) == 1


# --------------------------------------------------------------------------- first purchase


async def test_first_purchase_rewards_inviter_once_with_a_push(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    inviter, friend = await _invite_pair(chat, session)
    coupon_code = (await _welcome_coupons(session, friend))[0].code
    first = {"order_id": "F1", "member": friend, "amount": "60.00", "coupon_code": coupon_code}
    response = await api.post("/api/v1/orders", json=first)
    assert response.status_code == 201, response.text
    assert response.json()["to_pay"] == "50.00"  # the welcome coupon: 10.00 off 50.00
    assert await _standing(session, inviter) == {
        "balance": 300, "referral_points": 200, "referral_growth": 50, "pushes": 1,
    }

    await chat.app.sender.deliver_pending()
    to_inviter = await _texts_to(chat, INVITER)
    reward = to_inviter[-1]
    assert "A friend you invited made their first purchase" in reward
    assert "Mei" not in reward  # one member's message never names another
    assert "+200" in reward and "+50 growth" in reward
    assert "Balance: <b>300</b>" in reward

    replay = await api.post("/api/v1/orders", json=first)
    assert replay.status_code == 201 and replay.headers.get("Idempotent-Replayed") == "true"
    second = await api.post(
        "/api/v1/orders", json={"order_id": "F2", "member": friend, "amount": "80.00"}
    )
    assert second.status_code == 201
    assert await _standing(session, inviter) == {
        "balance": 300, "referral_points": 200, "referral_growth": 50, "pushes": 1,
    }
    await chat.app.sender.deliver_pending()
    assert len(await _texts_to(chat, INVITER)) == len(to_inviter)  # no second message


async def test_reward_push_in_chinese(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(INVITER, "/start", first_name="伟", language_code="zh-hans"))
    payload = await _invite_payload(chat, INVITER, "zh-hans")
    await chat.send(message_update(FRIEND, f"/start {payload}", first_name="美"))
    friend = await _code(session, FRIEND)
    await api.post("/api/v1/orders", json={"order_id": "Z1", "member": friend, "amount": "10.00"})
    await chat.app.sender.deliver_pending()
    reward = (await _texts_to(chat, INVITER))[-1]
    assert "您邀请的一位好友完成了首次消费" in reward and "美" not in reward
    assert "+200" in reward and "积分余额：<b>300</b>" in reward


async def test_self_invite_link_does_nothing(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(INVITER, "/start", first_name="Wei"))
    own = await _code(session, INVITER)
    await chat.send(message_update(INVITER, f"/start {await _invite_payload(chat, INVITER)}"))
    assert "Welcome back" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    await session.rollback()
    assert await session.scalar(select(Member.referrer_id).where(Member.code == own)) is None
    await api.post("/api/v1/orders", json={"order_id": "S1", "member": own, "amount": "10.00"})
    assert await _standing(session, own) == {
        "balance": 110, "referral_points": 0, "referral_growth": 0, "pushes": 0,
    }
    assert len(await _welcome_coupons(session, own)) == 1


async def test_existing_member_opening_a_link_earns_the_inviter_nothing(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(INVITER, "/start", first_name="Wei"))
    inviter = await _code(session, INVITER)
    payload = await _invite_payload(chat, INVITER)
    # Registered on first contact, before opening the link.
    await chat.send(message_update(FRIEND, "hello", first_name="Mei"))
    await chat.send(message_update(FRIEND, f"/start {payload}", first_name="Mei"))
    assert "Welcome back" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    friend = await _code(session, FRIEND)
    await session.rollback()
    assert await session.scalar(select(Member.referrer_id).where(Member.code == friend)) is None
    await api.post("/api/v1/orders", json={"order_id": "E1", "member": friend, "amount": "10.00"})
    assert await _standing(session, inviter) == {
        "balance": 100, "referral_points": 0, "referral_growth": 0, "pushes": 0,
    }
    assert len(await _welcome_coupons(session, friend)) == 1


async def test_frozen_or_deleted_inviter_gets_nothing(
    session: AsyncSession, shop: Shop
) -> None:
    frozen = await _join(session, shop, 1, "Frozen")
    gone = await _join(session, shop, 2, "Gone")
    friend_of_frozen = await _join(session, shop, 3, "A", referrer=frozen)
    friend_of_gone = await _join(session, shop, 4, "B", referrer=gone)
    async with write_transaction(session):
        await session.execute(update(Member).where(Member.code == frozen).values(status="frozen"))
        await session.execute(
            update(Member).where(Member.code == gone).values(status="deleted", telegram_id=None)
        )
    await _buy(session, shop, friend_of_frozen, "X1")
    await _buy(session, shop, friend_of_gone, "X2")
    for code in (frozen, gone):
        assert await _standing(session, code) == {
            "balance": 100, "referral_points": 0, "referral_growth": 0, "pushes": 0,
        }


async def test_monthly_cap_rewards_twenty_then_a_gentle_note_and_next_month_again(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    inviter = await _join(session, shop, 1, "Wei")
    assert shop.program.points.referral_monthly_cap == 20
    for n in range(21):
        friend = await _join(session, shop, 100 + n, f"F{n}", referrer=inviter)
        await _buy(session, shop, friend, f"cap-{n}")
    assert await _standing(session, inviter) == {
        "balance": 100 + 20 * 200, "referral_points": 20 * 200, "referral_growth": 20 * 50,
        "pushes": 21,
    }
    capped = await session.scalar(
        select(Push.payload).join(Member, Member.id == Push.member_id)
        .where(Member.code == inviter).order_by(Push.id.desc()).limit(1)
    )
    assert capped is not None and '"capped": true' in capped and '"points": 0' in capped

    # A friend who joined this month but buys next month is rewarded again.
    late = await _join(session, shop, 200, "Late", referrer=inviter)
    clock.set(datetime(2026, 3, 31, 16, 0, tzinfo=UTC))  # 1 April, 00:00 in Shanghai
    await _buy(session, shop, late, "cap-late")
    assert (await _standing(session, inviter))["referral_points"] == 21 * 200
    summary = await referrals.referral_summary(session, shop, (await _id(session, inviter)))
    assert (summary.joined, summary.purchased, summary.rewarded_this_month) == (22, 22, 1)
    assert (summary.points, summary.growth) == (21 * 200, 21 * 50)


async def _id(session: AsyncSession, code: str) -> int:
    await session.rollback()
    member_id = await session.scalar(select(Member.id).where(Member.code == code))
    assert member_id is not None
    return member_id


async def test_friends_buying_at_once_never_exceed_the_cap(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop
) -> None:
    rules = shop.program.points.model_copy(update={"referral_monthly_cap": 1})
    tight = Shop(
        program=shop.program.model_copy(update={"points": rules}), clock=shop.clock, tz=shop.tz
    )
    inviter = await _join(session, tight, 1, "Wei")
    friends = [await _join(session, tight, 10 + n, f"F{n}", referrer=inviter) for n in range(4)]

    async def buy(code: str, order_id: str) -> None:
        async with session_factory() as own:
            await _buy(own, tight, code, order_id)

    # Four friends at once, and one friend's two first orders at once.
    await asyncio.gather(
        *(buy(code, f"race-{n}") for n, code in enumerate(friends)),
        buy(friends[0], "race-twin"),
    )
    standing = await _standing(session, inviter)
    assert standing["referral_points"] == 200 and standing["referral_growth"] == 50
    assert standing["pushes"] == 4  # one reward, three notes: one per friend


# --------------------------------------------------------------------------- /invite


async def test_invite_shows_link_qr_and_counts_then_leaderboard_in_place(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    inviter, friend = await _invite_pair(chat, session)
    token = (await _invite_payload(chat, INVITER)).removeprefix("ref_")
    await chat.send(message_update(OTHER, f"/start ref_{token}", first_name="Bo"))
    await api.post("/api/v1/orders", json={"order_id": "I1", "member": friend, "amount": "10.00"})

    await chat.send(message_update(INVITER, "/invite"))
    photo = chat.fake.calls_of("sendPhoto")[-1]
    assert photo.params["chat_id"] == str(INVITER)
    link = f"https://t.me/{BOT_USERNAME}?start=ref_{token}"
    caption = photo.params["caption"]
    assert link in caption and inviter not in caption
    assert "CN¥10 off orders of CN¥50 or more" in caption and "<b>200</b> points" in caption
    assert "Friends joined: <b>2</b>" in caption
    assert "Friends who bought: <b>1</b>" in caption
    assert "You earned: <b>200</b> points · 50 growth" in caption
    image = Image.open(io.BytesIO(photo.params["photo"]["bytes"]))
    assert [barcode.text for barcode in zxingcpp.read_barcodes(image)] == [link]
    assert inviter not in photo.params["photo"]["upload"]
    buttons = [b for row in photo.params["reply_markup"]["inline_keyboard"] for b in row]
    share = next(b["url"] for b in buttons if b.get("url", "").startswith("https://t.me/share/"))
    assert token in share and inviter not in share
    board_button = next(b["callback_data"] for b in buttons if "Leaderboard" in b["text"])

    await chat.send(chat.fake.press(INVITER, board_button, photo.message_id))
    edit = chat.fake.calls_of("editMessageCaption")[-1]
    assert not edit.failed and edit.params["message_id"] == str(photo.message_id)
    board = edit.params["caption"]
    assert "Referral leaderboard · March 2026" in board
    assert "1. Wei Z. — <b>1</b> ← you" in board and "Zhang" not in board
    assert "You this month: <b>1</b>" in board
    back = edit.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]

    await chat.send(chat.fake.press(INVITER, back, photo.message_id))
    assert link in chat.fake.calls_of("editMessageCaption")[-1].params["caption"]
    assert not any(c.failed for c in chat.fake.calls)
    assert len(chat.fake.calls_of("sendPhoto")) == 3  # edited in place, never re-sent


async def test_invite_menu_button_in_chinese_and_empty_leaderboard(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(INVITER, "/start", first_name="伟", language_code="zh-hans"))
    code = await _code(session, INVITER)
    await chat.send(message_update(INVITER, "👥 邀请好友", language_code="zh-hans"))
    photo = chat.fake.calls_of("sendPhoto")[-1]
    caption = photo.params["caption"]
    assert "start=ref_" in caption and code not in caption
    assert "满¥50减¥10券" in caption and "<b>200</b> 积分" in caption
    assert "已加入的好友：<b>0</b>" in caption
    buttons = [b for row in photo.params["reply_markup"]["inline_keyboard"] for b in row]
    board_button = next(b["callback_data"] for b in buttons if "排行榜" in b["text"])
    await chat.send(
        chat.fake.press(INVITER, board_button, photo.message_id, language_code="zh-hans")
    )
    board = chat.fake.calls_of("editMessageCaption")[-1].params["caption"]
    assert "邀请排行榜 · 2026年3月" in board and "本月还没有人上榜" in board


async def test_frozen_member_is_not_shown_a_link(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(INVITER, "/start", first_name="Wei"))
    await session.rollback()
    await session.execute(update(Member).values(status="frozen", frozen_reason="review"))
    await session.commit()
    await chat.send(message_update(INVITER, "/invite"))
    assert chat.fake.calls_of("sendPhoto") == []
    refusal = chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert "account is on hold" in refusal and "review" not in refusal


# --------------------------------------------------------------------------- leaderboard


async def test_leaderboard_counts_first_purchases_of_the_month_ties_share_a_rank(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    ann = await _join(session, shop, 1, "Ann", last_name="smith")
    bo = await _join(session, shop, 2, "Bo", last_name="Li")
    cy = await _join(session, shop, 3, "Cy Long")  # a full name typed as the first name
    frozen = await _join(session, shop, 4, "Fay")
    # February: one of Ann's friends buys (not counted in March).
    clock.set(datetime(2026, 2, 28, 15, 0, tzinfo=UTC))  # 23:00 on 28 Feb in Shanghai
    early = await _join(session, shop, 10, "E", referrer=ann)
    await _buy(session, shop, early, "feb-1")
    clock.set(datetime(2026, 3, 10, 2, 0, tzinfo=UTC))
    plan = {ann: 2, bo: 2, cy: 1, frozen: 3}
    telegram_id = 100
    for inviter, count in plan.items():
        for _ in range(count):
            telegram_id += 1
            friend = await _join(session, shop, telegram_id, "F", referrer=inviter)
            await _buy(session, shop, friend, f"mar-{telegram_id}")
    joined_only = await _join(session, shop, 999, "J", referrer=cy)  # joined, never bought
    assert joined_only
    async with write_transaction(session):
        await session.execute(update(Member).where(Member.code == frozen).values(status="frozen"))

    board = await referrals.referral_leaderboard(session, shop, 2026, 3)
    shown = [(r.rank, r.first_name, r.initial, r.friends) for r in board]
    assert shown == [(1, "Ann", "S", 2), (1, "Bo", "L", 2), (3, "Cy", "L", 1)]
    february = await referrals.referral_leaderboard(session, shop, 2026, 2)
    assert [(r.first_name, r.friends) for r in february] == [("Ann", 1)]
    assert len(await referrals.referral_leaderboard(session, shop, 2026, 3, limit=1)) == 1
