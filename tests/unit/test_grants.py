"""The server-mode grants SQL: append-only sink, read-only analysts, tenant row policies.
(Printed only: chDB has no access control and no server runs here; docs/operations.md.)"""

from __future__ import annotations

from click.testing import CliRunner

from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.audit_cli import audit
from shipledger.sinks.ledger.grants import grants_sql


def test_roles_grant_only_what_they_need() -> None:
    sql = grants_sql("ledger", ["bank"])
    statements = [line for line in sql.splitlines() if line and not line.startswith("--")]
    sink = [s for s in statements if s.startswith("GRANT") and "TO shipledger_sink;" in s]
    assert {s.split(" ON ")[0] for s in sink} == {"GRANT INSERT, SELECT", "GRANT SELECT"}
    for table in [*ddl.tables(), ddl.CHAIN_HEADS]:
        assert f"GRANT INSERT, SELECT ON `ledger`.`{table}` TO shipledger_sink;" in statements
        assert (
            f"CREATE ROW POLICY IF NOT EXISTS `tenant_bank_{table}` ON `ledger`.`{table}` "
            "FOR SELECT USING tenant = 'bank' TO `shipledger_analyst_bank`;" in statements
        )
    analyst = [s for s in statements if s.startswith("GRANT") and "shipledger_analyst" in s]
    assert all(s.startswith(("GRANT SELECT ON", "GRANT shipledger_analyst")) for s in analyst)
    assert not any(word in sql for word in ("ALTER ON", "DELETE ON", "ALL ON"))


def test_cli_prints_it() -> None:
    result = CliRunner().invoke(audit, ["grants", "--database", "ledger"])
    assert result.exit_code == 0
    assert "CREATE ROLE IF NOT EXISTS shipledger_sink;" in result.output
    assert "ROW POLICY" not in result.output  # no tenants asked for


def test_analysts_get_a_read_only_capped_profile() -> None:
    sql = grants_sql(
        "ledger", ["bank"], {"max_memory_usage": 1024, "timeout_overflow_mode": "throw"}
    )
    profile = [line for line in sql.splitlines() if "SETTINGS PROFILE" in line]
    assert profile == [
        "CREATE SETTINGS PROFILE IF NOT EXISTS shipledger_analyst_profile SETTINGS "
        "max_memory_usage = 1024 CONST, timeout_overflow_mode = 'throw' CONST "
        "TO shipledger_analyst, `shipledger_analyst_bank`;"
    ]
    printed = CliRunner().invoke(audit, ["grants", "--database", "ledger"]).output
    assert "readonly = 1 CONST" in printed and "max_memory_usage = " in printed
