"""The rotating card code: what the member card's QR carries when the shop turns rotation on.

A screenshot of someone's card should be useless a minute later. The code is stateless: "R",
the member code, the time it was made (in 10-second steps) and a keyed MAC over both, all in the
member-code alphabet. A till puts the scanned text where it would put the member code; it names
that member for ``VALID_SECONDS`` and is then refused. Like the member code it only earns: it
proves nothing about presence (spending still needs the one-time spend code).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from domain.errors import DomainError
from domain.member_code import ALPHABET, CODE_LENGTH, normalize_member_code
from domain.shop import Shop

PREFIX = "R"
STEP_SECONDS = 10
VALID_SECONDS = 60
STAMP_LENGTH = 6  # 32**6 steps of 10 s: beyond the year 2300
MAC_LENGTH = 8  # 40 bits, for a code alive one minute
CARD_CODE_LENGTH = len(PREFIX) + CODE_LENGTH + STAMP_LENGTH + MAC_LENGTH
PURPOSE = "rotating card code"


class CardCodeRefused(DomainError):
    """A rotating card code that is not genuine or no longer valid; ``field`` names where."""

    code = "card_code_refused"
    default_message = "the card code is not valid (any more): ask the member to show it again"


@dataclass(frozen=True)
class CardCode:
    code: str
    valid_seconds: int


def _encode(number: int, length: int) -> str:
    out = []
    for _ in range(length):
        number, digit = divmod(number, len(ALPHABET))
        out.append(ALPHABET[digit])
    return "".join(reversed(out))


def _decode(text: str) -> int:
    number = 0
    for ch in text:
        number = number * len(ALPHABET) + ALPHABET.index(ch)
    return number


def _mac(shop: Shop, member_code: str, stamp: str) -> str:
    digest = hmac.new(
        shop.secret_for(PURPOSE), f"{member_code}:{stamp}".encode(), hashlib.sha256
    ).digest()
    return _encode(int.from_bytes(digest[:8], "big"), MAC_LENGTH)


def _step(instant: datetime) -> int:
    return int(instant.timestamp()) // STEP_SECONDS


def issue(shop: Shop, member_code: str) -> CardCode:
    """The card code for ``member_code`` now, valid ``VALID_SECONDS``."""
    stamp = _encode(_step(shop.now()), STAMP_LENGTH)
    code = PREFIX + member_code + stamp + _mac(shop, member_code, stamp)
    return CardCode(code=code, valid_seconds=VALID_SECONDS)


def looks_like_card_code(text: str) -> bool:
    cleaned = "".join(ch for ch in text.upper() if ch not in " -_.")
    return len(cleaned) == CARD_CODE_LENGTH and cleaned.startswith(PREFIX)


def member_code_of(
    shop: Shop, text: str, *, field: str = "member", any_age: bool = False
) -> str:
    """The member code a genuine card code made within ``VALID_SECONDS`` names; otherwise
    CardCodeRefused (forged, altered, expired or from the future). ``any_age``: a genuine code
    of any age (only to recognise a till's retry of a request already answered)."""
    cleaned = "".join(ch for ch in text.upper() if ch not in " -_.")
    body = cleaned[len(PREFIX):]
    member_code = normalize_member_code(body[:CODE_LENGTH])
    stamp = body[CODE_LENGTH:CODE_LENGTH + STAMP_LENGTH]
    mac = body[CODE_LENGTH + STAMP_LENGTH:]
    if (
        member_code is None or len(mac) != MAC_LENGTH
        or any(ch not in ALPHABET for ch in stamp + mac)
        or not hmac.compare_digest(mac, _mac(shop, member_code, stamp))
    ):
        raise CardCodeRefused(field=field)
    if any_age:
        return member_code
    age = (_step(shop.now()) - _decode(stamp)) * STEP_SECONDS
    # One step of grace for a till whose clock runs a little ahead of the shop's server.
    if not -STEP_SECONDS <= age <= VALID_SECONDS - STEP_SECONDS:
        raise CardCodeRefused(field=field)
    return member_code
