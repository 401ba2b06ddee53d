"""`shipledger gate` and `shipledger approve`: clients of the API's `POST /v1/gate` and
`POST /v1/approvals` (the judgement needs the policy and the ledger, which the API of
`shipledger up` holds).

The API is `SHIPLEDGER_API_URL`, else the one the running `shipledger up` on this machine
advertises in its stack file. Exit codes are what a pipeline branches on:

| code | gate | approve |
| --- | --- | --- |
| 0 | allowed (or break-glass: passed, recorded, alert raised) | recorded |
| 1 | blocked: every reason printed | refused (credentials, group, four eyes, no such request) |
| 2 | usage: a bad option, or the API refused the request or the token | usage |
| 3 | no answer now: API unreachable or over its rate; its ledger, policy or Kafka down | same |
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click
import httpx

from shipledger.output_format import format_option
from shipledger.producers.emitter.ci_detect import detect
from shipledger.producers.emitter.metadata import envvar
from shipledger.schemas.models import KINDS
from shipledger.settings import Settings
from shipledger.stackfile import read_stack

ALLOWED, BLOCKED, USAGE, NO_ANSWER = 0, 1, 2, 3
F = TypeVar("F", bound=Callable[..., Any])
_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def stop(code: int, message: str) -> NoReturn:
    """Print `message` and exit with `code` (the module docstring's table)."""
    click.echo(f"shipledger: {message}", err=True)
    raise click.exceptions.Exit(code)


def api_url(settings: Settings) -> str:
    """The API to ask: SHIPLEDGER_API_URL, else the running `shipledger up`'s (exit 3)."""
    if settings.api_url:
        return settings.api_url.rstrip("/")
    running = read_stack(settings)
    if running is None or not running.api_url:
        stop(
            NO_ANSWER,
            "no shipledger API to ask: set SHIPLEDGER_API_URL, or run `shipledger up` here",
        )
    return running.api_url.rstrip("/")


def call_api(
    settings: Settings,
    method: str,
    url: str,
    headers: dict[str, str],
    *,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
    auth: httpx.Auth | None = None,
) -> httpx.Response:
    """Send `body` as JSON (and `params`); exit 3 when the API does not answer (it waits for
    Kafka's acks, up to SHIPLEDGER_API_ACK_TIMEOUT_S)."""
    try:
        return httpx.request(
            method,
            url,
            json=body,
            params=params,
            headers=headers,
            auth=auth,
            timeout=settings.api_ack_timeout_s + 10,
        )
    except httpx.HTTPError as exc:
        stop(NO_ANSWER, f"the shipledger API at {url} did not answer: {exc}")


def stop_unless_ok(url: str, response: httpx.Response) -> None:
    """Return on a 200; else exit 3 (a server error, or over the rate limit: no answer now,
    retry) or 2 (the API refused the request or the token), saying what the API said."""
    if response.status_code == 200:
        return
    code = NO_ANSWER if response.status_code >= 500 or response.status_code == 429 else USAGE
    stop(code, f"{url} answered {response.status_code}: {error_of(response)}")


def error_of(response: httpx.Response) -> str:
    """What the API said went wrong (its `error`, else the body or the reason)."""
    try:
        found = response.json().get("error")
    except (ValueError, AttributeError):
        found = None
    return str(found or response.text[:500] or response.reason_phrase)


def _option(name: str, help_text: str, **kwargs: Any) -> Callable[[F], F]:
    """`--<name>` read from its SHIPLEDGER_* variable too (the emitter's names)."""
    return click.option(
        "--" + name.replace("_", "-"),
        name,
        envvar=envvar(name),
        show_envvar=True,
        help=help_text,
        **kwargs,
    )


@click.command("gate", context_settings=_CONTEXT)
@_option("service", "Service about to be deployed.", required=True)
@_option("environment", "Environment it is about to be deployed to.", required=True)
@_option("change_id", "Change request the deployment goes out under.")
@click.option(
    "--digest",
    envvar=envvar("artifact_digest"),
    show_envvar=True,
    help="Artifact digest (sha256:<64 hex>): compared with what its build published where the "
    "policy requires a digest (require_artifact_digest), and recorded with the decision.",
)
@_option("artifact_name", "Artifact (image, package) to deploy, as its build published it.")
@_option("version", "Its version or tag, as its build published it.")
@_option("kind", "What is shipped; the policy's per-kind rules apply.", type=click.Choice(KINDS))
@_option("actor", "Who deploys (four eyes: their own approval never counts). [detected in CI]")
@_option(
    "trigger",
    "automated (a pipeline) or manual (a person). [detected in CI]",
    type=click.Choice(["automated", "manual"]),
)
@_option("tenant", "Tenant owning the service. [default: the token's]")
@_option("region", "Target region.")
@_option("deployment_id", "The pipeline's deployment id (`shipledger start`), recorded with it.")
@click.option(
    "--emergency",
    is_flag=True,
    help="Break-glass: pass whatever blocks, recorded, with a critical alert.",
)
@click.option("--reason", help="Why break-glass (required with --emergency).")
@format_option(["text", "json"], "json: the API's answer as is.")
def gate(
    service: str,
    environment: str,
    change_id: str | None,
    digest: str | None,
    artifact_name: str | None,
    version: str | None,
    kind: str | None,
    actor: str | None,
    trigger: str | None,
    tenant: str | None,
    region: str | None,
    deployment_id: str | None,
    emergency: bool,
    reason: str | None,
    fmt: str,
) -> None:
    """Ask before deploying: may SERVICE go to ENVIRONMENT now, under CHANGE_ID?

    \b
    The same rules the stream judges deployments by, against the live state: a change ticket
    where required, the request approved, in its window and scope now, the approvals the
    policy requires (never the deployer's own: four eyes), no freeze, the weekly windows, and
    a known identity for a manual deployment, and where the policy requires it the artifact
    digest a trusted build published for the artifact and version. Every answer is stored in
    the ledger (gate_decisions) with the token that asked.

    \b
    Exit codes: 0 allowed, 1 blocked (every reason printed), 2 usage (or the API refused the
    request or the token), 3 no answer (API, ledger or Kafka unreachable: decide yourself
    whether to wait or stop; nothing was recorded).

    \b
    Examples:
      shipledger gate --service checkout --environment prod --change-id CHG0042
      shipledger gate --service checkout --environment prod --change-id CHG0042 \\
          --artifact-name acme/checkout --version 2.14.0 --digest sha256:<64 hex>
      shipledger gate --service checkout --environment prod --change-id CHG0042 \\
          --emergency --reason "payment outage INC-981, CAB on the bridge"

    Needs SHIPLEDGER_API_TOKEN (`shipledger tokens create --tenant T --scope ingest`) and
    SHIPLEDGER_API_URL unless `shipledger up` runs on this machine.
    """
    settings = Settings()
    if emergency and not (reason or "").strip():
        raise click.UsageError("--emergency needs --reason: say why, it goes into the ledger")
    if reason and not emergency:
        raise click.UsageError("--reason is for --emergency (break-glass) only")
    detected = detect(os.environ)
    actor = actor or detected.get("actor")
    if not actor:
        raise click.UsageError(
            f"who deploys? pass --actor or set {envvar('actor')} (detected in CI)"
        )
    body: dict[str, Any] = {
        "service": service,
        "environment": environment,
        "change_id": change_id,
        "digest": digest,
        "artifact_name": artifact_name,
        "version": version,
        "kind": kind,
        "actor": actor,
        "trigger": trigger or detected.get("trigger"),
        "tenant": tenant,
        "region": region,
        "deployment_id": deployment_id,
        "emergency": emergency,
        "reason": reason,
        "source": "cli",
    }
    if detected.get("pipeline_run_url"):
        body["attributes"] = {"pipeline_run_url": detected["pipeline_run_url"]}
    body = {k: v for k, v in body.items() if v is not None}
    token = settings.api_token.get_secret_value() if settings.api_token else None
    if not token:
        raise click.UsageError("no API token: set SHIPLEDGER_API_TOKEN (scope ingest)")
    url = api_url(settings) + "/v1/gate"
    response = call_api(settings, "POST", url, {"Authorization": f"Bearer {token}"}, body=body)
    stop_unless_ok(url, response)
    found = response.json()
    if fmt == "json":
        click.echo(json.dumps(found, indent=2))
    else:
        click.echo(verdict_text(found, service, environment, change_id))
    raise click.exceptions.Exit(ALLOWED if found.get("passes") else BLOCKED)


def verdict_text(found: dict[str, Any], service: str, environment: str, change: str | None) -> str:
    """The answer for a CI log: the verdict, then one line per reason."""
    under = f" under {change}" if change else ""
    head = {
        "allowed": f"allowed: {service} may go to {environment}{under}",
        "blocked": f"blocked: {service} may not go to {environment}{under}",
        "break_glass": f"break-glass: {service} goes to {environment}{under}, "
        f"recorded with critical alert {found.get('alert_id')}",
    }.get(str(found.get("decision")), f"{found.get('decision')}: {service} to {environment}")
    lines = [f"{head} (decision {found.get('decision_id')}, policy {found.get('policy_version')})"]
    for reason in found.get("reasons", []):
        lines.append(
            f"  - {reason.get('rule')} ({reason.get('severity')}): {reason.get('message')}"
        )
    return "\n".join(lines)


@click.command("approve", context_settings=_CONTEXT)
@click.option("--change-id", required=True, help="Change request to decide on.")
@_option("tenant", "Tenant the change request belongs to.", default="default", show_default=True)
@click.option(
    "--decision",
    type=click.Choice(["approve", "reject"]),
    default="approve",
    show_default=True,
    help="Your decision (a later one replaces your earlier one).",
)
@click.option("--comment", help="Recorded with your decision.")
@click.option(
    "--oidc-token",
    envvar="SHIPLEDGER_OIDC_TOKEN",
    show_envvar=True,
    help="Prove who you are with an OIDC token of the configured issuer (SSO).",
)
@click.option("--username", help="Prove who you are with your directory (LDAP) login.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the LDAP password from stdin instead of prompting for it.",
)
def approve(
    change_id: str,
    tenant: str,
    decision: str,
    comment: str | None,
    oidc_token: str | None,
    username: str | None,
    password_stdin: bool,
) -> None:
    """Approve (or reject) a change request as yourself.

    \b
    You prove who you are with an OIDC token (--oidc-token, SHIPLEDGER_OIDC_TOKEN) or your
    directory login (--username; the password is prompted for, or read with
    --password-stdin; it is sent only over TLS or to this host). The tenant's policy says
    which groups approve which environments; you cannot approve a change you raised.
    Recorded on the changes topic with your groups and the provider that verified you: the
    gate and the stream count it.

    \b
    Exit codes: 0 recorded, 1 refused (the reason is printed: credentials, group, four eyes,
    no such request), 2 usage, 3 no answer (API, identity provider or Kafka unreachable).

    \b
    Examples:
      shipledger approve --change-id CHG0042 --tenant retail --username alice
      shipledger approve --change-id CHG0042 --decision reject --comment "no rollback plan" \\
          --oidc-token "$(my-sso-cli print-token)"
    """
    settings = Settings()
    if bool(oidc_token) == bool(username):
        raise click.UsageError("prove who you are with one of --oidc-token or --username")
    if username:
        password = (
            sys.stdin.readline().rstrip("\n")
            if password_stdin
            else click.prompt(f"LDAP password for {username}", hide_input=True, err=True)
        )
        auth: httpx.Auth | None = httpx.BasicAuth(username, password)
        headers: dict[str, str] = {}
    else:
        auth, headers = None, {"Authorization": f"Bearer {oidc_token}"}
    url = api_url(settings) + "/v1/approvals"
    body = {
        "tenant": tenant,
        "change_id": change_id,
        "decision": {"approve": "approved", "reject": "rejected"}[decision],
    }
    if comment:
        body["comment"] = comment
    response = call_api(settings, "POST", url, headers, body=body, auth=auth)
    if response.status_code == 201:
        found = response.json()
        click.echo(
            f"recorded: {found['approver']} {found['decision']} {found['change_id']} "
            f"(groups: {', '.join(found['groups']) or 'none'}; verified by "
            f"{found['verified_by']}; event {found['event_id']})"
        )
        return
    code = {400: USAGE, 401: BLOCKED, 403: BLOCKED, 404: BLOCKED}.get(
        response.status_code, NO_ANSWER
    )
    stop(code, f"not recorded: {error_of(response)} ({response.status_code})")
