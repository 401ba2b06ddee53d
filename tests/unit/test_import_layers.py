"""The import-layer check of `make lint` (tools/lint_imports.py, docs/layout.md): it passes on
the tree as it is, and fails, naming the edge, on a copy with one import pointing the wrong way."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_check(root: Path) -> subprocess.CompletedProcess[str]:
    """`make lint`'s command, on the repository laid out at `root`."""
    return subprocess.run(
        [sys.executable, str(root / "tools" / "lint_imports.py")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        # Wide enough that no edge is wrapped across two lines of the report.
        env={**os.environ, "COLUMNS": "250"},
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the repository's code, contracts and the check (the folders pyproject maps)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    folders = {*pyproject["tool"]["setuptools"]["package-dir"].values(), "tools"}
    shutil.copy2(ROOT / "pyproject.toml", tmp_path)
    for folder in folders:
        shutil.copytree(
            ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    return tmp_path


def test_the_tree_keeps_every_contract() -> None:
    result = run_check(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "wrong_import", "edge", "contract"),
    [
        (
            "sinks/rows.py",
            "import shipledger.processors.rules",
            "shipledger.sinks.rows -> shipledger.processors.rules",
            "The sinks import neither the producers, the processors nor the receivers BROKEN",
        ),
        (
            "producers/api/events.py",
            "from shipledger.sinks.ledger import archive",
            "shipledger.producers.api.events -> shipledger.sinks.ledger.archive",
            "reads the ledger through its door BROKEN",
        ),
        (
            "producers/webhooks/github.py",
            "import shipledger.processors.correlate",
            "shipledger.producers.webhooks.github -> shipledger.processors.correlate",
            "The producers, the processors and the receivers do not import each other BROKEN",
        ),
        (
            "shipledger/settings.py",
            "from shipledger.schemas.models import TimeWindow",
            "shipledger.settings -> shipledger.schemas.models",
            "> schemas > ground BROKEN",
        ),
        (
            "schemas/families.py",
            "import shipledger.up.stack",
            "shipledger.schemas.families -> shipledger.up.stack",
            "> schemas > ground BROKEN",
        ),
    ],
)
def test_a_wrong_way_import_fails_naming_the_edge(
    tree: Path, module: str, wrong_import: str, edge: str, contract: str
) -> None:
    path = tree / module
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([*lines, wrong_import, ""]), encoding="utf-8")

    result = run_check(tree)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{edge} (l.{len(lines) + 1})" in result.stdout
    assert contract in result.stdout


def test_a_module_on_no_floor_fails(tree: Path) -> None:
    (tree / "shipledger" / "newcomer.py").write_text('"""Not on any floor yet."""\n')

    result = run_check(tree)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "not listed as layers:\n\n- shipledger.newcomer" in result.stdout


def test_a_package_missing_from_pyproject_fails(tree: Path) -> None:
    (tree / "sinks" / "stray").mkdir()
    (tree / "sinks" / "stray" / "__init__.py").write_text("")

    result = run_check(tree)

    assert result.returncode == 1
    assert "sinks/stray" in result.stderr
