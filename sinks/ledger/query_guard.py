"""The allow-list a read-only query must pass before it runs, checked on ClickHouse's own
syntax tree. Pure: the caller hands in the engine's output (`EXPLAIN AST` rows, the engine's
normalized SQL, `system.functions`); nothing here talks to ClickHouse.

Why the raw syntax tree: it is the parser's output before anything is resolved or run, so
every subquery is in it (scalar subqueries returning arrays or tuples, CTEs, lambdas over
subqueries, `IN`/`JOIN`/`EXISTS` subqueries: measured, chDB 4.4 / ClickHouse 26.9), while the
analyzed query tree folds a scalar subquery into its value (it runs it to do so).

What a query may contain (`Policy`):

- **Node kinds**: `ALLOWED_KINDS` only. A `SETTINGS` clause (`Set`), `* APPLY f` (whose
  function the tree does not show) and query parameters are refused.
- **Functions**: every `Function` node outside a FROM clause must be on the allow-list
  (`shipledger.sinks.ledger.query_functions`), as the engine resolves its name (`FunctionCatalog`).
- **Table functions**: a function in a FROM clause must be in `Policy.table_functions`
  (a tenant: only the ledger's parameterized view `running_at`).
- **Tables**: every table named in FROM or as the right side of `IN` must be one of
  `Policy.tables`, unqualified or qualified with one of `Policy.databases`, or a CTE of the
  query. `Policy.tables = None` (operators) admits any table.

Forged lines: `EXPLAIN AST` prints one row per node but prints identifiers raw, so a quoted
identifier holding a newline would add a row of the author's choosing. `scan` therefore
refuses, in the engine-normalized SQL, any quoted identifier with a control or separator
character, a backslash escape, a quote, a dot or a parenthesis, and any such character
outside string literals (string literals are escaped in the tree). `parse_tree` then checks
that the rows form exactly the tree their `(children N)` counts declare.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from shipledger.sinks.ledger.query_errors import QueryError
from shipledger.sinks.ledger.query_functions import ALLOWED_FUNCTIONS, COMBINATORS

#: Node kinds of `EXPLAIN AST` a query may contain.
ALLOWED_KINDS = frozenset(
    {
        "SelectWithUnionQuery",
        "SelectIntersectExceptQuery",
        "SelectQuery",
        "ExpressionList",
        "TablesInSelectQuery",
        "TablesInSelectQueryElement",
        "TableExpression",
        "TableIdentifier",
        "TableJoin",
        "ArrayJoin",
        "Subquery",
        "WithElement",
        "Identifier",
        "Literal",
        "Function",
        "Asterisk",
        "QualifiedAsterisk",
        "ColumnsRegexpMatcher",
        "ColumnsListMatcher",
        "QualifiedColumnsRegexpMatcher",
        "QualifiedColumnsListMatcher",
        "ColumnsTransformerList",
        "ColumnsExceptTransformer",
        "ColumnsReplaceTransformer",
        "ColumnsReplaceTransformer::Replacement",
        "OrderByElement",
        "InterpolateElement",
        "WindowDefinition",
        "WindowListElement",
        "SampleRatio",
    }
)
#: Why some kinds are refused (the others get a generic message).
_REFUSED_KINDS = {
    "Set": "a SETTINGS clause is refused: a query's settings and limits are the server's",
    "ColumnsApplyTransformer": "`* APPLY f` is refused: call the function on named columns",
    "QueryParameter": "query parameters ({name:Type}) are not supported: write the value",
}
#: Functions whose second argument may name a table (`x IN table`).
_IN_FUNCTIONS = frozenset({"in", "notIn", "nullIn", "notNullIn"})
#: The table functions that only generate values (operators may use them).
GENERATOR_TABLE_FUNCTIONS = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "values", "generate_series", "generateSeries"}
)

# One `EXPLAIN AST` row: indentation (one space per level), kind, then an argument (a name
# or literal) and optional ` (alias <name>)` and ` (children <n>)` suffixes. Names cannot
# contain parentheses (`scan` refuses them), so the suffixes are unambiguous where a name is
# read (Function, Identifier, TableIdentifier and every alias).
_ROW = re.compile(r"^(?P<indent> *)(?P<kind>[A-Za-z]+(?:::[A-Za-z]+)?)(?P<rest>(?: .*)?)$")
_CHILDREN = re.compile(r" \(children (\d+)\)$")
_ALIAS = re.compile(r" \(alias ([^()]*)\)$")
# Characters that may not appear outside string literals, nor inside quoted identifiers
# (where quotes, backslashes, dots and parentheses are refused too): controls, format
# characters, line and paragraph separators, surrogates, private use, unassigned.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_UNSAFE_IN_QUOTES = frozenset("\\`\"'().")


class Refused(QueryError):
    """The query names something the allow-list does not admit; the message says what."""


@dataclass
class Node:
    """One node of `EXPLAIN AST`: its kind, argument (a name or literal), alias, children."""

    kind: str
    arg: str
    alias: str | None
    declared: int
    children: list[Node] = field(default_factory=list)

    def walk(self) -> Iterable[tuple[Node, Node | None]]:
        """Every node with its parent, depth first."""
        stack: list[tuple[Node, Node | None]] = [(self, None)]
        while stack:
            node, parent = stack.pop()
            yield node, parent
            stack.extend((child, node) for child in reversed(node.children))


def parse_tree(rows: list[str]) -> Node:
    """The tree of `EXPLAIN AST` rows; Refused unless the rows are exactly one well-formed
    tree (each node's children counted as it declares, one space of indent per level)."""
    if not rows:
        raise Refused("could not verify the query: the engine returned no syntax tree")
    root: Node | None = None
    path: list[Node] = []
    for row in rows:
        match = _ROW.match(row)
        if match is None:
            raise Refused(f"could not verify the query: unexpected syntax tree row {row!r}")
        depth = len(match.group("indent"))
        rest = match.group("rest")
        declared = 0
        if children := _CHILDREN.search(rest):
            declared, rest = int(children.group(1)), rest[: children.start()]
        alias = None
        if named := _ALIAS.search(rest):
            alias, rest = named.group(1), rest[: named.start()]
        node = Node(match.group("kind"), rest.removeprefix(" "), alias, declared)
        if depth == 0:
            if root is not None:
                raise Refused("could not verify the query: more than one statement")
            root = node
        else:
            if depth > len(path):
                raise Refused(f"could not verify the query: syntax tree row {row!r} skips a level")
            parent = path[depth - 1]
            if len(parent.children) >= parent.declared:
                raise Refused(f"could not verify the query: syntax tree row {row!r} is extra")
            parent.children.append(node)
        del path[depth:]
        path.append(node)
    assert root is not None
    for node, _ in root.walk():
        if len(node.children) != node.declared:
            raise Refused(f"could not verify the query: {node.kind} lacks children")
    return root


@dataclass(frozen=True)
class Scan:
    """What `scan` found in the normalized SQL: the names of its CTEs."""

    cte_names: frozenset[str]


def scan(canonical: str) -> Scan:
    """Refuse names that could forge `EXPLAIN AST` rows (see the module doc); return the CTE
    names (`<name> AS (` or `<name> AS MATERIALIZED (`: any over-match only admits an
    unqualified name, which the engine resolves within the query database anyway)."""
    tokens: list[tuple[str, str]] = []  # (kind: word|quoted|string|punct, text)
    i, n = 0, len(canonical)
    while i < n:
        char = canonical[i]
        if char == "'":
            i = _closing_quote(canonical, i) + 1
            tokens.append(("string", ""))
        elif char in '`"':
            end = _closing_quote(canonical, i)
            # Raw text between the quotes: any escape (backslash, doubled quote) is refused.
            name = canonical[i + 1 : end]
            _check_quoted(name)
            tokens.append(("quoted", name))
            i = end + 1
        elif char == " ":
            i += 1
        elif _is_word_char(char):
            start = i
            while i < n and _is_word_char(canonical[i]):
                _check_char(canonical[i])
                i += 1
            tokens.append(("word", canonical[start:i]))
        else:
            _check_char(char)
            tokens.append(("punct", char))
            i += 1
    ctes: set[str] = set()
    for index, (kind, text) in enumerate(tokens):
        if kind not in ("word", "quoted") or index + 2 >= len(tokens):
            continue
        after = [t for _, t in tokens[index + 1 : index + 4]]
        if after[0].upper() != "AS":
            continue
        if after[1] == "(" or (after[1].upper() == "MATERIALIZED" and after[2:3] == ["("]):
            ctes.add(text)
    return Scan(frozenset(ctes))


def _is_word_char(char: str) -> bool:
    # ClickHouse's lexer reads every non-ASCII byte as part of a bare word.
    return char.isalnum() or char == "_" or ord(char) >= 0x80


def _closing_quote(text: str, start: int) -> int:
    """The index of the quote closing the one at `start`, read as ClickHouse's lexer reads
    quoted strings and names: a backslash escapes the next character, a doubled quote is one
    quote character."""
    quote = text[start]
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == quote:
            if text[i + 1 : i + 2] != quote:
                return i
            i += 2
        else:
            i += 1
    raise Refused("could not verify the query: an unterminated quote")


def _check_char(char: str) -> None:
    if unicodedata.category(char) in _UNSAFE_CATEGORIES:
        raise Refused(
            f"the query contains the character {char!a} outside a string literal: "
            "names may not contain control, format or line-separator characters"
        )


def _check_quoted(name: str) -> None:
    shown = ascii(name)
    if not name:
        raise Refused("an empty quoted name is refused")
    for char in name:
        if char in _UNSAFE_IN_QUOTES or unicodedata.category(char) in _UNSAFE_CATEGORIES:
            raise Refused(
                f"the quoted name {shown} is refused: names may not contain control, format "
                "or line-separator characters, quotes, backslashes, dots or parentheses"
            )


@dataclass(frozen=True)
class FunctionCatalog:
    """Which function names resolve to an allowed function, as the engine resolves them:
    exact names and their aliases; case-insensitive spellings only when every function the
    engine folds to that spelling is allowed and no function has that exact name; aggregate
    combinator suffixes (`countIf`) on an allowed aggregate."""

    exact: frozenset[str]
    folded: frozenset[str]
    aggregates: frozenset[str]
    folded_aggregates: frozenset[str]
    known: frozenset[str]

    @classmethod
    def build(
        cls,
        engine: Iterable[tuple[str, bool, bool, str]],
        allowed: frozenset[str] = ALLOWED_FUNCTIONS,
    ) -> FunctionCatalog:
        """From the engine's `(name, is_aggregate, case_insensitive, alias_to)` rows
        (`system.functions`) and the allow-list."""
        rows = list(engine)
        exact = {name for name, _, _, alias_to in rows if (alias_to or name) in allowed}
        exact |= allowed  # parser-level functions (lambda, exists) are not in system.functions
        aggregates = {name for name, is_agg, _, _ in rows if is_agg and name in exact}
        by_fold: dict[str, list[str]] = {}
        for name, _, insensitive, _ in rows:
            if insensitive:
                by_fold.setdefault(name.lower(), []).append(name)
        folded = {f for f, names in by_fold.items() if all(n in exact for n in names)}
        folded_aggregates = {
            f for f, names in by_fold.items() if all(n in aggregates for n in names)
        }
        return cls(
            exact=frozenset(exact),
            folded=frozenset(folded),
            aggregates=frozenset(aggregates),
            folded_aggregates=frozenset(folded_aggregates),
            known=frozenset(name for name, *_ in rows),
        )

    def accepts(self, name: str) -> bool:
        """Whether `name` resolves to an allowed function."""
        if name in self.exact:
            return True
        if name in self.known:
            return False  # the engine resolves a known name as itself: not an allowed one
        return name.lower() in self.folded or self._combined(name)

    def _combined(self, name: str) -> bool:
        """Whether `name` is an allowed aggregate with combinator suffixes (`uniqExactIf`)."""
        for suffix in COMBINATORS:
            base = name.removesuffix(suffix)
            if base == name or not base:
                continue
            if base in self.aggregates or (
                base not in self.known and base.lower() in self.folded_aggregates
            ):
                return True
            if base not in self.known and self._combined(base):
                return True
        return False


@dataclass(frozen=True)
class Policy:
    """What one caller's queries may name (see the module doc)."""

    functions: FunctionCatalog
    table_functions: frozenset[str]
    #: Tables (and views) a query may read; None: any table.
    tables: frozenset[str] | None
    #: Databases a qualified table name may name.
    databases: frozenset[str] = frozenset()

    def describe_tables(self) -> str:
        """The admitted tables, for messages."""
        names = sorted(self.tables or ())
        where = " or ".join(sorted(self.databases))
        return f"{', '.join(names)} (unqualified, or in {where})"


def check(rows: list[str], canonical: str, policy: Policy) -> None:
    """Refused unless the query whose `EXPLAIN AST` is `rows` (and whose normalized SQL is
    `canonical`) names only what `policy` admits."""
    ctes = scan(canonical).cte_names
    tree = parse_tree(rows)
    aliases = {node.alias for node, _ in tree.walk() if node.alias}
    for node, parent in tree.walk():
        if node.kind not in ALLOWED_KINDS:
            reason = _REFUSED_KINDS.get(node.kind, f"{node.kind} is not allowed in a query here")
            raise Refused(reason)
        if node.kind == "Function":
            in_from = parent is not None and parent.kind == "TableExpression"
            _check_function(node, in_from, policy)
            if node.arg in _IN_FUNCTIONS and node.children:
                arguments = node.children[0].children
                if len(arguments) == 2 and arguments[1].kind == "Identifier":
                    _check_table(arguments[1].arg, policy, ctes | aliases)
        elif node.kind == "TableIdentifier":
            _check_table(node.arg, policy, ctes)


#: `EXPLAIN AST` root kinds of the statements that list a table's columns.
DESCRIBE_KINDS = frozenset({"DescribeQuery", "ShowColumns"})
# `SHOW [FULL] [EXTENDED] COLUMNS FROM t [FROM db]` as the engine normalizes it (its syntax
# tree is one bare `ShowColumns` row, naming nothing): a LIKE, WHERE or LIMIT is refused.
_NAME = r"(?:[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)"
_SHOW_COLUMNS = re.compile(
    rf"SHOW (?:FULL )?(?:EXTENDED )?COLUMNS FROM (?P<table>{_NAME})(?: FROM (?P<db>{_NAME}))?"
)


def describe_target(rows: list[str], canonical: str, policy: Policy) -> str:
    """The table (`name` or `db.name`) whose columns a `DESCRIBE` or `SHOW COLUMNS` lists, if
    `policy` admits it; Refused for anything but one plain table or view name (a subquery, a
    table function, a SETTINGS clause, a LIKE filter)."""
    scan(canonical)  # refuses names that could forge rows, as for a SELECT
    tree = parse_tree(rows)
    name = ""
    if tree.kind == "ShowColumns" and _without_client_format([tree, *tree.children]):
        match = _SHOW_COLUMNS.fullmatch(canonical)
        if match is not None:
            table, db = (g.strip("`") if g else None for g in match.group("table", "db"))
            name = f"{db}.{table}" if db else str(table)
    elif tree.kind == "DescribeQuery" and _without_client_format(tree.children):
        expression = tree.children[0]
        if expression.kind == "TableExpression" and len(expression.children) == 1:
            identifier = expression.children[0]
            if identifier.kind == "TableIdentifier" and not identifier.children:
                name = identifier.arg if identifier.alias is None else ""
    if not name:
        raise Refused(
            "DESCRIBE and SHOW COLUMNS take one table or view name (e.g. DESCRIBE alerts), "
            "nothing else: no subquery, table function, SETTINGS or LIKE"
        )
    _check_table(name, policy, frozenset())
    return name


def _without_client_format(children: list[Node]) -> bool:
    """Whether `children` are one node (a DESCRIBE's table expression, or SHOW COLUMNS
    itself) and at most the `FORMAT Native` the client appends (`Identifier Native`)."""
    extra = children[1:]
    return len(children) in (1, 2) and all(
        node.kind == "Identifier" and node.arg == "Native" and not node.children for node in extra
    )


def _check_function(node: Node, in_from: bool, policy: Policy) -> None:
    name = node.arg
    if in_from:
        if name not in policy.table_functions:
            admitted = ", ".join(sorted(policy.table_functions)) or "none"
            raise Refused(
                f"table function {name}() is refused: it reads outside the ledger or around "
                f"its tenant filter; query the ledger's tables and views (table functions "
                f"allowed here: {admitted})"
            )
    elif not policy.functions.accepts(name):
        raise Refused(
            f"function {name}() is not on the allow-list of functions a query may call "
            "(docs/security.md: functions that read files, the network, dictionaries, "
            "settings or the server are refused)"
        )


def _check_table(name: str, policy: Policy, local_names: set[str] | frozenset[str]) -> None:
    if policy.tables is None:
        return
    parts = name.split(".")
    if len(parts) == 1 and (name in policy.tables or name in local_names):
        return
    if len(parts) == 2 and parts[0] in policy.databases and parts[1] in policy.tables:
        return
    raise Refused(
        f"table {name} is refused for a tenant-scoped query: it may read only the ledger's "
        f"tables and views, {policy.describe_tables()}"
    )
