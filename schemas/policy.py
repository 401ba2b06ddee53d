"""Policy as code: change windows, freezes and required fields per environment and tenant,
and the retention (compliance class) of every ledger row.

Loaded from YAML, validated by pydantic; every alert names the version it was judged under.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shipledger.schemas.durations import parse_duration
from shipledger.schemas.models import DeploymentKind, Severity
from shipledger.schemas.taxonomy import normalize_environment
from shipledger.schemas.validation import field_errors

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


_CLOCK_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$")


def canonical_environments(names: list[str]) -> list[str]:
    """Policy environment names in the canonical taxonomy (`production` → `prod`), so a rule
    written with a team's own name still matches normalized deployments."""
    return [normalize_environment(name).name for name in names]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChangeWindow(_Strict):
    """Days and a local time range [start, end) when changes may go out."""

    days: list[Weekday]
    start: time
    end: time

    @field_validator("start", "end", mode="before")
    @classmethod
    def _local_clock_time(cls, value: object) -> object:
        # Unquoted 9:00 is a number in YAML (sexagesimal 540); a zone would make the window
        # incomparable with local times. Require the plain "HH:MM" text.
        if isinstance(value, time) and value.tzinfo is None:
            return value  # already parsed (a tenant override re-validates the defaults)
        if not isinstance(value, str) or not _CLOCK_RE.match(value):
            raise ValueError(f'must be a quoted local time "HH:MM" (got {value!r})')
        return value

    @model_validator(mode="after")
    def _ordered(self) -> ChangeWindow:
        if self.end <= self.start:
            raise ValueError(f"window end {self.end} must be after start {self.start}")
        return self


class Freeze(_Strict):
    """A period [start, end) when the listed environments take no changes."""

    name: str
    start: datetime
    end: datetime
    environments: list[str] = Field(default_factory=lambda: ["prod"])
    exempt_kinds: list[DeploymentKind] = Field(default_factory=list)

    @field_validator("environments")
    @classmethod
    def _canonical(cls, value: list[str]) -> list[str]:
        return canonical_environments(value)

    @model_validator(mode="after")
    def _ordered(self) -> Freeze:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError(f"freeze {self.name!r}: start and end need a time zone offset")
        if self.end <= self.start:
            raise ValueError(f"freeze {self.name!r}: end must be after start")
        return self


def _default_exempt() -> list[DeploymentKind]:
    return ["emergency_patch", "rollback"]


def _default_severities() -> dict[str, Severity]:
    return {
        "missing_change_ticket": "high",
        "out_of_window": "medium",
        "freeze_violation": "critical",
    }


class Rules(_Strict):
    """The rule settings of one tenant (or the defaults). Environment names are canonical."""

    timezone: str = "UTC"
    require_change_ticket: list[str] = Field(default_factory=lambda: ["prod"])
    change_windows: dict[str, list[ChangeWindow]] = Field(default_factory=dict)
    window_exempt_kinds: list[DeploymentKind] = Field(default_factory=_default_exempt)
    freezes: list[Freeze] = Field(default_factory=list)
    #: Environments outside the taxonomy (prod, stage, qa, dev) that are expected here;
    #: a deployment to any other unknown environment raises `unknown_environment`.
    known_environments: list[str] = Field(default_factory=list)
    severities: dict[str, Severity] = Field(default_factory=_default_severities)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from None
        return value

    @field_validator("require_change_ticket", "known_environments")
    @classmethod
    def _canonical_list(cls, value: list[str]) -> list[str]:
        return canonical_environments(value)

    @field_validator("change_windows")
    @classmethod
    def _canonical_keys(cls, value: dict[str, list[ChangeWindow]]) -> dict[str, list[ChangeWindow]]:
        out: dict[str, list[ChangeWindow]] = {}
        for name, windows in value.items():
            out.setdefault(normalize_environment(name).name, []).extend(windows)
        return out

    @property
    def zone(self) -> ZoneInfo:
        """The tenant's time zone for change windows."""
        return ZoneInfo(self.timezone)


def parse_period(text: str) -> timedelta:
    """A retention period: `90d`, `12w`, `7y` (1y = 366 days)."""
    return parse_duration(text, units="dwy", what="retention period")


class Retention(_Strict):
    """How long ledger rows are kept: compliance classes and which applies where.

    A row's class is the LONGEST of those that apply to it: its tenant's (`tenants`) and its
    environments' (`environments`); `default` only when neither names one. Neither the
    environment nor the tenant "wins": a compliance obligation is never shortened by another
    rule (a SOX tenant's dev rows stay SOX; to keep dev short, classify the tenant's prod
    environment rather than the tenant).
    """

    classes: dict[str, str] = Field(default_factory=lambda: {"default": "1y"})
    default: str = "default"
    tenants: dict[str, str] = Field(default_factory=dict)
    environments: dict[str, str] = Field(default_factory=dict)

    @field_validator("classes")
    @classmethod
    def _periods(cls, value: dict[str, str]) -> dict[str, str]:
        for name, period in value.items():
            try:
                parse_period(period)
            except ValueError as exc:
                raise ValueError(f"class {name!r}: {exc}") from None
        return value

    @field_validator("environments")
    @classmethod
    def _canonical_keys(cls, value: dict[str, str]) -> dict[str, str]:
        return {normalize_environment(name).name: klass for name, klass in value.items()}

    @model_validator(mode="after")
    def _known_classes(self) -> Retention:
        named = [("default", self.default)]
        named += [(f"tenants.{t}", c) for t, c in self.tenants.items()]
        named += [(f"environments.{e}", c) for e, c in self.environments.items()]
        unknown = [f"{where}: unknown class {c!r}" for where, c in named if c not in self.classes]
        if unknown:
            raise ValueError(f"{'; '.join(unknown)} (classes: {', '.join(self.classes)})")
        return self

    def period(self, klass: str) -> timedelta:
        """How long rows of `klass` are kept."""
        return parse_period(self.classes[klass])

    def class_for(self, tenant: str, environments: Iterable[str] = ()) -> str:
        """The retention class of a row of `tenant` deployed to `environments` (raw names)."""
        found = [self.tenants[tenant]] if tenant in self.tenants else []
        for raw in environments:
            name = normalize_environment(raw).name if raw.strip() else raw
            if name in self.environments:
                found.append(self.environments[name])
        if not found:
            return self.default
        return max(sorted(set(found)), key=self.period)


class Policy(_Strict):
    """The whole policy file: defaults plus per-tenant overrides of any `Rules` key."""

    version: str
    defaults: Rules = Field(default_factory=Rules)
    tenants: dict[str, dict[str, object]] = Field(default_factory=dict)
    retention: Retention = Field(default_factory=Retention)
    digest: str = ""

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: object) -> object:
        # `version: 3` in YAML is an int; a version is a label either way.
        return str(value) if isinstance(value, int | float) else value

    def rules_for(self, tenant: str) -> Rules:
        """Defaults with the tenant's overrides applied: a key given replaces the default,
        except `severities`, which is merged rule by rule."""
        override = self.tenants.get(tenant)
        if not override:
            return self.defaults
        merged = {**self.defaults.model_dump(), **override}
        severities = override.get("severities")
        if isinstance(severities, dict):
            merged["severities"] = {**self.defaults.severities, **severities}
        return Rules.model_validate(merged)

    @property
    def full_version(self) -> str:
        """`version+digest`: two different files never share a version string."""
        return f"{self.version}+{self.digest}" if self.digest else self.version


def _policy_errors(exc: ValidationError, prefix: str = "") -> str:
    return "\n".join(f"  {prefix}{field}: {reason}" for field, reason in field_errors(exc))


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Validate policy YAML text; errors list every offending key with its reason."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{source}: expected a mapping with 'version' and 'defaults'")
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    try:
        policy = Policy.model_validate({**doc, "digest": digest})
    except ValidationError as exc:
        raise ValueError(f"{source}: invalid policy:\n{_policy_errors(exc)}") from exc
    for tenant in policy.tenants:
        try:
            policy.rules_for(tenant)
        except ValidationError as exc:
            raise ValueError(
                f"{source}: invalid policy:\n{_policy_errors(exc, f'tenants.{tenant}.')}"
            ) from exc
    return policy


def load_policy(path: Path | None) -> Policy:
    """The policy at `path`, or the built-in default policy when None."""
    if path is None:
        text = resources.files(__package__).joinpath("default_policy.yaml").read_text("utf-8")
        return parse_policy(text, "default_policy.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read policy file {path}: {exc.strerror}") from exc
    return parse_policy(text, str(path))
