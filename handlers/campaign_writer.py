"""Writing a campaign confirmed "now" in the background, so the confirm press is answered at
once: at a million members the outbox rows take seconds, and the update that confirmed must
not wait for them (nor hold the other updates of the admin's chat).

The writing itself is ``domain.campaigns.start_due``: the campaign is claimed by one
conditional UPDATE (planned → writing), so a background write here and the scheduler's check
of each minute never both write it. A write cut short (shutdown past the grace, a crash)
leaves the campaign ``writing`` with its progress; the next start's catch-up resumes it
(``start_campaigns(..., resume=True)``), and the outbox keys add nothing twice."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import campaigns
from domain.shop import Shop
from handlers.outbox_signal import OutboxSignal

log = logging.getLogger(__name__)


class CampaignWriter:
    """Background writes of due campaigns, tracked so shutdown can let them finish."""

    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
        outbox_signal: OutboxSignal,
    ) -> None:
        self.session_factory = session_factory
        self.shop = shop
        self.outbox_signal = outbox_signal
        self.tasks: set[asyncio.Task[list[int]]] = set()

    def start(self) -> None:
        """Write every campaign due now, in a task of its own; returns at once."""
        task = asyncio.create_task(self._write(), name="campaign-write")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _write(self) -> list[int]:
        try:
            async with self.session_factory() as session:
                started = await campaigns.start_due(session, self.shop)
        except Exception:  # the campaign stays writing: the next catch-up resumes it
            log.exception("writing a campaign failed; the next start resumes it")
            return []
        if started:
            log.info("campaigns written: %s", started)
            self.outbox_signal.wake()
        return started

    async def wait(self, seconds: float | None = None) -> None:
        """Let the writes under way finish (within ``seconds``, then cancel what is left:
        it resumes at the next start)."""
        pending = {t for t in self.tasks if not t.done()}
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=seconds)
        for task in late:
            task.cancel()
        if late:
            log.warning("%d campaign write(s) cut short; resumed at the next start", len(late))
            await asyncio.gather(*late, return_exceptions=True)
