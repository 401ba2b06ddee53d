"""Click parameter types several commands share."""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloatRange(click.FloatRange):
    """click's FloatRange without NaN (it passes every bound check) or infinity: `nan` hours
    or minutes became a ValueError traceback where a timedelta was made of them."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The number, checked against the range; NaN and infinity refused, named."""
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


#: A `--limit` of rows to show: at least one, and at most a million, which a terminal or a
#: file takes; past 2**64 the number reached ClickHouse's LIMIT and came back as its parse
#: error instead of a usage error naming the option.
ROW_LIMIT = click.IntRange(1, 1_000_000)
