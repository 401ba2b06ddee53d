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


@given(st.lists(st.text(alphabet=st.sampled_from("ab-1\x1f'\\"))))
def test_bound_strings_of_plain_ids_or_holding_the_separator(values: list[str]) -> None:
    """The text made at once (values with nothing to escape) is the client's too, and a value
    holding the character the values are joined with is quoted like any other."""
    assert str(bound_strings(values)) == format_bind_value(values)


def test_bound_strings_of_ids() -> None:
    ids = ["6fe4504d-a608-4af9-87f8-2cf4c64c96be", "", "x\x1fy", "z"]
    assert str(bound_strings(ids[:2])) == "['6fe4504d-a608-4af9-87f8-2cf4c64c96be', '']"
    assert str(bound_strings(ids)) == format_bind_value(ids)
    assert str(bound_strings([])) == "[]"
