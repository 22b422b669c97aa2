"""Chat throughput: /card through the full stack versus a bare aiogram handler.

Feeds N ``/card`` updates from M registered members (default 5,000 from 500) through the real
Dispatcher built by ``bot.app.create_app`` (the project's middlewares, SQLite database, Jinja2
templates, QR rendering), and the very same updates through a bare ``Dispatcher`` whose only
handler answers a fixed text. Both sides run in the same process, with the same concurrency, and
their Bot API calls are answered in-process by :class:`InProcessSession` (no network, no server).

The session does the client-side work of aiogram's ``AiohttpSession`` apart from the socket: it
serialises every parameter with ``prepare_value``, reads uploaded files, and turns a JSON answer
into the method's return type with ``BaseSession.check_response`` (pydantic validation of
``Response[Message]``). So the measured cost is aiogram + project, minus the network.

Each timed run gets a fresh copy of a database in which the members were registered beforehand
(through /start, untimed), so every run does the same work: the first /card of each member
renders and uploads a QR code and stores its file_id, the other nine reuse it. Updates are parsed
into ``Update`` objects before the clock starts (identical work for both sides, left out), and
both sides then settle the heap as ``bot.app.run`` does at start-up (``settle_heap``: a full
garbage collection, then what is left is frozen out of later collections). The
"cpu s" column is the process's CPU time, aiosqlite's worker threads included.

Each side runs ``--rounds`` times (default 3), alternating, and the median run of each side is
reported, with the ratio project/bare, the CPU ms per update of each, and the p99 latency of
one update (from feeding it to its answer) with ``--batch`` updates in flight. Members send at
most 5 updates each by default (5,000 from 1,000), so the flood throttle (8 updates per 4 s
per member) can never hold the project side back; a run that loses an update fails.

Usage::

    python bench/chat.py [--updates 5000] [--members 1000] [--batch 50] [--rounds 3] [--quick]
                         [--sequential] [--no-lean]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

import aiogram  # noqa: E402
import sqlalchemy  # noqa: E402
from aiogram import Bot, Dispatcher, Router  # noqa: E402
from aiogram.client.session.base import BaseSession  # noqa: E402
from aiogram.dispatcher.event.bases import UNHANDLED  # noqa: E402
from aiogram.methods import TelegramMethod  # noqa: E402
from aiogram.methods.base import TelegramType  # noqa: E402
from aiogram.types import InputFile, Message, Update  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from bot.app import App, create_app, create_bot, settle_heap  # noqa: E402
from bot.db import migrate_async  # noqa: E402
from bot.settings import DEFAULT_PROGRAM_FILE, Settings  # noqa: E402
from domain.members import standing_by_telegram_id  # noqa: E402
from domain.clock import FixedClock  # noqa: E402
from domain.models import Member  # noqa: E402
from domain.program import load_program  # noqa: E402
from handlers.card import CardUploads  # noqa: E402
from handlers.texts import LANGUAGES  # noqa: E402
from tests.fake_telegram import BOT_USER, message_update  # noqa: E402

BENCH_TOKEN = "123456789:BENCH-token-xxxxxxxxxxxx"
# 10:00 in Shanghai on an ordinary Tuesday (the tests' clock).
BENCH_NOW = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
FIRST_USER_ID = 500_000_000
FIXED_TEXT = "fixed text"

JsonDict = dict[str, Any]


# ------------------------------------------------------------------ the Bot API, in-process


class InProcessSession(BaseSession):
    """Answers Bot API calls in-process with realistic result shapes, and counts them.

    Like aiogram's own test ``MockedSession`` it subclasses ``BaseSession`` and goes through
    ``check_response``; unlike it, results are made up per method instead of queued by hand.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()
        self.uploads = 0
        self.upload_bytes = 0
        self.photo_reuses = 0
        self.unexpected: list[str] = []
        self._message_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._date = int(BENCH_NOW.timestamp())

    def reset_counts(self) -> None:
        self.calls.clear()
        self.uploads = self.upload_bytes = self.photo_reuses = 0
        self.unexpected.clear()

    @property
    def answers(self) -> int:
        return self.calls["sendMessage"] + self.calls["sendPhoto"]

    async def make_request(
        self, bot: Bot, method: TelegramMethod[TelegramType], timeout: int | None = None
    ) -> TelegramType:
        name = method.__api_method__
        self.calls[name] += 1
        params, files = await self._serialize(bot, method)
        answer = self._answer(name, params, files)
        if answer is None:
            self.unexpected.append(name)
            body: JsonDict = {
                "ok": False, "error_code": 400,
                "description": f"Bad Request: {name} is not answered by the bench session",
            }
            content = self.json_dumps(body)
            self.check_response(bot=bot, method=method, status_code=400, content=content)
            raise AssertionError("check_response should have raised")  # pragma: no cover
        content = self.json_dumps({"ok": True, "result": answer})
        response = self.check_response(bot=bot, method=method, status_code=200, content=content)
        return response.result  # type: ignore[return-value]

    async def _serialize(
        self, bot: Bot, method: TelegramMethod[TelegramType]
    ) -> tuple[JsonDict, dict[str, InputFile]]:
        """What AiohttpSession.build_form_data does, minus the multipart encoding."""
        params: JsonDict = {}
        files: dict[str, InputFile] = {}
        for key, value in method.model_dump(warnings=False).items():
            prepared = self.prepare_value(value, bot=bot, files=files)
            if prepared:
                params[key] = prepared
        for upload in files.values():
            async for chunk in upload.read(bot):
                self.upload_bytes += len(chunk)
        return params, files

    def _answer(self, name: str, params: JsonDict, files: dict[str, InputFile]) -> Any:
        if name == "getMe":
            return {**BOT_USER, "can_join_groups": True, "can_read_all_group_messages": False,
                    "supports_inline_queries": False}
        if name in ("setMyCommands", "deleteMyCommands"):
            return True
        if name == "sendMessage":
            return {**self._message(params), "text": params["text"]}
        if name == "sendPhoto":
            photo = params["photo"]
            if photo.startswith("attach://"):
                assert photo.removeprefix("attach://") in files, "upload part missing"
                self.uploads += 1
                file_id = f"AgACAgIAAxkDAAI-bench-{next(self._file_ids)}"
            else:
                self.photo_reuses += 1
                file_id = photo
            message = {**self._message(params), "photo": [
                _photo_size(f"{file_id}-s", 90, 90, 1_024),
                _photo_size(file_id, 800, 800, 48_000),
            ]}
            if params.get("caption"):
                message["caption"] = params["caption"]
            return message
        return None

    def _message(self, params: JsonDict) -> JsonDict:
        chat_id = int(params["chat_id"])
        return {
            "message_id": next(self._message_ids),
            "from": BOT_USER,
            "chat": {"id": chat_id, "type": "private", "first_name": "Member"},
            "date": self._date,
        }

    async def stream_content(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the bench session downloads nothing")

    async def close(self) -> None:
        pass


def _photo_size(file_id: str, width: int, height: int, size: int) -> JsonDict:
    return {"file_id": file_id, "file_unique_id": "u" + file_id[-15:], "width": width,
            "height": height, "file_size": size}


# --------------------------------------------------------------------------- updates


def user_id(member: int) -> int:
    return FIRST_USER_ID + member


def start_updates(members: int) -> list[JsonDict]:
    return [
        message_update(user_id(m), "/start", language_code=LANGUAGES[m % len(LANGUAGES)],
                       first_name=f"Member{m}", update_id=m + 1, message_id=1)
        for m in range(members)
    ]


def card_updates(count: int, members: int) -> list[JsonDict]:
    """``count`` /card updates, round-robin over the members, unique update and message ids."""
    return [
        message_update(user_id(k % members), "/card",
                       language_code=LANGUAGES[(k % members) % len(LANGUAGES)],
                       first_name=f"Member{k % members}",
                       update_id=1_000_000 + k, message_id=10 + k // members)
        for k in range(count)
    ]


Feed = Callable[[Update], Awaitable[Any]]


async def feed_all(
    feed: Feed, updates: Sequence[Update], batch: int, latencies: list[float] | None = None
) -> list[Any]:
    """``batch`` updates in flight at any time (like polling with handle_as_tasks and a
    bounded queue); each update's latency is its feed-to-answer time."""

    async def one(update: Update) -> Any:
        started = time.perf_counter()
        result = await feed(update)
        if latencies is not None:
            latencies.append(time.perf_counter() - started)
        return result

    if batch <= 1:
        return [await one(update) for update in updates]
    slots = asyncio.Semaphore(batch)

    async def bounded(update: Update) -> Any:
        async with slots:
            return await one(update)

    return list(await asyncio.gather(*(bounded(u) for u in updates)))


# --------------------------------------------------------------------------- the two sides


@dataclass
class Result:
    side: str
    mode: str
    updates: int
    seconds: float
    cpu_seconds: float
    uploads: int = 0
    reuses: int = 0
    p99_ms: float = 0.0
    statements: int = 0  # sent to the database (BEGIN and COMMIT included when sent as SQL)

    @property
    def rate(self) -> float:
        return self.updates / self.seconds

    @property
    def cpu_ms(self) -> float:
        return self.cpu_seconds / self.updates * 1000


def bench_settings(database: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        bot_token=BENCH_TOKEN,
        database_url=f"sqlite+aiosqlite:///{database}",
        timezone="Asia/Shanghai",
    )


def copy_database(source: Path, target: Path) -> None:
    for suffix in ("", "-wal"):  # no -wal once the last connection closed; -shm is rebuilt
        extra = source.with_name(source.name + suffix)
        if extra.exists():
            shutil.copyfile(extra, target.with_name(target.name + suffix))


async def start_app(database: Path) -> tuple[App, InProcessSession]:
    session = InProcessSession()
    app = create_app(bench_settings(database), clock=FixedClock(BENCH_NOW),
                     program=load_program(DEFAULT_PROGRAM_FILE), bot_session=session)
    dispatcher = app.dispatcher
    await dispatcher.emit_startup(bot=app.bot, dispatcher=dispatcher, **dispatcher.workflow_data)
    return app, session


async def prepare_template(database: Path, members: int, batch: int) -> None:
    """Migrated database with ``members`` members registered through /start (untimed)."""
    await migrate_async(f"sqlite+aiosqlite:///{database}")  # env.py runs its own loop: a thread
    app, session = await start_app(database)
    try:
        session.reset_counts()
        context = {"bot": app.bot}
        updates = [Update.model_validate(u, context=context) for u in start_updates(members)]
        await feed_all(lambda u: app.dispatcher.feed_update(app.bot, u), updates, batch)
        assert session.calls["sendMessage"] == members, f"/start answered {session.calls}"
        async with app.session_factory() as db:
            registered = await db.scalar(select(func.count()).select_from(Member))
        assert registered == members, f"{registered} members registered, expected {members}"
    finally:
        await app.close()


async def run_project(template: Path, workdir: Path, raw: list[JsonDict], members: int,
                      batch: int, run_no: int) -> Result:
    database = workdir / f"project-{run_no}.db"
    copy_database(template, database)
    app, session = await start_app(database)
    statements: list[str] = []

    @sqlalchemy.event.listens_for(app.engine.sync_engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    try:
        session.reset_counts()
        updates = [Update.model_validate(u, context={"bot": app.bot}) for u in raw]
        settle_heap()  # as bot.app.run does once the bot is up
        result = await timed("project", batch, updates,
                             lambda u: app.dispatcher.feed_update(app.bot, u))
        result[0].statements = len(statements)
        unhandled = sum(r is UNHANDLED for r in result[1])
        assert unhandled == 0, f"project: {unhandled} updates unhandled"
        assert not session.unexpected, f"project: unexpected calls {session.unexpected}"
        # Error replies go out as sendMessage: a /card that failed would be counted there.
        assert session.calls["sendMessage"] == 0, f"project: error replies? {session.calls}"
        assert session.calls["sendPhoto"] == len(raw), f"project: answered {session.calls}"
        assert session.answers == len(raw)
        first_cards = min(members, len(raw))
        assert session.uploads >= first_cards, f"project: {session.uploads} QR uploads"
        assert session.uploads + session.photo_reuses == len(raw)
        async with app.session_factory() as db:
            with_card = await db.scalar(
                select(func.count()).select_from(Member).where(Member.card_file_id.is_not(None))
            )
        assert with_card == first_cards, f"project: {with_card} members remember their card"
        result[0].uploads, result[0].reuses = session.uploads, session.photo_reuses
        return result[0]
    finally:
        await app.close()
        remove_database(database)


def remove_database(database: Path) -> None:
    """A run's SQLite file and its write-ahead log."""
    for suffix in ("", "-wal", "-shm"):
        database.with_name(database.name + suffix).unlink(missing_ok=True)


async def run_lean(template: Path, workdir: Path, raw: list[JsonDict], members: int,
                   batch: int, run_no: int) -> Result:
    """The ceiling, for information: the same member read and the same card reply (the
    project's own ``standing_by_telegram_id`` and ``CardUploads.card``: caption, buttons, QR
    upload or stored file_id) from one handler on a bare Dispatcher, without the project's
    middlewares (session, member, throttle, logs, FSM state) and its other routers."""
    database = workdir / f"lean-{run_no}.db"
    copy_database(template, database)
    app, session = await start_app(database)
    shop, texts, factory = app.shop, app.texts, app.session_factory
    uploads = CardUploads()
    router = Router(name="lean")

    @router.message()
    async def card(message: Message) -> None:
        assert message.from_user is not None
        async with factory() as db:
            standing = await standing_by_telegram_id(db, shop, message.from_user.id)
            assert standing is not None
            member = standing.member
            await uploads.card(message, db, shop, texts, member, member.language,
                               standing.growth)

    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    try:
        session.reset_counts()
        updates = [Update.model_validate(u, context={"bot": app.bot}) for u in raw]
        settle_heap()
        result = await timed("lean", batch, updates,
                             lambda u: dispatcher.feed_update(app.bot, u))
        assert not session.unexpected, f"lean: unexpected calls {session.unexpected}"
        assert session.calls["sendPhoto"] == len(raw), f"lean: answered {session.calls}"
        result[0].uploads, result[0].reuses = session.uploads, session.photo_reuses
        return result[0]
    finally:
        await app.close()
        remove_database(database)


async def run_bare(raw: list[JsonDict], batch: int) -> Result:
    session = InProcessSession()
    # The same Bot the project builds (HTML parse mode, no link previews), on its own session.
    settings = Settings(_env_file=None, bot_token=BENCH_TOKEN)  # type: ignore[call-arg]
    bot = create_bot(settings, session)
    router = Router(name="bare")

    @router.message()
    async def answer(message: Message) -> None:
        await message.answer(FIXED_TEXT)

    dispatcher = Dispatcher()
    dispatcher.include_router(router)
    try:
        updates = [Update.model_validate(u, context={"bot": bot}) for u in raw]
        settle_heap()  # the same for the bare bot: neither side pays for the other's garbage
        result = await timed("bare", batch, updates, lambda u: dispatcher.feed_update(bot, u))
        unhandled = sum(r is UNHANDLED for r in result[1])
        assert unhandled == 0, f"bare: {unhandled} updates unhandled"
        assert not session.unexpected, f"bare: unexpected calls {session.unexpected}"
        assert session.calls["sendMessage"] == len(raw), f"bare: answered {session.calls}"
        assert session.answers == len(raw)
        return result[0]
    finally:
        await bot.session.close()


async def timed(
    side: str, batch: int, updates: list[Update], feed: Feed
) -> tuple[Result, list[Any]]:
    latencies: list[float] = []
    wall, cpu = time.perf_counter(), time.process_time()
    results = await feed_all(feed, updates, batch, latencies)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    mode = "sequential" if batch <= 1 else f"{batch} in flight"
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    return Result(side, mode, len(updates), wall, cpu, p99_ms=p99), results


# --------------------------------------------------------------------------- report


def _median(results: list[Result], side: str) -> Result:
    ordered = sorted((r for r in results if r.side == side), key=lambda r: r.seconds)
    return ordered[len(ordered) // 2]


def goal(name: str, value: float, op: str, target: float) -> str:
    met = value >= target if op == ">=" else value <= target
    return f"goal {name}: {value:.3f} (target {op} {target:g}) {'met' if met else 'not met'}"


def report(args: argparse.Namespace, concurrent: list[Result], sequential: list[Result]) -> None:
    print(f"Python {platform.python_version()}  aiogram {aiogram.__version__}  "
          f"SQLAlchemy {sqlalchemy.__version__}  SQLite (aiosqlite)  {platform.machine()}")
    print(f"{args.updates} /card updates from {args.members} members (at most "
          f"{-(-args.updates // args.members)} each: the flood throttle never holds one back), "
          f"Bot API answered in-process; median of {args.rounds} alternating runs per side")
    print()
    header = (f"{'side':<8} {'mode':<14} {'updates':>8} {'seconds':>8} {'cpu ms/upd':>11} "
              f"{'p99 ms':>8} {'updates/s':>10}")
    print(header)
    print("-" * len(header))
    for results in (concurrent, sequential):
        if not results:
            continue
        for side in ("project", "bare", "lean"):
            if not any(r.side == side for r in results):
                continue
            r = _median(results, side)
            print(f"{r.side:<8} {r.mode:<14} {r.updates:>8} {r.seconds:>8.2f} {r.cpu_ms:>11.2f} "
                  f"{r.p99_ms:>8.1f} {r.rate:>10.0f}")
    print()
    project, bare = _median(concurrent, "project"), _median(concurrent, "bare")
    ratio = project.rate / bare.rate
    print(f"ratio project/bare = {ratio:.3f}  ({project.mode}; by CPU time: "
          f"{bare.cpu_ms / project.cpu_ms:.3f}, {project.cpu_ms:.2f} vs {bare.cpu_ms:.2f} ms "
          "CPU per update)")
    if any(r.side == "lean" for r in concurrent):
        lean = _median(concurrent, "lean")
        print(f"ceiling (lean: the same read and card reply from one handler on a bare "
              f"Dispatcher) lean/bare = {lean.rate / bare.rate:.3f}, by CPU time "
              f"{bare.cpu_ms / lean.cpu_ms:.3f} ({lean.cpu_ms:.2f} ms CPU per update, "
              f"p99 {lean.p99_ms:.0f} ms); project/lean = {project.rate / lean.rate:.3f}")
    if sequential:
        sp, sb = _median(sequential, "project"), _median(sequential, "bare")
        print(f"ratio project/bare = {sp.rate / sb.rate:.3f}  (sequential)")
    runs = ", ".join(f"{r.side} {r.rate:.0f}/s" for r in concurrent + sequential)
    print(f"all runs: {runs}")
    print(f"project per run: {project.uploads} QR uploads, {project.reuses} cards by stored "
          f"file_id, {project.statements / project.updates:.2f} SQL statements per update; "
          f"all {args.updates} updates answered in every run")
    print(goal("chat_ratio", ratio, ">=", 0.40))
    print(goal("chat_p99_ms", project.p99_ms, "<=", 50))


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp:
        workdir = Path(tmp)
        template = workdir / "template.db"
        started = time.perf_counter()
        await prepare_template(template, args.members, args.batch)
        prepared = time.perf_counter() - started
        print(f"(registered {args.members} members in {prepared:.1f}s, untimed)", file=sys.stderr)

        raw = card_updates(args.updates, args.members)
        concurrent: list[Result] = []
        for run_no in range(args.rounds):  # alternating, so drift and noise hit both sides
            concurrent.append(progress(
                await run_project(template, workdir, raw, args.members, args.batch, run_no)))
            concurrent.append(progress(await run_bare(raw, args.batch)))
            if args.lean:
                concurrent.append(progress(await run_lean(
                    template, workdir, raw, args.members, args.batch, run_no)))
        sequential: list[Result] = []
        if args.sequential:
            sequential.append(progress(
                await run_project(template, workdir, raw, args.members, 1, args.rounds)))
            sequential.append(progress(await run_bare(raw, 1)))
    print(f"(total {time.perf_counter() - started:.0f}s)", file=sys.stderr)
    report(args, concurrent, sequential)


def progress(result: Result) -> Result:
    print(f"({result.side}, {result.mode}: {result.updates} updates in {result.seconds:.1f}s)",
          file=sys.stderr)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=5000, help="/card updates (default 5000)")
    parser.add_argument("--members", type=int, default=1000, help="members (default 1000)")
    parser.add_argument("--batch", type=int, default=50,
                        help="updates fed concurrently per batch (default 50)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating project/bare rounds, the median of each reported "
                        "(default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="1,000 updates from 200 members: the same figures in seconds")
    parser.add_argument("--no-lean", dest="lean", action="store_false",
                        help="skip the lean side (the ceiling, for information)")
    parser.add_argument("--sequential", action="store_true",
                        help="also one run per side feeding the updates one at a time")
    args = parser.parse_args(argv)
    if args.quick:
        args.updates, args.members = 1000, 200
    if min(args.updates, args.members, args.batch, args.rounds) < 1:
        parser.error("--updates, --members, --batch and --rounds must be positive")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
