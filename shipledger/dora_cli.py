"""`shipledger metrics dora` and `metrics success`: the DORA metrics and the success criteria
(docs/metrics.md) by the path that can serve them, as `shipledger query` does: with embedded
chDB and a running `shipledger up`, its API (`GET /v1/metrics/dora`, `/v1/metrics/success`);
otherwise the ledger opened here (`LedgerReader.dora`, `LedgerReader.failures`)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from shipledger.locate import cli_settings, data_dir_option, locate
from shipledger.output_format import format_option
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks.ledger.reader import (
    DORA_DIMENSIONS as DIMENSIONS,
)
from shipledger.sinks.ledger.reader import (
    DORA_PERIODS as PERIODS,
)
from shipledger.sinks.ledger.reader import (
    SUCCESS_COLUMNS,
    DoraError,
    DoraQuery,
    LedgerReader,
    LedgerUnavailable,
    chdb_path,
    dora_columns,
    dora_window,
    serving_stack,
    success_report,
)
from shipledger.stackfile import ApiUnavailable, Params, StackInfo, api_get
from shipledger.tables import render_rows


class MetricsUnavailable(RuntimeError):
    """No path can serve the report (API down, no ledger)."""


T = TypeVar("T")


def served(
    settings: Settings, from_api: Callable[[StackInfo], T], here: Callable[[LedgerReader], T]
) -> T:
    """A report by the path that can serve it: with embedded chDB and a running `up`,
    `from_api` its API; otherwise `here`, from the ledger opened in this process."""
    try:
        running = serving_stack(settings)
        if running is not None:
            return from_api(running)
        with LedgerReader.open(settings) as ledger:
            return here(ledger)
    except (LedgerUnavailable, ApiUnavailable) as exc:
        raise MetricsUnavailable(str(exc)) from exc


def located(settings: Settings, what: str, report: Callable[[Settings], T]) -> T:
    """`report(settings)` for command `what`, on the data dir `locate` finds when the ledger
    is embedded; a report no path can serve is the command's error."""
    if chdb_path(settings.resolved_clickhouse_url) is not None:  # not a server: find the stack
        settings = locate(settings).require(what).settings
    try:
        return report(settings)
    except MetricsUnavailable as exc:
        raise click.ClickException(str(exc)) from exc


def query_params(query: DoraQuery) -> Params:
    """`query` as the API's parameters (`GET /v1/metrics/dora`, `/v1/metrics/success`)."""
    params: Params = [
        ("since", query.since.isoformat()),
        ("until", query.until.isoformat()),
        ("period", query.period),
        *(("by", b) for b in query.by),
        *(("team", v) for v in query.teams),
        *(("application", v) for v in query.applications),
        *(("service", v) for v in query.services),
        *(("environment", v) for v in query.environments),
    ]
    if query.tenant is not None:
        params.append(("tenant", query.tenant))
    return params


def dora_rows(settings: Settings, query: DoraQuery) -> list[dict[str, Any]]:
    """The report's rows (`DoraRow.as_dict`) by the path that can serve them."""
    params = query_params(query)

    def from_api(info: StackInfo) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = api_get(info, "/v1/metrics/dora", params)["rows"]
        return rows

    return served(settings, from_api, lambda ledger: [r.as_dict() for r in ledger.dora(query)])


def served_report(
    settings: Settings, path: str, params: Params, here: Callable[[LedgerReader], dict[str, Any]]
) -> dict[str, Any]:
    """A JSON report by the path that can serve it (`served`): the API's answer to `GET
    <path>` with `params`, or `here` on the ledger opened in this process."""

    def from_api(info: StackInfo) -> dict[str, Any]:
        report: dict[str, Any] = api_get(info, path, params)
        return report

    return served(settings, from_api, here)


def render(
    rows: list[dict[str, Any]],
    names: list[str],
    fmt: str,
    text: tuple[str, ...] = ("period", "tenant", *DIMENSIONS),
) -> str:
    """The report as `fmt`: table (aligned, empty cells for nothing measured; columns not in
    `text` right-aligned), json, csv."""
    return render_rows(rows, names, fmt, text=text)


#: The filters a report may offer: its option, the DoraQuery field and the command's
#: parameter, and the option's help.
_FILTERS = {
    "--team": ("teams", "Only these teams (repeatable)."),
    "--application": ("applications", "Only these applications."),
    "--service": ("services", "Only these services (repeatable)."),
    "--environment": ("environments", "Only these environments."),
}


def query_options(
    filters: Sequence[str], periods: Sequence[str], by: tuple[str, ...], breakdown: bool = False
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """`--tenant`, each of `filters` (`_FILTERS`), `--by` if `breakdown` (default `by`, else
    always `by`), `--period` among `periods`, `--since` and `--until`: the command is given
    them as one `query` (a DoraQuery; a usage error names the option at fault), with its own
    options."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(command)
        def with_query(
            *,
            tenant: str | None,
            period: str,
            since: datetime | None,
            until: datetime | None,
            **own: Any,
        ) -> None:
            asked = {_FILTERS[flag][0]: own.pop(_FILTERS[flag][0]) for flag in filters}
            breakdown_by = own.pop("by", ()) or by
            query = _query(since, until, period=period, tenant=tenant, by=breakdown_by, **asked)
            command(query=query, **own)

        options = [
            click.option(
                "--tenant", help="Only this tenant (default: every tenant this ledger holds)."
            ),
            *(
                click.option(flag, _FILTERS[flag][0], multiple=True, help=_FILTERS[flag][1])
                for flag in filters
            ),
            *(
                [
                    click.option(
                        "--by",
                        multiple=True,
                        type=click.Choice(DIMENSIONS),
                        help=f"Break each period down by these (repeatable; default: "
                        f"{', '.join(by)}).",
                    )
                ]
                if breakdown
                else []
            ),
            click.option(
                "--period", type=click.Choice(list(periods)), default="week", show_default=True
            ),
            click.option(
                "--since",
                type=click.DateTime(["%Y-%m-%d"]),
                help="First UTC day (default: 90 days before --until).",
            ),
            click.option(
                "--until",
                type=click.DateTime(["%Y-%m-%d"]),
                help="Last UTC day, included (default: today).",
            ),
        ]
        decorated: Callable[..., None] = with_query
        for option in reversed(options):
            decorated = option(decorated)
        return decorated

    return decorate


@click.group("metrics")
def metrics() -> None:
    """Metrics computed from the ledger."""


@metrics.command("dora", context_settings={"max_content_width": 100})
@query_options(list(_FILTERS), list(PERIODS), by=("environment",), breakdown=True)
@format_option(
    ["table", "json", "csv"], "table: aligned; json: an array of rows; csv: header + rows."
)
@data_dir_option
def dora(query: DoraQuery, fmt: str, data_dir: Path | None) -> None:
    """Deployment frequency, lead time for changes, change failure rate and failed-deployment
    recovery time, per period (docs/metrics.md says how each is counted).

    \b
    Columns: deployments (change deployments, not events nor remediations), deploys_per_day,
    lead_time_h (median, commit first seen -> running there; lead_times measured),
    failures, change_failure_rate, recovery_h (median; recovered measured), remediations.

    \b
    Examples:
      shipledger metrics dora --team payments --environment prod --period month
      shipledger metrics dora --since 2026-10-01 --until 2026-12-31 --by team --format csv
    """
    settings = cli_settings(data_dir=data_dir)
    rows = located(settings, "`shipledger metrics dora`", lambda found: dora_rows(found, query))
    click.echo(render(rows, dora_columns(query.by), fmt))


def success_json(settings: Settings, query: DoraQuery) -> dict[str, Any]:
    """The success criteria report (`SuccessReport.as_dict`) by the path that can serve it;
    the targets are those of the policy where it is computed (the running `up`'s, or
    SHIPLEDGER_POLICY_FILE here)."""

    def here(ledger: LedgerReader) -> dict[str, Any]:
        criteria = load_policy(settings.policy_file).success_criteria
        failures = ledger.failures(query, tuple(criteria.detection_rules))
        return success_report(failures, criteria).as_dict()

    return served_report(settings, "/v1/metrics/success", query_params(query), here)


@metrics.command("success", context_settings={"max_content_width": 100})
@query_options(["--team", "--environment"], ["week", "month"], by=("team",))
@format_option(
    ["table", "json", "csv"],
    "table: the trend, each team's window and the teams missing a target; json: all three; "
    "csv: the trend rows, then the window's (period total).",
)
@data_dir_option
def success(query: DoraQuery, fmt: str, data_dir: Path | None) -> None:
    """Success criteria per period and team: mean time to detect a failed deployment and mean
    rollback duration, against the targets of the policy (`success_criteria:`); the teams
    missing one are listed (docs/metrics.md says how each is measured).

    \b
    Columns: failures (DORA's), detected, detect_min (mean, deployment start -> first
    failed report or detection alert), rollbacks, rollback_min (mean, first rollback start ->
    service restored), rollback_change (vs the previous period), failed_rollbacks, targets
    (minutes), on_target.

    \b
    Examples:
      shipledger metrics success --team payments --period month
      shipledger metrics success --environment prod --format json
    """
    settings = cli_settings(data_dir=data_dir)
    report = located(
        settings, "`shipledger metrics success`", lambda found: success_json(found, query)
    )
    text = ("period", "tenant", "team", "on_target")
    if fmt == "json":
        click.echo(json.dumps(report, indent=2))
    elif fmt == "csv":
        click.echo(render(report["rows"] + report["totals"], SUCCESS_COLUMNS, fmt, text))
    else:
        click.echo(render(report["rows"], SUCCESS_COLUMNS, fmt, text))
        click.echo("\nOver the window:")
        click.echo(render(report["totals"], SUCCESS_COLUMNS, fmt, text))
        missing = [f"{m['team']} ({', '.join(m['missed'])})" for m in report["missing"]]
        click.echo(f"\nMissing their target: {', '.join(missing) or 'none'}")


def _query(since: datetime | None, until: datetime | None, **asked: Any) -> DoraQuery:
    """The report's query over `since`..`until` (`dora_window`'s defaults); a usage error
    naming the option at fault."""
    start, end = dora_window(_day(since), _day(until), datetime.now(UTC).date())
    try:
        return DoraQuery(since=start, until=end, **asked)
    except DoraError as exc:
        raise click.UsageError(str(exc)) from exc


def _day(at: datetime | None) -> date | None:
    return at.date() if at is not None else None
