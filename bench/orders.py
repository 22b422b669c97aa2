"""Till throughput: orders per second through the real HTTP API beside the raw minimal order.

Builds the whole application with ``bot.app.create_app`` on a fresh SQLite database file
(the project's default engine settings: WAL, synchronous=NORMAL, busy timeout, BEGIN IMMEDIATE
for writes) or, with ``DATABASE_URL`` / ``--database-url`` set to a ``postgresql+asyncpg://``
URL, on that PostgreSQL database (WHICH IT EMPTIES); registers members (untimed), and serves
``App.http`` with the project's ``EmbeddedServer`` (uvicorn, ``bot.http.server_config``: the
project's connection-capped protocol) on a loopback port inside this process, as
``bot.app.run`` does, with logging as ``python -m bot`` sets it (INFO, one line per request)
written to a file in the work directory.

* **orders/s** -- N ``POST /api/v1/orders`` (distinct order ids, random members, amounts
  1.00..500.00, some redeeming points the member is sure to have: those name the member by a
  one-time spend code, issued per member in the untimed setup of each round, as the member's
  "Pay with points" would; the others by the member code), over real loopback HTTP/1.1
  with keep-alive and C requests in flight. By default the client (httpx) runs in a separate
  process so that its CPU time is not charged to the server's event loop; ``--client inprocess``
  puts it in the server's process and loop instead. Every answer must be 201.
* **raw tx/s** (the baseline the goals name) -- the minimal idempotent order transaction with
  the database's own driver and no framework: claim the order id (``INSERT ... ON CONFLICT DO
  NOTHING RETURNING``), update the member's balance (``UPDATE ... RETURNING``), insert a ledger
  entry, a points lot, a growth entry and an outbox push (``ON CONFLICT DO NOTHING``), commit;
  on scratch tables shaped like the project's (same unique keys and indexes) in the same
  database. SQLite: ``sqlite3``, one connection, WAL + synchronous=NORMAL, ``BEGIN IMMEDIATE``,
  transactions one after the other. PostgreSQL: ``asyncpg``, 8 connections (``--raw-clients``)
  each running transactions one after the other.
* **ceiling req/s** (for information) -- the same client, the same bodies, against a bare
  FastAPI route on another port of this process (same server config) that validates the
  project's own request model and answers a canned receipt through the same response model:
  no middleware, no auth, no database. The most this HTTP stack allows on this machine; when
  it is itself under a goal's share of the raw rate, no database work can meet that goal.
* **CPU per order** -- user + system CPU (``getrusage``, all threads) of the server process
  and of the client process over each timed part, divided by the orders: the client runs on
  the same cores, and what it burns is not available to the server.
* **commits/s** (for reference) -- M tiny write transactions through the project's stack, one
  after the other: ``write_transaction`` + one INSERT into a scratch table + COMMIT, through an
  engine from ``bot.db.create_engine`` and a fresh session each, like a request.

The four alternate (orders, ceiling, raw, commits; ``--rounds`` times) and the best of each
is reported; ``--profile FILE`` runs cProfile on the server's loop thread during the orders
rounds (slowing them) and prints its top. Also: SQL statements per order (counted with a ``before_cursor_execute`` listener),
p50/p99 order latency, and how long orders waited at the in-process SQLite writer gate
(``domain.transaction.queue_writers``). At the end the ledger invariant is checked, and one
``goal ...`` line per goal of issue 12 is printed.

Usage::

    python bench/orders.py [--quick] [--orders 2000] [--raw 20000] [--commits 2000]
                           [--concurrency 8] [--members 200] [--rounds 2]
                           [--client process|inprocess] [--database-url URL]
                           [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import os
import platform
import pstats
import random
import resource
import socket
import sqlite3
import statistics
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
    cpu_seconds: float = 0.0  # the client's own CPU (user + system) during the timed part


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

        cpu_before = process_cpu()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.elapsed = time.perf_counter() - started
        result.cpu_seconds = process_cpu() - cpu_before
    result.statuses = dict(statuses)
    return result


def process_cpu() -> float:
    """CPU seconds (user + system, all threads) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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

        from domain.transaction import gate_stats

        self.gate = gate_stats(engine)  # the in-process writer gate (SQLite), or None
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

    def snapshot(self) -> dict[str, float]:
        gate = self.gate
        return {
            "immediate": self.begins["IMMEDIATE"], "deferred": self.begins["DEFERRED"],
            "statements": self.statements, "commits": self.commits, "rollbacks": self.rollbacks,
            "begin_wait": self.begin_wait,
            "gate_writes": gate.writes if gate else 0, "gate_waited": gate.waited if gate else 0,
            "gate_wait": gate.wait_seconds if gate else 0.0,
        }

    def start(self) -> dict[str, float]:
        """The "before" figures of a timed part (and the gate's longest wait starts afresh)."""
        if self.gate is not None:
            self.gate.longest_wait = 0.0
        return self.snapshot()

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
    base_url: str, session_factory: Any, counter: SqlCounter | None, *,
    args: argparse.Namespace, round_no: int, workdir: Path, shop: Any,
    profiler: cProfile.Profile | None = None, label: str = "B",
) -> tuple[ClientResult, dict[str, float]]:
    """One round of orders; also the application's SQL counts during the timed part and the
    server process's CPU seconds (``server_cpu``; all its threads, the driver's included)."""
    members = await member_balances(session_factory)
    spend_codes = await issue_spend_codes(session_factory, shop, SPEND_CODES_PER_MEMBER)
    prefix, seed = f"{label}{round_no}", 1000 + round_no
    before: dict[str, float] = {}

    def start() -> None:
        before.update(counter.start() if counter is not None else {})
        before["server_cpu"] = process_cpu()
        if profiler is not None:
            profiler.enable()

    def stop() -> dict[str, float]:
        if profiler is not None:
            profiler.disable()
        cpu = process_cpu() - before.pop("server_cpu")
        return (counter.delta(before) if counter is not None else {}) | {"server_cpu": cpu}

    if args.client == "inprocess":
        async def ready() -> None:
            start()

        result = await drive_orders(
            base_url, members, count=args.orders, concurrency=args.concurrency,
            prefix=prefix, seed=seed, spend_codes=spend_codes, ready=ready,
        )
        return result, stop()
    spec = workdir / f"client-{label}{round_no}.json"
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
        start()
        process.stdin.write(b"go\n")
        await process.stdin.drain()
    out = await process.stdout.readline()  # the result: the timed part is over
    after = stop() if "server_cpu" in before else {}
    rest, err = await process.communicate()
    if process.returncode != 0 or not after:
        raise RuntimeError(
            f"client process failed ({process.returncode}):\n{line.decode()}{out.decode()}"
            f"{rest.decode()}{err.decode()[-3000:]}"
        )
    return ClientResult(**json.loads(out.decode())), after


# --------------------------------------------------------------------------------------------
# The ceiling: the same client against a route that validates the same body, no database.
# --------------------------------------------------------------------------------------------


def ceiling_app(program: Any) -> Any:
    """A bare FastAPI app: ``POST /api/v1/orders`` validates the project's own request model
    (the program's amount rule and redeem step) and answers a canned receipt through the same
    response model; nothing else (no middleware, no auth, no database). What this stack can
    do at best on this machine, for information."""
    from fastapi import FastAPI

    from handlers.api import AmountRule, OrderIn, OrderOut, _redeem_points

    model = AmountRule.of(program).for_model(OrderIn, redeem_points=_redeem_points(program))
    canned = {
        "order_id": "", "member_code": "K7QM-4PZJ", "amount": "1.00", "coupon_code": None,
        "coupon_discount": "0.00", "points_redeemed": 0, "points_offset": "0.00",
        "to_pay": "1.00", "points_earned": 0, "growth_earned": 1, "balance": 0,
        "tier": "silver", "previous_tier": "silver", "tier_changed": False,
        "next_tier": "gold", "growth_to_next_tier": 100,
        "occurred_at": "2025-01-01T00:00:00+00:00",
    }
    app = FastAPI()

    async def post_order(body: OrderIn) -> dict[str, Any]:
        # The client checks these two against what it sent; the rest is canned.
        return canned | {"order_id": body.order_id, "points_redeemed": body.redeem_points}

    post_order.__annotations__["body"] = model
    app.post("/api/v1/orders", status_code=201, response_model=OrderOut)(post_order)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


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


# --------------------------------------------------------------------------------------------
# The baseline: the minimal idempotent order transaction with the raw driver.
# --------------------------------------------------------------------------------------------

RAW_TABLES = ("bench_raw_pushes", "bench_raw_growth", "bench_raw_lots", "bench_raw_ledger",
              "bench_raw_orders", "bench_raw_members")


def raw_schema(id_type: str) -> list[str]:
    """Scratch tables shaped like the project's: the same unique keys and indexes."""
    return [
        f"CREATE TABLE bench_raw_members (id {id_type} PRIMARY KEY, balance INTEGER NOT NULL)",
        f"""CREATE TABLE bench_raw_orders (id {id_type} PRIMARY KEY,
            order_id VARCHAR(64) NOT NULL UNIQUE, member_id INTEGER NOT NULL
            REFERENCES bench_raw_members (id), amount INTEGER NOT NULL, points INTEGER NOT NULL,
            created_at VARCHAR(40) NOT NULL)""",
        "CREATE INDEX ix_bench_raw_orders_member ON bench_raw_orders (member_id)",
        f"""CREATE TABLE bench_raw_ledger (id {id_type} PRIMARY KEY, member_id INTEGER NOT NULL
            REFERENCES bench_raw_members (id), amount INTEGER NOT NULL,
            balance_after INTEGER NOT NULL, reason VARCHAR(255) NOT NULL,
            idempotency_key VARCHAR(160) NOT NULL UNIQUE, created_at VARCHAR(40) NOT NULL)""",
        "CREATE INDEX ix_bench_raw_ledger_member ON bench_raw_ledger (member_id)",
        f"""CREATE TABLE bench_raw_lots (id {id_type} PRIMARY KEY, member_id INTEGER NOT NULL
            REFERENCES bench_raw_members (id), entry_id INTEGER NOT NULL
            REFERENCES bench_raw_ledger (id), expires_on VARCHAR(10), amount INTEGER NOT NULL,
            remaining INTEGER NOT NULL)""",
        "CREATE INDEX ix_bench_raw_lots_member ON bench_raw_lots (member_id, expires_on)",
        f"""CREATE TABLE bench_raw_growth (id {id_type} PRIMARY KEY, member_id INTEGER NOT NULL
            REFERENCES bench_raw_members (id), amount INTEGER NOT NULL,
            idempotency_key VARCHAR(160) NOT NULL UNIQUE, occurred_at VARCHAR(40) NOT NULL)""",
        "CREATE INDEX ix_bench_raw_growth_member ON bench_raw_growth (member_id, occurred_at)",
        f"""CREATE TABLE bench_raw_pushes (id {id_type} PRIMARY KEY,
            key VARCHAR(160) NOT NULL UNIQUE, member_id INTEGER NOT NULL
            REFERENCES bench_raw_members (id), payload TEXT NOT NULL,
            status VARCHAR(12) NOT NULL)""",
        "CREATE INDEX ix_bench_raw_pushes_member ON bench_raw_pushes (member_id)",
    ]


RAW_SQL = {
    "claim": "INSERT INTO bench_raw_orders (order_id, member_id, amount, points, created_at) "
             "VALUES ({0}, {1}, {2}, {3}, {4}) ON CONFLICT (order_id) DO NOTHING RETURNING id",
    "member": "UPDATE bench_raw_members SET balance = balance + {0} WHERE id = {1} "
              "RETURNING balance",
    "ledger": "INSERT INTO bench_raw_ledger (member_id, amount, balance_after, reason, "
              "idempotency_key, created_at) VALUES ({0}, {1}, {2}, {3}, {4}, {5}) RETURNING id",
    "lot": "INSERT INTO bench_raw_lots (member_id, entry_id, expires_on, amount, remaining) "
           "VALUES ({0}, {1}, {2}, {3}, {4})",
    "growth": "INSERT INTO bench_raw_growth (member_id, amount, idempotency_key, occurred_at) "
              "VALUES ({0}, {1}, {2}, {3})",
    "push": "INSERT INTO bench_raw_pushes (key, member_id, payload, status) "
            "VALUES ({0}, {1}, {2}, 'pending') ON CONFLICT (key) DO NOTHING",
}


def raw_statements(style: str) -> dict[str, str]:
    """The minimal order's SQL with the driver's placeholders (``?`` or ``$n``)."""
    out = {}
    for name, sql in RAW_SQL.items():
        count = sql.count("{")
        marks = ["?"] * count if style == "qmark" else [f"${i + 1}" for i in range(count)]
        out[name] = sql.format(*marks)
    return out


def raw_order(index: int, prefix: str, members: int) -> tuple[str, int, int, int, str]:
    rng = random.Random(index)
    amount = rng.randint(MIN_AMOUNT, MAX_AMOUNT)
    return f"{prefix}-{index:07d}", rng.randint(1, members), amount, amount // 100, \
        time.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def raw_sqlite_setup(path: Path, members: int) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    for sql in raw_schema("INTEGER"):
        connection.execute(sql)
    connection.executemany(
        "INSERT INTO bench_raw_members (id, balance) VALUES (?, 0)",
        [(i,) for i in range(1, members + 1)],
    )
    connection.close()


def raw_sqlite_round(path: Path, count: int, prefix: str, members: int) -> float:
    """``count`` minimal order transactions, one connection, one after the other."""
    sql = raw_statements("qmark")
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=15000")
    work = [raw_order(i, prefix, members) for i in range(count)]
    execute = connection.execute
    started = time.perf_counter()
    for order_id, member_id, amount, earned, now in work:
        execute("BEGIN IMMEDIATE")
        claimed = execute(sql["claim"], (order_id, member_id, amount, earned, now)).fetchone()
        if claimed is None:  # a replay: the stored answer would be read here
            execute("COMMIT")
            continue
        balance = execute(sql["member"], (earned, member_id)).fetchone()[0]
        key = f"order:{order_id}"
        entry = execute(sql["ledger"], (member_id, earned, balance, f"order {order_id}",
                                        f"{key}:earn", now)).fetchone()[0]
        execute(sql["lot"], (member_id, entry, "2099-12-31", earned, earned))
        execute(sql["growth"], (member_id, amount // 100, f"{key}:growth", now))
        execute(sql["push"], (f"receipt:{order_id}", member_id,
                              json.dumps({"order_id": order_id, "points": earned})))
        execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def asyncpg_dsn(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


async def raw_pg_setup(dsn: str, members: int) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        for table in RAW_TABLES:
            await connection.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
        for sql in raw_schema("INTEGER GENERATED BY DEFAULT AS IDENTITY"):
            await connection.execute(sql)
        await connection.executemany(
            "INSERT INTO bench_raw_members (id, balance) VALUES ($1, 0)",
            [(i,) for i in range(1, members + 1)],
        )
    finally:
        await connection.close()


async def raw_pg_round(dsn: str, count: int, prefix: str, members: int, clients: int) -> float:
    """``count`` minimal order transactions from ``clients`` asyncpg connections."""
    import asyncpg

    sql = raw_statements("numeric")
    connections = [await asyncpg.connect(dsn) for _ in range(clients)]
    work = iter([raw_order(i, prefix, members) for i in range(count)])

    async def client(connection: Any) -> None:
        for order_id, member_id, amount, earned, now in work:
            async with connection.transaction():
                claimed = await connection.fetchval(
                    sql["claim"], order_id, member_id, amount, earned, now
                )
                if claimed is None:
                    continue
                balance = await connection.fetchval(sql["member"], earned, member_id)
                key = f"order:{order_id}"
                entry = await connection.fetchval(
                    sql["ledger"], member_id, earned, balance, f"order {order_id}",
                    f"{key}:earn", now,
                )
                await connection.execute(
                    sql["lot"], member_id, entry, "2099-12-31", earned, earned
                )
                await connection.execute(
                    sql["growth"], member_id, amount // 100, f"{key}:growth", now
                )
                await connection.execute(
                    sql["push"], f"receipt:{order_id}", member_id,
                    json.dumps({"order_id": order_id, "points": earned}),
                )

    try:
        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in connections))
        return time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.close() for c in connections))


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


async def reset_postgres(url: str) -> None:
    """Empty the application's tables (the bench registers its members afresh)."""
    from sqlalchemy import text

    from bot.db import create_engine
    from domain.models import Base

    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            names = ", ".join(table.name for table in Base.metadata.sorted_tables)
            await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            await connection.execute(text("DROP TABLE IF EXISTS bench_commit"))
    finally:
        await engine.dispose()


def goal(name: str, value: float, op: str, target: float, digits: int) -> str:
    met = value >= target if op == ">=" else value <= target
    return (f"goal {name}: {value:.{digits}f} (target {op} {target:g}) "
            f"{'met' if met else 'not met'}")


async def main(args: argparse.Namespace) -> int:
    from sqlalchemy import text

    from bot.app import create_app
    from bot.db import create_engine, migrate
    from bot.http import EmbeddedServer, server_config
    from bot.logs import configure_logging
    from bot.settings import Settings
    from domain.members import TelegramProfile, register
    workdir_handle = tempfile.TemporaryDirectory(prefix="bench-orders-")
    workdir = Path(workdir_handle.name)
    # Logging as `python -m bot` sets it up (INFO: one line per till request, secrets
    # redacted), into a file in the work directory instead of stderr.
    logging.basicConfig(
        level=logging.INFO, filename=workdir / "bench.log",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    configure_logging([BOT_TOKEN, POS_TOKEN])
    postgres = args.database_url is not None
    db_path = workdir / "companion.db"
    url = args.database_url or f"sqlite+aiosqlite:///{db_path}"
    await asyncio.to_thread(migrate, url)
    if postgres:
        await reset_postgres(url)
        await raw_pg_setup(asyncpg_dsn(url), args.members)
    else:
        await asyncio.to_thread(raw_sqlite_setup, db_path, args.members)

    port = free_port()
    settings = Settings(
        _env_file=None, bot_token=BOT_TOKEN, database_url=url, pos_api_token=POS_TOKEN,
        api_port=port,
    )
    app = create_app(settings)
    counter = SqlCounter(app.engine)
    gate = counter.gate
    commit_engine = create_engine(url)
    # As bot.app.run serves it: the project's protocol (connection cap, header deadline).
    server = EmbeddedServer(server_config(app.http, "127.0.0.1", port))
    serving = asyncio.create_task(server.serve(), name="http")
    ceiling_port = free_port()
    ceiling_server = EmbeddedServer(
        server_config(ceiling_app(app.shop.program), "127.0.0.1", ceiling_port)
    )
    ceiling_serving = asyncio.create_task(ceiling_server.serve(), name="ceiling")
    profiler = cProfile.Profile() if args.profile else None
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
                if not postgres else
                "CREATE TABLE IF NOT EXISTS bench_commit "
                "(id INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, n INTEGER)"
            ))
        setup_seconds = time.perf_counter() - setup_started
        for _ in range(500):
            if server.started and ceiling_server.started:
                break
            for task in (serving, ceiling_serving):
                if task.done():
                    task.result()
            await asyncio.sleep(0.01)
        else:
            raise RuntimeError("the HTTP server did not start")
        base_url = f"http://127.0.0.1:{port}"
        ceiling_url = f"http://127.0.0.1:{ceiling_port}"
        ceiling_rates: list[float] = []
        cpu_ms: dict[str, list[float]] = {"server": [], "client": [], "ceiling server": [],
                                          "ceiling client": []}

        order_rates: list[float] = []
        raw_rates: list[float] = []
        commit_rates: list[float] = []
        latencies: list[float] = []
        per_order: dict[str, float] = {}
        gate_waits: list[tuple[int, int, float, float]] = []
        redeemed = 0
        for round_no in range(1, args.rounds + 1):
            result, sql = await run_orders_round(
                base_url, app.session_factory, counter, args=args, round_no=round_no,
                workdir=workdir, shop=app.shop, profiler=profiler,
            )
            if result.failures or result.replayed:
                print(f"ABORT: round {round_no}: {result.failures} failed orders, "
                      f"{result.replayed} replayed; statuses {result.statuses}")
                for line in result.first_failures:
                    print("  ", line)
                return 1
            rate = result.orders / result.elapsed
            order_rates.append(rate)
            if rate >= max(order_rates):
                latencies = result.latencies_ms
            if gate is not None:
                gate_waits.append((
                    int(sql["gate_writes"]), int(sql["gate_waited"]), sql["gate_wait"],
                    gate.longest_wait,
                ))
            redeemed += result.redeemed_orders
            per_order = {k: v / result.orders for k, v in sql.items()}
            cpu_ms["server"].append(sql["server_cpu"] * 1000 / result.orders)
            cpu_ms["client"].append(result.cpu_seconds * 1000 / result.orders)
            print(f"  round {round_no}: orders  {result.orders:6d} in {result.elapsed:6.2f} s "
                  f"= {rate:8.1f} orders/s  (all 201; {result.redeemed_orders} redeemed points; "
                  f"p50 {percentile(result.latencies_ms, 0.5):.1f} ms, "
                  f"p99 {percentile(result.latencies_ms, 0.99):.1f} ms; CPU per order: "
                  f"server {cpu_ms['server'][-1]:.2f} ms, client {cpu_ms['client'][-1]:.2f} ms)",
                  flush=True)

            result, sql = await run_orders_round(
                ceiling_url, app.session_factory, None, args=args, round_no=round_no,
                workdir=workdir, shop=app.shop, label="C",
            )
            if result.failures:
                print(f"ABORT: ceiling round {round_no}: {result.failures} failed; "
                      f"{result.first_failures[:2]}")
                return 1
            ceiling_rates.append(result.orders / result.elapsed)
            cpu_ms["ceiling server"].append(sql["server_cpu"] * 1000 / result.orders)
            cpu_ms["ceiling client"].append(result.cpu_seconds * 1000 / result.orders)
            print(f"  round {round_no}: ceiling {result.orders:6d} in {result.elapsed:6.2f} s "
                  f"= {ceiling_rates[-1]:8.1f} req/s     (canned answer, no database; "
                  f"p50 {percentile(result.latencies_ms, 0.5):.1f} ms, "
                  f"p99 {percentile(result.latencies_ms, 0.99):.1f} ms; CPU per request: "
                  f"server {cpu_ms['ceiling server'][-1]:.2f} ms, "
                  f"client {cpu_ms['ceiling client'][-1]:.2f} ms)", flush=True)

            prefix = f"R{round_no}"
            if postgres:
                elapsed = await raw_pg_round(
                    asyncpg_dsn(url), args.raw, prefix, args.members, args.raw_clients
                )
            else:
                elapsed = await asyncio.to_thread(
                    raw_sqlite_round, db_path, args.raw, prefix, args.members
                )
            raw_rates.append(args.raw / elapsed)
            print(f"  round {round_no}: raw     {args.raw:6d} in {elapsed:6.2f} s "
                  f"= {args.raw / elapsed:8.1f} minimal order tx/s", flush=True)

            elapsed = await run_commits_round(
                commit_engine, args.commits, round_no, args.commit_concurrency
            )
            commit_rates.append(args.commits / elapsed)
            print(f"  round {round_no}: commits {args.commits:6d} in {elapsed:6.2f} s "
                  f"= {args.commits / elapsed:8.1f} stack commits/s", flush=True)

        best_orders, best_raw = max(order_rates), max(raw_rates)
        best_commits = max(commit_rates)
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
        backend = (
            f"PostgreSQL ({make_url_safe(url)})" if postgres
            else f"SQLite {sqlite3.sqlite_version}"
        )
        print(f"python {platform.python_version()} ({platform.python_implementation()}), "
              f"{backend}, {os.cpu_count()} CPUs, {platform.system()} {platform.machine()}"
              f"{'; --quick: small sizes, noisy' if args.quick else ''}")
        if postgres:
            print(f"database: that PostgreSQL database, emptied; {args.members} members, "
                  f"setup {setup_seconds:.1f} s untimed")
            print(f"baseline: asyncpg, {args.raw_clients} connections, each running the "
                  f"minimal order transaction one after the other, on scratch tables there")
        else:
            print(f"database: fresh SQLite file, project defaults (WAL, synchronous=NORMAL, "
                  f"BEGIN IMMEDIATE for writes); {args.members} members, "
                  f"setup {setup_seconds:.1f} s untimed")
            print("baseline: sqlite3, one connection (WAL, synchronous=NORMAL, BEGIN "
                  "IMMEDIATE), minimal order transactions one after the other, scratch tables "
                  "in the same file")
        print(f"server: uvicorn EmbeddedServer on 127.0.0.1 in this process (server_config, "
              f"as bot.app.run; logging at INFO into a file); client: {client}; "
              f"concurrency {args.concurrency} in flight")
        print("ceiling: the same client against a bare FastAPI route (same server config) that "
              "validates the same request model and answers a canned receipt: no middleware, "
              "no auth, no database")
        print("CPU per order, median of rounds (getrusage, all threads of the process): "
              + ", ".join(f"{name} {statistics.median(values):.2f} ms"
                          for name, values in cpu_ms.items()))
        if args.client == "process":
            print(f"  the client shares the machine's {os.cpu_count()} CPUs with the server: "
                  "its CPU time is taken from the same cores")
        write_label = "BEGIN IMMEDIATE" if not postgres else "BEGIN"
        print(f"per order (app engine, last round): {per_order['immediate']:.2f} write "
              f"transactions, {per_order['deferred']:.2f} read transactions, "
              f"{per_order['commits']:.2f} commits, {per_order['statements']:.1f} SQL statements "
              f"(BEGIN not counted)")
        if not postgres:
            print(f"  mean time in {write_label} per order: "
                  f"{per_order['begin_wait'] * 1000:.2f} ms")
        for round_no, (writes, waited, seconds, longest) in enumerate(gate_waits, 1):
            print(f"writer gate, round {round_no}: {writes} write transactions, {waited} waited "
                  f"for another; mean wait per order {seconds * 1000 / args.orders:.1f} ms, "
                  f"longest {longest * 1000:.1f} ms")
        if gate is None:
            print("writer gate: none on this database (writers do not queue in-process)")
        print(f"latency (best orders round): p50 {percentile(latencies, 0.5):.1f} ms, "
              f"p99 {percentile(latencies, 0.99):.1f} ms")
        print(f"rounds: {args.rounds} x (orders {args.orders}, raw {args.raw}, commits "
              f"{args.commits}), best of each; rows: {total_orders} orders, "
              f"{total_commits} scratch commits")
        print()
        print(f"orders/s     = {best_orders:8.1f}   (rounds: "
              f"{', '.join(f'{r:.1f}' for r in order_rates)})")
        print(f"raw tx/s     = {best_raw:8.1f}   (rounds: "
              f"{', '.join(f'{r:.1f}' for r in raw_rates)}; the minimal idempotent order)")
        print(f"stack commits/s = {best_commits:.1f}   (rounds: "
              f"{', '.join(f'{r:.1f}' for r in commit_rates)}; one INSERT per write_transaction"
              f", {commit_mode}; for reference)")
        best_ceiling = max(ceiling_rates)
        print(f"ceiling req/s = {best_ceiling:8.1f}   (rounds: "
              f"{', '.join(f'{r:.1f}' for r in ceiling_rates)}; validate + canned answer)")
        print(f"orders / raw tx = {best_orders / best_raw:.3f};  orders / stack commits = "
              f"{best_orders / best_commits:.2f}")
        print(f"ceiling / raw tx = {best_ceiling / best_raw:.3f} (for information: the most "
              f"this HTTP stack allows against this baseline);  orders / ceiling = "
              f"{best_orders / best_ceiling:.2f}")
        if profiler is not None:
            stats = pstats.Stats(profiler)
            stats.dump_stats(args.profile)
            print(f"\nprofile of the server process's loop thread over the orders rounds "
                  f"(figures above are slowed by it) -> {args.profile}")
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(40)
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
        print()
        ratio = best_orders / best_raw
        if postgres:
            print("(the SQLite goals: run without DATABASE_URL)")
            print(goal("orders_pg_ratio", ratio, ">=", 0.25, 3))
        else:
            print("(the PostgreSQL goal: run with DATABASE_URL=postgresql+asyncpg://...)")
            print(goal("orders_sqlite_ratio", ratio, ">=", 0.10, 3))
            print(goal("orders_sqlite_p99_ms", percentile(latencies, 0.99), "<=", 50, 1))
    finally:
        server.should_exit = ceiling_server.should_exit = True
        await asyncio.gather(serving, ceiling_serving, return_exceptions=True)
        await commit_engine.dispose()
        await app.close()
        workdir_handle.cleanup()
    return exit_code


def make_url_safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


QUICK = {"orders": 300, "raw": 2000, "commits": 300, "members": 50, "rounds": 2}
FULL = {"orders": 2000, "raw": 20000, "commits": 2000, "members": 200, "rounds": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"small sizes ({', '.join(f'{k} {v}' for k, v in QUICK.items())})")
    parser.add_argument("--orders", type=int, help="orders per round (2000)")
    parser.add_argument("--raw", type=int, help="raw minimal order transactions per round (20000)")
    parser.add_argument("--commits", type=int, help="stack commits per round (2000)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument(
        "--commit-concurrency", type=int, default=1,
        help="stack write transactions in flight (default 1: the sequential commit rate)",
    )
    parser.add_argument("--raw-clients", type=int, default=8,
                        help="PostgreSQL baseline connections (default 8)")
    parser.add_argument("--members", type=int, help="members registered, untimed (200)")
    parser.add_argument("--rounds", type=int, help="orders/raw/commits alternations (2)")
    parser.add_argument(
        "--client", choices=("process", "inprocess"), default="process",
        help="HTTP client in a separate process (default) or in the server's event loop",
    )
    parser.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL") or None,
        help="a postgresql+asyncpg:// URL (default $DATABASE_URL): run on that database, "
             "WHICH IS EMPTIED; without it, a fresh SQLite file",
    )
    parser.add_argument("--profile", metavar="FILE",
                        help="cProfile the server's loop during the orders rounds, save to FILE")
    parser.add_argument("--client-spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.database_url and not args.database_url.startswith("postgresql"):
        parser.error("--database-url / DATABASE_URL: a postgresql+asyncpg:// URL "
                     "(leave it unset for a fresh SQLite file)")
    if min(args.orders, args.raw, args.commits, args.concurrency, args.commit_concurrency,
           args.members, args.rounds, args.raw_clients) < 1:
        parser.error("every count must be >= 1")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.client_spec:
        client_main(arguments.client_spec)
        sys.exit(0)
    sys.exit(asyncio.run(main(arguments)))
