"""Provider webhooks end to end: the fixtures (built from each provider's documented payloads,
tests/fixtures/webhooks) are posted, signed, to the API of a real embedded stack (uvicorn,
Tansu, the Faust worker, the sink, chDB); the deployment records and family rows that land in
ClickHouse are checked. A bad signature, a malformed body and an ignored event type write
nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shipledger.producers.api.auth import AuthStore
from shipledger.settings import Settings
from shipledger.up.stack import Stack
from tests.kit import poll, wait_drained
from tests.webhook_kit import SECRET, RawRequest

pytestmark = pytest.mark.integration


TENANT = "acme"
#: (provider, fixtures posted in order) for the deliveries that become events.
DELIVERIES = [
    ("github", ["deployment", "deployment_status_in_progress", "deployment_status_success"]),
    ("github", ["push", "pull_request_closed", "release_published"]),
    ("gitlab", ["deployment_running", "deployment_success"]),
    ("gitlab", ["merge_request_merged", "push", "tag_push"]),
    ("argocd", ["sync_running", "sync_succeeded"]),
    ("cdevents", ["service_deployed_binary", "service_upgraded_structured"]),
    ("cdevents", ["service_rolledback_binary", "change_merged_binary"]),
    ("cdevents", ["artifact_published_structured", "environment_created_structured"]),
    ("cdevents", ["environment_modified_binary", "pipelinerun_finished_binary"]),
    ("jenkins", ["failure"]),
    # The CDEvents spec's own example: no commit, recorded and flagged (missing_metadata).
    ("cdevents", ["service_deployed_v05_spec_example"]),
]
FLAGGED_DEPLOYMENT = "cdevents:/event/source/123:271069a8-fc18-44f1-b38f-9d70a1695819"
IGNORED = [("github", "ping"), ("github", "deployment_status_inactive"), ("gitlab", "pipeline")]
#: deployment_id -> (status, service, canonical environment, commit sha prefix)
EXPECTED_DEPLOYMENTS = {
    "github:acme/payments-api:145988746": ("succeeded", "payments", "prod", "f95f852bd8fc"),
    "gitlab:shop/checkout-service:15": ("succeeded", "checkout-service", "stage", "279484c09fbe"),
    "gitlab:shop/checkout-service:16": ("succeeded", "checkout-service", "stage", "279484c09fbe"),
    "argocd:argocd:payments-api:2024-03-04T10:20:00+00:00": (
        "succeeded",
        "payments",
        "prod",
        "0c2b9f6c1e4a",
    ),
    "cdevents:/tekton/prod-cluster:271069a8-fc18-44f1-b38f-9d70a1695819": (
        "succeeded",
        "payments",
        "prod",
        "5f3a1c9e8d7b",
    ),
    "cdevents:/tekton/prod-cluster:9b1f7c2e-4f0a-4c8e-8f3b-2d9e6a1c0b11": (
        "succeeded",
        "payments",
        "prod",
        "5f3a1c9e8d7b",
    ),
    "cdevents:/tekton/prod-cluster:c4e2a9d1-7b3f-4e6a-9c8d-1f2e3a4b5c6d": (
        "rolled_back",
        "payments",
        "prod",
        "e1d2c3b4a596",
    ),
    "jenkins:payments/deploy-production:412": ("failed", "payments", "prod", "a94a8fe5ccb1"),
}
#: Deployment events: GitHub 3, GitLab 2 + 1 (short SHA only), Argo CD 2, CDEvents 4, Jenkins 1.
DEPLOYMENT_EVENTS = 13
#: family table -> rows expected from DELIVERIES
EXPECTED_FAMILY_ROWS = {
    "source_events": 7,  # GitHub push, PR, release; GitLab MR, push, tag; CDEvents change
    "artifact_events": 2,  # GitHub release asset; CDEvents artifact
    "catalog_events": 2,  # CDEvents environment created, modified
    "signal_events": 1,  # CDEvents pipeline run finished
}


@pytest.fixture
def stack(broker: str, settings: Settings, tmp_path: Path) -> Iterator[Stack]:
    running_settings = settings.model_copy(update={"api_port": 0, "sink_batch_ms": 100})
    auth = AuthStore(running_settings.resolved_auth_db)
    try:
        for provider in ("github", "gitlab", "argocd", "cdevents", "jenkins"):
            auth.set_webhook_secret(TENANT, provider, SECRET)
    finally:
        auth.close()
    with Stack(running_settings, bootstrap=broker, log_dir=tmp_path / "logs", api=True) as s:
        yield s


def _wait_count(stack: Stack, sql: str, want: int, timeout_s: float = 60) -> int:
    store = stack.store
    assert store is not None
    return poll(stack, lambda: int(store.query(sql)[1][0][0]), lambda n: n >= want, timeout_s)


def test_every_provider_fixture_lands_as_the_right_records(
    stack: Stack, webhook_request: RawRequest, webhook_secret: str
) -> None:
    assert stack.api is not None
    with httpx.Client(base_url=stack.api.url, timeout=30) as client:

        def post(provider: str, name: str) -> httpx.Response:
            headers, body = webhook_request(provider, name)
            return client.post(f"/v1/webhooks/{provider}/{TENANT}", content=body, headers=headers)

        for provider, names in DELIVERIES:
            for name in names:
                answer = post(provider, name)
                assert answer.status_code == 202, (provider, name, answer.text)
                assert answer.json()["count"] >= 1, (provider, name, answer.text)

        # No commit_url (a proxy dropped it): the short SHA resolves through the full SHAs of
        # the GitLab push received above.
        def short_only(body: dict[str, Any]) -> None:
            del body["commit_url"]
            body["deployment_id"] = 16

        headers, body = webhook_request("gitlab", "deployment_success", short_only)
        delivery = "8a5b0c77-2f8d-4e3c-9b33-6a1d2f6c0016"  # another delivery, not a redelivery
        headers |= {"X-Gitlab-Event-UUID": delivery, "Idempotency-Key": delivery}
        resolved = client.post(f"/v1/webhooks/gitlab/{TENANT}", content=body, headers=headers)
        assert resolved.status_code == 202, resolved.text
        for provider, name in IGNORED:
            answer = post(provider, name)
            assert answer.status_code == 202, answer.text
            assert answer.json()["count"] == 0 and answer.json()["ignored"]

        headers, body = webhook_request("github", "deployment")
        forged = client.post(
            f"/v1/webhooks/github/{TENANT}",
            content=body.replace(b"payments", b"paymentz"),
            headers=headers,
        )
        assert forged.status_code == 401, forged.text
        assert "signature" in forged.json()["error"].lower()
        malformed = client.post(
            f"/v1/webhooks/jenkins/{TENANT}",
            content=b"{not json",
            headers={"X-Shipledger-Token": webhook_secret, "Content-Type": "application/json"},
        )
        assert malformed.status_code == 400, malformed.text
        unknown = client.post(f"/v1/webhooks/bitbucket/{TENANT}", content=b"{}")
        assert unknown.status_code == 404

    assert stack.store is not None
    want = len(EXPECTED_DEPLOYMENTS) + 1  # and the flagged one
    # Every expected deployment ends finished: wait for that, not for the first record of
    # each (a later stage may still be on its way through the pipeline).
    finished = "SELECT count() FROM deployments WHERE status != 'in_progress'"
    assert _wait_count(stack, finished, want) == want
    _, rows = stack.store.query(
        "SELECT deployment_id, status, service, environment, commit_sha, tenant FROM deployments"
    )
    got = {row[0]: row[1:] for row in rows}
    for deployment_id, (status, service, environment, sha) in EXPECTED_DEPLOYMENTS.items():
        found = got[deployment_id]
        assert found[:3] == (status, service, environment), (deployment_id, found)
        assert found[3].startswith(sha) and len(found[3]) == 40, found  # full SHA, never short
        assert found[4] == TENANT
    assert got[FLAGGED_DEPLOYMENT][3] == ""  # recorded without a commit...
    flagged = (
        "SELECT count() FROM alerts WHERE rule = 'missing_metadata' "
        f"AND deployment_id = '{FLAGGED_DEPLOYMENT}'"
    )
    assert _wait_count(stack, flagged, 1) == 1  # ...and flagged
    for table, want in EXPECTED_FAMILY_ROWS.items():
        sql = f"SELECT count() FROM shipledger.{table}"
        assert _wait_count(stack, sql, want) == want, table
    # Exact counts: the forged, malformed and ignored deliveries wrote nothing. The events'
    # rows come from the sink reading the raw topic, maybe after the records and alerts the
    # worker made of them: everything through first.
    wait_drained(stack)
    _, events = stack.store.query("SELECT count() FROM deployment_events")
    assert events[0][0] == DEPLOYMENT_EVENTS
