"""`shipledger worker` loads the policy once and refuses one whose version is not the one
`up` (SHIPLEDGER_POLICY_VERSION) stamps the ledger with."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.schemas.policy import load_policy


def test_a_worker_refuses_a_policy_other_than_up_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPLEDGER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SHIPLEDGER_POLICY_VERSION", "1+00000000")
    result = CliRunner().invoke(cli, ["worker", "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert f"is version {load_policy(None).full_version}" in result.output
    assert "SHIPLEDGER_POLICY_VERSION wants 1+00000000" in result.output
