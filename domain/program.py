"""The loyalty program: tiers, earn and burn rules, expiry, lifecycle, read from a TOML file.

The program is configuration, validated once at start-up. An error names the file, the
field and what is wrong, so a shop owner editing the file can fix it without a traceback.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from domain.money import MoneyFormatError, parse_money

LANGUAGES = ("en", "zh")


def _money(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("must be a decimal string such as \"10.00\"")
    try:
        minor = parse_money(str(value))
    except MoneyFormatError as exc:
        raise ValueError(str(exc)) from exc
    if minor < 0:
        raise ValueError("must not be negative")
    return minor


Money = Annotated[int, BeforeValidator(_money)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Localized(_Strict):
    en: str = Field(min_length=1)
    zh: str = Field(min_length=1)

    def get(self, lang: str) -> str:
        return self.zh if lang == "zh" else self.en


class LocalizedList(_Strict):
    en: list[str]
    zh: list[str]

    def get(self, lang: str) -> list[str]:
        return self.zh if lang == "zh" else self.en


class Tier(_Strict):
    key: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: Localized
    threshold: int = Field(ge=0)
    discount_percent: int = Field(ge=0, le=100)
    points_multiplier: Decimal = Field(gt=0, le=100)
    birthday_gift: Literal["none", "buy_one_get_one", "free_item", "gift_pack"]
    services: LocalizedList


class TierRules(_Strict):
    window_months: int = Field(ge=1, le=60)
    annual_review: str = Field(pattern=r"^\d{2}-\d{2}$")
    max_steps_down: int = Field(ge=1)
    protection_checkins: int = Field(ge=1)
    protection_per_year: int = Field(ge=0)
    first_use_task_points: int = Field(ge=0)


class GrowthRules(_Strict):
    per_currency_unit: int = Field(ge=0)
    behaviour_share_cap_percent: int = Field(ge=0, lt=100)
    checkin: int = Field(ge=0)
    review: int = Field(ge=0)
    share: int = Field(ge=0)
    referral: int = Field(ge=0)


class PointsRules(_Strict):
    per_currency_unit: int = Field(ge=0)
    member_day: int = Field(ge=0, le=31, description="0 disables the member day")
    member_day_multiplier: Decimal = Field(ge=1)
    birthday_month_multiplier: Decimal = Field(ge=1)
    signup: int = Field(ge=0)
    checkin: int = Field(ge=0)
    streak_7_bonus: int = Field(ge=0)
    streak_21_bonus: int = Field(ge=0)
    review: int = Field(ge=0)
    share: int = Field(ge=0)
    referral: int = Field(ge=0)
    referral_monthly_cap: int = Field(ge=0)
    offset_points_per_unit: int = Field(ge=1)
    offset_max_percent: int = Field(ge=0, le=100)
    # How long the one-time code of "Pay with points" lets a till spend the member's points.
    spend_code_minutes: int = Field(default=5, ge=1, le=60)

    @model_validator(mode="after")
    def _offset_in_minor_units(self) -> PointsRules:
        if (self.offset_points_per_unit % 100 != 0) and (100 % self.offset_points_per_unit != 0):
            raise ValueError("offset_points_per_unit must divide or be a multiple of 100")
        return self


class OrderRules(_Strict):
    max_amount: Money
    max_age_days: int = Field(ge=0)


class ExpiryRules(_Strict):
    rule: Literal["days", "end_of_month", "end_of_year", "never"]
    months: int = Field(ge=0, le=120)
    days: int = Field(ge=1)
    reminder_days: list[int]


class CouponTemplate(_Strict):
    key: str
    kind: Literal["amount_off", "percent_off", "free_item"]
    value: Money
    min_spend: Money
    valid_days: int = Field(ge=1)


class CouponRules(_Strict):
    expiry_reminder_days: int = Field(ge=0)
    templates: list[CouponTemplate]


class Reward(_Strict):
    # coupons.source holds "reward:<key>" in 32 characters
    key: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=25)
    name: Localized
    cost: int = Field(gt=0)
    kind: Literal["amount_off", "percent_off", "free_item"]
    value: Money
    min_spend: Money
    stock: int = Field(ge=0)
    per_member_limit: int = Field(ge=1)
    min_tier: str | None = None
    valid_days: int = Field(ge=1)


class LifecycleRules(_Strict):
    new_days: int = Field(ge=1)
    first_order_nudge_day: int = Field(ge=1)
    active_days: int = Field(ge=1)
    dormant_days: int = Field(ge=1)
    churned_days: int = Field(ge=1)
    callback_min_tier: str

    @model_validator(mode="after")
    def _ordered(self) -> LifecycleRules:
        if not self.dormant_days < self.churned_days:
            raise ValueError("dormant_days must be below churned_days")
        return self


class BenefitRules(_Strict):
    # Benefit cost (coupons, points offsets, reward items, tier discounts) as a share of
    # revenue that the shop watches; admins are alerted the day the month crosses it.
    cost_red_line_percent: int = Field(default=8, ge=0, le=100)


class CareRules(_Strict):
    """What staff may do for a member by hand at the counter (``/member``); admins are not
    limited. A staff member's adjustments count against the per-day figure in the shop's
    local day, additions and deductions alike."""

    # Points one adjustment by a staff member may add or take.
    staff_adjust_max_points: int = Field(default=500, ge=0)
    # Points a staff member may add and take in total in one local day.
    staff_adjust_daily_points: int = Field(default=2000, ge=0)
    # Coupons a staff member may grant from the templates in one local day (0: admins only).
    staff_coupon_grants_per_day: int = Field(default=3, ge=0)


class PlusRules(_Strict):
    """PLUS, the paid membership sold as a monthly Telegram Stars subscription. Off unless
    ``enabled``; tiers and growth are untouched (PLUS is bought, tiers are earned)."""

    enabled: bool = False
    # Stars per 30 days (Telegram's subscription period); Telegram caps a subscription's price.
    price_stars: int = Field(default=0, ge=0, le=10000)
    # A free trial once in a member's lifetime: 0 (none) or 30 days.
    trial_days: Literal[0, 30] = 0
    # Multiplied with the tier's multiplier (and the day's promotion) on purchase points.
    points_multiplier: Decimal = Field(default=Decimal(1), ge=1, le=10)
    # Coupon template keys issued once per paid period (a key twice gives two coupons).
    coupon_pack: list[str] = []
    # Shown on /plus and /benefits, not enforced by the bot (free returns, ...).
    services: LocalizedList = LocalizedList(en=[], zh=[])

    @model_validator(mode="after")
    def _priced(self) -> PlusRules:
        if self.enabled and self.price_stars < 1:
            raise ValueError("price_stars must be at least 1 when PLUS is enabled")
        return self


class Program(_Strict):
    currency: str = Field(min_length=3, max_length=3)
    tiers: list[Tier] = Field(min_length=1)
    tier_rules: TierRules
    growth: GrowthRules
    points: PointsRules
    orders: OrderRules
    expiry: ExpiryRules
    coupons: CouponRules
    rewards: list[Reward]
    lifecycle: LifecycleRules
    benefits: BenefitRules = BenefitRules()
    plus: PlusRules = PlusRules()
    care: CareRules = CareRules()

    @model_validator(mode="after")
    def _consistent(self) -> Program:
        if self.tiers[0].threshold != 0:
            raise ValueError("tiers: the first tier must have threshold 0")
        keys = [t.key for t in self.tiers]
        if len(set(keys)) != len(keys):
            raise ValueError("tiers: keys must be unique")
        for lower, higher in zip(self.tiers, self.tiers[1:], strict=False):
            if higher.threshold <= lower.threshold:
                raise ValueError(
                    f"tiers: threshold of {higher.key!r} must be above that of {lower.key!r}"
                )
        for reward in self.rewards:
            if reward.min_tier is not None and reward.min_tier not in keys:
                raise ValueError(f"rewards: {reward.key!r} names unknown min_tier")
        templates = {c.key for c in self.coupons.templates}
        for key in self.plus.coupon_pack:
            if key not in templates:
                raise ValueError(f"plus.coupon_pack: unknown coupon template {key!r}")
        if self.lifecycle.callback_min_tier not in keys:
            raise ValueError("lifecycle.callback_min_tier: unknown tier")
        return self

    # Lookups used throughout the domain.
    def tier(self, key: str) -> Tier:
        for tier in self.tiers:
            if tier.key == key:
                return tier
        return self.tiers[0]

    def tier_index(self, key: str) -> int:
        return next((i for i, t in enumerate(self.tiers) if t.key == key), 0)

    def tier_for_growth(self, growth: int) -> Tier:
        reached = self.tiers[0]
        for tier in self.tiers:
            if growth >= tier.threshold:
                reached = tier
        return reached

    def next_tier(self, key: str) -> Tier | None:
        index = self.tier_index(key)
        return self.tiers[index + 1] if index + 1 < len(self.tiers) else None

    def coupon_template(self, key: str) -> CouponTemplate | None:
        return next((c for c in self.coupons.templates if c.key == key), None)


class ProgramError(Exception):
    """The program file is missing or invalid; the message names file, field and problem."""


def load_program(path: Path) -> Program:
    """Read and validate a program file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ProgramError(f"{path}: file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ProgramError(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProgramError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return Program.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(top level)"
        message = first["msg"].removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ProgramError(f"{path}: {field}: {message}{more}") from exc
