"""The tables, as typed SQLAlchemy models. The schema itself is made only by migrations."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC on every dialect, gives back timezone-aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Member(Base):
    __tablename__ = "members"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # NULL once the member has left: the row stays for the shop's accounts, without identity.
    telegram_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    first_name: Mapped[str | None] = mapped_column(String(128))
    last_name: Mapped[str | None] = mapped_column(String(128))
    username: Mapped[str | None] = mapped_column(String(64))
    phone: Mapped[str | None] = mapped_column(String(20), unique=True)
    language: Mapped[str] = mapped_column(String(5), default="en")
    tier: Mapped[str] = mapped_column(String(32), default="member")
    points_balance: Mapped[int] = mapped_column(Integer, default=0)
    # Points owed after a refund took back points already spent; later earnings repay it.
    points_debt: Mapped[int] = mapped_column(Integer, default=0)
    referrer_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    # What invite links carry instead of the member code; made on the first /invite.
    referral_token: Mapped[str | None] = mapped_column(String(16), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    frozen_reason: Mapped[str | None] = mapped_column(String(255))
    card_file_id: Mapped[str | None] = mapped_column(String(255))
    marketing_opt_in: Mapped[bool] = mapped_column(Boolean, default=True)
    birthday_month: Mapped[int | None] = mapped_column(Integer)
    birthday_day: Mapped[int | None] = mapped_column(Integer)
    birthday_year: Mapped[int | None] = mapped_column(Integer)
    # A birthday set within 30 days before the date waits a year for its gift.
    birthday_gift_from: Mapped[int | None] = mapped_column(Integer)
    birthday_set_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # False after the member blocked the bot; true again when they write.
    reachable: Mapped[bool] = mapped_column(Boolean, default=True)
    # Lifecycle stage (new | active | dormant | churned) and the local day it was entered:
    # an offer goes out once per spell, keyed by that day.
    stage: Mapped[str] = mapped_column(String(16), default="new")
    stage_since: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    first_purchase_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_purchase_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # PLUS, the paid membership (domain/plus.py): none | trial | paid, on until plus_until;
    # a cancelled subscription keeps PLUS to the end of the paid period.
    plus_state: Mapped[str] = mapped_column(String(8), default="none", server_default="none")
    plus_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    plus_trial_used: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )
    plus_cancelled: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=text("false")
    )

    __table_args__ = (
        CheckConstraint("points_debt >= 0", name="debt_not_negative"),
        Index("ix_members_plus", "plus_state", "plus_until"),
        Index("ix_members_birthday", "birthday_month", "birthday_day"),
        Index("ix_members_created_at", "created_at"),
        # The lifecycle job finds the members whose stage changes today by range
        # (domain.lifecycle.stage_is), and those who entered one today.
        Index("ix_members_stage_activity", "stage", "last_purchase_at", "created_at"),
        Index("ix_members_stage_since", "stage", "stage_since"),
        # The monthly report counts members by these, from the index alone.
        Index("ix_members_groups", "tier", "stage", "status", "stage_since", "created_at"),
    )

    @property
    def display_name(self) -> str:
        parts = [p for p in (self.first_name, self.last_name) if p]
        return " ".join(parts) or (self.username or self.code)


class LedgerEntry(Base):
    """One change of a member's points. Append-only; balance == sum(amount)."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    kind: Mapped[str] = mapped_column(String(24))
    amount: Mapped[int] = mapped_column(Integer)
    balance_after: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(255))
    source_ref: Mapped[str | None] = mapped_column(String(128))
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_ledger_period", "created_at", "kind", "amount"),)


class PointsLot(Base):
    """Points earned together, expiring together. Spending draws earliest-expiring first."""

    __tablename__ = "points_lots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"))
    earned_on: Mapped[date] = mapped_column(Date)
    expires_on: Mapped[date | None] = mapped_column(Date)  # NULL: never expires
    amount: Mapped[int] = mapped_column(Integer)
    remaining: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        CheckConstraint("remaining >= 0", name="remaining_not_negative"),
        CheckConstraint("remaining <= amount", name="remaining_within_amount"),
        Index("ix_points_lots_member_expiry", "member_id", "expires_on"),
        # Only lots with points left, in the order expiry and its reminders read them.
        Index(
            "ix_points_lots_live_expiry", "expires_on", "member_id",
            sqlite_where=text("remaining > 0"), postgresql_where=text("remaining > 0"),
        ),
    )


class LotDraw(Base):
    """How much a spending entry took from which lot, so a refund can put it back."""

    __tablename__ = "lot_draws"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"), index=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("points_lots.id"))
    amount: Mapped[int] = mapped_column(Integer)


class GrowthEntry(Base):
    """One change of growth value. Never spent; the tier follows its 12-month sum."""

    __tablename__ = "growth_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(24))
    source: Mapped[str] = mapped_column(String(16))  # purchase | behaviour
    amount: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(255))
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_growth_member_window", "member_id", "occurred_at", "source", "amount"),
    )


class TierChange(Base):
    __tablename__ = "tier_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    from_tier: Mapped[str | None] = mapped_column(String(32))
    to_tier: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(64))
    growth: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Coupon(Base):
    """A single-use voucher with an owner, a value, a minimum spend and a validity window."""

    __tablename__ = "coupons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(24), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    source: Mapped[str] = mapped_column(String(32))  # welcome, reward:<key>, birthday, ...
    kind: Mapped[str] = mapped_column(String(16))  # amount_off | percent_off | free_item
    value: Mapped[int] = mapped_column(Integer)  # minor units, or percent for percent_off
    min_spend: Mapped[int] = mapped_column(Integer, default=0)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(12), default="active")  # active|used|void|expired
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used_order_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_coupons_status_valid_until", "status", "valid_until"),
        Index("ix_coupons_created_at", "created_at"),  # a period's grants (red-line watch)
    )


class Order(Base):
    """A till's order, claimed by its order_id before anything else is written."""

    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    amount: Mapped[int] = mapped_column(Integer)  # after the tier discount
    coupon_id: Mapped[int | None] = mapped_column(ForeignKey("coupons.id"))
    coupon_discount: Mapped[int] = mapped_column(Integer, default=0)
    points_redeemed: Mapped[int] = mapped_column(Integer, default=0)
    offset: Mapped[int] = mapped_column(Integer, default=0)
    paid: Mapped[int] = mapped_column(Integer, default=0)
    points_earned: Mapped[int] = mapped_column(Integer, default=0)
    growth_earned: Mapped[int] = mapped_column(Integer, default=0)
    earn_entry_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"))
    spend_entry_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_entries.id"))
    refunded: Mapped[int] = mapped_column(Integer, default=0)
    points_taken_back: Mapped[int] = mapped_column(Integer, default=0)
    points_returned: Mapped[int] = mapped_column(Integer, default=0)
    growth_taken_back: Mapped[int] = mapped_column(Integer, default=0)
    cash_returned: Mapped[int] = mapped_column(Integer, default=0)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    response: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        CheckConstraint("refunded <= amount", name="refund_within_order"),
        # A period's orders with what the cost figures sum (the daily red-line watch reads
        # the index alone).
        Index(
            "ix_orders_occurred_at", "occurred_at", "member_id", "amount", "coupon_discount",
            "offset", "paid",
        ),
    )


class Refund(Base):
    __tablename__ = "refunds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    refund_id: Mapped[str] = mapped_column(String(64), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    order_pk: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    amount: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    response: Mapped[str] = mapped_column(Text, default="")


class BehaviourEvent(Base):
    """A behaviour the shop's other systems saw (review, share), credited once."""

    __tablename__ = "behaviour_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(24))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    response: Mapped[str] = mapped_column(Text, default="")


class Push(Base):
    """An outbox row: a message to a member, written in the transaction that caused it and
    delivered afterwards by the sender. The key makes each push unique per occasion."""

    __tablename__ = "pushes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text, default="{}")
    marketing: Mapped[bool] = mapped_column(Boolean, default=False)
    # pending | sent | failed | skipped
    status: Mapped[str] = mapped_column(String(12), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(255))
    # The sender about to send it, until when (a lease: a dead sender's claim runs out).
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The campaign a push belongs to (domain/campaigns.py), for its report and its stop.
    campaign_id: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_pushes_status_not_before", "status", "not_before"),
        Index(
            "ix_pushes_campaign", "campaign_id", "status",
            sqlite_where=text("campaign_id IS NOT NULL"),
            postgresql_where=text("campaign_id IS NOT NULL"),
        ),
    )


class AdminMessage(Base):
    """The outbox of the shop's news for its admins (the monthly report, the red-line alert):
    admins need not be members, so these are not pushes. Rendered when written, in the
    admin's language; the key makes each one unique per notice, occasion and admin."""

    __tablename__ = "admin_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12), default="pending")  # pending|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        Index(
            "ix_admin_messages_pending", "not_before",
            sqlite_where=text("status = 'pending'"), postgresql_where=text("status = 'pending'"),
        ),
    )


class CheckIn(Base):
    """One check-in per member and local day, with the streak it makes."""

    __tablename__ = "checkins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    day: Mapped[date] = mapped_column(Date)
    streak: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("member_id", "day", name="uq_checkins_member_day"),
        Index("ix_checkins_day", "day"),
    )


class Badge(Base):
    __tablename__ = "badges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(32))
    earned_on: Mapped[date] = mapped_column(Date)

    __table_args__ = (UniqueConstraint("member_id", "kind", "earned_on", name="uq_badges_once"),)


class RewardStock(Base):
    """What is left of a reward in the mall; seeded from the program on first use."""

    __tablename__ = "reward_stock"

    reward_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    remaining: Mapped[int] = mapped_column(Integer)

    __table_args__ = (CheckConstraint("remaining >= 0", name="stock_not_negative"),)


class ExitSurvey(Base):
    """Why a member left, kept without any link to who it was."""

    __tablename__ = "exit_surveys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FormerAccount(Base):
    """A Telegram account whose member erased their data: only a keyed one-way hash of its id
    (HMAC-SHA256, domain.members.account_hash), with no time and no link to the member row,
    so the same person is welcomed back without the sign-up gifts, and nobody can tell from
    it who they were."""

    __tablename__ = "former_accounts"

    telegram_hash: Mapped[str] = mapped_column(String(64), primary_key=True)


class JobRun(Base):
    """The last occasion each scheduled job ran for, so a job missed while the bot was down
    runs once when it comes back, and a second run for the same occasion does nothing new."""

    __tablename__ = "job_runs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    occasion: Mapped[str] = mapped_column(String(32))  # e.g. 2026-03-10, 2026-03, 2027
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    result: Mapped[str] = mapped_column(Text, default="")


class SpendCode(Base):
    """Proof that the member is at the till: a code the member asks for in the chat, valid a
    few minutes and used once, without which no till can spend their points."""

    __tablename__ = "spend_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    order_id: Mapped[str | None] = mapped_column(String(64))


class StarPayment(Base):
    """One Telegram Stars payment for PLUS (first or renewal), kept for the shop's accounts;
    Telegram's charge id makes a payment delivered twice count once."""

    __tablename__ = "star_payments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    stars: Mapped[int] = mapped_column(Integer)
    charge_id: Mapped[str] = mapped_column(String(128), unique=True)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    is_recurring: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(12), default="paid")  # paid | refunded
    refund_reason: Mapped[str | None] = mapped_column(String(255))
    refunded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AuditEntry(Base):
    """One action of an admin or a staff member (an adjustment, a grant, a freeze, a catalog
    change, a campaign...), written in the same transaction as the change it records: who,
    when, what, the state before and after, and why. Append-only: nothing in the bot edits or
    deletes a row. Before and after hold figures and keys, never a member's personal data."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor_telegram_id: Mapped[int] = mapped_column(BigInteger)
    actor_role: Mapped[str] = mapped_column(String(8))  # admin | staff
    action: Mapped[str] = mapped_column(String(40))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    subject: Mapped[str | None] = mapped_column(String(120))
    before: Mapped[str] = mapped_column(Text, default="{}")
    after: Mapped[str] = mapped_column(Text, default="{}")
    reason: Mapped[str] = mapped_column(Text, default="")


class CatalogReward(Base):
    """An item of the rewards mall as admins keep it (``/catalog``): seeded from the program
    file on first start, then edited in the chat. ``version`` grows with every change, so a
    member's confirmation screen shown before a change is asked again. What is left of its
    stock lives in ``reward_stock``."""

    __tablename__ = "catalog_rewards"

    key: Mapped[str] = mapped_column(String(25), primary_key=True)
    name_en: Mapped[str] = mapped_column(String(120))
    name_zh: Mapped[str] = mapped_column(String(120))
    cost: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[int] = mapped_column(Integer)
    min_spend: Mapped[int] = mapped_column(Integer)
    stock: Mapped[int] = mapped_column(Integer)  # the stock it was stocked with
    per_member_limit: Mapped[int] = mapped_column(Integer)
    min_tier: Mapped[str | None] = mapped_column(String(32))
    valid_days: Mapped[int] = mapped_column(Integer)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    position: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint("cost > 0", name="cost_positive"),)


class CatalogCouponTemplate(Base):
    """A coupon template as admins keep it: seeded from the program file, edited in the chat."""

    __tablename__ = "catalog_coupon_templates"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[int] = mapped_column(Integer)
    min_spend: Mapped[int] = mapped_column(Integer)
    valid_days: Mapped[int] = mapped_column(Integer)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    position: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PointAdjustment(Base):
    """Points a staff member or an admin added or took by hand (with its ledger entry), kept so
    a staff member's adjustments of the day can be summed against the program's limit."""

    __tablename__ = "point_adjustments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    actor_telegram_id: Mapped[int] = mapped_column(BigInteger)
    actor_role: Mapped[str] = mapped_column(String(8))
    amount: Mapped[int] = mapped_column(Integer)  # signed
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_point_adjustments_actor_at", "actor_telegram_id", "at"),)


class CallbackOutcome(Base):
    """What came of calling a member on the call-back list: called, no_answer or won_back."""

    __tablename__ = "callback_outcomes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    actor_telegram_id: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class FsmRecord(Base):
    """A conversation's state and data (aiogram FSM), so a half-built campaign survives a
    restart. One row per conversation key; gone when the conversation ends."""

    __tablename__ = "fsm_states"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    state: Mapped[str | None] = mapped_column(String(200))
    data: Mapped[str] = mapped_column(Text, default="{}")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Campaign(Base):
    """A campaign an admin built: its audience, message(s), offer(s) or survey (``spec``, JSON)
    and where it stands: draft → planned → writing → running, or cancelled / stopped. Each
    step is one conditional UPDATE, so two admins or a restart move it once."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # message | survey
    state: Mapped[str] = mapped_column(String(12), index=True)
    spec: Mapped[str] = mapped_column(Text)
    start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None: at confirmation
    created_by: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_by: Mapped[int | None] = mapped_column(BigInteger)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # stopped or cancelled
    # Writing the recipients goes by member id ranges; the last id written, for a resumed write.
    written_upto: Mapped[int] = mapped_column(Integer, default=0)
    written: Mapped[int] = mapped_column(Integer, default=0)


class CampaignDelivery(Base):
    """A campaign message Telegram accepted for a member, with what it gave them: written in
    the transaction that marks the push sent, once per member per campaign (the key)."""

    __tablename__ = "campaign_deliveries"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    variant: Mapped[str] = mapped_column(String(1))
    coupon_id: Mapped[int | None] = mapped_column(ForeignKey("coupons.id"))
    points: Mapped[int] = mapped_column(Integer, default=0)
    delivered_at: Mapped[datetime] = mapped_column(UTCDateTime)


class NpsAnswer(Base):
    """One member's answer to one NPS survey (0-10), with an optional comment."""

    __tablename__ = "nps_answers"

    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    answered_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

    __table_args__ = (CheckConstraint("score BETWEEN 0 AND 10", name="score_range"),)


class CampaignRecipient(Base):
    """A member a running campaign has still to reach: its narrow queue, written set-based at
    the start (the variant, and ``skipped`` for members who opted out of marketing) and turned
    into outbox rows a batch at a time just ahead of the sender (domain/campaigns.py ``feed``),
    which removes them. A stop marks what is left skipped. No foreign keys: a million rows are
    written by one statement whose ids come from ``members`` and ``campaigns`` themselves."""

    __tablename__ = "campaign_recipients"

    campaign_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    member_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    variant: Mapped[str] = mapped_column(String(1))
    skipped: Mapped[bool] = mapped_column(Boolean)

    # The key is the row (no rowid table beside it on SQLite): half the writing.
    __table_args__ = ({"sqlite_with_rowid": False},)
