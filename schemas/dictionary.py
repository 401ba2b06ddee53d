"""The field dictionary (docs/fields.md), rendered from the schema catalog.

Per schema, its newest version's fields: type, whether required, meaning (the Avro `doc`) and
the OpenTelemetry semantic-convention name (`fields.otel_name`); then the alias table
(`fields.ALIASES`). `shipledger schemas docs` writes it; `--check` fails when it is stale.
"""

from __future__ import annotations

from typing import Any

from shipledger.schemas.compat import schema_names
from shipledger.schemas.fields import ALIASES, otel_name
from shipledger.schemas.registry import Catalog

DOCS_PATH = "docs/fields.md"

_HEADER = """\
# Field dictionary

<!-- Generated from schemas/ by `shipledger schemas docs`: do not edit by hand.
     CI runs `shipledger schemas docs --check` to verify it is current. -->

Every field of every message shipledger writes, from the newest version of each Avro schema in
`schemas/catalog.yaml`.

- **Type**: the Avro type. `nullable X` is the union `["null", X]`; `timestamp-millis` is a
  `long` of milliseconds since the Unix epoch, UTC.
- **Required**: the schema gives the field no default and does not allow null, so every message
  carries a value. The edge models may fill some in when a producer leaves them out (for
  example a new `event_id`, or `occurred_at` = now).
- **OpenTelemetry**: the attribute of the
  [OpenTelemetry semantic conventions](https://opentelemetry.io/docs/specs/semconv/registry/attributes/)
  with the same meaning, for joining deployments with traces, metrics and logs. Fields without
  one have no equivalent there; none is invented.
"""

_ENVIRONMENTS = """\
## Environment names

`environment` in `DeploymentEvent` is the name as reported. The processors map it to a
canonical name (`prod`, `stage`, `qa`, `dev`) and split off a region suffix
(`prod-eu-west-1` -> `prod` + `eu-west-1`); `DeploymentRecord` and `Alert` carry the canonical
name, and `environment_raw` keeps the original. A name outside the taxonomy is kept
(lower-cased) and flagged, not guessed. The taxonomy lives with the processors
(`schemas/taxonomy.py`), not in the schemas.
"""


def type_name(avro_type: Any) -> str:
    """A readable Avro type: `nullable string`, `long timestamp-millis`, `enum(a, b)`, ..."""
    if isinstance(avro_type, list):
        others = [t for t in avro_type if t != "null"]
        inner = type_name(others[0]) if len(others) == 1 else " | ".join(map(type_name, others))
        if len(others) > 1:
            inner = f"union<{inner}>"
        return f"nullable {inner}" if "null" in avro_type else inner
    if isinstance(avro_type, str):
        return avro_type.rsplit(".", 1)[-1]
    kind = avro_type["type"]
    logical = avro_type.get("logicalType")
    if logical == "decimal":
        return f"{kind} decimal({avro_type.get('precision')}, {avro_type.get('scale', 0)})"
    if logical:
        return f"{kind} {logical}"
    if kind == "enum":
        return f"enum({', '.join(avro_type['symbols'])})"
    if kind == "map":
        return f"map<string, {type_name(avro_type['values'])}>"
    if kind == "array":
        return f"array<{type_name(avro_type['items'])}>"
    if kind in ("record", "error"):
        return f"record {avro_type['name'].rsplit('.', 1)[-1]}"
    if kind == "fixed":
        return f"fixed({avro_type['size']})"
    return type_name(kind)


def is_required(avro_field: dict[str, Any]) -> bool:
    """No default and not nullable: every message must carry a value."""
    avro_type = avro_field["type"]
    nullable = avro_type == "null" or (isinstance(avro_type, list) and "null" in avro_type)
    return "default" not in avro_field and not nullable


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _schema_section(cat: Catalog, name: str) -> list[str]:
    latest = cat.latest(name)
    raw = latest.raw
    versions = ", ".join(f"v{v.version} (id {v.id})" for v in cat.versions(name))
    topics = [t.name for t in cat.topics.values() if t.value_schema == name]
    lines = [f"## {raw['name']}", ""]
    if raw.get("doc"):
        lines += [_cell(raw["doc"]), ""]
    lines += [
        f"- Schema: `{name}`, versions {versions}; fields of v{latest.version}.",
        f"- Topics: {', '.join(f'`{t}`' for t in topics) if topics else 'none'}.",
        "",
        "| Field | Type | Required | Meaning | OpenTelemetry |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in raw["fields"]:
        otel = otel_name(raw["name"], f["name"])
        lines.append(
            f"| `{f['name']}` | {_cell(type_name(f['type']))} | "
            f"{'yes' if is_required(f) else 'no'} | {_cell(f.get('doc', ''))} | "
            f"{f'`{otel}`' if otel else '-'} |"
        )
    lines.append("")
    return lines


def _alias_section() -> list[str]:
    lines = [
        "## Aliases",
        "",
        "A deployment event may use these names instead of the canonical `DeploymentEvent`",
        "fields. They are renamed at the edge, before validation, and never stored; a field given",
        "both ways is rejected. A name that is neither canonical nor an alias is rejected as",
        "unknown rather than guessed.",
        "",
        "| Alias | Canonical field |",
        "| --- | --- |",
    ]
    for alias, canonical in sorted(ALIASES.items(), key=lambda kv: (kv[1], kv[0])):
        lines.append(f"| `{alias}` | `{canonical}` |")
    lines.append("")
    return lines


def render(cat: Catalog) -> str:
    """The whole of docs/fields.md for `cat`."""
    lines = [_HEADER]
    for name in schema_names(cat):
        lines += _schema_section(cat, name)
    lines += _alias_section()
    lines.append(_ENVIRONMENTS)
    return "\n".join(lines).rstrip("\n") + "\n"
