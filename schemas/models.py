"""pydantic models that validate at the edge and mirror the Avro schemas (a test proves it)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema, SchemaValidator

from shipledger.schemas.fields import apply_aliases
from shipledger.startup import empty_list

if TYPE_CHECKING:
    from shipledger.settings import Settings

EventType = Literal["started", "succeeded", "failed", "rolled_back", "cancelled"]
DeploymentKind = Literal[
    "release", "hotfix", "config_change", "schema_migration", "rollback", "emergency_patch"
]
Trigger = Literal["automated", "manual"]
DeploymentStatus = Literal["in_progress", "succeeded", "failed", "rolled_back", "cancelled"]
Severity = Literal["info", "low", "medium", "high", "critical"]
AlertKind = Literal["alert", "resolution"]

EVENT_TYPES: tuple[str, ...] = get_args(EventType)
KINDS: tuple[str, ...] = get_args(DeploymentKind)

_SHA_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_BARE_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
#: Fields a deployment event cannot do without (besides the ids the emitter fills in).
MANDATORY_METADATA = ("service", "environment", "commit_sha", "actor")
#: Mandatory fields a third-party system may be unable to report (a stock CDEvents
#: service.deployed carries no commit). Only webhook mappings may list them in
#: `missing_metadata`: the event is then recorded with the field empty and flagged by the
#: `missing_metadata` rule, rather than dropped at a source nobody can correct.
MISSABLE_METADATA = ("commit_sha",)

# --- shared rules for every string and number of every model ------------------------------
#: The range of each Avro integer type: a model's int fields carry their schema type's bounds
#: (tests/unit/test_schemas.py checks each against the .avsc), so a value the model accepts
#: always encodes.
AVRO_INT_RANGE: dict[str, tuple[int, int]] = {
    "int": (-(2**31), 2**31 - 1),
    "long": (-(2**63), 2**63 - 1),
}
AvroInt = Annotated[int, Field(ge=AVRO_INT_RANGE["int"][0], le=AVRO_INT_RANGE["int"][1])]
AvroLong = Annotated[int, Field(ge=AVRO_INT_RANGE["long"][0], le=AVRO_INT_RANGE["long"][1])]

#: Longest string of any field, map key or list item: free text (titles, messages) included.
MAX_TEXT = 8192
#: Longest name or id (service, environment, tenant, actor, ids...) unless a field says less.
MAX_NAME = 256
#: Longest tenant name: every edge refuses a longer one, so no stored row names one.
MAX_TENANT = 100
#: The years a time of the ledger can be in (ClickHouse's DateTime64): a period asked of it
#: (a report's month, a reconciliation's quarter or days) must lie within them.
LEDGER_YEARS = range(1900, 2300)
# Any string: no C0 control but tab, LF and CR; no DEL or C1 controls; no lone surrogates.
_BAD_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# Names and ids: no control character at all (a tab or newline in a service name forges log
# lines and splits CSV exports), and no Unicode line or paragraph separators.
_BAD_IN_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _check_string(value: str, longest: int, bad_characters: re.Pattern[str]) -> str:
    if len(value) > longest:
        raise ValueError(f"longer than {longest} characters ({len(value)})")
    bad = bad_characters.search(value)
    if bad:
        raise ValueError(f"control character {bad[0]!a} at position {bad.start()}")
    return value


# Both checks run on every string of every model, several times per event in the processors.
# A printable string has none of the bad characters of either pattern (every control, line or
# paragraph separator and surrogate is non-printable): most strings stop at that test.


def check_text(value: str) -> str:
    """Any string of the contract: at most MAX_TEXT characters, no control characters but
    tab, LF and CR, valid Unicode."""
    if len(value) <= MAX_TEXT and value.isprintable():
        return value
    return _check_string(value, MAX_TEXT, _BAD_IN_TEXT)


def check_name(value: str) -> str:
    """A name or id: at most MAX_NAME characters, no control characters (tab, newline...)."""
    if len(value) <= MAX_NAME and value.isprintable():
        return value
    return _check_string(value, MAX_NAME, _BAD_IN_NAME)


#: A name or id field (service, environment, tenant, actor, ids, refs, versions...).
Name = Annotated[str, AfterValidator(check_name)]


#: Field values with no string inside, by exact type: `_check_strings` returns them at once.
_STRINGLESS = frozenset({type(None), bool, int, float, datetime})


def _check_strings(value: Any) -> Any:
    """check_text on every string inside a field's value; map keys follow check_name. Returns
    `value`: it is `Model`'s validator of every field itself."""
    # Called for every field of every model built (tens per event in the processors and the
    # sink): exact types first, the common cases in a few bytecodes.
    kind = type(value)
    if kind is str:
        if len(value) > MAX_TEXT or not value.isprintable():
            _check_string(value, MAX_TEXT, _BAD_IN_TEXT)
    elif kind in _STRINGLESS:
        pass
    elif isinstance(value, str):
        check_text(value)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_name(key)
            _check_strings(item)
    return value


#: Core schemas whose every value `_check_strings` returns at once: no string inside.
_STRINGLESS_SCHEMAS = frozenset({"int", "bool", "float", "datetime"})


def _checked_already(schema: CoreSchema) -> bool:
    """Whether every value `schema` lets through passes `_check_strings` unchanged: no string
    inside (numbers, times, None), a literal of the code's own strings, or a `Name`, whose
    `check_name` is stricter than `check_text` (shorter, and every character it allows
    `check_text` allows); lists of those too."""
    kind = schema["type"]
    if kind in _STRINGLESS_SCHEMAS:
        return True
    if kind == "literal":
        return all(
            not isinstance(v, str) or (len(v) <= MAX_TEXT and v.isprintable())
            for v in schema["expected"]
        )
    if kind == "nullable":
        return _checked_already(schema["schema"])
    if kind == "list":
        items = schema.get("items_schema")
        return items is not None and _checked_already(items)
    if kind == "function-after":
        return schema["function"]["function"] is check_name
    return False


def _without_idle_checks(schema: CoreSchema) -> None:
    """Drop, in place, `Model`'s check of every field (`_check_strings`) from the fields of
    `schema` (a model's) where it can find nothing (`_checked_already`): a Python call per
    field of every model built that returned its value unchanged, most of the cost of
    validating a deployment event (ids and names are `Name`s, checked by `check_name`)."""
    node: Any = schema
    while node.get("type") != "model-fields":
        node = node.get("schema")
        if not isinstance(node, dict):
            return
    for field in node["fields"].values():
        # The check sits under the field's default and its own validators (applied after).
        holder = field
        while (check := holder["schema"])["type"] in ("default", "function-after"):
            if check.get("function", {}).get("function") is _check_strings:
                if _checked_already(check["schema"]):
                    holder["schema"] = check["schema"]
                break
            holder = check


# --- the fast validator: each model again, its Python checks done by pydantic-core -----------
# Most values pass every Python check of their model unchanged, yet each costs a call per field
# per model built (half the CPU of validating a deployment event). A model's fast validator is
# its own schema where each check that would return its value unchanged is a pattern and length
# pydantic-core tests in Rust instead: for a value it lets through, what the model makes is what
# its own validator makes; whatever it refuses goes to the model's own validator, so every error
# is that validator's (`Model.model_validate`).


def _trimmed(bad: str) -> str:
    """A Rust regex (pydantic-core's) of the strings holding no character of the class `bad`
    and no whitespace at either end, which stripping would return unchanged: the fast validator
    tests it instead of stripping (a copy of every string)."""
    edge, inner = rf"[^\s{bad}]", f"[^{bad}]"
    return rf"^(?:{edge}(?:{inner}*{edge})?)?$"


#: The strings `check_name` and `check_text` return unchanged, unless padded (a lone
#: surrogate, which they refuse too, fails any pattern in pydantic-core).
_NAME_PATTERN = _trimmed(r"\x00-\x1f\x7f-\x9f\x{2028}\x{2029}")
_TEXT_PATTERN = _trimmed(r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f")
#: Full commit SHAs and digests as the models keep them (lower case, prefixed).
SHA_PATTERN = r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"

_Validator = TypeVar("_Validator", bound=Callable[..., Any])
#: What each declared validator returns unchanged: a field validator, the strings of a pattern
#: (`unchanged_on`); a model's "before" validator, a clean input (`unchanged_if_clean`).
_UNCHANGED: dict[Callable[..., Any], str | tuple[str, ...]] = {}


def unchanged_on(pattern: str) -> Callable[[_Validator], _Validator]:
    """Declares a field validator (under `@classmethod`) the identity on the strings `pattern`
    matches (a Rust regex; each a name `check_name` passes, not padded), on lists of them (a
    list field) and on None (an optional field): the fast validator tests the pattern instead
    of calling it."""

    def declared(validator: _Validator) -> _Validator:
        _UNCHANGED[validator] = pattern
        return validator

    return declared


def unchanged_if_clean(*empty: str) -> Callable[[_Validator], _Validator]:
    """Declares a model's "before" validator (under `@classmethod`) the identity on a clean
    input: a dict of the model's field names, no top-level value a blank string, the `empty`
    fields absent or empty. The fast validator refuses any other input instead of calling it."""

    def declared(validator: _Validator) -> _Validator:
        _UNCHANGED[validator] = empty
        return validator

    return declared


class _NoFastPath(Exception):
    """A schema holds what the fast validator cannot reproduce: the model has none."""


def _declared(node: Any) -> str | tuple[str, ...] | None:
    function = node["function"]["function"]
    return _UNCHANGED.get(getattr(function, "__func__", function))


def _fast_schema(node: Any) -> Any:
    """A copy of the core schema `node` where every check that returns its value unchanged is a
    pattern and a length in pydantic-core (see above); its other validators stay."""
    kind = node["type"]
    if kind in ("str", "int", "bool", "float", "datetime", "literal"):
        return node
    if kind == "function-after":
        inner = _fast_schema(node["schema"])
        function = node["function"]["function"]
        if function is check_name:
            return _patterned(inner, _NAME_PATTERN, MAX_NAME)
        if function is _check_strings:
            return _text_checked(inner)
        pattern = _declared(node)
        if isinstance(pattern, str):
            return _patterned(inner, pattern, MAX_NAME, replace=True)
        return {**node, "schema": inner}
    if kind == "model":
        # Only the fields as keys (no alias, no unknown key a "before" validator would refuse).
        if node.get("config", {}).get("extra_fields_behavior") != "forbid":
            raise _NoFastPath("extra fields")
        return {**node, "schema": _model_fields(node)}
    if kind == "model-fields":
        fields = node["fields"].items()
        return {
            **node,
            "fields": {n: {**f, "schema": _fast_schema(f["schema"])} for n, f in fields},
        }
    if kind in ("default", "nullable", "function-before"):
        return {**node, "schema": _fast_schema(node["schema"])}
    if kind == "list":
        return {**node, "items_schema": _fast_schema(node["items_schema"])}
    if kind == "dict":
        keys, values = _fast_schema(node["keys_schema"]), _fast_schema(node["values_schema"])
        return {**node, "keys_schema": keys, "values_schema": values}
    raise _NoFastPath(kind)


def _model_fields(model: Any) -> Any:
    """The fast schema of a model's fields; without its "before" validators when every one is
    declared `unchanged_if_clean`, clean inputs the fields' schemas then demand."""
    node, empty = model["schema"], set[str]()
    while node["type"] == "function-before":
        declared = _declared(node)
        if not isinstance(declared, tuple):
            return _fast_schema(model["schema"])
        empty.update(declared)
        node = node["schema"]
    fields = _fast_schema(node)
    if node is model["schema"]:
        return fields
    return {
        **fields,
        "fields": {
            name: {
                **field,
                "schema": _emptied(field["schema"])
                if name in empty
                else _not_blank(field["schema"]),
            }
            for name, field in fields["fields"].items()
        },
    }


def _not_blank(node: Any) -> Any:
    """`node` refusing a blank string (what a "before" validator would drop as absent)."""
    kind = node["type"]
    if kind == "str":
        return {**node, "min_length": max(node.get("min_length", 0), 1)}
    if kind in ("default", "nullable", "function-after"):
        return {**node, "schema": _not_blank(node["schema"])}
    if kind == "literal" and all(not isinstance(v, str) or v.strip() for v in node["expected"]):
        return node
    # Types that no string, blank, passes in pydantic-core's lax mode.
    if kind in ("int", "float", "datetime", "list", "dict", "model"):
        return node
    raise _NoFastPath(kind)


def _emptied(node: Any) -> Any:
    """`node` (a list, maybe with a default) taking only an empty list."""
    if node["type"] == "default":
        return {**node, "schema": _emptied(node["schema"])}
    if node["type"] == "list":
        return {**node, "max_length": 0}
    raise _NoFastPath(node["type"])


def _patterned(node: Any, pattern: str, longest: int, *, replace: bool = False) -> Any:
    """`node`'s strings (through None and lists) matching `pattern` and at most `longest`
    long; a string already patterned keeps its stricter pattern but with `replace`."""
    kind = node["type"]
    if kind == "str":
        if node.keys() - _PLAIN_STRING or node.get("pattern") not in _patterns():
            raise _NoFastPath("a string of its own rules")
        longest = min(node.get("max_length", longest), longest)
        if "pattern" in node and not replace:
            return {**node, "max_length": longest}
        # Each pattern refuses padded strings: stripping them would change nothing.
        return {**node, "pattern": pattern, "max_length": longest, "strip_whitespace": False}
    if kind == "nullable":
        return {**node, "schema": _patterned(node["schema"], pattern, longest, replace=replace)}
    if kind == "list":
        items = _patterned(node["items_schema"], pattern, longest, replace=replace)
        return {**node, "items_schema": items}
    raise _NoFastPath(kind)


#: The keys of a string's schema `_patterned` knows: none changes the string a pattern sees
#: (stripping: every pattern refuses what it would strip).
_PLAIN_STRING = frozenset(
    {"type", "min_length", "max_length", "pattern", "strip_whitespace", "metadata"}
)


def _patterns() -> set[str | None]:
    """The patterns of fast schemas (None: no pattern yet)."""
    declared = {p for p in _UNCHANGED.values() if isinstance(p, str)}
    return {None, _NAME_PATTERN, _TEXT_PATTERN, *declared}


def _text_checked(node: Any) -> Any:
    """`_check_strings` of a (fast) schema's values in pydantic-core: strings as `check_text`
    passes them, map keys as `check_name`."""
    kind = node["type"]
    if kind == "str":
        return _patterned(node, _TEXT_PATTERN, MAX_TEXT)
    if kind == "nullable":
        return {**node, "schema": _text_checked(node["schema"])}
    if kind == "list":
        return {**node, "items_schema": _text_checked(node["items_schema"])}
    if kind == "dict":
        keys = _patterned(node["keys_schema"], _NAME_PATTERN, MAX_NAME)
        return {**node, "keys_schema": keys, "values_schema": _text_checked(node["values_schema"])}
    if kind == "model" or (kind != "function-after" and _checked_already(node)):
        return node
    raise _NoFastPath(kind)


#: Each model's fast validator (None: it has none), made with its own validator: from its
#: schema before pydantic-core counts it complete (after, it would reuse the model's).
_FAST: dict[type[BaseModel], SchemaValidator | None] = {}


def _fast_validator(schema: CoreSchema) -> SchemaValidator | None:
    try:
        return SchemaValidator(_fast_schema(schema))
    except _NoFastPath:
        return None


@dataclass(frozen=True)
class TimeWindow:
    """The event times an edge accepts: not before `earliest`, at most `max_future` ahead of
    the clock. Given as validation context (`{"time_window": w}`) by the edges; decoding
    what is already in Kafka passes none and checks no window."""

    earliest: datetime
    max_future: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> TimeWindow:
        """The window the edges accept under `settings` (SHIPLEDGER_EARLIEST_EVENT_TIME,
        SHIPLEDGER_MAX_FUTURE_SKEW_S)."""
        return cls(settings.earliest_event_time, timedelta(seconds=settings.max_future_skew_s))

    def check(self, value: datetime) -> datetime:
        """`value`, or ValueError saying which end of the window it is past."""
        if value < self.earliest:
            raise ValueError(
                f"{value.isoformat()} is before {self.earliest.isoformat()}, the earliest "
                "time accepted (SHIPLEDGER_EARLIEST_EVENT_TIME)"
            )
        latest = datetime.now(UTC) + self.max_future
        if value > latest:
            raise ValueError(
                f"{value.isoformat()} is more than {self.max_future} in the future "
                "(SHIPLEDGER_MAX_FUTURE_SKEW_S)"
            )
        return value


def event_time(value: datetime, info: ValidationInfo) -> datetime:
    """`aware(value)`, inside the context's TimeWindow when the caller gives one."""
    value = aware(value)
    window = (info.context or {}).get("time_window")
    return window.check(value) if isinstance(window, TimeWindow) else value


def new_id() -> str:
    """A new random id (UUID4, hex with dashes)."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    """Now, timezone-aware UTC, at millisecond precision (what Avro timestamp-millis keeps)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class Model(BaseModel):
    """Base of every contract model: strict fields, immutable, strings stripped; every string
    (list items and map keys too) checked by `check_text`, names and ids by `check_name`."""

    # Validators are built on first use, not at import: a command (`emit`, `query`) builds
    # only the models it uses, not the dozen every import of the contract defines.
    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=True, defer_build=True
    )

    # One call per field of every model built (several per event in the processors), but
    # for the fields where it can find nothing (`__get_pydantic_core_schema__`).
    _strings = field_validator("*", mode="after")(_check_strings)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[BaseModel], handler: GetCoreSchemaHandler, /
    ) -> CoreSchema:
        """The model's schema as pydantic makes it, without the string checks of the fields
        that hold no string but checked ones (`_without_idle_checks`)."""
        schema = handler(source)
        _without_idle_checks(schema)
        if source is cls and not cls.__dict__.get("__pydantic_complete__"):
            _FAST[cls] = _fast_validator(schema)
        return schema

    @classmethod
    def model_validate(cls, obj: Any, *, context: Any | None = None, **options: Any) -> Self:
        """pydantic's, but a dict given with no option but `context` goes through the
        model's fast validator first (see `_fast_schema`): what it refuses, the model's own
        validator validates again, so errors are always that validator's."""
        if type(obj) is dict and not options:
            fast = _FAST.get(cls)
            if fast is None and not cls.__pydantic_complete__:  # made on first use
                cls.model_rebuild(raise_errors=False)
                fast = _FAST.get(cls)
            if fast is not None:
                try:
                    made: Self = fast.validate_python(obj, context=context)
                except ValidationError:
                    pass
                else:
                    return made
        return super().model_validate(obj, context=context, **options)

    def to_avro(self) -> dict[str, Any]:
        """The dict fastavro writes for this model's schema."""
        # The processors encode a record and its alerts per event: pydantic's serializer
        # copied every value again (~6 µs a record); the values themselves are what it gives.
        return dict(self.__dict__) if _dumps_as_is(type(self)) else self.model_dump(mode="python")


@cache
def _dumps_as_is(cls: type[BaseModel]) -> bool:
    """Whether no field of `cls` can hold a model (which dumps as a dict) and nothing
    customises its serialization: then its dump is its values (lists and dicts equal)."""
    decorators = cls.__pydantic_decorators__
    if decorators.field_serializers or decorators.model_serializers or decorators.computed_fields:
        return False
    return not any(_holds_model(f.annotation) for f in cls.model_fields.values())


def _holds_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_model(arg) for arg in get_args(annotation))


def aware(value: datetime) -> datetime:
    """A timezone-aware timestamp in UTC at millisecond precision; naive times are refused."""
    if value.tzinfo is None:
        raise ValueError("timestamp needs a time zone (e.g. 2026-11-26T10:00:00Z)")
    value = value.astimezone(UTC)  # `value` itself when in UTC already
    # Per event at every edge: most times are whole milliseconds already (all Avro holds).
    extra = value.microsecond % 1000
    return value.replace(microsecond=value.microsecond - extra) if extra else value


def is_full_sha(value: str | None) -> bool:
    """Whether `value` is a full commit SHA (40 hex, or 64 for SHA-256 repositories), in
    either case."""
    return value is not None and _SHA_RE.fullmatch(value.lower()) is not None


def is_digest(value: str) -> bool:
    """Whether `value` is a sha256 digest as the models keep one: `sha256:<64 hex>`,
    lower-case."""
    return _DIGEST_RE.fullmatch(value) is not None


def full_sha(value: str) -> str:
    """A full commit SHA (40 hex, or 64 for SHA-256 repositories), lower-cased."""
    if not is_full_sha(value):
        raise ValueError("must be a full commit SHA (40 hex characters, or 64 for SHA-256)")
    return value.lower()


def sha256_digest(value: str) -> str:
    """`sha256:<64 hex>`, lower-cased; a bare 64-hex digest gets its `sha256:` prefix."""
    value = value.lower()
    if _BARE_DIGEST_RE.fullmatch(value):
        value = f"sha256:{value}"
    if not is_digest(value):
        raise ValueError("must be a sha256 digest: sha256:<64 hex characters>")
    return value


#: Fields whose blank value is an error rather than "absent": a blank tenant must not become
#: the default tenant (the row would land in another tenant's ledger).
_NEVER_BLANK = frozenset({"tenant"})


def drop_blank(data: Any) -> Any:
    """Empty strings (unset CI variables, blank form fields) mean "absent", not a value;
    except for `tenant`, where blank is refused."""
    if isinstance(data, dict):
        return {
            k: v
            for k, v in data.items()
            if not (isinstance(v, str) and not v.strip()) or k in _NEVER_BLANK
        }
    return data


class InputModel(Model):
    """A model filled from outside input (a pipeline, an API body, a webhook): a blank string
    there means the field is absent (`drop_blank`)."""

    @model_validator(mode="before")
    @classmethod
    @unchanged_if_clean()
    def _blank(cls, data: Any) -> Any:
        return drop_blank(data)


class DeploymentEvent(Model):
    """One stage of one deployment, as reported by a CI/CD system (schema DeploymentEvent)."""

    event_id: Name = Field(default_factory=new_id, min_length=1, max_length=128)
    deployment_id: Name = Field(min_length=1, max_length=128)
    event_type: EventType
    kind: DeploymentKind = "release"
    service: Name = Field(min_length=1, max_length=200)
    environment: Name = Field(min_length=1, max_length=100)
    region: Name | None = None
    tenant: Name = Field(default="default", min_length=1, max_length=MAX_TENANT)
    repository: Name | None = None
    commit_sha: str
    version: Name | None = None
    artifact_name: Name | None = None
    artifact_digest: str | None = None
    actor: Name = Field(min_length=1, max_length=200)
    trigger: Trigger = "automated"
    pipeline_provider: Name | None = None
    pipeline_run_id: Name | None = None
    pipeline_run_url: str | None = None
    pipeline_stage: Name | None = None
    change_id: Name | None = None
    exit_code: AvroInt | None = None
    duration_ms: AvroLong | None = Field(default=None, ge=0)
    occurred_at: datetime = Field(default_factory=utcnow)
    attributes: dict[str, str] = Field(default_factory=dict)
    # Version 2
    source: Name | None = None
    team: Name | None = None
    rollback_of: Name | None = None
    approvers: list[Name] = Field(default_factory=empty_list)
    pull_requests: list[Name] = Field(default_factory=empty_list)
    provenance_url: str | None = None
    # Version 3
    missing_metadata: list[Literal["commit_sha"]] = Field(default_factory=empty_list)

    @model_validator(mode="before")
    @classmethod
    @unchanged_if_clean("missing_metadata")
    def _aliases(cls, data: Any) -> Any:
        if isinstance(data, dict):
            # The class's own field map: `model_fields` is a property, read per event.
            data = drop_blank(apply_aliases(data, known=cls.__pydantic_fields__))
            missing = data.get("missing_metadata")
            if isinstance(missing, list) and "commit_sha" in missing:
                if data.get("commit_sha") is not None:
                    raise ValueError("commit_sha is given but listed in missing_metadata")
                data["commit_sha"] = ""  # declared missing: stored empty, Avro keeps a string
        return data

    @field_validator("commit_sha")
    @classmethod
    @unchanged_on(SHA_PATTERN)
    def _sha(cls, value: str) -> str:
        # Empty only when declared missing: `_aliases` sets it, after dropping blank values.
        return value if value == "" else full_sha(value)

    @field_validator("artifact_digest")
    @classmethod
    @unchanged_on(DIGEST_PATTERN)
    def _digest(cls, value: str | None) -> str | None:
        return None if value is None else sha256_digest(value)

    @field_validator("occurred_at")
    @classmethod
    def _occurred(cls, value: datetime, info: ValidationInfo) -> datetime:
        return event_time(value, info)


class DeploymentRecord(Model):
    """Normalized, correlated state of one deployment after an event (schema DeploymentRecord)."""

    record_id: str
    deployment_id: str
    seq: AvroInt = Field(ge=1)
    status: DeploymentStatus
    kind: str
    service: str
    environment: str
    environment_raw: str
    region: str | None = None
    tenant: str
    repository: str | None = None
    commit_sha: str
    version: str | None = None
    artifact_name: str | None = None
    artifact_digest: str | None = None
    actor: str
    trigger: str
    pipeline_provider: str | None = None
    pipeline_run_url: str | None = None
    change_id: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    duration_ms: AvroLong | None = None
    event_count: AvroInt = Field(ge=1)
    last_event_id: str
    last_event_type: str
    alert_rules: list[str] = Field(default_factory=empty_list)
    policy_version: str
    updated_at: datetime = Field(default_factory=utcnow)
    # Version 2
    team: str | None = None
    source: str | None = None
    rollback_of: str | None = None
    approvers: list[str] = Field(default_factory=empty_list)
    pull_requests: list[str] = Field(default_factory=empty_list)
    provenance_url: str | None = None
    # Version 3
    application: str | None = None
    tier: str | None = None
    change_state: str | None = None
    planned_start: datetime | None = None
    planned_end: datetime | None = None
    outside_window_s: AvroLong | None = None


class Alert(Model):
    """A policy finding about one deployment, or the resolution of an earlier one (`kind`,
    `resolves`): rows are never edited (schema Alert)."""

    alert_id: str
    rule: str
    severity: Severity
    message: str
    evidence: dict[str, str] = Field(default_factory=dict)
    policy_version: str
    deployment_id: str
    event_id: str
    tenant: str
    service: str
    environment: str
    region: str | None = None
    actor: str
    occurred_at: datetime
    detected_at: datetime = Field(default_factory=utcnow)
    # Version 2
    kind: AlertKind = "alert"
    resolves: str | None = None
    team: str | None = None
    application: str | None = None
    tier: str | None = None


EscalationStatus = Literal["delivered", "dead_lettered"]
EscalationAction = Literal["trigger", "resolve"]


class Escalation(Model):
    """How one alert's delivery to one receiver ended (schema Escalation)."""

    event_id: str
    tenant: str
    region: str | None = None
    occurred_at: datetime
    alert_id: str
    deployment_id: str
    rule: str
    severity: str
    service: str
    environment: str
    route: str
    receiver: str
    receiver_type: str
    status: EscalationStatus
    attempts: AvroInt
    ticket_key: str | None = None
    ticket_url: str | None = None
    http_status: AvroInt | None = None
    reason: str | None = None
    policy_version: str
    # Version 2
    action: EscalationAction = "trigger"
    resolved_alert_id: str = ""
