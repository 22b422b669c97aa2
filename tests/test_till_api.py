"""The till API end to end over HTTP (in-process ASGI): orders, refunds, lookups, refusals."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.app import App
from domain import members
from domain.models import LedgerEntry, Member, PointsLot
from domain.shop import Shop
from tests.conftest import Conversation
from tests.fake_telegram import message_update
from tests.spend import spend_code


async def _register(chat: Conversation, session: AsyncSession, user_id: int = 4242) -> str:
    await chat.send(message_update(user_id, "/start", first_name="Lin"))
    await session.rollback()
    code = await session.scalar(select(Member.code).where(Member.telegram_id == user_id))
    assert code is not None
    return code


async def _state(session: AsyncSession, code: str) -> dict[str, Any]:
    """What the shop keeps for the member; checks balance == ledger == lots - debt."""
    await session.rollback()
    member = await session.scalar(select(Member).where(Member.code == code))
    assert member is not None
    ledger = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(LedgerEntry.member_id == member.id)
    )
    lots = await session.scalar(
        select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(PointsLot.member_id == member.id)
    )
    assert member.points_balance == ledger == lots - member.points_debt
    return {"balance": member.points_balance, "tier": member.tier, "debt": member.points_debt}


async def test_order_earns_points_and_growth(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    code = await _register(chat, session)
    response = await api.post("/api/v1/orders", json={"order_id": "1042", "member": code, "amount": "199.00"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["to_pay"] == "199.00"
    assert body["points_earned"] == 199
    assert body["growth_earned"] == 199
    assert body["balance"] == 299
    assert body["tier"] == "member" and body["tier_changed"] is False
    assert body["growth_to_next_tier"] == 5000 - 199
    assert (await _state(session, code))["balance"] == 299


async def test_replayed_order_credits_once_and_different_body_is_409(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    code = await _register(chat, session)
    order = {"order_id": "A1", "member": code, "amount": "50.00"}
    first = await api.post("/api/v1/orders", json=order)
    second = await api.post("/api/v1/orders", json=order)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    conflict = await api.post("/api/v1/orders", json={**order, "amount": "60.00"})
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "idempotency_conflict"
    assert (await _state(session, code))["balance"] == 150


async def test_offset_cap_balance_and_refund_returns_offset(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    code = await _register(chat, session)  # 100 points
    pay = await spend_code(session, chat.app.shop, code)  # a refused order does not use it up
    too_many = await api.post(
        "/api/v1/orders", json={"order_id": "B0", "member": pay, "amount": "1.00", "redeem_points": 60}
    )
    assert too_many.status_code == 422
    assert too_many.json()["field"] == "redeem_points"
    over_balance = await api.post(
        "/api/v1/orders", json={"order_id": "B0", "member": pay, "amount": "10.00", "redeem_points": 101}
    )
    assert over_balance.status_code == 409 and "balance" in over_balance.json()["message"]
    ok = await api.post(
        "/api/v1/orders", json={"order_id": "B1", "member": pay, "amount": "10.00", "redeem_points": 100}
    )
    assert ok.status_code == 201, ok.text
    body = ok.json()
    assert body["points_offset"] == "1.00" and body["to_pay"] == "9.00"
    assert body["points_earned"] == 9 and body["balance"] == 9
    refund = await api.post("/api/v1/orders/B1/refunds", json={"refund_id": "R1", "amount": "10.00"})
    assert refund.status_code == 201, refund.text
    r = refund.json()
    assert r["points_taken_back"] == 9 and r["points_returned"] == 100
    assert r["cash_to_return"] == "9.00" and r["balance"] == 100
    assert (await _state(session, code))["balance"] == 100
    again = await api.post("/api/v1/orders/B1/refunds", json={"refund_id": "R2", "amount": "0.01"})
    assert again.status_code == 409 and again.json()["field"] == "amount"


async def test_refund_of_spent_points_goes_negative_and_is_repaid(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    code = await _register(chat, session)  # 100 points
    await api.post("/api/v1/orders", json={"order_id": "C1", "member": code, "amount": "300.00"})
    # 400 points now; spend 150 (cap 50% of 3.00 = 150 points)
    spent = await api.post(
        "/api/v1/orders",
        json={"order_id": "C2", "member": await spend_code(session, chat.app.shop, code), "amount": "3.00",
              "redeem_points": 150},
    )
    assert spent.status_code == 201, spent.text
    again = await api.post(
        "/api/v1/orders",
        json={"order_id": "C3", "member": await spend_code(session, chat.app.shop, code), "amount": "6.00",
              "redeem_points": 251},
    )
    assert again.status_code == 201, again.text
    # 100 + 300 - 150 + 1 - 251 + 3 = 3 points left; the 300 of order C1 are mostly spent.
    assert (await _state(session, code))["balance"] == 3
    refund = await api.post("/api/v1/orders/C1/refunds", json={"refund_id": "RC1", "amount": "300.00"})
    assert refund.status_code == 201
    assert refund.json()["points_taken_back"] == 300
    assert await _state(session, code) == {"balance": -297, "tier": "member", "debt": 297}
    repaid = await api.post("/api/v1/orders", json={"order_id": "C4", "member": code, "amount": "500.00"})
    assert repaid.status_code == 201, repaid.text
    assert await _state(session, code) == {"balance": 203, "tier": "member", "debt": 0}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": "-1.00"}, "amount"),
        ({"amount": "0"}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({"amount": "1.001"}, "amount"),
        ({"amount": "99999999.00"}, "amount"),
        ({"redeem_points": -5}, "redeem_points"),
        ({"occurred_at": "2030-01-01T00:00:00+00:00"}, "occurred_at"),
        ({"occurred_at": "2020-01-01T00:00:00+00:00"}, "occurred_at"),
    ],
)
async def test_bad_input_is_422_with_field_and_changes_nothing(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession, body: dict[str, Any], field: str
) -> None:
    code = await _register(chat, session)
    response = await api.post("/api/v1/orders", json={"order_id": "X1", "member": code, "amount": "10.00", **body})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert (await _state(session, code))["balance"] == 100


async def test_auth_unknown_member_and_frozen(
    api: httpx.AsyncClient, app: App, chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    code = await _register(chat, session)
    order = {"order_id": "D1", "member": code, "amount": "10.00"}
    assert (await api.post("/api/v1/orders", json=order, headers={"Authorization": "Bearer wrong"})).status_code == 401
    bare = httpx.AsyncClient(transport=httpx.ASGITransport(app=app.http), base_url="http://t")
    assert (await bare.post("/api/v1/orders", json=order)).status_code == 401
    await bare.aclose()
    missing = await api.post("/api/v1/orders", json={**order, "member": "AAAAAAAA"})
    assert missing.status_code == 404
    await session.rollback()
    await session.execute(Member.__table__.update().values(status="frozen"))
    await session.commit()
    frozen = await api.post("/api/v1/orders", json=order)
    assert frozen.status_code == 403
    assert (await _state(session, code))["balance"] == 100


async def test_member_lookup_by_code_and_phone(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    code = await _register(chat, session)
    contact = {"phone_number": "8613812345678", "first_name": "Lin", "user_id": 4242}
    await chat.send(message_update(4242, "", contact=contact))
    by_code = await api.get(f"/api/v1/members/{code.lower()}", params={"amount": "10.00"})
    assert by_code.status_code == 200, by_code.text
    member = by_code.json()
    assert member["tier"] == "member" and member["discount_percent"] == 2
    assert member["balance"] == 100 and member["max_offset_points"] == 100
    assert member["max_offset_amount"] == "1.00"
    by_phone = await api.get("/api/v1/members/13812345678")
    assert by_phone.status_code == 200 and by_phone.json()["code"] == code


async def test_events_are_idempotent(api: httpx.AsyncClient, chat: Conversation, session: AsyncSession) -> None:
    code = await _register(chat, session)
    first = await api.post(f"/api/v1/members/{code}/events", json={"event_id": "e1", "kind": "review"})
    assert first.status_code == 201 and first.json()["points_earned"] == 30
    again = await api.post(f"/api/v1/members/{code}/events", json={"event_id": "e1", "kind": "review"})
    assert again.json() == first.json()
    other = await api.post(f"/api/v1/members/{code}/events", json={"event_id": "e1", "kind": "share"})
    assert other.status_code == 409
    bad = await api.post(f"/api/v1/members/{code}/events", json={"event_id": "e2", "kind": "like"})
    assert bad.status_code == 422 and bad.json()["field"] == "kind"
    assert (await _state(session, code))["balance"] == 130


async def test_openapi_documents_the_till_api(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/api/v1/openapi.json")).json()
    assert {"/api/v1/orders", "/api/v1/orders/{order_id}/refunds", "/api/v1/members/{code_or_phone}"} <= set(spec["paths"])
    order = spec["paths"]["/api/v1/orders"]["post"]
    assert {"201", "401", "404", "409", "422"} <= set(order["responses"])
    assert spec["components"]["schemas"]["OrderIn"]["examples"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount": "０１０.００"}, "amount"),  # full-width digits
        ({"amount": "٣"}, "amount"),  # Arabic-Indic three
        ({"amount": "0"}, "amount"),
        ({"amount": "0.00"}, "amount"),
        ({"amount": "1e3"}, "amount"),
        ({"amount": "100000.01"}, "amount"),  # over the program's largest order
        ({"amount": 199}, "amount"),
        ({"redeem_points": "100"}, "redeem_points"),
        ({"redeem_points": True}, "redeem_points"),
        ({"order_id": "a\x00b"}, "order_id"),
        ({"member": "x\x00"}, "member"),
    ],
)
async def test_contract_refuses_what_the_schema_does_not_promise(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession,
    changes: dict[str, Any], field: str,
) -> None:
    code = await _register(chat, session)
    body = {"order_id": "C1", "member": code, "amount": "10.00", **changes}
    response = await api.post("/api/v1/orders", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert set(response.json()) == {"error", "message", "field"}
    assert (await _state(session, code))["balance"] == 100  # the sign-up bonus only


async def test_nul_in_a_path_id_is_a_clear_refusal(api: httpx.AsyncClient) -> None:
    refund = await api.post("/api/v1/orders/a%00b/refunds", json={"refund_id": "R", "amount": "1.00"})
    assert refund.status_code == 422 and refund.json()["field"] == "order_id"
    lookup = await api.get("/api/v1/members/%00")
    assert lookup.status_code == 422 and lookup.json()["field"] == "code_or_phone"


async def test_largest_order_is_accepted_exactly_at_the_limit(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    code = await _register(chat, session)
    response = await api.post("/api/v1/orders", json={"order_id": "MAX", "member": code, "amount": "100000.00"})
    assert response.status_code == 201, response.text


async def test_unknown_paths_answer_in_the_error_shape(api: httpx.AsyncClient) -> None:
    missing = await api.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "message": "not found", "field": None}
    wrong_method = await api.delete("/api/v1/orders")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"


async def test_a_coupon_that_does_not_exist_is_404_and_changes_nothing(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession
) -> None:
    code = await _register(chat, session)
    response = await api.post(
        "/api/v1/orders",
        json={"order_id": "X1", "member": code, "amount": "10.00", "coupon_code": "NOPE"},
    )
    assert response.status_code == 404, response.text
    assert response.json() == {"error": "unknown_coupon", "message": "no such coupon", "field": "coupon_code"}
    assert (await _state(session, code))["balance"] == 100
