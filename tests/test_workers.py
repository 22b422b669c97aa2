"""Three workers on one PostgreSQL database (issue 14's "done when").

A fake Bot API delivers updates to the workers' webhooks round-robin (checking the secret), a
till posts orders to all three, and the elected scheduler's catch-up queues 2,000 birthday
pushes. Counted at the end: every update answered once, every order credited once, every push
delivered once, never more than 30 pushes in a second nor 2 to one chat within a second, no
429. Then the scheduler's holder is SIGKILLed: another worker takes over within 30 s and runs
the next occasion once.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db import create_engine, create_session_factory
from bot.scheduler import latest_due
from bot.settings import DEFAULT_PROGRAM_FILE
from domain import members
from domain.clock import SystemClock
from domain.models import JobRun, LedgerEntry, Member, Order, Push
from domain.program import load_program
from domain.schedule import JOBS
from domain.shop import Shop
from tests.conftest import POS_TOKEN, POSTGRES_URL, TEST_TOKEN
from tests.fake_telegram import FakeTelegram, message_update
from tests.test_process import PYTHON, _env, _free_port

pytestmark = pytest.mark.skipif(
    not (POSTGRES_URL or "").startswith("postgresql"), reason="needs PostgreSQL"
)

WORKERS = 3
CHATTERS = 300  # members who write to the bot: 10 updates each
UPDATES_EACH = 10
BUYERS = 2000  # members with a birthday today: a push each; 1,000 of them buy
ORDERS = 1000
LATECOMERS = 50  # birthdays added before the scheduler's holder is killed
CHATTER_IDS = range(600_001, 600_001 + CHATTERS)
BUYER_IDS = range(700_001, 700_001 + BUYERS)
LATE_IDS = range(800_001, 800_001 + LATECOMERS)
SECRET = "three-workers-secret"
COMMANDS = ["/points", "/checkin", "/help"]


def daytime_zone() -> str:
    """A time zone where it is now between 10:00 and 19:59: the birthday job (09:30) is due
    today and pushes are outside quiet hours for the whole test."""
    for offset in range(-12, 15):
        name = f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT"
        if 10 <= datetime.now(ZoneInfo(name)).hour <= 19:
            return name
    raise AssertionError("no daytime zone")


@dataclass
class Worker:
    port: int
    process: asyncio.subprocess.Process
    log: Path

    @property
    def hook(self) -> str:
        return f"http://127.0.0.1:{self.port}/telegram/webhook"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


async def _birthdays_due_again(
    factory: async_sessionmaker[AsyncSession], shop: Shop, telegram_ids: range
) -> None:
    """Newcomers born today join, and the birthday job's last run is put back a day: its next
    occasion is due, with them to greet."""
    async with factory() as session:
        for telegram_id in telegram_ids:
            profile = members.TelegramProfile(telegram_id, "Dai", None, None, "en")
            await members.register(session, shop, profile)
        today = shop.today()
        await session.execute(
            update(Member).where(Member.telegram_id.in_(list(telegram_ids)))
            .values(birthday_month=today.month, birthday_day=today.day)
        )
        await session.execute(
            update(JobRun).where(JobRun.name == "birthdays")
            .values(occasion=(today - timedelta(days=1)).isoformat())
        )
        await session.commit()


async def _health(client: httpx.AsyncClient, worker: Worker) -> dict[str, Any] | None:
    try:
        answer = await client.get(f"http://127.0.0.1:{worker.port}/healthz", timeout=2)
    except httpx.HTTPError:
        return None
    return dict(answer.json()) if answer.status_code == 200 else None


async def _start_worker(tmp: Path, env: dict[str, str], index: int | str,
                        files: list[IO[bytes]], port: int | None = None) -> Worker:
    port = port or _free_port()
    log = tmp / f"worker{index}.log"
    handle = log.open("wb")
    files.append(handle)
    process = await asyncio.create_subprocess_exec(
        PYTHON, "-m", "bot", cwd=tmp, env={**env, "API_PORT": str(port)},
        stdout=handle, stderr=asyncio.subprocess.STDOUT,
    )
    return Worker(port, process, log)


async def _seed(url: str, shop: Shop, buyer_ids: range = BUYER_IDS) -> dict[int, str]:
    """Members with a birthday today (their codes by Telegram id), and job_runs as if every
    job had run for its latest occasion except the birthdays, last run yesterday."""
    engine = create_engine(url)
    factory = create_session_factory(engine)
    codes: dict[int, str] = {}
    today = shop.today()
    queue = list(buyer_ids)

    async def register() -> None:
        async with factory() as session:
            while queue:
                telegram_id = queue.pop()
                profile = members.TelegramProfile(telegram_id, "Bea", None, None, "en")
                codes[telegram_id] = (await members.register(session, shop, profile)).member.code

    await asyncio.gather(*(register() for _ in range(16)))
    async with factory() as session:
        await session.execute(
            update(Member).where(Member.telegram_id.in_(list(buyer_ids)))
            .values(birthday_month=today.month, birthday_day=today.day)
        )
        for job in JOBS.values():
            due = latest_due(job, shop, shop.now())
            assert due is not None
            occasion = job.occasion(due - timedelta(days=1) if job.name == "birthdays" else due)
            session.add(JobRun(name=job.name, occasion=occasion, started_at=shop.now(),
                               finished_at=shop.now(), result="seeded"))
        await session.commit()
    await engine.dispose()
    return codes


@pytest.fixture
async def database(clean_database: str) -> AsyncIterator[str]:
    yield clean_database


class Inbox:
    """Messages the fake accepted, counted per chat as they come (scanned every 50 ms)."""

    def __init__(self, fake: FakeTelegram) -> None:
        self.fake = fake
        self.seen = 0
        self.per_chat: Counter[int] = Counter()

    def refresh(self) -> Counter[int]:
        calls = self.fake.calls
        for call in calls[self.seen:]:
            if call.method in ("sendMessage", "sendPhoto") and not call.failed:
                self.per_chat[int(call.params["chat_id"])] += 1
        self.seen = len(calls)
        return self.per_chat

    async def grows(self, chat: int, before: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.refresh()[chat] <= before:
            assert time.monotonic() < deadline, f"chat {chat} got no answer"
            await asyncio.sleep(0.05)


async def _chat(
    fake: FakeTelegram, inbox: Inbox, telegram_id: int, rng: random.Random
) -> None:
    """One member's ten updates, one after another, each answered (as a person types)."""
    sequence = ["/start"] + [COMMANDS[i % len(COMMANDS)] for i in range(UPDATES_EACH - 1)]
    await asyncio.sleep(rng.random() * 5)  # members come in over a few seconds
    for command in sequence:
        before = inbox.refresh()[telegram_id]
        status = await fake.deliver(message_update(telegram_id, command, first_name="Cai"))
        assert status == 200
        await inbox.grows(telegram_id, before)
        await asyncio.sleep(0.5 + rng.random() * 0.2)  # a person, and under the throttle


async def test_three_workers_share_one_database(database: str, tmp_path: Path) -> None:
    zone = daytime_zone()
    program = load_program(DEFAULT_PROGRAM_FILE)
    shop = Shop(program=program, clock=SystemClock(), tz=ZoneInfo(zone))
    codes = await _seed(database, shop)
    pushed_chats = set(BUYER_IDS) | set(LATE_IDS)
    files: list[IO[bytes]] = []
    workers: list[Worker] = []
    rng = random.Random(14)
    async with FakeTelegram(rate_limit_per_second=30, limit_chats=pushed_chats.__contains__
                            ) as fake, httpx.AsyncClient() as client:
        env = _env(
            BOT_TOKEN=TEST_TOKEN, TELEGRAM_API_URL=fake.base_url, DATABASE_URL=database,
            WEBHOOK_URL="https://shop.example/telegram/webhook", WEBHOOK_SECRET=SECRET,
            POS_API_TOKEN=POS_TOKEN, TIMEZONE=zone, DATABASE_POOL="12",
        )
        try:
            workers = [await _start_worker(tmp_path, env, i, files) for i in range(WORKERS)]
            deadline = time.monotonic() + 120
            while len([c for c in fake.calls_of("setWebhook")]) < WORKERS or not all(
                [await _health(client, w) for w in workers]
            ):
                assert time.monotonic() < deadline, [w.output()[-1500:] for w in workers]
                await asyncio.sleep(0.3)
            assert all(c.params["secret_token"] == SECRET for c in fake.calls_of("setWebhook"))
            fake.webhook_targets = [w.hook for w in workers]
            healths = [await _health(client, w) for w in workers]
            assert sum(1 for h in healths if h and h["scheduler"]) == 1, healths
            assert sum(1 for h in healths if h and h["sender"]) == 1, healths

            # An impostor without the secret reaches nothing.
            assert await fake.deliver(message_update(CHATTER_IDS[0], "/start"), secret="x") == 401

            buyers = rng.sample(list(BUYER_IDS), ORDERS)
            headers = {"Authorization": f"Bearer {POS_TOKEN}"}
            answers: list[tuple[str, int, str]] = []
            order_queue = list(enumerate(buyers))

            async def till(lane: int) -> None:
                while order_queue:
                    index, telegram_id = order_queue.pop()
                    body = {"order_id": f"W{index}", "member": codes[telegram_id],
                            "amount": f"{100 + index % 50}.00"}
                    # Sent to one worker and, as a till's retry, at once to the next one.
                    targets = [workers[(index + k) % WORKERS] for k in (0, 1)]
                    replies = await asyncio.gather(*(
                        client.post(f"http://127.0.0.1:{w.port}/api/v1/orders", json=body,
                                    headers=headers, timeout=60)
                        for w in targets
                    ))
                    for reply in replies:
                        answers.append((body["order_id"], reply.status_code, reply.text))

            inbox = Inbox(fake)
            chatting = asyncio.gather(*(_chat(fake, inbox, t, rng) for t in CHATTER_IDS))
            await asyncio.gather(chatting, *(till(lane) for lane in range(12)))
            assert {status for _, status, _ in answers} <= {200, 201}, Counter(
                status for _, status, _ in answers)

            engine = create_engine(database)
            factory = create_session_factory(engine)

            async def pending() -> int:
                async with factory() as session:
                    return int(await session.scalar(
                        select(func.count(Push.id)).where(Push.status == "pending")) or 0)

            deadline = time.monotonic() + 240
            while await pending():
                assert time.monotonic() < deadline, "pushes still pending"
                await asyncio.sleep(1)

            # Every update answered once: each chatter got the same messages as the others.
            assert len([a for a in fake.webhook_answers if a[1] == 200]) == CHATTERS * UPDATES_EACH
            per_chat = Counter(
                int(c.params["chat_id"]) for c in fake.calls
                if c.method in ("sendMessage", "sendPhoto") and not c.failed
            )
            chatter_counts = Counter(per_chat[t] for t in CHATTER_IDS)
            assert len(chatter_counts) == 1, chatter_counts
            assert min(chatter_counts) >= UPDATES_EACH
            # Every order credited once, every push delivered exactly once.
            async with factory() as session:
                assert await session.scalar(select(func.count(Order.id))) == ORDERS
                earned = dict((await session.execute(
                    select(Order.member_id, func.count(Order.id)).group_by(Order.member_id)
                )).all())
                assert set(earned.values()) == {1}
                statuses = Counter((await session.scalars(select(Push.status))).all())
                assert statuses == {"sent": BUYERS + ORDERS}, statuses
                unbalanced = (await session.execute(
                    select(Member.id).where(Member.points_balance != select(
                        func.coalesce(func.sum(LedgerEntry.amount), 0))
                        .where(LedgerEntry.member_id == Member.id).scalar_subquery())
                )).all()
                assert not unbalanced
            bought = set(buyers)
            wrong = {t: per_chat[t] for t in BUYER_IDS if per_chat[t] != 1 + (t in bought)}
            assert not wrong, list(wrong.items())[:5]
            most, most_per_chat = fake.sends_per_second(pushed_chats.__contains__)
            assert most <= 30 and most_per_chat == 1, (most, most_per_chat)
            assert fake.rate_limited == 0

            # The scheduler's holder dies; before that, today's birthdays gain newcomers and
            # the birthday job's last run is put back a day: the next occasion is due.
            healths = [await _health(client, w) or {} for w in workers]
            holder = next(w for w, h in zip(workers, healths, strict=True) if h.get("scheduler"))
            await _birthdays_due_again(factory, shop, LATE_IDS)
            holder.process.send_signal(signal.SIGKILL)
            await holder.process.wait()
            killed = time.monotonic()
            survivors = [w for w in workers if w is not holder]
            new_holder = None
            while new_holder is None:
                assert time.monotonic() - killed < 30, "no worker took the scheduler over"
                for worker in survivors:
                    if (await _health(client, worker) or {}).get("scheduler"):
                        new_holder = worker
                await asyncio.sleep(0.5)
            took_over = time.monotonic() - killed
            assert took_over < 30
            fake.webhook_targets = [w.hook for w in survivors]
            deadline = time.monotonic() + 120
            while sum(per_chat_now := Counter(
                int(c.params["chat_id"]) for c in fake.calls
                if c.method == "sendMessage" and not c.failed
                and int(c.params["chat_id"]) in LATE_IDS
            ).values()) < LATECOMERS or await pending():
                assert time.monotonic() < deadline, per_chat_now
                await asyncio.sleep(0.5)
            await asyncio.sleep(2)  # nothing more comes
            late = Counter(
                int(c.params["chat_id"]) for c in fake.calls
                if c.method == "sendMessage" and int(c.params["chat_id"]) in LATE_IDS
            )
            assert set(late.values()) == {1} and len(late) == LATECOMERS
            async with factory() as session:
                run = await session.get(JobRun, "birthdays")
                assert run is not None and run.occasion == shop.today().isoformat()
                assert run.finished_at is not None
            await engine.dispose()
        finally:
            for worker in workers:
                if worker.process.returncode is None:
                    worker.process.send_signal(signal.SIGTERM)
            for worker in workers:
                try:
                    await asyncio.wait_for(worker.process.wait(), 40)
                except TimeoutError:
                    worker.process.kill()
            for handle in files:
                handle.close()
        runs = sum(w.output().count("birthdays [") for w in survivors)
        assert runs == 1, [w.output()[-3000:] for w in survivors]
        for worker in survivors:
            assert worker.process.returncode == 0, worker.output()[-3000:]
            assert "Traceback" not in worker.output(), worker.output()[-5000:]
        print(f"scheduler taken over in {took_over:.1f} s")


# The rolling restart: a smaller shop, so that the traffic spans the three restarts.
ROLL_CHATTERS = range(610_001, 610_061)
ROLL_BUYERS = range(710_001, 710_601)  # a birthday push each
ROLL_ORDERS = 300
ROLL_LATE = range(810_001, 810_041)  # birthdays the scheduler finds during the restarts
REDELIVER_SECONDS = 120.0


async def _wait_healthy(
    client: httpx.AsyncClient, workers: list[Worker], within: float = 120
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while True:
        healths = [await _health(client, w) for w in workers]
        if all(healths):
            return [h for h in healths if h]
        for worker in workers:
            assert worker.process.returncode is None, worker.output()[-3000:]
        assert time.monotonic() < deadline, [w.output()[-1500:] for w in workers]
        await asyncio.sleep(0.3)


async def _finished_occasion(factory: Any, name: str) -> str | None:
    async with factory() as session:
        run = await session.get(JobRun, name)
        return run.occasion if run is not None and run.finished_at is not None else None


async def test_rolling_restart_loses_no_update_push_or_job(database: str, tmp_path: Path) -> None:
    """Each worker in turn gets SIGTERM and is started again on its port while members write,
    tills post orders and pushes go out. The fake Bot API redelivers an update that was not
    answered 2xx (503 while a worker stops, connection refused while it is down) to the next
    worker, as Telegram and nginx do. Nothing is lost or doubled, the spacing holds across
    the sender's moves, and the birthday occasion that falls due mid-restart runs once."""
    zone = daytime_zone()
    program = load_program(DEFAULT_PROGRAM_FILE)
    shop = Shop(program=program, clock=SystemClock(), tz=ZoneInfo(zone))
    codes = await _seed(database, shop, ROLL_BUYERS)
    pushed_chats = set(ROLL_BUYERS) | set(ROLL_LATE)
    files: list[IO[bytes]] = []
    workers: list[Worker] = []
    retired: list[Worker] = []
    rng = random.Random(41)
    engine = create_engine(database)
    factory = create_session_factory(engine)
    async with FakeTelegram(rate_limit_per_second=30, limit_chats=pushed_chats.__contains__
                            ) as fake, httpx.AsyncClient() as client:
        env = _env(
            BOT_TOKEN=TEST_TOKEN, TELEGRAM_API_URL=fake.base_url, DATABASE_URL=database,
            WEBHOOK_URL="https://shop.example/telegram/webhook", WEBHOOK_SECRET=SECRET,
            POS_API_TOKEN=POS_TOKEN, TIMEZONE=zone, DATABASE_POOL="12",
        )
        ports = [_free_port() for _ in range(WORKERS)]
        try:
            workers = [await _start_worker(tmp_path, env, f"{i}-0", files, ports[i])
                       for i in range(WORKERS)]
            await _wait_healthy(client, workers)
            fake.webhook_targets = [w.hook for w in workers]  # nginx's fixed upstreams
            deadline = time.monotonic() + 60
            while await _finished_occasion(factory, "birthdays") != shop.today().isoformat():
                assert time.monotonic() < deadline, "the first catch-up did not run"
                await asyncio.sleep(0.3)

            rolled = asyncio.Event()
            inbox = Inbox(fake)
            updates_sent: Counter[int] = Counter()

            async def chatter(telegram_id: int) -> None:
                """A member writing until the restarts are over, each update answered."""
                await asyncio.sleep(rng.random() * 3)
                command = "/start"
                while True:
                    before = inbox.refresh()[telegram_id]
                    status = await fake.deliver(
                        message_update(telegram_id, command, first_name="Cai"),
                        redeliver_for=REDELIVER_SECONDS,
                    )
                    assert status == 200
                    updates_sent[telegram_id] += 1
                    await inbox.grows(telegram_id, before, timeout=REDELIVER_SECONDS)
                    if rolled.is_set():
                        return
                    command = COMMANDS[updates_sent[telegram_id] % len(COMMANDS)]
                    await asyncio.sleep(1.0 + rng.random())

            buyers = rng.sample(list(ROLL_BUYERS), ROLL_ORDERS)
            order_queue = list(enumerate(buyers))
            answers: list[tuple[str, int]] = []
            headers = {"Authorization": f"Bearer {POS_TOKEN}"}

            async def till() -> None:
                """Orders spread over the restarts; a refused or 503 post is sent again to
                the next worker (the order id makes the retry harmless)."""
                while order_queue:
                    index, telegram_id = order_queue.pop()
                    body = {"order_id": f"R{index}", "member": codes[telegram_id],
                            "amount": f"{100 + index % 50}.00"}
                    attempt = index
                    deadline = time.monotonic() + REDELIVER_SECONDS
                    while True:
                        url = f"http://127.0.0.1:{ports[attempt % WORKERS]}/api/v1/orders"
                        try:
                            reply = await client.post(url, json=body, headers=headers,
                                                      timeout=60)
                            if reply.status_code in (200, 201):
                                answers.append((body["order_id"], reply.status_code))
                                break
                            assert reply.status_code == 503, reply.text
                        except httpx.TransportError:
                            pass
                        assert time.monotonic() < deadline, f"order {body['order_id']} refused"
                        attempt += 1
                        await asyncio.sleep(0.3)
                    await asyncio.sleep(0.4 + rng.random() * 0.2)

            async def roll() -> None:
                """SIGTERM each worker in turn (the scheduler's holder first, just after the
                birthdays' last run was put back a day and newcomers got today's birthday),
                start it again on its port, wait for its /healthz, go on."""
                await asyncio.sleep(4)
                healths = await _wait_healthy(client, workers)
                first = next(i for i, h in enumerate(healths) if h["scheduler"])
                await _birthdays_due_again(factory, shop, ROLL_LATE)
                for generation, index in enumerate(
                    [first] + [i for i in range(WORKERS) if i != first], start=1
                ):
                    old = workers[index]
                    old.process.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(old.process.wait(), 60)
                    retired.append(old)
                    workers[index] = await _start_worker(
                        tmp_path, env, f"{index}-{generation}", files, ports[index]
                    )
                    await _wait_healthy(client, workers)
                    await asyncio.sleep(2)
                rolled.set()

            await asyncio.gather(
                roll(), *(chatter(t) for t in ROLL_CHATTERS), *(till() for _ in range(4))
            )

            # Every old worker stopped cleanly; the new ones agree on one scheduler, one sender.
            for worker in retired:
                assert worker.process.returncode == 0, worker.output()[-3000:]
                assert "Traceback" not in worker.output(), worker.output()[-5000:]
            deadline = time.monotonic() + 30
            while True:
                healths = await _wait_healthy(client, workers)
                holders = [sum(1 for h in healths if h[r]) for r in ("scheduler", "sender")]
                if holders == [1, 1]:
                    break
                assert time.monotonic() < deadline, healths
                await asyncio.sleep(0.5)

            async def pending() -> int:
                async with factory() as session:
                    return int(await session.scalar(
                        select(func.count(Push.id)).where(Push.status == "pending")) or 0)

            expected_pushes = len(ROLL_BUYERS) + ROLL_ORDERS + len(ROLL_LATE)
            deadline = time.monotonic() + 180
            while True:
                async with factory() as session:
                    made = int(await session.scalar(select(func.count(Push.id))) or 0)
                if made >= expected_pushes and not await pending():
                    break
                assert time.monotonic() < deadline, (made, await pending())
                await asyncio.sleep(1)
            await asyncio.sleep(2)  # nothing more comes

            # Every update answered 2xx exactly once, and handled once: each member got one
            # answer per update (and /start's greeting), the same as every other member.
            answered = Counter(u for u, status in fake.webhook_answers if status == 200)
            assert set(answered.values()) == {1}, [u for u, n in answered.items() if n > 1]
            assert len(answered) == sum(updates_sent.values())
            refused = [s for _, s in fake.webhook_answers if s != 200]
            per_chat = inbox.refresh()
            extra = Counter(per_chat[t] - updates_sent[t] for t in ROLL_CHATTERS)
            assert len(extra) == 1 and min(extra) >= 0, extra
            # Every order credited once; every push delivered exactly once.
            assert len({order for order, _ in answers}) == ROLL_ORDERS
            async with factory() as session:
                assert await session.scalar(select(func.count(Order.id))) == ROLL_ORDERS
                earned = dict((await session.execute(
                    select(Order.member_id, func.count(Order.id)).group_by(Order.member_id)
                )).all())
                assert set(earned.values()) == {1}
                statuses = Counter((await session.scalars(select(Push.status))).all())
                assert statuses == {"sent": expected_pushes}, statuses
            bought = set(buyers)
            wrong = {t: per_chat[t] for t in ROLL_BUYERS if per_chat[t] != 1 + (t in bought)}
            assert not wrong, list(wrong.items())[:5]
            late = {t: per_chat[t] for t in ROLL_LATE if per_chat[t] != 1}
            assert not late, late
            most, most_per_chat = fake.sends_per_second(pushed_chats.__contains__)
            assert most <= 30 and most_per_chat == 1, (most, most_per_chat)
            assert fake.rate_limited == 0
            # The occasion that fell due mid-restart ran once, whoever held the scheduler.
            assert await _finished_occasion(factory, "birthdays") == shop.today().isoformat()
        finally:
            await engine.dispose()
            for worker in workers:
                if worker.process.returncode is None:
                    worker.process.send_signal(signal.SIGTERM)
            for worker in workers:
                try:
                    await asyncio.wait_for(worker.process.wait(), 40)
                except TimeoutError:
                    worker.process.kill()
            for handle in files:
                handle.close()
    logs = [w.output() for w in retired + workers]
    assert sum(log.count("birthdays [") for log in logs) == 2, [
        log[-2000:] for log in logs]  # the first catch-up, and the occasion put back
    for worker in workers:
        assert worker.process.returncode == 0, worker.output()[-3000:]
    print(f"{len(refused)} deliveries refused during the restarts and delivered again")
