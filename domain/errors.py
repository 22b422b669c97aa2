"""Domain errors: each becomes a clear answer to a member, a cashier or a till."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every refusal the domain makes. ``code`` names the template / API error."""

    code = "error"

    def __init__(self, message: str = "", **details: object) -> None:
        super().__init__(message or self.code)
        self.details = details


class MemberNotFound(DomainError):
    code = "member_not_found"


class MemberFrozen(DomainError):
    code = "member_frozen"


class InsufficientPoints(DomainError):
    code = "insufficient_points"


class InvalidPhone(DomainError):
    code = "invalid_phone"


class PhoneTaken(DomainError):
    code = "phone_taken"


class NotOwnContact(DomainError):
    code = "not_own_contact"
