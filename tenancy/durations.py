"""Durations as people write them ("90s", "30m", "2h", "7d", or plain seconds): pure, bounded."""

from __future__ import annotations

import re

from tenancy.errors import InvalidInput

_DURATION = re.compile(r"^(\d{1,9})([smhd]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_SECONDS = 366 * 86400  # a year and a day: longer is a typo, and would overflow datetime arithmetic


def parse_duration(text: str) -> int:
    """'90s', '30m', '2h', '7d' or '3600' → seconds, 0 to MAX_DURATION_SECONDS."""
    match = _DURATION.fullmatch(str(text).strip())
    if not match:
        raise InvalidInput(f"invalid duration {text!r}: use a number and s, m, h or d (e.g. 2h)")
    seconds = int(match[1]) * _UNIT[match[2]]
    if seconds > MAX_DURATION_SECONDS:
        raise InvalidInput(f"duration {text!r} is longer than {MAX_DURATION_SECONDS // 86400} days")
    return seconds
