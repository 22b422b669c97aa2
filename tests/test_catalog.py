"""The live catalog: seeded from the program once, edited by admins from the chat with an
audit line per change, applied to the next member who opens the mall; a member midway through
a redemption at the old price is asked again. Members reach none of /catalog. The audit is in
the admins' exports, and freezes and birthday corrections are audited too."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, time

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.middlewares import Throttle
from domain import catalog
from domain.audit import Actor
from domain.clock import FixedClock
from domain.models import (
    AuditEntry,
    CatalogCouponTemplate,
    CatalogReward,
    Coupon,
    LedgerEntry,
    Member,
    Push,
)
from domain.schedule import run_job
from domain.shop import Shop
from handlers.callbacks import CatalogAction, RewardRedeem, RewardView
from tests.conftest import ADMIN_ID, STAFF_ID, Conversation
from tests.fake_telegram import Call, message_update
from tests.test_rewards import _give_points

MEMBER = 6161
ADMIN = Actor(ADMIN_ID, "admin")


def _robots(chat: Conversation) -> None:
    for middleware in chat.app.dispatcher.update.outer_middleware:
        if isinstance(middleware, Throttle):
            middleware.limit = 10_000


async def _join(chat: Conversation, session: AsyncSession, lang: str = "en") -> tuple[int, str]:
    _robots(chat)
    await chat.send(message_update(MEMBER, "/start", first_name="Lin", language_code=lang))
    await session.rollback()
    row = (await session.execute(
        select(Member.id, Member.code).where(Member.telegram_id == MEMBER)
    )).one()
    return int(row[0]), str(row[1])


def _last_to(chat: Conversation, user_id: int, method: str = "sendMessage") -> Call:
    return [c for c in chat.fake.calls_of(method) if c.params["chat_id"] == str(user_id)][-1]


def _data(call: Call) -> list[str]:
    markup = call.params.get("reply_markup")
    if isinstance(markup, str):
        markup = json.loads(markup)
    return [b["callback_data"] for row in (markup or {"inline_keyboard": []})["inline_keyboard"]
            for b in row]


async def _audit(session: AsyncSession) -> list[AuditEntry]:
    await session.rollback()
    return list((await session.scalars(select(AuditEntry).order_by(AuditEntry.id))).all())


async def test_seeding_is_idempotent_and_keeps_admin_changes(
    session: AsyncSession, shop: Shop
) -> None:
    expected = len(shop.program.rewards) + len(shop.program.coupons.templates)
    assert await catalog.seed(session, shop) == expected
    await catalog.change_reward(session, shop, ADMIN, "five_off", "cost", 400)
    await catalog.change_template(session, shop, ADMIN, "welcome", "valid_days", 45)
    assert await catalog.seed(session, shop) == 0  # a restart
    await session.rollback()
    assert await session.scalar(select(func.count()).select_from(CatalogReward)) == len(
        shop.program.rewards)
    assert await session.scalar(select(func.count()).select_from(CatalogCouponTemplate)) == len(
        shop.program.coupons.templates)
    five_off = await catalog.reward(session, shop, "five_off")
    assert five_off is not None and five_off.reward.cost == 400 and five_off.version == 1
    assert five_off.reward.value == 500  # minor units stay minor units
    welcome = await catalog.coupon_template(session, shop, "welcome")
    assert welcome is not None and welcome.valid_days == 45 and welcome.value == 1000
    assert shop.program.coupon_template("welcome") is not None  # the program's still answers


async def test_a_price_change_asks_a_member_midway_again(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member_id, _ = await _join(chat, session)
    await _give_points(session, shop, member_id, 1000)  # 1,100
    await chat.send(message_update(MEMBER, "/rewards"))
    await chat.send(chat.fake.press(MEMBER, RewardView(key="five_off").pack()))
    await chat.send(chat.fake.press(MEMBER, RewardRedeem(key="five_off", confirmed=False).pack()))
    shown = _last_to(chat, MEMBER, "editMessageText")
    assert "for <b>500</b> points" in shown.params["text"]
    [old_confirm] = [d for d in _data(shown) if d.startswith("rwr:five_off:1:")]

    # An admin changes the price meanwhile, from the chat.
    await chat.send(message_update(ADMIN_ID, "/catalog"))
    await chat.send(chat.fake.press(ADMIN_ID, CatalogAction(action="item", key="five_off").pack()))
    await chat.send(chat.fake.press(
        ADMIN_ID, CatalogAction(action="edit", key="five_off", field="cost").pack()))
    await chat.send(message_update(ADMIN_ID, "four hundred"))  # refused, nothing changed
    assert "whole number from 1" in _last_to(chat, ADMIN_ID).params["text"]
    await chat.send(message_update(ADMIN_ID, "400"))
    assert "Changed to 400" in _last_to(chat, ADMIN_ID).params["text"]

    await chat.send(chat.fake.press(MEMBER, old_confirm, message_id=shown.message_id))
    again = _last_to(chat, MEMBER, "editMessageText")
    assert "has changed since you looked" in again.params["text"]
    assert "for <b>400</b> points" in again.params["text"]
    await session.rollback()
    assert await session.scalar(select(Member.points_balance).where(Member.id == member_id)) == 1100
    [new_confirm] = [d for d in _data(again) if d.startswith("rwr:five_off:1:")]
    assert new_confirm != old_confirm
    await chat.send(chat.fake.press(MEMBER, new_confirm))
    await session.rollback()
    assert await session.scalar(select(Member.points_balance).where(Member.id == member_id)) == 700
    spent = await session.scalar(select(LedgerEntry.amount).where(
        LedgerEntry.member_id == member_id, LedgerEntry.kind == "reward"))
    assert spent == -400
    [line] = [a for a in await _audit(session) if a.action == "catalog.reward.cost"]
    assert (json.loads(line.before), json.loads(line.after)) == ({"cost": 500}, {"cost": 400})
    assert line.actor_telegram_id == ADMIN_ID and line.subject == "reward:five_off"


async def test_pause_stock_tier_and_a_new_item_from_the_chat(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member_id, _ = await _join(chat, session, lang="zh")
    await _give_points(session, shop, member_id, 5000)
    await chat.send(message_update(ADMIN_ID, "/catalog"))
    assert "5.00 off, no minimum" in _last_to(chat, ADMIN_ID).params["text"]
    await chat.send(chat.fake.press(ADMIN_ID, CatalogAction(
        action="toggle", key="free_item", field="paused").pack()))
    assert "Paused" in _last_to(chat, ADMIN_ID, "editMessageText").params["text"]
    await chat.send(message_update(MEMBER, "/rewards", language_code="zh"))
    mall = _last_to(chat, MEMBER)
    assert "免费单品券" not in mall.params["text"]
    assert RewardView(key="free_item").pack() not in _data(mall)
    await chat.send(chat.fake.press(MEMBER, RewardView(key="free_item").pack()))  # an old button
    assert "已下架" in chat.fake.calls_of("answerCallbackQuery")[-1].params["text"]

    await chat.send(chat.fake.press(ADMIN_ID, CatalogAction(
        action="set", key="five_off", field="min_tier", value="gold").pack()))
    await chat.send(chat.fake.press(ADMIN_ID, CatalogAction(
        action="edit", key="five_off", field="stock").pack()))
    await chat.send(message_update(ADMIN_ID, "7"))
    await chat.send(message_update(MEMBER, "/rewards", language_code="zh"))
    text = _last_to(chat, MEMBER).params["text"]
    assert "金卡会员" in text and "7" in text

    # A new item: names, price, kind, value; it starts paused.
    await chat.send(chat.fake.press(ADMIN_ID, CatalogAction(action="new").pack()))
    await chat.send(message_update(ADMIN_ID, "only one line"))
    assert "two lines" in _last_to(chat, ADMIN_ID).params["text"]
    await chat.send(message_update(ADMIN_ID, "Winter mug\n冬季马克杯"))
    await chat.send(message_update(ADMIN_ID, "800"))
    await chat.send(chat.fake.press(ADMIN_ID, CatalogAction(action="newkind", value="amount_off").pack()))
    await chat.send(message_update(ADMIN_ID, "8.00"))
    added = _last_to(chat, ADMIN_ID).params["text"]
    assert "Winter mug" in added and "paused" in added
    await session.rollback()
    row = await session.scalar(select(CatalogReward).where(CatalogReward.name_en == "Winter mug"))
    assert row is not None and row.paused and row.cost == 800 and row.value == 800
    await chat.send(chat.fake.press(ADMIN_ID, CatalogAction(
        action="toggle", key=row.key, field="paused").pack()))
    await chat.send(message_update(MEMBER, "/rewards", language_code="zh"))
    assert "冬季马克杯" in _last_to(chat, MEMBER).params["text"]
    actions = [a.action for a in await _audit(session)]
    assert actions == [
        "catalog.reward.paused", "catalog.reward.min_tier", "catalog.reward.stock",
        "catalog.reward.add", "catalog.reward.paused",
    ]


async def test_a_template_change_applies_to_the_next_grant(
    session: AsyncSession, shop: Shop
) -> None:
    from domain import care

    await catalog.change_template(session, shop, ADMIN, "dormant_wakeup", "value", 3000)
    await catalog.change_template(session, shop, ADMIN, "churned_winback", "paused", True)
    names = [t.key for t in await catalog.coupon_templates(session, shop)]
    assert "churned_winback" not in names and "dormant_wakeup" in names
    await session.rollback()
    session.add(Member(
        telegram_id=1, code="CATTEMP1", language="en", tier="member", points_balance=0,
        points_debt=0, status="active", marketing_opt_in=True, created_at=shop.now(), stage="new",
    ))
    await session.commit()
    member_id = await session.scalar(select(Member.id).where(Member.code == "CATTEMP1"))
    assert member_id is not None
    grant = await care.grant_coupon(session, shop, ADMIN, member_id, "dormant_wakeup")
    assert grant.coupon.value == 3000


async def test_members_and_staff_reach_none_of_the_catalog(
    chat: Conversation, session: AsyncSession
) -> None:
    await _join(chat, session)
    await chat.send(message_update(MEMBER, "/catalog"))
    assert "only" in _last_to(chat, MEMBER).params["text"]
    await chat.send(message_update(STAFF_ID, "/catalog"))
    assert "only" in _last_to(chat, STAFF_ID).params["text"]
    for user in (MEMBER, STAFF_ID):
        for data in (
            CatalogAction(action="toggle", key="five_off", field="paused"),
            CatalogAction(action="set", key="five_off", field="min_tier", value="gold"),
            CatalogAction(action="edit", key="five_off", field="cost"),
            CatalogAction(action="new"),
        ):
            await chat.send(chat.fake.press(user, data.pack()))
    await chat.send(message_update(MEMBER, "1"))  # no question of /catalog was asked
    await session.rollback()
    five_off = await catalog.reward(session, chat.app.shop, "five_off")
    assert five_off is not None and not five_off.paused and five_off.reward.cost == 500
    assert five_off.reward.min_tier is None and five_off.version == 0
    assert await _audit(session) == []
    assert await session.scalar(select(func.count(Member.id))) == 1


async def test_freezes_and_birthday_corrections_are_audited_and_exported(
    chat: Conversation, session: AsyncSession
) -> None:
    member_id, code = await _join(chat, session)
    await chat.send(message_update(STAFF_ID, f"/freeze {code} many accounts"))
    await chat.send(message_update(STAFF_ID, f"/unfreeze {code}"))
    await chat.send(message_update(ADMIN_ID, f"/setbirthday {code} 07-01"))
    lines = await _audit(session)
    assert [(a.action, a.actor_role, a.member_id) for a in lines] == [
        ("member.freeze", "staff", member_id), ("member.unfreeze", "staff", member_id),
        ("member.birthday", "admin", member_id),
    ]
    assert json.loads(lines[0].after) == {"status": "frozen"} and lines[0].reason == "many accounts"
    assert "07" not in lines[2].after  # the date itself stays out of the audit

    await chat.send(message_update(ADMIN_ID, "/export audit"))
    document = chat.fake.calls_of("sendDocument")[-1]
    rows = list(csv.reader(io.StringIO(document.params["document"]["bytes"].decode("utf-8-sig"))))
    assert rows[0][:4] == ["Time", "Role", "Telegram id", "Action"]
    assert [r[3] for r in rows[1:]] == ["Frozen", "Active again", "Birthday corrected"]
    assert all(r[4] == code for r in rows[1:])
    assert "3 rows" in document.params["caption"]
    await chat.send(message_update(STAFF_ID, "/export audit"))
    assert len(chat.fake.calls_of("sendDocument")) == 1  # admins only
    await session.rollback()
    assert await session.scalar(select(func.count(Coupon.id))) == 1  # the welcome coupon only


async def test_sales_and_refunds_recorded_by_staff_are_audited_a_tills_are_not(
    chat: Conversation, session: AsyncSession, api: object
) -> None:
    import httpx

    assert isinstance(api, httpx.AsyncClient)
    member_id, code = await _join(chat, session)
    await chat.send(message_update(STAFF_ID, f"/sale {code} 100.00 S-1"))
    await chat.send(message_update(STAFF_ID, "/refund S-1 40.00"))
    till = await api.post("/api/v1/orders", json={"order_id": "T-1", "member": code,
                                                  "amount": "10.00"})
    assert till.status_code == 201
    lines = await _audit(session)
    assert [(a.action, a.actor_telegram_id, a.member_id, a.subject) for a in lines] == [
        ("order.sale", STAFF_ID, member_id, "order:S-1"),
        ("order.refund", STAFF_ID, member_id, "order:S-1"),
    ]
    assert json.loads(lines[0].before)["points"] == 100
    assert json.loads(lines[0].after) == {"points": 200, "amount": 10000}
    assert json.loads(lines[1].after)["points"] == 160


async def test_the_welcome_coupon_follows_the_live_template(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    await catalog.change_template(session, shop, ADMIN, "welcome", "value", 2500)
    member_id, _ = await _join(chat, session)
    welcome = (await session.scalars(
        select(Coupon).where(Coupon.member_id == member_id, Coupon.source == "welcome")
    )).one()
    assert welcome.value == 2500
    assert "25" in _last_to(chat, MEMBER).params["text"]  # the greeting names what was given


async def test_a_paused_welcome_template_gives_no_coupon(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    await catalog.change_template(session, shop, ADMIN, "welcome", "paused", True)
    member_id, _ = await _join(chat, session)
    assert await session.scalar(
        select(func.count()).select_from(Coupon).where(Coupon.member_id == member_id)
    ) == 0


async def test_lifecycle_offers_follow_the_live_template(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
    clock: FixedClock,
) -> None:
    from tests.test_jobs_lifecycle import TODAY, _member_bought

    clock.set(datetime.combine(TODAY, time(11), tzinfo=shop.tz))
    await catalog.change_template(session, shop, ADMIN, "dormant_wakeup", "value", 3300)
    member_id = await _member_bought(session, shop, 60, days_ago=60)
    await run_job(session_factory, shop, "lifecycle", today=TODAY)
    await session.rollback()
    offer = (await session.scalars(
        select(Coupon).where(Coupon.member_id == member_id, Coupon.source == "dormant_wakeup")
    )).one()
    assert offer.value == 3300
    push = (await session.scalars(select(Push).where(Push.member_id == member_id))).one()
    assert json.loads(push.payload)["coupon"]["value"] == 3300
