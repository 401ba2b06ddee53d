"""Secrets on disk are owner-only: the token store and the stack file (finding 3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shipledger.producers.api.auth import AuthStore
from shipledger.settings import Settings
from shipledger.stackfile import StackInfo, write_stack


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_token_store_is_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "new" / "auth.sqlite3"
    store = AuthStore(path)
    try:
        store.set_webhook_secret("acme", "github", "s3cret-value-of-16+")  # writes the WAL
        assert mode(path) == 0o600
        assert mode(path.parent) == 0o700
        for suffix in ("-wal", "-shm"):
            sidecar = path.with_name(path.name + suffix)
            assert sidecar.exists() and mode(sidecar) == 0o600
    finally:
        store.close()


def test_an_existing_readable_token_store_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "auth.sqlite3"
    AuthStore(path).close()
    os.chmod(path, 0o644)
    AuthStore(path).close()
    assert mode(path) == 0o600


def test_the_stack_file_and_its_new_data_dir_are_owner_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    write_stack(
        settings, StackInfo(bootstrap="b:1", pid=os.getpid(), clickhouse_url="", api_token="t")
    )
    assert mode(settings.data_dir / "stack.json") == 0o600
    assert mode(settings.data_dir) == 0o700


def test_an_in_memory_store_makes_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    AuthStore(Path(":memory:")).close()
    assert not list(tmp_path.iterdir())
