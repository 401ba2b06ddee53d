"""What the unit and integration tests share: sample events, alerts and ledger rows, the
`shipledger` command (run as a CI job runs it, or in process), a stack under a policy, tokens
and posts to its ingest API, an API registered as a running stack's, a wait on a running
stack, and the types of the fixtures of tests/conftest.py."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from click.testing import CliRunner, Result

from shipledger.cli import cli
from shipledger.fields import picked
from shipledger.kafka import DeliveryError
from shipledger.producers.api.auth import AuthStore
from shipledger.schemas.family_models import ArtifactEvent, ChangeEvent
from shipledger.schemas.models import Alert, DeploymentEvent, DeploymentRecord
from shipledger.schemas.policy import Policy
from shipledger.schemas.registry import AvroCodec
from shipledger.settings import Settings
from shipledger.sinks import rows
from shipledger.stackfile import StackInfo, remove_stack, write_stack

if TYPE_CHECKING:
    from shipledger.producers.api.server import ApiServer
    from shipledger.sinks.ledger.store import LedgerStore
    from shipledger.up.stack import Stack

T = TypeVar("T")

#: The commit of the sample events.
SHA = "0123456789abcdef0123456789abcdef01234567"
#: The metadata `shipledger emit/run` needs, as CLI options.
META = ["--service", "checkout", "--environment", "prod", "--commit-sha", SHA, "--actor", "al"]
#: The `shipledger` command installed beside this interpreter.
SHIPLEDGER = str(Path(sys.executable).with_name("shipledger"))
#: One valid payload per event family, as a producer would send it (every family has one).
FAMILY_EVENTS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "family_events.json").read_text()
)

#: The `defaults:` of a test policy requiring a change ticket in prod and, for tests about other
#: rules, no built digest (their prod deployments carry none).
TICKET_DEFAULTS = """\
defaults:
  timezone: UTC
  require_change_ticket: [prod]
  require_artifact_digest: []
"""

#: The `cli_env` fixture: a CI job's environment for a broker.
CliEnv = Callable[[Settings, str], dict[str, str]]
#: The `consume` fixture: (broker, topic, expected, settle_s=, timeout_s=) -> messages.
Consume = Callable[..., list[tuple[bytes, DeploymentEvent, int]]]


def wire(schema: str, record: dict[str, Any]) -> dict[str, Any]:
    """What the sink sees of `record`: it through the Avro codec of `schema` and back."""
    codec = AvroCodec(schema)
    return codec.decode(codec.encode(record))


def deployment_event(**fields: Any) -> DeploymentEvent:
    """A valid deployment event: deployment d-1 of checkout to prod started by alice at SHA,
    each of `fields` given instead (any field of the model)."""
    sample: dict[str, Any] = {
        "deployment_id": "d-1",
        "event_type": "started",
        "service": "checkout",
        "environment": "prod",
        "commit_sha": SHA,
        "actor": "alice",
    }
    return DeploymentEvent(**{**sample, **fields})


class FakeProducer:
    """What the sink and the escalator use of `shipledger.kafka.KafkaProducer` (a fake: their
    unit tests run without a broker). Keeps what was produced in `sent`; with a `log`, notes
    each produce (`produce <topic's last part>`) and each acknowledged flush (`acked`);
    `refuse`: every flush fails as with the broker down."""

    def __init__(self, log: list[str] | None = None, refuse: bool = False) -> None:
        self.log, self.refuse = log, refuse
        self.sent: list[dict[str, Any]] = []

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None, **kw: Any) -> None:
        self.sent.append({"topic": topic, "value": value, "key": key, **kw})
        if self.log is not None:
            self.log.append(f"produce {topic.split('.')[-1]}")

    def poll(self, timeout_s: float = 0) -> int:
        return 0

    def flush(self, timeout_s: float) -> int:
        return 0

    def flush_or_raise(self, timeout_s: float, what: str = "") -> None:
        if self.refuse:
            raise DeliveryError(what, 0, 1, "broker down")
        if self.log is not None:
            self.log.append("acked")


#: When the sample records and alerts happened.
AT = datetime(2026, 11, 26, 10, tzinfo=UTC)


def deployment_record(**fields: Any) -> DeploymentRecord:
    """A valid deployment record: the first (seq 1) of d-1, checkout to prod by alice at SHA,
    succeeded, from event evt-1 at AT under policy p1, each of `fields` given instead."""
    sample: dict[str, Any] = {
        "record_id": "evt-1",
        "deployment_id": "d-1",
        "seq": 1,
        "status": "succeeded",
        "kind": "release",
        "service": "checkout",
        "environment": "prod",
        "environment_raw": "prod",
        "tenant": "default",
        "commit_sha": SHA,
        "actor": "alice",
        "trigger": "automated",
        "started_at": AT,
        "event_count": 1,
        "last_event_id": "evt-1",
        "last_event_type": "succeeded",
        "policy_version": "p1",
    }
    return DeploymentRecord(**{**sample, **fields})


def sample_alert(**fields: Any) -> Alert:
    """A valid alert: missing_change_ticket (high) of deployment d-1, checkout to prod by
    alice, judged on event evt-1 at AT under policy p1, each of `fields` given instead."""
    sample: dict[str, Any] = {
        "alert_id": "evt-1:missing_change_ticket",
        "rule": "missing_change_ticket",
        "severity": "high",
        "message": "no change ticket",
        "policy_version": "p1",
        "deployment_id": "d-1",
        "event_id": "evt-1",
        "tenant": "default",
        "service": "checkout",
        "environment": "prod",
        "actor": "alice",
        "occurred_at": AT,
    }
    return Alert(**{**sample, **fields})


def freeze_alert(**fields: Any) -> Alert:
    """The escalation tests' alert: a critical freeze_violation of deployment dep-1 (event
    ev-1) of checkout to prod in eu-west-1 for retail by alice, during the year-end freeze at
    2026-12-22 10:00 UTC under policy esc-1+abc; each of `fields` given instead."""
    sample: dict[str, Any] = {
        "alert_id": "0c6f2d1e-8a4b-5c3d-9e7f-1a2b3c4d5e6f",
        "rule": "freeze_violation",
        "severity": "critical",
        "message": "checkout shipped to prod during the year-end freeze",
        "evidence": {"freeze": "year-end"},
        "policy_version": "esc-1+abc",
        "deployment_id": "dep-1",
        "event_id": "ev-1",
        "tenant": "retail",
        "region": "eu-west-1",
        "occurred_at": datetime(2026, 12, 22, 10, tzinfo=UTC),
    }
    return sample_alert(**{**sample, **fields})


def ledger_rows(
    event: DeploymentEvent, offset: int, **alert_fields: Any
) -> tuple[rows.Row, rows.Row, rows.Row]:
    """The sink's rows of `event` (read at `offset` of partition 0 of the raw topic) as the
    only event of its deployment: its event row, the succeeded record it made under policy
    p-1, and the alert `<event id>:rule` it raised then (a missing_change_ticket by default,
    each of `alert_fields` given instead); record and alert carry the event's fields."""
    at = event.occurred_at
    meta = rows.KafkaMeta("raw", 0, offset, int(at.timestamp() * 1000))
    # What record and alert both take from the event.
    shared = picked(event, "deployment_id", "service", "environment", "tenant", "team", "actor")
    record = deployment_record(
        **shared,
        record_id=event.event_id,
        environment_raw=event.environment,
        commit_sha=event.commit_sha,
        policy_version="p-1",
        started_at=at,
        last_event_id=event.event_id,
        updated_at=at,
    )
    alert = sample_alert(
        **{
            **shared,
            "alert_id": f"{event.event_id}:rule",
            "event_id": event.event_id,
            "policy_version": "p-1",
            "occurred_at": at,
            "detected_at": at,
            **alert_fields,
        }
    )
    return (
        rows.event_row(event.to_avro(), meta),
        rows.record_row(record.to_avro()),
        rows.alert_row(alert.to_avro()),
    )


#: When the deployment of the change-request tests starts (`change_event` counts from it).
CHANGE_T0 = datetime(2026, 11, 25, 10, tzinfo=UTC)


def change_event(event_id: str, state: str, minutes: float, **fields: Any) -> ChangeEvent:
    """Change request CHG1 of tenant retail in ServiceNow reported `state`, `minutes` after
    CHANGE_T0 (before it when negative), each of `fields` given instead or besides."""
    sample: dict[str, Any] = {
        "event_id": event_id,
        "tenant": "retail",
        "change_id": "CHG1",
        "system": "servicenow",
        "state": state,
        "occurred_at": CHANGE_T0 + timedelta(minutes=minutes),
    }
    return ChangeEvent(**{**sample, **fields})


def change_deployment(**fields: Any) -> DeploymentEvent:
    """The deployment the change request CHG1 covers: dep-1 (event e1) of checkout to prod for
    retail, started by ci-bot at CHANGE_T0, each of `fields` given instead (validated as the
    API would)."""
    return DeploymentEvent.model_validate(
        {
            "event_id": "e1",
            "deployment_id": "dep-1",
            "event_type": "started",
            "service": "checkout",
            "environment": "prod",
            "tenant": "retail",
            "commit_sha": "a" * 40,
            "actor": "ci-bot",
            "occurred_at": CHANGE_T0,
            "change_id": "CHG1",
            **fields,
        }
    )


#: The ClickHouse server the session's ledgers live on (the containers stack,
#: tests/containers.py); None: chDB in each test's own data dir.
_clickhouse_server: str | None = None


def use_clickhouse_server(url: str | None) -> None:
    """From now on every test's ledger is a database of its own on the server at `url`
    (None: back to chDB in the test's data dir)."""
    global _clickhouse_server
    _clickhouse_server = url


def _own_ledger(data_dir: Path) -> dict[str, str]:
    """The ClickHouse settings of the ledger of the stack keeping its data in `data_dir`, on
    the session's server if any: one database per data dir, so a restarted stack (and the
    commands a test runs beside it) find the same ledger, and no two tests share one."""
    if _clickhouse_server is None:
        return {}
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return {"clickhouse_url": _clickhouse_server, "clickhouse_database": f"t{digest}"}


def own_settings(tmp: Path, **overrides: Any) -> Settings:
    """Settings of one test's own stack: a private data dir under `tmp` (and a database of
    its own on the session's ClickHouse server when there is one), a unique topic prefix
    (the tests share one broker), two partitions and any free API port; `overrides` on top."""
    mine: dict[str, Any] = {
        "data_dir": tmp / "data",
        # Unique per test: tmp_path names are truncated, so two tests can share a tail.
        "topic_prefix": f"t{uuid.uuid4().hex[:12]}.",
        "topic_partitions": 2,
        # Tests run side by side: never the fixed default port.
        "api_port": 0,
    }
    ledger = _own_ledger(Path(overrides.get("data_dir", mine["data_dir"])))
    return Settings(**{**mine, **ledger, **overrides})


def ledger_env(data_dir: Path) -> dict[str, str]:
    """The SHIPLEDGER_* variables naming the ledger of the stack keeping its data in
    `data_dir` (that data dir, and its database on the session's ClickHouse server if any):
    what a command run beside the stack needs to read the same ledger."""
    ledger = {f"SHIPLEDGER_{name.upper()}": value for name, value in _own_ledger(data_dir).items()}
    return {"SHIPLEDGER_DATA_DIR": str(data_dir), **ledger}


def ledger_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings of the ledger keeping its data in `data_dir` (see `ledger_env`), `overrides`
    on top."""
    return Settings(**{"data_dir": data_dir, **_own_ledger(data_dir), **overrides})


def up_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a `shipledger up` child process: this one's without any SHIPLEDGER_*
    variable, then its data in `data_dir`, two partitions, any free API port (tests run side
    by side: never the fixed one) and `extra` (SHIPLEDGER_… names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPLEDGER_")}
    return {
        **env,
        **ledger_env(data_dir),
        "SHIPLEDGER_TOPIC_PARTITIONS": "2",
        "SHIPLEDGER_API_PORT": "0",
        **extra,
    }


def api_event(**fields: Any) -> dict[str, Any]:
    """A valid deployment event as the API takes it (JSON): a deployment of checkout to
    production started by alice at SHA, its id unique, each of `fields` given instead."""
    body: dict[str, Any] = {
        "deployment_id": f"dep-{uuid.uuid4().hex[:10]}",
        "event_type": "started",
        "service": "checkout",
        "environment": "production",
        "commit_sha": SHA,
        "actor": "alice",
    }
    return {**body, **fields}


def api_deployment(
    dep: str, service: str, stages: Iterable[tuple[str, str]], team: str = "payments"
) -> list[dict[str, Any]]:
    """Deployment `dep` of `service` (owned by `team`) to production by ci-bot, as the API
    takes it: one event per (event type, ISO time) of `stages`, its commit made of `dep`."""
    return [
        api_event(
            event_id=f"{dep}-{stage}",
            deployment_id=dep,
            event_type=stage,
            service=service,
            commit_sha=dep.encode().hex().ljust(40, "0")[:40],
            actor="ci-bot",
            team=team,
            occurred_at=at,
        )
        for stage, at in stages
    ]


def api_change(event_id: str, change_id: str, state: str, at: str, **extra: Any) -> dict[str, Any]:
    """A change event as the API takes it: ServiceNow change request `change_id` reported
    `state` at `at` (ISO time), with `extra` fields (planned_start, …)."""
    return {
        "family": "change",
        "event_id": event_id,
        "change_id": change_id,
        "system": "servicenow",
        "state": state,
        "occurred_at": at,
        **extra,
    }


def built(service: str) -> dict[str, str]:
    """The artifact fields of a deployment of `service` that ships the build `api_build`
    publishes: artifact acme/<service> 1.0.0 and a sha256 digest of its own."""
    return {
        "artifact_name": f"acme/{service}",
        "version": "1.0.0",
        "artifact_digest": "sha256:" + hashlib.sha256(service.encode()).hexdigest(),
    }


def api_build(service: str, at: str) -> dict[str, Any]:
    """The build of `service` as its CI publishes it through the API (an artifact event of
    builder github-actions at `at`, ISO time): what `built(service)` deploys, so that the
    default policy's digest rules find prod deployments of it built."""
    artifact = built(service)
    return {
        "family": "artifact",
        "event_id": f"build-{service}",
        "artifact_name": artifact["artifact_name"],
        "version": artifact["version"],
        "digest": artifact["artifact_digest"],
        "builder": "github-actions",
        "occurred_at": at,
    }


def build_event(service: str, tenant: str, at: datetime) -> ArtifactEvent:
    """`api_build(service, at)` of `tenant` as the processors' view takes it (`fold`)."""
    build = api_build(service, at.isoformat())
    return ArtifactEvent.model_validate(
        {**{k: v for k, v in build.items() if k != "family"}, "tenant": tenant}
    )


def api_token(
    settings: Settings, tenant: str, scopes: tuple[str, ...] = ("ingest",), **options: Any
) -> str:
    """A new API token of `tenant` with `scopes`, kept in `settings`' auth database;
    `options` as `AuthStore.create_token` takes them (name, teams, environments)."""
    auth = AuthStore(settings.resolved_auth_db)
    try:
        return auth.create_token(tenant, scopes, **options)[0]
    finally:
        auth.close()


@contextmanager
def api_client(
    stack: Stack,
    tenant: str,
    scopes: tuple[str, ...],
    name: str,
    webhook_secrets: Mapping[str, str] | None = None,
) -> Iterator[httpx.Client]:
    """A client of `stack`'s API with a new token of `tenant` with `scopes` (named `name`);
    `webhook_secrets` (provider -> secret) set for the tenant first."""
    assert stack.api is not None
    auth = AuthStore(stack.settings.resolved_auth_db)
    try:
        token = auth.create_token(tenant, scopes, name=name)[0]
        for provider, secret in (webhook_secrets or {}).items():
            auth.set_webhook_secret(tenant, provider, secret)
    finally:
        auth.close()
    with httpx.Client(
        base_url=stack.api.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        yield client


def post_events(stack: Stack, token: str, tenant: str, *objects: dict[str, Any]) -> None:
    """POST `objects` to `stack`'s ingest API with `token`, each as `tenant`'s unless it names
    its own; the test fails unless the API accepts them (202)."""
    assert stack.api is not None
    answer = httpx.post(
        f"{stack.api.url}/v1/events",
        json=[{"tenant": tenant, **o} for o in objects],
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text


@contextmanager
def policy_stack(broker: str, tmp: Path, policy_text: str, **overrides: Any) -> Iterator[Stack]:
    """`up`'s stack with its API on `broker` (API, worker, sink, escalator) under the policy
    `policy_text`: `own_settings(tmp)` with a 100 ms sink batch and `overrides` on top, its
    logs in tmp/logs."""
    # Here, not at the top: the stack imports the whole pipeline, which most callers of this
    # kit (unit tests) never need.
    from shipledger.up.stack import Stack

    tmp.mkdir(exist_ok=True)
    policy = tmp / "policy.yaml"
    policy.write_text(policy_text)
    settings = own_settings(tmp, policy_file=policy, sink_batch_ms=100, **overrides)
    with Stack(settings, bootstrap=broker, log_dir=tmp / "logs", api=True) as running:
        yield running


@contextmanager
def registered_api(settings: Settings, server: ApiServer) -> Iterator[StackInfo]:
    """`server` registered, for the `with` block, as the API of a stack of this process that
    owns `settings`' data dir (as `up` registers one; its operator token in the stack file),
    then withdrawn: left behind, it would be a second running stack to every later test of
    this pytest worker that looks for the one running stack."""
    info = StackInfo(
        bootstrap="127.0.0.1:1",
        pid=os.getpid(),
        clickhouse_url=settings.resolved_clickhouse_url,
        api_url=server.url,
        api_token=server.operator_token(),
    )
    write_stack(settings, info)
    try:
        yield info
    finally:
        remove_stack(settings)


@dataclass(frozen=True)
class ReadRoute:
    """One read route of a running API server, with a read token of the tenant (`mine`) and
    one of another tenant, globex (`other`): what a tenant-scoping test asks it with."""

    server: ApiServer
    path: str
    params: dict[str, str]
    mine: str
    other: str

    def get(self, token: str, **params: str) -> httpx.Response:
        """The route asked with `token`, each of `params` given beside (or instead of) its own."""
        with httpx.Client(base_url=self.server.url, timeout=30) as client:
            return client.get(
                self.path,
                params={**self.params, **params},
                headers={"Authorization": f"Bearer {token}"},
            )


@contextmanager
def read_route(
    settings: Settings, store: LedgerStore, tenant: str, path: str, params: dict[str, str]
) -> Iterator[ReadRoute]:
    """`path` of an API server of `settings` over `store` (no broker) for the `with` block,
    with a new read token of `tenant` and one of globex."""
    from shipledger.producers.api.server import ApiServer
    from shipledger.sinks.ledger.reader import LedgerReader

    auth = AuthStore(settings.resolved_auth_db)
    try:
        with ApiServer(settings, "127.0.0.1:1", LedgerReader(store)) as server:
            mine, _ = auth.create_token(tenant, ("read",))
            other, _ = auth.create_token("globex", ("read",))
            yield ReadRoute(server, path, params, mine, other)
    finally:
        auth.close()


def emit_options(event: DeploymentEvent) -> list[str]:
    """The `shipledger emit` options naming `event`'s deployment: its id, service, environment,
    commit, actor, tenant and, when it has one, its artifact, version and digest."""
    artifact = [
        (option, value)
        for option, value in (
            ("--artifact-name", event.artifact_name),
            ("--version", event.version),
            ("--artifact-digest", event.artifact_digest),
        )
        if value
    ]
    return [
        "--deployment-id", event.deployment_id, "--service", event.service,
        "--environment", event.environment, "--commit-sha", event.commit_sha,
        "--actor", event.actor, "--tenant", event.tenant,
        *(part for pair in artifact for part in pair),
    ]  # fmt: skip


def run_shipledger(
    *args: str, env: Mapping[str, str], cwd: Path | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """`shipledger *args` run as a CI job runs it: a child process with `env`, its output
    captured as text; the caller checks the exit code."""
    return subprocess.run(
        [SHIPLEDGER, *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def invoke(*args: str) -> Result:
    """`shipledger *args` run in this process by Click's runner; exceptions propagate."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


#: pytest-timeout's guard (pyproject: 300 s) is a hang detector sized for tests of a few
#: seconds to a minute. The few that do a minute or more of real work (a corpus of hundreds of
#: queries, a fuzz of every route, a chaos run, the README's installs into fresh venvs, an
#: import of every format) get this one instead: CI shares its 2 cores, and at a load of 15
#: one of them passed 300 s still working, not hung.
LONG_TEST_TIMEOUT_S = 900


def wait_for(cond: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll `cond` until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def poll(
    stack: Stack,
    read: Callable[[], T],
    done: Callable[[T], bool],
    timeout_s: float = 90,
    *,
    supervise: bool = False,
) -> T:
    """`read()` again until `done` holds for what it returns, checking before each read that no
    component of `stack` died (with `supervise`: restarting an exited worker, as `up` does).
    The last value read, for the caller to compare: after a timeout it shows what was there,
    and the tail of each of the stack's logs is printed, for pytest to show with the failure."""
    deadline = time.monotonic() + timeout_s
    while True:
        stack.supervise() if supervise else stack.check()
        value = read()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    for log in sorted((stack.settings.data_dir.parent / "logs").glob("*.log")):
        print(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-60:]))
    return value


def query_until(stack: Stack, sql: str, want: Any, timeout_s: float = 90) -> Any:
    """Poll `sql` on `stack`'s ledger until its rows equal `want` (`poll`); the last rows read."""
    store = stack.store
    assert store is not None
    return poll(stack, lambda: store.query(sql)[1], lambda rows: rows == want, timeout_s)


def wait_until(
    stack: Stack,
    done: Callable[[], bool],
    what: str,
    timeout_s: float = 90,
    *,
    restart_workers: bool = False,
) -> None:
    """Poll `done` until it holds (failing with `what` after `timeout_s`), checking between
    polls that no component of `stack` died (with `restart_workers`: restarting an exited
    worker first, as `up` does)."""

    def alive_and_done() -> bool:
        if restart_workers:
            stack.supervise()
        else:
            stack.check()
        return done()

    wait_for(alive_and_done, what, timeout_s)


def wait_drained(stack: Stack, timeout_s: float = 120) -> None:
    """Wait until nothing is left in `stack`'s pipeline (`Stack.pending`): every message of
    its topics processed by the workers (and the escalator) and stored by the sink. The
    positive marker a check that something is NOT in the ledger needs first: the worker's
    alerts, its records and the sink's rows of other topics reach the ledger in no promised
    order, so a row awaited in one table says nothing of what is still on its way to another."""
    wait_until(stack, lambda: not any(stack.pending().values()), "the stack drained", timeout_s)


Server = TypeVar("Server", bound=socketserver.BaseServer)


@contextmanager
def serving(server: Server) -> Iterator[Server]:
    """`server` (a stand-in on loopback) serving on a thread of its own for the `with` block,
    then shut down and closed."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


#: A log line of a server running in the test's own process (an API, a stack): a command's
#: output captured by CliRunner can hold some.
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")


def printed(output: str) -> str:
    """What a command printed, without the log lines of the servers in this process."""
    return "\n".join(line for line in output.splitlines() if not _LOG_LINE.match(line))


def without_digest_rules(policy: Policy) -> Policy:
    """`policy` with `require_artifact_digest: []`: for tests about other rules, whose prod
    deployments carry no digest a build published (the default requires one in prod)."""
    rules = policy.defaults.model_copy(update={"require_artifact_digest": []})
    return policy.model_copy(update={"defaults": rules})
