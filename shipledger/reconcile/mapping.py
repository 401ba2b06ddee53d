"""Which tenant, service and environment a piece of evidence is about: the mapping file
(docs/reconcile.md).

    tenant: acme                 # optional: default --tenant, else SHIPLEDGER_TENANT
    rules:                       # the first rule of the evidence's source that matches wins
      - source: k8s-audit
        match: {namespace: "shop-*", file: "prod-eu-*"}   # globs over the evidence's fields
        environment: prod
        services: {checkout-web: checkout}   # workload -> service (default: the same name)
      - source: cloudtrail
        match: {cluster: prod}               # ECS: cluster, service; Lambda: function
        environment: prod
      - source: access-log
        path: '^/api/deploy/(?P<service>[\\w-]+)/(?P<environment>\\w+)$'
    covers:                      # what the evidence sees beyond the services it shows
      - environment: prod        # every service of prod (or only those under services:)

A rule sets the service (`service`, else the renamed or same-named workload, else the
`service` group of the access-log `path` regex) and the environment (`environment`, else the
`environment` group). Evidence no rule maps is counted and listed, never guessed at; an
access-log request no `path` matches is no deployment at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shipledger.reconcile.evidence import Observation
from shipledger.schemas.validation import field_errors

Source = Literal["k8s-audit", "cloudtrail", "access-log"]
SOURCES: tuple[Source, ...] = ("k8s-audit", "cloudtrail", "access-log")
#: The fields a rule of each source can match on (what its parser records).
MATCH_FIELDS: dict[str, frozenset[str]] = {
    "k8s-audit": frozenset({"file", "namespace", "name", "resource"}),
    "cloudtrail": frozenset({"file", "region", "account", "cluster", "service", "function"}),
    "access-log": frozenset({"file", "path", "method"}),
}


class MappingError(ValueError):
    """A mapping file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Target:
    """What a change was to: the ledger's tenant, service and environment."""

    tenant: str
    service: str
    environment: str


class Rule(BaseModel):
    """One rule of the mapping: which evidence it takes and what it maps it to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Source
    match: dict[str, str] = Field(default_factory=dict)
    path: str | None = None
    environment: str | None = Field(default=None, min_length=1)
    service: str | None = Field(default=None, min_length=1)
    services: dict[str, str] = Field(default_factory=dict)
    tenant: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        unknown = sorted(set(self.match) - MATCH_FIELDS[self.source])
        if unknown:
            allowed = ", ".join(sorted(MATCH_FIELDS[self.source]))
            raise ValueError(f"match: unknown field {unknown[0]!r} for {self.source} ({allowed})")
        groups: set[str] = set()
        if self.source == "access-log":
            if self.path is None:
                raise ValueError("path: required for access-log (a regex of the deploy path)")
            try:
                groups = set(re.compile(self.path).groupindex)
            except re.error as exc:
                raise ValueError(f"path: not a regular expression: {exc}") from None
            if self.service is None and "service" not in groups:
                raise ValueError("service: required unless path has a (?P<service>...) group")
        elif self.path is not None:
            raise ValueError(f"path: only access-log rules have one (this is {self.source})")
        if self.environment is None and "environment" not in groups:
            raise ValueError("environment: required unless path has a (?P<environment>...) group")
        return self

    def target(self, observation: Observation, tenant: str) -> Target | None:
        """What `observation` maps to by this rule, or None when the rule does not take it."""
        if observation.source != self.source:
            return None
        if not all(fnmatchcase(observation.field(k), glob) for k, glob in self.match.items()):
            return None
        named: dict[str, str] = {}
        if self.path is not None:
            found = re.search(self.path, observation.field("path"))
            if found is None:
                return None
            named = {k: v for k, v in found.groupdict().items() if v}
        workload = self.services.get(observation.workload, observation.workload)
        service = self.service or named.get("service") or workload
        environment = self.environment or named.get("environment")
        if not service or not environment:
            return None
        return Target(self.tenant or tenant, service, environment)


class Cover(BaseModel):
    """An environment (and optionally only some of its services) the evidence sees whole: a
    succeeded deployment there that the evidence never shows is unobserved."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    environment: str = Field(min_length=1)
    services: list[str] = Field(default_factory=list)

    def covers(self, service: str, environment: str) -> bool:
        """Whether a deployment of `service` to `environment` should be in the evidence."""
        return environment == self.environment and (not self.services or service in self.services)


class Mapping(BaseModel):
    """The mapping file (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str | None = Field(default=None, min_length=1)
    rules: list[Rule] = Field(min_length=1)
    covers: list[Cover] = Field(default_factory=list)

    def target(self, observation: Observation, tenant: str) -> Target | None:
        """What the first rule that takes `observation` maps it to (None: no rule does), of
        the rule's tenant, else `tenant` (the run's: --tenant, else this mapping's)."""
        for rule in self.rules:
            found = rule.target(observation, tenant)
            if found is not None:
                return found
        return None


def parse_mapping(text: str, source: str) -> Mapping:
    """The mapping of YAML `text` (file `source`); MappingError naming the field."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MappingError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise MappingError(f"{source}: expected a mapping with 'rules'")
    try:
        return Mapping.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(f"{field}: {reason}" for field, reason in field_errors(exc))
        raise MappingError(f"{source}: {problems}") from None


def load_mapping(path: Path) -> Mapping:
    """The mapping file at `path` (MappingError when it cannot be read or used)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(f"{path}: cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise MappingError(
            f"{path}: cannot be read: not UTF-8 (byte {exc.object[exc.start]:#04x} at {exc.start})"
        ) from None
    return parse_mapping(text, str(path))
