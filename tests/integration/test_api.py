"""The ingest API served by uvicorn on a loopback port, producing to the real Tansu broker, with
the ClickHouse sink (chDB) behind it: what a client sees, and what reaches the topic and the
ledger (nothing, in every failure case)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shipledger.lag import end_offsets
from shipledger.producers.api.auth import AuthStore
from shipledger.producers.api.server import ApiServer
from shipledger.schemas.policy import load_policy
from shipledger.schemas.topics import Topics
from shipledger.settings import Settings
from shipledger.sinks.ledger.reader import LedgerReader
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.sink import ClickHouseSink
from shipledger.topics import ensure_topics
from tests.kit import SHA, api_event, own_settings, wait_for

pytestmark = pytest.mark.integration


@dataclass
class Ledger:
    """An API with its broker topic and ClickHouse sink behind it."""

    url: str
    settings: Settings
    store: LedgerStore
    auth: AuthStore

    def token(self, tenant: str = "acme", *scopes: str, expires_in_s: float | None = None) -> str:
        token, _ = self.auth.create_token(tenant, scopes or ("ingest",), expires_in_s=expires_in_s)
        return token

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def raw_messages(self) -> int:
        """Messages in the raw topic so far (its true end offsets)."""
        raw = Topics.from_settings(self.settings).raw
        parts = [(raw, p) for p in range(self.settings.topic_partitions)]
        conf = self.settings.kafka_common(self.settings.bootstrap_servers or "")
        return sum(marks.high for marks in end_offsets(conf, parts).values())

    def rows(self, event_id: str) -> int:
        _, rows = self.store.query(
            "SELECT count() FROM deployment_events WHERE event_id = %(id)s",
            {"id": event_id},
        )
        return int(rows[0][0])


@pytest.fixture(scope="module")
def ledger(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    tmp = tmp_path_factory.mktemp("api")
    settings = own_settings(
        tmp,
        bootstrap_servers=broker,
        api_max_body_bytes=64 * 1024,
        api_max_batch_events=50,
        api_max_upload_bytes=64 * 1024 * 1024,
        api_upload_batch_lines=100,
        sink_batch_ms=50,
        session_timeout_s=1.5,
    )
    ensure_topics(settings, broker)
    stop = threading.Event()
    with LedgerStore.open(settings) as store:
        store.ensure_schema()
        sink = ClickHouseSink(settings, broker, store, policy=load_policy(settings.policy_file))
        thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
        thread.start()
        auth = AuthStore(settings.resolved_auth_db)
        try:
            with ApiServer(settings, broker, LedgerReader(store)) as server:
                yield Ledger(server.url, settings, store, auth)
        finally:
            auth.close()
            stop.set()
            thread.join(30)


def test_health_and_readiness(ledger: Ledger) -> None:
    with ledger.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready"}
        assert "/v1/events" in client.get("/openapi.json").json()["paths"]


def test_accepted_after_ack_with_ids_then_stored(ledger: Ledger) -> None:
    before = ledger.raw_messages()
    bodies = [api_event(event_id=f"ok-{uuid.uuid4()}"), api_event()]
    with ledger.client(ledger.token()) as client:
        answer = client.post("/v1/events", json={"events": bodies})
    assert answer.status_code == 202, answer.text
    ids = answer.json()["event_ids"]
    assert answer.json()["count"] == 2 and ids[0] == bodies[0]["event_id"]
    # 202 came after the acks: the messages are in the topic already.
    assert ledger.raw_messages() == before + 2
    wait_for(lambda: all(ledger.rows(i) == 1 for i in ids), "the rows")


def test_invalid_fields_are_listed_and_nothing_is_published(ledger: Ledger) -> None:
    before = ledger.raw_messages()
    bodies = [api_event(), api_event(commit_sha="abc"), {"family": "deployment", "service": "x"}, 7]
    with ledger.client(ledger.token()) as client:
        answer = client.post("/v1/events", json=bodies)
    assert answer.status_code == 422, answer.text
    errors = answer.json()["errors"]
    assert errors[0]["index"] == 1 and errors[0]["field"] == "commit_sha"
    assert "full commit SHA" in errors[0]["reason"]
    missing = {e["field"] for e in errors if e["index"] == 2}
    assert {"deployment_id", "event_type", "environment", "commit_sha", "actor"} <= missing
    assert any(e["index"] == 3 and "JSON object" in e["reason"] for e in errors)
    assert ledger.raw_messages() == before


def test_other_tenant_is_forbidden_naming_the_field(ledger: Ledger) -> None:
    before = ledger.raw_messages()
    with ledger.client(ledger.token("acme")) as client:
        answer = client.post("/v1/events", json=[api_event(), api_event(tenant="globex")])
    assert answer.status_code == 403, answer.text
    assert answer.json()["errors"] == [
        {"index": 1, "field": "tenant", "reason": "this token is for tenant 'acme', not 'globex'"}
    ]
    assert ledger.raw_messages() == before


def test_tokens_bad_expired_revoked_or_lacking_scope(ledger: Ledger) -> None:
    before = ledger.raw_messages()
    expired = ledger.token(expires_in_s=0.001)
    revoked = ledger.token()
    ledger.auth.revoke(revoked.split("_")[1])
    reader = ledger.token("acme", "read")
    cases = {
        None: (401, "missing bearer token"),
        "nonsense": (401, "malformed API token"),
        revoked[:-4] + "AAAA": (401, "unknown API token"),
        expired: (401, "expired"),
        revoked: (401, "revoked"),
        reader: (403, "lacks the 'ingest' scope"),
    }
    for token, (status, words) in cases.items():
        with ledger.client(token) as client:
            answer = client.post("/v1/events", json=api_event())
        assert answer.status_code == status, (token, answer.text)
        assert words in answer.json()["error"]
    assert ledger.raw_messages() == before


def test_oversize_body_with_and_without_content_length(ledger: Ledger) -> None:
    before = ledger.raw_messages()
    big = api_event(attributes={"blob": "x" * 70_000})
    payload = httpx.Request("POST", "/", json=big).content
    with ledger.client(ledger.token()) as client:
        declared = client.post(
            "/v1/events", content=payload, headers={"Content-Type": "application/json"}
        )

        def chunks() -> Iterator[bytes]:  # a generator body is sent chunked: no length
            for start in range(0, len(payload), 8192):
                yield payload[start : start + 8192]

        streamed = client.post(
            "/v1/events", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert declared.status_code == 413, declared.text
    assert "over the limit of 65536 bytes" in declared.json()["error"]
    assert streamed.status_code == 413, streamed.text
    assert "exceeds the limit of 65536 bytes" in streamed.json()["error"]
    assert ledger.raw_messages() == before


def test_too_many_events_in_one_request(ledger: Ledger) -> None:
    before = ledger.raw_messages()
    with ledger.client(ledger.token()) as client:
        answer = client.post("/v1/events", json=[{"deployment_id": "d"}] * 51)
    assert answer.status_code == 413
    assert "51 events in one request, over the limit of 50" in answer.json()["error"]
    assert ledger.raw_messages() == before


def test_retried_request_is_one_row(ledger: Ledger) -> None:
    """Same body twice (explicit id and time), then a marker on the same partition: once
    the marker is stored, the sink has seen the retry, and kept one row."""
    body = api_event(event_id=f"retry-{uuid.uuid4()}", occurred_at="2026-11-26T10:00:00Z")
    # No id: derived from the content. The same deployment (key), so the same partition.
    timed = api_event(deployment_id=body["deployment_id"], occurred_at="2026-11-26T10:00:01Z")
    marker = api_event(deployment_id=body["deployment_id"], event_type="succeeded")
    with ledger.client(ledger.token()) as client:
        first = client.post("/v1/events", json=[body, timed])
        second = client.post("/v1/events", json=[body, timed])
        assert first.status_code == second.status_code == 202
        assert first.json()["event_ids"] == second.json()["event_ids"]
        marked = client.post("/v1/events", json=marker).json()["event_ids"][0]
    wait_for(lambda: ledger.rows(marked) == 1, "the marker row")
    assert ledger.rows(body["event_id"]) == 1
    assert ledger.rows(first.json()["event_ids"][1]) == 1


def test_reads_stay_within_the_tenant(ledger: Ledger) -> None:
    body = api_event(tenant="globex", event_id=f"read-{uuid.uuid4()}")
    with ledger.client(ledger.token("globex")) as client:
        assert client.post("/v1/events", json=body).status_code == 202
    wait_for(lambda: ledger.rows(body["event_id"]) == 1, "the row")
    path = f"/v1/events/{body['event_id']}"
    with ledger.client(ledger.token("globex", "read")) as own:
        mine = own.get(path)
    with ledger.client(ledger.token("acme", "read", "ingest", "admin")) as other:
        theirs = other.get(path)
    with ledger.client(ledger.token("*", "read")) as operator:
        anyone = operator.get(path)
    assert mine.status_code == 200 and mine.json()["tenant"] == "globex"
    assert theirs.status_code == 404 and "for tenant 'acme'" in theirs.json()["error"]
    assert anyone.status_code == 200


def test_upload_ndjson_and_csv_with_a_per_line_report(ledger: Ledger) -> None:
    before = ledger.raw_messages()
    ndjson = "\n".join(
        [
            '{"deployment_id":"u1","event_type":"started","service":"a","environment":"dev",'
            f'"commit_sha":"{SHA}","actor":"bob","occurred_at":"2026-11-01T00:00:00Z"}}',
            "",
            "{not json",
            '{"deployment_id":"u2","event_type":"exploded","service":"a","environment":"dev",'
            f'"commit_sha":"{SHA}","actor":"bob"}}',
            '{"deployment_id":"u3","event_type":"started","service":"a","environment":"dev",'
            f'"commit_sha":"{SHA}","actor":"bob","tenant":"globex"}}',
        ]
    )
    csv = (
        "deployment_id,event_type,service,environment,commit_sha,actor,attributes.note\n"
        f'c1,started,a,dev,{SHA},bob,"two\nlines"\n'
        f"c2,succeeded,a,dev,{SHA},bob,\n"
        f"c3,started,a,dev,nope,bob,\n"
    )
    with ledger.client(ledger.token()) as client:
        nd = client.post(
            "/v1/uploads", content=ndjson, headers={"Content-Type": "application/x-ndjson"}
        )
        cs = client.post("/v1/uploads?format=csv", content=csv)
        unknown = client.post("/v1/uploads", content="x", headers={"Content-Type": "text/plain"})
    assert nd.status_code == 207, nd.text
    report = nd.json()
    assert (report["records"], report["accepted"], report["rejected"]) == (4, 1, 3)
    by_line = {e["line"]: e for e in report["errors"]}
    assert by_line[3]["field"] == "line" and "not valid JSON" in by_line[3]["reason"]
    assert by_line[4]["field"] == "event_type"
    assert by_line[5]["field"] == "tenant"
    assert cs.status_code == 207, cs.text
    assert (cs.json()["accepted"], cs.json()["rejected"]) == (2, 1)
    assert cs.json()["errors"][0]["line"] == 5 and cs.json()["errors"][0]["field"] == "commit_sha"
    assert unknown.status_code == 415
    assert ledger.raw_messages() == before + 3


def test_upload_all_malformed_publishes_nothing(ledger: Ledger) -> None:
    before = ledger.raw_messages()
    with ledger.client(ledger.token()) as client:
        answer = client.post("/v1/uploads?format=ndjson", content="[1]\n{oops\n\n42\n")
    assert answer.status_code == 422, answer.text
    assert [e["line"] for e in answer.json()["errors"]] == [1, 2, 4]
    assert answer.json()["accepted"] == 0
    assert ledger.raw_messages() == before


def test_upload_of_many_megabytes_streams_in_batches(ledger: Ledger) -> None:
    """~12 MB sent as a chunked stream: every record published, in batches of 100."""
    before = ledger.raw_messages()
    line_count = 3000
    pad = "p" * 4000

    def body() -> Iterator[bytes]:
        for i in range(line_count):
            line = api_event(deployment_id=f"big-{i}", occurred_at="2026-11-02T00:00:00Z")
            line["attributes"] = {"pad": pad}
            yield (httpx.Request("POST", "/", json=line).content + b"\n")

    with ledger.client(ledger.token()) as client:
        answer = client.post(
            "/v1/uploads", content=body(), headers={"Content-Type": "application/x-ndjson"}
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == line_count
    assert ledger.raw_messages() == before + line_count


@pytest.fixture
def strict_api(broker: str, settings: Settings) -> Iterator[tuple[str, AuthStore]]:
    """An API with a tight rate and a small upload limit (no sink: nothing is stored)."""
    tight = settings.model_copy(
        update={
            "api_port": 0,
            "api_rate_per_s": 0.5,
            "api_rate_burst": 2,
            "api_max_upload_bytes": 50_000,
            "api_upload_batch_lines": 10,
        }
    )
    auth = AuthStore(tight.resolved_auth_db)
    try:
        with ApiServer(tight, broker) as server:
            yield server.url, auth
    finally:
        auth.close()


def test_rate_limit_per_token(strict_api: tuple[str, AuthStore]) -> None:
    url, auth = strict_api
    token, _ = auth.create_token("acme", ("ingest",))
    other, _ = auth.create_token("acme", ("ingest",))
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=30) as client:
        codes = [
            client.post("/v1/events", json=api_event(), headers=headers).status_code
            for _ in range(3)
        ]
        limited = client.post("/v1/events", json=api_event(), headers=headers)
        fresh = client.post(
            "/v1/events", json=api_event(), headers={"Authorization": f"Bearer {other}"}
        )
    assert codes[:2] == [202, 202] and codes[2] == 429
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert "rate limit of 0.5 requests/s" in limited.json()["error"]
    assert fresh.status_code == 202  # buckets are per token


def test_upload_over_the_limit(strict_api: tuple[str, AuthStore], settings: Settings) -> None:
    """Without a Content-Length the limit cuts the stream; the batches before it were
    acknowledged and are counted as accepted."""
    url, auth = strict_api
    token, _ = auth.create_token("acme", ("ingest",))
    line = httpx.Request("POST", "/", json=api_event(occurred_at="2026-11-02T00:00:00Z")).content
    payload = (line + b"\n") * (60_000 // len(line) + 1)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(payload), 4096):
            yield payload[start : start + 4096]

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    with httpx.Client(base_url=url, timeout=30) as client:
        declared = client.post("/v1/uploads", content=payload, headers=headers)
        streamed = client.post("/v1/uploads", content=chunks(), headers=headers)
    assert declared.status_code == 413 and "over the limit of 50000" in declared.json()["error"]
    assert streamed.status_code == 413, streamed.text
    report = streamed.json()
    assert "exceeds the limit of 50000 bytes" in report["error"]
    assert 0 < report["accepted"] < payload.count(b"\n")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc (Linux only)")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc")
def test_large_upload_does_not_load_into_memory(
    broker: str,
    settings: Settings,
    cli_env: Callable[[Settings, str], dict[str, str]],
    tmp_path: Path,
) -> None:
    """`shipledger api` in its own process takes a 48 MB upload; its peak RSS grows by far
    less than the file (the body is streamed, published in batches)."""
    env = cli_env(settings, broker)
    with (tmp_path / "api.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "shipledger"), "api", "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        try:
            assert proc.stdout is not None
            banner = proc.stdout.readline().decode()
            assert "shipledger API at " in banner, (tmp_path / "api.log").read_text()
            url = banner.split(" at ")[1].split()[0]
            auth = AuthStore(settings.resolved_auth_db)
            token, _ = auth.create_token("acme", ("ingest",))
            auth.close()
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
            pad = "p" * 3900
            lines = 12_000

            def body(count: int) -> Iterator[bytes]:
                for i in range(count):
                    line = api_event(deployment_id=f"mem-{i}", occurred_at="2026-11-03T00:00:00Z")
                    line["attributes"] = {"pad": pad}
                    yield httpx.Request("POST", "/", json=line).content + b"\n"

            with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
                warm = client.post("/v1/uploads", content=body(200))
                assert warm.status_code == 200, warm.text
                before = _peak_rss_mb(proc.pid)
                answer = client.post("/v1/uploads", content=body(lines))
                after = _peak_rss_mb(proc.pid)
            assert answer.status_code == 200, answer.text
            assert answer.json()["accepted"] == lines
            size_mb = lines * 4100 / 1024 / 1024
            print(f"peak RSS {before:.0f} MB -> {after:.0f} MB for a {size_mb:.0f} MB upload")
            assert after - before < size_mb / 3
        finally:
            # Close our end first: a failed wait must not leak the pipe into the next test.
            if proc.stdout is not None:
                proc.stdout.close()
            proc.send_signal(signal.SIGINT)
            # Generous: after 48 MB the API drains its producer before it exits; on a loaded
            # 2-core CI machine that once took over 30 s (the exit itself is not under test).
            proc.wait(120)
