"""`shipledger schemas register` against a Schema Registry over real loopback HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.schemas.register import CONTENT_TYPE, plan
from shipledger.schemas.registry import catalog


class StandInRegistry(Protocol):
    """The `schema_registry` fixture (tests/conftest.py `StandInSchemaRegistry`: a stand-in
    for a Confluent-compatible Schema Registry, none can run here)."""

    url: str
    first_id: int
    subjects: dict[str, list[int]]
    incompatible: set[str]
    fail_with: int | None
    content_types: set[str]


@pytest.fixture
def registry(schema_registry: StandInRegistry) -> StandInRegistry:
    """A fresh registry numbering from 1, as Confluent's does."""
    schema_registry.first_id = 1
    return schema_registry


Run = Callable[..., Any]


@pytest.fixture
def run(use_env: Callable[[dict[str, str]], None]) -> Run:
    use_env({"SHIPLEDGER_TOPIC_PREFIX": "acme."})

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(cli, ["schemas", "register", *args])

    return invoke


def test_every_subject_gets_every_version_in_order(registry: StandInRegistry, run: Run) -> None:
    result = run("--registry", registry.url)
    assert result.exit_code == 0, result.output
    items = plan(catalog(), "acme.")
    assert set(registry.subjects) == {i.subject for i in items}
    assert "acme.deployments.raw-value" in registry.subjects
    assert "acme.dlq-value" not in registry.subjects  # no schema, no subject
    # Oldest first: v1's text got the lower registry id.
    raw = registry.subjects["acme.deployments.raw-value"]
    assert len(raw) == 3 and raw[0] < raw[1] < raw[2]
    assert registry.content_types == {CONTENT_TYPE}
    # A fresh registry numbers in registration order, so some ids differ from the catalog's.
    assert (
        "registered acme.deployments.raw-value: io.shipledger.v1.DeploymentEvent v1 -> "
        "registry id 1 (same as catalog)"
    ) in result.output
    assert "registry id 2 (differs from catalog id 4)" in result.output
    assert "differ from the catalog's" in result.output


def test_registering_again_returns_the_same_ids(registry: StandInRegistry, run: Run) -> None:
    first = run("--registry", registry.url)
    second = run("--registry", registry.url)
    assert first.exit_code == second.exit_code == 0
    assert first.output == second.output


def test_dry_run_sends_nothing(registry: StandInRegistry, run: Run) -> None:
    result = run("--registry", registry.url, "--dry-run")
    assert result.exit_code == 0
    assert registry.subjects == {}
    assert "would register acme.changes-value: io.shipledger.v1.ChangeEvent v1" in result.output


def test_incompatible_schema_is_a_clear_error(registry: StandInRegistry, run: Run) -> None:
    registry.incompatible.add("acme.alerts-value")
    result = run("--registry", registry.url)
    assert result.exit_code == 1
    assert "acme.alerts-value (io.shipledger.v1.Alert v1)" in result.output
    assert "incompatible" in result.output and "HTTP 409" in result.output
    # What came before the failure was registered and reported.
    assert "registered acme.deployments.records-value" in result.output


def test_http_failures_and_unreachable_registry(registry: StandInRegistry, run: Run) -> None:
    registry.fail_with = 500
    result = run("--registry", registry.url)
    assert result.exit_code == 1
    assert "HTTP 500 from the registry: Error in the store" in result.output
    gone = run("--registry", "http://127.0.0.1:9")
    assert gone.exit_code == 1
    assert "cannot reach the registry" in gone.output
