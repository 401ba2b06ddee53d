"""The period a reconciliation covers: a quarter (`2026Q4`), days (`--since`, `--until`
included), or the days the evidence spans. Always whole UTC days, end excluded."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

from shipledger.schemas.models import LEDGER_YEARS

_YEARS = f"in the years {LEDGER_YEARS[0]} to {LEDGER_YEARS[-1]} (what the ledger holds)"


class PeriodError(ValueError):
    """A period that cannot be used; `option` names the option at fault."""

    def __init__(self, option: str, reason: str) -> None:
        self.option = option
        super().__init__(reason)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def quarter_window(quarter: str) -> tuple[datetime, datetime]:
    """[first day, first day of the next quarter) of `quarter` (`2026Q4`)."""
    found = re.fullmatch(r"(\d{4})-?[Qq]([1-4])", quarter.strip())
    if found is None:
        raise PeriodError("--quarter", f"expected YYYYQn, e.g. 2026Q4 (got {quarter!r})")
    year, number = int(found[1]), int(found[2])
    if year not in LEDGER_YEARS:
        raise PeriodError("--quarter", f"{quarter!r} is not {_YEARS}")
    start = date(year, 3 * number - 2, 1)
    end = date(year + 1, 1, 1) if number == 4 else date(year, 3 * number + 1, 1)
    return _midnight(start), _midnight(end)


def period(
    quarter: str | None, since: date | None, until: date | None, seen: Iterable[datetime]
) -> tuple[datetime, datetime]:
    """The period [start, end): the quarter; else `since` to `until` (default: the evidence's
    last day); else the days of what the evidence saw (`seen`); PeriodError naming the
    option when they contradict each other or nothing says."""
    if quarter is not None:
        if since is not None or until is not None:
            raise PeriodError("--quarter", "give --quarter or --since/--until, not both")
        return quarter_window(quarter)
    times = sorted(seen)
    first = since or (times[0].date() if times else None)
    last = until or (times[-1].date() if times else None)
    if first is None or last is None:
        raise PeriodError("--since", "the evidence shows no change: give --quarter or --since")
    if last < first:
        raise PeriodError("--until", f"{last} is before {first}")
    for option, day in (("--since", first), ("--until", last)):
        if day.year not in LEDGER_YEARS:
            raise PeriodError(option, f"{day} is not {_YEARS}")
    return _midnight(first), _midnight(last + timedelta(days=1))
