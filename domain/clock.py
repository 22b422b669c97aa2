"""Time as the domain sees it: an injected clock and the shop's local calendar."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class FixedClock:
    """A clock for tests and benchmarks: stands still until moved."""

    current: datetime = field(default_factory=lambda: datetime(2026, 1, 15, 4, 0, tzinfo=UTC))

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current = self.current + timedelta(**delta)

    def set(self, when: datetime) -> None:
        self.current = when.astimezone(UTC)


def to_local(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz)


def local_date(instant: datetime, tz: ZoneInfo) -> date:
    return instant.astimezone(tz).date()
