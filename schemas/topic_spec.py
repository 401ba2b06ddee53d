"""`TopicSpec`: one topic of `catalog.yaml` as the code reads it, typed and frozen.

The catalog is the one registry of topics: per topic its key, value schema (every version of
it comes from the catalog's `schemas:` list, by name), the ledger table the sink stores it in,
the pydantic model that validates it, the event family it carries and its dead-letter topic.
`Topics`, the family map, the sink's routes, the DDL's table -> schema link and the
processors' outputs are derived from these specs (`registry.catalog().topics`), never
restated.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from shipledger.schemas.models import Model


class TableRef(BaseModel):
    """The ledger table a topic is stored in.

    The pipeline's own tables (deployment events, records, alerts, dead letters) are laid out
    in `sinks/ledger/ddl.py` and only named here. A family's event table is generated from its
    schema: one row per `event_id`, sorted by tenant, region, `natural_key`, `occurred_at`,
    `event_id`, commented with `description`; so those two are given here.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    natural_key: tuple[str, ...] = ()
    description: str = ""


class TopicSpec(BaseModel):
    """One topic of the catalog (`name` is its logical name: `Settings.topic(name)` is the
    full one)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )

    name: str
    description: str
    #: The field the topic is keyed by (`tenant/<key>`); free text for the DLQ.
    key: str
    #: Full name of the value schema (`None`: the DLQ, which holds other topics' bytes).
    value_schema: str | None = Field(alias="schema")
    #: Logical name of the topic its rejected messages go to (`None`: never dead-lettered).
    dlq: str | None
    #: Where the sink stores it (`None`: not stored).
    table: TableRef | None = None
    #: The pydantic model of its messages, `module:Class` (resolved by `model_class`).
    model: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    #: The event family it carries (`schemas.families`), if it is an ingest topic.
    family: str | None = None
    #: Who dead-letters its bad messages: the sink, or the processors when they read the
    #: topic first (the sink then skips what they reject, so each bad event has one letter).
    dead_letters_by: Literal["processors", "sink"] = "sink"

    @field_validator("table", mode="before")
    @classmethod
    def _table_by_name(cls, value: Any) -> Any:
        # `table: deployment_events` names a table laid out in ddl.py.
        return {"name": value} if isinstance(value, str) else value

    @property
    def schema_name(self) -> str:
        """The value schema's full name; ValueError for a topic without one (the DLQ)."""
        if self.value_schema is None:
            raise ValueError(f"topic {self.name!r} has no value schema in the catalog")
        return self.value_schema

    def model_class(self) -> type[Model]:
        """The pydantic model named by `model`; ValueError when there is none."""
        if self.model is None:
            raise ValueError(f"topic {self.name!r} names no model in the catalog")
        return load_model(self.model)


@cache
def load_model(path: str) -> type[Model]:
    """The contract model at `module:Class` (imported once); ValueError naming what is wrong."""
    from shipledger.schemas.models import Model

    module_name, _, class_name = path.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"model {path!r}: {exc}") from exc
    if not (isinstance(found, type) and issubclass(found, Model)):
        raise ValueError(f"model {path!r} is not a shipledger.schemas.models.Model")
    return found
