"""The Mini App: the member center (and the shop's dashboard, ``webapp_admin``) as a web page
Telegram opens inside the chat.

Another door onto the same use cases as the chat. ``/app/<page>`` is a shell with no member
content; its script reads ``Telegram.WebApp.initData`` and asks ``/app/api/pages/<page>`` for
the page, which the server renders (Jinja, in the member's language) only after checking the
init data (``webapp_auth``). Actions are JSON calls under ``/app/api``, validated like the
till API and described in the same OpenAPI document. A domain refusal answers in the member's
language, worded by the same ``errors/<code>`` template the chat uses.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from jinja2 import TemplateNotFound
from markupsafe import Markup
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool
from sqlalchemy.ext.asyncio import AsyncSession

from domain import card_code, checkin, coupons, members, plus, points, referrals, rewards
from domain import profile as profiles
from domain.errors import DomainError, MemberNotFound
from domain.growth import GrowthTotal
from domain.members import DELETED
from domain.models import Member
from domain.shop import Shop
from domain.tiers import TierProgress
from handlers.api import SessionDep, ShopDep, _whole_number
from handlers.media import qr_svg
from handlers.texts import LANGUAGES, Texts
from handlers.webapp_auth import WebAppConfig, verified_user

Page = Literal["card", "points", "rewards", "coupons", "checkin", "profile", "invite"]
ShellPage = Literal[
    "card", "points", "rewards", "coupons", "checkin", "profile", "invite", "admin",
    "campaigns",
]
PAGES: tuple[str, ...] = get_args(Page)
RewardKey = Annotated[
    str, Path(pattern=r"^[a-z][a-z0-9_]{0,24}$", examples=["five_off"], description="a reward")
]
# A page is HTML; its refusals are JSON like every other answer here.
HTML_PAGE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {"schema": {"type": "string"}}}, "description": "the page"}
}
HISTORY_PER_PAGE = 15
STATIC_FOLDER = "static"
STATUS_BY_CODE = {
    "member_not_found": 404,
    "reward_not_found": 404,
    "coupon_not_found": 404,
    "member_frozen": 403,
    "invalid_birthday": 422,
}

_init_data = APIKeyHeader(
    name="Authorization", auto_error=False, scheme_name="TelegramInitData",
    description="`tma <initData>`: the init data Telegram gives the Mini App, signed with the "
    "bot token, at most WEBAPP_INIT_MAX_AGE old (24 h by default)",
)


class WebAppError(BaseModel):
    error: str = Field(description="machine-readable error code")
    message: str = Field(description="the refusal in the member's language (HTML)")


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": WebAppError, "description": "missing, forged, tampered or expired init data"},
    403: {"model": WebAppError, "description": "the member is frozen, or not an admin"},
    404: {"model": WebAppError, "description": "not a member (yet), or no such reward or coupon"},
    409: {"model": WebAppError, "description": "the shop's state refuses it (points, stock...)"},
    413: {"model": WebAppError, "description": "the body is over 16 KiB"},
    422: {"model": WebAppError, "description": "a field is wrong"},
}


class Unauthenticated(Exception):
    """No genuine, fresh init data: one answer for every reason."""


def unauthenticated_body() -> dict[str, str]:
    return {"error": "unauthorized", "message": "valid Telegram init data is required"}


@dataclass(frozen=True)
class Caller:
    """The member behind a request (None: a Telegram user who has not joined) and whether
    they are one of the shop's admins."""

    telegram_id: int
    member: Member | None
    growth: GrowthTotal | None
    lang: str
    admin: bool

    def require_member(self) -> Member:
        if self.member is None:
            raise MemberNotFound(query="")
        return self.member


def _config(request: Request) -> WebAppConfig:
    config: WebAppConfig = request.app.state.webapp
    return config


ConfigDep = Annotated[WebAppConfig, Depends(_config)]


async def _caller(
    request: Request, session: SessionDep, shop: ShopDep, config: ConfigDep,
    authorization: Annotated[str | None, Depends(_init_data)],
) -> Caller:
    user = verified_user(config, authorization, shop.now())
    if user is None:
        raise Unauthenticated()
    standing = await members.standing_by_telegram_id(session, shop, user.id)
    member = standing.member if standing is not None else None
    if member is not None and member.status == DELETED:
        member = None
    lang = member.language if member is not None else members.language_for(user.language_code)
    request.state.lang = lang  # the refusals below are worded in it
    return Caller(
        telegram_id=user.id, member=member, growth=standing.growth if standing else None,
        lang=lang if lang in LANGUAGES else "en", admin=user.id in config.admin_ids,
    )


CallerDep = Annotated[Caller, Depends(_caller)]


class MemberWords(APIRoute):
    """A route whose domain refusals answer in the member's language, not the till's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def worded(request: Request) -> Response:
            try:
                return await handle(request)
            except DomainError as error:
                return refusal(request, error)

        return worded


def refusal(request: Request, error: DomainError) -> JSONResponse:
    texts = _config(request).texts
    lang = getattr(request.state, "lang", "en")
    context = {**error.details, "reason": error.reason, "details": error.details, "staff": False}
    try:
        message = texts.render(lang, f"errors/{error.code}", **context)
    except TemplateNotFound:
        message = texts.render(lang, "errors/error")
    status = STATUS_BY_CODE.get(error.code, 409)
    return JSONResponse({"error": error.code, "message": message}, status_code=status)


# ------------------------------------------------------------------ what the pages show


@dataclass(frozen=True)
class Ring:
    """The tier progress ring: the share of the way from this tier to the next."""

    share: float

    RADIUS = 52

    @property
    def circumference(self) -> float:
        return round(2 * math.pi * self.RADIUS, 2)

    @property
    def dash(self) -> float:
        return round(self.circumference * self.share, 2)

    @property
    def percent(self) -> int:
        return round(self.share * 100)


def ring_of(progress: TierProgress) -> Ring:
    if progress.next_tier is None:
        return Ring(1.0)
    span = progress.next_tier.threshold - progress.tier.threshold
    done = progress.growth - progress.tier.threshold
    return Ring(min(max(done / span, 0.0), 1.0) if span > 0 else 1.0)


def share_url(texts: Texts, lang: str, shop: Shop, link: str) -> str:
    text = texts.render(lang, "invite/share_text", program=shop.program)
    return "https://t.me/share/url?" + urlencode({"url": link, "text": text})


async def _qr(data: str) -> Markup:
    svg = await asyncio.to_thread(qr_svg, data)  # CPU work: off the event loop
    return Markup(svg)  # noqa: S704 - segno's own SVG, no outside text in it


def _card_code(config: WebAppConfig, shop: Shop, member: Member) -> str:
    return card_code.issue(shop, member.code).code if config.rotating_code else member.code


async def page_context(
    page: str, caller: Caller, session: AsyncSession, shop: Shop, config: WebAppConfig
) -> dict[str, Any]:
    """What the page's template needs: the same use cases as the chat's doors."""
    member = caller.require_member()
    if page == "card":
        view = await members.member_card(session, shop, member, caller.growth)
        return {
            "card": view, "qr": await _qr(_card_code(config, shop, member)),
            "rotating": config.rotating_code, "ring": ring_of(view.progress),
            "tier_index": shop.program.tier_index(member.tier),
            "plus": plus.is_active(member.plus_state, member.plus_until, shop.now()),
        }
    if page == "points":
        seen = await points.overview(session, shop, member.id, page=0, per_page=HISTORY_PER_PAGE)
        return {
            "o": seen, "soon_days": points.SOON_DAYS,
            "next_page": 1 if seen.pages > 1 else None,
        }
    if page == "rewards":
        offers = await rewards.catalog(session, shop, member)
        return {"offers": offers, "balance": offers[0].balance if offers else 0,
                "frozen": member.status == members.FROZEN}
    if page == "coupons":
        return {"coupons": await coupons.member_coupons(session, shop, member.id)}
    if page == "checkin":
        return {"status": await checkin.checkin_status(session, shop, member.id)}
    if page == "profile":
        return {"member": member, "today": shop.today(), "languages": LANGUAGES}
    invitation = await referrals.invitation(session, shop, member, config.bot_username)
    return {
        "inv": invitation, "qr": await _qr(invitation.link), "program": shop.program,
        "share": share_url(config.texts, caller.lang, shop, invitation.link),
    }


# ------------------------------------------------------------------ request and answer bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RedeemIn(_Body):
    token: str = Field(
        pattern=r"^[0-9a-f]{16}(\.[0-9]{1,9})?$",
        description="the token of the confirmation the member saw (with the item's version)",
    )


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]  # 5 or 5.0, never "5" or true


class BirthdayIn(_Body):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"month": 5, "day": 20}, {"month": 5, "day": 20,
                                                                   "year": 1990}]},
    )

    month: WholeNumber = Field(ge=1, le=12)
    day: WholeNumber = Field(ge=1, le=31, description="a day the month has (29 February too)")
    year: Annotated[int, Field(ge=1900, le=9999), BeforeValidator(_whole_number)] | None = Field(
        default=None,
        description="optional, as in the chat; a birth date in the future is refused (422)",
    )


class MarketingIn(_Body):
    on: StrictBool  # `{"on": 0}` is not a yes or no


class LanguageIn(_Body):
    language: Literal["en", "zh"]


class Done(BaseModel):
    message: str = Field(description="what happened, in the member's language (HTML)")


class Confirmation(BaseModel):
    token: str
    question: str = Field(description="the confirmation, in the member's language (HTML)")


class Redeemed(BaseModel):
    coupon_id: int
    balance: int
    message: str


class CouponQr(BaseModel):
    code: str = Field(description="the coupon code, grouped for reading")
    worth: str
    valid_until: str
    qr_svg: str


class CardCodeOut(BaseModel):
    code: str
    qr_svg: str
    valid_seconds: int


class HistoryLine(BaseModel):
    amount: str
    gain: bool
    cause: str = Field(description="what caused it, in the member's language (HTML)")
    day: str


class HistoryPage(BaseModel):
    lines: list[HistoryLine]
    next_page: int | None


# ------------------------------------------------------------------ the routes


def build_router() -> APIRouter:
    router = APIRouter(
        prefix="/app/api", tags=["Member center (Mini App)"], responses=ERRORS,
        route_class=MemberWords,
    )

    @router.get(
        "/pages/{page}", response_model=None, responses=HTML_PAGE, operation_id="webapp_page",
        summary="One page of the member center, rendered",
    )
    async def page(
        page: Annotated[Page, Path()], caller: CallerDep, session: SessionDep, shop: ShopDep,
        config: ConfigDep,
    ) -> HTMLResponse:
        """The page's HTML in the member's language; a Telegram user who has not joined gets
        the page that says how to join."""
        texts = config.texts
        if caller.member is None:
            return HTMLResponse(texts.render(caller.lang, "webapp/not_member"))
        context = await page_context(page, caller, session, shop, config)
        body = texts.render(
            caller.lang, f"webapp/{page}", page=page, admin=caller.admin,
            rotating_seconds=card_code.VALID_SECONDS, **context,
        )
        return HTMLResponse(body)

    @router.get(
        "/points/history", response_model=HistoryPage, operation_id="webapp_points_history",
        summary="The points history, one page at a time",
    )
    async def history(
        caller: CallerDep, session: SessionDep, shop: ShopDep, config: ConfigDep,
        page: Annotated[int, Query(ge=0, le=100_000)] = 0,
    ) -> HistoryPage:
        """Newest first; `next_page` is null after the last page."""
        member = caller.require_member()
        seen = await points.overview(
            session, shop, member.id, page=page, per_page=HISTORY_PER_PAGE
        )
        texts, lang = config.texts, caller.lang
        if seen.page != page:  # past the end: overview shows the last page again
            return HistoryPage(lines=[], next_page=None)
        return HistoryPage(
            lines=[
                HistoryLine(
                    amount=texts.number(lang, line.amount, signed=True), gain=line.amount > 0,
                    cause=texts.render(lang, "webapp/cause", line=line),
                    day=texts.day(lang, line.day),
                )
                for line in seen.lines
            ],
            next_page=page + 1 if page + 1 < seen.pages else None,
        )

    @router.get(
        "/card/code", response_model=CardCodeOut, operation_id="webapp_card_code",
        summary="The card's code now (rotating when the shop turns it on)",
    )
    async def card_now(caller: CallerDep, shop: ShopDep, config: ConfigDep) -> CardCodeOut:
        """With rotation on, a code the till accepts for about a minute in place of the
        member code; otherwise the member code."""
        member = caller.require_member()
        code = _card_code(config, shop, member)
        return CardCodeOut(
            code=code, qr_svg=str(await _qr(code)), valid_seconds=card_code.VALID_SECONDS
        )

    @router.get(
        "/rewards/{key}/confirmation", response_model=Confirmation,
        operation_id="webapp_reward_confirmation", summary="Ask before redeeming a reward",
    )
    async def confirm(
        key: RewardKey, caller: CallerDep, session: SessionDep, shop: ShopDep,
        config: ConfigDep,
    ) -> Confirmation:
        """Refuses now what redeeming would refuse; the token redeems once."""
        member = caller.require_member()
        offer = await rewards.offer(session, shop, member, key)
        rewards.check_redeemable(offer, member)
        texts = config.texts
        worth = texts.coupon(
            caller.lang, kind=offer.reward.kind, value=offer.reward.value,
            min_spend=offer.reward.min_spend,
        )
        return Confirmation(
            # The item's version rides with the token: an admin's change in between asks again.
            token=rewards.confirmation_token(shop, member.id, key, offer.redeemed)
            + (f".{offer.version}" if offer.version else ""),
            question=texts.render(caller.lang, "webapp/reward_confirm", offer=offer, worth=worth),
        )

    @router.post(
        "/rewards/{key}/redemptions", status_code=201, response_model=Redeemed,
        operation_id="webapp_redeem", summary="Redeem a reward for a coupon",
    )
    async def redeem(
        key: RewardKey, body: RedeemIn, caller: CallerDep, session: SessionDep, shop: ShopDep,
        config: ConfigDep, request: Request,
    ) -> Redeemed:
        """The chat's use case: same limits, stock and races; one confirmation redeems once."""
        member = caller.require_member()
        token, _, version = body.token.partition(".")
        done = await rewards.redeem(
            session, shop, member.id, key, confirmation=token, version=int(version or 0)
        )
        request.app.state.outbox_ready()
        return Redeemed(
            coupon_id=done.coupon_id, balance=done.balance,
            message=config.texts.render(caller.lang, "webapp/reward_done", done=done),
        )

    @router.get(
        "/coupons/{coupon_id}", response_model=CouponQr, operation_id="webapp_coupon",
        summary="One of the member's own coupons, as its QR code",
    )
    async def coupon(
        coupon_id: Annotated[int, Path(ge=1, le=2**63 - 1)], caller: CallerDep,
        session: SessionDep, shop: ShopDep, config: ConfigDep,
    ) -> CouponQr:
        """Another member's coupon is not found, nothing of it shown."""
        member = caller.require_member()
        found = await coupons.member_coupon(session, shop, member.id, coupon_id)
        texts, lang = config.texts, caller.lang
        worth = (
            found.reward_name.get(lang) if found.kind == "free_item" and found.reward_name
            else texts.coupon(lang, kind=found.kind, value=found.value,
                              min_spend=found.min_spend)
        )
        return CouponQr(
            code=found.grouped_code, worth=worth, valid_until=texts.day(lang, found.valid_until),
            qr_svg=str(await _qr(found.code)),
        )

    @router.post(
        "/checkin", status_code=201, response_model=Done, operation_id="webapp_checkin",
        summary="Check in for today",
    )
    async def check_in(
        caller: CallerDep, session: SessionDep, shop: ShopDep, config: ConfigDep,
        request: Request,
    ) -> Done:
        member = caller.require_member()
        result = await checkin.check_in(session, shop, member.id)
        request.app.state.outbox_ready()
        return Done(message=config.texts.render(caller.lang, "webapp/checkin_done", r=result))

    @router.post(
        "/profile/birthday", response_model=Done, operation_id="webapp_birthday",
        summary="Set the birthday (once)",
    )
    async def birthday(
        body: BirthdayIn, caller: CallerDep, session: SessionDep, shop: ShopDep,
        config: ConfigDep,
    ) -> Done:
        """Month and day (the year if the member gives it), as the chat's picker takes them.
        The chat's rule: set once by the member (a second time is refused), the gift of a
        birthday within 30 days waits a year."""
        member = caller.require_member()
        saved = await profiles.set_birthday(session, shop, member, body.month, body.day, body.year)
        return Done(message=config.texts.render(
            caller.lang, "webapp/birthday_saved", b=saved, this_year=shop.today().year,
        ))

    @router.post(
        "/profile/marketing", response_model=Done, operation_id="webapp_marketing",
        summary="Marketing messages on or off",
    )
    async def marketing(
        body: MarketingIn, caller: CallerDep, session: SessionDep, config: ConfigDep
    ) -> Done:
        member = caller.require_member()
        await profiles.set_marketing(session, member, body.on)
        return Done(message=config.texts.render(caller.lang, "webapp/marketing_saved", on=body.on))

    @router.post(
        "/profile/language", response_model=Done, operation_id="webapp_language",
        summary="The member's language",
    )
    async def language(
        body: LanguageIn, caller: CallerDep, session: SessionDep, config: ConfigDep
    ) -> Done:
        member = caller.require_member()
        await members.set_language(session, member, body.language)
        if config.menu_button is not None:
            await config.menu_button(caller.telegram_id, body.language)
        return Done(message=config.texts.render(body.language, "webapp/language_saved"))

    return router


def install(app: FastAPI, config: WebAppConfig) -> None:
    """The member center on ``app``: shells, static files, the JSON API and its refusals."""
    from handlers import webapp_admin  # the dashboard is a part of the same door

    app.state.webapp = config
    app.include_router(build_router())
    app.include_router(webapp_admin.build_router())
    app.mount(
        "/app/static", StaticFiles(directory=config.texts.directory / STATIC_FOLDER),
        name="webapp-static",
    )

    @app.exception_handler(Unauthenticated)
    async def unauthenticated(_request: Request, _exc: Unauthenticated) -> JSONResponse:
        return JSONResponse(unauthenticated_body(), status_code=401)

    async def shell(request: Request, page: str) -> HTMLResponse:
        wanted = request.headers.get("accept-language", "")
        lang = "zh" if wanted.lower().startswith("zh") else "en"
        return HTMLResponse(
            config.texts.render(lang, "webapp/shell", page=page),
            headers={"Cache-Control": "no-store"},
        )

    @app.get("/app", include_in_schema=False)
    async def home(request: Request) -> HTMLResponse:
        return await shell(request, "card")

    @app.get("/app/{page}", include_in_schema=False)
    async def any_page(
        request: Request,
        page: Annotated[ShellPage, Path()],
    ) -> HTMLResponse:
        return await shell(request, page)
