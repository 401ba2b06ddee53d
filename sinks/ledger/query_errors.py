"""The errors of a read-only query, and what a tenant may be told about one.

A query fails at one of two stages, and what its message may carry differs:

- **Checking** (parse, `EXPLAIN AST`, the allow-list): nothing has run, so a message can
  quote the user's own SQL and name what was refused. Shown as it is.
- **Running**: ClickHouse evaluates scalar subqueries and casts while it analyses and runs
  the query, and its messages quote the values involved (`Cannot parse string '<value>' as
  UInt8`). Those values may be rows the caller must not read if a check ever missed a path
  to them, so a tenant gets `tenant_message`: the error's code name, our own explanation,
  and only the backquoted names of the engine's message that appear verbatim in the
  submitted SQL. Operators (who may read every row) get the engine's first line as well.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_CONVERSION = (
    "a value could not be converted to the type asked for: use the OrNull / OrZero "
    "variant (toUInt8OrNull, parseDateTimeBestEffortOrNull, ...) or filter the rows first"
)
_TYPES = "an argument has a type this function or operator does not take: convert it first"
_ARGUMENTS = "a function got the wrong number of arguments"
_TOO_DEEP = "the query is too large or too deeply nested (limit: {ast})"

#: Our explanation per ClickHouse error code name (the ones a query commonly meets); the
#: `{memory}`, `{result}`, `{time}` and `{ast}` fields name the limit that was hit.
EXPLANATIONS = {
    "UNKNOWN_IDENTIFIER": "a name is not a column or alias here: check its spelling and the "
    "table's columns",
    "UNKNOWN_TABLE": "no such table or view in the ledger",
    "UNKNOWN_DATABASE": "no such database",
    "UNKNOWN_FUNCTION": "no such function",
    "UNKNOWN_AGGREGATE_FUNCTION": "no such aggregate function",
    "AMBIGUOUS_IDENTIFIER": "a name matches columns of several tables: qualify it (alias.column)",
    "AMBIGUOUS_COLUMN_NAME": "a name matches columns of several tables: qualify it",
    "TYPE_MISMATCH": _TYPES,
    "ILLEGAL_TYPE_OF_ARGUMENT": _TYPES,
    "NO_COMMON_TYPE": "the branches or operands have no common type: convert them to one",
    "ILLEGAL_COLUMN": _TYPES,
    "CANNOT_CONVERT_TYPE": _CONVERSION,
    "CANNOT_PARSE_TEXT": _CONVERSION,
    "CANNOT_PARSE_NUMBER": _CONVERSION,
    "CANNOT_PARSE_DATE": _CONVERSION,
    "CANNOT_PARSE_DATETIME": _CONVERSION,
    "CANNOT_PARSE_UUID": _CONVERSION,
    "CANNOT_PARSE_IPV4": _CONVERSION,
    "CANNOT_PARSE_IPV6": _CONVERSION,
    "CANNOT_PARSE_BOOL": _CONVERSION,
    "CANNOT_PARSE_INPUT_ASSERTION_FAILED": _CONVERSION,
    "ATTEMPT_TO_READ_AFTER_EOF": _CONVERSION,
    "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE": _CONVERSION,
    "DECIMAL_OVERFLOW": "a decimal value overflowed its type",
    "NUMBER_OF_ARGUMENTS_DOESNT_MATCH": _ARGUMENTS,
    "TOO_MANY_ARGUMENTS_FOR_FUNCTION": _ARGUMENTS,
    "TOO_FEW_ARGUMENTS_FOR_FUNCTION": _ARGUMENTS,
    "NOT_AN_AGGREGATE": "a selected expression is neither aggregated nor in GROUP BY",
    "ILLEGAL_AGGREGATION": "an aggregate function is nested in another or used in WHERE",
    "ILLEGAL_DIVISION": "integer division by zero",
    "BAD_ARGUMENTS": "an argument has a value the function does not accept",
    "ARGUMENT_OUT_OF_BOUND": "an argument is out of the range the function accepts",
    "SIZES_OF_ARRAYS_DONT_MATCH": "arrays passed together have different lengths",
    "INCORRECT_RESULT_OF_SCALAR_SUBQUERY": "a scalar subquery returned more than one row",
    "TOO_MANY_ROWS": "a subquery returned more rows than allowed here",
    "SYNTAX_ERROR": "the query is not valid SQL",
    "READONLY": "read-only: the query tried to change a setting or write",
    "ACCESS_DENIED": "not allowed for this user",
    "MEMORY_LIMIT_EXCEEDED": "the query needed more memory than one query may use ({memory}): "
    "aggregate or filter more, or select fewer columns",
    "TOO_MANY_ROWS_OR_BYTES": "the result is larger than one query may return ({result}): "
    "select fewer rows or columns, or aggregate",
    "TIMEOUT_EXCEEDED": "the query ran longer than one query may run ({time})",
    "TOO_SLOW": "the query would run longer than one query may run ({time})",
    "TOO_BIG_AST": _TOO_DEEP,
    "TOO_DEEP_AST": _TOO_DEEP,
    "TOO_DEEP_SUBQUERIES": _TOO_DEEP,
    "TOO_DEEP_RECURSION": _TOO_DEEP,
    "TOO_LARGE_ARRAY_SIZE": "an array would be larger than allowed",
    "TOO_LARGE_STRING_SIZE": "a string would be larger than allowed",
    "QUERY_IS_TOO_LARGE": _TOO_DEEP,
}

_CODE_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)\s*$")
_BACKQUOTED = re.compile(r"`([^`\n]{1,200})`")
_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")
#: Names shown at most, so a message stays a sentence.
_MAX_NAMES = 5


class QueryError(ValueError):
    """A query that was refused or that ClickHouse could not run; the message says why."""


@dataclass(frozen=True)
class EngineError:
    """A ClickHouse error reduced to its first line and code name."""

    first_line: str
    code_name: str | None

    @classmethod
    def of(cls, exc: BaseException) -> EngineError:
        """The first line of ClickHouse's message (no stack trace or version) and its code."""
        line = first_line(exc)
        match = _CODE_NAME.search(line)
        return cls(line, match.group(1) if match else None)

    def explanation(self, limits: Mapping[str, str], unknown: str = "") -> str:
        """Our own sentence for this error (never the engine's text); `limits` describes the
        `memory`, `result`, `time` and `ast` limits for the messages that name one, `unknown`
        stands in when the message has no code name (not an engine error, or one cut short)."""
        if self.code_name is None:
            return unknown or (
                "ClickHouse could not run the query, or its result could not be read (a column "
                "of a type the client cannot decode, such as an aggregate function state: "
                "finalize it or convert it to a string)"
            )
        text = EXPLANATIONS.get(self.code_name, "ClickHouse could not run the query")
        return text.format_map(limits)

    def tenant_message(self, sql: str, limits: Mapping[str, str]) -> str:
        """What a tenant is told: code name, explanation, and the engine's backquoted names
        that appear verbatim in `sql` (identifiers the tenant wrote), nothing else."""
        name = self.code_name or "UNKNOWN"
        names: list[str] = []
        for found in _BACKQUOTED.findall(self.first_line):
            if _PLAIN_NAME.match(found) and found in sql and found not in names:
                names.append(found)
        about = f" (about {', '.join(names[:_MAX_NAMES])})" if names else ""
        return (
            f"the query failed: {name}: {self.explanation(limits)}{about}. The engine's own "
            "message is withheld from tenant tokens, as it can quote row values"
        )

    def operator_message(self, limits: Mapping[str, str], unknown: str = "") -> str:
        """What an operator is told: our explanation, then the engine's first line."""
        return f"the query failed: {self.explanation(limits, unknown)}. {self.first_line}"


def first_line(exc: BaseException) -> str:
    """ClickHouse's message without the stack trace and version trailer."""
    text = str(exc).strip()
    for line in text.splitlines():
        if "DB::Exception" in line or "Code:" in line:
            text = line
            break
    else:
        text = text.splitlines()[0] if text else type(exc).__name__
    text = re.sub(r"\s*\(version [\d.]+[^)]*\)", "", text)
    # A server-side error wrapped once more by the client repeats its code and name.
    text = re.sub(r"^(Code: \d+\. DB::Exception: )+", r"\1", text)
    text = re.sub(r"(\. \(\w+\))\1$", r"\1", text)
    return text.strip()
