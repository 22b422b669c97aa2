"""Sends the jobs' notices for admins (the monthly report, the red-line alert) straight
through the bot: admins need not be members, and the outbox (pushes) belongs to members.
Each admin reads it in their member language when they are a member, else in English. A
notice that Telegram refuses for one admin is logged and the others still get it; job_runs
has already made sure the job, and so the notice, runs once per occasion."""

from __future__ import annotations

import logging

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import members
from domain.jobs import AdminNotice
from handlers.texts import Texts

log = logging.getLogger(__name__)


class AdminNotifier:
    def __init__(
        self, bot: Bot, texts: Texts, admin_ids: frozenset[int],
        session_factory: async_sessionmaker[AsyncSession],
    ) -> None:
        self.bot = bot
        self.texts = texts
        self.admin_ids = admin_ids
        self.session_factory = session_factory

    async def language(self, admin_id: int) -> str:
        async with self.session_factory() as session:
            member = await members.member_by_telegram_id(session, admin_id)
            await session.commit()
        return member.language if member is not None else members.language_for(None)

    async def __call__(self, notices: list[AdminNotice]) -> int:
        """Send each notice to every admin; returns how many messages went out."""
        sent = 0
        for admin_id in sorted(self.admin_ids):
            lang = await self.language(admin_id)
            for notice in notices:
                text = self.texts.render(lang, f"stats/{notice.template}", r=notice.report)
                try:
                    await self.bot.send_message(admin_id, text)
                    sent += 1
                except TelegramAPIError as exc:
                    log.warning("admin %s did not get the %s: %s", admin_id, notice.template, exc)
        return sent
