"""Check which way imports point (the contracts in pyproject.toml, docs/layout.md).

import-linter's graph (grimp) finds a package by its folder and walks it. pyproject's
`package-dir` installs `schemas/`, `producers/`, `processors/` and `sinks/` as
`shipledger.schemas` etc., so from the repository's `shipledger/` folder the check would see
the core alone. This script lays the installed layout out in a throwaway directory (each
package listed in pyproject gets its folder's .py files, copied) and runs import-linter
there, with the repository's pyproject.toml. It reads only the files in the repository, so
it checks what is on disk now, whether or not `make install` has run since.

    .venv/bin/python tools/lint_imports.py    # what `make lint` runs; exit 1 on a broken contract
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent


def package_folders(pyproject: dict[str, Any]) -> dict[str, Path]:
    """Each package setuptools installs -> its folder relative to the repository, as
    `packages` and `package-dir` in [tool.setuptools] say (the longest mapped prefix wins)."""
    setuptools = pyproject["tool"]["setuptools"]
    mapping: dict[str, str] = setuptools.get("package-dir", {})
    folders: dict[str, Path] = {}
    for package in setuptools["packages"]:
        parts = package.split(".")
        for cut in range(len(parts), 0, -1):
            prefix = ".".join(parts[:cut])
            if prefix in mapping:
                folders[package] = Path(mapping[prefix], *parts[cut:])
                break
        else:
            folders[package] = Path(*parts)
    return folders


def unlisted(root: Path, folders: dict[str, Path]) -> list[Path]:
    """Folders with an __init__.py under a mapped folder that no listed package names: setuptools
    would not install them, and the check would not see them."""
    listed = set(folders.values())
    return sorted(
        init.parent.relative_to(root)
        for top in {Path(folder.parts[0]) for folder in listed}
        for init in (root / top).rglob("__init__.py")
        if init.parent.relative_to(root) not in listed
    )


def lay_out(root: Path, target: Path) -> None:
    """Copy the .py files of every installed package under `root` to its import path in
    `target` (`sinks/ledger/store.py` -> `target/shipledger/sinks/ledger/store.py`)."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    folders = package_folders(pyproject)
    missing = unlisted(root, folders)
    if missing:
        names = ", ".join(str(folder) for folder in missing)
        sys.exit(f"not in pyproject's [tool.setuptools] packages (so never installed): {names}")
    for package, folder in folders.items():
        destination = target.joinpath(*package.split("."))
        destination.mkdir(parents=True, exist_ok=True)
        for source in (root / folder).glob("*.py"):
            shutil.copy2(source, destination / source.name)


def main(root: Path = ROOT) -> int:
    """Lay out the packages of `root` and run import-linter on them; its exit status."""
    with tempfile.TemporaryDirectory(prefix="shipledger-layout-") as tree:
        lay_out(root, Path(tree))
        # import-linter puts the working directory first on sys.path: the laid-out tree, not
        # the repository (whose shipledger/ folder would shadow the mapped packages).
        with contextlib.chdir(tree):
            return lint_imports(
                config_filenames=(str(root / "pyproject.toml"),), no_cache=True, no_logo=True
            )


if __name__ == "__main__":
    sys.exit(main())
