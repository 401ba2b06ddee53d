"""What a `shipledger` process skips at start-up: most of a short command's time
(`shipledger emit`, `query`) is loading modules, and some of what third-party packages load
for themselves is never used here.

- `without(...)`: optional packages a library imports when installed, for features shipledger
  never calls (structlog's rich tracebacks, fastavro's container-file compression codecs).
- `skip_pydantic_plugins()`: pydantic looks for plugins among the entry points of every
  installed distribution when it builds its first model (~6 ms of an emit in a full install).
- `empty_list`: the default factory of the contract models' list fields, where `list` would do.

tests/unit/test_cli_imports.py checks what `emit` and `query` load.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

#: What fastavro imports, when installed, to compress Avro container files: shipledger writes
#: and reads single framed records, never container files.
AVRO_CONTAINER_CODECS = ("backports", "cramjam", "lz4", "snappy")


class _LeftOut:
    """An import finder that answers "not installed" for the top-level packages `names`
    (and their submodules): first on `sys.meta_path`, it is asked before any other."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = frozenset(names)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        """Refuse the packages left out; leave every other module to the next finders."""
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (left out)", name=fullname)
        return None


@contextmanager
def without(*names: str) -> Iterator[None]:
    """Import inside the block as if the top-level packages `names` were not installed, so a
    library's `try: import x / except ImportError` takes its fallback. A package this process
    imported already is left alone, and one imported later loads as usual (the library then
    keeps its fallback)."""
    finder = _LeftOut([name for name in names if name not in sys.modules])
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def skip_pydantic_plugins() -> None:
    """Have pydantic find no plugins instead of reading every installed distribution's entry
    points (what `PYDANTIC_DISABLE_PLUGINS=__all__` does, without setting it for the commands a
    `shipledger run` starts). shipledger's models are its contract: no plugin observes them."""
    from pydantic.plugin import _loader

    if _loader._plugins is None:
        _loader._plugins = {}


def empty_list() -> list[Any]:
    """A new empty list: the default factory of a pydantic model's list fields, instead of
    `list`. pydantic reads a default factory's signature when it builds the model, and that of
    `list` is parsed from its text (tokenize, then `ast.parse`): 20 M instructions, 2 % of a
    `shipledger emit`, for the deployment event's three (a function's is at hand)."""
    return []
