"""Property tests with hostile strings and numbers: the bounded JSON reader, the upload parsers
and every family's model (through `prepare`, what the API runs) only ever answer with a value
or their documented error naming the field, never another exception."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic_core import SchemaValidator, core_schema

from shipledger.producers.api.auth import Principal
from shipledger.producers.api.events import FieldError, Prepared, prepare, validation_context
from shipledger.producers.api.limits import TooLarge
from shipledger.producers.api.uploads import (
    MAX_LINE_BYTES,
    Record,
    csv_records,
    ndjson_records,
)
from shipledger.schemas import models
from shipledger.schemas.families import FAMILIES
from shipledger.schemas.models import (
    _BAD_IN_NAME,
    _BAD_IN_TEXT,
    _FAST,
    _NAME_PATTERN,
    _TEXT_PATTERN,
    _UNCHANGED,
    MAX_NAME,
    MAX_TEXT,
    Alert,
    DeploymentRecord,
    Escalation,
    Model,
    check_name,
    check_text,
)
from shipledger.schemas.untrusted import MAX_DEPTH, BadJSON, checked_loads, loads
from shipledger.settings import Settings
from tests.kit import FAMILY_EVENTS

PRINCIPAL = Principal("t1", "*", frozenset({"ingest"}))  # any tenant: no 403 to mask
SETTINGS = Settings(max_event_bytes=64 * 1024)
_PROFILE = settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

#: Strings an attacker would try: controls, surrogates, separators, huge, blank, escapes.
hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec=None, categories=["Cc", "Cs", "Zl", "Zp", "Cf"])),
    st.sampled_from(["\udfff", "\ud800x", "a\x00b", "prod\r\nX: 1", "\u2028", " ", "", "\x1b[31m"]),
    st.builds(lambda n: "x" * n, st.integers(MAX_TEXT - 2, MAX_TEXT + 2)),
)
hostile_number = st.one_of(
    st.integers(),
    st.sampled_from([2**31 - 1, 2**31, -(2**31) - 1, 2**63 - 1, 2**63, -(2**63) - 1, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
)
hostile_value = st.one_of(
    hostile_text,
    hostile_number,
    st.none(),
    st.booleans(),
    st.lists(hostile_text, max_size=3),
    st.dictionaries(hostile_text, hostile_text, max_size=3),
)


# --- the bounded JSON reader ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "path", "reason"),
    [
        ('{"a": ' + "9" * 5000 + "}", "body", "5000 digits"),
        ("[" * 100_000 + "]" * 100_000, "body", "levels deep"),
        ("[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2), "[0]" * (MAX_DEPTH + 1), "levels deep"),
        ('{"a": NaN}', "body", "NaN"),
        ('{"a": -Infinity}', "body", "-Infinity"),
        ('{"a": 1e400}', "body", "out of range"),
        ('{"events": [{"service": "\\udfff"}]}', "events[0].service", "lone surrogate"),
        ('{"a": {"\\ud800": 1}}', "a", "key"),
        (b'{"a": "\xff"}', "body", "not valid JSON"),
    ],
)
def test_loads_refuses_naming_the_value(text: str | bytes, path: str, reason: str) -> None:
    with pytest.raises(BadJSON) as refused:
        loads(text)
    assert refused.value.path == path and reason in refused.value.reason


def test_loads_keeps_what_events_hold() -> None:
    doc = {"events": [{"exit_code": -(2**63), "ok": "\U0001f680 é\t\n", "f": 1.5}]}
    assert loads(json.dumps(doc)) == doc
    assert loads(json.dumps(doc, ensure_ascii=False).encode("utf-8-sig")) == doc


@_PROFILE
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_loads_any_input_is_a_value_or_bad_json(data: bytes | str) -> None:
    try:
        loads(data)
    except BadJSON as exc:
        assert exc.path and exc.reason


def _outcome(read: Any, data: bytes | str) -> tuple[str, Any]:
    try:
        return "value", read(data)
    except BadJSON as exc:
        return "refused", (exc.path, exc.reason)


json_documents = st.recursive(
    hostile_value,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=12,
)


@_PROFILE
@given(json_documents, st.booleans())
def test_loads_answers_as_the_checked_decoder(doc: Any, ascii_only: bool) -> None:
    # orjson's fast path must accept, refuse and decode exactly as the checked path: long
    # integers (orjson makes floats of them), NaN, lone surrogates in keys and values.
    text = json.dumps(doc, ensure_ascii=ascii_only)
    for data in (text, text.encode("utf-8", "surrogatepass")):
        assert _outcome(loads, data) == _outcome(checked_loads, data)


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1])
@pytest.mark.parametrize("leaf", ["", "1", "[]", "{}", '"x"'])
def test_loads_nesting_bound_as_the_checked_decoder(depth: int, leaf: str) -> None:
    text = "[" * depth + leaf + "]" * depth
    assert _outcome(loads, text) == _outcome(checked_loads, text)


# --- upload parsers ---------------------------------------------------------------------------
async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _parse(fmt: str, data: bytes, size: int) -> list[Record]:
    parser = ndjson_records if fmt == "ndjson" else csv_records

    async def collect() -> list[Record]:
        return [r async for r in parser(_chunks(data, size))]

    return asyncio.run(collect())


_csv_cell = st.one_of(
    hostile_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b'"', b'"a""b"', b"\r", b"x\ry", b"x" * 131_073]),
)


@_PROFILE
@given(
    fmt=st.sampled_from(["ndjson", "csv"]),
    lines=st.lists(st.lists(_csv_cell, min_size=1, max_size=4), max_size=6),
    size=st.integers(1, 64),
)
def test_upload_parsers_answer_per_line(fmt: str, lines: list[list[bytes]], size: int) -> None:
    """Any bytes in any chunking: a record or a per-line error; only TooLarge stops early."""
    header = b"service,environment,event_type,actor\n" if fmt == "csv" else b""
    data = header + b"\n".join(b",".join(cells) for cells in lines)
    try:
        records = _parse(fmt, data, size)
    except TooLarge:
        return
    for record in records:
        assert record.line >= 1
        assert (record.obj is None) == (record.error is not None)
    assert records == _parse(fmt, data, len(data) or 1)  # whatever the chunking


def test_a_long_line_in_small_chunks_is_read_in_linear_time() -> None:
    """A line over the limit, dripped in 16-byte chunks, is refused. Each chunk used to be
    joined to the whole line before it (~34 GB copied here: minutes of CPU, then this
    test's timeout), the quoted CSV record re-joined at each of its lines likewise."""
    with pytest.raises(TooLarge):
        _parse("ndjson", b"x" * (MAX_LINE_BYTES + 1), 16)
    with pytest.raises(TooLarge):
        _parse("csv", b'service\n"' + b"\n" * (MAX_LINE_BYTES + 1), 4096)


def test_csv_huge_cell_and_bare_cr_are_line_errors() -> None:
    data = b"service,environment\n" + b"x" * 131_073 + b",prod\nch\reck,prod\nok,prod\n"
    records = _parse("csv", data, 4096)
    assert [(r.line, r.error is None) for r in records] == [(2, False), (3, False), (4, True)]
    assert "not valid CSV" in str(records[0].error)


# --- every family's model, through prepare ----------------------------------------------------


def _valid(family: str) -> dict[str, Any]:
    return {"family": family, **FAMILY_EVENTS[family]}


_FIELDS = sorted(
    (name, field) for name, family in FAMILIES.items() for field in family.model.model_fields
)


@_PROFILE
@given(target=st.sampled_from(_FIELDS), value=hostile_value)
def test_prepare_answers_a_field_error_or_an_encodable_event(
    target: tuple[str, str], value: Any
) -> None:
    family, field = target
    obj = {**_valid(family), field: value}
    result = prepare(obj, 0, PRINCIPAL, SETTINGS, "api")
    if isinstance(result, Prepared):
        assert 0 < len(result.value) <= SETTINGS.max_event_bytes
    else:
        assert result and all(isinstance(e, FieldError) and e.field and e.reason for e in result)
        # Reasons are safe to print and to encode (escaped, short).
        for error in result:
            (error.field + error.reason).encode("utf-8")
            assert len(error.reason) < 1000


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_string_field_of_every_family_refuses_surrogates_and_controls(family: str) -> None:
    model = FAMILIES[family].model
    strings = [
        name
        for name, info in model.model_fields.items()
        if "str" in str(info.annotation) and "Literal" not in str(info.annotation)
    ]
    assert strings
    for name in strings:
        for bad in ("\udfff", "a\x00b", "a\x1bb"):
            value: Any = [bad] if "list" in str(model.model_fields[name].annotation) else bad
            if name == "attributes":
                value = {"k": bad}
            result = prepare({**_valid(family), name: value}, 0, PRINCIPAL, SETTINGS, "api")
            assert isinstance(result, list), (family, name, bad)
            assert any(e.field.startswith(name) for e in result), (family, name, result)


def test_name_and_text_rules() -> None:
    assert check_text("multi\nline\ttext") == "multi\nline\ttext"
    assert check_name("payments api (eu)") == "payments api (eu)"
    for bad in ("a\nb", "a\tb", "a\u2028b", "a\x7fb", "a\x85b"):
        with pytest.raises(ValueError, match="control character"):
            check_name(bad)
    with pytest.raises(ValueError, match="longer than"):
        check_text("x" * (MAX_TEXT + 1))


def test_every_code_point_is_refused_exactly_where_the_rules_say() -> None:
    # Printable strings skip the patterns: nothing printable may be a character they refuse.
    for point in range(0x110000):
        char = chr(point)
        for check, pattern in ((check_text, _BAD_IN_TEXT), (check_name, _BAD_IN_NAME)):
            refused = pattern.search(char) is not None
            try:
                check(char)
            except ValueError:
                assert refused, hex(point)
            else:
                assert not refused, hex(point)


def test_event_time_window_and_size_limit() -> None:
    old = prepare(
        {**_valid("deployment"), "occurred_at": "1999-12-31T23:59:59Z"},
        0,
        PRINCIPAL,
        SETTINGS,
        "api",
    )
    future = prepare(
        {**_valid("deployment"), "occurred_at": "2999-01-01T00:00:00Z"},
        0,
        PRINCIPAL,
        SETTINGS,
        "api",
    )
    assert isinstance(old, list) and old[0].field == "occurred_at" and "earliest" in old[0].reason
    assert isinstance(future, list) and "in the future" in future[0].reason
    big = {**_valid("deployment"), "attributes": {f"k{i}": "x" * 8000 for i in range(10)}}
    (error,) = prepare(big, 0, PRINCIPAL, SETTINGS, "api")  # type: ignore[misc]
    assert error.field == "event" and "over the limit of 65536" in error.reason


@functools.cache
def _checking_every_field(model: type[Model]) -> type[Model]:
    """`model` with `Model`'s string check left on every field (as before the idle ones were
    dropped): the reference its errors must equal."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models, "_without_idle_checks", lambda schema: None)
        reference: type[Model] = type(model.__name__, (model,), {"__module__": model.__module__})
        reference.model_rebuild(force=True)
    return reference


_MODELS: list[type[Model]] = sorted(
    {family.model for family in FAMILIES.values()} | {DeploymentRecord, Alert},
    key=lambda m: m.__name__,
)


def _changed(model: type[Model], changes: list[tuple[int, Any]]) -> dict[str, Any]:
    """A valid object of `model` (empty but for a family's), each (field index, value) of
    `changes` set."""
    fields = list(model.model_fields)
    family = next((name for name, f in FAMILIES.items() if f.model is model), None)
    obj = dict(FAMILY_EVENTS[family]) if family else {}
    for index, value in changes:
        obj[fields[index % len(fields)]] = value
    return obj


def _not_random(model: type[Model]) -> list[str]:
    """The fields of `model` but those a blank or absent value leaves to a new id or now,
    which differ from call to call."""
    random = (models.new_id, models.utcnow)
    return [n for n, f in model.model_fields.items() if f.default_factory not in random]


@_PROFILE
@given(
    model=st.sampled_from(_MODELS),
    changes=st.lists(st.tuples(st.integers(0, 60), hostile_value), min_size=1, max_size=3),
)
def test_dropping_idle_string_checks_changes_no_answer(
    model: type[Model], changes: list[tuple[int, Any]]
) -> None:
    # Every field the check is dropped from still answers as with it: the same value, or the
    # same errors in the same order (fields, messages), hostile values in one to three fields.
    obj = _changed(model, changes)
    same = _not_random(model)
    answers: list[Any] = []
    for each in (model, _checking_every_field(model)):
        try:
            made = each.model_validate(obj, context=validation_context(SETTINGS))
        except ValidationError as exc:
            answers.append(exc.errors(include_url=False))
        else:
            answers.append({name: getattr(made, name) for name in same})
    assert repr(answers[0]) == repr(answers[1])


# --- the fast validators: the same answers as the models' own ---------------------------------
def test_the_patterns_pass_exactly_what_the_string_rules_pass_unpadded() -> None:
    checks = (
        (check_text, SchemaValidator(core_schema.str_schema(pattern=_TEXT_PATTERN))),
        (check_name, SchemaValidator(core_schema.str_schema(pattern=_NAME_PATTERN))),
    )

    def passes(validate: Any, value: str) -> bool:
        try:
            validate(value)
        except (ValueError, ValidationError):  # pydantic's ValidationError is no ValueError
            return False
        return True

    for point in range(0x110000):
        char = chr(point)
        for check, validator in checks:
            inside = passes(check, char)
            assert passes(validator.validate_python, f"a{char}b") == inside, hex(point)
            # At either end, whitespace too is refused (pydantic-core would strip it).
            alone = inside and not char.isspace()
            assert passes(validator.validate_python, char) == alone, hex(point)
            assert passes(validator.validate_python, f"{char}b{char}") == alone, hex(point)


@_PROFILE
@given(st.data())
def test_declared_validators_return_what_their_pattern_matches_unchanged(
    data: st.DataObject,
) -> None:
    for validator, declared in _UNCHANGED.items():
        if isinstance(declared, str):
            value = data.draw(st.from_regex(declared.replace(r"\x{", r"\x"), fullmatch=True))
            assert check_name(value) == value.strip() == value and len(value) <= MAX_NAME
            given = [value] if validator.__name__ == "_shas" else value  # a list's validator
            assert validator(None, given) == given  # a classmethod's function: no class used


def test_the_hot_models_have_a_fast_validator() -> None:
    hot: list[type[Model]] = [*_MODELS, Escalation]
    for model in hot:
        model.model_rebuild()  # built on first use
    # ChangeEvent holds approvals: a model its schema only refers to while it is made.
    assert {m for m, fast in _FAST.items() if fast is not None} >= {
        m for m in hot if m.__name__ != "ChangeEvent"
    }
    # Each its own, not pydantic-core's reuse of the model's validator (made too late).
    assert not any("Prebuilt" in repr(fast) for fast in _FAST.values())


class _Env(StrEnum):
    """A str subclass: the models keep its value as a str."""

    PROD = "prod"


#: Inputs the fast validator must send to the model's own: aliases, blanks, upper-case SHAs,
#: bare digests, padded values, declared-missing fields.
_TRICKY = {
    "env": "prod",
    "sha": "A" * 40,
    "commit_sha": "A" * 40,
    "artifact_digest": "b" * 64,
    "digest": "sha256:" + "C" * 64,
    "service": "  checkout  ",
    "actor": "\u00a0al\tice\u3000",
    "environment": _Env.PROD,
    "region": "",
    "version": "  ",
    "tenant": " ",
    "missing_metadata": ["commit_sha"],
    "approvers": ["", " a "],
    "attributes": {" k ": " v ", "": "x"},
    "exit_code": " 3 ",
    "occurred_at": "2026-06-03T05:06:24.123456+02:00",
    "commit_shas": ["d" * 40, "E" * 64],
    "changed_paths": {"f" * 40: ["a\tb"]},
}


@_PROFILE
@given(
    model=st.sampled_from(_MODELS),
    changes=st.lists(
        st.tuples(st.integers(0, 60), hostile_value | st.sampled_from(list(_TRICKY.values()))),
        max_size=3,
    ),
    tricky=st.lists(st.sampled_from(sorted(_TRICKY)), max_size=3),
)
def test_the_fast_validator_answers_as_the_model_does(
    model: type[Model], changes: list[tuple[int, Any]], tricky: list[str]
) -> None:
    # `model_validate` (its fast validator first) and pydantic's validator of the model give
    # the same value (the same types, the same fields set) or the same errors.
    obj = _changed(model, changes) | {key: _TRICKY[key] for key in tricky}
    same = _not_random(model)
    answers: list[Any] = []
    for validate in (model.model_validate, model.__pydantic_validator__.validate_python):
        try:
            made = validate(obj, context=validation_context(SETTINGS))
        except ValidationError as exc:
            answers.append(exc.errors(include_url=False))
        else:
            values = {name: getattr(made, name) for name in same}
            types = [type(v) for v in values.values()]
            zones = [getattr(v, "tzinfo", None) for v in values.values()]
            answers.append((values, types, zones, made.model_fields_set))
    assert repr(answers[0]) == repr(answers[1])


def test_the_fast_validator_takes_events_as_they_are_stored() -> None:
    # Every family's event as its model made it (as the processors and the sink decode it)
    # passes the fast validator, not only the model's own.
    for name, family in FAMILIES.items():
        event = family.model.model_validate(FAMILY_EVENTS[name])
        fast = _FAST[family.model]
        assert fast is not None or name == "change", name
        if fast is not None:
            assert fast.validate_python(event.model_dump()) == event
