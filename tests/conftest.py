"""Shared fixtures: a real broker per session (Tansu, or Kafka on the containers stack: see
tests/containers.py), settings isolated in a temp data dir, a stand-in Schema Registry, and
the identity providers approvers prove themselves with: a real slapd and a real OIDC issuer
on loopback."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from standardwebhooks import Webhook, WebhookVerificationError

from shipledger.lab.answer import answer
from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.policy import load_policy
from shipledger.schemas.registry import AvroCodec, bind_schema_ids
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.rows import Row
from shipledger.sinks.writer import LedgerWriter
from shipledger.up.broker import EmbeddedBroker
from tests.containers import ContainersStack, containers_stack, stack_mode
from tests.identity_kit import PEOPLE, READER_DN, READER_PASSWORD, SUFFIX, Issuer, Slapd
from tests.kit import (
    CliEnv,
    Consume,
    deployment_event,
    ledger_rows,
    own_settings,
    serving,
    use_clickhouse_server,
)
from tests.webhook_kit import SECRET, Mutate, RawRequest


@pytest.fixture(scope="session", autouse=True)
def stacks_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The registry of running stacks (`shipledger.stackfile`) of this session, not the
    user's: the stacks tests start never show up to the user's own commands, nor theirs here."""
    path = tmp_path_factory.mktemp("stacks")
    previous = os.environ.get("SHIPLEDGER_STACKS_DIR")
    os.environ["SHIPLEDGER_STACKS_DIR"] = str(path)
    yield path
    if previous is None:
        del os.environ["SHIPLEDGER_STACKS_DIR"]
    else:
        os.environ["SHIPLEDGER_STACKS_DIR"] = previous


#: The stack this session runs on, and why the containers' runs are skipped (tests/containers.py).
STACK_MODE, CONTAINERS_SKIPPED = stack_mode()


def pytest_report_header() -> str:
    """Say which stack the integration tests run on."""
    if STACK_MODE == "containers":
        return "shipledger test stack: containers (Kafka, ClickHouse server, schema registry)"
    return (
        f"shipledger test stack: embedded (Tansu + chDB); containers skipped: {CONTAINERS_SKIPPED}"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """On the containers stack, skip the tests marked `embedded_only` (they read chDB's own
    files), with their reason."""
    if STACK_MODE != "containers":
        return
    for item in items:
        marker = item.get_closest_marker("embedded_only")
        if marker is not None:
            item.add_marker(pytest.mark.skip(reason=f"embedded stack only: {marker.args[0]}"))


@pytest.fixture(scope="session")
def containers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainersStack]:
    """The containers stack, started once for the session, every test's ledger a database of
    its own on its ClickHouse server; skipped, naming Docker, where it cannot run."""
    if CONTAINERS_SKIPPED is not None:
        pytest.skip(CONTAINERS_SKIPPED)
    with containers_stack(tmp_path_factory.mktemp("containers")) as running:
        use_clickhouse_server(running.clickhouse_url)
        try:
            yield running
        finally:
            use_clickhouse_server(None)


@pytest.fixture(scope="session", autouse=True)
def session_stack(request: pytest.FixtureRequest) -> ContainersStack | None:
    """On the containers stack, start it before any test builds its settings (so every
    ledger is on the server); nothing on the embedded one."""
    if STACK_MODE != "containers":
        return None
    stack: ContainersStack = request.getfixturevalue("containers")
    return stack


@pytest.fixture(scope="session")
def broker(
    tmp_path_factory: pytest.TempPathFactory, session_stack: ContainersStack | None
) -> Iterator[str]:
    """Bootstrap address of the session's real broker: Tansu started for this session, or
    the containers stack's Kafka."""
    if session_stack is not None:
        yield session_stack.bootstrap
        return
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b.bootstrap


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a private data dir, a unique topic prefix and no real broker."""
    return own_settings(tmp_path, emit_timeout_s=2.0)


_CI_VARS = ("GITHUB_ACTIONS", "GITLAB_CI", "JENKINS_URL")


def _cli_env(settings: Settings, bootstrap: str) -> dict[str, str]:
    """This process's environment minus CI and SHIPLEDGER_* variables, plus test settings."""
    env = {
        k: v for k, v in os.environ.items() if k not in _CI_VARS and not k.startswith("SHIPLEDGER_")
    }
    env.update(
        {
            "SHIPLEDGER_STACKS_DIR": os.environ["SHIPLEDGER_STACKS_DIR"],
            "SHIPLEDGER_DATA_DIR": str(settings.data_dir),
            "SHIPLEDGER_TOPIC_PREFIX": settings.topic_prefix,
            "SHIPLEDGER_EMIT_TIMEOUT_S": str(settings.emit_timeout_s),
            "SHIPLEDGER_BOOTSTRAP_SERVERS": bootstrap,
            # Tests run side by side: never the fixed default port.
            "SHIPLEDGER_API_PORT": "0",
        }
    )
    return env


@pytest.fixture(scope="session")
def cli_env() -> CliEnv:
    """Builds the environment a CI job running `shipledger` against `bootstrap` would have."""
    return _cli_env


@pytest.fixture
def use_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], None]:
    """Makes `env` this process's whole environment for the test (undone afterwards)."""

    def install(env: dict[str, str]) -> None:
        for key in list(os.environ):
            if key not in env:
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)

    return install


def consume(
    broker: str, topic: str, expected: int, settle_s: float = 0.5, timeout_s: float = 15.0
) -> list[tuple[bytes, DeploymentEvent, int]]:
    """(key, event, partition) of every message in `topic`, from the beginning.

    Waits for `expected` messages, then `settle_s` more to catch any unexpected extra ones.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 10,
        }
    )
    codec = AvroCodec("io.shipledger.v1.DeploymentEvent")
    out: list[tuple[bytes, DeploymentEvent, int]] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < (settle_until or deadline):
            msg = consumer.poll(0.05)
            if msg is None:
                if len(out) >= expected and settle_until is None:
                    settle_until = time.monotonic() + settle_s
                continue
            assert msg.error() is None, msg.error()
            key, value, partition = msg.key(), msg.value(), msg.partition()
            assert isinstance(key, bytes) and isinstance(value, bytes) and partition is not None
            out.append((key, DeploymentEvent.model_validate(codec.decode(value)), partition))
    finally:
        consumer.close()
    return out


@pytest.fixture(name="consume")
def consume_fixture() -> Consume:
    """Reads every deployment event of a topic from the beginning (see `consume`)."""
    return consume


_LEDGER_TENANTS = ("acme", "globex")
_LEDGER_AGES = ((1, 3), (200, 2))  # (days ago, rows per tenant)


def _ledger_rows(tenant: str, index: int, days_ago: int) -> tuple[Row, Row, Row]:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days_ago, minutes=index)
    event = deployment_event(
        deployment_id=f"{tenant}-dep-{days_ago}-{index}",
        event_type="succeeded",
        service=f"{tenant}-svc",
        tenant=tenant,
        occurred_at=at,
    )
    return ledger_rows(event, index, evidence={"environment": "prod"})


def _seed_ledger(store: LedgerStore, settings: Settings) -> None:
    events, records, alerts = [], [], []
    for tenant in _LEDGER_TENANTS:
        for days_ago, count in _LEDGER_AGES:
            for index in range(count):
                event, record, alert = _ledger_rows(tenant, index, days_ago)
                events.append(event)
                records.append(record)
                alerts.append(alert)
    # Stored the way the sink stores rows (chain and retention columns stamped).
    writer = LedgerWriter(store, load_policy(settings.policy_file))
    writer.write_rows({ddl.EVENTS: events, ddl.RECORDS: records, ddl.ALERTS: alerts})


@pytest.fixture
def ledger(settings: Settings) -> Iterator[LedgerStore]:
    """A chDB ledger in the test's data dir; closed at teardown. Tenants acme and globex have
    5 events, 5 records (one per deployment) and 5 alerts each: 3 one day old, 2 200 days
    old (occurred_at / started_at)."""
    with LedgerStore.open(settings) as store:
        store.ensure_schema()
        _seed_ledger(store, settings)
        yield store


# --- webhook deliveries (tests/fixtures/webhooks: provider payloads from their docs) ----------
_WEBHOOK_FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"


def signed(provider: str, headers: dict[str, str], body: bytes, secret: str) -> dict[str, str]:
    """`headers` with the provider's authentication for `body` under `secret`."""
    out = dict(headers)
    if provider == "github":
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        out["X-Hub-Signature-256"] = f"sha256={digest}"
    elif provider == "gitlab":
        out["X-Gitlab-Token"] = secret
    elif provider == "alertmanager":  # its http_config `authorization`
        out["Authorization"] = f"Bearer {secret}"
    elif provider == "harbor":  # the webhook's auth header, sent as is
        out["Authorization"] = secret
    elif provider == "artifactory":
        out["X-JFrog-Event-Auth"] = secret
    elif provider == "pagerduty":
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        out["X-PagerDuty-Signature"] = f"v1={digest}"
    else:
        out["X-Shipledger-Token"] = secret
    return out


def _webhook_request(
    provider: str, name: str, mutate: Mutate | None = None
) -> tuple[dict[str, str], bytes]:
    fixture = json.loads((_WEBHOOK_FIXTURES / provider / f"{name}.json").read_text())
    payload = copy.deepcopy(fixture["body"])
    if mutate is not None:
        mutate(payload)
    body = json.dumps(payload).encode()
    return signed(provider, fixture["headers"], body, SECRET), body


@pytest.fixture
def webhook_request() -> RawRequest:
    """`(provider, fixture name, mutate=None) -> (headers, body)`, signed with
    `SECRET` the way the provider signs."""
    return _webhook_request


@pytest.fixture
def webhook_secret() -> str:
    """The secret `webhook_request` signs with."""
    return SECRET


@pytest.fixture
def sign() -> Callable[[str, dict[str, str], bytes, str], dict[str, str]]:
    """`(provider, headers, body, secret) -> headers` authenticated for that provider."""
    return signed


# --- a Confluent-compatible Schema Registry on loopback ------------------------------------
SCHEMA_REGISTRY_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class StandInSchemaRegistry(ThreadingHTTPServer):
    """A stand-in for a Confluent-compatible Schema Registry, because no real one can run
    here (Confluent's needs a JVM and Docker; Karapace is not on the package index this machine
    reaches). It implements, as Confluent documents them, the calls `SchemaRegistryClient`
    makes for shipledger: `POST /subjects/{s}/versions` (register: `{"id"}`, one global id per
    schema, the same under any subject), `POST /subjects/{s}` (look up: 40401 no subject,
    40403 not in it), `GET /schemas/ids/{id}`, `GET /subjects/{s}/versions` and
    `GET /subjects/{s}/versions/latest`, answering `application/vnd.schemaregistry.v1+json`.
    Ids start at `first_id` (1001 by default: unlike the catalog's 1..n, so a message framed
    with one cannot pass for the other). A subject in `incompatible` refuses new versions
    (409, Confluent's body); `fail_with` answers every request with that status."""

    def __init__(self, first_id: int = 1001) -> None:
        super().__init__(("127.0.0.1", 0), _RegistryHandler)
        self.first_id = first_id
        self.schemas: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        self.content_types: set[str] = set()
        self.incompatible: set[str] = set()
        self.fail_with: int | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def id_of(self, schema: str) -> int:
        """The global id of a schema text (JSON-normalized), registering it if new."""
        key = json.dumps(json.loads(schema), sort_keys=True)
        for schema_id, text in self.schemas.items():
            if json.dumps(json.loads(text), sort_keys=True) == key:
                return schema_id
        schema_id = self.first_id + len(self.schemas)
        self.schemas[schema_id] = schema
        return schema_id

    def latest_id(self, subject: str) -> int:
        """The id of the newest version registered under `subject`."""
        return self.subjects[subject][-1]


class _RegistryHandler(BaseHTTPRequestHandler):
    server: StandInSchemaRegistry

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _reply(self, status: int, body: Any) -> None:
        answer(self, status, body, content_type=SCHEMA_REGISTRY_CONTENT_TYPE)

    def _not_found(self, code: int, what: str) -> None:
        self._reply(404, {"error_code": code, "message": f"{what} not found."})

    def _route(self, method: str) -> list[str] | None:
        path = urlsplit(self.path).path
        self.server.requests.append((method, path))
        if self.server.fail_with is not None:
            self._reply(
                self.server.fail_with, {"error_code": 50001, "message": "Error in the store"}
            )
            return None
        return [unquote(part) for part in path.strip("/").split("/")]

    def _version(self, subject: str, schema_id: int) -> dict[str, Any]:
        return {
            "subject": subject,
            "id": schema_id,
            "version": self.server.subjects[subject].index(schema_id) + 1,
            "schema": self.server.schemas[schema_id],
        }

    def do_GET(self) -> None:
        parts = self._route("GET")
        registry = self.server
        if parts is None:
            return
        if len(parts) == 3 and parts[:2] == ["schemas", "ids"]:
            schema_id = int(parts[2])
            if schema_id not in registry.schemas:
                self._not_found(40403, f"Schema {schema_id}")
            else:
                self._reply(200, {"schema": registry.schemas[schema_id]})
            return
        if len(parts) >= 3 and parts[0] == "subjects" and parts[2] == "versions":
            subject = parts[1]
            if subject not in registry.subjects:
                self._not_found(40401, f"Subject '{subject}'")
            elif len(parts) == 3:
                self._reply(200, list(range(1, len(registry.subjects[subject]) + 1)))
            else:
                self._reply(200, self._version(subject, registry.latest_id(subject)))
            return
        self._not_found(404, self.path)

    def do_POST(self) -> None:
        parts = self._route("POST")
        registry = self.server
        if parts is None:
            return
        registry.content_types.add(self.headers.get("Content-Type", ""))
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body.get("schemaType", "AVRO") != "AVRO" or parts[0] != "subjects":
            self._reply(422, {"error_code": 42201, "message": "Invalid schema"})
            return
        subject = parts[1]
        if len(parts) == 3 and parts[2] == "versions" and subject in registry.incompatible:
            message = "Schema being registered is incompatible with an earlier schema for subject"
            self._reply(409, {"error_code": 409, "message": message})
        elif len(parts) == 3 and parts[2] == "versions":
            schema_id = registry.id_of(body["schema"])
            versions = registry.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
            self._reply(200, {"id": schema_id})
        elif subject not in registry.subjects:
            self._not_found(40401, f"Subject '{subject}'")
        else:
            schema_id = registry.id_of(body["schema"])
            if schema_id in registry.subjects[subject]:
                self._reply(200, self._version(subject, schema_id))
            else:
                self._not_found(40403, "Schema")


@pytest.fixture
def schema_registry() -> Iterator[StandInSchemaRegistry]:
    """A stand-in Schema Registry on a loopback port (ids from 1001); the process's schema ids
    are the catalog's again afterwards."""
    with serving(StandInSchemaRegistry()) as server:
        try:
            yield server
        finally:
            bind_schema_ids(None)


# --- a real slapd and a real OIDC issuer (approvers: tests/unit/test_identity.py, the gate) ---

SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")


def _ssha(password: str) -> str:
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _directory_ldif() -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups",
        f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services",
        f"dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: shipledger-reader\nuserPassword: {_ssha(READER_PASSWORD)}",
    ]
    for user, (password, _) in PEOPLE.items():
        entries.append(
            f"dn: uid={user},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {user}\n"
            f"cn: {user.title()}\nsn: {user.title()}\nuserPassword: {_ssha(password)}"
        )
    for group in ("cab", "sre"):
        members = "".join(
            f"\nmember: uid={user},ou=people,{SUFFIX}"
            for user, (_, groups) in PEOPLE.items()
            if group in groups
        )
        entries.append(
            f"dn: cn={group},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {group}{members}"
        )
    return "\n\n".join(entries) + "\n"


def _slapd_conf(workdir: Path) -> str:
    return f"""
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {workdir}/slapd.pid
argsfile {workdir}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 10485760
suffix "{SUFFIX}"
rootdn "cn=admin,{SUFFIX}"
rootpw {_ssha(uuid.uuid4().hex)}
directory {workdir}/db
access to attrs=userPassword by self read by anonymous auth by * none
access to * by users read by * none
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"slapd exited with {proc.returncode}: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"slapd did not listen on {port} within 30 s: {log.read_text()}")


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """A slapd on a loopback port serving PEOPLE and the groups cab and sre; a missing slapd
    fails the test (`make test-deps` installs it), never skips it."""
    if not SLAPD.exists() or not shutil.which("ldapadd"):
        pytest.fail("Debian's slapd and ldap-utils are needed: run `make test-deps` (as root)")
    workdir = tmp_path_factory.mktemp("slapd")
    (workdir / "db").mkdir()
    conf = workdir / "slapd.conf"
    conf.write_text(_slapd_conf(workdir))
    ldif = workdir / "directory.ldif"
    ldif.write_text(_directory_ldif())
    subprocess.run([SLAPADD, "-f", conf, "-l", ldif], check=True, capture_output=True)
    port = _free_port()
    log = workdir / "slapd.log"
    with log.open("wb") as out:
        # -d 0: stay in the foreground (no fork), so the test owns the process.
        proc = subprocess.Popen(
            [SLAPD, "-f", conf, "-h", f"ldap://127.0.0.1:{port}/", "-d", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, proc, log)
        yield Slapd(f"ldap://127.0.0.1:{port}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def issuer() -> Iterator[Issuer]:
    """An OIDC issuer on loopback (`Issuer`)."""
    server = Issuer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def other_issuer() -> Iterator[Issuer]:
    """A second, unrelated OIDC issuer on loopback."""
    server = Issuer()
    yield server
    server.close()


@pytest.fixture
def unused_port() -> int:
    """A loopback port nobody listens on (now): a provider that is down."""
    return _free_port()


@pytest.fixture
def free_ports() -> Callable[[], int]:
    """A loopback port nobody listens on (now) at each call: for several servers of a test."""
    return _free_port


# --- ticketing and webhook receivers on loopback (escalation) ----------------------------
SNOW_USER, SNOW_PASSWORD = "shipledger.bot", "snow-pass"
JIRA_EMAIL, JIRA_TOKEN = "bot@example.org", "jira-api-token"
HOOK_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
# Paging and chat receivers (alert routing): the secrets each accepts.
PD_ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"
GENIE_KEY = "eb243592-faa2-4ba2-a551q-1afdf565c889"
SLACK_HOOK_PATH = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
AM_TOKEN = "alertmanager-bearer-token"
_PD_SEVERITIES = {"critical", "error", "warning", "info"}
_SLACK_BLOCKS = {"header", "section", "context", "divider", "actions", "image"}
_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
_ADF_NODES = {"doc", "paragraph", "text", "bulletList", "listItem"}


def _adf_problems(node: Any, path: str = "description") -> list[str]:
    """What is wrong with an Atlassian Document Format node (the subset we send)."""
    if not isinstance(node, dict) or node.get("type") not in _ADF_NODES:
        return [f"{path}: not an ADF node: {node!r:.80}"]
    if node["type"] == "text":
        ok = isinstance(node.get("text"), str) and node["text"]
        return [] if ok else [f"{path}: a text node needs non-empty text"]
    content = node.get("content")
    if not isinstance(content, list):
        return [f"{path}: {node['type']} needs a content list"]
    return [p for i, child in enumerate(content) for p in _adf_problems(child, f"{path}.{i}")]


class StandInReceivers(ThreadingHTTPServer):
    """A stand-in for three receivers, because none can be reached from here: ServiceNow's
    Table API (`POST /api/now/table/{incident,change_task}`, `GET` with `sysparm_query`),
    Jira Cloud REST v3 (`POST /rest/api/3/issue`, `GET /rest/api/3/search/jql`) and a
    Standard Webhooks receiver (`POST /hooks/<name>`). It checks each request against the
    providers' documented shape (method, path, basic auth, JSON fields: ServiceNow's
    short_description, description, urgency/impact 1-3, correlation_id; Jira's
    fields.project.key, summary, issuetype, a description in Atlassian Document Format; the
    webhook's signature, verified with the `standardwebhooks` library), answers what they
    answer (201 `{"result": {...}}`, 201 `{"id", "key", "self"}`), and refuses anything else
    with 400, listed in `problems` (a test asserts it stays empty).

    Also a stand-in for the paging and chat receivers of alert routing, per their public
    docs: PagerDuty Events API v2 (`POST /v2/enqueue`: routing_key, event_action
    trigger/resolve/acknowledge, dedup_key at most 255, a trigger's payload.summary at most
    1024, source, severity critical/error/warning/info; 202 `{"status": "success",
    "dedup_key"}`), kept in `pd_events` and `incidents_open` (dedup_key → open); Opsgenie's
    Alert API v2 (`POST /v2/alerts` with `GenieKey` auth, message at most 130, alias,
    priority P1-P5; `POST /v2/alerts/<alias>/close?identifierType=alias`; 202 `{"result",
    "requestId"}`), kept in `genie` (alias → alert, with its `status`); a Slack incoming
    webhook (`POST /services/T…/B…/…`: `text` and Block Kit `blocks`; 200 `ok`, 404
    `no_service` for another path), kept in `slack`; an Alertmanager webhook_config receiver
    (`POST /alertmanager/<name>`, bearer token: version "4", status firing/resolved, alerts
    with labels, annotations, RFC 3339 startsAt/endsAt and a 16-hex fingerprint), kept in
    `am`.

    And the two incident-note APIs suspects are posted to (docs/triage.md): PagerDuty's REST
    API `POST /incidents/<id>/notes` (``Authorization: Token token=<key>``, a ``From``
    email, `{"note": {"content"}}`; 201 `{"note": {...}}`), kept in `pd_notes`; Opsgenie's
    `POST /v2/alerts/<id>/notes?identifierType=id` (`GenieKey`, `note` at most 25000
    characters; 202), kept in `genie_notes`; both by incident/alert id.

    Failure injection: `fail[prefix]` is a list of statuses answered, one per request, by
    the next requests whose path starts with `prefix` (`always[prefix]`: every request);
    `drop_answer[prefix]` > 0 creates the ticket, then closes the connection without an
    answer (a crash between the provider's 201 and our record); `slow_s` delays every create
    (a slow provider); while `answering` is clear, every create waits until it is set (a
    provider stuck for as long as a test needs, whatever the machine's load)."""

    #: The secrets each receiver accepts, as SHIPLEDGER_RECEIVER_SECRETS holds them.
    secrets: dict[str, str] = {
        "servicenow": f"{SNOW_USER}:{SNOW_PASSWORD}",
        "jira": f"{JIRA_EMAIL}:{JIRA_TOKEN}",
        "webhook": HOOK_SECRET,
        "pagerduty": PD_ROUTING_KEY,
        "opsgenie": GENIE_KEY,
        "slack": SLACK_HOOK_PATH,
        "alertmanager": AM_TOKEN,
    }
    #: The REST API token of PagerDuty's notes (not the Events API routing key).
    pd_api_token = "y_NbAkKc66ryYTWUXYEu"
    pd_from = "oncall@example.com"

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiversHandler)
        self.lock = threading.Lock()
        self.incidents: list[dict[str, Any]] = []
        self.issues: list[dict[str, Any]] = []
        self.hooks: dict[str, dict[str, Any]] = {}
        self.hook_requests = 0
        self.problems: list[str] = []
        self.fail: dict[str, list[int]] = {}
        self.always: dict[str, int] = {}
        self.drop_answer: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        self.slow_s = 0.0
        self.answering = threading.Event()
        self.answering.set()
        self.pd_events: list[dict[str, Any]] = []
        self.incidents_open: dict[str, bool] = {}
        self.genie: dict[str, dict[str, Any]] = {}
        self.slack: list[dict[str, Any]] = []
        self.am: list[dict[str, Any]] = []
        self.pd_notes: dict[str, list[str]] = {}
        self.genie_notes: dict[str, list[str]] = {}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _ReceiversHandler(BaseHTTPRequestHandler):
    server: StandInReceivers

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        answer(self, status, body, headers=headers)

    def _refuse(self, reason: str) -> None:
        with self.server.lock:
            self.server.problems.append(f"{self.command} {self.path}: {reason}")
        self._reply(400, {"error": {"message": reason}})

    def _injected(self, path: str) -> bool:
        """Answer an injected failure, if one is due for `path`."""
        with self.server.lock:
            status = next(
                (code for prefix, code in self.server.always.items() if path.startswith(prefix)),
                0,
            )
            queue = next(
                (q for prefix, q in self.server.fail.items() if path.startswith(prefix) and q), None
            )
            if not status and queue:
                status = queue.pop(0)
        if not status:
            return False
        self._reply(status, {"error": "injected"}, {"Retry-After": "0"} if status == 429 else {})
        return True

    def _drop(self, path: str) -> bool:
        with self.server.lock:
            for prefix, left in self.server.drop_answer.items():
                if path.startswith(prefix) and left > 0:
                    self.server.drop_answer[prefix] = left - 1
                    return True
        return False

    def _basic(self, user: str, password: str) -> bool:
        expected = base64.b64encode(f"{user}:{password}".encode()).decode()
        return self.headers.get("Authorization") == f"Basic {expected}"

    def _json(self) -> tuple[bytes, Any]:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return raw, None
        try:
            return raw, json.loads(raw)
        except ValueError:
            return raw, None

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query))
        with self.server.lock:
            self.server.requests.append(("GET", parts.path))
        if self._injected(parts.path):
            return
        if parts.path in ("/api/now/table/incident", "/api/now/table/change_task"):
            if not self._basic(SNOW_USER, SNOW_PASSWORD):
                self._reply(401, {"error": {"message": "User Not Authenticated"}})
                return
            field, _, value = query.get("sysparm_query", "").partition("=")
            if field != "correlation_id" or not value:
                self._refuse(f"expected sysparm_query=correlation_id=..., got {query}")
                return
            table = parts.path.rsplit("/", 1)[1]
            with self.server.lock:
                found = [
                    {"sys_id": i["sys_id"], "number": i["number"]}
                    for i in self.server.incidents
                    if i["table"] == table and i["body"]["correlation_id"] == value
                ]
            self._reply(200, {"result": found[: int(query.get("sysparm_limit", "10000"))]})
            return
        if parts.path == "/rest/api/3/search/jql":
            if not self._basic(JIRA_EMAIL, JIRA_TOKEN):
                self._reply(401, {"errorMessages": ["not authenticated"]})
                return
            match = re.fullmatch(r'project = "([A-Z0-9_]+)" AND labels = "([^"]+)"', query["jql"])
            if match is None:
                self._refuse(f"unexpected JQL {query.get('jql')!r}")
                return
            with self.server.lock:
                found = [
                    {"id": i["id"], "key": i["key"], "self": i["self"]}
                    for i in self.server.issues
                    if i["project"] == match[1] and match[2] in i["body"]["fields"]["labels"]
                ]
            limit = int(query.get("maxResults", "50"))
            self._reply(200, {"issues": found[:limit], "isLast": True})
            return
        self._refuse("no such route")

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        raw, body = self._json()
        with self.server.lock:
            self.server.requests.append(("POST", parts.path))
        if self.server.slow_s:
            time.sleep(self.server.slow_s)  # the provider is slow, not the test
        self.server.answering.wait(timeout=600)  # bounded: a failed test frees its threads
        if self._injected(parts.path):
            return
        if parts.path in ("/api/now/table/incident", "/api/now/table/change_task"):
            self._servicenow(parts.path.rsplit("/", 1)[1], body, dict(parse_qsl(parts.query)))
        elif parts.path == "/rest/api/3/issue":
            self._jira(body)
        elif parts.path.startswith("/hooks/"):
            self._hook(raw, body)
        elif parts.path == "/v2/enqueue":
            self._pagerduty(body)
        elif parts.path.startswith("/incidents/"):
            self._pd_note(parts.path, body)
        elif parts.path.startswith("/v2/alerts"):
            self._opsgenie(parts.path, body, dict(parse_qsl(parts.query)))
        elif parts.path.startswith("/services/"):
            self._slack(parts.path, body)
        elif parts.path.startswith("/alertmanager/"):
            self._alertmanager(body)
        else:
            self._refuse("no such route")

    def _servicenow(self, table: str, body: Any, query: dict[str, str]) -> None:
        if not self._basic(SNOW_USER, SNOW_PASSWORD):
            self._reply(401, {"error": {"message": "User Not Authenticated"}})
            return
        if not isinstance(body, dict):
            self._refuse("the body must be a JSON object (Content-Type: application/json)")
            return
        problems = [
            f"{name}: missing or not a string"
            for name in ("short_description", "description", "correlation_id")
            if not isinstance(body.get(name), str) or not body[name]
        ]
        problems += [
            f"{name} must be '1', '2' or '3'"
            for name in ("urgency", "impact")
            if body.get(name) not in ("1", "2", "3")
        ]
        if len(body.get("short_description", "")) > 160:
            problems.append("short_description longer than 160 characters")
        if problems:
            self._refuse("; ".join(problems))
            return
        with self.server.lock:
            prefix = "INC" if table == "incident" else "CTASK"
            count = sum(1 for i in self.server.incidents if i["table"] == table)
            record = {
                "table": table,
                "sys_id": uuid.uuid4().hex,
                "number": f"{prefix}{10001 + count:07d}",
                "body": body,
            }
            self.server.incidents.append(record)
        if self._drop(f"/api/now/table/{table}"):
            self.close_connection = True
            return
        fields = query.get("sysparm_fields", "").split(",")
        result = {k: v for k, v in {**body, **record}.items() if k in fields or not fields[0]}
        self._reply(201, {"result": result})

    def _jira(self, body: Any) -> None:
        if not self._basic(JIRA_EMAIL, JIRA_TOKEN):
            self._reply(401, {"errorMessages": ["not authenticated"]})
            return
        fields = body.get("fields") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            self._refuse("the body needs a `fields` object")
            return
        problems = []
        if not isinstance(fields.get("project"), dict) or not fields["project"].get("key"):
            problems.append("fields.project.key missing")
        if not isinstance(fields.get("summary"), str) or not fields["summary"]:
            problems.append("fields.summary missing")
        if not isinstance(fields.get("issuetype"), dict) or not fields["issuetype"].get("name"):
            problems.append("fields.issuetype.name missing")
        description = fields.get("description")
        if not isinstance(description, dict) or description.get("version") != 1:
            problems.append("fields.description must be an ADF document (version 1)")
        else:
            problems += _adf_problems(description)
        labels = fields.get("labels", [])
        if any(not isinstance(label, str) or " " in label for label in labels):
            problems.append("labels cannot contain spaces")
        if problems:
            self._refuse("; ".join(problems))
            return
        with self.server.lock:
            project = fields["project"]["key"]
            number = 1 + sum(1 for i in self.server.issues if i["project"] == project)
            issue_id = str(10000 + len(self.server.issues))
            issue = {
                "id": issue_id,
                "key": f"{project}-{number}",
                "self": f"{self.server.url}/rest/api/3/issue/{issue_id}",
                "project": project,
                "body": body,
            }
            self.server.issues.append(issue)
        if self._drop("/rest/api/3/issue"):
            self.close_connection = True
            return
        self._reply(201, {"id": issue["id"], "key": issue["key"], "self": issue["self"]})

    def _hook(self, raw: bytes, body: Any) -> None:
        headers = dict(self.headers.items())
        try:
            Webhook(HOOK_SECRET).verify(raw, headers)
        except WebhookVerificationError as exc:
            self._refuse(f"signature: {exc}")
            return
        if not isinstance(body, dict) or body.get("type") not in (
            "shipledger.alert.escalated",
            "shipledger.alert.resolved",
        ):
            self._refuse("not a shipledger.alert.escalated or .resolved message")
            return
        with self.server.lock:
            self.server.hook_requests += 1
            # A Standard Webhooks receiver deduplicates on webhook-id.
            self.server.hooks.setdefault(self.headers["webhook-id"], body)
            key = f"HOOK-{list(self.server.hooks).index(self.headers['webhook-id']) + 1}"
        self._reply(200, {"key": key, "url": f"{self.server.url}/hooks/view/{key}"})

    def _pagerduty(self, body: Any) -> None:
        if not isinstance(body, dict):
            self._refuse("the body must be a JSON object")
            return
        problems = []
        if body.get("routing_key") != PD_ROUTING_KEY:
            problems.append("routing_key: not a known integration key")
        action = body.get("event_action")
        if action not in ("trigger", "resolve", "acknowledge"):
            problems.append(f"event_action: {action!r}")
        key = body.get("dedup_key")
        if not isinstance(key, str) or not key or len(key) > 255:
            problems.append("dedup_key: a string of 1..255 characters")
        if action == "trigger":
            payload = body.get("payload")
            if not isinstance(payload, dict):
                problems.append("payload: required for a trigger")
            else:
                summary = payload.get("summary")
                if not isinstance(summary, str) or not summary or len(summary) > 1024:
                    problems.append("payload.summary: a string of 1..1024 characters")
                if not isinstance(payload.get("source"), str) or not payload["source"]:
                    problems.append("payload.source missing")
                if payload.get("severity") not in _PD_SEVERITIES:
                    problems.append(f"payload.severity: {payload.get('severity')!r}")
        if problems:
            self._reply(400, {"status": "invalid event", "errors": problems})
            with self.server.lock:
                self.server.problems.append("POST /v2/enqueue: " + "; ".join(problems))
            return
        assert isinstance(key, str)
        with self.server.lock:
            self.server.pd_events.append(body)
            if action == "trigger":
                self.server.incidents_open[key] = True
            elif action == "resolve" and key in self.server.incidents_open:
                self.server.incidents_open[key] = False
        self._reply(202, {"status": "success", "message": "Event processed", "dedup_key": key})

    def _pd_note(self, path: str, body: Any) -> None:
        incident = re.fullmatch(r"/incidents/([^/]+)/notes", path)
        if self.headers.get("Authorization") != f"Token token={self.server.pd_api_token}":
            self._reply(401, {"error": {"message": "Unauthorized", "code": 2006}})
            return
        content = body.get("note", {}).get("content") if isinstance(body, dict) else None
        if incident is None or not self.headers.get("From") or not isinstance(content, str):
            self._refuse("a note needs /incidents/<id>/notes, a From header and note.content")
            return
        with self.server.lock:
            self.server.pd_notes.setdefault(unquote(incident[1]), []).append(content)
        self._reply(201, {"note": {"id": "PWL7QXS", "content": content}})

    def _opsgenie(self, path: str, body: Any, query: dict[str, str]) -> None:
        if self.headers.get("Authorization") != f"GenieKey {GENIE_KEY}":
            self._reply(401, {"message": "Could not authenticate", "took": 0.0})
            return
        if not isinstance(body, dict):
            self._refuse("the body must be a JSON object")
            return
        request_id = str(uuid.uuid4())
        note = re.fullmatch(r"/v2/alerts/([^/]+)/notes", path)
        if note is not None:
            text = body.get("note")
            if query.get("identifierType") != "id" or not isinstance(text, str) or not text:
                self._refuse(f"a note needs identifierType=id and a note, got {query} {body}")
                return
            if len(text) > 25000:
                self._refuse("note: longer than 25000 characters")
                return
            with self.server.lock:
                self.server.genie_notes.setdefault(unquote(note[1]), []).append(text)
            self._reply(202, {"result": "Request will be processed", "requestId": request_id})
            return
        close = re.fullmatch(r"/v2/alerts/([^/]+)/close", path)
        if close is not None:
            if query.get("identifierType") != "alias":
                self._refuse(f"closing by alias needs identifierType=alias, got {query}")
                return
            with self.server.lock:
                closed = self.server.genie.get(unquote(close[1]))
                if closed is not None:
                    closed["status"] = "closed"
            self._reply(202, {"result": "Request will be processed", "requestId": request_id})
            return
        if path != "/v2/alerts":
            self._refuse("no such route")
            return
        problems = []
        message = body.get("message")
        if not isinstance(message, str) or not message or len(message) > 130:
            problems.append("message: a string of 1..130 characters")
        alias = body.get("alias")
        if not isinstance(alias, str) or not alias or len(alias) > 512:
            problems.append("alias: a string of 1..512 characters")
        if body.get("priority", "P3") not in ("P1", "P2", "P3", "P4", "P5"):
            problems.append(f"priority: {body.get('priority')!r}")
        if len(body.get("description", "")) > 15000:
            problems.append("description longer than 15000 characters")
        if problems:
            self._refuse("; ".join(problems))
            return
        assert isinstance(alias, str)
        with self.server.lock:
            known = self.server.genie.get(alias)
            if known is not None and known["status"] == "open":
                known["count"] += 1  # Opsgenie deduplicates open alerts by alias
            else:
                self.server.genie[alias] = {"body": body, "status": "open", "count": 1}
        self._reply(202, {"result": "Request will be processed", "requestId": request_id})

    def _slack(self, path: str, body: Any) -> None:
        if path != SLACK_HOOK_PATH:
            self._text(404, "no_service")
            return
        problems = []
        if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"]:
            problems.append("text: a non-empty string (the notification fallback)")
        blocks = body.get("blocks", []) if isinstance(body, dict) else None
        if not isinstance(blocks, list) or len(blocks) > 50:
            problems.append("blocks: a list of at most 50 blocks")
        else:
            for i, block in enumerate(blocks):
                if not isinstance(block, dict) or block.get("type") not in _SLACK_BLOCKS:
                    problems.append(f"blocks.{i}: unknown block")
                elif block["type"] == "section" and not (block.get("text") or block.get("fields")):
                    problems.append(f"blocks.{i}: a section needs text or fields")
                elif len(block.get("fields", [])) > 10:
                    problems.append(f"blocks.{i}: at most 10 fields")
                elif block["type"] == "header" and (
                    block["text"].get("type") != "plain_text" or len(block["text"]["text"]) > 150
                ):
                    problems.append(f"blocks.{i}: a header is plain_text of at most 150")
        if problems:
            with self.server.lock:
                self.server.problems.append("POST slack: " + "; ".join(problems))
            self._text(400, "invalid_payload")
            return
        with self.server.lock:
            self.server.slack.append(body)
        self._text(200, "ok")

    def _text(self, status: int, text: str) -> None:
        answer(self, status, text.encode(), content_type="text/plain")

    def _alertmanager(self, body: Any) -> None:
        if self.headers.get("Authorization") != f"Bearer {AM_TOKEN}":
            self._reply(401, {"error": "unauthorized"})
            return
        problems = []
        if not isinstance(body, dict):
            self._refuse("the body must be a JSON object")
            return
        if body.get("version") != "4":
            problems.append("version must be '4'")
        if body.get("status") not in ("firing", "resolved"):
            problems.append(f"status: {body.get('status')!r}")
        for name in ("receiver", "groupKey", "externalURL"):
            if not isinstance(body.get(name), str):
                problems.append(f"{name}: a string")
        if not isinstance(body.get("truncatedAlerts"), int):
            problems.append("truncatedAlerts: an integer")
        for name in ("groupLabels", "commonLabels", "commonAnnotations"):
            if not isinstance(body.get(name), dict):
                problems.append(f"{name}: an object")
        alerts = body.get("alerts")
        if not isinstance(alerts, list) or not alerts:
            problems.append("alerts: a non-empty list")
            alerts = []
        for i, alert in enumerate(alerts):
            labels = alert.get("labels")
            if not isinstance(labels, dict) or "alertname" not in labels:
                problems.append(f"alerts.{i}.labels: an object with alertname")
            elif not all(isinstance(v, str) for v in labels.values()):
                problems.append(f"alerts.{i}.labels: string values")
            if not isinstance(alert.get("annotations"), dict):
                problems.append(f"alerts.{i}.annotations: an object")
            if alert.get("status") not in ("firing", "resolved"):
                problems.append(f"alerts.{i}.status")
            for name in ("startsAt", "endsAt"):
                if not _RFC3339.match(str(alert.get(name))):
                    problems.append(f"alerts.{i}.{name}: RFC 3339")
            if not re.fullmatch(r"[0-9a-f]{16}", str(alert.get("fingerprint"))):
                problems.append(f"alerts.{i}.fingerprint: 16 hex digits")
            if not isinstance(alert.get("generatorURL"), str):
                problems.append(f"alerts.{i}.generatorURL: a string")
        if problems:
            self._refuse("; ".join(problems))
            return
        with self.server.lock:
            self.server.am.append(body)
        self._text(200, "")


@pytest.fixture
def receivers() -> Iterator[StandInReceivers]:
    """The stand-in ServiceNow, Jira, webhook, PagerDuty, Opsgenie, Slack and Alertmanager
    receivers on a loopback port."""
    with serving(StandInReceivers()) as server:
        yield server
