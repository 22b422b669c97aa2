"""Outbox delivery throughput: N pending receipts through the real ``OutboxSender`` (at its
default rate, 25/s) to a fake Bot API that answers 429 beyond 30 messages in any second.

A fresh SQLite database (``bot.db.migrate``) gets N members and N pending receipt pushes,
inserted directly with SQL (untimed). The sender's ``deliver_pending`` is timed until all are
sent. Printed: the sustained rate (messages/s), its ratio to Telegram's 30/s, the number of
429 answers, and a check that every push is "sent" and each chat got exactly one message.

The fake runs in a thread with its own event loop by default (Telegram's clock does not stall
when the sender's loop is busy); ``--fake-in-loop`` serves it from the sender's own loop, where
a stall of the shared loop makes requests sent evenly arrive bunched.

    python bench/sender.py [--pushes 3000] [--rate 25] [--fake-in-loop]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiogram import Bot  # noqa: E402
from aiogram.client.default import DefaultBotProperties  # noqa: E402
from aiogram.client.session.aiohttp import AiohttpSession  # noqa: E402
from aiogram.client.telegram import TelegramAPIServer  # noqa: E402
from aiogram.enums import ParseMode  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from bot.db import create_engine, create_session_factory, migrate_async  # noqa: E402
from bot.sender import OutboxSender  # noqa: E402
from bot.settings import DEFAULT_PROGRAM_FILE  # noqa: E402
from handlers.texts import load_texts  # noqa: E402
from domain.clock import SystemClock  # noqa: E402
from domain.models import Member, Push  # noqa: E402
from domain.orders import OrderReceipt  # noqa: E402
from domain.program import load_program  # noqa: E402
from domain.shop import Shop  # noqa: E402
from handlers.outbox_signal import OutboxSignal  # noqa: E402
from tests.fake_telegram import FakeTelegram  # noqa: E402

TELEGRAM_LIMIT = 30
FIRST_CHAT = 100_000_000


def _receipt(n: int) -> str:
    receipt = OrderReceipt(
        order_id=f"bench-{n}", member_code=f"B{n:07d}", amount="88.00", coupon_code=None,
        coupon_discount="0.00", points_redeemed=0, points_offset="0.00", to_pay="88.00",
        points_earned=88, growth_earned=88, balance=188, tier="member", previous_tier="member",
        tier_changed=False, next_tier="silver", growth_to_next_tier=4912,
        occurred_at="2026-03-10T02:00:00+00:00",
    )
    return json.dumps(asdict(receipt), ensure_ascii=False, sort_keys=True)


async def _fill(url: str, pushes: int) -> None:
    engine = create_engine(url)
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        await connection.execute(insert(Member), [
            {
                "id": n + 1, "telegram_id": FIRST_CHAT + n, "code": f"B{n:07d}",
                "first_name": f"Member {n}", "language": "zh" if n % 3 == 0 else "en",
                "created_at": now,
            }
            for n in range(pushes)
        ])
        await connection.execute(insert(Push), [
            {
                "key": f"receipt:bench-{n}", "member_id": n + 1, "kind": "receipt",
                "payload": _receipt(n), "marketing": False, "status": "pending",
                "attempts": 0, "not_before": now, "created_at": now,
            }
            for n in range(pushes)
        ])
    await engine.dispose()


@asynccontextmanager
async def _serving(fake: FakeTelegram, *, in_loop: bool) -> AsyncIterator[None]:
    """The fake Bot API in this event loop, or (default) in a thread with its own loop: like
    the real one, its clock then does not stall when the sender's loop is busy."""
    if in_loop:
        async with fake:
            yield
        return
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-bot-api", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fake.start(), loop).result()
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(fake.stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


async def main(pushes: int, rate: float | None, fake_in_loop: bool) -> int:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite+aiosqlite:///{directory}/sender.db"
        await migrate_async(url)
        await _fill(url, pushes)
        engine = create_engine(url)
        tz = ZoneInfo("Asia/Shanghai")
        shop = Shop(load_program(DEFAULT_PROGRAM_FILE), SystemClock(), tz)
        fake = FakeTelegram(rate_limit_per_second=TELEGRAM_LIMIT)
        async with _serving(fake, in_loop=fake_in_loop):
            bot = Bot(
                token="123456789:BENCH-token",
                session=AiohttpSession(api=TelegramAPIServer.from_base(fake.base_url)),
                default=DefaultBotProperties(parse_mode=ParseMode.HTML),
            )
            options = {} if rate is None else {"rate_per_second": rate}
            sender = OutboxSender(
                create_session_factory(engine), bot, load_texts(), shop,
                OutboxSignal(), **options,
            )
            started = time.perf_counter()
            handled = 0
            while handled < pushes:
                delivered = await sender.deliver_pending()
                if not delivered:
                    break
                handled += delivered
            elapsed = time.perf_counter() - started
            await bot.session.close()

        by_status = select(Push.status, func.count()).group_by(Push.status)
        async with engine.connect() as connection:
            statuses = dict((await connection.execute(by_status)).all())
        await engine.dispose()
        accepted = Counter(
            c.params["chat_id"] for c in fake.calls_of("sendMessage") if not c.failed
        )

        sent = statuses.get("sent", 0)
        sustained = sent / elapsed
        exactly_once = len(accepted) == pushes and set(accepted.values()) == {1}
        where = "in the sender's loop" if fake_in_loop else "in its own thread"
        print(f"pushes: {pushes:,} to {pushes:,} members, sender rate limit "
              f"{1 / sender.limiter.interval:g}/s, "
              f"fake Bot API limit {TELEGRAM_LIMIT}/s ({where})")
        print(f"sent: {sent:,} in {elapsed:.1f} s")
        print(f"sustained rate: {sustained:.2f} msgs/s")
        print(f"ratio to {TELEGRAM_LIMIT}/s: {sustained / TELEGRAM_LIMIT:.3f}")
        print(f"429 answers: {fake.rate_limited}")
        print(f"statuses: {statuses}")
        print(f"every push sent, each chat exactly once: "
              f"{'yes' if sent == pushes and exactly_once else 'NO'}")
        return 0 if sent == pushes and exactly_once else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=None, help="default: the sender's own")
    parser.add_argument(
        "--fake-in-loop", action="store_true",
        help="serve the fake Bot API in the sender's own event loop (default: its own thread)",
    )
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.pushes, args.rate, args.fake_in_loop)))
