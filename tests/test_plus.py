"""PLUS, the paid membership, end to end: /plus, Telegram Stars subscription invoices,
pre-checkout answers, payments (first, duplicate, renewal, racing), cancel, expiry, refund, the
trial and its reminder, and what PLUS does to a till order's points, in both languages.

The program is the documented example with PLUS on (docs/plus_program.toml): 250 Stars per
30 days, a 30-day trial, ×1.5 purchase points, a pack of two 10.00-off-50.00 coupons and a free
item each paid period. The clock stands at 10:00 in Shanghai on 10 Mar 2026.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import App
from bot.settings import DEFAULT_PROGRAM_FILE
from domain.clock import FixedClock
from domain.models import Coupon, Member, Push, StarPayment
from domain.orders import points_multiplier
from domain.plus import extra_multiplier
from domain.program import Program, load_program
from domain.schedule import run_job
from handlers.callbacks import PlusAction, StatsView
from tests.conftest import ADMIN_ID, STAFF_ID, Conversation
from tests.fake_telegram import (
    FakeTelegram,
    message_update,
    pre_checkout_update,
    successful_payment_update,
)
from tests.test_order_statements import counting

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "plus_program.toml"
ANN = 4201
PRICE = 250


@pytest.fixture
def program(request: pytest.FixtureRequest) -> Program:
    """The example program with PLUS on; ``"shipped"`` (indirect parameter): PLUS off."""
    if getattr(request, "param", None) == "shipped":
        return load_program(DEFAULT_PROGRAM_FILE)
    return load_program(EXAMPLE)


async def _join(chat: Conversation, session: AsyncSession, user: int = ANN,
                lang: str = "en") -> Member:
    await chat.send(message_update(user, "/start", first_name="Ann", language_code=lang))
    member = await session.scalar(select(Member).where(Member.telegram_id == user))
    assert member is not None
    session.expunge(member)  # keeps what was read
    await session.rollback()
    return member


async def _fresh(session: AsyncSession, member_id: int) -> Member:
    await session.rollback()
    member = await session.get(Member, member_id, populate_existing=True)
    assert member is not None
    session.expunge(member)
    await session.rollback()
    return member


def _expiry(clock: FixedClock, days: int = 30) -> int:
    return int((clock.now() + timedelta(days=days)).timestamp())


async def _pay(
    chat: Conversation, member: Member, charge: str, *, user: int = ANN,
    expires_at: int | None = None, first: bool = True,
) -> None:
    await chat.send(
        successful_payment_update(
            user, f"plus:{member.id}", PRICE, charge, expires_at=expires_at,
            is_first_recurring=first,
        )
    )


async def _pushes(session: AsyncSession, member_id: int, kind: str) -> list[Push]:
    await session.rollback()
    rows = list(
        await session.scalars(select(Push).where(Push.member_id == member_id, Push.kind == kind))
    )
    await session.rollback()
    return rows


async def _plus_coupons(session: AsyncSession, member_id: int, status: str = "active") -> int:
    await session.rollback()
    count = await session.scalar(
        select(func.count(Coupon.id)).where(
            Coupon.member_id == member_id, Coupon.source.like("plus:%"), Coupon.status == status
        )
    )
    await session.rollback()
    return int(count or 0)


def _texts(fake: FakeTelegram, user: int = ANN) -> list[str]:
    return [
        str(c.params.get("text", "")) for c in fake.calls_of("sendMessage")
        if str(c.params.get("chat_id")) == str(user)
    ]


def _buttons(fake: FakeTelegram) -> list[dict[str, str]]:
    markup = fake.calls_of("sendMessage")[-1].params.get("reply_markup") or {}
    return [button for row in markup.get("inline_keyboard", []) for button in row]


async def test_plus_shows_the_offer_and_join_sends_a_stars_subscription_invoice(
    chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram
) -> None:
    member = await _join(chat, session)
    fake_telegram.clear()
    await chat.send(message_update(ANN, "/plus"))
    text = _texts(fake_telegram)[-1]
    assert "PLUS membership" in text and "250 Stars every 30 days" in text
    assert "×1.5 points" in text and "2 × CN¥10 off orders of CN¥50 or more" in text
    assert "Free two-way returns" in text and "30 days free, once" in text
    labels = [b["text"] for b in _buttons(fake_telegram)]
    assert labels == ["⭐ Join PLUS · 250 Stars / 30 days", "🎁 Start the free 30-day trial"]

    await chat.send(fake_telegram.press(ANN, PlusAction(action="join").pack()))
    invoice = fake_telegram.calls_of("createInvoiceLink")[-1].params
    assert invoice["currency"] == "XTR" and int(invoice["subscription_period"]) == 2592000
    assert invoice["prices"] == [{"label": "PLUS, 30 days", "amount": 250}]
    assert invoice["payload"] == f"plus:{member.id}" and not invoice.get("provider_token")
    pay = _buttons(fake_telegram)
    assert pay[0]["text"] == "Pay ⭐ 250" and pay[0]["url"].startswith("https://t.me/$")


async def test_first_payment_activates_plus_with_its_coupon_pack_once(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram,
    clock: FixedClock,
) -> None:
    member = await _join(chat, session)
    await chat.send(pre_checkout_update(ANN, f"plus:{member.id}", PRICE))
    answer = fake_telegram.calls_of("answerPreCheckoutQuery")[-1].params
    assert answer["ok"] in (True, "true")

    expires = _expiry(clock)
    await _pay(chat, member, "ch-1", expires_at=expires)
    await _pay(chat, member, "ch-1", expires_at=expires)  # Telegram delivered it twice

    ann = await _fresh(session, member.id)
    assert ann.plus_state == "paid"
    assert ann.plus_until == datetime.fromtimestamp(expires, UTC)
    assert await session.scalar(select(func.count(StarPayment.id))) == 1
    assert await _plus_coupons(session, member.id) == 3
    assert len(await _pushes(session, member.id, "plus_activated")) == 1
    fake_telegram.clear()
    assert await app.sender.deliver_pending() == 1
    push = _texts(fake_telegram)[-1]
    assert "Welcome to PLUS, Ann!" in push and "until 9 Apr 2026" in push
    assert push.count("CN¥10 off orders of CN¥50 or more") == 2 and "a free item" in push

    # A paid PLUS cannot be bought twice: Telegram is told why, in the member's words.
    await chat.send(pre_checkout_update(ANN, f"plus:{member.id}", PRICE))
    answer = fake_telegram.calls_of("answerPreCheckoutQuery")[-1].params
    assert answer["ok"] in (False, "false")
    assert answer["error_message"] == "You already have PLUS: nothing to pay now."


async def test_a_renewal_extends_plus_and_issues_that_periods_pack(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram,
    clock: FixedClock,
) -> None:
    member = await _join(chat, session)
    await _pay(chat, member, "ch-1", expires_at=_expiry(clock))
    clock.advance(days=30)
    renewed_until = _expiry(clock)
    await _pay(chat, member, "ch-2", expires_at=renewed_until, first=False)
    await _pay(chat, member, "ch-2", expires_at=renewed_until, first=False)

    ann = await _fresh(session, member.id)
    assert ann.plus_state == "paid"
    assert ann.plus_until == datetime.fromtimestamp(renewed_until, UTC)
    assert await _plus_coupons(session, member.id) == 6
    assert len(await _pushes(session, member.id, "plus_renewed")) == 1
    fake_telegram.clear()
    await app.sender.deliver_pending()
    assert any("Your PLUS is renewed</b> until 9 May 2026" in t for t in _texts(fake_telegram))


async def test_two_payments_racing_for_one_member_both_count(
    chat: Conversation, session: AsyncSession, clock: FixedClock
) -> None:
    member = await _join(chat, session)
    await asyncio.gather(_pay(chat, member, "race-1"), _pay(chat, member, "race-2"))
    ann = await _fresh(session, member.id)
    # Without Telegram's dates each payment is 30 days, one after the other: none lost.
    assert ann.plus_until == clock.now() + timedelta(days=60)
    assert await session.scalar(select(func.count(StarPayment.id))) == 2
    assert await _plus_coupons(session, member.id) == 6


async def test_cancel_keeps_plus_to_the_end_then_the_expiry_job_ends_it_once(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram,
    clock: FixedClock,
) -> None:
    member = await _join(chat, session)
    await _pay(chat, member, "ch-1", expires_at=_expiry(clock))
    await app.sender.deliver_pending()
    fake_telegram.clear()
    await chat.send(message_update(ANN, "/plus"))
    assert [b["text"] for b in _buttons(fake_telegram)] == ["Stop renewing"]
    await chat.send(fake_telegram.press(ANN, PlusAction(action="cancel").pack()))
    edit = fake_telegram.calls_of("editUserStarSubscription")[-1].params
    assert edit["telegram_payment_charge_id"] == "ch-1" and edit["is_canceled"] in (True, "true")
    assert _texts(fake_telegram)[-1] == (
        "Renewal stopped. You keep PLUS until 9 Apr 2026; nothing more will be charged."
    )

    clock.advance(days=29)
    await run_job(app.session_factory, app.shop, "plus_expiry")
    assert (await _fresh(session, member.id)).plus_state == "paid"  # still paid for
    clock.advance(days=1, hours=1)
    await run_job(app.session_factory, app.shop, "plus_expiry")
    clock.advance(days=1)
    await run_job(app.session_factory, app.shop, "plus_expiry")
    assert (await _fresh(session, member.id)).plus_state == "none"
    assert len(await _pushes(session, member.id, "plus_ended")) == 1
    fake_telegram.clear()
    await app.sender.deliver_pending()
    assert _texts(fake_telegram)[-1].startswith("Your PLUS has ended.")
    # The card no longer shows the badge; the member may join again.
    await chat.send(message_update(ANN, "/plus"))
    assert "Join PLUS" in _buttons(fake_telegram)[0]["text"]


async def test_an_admin_refund_ends_plus_now_and_voids_the_periods_unused_coupons(
    app: App, api: httpx.AsyncClient, chat: Conversation, session: AsyncSession,
    fake_telegram: FakeTelegram, clock: FixedClock,
) -> None:
    member = await _join(chat, session)
    await _pay(chat, member, "ch-9", expires_at=_expiry(clock))
    code = await session.scalar(
        select(Coupon.code).where(
            Coupon.member_id == member.id, Coupon.kind == "amount_off",
            Coupon.source.like("plus:%"),
        ).limit(1)
    )
    await session.rollback()
    used = await api.post(
        "/api/v1/orders",
        json={"order_id": "P1", "member": member.code, "amount": "60.00", "coupon_code": code},
    )
    assert used.status_code == 201, used.text

    await chat.send(message_update(STAFF_ID, "/plusrefund ch-9 paid by mistake"))
    assert _texts(fake_telegram, STAFF_ID)[-1] == "Only the shop's admins can refund PLUS payments."
    assert not fake_telegram.calls_of("refundStarPayment")
    await chat.send(message_update(ADMIN_ID, "/plusrefund ch-9 paid by mistake"))
    refund = fake_telegram.calls_of("refundStarPayment")[-1].params
    assert refund["telegram_payment_charge_id"] == "ch-9" and int(refund["user_id"]) == ANN
    assert _texts(fake_telegram, ADMIN_ID)[-1] == (
        "↩️ Refunded ⭐ 250 Stars. The member's PLUS has ended and 2 unused coupons of that "
        "period were voided."
    )
    ann = await _fresh(session, member.id)
    assert ann.plus_state == "none" and ann.plus_until == clock.now()
    assert await _plus_coupons(session, member.id, "void") == 2
    assert await _plus_coupons(session, member.id, "used") == 1  # the used one stays used
    payment = await session.scalar(select(StarPayment))
    assert payment is not None and payment.status == "refunded"
    assert payment.refund_reason == "paid by mistake"
    await session.rollback()
    await chat.send(message_update(ADMIN_ID, "/plusrefund ch-9 again"))
    assert _texts(fake_telegram, ADMIN_ID)[-1] == "That PLUS payment was already refunded."
    assert len(fake_telegram.calls_of("refundStarPayment")) == 1


async def test_a_frozen_member_is_refused_at_pre_checkout_in_their_language(
    chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram
) -> None:
    ann = await _join(chat, session)
    lan = await _join(chat, session, user=4202, lang="zh")
    for member in (ann, lan):
        await chat.send(message_update(STAFF_ID, f"/freeze {member.code} chargeback"))
    await chat.send(pre_checkout_update(ANN, f"plus:{ann.id}", PRICE))
    await chat.send(pre_checkout_update(4202, f"plus:{lan.id}", PRICE, language_code="zh"))
    answers = [c.params for c in fake_telegram.calls_of("answerPreCheckoutQuery")]
    assert [a["ok"] in (False, "false") for a in answers] == [True, True]
    assert answers[0]["error_message"] == (
        "Your account is on hold, so PLUS cannot be bought now. Please talk to our staff."
    )
    assert answers[1]["error_message"] == "您的账户已被暂停，暂时无法开通PLUS会员，请联系店员。"
    # Someone else's invoice is refused too.
    await chat.send(pre_checkout_update(ANN, f"plus:{lan.id}", PRICE))
    assert fake_telegram.calls_of("answerPreCheckoutQuery")[-1].params["ok"] in (False, "false")


async def test_the_trial_once_its_reminder_and_joining_during_it_in_chinese(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram,
    clock: FixedClock,
) -> None:
    lan = await _join(chat, session, user=4202, lang="zh")
    await chat.send(message_update(4202, "/plus", language_code="zh"))
    assert "PLUS付费会员" in _texts(fake_telegram, 4202)[-1]
    await chat.send(
        fake_telegram.press(4202, PlusAction(action="trial").pack(), language_code="zh")
    )
    assert _texts(fake_telegram, 4202)[-1].startswith("🎁 <b>PLUS会员免费试用已开始！</b>试用期至2026年4月9日")
    member = await _fresh(session, lan.id)
    assert member.plus_state == "trial" and member.plus_trial_used
    assert await _plus_coupons(session, lan.id) == 0  # the pack comes with a paid period

    await chat.send(
        fake_telegram.press(4202, PlusAction(action="trial").pack(), language_code="zh")
    )
    assert fake_telegram.calls_of("answerCallbackQuery")[-1].params["text"].startswith(
        "免费试用仅限一次"
    )

    clock.advance(days=27)
    await run_job(app.session_factory, app.shop, "plus_trial_reminders")
    await run_job(app.session_factory, app.shop, "plus_trial_reminders")
    assert len(await _pushes(session, lan.id, "plus_trial_ending")) == 1
    fake_telegram.clear()
    await app.sender.deliver_pending()
    assert _texts(fake_telegram, 4202)[-1].startswith("⏳ 您的PLUS会员免费试用将于2026年4月9日结束")

    # Joining during the trial: the pre-checkout accepts, the payment makes PLUS paid.
    await chat.send(pre_checkout_update(4202, f"plus:{lan.id}", PRICE, language_code="zh"))
    assert fake_telegram.calls_of("answerPreCheckoutQuery")[-1].params["ok"] in (True, "true")
    await _pay(chat, member, "ch-zh", user=4202, expires_at=_expiry(clock))
    member = await _fresh(session, lan.id)
    assert member.plus_state == "paid"
    await app.sender.deliver_pending()
    assert "欢迎成为PLUS会员" in _texts(fake_telegram, 4202)[-1]
    clock.advance(days=5)  # past the trial's end: the paid PLUS stays
    await run_job(app.session_factory, app.shop, "plus_expiry")
    assert (await _fresh(session, lan.id)).plus_state == "paid"


async def test_plus_multiplies_a_till_orders_points_on_the_receipt_and_in_points(
    app: App, api: httpx.AsyncClient, chat: Conversation, session: AsyncSession,
    fake_telegram: FakeTelegram, clock: FixedClock,
) -> None:
    member = await _join(chat, session)
    before = await api.post(
        "/api/v1/orders", json={"order_id": "B1", "member": member.code, "amount": "100.00"}
    )
    assert before.json()["points_earned"] == 100  # Member tier ×1
    await _pay(chat, member, "ch-1", expires_at=_expiry(clock))
    code = await session.scalar(
        select(Coupon.code).where(
            Coupon.member_id == member.id, Coupon.kind == "amount_off",
            Coupon.source.like("plus:%"),
        ).limit(1)
    )
    await session.rollback()
    placed = await api.post(
        "/api/v1/orders",
        json={"order_id": "B2", "member": member.code, "amount": "100.00", "coupon_code": code},
    )
    assert placed.status_code == 201, placed.text
    # The pack's 10.00 off, then 90.00 × 1 (tier) × 1.5 (PLUS).
    assert placed.json()["to_pay"] == "90.00" and placed.json()["points_earned"] == 135
    fake_telegram.clear()
    await app.sender.deliver_pending()
    receipt = next(t for t in _texts(fake_telegram) if "CN¥100.00" in t and "−CN¥10.00" in t)
    assert "Points earned: <b>+135</b> (PLUS ×1.5 included)" in receipt

    await chat.send(message_update(ANN, "/points"))
    points = _texts(fake_telegram)[-1]
    assert "<code>+135</code> Purchase, CN¥100.00 · Member with PLUS ×1.5" in points
    assert "<code>+100</code> Purchase, CN¥100.00 · 10 Mar 2026" in points  # ×1: no multiplier

    await chat.send(message_update(ANN, "/card"))
    card = fake_telegram.calls_of("sendPhoto")[-1].params["caption"]
    assert "⭐ <b>PLUS</b> member" in card
    await chat.send(message_update(ANN, "/benefits"))
    assert "<b>PLUS</b> · <i>you have it</i>" in _texts(fake_telegram)[-1]


@pytest.mark.parametrize("program", ["shipped"], indirect=True)
async def test_plus_is_not_sold_when_the_program_leaves_it_off(
    chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram, program: Program
) -> None:
    assert not program.plus.enabled
    member = await _join(chat, session)
    fake_telegram.clear()
    await chat.send(message_update(ANN, "/plus"))
    assert _texts(fake_telegram) == ["PLUS is not offered at the moment."]
    await chat.send(message_update(ANN, "/benefits"))
    assert "PLUS" not in _texts(fake_telegram)[-1]
    await chat.send(pre_checkout_update(ANN, f"plus:{member.id}", PRICE))
    answer = fake_telegram.calls_of("answerPreCheckoutQuery")[-1].params
    assert answer["error_message"] == "PLUS is not offered at the moment."


async def test_the_shop_sees_plus_stars_members_and_trial_conversion(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram,
    clock: FixedClock,
) -> None:
    ann = await _join(chat, session)
    lan = await _join(chat, session, user=4202, lang="zh")
    await _join(chat, session, user=4203)
    for user in (ANN, 4202, 4203):  # three trials
        await chat.send(fake_telegram.press(user, PlusAction(action="trial").pack()))
    await _pay(chat, ann, "ch-a", expires_at=_expiry(clock))
    await _pay(chat, lan, "ch-b", user=4202, expires_at=_expiry(clock))
    await chat.send(message_update(ADMIN_ID, "/plusrefund ch-b asked for it"))
    await chat.send(
        fake_telegram.press(ADMIN_ID, StatsView(view="sales", period="this").pack())
    )
    sales = fake_telegram.calls_of("editMessageText")[-1].params["text"]
    assert "Stars taken: ⭐ 250 from 2 payments (1 refunded)\nMembers" in sales
    assert "Members with PLUS now: 2 (1 paying)" in sales  # Ann paid, the third on trial
    assert "Trials that became payments: 2 of 3 (66.6%)" in sales


async def test_an_order_with_plus_takes_no_more_statements(
    app: App, api: httpx.AsyncClient, chat: Conversation, session: AsyncSession,
    clock: FixedClock,
) -> None:
    member = await _join(chat, session)
    await _pay(chat, member, "ch-1", expires_at=_expiry(clock))
    await api.post(
        "/api/v1/orders", json={"order_id": "S0", "member": member.code, "amount": "1.00"}
    )
    with counting(app) as statements:
        placed = await api.post(
            "/api/v1/orders", json={"order_id": "S1", "member": member.code, "amount": "120.00"}
        )
    assert placed.json()["points_earned"] == 180  # 120 × 1.5
    assert len(statements) <= 8, "\n".join(statements)  # as without PLUS: read with the member


def test_plus_multiplies_with_the_tier_and_the_member_day(app: App, clock: FixedClock) -> None:
    shop = app.shop
    member_day = clock.now().replace(day=18)
    assert points_multiplier(shop, "gold", None, member_day) == Decimal("3.0")
    factor = extra_multiplier(shop, "paid", member_day + timedelta(days=1), member_day)
    assert points_multiplier(shop, "gold", None, member_day, factor) == Decimal("4.5")
    ended = extra_multiplier(shop, "paid", member_day, member_day)
    assert ended == 1 and extra_multiplier(shop, "none", None, member_day) == 1
