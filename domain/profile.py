"""The member's profile: birthday (set once; staff can correct) and marketing opt-in.

The birthday rule (PROGRAM.md, risk controls): a birthday set within 30 days before its date
waits a year for its gift. Counted in the shop's local days from the day it is set to the next
time the birthday comes round: 0..30 days (today and exactly 30 days ahead included) → the gift
starts the year after that birthday; 31 days or more → the gift starts with that birthday.
``members.birthday_gift_from`` keeps the first year with a gift; the gift job sends on the
birthday of a year ``y`` only when ``birthday_gift_from <= y``, and finds the day of a
29 February birthday in a common year with :func:`birthday_in`.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain import audit
from domain.audit import Actor
from domain.errors import DomainError, MemberNotFound
from domain.models import Member
from domain.shop import Shop
from domain.transaction import write_transaction

BIRTHDAY_WAIT_DAYS = 30
EARLIEST_BIRTH_YEAR = 1900
_LEAP_YEAR = 2000  # a date without a year is checked against a leap year: 29 Feb is allowed
_BIRTHDAY_TEXT = re.compile(r"^(?:(\d{4})[-/.])?(\d{1,2})[-/.](\d{1,2})$")
DELETED = "deleted"


class BirthdayAlreadySet(DomainError):
    """The member set the birthday before; only staff can change it."""

    code = "birthday_already_set"
    default_message = "the birthday is already set; only staff can change it"


class InvalidBirthday(DomainError):
    """Not a real date (or not written as MM-DD / YYYY-MM-DD)."""

    code = "invalid_birthday"
    default_message = "not a valid birthday; use MM-DD or YYYY-MM-DD"


@dataclass(frozen=True)
class Birthday:
    month: int
    day: int
    year: int | None
    gift_from: int  # the first year whose birthday brings a gift


def birthday_in(year: int, month: int, day: int) -> date:
    """The day a birthday falls on in ``year``: 29 February is kept on 28 February in a
    common year."""
    if month == 2 and day == 29 and not calendar.isleap(year):
        return date(year, 2, 28)
    return date(year, month, day)


def next_birthday(today: date, month: int, day: int) -> date:
    """The next time the birthday comes round, today included."""
    this_year = birthday_in(today.year, month, day)
    return this_year if this_year >= today else birthday_in(today.year + 1, month, day)


def gift_from_year(today: date, month: int, day: int) -> int:
    """The first year with a birthday gift, for a birthday set on ``today`` (local)."""
    upcoming = next_birthday(today, month, day)
    waits = (upcoming - today).days <= BIRTHDAY_WAIT_DAYS
    return upcoming.year + 1 if waits else upcoming.year


def parse_birthday(text: str) -> tuple[int, int, int | None]:
    """(month, day, year or None) from "03-21", "3/21" or "1990-03-21"; InvalidBirthday when
    the text is not written so. Whether the date is real is checked by :func:`check_birthday`."""
    found = _BIRTHDAY_TEXT.match(text.strip())
    if found is None:
        raise InvalidBirthday(text=text.strip())
    year, month, day = found.groups()
    return int(month), int(day), int(year) if year else None


def check_birthday(today: date, month: int, day: int, year: int | None) -> None:
    """Refuse a date that does not exist (13-01, 02-30, 29 February of a common year), a year
    before 1900 and a birth date in the future."""
    try:
        born = date(year if year is not None else _LEAP_YEAR, month, day)
    except (ValueError, OverflowError) as exc:  # OverflowError: a crafted button's huge month
        raise InvalidBirthday(month=month, day=day, year=year) from exc
    if year is not None and (year < EARLIEST_BIRTH_YEAR or born > today):
        raise InvalidBirthday(month=month, day=day, year=year)


async def set_birthday(
    session: AsyncSession,
    shop: Shop,
    member: Member,
    month: int,
    day: int,
    year: int | None = None,
    *,
    by_staff: bool = False,
    actor: Actor | None = None,
) -> Birthday:
    """Save the member's birthday and the first year of its gift (see the module's rule).

    A member sets it once: a second attempt raises BirthdayAlreadySet and changes nothing, even
    when two attempts race (the write is conditional on no birthday being stored). Staff
    (``by_staff``) may correct it any time; the gift year is decided again by the same rule,
    from the day of the correction, with ``actor``'s audit line (whether one was set before:
    the date itself is the member's personal data and stays out of the audit)."""
    today = shop.today()
    check_birthday(today, month, day, year)
    gift_from = gift_from_year(today, month, day)
    async with write_transaction(session):
        if actor is not None:
            had = await session.scalar(
                select(Member.birthday_month).where(Member.id == member.id)
            )
            audit.record(
                session, actor, "member.birthday", shop.now(), member_id=member.id,
                before={"birthday_set": had is not None}, after={"birthday_set": True},
            )
        conditions = [Member.id == member.id, Member.status != DELETED]
        if not by_staff:
            conditions.append(Member.birthday_month.is_(None))
        saved = await session.execute(
            update(Member)
            .where(*conditions)
            .values(
                birthday_month=month, birthday_day=day, birthday_year=year,
                birthday_gift_from=gift_from, birthday_set_at=shop.now(),
            )
            .execution_options(synchronize_session="fetch")
        )
        if saved.rowcount != 1:  # type: ignore[attr-defined]
            stored = (
                await session.execute(
                    select(
                        Member.status, Member.birthday_month, Member.birthday_day,
                        Member.birthday_year,
                    ).where(Member.id == member.id)
                )
            ).one_or_none()
            if stored is None or stored.status == DELETED:
                raise MemberNotFound(member_id=member.id)
            raise BirthdayAlreadySet(
                month=stored.birthday_month, day=stored.birthday_day, year=stored.birthday_year
            )
    return Birthday(month, day, year, gift_from)


async def set_marketing(session: AsyncSession, member: Member, on: bool) -> None:
    """Marketing messages (member day, wake-up, win-back offers) on or off. Service messages
    (receipts, expiry reminders) are not affected."""
    async with write_transaction(session):
        await session.execute(
            update(Member)
            .where(Member.id == member.id)
            .values(marketing_opt_in=on)
            .execution_options(synchronize_session="fetch")
        )
