"""What every use case needs to know about the shop: its program, its clock, its calendar."""

from __future__ import annotations

import hashlib
import hmac
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

    def secret_for(self, purpose: str) -> bytes:
        """A key for one purpose (request fingerprints, confirmation tokens), derived from the
        shop's secret, so no two uses share a key."""
        return hmac.new(self.member_hash_secret, purpose.encode(), hashlib.sha256).digest()

    def now(self) -> datetime:
        return self.clock.now()

    def today(self) -> date:
        return self.clock.now().astimezone(self.tz).date()

    def local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.tz).date()
