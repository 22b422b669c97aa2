"""What a member reads about their points, money and coupons: worded from what happened, in
their language, numbers and money formatted by Babel, nothing internal (order ids, reward keys,
another member's code); one coupon wording on every screen; a refund comes with its receipt."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain import orders, rewards
from domain.models import Member, Push
from domain.points import LedgerLine
from domain.shop import Shop
from handlers.callbacks import RewardView
from handlers.texts import load_texts
from tests.conftest import STAFF_ID, Conversation
from tests.fake_telegram import callback_update, message_update
from tests.spend import spend_code


@dataclass(frozen=True)
class Joined:
    id: int
    code: str


MEMBER = 4301
FRIEND = 4302


async def _register(
    chat: Conversation, session: AsyncSession, uid: int = MEMBER, language: str = "en",
    text: str = "/start", name: str = "Lin",
) -> Joined:
    await chat.send(message_update(uid, text, first_name=name, language_code=language))
    await session.rollback()
    row = (
        await session.execute(select(Member.id, Member.code).where(Member.telegram_id == uid))
    ).one()
    await session.rollback()
    return Joined(row.id, row.code)


def _texts_to(chat: Conversation, uid: int, method: str = "sendMessage") -> list[str]:
    key = "caption" if method == "sendPhoto" else "text"
    return [
        str(c.params[key]) for c in chat.fake.calls_of(method)
        if c.params["chat_id"] == str(uid) and not c.failed
    ]


async def _busy_member(chat: Conversation, session: AsyncSession, shop: Shop, lang: str) -> Joined:
    """A Gold member who bought (once as Member, once at Gold), redeemed a reward, invited a
    friend who bought, and had part of a purchase refunded."""
    member = await _register(chat, session, language=lang)
    friend_lang = "zh-hans" if lang == "zh-hans" else "en"
    friend = (
        await _register(
            chat, session, FRIEND, friend_lang, text=f"/start ref_{member.code}", name="Mei"
        )
    ).code
    place = orders.place_order
    await place(session, shop, orders.OrderRequest("walk-1", member.code, 2_000_000))  # Gold
    await place(session, shop, orders.OrderRequest("walk-2", member.code, 248_050))  # at ×1.5
    await place(session, shop, orders.OrderRequest("friend-9", friend, 1_000))  # referral
    await rewards.redeem(session, shop, member.id, "five_off", confirmation=None)
    await orders.refund_order(session, shop, order_id="walk-2", refund_id="rf-1", amount=10_000)
    return member


def _history(text: str) -> list[str]:
    return re.findall(r"<code>([^<]+)</code> ([^\n]+)", text)  # type: ignore[return-value]


async def test_points_history_in_english_says_what_happened(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    await _busy_member(chat, session, shop, "en")
    await chat.send(message_update(MEMBER, "/points"))
    text = _texts_to(chat, MEMBER)[-1]
    lines = dict(_history(text))
    assert lines["+3,720"] == "Purchase, CN¥2,480.50 · Gold ×1.5 · 10 Mar 2026"
    assert lines["+20,000"] == "Purchase, CN¥20,000.00 · 10 Mar 2026"  # ×1 is not worth a word
    assert lines["-500"] == "Redeemed: 5.00 off, no minimum · 10 Mar 2026"
    assert lines["+200"] == "A friend's first purchase · 10 Mar 2026"
    assert lines["-149"] == (
        "Taken back for a refund (purchase of 10 Mar 2026, CN¥2,480.50) · 10 Mar 2026"
    )
    assert "Your points: 23,371</b>" in text
    for internal in ("walk-", "friend-9", "five_off", "order", "reward ", "×1 ", "Member"):
        assert internal not in text, internal


async def test_points_history_in_chinese_has_no_english(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    friend_code = None
    await _busy_member(chat, session, shop, "zh-hans")
    friend_code = await session.scalar(select(Member.code).where(Member.telegram_id == FRIEND))
    await chat.send(message_update(MEMBER, "/points", language_code="zh-hans"))
    text = _texts_to(chat, MEMBER)[-1]
    lines = dict(_history(text))
    assert lines["+3,720"] == "消费 ¥2,480.50 · 金卡会员 1.5倍积分 · 2026年3月10日"
    assert lines["-500"] == "兑换：5元无门槛券 · 2026年3月10日"
    assert lines["+200"] == "好友首单奖励 · 2026年3月10日"
    assert lines["-149"] == "退款扣回（2026年3月10日消费 ¥2,480.50） · 2026年3月10日"
    assert friend_code is not None and friend_code not in text
    words = re.sub(r"</?(b|code)>", "", text)
    assert not re.search(r"[A-Za-z]{2,}", words), words  # no English word, no key, no id


async def test_mydata_of_a_chinese_member_is_described_in_chinese_and_names_no_one_else(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    await _busy_member(chat, session, shop, "zh-hans")
    friend_code = await session.scalar(select(Member.code).where(Member.telegram_id == FRIEND))
    await session.rollback()
    await chat.send(message_update(MEMBER, "/mydata", language_code="zh-hans"))
    raw = chat.fake.calls_of("sendDocument")[-1].params["document"]["bytes"].decode()
    data = json.loads(raw)
    assert friend_code is not None and friend_code not in raw and "friend-9" not in raw
    described = data["ledger"] + data["growth"] + data["tier_history"] + data["coupons"]
    assert all("description" in entry for entry in described)
    for entry in described:  # every description is Chinese: no English word in it
        assert not re.search(r"[A-Za-z]{2,}", entry["description"]), entry
    assert {e["description"] for e in data["ledger"] if e["kind"] == "referral"} == {"好友首单奖励"}
    assert [e["reference"] for e in data["ledger"] if e["kind"] == "referral"] == [None]
    assert "reason" not in data["ledger"][0] and "reason" not in data["growth"][0]
    assert {e["description"] for e in data["tier_history"]} >= {"入会：普通会员", "升级为金卡会员"}
    assert "满¥50减¥10券" in {c["description"] for c in data["coupons"]}
    assert data["profile"]["invited_by_a_friend"] is False
    assert sum(e["amount"] for e in data["ledger"]) == data["profile"]["points_balance"]


async def test_staff_refund_sends_the_member_a_receipt_in_their_language_once(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member = await _register(chat, session, language="zh-hans")
    # 60,000.00 lifts a Member straight to Black Gold; refunding most of it takes that back
    await chat.send(message_update(STAFF_ID, f"/sale {member.code} 60000.00 big-1"))
    await chat.app.sender.deliver_pending()
    refund = message_update(STAFF_ID, "/refund big-1 45000.00", message_id=501)
    await chat.send(refund)
    await chat.send({**refund, "update_id": refund["update_id"] + 1000})  # the same, replayed
    assert await chat.app.sender.deliver_pending() == 1
    pushed = _texts_to(chat, MEMBER)[-1]
    assert "您的退款已处理" in pushed
    assert "您在2026年3月10日的消费（¥60,000.00）已退款 ¥45,000.00。" in pushed
    assert "退还给您：¥45,000.00" in pushed
    assert "扣回积分：<b>−45,000</b>" in pushed and "扣回成长值：−45,000" in pushed
    assert "积分余额：<b>15,100</b>" in pushed
    assert "您的会员等级已调整为<b>银卡会员</b>（原为黑金会员）" in pushed
    assert "big-1" not in pushed
    await session.rollback()
    pushes = await session.scalar(select(func.count(Push.id)).where(Push.kind == "refund"))
    assert pushes == 1
    assert await chat.app.sender.deliver_pending() == 0


async def test_till_refund_pushes_once_even_when_the_till_retries(
    chat: Conversation, session: AsyncSession, api: Any
) -> None:
    member = await _register(chat, session)
    pay = await spend_code(session, chat.app.shop, member.code)
    order = {"order_id": "T-1", "member": pay, "amount": "200.00", "redeem_points": 100}
    assert (await api.post("/api/v1/orders", json=order)).status_code == 201
    await chat.app.sender.deliver_pending()
    body = {"refund_id": "TR-1", "amount": "200.00"}
    first = await api.post("/api/v1/orders/T-1/refunds", json=body)
    again = await api.post("/api/v1/orders/T-1/refunds", json=body)
    assert first.status_code == again.status_code and again.json() == first.json()
    assert await chat.app.sender.deliver_pending() == 1
    pushed = _texts_to(chat, MEMBER)[-1]
    assert "was refunded in full" in pushed and "CN¥200.00" in pushed
    assert "Points taken back: <b>−199</b>" in pushed  # earned on the 199.00 paid
    assert "Points you used, given back: <b>+100</b>" in pushed
    assert "Balance: <b>100</b> points" in pushed  # the welcome bonus, as before
    assert "T-1" not in pushed and "TR-1" not in pushed


async def test_receipt_shows_money_in_the_shops_currency(
    chat: Conversation, session: AsyncSession
) -> None:
    member = await _register(chat, session)
    await chat.send(message_update(STAFF_ID, f"/sale {member.code} 2480.50 walk-7"))
    await chat.app.sender.deliver_pending()
    receipt = _texts_to(chat, MEMBER)[-1]
    assert "Paid: CN¥2,480.50" in receipt and "walk-7" not in receipt
    assert "Balance: <b>2,580</b> points" in receipt


async def test_one_coupon_wording_on_every_screen(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    """The welcome coupon (10 off 50) and the rewards mall's 20 off 100 read the same in the
    welcome, the invite screen, /coupons, the rewards mall and the wake-up push."""
    for uid, lang, ten, twenty in (
        (MEMBER, "en", "CN¥10 off orders of CN¥50 or more", "CN¥20 off orders of CN¥100 or more"),
        (FRIEND, "zh-hans", "满¥50减¥10券", "满¥100减¥20券"),
    ):
        await _register(chat, session, uid, lang)
        assert ten in _texts_to(chat, uid)[-1]  # the welcome
        await chat.send(message_update(uid, "/invite", language_code=lang))
        assert ten in _texts_to(chat, uid, "sendPhoto")[-1]
        await chat.send(message_update(uid, "/coupons", language_code=lang))
        listing = chat.fake.calls_of("sendMessage")[-1]
        assert f"<b>{ten}</b>" in listing.params["text"]
        button = listing.params["reply_markup"]["inline_keyboard"][0][0]["text"]
        assert button.startswith(f"🎟 {ten} · ")
        await chat.send(callback_update(uid, RewardView(key="twenty_off_100").pack()))
        item = [c for c in chat.fake.calls if c.method in ("sendMessage", "editMessageText")][
            -1
        ].params["text"]
        assert f"<b>{twenty}</b>" in item

    texts = load_texts()
    wake_up = {"code": "ABCDE12345", "kind": "amount_off", "value": 2000, "min_spend": 10000,
               "valid_until": "2026-03-24"}
    for lang, twenty in (("en", "CN¥20 off orders of CN¥100 or more"), ("zh", "满¥100减¥20券")):
        member = Member(first_name="Lin", points_balance=1, tier="member", language=lang)
        text = texts.render(lang, "pushes/dormant_wakeup", p={"coupon": wake_up},
                            member=member, program=shop.program)
        assert twenty in text


def test_counts_are_pluralised_in_english() -> None:
    texts = load_texts()
    line = LedgerLine("signup", 1, date(2026, 3, 10))
    assert texts.render("en", "points/line", line=line) == "Welcome bonus"

    class _Seen:
        balance, page, pages, lines, later = 1, 0, 1, [line], None

        def __init__(self, expiring: list[Any]) -> None:
            self.expiring = expiring

    class _Lot:
        def __init__(self, amount: int) -> None:
            self.amount, self.expires_on = amount, date(2026, 3, 31)

    one = texts.render("en", "points/overview", o=_Seen([_Lot(1)]), soon_days=30)
    two = texts.render("en", "points/overview", o=_Seen([_Lot(2)]), soon_days=30)
    assert "1 point on 31 Mar 2026" in one and "2 points on 31 Mar 2026" in two
    assert "<code>+1</code> Welcome bonus" in one
    zh = texts.render("zh", "points/overview", o=_Seen([_Lot(1)]), soon_days=30)
    assert "2026年3月31日 过期 1 积分" in zh


def test_coupon_prices_drop_only_whole_cents() -> None:
    texts = load_texts()
    assert texts.coupon("en", kind="amount_off", value=990, min_spend=0) == "CN¥9.90 off"
    assert texts.coupon("zh", kind="percent_off", value=15, min_spend=10000) == "满¥100享8.5折券"
    assert texts.coupon("en", kind="percent_off", value=15, min_spend=0) == "15% off"
    # pushes queued before this version carry decimal strings: they read the same
    assert texts.coupon("zh", kind="amount_off", value="20.00", min_spend="100.00") == (
        texts.coupon("zh", kind="amount_off", value=2000, min_spend=10000)
    )
