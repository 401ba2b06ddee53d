"""Shared click parameter types, and the commands that take them."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.cli_types import FiniteFloatRange


@pytest.mark.parametrize("value", ["nan", "NaN", "inf"])
def test_nan_and_infinity_are_refused_by_name(value: str) -> None:
    with pytest.raises(click.BadParameter, match="is not a finite number"):
        FiniteFloatRange(min=0, min_open=True).convert(value, None, None)
    assert FiniteFloatRange(min=0, max=10).convert("2.5", None, None) == 2.5


@pytest.mark.parametrize(
    "args",
    [
        ["suspects", "--service", "checkout", "--lookback", "nan"],
        ["reconcile", "--source", "k8s-audit", "--quarter", "2026Q4", "--tolerance", "nan"],
    ],
)
def test_nan_hours_or_minutes_are_a_usage_error_not_a_traceback(args: list[str]) -> None:
    """click's FloatRange passes NaN (every comparison with it is false): `timedelta(hours=
    nan)` was a ValueError traceback once the command ran."""
    result = CliRunner().invoke(cli, [*args, "-"])
    assert result.exit_code == 2, result.output
    assert "is not a finite number" in result.output


@pytest.mark.parametrize(
    "args", [["tokens", "list"], ["doctor"], ["audit", "verify"], ["up", "--data-dir", "-"]]
)
def test_a_setting_out_of_bounds_is_named_not_a_traceback(args: list[str]) -> None:
    """Every command reads the settings: SHIPLEDGER_API_PORT=99999 was pydantic's
    ValidationError traceback from each (only the emitter named the variable)."""
    result = CliRunner().invoke(cli, args, env={"SHIPLEDGER_API_PORT": "99999"})
    assert result.exit_code == 2, result.output
    assert "SHIPLEDGER_API_PORT: Input should be less than or equal to 65535" in result.output


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["up", "--workers", "0"], "--workers"),
        (["up", "--api-port", "99999"], "--api-port"),
        (["api", "--port", "-1"], "--port"),
    ],
)
def test_up_and_api_name_a_count_or_port_out_of_range(args: list[str], option: str) -> None:
    """`up --workers 0` started a stack without processors (events stored, never judged);
    a port over 65535 was a ValidationError traceback."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output


@pytest.mark.parametrize("args", [["alerts", "list"], ["escalate", "deliveries"], ["dlq", "list"]])
def test_a_row_limit_past_a_million_is_a_usage_error_naming_the_option(args: list[str]) -> None:
    """`--limit 99999999999999999999` reached ClickHouse's LIMIT (past UInt64) and came back
    as the engine's parse error (exit 1) instead of a usage error naming the option."""
    result = CliRunner().invoke(cli, [*args, "--limit", "99999999999999999999"])
    assert result.exit_code == 2, result.output
    assert "--limit" in result.output
    assert "1<=x<=1000000" in result.output
