"""The field dictionary: docs/fields.md is generated from the schemas and kept current."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.schemas.dictionary import is_required, render, type_name
from shipledger.schemas.fields import ALIASES, OTEL_NAMES, OTEL_NAMES_BY_SCHEMA, otel_name
from shipledger.schemas.registry import catalog

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "fields.md"


def test_committed_dictionary_is_current() -> None:
    committed = COMMITTED.read_text(encoding="utf-8") if COMMITTED.is_file() else None
    assert committed == render(catalog()), (
        "docs/fields.md is out of date with the schemas: run `shipledger schemas docs` in the "
        "repository root and commit the result"
    )


def _all_fields() -> set[str]:
    cat = catalog()
    return {f["name"] for v in cat.by_id.values() for f in v.raw["fields"]}


def test_otel_names_map_real_fields() -> None:
    fields = _all_fields()
    assert set(OTEL_NAMES) <= fields, set(OTEL_NAMES) - fields
    # Dotted lower-case attribute names, each used for one field only.
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+", v) for v in OTEL_NAMES.values())
    assert len(set(OTEL_NAMES.values())) == len(OTEL_NAMES)


def test_aliases_point_at_event_fields() -> None:
    """Aliases are applied to events at the edge: they name DeploymentEvent fields."""
    raw = catalog().latest("io.shipledger.v1.DeploymentEvent").raw
    fields = {f["name"] for f in raw["fields"]}
    assert set(ALIASES.values()) <= fields, set(ALIASES.values()) - fields
    assert not set(ALIASES) & fields  # an alias never shadows a canonical name


@pytest.mark.parametrize(
    ("avro_type", "expected"),
    [
        ("string", "string"),
        (["null", "string"], "nullable string"),
        ({"type": "long", "logicalType": "timestamp-millis"}, "long timestamp-millis"),
        (
            ["null", {"type": "long", "logicalType": "timestamp-millis"}],
            "nullable long timestamp-millis",
        ),
        (
            {"type": "enum", "name": "T", "symbols": ["automated", "manual"]},
            "enum(automated, manual)",
        ),
        ({"type": "map", "values": "string"}, "map<string, string>"),
        ({"type": "array", "items": "string"}, "array<string>"),
        (["null", "string", "long"], "nullable union<string | long>"),
        ("io.shipledger.v1.Severity", "Severity"),
    ],
)
def test_type_names(avro_type: Any, expected: str) -> None:
    assert type_name(avro_type) == expected


def test_required_means_no_default_and_not_nullable() -> None:
    assert is_required({"name": "actor", "type": "string"})
    assert not is_required({"name": "region", "type": ["null", "string"], "default": None})
    assert not is_required(
        {"name": "attributes", "type": {"type": "map", "values": "string"}, "default": {}}
    )


def test_rendered_dictionary_content() -> None:
    text = render(catalog())
    assert (
        "| `deployment_id` | string | yes | Id shared by every event of one deployment. | "
        "`deployment.id` |"
    ) in text
    assert "| `region` | nullable string | no | Target region, if known. | `cloud.region` |" in text
    assert "| `tenant` | string | yes |" in text and "| - |" in text  # unmapped: no invention
    for alias, canonical in ALIASES.items():
        assert f"| `{alias}` | `{canonical}` |" in text
    assert "schemas/taxonomy.py" in text


def test_docs_command_writes_and_checks(tmp_path: Path) -> None:
    out = tmp_path / "fields.md"
    runner = CliRunner()

    missing = runner.invoke(cli, ["schemas", "docs", "--check", "--out", str(out)])
    assert missing.exit_code == 1
    assert "run `shipledger schemas docs`" in missing.output
    assert not out.exists()

    wrote = runner.invoke(cli, ["schemas", "docs", "--out", str(out)], catch_exceptions=False)
    assert wrote.exit_code == 0 and "wrote" in wrote.output
    assert out.read_text(encoding="utf-8") == render(catalog())

    current = runner.invoke(cli, ["schemas", "docs", "--check", "--out", str(out)])
    assert current.exit_code == 0, current.output

    out.write_text(out.read_text(encoding="utf-8").replace("Target region", "Region"))
    stale = runner.invoke(cli, ["schemas", "docs", "--check", "--out", str(out)])
    assert stale.exit_code == 1
    assert "out of date" in stale.output and "run `shipledger schemas docs`" in stale.output
    assert "-| `region`" in stale.output  # the diff shows what changed


def test_docs_command_needs_the_target_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["schemas", "docs", "--out", str(tmp_path / "no" / "f.md")])
    assert result.exit_code == 2
    assert "run this in the repository root" in result.output


def test_per_schema_otel_names_name_real_fields() -> None:
    by_record = {v.raw["name"]: v.raw for v in catalog().by_id.values()}
    for record, names in OTEL_NAMES_BY_SCHEMA.items():
        fields = {f["name"] for f in by_record[record]["fields"]}
        assert set(names) <= fields, record
    assert otel_name("ArtifactEvent", "version") == "artifact.version"
    assert otel_name("DeploymentEvent", "version") == "service.version"
    assert otel_name("SourceEvent", "pull_request_number") == "vcs.change.id"
