"""The daily check-in: once per local day, streak bonuses, the 21-day challenge, the month
calendar and the monthly leaderboard; end to end through the fake Bot API and as domain rules."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import checkin, members
from domain.checkin import AlreadyCheckedIn, check_in
from domain.clock import FixedClock
from domain.growth import BEHAVIOUR, PURCHASE, add_growth
from domain.models import Badge, CheckIn, GrowthEntry, LedgerEntry, Member
from domain.program import Program
from domain.shop import Shop
from domain.transaction import write_transaction
from handlers.callbacks import CheckinView
from tests.conftest import Conversation
from tests.fake_telegram import message_update

USER = 4242
SIGNUP = 100
# 10:00 in Shanghai on Tuesday 10 March 2026 (the clock fixture's instant).
TUESDAY_10_MARCH = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)


# ---------------------------------------------------------------- helpers


async def _start(chat: Conversation, user: int = USER, language: str = "en", **names: Any) -> None:
    await chat.send(message_update(user, "/start", language_code=language, **names))


async def _checkin(chat: Conversation, user: int = USER, language: str = "en") -> str:
    await chat.send(message_update(user, "/checkin", language_code=language))
    reply = chat.fake.calls_of("sendMessage")[-1]
    assert reply.params["chat_id"] == str(user)
    return str(reply.params["text"])


async def _member_id(session: AsyncSession, user: int = USER) -> int:
    await session.rollback()  # a fresh snapshot: the bot wrote in its own sessions
    member_id = await session.scalar(select(Member.id).where(Member.telegram_id == user))
    assert member_id is not None
    return member_id


async def _balance(session: AsyncSession, user: int = USER) -> int:
    await session.rollback()
    balance = await session.scalar(select(Member.points_balance).where(Member.telegram_id == user))
    assert balance is not None
    return balance


async def _count(session: AsyncSession, query: Any) -> int:
    await session.rollback()
    return int(await session.scalar(query) or 0)


async def _assert_ledger_invariant(session: AsyncSession) -> None:
    """balance == sum of the ledger, for every member."""
    await session.rollback()
    ledger = (
        select(LedgerEntry.member_id, func.sum(LedgerEntry.amount).label("total"))
        .group_by(LedgerEntry.member_id)
        .subquery()
    )
    rows = (
        await session.execute(
            select(Member.id, Member.points_balance, func.coalesce(ledger.c.total, 0)).outerjoin(
                ledger, ledger.c.member_id == Member.id
            )
        )
    ).all()
    assert rows, "no members to check"
    for member_id, balance, total in rows:
        assert balance == total, f"member {member_id}: balance {balance} != ledger {total}"


def _buttons(params: dict[str, Any]) -> list[tuple[str, str]]:
    markup = params["reply_markup"]
    return [(b["text"], b["callback_data"]) for row in markup["inline_keyboard"] for b in row]


async def _domain_member(
    session: AsyncSession, shop: Shop, telegram_id: int, first: str | None = "Ann",
    last: str | None = None,
) -> tuple[int, str]:
    profile = members.TelegramProfile(telegram_id, first, last, None, "en")
    member = (await members.register(session, shop, profile)).member
    return member.id, member.code


# ---------------------------------------------------------------- end to end


async def test_first_checkin_credits_points_and_growth_and_shows_the_calendar(
    chat: Conversation, session: AsyncSession
) -> None:
    await _start(chat, first_name="Lin")
    text = await _checkin(chat)
    assert "Checked in for today" in text
    assert "+5 points for checking in" in text
    assert "+1 growth" in text
    assert "Balance: <b>105</b> points" in text
    assert "Streak: <b>1 day</b>" in text
    assert "6 more days to the 7-day bonus of 20 points." in text
    # March 2026 starts on a Sunday; Tuesday the 10th is today, checked in and bracketed.
    assert "<pre>March 2026\n Mo Tu We Th Fr Sa Su\n" in text
    assert "\n                    ·\n" in text  # the first row: only Sunday the 1st
    assert "\n  ·[✅] ·  ·  ·  ·  ·\n" in text  # Mon 9 .. Sun 15
    assert "This month: <b>1</b> check-in" in text
    reply = chat.fake.calls_of("sendMessage")[-1]
    assert _buttons(reply.params) == [
        ("🏆 Leaderboard", CheckinView(view="leaderboard").pack())
    ]

    member_id = await _member_id(session)
    assert await _balance(session) == SIGNUP + 5
    growth = await _count(
        session,
        select(func.sum(GrowthEntry.amount)).where(
            GrowthEntry.member_id == member_id, GrowthEntry.source == BEHAVIOUR
        ),
    )
    assert growth == 1
    row = (await session.execute(select(CheckIn.day, CheckIn.streak, CheckIn.points))).one()
    assert tuple(row) == (date(2026, 3, 10), 1, 5)
    await _assert_ledger_invariant(session)


async def test_second_checkin_the_same_day_credits_nothing_and_says_so(
    chat: Conversation, session: AsyncSession
) -> None:
    await _start(chat)
    await _checkin(chat)
    await chat.send(message_update(USER, "✅ Check in"))  # the menu button
    text = chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert "You have already checked in today" in text
    assert "Nothing more was added" in text
    assert "[✅]" in text and "Streak: <b>1 day</b>" in text  # the same calendar message
    assert "+5 points for checking in" not in text
    assert await _balance(session) == SIGNUP + 5
    member_id = await _member_id(session)
    assert await _count(session, select(func.count(CheckIn.id))) == 1
    assert await _count(
        session, select(func.count(LedgerEntry.id)).where(LedgerEntry.member_id == member_id)
    ) == 2  # sign-up and one check-in
    assert await _count(session, select(func.count(GrowthEntry.id))) == 1
    await _assert_ledger_invariant(session)


async def test_two_racing_presses_credit_once(chat: Conversation, session: AsyncSession) -> None:
    await _start(chat)
    chat.fake.clear()
    await asyncio.gather(
        chat.send(message_update(USER, "/checkin")), chat.send(message_update(USER, "/checkin"))
    )
    texts = sorted(call.params["text"] for call in chat.fake.calls_of("sendMessage"))
    assert len(texts) == 2
    assert sum("Checked in for today" in t for t in texts) == 1
    assert sum("You have already checked in today" in t for t in texts) == 1
    assert await _balance(session) == SIGNUP + 5
    assert await _count(session, select(func.count(CheckIn.id))) == 1
    assert await _count(session, select(func.count(GrowthEntry.id))) == 1
    await _assert_ledger_invariant(session)


async def test_racing_check_ins_in_separate_sessions_credit_once(
    session_factory: async_sessionmaker[AsyncSession], session: AsyncSession, shop: Shop
) -> None:
    member_id, _code = await _domain_member(session, shop, 1)

    async def press() -> object:
        async with session_factory() as own:
            try:
                return await check_in(own, shop, member_id)
            except AlreadyCheckedIn as refused:
                return refused

    outcomes = await asyncio.gather(*(press() for _ in range(4)))
    assert sum(isinstance(o, checkin.CheckInResult) for o in outcomes) == 1
    assert sum(isinstance(o, AlreadyCheckedIn) for o in outcomes) == 3
    assert await _count(session, select(Member.points_balance)) == SIGNUP + 5
    await _assert_ledger_invariant(session)


async def test_seven_day_streak_pays_the_bonus_on_day_seven(
    chat: Conversation, session: AsyncSession, clock: FixedClock
) -> None:
    await _start(chat)
    texts = []
    for day in range(7):
        if day:
            clock.advance(days=1)
        texts.append(await _checkin(chat))
    assert "7-day streak bonus" not in "".join(texts[:6])
    assert "Check in tomorrow for the 7-day bonus of 20 points." in texts[5]
    assert "+5 points for checking in" in texts[6]
    assert "+20 points: 7-day streak bonus 🔥" in texts[6]
    assert "Streak: <b>7 days</b>" in texts[6]
    assert "7 more days to the 7-day bonus of 20 points." in texts[6]
    assert await _balance(session) == SIGNUP + 7 * 5 + 20
    kinds = (
        await session.scalars(select(LedgerEntry.kind).order_by(LedgerEntry.id))
    ).all()
    assert kinds.count("checkin") == 7 and kinds.count("checkin_streak_7") == 1
    await _assert_ledger_invariant(session)


async def test_a_missed_day_restarts_the_streak(
    chat: Conversation, session: AsyncSession, clock: FixedClock
) -> None:
    await _start(chat)
    await _checkin(chat)
    clock.advance(days=1)
    assert "Streak: <b>2 days</b>" in await _checkin(chat)
    clock.advance(days=2)  # the 12th is missed

    await chat.send(chat.fake.press(USER, CheckinView(view="calendar").pack()))
    shown = chat.fake.calls_of("editMessageText")[-1].params["text"]
    assert "You have not checked in today yet" in shown
    assert "Streak: <b>0 days</b>" in shown
    assert "7 more days to the 7-day bonus" in shown

    text = await _checkin(chat)
    assert "Streak: <b>1 day</b>" in text
    assert "\n  · ✅ ✅  ·[✅] ·  ·\n" in text  # 10 and 11 checked, 12 missed, 13 today
    await session.rollback()
    streaks = (await session.scalars(select(CheckIn.streak).order_by(CheckIn.day))).all()
    assert streaks == [1, 2, 1]
    assert await _balance(session) == SIGNUP + 3 * 5
    await _assert_ledger_invariant(session)


async def test_day_21_completes_the_challenge_with_badge_and_bonus(
    chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    await _start(chat)
    member_id = await _member_id(session)
    for _day in range(20):
        await check_in(session, shop, member_id)
        clock.advance(days=1)
    assert await _count(session, select(func.count(Badge.id))) == 0
    text = await _checkin(chat)
    assert "+20 points: 21-day streak bonus" in text
    assert "+50 points: 21-day challenge complete" in text
    assert "You earned the <b>21-day challenge badge</b>" in text
    assert "Streak: <b>21 days</b>" in text
    await session.rollback()
    badges = (await session.execute(select(Badge.kind, Badge.earned_on))).all()
    assert [tuple(b) for b in badges] == [("streak_21", date(2026, 3, 30))]
    # 21 check-ins, three 7-day bonuses (7, 14, 21) and the challenge.
    assert await _balance(session) == SIGNUP + 21 * 5 + 3 * 20 + 50
    await _assert_ledger_invariant(session)


async def test_the_local_midnight_not_utc_is_the_day_boundary(
    chat: Conversation, session: AsyncSession, clock: FixedClock
) -> None:
    await _start(chat)
    clock.set(datetime(2026, 3, 10, 15, 59, tzinfo=UTC))  # 23:59 on the 10th in Shanghai
    await _checkin(chat)
    clock.set(datetime(2026, 3, 10, 16, 0, tzinfo=UTC))  # midnight: the 11th begins
    text = await _checkin(chat)
    assert "Checked in for today" in text and "Streak: <b>2 days</b>" in text
    clock.set(datetime(2026, 3, 11, 0, 30, tzinfo=UTC))  # UTC's midnight: still the 11th
    assert "You have already checked in today" in await _checkin(chat)
    await session.rollback()
    days = (await session.scalars(select(CheckIn.day).order_by(CheckIn.day))).all()
    assert days == [date(2026, 3, 10), date(2026, 3, 11)]
    assert await _balance(session) == SIGNUP + 2 * 5


async def test_leaderboard_orders_members_and_shows_own_rank_outside_the_top_ten(
    chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    await _start(chat, first_name="Viewer")  # the member who presses the button
    viewer = await _member_id(session)
    # Eleven others check in on the 9th and the 10th, the i-th at i o'clock (UTC) on the 10th.
    others = [
        (await _domain_member(session, shop, 100 + i, f"Member{i:02d}", "Zhang"))[0]
        for i in range(11)
    ]
    for day in (9, 10):
        for i, member_id in enumerate(others):
            clock.set(datetime(2026, 3, day, i, 0, tzinfo=UTC))
            await check_in(session, shop, member_id)
    await check_in(session, shop, viewer)

    shown = chat.fake.calls_of("sendMessage")[-1]
    await chat.send(chat.fake.press(USER, CheckinView(view="leaderboard").pack(), shown.message_id))
    edit = chat.fake.calls_of("editMessageText")[-1]
    assert not edit.failed
    assert edit.params["chat_id"] == str(USER)
    assert edit.params["message_id"] == str(shown.message_id)
    assert chat.fake.calls_of("answerCallbackQuery")
    text = edit.params["text"]
    assert "Check-in leaderboard · March 2026" in text
    lines = [
        line for line in text.splitlines()
        if "best streak" in line and not line.startswith("You")
    ]
    assert len(lines) == 10
    assert lines[0] == "🥇 Member00 Z.: 2 check-ins, best streak 2"
    assert lines[1] == "🥈 Member01 Z.: 2 check-ins, best streak 2"
    assert lines[2] == "🥉 Member02 Z.: 2 check-ins, best streak 2"
    assert lines[9] == "10. Member09 Z.: 2 check-ins, best streak 2"
    assert "Zhang" not in text  # never a full name
    assert "Member10" not in text and "Viewer" not in text
    assert "You: <b>#12</b> of 12, 1 check-in, best streak 1" in text
    assert _buttons(edit.params) == [("📅 My calendar", CheckinView(view="calendar").pack())]

    await chat.send(chat.fake.press(USER, CheckinView(view="calendar").pack(), shown.message_id))
    back = chat.fake.calls_of("editMessageText")[-1].params
    assert "Your check-ins" in back["text"] and "[✅]" in back["text"]
    assert _buttons(back) == [("🏆 Leaderboard", CheckinView(view="leaderboard").pack())]


async def test_leaderboard_ties_break_on_best_streak_then_earliest_last_checkin(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    steady, _ = await _domain_member(session, shop, 1, "Steady")
    gappy, _ = await _domain_member(session, shop, 2, "Gappy")
    late, _ = await _domain_member(session, shop, 3, "Late")
    early, _ = await _domain_member(session, shop, 4, "Early")
    nameless, code = await _domain_member(session, shop, 5, None)
    plan = {
        steady: [1, 2, 3],  # 3 check-ins, streak 3
        gappy: [1, 3, 5],  # 3 check-ins, streak 1
        early: [4, 5],  # 2 check-ins, streak 2, last at 09:00
        late: [4, 5],  # 2 check-ins, streak 2, last at 10:00
        nameless: [5],
    }
    for day in range(1, 6):
        for hour, member_id in ((1, early), (2, late), (3, steady), (3, gappy), (3, nameless)):
            if day in plan[member_id]:
                clock.set(datetime(2026, 3, day, hour, 0, tzinfo=UTC))
                await check_in(session, shop, member_id)
    # A check-in in another month does not count.
    clock.set(datetime(2026, 2, 28, 3, 0, tzinfo=UTC))
    await check_in(session, shop, nameless)

    board = await checkin.leaderboard(session, shop, 2026, 3)
    assert [(r.rank, r.name, r.checkins, r.best_streak) for r in board] == [
        (1, "Steady", 3, 3), (2, "Gappy", 3, 1), (3, "Early", 2, 2), (4, "Late", 2, 2),
        (5, code[:4], 1, 1),
    ]
    top = await checkin.leaderboard(session, shop, 2026, 3, limit=2)
    assert [r.member_id for r in top] == [steady, gappy]
    own = await checkin.rank_of(session, shop, late, 2026, 3)
    assert own == checkin.MemberRank(rank=4, of=5, checkins=2, best_streak=2)
    assert await checkin.rank_of(session, shop, nameless, 2026, 2) == checkin.MemberRank(
        rank=1, of=1, checkins=1, best_streak=1
    )
    assert await checkin.rank_of(session, shop, steady, 2026, 2) is None
    assert await checkin.checkins_in_month(session, gappy, 2026, 3) == 3
    assert await checkin.checkins_in_month(session, gappy, 2026, 4) == 0


async def test_chinese_member_gets_chinese_texts(
    chat: Conversation, session: AsyncSession
) -> None:
    await _start(chat, language="zh-hans", first_name="小明")
    text = await _checkin(chat, language="zh-hans")
    assert "今日签到成功" in text
    assert "签到奖励 +5 积分" in text and "成长值 +1" in text
    assert "连续签到：<b>1 天</b>" in text
    assert "再连续签到 6 天即可获得7天连签奖励 20 积分。" in text
    assert "<pre>2026年3月\n 一 二 三 四 五 六 日\n" in text
    assert "本月已签到 <b>1</b> 天" in text
    assert _buttons(chat.fake.calls_of("sendMessage")[-1].params)[0][0] == "🏆 排行榜"

    assert "您今天已经签到过了" in await _checkin(chat, language="zh-hans")
    await chat.send(chat.fake.press(USER, CheckinView(view="leaderboard").pack()))
    board = chat.fake.calls_of("editMessageText")[-1].params["text"]
    assert "2026年3月签到排行榜" in board
    assert "🥇 小明：签到 1 天，最长连签 1 天" in board
    assert "我的排名：<b>第 1 名</b>（共 1 人）" in board
    assert await _balance(session) == SIGNUP + 5


async def test_frozen_member_is_refused_and_nothing_is_credited(
    chat: Conversation, session: AsyncSession
) -> None:
    await _start(chat)
    member_id = await _member_id(session)
    async with write_transaction(session):
        await session.execute(
            update(Member).where(Member.id == member_id).values(status=members.FROZEN)
        )
    text = await _checkin(chat)
    assert "account is on hold" in text
    assert await _count(session, select(func.count(CheckIn.id))) == 0
    assert await _balance(session) == SIGNUP


async def test_a_checkin_can_complete_an_upgrade(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    await _start(chat)
    member_id = await _member_id(session)
    async with write_transaction(session):
        # 3,500 purchase growth allows 1,500 behaviour growth (30%): one short of Silver.
        for kind, source, amount in (("order", PURCHASE, 3500), ("review", BEHAVIOUR, 1499)):
            await add_growth(
                session, member_id, kind=kind, source=source, amount=amount, reason=kind,
                key=f"test:{kind}", occurred_at=shop.now(),
            )
    text = await _checkin(chat)
    assert "Congratulations, you are now Silver!" in text
    await session.rollback()
    assert await session.scalar(select(Member.tier).where(Member.id == member_id)) == "silver"


# ---------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("streak", "days", "points", "challenge"),
    [(0, 7, 20, False), (6, 1, 20, False), (7, 7, 20, False), (14, 7, 70, True),
     (20, 1, 70, True), (21, 7, 20, False), (41, 1, 70, True)],
)
def test_next_bonus(
    program: Program, streak: int, days: int, points: int, challenge: bool
) -> None:
    upcoming = checkin.next_bonus(program, streak)
    assert (upcoming.days, upcoming.points, upcoming.challenge) == (days, points, challenge)
    assert upcoming.streak == streak + days


async def test_each_completed_challenge_earns_a_badge(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    member_id, _ = await _domain_member(session, shop, 1)
    async with write_transaction(session):  # a member 40 days into a streak, as of yesterday
        session.add(
            CheckIn(member_id=member_id, day=date(2026, 3, 9), streak=40, points=5,
                    created_at=clock.now())
        )
    results = []
    for _day in range(3):
        results.append(await check_in(session, shop, member_id))
        clock.advance(days=1)
    assert [r.streak for r in results] == [41, 42, 43]
    assert [(r.points, r.badge) for r in results] == [(5, False), (75, True), (5, False)]
    assert results[1].week_bonus == 20 and results[1].challenge_bonus == 50
    await session.rollback()
    badges = (await session.execute(select(Badge.kind, Badge.earned_on))).all()
    assert [tuple(b) for b in badges] == [("streak_21", date(2026, 3, 11))]
    assert await _count(session, select(Member.points_balance)) == SIGNUP + 3 * 5 + 20 + 50
    await _assert_ledger_invariant(session)


async def test_calendar_holds_the_days_of_the_month_only(
    session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    member_id, _ = await _domain_member(session, shop, 1)
    for day in (date(2026, 2, 28), date(2026, 3, 1), date(2026, 3, 3)):
        clock.set(datetime(day.year, day.month, day.day, 2, 0, tzinfo=UTC))
        await check_in(session, shop, member_id)
    march = await checkin.month_calendar(session, shop, member_id, 2026, 3)
    assert march.days == {date(2026, 3, 1), date(2026, 3, 3)}
    assert march.today == date(2026, 3, 3)
    assert march.weeks[0] == [None] * 6 + [date(2026, 3, 1)]
    assert len(march.weeks) == 6  # 1 March 2026 is a Sunday: six Monday-first rows
    february = await checkin.month_calendar(session, shop, member_id, 2026, 2)
    assert february.days == {date(2026, 2, 28)} and february.today is None
