"""Writes the jobs' notices for admins (the monthly report, the red-line alert) into their
outbox, ``admin_messages``: admins need not be members, and pushes belong to members. Each
admin reads a notice in their member language when they are a member, else in English. The
key (notice, occasion, admin) makes a notice one message per admin even when the job runs
again; the sender delivers them with its pace, retries and backoff (bot/sender.py)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import members, outbox
from domain.jobs import AdminNotice
from domain.shop import Shop
from domain.transaction import write_transaction
from handlers.outbox_signal import OutboxSignal
from handlers.texts import Texts


class AdminNotifier:
    def __init__(
        self, texts: Texts, shop: Shop, admin_ids: frozenset[int],
        session_factory: async_sessionmaker[AsyncSession], signal: OutboxSignal,
    ) -> None:
        self.texts = texts
        self.shop = shop
        self.admin_ids = admin_ids
        self.session_factory = session_factory
        self.signal = signal

    async def __call__(self, notices: list[AdminNotice]) -> int:
        """Queue each notice for every admin, in one transaction; returns how many messages
        were written (0 when a run before this one wrote them)."""
        written = 0
        async with self.session_factory() as session, write_transaction(session):
            for admin_id in sorted(self.admin_ids):
                member = await members.member_by_telegram_id(session, admin_id)
                lang = member.language if member is not None else members.language_for(None)
                for notice in notices:
                    text = self.texts.render(lang, f"stats/{notice.template}", r=notice.report)
                    written += await outbox.enqueue_for_admin(
                        session, self.shop, chat_id=admin_id, text=text,
                        key=f"{notice.template}:{notice.occasion}:{admin_id}",
                    )
        if written:
            self.signal.wake()
        return written
