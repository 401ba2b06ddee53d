"""Shared fixtures: a real Tansu broker per session, settings isolated in a temp data dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shipledger.broker import EmbeddedBroker
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
        topic_prefix=f"t{tmp_path.name[-12:]}.",
        topic_partitions=2,
        emit_timeout_s=2.0,
    )
