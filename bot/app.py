"""The composition root: everything is built here from the settings, nothing at import time."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from aiogram.exceptions import (
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response, TelegramType
from aiogram.types import BotCommand, MenuButtonWebApp, User, WebAppInfo
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.admin_notices import AdminNotifier
from bot.coordination import Role, SharedOutboxSignal, coordination_engine, worker_name
from bot.db import create_engine, create_session_factory
from bot.fsm_storage import DatabaseStorage
from bot.http import EmbeddedServer, create_http_app, server_config
from bot.logs import UpdateLog
from bot.middlewares import CurrentMember, DatabaseSession, InFlight, Throttle
from bot.replies import RetryAfterFloodControl
from bot.scheduler import (
    RunningJobs,
    catch_up,
    schedule_campaigns,
    schedule_jobs,
    start_campaigns,
)
from bot.sender import CHAT_INTERVAL_SECONDS, OutboxSender
from bot.settings import Settings, SettingsError
from bot.webhook import WebhookReceiver, register
from domain import catalog
from domain.clock import Clock, SystemClock
from domain.program import Program, load_program
from domain.shop import Shop
from handlers import build_router
from handlers.campaign_push import CampaignPushes
from handlers.campaign_writer import CampaignWriter
from handlers.filters import gate_routers
from handlers.member_center import set_menu_button
from handlers.start import staff_commands
from handlers.texts import LANGUAGES, Texts, load_texts
from handlers.webapp_auth import WebAppConfig

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_SECONDS = 20


@dataclass
class App:
    settings: Settings
    shop: Shop
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    texts: Texts
    bot: Bot
    dispatcher: Dispatcher
    http: FastAPI
    scheduler: AsyncIOScheduler
    in_flight: InFlight
    sender: OutboxSender
    notifier: AdminNotifier
    outbox_signal: SharedOutboxSignal
    roles: dict[str, Role]
    webhook: WebhookReceiver | None
    coordination: AsyncEngine | None
    running_jobs: RunningJobs
    campaign_writer: CampaignWriter
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def holds(self) -> dict[str, bool]:
        """The roles this worker holds now (``/healthz`` shows them)."""
        return {name: role.held for name, role in self.roles.items()}

    async def close(self) -> None:
        await self.bot.session.close()
        await self.engine.dispose()
        if self.coordination is not None:
            await self.coordination.dispose()


def create_bot(settings: Settings, session: BaseSession | None = None) -> Bot:
    if session is None and settings.telegram_api_url:
        session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    bot = Bot(
        token=settings.require_bot_token(),
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML, link_preview_is_disabled=True),
    )
    bot.session.middleware(RetryAfterFloodControl())
    bot.session.middleware(KeepResponseTypes())
    return bot


class KeepResponseTypes(BaseRequestMiddleware):
    """Keeps the answer models aiogram validates Telegram's answers with (``Response[Message]``)
    alive for the bot's life. pydantic holds a generic model only weakly, so once the garbage
    collector ran it was built again, about 7 ms each time: measured on every tenth reply or
    so under load."""

    def __init__(self) -> None:
        self.kept: dict[Any, type[Response[Any]]] = {}

    async def __call__(
        self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        returning = method.__returning__
        if returning not in self.kept:
            self.kept[returning] = Response[returning]  # type: ignore[valid-type]
        return await make_request(bot, method)


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    program: Program | None = None,
    bot_session: BaseSession | None = None,
) -> App:
    program = program or load_program(settings.program_file)
    shop = Shop(
        program=program, clock=clock or SystemClock(), tz=settings.tz,
        phone_region=settings.phone_region, member_hash_secret=settings.member_hash_key(),
    )
    engine = create_engine(settings.database_url, **settings.pool_options())
    session_factory = create_session_factory(engine)
    texts = load_texts(currency=program.currency)
    bot = create_bot(settings, bot_session)
    in_flight = InFlight()
    coordination = coordination_engine(settings.database_url)
    outbox_signal = SharedOutboxSignal()
    campaign_writer = CampaignWriter(session_factory, shop, outbox_signal)
    webapp = _webapp_config(settings, texts)
    if webapp is not None:
        webapp.menu_button = functools.partial(set_menu_button, bot, texts, webapp.url)
    # Conversations (a half-built campaign) are kept in the database: they survive a restart.
    # Several workers share them through the database (an answer may reach another worker).
    storage = DatabaseStorage(session_factory, shop.clock, shared=coordination is not None)
    dispatcher = Dispatcher(
        storage=storage,
        shop=shop, texts=texts, session_factory=session_factory, outbox_signal=outbox_signal,
        staff_ids=settings.staff, admin_ids=settings.admin_ids,
        webapp=webapp, webapp_url=webapp.url if webapp is not None else None,
        campaign_writer=campaign_writer,
    )
    dispatcher.update.outer_middleware(in_flight)
    dispatcher.update.outer_middleware(UpdateLog())
    dispatcher.update.outer_middleware(Throttle(texts))
    dispatcher.update.outer_middleware(DatabaseSession(session_factory))
    router = build_router()
    gate_routers(router)  # staff and conversation routers: one check for other messages
    dispatcher.update.outer_middleware(CurrentMember(staff_commands(router)))
    dispatcher.include_router(router)
    dispatcher.startup.register(_on_startup)
    roles = {
        "scheduler": Role("scheduler", coordination),
        "sender": Role("sender", coordination, on_connection=outbox_signal.listen),
    }
    if not settings.webhook_url:
        roles["poller"] = Role("poller", coordination)  # Telegram allows one long poller
    webhook = (
        WebhookReceiver(bot, dispatcher, settings.webhook_secret_value())
        if settings.webhook_url else None
    )
    scheduler = AsyncIOScheduler(timezone=settings.tz)
    notifier = AdminNotifier(texts, shop, settings.admin_ids, session_factory, outbox_signal)
    schedule_jobs(scheduler, session_factory, shop, outbox_signal, notifier)
    schedule_campaigns(scheduler, session_factory, shop, outbox_signal)
    http = create_http_app(
        engine, session_factory=session_factory, shop=shop,
        pos_token=settings.pos_api_token.get_secret_value() if settings.pos_api_token else None,
        outbox_ready=outbox_signal.wake, webapp_config=webapp,
        roles=lambda: {name: role.held for name, role in roles.items()},
    )
    if webhook is not None:
        webhook.install(http, settings.webhook_path)
    campaign_pushes = CampaignPushes(texts, shop, bot)
    sender = OutboxSender(
        session_factory, bot, texts, shop, outbox_signal, paid_broadcast=settings.paid_broadcast,
        claimant=worker_name(), rich={"campaign": campaign_pushes, "nps": campaign_pushes},
        # Several workers: the sender may have moved here from another one a moment ago.
        handover_seconds=CHAT_INTERVAL_SECONDS if coordination is not None else 0.0,
    )
    return App(
        settings=settings, shop=shop, engine=engine, session_factory=session_factory,
        texts=texts, bot=bot, dispatcher=dispatcher, http=http, scheduler=scheduler,
        in_flight=in_flight, sender=sender, notifier=notifier, outbox_signal=outbox_signal,
        roles=roles, webhook=webhook, coordination=coordination, campaign_writer=campaign_writer,
        running_jobs=RunningJobs(scheduler),
    )


def _webapp_config(settings: Settings, texts: Texts) -> WebAppConfig | None:
    """The Mini App's settings, or None when WEBAPP_URL is unset (the Mini App is off)."""
    if settings.webapp_url is None:
        return None
    return WebAppConfig(
        bot_token=settings.require_bot_token(), url=settings.webapp_url, texts=texts,
        admin_ids=settings.admin_ids, max_age=timedelta(seconds=settings.webapp_init_max_age),
        rotating_code=settings.webapp_rotating_code,
    )


async def _on_startup(
    bot: Bot, dispatcher: Dispatcher, texts: Texts, shop: Shop,
    session_factory: async_sessionmaker[AsyncSession], webapp: WebAppConfig | None = None,
) -> None:
    async with session_factory() as session:
        # The live catalog's first start: the program's items and templates not stored yet.
        await catalog.seed(session, shop)
    if isinstance(dispatcher.storage, DatabaseStorage):
        await dispatcher.storage.load()
    me = await bot.get_me()
    dispatcher["bot_username"] = me.username or ""
    await register_commands(bot, texts)
    if webapp is not None:
        webapp.bot_username = me.username or ""
        # The chat's menu button opens the member center (one default for every chat, so in
        # the default language).
        await bot.set_chat_menu_button(menu_button=MenuButtonWebApp(
            text=texts.label("en", "webapp_menu_button"), web_app=WebAppInfo(url=webapp.url),
        ))


async def register_commands(bot: Bot, texts: Texts) -> None:
    """Commands and their descriptions in every language (English is the default list)."""
    for lang in LANGUAGES:
        commands = [BotCommand(command=c, description=d) for c, d in texts.commands(lang)]
        await bot.set_my_commands(commands, language_code=None if lang == "en" else lang)


def settle_heap() -> None:
    """Put what start-up built (modules, the app, its routers and templates) out of the
    garbage collector's sight: a full collection otherwise walks all of it again (measured:
    about 0.3 s per full collection with 380,000 objects, on the event loop, every few hundred
    updates under load). Freed only at exit, which is when it would have gone anyway."""
    gc.collect()
    gc.freeze()


async def reach_telegram(
    bot: Bot, stopping: asyncio.Event, *, first_delay: float = 1.0, max_delay: float = 60.0
) -> User | None:
    """Ask Telegram who we are, retrying with backoff while it cannot be reached; None when
    asked to stop meanwhile. A token Telegram refuses is a settings error, not a retry."""
    delay = first_delay
    while not stopping.is_set():
        try:
            return await bot.get_me()
        except TelegramUnauthorizedError as exc:
            raise SettingsError(
                "BOT_TOKEN was refused by Telegram (401 Unauthorized): check it with @BotFather"
            ) from exc
        except TelegramRetryAfter as exc:
            delay = max(delay, float(exc.retry_after))
            reason = f"flood control, retry after {exc.retry_after} s"
        except (TelegramNetworkError, TelegramServerError, OSError) as exc:
            reason = type(exc).__name__
        log.warning(
            "Telegram cannot be reached at %s (%s); retrying in %.0f s",
            bot.session.api.base.split("/bot")[0], reason, delay,
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)
        delay = min(delay * 2, max_delay)
    return None


async def _catch_up(app: App) -> None:
    await catch_up(app.session_factory, app.shop, app.outbox_signal, app.notifier)
    # Campaigns due while the bot was down, and writes a stop of the process cut short.
    await start_campaigns(app.session_factory, app.shop, app.outbox_signal, resume=True)


async def run(app: App) -> None:
    """Receiving updates (webhook or long polling), the HTTP server and, when this worker is
    elected for them, the scheduler and the outbox sender, until SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, app.stopping.set)

    server = EmbeddedServer(
        server_config(app.http, app.settings.api_host, app.settings.api_port)
    )
    me = await reach_telegram(app.bot, app.stopping)
    if me is None:  # stopped before Telegram could be reached
        await app.close()
        return
    log.info("connected to Telegram as @%s", me.username)
    settle_heap()
    serving = asyncio.create_task(server.serve(), name="http")
    if app.webhook is not None:
        await _emit_startup(app)
        await register(app.bot, app.dispatcher, app.settings)
        log.info("webhook mode: updates arrive at %s", app.settings.webhook_path)
    app.scheduler.start(paused=True)  # runs only while this worker holds the scheduler role
    roles = [
        asyncio.create_task(app.roles["scheduler"].run(
            lambda resign: _schedule(app, resign), app.stopping), name="scheduler-role"),
        asyncio.create_task(app.roles["sender"].run(app.sender.run, app.stopping),
                            name="sender-role"),
    ]
    if "poller" in app.roles:
        roles.append(asyncio.create_task(app.roles["poller"].run(
            lambda resign: _poll(app, resign), app.stopping), name="poller-role"))
    stop = asyncio.create_task(app.stopping.wait(), name="stop")
    log.info("running: HTTP on %s:%s", app.settings.api_host, app.settings.api_port)
    done, _ = await asyncio.wait({serving, stop}, return_when=asyncio.FIRST_COMPLETED)
    failure = next((t.exception() for t in done if t is not stop and t.exception()), None)
    app.stopping.set()

    log.info("stopping: letting in-flight updates finish")
    if app.webhook is not None:
        await app.webhook.drain(SHUTDOWN_GRACE_SECONDS)
    await app.in_flight.wait(SHUTDOWN_GRACE_SECONDS)
    await app.campaign_writer.wait(SHUTDOWN_GRACE_SECONDS)  # cut short: resumed at next start
    server.should_exit = True
    await asyncio.gather(serving, return_exceptions=True)
    app.sender.signal.wake()
    await asyncio.gather(*roles, return_exceptions=True)  # duties end, locks are released
    app.scheduler.shutdown(wait=False)
    if app.webhook is not None:
        await app.dispatcher.emit_shutdown(**_workflow(app))
    stop.cancel()
    await app.close()
    if failure is not None:
        raise failure


def _workflow(app: App) -> dict[str, object]:
    return {
        **app.dispatcher.workflow_data, "dispatcher": app.dispatcher, "bots": [app.bot],
        "bot": app.bot,
    }


async def _emit_startup(app: App) -> None:
    await app.dispatcher.emit_startup(**_workflow(app))


async def _schedule(app: App, resign: asyncio.Event) -> None:
    """The scheduler's duty: catch up on what was missed, then run the jobs on time."""
    app.scheduler.resume()
    catching_up = asyncio.create_task(
        _catch_up(app), name="catch-up",
    )
    try:
        await resign.wait()
    finally:
        app.scheduler.pause()
        catching_up.cancel()  # job_runs lets the next holder finish what this one began
        await asyncio.gather(catching_up, return_exceptions=True)
        # A job run under way finishes before the role goes to another worker.
        await app.running_jobs.wait(SHUTDOWN_GRACE_SECONDS)


async def _poll(app: App, resign: asyncio.Event) -> None:
    """The long poller's duty (Telegram serves one getUpdates client per bot)."""
    await app.bot.delete_webhook(drop_pending_updates=False)  # getUpdates refuses otherwise
    polling = asyncio.create_task(
        app.dispatcher.start_polling(
            app.bot, handle_signals=False, close_bot_session=False, handle_as_tasks=True
        ),
        name="polling",
    )
    ending = asyncio.create_task(resign.wait())
    await asyncio.wait({polling, ending}, return_when=asyncio.FIRST_COMPLETED)
    if not polling.done():
        try:
            await app.dispatcher.stop_polling()
        except RuntimeError:  # it had not started yet
            polling.cancel()
        await app.in_flight.wait(SHUTDOWN_GRACE_SECONDS)
    ending.cancel()
    await asyncio.gather(polling, ending, return_exceptions=True)
    if polling.done() and not polling.cancelled() and polling.exception() is not None:
        raise polling.exception()  # type: ignore[misc]
