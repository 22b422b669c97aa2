"""A member code is for earning, not for spending.

The static member code (printed on the card, shown to every cashier) or the phone earns points
and may use a coupon by the coupon's own code; spending points needs the one-time spend code
the member gets from "Pay with points" on the card: a QR code valid a few minutes, used once.
Through the fake Bot API (the button, the QR) and the till API (orders, lookups, races).
"""

from __future__ import annotations

import asyncio
import io
import tomllib
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import zxingcpp
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.settings import DEFAULT_PROGRAM_FILE
from domain import members, spending
from domain.clock import FixedClock
from domain.coupons import normalize_coupon_code
from domain.member_code import normalize_member_code
from domain.models import Coupon, LedgerEntry, Member, Order, PointsLot, Push, SpendCode
from domain.program import Program
from domain.shop import Shop
from handlers.callbacks import SpendCodeAsk
from tests.conftest import STAFF_ID, Conversation
from tests.fake_telegram import callback_update, message_update

MEMBER = 4242
ORDERS = "/api/v1/orders"


@dataclass(frozen=True)
class Joined:
    id: int
    code: str


async def _join(chat: Conversation, session: AsyncSession, language: str = "en") -> Joined:
    await chat.send(message_update(MEMBER, "/start", first_name="Lin", language_code=language))
    await session.rollback()
    row = (
        await session.execute(select(Member.id, Member.code).where(Member.telegram_id == MEMBER))
    ).one()
    return Joined(row.id, row.code)


def _buttons(params: dict[str, Any]) -> list[dict[str, Any]]:
    markup = params.get("reply_markup") or {"inline_keyboard": []}
    return [b for row in markup["inline_keyboard"] for b in row]


def _decoded(params: dict[str, Any]) -> list[str]:
    image = Image.open(io.BytesIO(params["photo"]["bytes"]))
    return [barcode.text for barcode in zxingcpp.read_barcodes(image)]


async def _pay_with_points(chat: Conversation, language: str = "en") -> tuple[str, str]:
    """Open the card, tap "Pay with points": the scanned text of the QR and its caption."""
    await chat.send(message_update(MEMBER, "/card", language_code=language))
    card = chat.fake.calls_of("sendPhoto")[-1]
    [button] = _buttons(card.params)
    await chat.send(chat.fake.press(MEMBER, button["callback_data"], language_code=language))
    sent = chat.fake.calls_of("sendPhoto")[-1]
    assert sent is not card
    [scanned] = _decoded(sent.params)
    return scanned, str(sent.params["caption"])


async def _books(session: AsyncSession, member_id: int) -> dict[str, int]:
    """What the shop keeps for the member (balance == ledger == lots - debt, checked)."""
    await session.rollback()
    member = await session.get(Member, member_id, populate_existing=True)
    assert member is not None
    ledger = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0))
        .where(LedgerEntry.member_id == member_id)
    )
    lots = await session.scalar(
        select(func.coalesce(func.sum(PointsLot.remaining), 0))
        .where(PointsLot.member_id == member_id)
    )
    assert member.points_balance == ledger == lots - member.points_debt
    orders = await session.scalar(select(func.count(Order.id)).where(Order.member_id == member_id))
    pushes = await session.scalar(
        select(func.count(Push.id)).where(Push.member_id == member_id, Push.kind == "receipt")
    )
    return {"balance": member.points_balance, "orders": int(orders or 0),
            "receipts": int(pushes or 0)}


async def _issue(session: AsyncSession, shop: Shop, member: Joined) -> str:
    await session.rollback()
    return (await spending.issue(session, shop, member.id)).code


# The card: a button, a QR with a one-time code --------------------------------------------


async def test_pay_with_points_gives_a_qr_with_a_one_time_spend_code(
    chat: Conversation, session: AsyncSession
) -> None:
    member = await _join(chat, session)
    await chat.send(message_update(MEMBER, "/card"))
    card = chat.fake.calls_of("sendPhoto")[-1]
    assert [b["text"] for b in _buttons(card.params)] == ["💸 Pay with points"]
    assert "To use your points, tap “Pay with points”" in card.params["caption"]

    scanned, caption = await _pay_with_points(chat)

    assert scanned != member.code and scanned.startswith("P") and len(scanned) == 12
    assert spending.normalize_spend_code(scanned) == scanned
    assert spending.format_spend_code(scanned) in caption
    assert "Pay with points" in caption and "Points: <b>100</b>" in caption
    assert "within 5 minutes" in caption
    assert member.code not in caption
    # Each tap is a new code, never a cached picture.
    again, _ = await _pay_with_points(chat)
    assert again != scanned
    await session.rollback()
    rows = (await session.scalars(select(SpendCode).where(SpendCode.member_id == member.id))).all()
    assert {r.code for r in rows} == {scanned, again}
    assert all(r.used_at is None for r in rows)


async def test_pay_with_points_in_chinese(chat: Conversation, session: AsyncSession) -> None:
    await _join(chat, session, language="zh")
    await chat.send(message_update(MEMBER, "/card", language_code="zh-hans"))
    card = chat.fake.calls_of("sendPhoto")[-1]
    assert [b["text"] for b in _buttons(card.params)] == ["💸 积分支付"]
    scanned, caption = await _pay_with_points(chat, language="zh-hans")
    assert spending.normalize_spend_code(scanned) == scanned
    assert "积分支付" in caption and "5分钟内有效" in caption
    assert "minute" not in caption and "Pay" not in caption


async def test_a_frozen_member_gets_no_spend_code(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member = await _join(chat, session)
    await session.rollback()
    await members.freeze(session, shop, member.code, "card skimming")
    await chat.send(message_update(MEMBER, "/card"))
    assert _buttons(chat.fake.calls_of("sendPhoto")[-1].params) == []
    photos = len(chat.fake.calls_of("sendPhoto"))
    await chat.send(callback_update(MEMBER, SpendCodeAsk().pack()))  # an old button
    assert len(chat.fake.calls_of("sendPhoto")) == photos
    [alert] = chat.fake.calls_of("answerCallbackQuery")[-1:]
    assert "on hold" in alert.params["text"] and "skimming" not in alert.params["text"]
    await session.rollback()
    assert await session.scalar(select(func.count(SpendCode.id))) == 0


def test_spend_codes_look_like_no_member_or_coupon_code() -> None:
    code = spending.new_spend_code()
    assert normalize_member_code(code) is None and normalize_coupon_code(code) is None
    assert spending.normalize_spend_code(code.lower()) == code
    assert spending.normalize_spend_code(spending.format_spend_code(code)) == code
    wrong = code[:5] + ("X" if code[5] != "X" else "Y") + code[6:]
    assert spending.normalize_spend_code(wrong) is None  # the check character catches it
    member_code = "K7QM4PZJ"
    assert normalize_member_code(member_code) == member_code
    assert spending.normalize_spend_code(member_code) is None


def test_the_validity_is_in_the_program_with_a_default(program: Program) -> None:
    assert program.points.spend_code_minutes == 5
    raw = tomllib.loads(DEFAULT_PROGRAM_FILE.read_text(encoding="utf-8"))
    assert raw["points"]["spend_code_minutes"] == 5
    del raw["points"]["spend_code_minutes"]  # a program file written before the setting
    assert Program.model_validate(raw).points.spend_code_minutes == 5
    raw["points"]["spend_code_minutes"] = 0
    with pytest.raises(ValueError, match="spend_code_minutes"):
        Program.model_validate(raw)


# Orders: earning with the member code, spending with the spend code ---------------------


async def test_an_order_with_the_spend_code_redeems_once(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    member = await _join(chat, session)
    scanned, _ = await _pay_with_points(chat)
    order = {"order_id": "P-1", "member": scanned, "amount": "10.00", "redeem_points": 100}

    paid = await api.post(ORDERS, json=order)

    assert paid.status_code == 201, paid.text
    body = paid.json()
    assert body["member_code"] == member.code
    assert body["points_redeemed"] == 100 and body["to_pay"] == "9.00"
    assert body["balance"] == 9
    # The till retries the same order: the stored answer, nothing spent twice.
    retried = await api.post(ORDERS, json=order)
    assert retried.status_code == 201 and retried.json() == body
    assert retried.headers.get("Idempotent-Replayed") == "true"
    # Another order with the same code is refused and changes nothing.
    before = await _books(session, member.id)
    reused = await api.post(ORDERS, json={**order, "order_id": "P-2", "redeem_points": 0})
    assert reused.status_code == 409  # well formed, but the code's state refuses it
    assert reused.json() == {
        "error": "spend_code_used", "field": "member",
        "message": "this spend code has already been used: ask the member for a new one",
    }
    assert await _books(session, member.id) == before == {"balance": 9, "orders": 1, "receipts": 1}
    await session.rollback()
    row = await session.scalar(select(SpendCode).where(SpendCode.code == scanned))
    assert row is not None and row.order_id == "P-1" and row.used_at is not None


async def test_an_expired_spend_code_is_refused(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession, clock: FixedClock
) -> None:
    member = await _join(chat, session)
    scanned, _ = await _pay_with_points(chat)
    clock.advance(minutes=4, seconds=59)
    lookup = await api.get(f"/api/v1/members/{scanned}")
    assert lookup.status_code == 200 and lookup.json()["can_redeem_points"] is True
    clock.advance(seconds=1)

    late = await api.post(
        ORDERS, json={"order_id": "L-1", "member": scanned, "amount": "10.00", "redeem_points": 100}
    )

    assert late.status_code == 409
    assert late.json() == {
        "error": "spend_code_expired", "field": "member",
        "message": "this spend code has expired: ask the member for a new one",
    }
    expired_lookup = await api.get(f"/api/v1/members/{scanned}")
    assert expired_lookup.status_code == 409
    assert expired_lookup.json()["error"] == "spend_code_expired"
    assert expired_lookup.json()["field"] == "code_or_phone"
    assert await _books(session, member.id) == {"balance": 100, "orders": 0, "receipts": 0}
    fresh, _ = await _pay_with_points(chat)
    ok = await api.post(
        ORDERS, json={"order_id": "L-1", "member": fresh, "amount": "10.00", "redeem_points": 100}
    )
    assert ok.status_code == 201, ok.text


async def test_an_unknown_spend_code_is_refused(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    await _join(chat, session)
    made_up = spending.new_spend_code()
    response = await api.post(ORDERS, json={"order_id": "U-1", "member": made_up, "amount": "10.00"})
    assert response.status_code == 404  # a reference to nothing, like an unknown member
    assert response.json()["error"] == "spend_code_unknown"


@pytest.mark.parametrize("identify", ["code", "phone"])
async def test_the_static_code_or_phone_cannot_spend_and_nothing_changes(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession, identify: str
) -> None:
    member = await _join(chat, session)
    await chat.send(message_update(MEMBER, "", contact={
        "phone_number": "8613812345678", "first_name": "Lin", "user_id": MEMBER,
    }))
    who = member.code if identify == "code" else "138 1234 5678"
    coupon = await session.scalar(select(Coupon.code).where(Coupon.member_id == member.id))

    refused = await api.post(ORDERS, json={
        "order_id": "S-1", "member": who, "amount": "100.00", "redeem_points": 100,
        "coupon_code": coupon,
    })

    assert refused.status_code == 403
    assert refused.json() == {
        "error": "spend_proof_required", "field": "redeem_points",
        "message": "spending points needs the member's one-time spend code (\"Pay with "
        "points\" in the chat) in `member`; the member code or phone only earns",
    }
    assert await _books(session, member.id) == {"balance": 100, "orders": 0, "receipts": 0}
    await session.rollback()
    assert await session.scalar(select(Coupon.status).where(Coupon.code == coupon)) == "active"

    # The same card still earns, and the member's coupon by its own code still works.
    earned = await api.post(ORDERS, json={
        "order_id": "S-2", "member": who, "amount": "100.00", "coupon_code": coupon,
    })
    assert earned.status_code == 201, earned.text
    body = earned.json()
    assert body["coupon_discount"] == "10.00" and body["to_pay"] == "90.00"
    assert body["points_earned"] == 90 and body["balance"] == 190
    assert await _books(session, member.id) == {"balance": 190, "orders": 1, "receipts": 1}


async def test_lookup_by_static_code_lists_no_coupon_codes(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    member = await _join(chat, session)
    coupon = await session.scalar(select(Coupon.code).where(Coupon.member_id == member.id))
    assert coupon is not None

    static = await api.get(f"/api/v1/members/{member.code}", params={"amount": "10.00"})

    assert static.status_code == 200, static.text
    body = static.json()
    assert body["name"] == "Lin" and body["tier"] == "member" and body["discount_percent"] == 2
    assert body["balance"] == 100 and body["max_offset_points"] == 100
    assert body["can_redeem_points"] is False
    assert [c["code"] for c in body["coupons"]] == [None]
    assert body["coupons"][0]["value"] == "10.00" and body["coupons"][0]["min_spend"] == "50.00"
    assert coupon not in static.text

    scanned, _ = await _pay_with_points(chat)
    present = await api.get(f"/api/v1/members/{scanned}")
    assert present.status_code == 200
    assert present.json()["code"] == member.code and present.json()["can_redeem_points"] is True
    assert [c["code"] for c in present.json()["coupons"]] == [coupon]
    # Looking up does not use the code: the sale after it does.
    sale = await api.post(
        ORDERS, json={"order_id": "K-1", "member": scanned, "amount": "10.00", "redeem_points": 50}
    )
    assert sale.status_code == 201, sale.text


async def test_openapi_documents_the_till_flow(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/api/v1/openapi.json")).json()
    description = spec["info"]["description"]
    assert "Pay with points" in description and "spend_proof_required" in description
    assert "coupon" in description.lower()
    assert "spend code" in spec["components"]["schemas"]["OrderIn"]["properties"]["member"][
        "description"
    ]
    coupon = spec["components"]["schemas"]["CouponOut"]
    assert "code" not in coupon.get("required", [])
    assert "403" in spec["paths"]["/api/v1/orders"]["post"]["responses"]


# Staff /sale in the chat follows the same rule --------------------------------------------


async def test_staff_sale_with_a_spend_code_and_its_refusals_in_both_languages(
    chat: Conversation, session: AsyncSession, shop: Shop, clock: FixedClock
) -> None:
    member = await _join(chat, session)
    code = await _issue(session, shop, member)
    await chat.send(message_update(STAFF_ID, f"/sale {spending.format_spend_code(code)} 20.00"))
    assert "20" in chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert (await _books(session, member.id))["orders"] == 1

    await chat.send(message_update(STAFF_ID, f"/sale {code} 30.00"))
    used = chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert used.startswith("Not done: this points payment code has already been used.")
    await chat.send(message_update(STAFF_ID, f"/sale {code} 30.00", language_code="zh-hans"))
    assert chat.fake.calls_of("sendMessage")[-1].params["text"] == (
        "未执行：此积分支付码已被使用。请会员在会员卡上点击“积分支付”获取新码。未做任何更改。"
    )
    late = await _issue(session, shop, member)
    clock.advance(minutes=6)
    await chat.send(message_update(STAFF_ID, f"/sale {late} 30.00", language_code="zh-hans"))
    assert chat.fake.calls_of("sendMessage")[-1].params["text"].startswith(
        "未执行：此积分支付码已过期。"
    )
    await chat.send(message_update(STAFF_ID, f"/sale {late} 30.00"))
    assert chat.fake.calls_of("sendMessage")[-1].params["text"].startswith(
        "Not done: this points payment code has expired."
    )
    assert (await _books(session, member.id))["orders"] == 1


# A race: two tills, one code -------------------------------------------------------------


async def test_orders_racing_with_one_spend_code_spend_once(
    api: httpx.AsyncClient, session_factory: async_sessionmaker[AsyncSession], shop: Shop
) -> None:
    async with session_factory() as session:
        registration = await members.register(session, shop, members.TelegramProfile(
            telegram_id=MEMBER, first_name="Lin", last_name=None, username=None,
            language_code="en",
        ))
        member_id = registration.member.id
        code = (await spending.issue(session, shop, member_id)).code
    barrier = asyncio.Barrier(10)

    async def post(i: int) -> httpx.Response:
        await barrier.wait()
        return await api.post(ORDERS, json={
            "order_id": f"R-{i}", "member": code, "amount": "2.00", "redeem_points": 100,
        })

    async with asyncio.timeout(45):
        responses = await asyncio.gather(*(post(i) for i in range(10)))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 9, [r.text for r in responses]
    assert all(r.json()["error"] == "spend_code_used" for r in responses if r.status_code == 409)
    [paid] = [r.json() for r in responses if r.status_code == 201]
    assert paid["points_redeemed"] == 100 and paid["balance"] == 1
    async with session_factory() as session:
        assert await _books(session, member_id) == {"balance": 1, "orders": 1, "receipts": 1}
        spends = await session.scalar(
            select(func.count(LedgerEntry.id))
            .where(LedgerEntry.member_id == member_id, LedgerEntry.kind == "offset")
        )
        assert spends == 1
