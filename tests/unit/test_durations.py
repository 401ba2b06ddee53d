"""One duration parser for token lifetimes and retention periods."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shipledger.schemas.durations import parse_duration


def test_every_unit() -> None:
    assert parse_duration("45s") == timedelta(seconds=45)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration(" 30d ") == timedelta(days=30)
    assert parse_duration("2w") == timedelta(days=14)
    assert parse_duration("7y") == timedelta(days=7 * 366)  # never shorter than 7 calendar years


@pytest.mark.parametrize("bad", ["", "0d", "3 days", "-1h", "7", "1.5h", "10x", None])
def test_refusals_name_the_format(bad: object) -> None:
    with pytest.raises(ValueError, match=r"duration must be a positive number .* \(e.g. 30d\)"):
        parse_duration(bad)


def test_units_can_be_narrowed() -> None:
    with pytest.raises(ValueError, match=r"retention period must be .* one of d, w, y"):
        parse_duration("5m", units="dwy", what="retention period")


@pytest.mark.parametrize("huge", ["101y", "36601d", "99999999999y", "9999999999999999999999s"])
def test_longer_than_a_century_is_refused_naming_the_bound(huge: str) -> None:
    """Unbounded, `99999999999y` overflowed timedelta (OverflowError: a traceback from `tokens
    create --expires-in` and `policy check`) and `9000y` passed `policy check`, then stopped
    the sink and `import` (a retain_until past year 9999): every caller refuses it now."""
    with pytest.raises(ValueError, match=rf"a lifetime must be at most 100 years; got '{huge}'"):
        parse_duration(huge, what="a lifetime")


def test_a_century_is_the_longest() -> None:
    assert parse_duration("100y") == timedelta(days=36_600)
