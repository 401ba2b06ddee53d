"""Models the processors build, per event, from values validation would keep as they are.

A deployment's record and its alerts are made of what validated models gave (the event, the
deployment's previous record, the view's change, catalog and artifact events): strings
checked and stripped, times and numbers in range. Validating them again finds nothing to
refuse or change, at a Python check per string field (~13 µs a record, ~8 an alert: more
than half of judging an event). So they are copied into a model of the fields' shape
(`shaped`, ~3 µs), and validated only when one of the values made along the way (an
environment name, the policy's version, an alert's message and evidence...) is not `plain`:
then validation strips or refuses it exactly as it would have.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from shipledger.schemas.models import MAX_TEXT

_M = TypeVar("_M", bound=BaseModel)


def plain(texts: Iterable[Any], longest: int = MAX_TEXT) -> bool:
    """Whether validation keeps each of `texts` as it is in a string field: a `str` of at most
    `longest` characters (MAX_NAME: a map key, `schemas.models.check_name`), printable
    (`schemas.models.check_text` passes it) and not padded (`str_strip_whitespace` leaves it:
    Python's `strip` removes more than it does)."""
    for text in texts:
        if type(text) is not str or len(text) > longest or not text.isprintable():
            return False
        if text != text.strip():
            return False
    return True


def shaped(cls: type[_M], values: dict[str, Any]) -> _M:
    """A `cls` holding `values`, not validated: the caller knows validation would keep each
    as it is. A field `values` does not name holds its declared default (the model's, not a
    copy of it); `values` names every field that has none."""
    return cast(_M, _shape(cls).model_copy(update=values))


@cache  # one per model class
def _shape(cls: type[BaseModel]) -> BaseModel:
    """A `cls` with every field in its place (in the order validation puts them), holding its
    default where it has one (`model_construct` fills them) and None elsewhere, that `shaped`
    copies."""
    required = {name: None for name, field in cls.model_fields.items() if field.is_required()}
    return cls.model_construct(**required)
