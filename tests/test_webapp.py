"""The Mini App without a browser: who may ask (init data, nothing else), what each member sees
and may do (only their own), the rotating card code at the till, and the chat's ways in."""

from __future__ import annotations

import re
import shutil
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import App
from bot.settings import Settings
from domain import catalog
from domain.audit import Actor
from domain.clock import FixedClock
from domain.models import Coupon, Member
from domain.program import Program
from handlers.callbacks import LanguageChoice
from tests.conftest import ADMIN_ID, POS_TOKEN, Conversation
from tests.fake_telegram import FakeTelegram, message_update
from tests.webapp_support import (
    WEBAPP_URL,
    buy,
    http,
    join,
    sign_init_data,
    start_app,
    tma,
    webapp_app,
    webapp_chat,
)

__all__ = ["http", "webapp_app", "webapp_chat"]  # fixtures

ANN, BOB = 5101, 5102
ROOT = Path(__file__).resolve().parent.parent
UNAUTHORIZED = {"error": "unauthorized", "message": "valid Telegram init data is required"}


def _fill(path: str) -> str:
    return (
        path.replace("{page}", "card").replace("{key}", "five_off")
        .replace("{coupon_id}", "1").replace("{name}", "pyramid")
    )


def _bodies() -> dict[str, Any]:
    return {
        "/app/api/rewards/{key}/redemptions": {"token": "0" * 16},
        "/app/api/profile/birthday": {"month": 5, "day": 20},
        "/app/api/profile/marketing": {"on": False},
        "/app/api/profile/language": {"language": "zh"},
    }


def _endpoints(app: App) -> list[tuple[str, str, Any]]:
    """Every Mini App operation of the OpenAPI document, with a well-formed request."""
    found = []
    for path, operations in app.http.openapi()["paths"].items():
        if not path.startswith("/app/api/"):
            continue
        for method in operations:
            found.append((method.upper(), _fill(path), _bodies().get(path)))
    return found


async def test_every_endpoint_refuses_missing_forged_tampered_and_expired_init_data(
    webapp_app: App, webapp_chat: Conversation, session: AsyncSession,
    http: httpx.AsyncClient, clock: FixedClock,
) -> None:
    await join(webapp_chat, session, ANN)
    now = clock.now()
    genuine = sign_init_data(ANN, now)
    tampered = genuine.replace(f"%22id%22%3A{ANN}", f"%22id%22%3A{BOB}")
    assert tampered != genuine
    refusals = {
        "missing": {},
        "empty": {"Authorization": "tma "},
        "another scheme": {"Authorization": f"Bearer {POS_TOKEN}"},
        "forged": tma(sign_init_data(ANN, now, token="123456789:SOMEONE-else-s-bot-token")),
        "tampered": tma(tampered),
        "expired": tma(sign_init_data(ANN, now - timedelta(hours=24, seconds=1))),
        "from the future": tma(sign_init_data(ANN, now + timedelta(hours=1))),
        "not init data": tma("hello"),
    }
    endpoints = _endpoints(webapp_app)
    assert len(endpoints) >= 11  # pages, history, card code, rewards, coupons, profile, admin
    for method, path, body in endpoints:
        for why, headers in refusals.items():
            answer = await http.request(method, path, json=body, headers=headers)
            assert answer.status_code == 401, (why, method, path, answer.text)
            assert answer.json() == UNAUTHORIZED, (why, path)
        # The same request with genuine init data is let in.
        answer = await http.request(method, path, json=body, headers=tma(genuine))
        assert answer.status_code != 401, (method, path)


async def test_init_data_is_accepted_up_to_its_maximum_age(
    webapp_app: App, webapp_chat: Conversation, session: AsyncSession,
    http: httpx.AsyncClient, clock: FixedClock,
) -> None:
    member = await join(webapp_chat, session, ANN)
    day_old = sign_init_data(ANN, clock.now() - timedelta(hours=23, minutes=59))
    page = await http.get("/app/api/pages/card", headers=tma(day_old))
    assert page.status_code == 200
    assert f"{member.code[:4]}-{member.code[4:]}" in page.text


async def test_the_card_shows_standing_and_a_qr_of_the_member_code(
    webapp_app: App, webapp_chat: Conversation, session: AsyncSession,
    http: httpx.AsyncClient, clock: FixedClock,
) -> None:
    member = await join(webapp_chat, session, ANN, first_name="Ann")
    await buy(http, member.code, "w-1", "320.00")
    page = await http.get("/app/api/pages/card", headers=tma(sign_init_data(ANN, clock.now())))
    assert page.status_code == 200
    html = page.text
    assert "Ann" in html and "<svg" in html and 'class="ring"' in html
    assert re.search(r'id="balance">\d', html)
    assert "growth to" in html  # the gap to the next tier


async def test_one_member_never_sees_or_uses_another_members_coupons_or_history(
    webapp_app: App, webapp_chat: Conversation, session: AsyncSession,
    http: httpx.AsyncClient, clock: FixedClock,
) -> None:
    ann = await join(webapp_chat, session, ANN)
    await join(webapp_chat, session, BOB, first_name="Bob")
    await buy(http, ann.code, "ann-1", "900.00")
    as_ann, as_bob = tma(sign_init_data(ANN, clock.now())), tma(sign_init_data(BOB, clock.now()))
    asked = await http.get("/app/api/rewards/five_off/confirmation", headers=as_ann)
    assert asked.status_code == 200
    token = asked.json()["token"]
    # Bob cannot use Ann's confirmation: it is bound to her.
    stolen = await http.post(
        "/app/api/rewards/five_off/redemptions", json={"token": token}, headers=as_bob
    )
    assert stolen.status_code == 409
    done = await http.post(
        "/app/api/rewards/five_off/redemptions", json={"token": token}, headers=as_ann
    )
    assert done.status_code == 201, done.text
    coupon_id = done.json()["coupon_id"]
    await session.rollback()
    code = await session.scalar(select(Coupon.code).where(Coupon.id == coupon_id))
    assert code is not None
    theirs = await http.get(f"/app/api/coupons/{coupon_id}", headers=as_bob)
    assert theirs.status_code == 404
    assert code not in theirs.text and code[:4] not in theirs.text
    bob_coupons = await http.get("/app/api/pages/coupons", headers=as_bob)
    assert code[:4] not in bob_coupons.text
    assert f'data-coupon="{coupon_id}"' not in bob_coupons.text
    bob_history = await http.get("/app/api/points/history?page=0", headers=as_bob)
    ann_history = await http.get("/app/api/points/history?page=0", headers=as_ann)
    assert [line["amount"] for line in ann_history.json()["lines"]][:2] == ["-500", "+900"]
    assert all(line["amount"] not in ("-500", "+900") for line in bob_history.json()["lines"])
    # Bob, with his welcome points only, is refused before any confirmation, in words.
    poor = await http.get("/app/api/rewards/five_off/confirmation", headers=as_bob)
    assert poor.status_code == 409 and poor.json()["error"] == "reward_unaffordable"
    assert "400 more needed" in poor.json()["message"]
    mine = await http.get(f"/app/api/coupons/{coupon_id}", headers=as_ann)
    assert mine.status_code == 200 and "<svg" in mine.json()["qr_svg"]


async def test_redeeming_takes_the_points_once_and_the_coupon_appears(
    webapp_app: App, webapp_chat: Conversation, session: AsyncSession,
    http: httpx.AsyncClient, clock: FixedClock,
) -> None:
    ann = await join(webapp_chat, session, ANN)
    await buy(http, ann.code, "ann-1", "1000.00")
    headers = tma(sign_init_data(ANN, clock.now()))
    before = (await http.get("/app/api/pages/rewards", headers=headers)).text
    balance = int(re.search(r'id="balance">([\d,]+)<', before)[1].replace(",", ""))  # type: ignore[index]
    assert balance >= 1000  # the purchase's points and the welcome bonus
    token = (await http.get("/app/api/rewards/five_off/confirmation", headers=headers)).json()
    assert "500" in token["question"]
    first = await http.post(
        "/app/api/rewards/five_off/redemptions", json={"token": token["token"]}, headers=headers
    )
    assert first.status_code == 201 and first.json()["balance"] == balance - 500
    again = await http.post(
        "/app/api/rewards/five_off/redemptions", json={"token": token["token"]}, headers=headers
    )
    assert again.status_code == 409 and again.json()["error"] == "reward_already_redeemed"
    assert again.json()["message"].startswith("Already done")
    after = (await http.get("/app/api/pages/rewards", headers=headers)).text
    assert f'id="balance">{balance - 500}<' in after
    coupons = (await http.get("/app/api/pages/coupons", headers=headers)).text
    assert "Valid until" in coupons and "five_off" not in coupons


async def test_a_price_changed_after_the_confirmation_asks_again(
    webapp_app: App, webapp_chat: Conversation, session: AsyncSession,
    http: httpx.AsyncClient, clock: FixedClock,
) -> None:
    ann = await join(webapp_chat, session, ANN)
    await buy(http, ann.code, "ann-1", "1000.00")
    headers = tma(sign_init_data(ANN, clock.now()))
    shown = (await http.get("/app/api/rewards/five_off/confirmation", headers=headers)).json()
    async with webapp_app.session_factory() as admin_session:
        await catalog.change_reward(
            admin_session, webapp_app.shop, Actor(1, "admin"), "five_off", "cost", 700
        )
    stale = await http.post(
        "/app/api/rewards/five_off/redemptions", json={"token": shown["token"]}, headers=headers
    )
    assert stale.status_code == 409 and stale.json()["error"] == "reward_changed"
    balance_page = (await http.get("/app/api/pages/rewards", headers=headers)).text
    assert "700" in balance_page
    again = (await http.get("/app/api/rewards/five_off/confirmation", headers=headers)).json()
    assert "700" in again["question"]
    done = await http.post(
        "/app/api/rewards/five_off/redemptions", json={"token": again["token"]}, headers=headers
    )
    assert done.status_code == 201


async def test_the_birthday_is_saved_once(
    webapp_app: App, webapp_chat: Conversation, session: AsyncSession,
    http: httpx.AsyncClient, clock: FixedClock,
) -> None:
    await join(webapp_chat, session, ANN, language_code="zh")
    headers = tma(sign_init_data(ANN, clock.now()))
    saved = await http.post(
        "/app/api/profile/birthday", json={"month": 5, "day": 20, "year": 1990},
        headers=headers,
    )
    assert saved.status_code == 200 and "1990年5月20日" in saved.json()["message"]
    again = await http.post(
        "/app/api/profile/birthday", json={"month": 6, "day": 21}, headers=headers
    )
    assert again.status_code == 409 and again.json()["error"] == "birthday_already_set"
    assert re.search(r"[\u4e00-\u9fff]", again.json()["message"])
    await session.rollback()
    member = await session.scalar(select(Member).where(Member.telegram_id == ANN))
    assert member is not None
    assert (member.birthday_year, member.birthday_month, member.birthday_day) == (1990, 5, 20)
    page = (await http.get("/app/api/pages/profile", headers=headers)).text
    assert "<select" not in page and "1990年5月20日" in page


async def test_the_birthday_picker_takes_month_and_day_as_the_chat_does(
    webapp_app: App, webapp_chat: Conversation, session: AsyncSession,
    http: httpx.AsyncClient, clock: FixedClock,
) -> None:
    """Month and day, the year only if the member gives one; no full date is demanded."""
    await join(webapp_chat, session, ANN)
    headers = tma(sign_init_data(ANN, clock.now()))
    page = (await http.get("/app/api/pages/profile", headers=headers)).text
    assert 'type="date"' not in page
    assert 'id="birthday-month"' in page and 'id="birthday-day"' in page
    assert re.search(r'id="birthday-month" name="month" required', page)
    assert not re.search(r'id="birthday-year"[^>]*required', page)  # the year is optional
    assert '<option value="2">February</option>' in page
    for wrong in (
        {"birthday": "1990-05-20"},  # a full date is no longer the question
        {"month": 2, "day": 30},  # no such day
        {"month": 13, "day": 1},
        {"month": 5, "day": 20, "year": clock.now().year + 1},  # born in the future
        {"month": "5", "day": 20},
    ):
        refused = await http.post("/app/api/profile/birthday", json=wrong, headers=headers)
        assert refused.status_code == 422, (wrong, refused.text)
    saved = await http.post(
        "/app/api/profile/birthday", json={"month": 2, "day": 29}, headers=headers
    )
    assert saved.status_code == 200 and "29 February" in saved.json()["message"]
    await session.rollback()
    member = await session.scalar(select(Member).where(Member.telegram_id == ANN))
    assert member is not None
    assert (member.birthday_year, member.birthday_month, member.birthday_day) == (None, 2, 29)
    again = await http.post(
        "/app/api/profile/birthday", json={"month": 3, "day": 1}, headers=headers
    )
    assert again.status_code == 409 and again.json()["error"] == "birthday_already_set"


async def test_checkin_marketing_and_language_from_the_member_center(
    webapp_app: App, webapp_chat: Conversation, session: AsyncSession,
    http: httpx.AsyncClient, clock: FixedClock,
) -> None:
    await join(webapp_chat, session, ANN)
    headers = tma(sign_init_data(ANN, clock.now()))
    done = await http.post("/app/api/checkin", headers=headers)
    assert done.status_code == 201 and "Checked in" in done.json()["message"]
    twice = await http.post("/app/api/checkin", headers=headers)
    assert twice.status_code == 409 and twice.json()["error"] == "already_checked_in"
    page = (await http.get("/app/api/pages/checkin", headers=headers)).text
    assert 'class="done today"' in page and "Checked in today" in page
    off = await http.post("/app/api/profile/marketing", json={"on": False}, headers=headers)
    assert off.status_code == 200
    zh = await http.post("/app/api/profile/language", json={"language": "zh"}, headers=headers)
    assert zh.status_code == 200 and "中文" in zh.json()["message"]
    await session.rollback()
    member = await session.scalar(select(Member).where(Member.telegram_id == ANN))
    assert member is not None and member.language == "zh" and member.marketing_opt_in is False
    card = (await http.get("/app/api/pages/card", headers=headers)).text
    assert "会员码" in card


async def test_someone_who_has_not_joined_is_told_how_to_join(
    webapp_app: App, http: httpx.AsyncClient, clock: FixedClock
) -> None:
    headers = tma(sign_init_data(7777, clock.now()))
    page = await http.get("/app/api/pages/card", headers=headers)
    assert page.status_code == 200 and "/start" in page.text
    act = await http.post("/app/api/checkin", headers=headers)
    assert act.status_code == 404


async def test_the_dashboard_is_for_admins_only(
    webapp_app: App, webapp_chat: Conversation, session: AsyncSession,
    http: httpx.AsyncClient, clock: FixedClock,
) -> None:
    await join(webapp_chat, session, ANN)
    member = tma(sign_init_data(ANN, clock.now()))
    admin = tma(sign_init_data(ADMIN_ID, clock.now()))
    for path in ("/app/api/admin/page", "/app/api/admin/charts/revenue?format=png"):
        refused = await http.get(path, headers=member)
        assert refused.status_code == 403 and "Member" not in refused.text
    page = await http.get("/app/api/admin/page?period=3m", headers=admin)
    assert page.status_code == 200
    assert "red line" in page.text and 'data-chart="/app/api/admin/charts/pyramid' in page.text
    svg = await http.get("/app/api/admin/charts/pyramid?format=svg", headers=admin)
    assert svg.headers["content-type"] == "image/svg+xml" and b"<svg" in svg.content[:500]
    png = await http.get("/app/api/admin/charts/points?format=png", headers=admin)
    assert png.content.startswith(b"\x89PNG")


async def test_the_dashboard_shows_the_campaign_reports_to_admins_only(
    webapp_app: App, webapp_chat: Conversation, session: AsyncSession,
    http: httpx.AsyncClient, clock: FixedClock,
) -> None:
    """An A/B campaign (A: bonus points, B: a coupon) and an NPS survey, sent by the sender:
    the dashboard's campaigns view counts what the database keeps, as /campaigns does."""
    from bot.scheduler import start_campaigns
    from domain import campaigns

    people = [await join(webapp_chat, session, user) for user in (ANN, BOB, 5103, 5104)]
    await session.execute(
        update(Member).where(Member.telegram_id == 5104).values(marketing_opt_in=False)
    )
    await session.commit()
    admin = Actor(ADMIN_ID, "admin")
    split = campaigns.CampaignSpec(variants=[
        campaigns.Variant(texts={"*": "Spring A"},
                          offers={"*": campaigns.Offer(points=40)}),
        campaigns.Variant(texts={"*": "Spring B"}, offers={"*": campaigns.Offer(
            coupon=campaigns.CouponOffer(kind="amount_off", value=1000))}),
    ])
    survey = campaigns.CampaignSpec(kind="survey", variants=[campaigns.Variant()])
    ids = []
    for spec in (split, survey):
        campaign_id = await campaigns.save_draft(session, webapp_app.shop, admin, spec)
        await campaigns.confirm(session, webapp_app.shop, admin, campaign_id)
        ids.append(campaign_id)
    started = await start_campaigns(
        webapp_app.session_factory, webapp_app.shop, webapp_app.sender.signal
    )
    assert sorted(started) == sorted(ids)
    await webapp_app.sender.deliver_pending()
    for member, score in zip(people[:3], (10, 9, 3), strict=True):
        assert await campaigns.answer_nps(session, webapp_app.shop, member.id, ids[1], score)
    expected = await campaigns.report(session, webapp_app.shop, ids[0])
    assert expected.ab is not None
    assert (expected.reached, expected.sent, expected.skipped) == (4, 3, 1)

    member = tma(sign_init_data(ANN, clock.now()))
    refused = await http.get("/app/api/admin/campaigns", headers=member)
    assert refused.status_code == 403 and "Spring" not in refused.text
    as_admin = tma(sign_init_data(ADMIN_ID, clock.now()))
    answer = await http.get("/app/api/admin/campaigns", headers=as_admin)
    assert answer.status_code == 200
    html = answer.text
    section = html[html.index(f'id="campaign-{ids[0]}"'):]
    section = section[:section.index("</section>")]
    figures = dict(re.findall(r'data-figure="(\w+)">([^<]*)<', section))
    assert figures["reached"] == "4" and figures["sent"] == "3" and figures["skipped"] == "1"
    assert figures["blocked"] == "0" and figures["failed"] == "0"
    assert figures["points"] == f"{40 * expected.ab.a.delivered:,}"
    assert figures["coupons"] == str(expected.ab.b.delivered)
    assert figures["revenue"].endswith("0.00")
    assert "<th>A</th><th>B</th>" in section and "Not enough data yet" in section
    rows = re.findall(r"<tr><th>Sent</th><td>(\d+)</td><td>(\d+)</td></tr>", section)
    assert rows == [(str(expected.ab.a.delivered), str(expected.ab.b.delivered))]
    nps = html[html.index(f'id="campaign-{ids[1]}"'):]
    nps = nps[:nps.index("</section>")]
    # 2 promoters of 3 (67%) less 1 detractor (33%): NPS 33; the 3, 9 and 10 in their columns
    assert 'data-figure="nps">33</b> from 3 answers: 2 promoters, 1 detractor' in nps
    assert "<td>0</td><td>0</td><td>0</td><td>1</td>" in nps  # scores 0..3
    assert nps.count("<td>1</td>") == 3

    # An admin whose Telegram speaks Chinese (not a member: the init data's language).
    zh_admin = tma(sign_init_data(ADMIN_ID, clock.now(), language_code="zh"))
    zh = (await http.get("/app/api/admin/campaigns", headers=zh_admin)).text
    assert "覆盖会员" in zh and "数据尚不足" in zh and "净推荐值" in zh
    words = re.sub(r"<[^>]+>|“[^”]*”|/campaigns?|\bNPS\b", " ", zh)
    assert not re.findall(r"[A-Za-z]{2,}", words)


def test_the_ab_verdict_reads_in_both_languages(webapp_app: App) -> None:
    from domain import campaigns

    spec = campaigns.CampaignSpec(variants=[campaigns.Variant(texts={"*": "A"}),
                                            campaigns.Variant(texts={"*": "B"})])
    a = campaigns.VariantFigures("A", 400, 400, 40)
    report = campaigns.CampaignReport(
        id=7, kind="message", state="running", spec=spec, start_at=None, started_at=None,
        reached=800, pending=0, sent=800, skipped=0, failed=0, blocked=0, coupons=800,
        coupons_used=120, points=0, revenue=1_234_500, nps=None,
        ab=campaigns.two_proportion_test(a, campaigns.VariantFigures("B", 400, 400, 80)),
    )
    assert report.ab is not None and report.ab.significant
    words = {"en": ("larger than chance", "10%", "20%", "¥12,345.00"),
             "zh": ("差异显著", "10%", "20%", "¥12,345.00")}
    for lang, expected in words.items():
        html = webapp_app.texts.render(
            lang, "webapp/campaigns", page="campaigns", admin=True, reports=[report],
            tz=webapp_app.shop.tz, min_sample=30, min_expected=5, days=14,
        )
        assert all(w in html for w in expected), (lang, html)
        assert 'class="verdict significant"' in html


async def test_the_mini_app_limits_bodies_and_checks_init_data_before_reading_them(
    webapp_app: App, webapp_chat: Conversation, session: AsyncSession,
    http: httpx.AsyncClient, clock: FixedClock,
) -> None:
    await join(webapp_chat, session, ANN)
    big = b'{"on": true, "x": "' + b"a" * 20_000 + b'"}'
    anonymous = await http.post("/app/api/profile/marketing", content=big)
    assert anonymous.status_code == 401
    headers = {**tma(sign_init_data(ANN, clock.now())), "Content-Type": "application/json"}
    too_big = await http.post("/app/api/profile/marketing", content=big, headers=headers)
    assert too_big.status_code == 413


async def test_the_rotating_card_code_works_at_the_till_for_a_minute(
    settings: Settings, clock: FixedClock, program: Program, fake_telegram: FakeTelegram,
    session: AsyncSession,
) -> None:
    app = await start_app(settings, clock, program, fake_telegram, webapp_rotating_code=True)
    try:
        chat = Conversation(app, fake_telegram)
        member = await join(chat, session, ANN)
        transport = httpx.ASGITransport(app=app.http)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            headers = tma(sign_init_data(ANN, clock.now()))
            card = (await client.get("/app/api/pages/card", headers=headers)).text
            issued = (await client.get("/app/api/card/code", headers=headers)).json()
            code = issued["code"]
            assert code.startswith("R") and member.code in code and "<svg" in issued["qr_svg"]
            assert member.code not in re.sub(r"<svg.*?</svg>", "", card, flags=re.S).replace(
                f"{member.code[:4]}-{member.code[4:]}", ""
            )
            till = {"Authorization": f"Bearer {POS_TOKEN}"}
            found = await client.get(f"/api/v1/members/{code}", headers=till)
            assert found.status_code == 200 and found.json()["code"] == member.code
            order = await client.post(
                "/api/v1/orders", json={"order_id": "r-1", "member": code, "amount": "50.00"},
                headers=till,
            )
            assert order.status_code == 201 and order.json()["member_code"] == member.code
            forged = code[:-1] + ("0" if code[-1] != "0" else "1")
            refused = await client.get(f"/api/v1/members/{forged}", headers=till)
            assert refused.status_code == 409 and refused.json()["error"] == "card_code_refused"
            clock.advance(seconds=61)
            late = await client.get(f"/api/v1/members/{code}", headers=till)
            assert late.status_code == 409 and late.json()["error"] == "card_code_refused"
    finally:
        await app.close()


async def test_the_rotating_card_code_reports_a_behaviour_at_the_till(
    settings: Settings, clock: FixedClock, program: Program, fake_telegram: FakeTelegram,
    session: AsyncSession,
) -> None:
    """/api/v1/members/{code}/events takes the card's code like lookup and orders do; a retry
    of the same event after the code ran out is the stored answer, a new event is refused."""
    app = await start_app(settings, clock, program, fake_telegram, webapp_rotating_code=True)
    try:
        member = await join(Conversation(app, fake_telegram), session, ANN)
        transport = httpx.ASGITransport(app=app.http)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            issued = await client.get(
                "/app/api/card/code", headers=tma(sign_init_data(ANN, clock.now()))
            )
            code = issued.json()["code"]
            till = {"Authorization": f"Bearer {POS_TOKEN}"}
            review = {"event_id": "rv-1", "kind": "review"}
            done = await client.post(f"/api/v1/members/{code}/events", json=review, headers=till)
            assert done.status_code == 201, done.text
            receipt = done.json()
            assert receipt["member_code"] == member.code
            assert receipt["points_earned"] == program.points.review > 0
            forged = code[:-1] + ("0" if code[-1] != "0" else "1")
            refused = await client.post(
                f"/api/v1/members/{forged}/events", json={"event_id": "rv-2", "kind": "share"},
                headers=till,
            )
            assert refused.status_code == 409 and refused.json()["error"] == "card_code_refused"
            clock.advance(seconds=61)
            retry = await client.post(f"/api/v1/members/{code}/events", json=review, headers=till)
            assert retry.status_code == 201 and retry.json() == receipt
            assert retry.headers.get("Idempotent-Replayed") == "true"
            late = await client.post(
                f"/api/v1/members/{code}/events", json={"event_id": "rv-3", "kind": "share"},
                headers=till,
            )
            assert late.status_code == 409 and late.json()["error"] == "card_code_refused"
        await session.rollback()
        balance = await session.scalar(
            select(Member.points_balance).where(Member.telegram_id == ANN)
        )
        assert balance == program.points.signup + program.points.review  # one review, once
    finally:
        await app.close()


async def test_with_webapp_url_the_chat_offers_the_member_center(
    webapp_app: App, webapp_chat: Conversation, fake_telegram: FakeTelegram,
    session: AsyncSession,
) -> None:
    menu = fake_telegram.calls_of("setChatMenuButton")
    assert menu and menu[-1].params["menu_button"]["web_app"]["url"] == WEBAPP_URL
    await join(webapp_chat, session, ANN)
    for command, page in (("/card", "card"), ("/points", "points"), ("/rewards", "rewards")):
        fake_telegram.clear()
        await webapp_chat.send(message_update(ANN, command))
        sent = [c for c in fake_telegram.calls if c.method in ("sendMessage", "sendPhoto")]
        rows = sent[-1].params["reply_markup"]["inline_keyboard"]
        opened = [b for row in rows for b in row if "web_app" in b]
        assert opened and opened[0]["web_app"]["url"] == f"{WEBAPP_URL}/{page}", command
        assert opened[0]["text"] == "📱 Open member center"


async def test_each_members_menu_button_opens_the_member_center_in_their_language(
    webapp_app: App, webapp_chat: Conversation, fake_telegram: FakeTelegram,
    session: AsyncSession, http: httpx.AsyncClient, clock: FixedClock,
) -> None:
    def buttons_of(user: int) -> list[tuple[str, str]]:
        return [
            (c.params["menu_button"]["text"], c.params["menu_button"]["web_app"]["url"])
            for c in fake_telegram.calls_of("setChatMenuButton")
            if str(c.params.get("chat_id")) == str(user)
        ]

    await join(webapp_chat, session, ANN)
    await join(webapp_chat, session, BOB, first_name="Bob", language_code="zh")
    assert buttons_of(ANN) == [("Member center", WEBAPP_URL)]
    assert buttons_of(BOB) == [("会员中心", WEBAPP_URL)]
    # Joined by writing first (no /start): the same.
    await webapp_chat.send(message_update(5103, "hello", language_code="zh"))
    assert buttons_of(5103) == [("会员中心", WEBAPP_URL)]
    # A language change in the chat, then in the member center.
    await webapp_chat.send(fake_telegram.press(ANN, LanguageChoice(language="zh").pack()))
    assert buttons_of(ANN)[-1] == ("会员中心", WEBAPP_URL)
    changed = await http.post(
        "/app/api/profile/language", json={"language": "en"},
        headers=tma(sign_init_data(ANN, clock.now())),
    )
    assert changed.status_code == 200
    assert buttons_of(ANN)[-1] == ("Member center", WEBAPP_URL)
    # Telegram refusing it (the member blocked the bot) is no one's problem: the reply stands.
    fake_telegram.fail_next(
        "setChatMenuButton", 403, "Forbidden: bot was blocked by the user", times=2, chat_id=BOB,
    )
    fake_telegram.clear()
    await webapp_chat.send(message_update(BOB, "/start", language_code="zh"))
    assert fake_telegram.calls_of("setChatMenuButton")  # asked, and refused
    welcome = [c for c in fake_telegram.calls if c.method == "sendMessage"]
    assert welcome and str(welcome[-1].params["chat_id"]) == str(BOB)
    changed = await http.post(
        "/app/api/profile/language", json={"language": "en"},
        headers=tma(sign_init_data(BOB, clock.now())),
    )
    assert changed.status_code == 200


async def test_without_webapp_url_the_chat_is_as_before(
    app: App, chat: Conversation, fake_telegram: FakeTelegram, session: AsyncSession,
) -> None:
    assert not fake_telegram.calls_of("setChatMenuButton")
    await join(chat, session, ANN)
    for command in ("/card", "/points", "/rewards"):
        fake_telegram.clear()
        await chat.send(message_update(ANN, command))
        sent = [c for c in fake_telegram.calls if c.method in ("sendMessage", "sendPhoto")]
        markup = sent[-1].params.get("reply_markup") or {"inline_keyboard": []}
        assert all("web_app" not in b for row in markup["inline_keyboard"] for b in row)
    transport = httpx.ASGITransport(app=app.http)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/app/card")).status_code == 404
        assert (await client.get("/app/api/pages/card")).status_code == 404


@pytest.mark.parametrize("value", ["http://shop.example/app", "shop.example/app"])
def test_webapp_url_must_be_https(value: str) -> None:
    from bot.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="WEBAPP_URL"):
        load_settings(_env_file=None, webapp_url=value)


async def test_the_mini_app_api_keeps_its_contract(
    webapp_app: App, webapp_chat: Conversation, session: AsyncSession, clock: FixedClock,
) -> None:
    """schemathesis over the /app/api operations of the OpenAPI document, as a genuine member
    (every check and phase; the till API's own run is tests/test_api_contract.py)."""
    import asyncio
    import os

    from bot.http import EmbeddedServer, server_config
    from tests.test_api_contract import _free_port

    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        pytest.skip("schemathesis is in the test extras")
    member = await join(webapp_chat, session, 8181, first_name="Contract")
    await buy_through(webapp_app, member.code)
    port = _free_port()
    server = EmbeddedServer(server_config(webapp_app.http, "127.0.0.1", port))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        init_data = sign_init_data(8181, clock.now())
        process = await asyncio.create_subprocess_exec(
            st, "--config-file", str(ROOT / "tests" / "schemathesis.toml"), "--no-color", "run",
            f"http://127.0.0.1:{port}/api/v1/openapi.json", "--include-path-regex", "^/app/api/",
            # No OpenAPI links join these operations: the stateful phase has nothing to follow.
            "--phases", "examples,coverage,fuzzing",
            "--header", f"Authorization: tma {init_data}",
            "--max-examples", "20", "--workers", "1", "--seed", "20261201",
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 600)
    finally:
        server.should_exit = True
        await serving
    report = out.decode()
    assert process.returncode == 0, report[-6000:]
    operations = sum(1 for p in webapp_app.http.openapi()["paths"].values() for _ in p if _)
    assert f"Tested: {operations - 5}" in report, report[-3000:]  # all but the till's five
    for phase in ("Examples", "Coverage", "Fuzzing"):
        assert f"✅ {phase}" in report, report[-3000:]


async def buy_through(app: App, member_code: str) -> None:
    transport = httpx.ASGITransport(app=app.http)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await buy(client, member_code, "contract-1", "5000.00")
