"""Campaigns end to end through the fake Bot API: an admin builds a campaign (audience, texts
per language, an A/B split, a coupon per tier and bonus points), previews and confirms it;
the sender delivers it once per member, with the member's variant and offer; opted-out members
get nothing; a second confirm, two admins at once or a restart send nothing twice; the report
counts what the database holds. Staff and members get nowhere, whatever they press. A
half-built campaign survives a restart (the FSM lives in the database). NPS surveys."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import App, create_app
from bot.middlewares import Throttle
from bot.scheduler import start_campaigns
from bot.sender import OutboxSender
from domain import analytics, campaigns, care
from domain.audit import Actor
from domain.analytics import Period
from domain.clock import FixedClock
from domain.models import (
    AuditEntry,
    Campaign,
    CampaignDelivery,
    CampaignRecipient,
    Coupon,
    LedgerEntry,
    Member,
    NpsAnswer,
    Order,
    Push,
)
from domain.program import Program
from domain.transaction import write_transaction
from handlers.callbacks import CampaignAction, CampaignEdit, CampaignStep, NpsScore
from handlers.outbox_signal import OutboxSignal
from tests.conftest import ADMIN_ID, STAFF_ID, Conversation
from tests.fake_telegram import FakeTelegram, callback_update, message_update

SECOND_ADMIN = 9003
# user id → (language, tier, accepts marketing)
PEOPLE: dict[int, tuple[str, str, bool]] = {
    7001: ("en", "member", True),
    7002: ("en", "silver", True),
    7003: ("zh", "silver", True),
    7004: ("en", "gold", True),
    7005: ("zh", "gold", True),
    7006: ("en", "black_gold", True),
    7007: ("en", "silver", False),  # opted out of marketing
    7008: ("zh", "gold", True),
    7009: ("en", "silver", True),
    7010: ("zh", "black_gold", True),
}


@pytest.fixture(autouse=True)
def _no_flood_notice(app: App) -> None:
    for middleware in app.dispatcher.update.outer_middleware:
        if isinstance(middleware, Throttle):
            middleware.limit = 10_000  # the admin is a test robot: the flood notice is not tested


@pytest.fixture
def settings(settings: Any) -> Any:
    return settings.model_copy(update={"admin_ids": frozenset({ADMIN_ID, SECOND_ADMIN}),
                                       "staff_ids": frozenset({STAFF_ID})})


async def _people(chat: Conversation, session: AsyncSession) -> dict[int, Member]:
    for user, (lang, tier, marketing) in PEOPLE.items():
        await chat.send(message_update(user, "/start", language_code=lang, first_name=f"P{user}"))
        await session.execute(
            update(Member).where(Member.telegram_id == user)
            .values(tier=tier, marketing_opt_in=marketing, language=lang)
        )
        await session.commit()
    rows = (await session.scalars(select(Member))).all()
    found = {m.telegram_id: m for m in rows if m.telegram_id is not None}
    for member in found.values():
        session.expunge(member)
    await session.rollback()
    return found


def _texts_to(fake: FakeTelegram, user: int, since: int = 0) -> list[str]:
    return [
        str(c.params.get("text") or c.params.get("caption") or "")
        for c in fake.calls[since:]
        if c.method in ("sendMessage", "sendPhoto", "editMessageText")
        and str(c.params.get("chat_id")) == str(user)
    ]


def _last_text(fake: FakeTelegram, user: int) -> str:
    return _texts_to(fake, user)[-1]


async def _press(chat: Conversation, user: int, data: str) -> None:
    await chat.send(chat.fake.press(user, data))


async def _type(chat: Conversation, user: int, text: str) -> None:
    await chat.send(message_update(user, text))


async def _build_ab_campaign(chat: Conversation, admin: int = ADMIN_ID) -> None:
    """Silver and up; English and Chinese texts for A, one text for B; A: a template coupon
    for silver, a new 20-off-100 coupon for gold and up... per tier; B: 50 bonus points."""
    await _type(chat, admin, "/campaign")
    await _press(chat, admin, CampaignStep(step="audience").pack())
    await _press(chat, admin, CampaignEdit(field="tier", value="silver").pack())
    await _press(chat, admin, CampaignStep(step="message").pack())
    await _press(chat, admin, CampaignEdit(field="ask", value="text_en").pack())
    await _type(chat, admin, "Spring is here, A!")
    await _press(chat, admin, CampaignEdit(field="ask", value="text_zh").pack())
    await _type(chat, admin, "春天来了，A！")
    await _press(chat, admin, CampaignEdit(field="cta").pack())  # a button: rewards
    await _press(chat, admin, CampaignEdit(field="split").pack())
    await _press(chat, admin, CampaignEdit(field="variant", value="B_message").pack())
    await _press(chat, admin, CampaignEdit(field="ask", value="text_*").pack())
    await _type(chat, admin, "Spring B for all")
    await _press(chat, admin, CampaignStep(step="offer").pack())
    await _press(chat, admin, CampaignEdit(field="variant", value="A_offer").pack())
    await _press(chat, admin, CampaignEdit(field="target", value="silver").pack())
    await _press(chat, admin, CampaignEdit(field="template", value="welcome").pack())
    for tier in ("gold", "black_gold"):
        await _press(chat, admin, CampaignEdit(field="target", value=tier).pack())
        await _press(chat, admin, CampaignEdit(field="new_coupon", value="amount_off").pack())
        await _type(chat, admin, "20 100 30")
    await _press(chat, admin, CampaignEdit(field="variant", value="B_offer").pack())
    await _press(chat, admin, CampaignEdit(field="target", value="*").pack())
    await _press(chat, admin, CampaignEdit(field="ask", value="points").pack())
    await _type(chat, admin, "50")


async def _draft_id(session: AsyncSession) -> int:
    found = await session.scalar(select(func.max(Campaign.id)))
    await session.rollback()
    assert found is not None
    return int(found)


async def _start_simple(chat: Conversation, text: str) -> None:
    """/campaign with one text for everyone."""
    await _type(chat, ADMIN_ID, "/campaign")
    await _press(chat, ADMIN_ID, CampaignStep(step="message").pack())
    await _press(chat, ADMIN_ID, CampaignEdit(field="ask", value="text_*").pack())
    await _type(chat, ADMIN_ID, text)


async def _simple_campaign(chat: Conversation, session: AsyncSession, text: str = "Hello") -> int:
    """One text for everyone, previewed: the draft's id (the confirm is pressed next)."""
    await _start_simple(chat, text)
    await _press(chat, ADMIN_ID, CampaignStep(step="preview").pack())
    return await _draft_id(session)

async def test_admin_builds_previews_confirms_and_each_member_gets_one_message(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram,
    clock: FixedClock,
) -> None:
    people = await _people(chat, session)
    await app.sender.deliver_pending()  # the welcome messages
    await _build_ab_campaign(chat)
    offer_screen = _last_text(fake_telegram, ADMIN_ID)
    assert "50 bonus points" in offer_screen

    await _press(chat, ADMIN_ID, CampaignStep(step="menu").pack())
    menu = _last_text(fake_telegram, ADMIN_ID)
    # silver and up: 7002-7010 (9 members), of whom 8 accept marketing
    assert "9</b> members, 8 accept marketing" in menu
    assert "Silver and up" in menu or "silver" in menu.lower()
    assert "CN¥20 off orders of CN¥100 or more" in menu or "CN¥20" in menu

    since = len(fake_telegram.calls)
    await _press(chat, ADMIN_ID, CampaignStep(step="preview").pack())
    preview = _texts_to(fake_telegram, ADMIN_ID, since)
    assert any("Spring is here, A!" in t for t in preview)
    assert any("Spring B for all" in t and "50 bonus points" in t for t in preview)
    assert "That is what members will get." in preview[-1]
    assert not any("campaign:" in t or "welcome" in t.split() for t in preview)

    campaign_id = await _draft_id(session)
    confirm = CampaignAction(action="confirm", campaign_id=campaign_id).pack()
    await _press(chat, ADMIN_ID, confirm)
    assert f"Campaign No. {campaign_id} is confirmed" in _last_text(fake_telegram, ADMIN_ID)
    await app.campaign_writer.wait()

    since = len(fake_telegram.calls)
    await app.sender.deliver_pending()
    for user, (lang, tier, marketing) in PEOPLE.items():
        got = _texts_to(fake_telegram, user, since)
        reached = tier != "member" and marketing
        assert len(got) == (1 if reached else 0), (user, got)
        if not reached:
            continue
        variant = campaigns.variant_of(campaign_id, people[user].id)
        if variant == "B":
            worded = "50 积分已存入" if lang == "zh" else "50 bonus points"
            assert "Spring B for all" in got[0] and worded in got[0]
        elif lang == "zh":
            assert "春天来了，A！" in got[0] and "Spring" not in got[0]
        else:
            assert "Spring is here, A!" in got[0]
    variants = {campaigns.variant_of(campaign_id, people[u].id) for u in PEOPLE if u != 7001}
    assert variants == {"A", "B"}  # the split reaches both with these ids
    buttons = [
        c.params.get("reply_markup") for c in fake_telegram.calls[since:]
        if c.method == "sendMessage"
    ]
    assert all(
        b and b["inline_keyboard"][0][0]["url"].endswith("?start=go_rewards") for b in buttons
    )

    # The offers: A's silver got the welcome coupon, A's gold and up a 20-off-100, B 50 points.
    for user, (_, tier, marketing) in PEOPLE.items():
        member = people[user]
        coupons_got = [tuple(row) for row in (await session.execute(
            select(Coupon.value, Coupon.min_spend).where(
                Coupon.member_id == member.id, Coupon.source == f"campaign:{campaign_id}")
        )).all()]
        balance = await session.scalar(
            select(Member.points_balance).where(Member.id == member.id)
        )
        await session.rollback()
        if tier == "member" or not marketing:
            assert coupons_got == []
            continue
        if campaigns.variant_of(campaign_id, member.id) == "B":
            assert coupons_got == [] and balance == people[user].points_balance + 50
        elif tier == "silver":
            assert coupons_got == [(1000, 5000)]
        else:
            assert coupons_got == [(2000, 10000)]

    # A second confirm (the same press again) and a restart send nothing more.
    since = len(fake_telegram.calls)
    await _press(chat, ADMIN_ID, confirm)
    refusal = fake_telegram.calls_of("answerCallbackQuery")[-1].params.get("text", "")
    assert "being sent already" in refusal or "confirmed already" in refusal
    await app.sender.deliver_pending()
    again = create_app(app.settings, clock=clock, program=app.shop.program)
    try:
        assert await start_campaigns(
            again.session_factory, again.shop, again.sender.signal, resume=True
        ) == []
        await again.sender.deliver_pending()
    finally:
        await again.close()
    assert not any(
        _texts_to(fake_telegram, user, since) for user in PEOPLE
    )

    # The report counts what the database holds.
    pushes = dict(
        (await session.execute(
            select(Push.status, func.count()).where(Push.campaign_id == campaign_id)
            .group_by(Push.status)
        )).all()
    )
    delivered = await session.scalar(
        select(func.count()).select_from(CampaignDelivery)
        .where(CampaignDelivery.campaign_id == campaign_id)
    )
    await session.rollback()
    assert pushes == {"sent": 8, "skipped": 1} and delivered == 8
    await _type(chat, ADMIN_ID, "/campaigns")
    report = _last_text(fake_telegram, ADMIN_ID)
    assert "Reached 9 · sent 8 · waiting 0 · skipped 1 · failed 0 · blocked 0" in report
    assert "not enough data yet" in report and "at least 30 recipients" in report

    actions = (await session.scalars(
        select(AuditEntry.action).where(AuditEntry.subject == f"campaign:{campaign_id}")
    )).all()
    assert "campaign.confirm" in actions and "campaign.draft" in actions

    # Staff call a recipient from the call-back list: the outcome counts in the report.
    recipient = await session.scalar(
        select(Member.code).join(CampaignDelivery, CampaignDelivery.member_id == Member.id)
        .where(CampaignDelivery.campaign_id == campaign_id).limit(1)
    )
    assert recipient is not None
    await care.record_outcome(session, chat.app.shop, Actor(STAFF_ID, "staff"), recipient, "won_back")
    await _type(chat, ADMIN_ID, "/campaigns")
    report = _last_text(fake_telegram, ADMIN_ID)
    assert "Call-backs to recipients: called 0 · no answer 0 · won back 1" in report


async def test_two_admins_confirming_at_once_send_it_once(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram
) -> None:
    await _people(chat, session)
    await app.sender.deliver_pending()
    campaign_id = await _simple_campaign(chat, session, "Hello everyone")
    confirm = CampaignAction(action="confirm", campaign_id=campaign_id).pack()
    # The second admin got the confirm button too (say, forwarded): both press at once.
    await asyncio.gather(
        chat.send(fake_telegram.press(ADMIN_ID, confirm)),
        chat.send(message_update(SECOND_ADMIN, "/campaigns")),
    )
    await asyncio.gather(
        chat.send(fake_telegram.press(ADMIN_ID, confirm)),
        chat.send(fake_telegram.press(SECOND_ADMIN, confirm)),
    )
    await app.campaign_writer.wait()
    since = len(fake_telegram.calls)
    await app.sender.deliver_pending()
    for user in PEOPLE:
        got = _texts_to(fake_telegram, user, since)
        assert len(got) == (1 if PEOPLE[user][2] else 0), (user, got)
    confirms = (await session.scalars(
        select(AuditEntry.actor_telegram_id).where(AuditEntry.action == "campaign.confirm")
    )).all()
    written = await session.scalar(
        select(func.count()).select_from(Push).where(Push.campaign_id == campaign_id)
    )
    assert len(confirms) == 1 and written == len(PEOPLE)


async def test_two_confirms_racing_in_the_domain(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram
) -> None:
    """The conditional UPDATE: two sessions confirming and starting at the same moment."""
    await _people(chat, session)
    spec = campaigns.CampaignSpec(variants=[campaigns.Variant(texts={"*": "Hi"})])
    admin = campaigns.Actor(ADMIN_ID, "admin")
    campaign_id = await campaigns.save_draft(session, app.shop, admin, spec)

    async def confirm_and_start(actor_id: int) -> bool:
        async with app.session_factory() as own:
            try:
                await campaigns.confirm(own, app.shop, campaigns.Actor(actor_id, "admin"),
                                        campaign_id)
            except campaigns.CampaignStateError:
                return False
            await campaigns.start_due(own, app.shop)
            return True

    results = await asyncio.gather(confirm_and_start(ADMIN_ID), confirm_and_start(SECOND_ADMIN))
    assert sorted(results) == [False, True]
    async with app.session_factory() as other:
        assert await campaigns.start_due(other, app.shop) == []
    # Written as the campaign's recipients; the sender makes their pushes just before sending.
    written = await session.scalar(
        select(func.count()).select_from(CampaignRecipient)
        .where(CampaignRecipient.campaign_id == campaign_id)
    )
    assert written == len(PEOPLE)


async def test_staff_and_members_get_nowhere(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram
) -> None:
    await _people(chat, session)
    spec = campaigns.CampaignSpec(variants=[campaigns.Variant(texts={"*": "Hi"})])
    campaign_id = await campaigns.save_draft(
        session, app.shop, campaigns.Actor(ADMIN_ID, "admin"), spec
    )
    await _type(chat, STAFF_ID, "/campaign")
    assert "for the people who run the program only" in _last_text(fake_telegram, STAFF_ID)
    member = 7002
    await _type(chat, member, "/campaign")
    assert "for the people who run the program only" in _last_text(fake_telegram, member)
    for user in (STAFF_ID, member):
        for data in (
            CampaignAction(action="confirm", campaign_id=campaign_id).pack(),
            CampaignAction(action="stop", campaign_id=campaign_id).pack(),
            CampaignStep(step="preview").pack(),
            CampaignEdit(field="tier", value="gold").pack(),
        ):
            await chat.send(callback_update(user, data))
    state = await session.scalar(select(Campaign.state).where(Campaign.id == campaign_id))
    written = await session.scalar(select(func.count()).select_from(Push).where(
        Push.campaign_id == campaign_id))
    staff_member = await session.scalar(select(Member).where(Member.telegram_id == STAFF_ID))
    assert state == "draft" and written == 0 and staff_member is None
    # A member's crafted NPS answer for a survey nobody sent them changes nothing.
    await chat.send(fake_telegram.press(member, NpsScore(campaign_id=campaign_id, score=10).pack()))
    answers = await session.scalar(select(func.count()).select_from(NpsAnswer))
    assert answers == 0
    assert "was not sent to you" in fake_telegram.calls_of("answerCallbackQuery")[-1].params["text"]


async def test_a_half_built_campaign_survives_a_restart(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram,
    clock: FixedClock, program: Program,
) -> None:
    await _type(chat, ADMIN_ID, "/campaign")
    await _press(chat, ADMIN_ID, CampaignStep(step="message").pack())
    await _press(chat, ADMIN_ID, CampaignEdit(field="ask", value="text_*").pack())
    # The bot restarts while it waits for the text.
    again = create_app(app.settings, clock=clock, program=program)
    dispatcher = again.dispatcher
    await dispatcher.emit_startup(bot=again.bot, dispatcher=dispatcher, **dispatcher.workflow_data)
    try:
        restarted = Conversation(again, fake_telegram)
        await restarted.send(message_update(ADMIN_ID, "Back after the restart"))
        assert "Back after the restart" in _last_text(fake_telegram, ADMIN_ID)
        await restarted.send(fake_telegram.press(ADMIN_ID, CampaignStep(step="menu").pack()))
        assert "“Back after the restart”" in _last_text(fake_telegram, ADMIN_ID)
        # The admin was never made a member by typing into the conversation.
        assert await session.scalar(select(Member).where(Member.telegram_id == ADMIN_ID)) is None
    finally:
        await again.close()


async def test_bad_input_is_explained_in_the_admins_language(
    app: App, chat: Conversation, fake_telegram: FakeTelegram
) -> None:
    await chat.send(message_update(ADMIN_ID, "/campaign", language_code="zh"))
    await chat.send(fake_telegram.press(
        ADMIN_ID, CampaignEdit(field="ask", value="bought_within").pack(), language_code="zh"))
    await chat.send(message_update(ADMIN_ID, "abc", language_code="zh"))
    assert "请输入 1 到 3,650 之间的整数" in _last_text(fake_telegram, ADMIN_ID)
    await chat.send(fake_telegram.press(
        ADMIN_ID, CampaignEdit(field="ask", value="when").pack(), language_code="zh"))
    await chat.send(message_update(ADMIN_ID, "2020-01-01 10:00", language_code="zh"))
    assert "该时间已过" in _last_text(fake_telegram, ADMIN_ID)
    await chat.send(message_update(ADMIN_ID, "2026-03-12 10:00", language_code="zh"))
    assert "2026年3月12日 10:00" in _last_text(fake_telegram, ADMIN_ID)


async def test_nps_survey_one_answer_per_member_with_a_comment_and_stop(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram
) -> None:
    people = await _people(chat, session)
    await app.sender.deliver_pending()
    await _type(chat, ADMIN_ID, "/campaign")
    await _press(chat, ADMIN_ID, CampaignStep(step="message").pack())
    await _press(chat, ADMIN_ID, CampaignEdit(field="survey").pack())
    await _press(chat, ADMIN_ID, CampaignStep(step="audience").pack())
    await _press(chat, ADMIN_ID, CampaignEdit(field="language", value="en").pack())
    await _press(chat, ADMIN_ID, CampaignStep(step="preview").pack())
    campaign_id = await _draft_id(session)
    await _press(chat, ADMIN_ID, CampaignAction(action="confirm", campaign_id=campaign_id).pack())
    await app.campaign_writer.wait()
    await app.sender.deliver_pending()
    ann, bob = 7001, 7002
    assert "How likely are you to recommend us" in _last_text(fake_telegram, ann)
    await chat.send(fake_telegram.press(ann, NpsScore(campaign_id=campaign_id, score=9).pack()))
    await chat.send(fake_telegram.press(ann, NpsScore(campaign_id=campaign_id, score=2).pack()))
    assert "answered this survey already" in (
        fake_telegram.calls_of("answerCallbackQuery")[-1].params["text"]
    )
    await chat.send(fake_telegram.press(bob, NpsScore(campaign_id=campaign_id, score=3).pack()))
    await _type(chat, bob, "Queues are long")
    assert "Thank you for your comment" in _last_text(fake_telegram, bob)
    # A Chinese member was not sent the survey: a crafted answer changes nothing.
    await chat.send(fake_telegram.press(7003, NpsScore(campaign_id=campaign_id, score=0).pack()))
    answers = dict((await session.execute(
        select(NpsAnswer.member_id, NpsAnswer.score).where(NpsAnswer.campaign_id == campaign_id)
    )).all())
    await session.rollback()
    assert answers == {people[ann].id: 9, people[bob].id: 3}
    await _type(chat, ADMIN_ID, "/campaigns")
    report = _last_text(fake_telegram, ADMIN_ID)
    # 1 promoter, 1 detractor of 2: NPS 0
    assert "<b>NPS</b>: 0 from 2 answers (1 promoters, 1 detractors, 1 comments)" in report
    assert "9: 1" in report and "3: 1" in report

    # The monthly report carries the latest NPS.
    month = await analytics.build_report(session, app.shop, Period.month_of(app.shop.today()))
    await session.rollback()
    monthly = app.texts.render("en", "stats/monthly_report", r=month)
    assert "Latest NPS survey: 0 from 2 answers" in monthly
    assert "最近一次 NPS 调查：0（2 份回答）" in app.texts.render("zh", "stats/monthly_report", r=month)


async def test_a_scheduled_campaign_can_be_cancelled_and_a_running_one_stopped(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram,
    clock: FixedClock,
) -> None:
    await _people(chat, session)
    await app.sender.deliver_pending()
    admin = campaigns.Actor(ADMIN_ID, "admin")
    later = campaigns.CampaignSpec(
        variants=[campaigns.Variant(texts={"*": "Later"})],
        start_at=clock.now() + timedelta(days=1),
    )
    scheduled = await campaigns.save_draft(session, app.shop, admin, later)
    await campaigns.confirm(session, app.shop, admin, scheduled)
    await _type(chat, ADMIN_ID, "/campaigns")
    assert "scheduled, goes 11 Mar 2026 10:00" in _last_text(fake_telegram, ADMIN_ID)
    await _press(chat, ADMIN_ID, CampaignAction(action="cancel", campaign_id=scheduled).pack())
    assert "cancelled" in _last_text(fake_telegram, ADMIN_ID)
    clock.advance(days=1, hours=1)
    assert await start_campaigns(app.session_factory, app.shop, app.sender.signal) == []

    now = await campaigns.save_draft(
        session, app.shop, admin,
        campaigns.CampaignSpec(variants=[campaigns.Variant(texts={"*": "Now"})]),
    )
    await campaigns.confirm(session, app.shop, admin, now)
    assert await start_campaigns(app.session_factory, app.shop, app.sender.signal) == [now]
    await _type(chat, ADMIN_ID, "/campaigns")
    await _press(chat, ADMIN_ID, CampaignAction(action="stop", campaign_id=now).pack())
    assert "stopped" in _last_text(fake_telegram, ADMIN_ID)
    since = len(fake_telegram.calls)
    await app.sender.deliver_pending()
    assert not any(_texts_to(fake_telegram, user, since) for user in PEOPLE)
    # Stopped before the sender fed it: its recipients are skipped, no push was ever made.
    stopped = await campaigns.report(session, app.shop, now)
    assert (stopped.reached, stopped.skipped, stopped.pending, stopped.sent) == (
        len(PEOPLE), len(PEOPLE), 0, 0
    )
    assert (await campaigns.report(session, app.shop, scheduled)).reached == 0
    pushes = await session.scalar(
        select(func.count()).select_from(Push).where(Push.campaign_id.in_((scheduled, now)))
    )
    assert pushes == 0
    actions = (await session.scalars(select(AuditEntry.action).order_by(AuditEntry.id))).all()
    assert actions.count("campaign.cancel") == 1 and actions.count("campaign.stop") == 1


async def test_the_confirm_is_answered_at_once_and_the_pushes_are_written_behind_it(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writing a million outbox rows takes seconds: the admin's press does not wait for it."""
    await _people(chat, session)
    await app.sender.deliver_pending()
    campaign_id = await _simple_campaign(chat, session)
    writing = asyncio.Event()
    release = asyncio.Event()
    real_write = campaigns.write_pushes

    async def slow_write(own: AsyncSession, shop: Any, wanted: int) -> bool:
        writing.set()
        await release.wait()  # as long as a million members take
        return await real_write(own, shop, wanted)

    monkeypatch.setattr(campaigns, "write_pushes", slow_write)
    confirm = CampaignAction(action="confirm", campaign_id=campaign_id).pack()
    await asyncio.wait_for(_press(chat, ADMIN_ID, confirm), timeout=5)
    answer = _last_text(fake_telegram, ADMIN_ID)
    assert f"Campaign No. {campaign_id} is confirmed" in answer
    assert "being written and go out in a moment" in answer
    await asyncio.wait_for(writing.wait(), timeout=5)
    # Meanwhile the admin's chat is answered (the writing holds no update) and nothing is sent.
    await _type(chat, ADMIN_ID, "/campaigns")
    assert f"No. {campaign_id}" in _last_text(fake_telegram, ADMIN_ID)
    since = len(fake_telegram.calls)
    await app.sender.deliver_pending()
    assert not any(_texts_to(fake_telegram, user, since) for user in PEOPLE)

    release.set()
    await app.campaign_writer.wait()
    await app.sender.deliver_pending()
    for user, (_, _, marketing) in PEOPLE.items():
        assert len(_texts_to(fake_telegram, user, since)) == (1 if marketing else 0), user
    state = await session.scalar(select(Campaign.state).where(Campaign.id == campaign_id))
    assert state == "running"


async def test_a_background_write_cut_short_is_resumed_at_the_next_start_once_per_member(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram,
    clock: FixedClock, monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _people(chat, session)
    await app.sender.deliver_pending()
    campaign_id = await _simple_campaign(chat, session)
    monkeypatch.setattr(campaigns, "WRITE_BATCH", 3)  # several ranges: stopped between two
    written_ranges = 0
    real_range = campaigns._write_range
    never = asyncio.Event()

    async def range_then_hang(*args: Any) -> int:
        nonlocal written_ranges
        if written_ranges == 1:
            await never.wait()  # shutdown comes while the second range is being written
        written_ranges += 1
        return await real_range(*args)

    monkeypatch.setattr(campaigns, "_write_range", range_then_hang)
    await _press(chat, ADMIN_ID, CampaignAction(action="confirm", campaign_id=campaign_id).pack())
    for _ in range(100):
        if written_ranges == 1:
            break
        await asyncio.sleep(0.01)
    await app.campaign_writer.wait(0.2)  # the shutdown's grace ends: the write is cut short
    assert await session.scalar(
        select(Campaign.state).where(Campaign.id == campaign_id)
    ) == "writing"
    await session.rollback()
    monkeypatch.setattr(campaigns, "_write_range", real_range)

    again = create_app(app.settings, clock=clock, program=app.shop.program)
    try:
        assert await start_campaigns(
            again.session_factory, again.shop, again.sender.signal, resume=True
        ) == [campaign_id]
    finally:
        await again.close()
    since = len(fake_telegram.calls)
    await app.sender.deliver_pending()
    for user, (_, _, marketing) in PEOPLE.items():
        assert len(_texts_to(fake_telegram, user, since)) == (1 if marketing else 0), user
    written = await session.scalar(
        select(func.count()).select_from(Push).where(Push.campaign_id == campaign_id)
    )
    assert written == len(PEOPLE)


async def test_revenue_counts_each_recipients_own_fourteen_days_from_their_delivery(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram,
    clock: FixedClock,
) -> None:
    """Ann gets the message on the first day, Bob (held back, say by quiet hours or the rate)
    ten days later: each one's orders count from their own delivery to 14 days after it."""
    people = await _people(chat, session)
    admin = campaigns.Actor(ADMIN_ID, "admin")
    spec = campaigns.CampaignSpec(variants=[campaigns.Variant(texts={"*": "Hi"})])
    campaign_id = await campaigns.save_draft(session, app.shop, admin, spec)
    await campaigns.confirm(session, app.shop, admin, campaign_id)
    assert await campaigns.start_due(session, app.shop) == [campaign_id]
    ann, bob = people[7001], people[7002]
    start = clock.now()

    async def deliver(member: Member) -> None:
        async with write_transaction(session):
            await campaigns.delivered(session, app.shop, campaign_id, member.id, "member", "A")

    def order(member: Member, day: float, paid: int) -> Order:
        at = start + timedelta(days=day)
        return Order(
            order_id=f"o-{member.id}-{day}", request_hash="x", member_id=member.id, amount=paid,
            paid=paid, occurred_at=at, created_at=at,
        )

    await deliver(ann)
    clock.advance(days=10)
    await deliver(bob)
    session.add_all([
        order(ann, 13.9, 1_000),  # within Ann's 14 days
        order(ann, 14.1, 2_000),  # past them
        order(bob, 5, 4_000),  # before Bob got the message
        order(bob, 23.9, 8_000),  # within Bob's 14 days, past the campaign's first 14
        order(bob, 24.1, 16_000),  # past Bob's
    ])
    await session.commit()
    figures = await campaigns.report(session, app.shop, campaign_id)
    assert figures.revenue == 9_000
    await _type(chat, ADMIN_ID, "/campaigns")
    assert "within 14 days of their message: CN¥90.00" in _last_text(fake_telegram, ADMIN_ID)


async def test_a_campaign_with_a_photo_goes_out_as_a_photo_with_its_caption_and_button(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram,
) -> None:
    await _people(chat, session)
    await app.sender.deliver_pending()
    await _start_simple(chat, "Our spring window")
    await _press(chat, ADMIN_ID, CampaignEdit(field="ask", value="photo").pack())
    photo = message_update(ADMIN_ID, "")
    photo["message"]["photo"] = [
        {"file_id": "spring-small", "file_unique_id": "s1", "width": 90, "height": 90},
        {"file_id": "spring-large", "file_unique_id": "s2", "width": 1280, "height": 960},
    ]
    await chat.send(photo)
    for _ in range(2):  # no button → rewards → coupons
        await _press(chat, ADMIN_ID, CampaignEdit(field="cta").pack())
    await _press(chat, ADMIN_ID, CampaignStep(step="preview").pack())
    campaign_id = await _draft_id(session)
    await _press(chat, ADMIN_ID, CampaignAction(action="confirm", campaign_id=campaign_id).pack())
    await app.campaign_writer.wait()
    since = len(fake_telegram.calls)
    await app.sender.deliver_pending()
    for user, (_, _, marketing) in PEOPLE.items():
        to_member = [
            c for c in fake_telegram.calls[since:] if str(c.params.get("chat_id")) == str(user)
        ]
        if not marketing:
            assert to_member == []
            continue
        assert [c.method for c in to_member] == ["sendPhoto"], user
        sent = to_member[0].params
        assert sent["photo"] == "spring-large"  # the largest size the admin sent
        assert "Our spring window" in str(sent["caption"])
        button = sent["reply_markup"]["inline_keyboard"][0][0]
        assert button["url"].endswith("?start=go_coupons")
        assert button["text"] and "go_" not in button["text"]


@pytest.mark.parametrize(
    ("link", "screen"),
    [("go_rewards", "Rewards mall"), ("go_coupons", "Your coupons"),
     ("go_checkin", "Checked in for today!")],
)
async def test_a_campaigns_button_opens_its_screen_for_a_member_and_registers_a_newcomer(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram,
    link: str, screen: str,
) -> None:
    member = 7001
    await chat.send(message_update(member, "/start", first_name="Ann"))
    await chat.send(message_update(member, f"/start {link}"))
    opened = _last_text(fake_telegram, member)
    assert screen in opened and "Welcome" not in opened
    if link == "go_checkin":
        checked = await session.scalar(
            select(func.count()).select_from(LedgerEntry).join(
                Member, Member.id == LedgerEntry.member_id
            ).where(Member.telegram_id == member, LedgerEntry.kind == "checkin")
        )
        await session.rollback()
        assert checked == 1

    newcomer = 7100
    await chat.send(message_update(newcomer, f"/start {link}", first_name="Neil"))
    welcomed = _last_text(fake_telegram, newcomer)
    assert "Welcome to the club, <b>Neil</b>!" in welcomed and screen not in welcomed
    joined = await session.scalar(select(Member).where(Member.telegram_id == newcomer))
    assert joined is not None


async def test_the_preview_is_sent_in_each_language_of_the_audience_labelled_for_the_admin(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram,
) -> None:
    await _people(chat, session)  # English and Chinese members
    for admin_lang in ("en", "zh"):
        async def send(text: str = "", data: str = "") -> None:
            if data:
                await chat.send(fake_telegram.press(ADMIN_ID, data, language_code=admin_lang))
            else:
                await chat.send(message_update(ADMIN_ID, text, language_code=admin_lang))

        await send("/campaign")
        await send(data=CampaignStep(step="message").pack())
        for code, words in (("en", "Spring is here"), ("zh", "春天来了")):
            await send(data=CampaignEdit(field="ask", value=f"text_{code}").pack())
            await send(words)
        since = len(fake_telegram.calls)
        await send(data=CampaignStep(step="preview").pack())
        shown = _texts_to(fake_telegram, ADMIN_ID, since)
        if admin_lang == "en":
            assert shown[0].startswith("👀 Preview in English") and "Spring is here" in shown[1]
            assert shown[2].startswith("👀 Preview in Chinese") and "春天来了" in shown[3]
            assert "Spring" not in shown[3] and "bonus" not in shown[3]
        else:
            assert shown[0].startswith("👀 预览（英文）") and "Spring is here" in shown[1]
            assert shown[2].startswith("👀 预览（中文）") and "春天来了" in shown[3]
        assert len(shown) == 5  # then the confirm question, in the admin's language
        assert ("That is what members will get." in shown[4]) == (admin_lang == "en")

    # An audience of Chinese members only: one preview, in Chinese, even for an English admin.
    await _type(chat, ADMIN_ID, "/campaign")
    await _press(chat, ADMIN_ID, CampaignStep(step="audience").pack())
    await _press(chat, ADMIN_ID, CampaignEdit(field="language", value="zh").pack())
    await _press(chat, ADMIN_ID, CampaignStep(step="message").pack())
    await _press(chat, ADMIN_ID, CampaignEdit(field="ask", value="text_*").pack())
    await _type(chat, ADMIN_ID, "只此一份")
    since = len(fake_telegram.calls)
    await _press(chat, ADMIN_ID, CampaignStep(step="preview").pack())
    shown = _texts_to(fake_telegram, ADMIN_ID, since)
    assert len(shown) == 3 and shown[0].startswith("👀 Preview in Chinese")
    assert "只此一份" in shown[1]


# ---- the recipients' queue and the feed --------------------------------------------------


async def _start_now(session: AsyncSession, app: App, text: str) -> int:
    admin = campaigns.Actor(ADMIN_ID, "admin")
    spec = campaigns.CampaignSpec(variants=[campaigns.Variant(texts={"*": text})])
    campaign_id = await campaigns.save_draft(session, app.shop, admin, spec)
    await campaigns.confirm(session, app.shop, admin, campaign_id)
    assert await campaigns.start_due(session, app.shop) == [campaign_id]
    return campaign_id


async def test_a_stop_midway_sends_nothing_to_the_recipients_not_yet_fed(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram
) -> None:
    await _people(chat, session)
    await app.sender.deliver_pending()
    campaign_id = await _start_now(session, app, "Midway")
    # A sender of batches of two feeds four recipients ahead of itself and sends them.
    small = OutboxSender(
        app.session_factory, app.bot, app.texts, app.shop, OutboxSignal(), batch_size=2,
        rich=app.sender.rich,
    )
    since = len(fake_telegram.calls)
    await small.deliver_pending()
    first = [user for user in PEOPLE if _texts_to(fake_telegram, user, since)]
    assert first == [7001, 7002, 7003, 7004]
    midway = await campaigns.report(session, app.shop, campaign_id)
    assert (midway.reached, midway.sent, midway.pending, midway.skipped) == (10, 4, 5, 1)

    await campaigns.stop(session, app.shop, campaigns.Actor(ADMIN_ID, "admin"), campaign_id)
    since = len(fake_telegram.calls)
    await small.deliver_pending()
    await app.sender.deliver_pending()
    assert not any(_texts_to(fake_telegram, user, since) for user in PEOPLE)
    after = await campaigns.report(session, app.shop, campaign_id)
    assert (after.reached, after.sent, after.pending, after.skipped) == (10, 4, 0, 6)


async def test_the_feed_makes_each_members_push_once_run_twice_or_at_once(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram
) -> None:
    people = await _people(chat, session)
    await app.sender.deliver_pending()
    campaign_id = await _start_now(session, app, "Once")

    async def feed(limit: int) -> int:
        async with app.session_factory() as own:
            return await campaigns.feed(own, app.shop, limit)

    fed = await asyncio.gather(feed(len(PEOPLE)), feed(len(PEOPLE)), feed(3))
    assert sum(fed) == len(PEOPLE)
    assert await feed(len(PEOPLE)) == 0
    # A recipient written again after its push was made (a write resumed over a fed range):
    # it leaves the queue, and no second push is made.
    async with write_transaction(session):
        session.add(CampaignRecipient(
            campaign_id=campaign_id, member_id=people[7001].id, variant="A", skipped=False
        ))
    assert await feed(len(PEOPLE)) == 1
    keys = list(await session.scalars(select(Push.key).where(Push.campaign_id == campaign_id)))
    await session.rollback()
    assert len(keys) == len(set(keys)) == len(PEOPLE)
    since = len(fake_telegram.calls)
    await app.sender.deliver_pending()
    await app.sender.deliver_pending()
    for user, (_, _, marketing) in PEOPLE.items():
        assert _texts_to(fake_telegram, user, since) == (["Once"] if marketing else []), user


async def test_the_report_counts_recipients_not_yet_fed_as_waiting(
    app: App, chat: Conversation, session: AsyncSession, fake_telegram: FakeTelegram
) -> None:
    await _people(chat, session)
    await app.sender.deliver_pending()
    campaign_id = await _start_now(session, app, "Soon")
    line = "Reached 10 · sent 0 · waiting 9 · skipped 1 · failed 0 · blocked 0"
    await _type(chat, ADMIN_ID, "/campaigns")
    assert line in _last_text(fake_telegram, ADMIN_ID)
    async with app.session_factory() as own:
        assert await campaigns.feed(own, app.shop, 3) == 3  # some pushes made, none sent
    await _type(chat, ADMIN_ID, "/campaigns")
    assert line in _last_text(fake_telegram, ADMIN_ID)
    await app.sender.deliver_pending()
    await _type(chat, ADMIN_ID, "/campaigns")
    assert (
        "Reached 10 · sent 9 · waiting 0 · skipped 1 · failed 0 · blocked 0"
        in _last_text(fake_telegram, ADMIN_ID)
    )
    assert f"No. {campaign_id}" in _last_text(fake_telegram, ADMIN_ID)
