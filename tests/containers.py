"""The integration suite's second stack: Apache Kafka (KRaft), a ClickHouse server and a
Confluent Schema Registry in containers (testcontainers), for machines where Docker answers.

The suite's test bodies do not know which stack they run on: the `broker` fixture hands them
a bootstrap address (Tansu here, Kafka in a container there), and every test's settings
(`tests.kit.own_settings`, `tests.kit.up_env`) name the ClickHouse server and a database of
the test's own when one is in use (`use_clickhouse_server`), chDB in the test's data dir
otherwise. So the only code that does not run on a machine without Docker is this module.

The stack is chosen by `SHIPLEDGER_TEST_STACK`: `embedded` (Tansu + chDB), `containers`
(this module; the containers' runs are skipped, naming Docker, where it does not answer) or
unset: containers when Docker answers, embedded otherwise. The server-mode tests
(tests/integration/test_server_mode.py) run only on the containers stack.
"""

from __future__ import annotations

import os
import textwrap
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from shipledger.sinks.ledger.archive import COLD_VOLUME, STORAGE_POLICY

StackMode = Literal["embedded", "containers"]

#: Images of the containers stack, the versions deploy/compose/compose.yaml runs (Kafka: the
#: Confluent build of Apache Kafka 3.9 that testcontainers' KafkaContainer drives in KRaft mode).
KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.1"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:25.3"
REGISTRY_IMAGE = "confluentinc/cp-schema-registry:7.9.1"
#: The ClickHouse server's administrator (the containers' own, never a real credential).
CLICKHOUSE_USER = "shipledger"
CLICKHOUSE_PASSWORD = "shipledger-test"
_KAFKA_ALIAS = "kafka"
#: Why the tests of chDB's cold files (`shipledger archive`) do not run on a server.
CHDB_COLD_FILES = (
    "cold files are chDB's Parquet under the data dir; a server tiers its ledger with "
    "TTL ... TO VOLUME (tests/integration/test_server_mode.py)"
)


def docker_problem() -> str | None:
    """Why Docker cannot run containers here (None: it answers a ping)."""
    try:
        import docker
    except ImportError:
        return "the docker package is not installed (pip install 'shipledger[dev]')"
    try:
        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as exc:  # docker raises several unrelated types for "no daemon"
        return f"Docker does not answer ({type(exc).__name__}: {exc})"
    client.close()
    return None


def stack_mode() -> tuple[StackMode, str | None]:
    """The stack the suite runs on, and why the containers' runs are skipped (None when
    they run): see the module docstring."""
    chosen = os.environ.get("SHIPLEDGER_TEST_STACK", "").strip().lower()
    if chosen not in ("", "embedded", "containers"):
        raise ValueError(
            f"SHIPLEDGER_TEST_STACK={chosen!r}: expected 'embedded', 'containers' or unset"
        )
    if chosen == "embedded":
        return "embedded", (
            "SHIPLEDGER_TEST_STACK=embedded (Tansu + chDB) was chosen; unset it, or set it to "
            "'containers', on a machine with Docker to run these (docs/testing.md)"
        )
    problem = docker_problem()
    if problem is not None:
        return "embedded", (
            f"needs Docker for the containers stack: {problem}; runs where `docker info` "
            "answers, or with SHIPLEDGER_TEST_STACK=containers there (docs/testing.md)"
        )
    return "containers", None


@dataclass(frozen=True)
class ContainersStack:
    """Where the containers stack answers, from this host."""

    bootstrap: str
    clickhouse_url: str
    schema_registry_url: str


def tiered_storage_xml() -> str:
    """The ClickHouse server's storage configuration that `archive.server_tiering_sql`
    expects: policy `shipledger_tiered`, a hot default disk and a `cold` volume."""
    return textwrap.dedent(
        f"""\
        <clickhouse>
          <storage_configuration>
            <disks>
              <cold_disk><path>/var/lib/clickhouse/cold/</path></cold_disk>
            </disks>
            <policies>
              <{STORAGE_POLICY}>
                <volumes>
                  <hot><disk>default</disk></hot>
                  <{COLD_VOLUME}><disk>cold_disk</disk></{COLD_VOLUME}>
                </volumes>
              </{STORAGE_POLICY}>
            </policies>
          </storage_configuration>
        </clickhouse>
        """
    )


def _wait_for_registry(url: str, timeout_s: float = 120.0) -> None:
    """Until the registry answers `GET /subjects` (it starts after Kafka elects)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/subjects", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the schema registry at {url} did not answer in {timeout_s} s")
        time.sleep(0.5)


@contextmanager
def containers_stack(workdir: Path) -> Iterator[ContainersStack]:
    """Start Kafka (KRaft), ClickHouse (with the tiered storage policy) and the schema
    registry on one Docker network; stop and remove them on exit."""
    from testcontainers.community.clickhouse import ClickHouseContainer
    from testcontainers.community.kafka import KafkaContainer
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network

    storage = workdir / "tiered_storage.xml"
    storage.write_text(tiered_storage_xml())
    with ExitStack() as stack:
        network = stack.enter_context(Network())
        kafka = stack.enter_context(
            KafkaContainer(KAFKA_IMAGE)
            .with_kraft()
            .with_network(network)
            .with_network_aliases(_KAFKA_ALIAS)
        )
        clickhouse = stack.enter_context(
            ClickHouseContainer(
                CLICKHOUSE_IMAGE, username=CLICKHOUSE_USER, password=CLICKHOUSE_PASSWORD
            )
            # Row policies and users (`audit grants`) need SQL-driven access management.
            .with_env("CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT", "1")
            .with_volume_mapping(str(storage), "/etc/clickhouse-server/config.d/tiered_storage.xml")
        )
        registry = stack.enter_context(
            DockerContainer(REGISTRY_IMAGE)
            .with_network(network)
            .with_env("SCHEMA_REGISTRY_HOST_NAME", "schema-registry")
            .with_env("SCHEMA_REGISTRY_LISTENERS", "http://0.0.0.0:8081")
            # Kafka's in-network listener (testcontainers' BROKER listener, port 9092).
            .with_env("SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS", f"{_KAFKA_ALIAS}:9092")
            .with_exposed_ports(8081)
        )
        registry_url = (
            f"http://{registry.get_container_host_ip()}:{registry.get_exposed_port(8081)}"
        )
        _wait_for_registry(registry_url)
        host = clickhouse.get_container_host_ip()
        yield ContainersStack(
            bootstrap=kafka.get_bootstrap_server(),
            clickhouse_url=(
                f"http://{CLICKHOUSE_USER}:{CLICKHOUSE_PASSWORD}@{host}:"
                f"{clickhouse.get_exposed_port(8123)}"
            ),
            schema_registry_url=registry_url,
        )
