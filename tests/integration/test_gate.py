"""The pre-deploy gate and approvals end to end: the API on loopback (with `up`'s Gatekeeper
under a policy file), the real Tansu broker, the ClickHouse sink into chDB, a real slapd and a
real OIDC issuer on loopback (tests/conftest.py), and the `shipledger gate` / `approve`
commands as a pipeline runs them.

Change requests come in as any change system's would (`POST /v1/events`, family `change`);
the gate reads them back from the ledger. Every decision, approval and break-glass alert is
read back from ClickHouse; every refusal leaves the `changes` topic untouched."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shipledger.lag import end_offsets
from shipledger.processors.gate import Gatekeeper
from shipledger.producers.api.auth import AuthStore
from shipledger.producers.api.server import ApiServer
from shipledger.producers.journal import Entry
from shipledger.schemas.policy import load_policy
from shipledger.schemas.topics import ALERTS, GATE_DECISIONS, Topics
from shipledger.settings import Settings
from shipledger.sinks.ledger.reader import LedgerReader
from shipledger.sinks.ledger.store import LedgerStore
from shipledger.sinks.sink import ClickHouseSink
from shipledger.topics import ensure_topics
from shipledger.up.completeness import held_for, is_complete
from tests.identity_kit import Issuer, Slapd
from tests.kit import CliEnv, own_settings, wait_for

pytestmark = pytest.mark.integration

SHIPLEDGER = str(Path(sys.executable).with_name("shipledger"))
TENANT = "retail"
POLICY = """
version: gate-e2e
defaults:
  require_change_ticket: [prod]
  # About other rules: their prod deployments carry no built digest.
  require_artifact_digest: []
  approvals:
    - {name: prod-cab, group: cab, environments: [prod]}
  service_accounts: [release-bot]
"""


@dataclass
class Stack:
    """The API with its broker topics, sink and ledger; a pipeline's ingest token."""

    url: str
    settings: Settings
    store: LedgerStore
    reader: LedgerReader
    token: str
    env: dict[str, str]

    def client(self, headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers or {}, timeout=30)

    def change(self, change_id: str, state: str = "approved", **fields: Any) -> None:
        """A change request as its system reports it, opened by raj an hour ago and (by
        default) approved, for checkout in prod, planned from an hour ago to two from now;
        waits until the ledger has it."""
        now = datetime.now(UTC)
        base: dict[str, Any] = {
            "family": "change",
            "change_id": change_id,
            "system": "servicenow",
            "services": ["checkout"],
            "environments": ["production"],
            "planned_start": (now - timedelta(hours=1)).isoformat(),
            "planned_end": (now + timedelta(hours=2)).isoformat(),
        }
        events = [
            {**base, "state": "opened", "actor": "raj", "occurred_at": _ago(60)},
            {**base, "state": state, "actor": "cab-tool", "occurred_at": _ago(30), **fields},
        ]
        with self.client({"Authorization": f"Bearer {self.token}"}) as client:
            answer = client.post("/v1/events", json=events)
        assert answer.status_code == 202, answer.text
        wait_for(lambda: self.change_rows(change_id) >= 2, f"change {change_id} in the ledger")

    def change_rows(self, change_id: str) -> int:
        return len(self.reader.change_events(TENANT, change_id))

    def changes_published(self) -> int:
        """Messages in the changes topic so far (its true end offsets)."""
        topic = self.settings.topic("changes")
        parts = [(topic, p) for p in range(self.settings.topic_partitions)]
        conf = self.settings.kafka_common(self.settings.bootstrap_servers or "")
        return sum(marks.high for marks in end_offsets(conf, parts).values())

    def row(self, table: str, column: str, value: str) -> dict[str, Any] | None:
        names, rows = self.store.query(
            f"SELECT * FROM shipledger.{table} WHERE {column} = %(v)s LIMIT 1",
            {"v": value},
        )
        return dict(zip(names, rows[0], strict=True)) if rows else None

    def stored(self, table: str, column: str, value: str) -> dict[str, Any]:
        wait_for(lambda: self.row(table, column, value) is not None, f"{table} row {value}")
        found = self.row(table, column, value)
        assert found is not None
        return found

    def cli(self, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SHIPLEDGER, *args],
            env={**self.env, **env},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def gate(
        self, *args: str, environment: str = "prod", **env: str
    ) -> subprocess.CompletedProcess[str]:
        """`shipledger gate` for checkout to `environment`, then `args`."""
        return self.cli("gate", "--service", "checkout", "--environment", environment, *args, **env)

    def approve(
        self, change_id: str, *args: str, stdin: str = "", **env: str
    ) -> subprocess.CompletedProcess[str]:
        """`shipledger approve` of `change_id`, then `args` (who approves, and how proven)."""
        return self.cli("approve", "--change-id", change_id, *args, stdin=stdin, **env)


def _ago(minutes: int) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes)).isoformat()


@pytest.fixture(scope="module")
def stack(
    broker: str,
    slapd: Slapd,
    issuer: Issuer,
    tmp_path_factory: pytest.TempPathFactory,
    cli_env: CliEnv,
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("gate")
    policy_file = tmp / "policy.yaml"
    policy_file.write_text(POLICY)
    settings = own_settings(
        tmp,
        bootstrap_servers=broker,
        sink_batch_ms=50,
        policy_file=policy_file,
        oidc_issuer=issuer.url,
        oidc_audience=issuer.audience,
        **slapd.settings(),
    )
    ensure_topics(settings, broker)
    policy = load_policy(policy_file)
    stop = threading.Event()
    with LedgerStore.open(settings) as store:
        store.ensure_schema()
        sink = ClickHouseSink(settings, broker, store, policy=policy)
        thread = threading.Thread(target=sink.run, args=(stop,), daemon=True)
        thread.start()
        auth = AuthStore(settings.resolved_auth_db)
        token, _ = auth.create_token(TENANT, ("ingest",))
        reader = LedgerReader(store)
        try:
            with ApiServer(settings, broker, reader, governance=Gatekeeper(policy)) as server:
                env = {
                    **cli_env(settings, broker),
                    "SHIPLEDGER_API_URL": server.url,
                    "SHIPLEDGER_API_TOKEN": token,
                    "SHIPLEDGER_TENANT": TENANT,
                    "SHIPLEDGER_ACTOR": "deploy-bot",
                }
                yield Stack(server.url, settings, store, reader, token, env)
        finally:
            auth.close()
            stop.set()
            thread.join(30)


def _approve_oidc(stack: Stack, issuer: Issuer, change_id: str, **claims: Any) -> httpx.Response:
    with stack.client({"Authorization": f"Bearer {issuer.token(**claims)}"}) as client:
        return client.post("/v1/approvals", json={"tenant": TENANT, "change_id": change_id})


def test_an_approved_change_with_an_sso_approval_is_allowed_and_recorded(
    stack: Stack, issuer: Issuer
) -> None:
    stack.change("CHG-OK")
    answer = _approve_oidc(stack, issuer, "CHG-OK", preferred_username="alice", groups=["cab"])
    assert answer.status_code == 201, answer.text
    recorded = answer.json()
    assert (recorded["approver"], recorded["groups"], recorded["state"]) == (
        "alice",
        ["cab"],
        "approved",
    )
    assert recorded["verified_by"] == f"oidc:{issuer.url}"
    # The approval reaches the ledger as a change event carrying the verified approval.
    row = stack.stored("change_events", "event_id", recorded["event_id"])
    assert row["source"] == "approval"
    (approval,) = row["approvals"]
    assert approval["groups"] == ["cab"] and approval["verified_by"] == f"oidc:{issuer.url}"

    run = stack.gate("--change-id", "CHG-OK", environment="production")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("allowed: checkout may go to production under CHG-OK")
    decision_id = run.stdout.split("(decision ")[1].split(",")[0]
    stored = stack.stored("gate_decisions", "event_id", decision_id)
    assert (stored["decision"], stored["reasons"], stored["source"]) == ("allowed", [], "cli")
    assert (stored["actor"], stored["environment"], stored["change_id"]) == (
        "deploy-bot",
        "prod",
        "CHG-OK",
    )
    assert stored["asked_by"] == stack.token.split("_")[1]
    assert stored["policy_version"].startswith("gate-e2e+")


def _gate(stack: Stack, change_id: str, **fields: Any) -> dict[str, Any]:
    body = {"service": "checkout", "environment": "prod", "change_id": change_id}
    body |= {"actor": "deploy-bot", **fields}
    with stack.client({"Authorization": f"Bearer {stack.token}"}) as client:
        answer = client.post("/v1/gate", json=body)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def test_blocked_with_each_reason_and_every_decision_recorded(stack: Stack) -> None:
    stack.change("CHG-REJ", state="rejected")
    stack.change("CHG-LATE", planned_start=_ago(300), planned_end=_ago(240))
    stack.change("CHG-NOAPP")
    cases = {
        "CHG-REJ": ["change_not_approved", "missing_approvals"],
        "CHG-NONE": ["change_ticket_unknown", "missing_approvals"],
        "CHG-LATE": ["outside_change_window", "missing_approvals"],
        "CHG-NOAPP": ["missing_approvals"],
    }
    for change_id, rules in cases.items():
        found = _gate(stack, change_id)
        assert (found["decision"], found["passes"]) == ("blocked", False), change_id
        assert [r["rule"] for r in found["reasons"]] == rules, change_id
        stored = stack.stored("gate_decisions", "event_id", found["decision_id"])
        assert stored["decision"] == "blocked"
        assert [r["rule"] for r in stored["reasons"]] == rules
    # The CLI lists every reason and exits 1.
    run = stack.gate("--change-id", "CHG-REJ")
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout.startswith("blocked: checkout may not go to prod under CHG-REJ")
    assert "  - change_not_approved (high): checkout deployed to prod" in run.stdout
    assert "  - missing_approvals (medium): " in run.stdout


def test_a_manual_deployer_is_known_by_the_directory_or_the_policy(stack: Stack) -> None:
    stack.change("CHG-MAN")

    def rules(actor: str) -> list[str]:
        found = _gate(stack, "CHG-MAN", actor=actor, trigger="manual")
        stored = stack.stored("gate_decisions", "event_id", found["decision_id"])
        assert [r["rule"] for r in stored["reasons"]] == [r["rule"] for r in found["reasons"]]
        return [r["rule"] for r in found["reasons"]]

    # alice is a person of the slapd directory; release-bot a service account of the policy.
    assert rules("alice") == ["missing_approvals"]
    assert rules("release-bot") == ["missing_approvals"]
    assert rules("mallory") == ["unattributed_manual_deploy", "missing_approvals"]
    run = stack.gate("--change-id", "CHG-MAN", "--trigger", "manual", "--actor", "mallory")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "  - unattributed_manual_deploy (high): checkout was deployed to prod by hand by " in (
        run.stdout
    )


def test_break_glass_passes_is_recorded_and_raises_a_critical_alert(stack: Stack) -> None:
    run = stack.gate(
        "--change-id",
        "CHG-NONE",
        "--emergency",
        "--reason",
        "payments down (INC-981)",
        "--format",
        "json",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    found = json.loads(run.stdout)
    assert found["decision"] == "break_glass" and found["passes"]
    stored = stack.stored("gate_decisions", "event_id", found["decision_id"])
    assert (stored["decision"], stored["emergency_reason"]) == (
        "break_glass",
        "payments down (INC-981)",
    )
    alert = stack.stored("alerts", "alert_id", found["alert_id"])
    assert (alert["rule"], alert["severity"], alert["tenant"]) == (
        "break_glass",
        "critical",
        TENANT,
    )
    assert alert["evidence"]["decision_id"] == found["decision_id"]
    assert alert["evidence"]["blocked_by"] == "change_ticket_unknown,missing_approvals"
    # What the API journaled for them is complete once stored (`up` compacts the journal
    # by this): each is looked up by its table's id column.
    tables = Topics.from_settings(stack.settings).tables()
    entries = [
        Entry(stack.settings.topic(GATE_DECISIONS), b"", b"", TENANT, found["decision_id"], ""),
        Entry(stack.settings.topic(ALERTS), b"", b"", TENANT, found["alert_id"], ""),
    ]
    held = held_for(stack.store, entries, tables)
    assert all(is_complete(e, tables[e.topic], held) for e in entries)


def test_an_ldap_approval_from_the_cli_is_visible_to_the_gate(stack: Stack) -> None:
    stack.change("CHG-LDAP")
    assert _gate(stack, "CHG-LDAP")["decision"] == "blocked"
    run = stack.approve(
        "CHG-LDAP",
        "--username",
        "carol",
        "--password-stdin",
        "--comment",
        "rollback plan checked",
        stdin="carol-pw\n",
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith(
        "recorded: carol approved CHG-LDAP (groups: cab; verified by ldap:"
    )
    wait_for(lambda: stack.change_rows("CHG-LDAP") == 3, "the approval in the ledger")
    found = _gate(stack, "CHG-LDAP")
    assert (found["decision"], found["reasons"]) == ("allowed", [])
    # Four eyes: carol's approval does not count when carol deploys.
    mine = _gate(stack, "CHG-LDAP", actor="carol")
    assert [r["rule"] for r in mine["reasons"]] == ["missing_approvals"]
    assert "carol does not count" in mine["reasons"][0]["message"]


def test_each_refusal_says_why_and_records_nothing(
    stack: Stack, issuer: Issuer, unused_port: int
) -> None:
    stack.change("CHG-REF")
    stack.change("CHG-ALICE", requested_by="alice")
    before = stack.changes_published()
    past = datetime.now(UTC) - timedelta(hours=1)
    ldap = {"tenant": TENANT, "change_id": "CHG-REF"}
    oidc_cases: list[tuple[dict[str, Any], str, int, str]] = [
        ({"exp": past, "iat": past - timedelta(minutes=5)}, "CHG-REF", 401, "token expired"),
        ({"aud": "someone-else"}, "CHG-REF", 401, "is for audience 'someone-else'"),
        ({"preferred_username": "bob", "groups": ["sre"]}, "CHG-REF", 403, "not in a group"),
        ({"preferred_username": "alice"}, "CHG-ALICE", 403, "alice requested this change"),
        ({"preferred_username": "alice"}, "CHG-NOPE", 404, "no change request 'CHG-NOPE'"),
    ]
    for claims, change_id, status, words in oidc_cases:
        answer = _approve_oidc(stack, issuer, change_id, **claims)
        assert answer.status_code == status, (claims, answer.text)
        assert words in answer.json()["error"], answer.text
    with stack.client() as client:
        bad_password = client.post("/v1/approvals", json=ldap, auth=("alice", "wrong"))
        no_credentials = client.post("/v1/approvals", json=ldap)
    assert bad_password.status_code == 401
    assert bad_password.json()["error"] == "invalid username or password"
    assert no_credentials.status_code == 401
    assert "missing credentials" in no_credentials.json()["error"]
    run = stack.approve("CHG-REF", "--username", "bob", "--password-stdin", stdin="bob-pw\n")
    assert run.returncode == 1 and "bob is not in a group that approves" in run.stderr
    # An identity provider that cannot answer is a 503 (exit 3), never a refusal.
    down = stack.settings.model_copy(
        update={"oidc_issuer": f"http://127.0.0.1:{unused_port}", "api_port": 0}
    )
    with ApiServer(
        down,
        stack.settings.bootstrap_servers or "",
        stack.reader,
        governance=Gatekeeper(load_policy(stack.settings.policy_file)),
    ) as server:
        token = issuer.token(iss=f"http://127.0.0.1:{unused_port}")
        with httpx.Client(base_url=server.url, timeout=30) as client:
            answer = client.post(
                "/v1/approvals", json=ldap, headers={"Authorization": f"Bearer {token}"}
            )
        assert answer.status_code == 503, answer.text
        assert "cannot verify the approver now" in answer.json()["error"]
        run = stack.approve("CHG-REF", "--oidc-token", token, SHIPLEDGER_API_URL=server.url)
        assert run.returncode == 3, run.stdout + run.stderr
    assert stack.changes_published() == before


def test_gate_usage_and_unreachable_api_exit_codes(stack: Stack, unused_port: int) -> None:
    usage = stack.gate("--emergency")
    assert usage.returncode == 2 and "--emergency needs --reason" in usage.stderr
    gone = stack.gate(SHIPLEDGER_API_URL=f"http://127.0.0.1:{unused_port}")
    assert gone.returncode == 3 and "did not answer" in gone.stderr
    other = stack.gate("--tenant", "acme")
    assert other.returncode == 2 and "tenant 'retail' only" in other.stderr


CI = Path(__file__).resolve().parents[2] / "deploy" / "ci"


def test_the_ci_gate_step(stack: Stack, unused_port: int) -> None:
    """The optional gate step of the CI templates: the GitLab job's line, the shared script
    (blocked fails the job; break-glass and an opted-in unreachable gate go ahead)."""
    jobs = yaml.safe_load((CI / "gitlab" / "shipledger.gitlab-ci.yml").read_text())
    (line,) = jobs[".shipledger:gate"]["script"]
    env = {
        **stack.env,
        "SHIPLEDGER_BIN": SHIPLEDGER,
        "SHIPLEDGER_STEP_SCRIPT": str(CI / "shipledger-step.sh"),
        "SHIPLEDGER_SERVICE": "checkout",
        "SHIPLEDGER_ENVIRONMENT": "prod",
        "SHIPLEDGER_CHANGE_ID": "CHG-NONE",
        "SHIPLEDGER_EMERGENCY_REASON": "",  # GitLab passes unset variables empty
    }

    def job(**more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", "-c", f"set -e\n{line}"],
            env={**env, **more},
            capture_output=True,
            text=True,
            timeout=120,
        )

    blocked = job()
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    assert "change_ticket_unknown" in blocked.stdout
    glass = job(SHIPLEDGER_EMERGENCY_REASON="hotfix for INC-981")
    assert glass.returncode == 0 and glass.stdout.startswith("break-glass:"), glass.stderr
    gone = {"SHIPLEDGER_API_URL": f"http://127.0.0.1:{unused_port}"}
    assert job(**gone).returncode == 3
    assert job(**gone, SHIPLEDGER_GATE_UNREACHABLE="pass").returncode == 0
