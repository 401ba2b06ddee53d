"""`shipledger artifacts protected`: a client of the API's `GET /v1/artifacts/protected` (the
list needs the policy's rollback reach, which the API of `shipledger up` holds). Exit codes
as `shipledger gate`'s: 0 listed, 2 usage or refused, 3 no answer now."""

from __future__ import annotations

from dataclasses import fields

import click

from shipledger.locate import locate
from shipledger.output_format import format_option
from shipledger.producers.api.governance_cli import api_url, call_api, stop_unless_ok
from shipledger.schemas.governance import ArtifactInUse
from shipledger.settings import Settings
from shipledger.tables import render_rows

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
#: The listing's columns, in order: the API's rows (position 1: the deployment running).
COLUMNS = [f.name for f in fields(ArtifactInUse)]


@click.group("artifacts", context_settings=_CONTEXT)
def artifacts() -> None:
    """Artifact lifecycle: what a registry must keep (docs/artifacts.md)."""


@artifacts.command("protected", context_settings=_CONTEXT)
@click.option("--tenant", help="Only this tenant (an operator token; default: the token's).")
@click.option(
    "--digests-only",
    is_flag=True,
    help="One digest per line, nothing else: the exclusion list of a registry's GC job.",
)
@format_option(["table", "json", "csv"], "json: the API's rows; csv: with a header line.")
def protected(tenant: str | None, digests_only: bool, fmt: str) -> None:
    """List the artifact digests running or within rollback reach.

    \b
    A digest is protected when the latest succeeded deployment of a service and environment
    ships it (position 1), or one of the policy's `artifact_rollback_reach` (default 5)
    deployments before it did (a rollback would pull it again). Give the list to your
    registry's garbage collection as what it must not delete.

    \b
    Examples:
      shipledger artifacts protected
      shipledger artifacts protected --format csv > protected.csv
      shipledger artifacts protected --digests-only > keep.txt

    Asks SHIPLEDGER_API_URL with SHIPLEDGER_API_TOKEN (scope read); unset, the running
    `shipledger up` found from here (as every command finds it) with its own token.
    """
    settings = Settings()
    token = settings.api_token.get_secret_value() if settings.api_token else None
    running = None if settings.api_url and token else locate(settings).stack
    if running is not None and running.api_url:
        # The running `shipledger up` found by the rule every command follows, and its
        # token, as `shipledger metrics dora` asks it.
        settings = settings.model_copy(update={"api_url": settings.api_url or running.api_url})
        token = token or running.api_token
    if not token:
        raise click.UsageError("no API token: set SHIPLEDGER_API_TOKEN (scope read)")
    url = api_url(settings) + "/v1/artifacts/protected"
    params = {"tenant": tenant} if tenant else None
    response = call_api(settings, "GET", url, {"Authorization": f"Bearer {token}"}, params=params)
    stop_unless_ok(url, response)
    found = response.json()
    if digests_only:
        for digest in found["digests"]:
            click.echo(digest)
        return
    click.echo(render_rows(found["artifacts"], COLUMNS, fmt, text=COLUMNS[:-1]))
