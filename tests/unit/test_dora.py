"""The DORA report's pure parts: the request's checks, the window, the roll-up of merged
groups and the days a period counts (the end-to-end numbers: tests/integration/test_dora.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from shipledger.sinks.ledger.dora import (
    LOOKAHEAD_PERIOD,
    DoraError,
    DoraQuery,
    Group,
    compute,
    dora_window,
)

AT = datetime(2026, 11, 2, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"period": "year"}, "period"),
        ({"until": date(2026, 10, 1)}, "until"),
        ({"by": ("region",)}, "by"),
    ],
)
def test_a_bad_request_names_its_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(DoraError, match=f"^{field}:"):
        DoraQuery(since=date(2026, 11, 1), **{"until": date(2026, 11, 30), **kw})  # type: ignore[arg-type]


def test_the_default_window_is_the_90_days_to_today() -> None:
    assert dora_window(None, None, date(2026, 11, 30)) == (date(2026, 9, 2), date(2026, 11, 30))
    assert dora_window(date(2026, 1, 1), None, date(2026, 11, 30))[0] == date(2026, 1, 1)


def _group(period: date, service: str, **kw: object) -> Group:
    return Group(period, "retail", "payments", "prod", "", service, **kw)  # type: ignore[arg-type]


def test_groups_roll_up_by_the_breakdown_and_a_deployment_counts_once() -> None:
    query = DoraQuery(since=date(2026, 11, 1), until=date(2026, 11, 30), period="month")
    month = date(2026, 11, 1)
    rows = compute(
        query,
        [
            # d1 appears in two services' groups (its service was renamed): one deployment,
            # its latest record (seq 3, odd: failed) decides.
            _group(month, "a", changes={"d1": 4, "d2": 4}),
            _group(month, "b", changes={"d1": 7}, failed_at={"d1": AT}),
            # The lookahead holds only remediation facts: d2 was rolled back after the window.
            _group(LOOKAHEAD_PERIOD, "a", remediated={"d2"}, restored_at={"d1": AT, "d2": AT}),
        ],
        {},
    )
    [row] = rows
    assert (row.deployments, row.failures, row.recovery_times_s) == (2, 2, (0.0,))
    assert row.days == 30


def test_a_week_cut_by_the_window_counts_only_its_days_inside() -> None:
    query = DoraQuery(since=date(2026, 11, 4), until=date(2026, 11, 5), period="week")
    [row] = compute(query, [_group(date(2026, 11, 2), "a", changes={"d1": 4})], {})
    assert (row.days, row.deploys_per_day) == (2, 0.5)
