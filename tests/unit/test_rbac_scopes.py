"""RBAC's pure parts: the row-scope predicate, scope names, tokens with team and environment
scopes (and an auth db made before them), and the ClickHouse table filters built from them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from shipledger.producers.api.app import create_app
from shipledger.producers.api.auth import AuthStore, Principal
from shipledger.producers.api.cli import tokens
from shipledger.producers.api.context import ApiContext
from shipledger.schemas.scopes import RowScope, scope_names
from shipledger.settings import Settings
from shipledger.sinks.ledger.query import scope_condition

PAYMENTS = Principal("t1", "acme", frozenset({"read"}), frozenset({"payments"}))


@pytest.mark.parametrize(
    ("scope", "row", "seen"),
    [
        (RowScope(), ("acme", None, None), True),
        (RowScope("acme"), ("globex", "payments", "prod"), False),
        (RowScope("acme", frozenset({"payments"})), ("acme", "payments", "prod"), True),
        (RowScope("acme", frozenset({"payments"})), ("acme", "search", "prod"), False),
        # A row without a team belongs to no team: only readers without a team scope see it.
        (RowScope("acme", frozenset({"payments"})), ("acme", None, "prod"), False),
        (RowScope("acme"), ("acme", None, "prod"), True),
        (RowScope(None, environments=frozenset({"prod"})), ("globex", None, "prod"), True),
        (RowScope(None, environments=frozenset({"prod"})), ("acme", None, "staging"), False),
        (RowScope("acme", frozenset({"a", "b"}), frozenset({"prod"})), ("acme", "b", "prod"), True),
        (RowScope("acme", frozenset({"a"}), frozenset({"prod"})), ("acme", "a", "dev"), False),
    ],
)
def test_row_scope_admits(
    scope: RowScope, row: tuple[str, str | None, str | None], seen: bool
) -> None:
    assert scope.admits(*row) is seen


def test_principal_sees_through_its_scopes() -> None:
    assert PAYMENTS.sees("acme", "payments", "prod")
    assert not PAYMENTS.sees("acme", "search", "prod")
    assert not PAYMENTS.sees("acme", None, "prod")
    assert not PAYMENTS.sees("globex", "payments", "prod")
    operator = Principal("t2", "*", frozenset({"read"}), environments=frozenset({"prod"}))
    assert operator.sees("globex", None, "prod") and not operator.sees("globex", None, "dev")
    assert operator.row_scope("acme") == RowScope("acme", frozenset(), frozenset({"prod"}))
    assert PAYMENTS.row_scope("globex").tenant == "acme"  # a tenant token keeps its tenant
    assert Principal("t3", "acme", frozenset()).sees("acme", None, None)


def test_scope_names_take_repeats_and_comma_lists() -> None:
    assert scope_names(["a, b", "c", "a"], "team") == {"a", "b", "c"}
    assert scope_names([], "team") == frozenset()
    assert scope_names(["Platform Team"], "team") == {"Platform Team"}
    with pytest.raises(ValueError, match="an empty team name"):
        scope_names(["a,,b"], "team")
    with pytest.raises(ValueError, match="is not a environment name: control character"):
        scope_names(["pr\nod"], "environment")


def test_tokens_carry_team_and_environment_scopes(tmp_path: Path) -> None:
    store = AuthStore(tmp_path / "auth.sqlite3")
    try:
        token, info = store.create_token(
            "acme", ("read",), teams=("payments,search",), environments=("prod",)
        )
        assert (info.teams, info.environments) == (("payments", "search"), ("prod",))
        principal = store.verify(token)
        assert principal.teams == {"payments", "search"} and principal.environments == {"prod"}
        assert store.list_tokens()[0].teams == ("payments", "search")
        plain, _ = store.create_token("acme", ("read",))
        assert store.verify(plain).teams == frozenset()
    finally:
        store.close()


def test_an_auth_db_from_before_scopes_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "auth.sqlite3"
    store = AuthStore(path)
    try:
        token, _ = store.create_token("acme", ("read",))
    finally:
        store.close()
    with sqlite3.connect(path) as db:  # the file as the version before RBAC left it
        db.execute("ALTER TABLE tokens DROP COLUMN teams")
        db.execute("ALTER TABLE tokens DROP COLUMN environments")
    db.close()
    for _ in range(2):  # idempotent
        store = AuthStore(path)
        try:
            assert store.verify(token).teams == frozenset()
            scoped, _ = store.create_token("acme", ("read",), teams=("payments",))
            assert store.verify(scoped).teams == {"payments"}
        finally:
            store.close()


def test_tokens_create_takes_team_and_environment_options(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"SHIPLEDGER_AUTH_DB": str(tmp_path / "auth.sqlite3")}
    args = ["create", "--tenant", "acme", "--scope", "read", "--team", "payments"]
    created = runner.invoke(tokens, [*args, "--environment", "prod,staging"], env=env)
    assert created.exit_code == 0, created.output
    assert "limited to teams payments; environments prod,staging" in created.output
    listed = runner.invoke(tokens, ["list"], env=env)
    assert "teams payments; environments prod,staging" in listed.output
    bad = runner.invoke(tokens, [*args, "--team", " , "], env=env)
    assert bad.exit_code == 2 and "--team" in bad.output


@pytest.mark.parametrize(
    ("scope", "columns", "condition"),
    [
        (RowScope("acme"), {"tenant", "team"}, "tenant = 'acme'"),
        (RowScope("acme"), {"id"}, None),
        (
            RowScope("acme", frozenset({"b", "a'"})),
            {"tenant", "team"},
            "tenant = 'acme' AND ifNull(team IN ('a\\'', 'b'), 0)",
        ),
        (RowScope("acme", frozenset({"a"})), {"tenant", "owner_team"}, "tenant = 'acme' AND "
         "ifNull(owner_team IN ('a'), 0)"),
        # No column to prove a row is the team's: no rows.
        (RowScope("acme", frozenset({"a"})), {"tenant"}, "tenant = 'acme' AND 0"),
        (RowScope(None, environments=frozenset({"prod"})), {"environment"},
         "ifNull(environment IN ('prod'), 0)"),
        (RowScope(None, environments=frozenset({"prod"})), {"environments"},
         "notEmpty(environments) AND hasAll(['prod'], environments)"),
        (RowScope(None, environments=frozenset({"prod"})), {"tenant"}, "0"),
    ],
)  # fmt: skip
def testscope_conditions(scope: RowScope, columns: set[str], condition: str | None) -> None:
    assert scope_condition(scope, frozenset(columns)) == condition


def test_webhook_stats_are_shown_to_tenant_tokens_not_to_team_tokens() -> None:
    auth = AuthStore(Path(":memory:"))
    ctx = ApiContext(settings=Settings(), auth=auth)
    ctx.webhook_deliveries[("acme", "github", "push", "accepted")] = 3
    ctx.webhook_deliveries[("globex", "github", "push", "accepted")] = 1
    tenant, _ = auth.create_token("acme", ("read",))
    team, _ = auth.create_token("acme", ("read",), teams=("payments",))
    try:
        with TestClient(create_app(ctx)) as client:

            def stats(token: str) -> list[str]:
                answer = client.get(
                    "/v1/webhooks/stats", headers={"Authorization": f"Bearer {token}"}
                )
                assert answer.status_code == 200, answer.text
                return [row["tenant"] for row in answer.json()]

            assert stats(tenant) == ["acme"]
            assert stats(team) == []  # counts belong to no team
    finally:
        auth.close()
