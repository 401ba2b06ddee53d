"""The verification routes over a ledger double: tenant, team and environment scopes, the
404 before a verdict, a verdict filter out of range named."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
from click.testing import CliRunner
from fastapi.testclient import TestClient

from shipledger.cli import cli
from shipledger.producers.api.app import create_app
from shipledger.producers.api.auth import AuthStore
from shipledger.producers.api.context import ApiContext
from shipledger.producers.api.server import ApiServer
from shipledger.settings import Settings
from shipledger.sinks.ledger.reader import LedgerReads, StoredVerdict, VerdictFilter
from tests.kit import ledger_env, own_settings, registered_api

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


class Nothing:
    """A ledger that holds nothing: each read records the id it was asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def verifications(self, wanted: VerdictFilter) -> list[StoredVerdict]:
        self.asked.append(str(wanted.deployment_id))
        return []

    def change_set(self, tenant: str | None, deployment_id: str) -> None:
        self.asked.append(deployment_id)

    def event(self, event_id: str, tenant: str | None) -> None:
        self.asked.append(event_id)


def test_an_id_with_a_slash_reaches_its_route() -> None:
    """A GitHub import's deployment ids are `github:<owner>/<repo>:<id>`: the slash (sent as
    %2F, which the router decodes) made every read of one by id an unnamed `Not Found` of
    no route, so `shipledger changes show` and `verification show` said it had none."""
    auth = AuthStore(Path(":memory:"))
    ctx = ApiContext(settings=Settings(), auth=auth)
    nothing = Nothing()
    ctx.ledger = cast(LedgerReads, nothing)
    token, _ = auth.create_token("acme", ("read",))
    wanted = "github:acme/shop:7"
    try:
        with TestClient(create_app(ctx)) as client:
            for path in ("/v1/deployments/{}/verification", "/v1/deployments/{}/changes"):
                answer = client.get(
                    path.format("github:acme%2Fshop:7"),
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert answer.status_code == 404
                assert repr(wanted) in answer.json()["error"], (path, answer.text)
            answer = client.get(
                "/v1/events/build%2F42", headers={"Authorization": f"Bearer {token}"}
            )
            assert answer.status_code == 404 and "'build/42'" in answer.json()["error"]
    finally:
        auth.close()
    assert nothing.asked == [wanted, wanted, "build/42"]


def test_the_cli_asks_the_api_for_the_whole_id_and_names_an_overlong_argument(
    tmp_path: Path,
) -> None:
    """Through the API of a running stack (loopback, over a ledger holding nothing):
    `changes show` put the id in the URL as it was (`d?x` asked for `d`), and an argument
    longer than a URL may be (100,000 characters) was an httpx.InvalidURL traceback."""
    settings = own_settings(tmp_path)
    nothing = Nothing()
    huge = "a" * 100_000
    with (
        ApiServer(settings, "127.0.0.1:1", cast(LedgerReads, nothing)) as server,
        registered_api(settings, server),
    ):

        def run(*args: str) -> tuple[int, str]:
            result = CliRunner().invoke(cli, list(args), env=ledger_env(settings.data_dir))
            assert not isinstance(result.exception, httpx.InvalidURL), args
            return result.exit_code, result.output

        assert run("changes", "show", "d?x")[0] == 1
        assert run("verification", "show", "github:acme/shop:7")[0] == 1
        assert nothing.asked == ["d?x", "github:acme/shop:7"]
        for args in (
            ("changes", "show", huge),
            ("verification", "show", huge),
            ("verification", "list", "--service", huge),
            ("metrics", "dora", "--service", huge),
            ("suspects", "--service", huge),
        ):
            code, out = run(*args)
            assert code == 1 and "too long" in out, (args[:2], out[-300:])
