"""The HTTP surface: FastAPI, served by uvicorn inside the bot's event loop."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.logs import RequestLog
from domain.shop import Shop
from handlers import api

log = logging.getLogger(__name__)

DESCRIPTION = """The till API of Member Companion. Every call under `/api/v1` needs
`Authorization: Bearer <POS_API_TOKEN>`. Amounts are decimal strings in the shop's currency
("199.00"). Orders, refunds and events are idempotent by their ids."""


def create_http_app(
    engine: AsyncEngine,
    *,
    session_factory: async_sessionmaker[AsyncSession] | None = None,
    shop: Shop | None = None,
    pos_token: str | None = None,
    outbox_ready: Callable[[], None] = lambda: None,
) -> FastAPI:
    app = FastAPI(
        title="Member Companion till API",
        version="1",
        description=DESCRIPTION,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.session_factory = session_factory
    app.state.shop = shop
    app.state.pos_token = pos_token
    app.state.outbox_ready = outbox_ready
    api.install(app)
    app.add_middleware(RequestLog)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:  # any failure to reach the database is "unhealthy"
            # The reason goes to the log, never to the caller (it names hosts and ports).
            log.warning("health check: the database cannot be reached", exc_info=True)
            return JSONResponse({"status": "unavailable", "database": "unavailable"}, 503)
        return JSONResponse({"status": "ok", "database": "ok"})

    return app


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the bot's runner owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
