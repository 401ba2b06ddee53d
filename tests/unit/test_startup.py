"""`shipledger.startup.without`: a library imported inside takes its "not installed" fallback for
the packages left out; nothing else changes, before or after."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipledger.startup import without


@pytest.fixture
def packages(tmp_path: Path) -> Iterator[None]:
    """`optional_dep` (installed) and `library`, which imports it when it can."""
    (tmp_path / "optional_dep").mkdir()
    (tmp_path / "optional_dep" / "__init__.py").write_text("")
    (tmp_path / "optional_dep" / "codec.py").write_text("NAME = 'codec'\n")
    (tmp_path / "library.py").write_text(
        "try:\n    import optional_dep.codec as codec\nexcept ImportError:\n    codec = None\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        for name in ("library", "optional_dep", "optional_dep.codec"):
            sys.modules.pop(name, None)


def test_a_library_imported_inside_takes_its_fallback(packages: None) -> None:
    with without("optional_dep"):
        library = importlib.import_module("library")
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module("optional_dep")
    assert library.codec is None
    assert "optional_dep" not in sys.modules
    assert importlib.import_module("optional_dep.codec").NAME == "codec"  # as usual after


def test_a_package_already_imported_is_left_alone(packages: None) -> None:
    importlib.import_module("optional_dep")
    with without("optional_dep"):
        library = importlib.import_module("library")
    assert library.codec is not None
    assert library.codec.NAME == "codec"
