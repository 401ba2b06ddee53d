"""Privacy on real chDB (docs/privacy.md): a month of rows naming people, built the way the
pipeline builds them and stored the way the sink stores them (row builders → pseudonymiser →
LedgerWriter), then read, erased, archived, reported and verified with the commands a person
would run. After `privacy erase` the name is nowhere: no hot or cold row, no pack file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from shipledger.cli import cli
from shipledger.processors.step import process
from shipledger.producers.api.auth import AuthStore
from shipledger.producers.api.server import ApiServer
from shipledger.schemas.family_models import ChangeEvent, SourceEvent
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.pseudonyms import Pseudonymiser
from shipledger.sinks.ledger.reader import LedgerReader
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.rows import KafkaMeta, Row, alert_row, avro_row, event_row, record_row
from shipledger.sinks.writer import LedgerWriter
from shipledger.up.stack import Stack
from tests.kit import deployment_event, own_settings, sample_alert, wait_until, wire

pytestmark = pytest.mark.integration

SECRET = "a privacy key for tests, long enough to pass"
ENV = {"SHIPLEDGER_PRIVACY_KEY": SECRET}
TENANT = "retail"
ZELDA, YANNICK = "zelda.quist", "yannick.vos"
#: Old enough to archive (`--days 1`), young enough that no retention period has passed.
MARCH = (datetime.now(UTC) - timedelta(days=20)).replace(hour=10, minute=0, second=0, microsecond=0)
MONTH = MARCH.strftime("%Y-%m")


def _rows() -> dict[str, list[Row]]:
    """A prod deployment by zelda approved by yannick, its change request (requested by
    zelda, approved by yannick with a comment naming zelda), zelda's merged pull request and
    an alert whose message names both."""
    event = deployment_event(
        event_id="d1-started",
        deployment_id="d1",
        tenant=TENANT,
        commit_sha="a" * 40,
        actor=ZELDA,
        approvers=[YANNICK],
        change_id="CHG1",
        occurred_at=MARCH,
    )
    record = process(event, None, load_policy(None), now=MARCH).record
    change = ChangeEvent.model_validate(
        {
            "tenant": TENANT,
            "event_id": "chg1",
            "change_id": "CHG1",
            "system": "servicenow",
            "state": "approved",
            "occurred_at": MARCH - timedelta(hours=1),
            "requested_by": ZELDA,
            "approvals": [
                {
                    "approver": YANNICK,
                    "decision": "approved",
                    "decided_at": MARCH - timedelta(hours=1),
                    "comment": f"fine if {ZELDA} watches the rollout",
                }
            ],
        }
    )
    source = SourceEvent(
        tenant=TENANT,
        event_id="pr-7",
        kind="pull_request_merged",
        repository="acme/checkout",
        commit_sha="a" * 40,
        pull_request_number=7,
        author=ZELDA,
        merged_by=YANNICK,
        occurred_at=MARCH - timedelta(hours=2),
    )
    alert = sample_alert(
        alert_id="d1-four-eyes",
        rule="missing_approvals",
        message=f"needs 2 approvals, has 1 ({YANNICK}); {ZELDA} does not count: deploys it",
        evidence={"approvers": YANNICK, "deployer": ZELDA},
        policy_version="v1",
        deployment_id="d1",
        event_id="d1-started",
        tenant=TENANT,
        actor=ZELDA,
        occurred_at=MARCH,
    )
    tables = ddl.tables()
    meta = KafkaMeta("deployments.raw", 0, 1, int(MARCH.timestamp() * 1000))
    return {
        ddl.EVENTS: [event_row(wire(tables[ddl.EVENTS].schema or "", event.to_avro()), meta)],
        ddl.RECORDS: [record_row(wire(tables[ddl.RECORDS].schema or "", record.to_avro()))],
        ddl.CHANGES: [
            avro_row(tables[ddl.CHANGES], wire(tables[ddl.CHANGES].schema or "", change.to_avro()))
        ],
        ddl.SOURCE: [
            avro_row(tables[ddl.SOURCE], wire(tables[ddl.SOURCE].schema or "", source.to_avro()))
        ],
        ddl.ALERTS: [alert_row(wire(tables[ddl.ALERTS].schema or "", alert.to_avro()))],
    }


@pytest.fixture
def ledger(tmp_path: Path) -> Settings:
    """The rows stored as the sink stores them, with privacy on."""
    settings = own_settings(tmp_path, **{"privacy_key": SECRET})
    with LedgerStore.open(settings) as store:
        store.ensure_schema()
        pseudonymiser = Pseudonymiser.of(store)
        assert pseudonymiser is not None
        writer = LedgerWriter(store, load_policy(None))
        for _ in range(2):  # a replayed batch: the same pseudonyms, nothing new stored
            rows = _rows()
            pseudonymiser.apply(rows)
            writer.write_rows(rows)
    return settings


def _run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=ENV if env is None else env)


def _everything(settings: Settings) -> str:
    """Every row of every ledger table (hot and cold), chain head and derived table, as text."""
    with LedgerStore.open(settings, existing=True) as store:
        texts = []
        sources = [store.source(t) for t in ddl.tables()]
        sources += [
            ddl.qualified(store.database, t) for t in (ddl.CHAIN_HEADS, *ddl.AGGREGATE_TABLES)
        ]
        for source in sources:
            _, rows = store.query(f"SELECT * FROM {source}")
            texts.append(repr(rows))
        return "\n".join(texts)


def test_names_are_stored_as_pseudonyms_and_shown_to_the_key_holder(ledger: Settings) -> None:
    stored = _everything(ledger)
    assert ZELDA not in stored and YANNICK not in stored
    assert "person-" in stored
    data_dir = str(ledger.data_dir)
    sql = "SELECT actor, approvers FROM deployment_events"
    shown = _run("query", sql, "--format", "json", "--data-dir", data_dir)
    assert shown.exit_code == 0, shown.output
    assert ZELDA in shown.output and YANNICK in shown.output
    message = _run(
        "query", "SELECT message FROM alerts", "--format", "json", "--data-dir", data_dir
    )
    assert f"has 1 ({YANNICK}); {ZELDA} does not count" in message.output
    # Without the key: pseudonyms only.
    hidden = _run("query", sql, "--format", "json", "--data-dir", data_dir, env={})
    assert hidden.exit_code == 0 and ZELDA not in hidden.output and "person-" in hidden.output
    # A tenant's query cannot name the lookup; an operator's without the key sees no name.
    lookup = f"SELECT * FROM {ddl.PERSON_PSEUDONYMS}"
    refused = _run("query", lookup, "--tenant", TENANT, "--data-dir", data_dir)
    assert refused.exit_code != 0 and "person-" not in refused.output, refused.output
    qualified = f"SELECT * FROM {ledger.clickhouse_database}.{ddl.PERSON_PSEUDONYMS}"
    sealed = _run("query", qualified, "--format", "json", "--data-dir", data_dir, env={})
    assert sealed.exit_code == 0, sealed.output
    assert "person-" in sealed.output and ZELDA not in sealed.output
    people = _run("privacy", "show", "--tenant", TENANT, "--data-dir", data_dir)
    assert people.exit_code == 0, people.output
    assert "2 people of tenant retail" in people.output and ZELDA in people.output


def test_erasure_leaves_the_name_nowhere_and_the_chains_verifying(
    ledger: Settings, tmp_path: Path
) -> None:
    data_dir = str(ledger.data_dir)
    key = tmp_path / "report.pem"
    assert _run("report", "keygen", "--out", str(key)).exit_code == 0
    before = tmp_path / "before"
    pack = ("report", "monthly", "--month", MONTH, "--key", str(key), "--data-dir", data_dir)
    assert _run(*pack, "--out", str(before)).exit_code == 0
    assert ZELDA in (before / "deployments.csv").read_text()

    erased = _run(
        "privacy", "erase", "--tenant", TENANT, "--person", "Zelda.Quist", "--data-dir", data_dir
    )
    assert erased.exit_code == 0, erased.output
    assert "erased 1 lookup entries of 'Zelda.Quist'" in erased.output and ZELDA in erased.output
    again = _run("privacy", "erase", "--tenant", TENANT, "--person", ZELDA, "--data-dir", data_dir)
    assert again.exit_code == 1 and "never seen, or already erased" in again.output

    archived = _run("archive", "--days", "1", "--data-dir", data_dir)
    assert archived.exit_code == 0, archived.output
    cold = sorted((ledger.data_dir / "cold").rglob("*.parquet"))
    assert cold, "nothing was archived"
    after = tmp_path / "after"
    assert _run(*pack, "--out", str(after)).exit_code == 0

    assert ZELDA not in _everything(ledger)
    assert all(ZELDA.encode() not in path.read_bytes() for path in cold)
    for path in after.iterdir():
        assert ZELDA not in path.read_text(encoding="utf-8", errors="replace"), path.name
    shown = _run("query", "SELECT actor, approvers FROM deployment_events", "--data-dir", data_dir)
    assert ZELDA not in shown.output and YANNICK in shown.output and "person-" in shown.output
    message = _run(
        "query", "SELECT message FROM alerts", "--format", "json", "--data-dir", data_dir
    )
    assert f"has 1 ({YANNICK}); person-" in message.output

    verified = _run("audit", "verify", "--data-dir", data_dir)
    assert verified.exit_code == 0, verified.output
    checked = _run("report", "verify", str(after), "--data-dir", data_dir)
    assert checked.exit_code == 0, checked.output


def test_without_a_key_privacy_commands_say_how_to_turn_it_on(ledger: Settings) -> None:
    refused = _run(
        "privacy", "show", "--tenant", TENANT, "--data-dir", str(ledger.data_dir), env={}
    )
    assert refused.exit_code == 1 and "SHIPLEDGER_PRIVACY_KEY" in refused.output


def _token(settings: Settings, scopes: tuple[str, ...]) -> str:
    auth = AuthStore(settings.resolved_auth_db)
    try:
        return auth.create_token(TENANT, scopes, name="privacy")[0]
    finally:
        auth.close()


def _stored_actor(stack: Stack, event_id: str) -> str | None:
    assert stack.store is not None
    _, rows = stack.store.query(
        "SELECT actor FROM deployment_events WHERE event_id = {e:String}", {"e": event_id}
    )
    return str(rows[0][0]) if rows else None


def test_the_real_stack_shows_names_to_pii_readers_only_and_erases_them(
    broker: str, tmp_path: Path
) -> None:
    """`up`'s stack with a privacy key: events through the API, Kafka, the worker and the
    sink; a read token sees pseudonyms, a `pii:read` one (and `up`'s own, which local commands
    use) names; after `privacy erase` (stack stopped) and `archive` the name is nowhere and
    the chains verify."""
    settings = own_settings(tmp_path, sink_batch_ms=100, privacy_key=SECRET)
    query = {"sql": "SELECT actor, approvers FROM deployment_events"}
    with Stack(settings, bootstrap=broker, log_dir=tmp_path / "logs", api=True) as stack:
        assert stack.api is not None
        ingest = {"Authorization": f"Bearer {_token(settings, ('ingest',))}"}
        plain = {"Authorization": f"Bearer {_token(settings, ('read',))}"}
        pii = {"Authorization": f"Bearer {_token(settings, ('read', 'pii:read'))}"}
        local = {"Authorization": f"Bearer {stack.api.operator_token()}"}
        event = {
            "tenant": TENANT,
            "event_id": "d9-started",
            "deployment_id": "d9",
            "event_type": "started",
            "service": "checkout",
            "environment": "prod",
            "commit_sha": "b" * 40,
            "actor": ZELDA,
            "approvers": [YANNICK],
            "occurred_at": MARCH.isoformat(),
        }
        with httpx.Client(base_url=stack.api.url, timeout=30) as client:
            answer = client.post("/v1/events", json=[event], headers=ingest)
            assert answer.status_code == 202, answer.text
            wait_until(stack, lambda: _stored_actor(stack, "d9-started") is not None, "d9")
            assert (_stored_actor(stack, "d9-started") or "").startswith("person-")
            seen = client.get("/v1/events/d9-started", headers=plain).json()
            assert seen["actor"].startswith("person-") and YANNICK not in str(seen)
            assert client.get("/v1/events/d9-started", headers=pii).json()["actor"] == ZELDA
            hidden = client.post("/v1/query", json=query, headers=plain).text
            assert ZELDA not in hidden and "person-" in hidden
            for reader in (pii, local):
                shown = client.post("/v1/query", json=query, headers=reader).json()
                assert shown["rows"] == [[ZELDA, [YANNICK]]]
    data_dir = str(settings.data_dir)
    erased = _run("privacy", "erase", "--tenant", TENANT, "--person", ZELDA, "--data-dir", data_dir)
    assert erased.exit_code == 0, erased.output
    assert _run("archive", "--days", "1", "--data-dir", data_dir).exit_code == 0
    assert sorted((settings.data_dir / "cold").rglob("*.parquet")), "nothing was archived"
    everything = _everything(settings)
    assert ZELDA not in everything and "person-" in everything
    verified = _run("audit", "verify", "--data-dir", data_dir)
    assert verified.exit_code == 0, verified.output


def test_what_the_gate_and_the_restore_read_back_is_judged_on_names(ledger: Settings) -> None:
    """Four eyes compares the deployer with the approvers: the change requests the gate folds,
    the enrichment `up` restores and the first events `policy simulate` judges carry names."""
    with LedgerStore.open(ledger, existing=True) as store:
        reader = LedgerReader(store)
        (change,) = reader.change_events(TENANT, "CHG1")
        assert change.requested_by == ZELDA
        assert [a.approver for a in change.approvals] == [YANNICK]
        restored = [e for _, e in reader.enrichment_events() if isinstance(e, ChangeEvent)]
        assert [e.requested_by for e in restored] == [ZELDA]
        (first,) = reader.first_events(MARCH - timedelta(days=1), MARCH + timedelta(days=1))
        assert (first.actor, first.approvers) == (ZELDA, [YANNICK])


def test_a_pii_reader_sees_names_of_its_own_tenant_only(ledger: Settings) -> None:
    """A `pii:read` token of another tenant that writes a pseudonym of `retail` into its
    query (`SELECT 'person-…'`) gets the pseudonym back, not the name: names are revealed
    only from the queried tenant's lookup entries (the pseudonym is all it took before)."""
    with LedgerStore.open(ledger) as store:
        _, found = store.query(
            f"SELECT pseudonym FROM {ddl.qualified(store.database, ddl.PERSON_PSEUDONYMS)} "
            "WHERE tenant = {t:String}",
            {"t": TENANT},
        )
        pseudonyms = sorted(str(p) for (p,) in found)
        assert len(pseudonyms) == 2
        auth = AuthStore(ledger.resolved_auth_db)
        try:
            other = auth.create_token("wholesale", ("read", "pii:read"), name="other")[0]
            own = auth.create_token(TENANT, ("read", "pii:read"), name="own")[0]
        finally:
            auth.close()
        sql = "SELECT " + ", ".join(f"'{p}'" for p in pseudonyms)
        settings = ledger.model_copy(update={"api_port": 0})
        with ApiServer(settings, "127.0.0.1:1", LedgerReader(store)) as server:
            for token, expected in ((other, pseudonyms), (own, [YANNICK, ZELDA])):
                answer = httpx.post(
                    f"{server.url}/v1/query",
                    json={"sql": sql},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=60,
                )
                assert answer.status_code == 200, answer.text
                assert sorted(answer.json()["rows"][0]) == expected
