"""Pushes with more than a text: what a kind of push composes for the sender (bot/sender.py)
and what it records when Telegram has taken it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from aiogram.types import InlineKeyboardMarkup
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import Member


@dataclass(frozen=True)
class ComposedPush:
    """A message as a member sees it: a text (a photo's caption when there is a photo) and
    buttons."""

    text: str
    photo: str | None = None
    markup: InlineKeyboardMarkup | None = None


class RichPushKind(Protocol):
    """A kind of push that composes its own message from the database (a campaign's) and
    records its effect in the transaction that marks it sent (once: the push is still
    pending there). ``compose`` returning None skips the push (e.g. its campaign stopped)."""

    async def compose(
        self, session: AsyncSession, member: Member, payload: dict[str, Any]
    ) -> ComposedPush | None: ...

    async def delivered(
        self, session: AsyncSession, member: Member, payload: dict[str, Any]
    ) -> None: ...
