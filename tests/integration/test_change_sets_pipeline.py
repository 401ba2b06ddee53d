"""Change sets end to end on real components: a monorepo push through the GitHub webhook, more
source events and deployments through `POST /v1/events` → Tansu → worker → sink → chDB; the
sink computes each finished deployment's change set; `GET /v1/deployments/{id}/changes` and
`shipledger changes show` answer from it (docs/changes.md).

The monorepo `acme/platform` (policy `monorepos:`): checkout owns `services/checkout/**` and
`libs/money/**`, search `services/search/**`. History (tests/fixtures/webhooks/github/
push_monorepo.json): B0 (search) <- X1 (checkout) <- X2 (search) <- X3 (libs/money + checkout,
the merge commit of PR 12) <- Y (checkout, pushed late).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shipledger.producers.api.auth import AuthStore
from shipledger.settings import Settings
from shipledger.stackfile import StackInfo, write_stack
from shipledger.up.stack import Stack
from tests.kit import invoke, wait_until
from tests.webhook_kit import SECRET, RawRequest

pytestmark = pytest.mark.integration

TENANT = "retail"
REPO = "acme/platform"
B0 = "9049f1265b7d61be4a8904a9a27120d2064dab3b"  # the fixture's `before`
X1 = "4f0b6a1d2c3e4f5a6b7c8d9e0f1a2b3c4d5e6f70"
X2 = "8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a71"
X3 = "c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c172"
Y = "d" * 40
POLICY = f"""
version: changes-1
monorepos:
  {REPO}:
    checkout: ["services/checkout/**", "libs/money/**"]
    search: ["services/search/**"]
"""


@pytest.fixture
def stack(broker: str, tmp_path: Path) -> Iterator[Stack]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    settings = Settings(
        data_dir=tmp_path / "data",
        topic_prefix=f"chg{uuid.uuid4().hex[:12]}.",
        topic_partitions=2,
        policy_file=policy,
        sink_batch_ms=100,
        api_port=0,
    )
    auth = AuthStore(settings.resolved_auth_db)
    try:
        auth.set_webhook_secret(TENANT, "github", SECRET)
    finally:
        auth.close()
    with Stack(settings, bootstrap=broker, log_dir=tmp_path / "logs", api=True) as running:
        yield running


def _token(stack: Stack, tenant: str, scopes: tuple[str, ...]) -> str:
    auth = AuthStore(stack.settings.resolved_auth_db)
    try:
        return auth.create_token(tenant, scopes, name=f"changes-{tenant}")[0]
    finally:
        auth.close()


def _deployment(dep: str, service: str, sha: str, at: str, **extra: Any) -> list[dict[str, Any]]:
    """A deployment's started and succeeded events (prod, repository acme/platform)."""
    base = {
        "tenant": TENANT,
        "deployment_id": dep,
        "service": service,
        "environment": "prod",
        "commit_sha": sha,
        "repository": REPO,
        "actor": "alice",
        **extra,
    }
    return [
        {**base, "event_id": f"{dep}-s", "event_type": "started", "occurred_at": f"{at}:00Z"},
        {**base, "event_id": f"{dep}-d", "event_type": "succeeded", "occurred_at": f"{at}:30Z"},
    ]


def _source(event_id: str, kind: str, at: str, **fields: Any) -> dict[str, Any]:
    return {
        "family": "source",
        "tenant": TENANT,
        "event_id": event_id,
        "kind": kind,
        "repository": REPO,
        "occurred_at": f"{at}:00Z",
        **fields,
    }


def _change_set(stack: Stack, dep: str) -> dict[str, Any] | None:
    with contextlib.suppress(Exception):
        store = stack.store
        assert store is not None
        names, rows = store.query(
            "SELECT commit_count, reverse, complete FROM deployment_change_sets "
            "WHERE deployment_id = {d:String} ORDER BY computed_at DESC LIMIT 1",
            {"d": dep},
        )
        return dict(zip(names, rows[0], strict=True)) if rows else None
    return None


def test_change_sets_through_the_pipeline_api_and_cli(
    stack: Stack, webhook_request: RawRequest
) -> None:
    assert stack.api is not None
    ingest = {"Authorization": f"Bearer {_token(stack, TENANT, ('ingest',))}"}
    reads = {"Authorization": f"Bearer {_token(stack, TENANT, ('read',))}"}
    other = {"Authorization": f"Bearer {_token(stack, 'wholesale', ('read',))}"}
    with httpx.Client(base_url=stack.api.url, timeout=30) as client:

        def post(*events: dict[str, Any]) -> None:
            answer = client.post("/v1/events", json=list(events), headers=ingest)
            assert answer.status_code == 202, answer.text

        # B0 was pushed on a new branch, touching search only.
        post(
            _source(
                "push-b0",
                "push",
                "2024-03-04T09:00",
                ref="refs/heads/main",
                commit_sha=B0,
                commit_shas=[B0],
                author="mona",
                changed_paths={B0: ["services/search/README.md"]},
            )
        )
        headers, body = webhook_request("github", "push_monorepo")
        answer = client.post(f"/v1/webhooks/github/{TENANT}", content=body, headers=headers)
        assert answer.status_code == 202, answer.text
        post(
            _source(
                "pr-12",
                "pull_request_merged",
                "2024-03-04T10:20",
                commit_sha=X3,
                pull_request_number=12,
                pull_request_title="Shared money rounding",
                author="octocat",
            )
        )
        post(*_deployment("d1", "checkout", B0, "2024-03-04T09:30"))
        wait_until(stack, lambda: _change_set(stack, "d1") is not None, "d1's change set")
        post(*_deployment("d2", "checkout", X3, "2024-03-04T11:00"))
        post(*_deployment("d3", "search", X3, "2024-03-04T11:05"))
        wait_until(stack, lambda: _change_set(stack, "d2") is not None, "d2's change set")
        wait_until(stack, lambda: _change_set(stack, "d3") is not None, "d3's change set")
        post(*_deployment("d4", "checkout", B0, "2024-03-04T12:00", rollback_of="d2"))
        wait_until(stack, lambda: _change_set(stack, "d4") is not None, "d4's change set")
        # Y is deployed before its push reaches the ledger.
        post(*_deployment("d6", "checkout", Y, "2024-03-04T13:00"))
        wait_until(stack, lambda: _change_set(stack, "d6") is not None, "d6's change set")
        assert _change_set(stack, "d6") == {"commit_count": 1, "reverse": 0, "complete": 0}
        post(
            _source(
                "push-y",
                "push",
                "2024-03-04T12:50",
                ref="refs/heads/main",
                commit_sha=Y,
                previous_sha=X3,
                commit_shas=[Y],
                author="mona",
                changed_paths={Y: ["services/checkout/app/cart.py"]},
            )
        )
        wait_until(
            stack,
            lambda: _change_set(stack, "d6") == {"commit_count": 3, "reverse": 0, "complete": 1},
            "d6's change set recomputed after the late push",
        )

        def changes(dep: str, auth: dict[str, str] = reads) -> httpx.Response:
            return client.get(f"/v1/deployments/{dep}/changes", headers=auth)

        first = changes("d1").json()
        assert (first["from_sha"], first["to_sha"]) == (None, B0)
        assert first["commits"] == []  # B0 touched search only

        d2 = changes("d2").json()
        assert (d2["from_sha"], d2["to_sha"], d2["reverse"], d2["complete"]) == (
            B0,
            X3,
            False,
            True,
        )
        assert [c["commit_sha"] for c in d2["commits"]] == [X3, X1]  # X2 is search's
        assert d2["commits"][0]["pr_number"] == 12 and d2["commits"][0]["author"] == "octocat"
        assert d2["commits"][1]["author"] == "monalisa"
        # First seen in the push (10:12:02), in prod at 11:00:30.
        assert d2["commits"][0]["lead_time_s"] == 48 * 60 + 28
        assert d2["pull_requests"] == [
            {"number": 12, "title": "Shared money rounding", "author": "octocat", "commits": [X3]}
        ]
        assert [c["commit_sha"] for c in changes("d3").json()["commits"]] == [X2, B0]

        rollback = changes("d4").json()
        assert rollback["reverse"] is True and rollback["from_sha"] == X3
        assert [c["commit_sha"] for c in rollback["commits"]] == [X3, X1]
        assert all(c["lead_time_s"] is None for c in rollback["commits"])

        late = changes("d6").json()
        assert [c["commit_sha"] for c in late["commits"]] == [Y, X3, X1]

        assert changes("nope").status_code == 404
        assert changes("d2", other).status_code == 404

    write_stack(
        stack.settings,
        StackInfo(
            bootstrap="127.0.0.1:1",
            pid=os.getpid(),
            clickhouse_url=stack.settings.resolved_clickhouse_url,
            api_url=stack.api.url,
            api_token=stack.api.operator_token(),
        ),
    )
    data_dir = str(stack.settings.data_dir)
    table = invoke("changes", "show", "d2", "--data-dir", data_dir)
    assert table.exit_code == 0, table.output
    assert "reverse: False" in table.output and X1 in table.output and "octocat" in table.output
    csv_out = invoke("changes", "show", "d2", "--format", "csv", "--data-dir", data_dir)
    assert csv_out.output.splitlines()[0].startswith("deployment_id,from_sha,to_sha,reverse")
    assert len(csv_out.output.splitlines()) == 3
    missing = invoke("changes", "show", "nope", "--data-dir", data_dir)
    assert missing.exit_code != 0 and "no change set" in missing.output
