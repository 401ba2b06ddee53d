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
