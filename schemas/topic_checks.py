"""Consistency of the catalog's topics (`shipledger schemas check` runs it, so `make lint`):
every reference a topic makes resolves, and its model has its schema's fields.

Whether each table exists in the DDL is the ledger's to check (tests/unit/test_catalog.py);
how each model field mirrors its Avro type is tests/unit/test_schemas.py's.
"""

from __future__ import annotations

from collections import Counter

from shipledger.schemas.registry import Catalog
from shipledger.schemas.topic_spec import TopicSpec, load_model

#: (topic name, what is wrong)
TopicProblem = tuple[str, str]


def topic_problems(cat: Catalog) -> list[TopicProblem]:
    """Every inconsistency of the catalog's topics, by topic, in catalog order."""
    problems = [(t.name, reason) for t in cat.topics.values() for reason in _reasons(cat, t)]
    for kind, names in (
        ("event family", [t.family for t in cat.topics.values() if t.family]),
        ("ledger table", [t.table.name for t in cat.topics.values() if t.table]),
    ):
        for name, count in Counter(names).items():
            if count > 1:
                problems.append(("*", f"{count} topics carry the {kind} {name!r}"))
    return problems


def _reasons(cat: Catalog, topic: TopicSpec) -> list[str]:
    reasons = []
    if topic.dlq is not None and topic.dlq not in cat.topics:
        reasons.append(f"dead-letter topic {topic.dlq!r} is not in the catalog")
    if topic.family is not None and (topic.model is None or topic.table is None):
        reasons.append(f"event family {topic.family!r} needs a model and a table")
    if topic.value_schema is None:
        if topic.model is not None:
            reasons.append(f"model {topic.model} has no schema to mirror")
        return reasons
    if not cat.versions(topic.value_schema):
        return [*reasons, f"schema {topic.value_schema!r} is not in the catalog"]
    fields = [f["name"] for f in cat.latest(topic.value_schema).raw.get("fields", [])]
    if topic.key not in fields:
        reasons.append(f"key {topic.key!r} is not a field of {topic.value_schema}")
    if topic.model is not None:
        reasons.extend(_model_reasons(topic.model, topic.value_schema, fields))
    return reasons


def _model_reasons(path: str, schema: str, fields: list[str]) -> list[str]:
    try:
        model = load_model(path)
    except ValueError as exc:
        return [str(exc)]
    names = list(model.model_fields)
    if names == fields:
        return []
    missing = [f for f in fields if f not in names]
    extra = [n for n in names if n not in fields]
    return [
        f"model {path} does not mirror {schema}'s fields in order "
        f"(missing {missing}, extra {extra})"
    ]
