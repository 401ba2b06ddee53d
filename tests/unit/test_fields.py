"""shipledger.fields: records built from same-named attributes, and the fields a log names."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from pydantic import BaseModel

from shipledger.fields import copied, picked


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    rows: int = 10
    tags: tuple[str, ...] = field(default_factory=tuple)


class Answer(BaseModel):
    decision: str
    decision_id: str
    note: str | None = None


def test_copied_reads_same_named_attributes_and_keeps_defaults_the_source_lacks() -> None:
    assert copied(Limits, SimpleNamespace(timeout_s=1.5)) == Limits(1.5)
    assert copied(Limits, SimpleNamespace(timeout_s=1.5, rows=3, other="x")) == Limits(1.5, 3)


def test_copied_with_a_prefix_and_given_values() -> None:
    settings = SimpleNamespace(query_timeout_s=2.0, query_rows=5, query_tags=("a",))
    assert copied(Limits, settings, prefix="query_", rows=7) == Limits(2.0, 7, ("a",))


def test_a_required_field_the_source_lacks_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="timeout_s"):
        copied(Limits, SimpleNamespace(rows=1))


def test_copied_builds_pydantic_models_too() -> None:
    source = SimpleNamespace(decision="allowed", event_id="d-1", note="ok")
    assert copied(Answer, source, decision_id=source.event_id) == Answer(
        decision="allowed", decision_id="d-1", note="ok"
    )


def test_picked_keeps_the_order_of_the_names() -> None:
    source = SimpleNamespace(topic="t", partition=0, offset=42)
    assert list(picked(source, "offset", "topic").items()) == [("offset", 42), ("topic", "t")]
