"""What `shipledger emit` and `shipledger query` load: start-up is most of their wall time
(`make bench` times them), so the packages they do not need must stay out of them.

Each command runs in a fresh interpreter, which then lists the modules it loaded: no timing
involved, only which modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shipledger.lab.answer import answer
from shipledger.producers.journal import Journal
from shipledger.settings import Settings
from shipledger.stackfile import StackInfo, remove_stack, write_stack
from shipledger.topics import ensure_topics
from tests.kit import META, CliEnv

#: `emit started` with every required field.
_STARTED = ("started", *META)

#: Packages neither command needs: the API server's, the pipeline's, the ClickHouse clients,
#: rich (tables, drawn only by `--format table`), httpx (a query is one urllib request), and
#: what libraries load for features never used here (`shipledger.startup.without`): fastavro's
#: container-file codecs, structlog's greenlet support.
HEAVY = (
    "rich",
    "lz4",
    "backports",
    "greenlet",
    "pygments",
    "httpx",
    "clickhouse_connect",
    "chdb",
    "faust",
    "aiokafka",
    "fastapi",
    "starlette",
    "uvicorn",
)
#: What `emit` does without: the other event families' models (it keys by `DEPLOYMENT` only),
#: and PyYAML (the catalog is read from its JSON).
EMIT_SKIPS = ("shipledger.schemas.family_models", "yaml")
#: What `emit` to an embedded stack's broker does without: the journal takes its lock with
#: `fcntl` (filelock loads only where the spool takes one).
JOURNAL_SKIPS = ("filelock",)
#: What only running a query here needs (a stack's API runs it there).
QUERY_ENGINE = (
    "confluent_kafka",
    "fastavro",
    "yaml",
    "shipledger.sinks.ledger.ddl",
    "shipledger.sinks.ledger.query_guard",
    "shipledger.sinks.ledger.reader",
)

#: Runs `shipledger <argv[2:]>` in this interpreter, then writes the modules it loaded (among
#: those named in argv[1], a JSON list) and whether the garbage collector runs again (`main`
#: pauses it while the command's modules load) to stderr's last line.
_RUN = """
import gc, json, sys
from shipledger.cli import main
watched = json.loads(sys.argv[1])
try:
    main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
loaded = [m for m in watched if m in sys.modules]
from pydantic.plugin import _loader
plugins = _loader._plugins
report = {"code": code, "loaded": loaded, "gc": gc.isenabled(), "plugins": plugins}
print(json.dumps(report), file=sys.stderr)
"""


def _run(env: dict[str, str], cwd: Path, watched: tuple[str, ...], *args: str) -> dict[str, Any]:
    """`shipledger *args` in a fresh interpreter: its exit code, stdout and the `watched`
    modules it loaded."""
    done = subprocess.run(
        [sys.executable, "-c", _RUN, json.dumps(watched), *args],
        env=env,
        cwd=cwd,  # not the repo root, whose folders would shadow the installed package
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report: dict[str, Any] = json.loads(done.stderr.splitlines()[-1])
    return {**report, "stdout": done.stdout, "stderr": done.stderr}


def test_emit_loads_no_heavy_package(settings: Settings, cli_env: CliEnv, tmp_path: Path) -> None:
    env = cli_env(settings, "")  # no broker, no stack: the event is spooled
    run = _run(env, tmp_path, HEAVY + EMIT_SKIPS, "emit", *_STARTED)
    assert run["code"] == 0, run["stderr"]
    assert run["stdout"].strip(), "emit prints the event id"
    assert run["loaded"] == []
    assert run["gc"]
    assert run["plugins"] == {}, "pydantic's plugin discovery is skipped"


def test_emit_to_an_embedded_stack_journals_without_filelock(
    settings: Settings, cli_env: CliEnv, tmp_path: Path, broker: str
) -> None:
    """The broker a (registered) embedded stack runs: the event is journaled, then sent."""
    ensure_topics(settings, broker)
    journal = settings.data_dir / "journal"
    info = StackInfo(
        bootstrap=broker,
        pid=os.getpid(),
        clickhouse_url=settings.resolved_clickhouse_url,
        journal=str(journal),
    )
    write_stack(settings, info)
    try:
        run = _run(cli_env(settings, broker), tmp_path, HEAVY + JOURNAL_SKIPS, "emit", *_STARTED)
    finally:
        remove_stack(settings)
    assert run["code"] == 0, run["stderr"]
    event_id = run["stdout"].strip()
    entries = [e for s in Journal(journal).segments() for e in Journal(journal).read(s).entries]
    assert [e.event_id for e in entries] == [event_id]
    assert not settings.resolved_spool_dir.exists() or not any(
        settings.resolved_spool_dir.glob("*.json")
    ), "sent, not spooled"
    assert run["loaded"] == []


@pytest.mark.parametrize("args", [("--help",), ("no-such-command",)])
def test_collections_resume_when_no_command_loads(
    settings: Settings, cli_env: CliEnv, tmp_path: Path, args: tuple[str, ...]
) -> None:
    run = _run(cli_env(settings, ""), tmp_path, (), *args)
    assert run["code"] == (0 if args == ("--help",) else 2)
    assert run["gc"]


class _StubApi(BaseHTTPRequestHandler):
    """`POST /v1/query` of a stack's API: one row, or the API's refusal for `SELECT nope`."""

    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"auth": self.headers["Authorization"], **body})
        reply: dict[str, Any]
        if body["sql"] == "SELECT nope":
            status, reply = 400, {"error": "refused: nope"}
        else:
            reply = {"columns": ["n"], "types": ["UInt64"], "rows": [[3]], "truncated": False}
            status = 200
        answer(self, status, reply)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads the requests, not a log."""


@pytest.fixture
def stack_api(settings: Settings) -> Iterator[str]:
    """A stub API registered as the running stack of `settings`' data dir (this process)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    info = StackInfo(
        bootstrap="127.0.0.1:1",
        pid=os.getpid(),
        clickhouse_url=settings.resolved_clickhouse_url,
        api_url=url,
        api_token="stub-token",
    )
    write_stack(settings, info)
    _StubApi.requests = []
    try:
        yield url
    finally:
        remove_stack(settings)
        server.shutdown()
        server.server_close()
        thread.join()


def test_query_through_a_stack_api_loads_no_heavy_package(
    settings: Settings, cli_env: CliEnv, tmp_path: Path, stack_api: str
) -> None:
    env = cli_env(settings, "")
    sql = "SELECT count() AS n FROM deployment_events"
    run = _run(env, tmp_path, HEAVY + QUERY_ENGINE, "query", "--format", "json", sql)
    assert run["code"] == 0, run["stderr"]
    assert json.loads(run["stdout"]) == [{"n": 3}]
    assert _StubApi.requests == [
        {"auth": "Bearer stub-token", "sql": sql, "tenant": None, "max_rows": 10000}
    ]
    assert run["loaded"] == []


def test_query_through_a_stack_api_reports_its_refusal(
    settings: Settings, cli_env: CliEnv, tmp_path: Path, stack_api: str
) -> None:
    run = _run(cli_env(settings, ""), tmp_path, (), "query", "SELECT nope")
    assert run["code"] == 1
    assert "refused: nope" in run["stderr"]
