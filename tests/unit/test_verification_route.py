"""The verification routes over a ledger double: tenant, team and environment scopes, the
404 before a verdict, a verdict filter out of range named."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from fastapi.testclient import TestClient

from shipledger.producers.api.app import create_app
from shipledger.producers.api.auth import AuthStore
from shipledger.producers.api.context import ApiContext
from shipledger.settings import Settings
from shipledger.sinks.ledger.reader import LedgerReads, StoredVerdict, VerdictFilter

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def stored(tenant: str, deployment_id: str, team: str, environment: str) -> StoredVerdict:
    evidence = {"checks": [], "passed": 0, "failed": 0, "degraded": 0}
    return StoredVerdict(
        tenant, deployment_id, "checkout", environment, "unverified", 0.0,
        json.dumps(evidence), AT, AT, AT, 0, "v1", team, AT, AT,
    )  # fmt: skip


class Verdicts:
    """The one read the routes make, over fixed rows (filters as the real read applies them)."""

    rows = [
        stored("acme", "d-pay", "payments", "prod"),
        stored("acme", "d-search", "search", "dev"),
        stored("globex", "d-globex", "payments", "prod"),
    ]

    def verifications(self, wanted: VerdictFilter) -> list[StoredVerdict]:
        return [
            v
            for v in self.rows
            if wanted.tenant in (None, v.tenant)
            and wanted.deployment_id in (None, v.deployment_id)
            and wanted.verdict in (None, v.verdict)
        ][: wanted.limit]


def test_routes_see_only_the_tokens_rows() -> None:
    auth = AuthStore(Path(":memory:"))
    ctx = ApiContext(settings=Settings(), auth=auth)
    ctx.ledger = cast(LedgerReads, Verdicts())
    tenant, _ = auth.create_token("acme", ("read",))
    team, _ = auth.create_token("acme", ("read",), teams=("payments",))
    prod, _ = auth.create_token("*", ("read",), environments=("prod",))
    try:
        with TestClient(create_app(ctx)) as client:

            def get(token: str, path: str, **params: Any) -> Any:
                answer = client.get(
                    path, params=params, headers={"Authorization": f"Bearer {token}"}
                )
                return answer.status_code, answer.json()

            def listed(token: str) -> list[str]:
                return [v["deployment_id"] for v in get(token, "/v1/verifications")[1]]

            assert listed(tenant) == ["d-pay", "d-search"]
            assert listed(team) == ["d-pay"]
            assert listed(prod) == ["d-pay", "d-globex"]
            status, body = get(team, "/v1/deployments/d-pay/verification")
            assert status == 200 and body["verdict"] == "unverified" and body["team"] == "payments"
            assert body["evidence"]["checks"] == []
            status, body = get(team, "/v1/deployments/d-search/verification")
            assert status == 404 and "deployment_id" in json.dumps(body)
            assert get(tenant, "/v1/deployments/d-globex/verification")[0] == 404
            status, body = get(tenant, "/v1/verifications", verdict="fine")
            assert status == 400 and "verdict: must be one of" in json.dumps(body)
    finally:
        auth.close()
