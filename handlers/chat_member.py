"""A member who blocks the bot is marked unreachable; unblocking makes them reachable again."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ChatMemberStatus
from aiogram.types import ChatMemberUpdated
from sqlalchemy.ext.asyncio import AsyncSession

from domain import members
from domain.models import Member
from handlers.filters import Matches


async def status_changed(
    update: ChatMemberUpdated, session: AsyncSession, member: Member | None
) -> None:
    if member is None:
        return
    blocked = update.new_chat_member.status == ChatMemberStatus.KICKED
    await members.set_reachable(session, member, not blocked)


def build_router() -> Router:
    router = Router(name=__name__)
    router.my_chat_member.register(status_changed, Matches(F.chat.type == "private"))
    return router
