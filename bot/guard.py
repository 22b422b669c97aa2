"""What keeps the HTTP surface from becoming a way to stop the shop.

- ``TillGuard`` (ASGI): for the till API, the bearer token is checked from the headers before a
  byte of the body is read; the body is capped in size and in the time it may take to arrive,
  and its JSON in nesting depth; till requests take at most a share of the database pool, so
  members in the chat always have connections left. Every refusal is the API's error shape.
- ``GuardedH11Protocol`` (uvicorn): a cap on open connections (the ones over it are closed at
  once, so file descriptors never run out) and a deadline for a request's headers, so slow
  clients cannot hold every slot.

The API is still meant to sit behind a reverse proxy (docs/deploy.md): these limits make the
process survive a flood, the proxy keeps it from reaching the process at all.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

SLOT_WAIT_SECONDS = 10.0  # how long a till request may queue for its share of the pool


@dataclass(frozen=True)
class HttpLimits:
    """The limits of the HTTP surface; the defaults suit a shop's tills."""

    max_body: int = 16 * 1024  # a till order is under 2 KB
    max_json_depth: int = 8  # the deepest request body the API documents is 2
    body_seconds: float = 10.0  # the whole body must arrive within this
    header_seconds: float = 10.0  # the request line and headers must arrive within this
    max_connections: int = 500  # open connections; the ones over it are closed at once
    member_share: int = 5  # database connections the tills can never take from members


DEFAULT_LIMITS = HttpLimits()


def _error(error: str, message: str) -> bytes:
    return json.dumps({"error": error, "message": message, "field": None}).encode()


async def _answer(
    send: Send, status: int, error: str, message: str,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    body = _error(error, message)
    await send({
        "type": "http.response.start", "status": status,
        "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"), *headers,
        ],
    })
    await send({"type": "http.response.body", "body": body})


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text (strings are skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


class TillGuard:
    """ASGI middleware in front of the till API (``prefix``); other paths pass untouched."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        slots: int,
        limits: HttpLimits = DEFAULT_LIMITS,
        prefix: str = "/api/v1/",
        public: frozenset[str] = frozenset({"/api/v1/openapi.json", "/api/v1/docs"}),
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.prefix = prefix
        self.public = public
        self.max_body = limits.max_body
        self.max_depth = limits.max_json_depth
        self.body_seconds = limits.body_seconds
        self.slots = asyncio.Semaphore(max(1, slots))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self.prefix) or path in self.public:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if not self._authorized(headers.get(b"authorization", b"")):
            await _answer(
                send, 401, "unauthorized", "a valid bearer token is required",
                ((b"www-authenticate", b"Bearer"),),
            )
            return
        body = await self.checked_body(headers, receive, send)
        if body is None:
            return
        if not self.slots.locked():
            await self.slots.acquire()  # a slot is free: no timer, no task (most requests)
        else:
            try:
                await asyncio.wait_for(self.slots.acquire(), SLOT_WAIT_SECONDS)
            except TimeoutError:
                await _answer(send, 503, "busy", "the till API is busy, try again shortly")
                return
        try:
            await self.app(scope, _replay(body, receive), send)
        finally:
            self.slots.release()

    async def checked_body(
        self, headers: dict[bytes, bytes], receive: Receive, send: Send
    ) -> bytes | None:
        """The whole body within the size, time and nesting limits, or None once the refusal
        (413, 408, 422) is answered or the client has gone."""
        too_large = f"a request body is at most {self.max_body} bytes"
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await _answer(send, 413, "body_too_large", too_large)
            return None
        try:
            body = await asyncio.wait_for(self._read_body(receive), self.body_seconds)
        except _TooLarge:
            await _answer(send, 413, "body_too_large", too_large)
            return None
        except TimeoutError:
            await _answer(send, 408, "body_too_slow", "the request body did not arrive in time")
            return None
        except _Disconnected:
            return None
        if body and json_depth(body) > self.max_depth:
            await _answer(send, 422, "invalid_input", "the JSON body is nested too deeply")
            return None
        return body

    def _authorized(self, header: bytes) -> bool:
        scheme, _, given = header.partition(b" ")
        # Constant-time comparison; with no token configured every call is refused.
        return (
            self.token is not None and scheme.lower() == b"bearer"
            and hmac.compare_digest(given.strip(), self.token)
        )

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, then whatever the client does next (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class WebAppGuard:
    """ASGI middleware in front of the Mini App (``prefix``): no till token there (Telegram's
    init data is its key, checked from the headers by ``verify`` before the body is read,
    under ``api_prefix``), but the same caps on a body's size, arrival time and depth."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        verify: Callable[[str | None], bool],
        limits: HttpLimits = DEFAULT_LIMITS,
        prefix: str = "/app",
        api_prefix: str = "/app/api/",
    ) -> None:
        self.app = app
        self.verify = verify
        self.prefix = prefix
        self.api_prefix = api_prefix
        self.body = TillGuard(app, token=None, slots=1, limits=limits)  # its body reading

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if path.startswith(self.api_prefix):
            header = headers.get(b"authorization")
            if not self.verify(header.decode("latin-1") if header is not None else None):
                refusal = json.dumps(
                    {"error": "unauthorized", "message": "valid Telegram init data is required"}
                ).encode()
                await send({
                    "type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(refusal)).encode())],
                })
                await send({"type": "http.response.body", "body": refusal})
                return
        body = await self.body.checked_body(headers, receive, send)
        if body is None:
            return
        await self.app(scope, _replay(body, receive), send)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a cap on connections and a deadline for headers.

    At the cap, a new connection makes room by closing the connection that has waited
    longest for its headers, trickled ones first (what a slow-headers flood holds), and is
    itself closed only when every connection is busy with a request: a till or a member
    connecting during a flood gets in."""

    max_connections = HttpLimits.max_connections
    header_seconds = HttpLimits.header_seconds

    @classmethod
    def with_limits(cls, limits: HttpLimits) -> type[GuardedH11Protocol]:
        """A protocol class carrying ``limits`` (uvicorn instantiates the class itself)."""
        return type(
            "GuardedH11", (cls,),
            {"max_connections": limits.max_connections, "header_seconds": limits.header_seconds},
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._waiting_since = 0.0  # when it began waiting for a request's headers
        self._trickled = False  # bytes came, but not yet a whole request line and headers

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections and not self._make_room():
            transport.abort()  # at once: the descriptor is free again for someone else
            return
        self._arm_header_deadline()

    def _make_room(self) -> bool:
        """Close the connection waiting longest for headers (trickled ones first)."""
        waiting = [
            c for c in self.connections
            if isinstance(c, GuardedH11Protocol) and c is not self
            and c._header_deadline is not None
        ]
        if not waiting:
            return False
        victim = min(waiting, key=lambda c: (not c._trickled, c._waiting_since))
        victim._cancel_header_deadline()
        victim.transport.abort()
        return True

    def data_received(self, data: bytes) -> None:
        if self._header_deadline is not None:
            self._trickled = True
        super().data_received(data)

    def _arm_header_deadline(self) -> None:
        self._cancel_header_deadline()
        self._waiting_since = self.loop.time()
        self._trickled = False
        self._header_deadline = self.loop.call_later(self.header_seconds, self._headers_too_slow)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.abort()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:
            self._cancel_header_deadline()  # the headers are in; the body has its own deadline

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_deadline()  # the next request on this connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)
