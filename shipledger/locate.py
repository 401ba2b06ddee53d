"""Which data dir, and which running stack, a command works with: one rule for every command.

1. `--data-dir` or `SHIPLEDGER_DATA_DIR`, when given: that directory, nothing else.
2. `./.shipledger`, when a `shipledger up` runs on it.
3. The one `shipledger up` running for this user, wherever it was started (its pointer in
   the registry of stacks, `shipledger.stackfile`); several running is an error that lists
   them.
4. `./.shipledger`, when it exists (a stack that is stopped: offline queries, audits).
5. The data dir of the last `shipledger up` this user started, now stopped (the same
   offline commands, from any directory).

Nothing found: commands that need a data dir stop with an error saying where they looked
(`Location.require`); none creates an empty one in the current directory by accident.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from shipledger.settings import Settings
from shipledger.stackfile import StackInfo, read_stack, registered_stacks

F = TypeVar("F", bound=Callable[..., Any])

_HOW_TO = (
    "start one with `shipledger up` (in another terminal), or name the data dir with "
    "--data-dir DIR or SHIPLEDGER_DATA_DIR=DIR"
)


class NoDataDir(click.ClickException):
    """No data dir was given or found; the message says where the command looked."""


@dataclass(frozen=True)
class Location:
    """The outcome of the search: settings whose `data_dir` is the one to use."""

    settings: Settings
    #: The `up` running on that data dir, if any.
    stack: StackInfo | None
    #: How it was chosen, for messages; None when nothing was found (the default is kept).
    found_by: str | None
    #: Where the search looked, for the error when nothing was found.
    looked: tuple[str, ...]

    @property
    def data_dir(self) -> Path:
        """The data dir to use (the default ./.shipledger when none was found)."""
        return self.settings.data_dir

    def require(self, what: str) -> Location:
        """This location, or NoDataDir naming `what` needs it and where the search looked."""
        if self.found_by is None:
            raise NoDataDir(
                f"{what} needs a shipledger data dir: none was found. {self.searched()}"
            )
        return self

    def no_stack(self) -> str:
        """Why no running stack is known, for messages: where nothing runs, or where it looked."""
        if self.found_by is None:
            return "no `shipledger up` was found (looked at: " + "; ".join(self.looked) + ")"
        return f"no `shipledger up` runs on {self.data_dir.resolve()} (found: {self.found_by})"

    def searched(self) -> str:
        """Where the search looked and what to do, in one sentence."""
        return "Looked at: " + "; ".join(self.looked) + ". To fix: " + _HOW_TO + "."


def locate(settings: Settings) -> Location:
    """Apply the rule of the module doc to `settings` (built from the environment and options)."""
    if "data_dir" in settings.model_fields_set:  # given: used as is, even before it exists
        return Location(settings, read_stack(settings), "--data-dir / SHIPLEDGER_DATA_DIR", ())
    here = settings.data_dir.resolve()
    stack = read_stack(settings)
    if stack is not None:
        return Location(settings, stack, "./.shipledger, in the current directory", ())
    registry = settings.resolved_stacks_dir
    known = registered_stacks(settings)
    running = [r for r in known if r.running is not None]
    if len(running) > 1:
        listed = ", ".join(f"{r.data_dir} (pid {r.running.pid})" for r in running if r.running)
        raise click.ClickException(
            f"several `shipledger up` are running: {listed}; choose one with --data-dir DIR "
            "or SHIPLEDGER_DATA_DIR=DIR"
        )
    if running:
        found = running[0]
        moved = settings.model_copy(update={"data_dir": found.data_dir})
        return Location(moved, found.running, f"the registry of running stacks ({registry})", ())
    if here.exists():
        return Location(settings, None, f"{here} (no stack running)", ())
    if known:
        last = known[0]
        moved = settings.model_copy(update={"data_dir": last.data_dir})
        return Location(moved, None, "the last `shipledger up` of this user, stopped", ())
    looked = (
        "--data-dir / SHIPLEDGER_DATA_DIR: not given",
        f"stacks registered in {registry}: none",
        f"{here}: does not exist",
    )
    return Location(settings, None, None, looked)


def data_dir_option(command: F) -> F:
    """`--data-dir` (also SHIPLEDGER_DATA_DIR), with the search rule in its help."""
    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        envvar="SHIPLEDGER_DATA_DIR",
        help="Data dir of the stack. Default: ./.shipledger if `up` runs there, else the "
        "running `shipledger up`, else ./.shipledger if it exists, else the last stack "
        "started (stopped since).",
    )(command)


def cli_settings(**given: Any) -> Settings:
    """Settings from the environment, with the options that were given (not None) on top."""
    return Settings(**{name: value for name, value in given.items() if value is not None})
