"""Several workers on one PostgreSQL database: updates/s and orders/s for 1, 2 and 3 workers.

For each worker count the database is emptied, ``--members`` members register (untimed, through
the workers' webhooks), then two timed rounds run against real ``python -m bot`` processes in
webhook mode, all on this machine:

* updates: ``--updates`` ``/points`` updates delivered by a fake Bot API to the workers'
  webhooks round-robin, ``--concurrency`` in flight; timed until every one is answered;
* orders: ``--orders`` till orders posted round-robin to the workers' till API, as many in
  flight; timed until the last answer.

The figures are printed side by side with the ratio to one worker, and one ``goal`` line per
goal. Every process (the workers, PostgreSQL, the fake and the clients) shares this machine's
cores: on 2 cores a second worker can add at most one core's worth, a third nothing more.

Usage::

    DATABASE_URL=postgresql+asyncpg://user@127.0.0.1/db python bench/scale.py [--quick]
        [--workers 1,2,3] [--updates 3000] [--orders 2000] [--members 300] [--concurrency 40]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

import httpx  # noqa: E402

from bench.orders import goal, reset_postgres  # noqa: E402
from tests.fake_telegram import FakeTelegram, message_update  # noqa: E402

TOKEN = "123456789:BENCH-token-for-the-fake-bot-api"
SECRET = "bench-scale-secret"
POS_TOKEN = "bench-till-token"


class Counted:
    """Answers per chat, scanned from the fake's calls as they come."""

    def __init__(self, fake: FakeTelegram) -> None:
        self.fake = fake
        self.seen = 0
        self.total = 0

    def refresh(self) -> int:
        calls = self.fake.calls
        self.total += sum(
            1 for c in calls[self.seen:] if c.method in ("sendMessage", "sendPhoto")
        )
        self.seen = len(calls)
        return self.total


async def start_workers(
    count: int, fake: FakeTelegram, url: str, folder: Path, files: list[IO[bytes]]
) -> list[tuple[asyncio.subprocess.Process, int]]:
    import socket

    env = {k: v for k, v in os.environ.items() if k not in {"BOT_TOKEN", "PYTHONPATH"}}
    workers = []
    for index in range(count):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        log = (folder / f"worker{count}-{index}.log").open("wb")
        files.append(log)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=PROJECT_DIR, stdout=log, stderr=log,
            env={**env, "BOT_TOKEN": TOKEN, "TELEGRAM_API_URL": fake.base_url,
                 "DATABASE_URL": url, "WEBHOOK_URL": "https://shop.example/telegram/webhook",
                 "WEBHOOK_SECRET": SECRET, "POS_API_TOKEN": POS_TOKEN, "API_PORT": str(port),
                 "DATABASE_POOL": "15"},
        )
        workers.append((process, port))
    async with httpx.AsyncClient() as client:
        deadline = time.monotonic() + 120
        for _, port in workers:
            while True:
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"worker on port {port} did not start; see {folder}")
                await asyncio.sleep(0.2)
    while len(fake.calls_of("setWebhook")) < count:
        await asyncio.sleep(0.1)
    fake.webhook_targets = [f"http://127.0.0.1:{port}/telegram/webhook" for _, port in workers]
    return workers


async def deliver_all(
    fake: FakeTelegram, updates: list[dict[str, object]], concurrency: int
) -> float:
    counted = Counted(fake)
    base = counted.refresh()
    queue = list(reversed(updates))
    statuses: Counter[int] = Counter()

    async def lane() -> None:
        while queue:
            statuses[await fake.deliver(queue.pop())] += 1

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    while counted.refresh() - base < len(updates):
        if time.perf_counter() - started > 300:
            raise SystemExit("updates went unanswered (throttled?)")
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    if set(statuses) != {200}:
        raise SystemExit(f"webhook answers: {dict(statuses)}")
    return elapsed


async def post_orders(
    ports: list[int], codes: list[str], count: int, concurrency: int, prefix: str
) -> float:
    queue = list(range(count))
    headers = {"Authorization": f"Bearer {POS_TOKEN}"}
    statuses: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=concurrency * 2)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:

        async def lane() -> None:
            while queue:
                index = queue.pop()
                port = ports[index % len(ports)]
                answer = await client.post(
                    f"http://127.0.0.1:{port}/api/v1/orders",
                    json={"order_id": f"{prefix}{index}", "member": codes[index % len(codes)],
                          "amount": "88.00"},
                )
                statuses[answer.status_code] += 1

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if set(statuses) - {200, 201}:
        raise SystemExit(f"till answers: {dict(statuses)}")
    return elapsed


async def member_codes(url: str) -> list[str]:
    from sqlalchemy import select

    from bot.db import create_engine
    from domain.models import Member

    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return list((await connection.scalars(select(Member.code))).all())
    finally:
        await engine.dispose()


async def one_size(
    count: int, url: str, args: argparse.Namespace, folder: Path
) -> tuple[float, float]:
    from bot.db import migrate

    await asyncio.to_thread(migrate, url)
    await reset_postgres(url)
    files: list[IO[bytes]] = []
    async with FakeTelegram() as fake:
        workers = await start_workers(count, fake, url, folder, files)
        try:
            members = range(900_001, 900_001 + args.members)
            await deliver_all(
                fake, [message_update(t, "/start") for t in members], args.concurrency
            )
            codes = await member_codes(url)
            updates = [
                message_update(members[i % len(members)], "/points")
                for i in range(args.updates)
            ]
            updates_s = len(updates) / await deliver_all(fake, updates, args.concurrency)
            ports = [port for _, port in workers]
            orders_s = args.orders / await post_orders(
                ports, codes, args.orders, args.concurrency, f"S{count}-"
            )
        finally:
            for process, _ in workers:
                process.send_signal(signal.SIGTERM)
            for process, _ in workers:
                await asyncio.wait_for(process.wait(), 60)
            for handle in files:
                handle.close()
    return updates_s, orders_s


async def main(args: argparse.Namespace) -> int:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgresql+asyncpg://"):
        print("set DATABASE_URL=postgresql+asyncpg://... (the bench empties that database)")
        return 2
    counts = [int(n) for n in args.workers.split(",")]
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    results: dict[int, tuple[float, float]] = {}
    for count in counts:
        results[count] = await one_size(count, url, args, folder)
        print(f"  measured {count} worker(s)", file=sys.stderr)
    one = results[counts[0]]
    print(f"{os.cpu_count()} cores; {args.updates} updates from {args.members} members, "
          f"{args.orders} orders, {args.concurrency} in flight; worker logs in {folder}")
    print(f"{'workers':>8} {'updates/s':>10} {'ratio':>6} {'orders/s':>9} {'ratio':>6}")
    for count, (updates_s, orders_s) in results.items():
        print(f"{count:>8} {updates_s:>10.1f} {updates_s / one[0]:>6.2f} "
              f"{orders_s:>9.1f} {orders_s / one[1]:>6.2f}")
    if 2 in results and 1 in results:
        print(goal("scale_updates_2_workers_ratio", results[2][0] / results[1][0], ">=", 1.3, 2))
        print(goal("scale_orders_2_workers_ratio", results[2][1] / results[1][1], ">=", 1.3, 2))
    if 3 in results and 2 in results:
        # On 2 cores a third worker adds no core: it must not cost much either.
        print(goal("scale_updates_3_vs_2_workers", results[3][0] / results[2][0], ">=", 0.9, 2))
        print(goal("scale_orders_3_vs_2_workers", results[3][1] / results[2][1], ">=", 0.9, 2))
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,3")
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--members", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="600 updates and 400 orders")
    args = parser.parse_args(argv)
    if args.quick:
        args.updates, args.orders, args.members = 600, 400, 100
    return args


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
