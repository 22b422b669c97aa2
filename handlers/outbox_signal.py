"""How a door tells the outbox sender that new pushes are waiting."""

from __future__ import annotations

import asyncio
import contextlib


class OutboxSignal:
    """Wakes the sender at once instead of at its next poll."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def wake(self) -> None:
        self.event.set()

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), seconds)
        self.event.clear()
