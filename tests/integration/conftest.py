"""Fixtures of the integration tests: topics on the session's broker, and a running stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shipledger.schemas.topics import Topics
from shipledger.settings import Settings
from shipledger.topics import ensure_topics
from shipledger.up.stack import Stack
from tests.kit import own_settings


@pytest.fixture
def topics(settings: Settings, broker: str) -> Topics:
    """The topics of `settings`, created on the session's broker."""
    return ensure_topics(settings, broker)


@pytest.fixture
def stack_settings(tmp_path: Path) -> Settings:
    """The settings of `stack`: a private data dir and topic prefix, two partitions, sink
    batches of 100 ms. A module overrides this fixture to change them."""
    return own_settings(tmp_path, sink_batch_ms=100)


@pytest.fixture
def stack(broker: str, tmp_path: Path, stack_settings: Settings) -> Iterator[Stack]:
    """A running stack (Faust worker, sink, chDB) on the session's broker, logs in
    `tmp_path/logs`; stopped at teardown."""
    with Stack(stack_settings, bootstrap=broker, log_dir=tmp_path / "logs") as running:
        yield running
