"""Member and coupon codes: short, unambiguous, easy to read aloud and type, with a check
character.

Alphabet: Crockford's base 32 (digits and capitals without I, L, O, U). When a code is typed,
O is read as 0 and I/L as 1, case and separators are ignored. The last character is a
Luhn mod 32 check character: it catches every single mistyped character and every swap of
two neighbouring characters.
"""

from __future__ import annotations

import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_INDEX = {ch: i for i, ch in enumerate(ALPHABET)}
_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})
DATA_LENGTH = 7  # 32**7 = 34 billion codes: random ones rarely meet
CODE_LENGTH = DATA_LENGTH + 1


def check_character(data: str) -> str:
    """Luhn mod N over the alphabet."""
    n = len(ALPHABET)
    factor = 2
    total = 0
    for ch in reversed(data):
        addend = factor * _INDEX[ch]
        factor = 1 if factor == 2 else 2
        total += addend // n + addend % n
    return ALPHABET[(n - total % n) % n]


def new_code(data_length: int) -> str:
    """A random code of ``data_length`` characters plus its check character."""
    data = "".join(secrets.choice(ALPHABET) for _ in range(data_length))
    return data + check_character(data)


def normalize_code(text: str, length: int) -> str | None:
    """The canonical form of a typed code of ``length`` characters (check included), or None
    when it is not a valid one."""
    cleaned = "".join(ch for ch in text.upper() if ch not in " -_.").translate(_ALIASES)
    if len(cleaned) != length or any(ch not in _INDEX for ch in cleaned):
        return None
    if check_character(cleaned[:-1]) != cleaned[-1]:
        return None
    return cleaned


def new_member_code() -> str:
    return new_code(DATA_LENGTH)


def normalize_member_code(text: str) -> str | None:
    """The canonical member code for what a person typed, or None when it is not valid."""
    return normalize_code(text, CODE_LENGTH)


def format_member_code(code: str) -> str:
    """Grouped for reading aloud: 'K7QM-4PZ2'."""
    return f"{code[:4]}-{code[4:]}"
