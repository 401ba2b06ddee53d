"""Schema evolution checks: every version of a schema must read data written by every other.

Proof is by fastavro schema resolution on data, not by comparing JSON: for each version pair,
sample records are written with one version and read with the other
(`fastavro.schemaless_reader(fo, writer, reader)`).

- BACKWARD: the newer version reads everything the older one wrote (consumers upgrade first).
- FORWARD: the older version reads everything the newer one writes (producers upgrade first).

The samples cover every union branch (null and non-null) and every enum symbol, because
fastavro resolves unions and enums per value: a changed branch or a missing symbol only fails
when a record actually carries it.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from importlib import resources
from itertools import combinations
from typing import Any

import fastavro
import yaml
from fastavro.read import SchemaResolutionError

from shipledger.schemas.registry import Catalog
from shipledger.schemas.topic_checks import topic_problems

BACKWARD = "backward"
FORWARD = "forward"
CATALOG = "catalog"
PARSE = "parse"

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
# How often a record may nest in itself in a sample (recursive schemas: a linked list, a tree).
_MAX_NESTING = 2


@dataclass(frozen=True)
class Problem:
    """One incompatibility or catalog error.

    `direction` is `backward` (the new version cannot read the old one's data), `forward` (the
    old version cannot read the new one's), `parse` (a version is not a valid Avro schema) or
    `catalog` (the catalog itself is inconsistent).
    """

    schema: str
    direction: str
    reason: str
    old_version: int | None = None
    new_version: int | None = None

    def versions(self) -> str:
        """`v1 -> v2`, `v3`, or empty, for messages."""
        if self.old_version is None and self.new_version is None:
            return ""
        if self.old_version == self.new_version or self.new_version is None:
            return f"v{self.old_version}"
        if self.old_version is None:
            return f"v{self.new_version}"
        return f"v{self.old_version} -> v{self.new_version}"

    def __str__(self) -> str:
        where = " ".join(p for p in (self.schema, self.versions()) if p)
        return f"{where} {self.direction}: {self.reason}"


@dataclass(frozen=True)
class Check:
    """One thing `schemas check` verified (the catalog, or one version pair) and what failed."""

    label: str
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# --- sample records -------------------------------------------------------------------------


_NO_LOGICAL = object()


@dataclass(frozen=True)
class _Choice:
    path: str
    options: tuple[int, ...]  # union branch indexes or enum symbol indexes
    labels: tuple[str, ...]
    default: int


class _Unreachable(Exception):
    """A record nested in itself more often than samples go: take another branch instead."""


@dataclass(frozen=True)
class Sample:
    """A record to write, and which choice (field = symbol, field as branch) it exercises."""

    record: dict[str, Any]
    note: str


def _display(path: str) -> str:
    return re.sub(r"\|\d+", "", path)


def _type_label(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    name = schema.get("name")
    return str(name) if name else str(schema.get("type"))


def _branch_name(schema: Any) -> str:
    """The name fastavro's tuple notation uses to pick a union branch."""
    if isinstance(schema, str):
        return schema
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind in ("record", "error", "enum", "fixed"):
            return str(schema["name"])
        if isinstance(kind, str):
            return kind
    raise ValueError(f"cannot name union branch {schema!r}")


class _Sampler:
    def __init__(self, named: Mapping[str, Any]) -> None:
        self.named = named

    def _resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            return self.named[schema]
        return schema

    def _blocked(self, schema: Any, stack: tuple[str, ...]) -> bool:
        """A record already nested in itself on this path: recursion stops there."""
        schema = self._resolve(schema)
        return (
            isinstance(schema, dict)
            and schema.get("type") in ("record", "error")
            and stack.count(schema["name"]) >= _MAX_NESTING
        )

    def value(
        self,
        schema: Any,
        path: str,
        picks: Mapping[str, int],
        found: list[_Choice],
        stack: tuple[str, ...],
    ) -> Any:
        schema = self._resolve(schema)
        if isinstance(schema, list):
            return self._union(schema, path, picks, found, stack)
        if isinstance(schema, str):
            return _primitive(schema)
        kind = schema["type"]
        logical = _logical(schema)
        if logical is not _NO_LOGICAL:
            return logical
        if kind in ("record", "error"):
            if self._blocked(schema, stack):
                raise _Unreachable(path)
            inner = (*stack, schema["name"])
            return {
                f["name"]: self.value(
                    f["type"], f"{path}.{f['name']}" if path else f["name"], picks, found, inner
                )
                for f in schema["fields"]
            }
        if kind == "enum":
            symbols = tuple(schema["symbols"])
            found.append(_Choice(path, tuple(range(len(symbols))), symbols, 0))
            return symbols[picks.get(path, 0)]
        if kind in ("array", "map"):
            try:
                if kind == "array":
                    return [self.value(schema["items"], f"{path}[]", picks, found, stack)]
                return {"k": self.value(schema["values"], f"{path}{{}}", picks, found, stack)}
            except _Unreachable:
                return [] if kind == "array" else {}
        if kind == "fixed":
            return b"\x01" * int(schema["size"])
        return self.value(kind, path, picks, found, stack)

    def _union(
        self,
        branches: list[Any],
        path: str,
        picks: Mapping[str, int],
        found: list[_Choice],
        stack: tuple[str, ...],
    ) -> Any:
        options = tuple(i for i, b in enumerate(branches) if not self._blocked(b, stack))
        if not options:
            raise _Unreachable(path)
        non_null = [i for i in options if branches[i] != "null"]
        default = non_null[0] if non_null else options[0]
        if len(options) > 1:
            labels = tuple(_type_label(branches[i]) for i in options)
            found.append(_Choice(path, options, labels, default))
        index = picks.get(path, default)
        branch = branches[index]
        # Tuple notation names the branch, so fastavro cannot pick another one that also fits.
        return (_branch_name(branch), self.value(branch, f"{path}|{index}", picks, found, stack))


def _logical(schema: Mapping[str, Any]) -> Any:
    """A value of the schema's logical type, or _NO_LOGICAL for a plain (or unknown) one."""
    logical = schema.get("logicalType")
    kind = schema.get("type")
    if logical in ("timestamp-millis", "timestamp-micros") and kind == "long":
        return datetime(2026, 11, 26, 10, 30, 15, 123000, tzinfo=UTC)
    if logical in ("local-timestamp-millis", "local-timestamp-micros") and kind == "long":
        return datetime(2026, 11, 26, 10, 30, 15, 123000)  # local time: naive by definition
    if logical == "date" and kind == "int":
        return date(2026, 11, 26)
    if (logical, kind) in (("time-millis", "int"), ("time-micros", "long")):
        return time(10, 30, 15, 123000)
    if logical == "uuid" and kind == "string":
        return str(uuid.UUID(int=1))
    if logical == "decimal" and kind in ("bytes", "fixed"):
        return Decimal(1).scaleb(-int(schema.get("scale", 0)))
    return _NO_LOGICAL


def _primitive(kind: str) -> Any:
    return {
        "null": None,
        "boolean": True,
        "int": 7,
        "long": 7,
        "float": 1.5,
        "double": 1.5,
        "bytes": b"\x01\x02",
        "string": "sample",
    }[kind]


def sample_records(schema: Any) -> list[Sample]:
    """Records covering `schema`: one base record, then one per other union branch and enum
    symbol (including those nested in branches that only other samples take)."""
    named: dict[str, Any] = {}
    parsed = fastavro.parse_schema(schema, named_schemas=named)
    sampler = _Sampler(named)
    samples: list[Sample] = []
    expanded: set[str] = set()
    work: list[tuple[dict[str, int], str]] = [({}, "base record")]
    while work:
        picks, note = work.pop(0)
        found: list[_Choice] = []
        try:
            record = sampler.value(parsed, "", picks, found, ())
        except _Unreachable as exc:
            raise ValueError(f"{_display(str(exc)) or 'record'} nests in itself forever") from exc
        samples.append(Sample(record, note))
        for choice in found:
            if choice.path in expanded:
                continue
            expanded.add(choice.path)
            shown = _display(choice.path) or "record"
            for option, label in zip(choice.options, choice.labels, strict=True):
                if option != choice.default:
                    work.append(({**picks, choice.path: option}, f"{shown} = {label}"))
    return samples


# --- resolution -----------------------------------------------------------------------------


def _full_name(raw: Mapping[str, Any]) -> str:
    namespace = raw.get("namespace")
    name = str(raw.get("name", "?"))
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _label(version: int | None, default: str) -> str:
    return f"v{version}" if version is not None else default


@dataclass(frozen=True)
class _Version:
    label: str
    parsed: Any
    expanded: Any  # named types inlined: each field stands alone
    samples: list[Sample]


def _load(raw: Mapping[str, Any], label: str) -> _Version:
    raw = dict(raw)
    parsed = fastavro.parse_schema(raw, named_schemas={})
    bad_default = _union_default_problem(parsed)
    if bad_default:
        raise ValueError(bad_default)
    return _Version(
        label,
        parsed,
        fastavro.parse_schema(raw, named_schemas={}, expand=True),
        sample_records(raw),
    )


def _union_default_problem(schema: Any, seen: set[str] | None = None) -> str | None:
    """Avro takes a union field's default from the union's FIRST branch; fastavro does not
    check it, other readers (Java, a schema registry) reject the schema."""
    seen = set() if seen is None else seen
    if not isinstance(schema, dict) or schema.get("type") not in ("record", "error"):
        return None
    if schema["name"] in seen:
        return None
    seen.add(schema["name"])
    for f in schema["fields"]:
        t = f["type"]
        if isinstance(t, list) and t and "default" in f:
            first_is_null = t[0] == "null"
            if (f["default"] is None) != first_is_null:
                hint = (
                    'put "null" first for a null default'
                    if f["default"] is None
                    else "put the default's type first"
                )
                return (
                    f"field {f['name']}: default {json.dumps(f['default'])} does not match the "
                    f"union's first branch {_type_label(t[0])} (Avro takes a union's default "
                    f"from its first branch: {hint})"
                )
        for inner in t if isinstance(t, list) else [t]:
            problem = _union_default_problem(inner, seen)
            if problem:
                return problem
    return None


def _one_field(record: Mapping[str, Any], avro_field: Any) -> Any:
    """`record` cut down to one field, parsed; None if that alone does not parse."""
    try:
        return fastavro.parse_schema(
            {"type": "record", "name": record["name"], "fields": [avro_field]}, named_schemas={}
        )
    except Exception:
        return None


def _culprits(writer: _Version, reader: _Version, data: bytes) -> list[str]:
    """Top-level reader fields that fail alone: which fields a record-level error is about."""
    expanded = reader.expanded
    if not isinstance(expanded, dict) or expanded.get("type") != "record":
        return []
    names = []
    for f in expanded["fields"]:
        single = _one_field(expanded, f)
        if single is None:
            continue
        try:
            fastavro.schemaless_reader(io.BytesIO(data), writer.parsed, single)
        except Exception:
            names.append(str(f["name"]))
    return names


def _resolve(writer: _Version, reader: _Version) -> str | None:
    """Why `reader` cannot read what `writer` wrote, or None if every sample resolves."""
    for sample in writer.samples:
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, writer.parsed, sample.record, strict=True)
        except Exception as exc:  # a sample that does not fit is a bug here, not in the schema
            return f"could not write a {writer.label} sample ({sample.note}): {exc}"
        data = buf.getvalue()
        fo = io.BytesIO(data)
        try:
            fastavro.schemaless_reader(fo, writer.parsed, reader.parsed)
        except Exception as exc:  # SchemaResolutionError mostly; some mismatches raise others
            error = str(exc) if isinstance(exc, SchemaResolutionError) else repr(exc)
            fields = [n for n in _culprits(writer, reader, data) if n not in error]
            where = f"field {', '.join(fields)}: " if fields else ""
            return (
                f"{reader.label} cannot read data written by {writer.label} "
                f"({sample.note}): {where}{error}"
            )
        if fo.tell() != len(data):
            return (
                f"{reader.label} read {fo.tell()} of {len(data)} bytes written by "
                f"{writer.label} ({sample.note})"
            )
    return None


def check_pair(
    old_raw: Mapping[str, Any],
    new_raw: Mapping[str, Any],
    *,
    old_version: int | None = None,
    new_version: int | None = None,
) -> list[Problem]:
    """Problems between two versions of one schema (empty: backward and forward compatible).

    BACKWARD: `new_raw` reads samples written with `old_raw`; FORWARD: the other way round.
    """
    schema = _full_name(new_raw)
    loaded: list[_Version] = []
    for raw, label in (
        (old_raw, _label(old_version, "old")),
        (new_raw, _label(new_version, "new")),
    ):
        try:
            loaded.append(_load(raw, label))
        except Exception as exc:
            reason = f"{label} is not a valid Avro schema: {exc}"
            return [Problem(schema, PARSE, reason, old_version, new_version)]
    old, new = loaded
    problems = []
    backward = _resolve(old, new)
    if backward:
        problems.append(Problem(schema, BACKWARD, backward, old_version, new_version))
    if old_raw == new_raw:  # one version against itself: the other direction is the same
        return problems
    forward = _resolve(new, old)
    if forward:
        problems.append(Problem(schema, FORWARD, forward, old_version, new_version))
    return problems


# --- the catalog ----------------------------------------------------------------------------


def shipped_entries() -> list[dict[str, Any]]:
    """The `schemas:` entries of the packaged catalog.yaml as written (duplicates included,
    which the Catalog's by-id index would hide)."""
    root = resources.files(__package__)
    doc = yaml.safe_load(root.joinpath("catalog.yaml").read_text(encoding="utf-8"))
    return list(doc["schemas"])


def _catalog_problems(cat: Catalog, entries: Iterable[Mapping[str, Any]]) -> list[Problem]:
    problems: list[Problem] = []
    entries = list(entries)
    seen: dict[int, str] = {}
    for entry in entries:
        schema_id, name = entry.get("id"), str(entry.get("name"))
        if not isinstance(schema_id, int) or isinstance(schema_id, bool) or schema_id < 1:
            problems.append(Problem(name, CATALOG, f"id {schema_id!r} is not a positive integer"))
            continue
        if schema_id in seen:
            problems.append(
                Problem(name, CATALOG, f"id {schema_id} is already used by {seen[schema_id]}")
            )
        seen[schema_id] = f"{name} v{entry.get('version')}"
    by_name: dict[str, list[Any]] = {}
    for entry in entries:
        by_name.setdefault(str(entry.get("name")), []).append(entry.get("version"))
    for name, versions in by_name.items():
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in versions):
            problems.append(Problem(name, CATALOG, f"versions {versions} are not all integers"))
            continue
        expected = list(range(1, len(versions) + 1))
        if sorted(versions) != expected:
            problems.append(
                Problem(
                    name,
                    CATALOG,
                    f"versions {sorted(versions)} are not consecutive from 1 (expected {expected})",
                )
            )
    problems.extend(
        Problem(f"topic {topic}", CATALOG, reason) for topic, reason in topic_problems(cat)
    )
    return problems


def schema_names(cat: Catalog) -> list[str]:
    """Schema names in the order the catalog first lists them (by id)."""
    return list(dict.fromkeys(v.name for _, v in sorted(cat.by_id.items())))


def run_checks(cat: Catalog, entries: Iterable[Mapping[str, Any]] | None = None) -> list[Check]:
    """The catalog's consistency, then every version pair of every schema (older, newer), each
    checked in both directions; a schema with one version round-trips its own samples.

    `entries` are catalog.yaml's raw `schemas:` entries, to see duplicate ids; by default they
    are rebuilt from `cat`, where a duplicate has already overwritten its twin.
    """
    if entries is None:
        entries = [{"id": v.id, "name": v.name, "version": v.version} for v in cat.by_id.values()]
    checks = [Check("catalog", _catalog_problems(cat, entries))]
    for name in schema_names(cat):
        versions = cat.versions(name)
        if len(versions) == 1:
            only = versions[0]
            checks.append(
                Check(
                    f"{name} v{only.version} (only version: reads its own data)",
                    check_pair(
                        only.raw, only.raw, old_version=only.version, new_version=only.version
                    ),
                )
            )
            continue
        for old, new in combinations(versions, 2):
            checks.append(
                Check(
                    f"{name} v{old.version} <-> v{new.version}",
                    check_pair(old.raw, new.raw, old_version=old.version, new_version=new.version),
                )
            )
    return checks


def check_catalog(
    cat: Catalog, entries: Iterable[Mapping[str, Any]] | None = None
) -> list[Problem]:
    """Every problem `run_checks` finds (empty: the catalog is consistent and compatible)."""
    return [p for check in run_checks(cat, entries) for p in check.problems]
