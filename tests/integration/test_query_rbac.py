"""RBAC on the read path: tokens limited to teams and environments, through the real API on
loopback over a real chDB ledger (hot rows and rows archived to cold Parquet).

Tenant acme has rows of team payments (prod and staging), team search (prod) and without a
team (prod); tenant globex has team payments rows. Each row's service, actor, message and
evidence carry a marker; a token must never receive the marker (raw, hex or base64) of a row
outside its scope, through any table or view, `GET /v1/events/{id}`, or the attack corpus.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from shipledger.producers.api.auth import AuthStore
from shipledger.producers.api.server import ApiServer
from shipledger.schemas.policy import load_policy
from shipledger.settings import Settings
from shipledger.sinks import rows
from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.archive import archive
from shipledger.sinks.ledger.reader import LedgerReader
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.writer import LedgerWriter
from tests.integration.test_query_attacks import Stack as Leaks
from tests.integration.test_query_attacks import (
    corpus_paths,
    corpus_settings,
    load_corpus,
    marked_rows,
)
from tests.kit import LONG_TEST_TIMEOUT_S

pytestmark = pytest.mark.integration

#: (name, tenant, team, environment) of each group of rows.
GROUPS = (
    ("payprod", "acme", "payments", "prod"),
    ("paystaging", "acme", "payments", "staging"),
    ("search", "acme", "search", "prod"),
    ("noteam", "acme", None, "prod"),
    ("globex", "globex", "payments", "prod"),
)
#: What each token may see: (teams, environments) -> the groups in scope.
TOKENS = {
    "payments": ((("payments",), ()), {"payprod", "paystaging"}),
    "prod": (((), ("prod",)), {"payprod", "search", "noteam"}),
    "payments-prod": ((("payments",), ("prod",)), {"payprod"}),
    "payments+search": ((("payments,search",), ()), {"payprod", "paystaging", "search"}),
}


@dataclass
class Ledger:
    url: str
    tokens: dict[str, str]
    markers: dict[str, str]
    event_ids: dict[str, list[str]]
    paths: dict[str, str]

    def post(self, token: str, sql: str) -> httpx.Response:
        body = json.dumps({"sql": sql}).encode()
        headers = {"Authorization": f"Bearer {self.tokens[token]}"}
        return httpx.post(f"{self.url}/v1/query", content=body, headers=headers, timeout=120)

    def leaks(self, token: str, body: str) -> list[str]:
        """The groups outside `token`'s scope whose marker is in `body`."""
        hidden = {g: m for g, m in self.markers.items() if g not in TOKENS[token][1]}
        return Leaks("", "", hidden, {}, Settings()).leaks(body)

    def seen(self, body: str) -> set[str]:
        return {group for group, marker in self.markers.items() if marker in body}


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    data_dir = tmp_path_factory.mktemp("rbac") / "data"
    settings = corpus_settings(data_dir)
    markers = {group: f"{group}mark{uuid.uuid4().hex[:12]}" for group, *_ in GROUPS}
    event_ids: dict[str, list[str]] = {group: [] for group in markers}
    with LedgerStore.open(settings) as store:
        store.ensure_schema()
        batch: dict[str, list[rows.Row]] = {ddl.EVENTS: [], ddl.RECORDS: [], ddl.ALERTS: []}
        for group, tenant, team, environment in GROUPS:
            for days_ago in (1, 200):  # the old ones are archived to cold Parquet below
                event, record, alert = marked_rows(
                    markers[group],
                    days_ago,
                    deployment_id=f"{group}-{days_ago}",
                    event_type="succeeded",
                    environment=environment,
                    tenant=tenant,
                    team=team,
                    occurred_at=datetime.now(UTC).replace(microsecond=0) - timedelta(days=days_ago),
                )
                batch[ddl.EVENTS].append(event)
                batch[ddl.RECORDS].append(record)
                batch[ddl.ALERTS].append(alert)
                event_ids[group].append(event["event_id"])
        LedgerWriter(store, load_policy(settings.policy_file)).write_rows(batch)
        archive(store, cold_after_days=90)
        with ApiServer(settings, "127.0.0.1:1", LedgerReader(store)) as server:
            auth = AuthStore(settings.resolved_auth_db)
            try:
                tokens = {
                    name: auth.create_token(
                        "acme", ("read",), name=name, teams=teams, environments=envs
                    )[0]
                    for name, ((teams, envs), _) in TOKENS.items()
                }
            finally:
                auth.close()
            marker_file = data_dir / "passwd"
            marker_file.write_text("root:x:0:0:nobody:/root:/bin/bash\n", encoding="utf-8")
            paths = corpus_paths(settings, marker_file)
            yield Ledger(server.url, tokens, markers, event_ids, paths)


def _readable() -> list[str]:
    """A `SELECT *` of every table and view a tenant may read."""
    names = sorted((set(ddl.tables()) | set(ddl.VIEWS)) - {"running_at"})
    at = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    return [f"SELECT * FROM {n}" for n in names] + [f"SELECT * FROM running_at(at = '{at}')"]


@pytest.mark.parametrize("token", sorted(TOKENS))
def test_a_scoped_token_reads_exactly_its_rows_in_every_table_and_view(
    ledger: Ledger, token: str
) -> None:
    in_scope = TOKENS[token][1]
    for sql in _readable():
        answer = ledger.post(token, sql)
        assert answer.status_code == 200, (sql, answer.text)
        assert not ledger.leaks(token, answer.text), (sql, answer.text[:500])
    for table in ("deployment_events", "deployment_records", "alerts", "deployments"):
        answer = ledger.post(token, f"SELECT * FROM {table}")
        # Hot and cold rows of every group in scope: 2 per group.
        assert ledger.seen(answer.text) == in_scope, table
        assert len(answer.json()["rows"]) == 2 * len(in_scope), table


def test_a_scoped_token_reads_only_its_events_by_id(ledger: Ledger) -> None:
    for token, (_, in_scope) in TOKENS.items():
        for group, ids in ledger.event_ids.items():
            for event_id in ids:
                answer = httpx.get(
                    f"{ledger.url}/v1/events/{event_id}",
                    headers={"Authorization": f"Bearer {ledger.tokens[token]}"},
                    timeout=30,
                )
                want = 200 if group in in_scope else 404
                assert answer.status_code == want, (token, group, answer.text)
                assert not ledger.leaks(token, answer.text)


@pytest.mark.timeout(LONG_TEST_TIMEOUT_S)
def test_the_attack_corpus_leaks_no_other_teams_rows(ledger: Ledger) -> None:
    attacks = load_corpus(ledger.paths)
    assert len(attacks) >= 200
    for token in ("payments", "prod"):
        for _, sql in attacks:
            answer = ledger.post(token, sql)
            assert answer.status_code < 500, (sql[:120], answer.text[:300])
            assert not ledger.leaks(token, answer.text), (token, sql[:120], answer.text[:300])
