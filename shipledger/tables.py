"""Aligned text tables for a terminal (query results, dead letters, the demo's summary), drawn
by rich: one renderer, so every command's tables look alike.

Cells are plain text: rich's markup and emoji codes are off, so a value such as `[red]x[/]`
from the ledger prints as written. Lines carry no trailing spaces and no colour codes, so
the output is the same in a terminal, a pipe or a test.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from rich.box import Box
from rich.console import Console
from rich.table import Table

#: No frame: the header underlined with dashes, columns two spaces apart.
_HEADER_RULE = Box("    \n    \n -  \n    \n    \n    \n    \n    \n", ascii=True)


def render_table(
    header: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    right: Sequence[bool] = (),
    max_width: int | None = None,
    indent: int = 0,
) -> str:
    """`rows` under `header`, aligned; columns flagged in `right` right-aligned (numbers);
    a cell longer than `max_width` ends in `…` (one line per row: newlines are shown as
    `\\n`)."""
    table = Table(box=_HEADER_RULE, show_edge=False, pad_edge=False, header_style=None)
    for index, name in enumerate(header):
        table.add_column(
            _one_line(name),
            justify="right" if index < len(right) and right[index] else "left",
            no_wrap=True,
            overflow="ellipsis",
            max_width=max_width,
        )
    for row in rows:
        table.add_row(*(_one_line(cell) for cell in row))
    out = io.StringIO()
    console = Console(
        file=out, width=100_000, color_system=None, markup=False, emoji=False, highlight=False
    )
    console.print(table)
    pad = " " * indent
    return "\n".join(pad + line.rstrip() for line in out.getvalue().splitlines())


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", " ")


def render_rows(
    rows: list[dict[str, Any]], names: list[str], fmt: str, text: Collection[str] = ()
) -> str:
    """`rows` as `fmt` (a `--format` choice): table (aligned, empty cells for None; columns
    but the `text` ones right-aligned, as numbers are), json, csv (with a header line)."""
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str)
    cells = [["" if r.get(n) is None else str(r.get(n)) for n in names] for r in rows]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        writer.writerows(cells)
        return out.getvalue().rstrip("\n")
    return render_table(names, cells, right=[n not in text for n in names])
