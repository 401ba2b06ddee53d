"""The query allow-list without ClickHouse: `EXPLAIN AST` rows as the engine prints them
(copied from chDB 4.4 / ClickHouse 26.9), the scan of normalized SQL, the function catalog,
the query slots and what an error may tell a tenant."""

from __future__ import annotations

import pytest

from shipledger.producers.api.query_slots import QuerySlots, SlotsFull
from shipledger.sinks.ledger.query_errors import EngineError
from shipledger.sinks.ledger.query_functions import ALLOWED_FUNCTIONS
from shipledger.sinks.ledger.query_guard import (
    FunctionCatalog,
    Policy,
    Refused,
    check,
    describe_target,
    parse_tree,
    scan,
)

#: A slice of `system.functions`: (name, is_aggregate, case_insensitive, alias_to).
ENGINE = [
    ("count", True, True, ""),
    ("sum", True, True, ""),
    ("uniqExact", True, False, ""),
    ("groupArray", True, False, ""),
    ("array_agg", True, True, "groupArray"),
    ("lower", False, True, ""),
    ("lcase", False, True, "lower"),
    ("file", False, False, ""),
    ("dictGet", False, False, ""),
    ("getSetting", False, False, ""),
    ("DATABASE", False, True, "currentDatabase"),
    ("currentUser", False, False, ""),
    ("user", False, True, "currentUser"),
    ("arrayJoin", False, False, ""),
    ("tuple", False, False, ""),
    ("groupArrayIf", False, False, ""),  # a made-up scalar shadowing a combinator form
]
CATALOG = FunctionCatalog.build(ENGINE)
TENANT = Policy(
    functions=CATALOG,
    table_functions=frozenset({"running_at"}),
    tables=frozenset({"deployments", "alerts"}),
    databases=frozenset({"shipledger_query"}),
)
OPERATOR = Policy(functions=CATALOG, table_functions=frozenset({"numbers"}), tables=None)


def rows(text: str) -> list[str]:
    """Rows of an `EXPLAIN AST` output written in a test (first and last newline dropped)."""
    return text.strip("\n").split("\n")


# SELECT arrayJoin((SELECT groupArray(tuple(tenant, event_id)) FROM merge(...))): the inner
# query of a scalar subquery that the analyzed query tree hides is in the raw tree.
SCALAR_MERGE = rows("""
SelectWithUnionQuery (children 2)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Function arrayJoin (children 1)
     ExpressionList (children 1)
      Subquery (children 1)
       SelectWithUnionQuery (children 1)
        ExpressionList (children 1)
         SelectQuery (children 2)
          ExpressionList (children 1)
           Function groupArray (children 1)
            ExpressionList (children 1)
             Function tuple (children 1)
              ExpressionList (children 2)
               Identifier tenant
               Identifier event_id
          TablesInSelectQuery (children 1)
           TablesInSelectQueryElement (children 1)
            TableExpression (children 1)
             Function merge (children 1)
              ExpressionList (children 2)
               Literal 'shipledger'
               Literal '^deployment_events$'
 Identifier Native
""")


def select_from(table: str, alias: str = "") -> list[str]:
    """`SELECT * FROM <table> [AS alias]` as EXPLAIN AST prints it."""
    suffix = f" (alias {alias})" if alias else ""
    return rows(f"""
SelectWithUnionQuery (children 2)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Asterisk
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      TableIdentifier {table}{suffix}
 Identifier Native
""")


def select_function(name: str) -> list[str]:
    """`SELECT <name>(1)`."""
    return rows(f"""
SelectWithUnionQuery (children 2)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Function {name} (children 1)
     ExpressionList (children 1)
      Literal UInt64_1
 Identifier Native
""")


# --- the tree -------------------------------------------------------------------------------
def test_the_tree_keeps_every_subquery_and_its_counts() -> None:
    tree = parse_tree(SCALAR_MERGE)
    kinds = [(node.kind, node.arg) for node, _ in tree.walk()]
    assert ("Function", "merge") in kinds
    assert kinds[-1] == ("Identifier", "Native")
    assert tree.declared == 2 and len(tree.children) == 2


def test_the_scalar_subquery_over_merge_is_refused_for_everyone() -> None:
    for policy in (TENANT, OPERATOR):
        with pytest.raises(Refused, match=r"table function merge\(\) is refused"):
            check(SCALAR_MERGE, "SELECT 1", policy)


@pytest.mark.parametrize(
    ("forged", "why"),
    [
        (["SelectWithUnionQuery (children 1)", " Identifier a", " Identifier b"], "extra"),
        (["SelectWithUnionQuery (children 2)", " Identifier a"], "lacks children"),
        (["SelectWithUnionQuery (children 1)", "   Identifier a"], "skips a level"),
        (["SelectWithUnionQuery", "SelectWithUnionQuery"], "more than one statement"),
        (["SelectWithUnionQuery (children 1)", "\tIdentifier a"], "unexpected"),
        ([], "no syntax tree"),
    ],
)
def test_rows_that_are_not_one_exact_tree_are_refused(forged: list[str], why: str) -> None:
    with pytest.raises(Refused, match=why):
        parse_tree(forged)


def test_alias_and_children_suffixes_are_read_from_the_end() -> None:
    tree = parse_tree(
        rows("""
Subquery (alias s1) (children 1)
 Literal 'x (alias y)' (alias z)
""")
    )
    assert (tree.kind, tree.arg, tree.alias, tree.declared) == ("Subquery", "", "s1", 1)
    literal = tree.children[0]
    assert (literal.arg, literal.alias) == ("'x (alias y)'", "z")


# --- forged lines: names that could add rows are refused before the tree is read ----------------
@pytest.mark.parametrize(
    "canonical",
    [
        "SELECT `a\\nb` FROM t",  # the formatter escapes a newline; EXPLAIN AST prints it raw
        "SELECT 1 AS `x\\n Function file`",
        "SELECT * FROM t AS `sys\ntem`",
        "SELECT `a\rb`",
        "SELECT `a\u2028b`",
        "SELECT `a\u0085b`",
        "SELECT `a\u202eb`",  # right-to-left override
        "SELECT `a(alias b)`",
        "SELECT `system.parts`",
        "SELECT `a``b`",
        'SELECT "a\\"b"',
        "SELECT `a",
        "SELECT a\u2028b",  # a bare word: the engine's lexer reads non-ASCII bytes as letters
        "SELECT a\u200bb",
        "SELECT 'unterminated",
        "SELECT\t1",
    ],
)
def test_names_that_could_forge_rows_are_refused(canonical: str) -> None:
    with pytest.raises(Refused):
        scan(canonical)


@pytest.mark.parametrize(
    "canonical",
    [
        "SELECT 'a\\n  Function file' AS s",  # literals are escaped in the tree
        "SELECT 'it\\'s', 'a''b', '`', '(alias x)'",
        "SELECT 1 AS `deploy count`, 2 AS `déploiement`, 3 AS `デプロイ`",
        "SELECT déploiement FROM t",
    ],
)
def test_literals_and_plain_unicode_names_pass_the_scan(canonical: str) -> None:
    scan(canonical)


def test_cte_names_are_found() -> None:
    found = scan(
        "WITH x AS (SELECT 1), `y z` AS MATERIALIZED (SELECT 2), 5 AS n SELECT * FROM x, `y z`"
    )
    assert found.cte_names == {"x", "y z"}


# --- tables -------------------------------------------------------------------------------------
@pytest.mark.parametrize("table", ["deployments", "shipledger_query.alerts", "x"])  # x: a CTE
def test_a_tenant_reads_ledger_tables_and_its_ctes(table: str) -> None:
    check(select_from(table, alias="d"), "WITH x AS (SELECT 1) SELECT * FROM x", TENANT)


@pytest.mark.parametrize(
    "table",
    [
        "system.parts",
        "system.one",
        "INFORMATION_SCHEMA.TABLES",
        "information_schema.tables",
        "shipledger.deployments",
        "shipledger_cold.deployments",
        "chain_heads",
        "a.b.c",
    ],
)
def test_other_tables_are_refused_for_a_tenant(table: str) -> None:
    with pytest.raises(Refused, match=f"table {table} is refused"):
        check(select_from(table), "SELECT 1", TENANT)
    check(select_from(table), "SELECT 1", OPERATOR)


def test_the_right_side_of_in_is_a_table() -> None:
    tree = rows("""
SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Function in (children 1)
     ExpressionList (children 2)
      Literal UInt64_1
      Identifier system.one
""")
    with pytest.raises(Refused, match=r"table system\.one"):
        check(tree, "SELECT 1", TENANT)
    check([row.replace("system.one", "alerts") for row in tree], "SELECT 1", TENANT)


# --- functions ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "count",
        "COUNT",
        "Count",
        "lower",
        "LCASE",
        "countIf",
        "uniqExactIf",
        "sumOrNullIf",
        "array_agg",
        "ARRAY_AGG",
        "groupArrayDistinct",
        "lambda",
        "exists",
        "database",
    ],
)
def test_allowed_functions_as_the_engine_resolves_them(name: str) -> None:
    assert CATALOG.accepts(name)
    check(select_function(name), "SELECT 1", TENANT)


@pytest.mark.parametrize(
    "name",
    [
        "file",
        "FILE",
        "dictGet",
        "getSetting",
        "currentUser",
        "USER",
        "user",
        "fileIf",
        "groupArrayIf",
        "throwIf",
        "sleep",
        "arrayReduce",
        "nosuchfunction",
    ],
)
def test_other_functions_are_refused(name: str) -> None:
    assert not CATALOG.accepts(name)
    with pytest.raises(Refused, match=f"function {name}"):
        check(select_function(name), "SELECT 1", OPERATOR)


def test_the_allow_list_leaves_out_what_reads_outside() -> None:
    refused = {"file", "url", "s3", "dictGet", "joinGet", "getSetting", "hostName", "sleep"}
    refused |= {"throwIf", "arrayReduce", "currentUser", "version", "formatRow", "chdb"}
    assert not refused & ALLOWED_FUNCTIONS
    assert {"count", "arrayMap", "toString", "dateDiff", "lambda"} <= ALLOWED_FUNCTIONS


def test_table_functions_need_their_own_allow_list() -> None:
    running_at = select_from("x")
    running_at[-2] = "      Function running_at"
    check(running_at, "SELECT 1", TENANT)
    for name in ("numbers", "file", "url", "mergeTreeIndex", "sqlite", "view", "lower"):
        tree = [*running_at]
        tree[-2] = f"      Function {name}"
        with pytest.raises(Refused, match=rf"table function {name}\(\) is refused"):
            check(tree, "SELECT 1", TENANT)
    tree[-2] = "      Function numbers"
    check(tree, "SELECT 1", OPERATOR)


@pytest.mark.parametrize(
    ("kind", "why"),
    [("Set", "SETTINGS clause"), ("ColumnsApplyTransformer", "APPLY"), ("Frobnicate", "not")],
)
def test_node_kinds_off_the_list_are_refused(kind: str, why: str) -> None:
    tree = select_from("deployments")
    tree[4] = f"    {kind}"
    with pytest.raises(Refused, match=why):
        check(tree, "SELECT 1", OPERATOR)


# --- errors -------------------------------------------------------------------------------------
LIMITS = {"memory": "1 GiB, X", "result": "64 MiB, Y", "time": "60 s, Z", "ast": "A"}


def test_a_tenant_error_carries_only_the_code_our_words_and_its_own_names() -> None:
    error = EngineError.of(
        RuntimeError(
            "Code: 6. DB::Exception: Cannot parse string 'globex-secret' as UInt8: syntax "
            "error at begin of string. In scope SELECT toUInt8(`service`) FROM `x`. "
            "(CANNOT_PARSE_TEXT) (version 26.9.2.1)"
        )
    )
    sql = "SELECT toUInt8(service) FROM deployments"
    told = error.tenant_message(sql, LIMITS)
    assert "globex-secret" not in told
    assert "CANNOT_PARSE_TEXT" in told and "OrNull" in told
    assert "(about service)" in told  # in the SQL; `x` is not
    assert "globex-secret" in error.operator_message(LIMITS)


def test_a_limit_error_names_the_limit() -> None:
    error = EngineError.of(
        RuntimeError("Code: 241. DB::Exception: Query memory limit. (MEMORY_LIMIT_EXCEEDED)")
    )
    assert "1 GiB, X" in error.tenant_message("SELECT 1", LIMITS)


def test_a_client_error_is_not_echoed_to_a_tenant() -> None:
    error = EngineError.of(ValueError("cannot decode 'secret' as UTF-8"))
    assert error.code_name is None
    assert "secret" not in error.tenant_message("SELECT 1", LIMITS)


# --- concurrency ----------------------------------------------------------------------------------
def test_query_slots_per_token_and_in_all() -> None:
    slots = QuerySlots(per_token=1, total=2)
    with slots.slot("a"):
        with pytest.raises(SlotsFull) as own, slots.slot("a"):
            pass
        assert own.value.status == 429
        with slots.slot("b"):
            with pytest.raises(SlotsFull) as everyone, slots.slot("c"):
                pass
            assert everyone.value.status == 503
    with slots.slot("a"), slots.slot("b"):
        pass  # all released


# --- DESCRIBE / SHOW COLUMNS ------------------------------------------------------------------
DESCRIBE_ALERTS = rows("""
DescribeQuery (children 2)
 TableExpression (children 1)
  TableIdentifier shipledger_query.alerts
 Identifier Native
""")
DESCRIBE_SUBQUERY = rows("""
DescribeQuery (children 1)
 TableExpression (children 1)
  Subquery (children 1)
   SelectWithUnionQuery (children 1)
    ExpressionList (children 1)
     SelectQuery (children 1)
      ExpressionList (children 1)
       Literal UInt64_1
""")
SHOW_COLUMNS = rows("""
ShowColumns (children 1)
 Identifier Native
""")


def test_describe_names_one_admitted_table() -> None:
    canonical = "DESCRIBE TABLE shipledger_query.alerts"
    assert describe_target(DESCRIBE_ALERTS, canonical, TENANT) == "shipledger_query.alerts"
    show = "SHOW FULL COLUMNS FROM `alerts` FROM shipledger_query"
    assert describe_target(SHOW_COLUMNS, show, TENANT) == "shipledger_query.alerts"
    assert describe_target(SHOW_COLUMNS, "SHOW COLUMNS FROM deployments", TENANT) == "deployments"


@pytest.mark.parametrize(
    ("tree", "canonical"),
    [
        (DESCRIBE_SUBQUERY, "DESCRIBE TABLE (SELECT 1)"),
        (SHOW_COLUMNS, "SHOW COLUMNS FROM alerts LIKE '%'"),
        (SHOW_COLUMNS, "SHOW COLUMNS FROM alerts LIMIT 1"),
        (SHOW_COLUMNS[:1], "SHOW COLUMNS FROM alerts; SELECT 1"),
        ([*SHOW_COLUMNS[:1], " Identifier Other"], "SHOW COLUMNS FROM alerts"),
    ],
)
def test_describe_of_anything_but_a_name_is_refused(tree: list[str], canonical: str) -> None:
    with pytest.raises(Refused, match=r"one table or view name|could not verify"):
        describe_target(tree, canonical, OPERATOR)


def test_describe_of_other_tables_is_refused_for_a_tenant() -> None:
    tree = [row.replace("shipledger_query.alerts", "system.users") for row in DESCRIBE_ALERTS]
    with pytest.raises(Refused, match="is refused for a tenant"):
        describe_target(tree, "DESCRIBE TABLE system.users", TENANT)
    assert describe_target(tree, "DESCRIBE TABLE system.users", OPERATOR) == "system.users"
