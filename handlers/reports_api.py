"""`GET /api/v1/reports/summary`: the shop's figures for a period, as JSON for BI tools.

Same bearer token as the tills (POS_API_TOKEN): whoever holds it can already post sales, so a
second secret would add configuration without protecting anything more; the figures are
aggregates and name no member. Without the token the answer is 401 and says nothing else.
"""

from __future__ import annotations

import hmac
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException

from domain.analytics import Period, Report, build_report
from domain.shop import Shop

DATE_PATTERN = r"^(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"


class ReportError(BaseModel):
    error: str = Field(description="machine-readable error code")
    message: str
    field: str | None = Field(default=None, description="the query parameter at fault")


RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ReportError, "description": "missing or wrong bearer token"},
    408: {"model": ReportError, "description": "the request did not arrive within 10 s"},
    413: {"model": ReportError, "description": "the request is too large"},
    422: {
        "model": ReportError,
        "description": "`from` or `to` is not a calendar date (YYYY-MM-DD), or `to` is "
        "before `from`",
    },
    503: {"model": ReportError, "description": "busy: try again shortly"},
}

_bearer = HTTPBearer(auto_error=False, description="POS_API_TOKEN")


def _authorize(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected: str | None = request.app.state.pos_token
    given = credentials.credentials if credentials else ""
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong bearer token")


class _BadPeriod(Exception):
    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message


def _date(text: str | None, field: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise _BadPeriod(field, "is not a calendar date") from exc


def _period(first_text: str | None, last_text: str | None, today: date) -> Period:
    first, last = _date(first_text, "from"), _date(last_text, "to")
    month = Period.month_of(today)
    first = first or (month.first if last is None else last.replace(day=1))
    last = last or (month.last if first_text is None else Period.month_of(first).last)
    if last < first:
        raise _BadPeriod("to", "is before from")
    # Any span costs the same few scans: the figures are sums over the period's bounds.
    return Period(first, last)


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1", dependencies=[Depends(_authorize)], responses=RESPONSES)

    @router.get(
        "/reports/summary", response_model=Report, summary="The shop's figures for a period",
        operation_id="get_report_summary",
    )
    async def report_summary(
        request: Request,
        first: Annotated[str | None, Query(
            alias="from", pattern=DATE_PATTERN, json_schema_extra={"format": "date"},
            description="first local day (YYYY-MM-DD); default the 1st of this month, or of "
            "the month of `to`",
        )] = None,
        last: Annotated[str | None, Query(
            alias="to", pattern=DATE_PATTERN, json_schema_extra={"format": "date"},
            description="last local day, included (YYYY-MM-DD); default the end of the month "
            "of `from`, or of this month",
        )] = None,
    ) -> Any:
        """Members and tiers (with the 1:10 check), lifecycle, sales, points, benefit cost
        against the red line (tier discounts estimated from the amounts), engagement and
        messages. Money is in minor units, rates are percentages."""
        shop: Shop = request.app.state.shop
        try:
            period = _period(first, last, shop.today())
        except _BadPeriod as exc:
            return JSONResponse(
                {"error": "invalid_input", "message": exc.message, "field": exc.field}, 422
            )
        factory: async_sessionmaker[AsyncSession] = request.app.state.session_factory
        async with factory() as session:
            report: Report = await build_report(session, shop, period)
            await session.commit()
        return report

    return router
