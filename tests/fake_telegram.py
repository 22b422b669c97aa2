"""A fake Telegram Bot API server for tests.

The real aiogram ``Bot`` talks to it over HTTP::

    async with FakeTelegram() as fake:
        session = AiohttpSession(api=TelegramAPIServer.from_base(fake.base_url))
        bot = Bot(token="42:TEST", session=session)
        await bot.send_message(1, "hi")
        call = await fake.wait_for("sendMessage")

Every request is recorded as a :class:`Call`. Results mimic what the real Bot API
returns closely enough to pass aiogram's pydantic validation.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import json
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = [
    "BOT_FIRST_NAME",
    "BOT_ID",
    "BOT_USERNAME",
    "MESSAGE_NOT_MODIFIED",
    "Call",
    "FakeTelegram",
    "callback_update",
    "message_update",
    "my_chat_member_update",
    "pre_checkout_update",
    "successful_payment_update",
]

BOT_ID = 777000111
BOT_USERNAME = "companion_test_bot"
BOT_FIRST_NAME = "Companion"

BOT_USER: dict[str, Any] = {
    "id": BOT_ID,
    "is_bot": True,
    "first_name": BOT_FIRST_NAME,
    "username": BOT_USERNAME,
}

# Long polling is capped so that tests (and polling loops under test) never hang for long.
MAX_GET_UPDATES_TIMEOUT = 1.0

# Free-text fields are never JSON-decoded, even if a user typed something like "[1, 2]".
_TEXT_FIELDS = frozenset(
    {"text", "caption", "description", "short_description", "name", "query", "title", "payload",
     "error_message", "telegram_payment_charge_id"}
)
_RATE_LIMITED_METHODS = frozenset({"sendMessage", "sendPhoto"})
_MEDIA_KINDS = ("photo", "document")

# Telegram's own words when an edit would change nothing.
MESSAGE_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are"
    " exactly the same as a current content and reply markup of the message"
)

JsonDict = dict[str, Any]


@dataclass
class Call:
    """One recorded Bot API request."""

    method: str
    params: dict[str, Any]
    token: str
    failed: bool = False
    result: Any = None  # what the fake answered (e.g. the sent Message), None when it failed
    description: str = ""  # the error description when it failed
    at: float = 0.0  # time.monotonic() when the fake received it

    @property
    def message_id(self) -> int:
        """The id of the message this call sent or edited: a test presses buttons on it."""
        if not isinstance(self.result, dict) or "message_id" not in self.result:
            raise AssertionError(f"{self.method} returned no message: {self.result!r}")
        return int(self.result["message_id"])


@dataclass
class _FailureRule:
    error_code: int
    description: str
    retry_after: int | None
    times: int
    chat_id: str | None


class _ApiError(Exception):
    def __init__(self, error_code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.retry_after = retry_after

    def payload(self) -> JsonDict:
        body: JsonDict = {"ok": False, "error_code": self.error_code, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class FakeTelegram:
    """In-process fake of the Telegram Bot API, bound to 127.0.0.1 on a free port."""

    def __init__(
        self,
        rate_limit_per_second: float | None = None,
        limit_chats: Callable[[int], bool] | None = None,
    ) -> None:
        self.rate_limit_per_second = rate_limit_per_second
        # Which chats the rate limit counts (None: all), e.g. only the members pushes go to.
        self.limit_chats = limit_chats
        self.calls: list[Call] = []
        self.rate_limited = 0

        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._closing = False

        self._calls_changed = asyncio.Condition()
        self._pending_updates: asyncio.Queue[JsonDict] = asyncio.Queue()
        # Updates handed out by getUpdates but not yet confirmed via a higher offset.
        self._unconfirmed: list[JsonDict] = []

        self._failures: dict[str, list[_FailureRule]] = {}
        self._send_times: deque[float] = deque()

        self._message_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._messages: dict[tuple[str, int], JsonDict] = {}
        self._commands: dict[tuple[str, str], list[JsonDict]] = {}

        self._handlers: dict[str, Handler] = {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "sendMessage": self._send_message,
            "sendPhoto": self._send_photo,
            "sendDocument": self._send_document,
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._true,
            "answerCallbackQuery": self._true,
            "sendChatAction": self._true,
            "setChatMenuButton": self._true,
            "deleteWebhook": self._delete_webhook,
            "setWebhook": self._set_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "setMyCommands": self._set_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "getMyCommands": self._get_my_commands,
            # Telegram Stars: subscription invoices, pre-checkout answers, refunds.
            "createInvoiceLink": self._create_invoice_link,
            "answerPreCheckoutQuery": self._answer_pre_checkout_query,
            "refundStarPayment": self._refund_star_payment,
            "editUserStarSubscription": self._edit_user_star_subscription,
        }
        # Stars charges a test delivered (successful_payment_update) and what became of them.
        self.refunded_charges: set[str] = set()
        self.cancelled_subscriptions: dict[str, bool] = {}
        # Webhook mode: what setWebhook asked for, and where the fake delivers (like a load
        # balancer in front of several workers: ``webhook_targets``, round-robin).
        self.webhook: JsonDict | None = None
        self.webhook_targets: list[str] = []
        self.webhook_answers: list[tuple[int, int]] = []  # (update_id, HTTP status)
        self._next_target = itertools.count()
        self._webhook_client: Any = None
        # The real Bot API treats method names case-insensitively.
        self._handlers_ci = {name.lower(): handler for name, handler in self._handlers.items()}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        self._closing = False

    async def stop(self) -> None:
        self._closing = True
        if self._webhook_client is not None:
            await self._webhook_client.close()
            self._webhook_client = None
        # Wake any long-polling getUpdates so shutdown does not wait on it.
        self._pending_updates.put_nowait({})
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._port = None

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeTelegram is not started")
        return f"http://127.0.0.1:{self._port}"

    # ------------------------------------------------------------------ test API

    def calls_of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    def message(self, chat_id: int | str, message_id: int) -> JsonDict | None:
        """The message as the chat now shows it (after any edits), or None if never sent."""
        return self._messages.get((str(_chat(chat_id)["id"]), message_id))

    def press(
        self, user_id: int, data: str, message_id: int | None = None, *, language_code: str = "en"
    ) -> JsonDict:
        """A callback update: ``user_id`` pressed a button on a message the fake sent to their
        private chat (by default the latest), as that message now looks."""
        if message_id is None:
            chat = str(_chat(user_id)["id"])
            message_id = max((mid for c, mid in self._messages if c == chat), default=0)
        message = self.message(user_id, message_id)
        if message is None:
            raise AssertionError(f"no message {message_id} was sent to chat {user_id}")
        return callback_update(
            user_id, data, message=copy.deepcopy(message), language_code=language_code
        )

    def clear(self) -> None:
        self.calls.clear()
        self.rate_limited = 0

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[Call], bool] | None = None,
        timeout: float = 5.0,
    ) -> Call:
        """Return the first recorded call to ``method`` matching ``predicate``, waiting if needed."""

        def find() -> Call | None:
            for call in self.calls:
                if call.method == method and (predicate is None or predicate(call)):
                    return call
            return None

        try:
            async with asyncio.timeout(timeout), self._calls_changed:
                await self._calls_changed.wait_for(lambda: find() is not None)
        except TimeoutError:
            listing = "\n".join(
                f"  {c.method}{' [failed]' if c.failed else ''}: {_brief(c.params)}" for c in self.calls
            )
            raise AssertionError(
                f"no matching {method} call within {timeout}s; recorded calls:\n{listing or '  (none)'}"
            ) from None
        found = find()
        assert found is not None
        return found

    def push_update(self, update: JsonDict) -> None:
        self._pending_updates.put_nowait(update)

    async def deliver(
        self, update: JsonDict, *, secret: str | None = None, target: str | None = None,
        redeliver_for: float | None = None, redeliver_after: float = 0.3,
    ) -> int:
        """POST ``update`` to the webhook as Telegram does: to ``target``, or the next of
        ``webhook_targets`` (round-robin), with the secret setWebhook registered (or
        ``secret``, to play an impostor). Returns the HTTP status, also kept in
        ``webhook_answers`` (0: the connection was refused or dropped).

        With ``redeliver_for`` (seconds) an update not answered 2xx is delivered again after
        ``redeliver_after`` seconds to the next target, as Telegram retries a webhook (and
        nginx's ``proxy_next_upstream`` passes a refused post to the next worker), until it is
        answered 2xx or the time is up; the last status is returned."""
        from aiohttp import ClientError, ClientSession, ClientTimeout

        if self.webhook is None:
            raise AssertionError("no webhook is set: the bot did not call setWebhook")
        if self._webhook_client is None:
            self._webhook_client = ClientSession(timeout=ClientTimeout(total=30))
        headers = {"Content-Type": "application/json"}
        token = self.webhook.get("secret_token") if secret is None else secret
        if token:
            headers["X-Telegram-Bot-Api-Secret-Token"] = str(token)
        deadline = None if redeliver_for is None else time.monotonic() + redeliver_for
        while True:
            if target is None:
                if not self.webhook_targets:
                    raise AssertionError("no webhook_targets to deliver to")
                to = self.webhook_targets[next(self._next_target) % len(self.webhook_targets)]
            else:
                to = target
            try:
                async with self._webhook_client.post(
                    to, data=json.dumps(update), headers=headers
                ) as r:
                    await r.read()
                    status = r.status
            except (ClientError, OSError):
                if deadline is None:
                    raise
                status = 0
            self.webhook_answers.append((int(update["update_id"]), status))
            if deadline is None or 200 <= status < 300 or time.monotonic() > deadline:
                return status
            target = None  # the next worker, round-robin
            await asyncio.sleep(redeliver_after)

    def sends_per_second(self, chats: Callable[[int], bool] = lambda _: True) -> tuple[int, int]:
        """The most messages (sendMessage, sendPhoto) accepted in any one second, and the most
        to one chat in any one second, counting only chats ``chats`` picks."""
        times: list[tuple[float, int]] = []
        for call in self.calls:
            if call.method in _RATE_LIMITED_METHODS and not call.failed and call.at:
                chat = int(_chat(call.params["chat_id"])["id"])
                if chats(chat):
                    times.append((call.at, chat))
        times.sort()
        most = most_per_chat = 0
        window: deque[tuple[float, int]] = deque()
        last_to: dict[int, float] = {}
        for at, chat in times:
            window.append((at, chat))
            while at - window[0][0] >= 1.0:
                window.popleft()
            most = max(most, len(window))
            previous = last_to.get(chat)
            most_per_chat = max(most_per_chat, 2 if previous is not None and at - previous < 1.0 else 1)
            last_to[chat] = at
        return most, most_per_chat

    def fail_next(
        self,
        method: str,
        error_code: int,
        description: str,
        retry_after: int | None = None,
        times: int = 1,
        chat_id: int | str | None = None,
    ) -> None:
        """Make the next ``times`` calls to ``method`` (optionally for one chat) fail."""
        rule = _FailureRule(
            error_code=error_code,
            description=description,
            retry_after=retry_after,
            times=times,
            chat_id=None if chat_id is None else str(chat_id),
        )
        self._failures.setdefault(method, []).append(rule)

    # ------------------------------------------------------------------ HTTP plumbing

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        method = request.match_info["method"]
        params = await _parse_params(request)
        call = Call(method=method, params=params, token=token, at=time.monotonic())

        handler = self._handlers_ci.get(method.lower())
        if handler is None:
            error = _ApiError(404, "Not Found: method not found")
        else:
            error = self._injected_failure(method, params) or self._rate_limit(method, params)

        if error is None:
            assert handler is not None
            try:
                result = await handler(params)
            except _ApiError as exc:
                error = exc

        if error is not None:
            call.failed = True
            call.description = error.description
            await self._record(call)
            return web.json_response(error.payload(), status=error.error_code)
        call.result = result
        await self._record(call)
        return web.json_response({"ok": True, "result": result})

    async def _record(self, call: Call) -> None:
        async with self._calls_changed:
            self.calls.append(call)
            self._calls_changed.notify_all()

    def _injected_failure(self, method: str, params: dict[str, Any]) -> _ApiError | None:
        rules = self._failures.get(method, [])
        chat_id = params.get("chat_id")
        for rule in rules:
            if rule.chat_id is not None and rule.chat_id != str(chat_id):
                continue
            rule.times -= 1
            if rule.times <= 0:
                rules.remove(rule)
            return _ApiError(rule.error_code, rule.description, rule.retry_after)
        return None

    def _rate_limit(self, method: str, params: dict[str, Any]) -> _ApiError | None:
        if self.rate_limit_per_second is None or method not in _RATE_LIMITED_METHODS:
            return None
        if self.limit_chats is not None and params.get("chat_id") not in (None, ""):
            if not self.limit_chats(int(_chat(params["chat_id"])["id"])):
                return None
        now = time.monotonic()
        while self._send_times and now - self._send_times[0] >= 1.0:
            self._send_times.popleft()
        if len(self._send_times) >= self.rate_limit_per_second:
            self.rate_limited += 1
            return _ApiError(429, "Too Many Requests: retry after 1", retry_after=1)
        self._send_times.append(now)
        return None

    # ------------------------------------------------------------------ method handlers

    async def _true(self, params: dict[str, Any]) -> bool:
        return True

    async def _set_webhook(self, params: dict[str, Any]) -> bool:
        url = str(params.get("url") or "")
        if not url.startswith("https://"):
            raise _ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise _ApiError(400, "Bad Request: secret token contains unallowed characters")
        self.webhook = dict(params)
        return True

    async def _delete_webhook(self, params: dict[str, Any]) -> bool:
        self.webhook = None
        return True

    async def _get_webhook_info(self, params: dict[str, Any]) -> JsonDict:
        info: JsonDict = {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
        if self.webhook is not None:
            info["url"] = self.webhook["url"]
            info["max_connections"] = int(self.webhook.get("max_connections") or 40)
            if self.webhook.get("allowed_updates"):
                info["allowed_updates"] = self.webhook["allowed_updates"]
        return info

    async def _get_me(self, params: dict[str, Any]) -> JsonDict:
        return {
            **BOT_USER,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _get_updates(self, params: dict[str, Any]) -> list[JsonDict]:
        offset = int(params.get("offset", 0) or 0)
        limit = int(params.get("limit", 100) or 100)
        timeout = min(float(params.get("timeout", 0) or 0), MAX_GET_UPDATES_TIMEOUT)

        allowed = params.get("allowed_updates")

        def prune() -> None:
            # Like the real API: confirmed updates are forgotten, and so are types not subscribed to.
            self._unconfirmed = [
                u
                for u in self._unconfirmed
                if u["update_id"] >= offset and (not allowed or _update_type(u) in allowed)
            ]

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._drain_queue()
        prune()
        while not self._unconfirmed and not self._closing and (remaining := deadline - loop.time()) > 0:
            try:
                update = await asyncio.wait_for(self._pending_updates.get(), remaining)
            except TimeoutError:
                break
            if update:  # an empty dict is the shutdown wake-up marker
                self._unconfirmed.append(update)
            self._drain_queue()
            prune()
        return self._unconfirmed[:limit]

    def _drain_queue(self) -> None:
        while not self._pending_updates.empty():
            update = self._pending_updates.get_nowait()
            if update:
                self._unconfirmed.append(update)

    async def _send_message(self, params: dict[str, Any]) -> JsonDict:
        chat_id = _require_chat_id(params)
        text = params.get("text")
        if not text:
            raise _ApiError(400, "Bad Request: message text is empty")
        message = self._new_message(chat_id, params)
        message["text"] = text
        if isinstance(params.get("entities"), list):
            message["entities"] = params["entities"]
        return self._store(message)

    async def _send_photo(self, params: dict[str, Any]) -> JsonDict:
        chat_id = _require_chat_id(params)
        file_id = self._file_id_for(params.get("photo"), "photo")
        message = self._new_message(chat_id, params)
        message["photo"] = [
            _photo_size(f"{file_id}-s", 90, 90, 1_024),
            _photo_size(file_id, 800, 800, 48_000),
        ]
        _add_caption(message, params)
        return self._store(message)

    async def _send_document(self, params: dict[str, Any]) -> JsonDict:
        chat_id = _require_chat_id(params)
        document = params.get("document")
        file_id = self._file_id_for(document, "document")
        file_name = document["upload"] if isinstance(document, dict) else "document"
        size = document["size"] if isinstance(document, dict) else 1_024
        message = self._new_message(chat_id, params)
        message["document"] = {
            "file_id": file_id,
            "file_unique_id": _unique_id(file_id),
            "file_name": file_name,
            "mime_type": "application/octet-stream",
            "file_size": size,
        }
        _add_caption(message, params)
        return self._store(message)

    async def _edit_message_text(self, params: dict[str, Any]) -> JsonDict | bool:
        if not params.get("text"):
            raise _ApiError(400, "Bad Request: message text is empty")
        return self._edit(params, "text", params["text"])

    async def _edit_message_caption(self, params: dict[str, Any]) -> JsonDict | bool:
        return self._edit(params, "caption", params.get("caption") or None)

    async def _edit_message_reply_markup(self, params: dict[str, Any]) -> JsonDict | bool:
        return self._edit(params, None, None)

    def _edit(self, params: dict[str, Any], field: str | None, value: str | None) -> JsonDict | bool:
        """Edit a message the fake sent, answering as Telegram does: an unknown message is
        "not found", an edit that changes neither the content nor the inline keyboard is
        "not modified"."""
        if params.get("inline_message_id"):
            return True
        chat_id = _require_chat_id(params)
        try:
            message_id = int(params["message_id"])
        except (KeyError, ValueError):
            raise _ApiError(400, "Bad Request: message identifier is not specified") from None
        message = self._messages.get((str(_chat(chat_id)["id"]), message_id))
        if message is None:
            raise _ApiError(400, "Bad Request: message to edit not found")
        has_media = any(kind in message for kind in _MEDIA_KINDS)
        if field == "text" and has_media:
            raise _ApiError(400, "Bad Request: there is no text in the message to edit")
        if field == "caption" and not has_media:
            raise _ApiError(400, "Bad Request: there is no caption in the message to edit")
        markup = params.get("reply_markup")
        new_markup = markup if isinstance(markup, dict) and "inline_keyboard" in markup else None
        unchanged_content = field is None or message.get(field) == value
        if unchanged_content and message.get("reply_markup") == new_markup:
            raise _ApiError(400, MESSAGE_NOT_MODIFIED)
        edited = {**message, "edit_date": int(time.time())}
        if field is not None:
            if value is None:
                edited.pop(field, None)
            else:
                edited[field] = value
        if new_markup is None:
            edited.pop("reply_markup", None)
        else:
            edited["reply_markup"] = new_markup
        return self._store(edited)

    async def _create_invoice_link(self, params: dict[str, Any]) -> str:
        for field in ("title", "description", "payload", "currency", "prices"):
            if params.get(field) in (None, "", []):
                raise _ApiError(400, f"Bad Request: {field} is empty")
        prices = params["prices"]
        if params["currency"] == "XTR":
            # Stars: one price, no provider; a subscription lasts exactly 30 days.
            if len(prices) != 1 or params.get("provider_token"):
                raise _ApiError(400, "Bad Request: invalid Stars invoice")
            period = params.get("subscription_period")
            if period is not None and int(period) != 2592000:
                raise _ApiError(400, "Bad Request: SUBSCRIPTION_PERIOD_INVALID")
        digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
        return "https://t.me/$" + digest.hexdigest()[:16]

    async def _answer_pre_checkout_query(self, params: dict[str, Any]) -> bool:
        if not params.get("pre_checkout_query_id"):
            raise _ApiError(400, "Bad Request: QUERY_ID_INVALID")
        if params.get("ok") in (False, "false") and not params.get("error_message"):
            raise _ApiError(400, "Bad Request: error_message is required when ok is false")
        return True

    async def _refund_star_payment(self, params: dict[str, Any]) -> bool:
        charge = str(params.get("telegram_payment_charge_id") or "")
        if not charge or not params.get("user_id"):
            raise _ApiError(400, "Bad Request: CHARGE_ID_EMPTY")
        if charge in self.refunded_charges:
            raise _ApiError(400, "Bad Request: CHARGE_ALREADY_REFUNDED")
        self.refunded_charges.add(charge)
        return True

    async def _edit_user_star_subscription(self, params: dict[str, Any]) -> bool:
        charge = str(params.get("telegram_payment_charge_id") or "")
        if not charge or not params.get("user_id") or params.get("is_canceled") is None:
            raise _ApiError(400, "Bad Request: SUBSCRIPTION_ID_INVALID")
        self.cancelled_subscriptions[charge] = params["is_canceled"] in (True, "true")
        return True

    async def _set_my_commands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _ApiError(400, "Bad Request: can't parse commands JSON object")
        self._commands[_commands_key(params)] = commands
        return True

    async def _delete_my_commands(self, params: dict[str, Any]) -> bool:
        self._commands.pop(_commands_key(params), None)
        return True

    async def _get_my_commands(self, params: dict[str, Any]) -> list[JsonDict]:
        return self._commands.get(_commands_key(params), [])

    # ------------------------------------------------------------------ helpers

    def _new_message(self, chat_id: int | str, params: dict[str, Any]) -> JsonDict:
        message: JsonDict = {
            "message_id": next(self._message_ids),
            "from": BOT_USER,
            "chat": _chat(chat_id),
            "date": int(time.time()),
        }
        markup = params.get("reply_markup")
        # Only inline keyboards are attached to the sent Message by the real API.
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        return message

    def _store(self, message: JsonDict) -> JsonDict:
        self._messages[(str(message["chat"]["id"]), message["message_id"])] = message
        return message

    def _file_id_for(self, value: Any, kind: str) -> str:
        """Re-sending by file_id keeps the id; uploads and URLs get a fresh one."""
        if isinstance(value, str) and value and not value.startswith(("http://", "https://", "attach://")):
            return value
        if value is None or value == "":
            raise _ApiError(400, f"Bad Request: there is no {kind} in the request")
        return f"{kind}-{next(self._file_ids)}"


# ---------------------------------------------------------------------- request parsing


async def _parse_params(request: web.Request) -> dict[str, Any]:
    form = await request.post()
    if not form and request.query:
        form = request.query  # type: ignore[assignment]

    params: dict[str, Any] = {}
    uploads: dict[str, JsonDict] = {}
    for key, value in form.items():
        if isinstance(value, web.FileField):
            data = value.file.read()
            uploads[key] = {"upload": value.filename, "size": len(data), "bytes": data}
        elif isinstance(value, str):
            params[key] = value if key in _TEXT_FIELDS else _maybe_json(value)
        else:
            params[key] = value

    # aiogram sends files as `photo=attach://<random key>` plus a file part named <random key>;
    # fold the upload into the parameter that references it.
    for key, value in list(params.items()):
        if isinstance(value, str) and value.startswith("attach://"):
            attached = uploads.pop(value.removeprefix("attach://"), None)
            if attached is not None:
                params[key] = attached
    params.update(uploads)
    return params


def _update_type(update: JsonDict) -> str | None:
    return next((key for key in update if key != "update_id"), None)


def _maybe_json(value: str) -> Any:
    if not value.startswith(("{", "[")):
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return decoded if isinstance(decoded, (dict, list)) else value


def _require_chat_id(params: dict[str, Any]) -> int | str:
    chat_id = params.get("chat_id")
    if chat_id is None or chat_id == "":
        raise _ApiError(400, "Bad Request: chat_id is empty")
    return chat_id  # type: ignore[no-any-return]


def _chat(chat_id: int | str) -> JsonDict:
    try:
        numeric = int(chat_id)
    except ValueError:
        # "@channelusername": invent a stable channel id.
        digest = int(hashlib.sha1(str(chat_id).encode()).hexdigest()[:8], 16)
        return {"id": -1_000_000_000_000 - digest, "type": "channel", "username": str(chat_id).lstrip("@")}
    if numeric > 0:
        return {"id": numeric, "type": "private"}
    return {"id": numeric, "type": "supergroup" if numeric < -1_000_000_000_000 else "group", "title": "Test chat"}


def _add_caption(message: JsonDict, params: dict[str, Any]) -> None:
    if params.get("caption"):
        message["caption"] = params["caption"]
    if isinstance(params.get("caption_entities"), list):
        message["caption_entities"] = params["caption_entities"]


def _photo_size(file_id: str, width: int, height: int, size: int) -> JsonDict:
    return {
        "file_id": file_id,
        "file_unique_id": _unique_id(file_id),
        "width": width,
        "height": height,
        "file_size": size,
    }


def _unique_id(file_id: str) -> str:
    return "u" + hashlib.sha1(file_id.encode()).hexdigest()[:15]


def _commands_key(params: dict[str, Any]) -> tuple[str, str]:
    scope = params.get("scope") or {"type": "default"}
    return json.dumps(scope, sort_keys=True), str(params.get("language_code", ""))


def _brief(params: dict[str, Any]) -> str:
    shown = {k: (f"<{len(v['bytes'])} bytes>" if isinstance(v, dict) and "bytes" in v else v) for k, v in params.items()}
    text = repr(shown)
    return text if len(text) <= 200 else text[:197] + "..."


# ---------------------------------------------------------------------- update builders

_update_ids = itertools.count(1)
_incoming_message_ids = itertools.count(1)


def _next_update_id(update_id: int | None) -> int:
    return next(_update_ids) if update_id is None else update_id


def _user(user_id: int, first_name: str, last_name: str | None, username: str | None, language_code: str) -> JsonDict:
    user: JsonDict = {"id": user_id, "is_bot": False, "first_name": first_name, "language_code": language_code}
    if last_name is not None:
        user["last_name"] = last_name
    if username is not None:
        user["username"] = username
    return user


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def message_update(
    user_id: int,
    text: str,
    *,
    chat_id: int | None = None,
    chat_type: str = "private",
    language_code: str = "en",
    first_name: str = "Ann",
    last_name: str | None = None,
    username: str | None = None,
    contact: dict[str, Any] | None = None,
    update_id: int | None = None,
    message_id: int | None = None,
) -> JsonDict:
    """An incoming ``message`` update from a user."""
    chat_id = user_id if chat_id is None else chat_id
    if chat_type == "private":
        chat: JsonDict = {"id": chat_id, "type": "private", "first_name": first_name}
        if last_name is not None:
            chat["last_name"] = last_name
        if username is not None:
            chat["username"] = username
    else:
        chat = {"id": chat_id, "type": chat_type, "title": "Test chat"}

    message: JsonDict = {
        "message_id": next(_incoming_message_ids) if message_id is None else message_id,
        "from": _user(user_id, first_name, last_name, username, language_code),
        "chat": chat,
        "date": int(time.time()),
    }
    if text:
        message["text"] = text
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": _utf16_len(command)}]
    if contact is not None:
        message["contact"] = contact
    return {"update_id": _next_update_id(update_id), "message": message}


def callback_update(
    user_id: int,
    data: str,
    *,
    message_id: int = 1,
    chat_id: int | None = None,
    language_code: str = "en",
    update_id: int | None = None,
    message: JsonDict | None = None,
) -> JsonDict:
    """A ``callback_query`` update: the user pressed an inline button on a bot message
    (``message``, as :meth:`FakeTelegram.message` gives it, or a bare one with ``message_id``)."""
    chat_id = user_id if chat_id is None else chat_id
    update_id = _next_update_id(update_id)
    pressed = message or {
        "message_id": message_id,
        "from": BOT_USER,
        "chat": _chat(chat_id),
        "date": int(time.time()),
    }
    return {
        "update_id": update_id,
        "callback_query": {
            "id": f"cbq-{update_id}",
            "from": _user(user_id, "Ann", None, None, language_code),
            "chat_instance": f"ci-{chat_id}",
            "data": data,
            "message": pressed,
        },
    }


def my_chat_member_update(user_id: int, status: str) -> JsonDict:
    """The user blocked (``"kicked"``) or unblocked (``"member"``) the bot in a private chat."""
    if status not in ("kicked", "member"):
        raise ValueError(f"status must be 'kicked' or 'member', not {status!r}")
    now = int(time.time())

    def member(member_status: str) -> JsonDict:
        result: JsonDict = {"status": member_status, "user": BOT_USER}
        if member_status == "kicked":
            result["until_date"] = 0
        return result

    old_status = "member" if status == "kicked" else "kicked"
    return {
        "update_id": _next_update_id(None),
        "my_chat_member": {
            "chat": {"id": user_id, "type": "private", "first_name": "Ann"},
            "from": _user(user_id, "Ann", None, None, "en"),
            "date": now,
            "old_chat_member": member(old_status),
            "new_chat_member": member(status),
        },
    }


def pre_checkout_update(
    user_id: int, payload: str, total_amount: int, *, currency: str = "XTR",
    language_code: str = "en", query_id: str | None = None,
) -> JsonDict:
    """A ``pre_checkout_query`` update: the user confirmed paying an invoice of the bot."""
    update_id = _next_update_id(None)
    return {
        "update_id": update_id,
        "pre_checkout_query": {
            "id": query_id or f"pcq-{update_id}",
            "from": _user(user_id, "Ann", None, None, language_code),
            "currency": currency,
            "total_amount": total_amount,
            "invoice_payload": payload,
        },
    }


def successful_payment_update(
    user_id: int, payload: str, total_amount: int, charge_id: str, *,
    expires_at: int | None = None, is_recurring: bool = True, is_first_recurring: bool = True,
    currency: str = "XTR", language_code: str = "en",
) -> JsonDict:
    """A service message with ``successful_payment``: a Stars subscription's first payment
    (``is_first_recurring``) or a renewal (``is_first_recurring=False``), with Telegram's
    ``subscription_expiration_date`` (a Unix time) when given."""
    payment: JsonDict = {
        "currency": currency,
        "total_amount": total_amount,
        "invoice_payload": payload,
        "telegram_payment_charge_id": charge_id,
        "provider_payment_charge_id": "",
    }
    if expires_at is not None:
        payment["subscription_expiration_date"] = expires_at
    if is_recurring:
        payment["is_recurring"] = True
        if is_first_recurring:
            payment["is_first_recurring"] = True
    update = message_update(user_id, "", language_code=language_code)
    update["message"]["successful_payment"] = payment
    return update
