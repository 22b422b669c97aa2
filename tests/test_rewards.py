"""The rewards mall end to end: catalog → item → confirmation → coupon, the refusals that take
nothing, and redemptions racing for the last item and for one member's limit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain import points, rewards
from domain.models import Coupon, LedgerEntry, Member, PointsLot, RewardStock
from domain.shop import Shop
from domain.transaction import write_transaction
from handlers.callbacks import CouponOpen, RewardRedeem, RewardView
from tests.conftest import Conversation
from tests.fake_telegram import Call, message_update

MEMBER = 4242


async def _register(
    chat: Conversation, session: AsyncSession, user_id: int = MEMBER, language: str = "en"
) -> int:
    await chat.send(message_update(user_id, "/start", first_name="Lin", language_code=language))
    await session.rollback()
    member_id = await session.scalar(select(Member.id).where(Member.telegram_id == user_id))
    assert member_id is not None
    return member_id


async def _give_points(session: AsyncSession, shop: Shop, member_id: int, amount: int) -> None:
    async with write_transaction(session):
        await points.earn(
            session, shop, member_id, kind="adjustment", amount=amount, reason="test",
            key=f"test:{member_id}:{amount}",
        )


async def _set_stock(session: AsyncSession, key: str, remaining: int) -> None:
    async with write_transaction(session):
        await session.execute(insert(RewardStock).values(reward_key=key, remaining=remaining))


async def _set_member(session: AsyncSession, member_id: int, **values: Any) -> None:
    async with write_transaction(session):
        await session.execute(update(Member).where(Member.id == member_id).values(**values))


@dataclass(frozen=True)
class Kept:
    """What the shop keeps for a member, checked against the ledger's invariants."""

    balance: int
    reward_coupons: int
    entries: int


async def _kept(session: AsyncSession, member_id: int) -> Kept:
    await session.rollback()
    balance = await session.scalar(select(Member.points_balance).where(Member.id == member_id))
    ledger = await session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.member_id == member_id
        )
    )
    lots = await session.scalar(
        select(func.coalesce(func.sum(PointsLot.remaining), 0)).where(
            PointsLot.member_id == member_id
        )
    )
    assert balance == ledger == lots
    coupons = await session.scalar(
        select(func.count(Coupon.id)).where(
            Coupon.member_id == member_id, Coupon.source.startswith("reward:")
        )
    )
    entries = await session.scalar(
        select(func.count(LedgerEntry.id)).where(LedgerEntry.member_id == member_id)
    )
    return Kept(int(balance or 0), int(coupons or 0), int(entries or 0))


async def _stock(session: AsyncSession, key: str) -> int | None:
    await session.rollback()
    return await session.scalar(
        select(RewardStock.remaining).where(RewardStock.reward_key == key)
    )


def _buttons(call: Call) -> list[dict[str, str]]:
    markup = call.params["reply_markup"]
    return [button for row in markup["inline_keyboard"] for button in row]


def _button(call: Call, data: str) -> dict[str, str]:
    found = [b for b in _buttons(call) if b["callback_data"] == data]
    assert found, f"no button {data} in {_buttons(call)}"
    return found[0]


def _last_edit(chat: Conversation) -> Call:
    return chat.fake.calls_of("editMessageText")[-1]


def _alerts(chat: Conversation) -> list[str]:
    return [
        c.params["text"]
        for c in chat.fake.calls_of("answerCallbackQuery")
        if str(c.params.get("show_alert")).lower() == "true"
    ]


def _confirm(chat: Conversation, member_id: int, key: str, redeemed: int = 0) -> str:
    """The callback data of the confirmation screen a member with ``redeemed`` of the reward
    is shown."""
    token = rewards.confirmation_token(chat.app.shop, member_id, key, redeemed)
    return RewardRedeem(key=key, confirmed=True, token=token).pack()


async def _press(chat: Conversation, data: str, user_id: int = MEMBER) -> None:
    """A press on the latest message the bot sent to ``user_id``."""
    await chat.send(chat.fake.press(user_id, data))


async def test_redeem_end_to_end_in_english(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member_id = await _register(chat, session)
    await _give_points(session, shop, member_id, 1000)  # 1,100 with the sign-up bonus

    await chat.send(message_update(MEMBER, "/rewards"))
    catalog = chat.fake.calls_of("sendMessage")[-1]
    text = catalog.params["text"]
    assert "Rewards mall" in text and "1,100" in text
    assert "5.00 off, no minimum" in text and "1,000 left" in text
    assert "Silver and above" in text and "your tier is too low" in text  # the counter gift
    assert "700 more points needed" in text  # 20.00 off 100.00 costs 1,800
    assert _button(catalog, RewardView(key="five_off").pack())["text"].startswith("🎁")
    assert _button(catalog, RewardView(key="counter_gift").pack())["text"].startswith("🔒")
    assert _button(catalog, RewardView(key="twenty_off_100").pack())["text"].startswith("🔒")

    await _press(chat, RewardView(key="five_off").pack())
    item = _last_edit(chat)
    assert not item.failed and item.params["message_id"] == str(catalog.message_id)
    assert "5.00 off" in item.params["text"] and "valid for 30 days" in item.params["text"]
    redeem = _button(item, RewardRedeem(key="five_off", confirmed=False).pack())
    assert redeem["text"] == "Redeem for 500 points"

    await _press(chat, redeem["callback_data"])
    confirm = _last_edit(chat)
    assert "Redeem <b>5.00 off, no minimum</b> for <b>500</b> points?" in confirm.params["text"]
    assert "from 1,100 to 600" in confirm.params["text"]
    _button(confirm, RewardView(key="").pack())
    assert (await _kept(session, member_id)).reward_coupons == 0  # nothing before "Confirm"

    token = rewards.confirmation_token(chat.app.shop, member_id, "five_off", 0)
    confirm_data = _button(
        confirm, RewardRedeem(key="five_off", confirmed=True, token=token).pack()
    )["callback_data"]
    await _press(chat, confirm_data)
    done = _last_edit(chat)
    await session.rollback()
    coupon = await session.scalar(select(Coupon).where(Coupon.member_id == member_id,
                                                       Coupon.source == "reward:five_off"))
    assert coupon is not None
    coupon_id, code = coupon.id, coupon.code
    assert coupon.kind == "amount_off" and coupon.value == 500 and coupon.min_spend == 0
    assert f"{code[:5]}-{code[5:]}" in done.params["text"]
    assert "500 points taken" in done.params["text"] and "<b>600</b>" in done.params["text"]
    assert "valid until 9 Apr 2026" in done.params["text"]
    kept = await _kept(session, member_id)
    assert kept.balance == 600 and kept.reward_coupons == 1
    assert await _stock(session, "five_off") == 999

    # A second tap on the same confirmation (a double tap) redeems nothing more.
    await _press(chat, confirm_data)
    alert = chat.fake.calls_of("answerCallbackQuery")[-1]
    assert "Already done" in alert.params["text"]
    kept = await _kept(session, member_id)
    assert kept.balance == 600 and kept.reward_coupons == 1

    await _press(chat, _button(done, CouponOpen(coupon_id=coupon_id).pack())["callback_data"])
    photo = chat.fake.calls_of("sendPhoto")[-1]
    assert photo.params["chat_id"] == str(MEMBER)
    assert f"{code[:5]}-{code[5:]}" in photo.params["caption"]
    assert "<b>CN¥5 off</b>" in photo.params["caption"]


async def test_redeem_end_to_end_in_chinese(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member_id = await _register(chat, session, language="zh-hans")
    await _give_points(session, shop, member_id, 1900)  # 2,000

    await chat.send(message_update(MEMBER, "🎁 积分商城", language_code="zh-hans"))
    text = chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert "积分商城" in text and "2,000" in text and "银卡会员及以上" in text
    await _press(chat, RewardView(key="twenty_off_100").pack())
    item = _last_edit(chat)
    assert "满¥100减¥20券" in item.params["text"] and "所需积分：<b>1,800</b>" in item.params["text"]
    assert _button(item, RewardRedeem(key="twenty_off_100", confirmed=False).pack())[
        "text"
    ] == "用1,800积分兑换"
    await _press(chat, RewardRedeem(key="twenty_off_100", confirmed=False).pack())
    confirm = _last_edit(chat)
    assert "确认用 <b>1,800</b> 积分兑换" in confirm.params["text"]
    confirm_data = _confirm(chat, member_id, "twenty_off_100")
    await _press(chat, _button(confirm, confirm_data)["callback_data"])
    done = _last_edit(chat).params["text"]
    assert "兑换成功" in done and "当前余额 <b>200</b>" in done and "2026年4月9日" in done
    kept = await _kept(session, member_id)
    assert kept.balance == 200 and kept.reward_coupons == 1
    assert await _stock(session, "twenty_off_100") == 499


async def test_back_returns_to_the_catalog(chat: Conversation, session: AsyncSession) -> None:
    await _register(chat, session)
    await _press(chat, RewardView(key="five_off").pack())
    await _press(chat, RewardView(key="").pack())
    back = _last_edit(chat)
    assert "Rewards mall" in back.params["text"]
    _button(back, RewardView(key="free_item").pack())


async def _refused(
    chat: Conversation, session: AsyncSession, member_id: int, key: str, expected: str
) -> None:
    """Both the preview and the confirmation are refused with an alert; nothing is taken."""
    before = await _kept(session, member_id)
    stock = await _stock(session, key)
    edits = len(chat.fake.calls_of("editMessageText"))
    redeemed = int(
        await session.scalar(
            select(func.count(Coupon.id)).where(
                Coupon.member_id == member_id, Coupon.source == f"reward:{key}"
            )
        )
        or 0
    )
    preview = RewardRedeem(key=key, confirmed=False).pack()
    for data in (preview, _confirm(chat, member_id, key, redeemed)):
        await _press(chat, data)
        assert expected in _alerts(chat)[-1]
    assert len(chat.fake.calls_of("editMessageText")) == edits
    assert await _kept(session, member_id) == before
    assert await _stock(session, key) == stock


async def test_not_enough_points_takes_nothing(chat: Conversation, session: AsyncSession) -> None:
    member_id = await _register(chat, session)  # 100 points
    await _refused(chat, session, member_id, "five_off", "costs 500 points and you have 100")


async def test_tier_too_low_takes_nothing(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member_id = await _register(chat, session)
    await _give_points(session, shop, member_id, 5000)
    await _refused(chat, session, member_id, "counter_gift", "for Silver members and above")


async def test_out_of_stock_takes_nothing(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member_id = await _register(chat, session)
    await _give_points(session, shop, member_id, 5000)
    await _set_stock(session, "free_item", 0)
    await _refused(chat, session, member_id, "free_item", "out of stock")


async def test_over_the_limit_takes_nothing(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member_id = await _register(chat, session)
    await _give_points(session, shop, member_id, 9000)
    await _set_member(session, member_id, tier="silver")
    await _press(chat, _confirm(chat, member_id, "counter_gift"))
    assert (await _kept(session, member_id)).reward_coupons == 1
    await _refused(chat, session, member_id, "counter_gift", "the most allowed per member")


async def test_frozen_member_is_on_hold_and_cannot_redeem(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member_id = await _register(chat, session)
    await _give_points(session, shop, member_id, 5000)
    await _set_member(session, member_id, status="frozen", frozen_reason="under review")
    await _refused(chat, session, member_id, "five_off", "account is on hold")
    assert "under review" not in _alerts(chat)[-1]
    await chat.send(message_update(MEMBER, "/rewards"))
    catalog = chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert "account is on hold" in catalog and "under review" not in catalog


async def test_refusal_in_chinese(chat: Conversation, session: AsyncSession) -> None:
    member_id = await _register(chat, session, language="zh-hans")
    await _refused(chat, session, member_id, "five_off", "需要 500 积分，您现有 100，还差 400")


async def test_crafted_reward_callbacks_do_nothing(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    member_id = await _register(chat, session)
    await _give_points(session, shop, member_id, 5000)
    before = await _kept(session, member_id)
    await _press(chat, RewardRedeem(key="gold_bar", confirmed=True).pack())
    assert "no longer in the mall" in _alerts(chat)[-1]
    await _press(chat, RewardView(key="gold_bar").pack())
    assert "no longer in the mall" in _alerts(chat)[-1]
    assert not chat.fake.calls_of("editMessageText")
    assert await _kept(session, member_id) == before


async def test_last_item_raced_by_several_members(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    users = [5001 + i for i in range(5)]
    member_ids = [await _register(chat, session, user_id=u) for u in users]
    for member_id in member_ids:
        await _give_points(session, shop, member_id, 1000)
    await _set_stock(session, "five_off", 1)

    await asyncio.gather(
        *(_press(chat, _confirm(chat, m, "five_off"), user_id=u)
          for u, m in zip(users, member_ids, strict=True))
    )

    kept = [await _kept(session, m) for m in member_ids]
    assert sorted(k.reward_coupons for k in kept) == [0, 0, 0, 0, 1]
    assert sorted(k.balance for k in kept) == [600, 1100, 1100, 1100, 1100]
    assert await _stock(session, "five_off") == 0
    assert sum("out of stock" in a for a in _alerts(chat)) == 4
    assert len(chat.fake.calls_of("editMessageText")) == 1  # the winner's coupon screen


async def test_member_limit_raced_by_one_member(
    session_factory: Any, chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    """Four redemptions of one member at once, each in its own session (a door without a
    confirmation screen; in the chat one screen redeems once, see tests/test_guards.py)."""
    member_id = await _register(chat, session)
    await _give_points(session, shop, member_id, 10_000)  # free_item: 1,500 each, at most 2

    async def one() -> str:
        async with session_factory() as own:
            try:
                await rewards.redeem(own, shop, member_id, "free_item", confirmation=None)
            except rewards.RewardLimitReached:
                return "limit"
            return "redeemed"

    outcomes = await asyncio.gather(*(one() for _ in range(4)))
    assert sorted(outcomes) == ["limit", "limit", "redeemed", "redeemed"]
    kept = await _kept(session, member_id)
    assert kept.reward_coupons == 2 and kept.balance == 10_100 - 2 * 1500
    assert await _stock(session, "free_item") == 298


async def test_confirmations_in_turn_redeem_up_to_the_limit(
    chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    """Each confirmation screen redeems once; a fresh screen after a redemption redeems again,
    up to the member's limit."""
    member_id = await _register(chat, session)
    await _give_points(session, shop, member_id, 10_000)  # free_item: 1,500 each, at most 2
    for _ in range(2):
        await _press(chat, RewardRedeem(key="free_item", confirmed=False).pack())
        confirm = _last_edit(chat)
        await _press(chat, _buttons(confirm)[0]["callback_data"])
    assert (await _kept(session, member_id)).reward_coupons == 2
    await _refused(chat, session, member_id, "free_item", "the most allowed per member")


async def test_first_redemptions_seed_the_stock_once(
    session_factory: Any, session: AsyncSession, shop: Shop, chat: Conversation
) -> None:
    """Two first redemptions of a reward, in separate sessions, race to seed its stock row."""
    member_ids = [await _register(chat, session, user_id=u) for u in (6001, 6002, 6003)]
    for member_id in member_ids:
        await _give_points(session, shop, member_id, 1000)

    async def one(member_id: int) -> rewards.Redemption:
        async with session_factory() as own:
            return await rewards.redeem(own, shop, member_id, "five_off", confirmation=None)

    done = await asyncio.gather(*(one(m) for m in member_ids))
    assert len({d.code for d in done}) == 3 and {d.balance for d in done} == {600}
    assert await _stock(session, "five_off") == 997

