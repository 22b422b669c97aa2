"""The shop's dashboard in the Mini App (ADMIN_IDS only): the figures of /stats for a period,
the red-line status, and the same charts, drawn by the same code (``handlers.charts``) as SVG
or PNG; and the reports of the newest campaigns (the figures /campaigns shows in the chat).
Anyone else gets 403 and learns nothing."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response
from markupsafe import Markup

from domain import analytics, campaigns
from handlers import charts, stats
from handlers.api import SessionDep, ShopDep
from handlers.webapp import (
    ERRORS,
    HTML_PAGE,
    CallerDep,
    ConfigDep,
    MemberWords,
    WebAppError,
)

Period = Literal["this", "last", "3m", "12m"]
ChartName = Literal["pyramid", "funnel", "revenue", "points"]
MEDIA_TYPES = {"svg": "image/svg+xml", "png": "image/png"}


def _not_admin(config: ConfigDep, lang: str) -> JSONResponse:
    message = config.texts.render(lang, "stats/only_admins")
    return JSONResponse({"error": "not_admin", "message": message}, status_code=403)


def build_router() -> APIRouter:
    router = APIRouter(
        prefix="/app/api/admin", tags=["Shop dashboard (Mini App)"], route_class=MemberWords,
        responses={**ERRORS, 403: {"model": WebAppError, "description": "not an admin"}},
    )

    @router.get(
        "/page", response_model=None, responses=HTML_PAGE, operation_id="webapp_admin_page",
        summary="The dashboard for a period, rendered",
    )
    async def page(
        caller: CallerDep, session: SessionDep, shop: ShopDep, config: ConfigDep,
        period: Period = "this",
    ) -> Response:
        """The /stats figures of every section, the red-line status and the charts."""
        if not caller.admin:
            return _not_admin(config, caller.lang)
        texts, lang = config.texts, caller.lang
        chosen = stats.period_for(period, shop.today())
        report = await analytics.build_report(session, shop, chosen)
        await session.commit()  # end the read
        sections = [
            Markup(stats.section_text(texts, lang, shop, view, report))  # noqa: S704 - ours
            for view in ("summary", *stats.SECTIONS)
        ]
        return HTMLResponse(texts.render(
            lang, "webapp/admin", page="admin", admin=True, period=period,
            periods=stats.PERIODS, report=report, sections=sections, charts=stats.CHARTS,
        ))

    @router.get(
        "/campaigns", response_model=None, responses=HTML_PAGE,
        operation_id="webapp_admin_campaigns", summary="The newest campaigns' reports, rendered",
    )
    async def campaign_reports(
        caller: CallerDep, session: SessionDep, shop: ShopDep, config: ConfigDep,
    ) -> Response:
        """Each of the newest campaigns as /campaigns reports it: reached, sent, skipped,
        failed and blocked; coupons used, bonus points and revenue from recipients; the A/B
        variants side by side with the test's verdict; a survey's NPS."""
        if not caller.admin:
            return _not_admin(config, caller.lang)
        reports = [
            await campaigns.report(session, shop, campaign_id)
            for campaign_id in await campaigns.recent_campaigns(session)
        ]
        return HTMLResponse(config.texts.render(
            caller.lang, "webapp/campaigns", page="campaigns", admin=True, reports=reports,
            tz=shop.tz, min_sample=campaigns.MIN_SAMPLE, min_expected=campaigns.MIN_EXPECTED,
            days=campaigns.REVENUE_DAYS,
        ))

    @router.get(
        "/charts/{name}", operation_id="webapp_admin_chart", summary="One chart, as SVG or PNG",
        response_model=None,
        responses={200: {
            "content": {"image/svg+xml": {}, "image/png": {}}, "description": "the chart"
        }},
    )
    async def chart(
        name: Annotated[ChartName, Path()], caller: CallerDep, session: SessionDep,
        shop: ShopDep, config: ConfigDep, period: Period = "this",
        fmt: Annotated[Literal["svg", "png"], Query(alias="format")] = "svg",
    ) -> Response:
        if not caller.admin:
            return _not_admin(config, caller.lang)
        chosen = stats.period_for(period, shop.today())
        drawn = await stats.chart_for(session, shop, config.texts, caller.lang, name, chosen)
        image = await asyncio.to_thread(charts.render, drawn, fmt)
        return Response(image, media_type=MEDIA_TYPES[fmt])

    return router
