"""Artifact continuity and lifecycle end to end on the embedded stack (docs/artifacts.md): the
ingest API → Tansu → Faust worker (builds in the enrichment view, artifact rules) → sink →
chDB; the gate; a Harbor deletion webhook; the protected list (API and CLI).

A build is published and the deployments follow at once, without waiting for anything: the
worker must see the build (its catch-up before flagging, `processors.handler`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.producers.api.artifacts_cli import COLUMNS
from shipledger.producers.api.auth import AuthStore
from shipledger.up.stack import Stack
from tests.kit import policy_stack, query_until, wait_drained
from tests.webhook_kit import SECRET, RawRequest

pytestmark = pytest.mark.integration

TENANT = "retail"
SHA = "0f" * 20
BUILT = "sha256:" + "a1" * 32
OTHER = "sha256:" + "b2" * 32
THIRD = "sha256:" + "c3" * 32
PROVENANCE = "https://ci.example/retail/checkout/attestations/7.intoto.jsonl"
POLICY = """
version: artifacts-e2e
defaults:
  timezone: UTC
  require_change_ticket: []
  require_artifact_digest: [prod]
  trusted_builders: [github-actions]
  artifact_rollback_reach: 2
"""


@pytest.fixture
def stack(broker: str, tmp_path: Path) -> Iterator[Stack]:
    with policy_stack(broker, tmp_path, POLICY) as running:
        auth = AuthStore(running.settings.resolved_auth_db)
        try:
            auth.set_webhook_secret(TENANT, "harbor", SECRET)
        finally:
            auth.close()
        yield running


@contextlib.contextmanager
def client(stack: Stack, *scopes: str) -> Iterator[tuple[httpx.Client, str]]:
    """An API client of `stack` with a token of tenant retail (`scopes`), and the token."""
    assert stack.api is not None
    auth = AuthStore(stack.settings.resolved_auth_db)
    try:
        token = auth.create_token(TENANT, scopes, name="artifacts-test")[0]
    finally:
        auth.close()
    with httpx.Client(
        base_url=stack.api.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        yield http, token


def build(event_id: str, name: str, digest: str, **extra: Any) -> dict[str, Any]:
    return {
        "family": "artifact",
        "event_id": event_id,
        "artifact_name": name,
        "version": "2.14.0",
        "digest": digest,
        "builder": "github-actions",
        "occurred_at": "2026-11-25T08:00:00+00:00",
        **extra,
    }


def deployed(
    dep: str, at: str, digest: str | None, service: str = "checkout"
) -> list[dict[str, Any]]:
    """A prod deployment of `service` (artifact acme/<service> 2.14.0) started at `at` and
    succeeded a minute later."""
    base = {
        "deployment_id": dep,
        "service": service,
        "environment": "production",
        "commit_sha": SHA,
        "actor": "ci-bot",
        "artifact_name": f"acme/{service}",
        "version": "2.14.0",
        **({"artifact_digest": digest} if digest else {}),
    }
    return [
        {**base, "event_id": f"{dep}-started", "event_type": "started", "occurred_at": at},
        {
            **base,
            "event_id": f"{dep}-succeeded",
            "event_type": "succeeded",
            "occurred_at": at.replace(":00:00", ":01:00"),
        },
    ]


def artifact_alerts(stack: Stack) -> str:
    return (
        "SELECT deployment_id, rule FROM alerts WHERE rule LIKE '%artifact%' "
        "ORDER BY deployment_id, rule"
    )


def test_continuity_gate_deletion_and_protected_list(
    stack: Stack, webhook_request: RawRequest
) -> None:
    assert stack.store is not None and stack.api is not None
    with client(stack, "ingest", "read") as (http, token):
        # The builds, then at once the deployments: nothing waits for the worker to read them.
        events = [
            build("b-checkout", "acme/checkout", BUILT, provenance_url=PROVENANCE),
            build("b-search", "acme/search", THIRD, builder="laptop-of-mallory"),
            *deployed("dep-mismatch", "2026-11-25T09:00:00+00:00", OTHER),
            *deployed("dep-missing", "2026-11-25T09:30:00+00:00", None),
            *deployed("dep-ok", "2026-11-25T10:00:00+00:00", BUILT),
            *deployed("dep-search", "2026-11-25T10:00:00+00:00", THIRD, service="search"),
        ]
        answer = http.post("/v1/events", json=[{"tenant": TENANT, **e} for e in events])
        assert answer.status_code == 202, answer.text
        want = [
            ("dep-mismatch", "artifact_digest_mismatch"),
            ("dep-missing", "artifact_digest_missing"),
            ("dep-search", "artifact_unknown"),  # built, but by an untrusted builder
        ]
        assert query_until(stack, artifact_alerts(stack), want) == want
        query_until(
            stack,
            "SELECT count() FROM deployments WHERE status = 'succeeded'",
            [(4,)],
        )
        # The provenance is stored and shown with the build. The alerts and records come from
        # the worker, the build's row from the sink, which may store it after them.
        provenance = [(BUILT, "github-actions", PROVENANCE)]
        assert (
            query_until(
                stack,
                "SELECT digest, builder, provenance_url FROM artifacts "
                "WHERE artifact_name = 'acme/checkout'",
                provenance,
            )
            == provenance
        )

        # The gate refuses the same cases before the deploy.
        def gate(digest: str | None) -> tuple[str, list[str]]:
            body = {
                "service": "checkout",
                "environment": "prod",
                "actor": "ci-bot",
                "artifact_name": "acme/checkout",
                "version": "2.14.0",
                **({"digest": digest} if digest else {}),
            }
            found = http.post("/v1/gate", json=body)
            assert found.status_code == 200, found.text
            return found.json()["decision"], [r["rule"] for r in found.json()["reasons"]]

        assert gate(BUILT) == ("allowed", [])
        assert gate(OTHER) == ("blocked", ["artifact_digest_mismatch"])
        assert gate(None) == ("blocked", ["artifact_digest_missing"])

        # Protected: the running digests and the rollback targets within reach (2): checkout
        # runs BUILT, dep-missing (no digest) is its rollback target, dep-mismatch is beyond.
        protected = http.get("/v1/artifacts/protected")
        assert protected.status_code == 200, protected.text
        assert protected.json()["digests"] == sorted([BUILT, THIRD])
        assert [
            (a["deployment_id"], a["digest"], a["position"]) for a in protected.json()["artifacts"]
        ] == [("dep-ok", BUILT, 1), ("dep-search", THIRD, 1)]
        env = {"SHIPLEDGER_API_URL": stack.api.url, "SHIPLEDGER_API_TOKEN": token}
        listed = CliRunner().invoke(cli, ["artifacts", "protected", "--digests-only"], env=env)
        assert listed.exit_code == 0, listed.output
        # (The stack runs in this process: its log lines share the captured stdout.)
        printed = [line for line in listed.output.splitlines() if line.startswith("sha256:")]
        assert printed == sorted([BUILT, THIRD])
        as_csv = CliRunner().invoke(cli, ["artifacts", "protected", "--format", "csv"], env=env)
        assert as_csv.exit_code == 0, as_csv.output
        lines = as_csv.output.splitlines()
        assert ",".join(COLUMNS) in lines
        assert any(
            line.startswith(f"retail,checkout,prod,,,dep-ok,acme/checkout,2.14.0,{BUILT},")
            for line in lines
        )

        # A malformed registry delivery: 400 naming the field, nothing stored.
        def digest_of(value: str) -> Any:
            def mutate(body: dict[str, Any]) -> None:
                body["event_data"]["repository"]["repo_full_name"] = "acme/checkout"
                body["event_data"]["resources"][0]["digest"] = value

            return mutate

        headers, body = webhook_request("harbor", "delete_artifact", digest_of("sha256:nope"))
        bad = http.post(f"/v1/webhooks/harbor/{TENANT}", content=body, headers=headers)
        assert bad.status_code == 400, bad.text
        assert "event_data.resources.0.digest" in bad.json()["error"]

        # Harbor deletes the digest checkout runs: running_artifact_deleted on dep-ok.
        headers, body = webhook_request("harbor", "delete_artifact", digest_of(BUILT))
        deleted = http.post(f"/v1/webhooks/harbor/{TENANT}", content=body, headers=headers)
        assert deleted.status_code == 202, deleted.text
        want_deleted = [want[0], want[1], ("dep-ok", "running_artifact_deleted"), want[2]]
        assert query_until(stack, artifact_alerts(stack), want_deleted) == want_deleted
        # The API publishes the deletion and its alert to two topics: the sink may store the
        # deletion after the alert.
        deletion = [("acme/checkout", "3.8", BUILT, "deleted")]
        assert (
            query_until(
                stack,
                "SELECT artifact_name, version, digest, action FROM artifact_deletions",
                deletion,
            )
            == deletion
        )
        # Only the deletion was stored of the registry's deliveries (the malformed one: none).
        _, rows = stack.store.query(
            "SELECT count() FROM artifact_events WHERE source = 'webhook:harbor'"
        )
        assert rows == [(1,)]
        # Redelivered: the same ids, no second alert (once the sink has stored, or skipped,
        # what the redelivery published; before that, none would be there either).
        again = http.post(f"/v1/webhooks/harbor/{TENANT}", content=body, headers=headers)
        assert again.status_code == 202, again.text
        wait_drained(stack)
        _, rows = stack.store.query(
            "SELECT count() FROM alerts WHERE rule = 'running_artifact_deleted'"
        )
        assert rows == [(1,)]
