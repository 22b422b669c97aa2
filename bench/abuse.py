"""The bot under hostile HTTP traffic: does a member's /points and a till's order still answer?

Starts ``python -m bot`` as a real process (SQLite in a temporary folder, the fake Telegram Bot
API of the tests on loopback), registers a member through /start, then measures, side by side:

* **quiet** -- the latency of a member's ``/points`` (update pushed to the fake, until the
  bot's answer reaches the fake) and of a till's ``POST /api/v1/orders``, a few times each;
* **under attack** -- the same while an attacker process keeps up, on loopback:
  4 unauthenticated posts announcing 50 MB bodies and streaming them as fast as the server
  reads, re-posting whenever the server closes one; and 1,000 slow connections trickling their
  headers a byte at a time, re-opening whenever the server drops one.

The bot process's peak resident memory (VmHWM) is read from /proc at the end. Bounded in time:
``--seconds`` of attack (default 20). Loopback only.

Usage::

    python bench/abuse.py [--seconds 20] [--slow 1000] [--big 4] [--samples 10]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
if str(PROJECT_DIR) not in sys.path:
    sys.path.insert(0, str(PROJECT_DIR))

import httpx  # noqa: E402

from tests.fake_telegram import FakeTelegram, message_update  # noqa: E402

BOT_TOKEN = "123456789:BENCH-token-xxxxxxxxxxxx"
POS_TOKEN = "bench-abuse-token"
MEMBER = 515151
BIG_BODY = 50 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------- the attacker


async def _big_poster(port: int, stop: float) -> int:
    """Posts a 50 MB body without a token, over and over; returns the posts started."""
    posts = 0
    chunk = b"A" * 65536
    while time.monotonic() < stop:
        posts += 1
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {BIG_BODY}\r\n\r\n".encode()
            )
            sent = 0
            while sent < BIG_BODY and time.monotonic() < stop and not reader.at_eof():
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
            writer.close()
        except (ConnectionError, OSError):
            await asyncio.sleep(0.05)
    return posts


async def _slow_client(port: int, stop: float) -> int:
    """Trickles a request's headers one byte every 0.5 s; reconnects when dropped."""
    request = b"POST /api/v1/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer guess\r\n"
    opened = 0
    while time.monotonic() < stop:
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            opened += 1
            for byte in request:
                if time.monotonic() >= stop:
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.5)
            writer.close()
        except (ConnectionError, OSError):
            await asyncio.sleep(0.2)
    return opened


def _attack(port: int, seconds: float, slow: int, big: int, ready: multiprocessing.Event) -> None:
    async def main() -> None:
        stop = time.monotonic() + seconds
        tasks = [asyncio.create_task(_big_poster(port, stop)) for _ in range(big)]
        for _ in range(slow):
            tasks.append(asyncio.create_task(_slow_client(port, stop)))
        ready.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        done = [r for r in results if isinstance(r, int)]
        print(f"  attacker: {sum(done[:big])} big posts, {sum(done[big:])} slow connections opened")

    asyncio.run(main())


# ---------------------------------------------------------------------------- the measures


async def _points_latency(fake: FakeTelegram) -> float:
    start = len(fake.calls)
    started = time.perf_counter()
    fake.push_update(message_update(MEMBER, "/points"))

    def answered(call: object) -> bool:
        return fake.calls.index(call) >= start and call.params.get("chat_id") == str(MEMBER)  # type: ignore[attr-defined]

    await fake.wait_for("sendMessage", answered, timeout=30)
    return time.perf_counter() - started


async def _order_latency(client: httpx.AsyncClient, code: str, n: int) -> float:
    started = time.perf_counter()
    response = await client.post(
        "/api/v1/orders", json={"order_id": f"abuse-{n}", "member": code, "amount": "10.00"},
    )
    if response.status_code != 201:
        raise RuntimeError(f"order answered {response.status_code}: {response.text}")
    return time.perf_counter() - started


async def _measure(fake: FakeTelegram, client: httpx.AsyncClient, code: str, samples: int,
                   offset: int) -> tuple[list[float], list[float]]:
    points, orders = [], []
    for i in range(samples):
        # The flood throttle allows 8 updates per 4 s from one member: stay under it.
        points.append(await _points_latency(fake))
        orders.append(await _order_latency(client, code, offset + i))
        await asyncio.sleep(0.6)
    return points, orders


def _peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


def _goal(name: str, value: float, op: str, target: float, unit: str = "") -> str:
    met = value <= target if op == "<=" else value >= target
    return f"goal {name}: {value:.3f}{unit} (target {op} {target:g}) {'met' if met else 'not met'}"


async def main(args: argparse.Namespace) -> int:
    api_port = _free_port()
    with tempfile.TemporaryDirectory(prefix="abuse-") as folder:
        async with FakeTelegram() as fake:
            env = {
                **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "PYTHONPATH"}},
                "BOT_TOKEN": BOT_TOKEN, "TELEGRAM_API_URL": fake.base_url,
                "API_PORT": str(api_port), "POS_API_TOKEN": POS_TOKEN,
            }
            bot = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", cwd=folder, env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                await fake.wait_for("setMyCommands", timeout=120)
                fake.push_update(message_update(MEMBER, "/start", first_name="Bench"))
                welcome = await fake.wait_for(
                    "sendMessage", lambda c: c.params.get("chat_id") == str(MEMBER), timeout=30
                )
                code = re.sub(r"[^0-9A-Z]", "", re.findall(r"<code>(.*?)</code>", welcome.params["text"])[0])
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{api_port}",
                    headers={"Authorization": f"Bearer {POS_TOKEN}"}, timeout=30,
                ) as client:
                    quiet_points, quiet_orders = await _measure(fake, client, code, args.samples, 0)
                    rss_before = _rss_mib(bot.pid)
                    ready = multiprocessing.get_context("spawn").Event()
                    attacker = multiprocessing.get_context("spawn").Process(
                        target=_attack, args=(api_port, args.seconds, args.slow, args.big, ready),
                    )
                    attacker.start()
                    ready.wait(30)
                    await asyncio.sleep(min(5.0, args.seconds / 4))  # let the flood build up
                    loud_points, loud_orders = await _measure(
                        fake, client, code, args.samples, 10_000
                    )
                    rss_during = _rss_mib(bot.pid)
                    attacker.join(args.seconds + 30)
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}") as plain:
                        health = (await plain.get("/healthz")).status_code
                peak = _peak_rss_mib(bot.pid)
            finally:
                bot.terminate()
                await bot.wait()

    def line(label: str, values: list[float]) -> str:
        return (f"  {label:<28} median {statistics.median(values) * 1000:7.1f} ms, "
                f"max {max(values) * 1000:7.1f} ms over {len(values)}")

    print("quiet:")
    print(line("/points", quiet_points))
    print(line("till order", quiet_orders))
    print(f"under attack ({args.big} x 50 MB unauthenticated posts, {args.slow} slow connections):")
    print(line("/points", loud_points))
    print(line("till order", loud_orders))
    print(f"  /healthz after the attack: {health}")
    print(f"  bot RSS: {rss_before:.0f} MiB before, {rss_during:.0f} MiB during, peak {peak:.0f} MiB")
    print(f"  ratio attack/quiet (median /points): "
          f"{statistics.median(loud_points) / statistics.median(quiet_points):.2f}")
    print(_goal("abuse_points_max_s", max(loud_points), "<=", 1.0, " s"))
    print(_goal("abuse_order_max_s", max(loud_orders), "<=", 1.0, " s"))
    print(_goal("abuse_peak_rss_mib", peak, "<=", 400, " MiB"))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the attack")
    parser.add_argument("--slow", type=int, default=1000, help="slow connections")
    parser.add_argument("--big", type=int, default=4, help="50 MB unauthenticated posters")
    parser.add_argument("--samples", type=int, default=10, help="measures per phase and kind")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
