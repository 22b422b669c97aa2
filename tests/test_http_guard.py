"""The till API under hostile traffic, through real HTTP against the running server: the token
is checked before the body is read, bodies are capped in size, time and depth, slow headers are
cut off, connections over the cap are closed at once, and the health check keeps answering."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from bot.app import App
from bot.guard import HttpLimits, TillGuard, json_depth
from bot.http import EmbeddedServer, create_http_app, server_config
from tests.conftest import POS_TOKEN

LIMITS = HttpLimits(body_seconds=0.5, header_seconds=0.5, max_connections=40)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def server(app: App) -> AsyncIterator[str]:
    http = create_http_app(
        app.engine, session_factory=app.session_factory, shop=app.shop, pos_token=POS_TOKEN,
        limits=LIMITS,
    )
    port = _free_port()
    embedded = EmbeddedServer(server_config(http, "127.0.0.1", port, LIMITS))
    serving = asyncio.create_task(embedded.serve())
    while not embedded.started:
        await asyncio.sleep(0.01)
    yield f"127.0.0.1:{port}"
    embedded.should_exit = True
    await serving


async def _raw(address: str, request: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send ``request`` as is and read whatever the server answers until it closes."""
    host, port = address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), read_timeout)
    finally:
        writer.close()


def _status_and_body(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def _headers(length: int, token: str | None = None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        "POST /api/v1/orders HTTP/1.1\r\nHost: till\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {length}\r\n\r\n"
    ).encode()


async def test_unauthenticated_huge_body_is_refused_before_it_is_read(server: str) -> None:
    started = time.perf_counter()
    # 50 MB announced, not one byte of it sent: the answer cannot depend on the body.
    status, body = _status_and_body(await _raw(server, _headers(50_000_000)))
    assert status == 401
    assert body == {"error": "unauthorized", "message": "a valid bearer token is required",
                    "field": None}
    assert time.perf_counter() - started < 2


async def test_unauthenticated_malformed_body_is_401_not_422(server: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{server}") as client:
        response = await client.post("/api/v1/orders", content=b"{not json",
                                     headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def test_authenticated_body_over_the_cap_is_413(server: str) -> None:
    status, body = _status_and_body(await _raw(server, _headers(50_000_000, POS_TOKEN)))
    assert status == 413 and body["error"] == "body_too_large"
    # A chunked body that grows past the cap without announcing its length.
    chunk = b"x" * 8192
    request = (
        b"POST /api/v1/orders HTTP/1.1\r\nHost: till\r\nTransfer-Encoding: chunked\r\n"
        + f"Authorization: Bearer {POS_TOKEN}\r\n\r\n".encode()
        + (f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * 3
    )
    status, body = _status_and_body(await _raw(server, request))
    assert status == 413 and body["error"] == "body_too_large"


async def test_deeply_nested_json_is_refused_in_the_error_shape(server: str) -> None:
    nested = "[" * 5000 + "]" * 5000
    async with httpx.AsyncClient(base_url=f"http://{server}") as client:
        response = await client.post(
            "/api/v1/orders", content=nested.encode(),
            headers={"Authorization": f"Bearer {POS_TOKEN}", "Content-Type": "application/json"},
        )
    assert response.status_code == 422
    assert set(response.json()) == {"error", "message", "field"}


def test_json_depth_skips_brackets_inside_strings() -> None:
    assert json_depth(b'{"a": "[[[[{{{{", "b": [1, {"c": "\\"]]]"}]}') == 3
    assert json_depth(b"[]") == 1 and json_depth(b'"x"') == 0


async def test_slow_body_is_cut_off_with_408(server: str) -> None:
    started = time.perf_counter()
    answer = await _raw(server, _headers(100, POS_TOKEN) + b'{"order_id": ')
    status, body = _status_and_body(answer)
    assert status == 408 and body["error"] == "body_too_slow"
    assert time.perf_counter() - started < 3


async def test_slow_headers_are_cut_off(server: str) -> None:
    started = time.perf_counter()
    answer = await _raw(server, b"POST /api/v1/orders HTTP/1.1\r\nHost: ti")
    assert answer == b""  # closed without an answer once the header deadline passed
    assert time.perf_counter() - started < 3


async def test_connections_over_the_cap_are_closed_and_health_still_answers(server: str) -> None:
    host, port = server.split(":")
    idle = [await asyncio.open_connection(host, int(port)) for _ in range(LIMITS.max_connections + 20)]
    try:
        closed = 0
        for reader, _writer in idle:
            try:
                if await asyncio.wait_for(reader.read(), 0.05) == b"":
                    closed += 1
            except (TimeoutError, ConnectionResetError):
                pass
        assert closed >= 20  # the ones over the cap, at once
        # The idle ones are dropped at the header deadline, so new callers get through.
        await asyncio.sleep(LIMITS.header_seconds + 0.3)
        async with httpx.AsyncClient(base_url=f"http://{server}") as client:
            health = await client.get("/healthz")
        assert health.status_code == 200
    finally:
        for _reader, writer in idle:
            writer.close()


async def test_public_docs_need_no_token(server: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{server}") as client:
        response = await client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and "paths" in response.json()


async def test_tills_hold_at_most_their_share_of_the_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """Till requests beyond their share queue (then get 503), so a till flood never takes the
    connections members' chats need."""
    import bot.guard

    monkeypatch.setattr(bot.guard, "SLOT_WAIT_SECONDS", 0.3)
    inside = 0
    most = 0
    release = asyncio.Event()

    async def slow_app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await release.wait()
        inside -= 1
        await send({"type": "http.response.start", "status": 201, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"{}"})  # type: ignore[operator]

    guard = TillGuard(slow_app, token=POS_TOKEN, slots=2)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=guard)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://till") as client:
        headers = {"Authorization": f"Bearer {POS_TOKEN}"}
        calls = [asyncio.create_task(client.post("/api/v1/orders", json={}, headers=headers))
                 for _ in range(3)]
        await asyncio.sleep(0.6)  # the third waited out its turn
        assert most == 2
        release.set()
        answers = sorted(r.status_code for r in await asyncio.gather(*calls))
    assert answers == [201, 201, 503]


def test_the_members_share_is_kept_out_of_the_pool(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy.ext.asyncio import create_async_engine

    from bot.http import _till_share

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    assert _till_share(engine, 5) == 10  # the default pool: 5 + 10 connections, 5 for members


async def test_at_the_cap_a_newcomer_gets_in_and_a_trickling_connection_makes_room(
    server: str,
) -> None:
    host, port = server.split(":")
    slow = []
    for _ in range(LIMITS.max_connections):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /api/v1/orders HTTP/1.1\r\nHo")  # headers trickling in
        slow.append((reader, writer))
    try:
        await asyncio.sleep(0.05)
        # A till that connects now, with every slot held, is answered at once.
        async with httpx.AsyncClient(base_url=f"http://{server}") as client:
            health = await client.get("/healthz")
        assert health.status_code == 200
        evicted = 0
        for reader, _writer in slow:
            try:
                if await asyncio.wait_for(reader.read(), 0.02) == b"":
                    evicted += 1
            except (TimeoutError, ConnectionResetError):
                evicted += isinstance(reader.exception(), ConnectionResetError)
        assert evicted >= 1  # the oldest trickler made room
    finally:
        for _reader, writer in slow:
            writer.close()
