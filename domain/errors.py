"""Domain errors: each becomes a clear answer to a member, a cashier or a till."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every refusal the domain makes. ``code`` names the template / API error."""

    code = "error"
    default_message = "the request cannot be done"

    def __init__(self, message: str = "", **details: object) -> None:
        super().__init__(message or self.default_message)
        self.details = details


class MemberNotFound(DomainError):
    code = "member_not_found"
    default_message = "no member with that code or phone number"


class MemberFrozen(DomainError):
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
    """A field of a request is wrong: ``field`` names it, the message says why."""

    code = "invalid_input"

    def __init__(self, field: str, message: str, **details: object) -> None:
        super().__init__(message, field=field, **details)
        self.field = field


class UnknownCoupon(InvalidInput):
    code = "unknown_coupon"


class CouponNotUsable(InvalidInput):
    code = "coupon_not_usable"


class OffsetNotAllowed(InvalidInput):
    code = "offset_not_allowed"


class IdempotencyConflict(DomainError):
    """The same id was used before with a different request."""

    code = "idempotency_conflict"
    default_message = "the id was used before with a different body"


class OrderNotFound(DomainError):
    code = "order_not_found"
    default_message = "no such order"


class RefundTooLarge(InvalidInput):
    code = "refund_too_large"
