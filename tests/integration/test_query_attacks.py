"""The attack corpus (`attack_queries.txt`) against a real stack with two tenants, and the
documented example queries, both through the real API on loopback with tenant acme's read
token.

Tenant globex's rows (hot and archived to cold Parquet), the auth db (with globex's webhook
secret), the stack file (with the operator token) and a passwd-like marker file are all on
the disk of the process that runs the queries. A leak is any of their marker strings, raw or
hex- or base64-encoded, in a response body, error messages included; any 5xx is a failure.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from shipledger.producers.api.auth import AuthStore
from shipledger.producers.api.server import ApiServer
from shipledger.query_cli import query as query_command
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks import rows
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.archive import archive
from shipledger.sinks.ledger.reader import LedgerReader
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.writer import LedgerWriter
from tests.kit import LONG_TEST_TIMEOUT_S, deployment_event, ledger_rows, registered_api

pytestmark = [
    pytest.mark.integration,
    pytest.mark.embedded_only("the attacks aim at chDB's own files beside the ledger"),
]

CORPUS = Path(__file__).with_name("attack_queries.txt")
REPO = Path(__file__).parents[2]
ATTACKER, VICTIM = "acme", "globex"
#: Queries too long to write in the corpus, by the name that stands for them there.
GENERATED = {
    "DEEP_NESTING": "SELECT " + "abs(" * 3000 + "1" + ")" * 3000,
    "GIANT_LITERAL": "SELECT length('" + "x" * 100_000 + "')",
    "GIANT_BODY": "SELECT length('" + "x" * 5_000_000 + "')",
    "WIDE_SELECT": "SELECT " + ", ".join(f"{i} AS c{i}" for i in range(8000)),
    "MANY_SUBQUERIES": "SELECT " + " + ".join(["(SELECT count() FROM deployments)"] * 400),
}


def load_corpus(paths: dict[str, str]) -> list[tuple[str, str]]:
    """(class, sql) of every attack, paths filled in (see the corpus file's header)."""
    attacks: list[tuple[str, str]] = []
    klass = ""
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            klass = line[1:-1]
            continue
        sql = json.loads(line) if line.startswith('"') else GENERATED.get(line, line)
        for name, path in paths.items():
            sql = sql.replace(f"${name}", path)
        attacks.append((klass, sql))
    return attacks


def corpus_settings(data_dir: Path) -> Settings:
    """A ledger in `data_dir` whose API lets the whole corpus through (no rate limit) while
    each query stays small: 2 s, 256 MiB, one thread."""
    return Settings(
        data_dir=data_dir,
        api_port=0,
        api_rate_per_s=1e6,  # the corpus, not the rate limit, is under test
        api_rate_burst=10**6,
        query_timeout_s=2.0,
        query_max_memory_bytes=256 * 1024**2,
        query_max_threads=1,
    )


def corpus_paths(settings: Settings, marker_file: Path) -> dict[str, str]:
    """What the corpus's path placeholders stand for: the auth db, the stack file, the
    marker file, the data dir and its cold files, under `settings`' data dir."""
    data_dir = settings.data_dir
    return {
        "AUTH_DB": str(settings.resolved_auth_db.resolve()),
        "STACK_FILE": str((data_dir / "stack.json").resolve()),
        "MARKER_FILE": str(marker_file.resolve()),
        "DATA_DIR": str(data_dir.resolve()),
        "COLD": str((data_dir / "cold").resolve()),
    }


def marked_rows(marker: str, offset: int, **fields: Any) -> tuple[rows.Row, rows.Row, rows.Row]:
    """`ledger_rows` of a deployment event whose service, actor, attributes, alert message
    and evidence all carry `marker` (its bytes in an answer are a leak); `fields` of the
    event besides."""
    event = deployment_event(
        service=f"svc-{marker}", actor=f"actor-{marker}", attributes={"secret": marker}, **fields
    )
    return ledger_rows(event, offset, message=f"message {marker}", evidence={"marker": marker})


@dataclass
class Stack:
    """The stack under attack and every secret a response must never contain."""

    url: str
    token: str
    markers: dict[str, str]
    paths: dict[str, str]
    settings: Settings

    def post(self, sql: str, token: str | None = None) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {token or self.token}",
            "Content-Type": "application/json",
        }
        # ASCII-escaped JSON: a lone surrogate in an attack is sent as `\udfff`.
        body = json.dumps({"sql": sql}).encode()
        return httpx.post(f"{self.url}/v1/query", content=body, headers=headers, timeout=120)

    def leaks(self, body: str) -> list[str]:
        """The markers whose bytes appear in `body`, raw, hex or base64."""
        found = []
        for name, marker in self.markers.items():
            raw = marker.encode()
            forms = (marker, raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode())
            if any(form in body for form in forms):
                found.append(name)
        return found


def _rows(tenant: str, marker: str, index: int, days_ago: int) -> tuple[rows.Row, rows.Row]:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(days=days_ago, minutes=index)
    event_row, _, alert_row = marked_rows(
        marker,
        index,
        deployment_id=f"{tenant}-{marker}-{index}",
        event_type="failed",
        tenant=tenant,
        occurred_at=at,
    )
    return event_row, alert_row


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Two tenants' rows (some archived to cold Parquet), the auth db, the stack file and a
    marker file on disk, the API on loopback serving tenant acme a read token."""
    data_dir = tmp_path_factory.mktemp("attack") / "data"
    settings = corpus_settings(data_dir)
    victim = f"globexsecret{uuid.uuid4().hex[:16]}"
    own = f"acmeown{uuid.uuid4().hex[:8]}"
    with LedgerStore.open(settings) as store:
        store.ensure_schema()
        events, alerts = [], []
        for tenant, marker in ((ATTACKER, own), (VICTIM, victim)):
            for index, days_ago in enumerate((1, 2, 200, 300)):
                event, alert = _rows(tenant, marker, index, days_ago)
                events.append(event)
                alerts.append(alert)
        LedgerWriter(store, load_policy(settings.policy_file)).write_rows(
            {ddl.EVENTS: events, ddl.ALERTS: alerts}
        )
        archive(store, cold_after_days=90)  # globex's old rows now also sit in Parquet files
        with (
            ApiServer(settings, "127.0.0.1:1", LedgerReader(store)) as server,
            registered_api(settings, server) as registered,
        ):
            operator = registered.api_token
            assert operator is not None
            webhook_secret = f"whsec{uuid.uuid4().hex}"
            marker_file = data_dir / "passwd"
            file_marker = f"root:x:0:0:{uuid.uuid4().hex}:/root:/bin/bash"
            marker_file.write_text(file_marker + "\n", encoding="utf-8")
            auth = AuthStore(settings.resolved_auth_db)
            try:
                auth.set_webhook_secret(VICTIM, "github", webhook_secret)
                token, _ = auth.create_token(ATTACKER, ("read",), name="attacker")
            finally:
                auth.close()
            with sqlite3.connect(settings.resolved_auth_db) as db:
                hashes = [h for (h,) in db.execute("SELECT token_sha256 FROM tokens")]
            db.close()
            markers = {
                "globex rows": victim,
                "webhook secret": webhook_secret,
                "operator token": operator.split("_", 2)[2],
                "marker file": file_marker.split(":")[4],
                "/etc/passwd": "root:x:0:0:",
                "sqlite header": "SQLite format 3",
            }
            markers |= {f"token hash {i}": h for i, h in enumerate(hashes)}
            paths = corpus_paths(settings, marker_file)
            yield Stack(server.url, token, markers, paths, settings)


@pytest.mark.timeout(LONG_TEST_TIMEOUT_S)
def test_the_attack_corpus_leaks_nothing_and_never_answers_5xx(stack: Stack) -> None:
    attacks = load_corpus(stack.paths)
    assert len(attacks) >= 200
    outcomes: Counter[tuple[str, int]] = Counter()
    leaks: list[str] = []
    server_errors: list[str] = []
    for klass, sql in attacks:
        answer = stack.post(sql)
        outcomes[(klass, answer.status_code)] += 1
        if os.environ.get("SHOW_ATTACKS"):
            print(answer.status_code, klass, ascii(sql[:100]), "->", answer.text[:200])
        if answer.status_code >= 500:
            server_errors.append(f"{answer.status_code} for {sql[:120]!r}: {answer.text[:300]}")
        if found := stack.leaks(answer.text):
            leaks.append(f"{found} in the answer to {sql[:120]!r}: {answer.text[:300]}")
    statuses = Counter(status for (_, status) in outcomes.elements())
    report = (
        f"{len(attacks)} attacks in {len({k for k, _ in attacks})} classes: "
        f"{dict(sorted(statuses.items()))} by status; {len(leaks)} leaks; "
        f"{len(server_errors)} 5xx"
    )
    print(report)  # the note's numbers (pytest -s, or -rA)
    written = [Path(stack.paths["DATA_DIR"]) / name for name in ("out.csv", "x", "backup")]
    assert not [path for path in [*written, Path("/tmp/leak.csv")] if path.exists()]
    assert not server_errors, "\n".join(server_errors)
    assert not leaks, "\n".join(leaks)
    assert statuses.keys() <= {200, 400, 413}, report


def test_a_revoked_token_stops_working_after_attempts_to_read_the_auth_db(stack: Stack) -> None:
    """Finding 3: a file() read of auth.sqlite3 inside the API's process dropped its SQLite
    locks, and a revocation by another process was then lost. Nothing in the query path can
    open the file now; a revocation by `shipledger tokens revoke` takes effect at once."""
    auth = AuthStore(stack.settings.resolved_auth_db)
    try:
        token, info = auth.create_token(ATTACKER, ("read",), name="to revoke")
    finally:
        auth.close()
    operator = json.loads(Path(stack.paths["STACK_FILE"]).read_text(encoding="utf-8"))["api_token"]
    for sql in (
        "SELECT arrayJoin((SELECT groupArray(file('$AUTH_DB'))))",
        "SELECT * FROM sqlite('$AUTH_DB', 'tokens')",
        "SELECT * FROM file('$AUTH_DB-wal', 'RawBLOB')",
    ):
        for who in (token, operator):
            answer = stack.post(sql.replace("$AUTH_DB", stack.paths["AUTH_DB"]), who)
            assert answer.status_code == 400, answer.text
            assert "refused" in answer.json()["error"] or "allow-list" in answer.json()["error"]
    assert stack.post("SELECT count() FROM alerts", token).status_code == 200
    env = {**os.environ, "SHIPLEDGER_DATA_DIR": str(stack.settings.data_dir)}
    revoke = subprocess.run(
        [str(Path(sys.executable).with_name("shipledger")), "tokens", "revoke", info.id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert revoke.returncode == 0, revoke.stderr
    refused = stack.post("SELECT count() FROM alerts", token)
    assert refused.status_code == 401, refused.text
    assert "revoked" in refused.json()["error"]


def test_secrets_on_disk_are_owner_only(stack: Stack) -> None:
    auth_db = Path(stack.paths["AUTH_DB"])
    for path in (auth_db, Path(stack.paths["STACK_FILE"])):
        assert path.stat().st_mode & 0o777 == 0o600, path
    for suffix in ("-wal", "-shm"):
        sidecar = auth_db.with_name(auth_db.name + suffix)
        if sidecar.exists():
            assert sidecar.stat().st_mode & 0o777 == 0o600, sidecar
    assert stack.settings.data_dir.stat().st_mode & 0o777 == 0o700


# --- the documented examples, as a tenant ------------------------------------------------------
def documented_queries() -> list[tuple[str, str]]:
    """(where, sql) of every example query in README.md, docs/model.md and `query --help`,
    but those marked for operators."""
    found: list[tuple[str, str]] = []
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for block in re.findall(r"```sql\n(.*?)```", readme, flags=re.DOTALL):
        code = "\n".join(line for line in block.splitlines() if not line.startswith("--"))
        found += [("README.md sql", s.strip()) for s in code.split(";") if s.strip()]
    shell = re.findall(r'shipledger query [^"\n]*"([^"]+)"', readme)
    found += [("README.md shell", s) for s in shell]
    model = (REPO / "docs" / "model.md").read_text(encoding="utf-8")
    found += [("docs/model.md", s) for s in re.findall(r"`(SELECT [^`]+)`", model)]
    help_text = query_command.help or ""
    tenant_part = help_text.split("Operators")[0]
    for sql in re.findall(r'shipledger query [^"]*?"([^"]+)"', tenant_part):
        found.append(("query --help", " ".join(sql.split())))
    return found


def test_every_documented_example_runs_for_a_tenant(stack: Stack) -> None:
    examples = documented_queries()
    assert len(examples) >= 20
    failures = []
    for where, sql in examples:
        answer = stack.post(sql)
        if answer.status_code != 200:
            failures.append(f"{where}: {sql!r} -> {answer.status_code} {answer.text[:300]}")
    assert not failures, "\n".join(failures)


def test_the_operator_examples_need_an_operator(stack: Stack) -> None:
    operator = json.loads(Path(stack.paths["STACK_FILE"]).read_text(encoding="utf-8"))["api_token"]
    help_text = query_command.help or ""
    operator_part = help_text.split("Operators")[1]
    examples = [" ".join(s.split()) for s in re.findall(r'"([^"]+)"', operator_part)]
    assert examples
    for sql in examples:
        assert stack.post(sql).status_code == 400
        assert stack.post(sql, operator).status_code == 200, sql
