"""Shared fixtures: a real Tansu broker per session, settings isolated in a temp data dir."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from shipledger.broker import EmbeddedBroker
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.registry import AvroCodec
from shipledger.settings import Settings


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real Tansu broker started for this test session."""
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b.bootstrap


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a private data dir, a unique topic prefix and no real broker."""
    return Settings(
        data_dir=tmp_path / "data",
        # Unique per test: tmp_path names are truncated, so two tests can share a tail.
        topic_prefix=f"t{uuid.uuid4().hex[:12]}.",
        topic_partitions=2,
        emit_timeout_s=2.0,
    )


_CI_VARS = ("GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL")
CliEnv = Callable[[Settings, str], dict[str, str]]


def _cli_env(settings: Settings, bootstrap: str) -> dict[str, str]:
    """This process's environment minus CI and SHIPLEDGER_* variables, plus test settings."""
    env = {
        k: v for k, v in os.environ.items() if k not in _CI_VARS and not k.startswith("SHIPLEDGER_")
    }
    env.update(
        {
            "SHIPLEDGER_DATA_DIR": str(settings.data_dir),
            "SHIPLEDGER_TOPIC_PREFIX": settings.topic_prefix,
            "SHIPLEDGER_EMIT_TIMEOUT_S": str(settings.emit_timeout_s),
            "SHIPLEDGER_BOOTSTRAP_SERVERS": bootstrap,
            # Tests run side by side: never the fixed default port.
            "SHIPLEDGER_API_PORT": "0",
        }
    )
    return env


@pytest.fixture
def cli_env() -> CliEnv:
    """Builds the environment a CI job running `shipledger` against `bootstrap` would have."""
    return _cli_env


@pytest.fixture
def use_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], None]:
    """Makes `env` this process's whole environment for the test (undone afterwards)."""

    def install(env: dict[str, str]) -> None:
        for key in list(os.environ):
            if key not in env:
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)

    return install


def consume(
    broker: str, topic: str, expected: int, settle_s: float = 0.5, timeout_s: float = 15.0
) -> list[tuple[bytes, DeploymentEvent, int]]:
    """(key, event, partition) of every message in `topic`, from the beginning.

    Waits for `expected` messages, then `settle_s` more to catch any unexpected extra ones.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 10,
        }
    )
    codec = AvroCodec("io.shipledger.v1.DeploymentEvent")
    out: list[tuple[bytes, DeploymentEvent, int]] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < (settle_until or deadline):
            msg = consumer.poll(0.05)
            if msg is None:
                if len(out) >= expected and settle_until is None:
                    settle_until = time.monotonic() + settle_s
                continue
            assert msg.error() is None, msg.error()
            key, value, partition = msg.key(), msg.value(), msg.partition()
            assert isinstance(key, bytes) and isinstance(value, bytes) and partition is not None
            out.append((key, DeploymentEvent.model_validate(codec.decode(value)), partition))
    finally:
        consumer.close()
    return out


#: The `consume` fixture: (broker, topic, expected, settle_s=, timeout_s=) -> messages.
Consume = Callable[..., list[tuple[bytes, DeploymentEvent, int]]]


@pytest.fixture(name="consume")
def consume_fixture() -> Consume:
    """Reads every deployment event of a topic from the beginning (see `consume`)."""
    return consume
