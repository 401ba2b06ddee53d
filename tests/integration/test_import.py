"""`shipledger import` into a real chDB ledger (a child process each time, as an operator runs
it): every provider's fixture imported, `audit verify` clean, the same files again adding
nothing, and an import killed (kill -9) after its first batch was stored, then run again:
every event once, every chain verified, the stored part skipped rather than judged again."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shipledger.history import run
from shipledger.history.judging import NOTHING_STORED, Judge
from shipledger.history.mapping import Defaults
from shipledger.history.reading import event_objects
from shipledger.lab.bench_import import history_file
from shipledger.processors.step import nobody_known
from shipledger.producers.api.uploads import Record
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks.ledger.chain import ChainKey, Head
from shipledger.sinks.ledger.ddl import EVENTS, RECORDS
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.regions import Ledger
from shipledger.sinks.rows import Row
from tests.kit import LONG_TEST_TIMEOUT_S, SHIPLEDGER, ledger_settings, run_shipledger, up_env

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent.parent / "fixtures" / "import"
#: (fixture, extra options, events imported, exit code: 3 when the fixture has refused rows)
IMPORTS = (
    ("four_keys_deployments.ndjson", (), 2, 3),
    ("four_keys_changes.csv", ("--repository", "acme/checkout"), 2, 3),
    ("devlake_cicd_deployment_commits.csv", (), 5, 3),
    ("github_deployments.json", (), 4, 3),
    ("events.ndjson", (), 3, 3),
    ("events.csv", ("--tenant", "acme"), 2, 3),
)
COUNTS = (
    "SELECT (SELECT count() FROM deployment_events), (SELECT uniqExact(tenant, event_id) FROM "
    "deployment_events), (SELECT count() FROM deployment_records), (SELECT count() FROM alerts), "
    "(SELECT count() FROM source_events)"
)


def _counts(data_dir: Path) -> tuple[int, ...]:
    with LedgerStore.open(ledger_settings(data_dir), existing=True) as store:
        _, rows = store.query(COUNTS)
    return tuple(int(v) for v in rows[0])


def _verified(env: dict[str, str]) -> None:
    verify = run_shipledger("audit", "verify", env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "CLEAN" in verify.stdout


def _import(env: dict[str, str], path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return run_shipledger(
        "import", str(path), "--no-progress", "--errors", str(path) + ".err", *options, env=env
    )


@contextmanager
def _importing(env: dict[str, str], path: Path) -> Iterator[subprocess.Popen[str]]:
    """`shipledger import path` running (500-event chunks), once its first chunk is stored;
    killed at the end if still running."""
    child = subprocess.Popen(
        [SHIPLEDGER, "import", str(path), "--no-progress", "--batch", "500"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stderr is not None
    try:
        for line in child.stderr:  # waits for the child's own log, however slow the machine
            if "import_batch_stored" in line:
                break
        assert child.poll() is None, "the import ended after its first chunk"
        yield child
    finally:
        child.kill()
        child.wait(timeout=60)
        child.stderr.close()


@pytest.mark.timeout(LONG_TEST_TIMEOUT_S)
def test_every_format_imports_once_and_verifies(tmp_path: Path) -> None:
    """Into a data dir with no ledger yet (onboarding before the first `up`): the first import
    creates it."""
    data_dir = tmp_path / "data"
    env = up_env(data_dir)
    for name, options, events, code in IMPORTS:
        copy = tmp_path / name
        copy.write_bytes((FIXTURES / name).read_bytes())
        done = _import(env, copy, *options)
        assert done.returncode == code, done.stdout + done.stderr
        assert f": {events} events imported" in done.stdout, done.stdout
        assert (tmp_path / f"{name}.err").is_file()  # refused rows, with line and reason
    first = _counts(data_dir)
    deployments = sum(e for name, _, e, _ in IMPORTS if name != "four_keys_changes.csv") - 1
    assert first[:3] == (deployments, deployments, deployments)  # events.ndjson: one is a push
    assert first[4] == 3
    _verified(env)
    for name, options, _, code in IMPORTS:
        assert _import(env, tmp_path / name, *options).returncode == code
    assert _counts(data_dir) == first
    _verified(env)


@pytest.mark.parametrize(
    ("name", "content", "options", "says"),
    [
        ("export.txt", b"this is not json\n", ("--format", "four-keys"), "read as CSV"),
        ("export.txt", b"this is not json\n", ("--format", "github"), "read as CSV"),
        ("rows.csv", b"deployment_id,service\n", ("--format", "csv"), "header line but no rows"),
        ("empty.ndjson", b"\n \n", ("--format", "devlake"), "is empty"),
        ("empty.json", b"[]", ("--format", "github"), "no records in"),
    ],
)
def test_a_file_that_gives_no_record_is_an_error_saying_why(
    tmp_path: Path, name: str, content: bytes, options: tuple[str, ...], says: str
) -> None:
    """Importing nothing is a wrong file, not a success: exit 1 and why (it was 0 imported,
    exit 0, for a one-line non-JSON export given with --format)."""
    path = tmp_path / name
    path.write_bytes(content)
    done = _import(up_env(tmp_path / "data"), path, *options)
    assert done.returncode == 1, done.stdout + done.stderr
    assert says in done.stderr, done.stderr
    assert "events imported" not in done.stdout


def test_a_killed_import_resumes_exactly_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = up_env(data_dir)
    assert run_shipledger("migrate", env=env).returncode == 0
    path = tmp_path / "history.ndjson"
    written = history_file(path, 6_000)
    dry = run_shipledger("import", str(path), "--dry-run", "--no-progress", env=env)
    assert dry.returncode == 0, dry.stderr
    found = re.search(r"([\d,]+) alerts raised", dry.stdout)
    assert found is not None, dry.stdout
    alerts = int(found.group(1).replace(",", ""))
    with _importing(env, path) as child:
        os.kill(child.pid, signal.SIGKILL)
    partial = _counts(data_dir)
    assert 0 < partial[0] < written
    again = run_shipledger("import", str(path), "--no-progress", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    # What the killed run stored is skipped, not judged again; the rest is judged from the
    # ledger's records of the deployments it left open.
    skipped = re.search(r"([\d,]+) events already in the ledger", again.stdout)
    assert skipped is not None, again.stdout
    assert int(skipped.group(1).replace(",", "")) >= partial[0]
    assert _counts(data_dir) == (written, written, written, alerts, 0)
    _verified(env)


def test_a_second_import_into_one_ledger_is_refused_naming_the_first(tmp_path: Path) -> None:
    """One import at a time per ledger, enforced: while one runs, another of the same file or
    of another file exits 1 naming the running one (two at once through separate clients, as
    on a ClickHouse server, forked the import lane and stored events twice); once it is done
    (or killed: the lock is `flock`'s) the other imports, every event once, verify clean."""
    data_dir = tmp_path / "data"
    env = up_env(data_dir)
    assert run_shipledger("migrate", env=env).returncode == 0
    first, second = tmp_path / "first.ndjson", tmp_path / "second.ndjson"
    written = history_file(first, 10_000)
    second.write_text((FIXTURES / "events.ndjson").read_text(encoding="utf-8"), encoding="utf-8")
    with _importing(env, first) as child:
        for other in (first, second):
            refused = _import(env, other)
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert f"pid {child.pid} on " in refused.stderr, refused.stderr
            assert f"importing {first.resolve()} since " in refused.stderr, refused.stderr
        # Any other command is refused by chDB, naming the process that owns the data dir.
        busy = run_shipledger("audit", "verify", env=env)
        assert busy.returncode == 3, busy.stdout + busy.stderr
        assert f"(pid {child.pid}, started at " in busy.stderr, busy.stderr
        os.kill(child.pid, signal.SIGKILL)
    assert _import(env, first).returncode == 0
    assert _import(env, second).returncode == 3  # events.ndjson has refused rows
    deployments = _counts(data_dir)
    assert deployments[:2] == (written + 2, written + 2)
    _verified(env)


def test_a_chunk_torn_between_its_records_and_its_events_is_judged_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after a chunk's records and alerts were stored but before its deployment
    events were (they are written last): the resume judges those events again from the
    records of events the ledger holds, not from the records they made (which would count
    them twice), and every row is stored once."""
    data_dir = tmp_path / "data"
    settings = ledger_settings(data_dir)
    path = tmp_path / "history.ndjson"
    written = history_file(path, 3_000)
    clean = _judge(settings).chunk(
        asyncio.run(_all(path)), NOTHING_STORED
    )  # the whole file in memory: what every deployment's last record must be
    last_seq: dict[tuple[str, str], int] = {}
    for row in clean.rows[RECORDS]:
        key = (row["tenant"], row["deployment_id"])
        last_seq[key] = max(last_seq.get(key, 0), row["seq"])
    real = run.store_batch
    stored: list[int] = []

    def torn(ledger: Ledger, rows: dict[str, list[Row]], outcome: run.Outcome) -> None:
        if stored:
            ledger.write({table: each for table, each in rows.items() if table != EVENTS})
            raise RuntimeError("killed between the records and the events")
        real(ledger, rows, outcome)
        stored.append(len(rows[EVENTS]))

    with LedgerStore.open(settings) as store:
        store.ensure_schema()

        monkeypatch.setattr(run, "store_batch", torn)
        with pytest.raises(RuntimeError, match="killed"):
            _imported(settings, store, path)
        monkeypatch.undo()
        again = _imported(settings, store, path)
        assert again.stored == stored[0]
        _, rows = store.query(
            "SELECT tenant, deployment_id, max(seq), count(), uniqExact(record_id) "
            "FROM deployment_records GROUP BY tenant, deployment_id"
        )
    assert {(t, d): s for t, d, s, _, _ in rows} == last_seq
    assert sum(r[3] for r in rows) == sum(r[4] for r in rows) == written
    assert _counts(data_dir) == (written, written, written, clean.alerts, 0)
    _verified(up_env(data_dir))


@pytest.mark.parametrize("dies_at", [1, 2, 5])
def test_an_import_killed_between_its_insert_and_its_chain_heads_resumes_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dies_at: int
) -> None:
    """A crash after a write's rows were inserted but before their chain heads were appended
    to `chain_heads` (the `dies_at`-th append: within the first chunk, or later): the resume
    adopts the unrecorded heads, continues the chains from them, and every row is stored
    once with `audit verify` clean (a chain ending beyond its recorded head would be an
    out-of-band insert)."""
    data_dir = tmp_path / "data"
    settings = ledger_settings(data_dir)
    path = tmp_path / "history.ndjson"
    written = history_file(path, 3_000)
    appended: list[int] = []
    real = LedgerStore.append_heads

    class Killed(BaseException):
        """Not an `Exception`: the writer's retries must not catch it, as with a kill -9."""

    def dies(store: LedgerStore, heads: Mapping[ChainKey, Head]) -> None:
        appended.append(len(heads))
        if len(appended) == dies_at:
            raise Killed
        real(store, heads)

    with LedgerStore.open(settings) as store:
        store.ensure_schema()

        monkeypatch.setattr(LedgerStore, "append_heads", dies)
        with pytest.raises(Killed):
            _imported(settings, store, path)
        monkeypatch.undo()
        _, held = store.query("SELECT count() FROM deployment_records")
        assert held[0][0] > 0  # the killed write's rows are stored, their heads are not
        _imported(settings, store, path)
    counts = _counts(data_dir)
    assert counts[:3] == (written, written, written)
    _verified(up_env(data_dir))


def _imported(settings: Settings, store: LedgerStore, path: Path) -> run.Outcome:
    """`path` imported into `store` in this process, as the command does (1,000-event chunks)."""
    ledger = run.import_ledger(settings, load_policy(None), store)
    return run.import_file(path, "ndjson", Defaults(), _judge(settings), ledger, None, 1_000)


def _judge(settings: Settings) -> Judge:
    return Judge(settings, load_policy(None), None, nobody_known, datetime.now(UTC))


async def _all(path: Path) -> list[Record]:
    return [r async for r in event_objects(path, "ndjson", Defaults())]
