"""Referrals: placeholder hooks until the referral rules are written (they do nothing yet)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import Member
from domain.shop import Shop


async def on_registered(
    session: AsyncSession, shop: Shop, member: Member, referrer: Member | None
) -> None:
    """Called inside the registration transaction of a new member."""


async def on_first_purchase(session: AsyncSession, shop: Shop, member: Member, order_id: str) -> None:
    """Called inside the order transaction of a member's first purchase."""
