"""Durations written the way people write them in configuration: `45s`, `90m`, `12h`, `30d`,
`2w`, `7y`. One parser for token lifetimes, retention periods and any later setting.

A year is 366 days: a period written in years is never shorter than the calendar years it
names (retention must not end a day early in a leap year).
"""

from __future__ import annotations

import re
from datetime import timedelta

_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 366 * 86400}
_DURATION_RE = re.compile(r"^(\d+)([smhdwy])$")
#: Longest duration: every time it is added to or taken from stays a date Python and
#: ClickHouse hold (a token's expiry, a row's retain_until, `--since 99999999d`).
MAX_YEARS = 100
_MAX_SECONDS = MAX_YEARS * _SECONDS["y"]


def parse_duration(text: object, units: str = "smhdwy", what: str = "duration") -> timedelta:
    """A positive `<number><unit>` with a unit among `units`, at most MAX_YEARS years ->
    timedelta; ValueError naming `what`, the accepted units and an example otherwise."""
    match = _DURATION_RE.match(str(text).strip())
    if match is None or match[2] not in units or int(match[1]) == 0:
        example = f"30{'d' if 'd' in units else units[0]}"
        raise ValueError(
            f"{what} must be a positive number followed by one of {', '.join(units)} "
            f"(e.g. {example}); got {text!r}"
        )
    seconds = int(match[1]) * _SECONDS[match[2]]
    if seconds > _MAX_SECONDS:
        raise ValueError(f"{what} must be at most {MAX_YEARS} years; got {text!r}")
    return timedelta(seconds=seconds)
