"""`--format`: how a command that prints a report shows it, the same option everywhere."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def format_option(choices: Sequence[str], help_text: str) -> Callable[[F], F]:
    """`--format` (passed as `fmt`), one of `choices`; the first, for reading, is the default."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=choices[0],
        show_default=True,
        help=help_text,
    )
