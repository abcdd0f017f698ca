"""The citizen identity number of GB 11643-1999.

18 characters: a 6-digit division code, the birth date as YYYYMMDD, a 3-digit sequence and a
check character computed with ISO 7064 MOD 11-2. Division codes change over time, so the code
is checked for shape only, never against a table of current codes.
"""

from __future__ import annotations

import re
from datetime import date

_SHAPE = re.compile(r"[0-9]{17}[0-9X]")
_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))
_CHECK_CHARS = "10X98765432"
EARLIEST_BIRTH_YEAR = 1850


def check_character(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def normalize_citizen_id(value: str, *, today: date | None = None) -> str:
    """Return the number with a lowercase final ``x`` made ``X``, or raise ``ValueError``.

    The message names the rule that failed. The value must already be a ``str``.
    """
    if len(value) != 18:
        raise ValueError(f"must be 18 characters (GB 11643), got {min(len(value), 10**6)}")
    if value[17] == "x":
        value = value[:17] + "X"
    if not _SHAPE.fullmatch(value):
        raise ValueError(
            "must be 17 ASCII digits followed by a digit or X (GB 11643)",
        )
    birth = value[6:14]
    try:
        born = date(int(birth[:4]), int(birth[4:6]), int(birth[6:8]))
    except ValueError:
        raise ValueError("characters 7-14 must be a real calendar date (YYYYMMDD)") from None
    if born.year < EARLIEST_BIRTH_YEAR or born > (today or date.today()):
        raise ValueError(f"the birth date must lie between {EARLIEST_BIRTH_YEAR} and today")
    expected = check_character(value[:17])
    if value[17] != expected:
        raise ValueError("check character is wrong (ISO 7064 MOD 11-2)")
    return value


def mask_citizen_id(value: str) -> str:
    """Show the first 6 and last 4 characters only: who does not need the number can't read it."""
    if len(value) != 18:
        return "*" * min(len(value), 18)
    return f"{value[:6]}{'*' * 8}{value[-4:]}"
