"""/benefits: the tier comparison, readable on a phone, the member's tier marked, and the path."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain import benefits, members
from domain.growth import BEHAVIOUR, PURCHASE, add_growth
from domain.models import Member
from domain.shop import Shop
from domain.transaction import write_transaction
from tests.conftest import STAFF_ID, Conversation
from tests.fake_telegram import message_update

MEMBER = 4242


def _block(text: str, tier_name: str) -> str:
    """The block of one tier: from its name line to the next blank line."""
    for block in text.split("\n\n"):
        if f"<b>{tier_name}</b>" in block.splitlines()[0]:
            return block
    raise AssertionError(f"no block for {tier_name}")


def _marked(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("➤")]


async def test_new_member_sees_all_tiers_with_their_own_marked_and_the_path(
    chat: Conversation,
) -> None:
    await chat.send(message_update(MEMBER, "/start", first_name="Lin"))
    await chat.send(message_update(MEMBER, "/benefits"))
    text = chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert _marked(text) == ["➤ <b>Member</b> · <i>your tier</i>"]
    member = _block(text, "Member")
    assert "2% off · ×1 points" in member and "No birthday gift" in member
    assert "Member-day double points" in member
    gold = _block(text, "Gold")
    assert "from 20,000 growth" in gold and "10% off · ×1.5 points" in gold
    assert "A free birthday item" in gold
    assert "Everything in Silver, plus: Free returns, New-product trials" in gold
    black = _block(text, "Black Gold")
    assert "15% off · ×2 points" in black and "Exclusive events" in black
    assert "Your growth (12 months): <b>0</b>" in text
    assert text.rstrip().endswith(
        "5,000 growth to <b>Silver</b>: 5% off, ×1.2 points, a buy-one-get-one birthday coupon"
    )
    # One compact block per tier rather than a wide table.
    assert "<pre>" not in text and "|" not in text
    assert max(len(line) for line in text.splitlines()) < 110


async def test_chinese_table_and_menu_button(chat: Conversation) -> None:
    await chat.send(message_update(MEMBER, "/start", first_name="林", language_code="zh-hans"))
    await chat.send(message_update(MEMBER, "⭐ 会员权益", language_code="zh-hans"))
    text = chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert _marked(text) == ["➤ <b>普通会员</b> · <i>您的等级</i>"]
    assert "9.8折 · 1倍积分" in _block(text, "普通会员")
    gold = _block(text, "金卡会员")
    assert "成长值 20,000 起" in gold and "9折 · 1.5倍积分" in gold
    assert "生日免费单品" in gold
    assert "享银卡会员全部权益，另加免费退换货、新品试用" in gold
    path = "再获得 5,000 成长值即可升级<b>银卡会员</b>：9.5折、1.2倍积分、生日买一送一券"
    assert path in text


async def test_after_an_upgrade_the_mark_moves_and_the_path_names_the_next_tier(
    chat: Conversation, session: AsyncSession
) -> None:
    await chat.send(message_update(MEMBER, "/start", first_name="Lin"))
    await session.rollback()
    code = await session.scalar(select(Member.code).where(Member.telegram_id == MEMBER))
    await chat.send(message_update(STAFF_ID, f"/sale {code} 5200.00 up-1"))
    await chat.send(message_update(MEMBER, "⭐ Benefits"))
    text = chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert _marked(text) == ["➤ <b>Silver</b> · from 5,000 growth · <i>your tier</i>"]
    assert "Your growth (12 months): <b>5,200</b>" in text
    assert "14,800 growth to <b>Gold</b>: 10% off, ×1.5 points, a free birthday item" in text

    await chat.send(message_update(STAFF_ID, f"/sale {code} 50000.00 up-2"))
    await chat.send(message_update(MEMBER, "/benefits"))
    top = chat.fake.calls_of("sendMessage")[-1].params["text"]
    assert _marked(top)[0].startswith("➤ <b>Black Gold</b>")
    assert "You are at our highest tier" in top


async def test_path_counts_behaviour_growth_only_within_its_share(
    session: AsyncSession, shop: Shop
) -> None:
    profile = members.TelegramProfile(1, "Lin", None, None, "en")
    member = (await members.register(session, shop, profile)).member
    async with write_transaction(session):
        for n, (source, amount) in enumerate([(PURCHASE, 3000), (BEHAVIOUR, 4000)]):
            await add_growth(
                session, member.id, kind="test", source=source, amount=amount, reason="test",
                key=f"test:{n}", occurred_at=shop.now(),
            )
    overview = await benefits.benefits_overview(session, shop, member)
    # Behaviour may be 30% of the total: 3,000 from purchases allows 1,285 from behaviour.
    assert overview.progress.growth == 4285
    assert overview.progress.next_tier is not None and overview.progress.next_tier.key == "silver"
    assert overview.progress.gap == 715
    assert [row.current for row in overview.tiers] == [True, False, False, False]
