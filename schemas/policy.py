"""Policy as code: change windows, freezes and required fields per environment, tenant and
deployment kind; who must approve what; the retention (compliance class) of every ledger
row; and which alerts are escalated to which receivers (`escalation:`,
`shipledger.schemas.escalation`).

Loaded from YAML, validated by pydantic; every alert names the version it was judged under.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shipledger.schemas.durations import parse_duration
from shipledger.schemas.escalation import Escalation
from shipledger.schemas.family_models import ChangeState
from shipledger.schemas.models import DeploymentKind, Model, Name, Severity, aware
from shipledger.schemas.monorepo import Monorepos
from shipledger.schemas.taxonomy import normalize_environment
from shipledger.schemas.validation import field_errors
from shipledger.settings import check_region

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
        "change_ticket_unknown": "high",
        "change_not_approved": "high",
        "outside_change_window": "medium",
        "change_scope_mismatch": "medium",
        "unattributed_manual_deploy": "high",
        "suspect_deployment": "high",
        "config_drift": "high",
        # Artifact continuity and lifecycle (docs/artifacts.md)
        "artifact_digest_mismatch": "critical",
        "artifact_unknown": "high",
        "artifact_digest_missing": "high",
        "running_artifact_deleted": "high",
    }


def _default_approved_states() -> list[ChangeState]:
    return ["approved", "scheduled"]


def parse_tolerance(text: str) -> timedelta:
    """A change-window tolerance: `0`, or `<n>s`, `<n>m`, `<n>h`."""
    if text.strip() == "0":
        return timedelta(0)
    return parse_duration(text, units="smh", what="change_window_tolerance")


def _checked_tolerance(value: object) -> object:
    if isinstance(value, int) and value == 0:
        value = "0"  # `change_window_tolerance: 0` in YAML
    if isinstance(value, str):
        parse_tolerance(value)
    return value


def _canonical_windows(value: dict[str, list[ChangeWindow]]) -> dict[str, list[ChangeWindow]]:
    out: dict[str, list[ChangeWindow]] = {}
    for name, windows in value.items():
        out.setdefault(normalize_environment(name).name, []).extend(windows)
    return out


class KindRules(_Strict):
    """What one deployment kind changes in its tenant's rules (`kinds: {schema_migration:
    ...}`): a key given replaces that setting for deployments of the kind; `severities` is
    merged rule by rule."""

    require_change_ticket: list[str] | None = None
    change_windows: dict[str, list[ChangeWindow]] | None = None
    change_window_tolerance: str | None = None
    severities: dict[str, Severity] = Field(default_factory=dict)

    @field_validator("require_change_ticket")
    @classmethod
    def _canonical_list(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else canonical_environments(value)

    @field_validator("change_windows")
    @classmethod
    def _canonical_keys(
        cls, value: dict[str, list[ChangeWindow]] | None
    ) -> dict[str, list[ChangeWindow]] | None:
        return None if value is None else _canonical_windows(value)

    @field_validator("change_window_tolerance", mode="before")
    @classmethod
    def _tolerance(cls, value: object) -> object:
        return _checked_tolerance(value)


def identity_key(name: str) -> str:
    """An identity as compared across systems: trimmed and case-folded."""
    return name.strip().casefold()


def same_person(a: str, b: str) -> bool:
    """Whether two identities may be one person, for four eyes: equal, or equal once an
    e-mail domain (`alice@corp.example`) or a Windows domain (`CORP\\alice`) is dropped. The
    deployer's CI login and their SSO name often differ so; treating a near match as the same
    person only ever withholds an approval, never grants one."""

    def local(name: str) -> str:
        return identity_key(name).rsplit("\\", 1)[-1].split("@", 1)[0]

    return identity_key(a) == identity_key(b) or local(a) == local(b)


class ApprovalRequirement(_Strict):
    """Approvals a change request needs before deployments under it may go out: `count`
    distinct approvers from `group` (a directory group, checked when the approval is
    recorded) for deployments of `kinds` (all when empty) to `environments`. With
    `four_eyes`, the deployer's own approval never counts."""

    name: str = Field(min_length=1)
    group: str = Field(min_length=1)
    count: int = Field(default=1, ge=1)
    environments: list[str] = Field(default_factory=lambda: ["prod"])
    kinds: list[DeploymentKind] = Field(default_factory=list)
    four_eyes: bool = True

    @field_validator("environments")
    @classmethod
    def _canonical(cls, value: list[str]) -> list[str]:
        return canonical_environments(value)

    def applies_to(self, environment: str, kind: str) -> bool:
        """Whether deployments of `kind` to `environment` (canonical) need this approval."""
        return environment in self.environments and (not self.kinds or kind in self.kinds)


#: The verdicts of a post-deploy verification (`Verification`), best first.
Verdict = Literal["verified", "suspect", "failed_verification", "unverified"]
VERDICTS: tuple[Verdict, ...] = ("verified", "suspect", "failed_verification", "unverified")


class Verification(_Strict):
    """The post-deploy verification window (docs/verification.md): how long after a
    deployment succeeds its checks and health signals count (`windows` per canonical
    environment, `window` for the others), the scores that make it `verified` or `suspect`
    (below `suspect_score`: `failed_verification`), and how long after a window closed a late
    check (its `occurred_at` inside the window) still revises the verdict (`late_for`)."""

    window: str = "10m"
    windows: dict[str, str] = Field(default_factory=lambda: {"prod": "15m"})
    verified_score: float = Field(default=0.9, ge=0, le=1)
    suspect_score: float = Field(default=0.5, ge=0, le=1)
    late_for: str = "24h"

    @field_validator("window", "late_for")
    @classmethod
    def _duration(cls, value: str, info: ValidationInfo) -> str:
        parse_duration(value, units="smhd", what=str(info.field_name))
        return value

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            parse_duration(text, units="smhd", what=f"windows.{name}")
        return {normalize_environment(name).name: text for name, text in value.items()}

    @model_validator(mode="after")
    def _ordered(self) -> Verification:
        if self.suspect_score > self.verified_score:
            raise ValueError("suspect_score is above verified_score")
        return self

    def window_for(self, environment: str) -> timedelta:
        """The window of canonical `environment`."""
        return parse_duration(self.windows.get(environment, self.window), units="smhd")

    @property
    def late(self) -> timedelta:
        """`late_for` as a timedelta."""
        return parse_duration(self.late_for, units="smhd")


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
    #: How far (`0`, `30s`, `15m`, `2h`) a deployment may start outside its change request's
    #: planned window before `outside_change_window` fires.
    change_window_tolerance: str = "0"
    #: Change request states in which a deployment may start (by event time).
    approved_states: list[ChangeState] = Field(default_factory=_default_approved_states)
    #: Identities that count as known for `unattributed_manual_deploy` besides directory users
    #: (CI bots, deploy robots).
    service_accounts: list[str] = Field(default_factory=list)
    approvals: list[ApprovalRequirement] = Field(default_factory=list)
    #: Per deployment kind: ticket requirement, windows, tolerance and severities.
    kinds: dict[DeploymentKind, KindRules] = Field(default_factory=dict)
    #: Anomaly correlation (`suspect_deployment`): how long (`30m`, `2h`) before an anomaly a
    #: deployment of its service or of a dependency started to be a suspect (capped by the
    #: workers' `SHIPLEDGER_ANOMALY_HORIZON_S`), how many dependency hops of the service
    #: catalog to follow (0: the anomalous service only), and how many suspects one anomaly
    #: names at most (the closest in the catalog first, then the latest).
    suspect_window: str = "60m"
    suspect_dependency_depth: int = Field(default=2, ge=0, le=5)
    suspect_limit: int = Field(default=5, ge=1, le=50)
    #: Post-deploy verification (`Verification`).
    verification: Verification = Field(default_factory=Verification)
    #: Artifact continuity (docs/artifacts.md): environments whose deployments must carry a
    #: sha256 `artifact_digest` that a build published (`artifact_digest_missing`,
    #: `artifact_digest_mismatch`, `artifact_unknown` judge only these; prod when the
    #: policy does not say, `[]` turns the rules off), the builders whose
    #: artifact events count as builds (empty: any builder), and how many of the latest
    #: deployments per service and environment stay protected from registry deletion
    #: (`GET /v1/artifacts/protected`: the running one and the rollback targets).
    require_artifact_digest: list[str] = Field(default_factory=lambda: ["prod"])
    trusted_builders: list[str] = Field(default_factory=list)
    artifact_rollback_reach: int = Field(default=5, ge=1, le=100)
    #: Data sovereignty (docs/sovereignty.md): the regions whose ledgers store the tenant's
    #: rows (`SHIPLEDGER_REGIONAL_LEDGERS`), each of them; empty: the default ledger.
    regions: list[str] = Field(default_factory=list)

    @field_validator("regions")
    @classmethod
    def _region_names(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a region is named twice")
        return [check_region(name) for name in value]

    @field_validator("suspect_window")
    @classmethod
    def _suspect_window(cls, value: str) -> str:
        parse_duration(value, units="smhd", what="suspect_window")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from None
        return value

    @field_validator("require_change_ticket", "known_environments", "require_artifact_digest")
    @classmethod
    def _canonical_list(cls, value: list[str]) -> list[str]:
        return canonical_environments(value)

    @field_validator("change_windows")
    @classmethod
    def _canonical_keys(cls, value: dict[str, list[ChangeWindow]]) -> dict[str, list[ChangeWindow]]:
        return _canonical_windows(value)

    @field_validator("change_window_tolerance", mode="before")
    @classmethod
    def _tolerance(cls, value: object) -> object:
        return _checked_tolerance(value)

    def trusts_builder(self, builder: str | None) -> bool:
        """Whether an artifact event from `builder` counts as a build (`trusted_builders`,
        compared like identities; an empty list trusts every builder, an unnamed one only
        then)."""
        if not self.trusted_builders:
            return True
        return builder is not None and identity_key(builder) in {
            identity_key(b) for b in self.trusted_builders
        }

    @property
    def zone(self) -> ZoneInfo:
        """The tenant's time zone for change windows."""
        return ZoneInfo(self.timezone)

    @property
    def suspect_lookback(self) -> timedelta:
        """`suspect_window` as a timedelta."""
        return parse_duration(self.suspect_window, units="smhd", what="suspect_window")

    @property
    def tolerance(self) -> timedelta:
        """`change_window_tolerance` as a timedelta."""
        return parse_tolerance(self.change_window_tolerance)

    def for_kind(self, kind: str) -> Rules:
        """These rules as they apply to deployments of `kind` (its `kinds` entry applied)."""
        override = next((rules for name, rules in self.kinds.items() if name == kind), None)
        if override is None:
            return self
        update: dict[str, object] = {
            key: value
            for key in ("require_change_ticket", "change_windows", "change_window_tolerance")
            if (value := getattr(override, key)) is not None
        }
        if override.severities:
            update["severities"] = {**self.severities, **override.severities}
        # Every value was validated (and canonicalized) by KindRules already.
        return self.model_copy(update=update)

    def approvals_for(self, environment: str, kind: str) -> list[ApprovalRequirement]:
        """The approval requirements of a deployment of `kind` to `environment` (canonical)."""
        return [r for r in self.approvals if r.applies_to(environment, kind)]

    def approving_groups(self, environments: Iterable[str]) -> frozenset[str]:
        """Groups whose members may approve a change request covering `environments`
        (canonical; a request that names none may go anywhere: every requirement's group)."""
        wanted = set(environments)
        return frozenset(
            r.group for r in self.approvals if not wanted or wanted & set(r.environments)
        )


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


# --- Success criteria (docs/metrics.md, Success criteria): targets per team ---------------


class SuccessTargets(_Strict):
    """A team's targets: the most its mean time to detect a failed deployment
    (`detect_within`) and its mean rollback duration (`rollback_within`) may be, as
    durations (`30m`, `2h`); None: no target."""

    detect_within: str | None = None
    rollback_within: str | None = None

    @field_validator("detect_within", "rollback_within")
    @classmethod
    def _duration(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            parse_duration(value, units="smhd", what=str(info.field_name))
        return value

    def seconds(self, name: Literal["detect_within", "rollback_within"]) -> float | None:
        """Target `name` in seconds (None: not set)."""
        text = getattr(self, name)
        return None if text is None else parse_duration(text, units="smhd").total_seconds()


class SuccessCriteria(_Strict):
    """`success_criteria:`: the default targets, per-team overrides (a key given replaces the
    default's), and which alert rules count as detecting a failure."""

    defaults: SuccessTargets = Field(default_factory=SuccessTargets)
    teams: dict[str, SuccessTargets] = Field(default_factory=dict)
    detection_rules: list[str] = Field(default_factory=lambda: ["suspect_deployment"])

    def targets_for(self, team: str) -> SuccessTargets:
        """The defaults with `team`'s overrides applied."""
        override = self.teams.get(team)
        if override is None:
            return self.defaults
        return self.defaults.model_copy(update=override.model_dump(exclude_unset=True))


#: `Policy.rules_for`'s answers of each live policy (by `id`, dropped with the policy), by
#: tenant with overrides (None: any other) and kind. A policy is immutable, and the processors
#: ask once per event: merging a tenant's overrides validates a `Rules` again. Kept out of
#: the model, so it is no part of its equality, dumps or copies.
_RULES_MEMO: dict[int, dict[tuple[str | None, str | None], Rules]] = {}


class Policy(_Strict):
    """The whole policy file: defaults plus per-tenant overrides of any `Rules` key."""

    version: str
    defaults: Rules = Field(default_factory=Rules)
    tenants: dict[str, dict[str, object]] = Field(default_factory=dict)
    retention: Retention = Field(default_factory=Retention)
    escalation: Escalation = Field(default_factory=Escalation)
    #: Monorepo path -> service map (docs/changes.md).
    monorepos: Monorepos = Field(default_factory=lambda: Monorepos({}))
    success_criteria: SuccessCriteria = Field(default_factory=SuccessCriteria)
    digest: str = ""

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: object) -> object:
        # `version: 3` in YAML is an int; a version is a label either way.
        return str(value) if isinstance(value, int | float) else value

    def rules_for(self, tenant: str, kind: str | None = None) -> Rules:
        """Defaults with the tenant's overrides applied: a key given replaces the default,
        except `severities`, which is merged rule by rule; then, given a deployment `kind`,
        that kind's entry of `kinds` (see `Rules.for_kind`). Worked out once per policy,
        tenant and kind (`_RULES_MEMO`)."""
        memo = _RULES_MEMO.get(id(self))
        if memo is None:
            memo = _RULES_MEMO[id(self)] = {}
            weakref.finalize(self, _RULES_MEMO.pop, id(self), None)
        # Tenants without overrides share the defaults' entry: event tenants are unbounded.
        key = (tenant if tenant in self.tenants else None, kind)
        found = memo.get(key)
        if found is None:
            found = memo[key] = self._merged_rules(tenant, kind)
        return found

    def _merged_rules(self, tenant: str, kind: str | None) -> Rules:
        override = self.tenants.get(tenant)
        rules = self.defaults
        if override:
            merged = {**self.defaults.model_dump(), **override}
            severities = override.get("severities")
            if isinstance(severities, dict):
                merged["severities"] = {**self.defaults.severities, **severities}
            rules = Rules.model_validate(merged)
        return rules if kind is None else rules.for_kind(kind)

    @property
    def full_version(self) -> str:
        """`version+digest`: two different files never share a version string."""
        return f"{self.version}+{self.digest}" if self.digest else self.version


@dataclass(frozen=True)
class PolicyProblem:
    """One thing wrong in a policy file: the key path, why, and its line (1-based) if known."""

    path: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path}: {self.reason}" if self.path else f"{where}{self.reason}"


class PolicyError(ValueError):
    """A policy file that cannot be used; `problems` lists every offending key."""

    def __init__(self, source: str, problems: list[PolicyProblem], what: str = "invalid policy"):
        self.source = source
        # In file order: the way a reader fixes them.
        self.problems = sorted(problems, key=lambda p: p.line or 0)
        super().__init__(f"{source}: {what}:\n" + "\n".join(f"  {p}" for p in self.problems))


def _line_of(root: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The line (1-based) of the deepest YAML node on the path `loc`: the key itself for a
    mapping entry, so an unknown or missing key points at its parent's key."""
    if root is None:
        return None
    node, line = root, root.start_mark.line
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child, line = value, key.start_mark.line
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line
        if child is None:
            break
        node = child
    return line + 1


def _problems(
    exc: ValidationError, root: yaml.Node | None, prefix: tuple[str, ...] = ()
) -> list[PolicyProblem]:
    return [
        PolicyProblem(".".join([*prefix, path]), reason, _line_of(root, (*prefix, *err["loc"])))
        for err, (path, reason) in zip(exc.errors(), field_errors(exc), strict=True)
    ]


def _yaml_problem(exc: yaml.MarkedYAMLError) -> PolicyProblem:
    # PyYAML's own text repeats the marks as `in "<unicode string>", line 3`: say it once.
    mark = exc.problem_mark or exc.context_mark
    reason = exc.problem or exc.context or "syntax error"
    if mark is not None:
        reason = f"column {mark.column + 1}: {reason}"
    if exc.context and exc.problem:
        context_line = f" from line {exc.context_mark.line + 1}" if exc.context_mark else ""
        reason += f" ({exc.context}{context_line})"
    return PolicyProblem("", reason, mark.line + 1 if mark is not None else None)


#: A check a policy must also pass, beyond its own validation, by the program that uses the
#: part it checks (the receivers' kinds check their options): (key path, reason) per problem.
PolicyCheck = Callable[["Policy"], Iterable[tuple[tuple[str | int, ...], str]]]


def _escalation_problems(policy: Policy) -> list[tuple[tuple[str | int, ...], str]]:
    return [(("escalation", *loc), reason) for loc, reason in policy.escalation.problems()]


def parse_policy(text: str, source: str = "<policy>", checks: Sequence[PolicyCheck] = ()) -> Policy:
    """Validate policy YAML text, then run `checks` on it; a PolicyError lists every
    offending key with its line."""
    try:
        doc = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise PolicyError(source, [_yaml_problem(exc)], "not valid YAML") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(source, [PolicyProblem("", str(exc))], "not valid YAML") from exc
    if not isinstance(doc, dict):
        problem = PolicyProblem("", "expected a mapping with 'version' and 'defaults'", 1)
        raise PolicyError(source, [problem])
    digest = text_sha256(text)[:8]
    problems: list[PolicyProblem] = []
    policy: Policy | None = None
    try:
        policy = Policy.model_validate({**doc, "digest": digest})
    except ValidationError as exc:
        problems += _problems(exc, root)
    # Tenant overrides are checked even when the rest is broken, so that one run lists
    # every problem: merged with the defaults when those are valid, on their own otherwise.
    tenants = doc.get("tenants")
    for tenant, override in tenants.items() if isinstance(tenants, dict) else ():
        if not isinstance(override, dict):
            continue  # reported by Policy itself
        try:
            policy.rules_for(tenant) if policy else Rules.model_validate(override)
        except ValidationError as exc:
            problems += _problems(exc, root, ("tenants", str(tenant)))
    for check in (_escalation_problems, *checks):
        if policy is None:  # the checks read a valid policy: the problems above come first
            break
        problems += [
            PolicyProblem(".".join(str(part) for part in loc), reason, _line_of(root, loc))
            for loc, reason in check(policy)
        ]
    if problems or policy is None:
        raise PolicyError(source, problems)
    return policy


def load_policy(path: Path | None, checks: Sequence[PolicyCheck] = ()) -> Policy:
    """The policy at `path`, or the built-in default policy when None (see `parse_policy`)."""
    if path is None:
        text = resources.files(__package__).joinpath("default_policy.yaml").read_text("utf-8")
        return parse_policy(text, "default_policy.yaml", checks)
    return parse_policy(read_policy_text(path), str(path), checks)


def read_policy_text(path: Path) -> str:
    """The text of the policy file at `path`; ValueError saying why it cannot be read
    (missing, unreadable, not UTF-8)."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read policy file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start]
        raise ValueError(
            f"cannot read policy file {path}: not UTF-8 (byte {bad:#04x} at {exc.start})"
        ) from None


def text_sha256(text: str) -> str:
    """SHA-256 (hex) of a policy's text: its first 8 characters are the policy's digest."""
    return hashlib.sha256(text.encode()).hexdigest()


#: The key of the one published policy (`PolicyDocument.scope`).
GLOBAL_SCOPE = "global"
#: The longest policy text that may be published (policy files are a few kB).
MAX_POLICY_TEXT = 1_000_000


def _as_given(value: Any) -> Any:
    return value


class PolicyDocument(Model):
    """A policy as `shipledger policy push` publishes it on the `policy` topic (schema
    PolicyDocument): its text, version and SHA-256."""

    # The text is kept as written, whitespace and all: its SHA-256 is the policy's digest.
    model_config = ConfigDict(str_strip_whitespace=False)

    scope: Name = GLOBAL_SCOPE
    version: Name
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    text: str = Field(min_length=1, max_length=MAX_POLICY_TEXT)
    published_at: datetime

    # Replaces Model's check of every string: the names and the digest check themselves, and
    # the text is a whole policy file (longer than MAX_TEXT), checked by parse_policy.
    _strings = field_validator("*", mode="after")(_as_given)

    @field_validator("published_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return aware(value)

    @classmethod
    def of(cls, text: str, policy: Policy, published_at: datetime) -> PolicyDocument:
        """The document publishing `policy`, parsed from `text`."""
        return cls(
            version=policy.version, sha256=text_sha256(text), text=text, published_at=published_at
        )

    def policy(self) -> Policy:
        """The policy it carries; PolicyError if the text is not valid or not the one its
        SHA-256 names (a document must never judge under a policy other than it says)."""
        if text_sha256(self.text) != self.sha256:
            problem = PolicyProblem("", f"text does not match its sha256 {self.sha256}")
            raise PolicyError(f"published policy {self.version}", [problem])
        return parse_policy(self.text, f"published policy {self.version}")
