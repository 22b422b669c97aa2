"""A member's one-time spend code for tests, as if they tapped "Pay with points" in the chat."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain import spending
from domain.models import Member
from domain.shop import Shop


async def spend_code(session: AsyncSession, shop: Shop, member_code: str) -> str:
    """A fresh spend code of the member with ``member_code``."""
    await session.rollback()
    member_id = await session.scalar(select(Member.id).where(Member.code == member_code))
    assert member_id is not None
    return (await spending.issue(session, shop, member_id)).code
