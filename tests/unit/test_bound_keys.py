"""The id checks' parameter texts (`sinks.ledger.store.bound_keys`, `bound_strings`) are
clickhouse-connect's own for the same list of (tenant, id) pairs or strings, whatever they hold."""

from __future__ import annotations

from clickhouse_connect.driver.binding import format_bind_value
from hypothesis import given
from hypothesis import strategies as st

from shipledger.sinks.ledger.store import bound_keys, bound_strings


@given(st.lists(st.tuples(st.text(), st.text())))
def test_bound_keys_are_the_clients_own_text(keys: list[tuple[str, str]]) -> None:
    assert str(bound_keys(keys)) == format_bind_value(keys)


def test_quotes_and_backslashes_are_escaped() -> None:
    assert str(bound_keys([("a'b", "c\\d")])) == "[('a\\'b', 'c\\\\d')]"


@given(st.lists(st.text()))
def test_bound_strings_are_the_clients_own_text(values: list[str]) -> None:
    assert str(bound_strings(values)) == format_bind_value(values)
