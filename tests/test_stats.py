"""What admins see of the program, and what nobody else does: /stats and its sections and
charts, /export, the reports API, the monthly report and the red-line alert, the command line.
The shop is the known history of tests/analytics_history.py."""

from __future__ import annotations

import argparse
import io
import json
import struct
from contextlib import redirect_stdout
from datetime import timedelta
from typing import Any

import pytest
from fontTools.ttLib import TTFont
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import App
from bot.report_cli import report_command
from bot.scheduler import run_scheduled
from domain.analytics import Period
from domain.clock import FixedClock
from domain.models import AdminMessage, Member
from domain.shop import Shop
from handlers import charts
from handlers.callbacks import StatsView
from handlers.stats import chart_for
from handlers.texts import load_texts
from tests.analytics_history import build_history, local
from tests.conftest import ADMIN_ID, STAFF_ID, Conversation
from tests.fake_telegram import message_update

MEMBER = 4321
STRANGER = 4999


async def _last_month(chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock) -> None:
    await build_history(session, shop, clock)
    clock.set(local(2026, 3, 1, 12))  # "last month" is February


def _to_admin(chat: Conversation) -> list[Any]:
    """Messages to the admin (the outbox also delivers the history's pushes to members)."""
    return [c for c in chat.fake.calls_of("sendMessage") if c.params["chat_id"] == str(ADMIN_ID)]


def _texts(chat: Conversation, method: str = "sendMessage") -> list[str]:
    return [c.params.get("text") or c.params.get("caption") or "" for c in chat.fake.calls_of(method)]


async def test_admin_sees_the_summary_then_sections_edited_in_place(
    chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    await _last_month(chat, session, shop, clock)
    await chat.send(message_update(ADMIN_ID, "/stats"))
    summary = chat.fake.calls_of("sendMessage")[-1]
    assert "The program at a glance" in summary.params["text"]
    assert "Members: 6 (0 new)" in summary.params["text"]  # March so far

    await chat.send(chat.fake.press(ADMIN_ID, StatsView(view="summary", period="last").pack()))
    text = chat.fake.calls_of("editMessageText")[-1].params["text"]
    assert "1 Feb 2026 – 28 Feb 2026" in text
    assert "Members: 6 (3 new)" in text
    assert "Revenue: CN¥580.00 from 4 orders" in text
    assert "Benefit cost: CN¥65.10 = 11.2% of revenue (red line 8%)" in text
    assert "Over the red line." in text

    await chat.send(chat.fake.press(ADMIN_ID, StatsView(view="benefits", period="last").pack()))
    edit = chat.fake.calls_of("editMessageText")[-1]
    assert int(edit.params["message_id"]) == summary.message_id
    benefits = edit.params["text"]
    assert "Tier discounts (estimated): CN¥38.10" in benefits
    assert "Reward-mall items (at their points' value): CN¥15.00" in benefits
    assert ("First-order coupon: 3 given · 1 used (33.3%) · 1 bought (33.3%) · CN¥10.00"
            in benefits)
    assert "A free item: 1 given · 0 used (0%) · 1 bought (100%) · CN¥15.00" in benefits
    assert "reward:" not in benefits and "welcome" not in benefits

    await chat.send(chat.fake.press(ADMIN_ID, StatsView(view="pushes", period="last").pack()))
    pushes = chat.fake.calls_of("editMessageText")[-1].params["text"]
    assert "Purchase receipts: 4 · 1 · 2 · 0 · 0 · 1" in pushes
    assert "receipt" not in pushes.replace("receipts", "")


async def test_admin_reads_chinese_and_gets_a_chart(
    chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    await _last_month(chat, session, shop, clock)
    await chat.send(message_update(ADMIN_ID, "/stats", language_code="zh"))
    await chat.send(chat.fake.press(
        ADMIN_ID, StatsView(view="lifecycle", period="last").pack(), language_code="zh"
    ))
    text = chat.fake.calls_of("editMessageText")[-1].params["text"]
    assert "期初沉睡或流失:2,其中再次消费:1(50%)" in text
    assert "流失:1(本期进入:1)" in text
    await chat.send(chat.fake.press(
        ADMIN_ID, StatsView(view="chart_pyramid", period="last").pack(), language_code="zh"
    ))
    photo = chat.fake.calls_of("sendPhoto")[-1]
    assert photo.params["caption"].startswith("等级金字塔与 1:10 原则 · 2026年2月1日至2026年2月28日")
    _assert_png(photo.params["photo"]["bytes"])


@pytest.mark.parametrize("user", [STAFF_ID, MEMBER, STRANGER])
async def test_others_are_refused_and_learn_nothing(
    chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock, user: int
) -> None:
    await _last_month(chat, session, shop, clock)
    if user == MEMBER:
        await chat.send(message_update(MEMBER, "/start"))
    before = await session.scalar(select(func.count(Member.id)))
    await session.commit()
    chat.fake.clear()
    for command in ("/stats", "/export members", "/export ledger 2026-02"):
        await chat.send(message_update(user, command))
    answers = _texts(chat)
    assert answers == ["This command is for the people who run the program only."] * 3
    assert not chat.fake.calls_of("sendDocument")
    await chat.send(chat.fake.press(user, StatsView(view="sales", period="last").pack()))
    alert = chat.fake.calls_of("answerCallbackQuery")[-1].params
    assert alert["text"] == "This command is for the people who run the program only."
    assert not chat.fake.calls_of("editMessageText")
    assert await session.scalar(select(func.count(Member.id))) == before  # nobody registered


async def test_exports_are_csv_with_a_bom(
    chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    history = await build_history(session, shop, clock)
    await chat.send(message_update(ADMIN_ID, "/export ledger 2026-02", language_code="zh"))
    document = chat.fake.calls_of("sendDocument")[-1]
    data: bytes = document.params["document"]["bytes"]
    assert data.startswith("\ufeff".encode())
    lines = data.decode("utf-8-sig").splitlines()
    assert lines[0] == "时间,会员码,类型,积分,变动后余额"
    # February's ledger: 3 sign-ups, 4 purchases, 1 offset, 1 reward, 1 referral, 1 review,
    # 3 check-ins, 1 refund
    assert len(lines) == 1 + 15
    assert f"2026-02-10 10:00:00,{history.codes['A']},积分抵现,-200,0" in lines
    assert document.params["caption"] == "💰 积分流水,2026年2月1日至2026年2月28日:共 15 行。"

    await chat.send(message_update(ADMIN_ID, "/export members 2026-02"))
    members = chat.fake.calls_of("sendDocument")[-1].params["document"]["bytes"]
    rows = members.decode("utf-8-sig").splitlines()
    assert rows[0].startswith("Member code,Name,Language,Tier,Stage,Status,Points balance")
    assert len(rows) == 1 + 6
    assert any(r.startswith(f"{history.codes['C']},C,en,Gold,Active,Active,500,2026-01-10")
               for r in rows)

    await chat.send(message_update(ADMIN_ID, "/export everything"))
    assert "/export members" in chat.fake.calls_of("sendMessage")[-1].params["text"]


def _assert_png(data: bytes) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (charts.WIDTH_PX, charts.HEIGHT_PX)


@pytest.mark.parametrize("name", ["pyramid", "funnel", "revenue", "points"])
async def test_chinese_charts_have_every_glyph(
    session: AsyncSession, shop: Shop, clock: FixedClock, name: str
) -> None:
    await build_history(session, shop, clock)
    texts = load_texts(currency=shop.program.currency)
    chart = await chart_for(session, shop, texts, "zh", name, Period.months_to(clock.now().date(), 3))
    drawn = "".join(chart.texts())
    assert any("\u4e00" <= c <= "\u9fff" for c in drawn)  # Chinese is drawn
    cmap = TTFont(charts.font_path()).getBestCmap()
    missing = {c for c in drawn if not c.isspace() and ord(c) not in cmap}
    assert missing == set()
    _assert_png(charts.render(chart))


def test_the_font_covers_every_chinese_label_and_tier_name(shop: Shop) -> None:
    texts = load_texts(currency=shop.program.currency)
    cmap = TTFont(charts.font_path()).getBestCmap()
    words = [texts.label("zh", key) for key in texts._labels["zh"] if key.startswith("stats_")]
    words += [t.name.zh for t in shop.program.tiers] + [r.name.zh for r in shop.program.rewards]
    assert {c for w in words for c in w if not c.isspace() and ord(c) not in cmap} <= set(
        "📋👥🔄🛒💰🎁🙌📨📊📈•"  # emoji live on buttons only, never in a chart
    )


async def test_reports_api(app: App, api: Any, session: AsyncSession, shop: Shop,
                           clock: FixedClock) -> None:
    await build_history(session, shop, clock)
    answer = await api.get("/api/v1/reports/summary", params={"from": "2026-02-01",
                                                               "to": "2026-02-28"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["sales"]["revenue"] == 58000
    assert body["cost"]["ratio"] == "11.2" and body["cost"]["over"] is True
    assert [t["members"] for t in body["members"]["tiers"]] == [4, 1, 1, 0]
    wrong = await api.get("/api/v1/reports/summary", headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 401 and "members" not in wrong.text
    backwards = await api.get("/api/v1/reports/summary",
                              params={"from": "2026-02-10", "to": "2026-02-01"})
    assert backwards.status_code == 422 and backwards.json()["field"] == "to"
    schema = (await api.get("/api/v1/openapi.json")).json()
    assert "/api/v1/reports/summary" in schema["paths"]


async def test_monthly_report_reaches_every_admin_once(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    await build_history(session, shop, clock)
    clock.set(local(2026, 3, 1, 9))
    for _ in range(2):
        await run_scheduled("monthly_report", app.session_factory, shop, app.sender.signal,
                            notify=app.notifier)
        await app.sender.deliver_pending()
    messages = _to_admin(chat)
    assert len(messages) == 1 and not messages[0].failed
    text = messages[0].params["text"]
    assert text.startswith("🗓 <b>Monthly report</b>\n1 Feb 2026 – 28 Feb 2026")
    assert "Revenue: CN¥580.00 from 4 orders" in text


async def test_admin_notices_outlive_telegram_errors_and_reruns(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    """The monthly report waits in the admins' outbox: a 429 and a 5xx from Telegram delay it,
    a job run again (a crash before its run was recorded) does not double it, and the admin
    gets it exactly once."""
    await build_history(session, shop, clock)
    clock.set(local(2026, 3, 1, 9))
    chat.fake.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1,
                        chat_id=ADMIN_ID)
    chat.fake.fail_next("sendMessage", 500, "Internal Server Error", chat_id=ADMIN_ID)
    report = await run_scheduled("monthly_report", app.session_factory, shop, app.sender.signal,
                                 notify=app.notifier)
    assert report is not None
    assert await app.notifier(report.notices) == 0  # the same notices again: nothing new
    await app.sender.deliver_pending()  # 429: paused, still waiting
    await app.sender.deliver_pending()  # 500: tried again in 2 s by the shop's clock
    await app.sender.deliver_pending()  # not due yet
    assert [c.failed for c in _to_admin(chat)] == [True, True]
    clock.set(local(2026, 3, 1, 9) + timedelta(seconds=3))
    await app.sender.deliver_pending()
    await app.sender.deliver_pending()
    calls = _to_admin(chat)
    assert [c.failed for c in calls] == [True, True, False]
    assert calls[-1].params["text"].startswith("🗓 <b>Monthly report</b>")
    row = (await session.execute(
        select(AdminMessage.status, AdminMessage.attempts, AdminMessage.key)
    )).one()
    assert row == ("sent", 1, f"monthly_report:2026-03:{ADMIN_ID}")


async def test_an_admin_who_blocked_the_bot_does_not_hold_up_the_others(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    await build_history(session, shop, clock)
    clock.set(local(2026, 3, 1, 9))
    others = sorted(app.notifier.admin_ids)
    app.notifier.admin_ids = frozenset({*others, 9100})
    chat.fake.fail_next("sendMessage", 403, "Forbidden: bot was blocked by the user",
                        chat_id=min(app.notifier.admin_ids))
    await run_scheduled("monthly_report", app.session_factory, shop, app.sender.signal,
                        notify=app.notifier)
    await app.sender.deliver_pending()
    statuses = dict((await session.execute(
        select(AdminMessage.chat_id, AdminMessage.status)
    )).all())
    first, *rest = sorted(app.notifier.admin_ids)
    assert statuses == {first: "failed", **{admin: "sent" for admin in rest}}


async def test_red_line_alert_once_a_month(
    app: App, chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    await build_history(session, shop, clock)
    # February so far, on the 21st and the 22nd: over the red line both days, told once.
    for day in (21, 22):
        clock.set(local(2026, 2, day, 20))
        await run_scheduled("red_line_alert", app.session_factory, shop, app.sender.signal,
                            notify=app.notifier)
        await app.sender.deliver_pending()
    alerts = [c.params["text"] for c in _to_admin(chat)]
    assert len(alerts) == 1
    assert alerts[0].startswith("⚠️ <b>Benefit cost is over the red line</b>\n"
                                "1 Feb 2026 – 21 Feb 2026: ")
    assert "the red line is 8%" in alerts[0]
    # A new month starts afresh: March has no sales yet, so no alert.
    clock.set(local(2026, 3, 2, 20))
    await run_scheduled("red_line_alert", app.session_factory, shop, app.sender.signal,
                        notify=app.notifier)
    await app.sender.deliver_pending()
    assert len(_to_admin(chat)) == 1


async def test_report_on_the_command_line(
    app: App, session: AsyncSession, shop: Shop, clock: FixedClock, capsys: pytest.CaptureFixture[str]
) -> None:
    await build_history(session, shop, clock)
    for fmt in ("json", "csv"):
        args = argparse.Namespace(month="2026-02", first=None, last=None, format=fmt)
        out = io.StringIO()
        with redirect_stdout(out):
            assert await report_command(app.settings, shop.program, args) == 0
        if fmt == "json":
            body = json.loads(out.getvalue())
            assert body["cost"]["total"] == 6510 and body["period"]["first"] == "2026-02-01"
        else:
            assert "sales.revenue,58000" in out.getvalue().splitlines()
            assert "members.tiers.gold.members,1" in out.getvalue().splitlines()
    assert capsys.readouterr().err == ""  # no progress bar off a terminal
