"""`shipledger schemas register` against a Schema Registry over real loopback HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.schemas.register import CONTENT_TYPE, plan
from shipledger.schemas.registry import catalog


class StandInRegistry(ThreadingHTTPServer):
    """A stand-in for a Confluent-compatible Schema Registry, because no real one can run
    here: Confluent's needs a JVM and Docker, and Karapace is not installable from the
    package index this machine reaches. It implements what `register` uses, as Confluent
    documents it: `POST /subjects/{subject}/versions` with a JSON body `{"schema", "schemaType"}`
    answers `{"id": N}`, the same global id for the same schema text under any subject; a
    subject listed in `incompatible` answers 409 with Confluent's error body;
    `GET /subjects/{subject}/versions` lists versions.
    """

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ids: dict[str, int] = {}
        self.subjects: dict[str, list[int]] = {}
        self.incompatible: set[str] = set()
        self.fail_with: int | None = None
        self.content_types: set[str] = set()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    server: StandInRegistry

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _subject(self) -> str | None:
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
            return unquote(parts[1])
        return None

    def do_GET(self) -> None:
        subject = self._subject()
        if subject is None or subject not in self.server.subjects:
            self._reply(404, {"error_code": 40401, "message": f"Subject '{subject}' not found."})
            return
        self._reply(200, list(range(1, len(self.server.subjects[subject]) + 1)))

    def do_POST(self) -> None:
        registry = self.server
        registry.content_types.add(self.headers.get("Content-Type", ""))
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        subject = self._subject()
        if registry.fail_with is not None:
            self._reply(registry.fail_with, {"error_code": 50001, "message": "Error in the store"})
            return
        if subject is None or body.get("schemaType") != "AVRO":
            self._reply(422, {"error_code": 42201, "message": "Invalid schema"})
            return
        if subject in registry.incompatible:
            self._reply(
                409,
                {
                    "error_code": 409,
                    "message": "Schema being registered is incompatible with an earlier schema "
                    "for subject",
                },
            )
            return
        schema_id = registry.ids.setdefault(body["schema"], len(registry.ids) + 1)
        versions = registry.subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        self._reply(200, {"id": schema_id})


@pytest.fixture
def registry() -> Iterator[StandInRegistry]:
    server = StandInRegistry()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


Run = Callable[..., Any]


@pytest.fixture
def run(use_env: Callable[[dict[str, str]], None]) -> Run:
    use_env({"SHIPLEDGER_TOPIC_PREFIX": "acme."})

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(cli, ["schemas", "register", *args])

    return invoke


def test_every_subject_gets_every_version_in_order(registry: StandInRegistry, run: Run) -> None:
    result = run("--registry", registry.url)
    assert result.exit_code == 0, result.output
    items = plan(catalog(), "acme.")
    assert set(registry.subjects) == {i.subject for i in items}
    assert "acme.deployments.raw-value" in registry.subjects
    assert "acme.dlq-value" not in registry.subjects  # no schema, no subject
    # Oldest first: v1's text got the lower registry id.
    raw = registry.subjects["acme.deployments.raw-value"]
    assert len(raw) == 3 and raw[0] < raw[1] < raw[2]
    assert registry.content_types == {CONTENT_TYPE}
    # A fresh registry numbers in registration order, so some ids differ from the catalog's.
    assert (
        "registered acme.deployments.raw-value: io.shipledger.v1.DeploymentEvent v1 -> "
        "registry id 1 (same as catalog)"
    ) in result.output
    assert "registry id 2 (differs from catalog id 4)" in result.output
    assert "differ from the catalog's" in result.output


def test_registering_again_returns_the_same_ids(registry: StandInRegistry, run: Run) -> None:
    first = run("--registry", registry.url)
    second = run("--registry", registry.url)
    assert first.exit_code == second.exit_code == 0
    assert first.output == second.output


def test_dry_run_sends_nothing(registry: StandInRegistry, run: Run) -> None:
    result = run("--registry", registry.url, "--dry-run")
    assert result.exit_code == 0
    assert registry.subjects == {}
    assert "would register acme.changes-value: io.shipledger.v1.ChangeEvent v1" in result.output


def test_incompatible_schema_is_a_clear_error(registry: StandInRegistry, run: Run) -> None:
    registry.incompatible.add("acme.alerts-value")
    result = run("--registry", registry.url)
    assert result.exit_code == 1
    assert "acme.alerts-value (io.shipledger.v1.Alert v1)" in result.output
    assert "incompatible" in result.output and "HTTP 409" in result.output
    # What came before the failure was registered and reported.
    assert "registered acme.deployments.records-value" in result.output


def test_http_failures_and_unreachable_registry(registry: StandInRegistry, run: Run) -> None:
    registry.fail_with = 500
    result = run("--registry", registry.url)
    assert result.exit_code == 1
    assert "HTTP 500 from the registry: Error in the store" in result.output
    gone = run("--registry", "http://127.0.0.1:9")
    assert gone.exit_code == 1
    assert "cannot reach the registry" in gone.output
