"""JSON from outside (API bodies, upload lines, webhook bodies) parsed with bounds, so hostile
input is a `BadJSON` naming where and why, never a crash of the reader.

Python's `json.loads` alone lets through (or dies on) what no event needs: integers of
thousands of digits (a ValueError from `int()`), nesting deep enough to raise RecursionError,
`NaN`/`Infinity`, numbers that overflow to infinity, and `\\udfff`-style escapes that decode to
lone surrogates (not Unicode: they cannot be encoded to UTF-8 later, in an id hash, an Avro
string or a response). `loads` refuses each of them up front with the JSON path of the value.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

#: An Avro long has 19 digits; anything longer cannot be a value of the contract.
MAX_INT_DIGITS = 20
#: Events nest three levels (an event, its attributes or approvals, an approval's fields);
#: webhook payloads a few more. Far deeper input is hostile.
MAX_DEPTH = 64
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class BadJSON(ValueError):
    """Input that is not JSON, or JSON no event can be made of; `path` names the value."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class _Refused(Exception):
    """Raised from inside the decoder's hooks (not a ValueError, so json does not wrap it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"integer of {len(text.lstrip('-'))} digits is out of range")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {text[:40]!r} is out of range")
    return value


def _constant(name: str) -> float:
    raise _Refused(f"{name} is not a JSON number")


def printable(text: str, limit: int = 80) -> str:
    """`text` quoted for an error message: escapes (surrogates, controls) and cut at `limit`."""
    head = text[:limit]
    shown = repr(head) if head.isprintable() else ascii(head)
    return shown + ("..." if len(text) > limit else "")


def _check(value: Any, path: str, depth: int, what: str) -> None:
    """Depth and string checks over a decoded value (recursing at most MAX_DEPTH levels)."""
    if depth > MAX_DEPTH:
        raise BadJSON(path or what, f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise BadJSON(path or what, f"{printable(value)} holds a lone surrogate: not Unicode")
    elif isinstance(value, dict):
        for key, item in value.items():
            if _SURROGATE.search(key):
                raise BadJSON(path or what, f"key {printable(key)} holds a lone surrogate")
            _check(item, f"{path}.{key}" if path else key, depth + 1, what)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]", depth + 1, what)


def _plain(value: Any, depth: int) -> bool:
    """Whether a value orjson decoded needs no check: no float anywhere (orjson turns an
    integer too long for 64 bits into one) and at most MAX_DEPTH levels of nesting. orjson
    itself refuses lone surrogates, NaN/Infinity and numbers that overflow."""
    if depth >= MAX_DEPTH:  # the checked path decides (its children are past the bound)
        return False
    items = value.values() if type(value) is dict else value if type(value) is list else ()
    for item in items:
        kind = type(item)
        if kind is float or ((kind is dict or kind is list) and not _plain(item, depth + 1)):
            return False
    return True


def loads(data: bytes | str, what: str = "body") -> Any:
    """`data` decoded as JSON within the bounds above; BadJSON naming `what` or the value's
    path inside it (e.g. `events[3].service`) otherwise."""
    # orjson decodes an API body in an eighth of the time of the checked path below; what it
    # refuses, or decodes in a way that needs a check, goes through that path, which accepts
    # and refuses exactly as before and names the problem.
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    else:
        if type(value) is not float and _plain(value, 0):
            return value
    return checked_loads(data, what)


def checked_loads(data: bytes | str, what: str = "body") -> Any:
    """`loads` by the standard library's decoder alone, checking every value (what `loads`
    falls back to; its reference in tests)."""
    try:
        value = json.loads(data, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except _Refused as exc:
        raise BadJSON(what, exc.reason) from None
    except RecursionError:
        raise BadJSON(what, f"nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadJSON(what, f"not valid JSON ({exc})") from None
    _check(value, "", 0, what)
    return value
