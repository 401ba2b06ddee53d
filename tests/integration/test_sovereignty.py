"""Data sovereignty end to end (docs/sovereignty.md): two regional ledgers in one embedded
stack, two databases of one chDB engine (a process holds one engine path at a time). Events of
an eu tenant land in the eu ledger only; the API of the us region (the stack's own) does not
see them and refuses to answer for that tenant, an API of the eu region does; `audit verify`
passes in every ledger; a tenant whose region has no ledger is dead-lettered. And
`shipledger migrate` migrates every ledger."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from shipledger.producers.api.server import ApiServer
from shipledger.schemas.letters import DeadLetter
from shipledger.schemas.residency import Residency
from shipledger.sinks.ledger.audit import verify
from shipledger.sinks.ledger.migrate_cli import migrate as migrate_cmd
from shipledger.sinks.ledger.query import QueryLimits
from shipledger.sinks.ledger.reader import LedgerReader
from shipledger.up.stack import Stack
from tests.kit import api_event, api_token, policy_stack, post_events, wait_drained, wait_until

pytestmark = pytest.mark.integration

POLICY = """\
version: "1"
tenants:
  acme: {regions: [eu]}
  globex: {regions: [us]}
  umbrella: {regions: [apac]}
"""
COUNTS = "SELECT tenant, count() FROM deployment_events GROUP BY tenant ORDER BY tenant"
TENANTS = "SELECT DISTINCT tenant FROM deployment_events ORDER BY tenant"


def _query(url: str, token: str, sql: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/query",
        json={"sql": sql, **body},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )


def _letters(stack: Stack) -> list[DeadLetter]:
    """Every dead letter in the stack's DLQ topic, from the beginning."""
    topic = stack.topics.dlq
    consumer = Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": f"test-{uuid.uuid4()}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        letters = []
        while (msg := consumer.poll(1.0)) is not None:
            letters.append(DeadLetter.read(msg.headers()))
        return letters
    finally:
        consumer.close()


def test_two_regional_ledgers_in_one_embedded_stack(broker: str, tmp_path: Path) -> None:
    regional: dict[str, dict[str, str]] = {"eu": {}, "us": {}}
    with policy_stack(broker, tmp_path, POLICY, region="us", regional_ledgers=regional) as stack:
        settings, api = stack.settings, stack.api
        assert api is not None
        tokens = {
            tenant: api_token(settings, tenant, ("ingest", "read"))
            for tenant in ("acme", "globex", "umbrella")
        }
        for tenant, token in tokens.items():  # ingest by the us API: Kafka is shared
            post_events(stack, token, tenant, api_event(), api_event())
        eu, us, default = stack.ledgers["eu"], stack.ledgers["us"], stack.ledgers[None]
        assert (eu.database, us.database) == ("shipledger_eu", "shipledger_us")
        records = "SELECT DISTINCT tenant FROM deployment_records"
        wait_until(
            stack,
            lambda: (
                eu.query(COUNTS)[1] == [("acme", 2)]
                and us.query(COUNTS)[1] == [("globex", 2)]
                and eu.query(records)[1] == [("acme",)]
                and us.query(records)[1] == [("globex",)]
            ),
            "each tenant's events and records in its region's ledger",
        )
        wait_until(
            stack,
            lambda: any("'umbrella'" in letter.reason for letter in _letters(stack)),
            "umbrella's events dead-lettered (apac has no ledger)",
        )
        letter = next(x for x in _letters(stack) if "'umbrella'" in x.reason)
        assert "region 'apac' of its policy has no ledger" in letter.reason
        assert letter.field == "tenant"
        # Nothing of umbrella's in the default ledger, once the sink has been through all of
        # it (the letter awaited is of one message; its other events and records follow).
        wait_drained(stack)
        for table in ("deployment_events", "deployment_records"):
            assert default.query(f"SELECT count() FROM {table}")[1] == [(0,)]

        # The us API (the stack's): its region's rows; a tenant of eu is refused, not empty.
        operator = api.operator_token()
        assert _query(api.url, operator, TENANTS).json()["rows"] == [["globex"]]
        assert _query(api.url, tokens["globex"], TENANTS).json()["rows"] == [["globex"]]
        for refused in (
            _query(api.url, tokens["acme"], TENANTS),
            _query(api.url, operator, TENANTS, tenant="acme"),
            httpx.get(
                f"{api.url}/v1/metrics/dora",
                params={"tenant": "acme"},
                headers={"Authorization": f"Bearer {operator}"},
                timeout=60,
            ),
        ):
            assert refused.status_code == 403, refused.text
            assert refused.json() == {
                "error": "tenant 'acme': its rows live in eu, this API serves us: ask the API "
                "of its region",
                "regions": ["eu"],
            }

        # An API of the eu region on the same engine: acme's rows, and globex refused.
        eu_settings = settings.for_region("eu")
        with ApiServer(
            eu_settings, stack.bootstrap, LedgerReader(eu), residency=Residency(stack.policy)
        ) as eu_api:
            assert _query(eu_api.url, tokens["acme"], COUNTS).json()["rows"] == [["acme", 2]]
            assert _query(eu_api.url, tokens["globex"], TENANTS).status_code == 403

        # A reader opened for a region (`shipledger query` on a server, reports, metrics).
        limits = QueryLimits.of(settings)
        for region, tenants in (("eu", [("acme",)]), ("us", [("globex",)]), (None, [])):
            with LedgerReader.open(settings.for_region(region)) as reader:
                got = reader.query(TENANTS, tenant=None, max_rows=10, limits=limits)
                assert got.rows == tenants, region

        # Each ledger its own hash chains and chain heads.
        for store in (eu, us, default):
            report = verify(store)
            assert report.clean, report.text()


def test_migrate_applies_to_every_regional_ledger(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    env = {"SHIPLEDGER_REGIONAL_LEDGERS": '{"eu": {}, "us-east": {"database": "ledger_us"}}'}
    runner = CliRunner()
    applied = runner.invoke(migrate_cmd, data, env=env)
    assert applied.exit_code == 0, applied.output
    lines = applied.output.splitlines()
    assert [line for line in lines if line.startswith("ledger ")] == [
        "ledger (default): database shipledger",
        "ledger eu: database shipledger_eu",
        "ledger us-east: database ledger_us",
    ]
    assert sum("applied: 0023_baseline.sql" in line for line in lines) == 3
    status = runner.invoke(migrate_cmd, ["--status", *data], env=env)
    assert status.exit_code == 0 and "pending" not in status.output, status.output
    assert status.output.count("0023_baseline.sql") == 3
    # Without regional ledgers: the one ledger, said as before.
    alone = runner.invoke(migrate_cmd, data, env={"SHIPLEDGER_REGIONAL_LEDGERS": "{}"})
    assert alone.output == "schema is up to date (nothing to apply)\n"
