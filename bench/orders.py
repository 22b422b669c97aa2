"""Till throughput: orders per second through the real HTTP API beside the bare commit rate.

Builds the whole application with ``bot.app.create_app`` on a fresh SQLite database file
(the project's default engine settings: WAL, synchronous=NORMAL, busy timeout, BEGIN IMMEDIATE
for writes), registers members (untimed), and serves ``App.http`` with the project's
``EmbeddedServer`` (uvicorn) on a loopback port inside this process, as ``bot.app.run`` does.

* **orders/s** -- N ``POST /api/v1/orders`` (distinct order ids, random members, amounts
  1.00..500.00, some redeeming points the member is sure to have: those name the member by a
  one-time spend code, issued per member in the untimed setup of each round, as the member's
  "Pay with points" would; the others by the member code), over real loopback HTTP/1.1
  with keep-alive and C requests in flight. By default the client (httpx) runs in a separate
  process so that its CPU time is not charged to the server's event loop; ``--client inprocess``
  puts it in the server's process and loop instead. Every answer must be 201.
* **commits/s** -- M tiny write transactions on the same database file, one after the other:
  ``write_transaction`` (BEGIN IMMEDIATE) + one INSERT into a scratch table + COMMIT, through an
  engine from ``bot.db.create_engine`` and a fresh session each, like a request.

The two alternate (orders, commits, orders, commits by default) and the best of each is
reported, with their ratio. At the end the ledger invariant is checked on the database.

Usage::

    python bench/orders.py [--orders 2000] [--commits 2000] [--concurrency 8]
                           [--members 200] [--rounds 2] [--client process|inprocess]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

import httpx  # noqa: E402

POS_TOKEN = "bench-token"
BOT_TOKEN = "123456789:BENCH-token-xxxxxxxxxxxx"
REDEEM_SHARE = 0.2  # share of orders that offset points
MAX_REDEEM = 50  # points; 0.50 is within the 50% cap of the smallest order (1.00)
MIN_AMOUNT, MAX_AMOUNT = 100, 50_000  # minor units: "1.00" .. "500.00"
SPEND_CODES_PER_MEMBER = 8  # per round; a member out of codes pays without points


# --------------------------------------------------------------------------------------------
# The client: used in a child process (default) or in the server's own loop.
# --------------------------------------------------------------------------------------------


@dataclass
class ClientResult:
    orders: int
    elapsed: float
    failures: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    first_failures: list[str] = field(default_factory=list)
    replayed: int = 0
    redeemed_orders: int = 0
    latencies_ms: list[float] = field(default_factory=list)


async def drive_orders(
    base_url: str,
    members: dict[str, int],
    *,
    count: int,
    concurrency: int,
    prefix: str,
    seed: int,
    spend_codes: dict[str, list[str]] | None = None,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> ClientResult:
    """Post ``count`` orders with ``concurrency`` in flight; ``members`` maps code -> balance,
    ``spend_codes`` code -> the member's unused one-time spend codes (needed to redeem).

    A redemption is only planned from points reserved out of what the member surely has (the
    balance before the round plus points earned by answers already received), so every order
    is valid whatever order the server happens to run them in."""
    rng = random.Random(seed)
    codes = sorted(members)
    available = dict(members)
    unused = {code: list(codes_) for code, codes_ in (spend_codes or {}).items()}
    headers = {"Authorization": f"Bearer {POS_TOKEN}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    result = ClientResult(orders=count, elapsed=0.0)
    statuses: Counter[str] = Counter()
    next_index = 0

    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, http1=True, http2=False,
        timeout=httpx.Timeout(60.0),
    ) as client:
        # Untimed warm-up: open every keep-alive connection once.
        warm = await asyncio.gather(*(client.get("/healthz") for _ in range(concurrency)))
        bad = [r for r in warm if r.status_code != 200]
        if bad:
            raise RuntimeError(f"server not healthy: {bad[0].status_code} {bad[0].text[:200]}")
        if ready is not None:
            await ready()  # the server side takes its "before" counts, then we start

        async def worker() -> None:
            nonlocal next_index
            while next_index < count:
                index = next_index
                next_index += 1
                code = rng.choice(codes)
                amount = rng.randint(MIN_AMOUNT, MAX_AMOUNT)
                body: dict[str, Any] = {
                    "order_id": f"{prefix}-{index:06d}", "member": code,
                    "amount": f"{amount // 100}.{amount % 100:02d}",
                }
                redeem = 0
                if rng.random() < REDEEM_SHARE and unused.get(code):
                    cap = amount * 50 // 100  # minor units; 100 points = 1.00
                    redeem = min(MAX_REDEEM, cap, available[code])
                    if redeem > 0:
                        redeem = rng.randint(1, redeem)
                        available[code] -= redeem
                        body["redeem_points"] = redeem
                        body["member"] = unused[code].pop()  # spending needs the member there
                started = time.perf_counter()
                try:
                    response = await client.post("/api/v1/orders", json=body)
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                    result.failures += 1
                    if len(result.first_failures) < 5:
                        result.first_failures.append(f"{body['order_id']}: {exc!r}")
                    continue
                result.latencies_ms.append((time.perf_counter() - started) * 1000)
                statuses[str(response.status_code)] += 1
                if response.status_code != 201:
                    result.failures += 1
                    if len(result.first_failures) < 5:
                        result.first_failures.append(
                            f"{body['order_id']} {body}: {response.status_code} {response.text[:300]}"
                        )
                    continue
                if response.headers.get("Idempotent-Replayed") == "true":
                    result.replayed += 1
                answer = response.json()
                if redeem:
                    result.redeemed_orders += 1
                    if answer["points_redeemed"] != redeem:
                        result.failures += 1
                available[code] += int(answer["points_earned"])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.elapsed = time.perf_counter() - started
    result.statuses = dict(statuses)
    return result


def client_main(spec_path: str) -> None:
    """Entry point of the client process: read the round's spec, print the result as JSON."""
    spec = json.loads(Path(spec_path).read_text())

    async def ready() -> None:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # "go"

    result = asyncio.run(
        drive_orders(
            spec["base_url"], spec["members"], count=spec["count"],
            concurrency=spec["concurrency"], prefix=spec["prefix"], seed=spec["seed"],
            spend_codes=spec["spend_codes"], ready=ready,
        )
    )
    print(json.dumps(result.__dict__), flush=True)


# --------------------------------------------------------------------------------------------
# The server side and the measurements.
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SqlCounter:
    """Counts the SQL transactions and statements the application's engine runs."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.begins: Counter[str] = Counter()
        self.begin_wait = 0.0  # seconds spent in BEGIN IMMEDIATE (waiting for the write lock)
        self.statements = 0
        self.commits = 0
        self.rollbacks = 0
        sync_engine = engine.sync_engine
        event.listen(sync_engine, "before_cursor_execute", self._statement)
        event.listen(sync_engine, "after_cursor_execute", self._statement_done)
        event.listen(sync_engine, "commit", self._commit)
        event.listen(sync_engine, "rollback", self._rollback)

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        head = statement.lstrip()[:16].upper()
        if head.startswith("BEGIN"):
            mode = head.split()[1] if len(head.split()) > 1 else "DEFERRED"
            self.begins[mode] += 1
            if mode == "IMMEDIATE":
                _conn.info["bench_begin"] = time.perf_counter()
        else:
            self.statements += 1

    def _statement_done(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        started = conn.info.pop("bench_begin", None)
        if started is not None:
            self.begin_wait += time.perf_counter() - started

    def _commit(self, _conn: Any) -> None:
        self.commits += 1

    def _rollback(self, _conn: Any) -> None:
        self.rollbacks += 1

    def snapshot(self) -> dict[str, int]:
        return {
            "immediate": self.begins["IMMEDIATE"], "deferred": self.begins["DEFERRED"],
            "statements": self.statements, "commits": self.commits, "rollbacks": self.rollbacks,
            "begin_wait": self.begin_wait,
        }

    def delta(self, before: dict[str, float]) -> dict[str, float]:
        now = self.snapshot()
        return {key: now[key] - before[key] for key in now}


async def member_balances(session_factory: Any) -> dict[str, int]:
    from sqlalchemy import select

    from domain.models import Member

    async with session_factory() as session:
        rows = (await session.execute(select(Member.code, Member.points_balance))).all()
    return {code: int(balance) for code, balance in rows}


async def issue_spend_codes(
    session_factory: Any, shop: Any, per_member: int
) -> dict[str, list[str]]:
    """Untimed: ``per_member`` one-time spend codes for every member, as "Pay with points"."""
    from sqlalchemy import select

    from domain import spending
    from domain.models import Member

    async with session_factory() as session:
        rows = (await session.execute(select(Member.id, Member.code))).all()
        codes: dict[str, list[str]] = {}
        for member_id, code in rows:
            codes[code] = [
                (await spending.issue(session, shop, member_id)).code for _ in range(per_member)
            ]
    return codes


async def run_orders_round(
    base_url: str, session_factory: Any, counter: SqlCounter, *, args: argparse.Namespace,
    round_no: int, workdir: Path, shop: Any,
) -> tuple[ClientResult, dict[str, float]]:
    """One round of orders; also the application's SQL counts during the timed part."""
    members = await member_balances(session_factory)
    spend_codes = await issue_spend_codes(session_factory, shop, SPEND_CODES_PER_MEMBER)
    prefix, seed = f"B{round_no}", 1000 + round_no
    before: dict[str, float] = {}
    if args.client == "inprocess":
        async def ready() -> None:
            before.update(counter.snapshot())

        result = await drive_orders(
            base_url, members, count=args.orders, concurrency=args.concurrency,
            prefix=prefix, seed=seed, spend_codes=spend_codes, ready=ready,
        )
        return result, counter.delta(before)
    spec = workdir / f"client-{round_no}.json"
    spec.write_text(json.dumps({
        "base_url": base_url, "members": members, "count": args.orders,
        "concurrency": args.concurrency, "prefix": prefix, "seed": seed,
        "spend_codes": spend_codes,
    }))
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), "--client-spec", str(spec),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    line = await process.stdout.readline()
    if line.strip() == b"ready":
        before.update(counter.snapshot())
        process.stdin.write(b"go\n")
        await process.stdin.drain()
    out, err = await process.communicate()
    if process.returncode != 0 or not before:
        raise RuntimeError(
            f"client process failed ({process.returncode}):\n{line.decode()}{out.decode()}"
            f"{err.decode()[-3000:]}"
        )
    after = counter.delta(before)
    return ClientResult(**json.loads(out.decode().strip().splitlines()[-1])), after


async def run_commits_round(engine: Any, count: int, round_no: int, concurrency: int = 1) -> float:
    """``count`` one-INSERT write transactions, ``concurrency`` at a time (default one after
    the other), each in a fresh session; returns the elapsed seconds."""
    from sqlalchemy import text

    from bot.db import create_session_factory
    from domain.transaction import write_transaction

    factory = create_session_factory(engine)
    insert = text("INSERT INTO bench_commit (n) VALUES (:n)")
    numbers = iter(range(count))

    async def worker() -> None:
        for i in numbers:
            async with factory() as session:
                async with write_transaction(session):
                    await session.execute(insert, {"n": round_no * 1_000_000 + i})

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def check_ledger(session_factory: Any) -> tuple[int, list[str]]:
    """Every member: balance == sum(ledger) and balance == sum(lots.remaining) - debt."""
    from sqlalchemy import func, select

    from domain.models import LedgerEntry, Member, PointsLot

    async with session_factory() as session:
        ledger = dict(
            (await session.execute(
                select(LedgerEntry.member_id, func.sum(LedgerEntry.amount))
                .group_by(LedgerEntry.member_id)
            )).all()
        )
        lots = dict(
            (await session.execute(
                select(PointsLot.member_id, func.sum(PointsLot.remaining))
                .group_by(PointsLot.member_id)
            )).all()
        )
        members = (await session.execute(
            select(Member.id, Member.code, Member.points_balance, Member.points_debt)
        )).all()
    problems = []
    for member_id, code, balance, debt in members:
        in_ledger = int(ledger.get(member_id) or 0)
        in_lots = int(lots.get(member_id) or 0) - int(debt)
        if not (balance == in_ledger == in_lots):
            problems.append(f"{code}: balance {balance}, ledger {in_ledger}, lots-debt {in_lots}")
    return len(members), problems


async def count_rows(session_factory: Any, table: str) -> int:
    from sqlalchemy import text

    async with session_factory() as session:
        return int((await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


async def main(args: argparse.Namespace) -> int:
    import uvicorn
    from sqlalchemy import text

    from bot.app import create_app
    from bot.db import create_engine, migrate
    from bot.http import EmbeddedServer
    from bot.settings import Settings
    from domain.members import TelegramProfile, register

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    workdir_handle = tempfile.TemporaryDirectory(prefix="bench-orders-")
    workdir = Path(workdir_handle.name)
    db_path = workdir / "companion.db"
    url = f"sqlite+aiosqlite:///{db_path}"
    await asyncio.to_thread(migrate, url)

    port = free_port()
    settings = Settings(
        _env_file=None, bot_token=BOT_TOKEN, database_url=url, pos_api_token=POS_TOKEN,
        api_port=port,
    )
    app = create_app(settings)
    counter = SqlCounter(app.engine)
    commit_engine = create_engine(url)
    server = EmbeddedServer(
        uvicorn.Config(
            app.http, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
        )
    )
    serving = asyncio.create_task(server.serve(), name="http")
    exit_code = 0
    try:
        # Members, untimed.
        setup_started = time.perf_counter()
        for i in range(args.members):
            async with app.session_factory() as session:
                await register(session, app.shop, TelegramProfile(
                    telegram_id=10_000_000 + i, first_name=f"Bench{i}", last_name=None,
                    username=None, language_code="en",
                ))
        async with commit_engine.begin() as connection:
            await connection.execute(text(
                "CREATE TABLE IF NOT EXISTS bench_commit (id INTEGER PRIMARY KEY, n INTEGER)"
            ))
        setup_seconds = time.perf_counter() - setup_started
        for _ in range(500):
            if server.started:
                break
            if serving.done():
                serving.result()
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError("the HTTP server did not start")
        base_url = f"http://127.0.0.1:{port}"

        order_rates: list[float] = []
        commit_rates: list[float] = []
        latencies: list[float] = []
        per_order: dict[str, float] = {}
        redeemed = 0
        for round_no in range(1, args.rounds + 1):
            result, sql = await run_orders_round(
                base_url, app.session_factory, counter, args=args, round_no=round_no,
                workdir=workdir, shop=app.shop,
            )
            if result.failures or result.replayed:
                print(f"ABORT: round {round_no}: {result.failures} failed orders, "
                      f"{result.replayed} replayed; statuses {result.statuses}")
                for line in result.first_failures:
                    print("  ", line)
                return 1
            rate = result.orders / result.elapsed
            order_rates.append(rate)
            latencies = result.latencies_ms if rate >= max(order_rates) else latencies
            redeemed += result.redeemed_orders
            per_order = {k: v / result.orders for k, v in sql.items()}
            print(f"  round {round_no}: orders  {result.orders:6d} in {result.elapsed:6.2f} s "
                  f"= {rate:8.1f} orders/s  (all 201; {result.redeemed_orders} redeemed points)",
                  flush=True)

            elapsed = await run_commits_round(
                commit_engine, args.commits, round_no, args.commit_concurrency
            )
            commit_rates.append(args.commits / elapsed)
            print(f"  round {round_no}: commits {args.commits:6d} in {elapsed:6.2f} s "
                  f"= {args.commits / elapsed:8.1f} commits/s", flush=True)

        best_orders, best_commits = max(order_rates), max(commit_rates)
        total_orders = await count_rows(app.session_factory, "orders")
        total_commits = await count_rows(app.session_factory, "bench_commit")
        checked, problems = await check_ledger(app.session_factory)

        client = (
            "separate client process (httpx, HTTP/1.1 keep-alive)" if args.client == "process"
            else "in the server's process and event loop (httpx, HTTP/1.1 keep-alive)"
        )
        commit_mode = (
            "sequential" if args.commit_concurrency == 1
            else f"{args.commit_concurrency} in flight"
        )
        print()
        print(f"python {platform.python_version()} ({platform.python_implementation()}), "
              f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs, {platform.system()} "
              f"{platform.machine()}")
        print(f"database: fresh SQLite file, project defaults (WAL, synchronous=NORMAL, "
              f"BEGIN IMMEDIATE for writes); {args.members} members, "
              f"setup {setup_seconds:.1f} s untimed")
        print(f"server: uvicorn EmbeddedServer on 127.0.0.1 in this process; client: {client}; "
              f"concurrency {args.concurrency} in flight")
        print(f"per order (app engine): {per_order['immediate']:.2f} write transactions "
              f"(BEGIN IMMEDIATE), {per_order['deferred']:.2f} read transactions, "
              f"{per_order['commits']:.2f} commits, {per_order['statements']:.1f} SQL statements")
        print(f"  mean time in BEGIN IMMEDIATE per order (incl. waiting for the write lock): "
              f"{per_order['begin_wait'] * 1000:.1f} ms")
        print(f"latency (best orders round): p50 {percentile(latencies, 0.5):.1f} ms, "
              f"p99 {percentile(latencies, 0.99):.1f} ms")
        print(f"rounds: {args.rounds} x (orders {args.orders}, commits {args.commits}), "
              f"best of each; rows: {total_orders} orders, {total_commits} scratch commits")
        print()
        print(f"orders/s  = {best_orders:.1f}   (rounds: "
              f"{', '.join(f'{r:.1f}' for r in order_rates)})")
        print(f"commits/s = {best_commits:.1f}   (rounds: "
              f"{', '.join(f'{r:.1f}' for r in commit_rates)}; one INSERT per BEGIN IMMEDIATE"
              f"/COMMIT, {commit_mode})")
        print(f"ratio orders/commits = {best_orders / best_commits:.2f}")
        print()
        expected_orders = args.orders * args.rounds
        if total_orders != expected_orders:
            print(f"orders in database: {total_orders}, expected {expected_orders}: MISMATCH")
            exit_code = 1
        if problems:
            print(f"ledger invariant: BROKEN for {len(problems)} of {checked} members")
            for line in problems[:10]:
                print("  ", line)
            exit_code = 1
        else:
            print(f"ledger invariant: ok ({checked} members: balance == sum(ledger) "
                  f"== sum(lots.remaining) - debt)")
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        await commit_engine.dispose()
        await app.close()
        workdir_handle.cleanup()
    return exit_code


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=2000, help="orders per round")
    parser.add_argument("--commits", type=int, default=2000, help="bare commits per round")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument(
        "--commit-concurrency", type=int, default=1,
        help="bare write transactions in flight (default 1: the sequential commit rate)",
    )
    parser.add_argument("--members", type=int, default=200, help="members registered (untimed)")
    parser.add_argument("--rounds", type=int, default=2, help="orders/commits alternations")
    parser.add_argument(
        "--client", choices=("process", "inprocess"), default="process",
        help="HTTP client in a separate process (default) or in the server's event loop",
    )
    parser.add_argument("--client-spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.orders, args.commits, args.concurrency, args.commit_concurrency, args.members,
           args.rounds) < 1:
        parser.error("every count must be >= 1")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.client_spec:
        client_main(arguments.client_spec)
        sys.exit(0)
    sys.exit(asyncio.run(main(arguments)))
