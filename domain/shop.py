"""What every use case needs to know about the shop: its program, its clock, its calendar."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from domain.clock import Clock
from domain.program import Program


@dataclass(frozen=True)
class Shop:
    program: Program
    clock: Clock
    tz: ZoneInfo
    phone_region: str = "CN"
    # The key of the one-way hash kept of a Telegram id after erasure (domain.members
    # account_hash); the bot passes its MEMBER_HASH_SECRET setting.
    member_hash_secret: bytes = b""

    def now(self) -> datetime:
        return self.clock.now()

    def today(self) -> date:
        return self.clock.now().astimezone(self.tz).date()

    def local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.tz).date()
