"""`shipledger start | emit | run | flush`: the CI side of shipledger.

Contract with CI jobs: stdout carries only ids (`start`, `emit`), logs go to stderr, and a
tracking problem (Kafka down, spool full) never fails the job unless `--strict` is given. Bad
input (missing metadata, invalid values) is a usage error: exit 2, every problem named.

This module is the only place of the emitter that reads `os.environ` (CI detection); settings
come from `Settings()`, found by `shipledger.locate` when no broker is configured.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from pydantic import ValidationError

from shipledger.locate import cli_settings, data_dir_option, locate
from shipledger.logging import Logger, configure_logging, get_logger
from shipledger.producers.emitter.ci_detect import CLI, detect, provider
from shipledger.producers.emitter.metadata import (
    MissingMetadata,
    build_event,
    envvar,
    format_validation_error,
)
from shipledger.producers.emitter.publisher import Publisher, PublishResult
from shipledger.producers.emitter.spool import Spool, spools_to_flush
from shipledger.schemas.confluent_ids import use_schema_registry
from shipledger.schemas.models import EVENT_TYPES, KINDS, DeploymentEvent, TimeWindow, new_id
from shipledger.schemas.registry import AvroCodec, RegistryUnavailable
from shipledger.schemas.validation import EVENT_SCHEMA, settings_problems, size_problem
from shipledger.settings import Settings

if TYPE_CHECKING:
    import subprocess

F = TypeVar("F", bound=Callable[..., Any])

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# --- shared plumbing -----------------------------------------------------------------------------


def _exit(code: int) -> NoReturn:
    raise click.exceptions.Exit(code)


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"shipledger: error: {message}", err=True)
    _exit(code)


def _load_settings(data_dir: Path | None, bootstrap: str | None) -> Settings:
    """The settings; without a broker configured, those of the stack `shipledger.locate` finds
    (its broker, journal and spool), with a warning saying where it looked when none runs."""
    try:
        settings = cli_settings(data_dir=data_dir)
    except ValidationError as exc:
        _fail(settings_problems(exc))
    configure_logging(settings)
    if not (bootstrap or settings.bootstrap_servers):
        # No broker of your own (CI): find the running stack, or say where events wait.
        try:
            location = locate(settings)
        except click.ClickException as exc:  # several stacks running: which one is meant?
            _fail(exc.message)
        if location.stack is None:
            get_logger("locate").warning(
                f"SHIPLEDGER_BOOTSTRAP_SERVERS is unset and {location.no_stack()}: events are "
                f"spooled in {location.settings.resolved_spool_dir}; start `shipledger up`, then "
                "run `shipledger flush`"
            )
        settings = location.settings
    try:
        use_schema_registry(settings.schema_registry_url, settings.topic_prefix)
    except RegistryUnavailable as exc:
        _fail(str(exc))
    return settings


def _parse_attrs(
    _ctx: click.Context, _param: click.Parameter, values: Sequence[str]
) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not key=value")
        attrs[key.strip()] = value
    return attrs


def _field_option(name: str, help_text: str, **kwargs: Any) -> Callable[[F], F]:
    """`--<flag>` for event field `name`, also read from its SHIPLEDGER_* variable."""
    flag = "--" + name.replace("_", "-")
    dest = {"--pipeline-url": "pipeline_run_url", "--stage": "pipeline_stage"}.get(flag, name)
    env = envvar(dest)
    return click.option(flag, dest, envvar=env, show_envvar=True, help=help_text, **kwargs)


def _event_options(with_time: bool) -> Callable[[F], F]:
    """The metadata options shared by `emit` and `run`."""
    options: list[Callable[[F], F]] = [
        _field_option(
            "deployment_id",
            "Id shared by every stage of one deployment (from `shipledger start`). "
            "Absent: a new one is generated and shown on stderr.",
        ),
        _field_option("service", "Service being deployed. [required]"),
        _field_option("environment", "Target environment (prod, staging...). [required]"),
        _field_option("commit_sha", "Full commit SHA deployed. [required; detected in CI]"),
        _field_option("actor", "Who deploys (user login). [required; detected in CI]"),
        _field_option("region", "Target region."),
        _field_option("tenant", "Tenant owning the service.  [default: settings, 'default']"),
        _field_option("repository", "Source repository (owner/name or URL). [detected in CI]"),
        _field_option("version", "Version or tag deployed. [detected on tag pipelines]"),
        _field_option("artifact_name", "Artifact (image, package) name."),
        _field_option("artifact_digest", "Artifact digest, sha256:<64 hex>."),
        _field_option(
            "trigger",
            "automated or manual. [detected in CI]",
            type=click.Choice(["automated", "manual"]),
        ),
        _field_option("kind", "What is shipped.  [default: release]", type=click.Choice(KINDS)),
        _field_option("change_id", "Change ticket id (e.g. CHG0012345)."),
        _field_option("pipeline_url", "Link to the CI run. [detected in CI]"),
        _field_option("stage", "CI stage or job name. [detected in CI]"),
        click.option(
            "--attr",
            "attributes",
            multiple=True,
            metavar="KEY=VALUE",
            callback=_parse_attrs,
            help="Free-form attribute; repeat for more.",
        ),
    ]
    if with_time:
        options.append(
            click.option(
                "--occurred-at",
                help="When it happened, ISO 8601 with a time zone.  [default: now]",
            )
        )
    options += [
        click.option(
            "--strict/--no-strict",
            default=None,
            help="Exit 1 when the event cannot be sent to Kafka.  "
            "[default: SHIPLEDGER_STRICT, else no]",
        ),
        click.option(
            "--bootstrap",
            metavar="HOST:PORT",
            help="Kafka bootstrap servers.  "
            "[default: SHIPLEDGER_BOOTSTRAP_SERVERS, else the running `shipledger up`]",
        ),
        data_dir_option,
    ]

    def apply(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return apply


@dataclass(frozen=True)
class _Request:
    """What the user asked for, with settings applied."""

    settings: Settings
    given: dict[str, Any]
    strict: bool
    bootstrap: str | None
    generated_id: bool = False


def _request(options: dict[str, Any]) -> _Request:
    strict = options.pop("strict")
    bootstrap = options.pop("bootstrap")
    settings = _load_settings(options.pop("data_dir"), bootstrap)
    given = dict(options)
    generated = not given.get("deployment_id")
    if generated:
        given["deployment_id"] = new_id()
    if given.get("tenant") is None:  # given blank (`--tenant ""`) is refused by the model
        given["tenant"] = settings.tenant
    return _Request(
        settings=settings,
        given=given,
        strict=settings.strict if strict is None else strict,
        bootstrap=bootstrap,
        generated_id=generated,
    )


def _build(event_type: str, request: _Request, **extra: Any) -> DeploymentEvent:
    """Validated event, or exit 2 with every problem named."""
    given = {**request.given, **extra}
    try:
        event = build_event(
            event_type, detect(os.environ), given, TimeWindow.from_settings(request.settings)
        )
    except MissingMetadata as exc:
        _fail(str(exc))
    except ValidationError as exc:
        _fail("invalid event:\n" + "\n".join(f"  {x}" for x in format_validation_error(exc)))
    except ValueError as exc:  # e.g. a field given twice through an alias
        _fail(f"invalid event: {exc}")
    # Kafka would refuse it on every try (spooled forever): refuse it now, as the API does.
    try:
        framed = AvroCodec(EVENT_SCHEMA).encode(event.to_avro())
    except RegistryUnavailable as exc:  # no id to frame it with: nothing to send or spool
        _fail(str(exc), 1)
    too_large = size_problem(framed, request.settings.max_event_bytes)
    if too_large:
        _fail(f"invalid event: {too_large}")
    return event


def _logger(command: str, event: DeploymentEvent) -> Logger:
    return get_logger(
        command, deployment_id=event.deployment_id, tenant=event.tenant, service=event.service
    )


def _announce_generated_id(request: _Request, log: Logger) -> None:
    if request.generated_id:
        log.warning(
            "no deployment id given: generated one; to tie the stages of one deployment "
            "together run `export SHIPLEDGER_DEPLOYMENT_ID=$(shipledger start)` first",
            generated_deployment_id=request.given["deployment_id"],
        )


def _report(result: PublishResult, event: DeploymentEvent, log: Logger) -> bool:
    """Log the outcome of publishing one event; True if Kafka acknowledged it."""
    if result.sent:
        log.info("event sent", event_id=event.event_id, event_type=event.event_type)
        return True
    if result.spooled:
        log.warning(
            f"Kafka did not take the event: spooled to {result.spool_path}; "
            "run 'shipledger flush' later",
            event_id=event.event_id,
            event_type=event.event_type,
            reason="; ".join(result.errors),
        )
    else:
        log.error(
            "event not recorded: Kafka did not take it and it could not be spooled "
            "(the event is in lost_event; emit it again once the cause is fixed)",
            event_id=event.event_id,
            lost_event=event.model_dump_json(),
            reason="; ".join(result.errors),
        )
    return False


# --- start ---------------------------------------------------------------------------------------


@click.command(context_settings=_CONTEXT)
def start() -> None:
    """Print a new deployment id on stdout (nothing else).

    Every stage of one deployment reports the same id, so the ledger links them.

    \b
    Example (first step of a pipeline):
      export SHIPLEDGER_DEPLOYMENT_ID=$(shipledger start)
      shipledger emit started --service checkout --environment prod
    """
    click.echo(new_id())


# --- emit ----------------------------------------------------------------------------------------


@click.command(context_settings=_CONTEXT)
@click.argument("event_type", type=click.Choice(EVENT_TYPES), metavar="EVENT_TYPE")
@_event_options(with_time=True)
def emit(event_type: str, **options: Any) -> None:
    """Publish one deployment event; print its event id on stdout.

    EVENT_TYPE is one of: started, succeeded, failed, rolled_back, cancelled.

    Commit SHA, actor, repository, run URL, stage and trigger are detected from GitHub
    Actions, GitLab CI and Jenkins variables; flags and SHIPLEDGER_* variables override them.
    service, environment, commit SHA and actor are required.

    If Kafka cannot be reached within SHIPLEDGER_EMIT_TIMEOUT_S, the event is spooled to
    disk (send it later with `shipledger flush`) and the command still exits 0. With
    --strict it is not spooled and the command exits 1: a retried CI step sends it again,
    so there is one event either way. Missing or invalid metadata exits 2.

    \b
    Examples:
      export SHIPLEDGER_DEPLOYMENT_ID=$(shipledger start)
      shipledger emit started --service checkout --environment prod
      shipledger emit succeeded --service checkout --environment prod \\
          --version v1.4.2 --artifact-digest sha256:... --attr region_count=3
    \b
      # outside CI, give what would be detected:
      shipledger emit failed --service checkout --environment staging \\
          --commit-sha $(git rev-parse HEAD) --actor $USER --change-id CHG0012345
    """
    request = _request(options)
    event = _build(event_type, request)
    log = _logger("emit", event)
    _announce_generated_id(request, log)
    with Publisher(request.settings, request.bootstrap) as publisher:
        # Strict fails instead of spooling: spooling too would send the event twice once the
        # CI step is retried (the retry's event has a new id and time).
        result = publisher.publish([event], spool_on_failure=not request.strict)
    sent = _report(result, event, log)
    if sent or result.spooled:
        click.echo(event.event_id)
    if not sent and request.strict:
        log.error("--strict: the event was not recorded and not spooled; retry the step")
        _exit(1)


# --- run -----------------------------------------------------------------------------------------

_FORWARDED = (signal.SIGINT, signal.SIGTERM)


def _terminal_sends_sigint_to_child() -> bool:
    """Ctrl-C in a terminal already reaches the child (same foreground process group)."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


@dataclass
class _SignalForwarder:
    """Forwards SIGINT/SIGTERM to the child and remembers every one received, in order.

    Python runs `_handle` in the main thread between two bytecodes, so a signal is handled
    either before `attach` sets the child (then queued in `_early`, forwarded by `attach`) or
    after (forwarded by `_handle`): each reaches the child once. `before_exit` are those
    handled before the child was reaped: only they can have interrupted it.
    """

    child: subprocess.Popen[bytes] | None = None
    received: list[int] = field(default_factory=list)
    before_exit: list[int] = field(default_factory=list)
    _early: list[int] = field(default_factory=list)
    _previous: dict[int, Any] = field(default_factory=dict)
    _skip_sigint: bool = False

    def install(self) -> None:
        self._skip_sigint = _terminal_sends_sigint_to_child()
        for sig in _FORWARDED:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        if self.child is None or self.child.returncode is None:
            self.before_exit.append(signum)
        if self.child is None:
            self._early.append(signum)
        elif not (signum == signal.SIGINT and self._skip_sigint):
            self._send(signum)  # a terminal's Ctrl-C reached the child by itself

    def attach(self, child: subprocess.Popen[bytes]) -> None:
        """Forward to `child` from now on, and pass it what arrived while it was spawned.

        A terminal's SIGINT of that moment included: it went out before the child existed, or
        before its exec (which drops it), so the child may not have had it.
        """
        self.child = child
        while self._early:
            self._send(self._early.pop(0))

    def _send(self, signum: int) -> None:
        if self.child is not None:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signum)  # a no-op once the child has been reaped


@dataclass(frozen=True)
class _Outcome:
    exit_code: int
    duration_ms: int
    attributes: dict[str, str]

    @property
    def status(self) -> str:
        """succeeded when the command exited 0 without being interrupted, else failed."""
        ok = self.exit_code == 0 and "interrupted_by" not in self.attributes
        return "succeeded" if ok else "failed"


def _run_child(command: Sequence[str], forwarder: _SignalForwarder) -> _Outcome:
    """Run `command` to its end. Only signals received while it runs (or is spawned) count as
    interrupting it: one arriving once it was reaped does not change its outcome."""
    import subprocess  # only `run` starts a command: `emit` does without it

    began = time.monotonic()
    attributes: dict[str, str] = {}
    returncode: int | None = None
    try:
        child = subprocess.Popen(list(command))
    except FileNotFoundError:
        code, attributes["error"] = 127, f"command not found: {command[0]}"
    except OSError as exc:
        code, attributes["error"] = 126, f"cannot execute {command[0]}: {exc.strerror}"
    else:
        forwarder.attach(child)
        returncode = child.wait()
    during = list(forwarder.before_exit)  # a later signal came after the command ended
    if returncode is not None:
        code = returncode if returncode >= 0 else 128 - returncode
        if returncode < 0:
            attributes["killed_by"] = signal.Signals(-returncode).name
    if during:
        attributes["interrupted_by"] = signal.Signals(during[0]).name
    duration_ms = int((time.monotonic() - began) * 1000)
    return _Outcome(exit_code=code, duration_ms=duration_ms, attributes=attributes)


def _command_is_not_an_option(
    ctx: click.Context, _param: click.Parameter, command: tuple[str, ...]
) -> tuple[str, ...]:
    """A COMMAND starting with `-` is a mistyped option (unknown options are passed through to
    COMMAND, so `--chnage-id X -- ./deploy` would run `--chnage-id`): a usage error."""
    if command and command[0].startswith("-"):
        name = command[0].partition("=")[0]
        known = sorted(
            {
                opt
                for param in ctx.command.get_params(ctx)
                for opt in (*param.opts, *param.secondary_opts)
                if opt.startswith("-")
            }
        )
        if name in known:  # given after `--`
            raise click.UsageError(f"COMMAND cannot start with option {name}", ctx=ctx)
        import difflib  # a mistyped option only

        close = difflib.get_close_matches(name, known)
        raise click.NoSuchOption(name, possibilities=close, ctx=ctx)
    return command


@click.command(
    context_settings={**_CONTEXT, "ignore_unknown_options": True, "allow_interspersed_args": False}
)
@_event_options(with_time=False)
@click.argument(
    "command",
    nargs=-1,
    required=True,
    type=click.UNPROCESSED,
    callback=_command_is_not_an_option,
)
def run(command: tuple[str, ...], **options: Any) -> None:
    """Run a deploy COMMAND, reporting `started` before and `succeeded`/`failed` after.

    The finish event carries exit_code and duration_ms, and is sent even when the command
    fails or is interrupted (SIGINT/SIGTERM are forwarded to it; the event then says
    interrupted_by=SIGINT|SIGTERM). Exits with the command's exit code (128+N if it was
    killed by signal N; 127 if it cannot be found). A signal received before the command
    started (while `started` is being sent) means it is not run: the finish event is then
    `cancelled`, with interrupted_by, and the exit code 128+N.

    Metadata options are those of `emit` and are validated before the command starts: a
    usage error exits 2 without running it. Outside CI, a commit SHA and an actor neither
    given nor detected are taken from `git rev-parse HEAD` (current directory) and the OS
    user, with a warning that says so. Options go before COMMAND, whose first word
    cannot start with "-" (that is a mistyped option: a usage error); the words after it are
    the command's own. Tracking failures (Kafka down) spool the events and never change the
    exit code, unless --strict: then an unrecorded start means the command is not run
    (exit 1), and an unrecorded finish turns success into exit 1; neither is spooled then
    (the retried step reports again: one event either way).

    \b
    Examples:
      export SHIPLEDGER_DEPLOYMENT_ID=$(shipledger start)
      shipledger run --service checkout --environment prod -- ./deploy.sh --canary
      shipledger run --service api --environment staging --attr chart=1.2.0 -- \\
          helm upgrade --install api ./chart
    """
    request = _local_fallback(_request(options))
    started = _build("started", request)
    log = _logger("run", started)
    _announce_generated_id(request, log)
    attributes: dict[str, str] = request.given["attributes"]
    forwarder = _SignalForwarder()
    forwarder.install()
    try:
        with Publisher(request.settings, request.bootstrap) as publisher:
            result = publisher.publish([started], spool_on_failure=not request.strict)
            if not _report(result, started, log) and request.strict:
                log.error("--strict: the start could not be recorded, so the command was not run")
                _exit(1)
            if forwarder.received:  # Ctrl-C or SIGTERM while `started` was being sent
                signum = forwarder.received[0]
                name = signal.Signals(signum).name
                log.warning("interrupted before the command started: not running it", signal=name)
                cancelled = _build(
                    "cancelled", request, attributes={**attributes, "interrupted_by": name}
                )
                finish_sent = _report(publisher.publish([cancelled]), cancelled, log)
                code = 128 + signum
            else:
                log.info("running command", command=list(command))
                outcome = _run_child(command, forwarder)
                finished = _build(
                    outcome.status,
                    request,
                    exit_code=outcome.exit_code,
                    duration_ms=outcome.duration_ms,
                    attributes={**attributes, **outcome.attributes},
                )
                log.info("command finished", exit_code=outcome.exit_code, **outcome.attributes)
                # --strict turns an unsent success into exit 1 (the step is retried and
                # reports again), so that finish is not spooled: one event either way. Any
                # other finish keeps the command's exit code, and is spooled as usual.
                fails_step = request.strict and outcome.exit_code == 0
                finish_sent = _report(
                    publisher.publish([finished], spool_on_failure=not fails_step),
                    finished,
                    log,
                )
                code = outcome.exit_code
    finally:
        forwarder.restore()
    if request.strict and not finish_sent and code == 0:
        _exit(1)
    _exit(code)


def _local_fallback(request: _Request) -> _Request:
    """Outside CI, the commit and actor neither given nor detected come from git and the OS
    user (`local_detect`); a warning says which were taken, and how to give others."""
    if provider(os.environ) != CLI:
        return request
    from shipledger.producers.emitter.local_detect import local_metadata  # git, getpass

    missing = {name for name in ("commit_sha", "actor") if not request.given.get(name)}
    found = local_metadata(missing)
    if not found:
        return request
    get_logger("run").warning(
        "not in CI: "
        + ", ".join(f"{name}={value} from {source}" for name, (value, source) in found.items())
        + " (pass --commit-sha / --actor to choose others)"
    )
    given = {**request.given, **{name: value for name, (value, _) in found.items()}}
    return replace(request, given=given)


# --- flush ---------------------------------------------------------------------------------------


@click.command(context_settings=_CONTEXT)
@click.option(
    "--bootstrap",
    metavar="HOST:PORT",
    help="Kafka bootstrap servers.  "
    "[default: SHIPLEDGER_BOOTSTRAP_SERVERS, else the running `shipledger up`]",
)
@data_dir_option
def flush(bootstrap: str | None, data_dir: Path | None) -> None:
    """Send the events spooled while Kafka was unreachable.

    Prints how many were sent and how many remain; exits 1 if any remain (Kafka still
    unreachable) or a spooled file was unreadable and moved to quarantine/. Each event is
    removed from the spool only once Kafka acknowledged it; concurrent flushes (several CI
    jobs on one runner) take turns, so none is sent twice by them.

    \b
    Examples:
      shipledger flush
      shipledger flush --bootstrap kafka-1:9092,kafka-2:9092
    \b
      # at the end of a pipeline, best effort:
      shipledger flush || true
    """
    settings = _load_settings(data_dir, bootstrap)
    failed = False
    for spool in spools_to_flush(settings, cli_settings(data_dir=data_dir)):
        failed |= not _flush_spool(settings, bootstrap, spool)
    if failed:
        _exit(1)


def _flush_spool(settings: Settings, bootstrap: str | None, spool: Spool) -> bool:
    """Send one spool directory's events; False if some remain or were quarantined."""
    log = get_logger("flush")
    if spool.pending() == 0:
        spool.remove_orphan_temps()  # what writers killed mid-write left (spool.flush does too)
        click.echo(f"sent 0, 0 remaining: the spool is empty ({spool.directory})")
        return True
    with Publisher(settings, bootstrap) as publisher:
        result = spool.flush(publisher)
    click.echo(f"sent {result.sent}, {result.remaining} remaining in {spool.directory}")
    if result.errors:
        log.warning("some events are still spooled", reason="; ".join(result.errors))
    for path in result.quarantined:
        log.error(
            f"quarantined {path}: not a valid event, so it was not sent; inspect it, fix or "
            f"delete it (move it back to {spool.directory} to send it)",
            path=str(path),
        )
    return not (result.remaining or result.quarantined)
