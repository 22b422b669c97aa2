"""Phone numbers normalised to E.164, so a till can find a member by phone."""

from __future__ import annotations

import phonenumbers


def normalize_phone(text: str, default_region: str, *, international: bool = False) -> str | None:
    """E.164 form ('+8613812345678') of a phone number, or None when it is not a valid one.

    Telegram sends contact numbers without the leading '+'; a till may type a national
    number, read in the shop's region. With ``international`` the digits always carry their
    country code (as in a Telegram contact).
    """
    raw = text.strip()
    if not raw or len(raw) > 32:
        return None
    if not raw.isascii():  # other scripts' digits and look-alike characters are not a phone
        return None
    digits = "".join(ch for ch in raw if ch in "0123456789")
    international = raw.startswith("+") or international
    candidates = ["+" + digits] if international else [raw, "+" + digits]
    for candidate in candidates:
        try:
            region = None if candidate.startswith("+") else default_region
            parsed = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return None
