"""Domain errors: each becomes a clear answer to a member, a cashier or a till.

A refusal is data, never a sentence: ``code`` names the error (the chat's template
``errors/<code>.html`` and the till API's ``error``), ``reason`` says which rule refused (one of
``Reason``, when an error has several), and ``details`` carry the plain values the wording
needs: the field at fault, numbers, money in minor units, limits, the member code. Templates
word them in the reader's language; the till API words them in English for machines.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a field of a request was refused; templates and the API word each."""

    # Any field
    LENGTH = "length"  # min_length, max_length: characters of an id
    ID_CHARACTERS = "id_characters"  # max_length: an id uses other than A-Z a-z 0-9 . _ : -
    # Money and counts
    NOT_MONEY = "not_money"  # not a decimal amount with at most two places
    NOT_POSITIVE = "not_positive"
    ABOVE_MAX = "above_max"  # limit (minor units)
    NEGATIVE = "negative"
    # Times
    NO_TIMEZONE = "no_timezone"
    IN_FUTURE = "in_future"
    TOO_OLD = "too_old"  # days
    # Behaviour events
    UNKNOWN_KIND = "unknown_kind"  # kinds
    # Points offset at the till
    OFFSET_STEP = "offset_step"  # step (points)
    OFFSET_CAP = "offset_cap"  # max_points, percent, amount (minor units)
    OFFSET_BALANCE = "offset_balance"  # balance (points)
    # Coupons at the till
    COUPON_UNKNOWN = "coupon_unknown"
    COUPON_OTHER_MEMBER = "coupon_other_member"
    COUPON_STATUS = "coupon_status"  # status: used, expired, void
    COUPON_NOT_VALID_NOW = "coupon_not_valid_now"
    COUPON_MIN_SPEND = "coupon_min_spend"  # min_spend (minor units)
    COUPON_JUST_USED = "coupon_just_used"
    # Refunds
    REFUND_OVER_LEFT = "refund_over_left"  # left (minor units), order_id


class DomainError(Exception):
    """Base of every refusal the domain makes. ``code`` names the template / API error."""

    code = "error"
    # For logs and developers only: what a person reads comes from the templates.
    default_message = "the request cannot be done"

    def __init__(self, reason: str | None = None, /, **details: object) -> None:
        self.reason = reason or self.code
        self.details = details
        super().__init__(f"{self.code} ({self.reason}): {self.default_message}")


class MemberNotFound(DomainError):
    code = "member_not_found"
    default_message = "no member with that code or phone number"


class MemberFrozen(DomainError):
    """The member's account is on hold. ``member_code`` and the staff's ``note`` may be given
    for staff replies; what a member reads never shows the note."""

    code = "member_frozen"
    default_message = "the member is frozen"


class InsufficientPoints(DomainError):
    code = "insufficient_points"
    default_message = "not enough points"


class InvalidPhone(DomainError):
    code = "invalid_phone"
    default_message = "not a valid phone number"


class PhoneTaken(DomainError):
    code = "phone_taken"
    default_message = "the phone number belongs to another member"


class NotOwnContact(DomainError):
    code = "not_own_contact"
    default_message = "only the member's own contact can be saved"


class InvalidInput(DomainError):
    """A field of a request is wrong: ``field`` names it, ``reason`` (a ``Reason``) says why,
    ``details`` carry the numbers the rule uses."""

    code = "invalid_input"
    default_message = "a field of the request is wrong"

    def __init__(self, field: str, reason: Reason, /, **details: object) -> None:
        super().__init__(reason, field=field, **details)
        self.field = field


class UnknownCoupon(InvalidInput):
    code = "unknown_coupon"
    default_message = "no such coupon"


class CouponNotUsable(InvalidInput):
    code = "coupon_not_usable"
    default_message = "the coupon cannot be used on this order"


class OffsetNotAllowed(InvalidInput):
    code = "offset_not_allowed"
    default_message = "the points offset is not allowed"


class IdempotencyConflict(DomainError):
    """The same id was used before with a different request; ``id`` names it."""

    code = "idempotency_conflict"
    default_message = "the id was used before with a different body"


class OrderNotFound(DomainError):
    code = "order_not_found"
    default_message = "no such order"


class RefundTooLarge(InvalidInput):
    code = "refund_too_large"
    default_message = "the refund is larger than what is left of the order"
