"""Shared fixtures: a real Tansu broker per session, settings isolated in a temp data dir."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
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
