"""Privacy: /mydata as a JSON document, and /delete end to end (confirm, optional anonymous
reason, erasure that keeps the shop's accounts, a fresh start afterwards)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.clock import FixedClock
from domain.coupons import issue_coupon
from domain.models import CheckIn, Coupon, ExitSurvey, LedgerEntry, Member, Order, Push
from domain.privacy import erase_member, export_member_data
from domain.shop import Shop
from handlers.callbacks import DeleteStep
from tests.conftest import STAFF_ID, Conversation
from tests.fake_telegram import callback_update, message_update

USER = 4242
OTHER = 5151


async def _member(session: AsyncSession, telegram_id: int = USER) -> Member:
    await session.rollback()  # a fresh snapshot: the bot wrote in its own sessions
    member = await session.scalar(
        select(Member)
        .where(Member.telegram_id == telegram_id)
        .execution_options(populate_existing=True)
    )
    assert member is not None
    return member


async def _by_id(session: AsyncSession, member_id: int) -> Member:
    await session.rollback()
    member = await session.get(Member, member_id, populate_existing=True)
    assert member is not None
    return member


def _buttons(params: dict[str, Any]) -> dict[str, str]:
    rows = params["reply_markup"]["inline_keyboard"]
    return {b["text"]: b["callback_data"] for row in rows for b in row}


def _press(
    user: int, data: str, shown_at: datetime, *, on: int, chat_id: int | None = None
) -> dict:
    """A press on the bot's message ``on`` (its /delete prompt), last shown at ``shown_at``."""
    update = callback_update(user, data, message_id=on, chat_id=chat_id)
    update["callback_query"]["message"]["date"] = int(shown_at.timestamp())
    return update


async def _count(session: AsyncSession, query: Any) -> int:
    await session.rollback()
    return int(await session.scalar(query) or 0)


async def _customer_with_history(
    chat: Conversation, session: AsyncSession, shop: Shop, telegram_id: int = USER
) -> tuple[int, str, str]:
    """A member with a phone, a birthday, an order, a pending receipt, an active and a used
    coupon and a check-in. Returns (member id, member code, active coupon code)."""
    await chat.send(
        message_update(telegram_id, "/start", first_name="Lin", last_name="Wei", username="linwei")
    )
    contact = {"phone_number": "8613812345678", "first_name": "Lin", "user_id": telegram_id}
    await chat.send(message_update(telegram_id, "", contact=contact))
    await chat.send(message_update(telegram_id, "/birthday 1990-07-01"))
    member = await _member(session, telegram_id)
    member_id, code = member.id, member.code
    await chat.send(message_update(STAFF_ID, f"/sale {code} 199.00 o-1"))
    await session.rollback()
    async with session.begin():
        active = await issue_coupon(
            session, shop, member_id, source="test", kind="amount_off", value=500,
            min_spend=0, valid_days=30,
        )
        used = await issue_coupon(
            session, shop, member_id, source="test", kind="amount_off", value=500,
            min_spend=0, valid_days=30,
        )
        used.status = "used"
        session.add(CheckIn(member_id=member_id, day=date(2026, 3, 9), streak=1, points=5,
                            created_at=shop.now()))
        coupon_code = active.code
    return member_id, code, coupon_code


# ---------------------------------------------------------------- /mydata


async def test_mydata_is_a_json_document_with_ledger_coupons_and_orders(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member_id, code, coupon_code = await _customer_with_history(chat, session, shop)
    await chat.send(message_update(STAFF_ID, "/refund o-1 40.00"))
    await chat.send(message_update(OTHER, "/start", first_name="Someone else"))
    await chat.send(message_update(USER, "/mydata"))
    sent = chat.fake.calls_of("sendDocument")[-1]
    assert sent.params["chat_id"] == str(USER)
    assert "everything we keep about you" in sent.params["caption"]
    upload = sent.params["document"]
    assert upload["upload"] == f"member-data-{code}.json"
    data = json.loads(upload["bytes"].decode())

    profile = data["profile"]
    assert profile["member_code"] == code and profile["telegram_id"] == USER
    assert (profile["first_name"], profile["last_name"], profile["username"]) == (
        "Lin", "Wei", "linwei",
    )
    assert profile["phone"] == "+8613812345678"
    assert profile["birthday"]["month"] == 7 and profile["birthday"]["year"] == 1990
    assert profile["joined_at"] == "2026-03-10T10:00:00+08:00"  # local, ISO with offset
    assert data["currency"] == "CNY"

    balance = (await _by_id(session, member_id)).points_balance
    assert balance == 259 and profile["points_balance"] == balance
    assert sum(entry["amount"] for entry in data["ledger"]) == balance
    assert {entry["kind"] for entry in data["ledger"]} >= {"signup"}
    assert sum(lot["remaining"] for lot in data["points_lots"]) == balance
    coupons = {c["code"]: c for c in data["coupons"]}
    assert coupons[coupon_code]["status"] == "active" and coupons[coupon_code]["value"] == "5.00"
    assert [o["order_id"] for o in data["orders"]] == ["o-1"]
    assert data["orders"][0]["paid"] == data["orders"][0]["amount"]
    assert [r["amount"] for r in data["orders"][0]["refunds"]] == ["40.00"]
    assert data["tier_history"][0]["to"] == "member"
    assert data["checkins"] == [{"day": "2026-03-09", "streak": 1, "points": 5}]
    assert "Someone else" not in upload["bytes"].decode()


async def test_mydata_in_chinese_for_a_new_member(chat: Conversation) -> None:
    await chat.send(message_update(USER, "/mydata", first_name="小明", language_code="zh-hans"))
    sent = chat.fake.calls_of("sendDocument")[-1]
    assert "这是我们保存的您的全部数据" in sent.params["caption"]
    data = json.loads(sent.params["document"]["bytes"].decode())
    assert data["profile"]["first_name"] == "小明" and data["profile"]["language"] == "zh"
    assert data["orders"] == [] and data["profile"]["birthday"] is None


# ---------------------------------------------------------------- /delete


async def test_delete_end_to_end_erases_identity_and_keeps_the_accounts(
    chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    member_id, code, coupon_code = await _customer_with_history(chat, session, shop)
    entries_before = await _count(
        session, select(func.count(LedgerEntry.id)).where(LedgerEntry.member_id == member_id)
    )
    pending_before = await _count(
        session,
        select(func.count(Push.id)).where(Push.member_id == member_id, Push.status == "pending"),
    )
    assert pending_before >= 1  # the receipt of the sale has not been delivered yet

    await chat.send(message_update(USER, "/delete"))
    prompt = chat.fake.calls_of("sendMessage")[-1]
    assert "Leave the club and delete your data?" in prompt.params["text"]
    assert set(_buttons(prompt.params)) == {"Yes, delete", "Cancel"}
    on = prompt.message_id
    await chat.send(_press(USER, _buttons(prompt.params)["Yes, delete"], clock.now(), on=on))
    reasons = chat.fake.calls_of("editMessageText")[-1]
    assert not reasons.failed and reasons.params["message_id"] == str(on)
    assert "why are you leaving?" in reasons.params["text"]
    choices = _buttons(reasons.params)
    assert list(choices) == [
        "Too many messages", "Not useful for me", "Privacy concerns", "I am moving away",
        "Something else", "Skip",
    ]
    assert (await _by_id(session, member_id)).status == "active"  # nothing erased yet

    await chat.send(_press(USER, choices["Privacy concerns"], clock.now(), on=on))
    farewell = chat.fake.calls_of("editMessageText")[-1]
    assert "Your data has been deleted" in farewell.params["text"]
    assert "reply_markup" not in farewell.params  # no buttons left to press
    menu_gone = chat.fake.calls_of("sendMessage")[-1]
    assert menu_gone.params["reply_markup"] == {"remove_keyboard": True}
    assert "/start" in menu_gone.params["text"]

    gone = await _by_id(session, member_id)
    assert gone.status == "deleted" and gone.deleted_at == clock.now()
    assert gone.telegram_id is None
    personal = (gone.first_name, gone.last_name, gone.username, gone.phone, gone.birthday_month,
                gone.birthday_day, gone.birthday_year, gone.birthday_gift_from, gone.card_file_id)
    assert personal == (None,) * 9
    assert gone.code == code  # the anonymous key of the shop's accounts
    coupons = dict(
        (await session.execute(select(Coupon.code, Coupon.status)
                               .where(Coupon.member_id == member_id))).all()
    )
    assert coupons[coupon_code] == "void"
    assert "active" not in coupons.values() and "used" in coupons.values()
    pushes = (await session.execute(
        select(Push.status, Push.last_error).where(Push.member_id == member_id)
    )).all()
    assert len([p for p in pushes if p.status == "failed" and p.last_error == "member left"]) == (
        pending_before
    )
    assert all(p.status != "pending" for p in pushes)
    entries = (await session.scalars(
        select(LedgerEntry.amount).where(LedgerEntry.member_id == member_id)
    )).all()
    assert len(entries) == entries_before and sum(entries) == gone.points_balance == 299
    orders = select(func.count(Order.id)).where(Order.member_id == member_id)
    assert await session.scalar(orders) == 1

    surveys = (await session.scalars(select(ExitSurvey))).all()
    assert [s.reason for s in surveys] == ["privacy"]
    assert {c.key for c in inspect(ExitSurvey).columns} == {"id", "reason", "created_at"}
    # only the month is kept (1 March, local midnight), not the moment of deletion
    assert surveys[0].created_at == datetime(2026, 2, 28, 16, 0, tzinfo=UTC)

    # the staff can no longer find the member, and nothing reaches the old chat
    await chat.send(message_update(STAFF_ID, f"/sale {code} 10.00 o-2"))
    assert "No member has that code" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    sends = len(chat.fake.calls_of("sendMessage"))
    await chat.app.sender.deliver_pending()
    assert len(chat.fake.calls_of("sendMessage")) == sends

    # a later /start is a brand-new member with a new code, welcomed back without the
    # sign-up bonus (given once per Telegram account)
    await chat.send(message_update(USER, "/start", first_name="Lin"))
    assert "Welcome back" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    fresh = await _member(session)
    assert fresh.id != member_id and fresh.code != code
    assert fresh.points_balance == 0 and fresh.phone is None and fresh.birthday_month is None
    assert (await _by_id(session, member_id)).status == "deleted"


async def test_skip_keeps_no_survey_and_chinese_texts(
    chat: Conversation, session: AsyncSession, clock: FixedClock
) -> None:
    await chat.send(message_update(USER, "/delete", first_name="小明", language_code="zh-hans"))
    prompt = chat.fake.calls_of("sendMessage")[-1]
    assert "确定退出会员并删除您的数据吗" in prompt.params["text"]
    member_id = (await _member(session)).id
    on = prompt.message_id
    await chat.send(_press(USER, _buttons(prompt.params)["确认删除"], clock.now(), on=on))
    reasons = chat.fake.calls_of("editMessageText")[-1]
    assert "能告诉我们原因吗" in reasons.params["text"] and "担心隐私" in _buttons(reasons.params)
    await chat.send(_press(USER, _buttons(reasons.params)["跳过"], clock.now(), on=on))
    assert "您的数据已删除" in chat.fake.calls_of("editMessageText")[-1].params["text"]
    assert "/start" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert (await _by_id(session, member_id)).status == "deleted"
    assert await _count(session, select(func.count(ExitSurvey.id))) == 0


async def test_cancel_deletes_nothing_and_leads_back_to_the_profile(
    chat: Conversation, session: AsyncSession, clock: FixedClock
) -> None:
    await chat.send(message_update(USER, "/profile"))
    profile = chat.fake.calls_of("sendMessage")[-1]
    on = profile.message_id
    await chat.send(_press(USER, _buttons(profile.params)["🗑 Leave and delete my data"],
                           clock.now(), on=on))
    confirm = chat.fake.calls_of("editMessageText")[-1]  # the profile turns into the question
    assert "Leave the club and delete your data?" in confirm.params["text"]
    await chat.send(_press(USER, _buttons(confirm.params)["Cancel"], clock.now(), on=on))
    cancelled = chat.fake.calls_of("editMessageText")[-1]
    assert "Nothing was deleted" in cancelled.params["text"]
    await chat.send(
        _press(USER, _buttons(cancelled.params)["👤 Back to my profile"], clock.now(), on=on)
    )
    assert "Offers and news" in chat.fake.calls_of("editMessageText")[-1].params["text"]
    member = await _member(session)
    assert member.status == "active" and member.first_name == "Ann"
    assert await _count(session, select(func.count(ExitSurvey.id))) == 0


async def test_crafted_delete_press_erases_only_the_one_who_pressed(
    chat: Conversation, session: AsyncSession, clock: FixedClock
) -> None:
    await chat.send(message_update(USER, "/start", first_name="Alice"))
    await chat.send(message_update(OTHER, "/start", first_name="Bob"))
    alice_id = (await _member(session, USER)).id
    bob_id = (await _member(session, OTHER)).id
    # Bob forges a press on a message in Alice's chat.
    forged = DeleteStep(step="reason", reason="other").pack()
    in_alices_chat = chat.fake.calls_of("sendMessage")[0].message_id
    await chat.send(_press(OTHER, forged, clock.now(), on=in_alices_chat, chat_id=USER))
    assert (await _by_id(session, bob_id)).status == "deleted"
    alice_after = await _by_id(session, alice_id)
    assert alice_after.status == "active" and alice_after.first_name == "Alice"
    assert alice_after.telegram_id == USER

    # an unknown reason is no button of ours: nothing happens
    await chat.send(
        _press(USER, DeleteStep(step="reason", reason="x' OR 1").pack(), clock.now(),
               on=in_alices_chat)
    )
    assert (await _by_id(session, alice_id)).status == "active"


async def test_old_button_after_leaving_makes_no_member_and_spares_the_new_one(
    chat: Conversation, session: AsyncSession, clock: FixedClock
) -> None:
    await chat.send(message_update(USER, "/delete"))
    on = chat.fake.calls_of("sendMessage")[-1].message_id
    old_id = (await _member(session)).id
    shown = clock.now()
    skip = DeleteStep(step="reason", reason="").pack()
    await chat.send(_press(USER, skip, shown, on=on))
    assert (await _by_id(session, old_id)).status == "deleted"

    clock.advance(hours=1)
    old_press = DeleteStep(step="reason", reason="other").pack()
    await chat.send(_press(USER, old_press, shown, on=on))
    asked = chat.fake.calls_of("answerCallbackQuery")[-1]
    assert "/start" in asked.params["text"]  # a press makes nobody a member
    assert await _count(session, select(func.count(Member.id)).where(Member.telegram_id == USER)) == 0

    await chat.send(message_update(USER, "/start"))
    clock.advance(minutes=5)
    await chat.send(_press(USER, old_press, shown, on=on))
    fresh = await _member(session)  # the old button does not erase the new membership
    assert fresh.id != old_id and fresh.status == "active"
    stale = chat.fake.calls_of("editMessageText")[-1]
    assert "earlier membership" in stale.params["text"]
    assert fresh.code[:4] in stale.params["text"]
    assert await _count(session, select(func.count(ExitSurvey.id))) == 0


async def test_double_tap_erases_once(
    chat: Conversation, session: AsyncSession, clock: FixedClock
) -> None:
    await chat.send(message_update(USER, "/delete"))
    on = chat.fake.calls_of("sendMessage")[-1].message_id
    member_id = (await _member(session)).id
    shown = clock.now()
    clock.advance(seconds=10)  # the member reads the reasons, then taps twice
    tap = DeleteStep(step="reason", reason="not_useful").pack()
    await asyncio.gather(
        chat.send(_press(USER, tap, shown, on=on)), chat.send(_press(USER, tap, shown, on=on))
    )
    assert (await _by_id(session, member_id)).status == "deleted"
    assert await _count(session, select(func.count(ExitSurvey.id))) == 1
    deleted = select(func.count(Member.id)).where(Member.status == "deleted")
    assert await _count(session, deleted) == 1  # a second tap never erases a fresh sign-up


async def test_erase_twice_in_the_domain_changes_nothing_more(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    from domain import members

    member = (await members.register(
        session, shop, members.TelegramProfile(USER, "Lin", None, None, "en")
    )).member
    member_id = member.id
    assert await erase_member(session, shop, member, reason="moving_away") is True
    assert member.status == "deleted" and member.telegram_id is None  # the object is in sync
    clock.advance(days=40)
    assert await erase_member(session, shop, member, reason="other") is False
    assert (await _by_id(session, member_id)).deleted_at == clock.now() - timedelta(days=40)
    reasons = (await session.scalars(select(ExitSurvey.reason))).all()
    assert reasons == ["moving_away"]
    export = await export_member_data(session, shop, await _by_id(session, member_id))
    assert export["profile"]["first_name"] is None and export["profile"]["status"] == "deleted"
    json.dumps(export)
