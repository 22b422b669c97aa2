"""The HTTP surface: FastAPI, served by uvicorn inside the bot's event loop."""

from __future__ import annotations

import contextlib
import logging
import resource
from collections.abc import Callable, Iterator

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.guard import DEFAULT_LIMITS, GuardedH11Protocol, HttpLimits, TillGuard, WebAppGuard
from bot.logs import RequestLog
from bot.settings import DEFAULT_PROGRAM_FILE
from domain.program import load_program
from domain.shop import Shop
from handlers import api, reports_api, webapp
from handlers.webapp_auth import WebAppConfig, verified_user

log = logging.getLogger(__name__)

DESCRIPTION = """The till API of Member Companion. Every call under `/api/v1` needs
`Authorization: Bearer <POS_API_TOKEN>`. Amounts are decimal strings in the shop's currency
("199.00"). Orders, refunds and events are idempotent by their ids.

**The till flow.** A member code is for earning, not for spending.

1. *Earning*: scan the member's card (its QR code is the member code) or type the member code
   or phone number into `member`. The order earns points and growth; `GET /members/{code}`
   shows the name to check against the person, the tier and discount, the balance and the
   largest offset, and the usable coupons without their codes.
2. *Spending points*: ask the member for "Pay with points" on their card in the chat. It shows
   a QR code with a one-time spend code (`P` and 11 more characters, such as `P3KQ-7M2Z-XW4E`),
   valid a few minutes (5 by default). Put the scanned text into `member` instead of the member
   code: the order is for that member and may set `redeem_points`. The code is used up by that
   order (a retry of the same order replays); another order with it is refused
   (`spend_code_used`, `spend_code_expired`, 422). `redeem_points` with only the member code or
   phone is refused with `spend_proof_required` (403) and changes nothing. A lookup with the
   spend code also lists the coupons' codes and does not use the spend code up.
3. *Coupons*: a coupon is used by its own code (`coupon_code`), which only its owner sees in
   the chat: the member code is enough beside it.
4. *Rotating card codes*: when the shop turns them on, the card's QR code in the member center
   carries `R` and 22 more characters instead of the member code, valid one minute. Put it
   into `member` (or the lookup path) as the member code; it earns like the member code and is
   refused after the minute (`card_code_refused`, 409)."""


def create_http_app(
    engine: AsyncEngine,
    *,
    session_factory: async_sessionmaker[AsyncSession] | None = None,
    shop: Shop | None = None,
    pos_token: str | None = None,
    outbox_ready: Callable[[], None] = lambda: None,
    limits: HttpLimits = DEFAULT_LIMITS,
    webapp_config: WebAppConfig | None = None,
    roles: Callable[[], dict[str, bool]] = dict,
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
    api.install(app, shop.program if shop is not None else load_program(DEFAULT_PROGRAM_FILE))
    app.include_router(reports_api.build_router())
    # Added last is outermost: the log sees every answer, the guard's refusals included.
    app.add_middleware(
        TillGuard, token=pos_token, limits=limits, slots=_till_share(engine, limits.member_share)
    )
    if webapp_config is not None and shop is not None:
        # The Mini App (WEBAPP_URL set): its pages, and its own guard (init data, not the
        # till's token; the same body limits).
        webapp.install(app, webapp_config)
        app.add_middleware(
            WebAppGuard, limits=limits,
            verify=lambda header: verified_user(webapp_config, header, shop.now()) is not None,
        )
    app.add_middleware(RequestLog)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        try:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:  # any failure to reach the database is "unhealthy"
            # The reason goes to the log, never to the caller (it names hosts and ports).
            log.warning("health check: the database cannot be reached", exc_info=True)
            return JSONResponse(
                {"status": "unavailable", "database": "unavailable", **roles()}, 503
            )
        # Which roles this worker holds now (several workers: one scheduler, one sender).
        return JSONResponse({"status": "ok", "database": "ok", **roles()})

    return app


def server_config(
    app: FastAPI, host: str, port: int, limits: HttpLimits = DEFAULT_LIMITS
) -> uvicorn.Config:
    """uvicorn for the bot's loop: our protocol limits, short keep-alive, no lifespan."""
    _raise_descriptor_limit()
    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="off",
        http=GuardedH11Protocol.with_limits(limits), timeout_keep_alive=5,
        h11_max_incomplete_event_size=16 * 1024, backlog=256,
    )


def _raise_descriptor_limit() -> None:
    """Open files up to the hard limit: connections over the cap are closed, but each one
    needs a descriptor for the moment it takes to close it."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _till_share(engine: AsyncEngine, member_share: int) -> int:
    """Database connections the tills may hold at once: the pool less the members' share."""
    pool = engine.pool
    size = getattr(pool, "size", None)
    overflow = getattr(pool, "_max_overflow", 0)
    total = size() + max(overflow, 0) if callable(size) else 2 * member_share
    return max(1, total - member_share)


class EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the bot's runner owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
