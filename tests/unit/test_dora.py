"""The DORA report's pure parts: the request's checks, the window, the report's query, the
rows it returns and the days a period counts (the numbers: tests/integration/test_dora.py)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from shipledger.schemas.scopes import RowScope
from shipledger.sinks.ledger.dora import DoraError, DoraQuery, dora_rows, dora_sql, dora_window


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"period": "year"}, "period"),
        ({"until": date(2026, 10, 1)}, "until"),
        ({"by": ("region",)}, "by"),
        # Past what a ClickHouse Date holds (with the remediation lookahead): a 400, not a 500.
        ({"until": date(9999, 12, 31)}, "until"),
        ({"since": date(1, 1, 1)}, "since"),
    ],
)
def test_a_bad_request_names_its_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(DoraError, match=f"^{field}:"):
        DoraQuery(**{"since": date(2026, 11, 1), "until": date(2026, 11, 30), **kw})  # type: ignore[arg-type]


def test_the_default_window_is_the_90_days_to_today() -> None:
    assert dora_window(None, None, date(2026, 11, 30)) == (date(2026, 9, 2), date(2026, 11, 30))
    assert dora_window(date(2026, 1, 1), None, date(2026, 11, 30))[0] == date(2026, 1, 1)
    # Ends past what a ClickHouse Date holds (with the lookahead) are held within it, and the
    # default start never overflows: the API's `until=9999-12-31` was a 500.
    first, last = date(1970, 1, 1), date(2149, 6, 6) - timedelta(days=30)
    assert dora_window(None, date(1, 1, 1), date(2026, 11, 30)) == (first, first)
    assert dora_window(date(1, 1, 1), date(9999, 12, 31), date(2026, 11, 30)) == (first, last)


def test_the_query_merges_each_deployment_then_counts_it_under_its_own_record() -> None:
    """One row per deployment first (rows under a renamed service, or a remediation's row
    filed elsewhere, merge into it), keyed by its own record's day and service; the reader's
    scope is the SQL filter every ledger read uses (the numbers: the integration tests)."""
    query = DoraQuery(since=date(2026, 11, 1), until=date(2026, 11, 30), by=("service",))
    sql, params = dora_sql(query, "ledger", RowScope("retail", frozenset({"payments"})))
    assert "GROUP BY tenant, deployment_id" in sql
    assert "anyIf(service, own = 1) AS d_service" in sql
    assert "HAVING d_own = 1 AND d_day <= %(until)s" in sql
    # Past the window only remediations' rows are read (the others would be dropped).
    assert "(`day` <= %(until)s OR own = 0)" in sql
    assert "tenant = 'retail' AND ifNull(team IN ('payments'), 0)" in sql
    assert params["lookahead"] == date(2026, 12, 30)


def test_a_week_cut_by_the_window_counts_only_its_days_inside() -> None:
    query = DoraQuery(since=date(2026, 11, 4), until=date(2026, 11, 5), period="week")
    week: tuple[object, ...] = (date(2026, 11, 2), "acme", "a", 1, 0, 0, [], [], [])
    [row] = dora_rows(query, [week], {})
    assert (row.days, row.deploys_per_day) == (2, 0.5)
