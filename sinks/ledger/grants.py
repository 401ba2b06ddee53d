"""Server-mode access control: the SQL for a ClickHouse server's users, roles and row policies.

The ledger is append-only by grant, not only by code: the sink may INSERT and SELECT, never
ALTER/DELETE/TRUNCATE/DROP; analysts only SELECT; a per-tenant analyst sees only its tenant's
rows (row policies). Untested here: chDB (embedded) refuses CREATE USER / ROLE / ROW POLICY
(ACCESS_DENIED: no writable access storage), and no ClickHouse server runs on the dev machines
(docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shipledger.sinks.ledger import ddl
from shipledger.sinks.ledger.migrate import MIGRATIONS_TABLE


def grants_sql(
    database: str, tenants: Sequence[str] = (), analyst_settings: Mapping[str, Any] | None = None
) -> str:
    """CREATE ROLE / USER / GRANT / ROW POLICY statements for `database`, one per line; with
    `analyst_settings` (e.g. `readonly` and the query limits) also a settings profile that
    fixes them (CONST) for every analyst role."""
    db = ddl.quote_ident(database)
    ledger = [*ddl.tables(), ddl.CHAIN_HEADS]
    readable = [*ledger, *ddl.VIEWS]
    lines = [
        "-- shipledger grants: run as an administrator on the ClickHouse server.",
        "-- Schema changes (shipledger migrate) run as an administrator, not as the sink.",
        "CREATE ROLE IF NOT EXISTS shipledger_sink;",
        *(f"GRANT INSERT, SELECT ON {db}.{ddl.quote_ident(t)} TO shipledger_sink;" for t in ledger),
        f"GRANT SELECT ON {db}.{ddl.quote_ident(MIGRATIONS_TABLE)} TO shipledger_sink;",
        "-- The aggregates its inserts feed through materialized views (docs/metrics.md).",
        *(
            f"GRANT INSERT, SELECT ON {db}.{ddl.quote_ident(t)} TO shipledger_sink;"
            for t in ddl.AGGREGATE_TABLES
        ),
        "-- No ALTER, DELETE, TRUNCATE, DROP or OPTIMIZE: the sink cannot rewrite the ledger.",
        "CREATE USER IF NOT EXISTS shipledger_sink_user IDENTIFIED WITH sha256_password BY "
        "'<password>' DEFAULT ROLE shipledger_sink;",
        "GRANT shipledger_sink TO shipledger_sink_user;",
        "",
        "CREATE ROLE IF NOT EXISTS shipledger_analyst;",
        *(f"GRANT SELECT ON {db}.{ddl.quote_ident(t)} TO shipledger_analyst;" for t in readable),
        "CREATE USER IF NOT EXISTS shipledger_analyst_user IDENTIFIED WITH sha256_password BY "
        "'<password>' DEFAULT ROLE shipledger_analyst;",
        "GRANT shipledger_analyst TO shipledger_analyst_user;",
    ]
    for tenant in tenants:
        role = ddl.quote_ident(f"shipledger_analyst_{tenant}")
        lines += ["", f"-- Tenant {tenant}: its analysts see its rows only."]
        lines.append(f"CREATE ROLE IF NOT EXISTS {role};")
        lines += [f"GRANT SELECT ON {db}.{ddl.quote_ident(t)} TO {role};" for t in readable]
        for table in ledger:
            policy = ddl.quote_ident(f"tenant_{tenant}_{table}")
            lines.append(
                f"CREATE ROW POLICY IF NOT EXISTS {policy} ON {db}.{ddl.quote_ident(table)} "
                f"FOR SELECT USING tenant = {ddl.quote_str(tenant)} TO {role};"
            )
    if tenants:
        lines += [
            "",
            "-- Once a table has a row policy, roles without one see none of its rows: admit",
            "-- everything to the unrestricted roles.",
            *(
                f"CREATE ROW POLICY IF NOT EXISTS {ddl.quote_ident(f'all_{t}')} ON "
                f"{db}.{ddl.quote_ident(t)} FOR SELECT USING 1 "
                "TO shipledger_sink, shipledger_analyst;"
                for t in ledger
            ),
        ]
    if analyst_settings:
        roles = [
            "shipledger_analyst",
            *(ddl.quote_ident(f"shipledger_analyst_{t}") for t in tenants),
        ]
        values = ", ".join(
            f"{name} = {_setting(value)} CONST" for name, value in analyst_settings.items()
        )
        lines += [
            "",
            "-- Analysts' queries run read-only and capped, as `shipledger query` runs them.",
            "-- Also set select_from_system_db_requires_grant and",
            "-- select_from_information_schema_requires_grant in the server config",
            "-- (docs/security.md): system tables would name every tenant's partitions.",
            "CREATE SETTINGS PROFILE IF NOT EXISTS shipledger_analyst_profile SETTINGS "
            f"{values} TO {', '.join(roles)};",
        ]
    return "\n".join(lines).rstrip() + "\n"


def _setting(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | float):
        return f"{value:g}" if isinstance(value, float) else str(value)
    return ddl.quote_str(str(value))
