"""Erasure that erases: after /delete no push says who the member was (sent ones included,
nor an inviter's push about them), no push key carries a name or a birthday, and what is kept
of a till's request cannot be turned back into the phone number that was typed."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain.models import Member, Order, Push, Refund, SpendCode
from domain.privacy import erase_member
from domain.schedule import run_job
from domain.shop import Shop
from domain.transaction import write_transaction
from tests.conftest import STAFF_ID, Conversation
from tests.fake_telegram import message_update
from tests.spend import spend_code

USER = 4242
INVITER = 5151
TODAY = date(2026, 3, 10)  # the clock's local day
PHONE = "13812345678"


async def _member(session: AsyncSession, telegram_id: int) -> Member:
    await session.rollback()
    member = await session.scalar(
        select(Member).where(Member.telegram_id == telegram_id)
        .execution_options(populate_existing=True)
    )
    assert member is not None
    return member


async def _set(session: AsyncSession, member_id: int, **values: Any) -> None:
    async with write_transaction(session):
        await session.execute(update(Member).where(Member.id == member_id).values(**values))


async def _pushes(session: AsyncSession, **where: Any) -> list[Push]:
    await session.rollback()
    query = select(Push).execution_options(populate_existing=True).order_by(Push.id)
    for column, value in where.items():
        query = query.where(getattr(Push, column) == value)
    return list((await session.scalars(query)).all())


def _buttons(params: dict[str, Any]) -> dict[str, str]:
    rows = params["reply_markup"]["inline_keyboard"]
    return {b["text"]: b["callback_data"] for row in rows for b in row}


async def _delete_through_the_chat(chat: Conversation, user_id: int) -> None:
    await chat.send(message_update(user_id, "/delete"))
    prompt = chat.fake.calls_of("sendMessage")[-1]
    await chat.send(chat.fake.press(user_id, _buttons(prompt.params)["Yes, delete"]))
    reasons = chat.fake.calls_of("editMessageText")[-1]
    await chat.send(chat.fake.press(user_id, _buttons(reasons.params)["Skip"]))
    assert "Your data has been deleted" in chat.fake.calls_of("editMessageText")[-1].params["text"]


async def test_delete_empties_every_push_to_the_member_sent_ones_too(
    chat: Conversation, session: AsyncSession, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    shop = chat.app.shop
    await chat.send(message_update(USER, "/start", first_name="Lin", last_name="Wei"))
    member = await _member(session, USER)
    member_id, code = member.id, member.code
    # a Silver member whose birthday is today: the birthday job greets them with a gift
    await _set(session, member_id, tier="silver", birthday_month=3, birthday_day=10,
               birthday_year=1990)
    await run_job(session_factory, shop, "birthdays", today=TODAY)
    await chat.send(message_update(STAFF_ID, f"/sale {code} 199.00 o-1"))  # a receipt
    await chat.app.sender.deliver_pending()
    await chat.send(message_update(STAFF_ID, f"/sale {code} 20.00 o-2"))  # left pending
    before = {p.kind: p for p in await _pushes(session, member_id=member_id)}
    assert before["birthday"].status == "sent" and "Lin" in before["birthday"].payload
    assert any(p.status == "pending" for p in before.values())

    await _delete_through_the_chat(chat, USER)

    after = await _pushes(session, member_id=member_id)
    assert [p.payload for p in after] == ["{}"] * len(after)
    # what the shop's statistics need stays: kind, status, times
    kept = {(p.kind, p.status, p.created_at, p.sent_at) for p in after}
    assert ("birthday", "sent", before["birthday"].created_at,
            before["birthday"].sent_at) in kept
    assert {p.status for p in after} == {"sent", "failed"}
    # nothing in the whole outbox tells the name, the birthday or the member's coupon codes
    for push in await _pushes(session):
        for said in ("Lin", "Wei", "1990", "03-10", "0310", "-03-10"):
            assert said not in push.key and said not in push.payload, (said, push.key)


async def test_birthday_push_keys_carry_the_year_and_member_only(
    chat: Conversation, session: AsyncSession, session_factory: async_sessionmaker[AsyncSession]
) -> None:
    await chat.send(message_update(USER, "/start", first_name="Lin"))
    member_id = (await _member(session, USER)).id
    await _set(session, member_id, birthday_month=3, birthday_day=10)
    await run_job(session_factory, chat.app.shop, "birthdays", today=TODAY)
    keys = [p.key for p in await _pushes(session, kind="birthday")]
    assert keys == [f"birthday:{member_id}:2026"]


async def test_no_push_names_another_member_and_erasure_takes_old_names_out(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    shop = chat.app.shop
    await chat.send(message_update(INVITER, "/start", first_name="Ann"))
    await chat.send(message_update(USER, "/start", first_name="Mei"))
    inviter_id = (await _member(session, INVITER)).id
    friend = await _member(session, USER)
    friend_id, friend_code = friend.id, friend.code
    await _set(session, friend_id, referrer_id=inviter_id)
    bought = await api.post(
        "/api/v1/orders", json={"order_id": "F1", "member": friend_code, "amount": "60.00"}
    )
    assert bought.status_code == 201, bought.text
    [reward] = await _pushes(session, member_id=inviter_id, kind="referral_reward")
    assert "Mei" not in reward.payload and json.loads(reward.payload)["points"] == 200

    # A push written before payloads stopped naming friends still names her: erasure takes
    # her name out of the inviter's push and leaves the rest of it.
    legacy = json.loads(reward.payload) | {"friend": "Mei"}
    async with write_transaction(session):
        await session.execute(
            update(Push).where(Push.id == reward.id)
            .values(payload=json.dumps(legacy), status="sent")
        )
    assert await erase_member(session, shop, await _member(session, USER), reason=None)

    [scrubbed] = await _pushes(session, member_id=inviter_id, kind="referral_reward")
    assert "Mei" not in scrubbed.payload and scrubbed.status == "sent"
    assert json.loads(scrubbed.payload) == {k: v for k, v in legacy.items() if k != "friend"}


def _unkeyed(fields: dict[str, Any]) -> str:
    """How a request was fingerprinted before: a plain SHA-256 anyone can recompute."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _order_fields(phone: str) -> dict[str, Any]:
    return {
        "member": phone, "amount": 19900, "occurred_at": None, "redeem_points": 0,
        "coupon_code": None,
    }


async def test_a_stored_order_fingerprint_does_not_give_the_phone_back(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "/start", first_name="Lin"))
    contact = {"phone_number": f"86{PHONE}", "first_name": "Lin", "user_id": USER}
    await chat.send(message_update(USER, "", contact=contact))
    order = {"order_id": "P1", "member": PHONE, "amount": "199.00"}
    first = await api.post("/api/v1/orders", json=order)
    assert first.status_code == 201, first.text
    await session.rollback()
    stored = await session.scalar(select(Order.request_hash).where(Order.order_id == "P1"))
    assert stored is not None

    # The attack that worked: hash every guess of the number the old way, compare.
    guesses = [f"138123456{n:02d}" for n in range(100)]
    assert PHONE in guesses
    assert not [g for g in guesses if _unkeyed(_order_fields(g)) == stored]

    replay = await api.post("/api/v1/orders", json=order)
    assert replay.status_code == 201 and replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json() == first.json()
    other = await api.post("/api/v1/orders", json={**order, "amount": "99.00"})
    assert other.status_code == 409 and other.json()["error"] == "idempotency_conflict"

    refund = {"refund_id": "R1", "amount": "10.00"}
    done = await api.post("/api/v1/orders/P1/refunds", json=refund)
    assert done.status_code == 201, done.text
    await session.rollback()
    kept = await session.scalar(select(Refund.request_hash).where(Refund.refund_id == "R1"))
    assert kept != _unkeyed({"order_id": "P1", "amount": 1000})
    again = await api.post("/api/v1/orders/P1/refunds", json=refund)
    assert again.status_code == 201 and again.headers.get("Idempotent-Replayed") == "true"
    moved = await api.post("/api/v1/orders/P1/refunds", json={**refund, "amount": "11.00"})
    assert moved.status_code == 409


async def test_a_retry_of_an_order_stored_before_the_keys_is_still_a_replay(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(USER, "/start", first_name="Lin"))
    code = (await _member(session, USER)).code
    order = {"order_id": "OLD1", "member": code, "amount": "199.00"}
    first = await api.post("/api/v1/orders", json=order)
    assert first.status_code == 201
    async with write_transaction(session):  # as the row was written before this release
        await session.execute(
            update(Order).where(Order.order_id == "OLD1")
            .values(request_hash=_unkeyed(_order_fields(code)))
        )
    replay = await api.post("/api/v1/orders", json=order)
    assert replay.status_code == 201 and replay.headers.get("Idempotent-Replayed") == "true"
    other = await api.post("/api/v1/orders", json={**order, "amount": "99.00"})
    assert other.status_code == 409


async def test_erasure_ends_spend_codes_and_the_referral_link(
    chat: Conversation, session: AsyncSession, shop: Shop, api: httpx.AsyncClient
) -> None:
    await chat.send(message_update(USER, "/start", first_name="Lin"))
    member = await _member(session, USER)
    await chat.send(message_update(USER, "/invite"))
    token = (await _member(session, USER)).referral_token
    assert token is not None
    code = await spend_code(session, shop, member.code)

    await _delete_through_the_chat(chat, USER)

    await session.rollback()
    left = await session.scalar(select(func.count(SpendCode.id)).where(SpendCode.member_id == member.id))
    assert left == 0
    assert (await session.get(Member, member.id, populate_existing=True)).referral_token is None  # type: ignore[union-attr]
    refused = await api.post("/api/v1/orders", json={"order_id": "E-1", "member": code, "amount": "10.00"})
    assert refused.status_code == 404
    # A friend following the old link joins, but nobody is credited with inviting them.
    await chat.send(message_update(INVITER, f"/start ref_{token}", first_name="Friend"))
    friend = await _member(session, INVITER)
    assert friend.referrer_id is None
