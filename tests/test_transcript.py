"""The member-facing transcript in both languages: drive every member command once, press every
button the bot offers (a few levels deep), let staff record a sale and a refund and the sender
deliver the pushes, then read everything the member was sent. No English in the Chinese flow,
no internal key, no unformatted number."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.middlewares import Throttle
from domain import points
from domain.models import Member
from domain.shop import Shop
from domain.transaction import write_transaction
from tests.conftest import STAFF_ID, Conversation
from tests.fake_telegram import Call, callback_update, message_update

MEMBER = 6161
NAMES = {"en": "Lin", "zh": "小林"}
GOODWILL = {"en": "goodwill", "zh": "补偿积分"}  # a reason the shop wrote, in the member's language
COMMANDS = (
    "/start", "/card", "/checkin", "/points", "/rewards", "/coupons", "/invite", "/benefits",
    "/profile", "/mydata", "/help", "/language", "/delete",
)
# Buttons that would end the walk (erasing the member) or leave the language under test are
# read but not pressed (the language already chosen is pressed: it must change nothing).
NOT_PRESSED = ("del:",)
LANGUAGE_BUTTONS = ("lang:", "prl:")
# Each language's own name is written in that language on the language chooser.
LANGUAGE_NAMES = ("English",)
READ_METHODS = {
    "sendMessage": ("text",), "sendPhoto": ("caption",), "sendDocument": ("caption",),
    "editMessageText": ("text",), "editMessageCaption": ("caption",),
    "answerCallbackQuery": ("text",),
}


def _buttons(call: Call) -> list[dict[str, Any]]:
    markup = call.params.get("reply_markup") or {}
    rows = markup.get("inline_keyboard") or markup.get("keyboard") or []
    return [b if isinstance(b, dict) else {"text": b} for row in rows for b in row]


def _member_calls(chat: Conversation, since: int = 0) -> list[Call]:
    return [
        c for c in chat.fake.calls[since:]
        if c.method in READ_METHODS and c.params.get("chat_id", c.params.get("user_id")) in (
            str(MEMBER), None
        )
    ]


async def _walk(chat: Conversation, lang: str) -> list[str]:
    """Every command, then every button offered, breadth first, three presses deep."""
    seen_data: set[str] = set()
    frontier: list[tuple[str, int]] = []
    for command in COMMANDS:
        start = len(chat.fake.calls)
        await chat.send(message_update(MEMBER, command, language_code=lang, first_name=NAMES[lang]))
        frontier += _new_buttons(chat, start, seen_data, lang)
    for _depth in range(3):
        next_frontier: list[tuple[str, int]] = []
        for data, message_id in frontier:
            start = len(chat.fake.calls)
            await chat.send(callback_update(MEMBER, data, message_id=message_id, language_code=lang))
            next_frontier += _new_buttons(chat, start, seen_data, lang)
        frontier = next_frontier
    return [text for call in _member_calls(chat) for text in _texts(call)]


def _new_buttons(
    chat: Conversation, start: int, seen: set[str], lang: str
) -> list[tuple[str, int]]:
    found = []
    for call in _member_calls(chat, start):
        message_id = int(call.params.get("message_id") or 50)
        for button in _buttons(call):
            data = button.get("callback_data")
            other_language = data and data.startswith(LANGUAGE_BUTTONS) and not data.endswith(
                f":{lang}"
            )
            if data and data not in seen and not data.startswith(NOT_PRESSED) and not other_language:
                seen.add(data)
                found.append((data, message_id))
    return found


def _texts(call: Call) -> list[str]:
    texts = [str(call.params[f]) for f in READ_METHODS[call.method] if call.params.get(f)]
    texts += [str(b["text"]) for b in _buttons(call)]
    return texts


ORDER_ID = "walk-1"  # the shop's own order number, which a receipt may quote


def _readable(text: str) -> str:
    """What a person reads, without what is meant to be copied: codes, links, tags, the
    shop's order number, and the member's own name."""
    text = text.replace(ORDER_ID, " ").replace(NAMES["en"], " ")
    text = re.sub(r"https?://\S+", " ", text)
    text = re.sub(r"<[^>]+>", " ", text)
    text = re.sub(r"@\w+", " ", text)
    text = re.sub(r"/[a-z]+\b", " ", text)  # a command to type
    for name in LANGUAGE_NAMES:
        text = text.replace(name, " ")
    # a member, coupon or spend code (P3KQ-7M2Z-XW4E)
    text = re.sub(r"\b[0-9A-Z]{4,5}(?:-[0-9A-Z]{4,5})+\b", " ", text)
    return text


def _unformatted_numbers(text: str) -> list[str]:
    text = re.sub(r"\d{1,2} [A-Z][a-z]{2} \d{4}", " ", text)  # 9 Apr 2026
    text = re.sub(r"[A-Z][a-z]+ \d{4}", " ", text)  # March 2026
    text = re.sub(r"\d{4}-\d{2}-\d{2}", " ", text)  # 1990-03-21, a date to type
    text = re.sub(r"\d{4}\s?年", " ", text)  # 2026年, 2026 年
    text = re.sub(r"(?<![\d,.+-])(?:19|20)\d{2}(?!\d)", " ", text)  # a year: "in 2027"
    return re.findall(r"(?<![\d,.])[+-]?\d{4,}(?![\d])", text)


async def _transcript(chat: Conversation, session: AsyncSession, shop: Shop, lang: str) -> list[str]:
    for middleware in chat.app.dispatcher.update.outer_middleware:
        if isinstance(middleware, Throttle):
            middleware.limit = 10_000  # the walk is a robot: the flood notice is not under test
    await chat.send(message_update(MEMBER, "/start", language_code=lang, first_name=NAMES[lang]))
    await session.rollback()
    member = await session.scalar(select(Member).where(Member.telegram_id == MEMBER))
    assert member is not None
    async with write_transaction(session):
        await points.earn(
            session, shop, member.id, kind="adjustment", amount=5000, reason=GOODWILL[lang],
            key="transcript",
        )
    code = member.code
    # Staff record a sale and refund part of it; the member's pushes are delivered.
    await chat.send(message_update(STAFF_ID, f"/sale {code} 2480.50 {ORDER_ID}", first_name="Cashier"))
    await chat.send(message_update(STAFF_ID, f"/refund {ORDER_ID} 100.00", first_name="Cashier"))
    await chat.app.sender.deliver_pending()
    texts = await _walk(chat, lang)
    await chat.app.sender.deliver_pending()
    texts += [t for c in _member_calls(chat) if c.method == "sendMessage" for t in _texts(c)]
    return list(dict.fromkeys(texts))


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_transcript_reads_cleanly(
    chat: Conversation, session: AsyncSession, shop: Shop, lang: str
) -> None:
    texts = await _transcript(chat, session, shop, lang)
    assert len(texts) > 60, "the walk reached too little to judge"
    reward_keys = {r.key for r in shop.program.rewards}
    problems: list[str] = []
    for text in texts:
        readable = _readable(text)
        snake = re.findall(r"\b[a-z]+_[a-z_]+\b", readable)
        keys = [k for k in reward_keys if re.search(rf"\b{k}\b", readable)]
        numbers = _unformatted_numbers(readable)
        latin = re.findall(r"[A-Za-z]{2,}", readable) if lang == "zh" else []
        if snake or keys or numbers or latin:
            problems.append(f"{snake + keys + numbers + latin}: {text[:300]!r}")
    assert not problems, "\n".join(problems)
