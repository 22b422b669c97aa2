"""Member care end to end: /member for staff and admins, points adjusted with a reason within
the staff's limits (admins without), a deduction below zero only on an admin's confirmation,
coupons granted, call-back outcomes; the member told in their language, one audit line per
action, and nothing of it reachable by a member, even with crafted callback data."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.middlewares import Throttle
from domain import care, points
from domain.audit import Actor
from domain.models import AuditEntry, CallbackOutcome, Coupon, LedgerEntry, Member, PointsLot, Push
from domain.shop import Shop
from domain.transaction import write_transaction
from handlers.callbacks import (
    AdjustConfirm,
    AuditPage,
    CallbackOutcomeChoice,
    CareGrant,
    MemberCare,
)
from tests.conftest import ADMIN_ID, STAFF_ID, Conversation
from tests.fake_telegram import Call, message_update
from tests.test_errors_i18n import assert_all_chinese

MEMBER = 5151
OTHER = 5152
STAFF = Actor(STAFF_ID, "staff")
ADMIN = Actor(ADMIN_ID, "admin")


@dataclass(frozen=True)
class Joined:
    id: int
    code: str
    username: str


async def _join(
    chat: Conversation, session: AsyncSession, user_id: int = MEMBER, lang: str = "en",
    username: str = "lin_w",
) -> Joined:
    for middleware in chat.app.dispatcher.update.outer_middleware:
        if isinstance(middleware, Throttle):
            middleware.limit = 10_000  # staff at work are a robot here, not a flood
    await chat.send(message_update(
        user_id, "/start", first_name="Lin", username=username, language_code=lang,
    ))
    await session.rollback()
    member = await session.scalar(select(Member).where(Member.telegram_id == user_id))
    assert member is not None
    return Joined(member.id, member.code, username)


async def _balance(session: AsyncSession, member_id: int) -> int:
    """The balance, checked against the ledger and the lots (with the debt)."""
    await session.rollback()
    member = await session.get(Member, member_id, populate_existing=True)
    assert member is not None
    ledger = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0))
        .where(LedgerEntry.member_id == member_id)
    )
    lots = await session.scalar(
        select(func.coalesce(func.sum(PointsLot.remaining), 0))
        .where(PointsLot.member_id == member_id)
    )
    assert member.points_balance == ledger == int(lots or 0) - member.points_debt
    return member.points_balance


async def _audit(session: AsyncSession, action: str | None = None) -> list[AuditEntry]:
    await session.rollback()
    query = select(AuditEntry).order_by(AuditEntry.id)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    return list((await session.scalars(query)).all())


def _last_to(chat: Conversation, user_id: int, method: str = "sendMessage") -> Call:
    return [c for c in chat.fake.calls_of(method) if c.params["chat_id"] == str(user_id)][-1]


def _texts_to(chat: Conversation, user_id: int) -> list[str]:
    return [
        str(c.params.get("text", "")) for c in chat.fake.calls
        if c.method in ("sendMessage", "editMessageText") and c.params.get("chat_id") == str(user_id)
    ]


def _alerts(chat: Conversation) -> list[str]:
    return [str(c.params.get("text", "")) for c in chat.fake.calls_of("answerCallbackQuery")]


def _data(call: Call) -> list[str]:
    markup: Any = call.params.get("reply_markup") or {"inline_keyboard": []}
    if isinstance(markup, str):
        markup = json.loads(markup)
    return [b["callback_data"] for row in markup["inline_keyboard"] for b in row]


async def _adjust(chat: Conversation, user_id: int, member_id: int, amount: str, reason: str,
                  *, deduct: bool = False) -> None:
    action = "deduct" if deduct else "add"
    await chat.send(chat.fake.press(user_id, MemberCare(action=action, member_id=member_id).pack()))
    await chat.send(message_update(user_id, amount))
    await chat.send(message_update(user_id, reason))


async def test_staff_sees_the_card_by_code_phone_or_username(
    chat: Conversation, session: AsyncSession
) -> None:
    member = await _join(chat, session)
    for query in (member.code, f"@{member.username}", f"@{member.username.upper()}"):
        await chat.send(message_update(STAFF_ID, f"/member {query}"))
        card = _last_to(chat, STAFF_ID)
        text = card.params["text"]
        assert "Lin" in text and "Member" in text and "Balance: <b>100</b>" in text
        assert "Welcome bonus" in text and "CN¥10 off orders of CN¥50" in text  # history line, welcome coupon
        assert "new" in text and "none yet" in text
        assert MemberCare(action="add", member_id=member.id).pack() in _data(card)
        assert AuditPage(member_id=member.id).pack() not in _data(card)  # admins only
    await chat.send(message_update(ADMIN_ID, f"/member {member.code}"))
    assert AuditPage(member_id=member.id).pack() in _data(_last_to(chat, ADMIN_ID))
    await chat.send(message_update(STAFF_ID, "/member @nobody_here"))
    assert "No member" in _last_to(chat, STAFF_ID).params["text"]
    await chat.send(message_update(STAFF_ID, "/member"))
    assert "/member @ann" in _last_to(chat, STAFF_ID).params["text"]
    await session.rollback()
    assert await session.scalar(select(func.count(Member.id))) == 1  # staff made no member


async def test_staff_adds_points_with_a_reason_and_the_member_is_told_in_chinese(
    chat: Conversation, session: AsyncSession
) -> None:
    member = await _join(chat, session, lang="zh")
    await chat.send(message_update(STAFF_ID, f"/member {member.code}"))
    await chat.send(chat.fake.press(STAFF_ID, MemberCare(action="add", member_id=member.id).pack()))
    assert "How many points to add" in _last_to(chat, STAFF_ID).params["text"]
    await chat.send(message_update(STAFF_ID, "lots"))  # not a number: asked again, nothing done
    assert "whole number" in _last_to(chat, STAFF_ID).params["text"]
    await chat.send(message_update(STAFF_ID, "+200"))
    assert "Send the reason" in _last_to(chat, STAFF_ID).params["text"]
    await chat.send(message_update(STAFF_ID, "waited too long at the till"))
    reply = _last_to(chat, STAFF_ID).params["text"]
    assert "Added 200 points: 100 → <b>300</b>" in reply and "waited too long" in reply
    assert await _balance(session, member.id) == 300

    [line] = await _audit(session, "points.adjust")
    assert (line.actor_telegram_id, line.actor_role, line.member_id) == (STAFF_ID, "staff", member.id)
    assert json.loads(line.before) == {"points": 100}
    assert json.loads(line.after) == {"points": 300, "change": 200}
    assert line.reason == "waited too long at the till"

    assert await chat.app.sender.deliver_pending() == 1
    told = _last_to(chat, MEMBER).params["text"]
    assert "200" in told and "300" in told and "waited" not in told
    assert_all_chinese(told)
    await session.rollback()
    assert await session.scalar(select(func.count(Member.id))) == 1


async def test_staff_limits_per_adjustment_and_per_day_admin_unlimited(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member = await _join(chat, session)
    rules = shop.program.care
    await chat.send(message_update(STAFF_ID, f"/member {member.code}"))
    await chat.send(chat.fake.press(STAFF_ID, MemberCare(action="add", member_id=member.id).pack()))
    await chat.send(message_update(STAFF_ID, str(rules.staff_adjust_max_points + 1)))
    assert "at most 500 points at a time" in _last_to(chat, STAFF_ID).params["text"]
    assert await _balance(session, member.id) == 100

    for n in range(rules.staff_adjust_daily_points // rules.staff_adjust_max_points):
        await _adjust(chat, STAFF_ID, member.id, str(rules.staff_adjust_max_points), f"round {n}")
    assert await _balance(session, member.id) == 100 + rules.staff_adjust_daily_points
    await _adjust(chat, STAFF_ID, member.id, "1", "one more")
    refusal = _last_to(chat, STAFF_ID).params["text"]
    assert "at most 2,000 points a day; 0 are left today" in refusal
    assert await _balance(session, member.id) == 2100

    await chat.send(message_update(ADMIN_ID, f"/member {member.code}"))
    await _adjust(chat, ADMIN_ID, member.id, "50000", "big apology")
    assert "Added 50,000 points" in _last_to(chat, ADMIN_ID).params["text"]
    assert await _balance(session, member.id) == 52_100
    assert len(await _audit(session, "points.adjust")) == 5


async def test_a_deduction_below_zero_needs_an_admin_who_confirms(
    chat: Conversation, session: AsyncSession
) -> None:
    member = await _join(chat, session)  # 100 points
    await chat.send(message_update(STAFF_ID, f"/member {member.code}"))
    await _adjust(chat, STAFF_ID, member.id, "150", "wrong credit", deduct=True)
    assert "only an admin can do" in _last_to(chat, STAFF_ID).params["text"]
    assert await _balance(session, member.id) == 100
    assert await _audit(session, "points.adjust") == []

    await _adjust(chat, STAFF_ID, member.id, "60", "wrong credit", deduct=True)
    assert "Took 60 points: 100 → <b>40</b>" in _last_to(chat, STAFF_ID).params["text"]
    assert await _balance(session, member.id) == 40

    # A staff member's crafted confirmation changes nothing: no adjustment of theirs waits.
    await chat.send(chat.fake.press(STAFF_ID, AdjustConfirm(member_id=member.id).pack()))
    assert "Nothing is waiting" in _alerts(chat)[-1]

    await chat.send(message_update(ADMIN_ID, f"/member {member.code}"))
    await _adjust(chat, ADMIN_ID, member.id, "100", "fraud found", deduct=True)
    question = _last_to(chat, ADMIN_ID)
    assert "leaves the balance at <b>-60</b>" in question.params["text"]
    assert await _balance(session, member.id) == 40  # nothing before the confirmation
    await chat.send(chat.fake.press(ADMIN_ID, AdjustConfirm(member_id=member.id).pack()))
    assert await _balance(session, member.id) == -60
    await session.rollback()
    debt = await session.scalar(select(Member.points_debt).where(Member.id == member.id))
    assert debt == 60  # the lots gave what they held, the rest is owed
    await chat.send(chat.fake.press(ADMIN_ID, AdjustConfirm(member_id=member.id).pack()))  # twice
    assert await _balance(session, member.id) == -60
    lines = await _audit(session, "points.adjust")
    assert [json.loads(a.after)["points"] for a in lines] == [40, -60]


async def test_a_deduction_draws_the_earliest_expiring_lots(
    session: AsyncSession, shop: Shop, clock: Any
) -> None:
    from datetime import timedelta

    from tests.test_rewards import _give_points  # noqa: F401 (the same helper shape)

    async with write_transaction(session):
        member = Member(
            telegram_id=777, code="CAREEXP1", language="en", tier="member", points_balance=0,
            points_debt=0, status="active", marketing_opt_in=True, created_at=shop.now(),
            stage="new",
        )
        session.add(member)
        await session.flush()
        await points.earn(session, shop, member.id, kind="checkin", amount=100,
                          reason="old", key="old", earned_on=shop.today() - timedelta(days=400))
        await points.earn(session, shop, member.id, kind="checkin", amount=100,
                          reason="new", key="new")
    await care.adjust_points(session, shop, STAFF, member.id, -120, "correction", key="k1")
    await session.rollback()
    left = (await session.scalars(
        select(PointsLot.remaining).where(PointsLot.member_id == member.id).order_by(PointsLot.id)
    )).all()
    assert list(left) == [0, 80]  # the older lot went first
    assert await _balance(session, member.id) == 80
    # the same request again (a retried update) counts once
    await care.adjust_points(session, shop, STAFF, member.id, -120, "correction", key="k1")
    assert await _balance(session, member.id) == 80


async def test_bad_input_changes_nothing(session: AsyncSession, shop: Shop) -> None:
    async with write_transaction(session):
        member = Member(
            telegram_id=778, code="CAREBAD1", language="en", tier="member", points_balance=0,
            points_debt=0, status="active", marketing_opt_in=True, created_at=shop.now(),
            stage="new",
        )
        session.add(member)
        await session.flush()
        member_id = member.id
    for text in ("", "abc", "0", "1.5", "--3"):
        with pytest.raises(care.AdjustmentInvalid):
            care.parse_points(text)
    assert care.parse_points("-1,000") == -1000
    with pytest.raises(care.ReasonRequired):
        await care.adjust_points(session, shop, ADMIN, member_id, 10, "   ", key="x")
    with pytest.raises(care.OverStaffLimit):
        await care.adjust_points(session, shop, STAFF, member_id, 501, "too much", key="y")
    with pytest.raises(care.BelowZero):
        await care.adjust_points(session, shop, ADMIN, member_id, -1, "no confirm", key="z")
    assert await _balance(session, member_id) == 0
    assert await _audit(session) == []


async def test_grants_from_the_templates_within_the_staff_daily_limit(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member = await _join(chat, session)
    await chat.send(message_update(STAFF_ID, f"/member {member.code}"))
    await chat.send(chat.fake.press(STAFF_ID, MemberCare(action="grant", member_id=member.id).pack()))
    choices = _last_to(chat, STAFF_ID, "editMessageText")
    grant = CareGrant(member_id=member.id, template="dormant_wakeup").pack()
    assert grant in _data(choices)
    limit = shop.program.care.staff_coupon_grants_per_day
    for _ in range(limit):
        await chat.send(chat.fake.press(STAFF_ID, grant))
    assert "Granted CN¥20 off" in _last_to(chat, STAFF_ID, "editMessageText").params["text"]
    await chat.send(chat.fake.press(STAFF_ID, grant))
    assert "at most 3 coupons a day" in _alerts(chat)[-1]
    await chat.send(message_update(ADMIN_ID, f"/member {member.code}"))
    await chat.send(chat.fake.press(ADMIN_ID, grant))  # admins: no limit
    await session.rollback()
    granted = await session.scalar(select(func.count(Coupon.id)).where(
        Coupon.member_id == member.id, Coupon.source == "grant:dormant_wakeup"))
    assert granted == limit + 1
    assert len(await _audit(session, "coupon.grant")) == limit + 1
    await chat.send(chat.fake.press(ADMIN_ID, CareGrant(member_id=member.id,
                                                         template="no_such").pack()))
    assert "cannot be granted" in _alerts(chat)[-1]
    assert await chat.app.sender.deliver_pending() == limit + 1
    assert "A coupon from our staff" in _last_to(chat, MEMBER).params["text"]


async def test_callback_outcomes_are_recorded_audited_and_counted(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member = await _join(chat, session)
    async with write_transaction(session):
        row = await session.get(Member, member.id)
        assert row is not None
        row.stage, row.tier = "churned", "gold"
    await chat.send(message_update(STAFF_ID, "/callbacks"))
    listed = _last_to(chat, STAFF_ID)
    won = CallbackOutcomeChoice(code=member.code, outcome="won_back").pack()
    assert won in _data(listed)
    await chat.send(chat.fake.press(STAFF_ID, CallbackOutcomeChoice(
        code=member.code, outcome="no_answer").pack()))
    await chat.send(chat.fake.press(STAFF_ID, won))
    assert "1. won back" in _last_to(chat, STAFF_ID, "editMessageText").params["text"]
    await session.rollback()
    assert await care.outcome_counts(session) == {"called": 0, "no_answer": 1, "won_back": 1}
    audited = await _audit(session, "callback.outcome")
    assert [json.loads(a.after)["outcome"] for a in audited] == ["no_answer", "won_back"]
    assert json.loads(audited[1].before) == {"outcome": "no_answer"}


async def test_a_member_reaches_none_of_it(chat: Conversation, session: AsyncSession) -> None:
    member = await _join(chat, session)
    other = await _join(chat, session, OTHER, username="other")
    await chat.send(message_update(MEMBER, f"/member {other.code}"))
    assert "staff only" in _last_to(chat, MEMBER).params["text"]
    crafted = [
        MemberCare(action="add", member_id=other.id).pack(),
        MemberCare(action="show", member_id=other.id).pack(),
        CareGrant(member_id=member.id, template="churned_winback").pack(),
        AdjustConfirm(member_id=member.id).pack(),
        CallbackOutcomeChoice(code=other.code, outcome="won_back").pack(),
        AuditPage(member_id=other.id).pack(),
    ]
    for data in crafted:
        await chat.send(chat.fake.press(MEMBER, data))
    # a member typing numbers and words is never taken as an adjustment
    await chat.send(message_update(MEMBER, "5000"))
    await chat.send(message_update(MEMBER, "because"))
    assert all(other.code not in t and "Balance:" not in t for t in _texts_to(chat, MEMBER))
    assert await _balance(session, member.id) == 100
    assert await _balance(session, other.id) == 100
    assert await _audit(session) == []
    assert await session.scalar(select(func.count(CallbackOutcome.id))) == 0
    assert await session.scalar(select(func.count(Coupon.id)).where(
        Coupon.source.startswith("grant:"))) == 0
    assert await session.scalar(select(func.count(Push.id)).where(
        Push.kind.in_(("points_adjusted", "coupon_granted")))) == 0


async def test_audit_is_for_admins_paged_and_in_their_language(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member = await _join(chat, session)
    for n in range(12):
        await care.adjust_points(session, shop, STAFF, member.id, 1, f"reason {n}", key=f"a{n}")
    await chat.send(message_update(STAFF_ID, "/audit"))
    assert "only" in _last_to(chat, STAFF_ID).params["text"]
    await chat.send(message_update(MEMBER, f"/audit {member.code}"))
    assert "reason" not in _last_to(chat, MEMBER).params["text"]

    await chat.send(message_update(ADMIN_ID, f"/audit {member.code}"))
    first = _last_to(chat, ADMIN_ID)
    assert "reason 11" in first.params["text"] and "reason 1<" not in first.params["text"]
    assert "Points adjusted" in first.params["text"] and "staff" in first.params["text"]
    older = [d for d in _data(first) if d.startswith("aud:")]
    await chat.send(chat.fake.press(ADMIN_ID, older[-1]))
    page = _last_to(chat, ADMIN_ID, "editMessageText")
    assert "reason 0" in page.params["text"] and "reason 11" not in page.params["text"]

    await chat.send(message_update(ADMIN_ID, "/audit", language_code="zh"))
    # a non-member admin reads in their Telegram language
    assert "调整积分" in _last_to(chat, ADMIN_ID).params["text"]
    assert "店员" in _last_to(chat, ADMIN_ID).params["text"]


async def test_two_staff_adjustments_at_once_cannot_both_pass_the_days_limit(
    chat: Conversation, session: AsyncSession, shop: Shop, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same staff member on two members at the same moment (two tills, two workers on
    PostgreSQL): the day's sum is read under the staff's lock, so exactly one passes."""
    first = await _join(chat, session)
    second = await _join(chat, session, OTHER, username="other")
    third = await _join(chat, session, 5153, username="third")
    rules = shop.program.care
    room = rules.staff_adjust_max_points
    done = 0
    while done < rules.staff_adjust_daily_points - 200:  # 200 left today
        amount = min(room, rules.staff_adjust_daily_points - 200 - done)
        await care.adjust_points(session, shop, STAFF, first.id, amount, "earlier",
                                 key=f"earlier-{done}")
        done += amount
    real = care.adjusted_today

    async def slow_sum(*args: Any) -> int:
        total = await real(*args)
        await asyncio.sleep(0.3)  # both read the day's sum before either writes
        return total

    monkeypatch.setattr(care, "adjusted_today", slow_sum)

    async def adjust(member_id: int, key: str) -> bool:
        async with chat.app.session_factory() as own:
            try:
                await care.adjust_points(own, shop, STAFF, member_id, 200, "at once", key=key)
            except care.OverStaffLimit:
                return False
            return True

    results = await asyncio.gather(adjust(second.id, "a"), adjust(third.id, "b"))
    assert sorted(results) == [False, True]
    balances = [await _balance(session, m.id) for m in (second, third)]
    assert sorted(balances) == [100, 300]
    assert await care.adjusted_today(session, shop, STAFF) == rules.staff_adjust_daily_points


async def test_two_staff_grants_at_once_cannot_both_pass_the_days_limit(
    chat: Conversation, session: AsyncSession, shop: Shop, monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = await _join(chat, session)
    second = await _join(chat, session, OTHER, username="other")
    third = await _join(chat, session, 5153, username="third")
    limit = shop.program.care.staff_coupon_grants_per_day
    for _ in range(limit - 1):
        await care.grant_coupon(session, shop, STAFF, first.id, "dormant_wakeup")
    real = care.granted_today

    async def slow_count(*args: Any) -> int:
        count = await real(*args)
        await asyncio.sleep(0.3)
        return count

    monkeypatch.setattr(care, "granted_today", slow_count)

    async def grant(member_id: int) -> bool:
        async with chat.app.session_factory() as own:
            try:
                await care.grant_coupon(own, shop, STAFF, member_id, "dormant_wakeup")
            except care.OverStaffLimit:
                return False
            return True

    assert sorted(await asyncio.gather(grant(second.id), grant(third.id))) == [False, True]
    await session.rollback()
    granted = await session.scalar(select(func.count(Coupon.id)).where(
        Coupon.source == "grant:dormant_wakeup"))
    assert granted == limit
