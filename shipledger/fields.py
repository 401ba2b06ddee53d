"""Values passed on by name: a record built from the same-named attributes of another object
(an event, a stored row, the settings), and the attributes a log line names."""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import Any, TypeVar, cast

from pydantic import BaseModel

T = TypeVar("T")


@cache  # per event on the processors' hot path: read each class once
def _field_names(cls: type[Any]) -> dict[str, bool]:
    """Each field `cls` takes, and whether it is required."""
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return {name: info.is_required() for name, info in cls.model_fields.items()}
    missing = dataclasses.MISSING
    return {
        f.name: f.default is missing and f.default_factory is missing
        for f in dataclasses.fields(cls)
        if f.init
    }


def copied(cls: type[T], source: object, *, prefix: str = "", **given: Any) -> T:
    """A `cls` (a dataclass or a pydantic model) whose fields are the same-named attributes of
    `source`, except those `given`. With `prefix` the attribute is `prefix` + the field name
    (settings grouped as `SHIPLEDGER_<PREFIX>…`). A field with a default that `source` does not
    have keeps its default; a required one it does not have is an AttributeError."""
    values = dict(given)
    for name, required in _field_names(cast(type, cls)).items():
        if name in values:
            continue
        attribute = prefix + name if prefix else name
        if required:
            values[name] = getattr(source, attribute)
        elif (value := getattr(source, attribute, _ABSENT)) is not _ABSENT:
            values[name] = value
    return cast(T, cast(Any, cls)(**values))


#: What `copied` reads of an attribute `source` does not have (one lookup, not two).
_ABSENT = object()


def picked(source: object, *names: str) -> dict[str, Any]:
    """`names` with their values in `source`, in that order (keyword arguments of a log line)."""
    return {name: getattr(source, name) for name in names}
