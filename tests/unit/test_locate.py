"""One rule finds the data dir and the running stack for every command (`shipledger.locate`):
given, else `up` running in ./.shipledger, else the one running stack of the user's registry,
else ./.shipledger if it exists; otherwise an error saying where it looked, and nothing is
created in the current directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.locate import NoDataDir, locate
from shipledger.producers.api.auth import AuthStore
from shipledger.producers.emitter.spool import spools_to_flush
from shipledger.settings import Settings
from shipledger.stackfile import StackInfo, remove_stack, running_stacks, write_stack


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty current directory and a private registry; no SHIPLEDGER_DATA_DIR."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("SHIPLEDGER_DATA_DIR", raising=False)
    monkeypatch.delenv("SHIPLEDGER_AUTH_DB", raising=False)
    monkeypatch.delenv("SHIPLEDGER_CLICKHOUSE_URL", raising=False)
    monkeypatch.setenv("SHIPLEDGER_STACKS_DIR", str(tmp_path / "stacks"))
    yield cwd


def _run_stack(data_dir: Path, pid: int | None = None) -> StackInfo:
    """Record a stack running on `data_dir` (this test process, alive, unless `pid`)."""
    settings = Settings(data_dir=data_dir)
    info = StackInfo(
        bootstrap="127.0.0.1:1",
        pid=pid or os.getpid(),
        clickhouse_url=settings.resolved_clickhouse_url,
        api_url="http://127.0.0.1:1",
        data_dir=str(data_dir),
        auth_db=str(settings.resolved_auth_db),
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    write_stack(settings, info)
    return info


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_given_data_dir_is_used_as_is(elsewhere: Path, tmp_path: Path) -> None:
    _run_stack(tmp_path / "running")
    found = locate(Settings(data_dir=tmp_path / "new"))
    assert found.data_dir == tmp_path / "new" and found.stack is None and found.found_by


def test_the_running_stack_is_found_from_any_directory(elsewhere: Path, tmp_path: Path) -> None:
    info = _run_stack(tmp_path / "stack")
    found = locate(Settings())
    assert found.data_dir == (tmp_path / "stack").resolve()
    assert found.stack == info
    assert "registry" in (found.found_by or "")


def test_up_in_the_current_directory_comes_first(elsewhere: Path, tmp_path: Path) -> None:
    _run_stack(tmp_path / "other")
    here = _run_stack(elsewhere / ".shipledger")
    found = locate(Settings())
    assert found.stack == here and found.data_dir == Path(".shipledger")


def test_a_stopped_stack_here_is_used_when_none_runs(elsewhere: Path) -> None:
    (elsewhere / ".shipledger").mkdir()
    found = locate(Settings())
    assert found.stack is None and found.found_by and found.data_dir == Path(".shipledger")


def test_several_running_stacks_are_an_error_naming_them(elsewhere: Path, tmp_path: Path) -> None:
    _run_stack(tmp_path / "one")
    _run_stack(tmp_path / "two")
    with pytest.raises(click.ClickException, match=r"several .*--data-dir") as caught:
        locate(Settings())
    assert str(tmp_path / "one") in caught.value.message
    assert str(tmp_path / "two") in caught.value.message


def test_stopped_stacks_are_not_running_and_deleted_ones_are_forgotten(
    elsewhere: Path, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "killed")
    _run_stack(tmp_path / "killed", pid=_dead_pid())  # killed without stopping
    _run_stack(tmp_path / "stopped")
    remove_stack(Settings(data_dir=tmp_path / "stopped"))
    _run_stack(tmp_path / "deleted")
    shutil.rmtree(tmp_path / "deleted")
    assert running_stacks(settings) == []
    assert len(list(settings.resolved_stacks_dir.glob("*.json"))) == 2


def test_after_up_stopped_commands_use_its_data_dir(elsewhere: Path, tmp_path: Path) -> None:
    _run_stack(tmp_path / "old")
    remove_stack(Settings(data_dir=tmp_path / "old"))
    for entry in Settings().resolved_stacks_dir.glob("*.json"):  # started a minute ago
        os.utime(entry, (time.time() - 60, time.time() - 60))
    _run_stack(tmp_path / "last")
    remove_stack(Settings(data_dir=tmp_path / "last"))
    found = locate(Settings())
    assert found.data_dir == (tmp_path / "last").resolve() and found.stack is None
    assert "stopped" in (found.found_by or "")
    assert "no `shipledger up` runs on" in found.no_stack()


def test_nothing_found_says_where_it_looked(elsewhere: Path) -> None:
    with pytest.raises(NoDataDir) as caught:
        locate(Settings()).require("`shipledger query`")
    message = caught.value.message
    assert "`shipledger query` needs a shipledger data dir" in message
    for where in ("SHIPLEDGER_DATA_DIR", "registered in", str(elsewhere / ".shipledger")):
        assert where in message
    assert "shipledger up" in message and "--data-dir" in message


@pytest.mark.parametrize(
    "args",
    [
        ["query", "SELECT 1"],
        ["tokens", "create", "--tenant", "acme", "--scope", "read"],
        ["tokens", "list"],
        ["journal"],
        ["audit", "verify"],
        ["migrate", "--status"],
    ],
)
def test_commands_stop_without_creating_anything_here(elsewhere: Path, args: list[str]) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0
    assert "none was found" in result.output and "Looked at" in result.output
    assert list(elsewhere.iterdir()) == []


def test_tokens_go_to_the_store_the_running_api_reads(elsewhere: Path, tmp_path: Path) -> None:
    info = _run_stack(tmp_path / "stack")
    result = CliRunner().invoke(cli, ["tokens", "create", "--tenant", "acme", "--scope", "read"])
    assert result.exit_code == 0, result.output
    assert f"read by the API of `shipledger up` at {info.api_url}" in result.output
    assert info.auth_db is not None
    auth = AuthStore(Path(info.auth_db))
    try:
        assert [t.tenant for t in auth.list_tokens()] == ["acme"]
    finally:
        auth.close()
    assert list(elsewhere.iterdir()) == []


def test_a_token_store_apart_from_the_running_api_is_named(
    elsewhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = _run_stack(tmp_path / "stack")
    monkeypatch.setenv("SHIPLEDGER_AUTH_DB", str(tmp_path / "other.sqlite3"))
    result = CliRunner().invoke(cli, ["tokens", "create", "--tenant", "acme", "--scope", "read"])
    assert result.exit_code == 0, result.output
    assert f"NOT the store of the running API at {info.api_url}" in result.output


def test_emit_without_a_broker_says_where_it_looked(elsewhere: Path) -> None:
    meta = ["--service", "s", "--environment", "dev", "--commit-sha", "a" * 40, "--actor", "me"]
    result = CliRunner().invoke(cli, ["emit", "started", *meta])
    assert result.exit_code == 0  # tracking never fails the step: the event is spooled
    assert "SHIPLEDGER_BOOTSTRAP_SERVERS is unset" in result.output
    assert "registered in" in result.output and "shipledger flush" in result.output


def test_flush_also_sends_what_was_spooled_here_before_up_ran(
    elsewhere: Path, tmp_path: Path
) -> None:
    meta = ["--service", "s", "--environment", "dev", "--commit-sha", "a" * 40, "--actor", "me"]
    assert CliRunner().invoke(cli, ["emit", "started", *meta]).exit_code == 0  # spooled here
    _run_stack(tmp_path / "stack")  # then `up` starts elsewhere
    located = locate(Settings()).settings
    spools = spools_to_flush(located, Settings())
    assert [s.directory.resolve() for s in spools] == [
        (tmp_path / "stack" / "spool").resolve(),
        (elsewhere / ".shipledger" / "spool").resolve(),
    ]
    assert spools[1].pending() == 1
