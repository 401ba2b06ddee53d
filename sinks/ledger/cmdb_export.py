"""ServiceNow CMDB exports (docs/triage.md): the configuration items of `cmdb_ci_service` /
`cmdb_ci_appl` as a list or URL export writes them. Pure.

CSV (`<table>_list.do?CSV`): a header row of field names (`sys_id`, `name`, `owned_by`,
`environment`, `operational_status`, `sys_class_name`) or of their labels (`Sys ID`, `Name`,
`Owned by`, ...), one CI per row. JSON: the JSONv2 processor's `{"records": [...]}`, the
Table API's `{"result": [...]}` (a field may be `{"display_value", "value"}`: the display
value is read), or a bare array. `sys_id` and `name` are required; a CI whose
operational status is retired (`6`, `Retired`) is left out. A bad file is a CmdbExportError
naming the row and column.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from shipledger.schemas.taxonomy import normalize_environment

REQUIRED = ("sys_id", "name")
OPTIONAL = ("owned_by", "environment", "operational_status", "sys_class_name")
_RETIRED = frozenset({"6", "retired"})
#: Files larger than this are refused (a CMDB export of services is far smaller).
MAX_BYTES = 64 * 1024 * 1024


class CmdbExportError(ValueError):
    """An export that cannot be read; the message names the row and column."""


@dataclass(frozen=True)
class ConfigurationItem:
    """One CI: its sys_id, name, owner (display value), canonical environment, class."""

    sys_id: str
    name: str
    owned_by: str
    environment: str
    ci_class: str


#: Column labels of a list export whose field names differ from the label's words.
_LABELS = {"class": "sys_class_name", "sys_class": "sys_class_name"}


def _column(header: str) -> str:
    """A header (field name or label: `Owned by`) as its field name (`owned_by`)."""
    name = header.strip().lower().replace(" ", "_")
    return _LABELS.get(name, name)


def _text(value: Any, where: str) -> str:
    if isinstance(value, dict):
        value = value.get("display_value", value.get("value"))
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise CmdbExportError(f"{where}: must be a string, got {type(value).__name__}")
    return str(value).strip()


def _item(fields: dict[str, Any], where: str) -> ConfigurationItem | None:
    values = {c: _text(fields.get(c), f"{where}: {c}") for c in (*REQUIRED, *OPTIONAL)}
    for column in REQUIRED:
        if not values[column]:
            raise CmdbExportError(f"{where}: {column}: required, empty")
    if values["operational_status"].lower() in _RETIRED:
        return None
    environment = ""
    if values["environment"]:
        environment = normalize_environment(values["environment"]).name
    return ConfigurationItem(
        sys_id=values["sys_id"],
        name=values["name"],
        owned_by=values["owned_by"],
        environment=environment,
        ci_class=values["sys_class_name"] or "cmdb_ci_service",
    )


def parse_csv(text: str) -> list[ConfigurationItem]:
    """The CIs of a CSV export."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise CmdbExportError("line 1: the header row is missing (empty file)") from None
    except csv.Error as exc:
        raise CmdbExportError(f"line 1: {exc}") from None
    columns = [_column(h) for h in header]
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise CmdbExportError(f"line 1: missing column {', '.join(missing)} (header: {header})")
    items: list[ConfigurationItem] = []
    try:
        for row in reader:
            where = f"line {reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(columns):
                raise CmdbExportError(f"{where}: {len(row)} cells, the header has {len(columns)}")
            item = _item(dict(zip(columns, row, strict=True)), where)
            if item is not None:
                items.append(item)
    except csv.Error as exc:
        raise CmdbExportError(f"line {reader.line_num}: {exc}") from None
    return items


def parse_json(text: str) -> list[ConfigurationItem]:
    """The CIs of a JSON export (JSONv2, Table API, or an array)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CmdbExportError(f"not valid JSON: {exc}") from None
    key = "records"
    if isinstance(data, dict):
        key = "records" if "records" in data else "result"
        data = data.get(key)
    if not isinstance(data, list):
        raise CmdbExportError(f"{key}: must be an array of configuration items")
    items: list[ConfigurationItem] = []
    for index, record in enumerate(data):
        where = f"{key}[{index}]"
        if not isinstance(record, dict):
            raise CmdbExportError(f"{where}: must be an object")
        item = _item({_column(k): v for k, v in record.items()}, where)
        if item is not None:
            items.append(item)
    return items


def parse_export(name: str, content: bytes) -> list[ConfigurationItem]:
    """The CIs of export file `name` (`.json` is JSON, anything else CSV), UTF-8."""
    if len(content) > MAX_BYTES:
        raise CmdbExportError(f"{name}: larger than {MAX_BYTES} bytes")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CmdbExportError(f"{name}: not UTF-8 (byte {exc.start})") from None
    items = parse_json(text) if name.lower().endswith(".json") else parse_csv(text)
    seen: dict[str, str] = {}
    for item in items:
        if item.sys_id in seen:
            raise CmdbExportError(f"sys_id: {item.sys_id} appears twice ({seen[item.sys_id]})")
        seen[item.sys_id] = item.name
    return items
