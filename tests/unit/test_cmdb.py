"""ServiceNow CMDB exports (`sinks.ledger.cmdb_export`) and their comparison with what the
ledger saw deployed (`sinks.ledger.cmdb.compare`): pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipledger.sinks.ledger.cmdb import Deployed, compare
from shipledger.sinks.ledger.cmdb_export import (
    CmdbExportError,
    ConfigurationItem,
    parse_export,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "cmdb"


def test_csv_and_json_exports_read_the_same_items() -> None:
    csv_items = parse_export("x.csv", (FIXTURES / "cmdb_ci_service.csv").read_bytes())
    json_items = parse_export("x.json", (FIXTURES / "cmdb_ci_service.json").read_bytes())
    assert csv_items == json_items
    assert [i.name for i in csv_items] == [
        "checkout",
        "payments",
        "db",
        "legacy-fax",
    ]  # retired out
    assert csv_items[2] == ConfigurationItem(
        sys_id="3a27d5d8c0a8000b0042e8a3b3a2c9f1",
        name="db",
        owned_by="platform",
        environment="dev",
        ci_class="cmdb_ci_appl",
    )


def test_labels_as_headers_and_table_api_display_values() -> None:
    csv = (
        b'\xef\xbb\xbf"Sys ID","Name","Owned by","Environment","Class"\n'
        b'"a1","checkout","Pay","Staging","cmdb_ci_appl"\n'
    )
    [item] = parse_export("list.csv", csv)
    assert (item.sys_id, item.owned_by, item.environment, item.ci_class) == (
        "a1", "Pay", "stage", "cmdb_ci_appl",
    )  # fmt: skip
    table_api = (
        b'{"result": [{"sys_id": {"value": "b2", "display_value": "b2"}, "name": "cart",'
        b' "owned_by": {"value": "6816f79cc0a8016401c5a33be04be441", "display_value": "Web"}}]}'
    )
    [item] = parse_export("t.json", table_api)
    assert (item.sys_id, item.name, item.owned_by, item.environment) == ("b2", "cart", "Web", "")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.csv", b"", "line 1: the header row is missing"),
        ("x.csv", b"sys_id,owner\n1,a\n", "line 1: missing column name"),
        ("x.csv", b"sys_id,name\n1,checkout\n2,\n", "line 3: name: required, empty"),
        ("x.csv", b"sys_id,name\n1,checkout,extra\n", "line 2: 3 cells, the header has 2"),
        ("x.csv", b"sys_id,name\n1,a\n1,b\n", "sys_id: 1 appears twice"),
        ("x.csv", b"sys_id,name\n\xff,a\n", "not UTF-8"),
        ("x.json", b"{", "not valid JSON"),
        ("x.json", b'{"records": {}}', "records: must be an array"),
        ("x.json", b'{"records": [{"sys_id": "1"}]}', r"records\[0\]: name: required, empty"),
        ("x.json", b'{"records": [{"sys_id": "1", "name": ["a"]}]}', r"records\[0\]: name: must"),
        ("x.json", b'{"records": [7]}', r"records\[0\]: must be an object"),
    ],
)
def test_bad_exports_name_the_row_and_column(name: str, content: bytes, message: str) -> None:
    with pytest.raises(CmdbExportError, match=message):
        parse_export(name, content)


def _item(name: str, owner: str = "", environment: str = "") -> ConfigurationItem:
    return ConfigurationItem(f"id-{name}", name, owner, environment, "cmdb_ci_service")


def test_compare_finds_each_kind_once_case_insensitively() -> None:
    deployed = [
        Deployed("Checkout", "payments", ("prod", "stage")),
        Deployed("search", "search", ("prod",)),
        Deployed("db", "", ("prod",)),
    ]
    items = [
        _item("checkout", "Payments", "stage"),  # same owner (case), deployed to stage: fine
        _item("db", "platform", "dev"),  # no owner known in the ledger: no owner finding
        _item("fax"),
    ]
    found = [(f.finding, f.service, f.cmdb_value, f.ledger_value) for f in compare(items, deployed)]
    assert found == [
        ("deployed_not_in_cmdb", "search", "", "prod"),
        ("ci_never_deployed", "fax", "", ""),
        ("environment_mismatch", "db", "dev", "prod"),
    ]
