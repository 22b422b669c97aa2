"""A small shop with a known history, built through the real use cases with the injected clock,
for the analytics tests (figures in tests/test_analytics.py are worked out from it by hand).

Local times (Asia/Shanghai). Members and what they do:
  A  joined 2025-10-01, bought 100.00 on 2025-10-05; back on 2026-02-10 with 300.00, paying
     200 points (2.00); a review on 2026-02-12. Churned at the start of February, reactivated.
  B  joined 2025-11-20, bought 50.00 on 2025-11-25 and nothing since: dormant on 1 February,
     churned on 23 February.
  C  joined 2026-01-10, bought 1,500.00 on 2026-01-15, 100.00 on 2026-02-05 and 150.00 on
     2026-02-20 (50.00 of it refunded on 2026-02-21); took the free-item reward (1,500 points)
     on 2026-02-07; invited D. Now Gold.
  D  joined 2026-02-03 through C's invitation; bought 80.00 on 2026-02-06 with the welcome
     coupon (10.00 off 50.00). Now Silver.
  E  joined 2026-02-14, checked in on the 14th, 15th and 16th.
  F  joined 2026-02-25.
The lifecycle ran on 2026-02-24. The report is asked on 2026-03-01 at 10:00.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain import checkin, events, lifecycle, members, orders, rewards, spending
from domain.clock import FixedClock
from domain.models import Coupon, Member, Push
from domain.shop import Shop
from domain.transaction import write_transaction

TZ = ZoneInfo("Asia/Shanghai")


def local(*parts: int) -> datetime:
    year, month, day, hour = (*parts, 10)[:4]
    return datetime(year, month, day, hour, tzinfo=TZ).astimezone(UTC)


@dataclass
class History:
    codes: dict[str, str]
    ids: dict[str, int]


async def build_history(session: AsyncSession, shop: Shop, clock: FixedClock) -> History:
    codes: dict[str, str] = {}
    ids: dict[str, int] = {}

    async def join(name: str, when: datetime, referrer: str | None = None) -> None:
        clock.set(when)
        profile = members.TelegramProfile(
            telegram_id=7000 + len(codes), first_name=name, last_name=None, username=None,
            language_code="en",
        )
        registration = await members.register(
            session, shop, profile, invited_by=codes[referrer] if referrer else None
        )
        codes[name], ids[name] = registration.member.code, registration.member.id

    async def buy(name: str, when: datetime, amount: int, order_id: str, **extra: object) -> None:
        clock.set(when)
        await orders.place_order(
            session, shop,
            orders.OrderRequest(order_id=order_id, member=codes[name], amount=amount, **extra),  # type: ignore[arg-type]
        )

    await join("A", local(2025, 10, 1))
    await buy("A", local(2025, 10, 5), 10000, "A-1")
    await join("B", local(2025, 11, 20))
    await buy("B", local(2025, 11, 25), 5000, "B-1")
    await join("C", local(2026, 1, 10))
    await buy("C", local(2026, 1, 15), 150000, "C-1")
    await join("D", local(2026, 2, 3), referrer="C")
    await buy("C", local(2026, 2, 5), 10000, "C-2")
    welcome = await session.scalar(
        select(Coupon.code).where(Coupon.member_id == ids["D"], Coupon.source == "welcome")
    )
    await session.commit()
    await buy("D", local(2026, 2, 6), 8000, "D-1", coupon_code=welcome)
    clock.set(local(2026, 2, 7))
    await rewards.redeem(session, shop, ids["C"], "free_item", confirmation=None)
    await buy("A", local(2026, 2, 10), 30000, "A-2", redeem_points=200,
              spend_proof=spending.SpendProof(ids["A"]))
    clock.set(local(2026, 2, 12))
    await events.record_event(session, shop, member_query=codes["A"], event_id="rv-1",
                              kind="review")
    await join("E", local(2026, 2, 14))
    for day in (14, 15, 16):
        clock.set(local(2026, 2, day, 12))
        await checkin.check_in(session, shop, ids["E"])
    await buy("C", local(2026, 2, 20), 15000, "C-3")
    clock.set(local(2026, 2, 21))
    await orders.refund_order(session, shop, order_id="C-3", refund_id="R-1", amount=5000)
    clock.set(local(2026, 2, 24, 11))
    await lifecycle.evaluate_stages(session, shop, clock.now().astimezone(TZ).date(),
                                    dry_run=False)
    await join("F", local(2026, 2, 25))
    async with write_transaction(session):
        await session.execute(update(Member).where(Member.id == ids["C"]).values(tier="gold"))
        await session.execute(update(Member).where(Member.id == ids["D"]).values(tier="silver"))
        # What the outbox made of the pushes: one receipt sent, one refused as blocked.
        await session.execute(
            update(Push).where(Push.key == "receipt:A-2").values(status="sent")
        )
        await session.execute(
            update(Push).where(Push.key == "receipt:C-2")
            .values(status="failed", last_error="blocked by the member")
        )
    clock.set(local(2026, 3, 1))
    return History(codes, ids)
