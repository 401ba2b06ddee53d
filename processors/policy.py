"""Policy as code: change windows, freezes and required fields per environment and tenant.

Loaded from YAML, validated by pydantic; every alert names the version it was judged under.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, time
from importlib import resources
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shipledger.schemas.models import DeploymentKind, Severity

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChangeWindow(_Strict):
    """Days and a local time range [start, end) when changes may go out."""

    days: list[Weekday]
    start: time
    end: time

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
    """The rule settings of one tenant (or the defaults)."""

    timezone: str = "UTC"
    require_change_ticket: list[str] = Field(default_factory=lambda: ["prod"])
    change_windows: dict[str, list[ChangeWindow]] = Field(default_factory=dict)
    window_exempt_kinds: list[DeploymentKind] = Field(default_factory=_default_exempt)
    freezes: list[Freeze] = Field(default_factory=list)
    severities: dict[str, Severity] = Field(default_factory=_default_severities)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The tenant's time zone for change windows."""
        return ZoneInfo(self.timezone)


class Policy(_Strict):
    """The whole policy file: defaults plus per-tenant overrides of any `Rules` key."""

    version: str
    defaults: Rules = Field(default_factory=Rules)
    tenants: dict[str, dict[str, object]] = Field(default_factory=dict)
    digest: str = ""

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: object) -> object:
        # `version: 3` in YAML is an int; a version is a label either way.
        return str(value) if isinstance(value, int | float) else value

    @model_validator(mode="after")
    def _tenants_valid(self) -> Policy:
        for tenant in self.tenants:
            self.rules_for(tenant)  # raises with the tenant's bad key named
        return self

    def rules_for(self, tenant: str) -> Rules:
        """Defaults with the tenant's overrides applied (a key given replaces the default)."""
        override = self.tenants.get(tenant)
        if not override:
            return self.defaults
        merged = {**self.defaults.model_dump(), **override}
        try:
            return Rules.model_validate(merged)
        except ValueError as exc:
            raise ValueError(f"tenants.{tenant}: {exc}") from exc

    @property
    def full_version(self) -> str:
        """`version+digest`: two different files never share a version string."""
        return f"{self.version}+{self.digest}" if self.digest else self.version


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Validate policy YAML text; errors name the file and the offending key."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{source}: expected a mapping with 'version' and 'defaults'")
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    try:
        return Policy.model_validate({**doc, "digest": digest})
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from exc


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
