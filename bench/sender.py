"""Outbox delivery throughput: N pending receipts through the real ``OutboxSender`` (at its
default rate) to a fake Bot API that answers 429 beyond 30 messages in any second.

A fresh SQLite database (``bot.db.migrate``) gets N members and N pending receipt pushes,
inserted directly with SQL (untimed). The sender's ``deliver_pending`` is timed until all are
sent. The fake Bot API runs in its own process (as Telegram does: its clock never stalls with
the sender's loop or GIL) and stamps the arrival of every message it accepts. Printed: the
sustained rate (messages/s) and its ratio to Telegram's 30/s, the number of 429 answers, the
most messages the fake accepted in any one-second window, and a check that every push is
"sent" and each chat got exactly one message.

    python bench/sender.py [--pushes 3000] [--rate 29] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode
from sqlalchemy import func, insert, select

from bot.db import create_engine, create_session_factory, migrate_async
from bot.sender import OutboxSender
from bot.settings import DEFAULT_PROGRAM_FILE
from domain.clock import SystemClock
from domain.models import Member, Push
from domain.orders import OrderReceipt
from domain.program import load_program
from domain.shop import Shop
from handlers.outbox_signal import OutboxSignal
from handlers.texts import load_texts
from tests.fake_telegram import Call, FakeTelegram

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
    # As domain.orders writes a receipt push: the receipt, its local day, money in minor units.
    payload = asdict(receipt) | {
        "day": "2026-03-10", "amount_minor": 8800, "coupon_discount_minor": 0,
        "points_offset_minor": 0, "paid_minor": 8800,
    }
    return json.dumps(payload, ensure_ascii=False, sort_keys=True)


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


class _StampingFake(FakeTelegram):
    """The fake Bot API, noting when each message it accepted arrived."""

    def __init__(self, limit: int) -> None:
        super().__init__(rate_limit_per_second=limit)
        self.accepted_at: list[float] = []

    async def _record(self, call: Call) -> None:
        if call.method == "sendMessage" and not call.failed:
            self.accepted_at.append(time.monotonic())
        await super()._record(call)


def _fake_process(connection: Connection, limit: int) -> None:
    """Serve the fake until told to stop, then send back what it saw."""

    async def serve() -> None:
        fake = _StampingFake(limit)
        await fake.start()
        connection.send(fake.base_url)
        await asyncio.get_running_loop().run_in_executor(None, connection.recv)
        chats = Counter(
            c.params["chat_id"] for c in fake.calls_of("sendMessage") if not c.failed
        )
        connection.send({
            "rate_limited": fake.rate_limited, "accepted_at": fake.accepted_at,
            "chats": dict(chats),
        })
        await fake.stop()

    asyncio.run(serve())


def _peak_per_second(stamps: list[float]) -> int:
    """The most arrivals in any one-second window (sliding, not calendar seconds)."""
    stamps = sorted(stamps)
    peak, start = 0, 0
    for end, stamp in enumerate(stamps):
        while stamp - stamps[start] >= 1.0:
            start += 1
        peak = max(peak, end - start + 1)
    return peak


async def main(pushes: int, rate: float | None) -> int:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite+aiosqlite:///{directory}/sender.db"
        await migrate_async(url)
        await _fill(url, pushes)
        engine = create_engine(url)
        tz = ZoneInfo("Asia/Shanghai")
        shop = Shop(load_program(DEFAULT_PROGRAM_FILE), SystemClock(), tz)
        ours, theirs = multiprocessing.get_context("spawn").Pipe()
        fake = multiprocessing.get_context("spawn").Process(
            target=_fake_process, args=(theirs, TELEGRAM_LIMIT), name="fake-bot-api"
        )
        fake.start()
        base_url = ours.recv()
        try:
            bot = Bot(
                token="123456789:BENCH-token",
                session=AiohttpSession(api=TelegramAPIServer.from_base(base_url)),
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
        finally:
            ours.send("stop")
            seen = ours.recv()
            fake.join(10)

        by_status = select(Push.status, func.count()).group_by(Push.status)
        async with engine.connect() as connection:
            statuses = dict((await connection.execute(by_status)).all())
        await engine.dispose()
        accepted = Counter(seen["chats"])
        peak = _peak_per_second(seen["accepted_at"])

        sent = statuses.get("sent", 0)
        sustained = sent / elapsed
        exactly_once = len(accepted) == pushes and set(accepted.values()) == {1}
        ratio = sustained / TELEGRAM_LIMIT
        print(f"pushes: {pushes:,} to {pushes:,} members, sender rate limit "
              f"{1 / sender.limiter.interval:g}/s, "
              f"fake Bot API limit {TELEGRAM_LIMIT}/s (in its own process)")
        print(f"sent: {sent:,} in {elapsed:.1f} s")
        print(f"sustained rate: {sustained:.2f} msgs/s")
        print(f"ratio to {TELEGRAM_LIMIT}/s: {ratio:.3f}")
        print(f"429 answers: {seen['rate_limited']}")
        print(f"most messages accepted in any one second: {peak}")
        print(f"statuses: {statuses}")
        print(f"every push sent, each chat exactly once: "
              f"{'yes' if sent == pushes and exactly_once else 'NO'}")
        print(_goal("sender_ratio", ratio, ">=", 0.95))
        print(_goal("sender_429", seen["rate_limited"], "<=", 0))
        print(_goal("sender_peak_per_second", peak, "<=", TELEGRAM_LIMIT))
        return 0 if sent == pushes and exactly_once else 1


def _goal(name: str, value: float, op: str, target: float) -> str:
    met = value >= target if op == ">=" else value <= target
    return f"goal {name}: {value:.3f} (target {op} {target:g}) {'met' if met else 'not met'}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=None, help="default: the sender's own")
    parser.add_argument("--quick", action="store_true", help="600 pushes: about 20 seconds")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(600 if args.quick else args.pushes, args.rate)))
