"""Members: registration, lookup, language, phone, and what their card shows."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import cast

from sqlalchemy import Row, Select, Table, bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from domain import audit, outbox, points, referrals
from domain.audit import Actor
from domain.errors import InvalidPhone, MemberNotFound, NotOwnContact, PhoneTaken
from domain.growth import (
    GrowthTotal,
    growth_from_sums,
    growth_sums_between,
    growth_total,
    window_start,
)
from domain.member_code import new_member_code, normalize_member_code
from domain.models import FormerAccount, Member, TierChange
from domain.phone import normalize_phone
from domain.program import CouponTemplate
from domain.shop import Shop
from domain.tiers import TierProgress, progress
from domain.transaction import SINGLE_READ_OPTIONS, read_transaction, write_transaction

LANGUAGES = ("en", "zh")
ACTIVE = "active"
FROZEN = "frozen"
DELETED = "deleted"


def language_for(telegram_language: str | None) -> str:
    """zh* → Chinese, anything else → English."""
    return "zh" if (telegram_language or "").lower().startswith("zh") else "en"


@dataclass(frozen=True)
class TelegramProfile:
    telegram_id: int
    first_name: str | None
    last_name: str | None
    username: str | None
    language_code: str | None


@dataclass(frozen=True)
class Registration:
    member: Member
    created: bool
    referrer: Member | None = None
    # A person who was a member before and erased their data: welcomed back, without the
    # sign-up bonus, the welcome coupon or a referral for whoever invited them.
    returning: bool = False
    # The welcome coupon the new member was given (the live catalog's template), if any.
    welcome_coupon: CouponTemplate | None = None


def account_hash(secret: bytes, telegram_id: int) -> str:
    """The keyed one-way hash (HMAC-SHA256, hex) of a Telegram id, kept after erasure: it tells
    whether an account has been a member before, never which account or member it was."""
    return hmac.new(secret, str(telegram_id).encode(), hashlib.sha256).hexdigest()


async def was_member_before(session: AsyncSession, shop: Shop, telegram_id: int) -> bool:
    digest = account_hash(shop.member_hash_secret, telegram_id)
    return await session.get(FormerAccount, digest) is not None


async def member_by_telegram_id(session: AsyncSession, telegram_id: int) -> Member | None:
    return await session.scalar(select(Member).where(Member.telegram_id == telegram_id))


@dataclass(frozen=True)
class Standing:
    """A member with their growth over the program's window, read together."""

    member: Member
    growth: GrowthTotal


@cache
def _standing_query() -> Select[Member, int, int]:
    """The member by Telegram id with their growth sums over a window, built once (it is read
    on every update): only its parameters change."""
    purchase, behaviour = growth_sums_between(
        Member.id, bindparam("window_start"), bindparam("window_end")
    )
    return select(Member, purchase, behaviour).where(
        Member.telegram_id == bindparam("telegram_id")
    )


async def standing_by_telegram_id(
    session: AsyncSession, shop: Shop, telegram_id: int
) -> Standing | None:
    """The member and their growth in one statement, outside any transaction of the caller's:
    it runs as a single read (no BEGIN or COMMIT) and leaves the session with none open."""
    end = shop.now()
    values = {"telegram_id": telegram_id, "window_start": window_start(shop, end),
              "window_end": end}

    def read(sync: Session) -> Row[Member, int, int] | None:
        # In one pass on SQLAlchemy's side (it runs on every update): one hand-over to the
        # greenlet instead of one for each step.
        if sync.in_transaction():
            sync.commit()  # nothing pending: only reads come before a use case
        sync.connection(execution_options=SINGLE_READ_OPTIONS)
        try:
            found = sync.execute(_standing_query(), values).first()
        except BaseException:
            sync.rollback()
            raise
        sync.commit()
        return found

    row = await session.run_sync(read)
    if row is None:
        return None
    return Standing(row[0], growth_from_sums(shop, int(row[1]), int(row[2])))


async def find_member(session: AsyncSession, shop: Shop, code_or_phone: str) -> Member:
    """A member by member code (any case, with or without '-') or by phone number."""
    code = normalize_member_code(code_or_phone)
    fresh = {"populate_existing": True}  # never a stale copy from the session's identity map
    member = None
    if code is not None:
        member = await session.scalar(
            select(Member).where(Member.code == code).execution_options(**fresh)
        )
    if member is None:
        phone = normalize_phone(code_or_phone, shop.phone_region)
        if phone is not None:
            member = await session.scalar(
                select(Member).where(Member.phone == phone).execution_options(**fresh)
            )
    if member is None or member.status == DELETED:
        raise MemberNotFound(query=code_or_phone)
    return member


async def _unused_code(session: AsyncSession) -> str:
    while True:
        code = new_member_code()
        if await session.scalar(select(Member.id).where(Member.code == code)) is None:
            return code


async def register(
    session: AsyncSession, shop: Shop, profile: TelegramProfile, *,
    invited_by: str | None = None,
) -> Registration:
    """Register on first contact: a unique code, the sign-up bonus, the welcome coupon, the
    inviter if any. The gifts and the invitation count once per Telegram account: a person who
    erased an earlier membership joins again without them (``Registration.returning``).
    Registering again changes nothing and returns the existing member."""
    try:
        async with write_transaction(session):
            existing = await member_by_telegram_id(session, profile.telegram_id)
            if existing is not None:
                return Registration(existing, created=False)
            returning = await was_member_before(session, shop, profile.telegram_id)
            referrer = None
            if invited_by and not returning:
                # what followed ref_ in the invite link: a referral token (or an old link's code)
                referrer = await referrals.find_referrer(session, invited_by)
            now = shop.now()
            member = Member(
                telegram_id=profile.telegram_id,
                code=await _unused_code(session),
                first_name=profile.first_name,
                last_name=profile.last_name,
                username=profile.username,
                language=language_for(profile.language_code),
                tier=shop.program.tiers[0].key,
                points_balance=0,
                points_debt=0,
                referrer_id=referrer.id if referrer else None,
                status=ACTIVE,
                marketing_opt_in=True,
                created_at=now,
                stage="new",
                stage_since=shop.today(),
            )
            session.add(member)
            await session.flush()
            session.add(
                TierChange(
                    member_id=member.id, from_tier=None, to_tier=member.tier, reason="joined",
                    growth=0, created_at=now,
                )
            )
            if returning:
                return Registration(member, created=True, returning=True)
            bonus = shop.program.points.signup
            if bonus > 0:
                posting = await points.earn(
                    session, shop, member.id, kind="signup", amount=bonus,
                    reason="sign-up bonus", key=f"signup:{member.id}",
                )
                member.points_balance = posting.balance
            welcome = await referrals.on_registered(session, shop, member, referrer)
            return Registration(member, created=True, referrer=referrer, welcome_coupon=welcome)
    except IntegrityError:
        # Two first messages raced (PostgreSQL): the other one registered the member.
        existing = await member_by_telegram_id(session, profile.telegram_id)
        await session.commit()
        if existing is None:
            raise
        return Registration(existing, created=False)


async def set_language(session: AsyncSession, member: Member, language: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"unsupported language {language!r}")
    async with write_transaction(session):
        member.language = language


async def share_phone(
    session: AsyncSession,
    shop: Shop,
    member: Member,
    *,
    contact_user_id: int | None,
    phone_number: str,
) -> str:
    """Store the member's own phone number in E.164. Refuses someone else's contact, an invalid
    number, and a number another member already uses."""
    if contact_user_id is None or contact_user_id != member.telegram_id:
        raise NotOwnContact()
    phone = normalize_phone(phone_number, shop.phone_region, international=True)
    if phone is None:
        raise InvalidPhone(phone=phone_number)
    try:
        async with write_transaction(session):
            owner = await session.scalar(
                select(Member.id).where(Member.phone == phone, Member.id != member.id)
            )
            if owner is not None:
                raise PhoneTaken()
            member.phone = phone
    except IntegrityError as exc:
        raise PhoneTaken() from exc
    return phone


@dataclass(frozen=True)
class MemberCard:
    frozen: bool
    name: str
    code: str
    balance: int
    progress: TierProgress
    member_since: date
    language: str


async def member_card(
    session: AsyncSession, shop: Shop, member: Member, growth: GrowthTotal | None = None
) -> MemberCard:
    """Everything the card's caption shows. ``member`` is the row loaded for this update, and
    ``growth`` its growth when it was read with it (``standing_by_telegram_id``)."""
    if growth is None:
        async with read_transaction(session):
            growth = await growth_total(session, shop, member.id)
    return MemberCard(
        frozen=member.status == FROZEN,
        name=member.display_name,
        code=member.code,
        balance=member.points_balance,
        progress=progress(shop, member.tier, growth.counted),
        member_since=shop.local_date(member.created_at),
        language=member.language,
    )


async def remember_card_file(session: AsyncSession, member: Member, file_id: str) -> None:
    """The card image is uploaded once; later cards reuse Telegram's file_id."""
    async with write_transaction(session):
        member.card_file_id = file_id


async def remember_card_files(session: AsyncSession, files: Mapping[int, str]) -> None:
    """``remember_card_file`` for many members at once (member id -> file_id), in one
    statement: first cards shown together are stored in one write. Never for a member who
    has left meanwhile."""
    if not files:
        return
    table = cast(Table, Member.__table__)
    statement = (
        update(table)
        .where(table.c.id == bindparam("member_id"), table.c.status != DELETED)
        .values(card_file_id=bindparam("file_id"))
    )
    async with write_transaction(session):
        await session.execute(
            statement, [{"member_id": m, "file_id": f} for m, f in files.items()]
        )


@dataclass(frozen=True)
class AccountHold:
    """A member's standing after staff froze or unfroze them. ``note`` is the staff's internal
    note (never shown to the member); ``told`` when the status changed and the member's
    neutral notice was queued."""

    code: str
    frozen: bool
    note: str | None
    told: bool


FROZEN_PUSH = "account_frozen"
UNFROZEN_PUSH = "account_unfrozen"


async def freeze(
    session: AsyncSession, shop: Shop, code_or_phone: str, note: str, *,
    actor: Actor | None = None,
) -> AccountHold:
    """Staff freeze a suspicious member: the till refuses them, the mall will not redeem. The
    member is told, neutrally (never the note), in the same transaction, with the audit line
    of ``actor`` (the staff member or admin who froze them)."""
    async with write_transaction(session):
        member = await find_member(session, shop, code_or_phone)
        told = member.status != FROZEN
        before = member.status
        member.status = FROZEN
        member.frozen_reason = note.strip()[:255] or None
        if told:
            await _tell(session, shop, member, FROZEN_PUSH)
        if actor is not None:
            audit.record(
                session, actor, "member.freeze", shop.now(), member_id=member.id,
                before={"status": before}, after={"status": FROZEN},
                reason=member.frozen_reason or "",
            )
    return AccountHold(member.code, frozen=True, note=member.frozen_reason, told=told)


async def unfreeze(
    session: AsyncSession, shop: Shop, code_or_phone: str, *, actor: Actor | None = None
) -> AccountHold:
    """Staff make a frozen member's account active again; the member is told; ``actor``'s
    audit line goes with it."""
    async with write_transaction(session):
        member = await find_member(session, shop, code_or_phone)
        told = member.status == FROZEN
        before = member.status
        member.status = ACTIVE
        member.frozen_reason = None
        if told:
            await _tell(session, shop, member, UNFROZEN_PUSH)
        if actor is not None:
            audit.record(
                session, actor, "member.unfreeze", shop.now(), member_id=member.id,
                before={"status": before}, after={"status": ACTIVE},
            )
    return AccountHold(member.code, frozen=False, note=None, told=told)


async def _tell(session: AsyncSession, shop: Shop, member: Member, kind: str) -> None:
    # Not marketing: every member is told, whatever their offers setting.
    await outbox.enqueue(
        session, shop, member_id=member.id, kind=kind,
        key=f"{kind}:{member.id}:{shop.now().isoformat()}", payload={},
    )


async def set_reachable(session: AsyncSession, member: Member, reachable: bool) -> None:
    """A member who blocked the bot gets nothing until they write again."""
    if member.reachable == reachable:
        return
    async with write_transaction(session):
        member.reachable = reachable
