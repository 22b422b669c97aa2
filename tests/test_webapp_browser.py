"""The member center in a real browser (Debian's chromium driven by Playwright), at a phone's
390x844: what a member sees. Telegram's script is replaced by a stand-in that carries init
data signed with the test bot token; nothing leaves the machine. Screenshots of every page in
both languages land in artifacts/screenshots/ (git-ignored) for people to look at."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import App
from bot.http import EmbeddedServer, server_config
from domain.clock import FixedClock
from domain.models import Coupon, Member
from tests.conftest import ADMIN_ID, Conversation
from tests.webapp_support import buy, join, sign_init_data, webapp_app, webapp_chat

__all__ = ["webapp_app", "webapp_chat"]  # fixtures

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
PHONE = {"width": 390, "height": 844}
TELEGRAM_SCRIPT = "https://telegram.org/js/telegram-web-app.js"
MEMBER_PAGES = ("card", "points", "rewards", "coupons", "checkin", "profile", "invite")
ANN, LI = 6101, 6102
DARK = {"bg_color": "#17212b", "text_color": "#f5f5f5", "hint_color": "#708499",
        "button_color": "#5288c1", "button_text_color": "#ffffff",
        "secondary_bg_color": "#232e3c"}

if CHROMIUM is None:
    pytestmark = [pytest.mark.browser, pytest.mark.skip(
        reason="no chromium at /usr/bin/chromium: `apt-get install chromium` (.ci/run does)"
    )]

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is a test extra")
zxingcpp = pytest.importorskip("zxingcpp", reason="zxing-cpp is a test extra")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stand_in(init_data: str, scheme: str, theme: dict[str, str]) -> str:
    """What telegram-web-app.js gives a page, as far as the member center uses it."""
    return (
        "window.Telegram = {WebApp: {"
        f"initData: {json.dumps(init_data)}, colorScheme: {json.dumps(scheme)}, "
        f"themeParams: {json.dumps(theme)}, "
        "ready: function () {}, expand: function () {}, onEvent: function () {}, "
        "openTelegramLink: function (url) { window.sharedLink = url; }"
        "}};"
    )


@dataclass
class Site:
    app: App
    base: str
    browser: Any
    clock: FixedClock

    async def open(
        self, user_id: int, page: str = "card", *, lang: str = "en", scheme: str = "light",
        theme: dict[str, str] | None = None, init_data: str | None = None,
    ) -> Any:
        data = init_data if init_data is not None else sign_init_data(user_id, self.clock.now())
        context = await self.browser.new_context(
            viewport=PHONE, device_scale_factor=2, locale="zh-CN" if lang == "zh" else "en-US",
        )
        script = _stand_in(data, scheme, theme or {})

        async def route(request_route: Any) -> None:
            url = request_route.request.url
            if url == TELEGRAM_SCRIPT:
                await request_route.fulfill(
                    status=200, content_type="application/javascript", body=script
                )
            elif url.startswith(self.base):
                await request_route.continue_()
            else:  # nothing leaves the machine
                await request_route.abort()

        await context.route("**/*", route)
        tab = await context.new_page()
        await tab.goto(f"{self.base}/app/{page}")
        if init_data is None:
            await tab.wait_for_selector(".tabs")
        return tab


@pytest.fixture
async def site(webapp_app: App, clock: FixedClock) -> AsyncIterator[Site]:
    port = _free_port()
    server = EmbeddedServer(server_config(webapp_app.http, "127.0.0.1", port))
    serving = asyncio.create_task(server.serve())
    async with playwright_api.async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            while not server.started:
                await asyncio.sleep(0.05)
            yield Site(webapp_app, f"http://127.0.0.1:{port}", browser, clock)
        finally:
            await browser.close()
            server.should_exit = True
            await serving


@pytest.fixture
async def till(webapp_app: App) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=webapp_app.http)
    async with httpx.AsyncClient(transport=transport, base_url="http://till.test") as client:
        yield client


def _decode(png: bytes) -> list[str]:
    from PIL import Image

    return [found.text for found in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))]


async def _shoot(tab: Any, name: str) -> bytes:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    png: bytes = await tab.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    return png


async def _go(tab: Any, page: str) -> None:
    """A tab of the member center, as a member taps it."""
    await tab.click(f'.tabs [data-nav="{page}"]')
    await tab.wait_for_selector(f'.tabs [data-nav="{page}"].on')


async def test_the_card_qr_reads_as_the_member_code(
    site: Site, webapp_chat: Conversation, session: AsyncSession, till: httpx.AsyncClient,
) -> None:
    ann = await join(webapp_chat, session, ANN, first_name="Ann")
    await buy(till, ann.code, "b-1", "260.00")
    tab = await site.open(ANN)
    assert await tab.locator("h1").first.inner_text() == "Ann"
    qr = await tab.locator("#card-qr svg").screenshot()
    assert _decode(qr) == [ann.code]
    box = await tab.locator("#card-qr svg").bounding_box()
    assert box is not None and box["width"] >= 250  # large enough to scan from a screen
    assert re.fullmatch(r"[\d,]+", await tab.locator("#balance").inner_text())


async def test_every_page_in_both_languages_and_chinese_pages_have_no_english(
    site: Site, webapp_chat: Conversation, session: AsyncSession, till: httpx.AsyncClient,
) -> None:
    ann = await join(webapp_chat, session, ANN, first_name="Ann")
    li = await join(webapp_chat, session, LI, first_name="李雷", language_code="zh")
    for member, order in ((ann, "en-1"), (li, "zh-1")):
        await buy(till, member.code, order, "880.00")
    for user, lang in ((ANN, "en"), (LI, "zh")):
        tab = await site.open(user, lang=lang)
        for page in MEMBER_PAGES:
            await _go(tab, page)
            await _shoot(tab, f"{lang}-{page}")
            if lang == "zh":
                # Codes and links are for scanning and typing, not words; PLUS is a brand.
                text = await tab.evaluate(
                    """() => { const main = document.getElementById('content').cloneNode(true);
                    main.querySelectorAll('.code-text, .brand, dialog').forEach(e => e.remove());
                    return main.innerText; }"""
                )
                english = re.findall(r"[A-Za-z]{2,}", text)
                assert not english, (page, english)
        await tab.context.close()


async def test_the_admin_dashboard_in_both_languages(
    site: Site, webapp_chat: Conversation, session: AsyncSession
) -> None:
    await join(webapp_chat, session, ADMIN_ID, first_name="Boss")
    for lang in ("en", "zh"):
        tab = await site.open(ADMIN_ID, "admin", lang=lang)
        await tab.wait_for_function(
            "() => [...document.querySelectorAll('img.chart')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        assert await tab.locator("img.chart").count() == 4
        assert await tab.locator(".redline").count() == 1
        await tab.click('[data-period="12m"]')
        await tab.wait_for_selector('[data-period="12m"]:not(.secondary)')
        await _shoot(tab, f"{lang}-admin")
        # The campaigns' reports are the dashboard's other view.
        await tab.click('[data-view="campaigns"]')
        await tab.wait_for_selector('[data-view="campaigns"]:not(.secondary)')
        assert tab.url.endswith("/app/campaigns")
        assert await tab.locator('.tabs [data-nav="admin"].on').count() == 1
        await _shoot(tab, f"{lang}-admin-campaigns")
        await tab.click('[data-view="figures"]')
        await tab.wait_for_selector(".redline")
        if lang == "en":
            # The admin reads Chinese from now on (the profile's language, as in the chat).
            await _go(tab, "profile")
            await tab.click('[data-language="zh"]')
            await tab.wait_for_selector('[data-language="zh"][aria-pressed="true"]')
        await tab.context.close()


async def test_redeeming_lowers_the_balance_and_the_coupon_opens_as_its_qr(
    site: Site, webapp_chat: Conversation, session: AsyncSession, till: httpx.AsyncClient,
) -> None:
    ann = await join(webapp_chat, session, ANN)
    await buy(till, ann.code, "r-1", "700.00")
    tab = await site.open(ANN, "rewards")
    before = int((await tab.locator("#balance").inner_text()).replace(",", ""))
    await tab.click('[data-redeem="five_off"]')
    await tab.wait_for_selector("#confirm[open]")
    assert "500" in await tab.locator("#confirm .question").inner_text()
    await tab.click("#confirm [data-confirm]")
    await tab.wait_for_selector("#coupon-qr[open] svg")
    await session.rollback()
    code = await session.scalar(
        select(Coupon.code).join(Member, Member.id == Coupon.member_id)
        .where(Member.telegram_id == ANN, Coupon.source == "reward:five_off")
    )
    assert code is not None
    assert _decode(await tab.locator("#coupon-qr .qr svg").screenshot()) == [code]
    await _shoot(tab, "en-coupon-qr")
    await tab.click("#coupon-qr [data-close]")
    assert await tab.locator(".coupons [data-coupon]").count() >= 1
    await _go(tab, "rewards")
    after = int((await tab.locator("#balance").inner_text()).replace(",", ""))
    assert after == before - 500


async def test_the_birthday_picker_saves_once(
    site: Site, webapp_chat: Conversation, session: AsyncSession
) -> None:
    await join(webapp_chat, session, ANN)
    tab = await site.open(ANN, "profile")
    # Month and day, as in the chat: February offers its 29th unless a common year is chosen.
    await tab.select_option("#birthday-month", "2")
    assert await tab.locator('#birthday-day option[value="29"]').is_enabled()
    assert not await tab.locator('#birthday-day option[value="30"]').is_enabled()
    await tab.select_option("#birthday-year", "1990")
    assert not await tab.locator('#birthday-day option[value="29"]').is_enabled()
    await tab.select_option("#birthday-year", "")
    await tab.select_option("#birthday-month", "5")
    await tab.select_option("#birthday-day", "20")
    await _shoot(tab, "en-profile-birthday-picker")
    await tab.click("#birthday-form button")
    await tab.wait_for_selector("#birthday-saved")
    assert await tab.locator("#birthday-saved").inner_text() == "20 May"
    assert await tab.locator("#birthday-month").count() == 0  # no picker once it is set
    # Even a crafted second call from the page is refused, in the member's words.
    answer = await tab.evaluate(
        """async () => { const r = await fetch('/app/api/profile/birthday', {method: 'POST',
        headers: {'Authorization': 'tma ' + Telegram.WebApp.initData,
                  'Content-Type': 'application/json'},
        body: JSON.stringify({month: 1, day: 2})});
        return [r.status, (await r.json()).error]; }"""
    )
    assert answer == [409, "birthday_already_set"]
    await session.rollback()
    member = await session.scalar(select(Member).where(Member.telegram_id == ANN))
    assert member is not None
    assert (member.birthday_year, member.birthday_month, member.birthday_day) == (None, 5, 20)


async def test_the_dark_theme_applies(
    site: Site, webapp_chat: Conversation, session: AsyncSession
) -> None:
    await join(webapp_chat, session, ANN)
    tab = await site.open(ANN, "points", scheme="dark", theme=DARK)
    assert await tab.evaluate("document.documentElement.dataset.theme") == "dark"
    background = await tab.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(23, 33, 43)"
    panel = await tab.evaluate(
        "getComputedStyle(document.querySelector('.panel')).backgroundColor"
    )
    assert panel == "rgb(35, 46, 60)"
    await _shoot(tab, "en-points-dark")


async def test_the_history_scrolls_on(
    site: Site, webapp_chat: Conversation, session: AsyncSession, till: httpx.AsyncClient,
) -> None:
    ann = await join(webapp_chat, session, ANN)
    for n in range(20):
        await buy(till, ann.code, f"h-{n}", f"{10 + n}.00")
    tab = await site.open(ANN, "points")
    assert await tab.locator("#history li").count() == 15
    await tab.locator("#more").scroll_into_view_if_needed()
    await tab.wait_for_function("document.querySelectorAll('#history li').length > 15")
    assert await tab.locator("#history li").count() == 21  # 20 purchases and the welcome
    assert await tab.locator("#more").count() == 0


async def test_without_genuine_init_data_the_page_shows_nothing_of_the_member(
    site: Site, webapp_chat: Conversation, session: AsyncSession
) -> None:
    ann = await join(webapp_chat, session, ANN, first_name="Ann")
    forged = sign_init_data(ANN, site.clock.now(), token="123456789:SOMEONE-else-s-bot-token")
    for init_data in ("", forged):
        tab = await site.open(ANN, init_data=init_data)
        await tab.wait_for_selector("#outside:not([hidden])")
        body = await tab.inner_text("body")
        assert "Ann" not in body and ann.code[:4] not in body
        assert "open the member center from our bot" in body
        await tab.context.close()
