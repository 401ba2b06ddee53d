"""Data sovereignty without ClickHouse (docs/sovereignty.md): the settings of regional
ledgers, a tenant's regions in policy, where the sink puts each tenant's rows (the sink of
tests/unit/test_sink_pipeline.py, one in-memory store per ledger), who is refused, and what
the live stream sends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message
from pydantic import ValidationError

from shipledger.metrics import RecordingMetrics
from shipledger.producers.api.stream_hub import StreamHub
from shipledger.schemas.letters import DeadLetter
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.policy import Policy, PolicyError, parse_policy
from shipledger.schemas.registry import AvroCodec
from shipledger.schemas.residency import Residency
from shipledger.schemas.topics import Topics
from shipledger.settings import Settings
from shipledger.sinks.regions import Placement, Unplaced
from tests.kit import FakeProducer, deployment_record
from tests.unit.test_sink_pipeline import (
    FakeConsumer,
    Harness,
    MemoryStore,
    run_until_drained,
)

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
POLICY_TEXT = """\
version: "1"
tenants:
  acme: {regions: [eu]}
  globex: {regions: [us]}
  both: {regions: [eu, us]}
  umbrella: {regions: [apac]}
"""


@pytest.fixture
def policy() -> Policy:
    return parse_policy(POLICY_TEXT, "policy.yaml")


def _regional(tmp_path: Path, **more: Any) -> Settings:
    return Settings(
        data_dir=tmp_path,
        topic_prefix="p.",
        sink_batch_ms=50,
        regional_ledgers={"eu": {}, "us": {"url": "http://ch-us:8123", "database": "led_us"}},
        **more,
    )


# --- settings ------------------------------------------------------------------------------
def test_no_region_is_the_one_ledger_of_today(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.ledger_database == "shipledger"
    assert settings.resolved_clickhouse_url == f"chdb://{(tmp_path / 'clickhouse').resolve()}"
    assert settings.ledger_cold_dir == tmp_path / "cold"


def test_a_region_names_its_ledger(tmp_path: Path) -> None:
    settings = _regional(tmp_path)
    eu, us = settings.for_region("eu"), settings.for_region("us")
    # Unset url: the default ClickHouse (here the embedded one), a database of its own.
    assert eu.resolved_clickhouse_url == settings.resolved_clickhouse_url
    assert eu.ledger_database == "shipledger_eu"
    assert eu.ledger_cold_dir == tmp_path / "regions" / "eu" / "cold"
    assert (us.resolved_clickhouse_url, us.ledger_database) == ("http://ch-us:8123", "led_us")
    assert settings.ledger_database == "shipledger"  # no region: the default ledger
    dashed = Settings(data_dir=tmp_path, region="eu-west", regional_ledgers={"eu-west": {}})
    assert dashed.ledger_database == "shipledger_eu_west"


def test_a_region_without_a_ledger_is_refused_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="SHIPLEDGER_REGION='apac' has no ledger"):
        _regional(tmp_path, region="apac")
    with pytest.raises(ValidationError, match=r"regional_ledgers\n.*'EU!' is not a region name"):
        Settings(regional_ledgers={"EU!": {}})


def test_regional_ledgers_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPLEDGER_REGION", "eu")
    monkeypatch.setenv("SHIPLEDGER_REGIONAL_LEDGERS", '{"eu": {"database": "ledger_eu"}}')
    settings = Settings()
    assert settings.ledger_database == "ledger_eu"
    # ... and go to a child process the same way (`up`'s workers).
    assert Settings.model_validate(settings.model_dump()) == settings
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert Settings() == settings


# --- policy --------------------------------------------------------------------------------
def test_a_tenant_names_its_regions_in_policy(policy: Policy) -> None:
    residency = Residency(policy)
    assert residency.regions_of("acme") == ("eu",)
    assert residency.regions_of("both") == ("eu", "us")
    assert residency.regions_of("anyone") == (None,)


def test_a_bad_region_in_policy_names_the_field() -> None:
    with pytest.raises(PolicyError, match=r"line 3: tenants\.acme\.regions: 'Europe' is not a"):
        parse_policy('version: "1"\ntenants:\n  acme: {regions: [Europe]}\n', "p.yaml")
    with pytest.raises(PolicyError, match="a region is named twice"):
        parse_policy('version: "1"\ndefaults: {regions: [eu, eu]}\n', "p.yaml")


def test_placement_never_falls_back_to_the_default_ledger(policy: Policy) -> None:
    placement = Placement(policy, ["eu", "us"])
    assert placement.ledgers_of("acme") == ("eu",)
    assert placement.ledgers_of("both") == ("eu", "us")
    assert placement.ledgers_of("anyone") == (None,)
    unplaced = placement.ledgers_of("umbrella")
    assert isinstance(unplaced, Unplaced)
    assert "tenant 'umbrella': region 'apac'" in unplaced.reason
    assert "configures: eu, us" in unplaced.reason


def test_a_reader_of_another_region_is_refused(policy: Policy) -> None:
    residency = Residency(policy)
    assert residency.refusal("acme", "eu") is None
    assert residency.refusal("both", "us") is None
    assert residency.refusal("anyone", None) is None
    refusal = residency.refusal("acme", "us")
    assert refusal == (
        "tenant 'acme': its rows live in eu, this API serves us: ask the API of its region"
    )
    assert "the default ledger, this API serves eu" in str(residency.refusal("anyone", "eu"))


# --- the sink ------------------------------------------------------------------------------
def _raw(topics: Topics, offset: int, tenant: str) -> Message:
    event = DeploymentEvent(
        event_id=f"evt-{tenant}-{offset}",
        deployment_id=f"dep-{offset}",
        tenant=tenant,
        event_type="started",
        service="checkout",
        environment="prod",
        commit_sha="0123456789abcdef0123456789abcdef01234567",
        actor="alice",
        occurred_at=T0 + timedelta(seconds=offset),
    )
    value = AvroCodec("io.shipledger.v1.DeploymentEvent").encode(event.to_avro())
    return Message(topic=topics.raw, partition=0, offset=offset, key=b"k", value=value)


def test_the_sink_stores_each_tenant_in_its_regions_ledgers(tmp_path: Path, policy: Policy) -> None:
    settings = _regional(tmp_path)
    topics = Topics.from_settings(settings)
    tenants = ["acme", "globex", "both", "anyone", "umbrella"]
    log: list[str] = []
    stores = {name: MemoryStore(log) for name in ("default", "eu", "us")}
    sink = Harness(
        settings,
        "unused:9092",
        stores["default"],
        RecordingMetrics(),
        policy=policy,
        regional={"eu": stores["eu"], "us": stores["us"]},
    )
    sink.consumer = FakeConsumer(log, [[_raw(topics, i, t) for i, t in enumerate(tenants)]])
    sink.producer = FakeProducer()
    run_until_drained(sink)

    def tenants_in(name: str) -> list[str]:
        return sorted(row["tenant"] for row in stores[name].tables.get("deployment_events", []))

    assert tenants_in("eu") == ["acme", "both"]
    assert tenants_in("us") == ["both", "globex"]
    assert tenants_in("default") == ["anyone"]
    # Each ledger its own chains: the first row of each tenant in each ledger starts one.
    assert {row["chain_seq"] for row in stores["eu"].tables["deployment_events"]} == {1}
    # A region without a ledger: dead-lettered, naming the tenant and the region.
    (dead,) = sink.producer.sent
    letter = DeadLetter.read(dead["headers"])
    assert letter.field == "tenant"
    assert "tenant 'umbrella': region 'apac' of its policy has no ledger" in letter.reason
    assert sink.stats().dead_lettered == 1
    assert sink.consumer.commits[-1] == [(topics.raw, 0, 5)]


def test_the_live_stream_sends_only_its_regions_tenants(tmp_path: Path, policy: Policy) -> None:
    """Kafka is shared by every region: the API's stream must filter what it reads."""
    settings = _regional(tmp_path, region="eu")
    topics = Topics.from_settings(settings)
    hub = StreamHub(settings, "127.0.0.1:1", Residency(policy))
    hub._watched = True  # as after a client's subscription: the hub decodes only then
    codec = AvroCodec("io.shipledger.v1.DeploymentRecord")
    hub._publish(
        [
            Message(
                topic=topics.records,
                partition=0,
                offset=offset,
                key=b"k",
                value=codec.encode(deployment_record(record_id=tenant, tenant=tenant).to_avro()),
            )
            for offset, tenant in enumerate(["acme", "globex", "both", "anyone"])
        ]
    )
    assert [event.tenant for event in hub._recent] == ["acme", "both"]
