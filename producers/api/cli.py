"""`shipledger api` (serve; write/check docs/openapi.json), `shipledger tokens` and
`shipledger webhooks secret set`."""

from __future__ import annotations

import difflib
import json
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from shipledger.closing import stop_on_signals
from shipledger.locate import cli_settings, data_dir_option, locate
from shipledger.logging import configure_logging
from shipledger.producers.api.auth import SCOPES, AuthStore, TokenInfo
from shipledger.producers.webhooks import PROVIDERS
from shipledger.schemas.confluent_ids import use_schema_registry
from shipledger.schemas.durations import parse_duration
from shipledger.schemas.scopes import scope_names
from shipledger.settings import Settings
from shipledger.stackfile import StackInfo, journal_dir, resolve_bootstrap

OPENAPI_PATH = Path("docs/openapi.json")
_CTX = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _auth_store(data_dir: Path | None, what: str) -> tuple[AuthStore, StackInfo | None]:
    """The token store the API uses, and the stack running on it if any: SHIPLEDGER_AUTH_DB
    when set, else that of the stack `shipledger.locate` finds (a running `up`'s own store,
    as its stack file names it)."""
    settings = cli_settings(data_dir=data_dir)
    location = locate(settings)
    stack = location.stack
    if "auth_db" in settings.model_fields_set:
        return AuthStore(settings.resolved_auth_db), stack
    location.require(what)
    if stack is not None and stack.auth_db:
        return AuthStore(Path(stack.auth_db)), stack
    return AuthStore(location.settings.resolved_auth_db), stack


def _serving(store: AuthStore, stack: StackInfo | None) -> str:
    """Which API reads `store`, for the message after a change (the running `up`'s, if any)."""
    if stack is None or not stack.api_url or not stack.auth_db:
        return f"in {store.path} (no API runs on it now: `shipledger up` will read it)"
    if Path(stack.auth_db) == store.path.resolve():
        return f"in {store.path}, read by the API of `shipledger up` at {stack.api_url}"
    return (
        f"in {store.path}, NOT the store of the running API at {stack.api_url} (which reads "
        f"{stack.auth_db}): unset SHIPLEDGER_AUTH_DB to use that one"
    )


# --- shipledger api ---------------------------------------------------------------------------
@click.group(name="api", invoke_without_command=True, context_settings=_CTX)
@click.option("--host", help="Interface to listen on (default SHIPLEDGER_API_HOST, 127.0.0.1).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="Port (default SHIPLEDGER_API_PORT, 8470; 0: any free).",
)
@data_dir_option
@click.pass_context
def api(ctx: click.Context, host: str | None, port: int | None, data_dir: Path | None) -> None:
    """Serve the ingest API until Ctrl-C (`shipledger up` serves it too).

    \b
    Produces to SHIPLEDGER_BOOTSTRAP_SERVERS, else to the broker of a running `shipledger up`
    in the data dir. Reading the ledger (GET /v1/events/ID, POST /v1/query, the live
    dashboard's state and map) needs the API of `shipledger up`, or SHIPLEDGER_CLICKHOUSE_URL
    naming a ClickHouse server; the dashboard's live stream needs only the broker.
    \b
      shipledger tokens create --tenant acme --scope ingest      # prints the token once
      shipledger api --port 8470
      curl -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
           -d '{"deployment_id":"d1","event_type":"started","service":"checkout",
                "environment":"prod","commit_sha":"'$(git rev-parse HEAD)'","actor":"me"}' \\
           http://127.0.0.1:8470/v1/events
    \b
      shipledger api openapi            # write docs/openapi.json (run in the repository root)
      shipledger api openapi --check    # exit 1 if docs/openapi.json is out of date (CI)
    Docs of a running API: /docs; the document: /openapi.json.
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = locate(cli_settings(data_dir=data_dir)).settings
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["api_host"] = host
    if port is not None:
        overrides["api_port"] = port
    settings = settings.model_copy(update=overrides)
    configure_logging(settings)
    use_schema_registry(settings.schema_registry_url, settings.topic_prefix)
    bootstrap = resolve_bootstrap(settings)
    if not bootstrap:
        raise click.ClickException(
            "no Kafka broker: set SHIPLEDGER_BOOTSTRAP_SERVERS or start `shipledger up`"
        )
    from shipledger.producers.api.ledger_link import LedgerLink
    from shipledger.producers.api.server import ApiServer
    from shipledger.producers.journal import Journal
    from shipledger.schemas.policy import load_policy
    from shipledger.schemas.residency import Residency
    from shipledger.sinks.ledger.reader import chdb_path

    # A standalone API sending to a running `up`'s embedded broker journals like `up`'s own.
    directory = journal_dir(settings, bootstrap)
    journal = Journal(directory, fsync=settings.journal_fsync) if directory else None
    stopping = stop_on_signals()
    # A ClickHouse server: this API reads the ledger too (state, map, queries); an embedded
    # chDB ledger is read by the API of the `up` that owns it.
    server_url = chdb_path(settings.resolved_clickhouse_url) is None
    ledger = LedgerLink(settings) if server_url else None
    # Regional ledgers: tenants of other regions are refused (docs/sovereignty.md).
    try:
        residency = (
            Residency(load_policy(settings.policy_file)) if settings.regional_ledgers else None
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        with ApiServer(
            settings, bootstrap, ledger=ledger, journal=journal, residency=residency
        ) as server:
            click.echo(f"shipledger API at {server.url} (docs {server.url}/docs); Ctrl-C stops it.")
            while not stopping.wait(0.5):
                if not server.running:
                    raise click.ClickException("the API server stopped unexpectedly")
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if ledger is not None:
            ledger.close()


@api.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=OPENAPI_PATH,
    show_default=True,
    help="Where the document goes (relative to the current directory).",
)
@click.option("--check", "check_only", is_flag=True, help="Write nothing; exit 1 if it differs.")
def openapi(out: Path, check_only: bool) -> None:
    """Write the API's OpenAPI document (docs/openapi.json), or check it is current."""
    from shipledger.producers.api.app import create_app, openapi_text
    from shipledger.producers.api.context import ApiContext

    auth = AuthStore(Path(":memory:"))  # the document needs no tokens
    try:
        text = openapi_text(create_app(ApiContext(settings=Settings(), auth=auth)))
    finally:
        auth.close()
    current = out.read_text(encoding="utf-8") if out.is_file() else None
    if current == text:
        click.echo(f"{out} is up to date")
        return
    if check_only:
        if current is not None:
            diff = difflib.unified_diff(
                current.splitlines(),
                text.splitlines(),
                f"{out} (on disk)",
                "(from the code)",
                lineterm="",
            )
            click.echo("\n".join(list(diff)[:60]), err=True)
        click.echo(f"{out} is out of date: run `shipledger api openapi` and commit it", err=True)
        raise click.exceptions.Exit(1)
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}")


# --- shipledger tokens ------------------------------------------------------------------------
@click.group(name="tokens", context_settings=_CTX)
def tokens() -> None:
    """API tokens: scoped to a tenant and scopes, stored hashed in <data-dir>/auth.sqlite3.

    \b
      shipledger tokens create --tenant acme --scope ingest --expires-in 90d --name ci
      shipledger tokens create --tenant '*' --scope admin --scope read   # an operator
      shipledger tokens create --tenant acme --scope read --team payments --environment prod
    A token with --team/--environment reads only those teams' and environments' rows (SQL,
    events, the stream); rows without a team only tokens without --team see (docs/security.md).
      shipledger tokens list
      shipledger tokens revoke 3f9a0c1b2d4e
    """


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@tokens.command()
@click.option("--tenant", required=True, help="Tenant the token acts on; `*` for all (operators).")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(SCOPES),
    help=(
        "ingest (write events), read (read events), admin, pii:read (reads show names, not "
        "pseudonyms); repeat for several."
    ),
)
@click.option(
    "--team",
    "teams",
    multiple=True,
    help="Read only this team's rows; repeat or a comma list for several. Default: every team.",
)
@click.option(
    "--environment",
    "environments",
    multiple=True,
    help="Read only this (canonical) environment's rows; repeat or a comma list. Default: all.",
)
@click.option("--expires-in", help="Lifetime: 45m, 12h, 30d, 2w, 1y. Default: no expiry.")
@click.option("--name", default="", help="A label for `tokens list`.")
@data_dir_option
def create(
    tenant: str,
    scopes: tuple[str, ...],
    teams: tuple[str, ...],
    environments: tuple[str, ...],
    expires_in: str | None,
    name: str,
    data_dir: Path | None,
) -> None:
    """Create a token and print it (only this once: just its hash is stored)."""
    for flag, values in (("--team", teams), ("--environment", environments)):
        try:
            scope_names(values, flag[2:])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=flag) from exc
    try:
        lifetime = (
            parse_duration(expires_in, what="a lifetime").total_seconds() if expires_in else None
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires-in") from exc
    store, stack = _auth_store(data_dir, "`shipledger tokens create`")
    try:
        token, info = store.create_token(
            tenant,
            scopes,
            name=name,
            expires_in_s=lifetime,
            teams=teams,
            environments=environments,
        )
        where = _serving(store, stack)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        store.close()
    click.echo(token)
    click.echo(
        f"token {info.id} for tenant {info.tenant}, scopes {','.join(info.scopes)}"
        f"{', limited to ' + _limits(info) if _limits(info) else ''}, "
        f"expires {_when(info.expires_at)}, stored {where}: keep it secret, it is not "
        "shown again",
        err=True,
    )


@tokens.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per token.")
@data_dir_option
def list_tokens(as_json: bool, data_dir: Path | None) -> None:
    """List tokens (ids, tenants, scopes, state; never secrets)."""
    store, _ = _auth_store(data_dir, "`shipledger tokens list`")
    try:
        rows = store.list_tokens()
    finally:
        store.close()
    now = time.time()
    if as_json:
        for info in rows:
            click.echo(json.dumps({**vars(info), "state": info.state(now)}))
        return
    click.echo(
        f"{'ID':<13} {'TENANT':<16} {'SCOPES':<18} {'STATE':<8} {'EXPIRES':<26} NAME  LIMITED TO"
    )
    for info in rows:
        click.echo(
            f"{info.id:<13} {info.tenant:<16} {','.join(info.scopes):<18} "
            f"{info.state(now):<8} {_when(info.expires_at):<26} {info.name}  {_limits(info)}"
        )


def _limits(info: TokenInfo) -> str:
    """`teams a,b; environments prod`, or '' for a token without such scopes."""
    return "; ".join(
        f"{what} {','.join(names)}"
        for what, names in (("teams", info.teams), ("environments", info.environments))
        if names
    )


@tokens.command()
@click.argument("token_id")
@data_dir_option
def revoke(token_id: str, data_dir: Path | None) -> None:
    """Revoke a token by its id (from `tokens list`): it is refused from now on."""
    store, _ = _auth_store(data_dir, "`shipledger tokens revoke`")
    try:
        done = store.revoke(token_id)
    finally:
        store.close()
    if not done:
        raise click.ClickException(f"no active token {token_id!r} (see `shipledger tokens list`)")
    click.echo(f"revoked {token_id}")


# --- shipledger webhooks --------------------------------------------------------------------
@click.group(name="webhooks", context_settings=_CTX)
def webhooks() -> None:
    """Webhook secrets per tenant and provider (they verify the providers' signatures).

    \b
      shipledger webhooks secret set --tenant acme --provider github          # generates one
      echo -n "$SECRET" | shipledger webhooks secret set --tenant acme --provider gitlab --stdin
    Then point the provider at POST <api>/v1/webhooks/<provider>/<tenant>.
    """


@webhooks.group()
def secret() -> None:
    """Manage webhook secrets."""


@secret.command(name="set")
@click.option("--tenant", required=True, help="Tenant whose webhooks this secret signs.")
@click.option(
    "--provider",
    required=True,
    type=click.Choice(list(PROVIDERS)),
    help="The provider whose webhooks it signs.",
)
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the secret from standard input.")
@data_dir_option
def set_secret(tenant: str, provider: str, from_stdin: bool, data_dir: Path | None) -> None:
    """Store the secret; without --stdin, generate one and print it (configure the provider
    with it)."""
    value = sys.stdin.read().strip() if from_stdin else secrets.token_urlsafe(32)
    store, stack = _auth_store(data_dir, "`shipledger webhooks secret set`")
    try:
        store.set_webhook_secret(tenant, provider, value)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    finally:
        store.close()
    if not from_stdin:
        click.echo(value)
    click.echo(
        f"{provider} webhook secret set for tenant {tenant}, {_serving(store, stack)}", err=True
    )
