"""The server-mode paths, on the containers stack only (tests/containers.py): a ClickHouse
server's users, roles and row policies from `shipledger audit grants`, parts moved to a cold
volume by TTL (`archive.server_tiering_sql`), the query path's tenant filters over HTTP, and
schema ids assigned by a real Confluent Schema Registry.

Where Docker does not answer, each of these is skipped with the reason (the `containers`
fixture); they did not run on the machine they were written on, which has no Docker."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import clickhouse_connect
import httpx
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from shipledger.settings import Settings
from shipledger.sinks.ledger.archive import server_tiering_sql
from shipledger.sinks.ledger.grants import grants_sql
from shipledger.sinks.ledger.query import run_read_query
from shipledger.sinks.ledger.store import LedgerStore
from tests.containers import ContainersStack
from tests.integration.test_registry_pipeline import FRAMED, wire_ids_end_to_end

pytestmark = pytest.mark.integration

_PASSWORD = "server-mode-test"  # a throwaway container's users


def _statements(script: str) -> list[str]:
    """The statements of a grants script: one a line, `;`-terminated, `--` comments."""
    return [
        line.strip().rstrip(";")
        for line in script.splitlines()
        if line.strip() and not line.lstrip().startswith("--")
    ]


def _as(
    containers: ContainersStack, settings: Settings, user: str
) -> clickhouse_connect.driver.Client:
    """A client of the containers' ClickHouse server logged in as `user`."""
    server = urlsplit(containers.clickhouse_url)
    return clickhouse_connect.get_client(
        host=server.hostname,
        port=server.port,
        username=user,
        password=_PASSWORD,
        database=settings.clickhouse_database,
    )


def _tenants(client: clickhouse_connect.driver.Client) -> set[str]:
    return {
        str(row[0])
        for row in client.query("SELECT DISTINCT tenant FROM deployment_events").result_rows
    }


def test_grants_hold_a_tenant_analyst_to_its_rows_and_the_sink_to_appending(
    containers: ContainersStack, ledger: LedgerStore, settings: Settings
) -> None:
    script = grants_sql(settings.clickhouse_database, ["acme", "globex"])
    for statement in _statements(script.replace("<password>", _PASSWORD)):
        ledger.command(statement)
    ledger.command(
        "CREATE USER IF NOT EXISTS acme_reader IDENTIFIED WITH sha256_password BY "
        f"'{_PASSWORD}' DEFAULT ROLE shipledger_analyst_acme"
    )
    ledger.command("GRANT shipledger_analyst_acme TO acme_reader")

    assert _tenants(_as(containers, settings, "acme_reader")) == {"acme"}
    assert _tenants(_as(containers, settings, "shipledger_analyst_user")) == {"acme", "globex"}
    sink = _as(containers, settings, "shipledger_sink_user")
    assert _tenants(sink) == {"acme", "globex"}
    for forbidden in (
        "ALTER TABLE deployment_events DELETE WHERE 1",
        "TRUNCATE TABLE deployment_events",
        "DROP TABLE deployment_events",
    ):
        with pytest.raises(DatabaseError, match=r"ACCESS_DENIED|Not enough privileges"):
            sink.command(forbidden)
    _, rows = ledger.query("SELECT count() FROM deployment_events")
    assert int(rows[0][0]) == 10, "a refused statement changed the ledger"


def test_old_parts_move_to_the_cold_volume_and_stay_readable(
    containers: ContainersStack, ledger: LedgerStore, settings: Settings
) -> None:
    """The fixture's ledger has rows 1 and 200 days old; a 90-day tiering moves the old ones'
    parts to the `cold` volume of policy `shipledger_tiered` (tests/containers.py's server
    configuration), where queries still read them."""
    for statement in server_tiering_sql(settings.clickhouse_database, 90):
        ledger.command(statement)
    ledger.command("ALTER TABLE deployment_events MATERIALIZE TTL")
    deadline = time.monotonic() + 120
    cold = 0
    while cold == 0 and time.monotonic() < deadline:
        _, rows = ledger.query(
            "SELECT count() FROM system.parts WHERE database = %(db)s "
            "AND table = 'deployment_events' AND active AND disk_name = 'cold_disk'",
            {"db": settings.clickhouse_database},
        )
        cold = int(rows[0][0])
        time.sleep(0.5)
    assert cold > 0, "no part of deployment_events reached the cold volume"
    _, rows = ledger.query("SELECT count() FROM deployment_events WHERE tenant = 'acme'")
    assert int(rows[0][0]) == 5


def test_a_tenant_query_over_http_reads_its_rows_only(
    containers: ContainersStack, ledger: LedgerStore
) -> None:
    assert ledger.url.startswith("http://"), "the ledger must be the containers' server"
    mine = run_read_query(
        ledger, "SELECT DISTINCT tenant FROM deployment_events", tenant="acme", max_rows=10
    )
    everyone = run_read_query(
        ledger, "SELECT DISTINCT tenant FROM deployment_events", tenant=None, max_rows=10
    )
    assert {row[0] for row in mine.rows} == {"acme"}
    assert {row[0] for row in everyone.rows} == {"acme", "globex"}


def test_schema_ids_come_from_the_real_registry(
    containers: ContainersStack, broker: str, tmp_path: Path
) -> None:
    wire = wire_ids_end_to_end(broker, tmp_path, containers.schema_registry_url)
    for (topic, id_), (_, schema) in zip(wire.items(), FRAMED, strict=True):
        latest = httpx.get(
            f"{containers.schema_registry_url}/subjects/{topic}-value/versions/latest"
        ).json()
        assert id_ == latest["id"], topic
        registered = json.loads(
            httpx.get(f"{containers.schema_registry_url}/schemas/ids/{id_}").json()["schema"]
        )
        assert f"{registered['namespace']}.{registered['name']}" == schema, topic
