"""The hash chain's canonical bytes (`sinks.ledger.chain.canonical_bytes`) are those the
ledgers already stored were stamped with: the faster form (top-level datetimes converted before
orjson, a plain dict copy) gives the same bytes as the form it replaced, on random rows of every
table, late columns set and unset, nested datetimes, a `row_hash` column or none."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from shipledger.sinks.ledger import chain, ddl


def _old_hashed(row: Mapping[str, Any], table: str = "") -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "row_hash"}
    for late in chain.late_columns(table):
        if late in out and out[late] in chain.UNSET:
            del out[late]
    return out


def _old_canonical_bytes(row: Mapping[str, Any], table: str = "") -> bytes:
    """The form the ledgers were stamped with until the change (kept here only to compare)."""
    return orjson.dumps(
        _old_hashed(row, table), option=chain.CANONICAL_OPTIONS, default=chain.canonical_default
    )


_ZONES = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-7))])
_TIMES = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=_ZONES
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.text(),
    _TIMES,
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=3),
    ),
    max_leaves=6,
)
_TABLES = st.sampled_from([*ddl.tables(), "", "no_such_table"])


@st.composite
def _rows(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    table = draw(_TABLES)
    spec = ddl.tables().get(table)
    names = [c.name for c in spec.columns] if spec is not None else ["tenant", "at"]
    row: dict[str, Any] = {}
    for name in names:
        if draw(st.integers(0, 9)) == 0:
            continue  # a column missing from the row
        late = name in chain.late_columns(table)
        row[name] = draw(st.sampled_from(chain.UNSET) | _VALUES if late else _VALUES)
    row.update(draw(st.dictionaries(st.text(max_size=8), _VALUES, max_size=2)))
    return table, row


@settings(max_examples=2000, deadline=None)
@given(_rows())
def test_canonical_bytes_are_those_of_the_form_they_replaced(drawn: tuple[str, dict[str, Any]]):
    table, row = drawn
    old = _old_canonical_bytes(row, table)
    assert chain.canonical_bytes(row, table) == old
    assert chain.row_hash(row, table) == hashlib.sha256(old).hexdigest()
