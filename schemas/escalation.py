"""The `escalation:` section of the policy: which alerts go to which receivers (ticketing
systems, webhooks). Pure configuration and matching; `shipledger.receivers` delivers.

```yaml
escalation:
  receivers:
    snow-prod:                      # a name, used by the routes and stored with each delivery
      type: servicenow              # the kind (below)
      url: https://acme.service-now.com
      credentials: snow_prod        # the NAME of a secret in SHIPLEDGER_RECEIVER_SECRETS
      table: incident               # the kind's own options
  routes:
    - name: prod-governance
      alert_rules: [freeze_violation, change_not_approved]   # omitted or empty: any rule
      min_severity: high                                      # omitted: info (any)
      environments: [prod]                                    # omitted or empty: any
      tenants: [bank]                                         # omitted or empty: any
      teams: [payments]                                       # omitted or empty: any
      receivers: [snow-prod]
```

Kinds: servicenow, jira, webhook (signed), pagerduty, opsgenie, slack, alertmanager
(docs/receivers.md). `url` may be left out for a kind with a public endpoint (pagerduty,
opsgenie, slack). A resolution (`kind: resolution`) takes the same routes as the alert it
resolves (it carries the same rule, severity, tenant, team and environment) and goes to
those receivers whose kind can resolve (`shipledger.receivers.plan.deliveries`).

An alert goes to the receivers of every route it matches, each receiver once (the first
route naming it is the one recorded). Secrets never appear here: a receiver names its
credentials, the settings hold them (`SHIPLEDGER_RECEIVER_SECRETS`), so a policy file can be
reviewed, versioned and pushed like any other code. The keys of a receiver besides `type`,
`url` and `credentials` are its kind's options, validated by the kind when the policy is
checked or loaded for delivery (`shipledger.receivers.registry.policy_problems`), so a new
kind of receiver needs no change here.
"""

from __future__ import annotations

import re
from typing import Any, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shipledger.schemas.models import Alert, Severity
from shipledger.schemas.taxonomy import normalize_environment

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
#: Option keys that would put a secret in the policy file.
_SECRET_KEY = re.compile(
    r"(^|_)(password|passwd|secret|token|api_?key|authorization)($|_)", re.IGNORECASE
)
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
SEVERITIES: tuple[Severity, ...] = get_args(Severity)


def _rank(severity: str) -> int:
    return SEVERITIES.index(severity)


class ReceiverConfig(BaseModel):
    """One receiver: its kind (`type`), base `url` and the name of its `credentials`; any
    other key is an option of its kind (kept in `options`, validated by the kind)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    #: None: the kind's public endpoint (PagerDuty, Opsgenie, Slack have one).
    url: str | None = None
    #: Name of the secret in `SHIPLEDGER_RECEIVER_SECRETS` (case-insensitive), never the secret.
    credentials: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http(s) URL (got {value!r})")
        if parts.username or parts.password:
            raise ValueError(
                "must not carry credentials: name them with `credentials:` and store them in "
                "SHIPLEDGER_RECEIVER_SECRETS"
            )
        if parts.query or parts.fragment:
            raise ValueError("must be a base URL, without query or fragment")
        if parts.scheme == "http" and parts.hostname not in _LOOPBACK:
            raise ValueError("must use https (http only on loopback): tickets carry credentials")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _no_secrets(self) -> ReceiverConfig:
        leaked = sorted(key for key in self.options if _SECRET_KEY.search(key))
        if leaked:
            raise ValueError(
                f"{', '.join(leaked)}: secrets never go in the policy file; store the secret "
                "in SHIPLEDGER_RECEIVER_SECRETS under a name and give that name as `credentials`"
            )
        return self

    @property
    def options(self) -> dict[str, Any]:
        """The kind's options: every key besides type, url and credentials."""
        return dict(self.model_extra or {})


class Route(BaseModel):
    """Alerts of `alert_rules`, at least `min_severity`, in `environments` (canonical), of
    `tenants` and of `teams` (the owner team of the deployment) go to `receivers`; an empty
    list matches anything."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_RE)
    alert_rules: list[str] = Field(default_factory=list)
    min_severity: Severity = "info"
    environments: list[str] = Field(default_factory=list)
    tenants: list[str] = Field(default_factory=list)
    teams: list[str] = Field(default_factory=list)
    receivers: list[str] = Field(min_length=1)

    @field_validator("environments")
    @classmethod
    def _canonical(cls, value: list[str]) -> list[str]:
        return [normalize_environment(name).name for name in value]

    def matches(self, alert: Alert) -> bool:
        """Whether `alert` is one this route sends."""
        return (
            (not self.alert_rules or alert.rule in self.alert_rules)
            and _rank(alert.severity) >= _rank(self.min_severity)
            and (not self.environments or alert.environment in self.environments)
            and (not self.tenants or alert.tenant in self.tenants)
            and (not self.teams or alert.team in self.teams)
        )


class Escalation(BaseModel):
    """The receivers and the routes to them (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    receivers: dict[str, ReceiverConfig] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)

    @field_validator("receivers")
    @classmethod
    def _names(cls, value: dict[str, ReceiverConfig]) -> dict[str, ReceiverConfig]:
        bad = [name for name in value if not re.match(_NAME_RE, name)]
        if bad:
            raise ValueError(f"receiver names are letters, digits, '_', '.', '-': {bad}")
        return value

    def problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(key path under `escalation`, reason) for every route naming an unknown receiver
        and every route name used twice (`parse_policy` reports them with their lines)."""
        found: list[tuple[tuple[str | int, ...], str]] = []
        known = ", ".join(self.receivers) or "none"
        seen: set[str] = set()
        for i, route in enumerate(self.routes):
            if route.name in seen:
                found.append((("routes", i, "name"), f"two routes are named {route.name!r}"))
            seen.add(route.name)
            found += [
                (("routes", i, "receivers", j), f"unknown receiver {name!r} (receivers: {known})")
                for j, name in enumerate(route.receivers)
                if name not in self.receivers
            ]
        return found

    def deliveries(self, alert: Alert) -> list[tuple[str, str]]:
        """(route, receiver) for every receiver `alert` goes to, each receiver once, in route
        order (the first route naming a receiver is the one recorded)."""
        found: dict[str, str] = {}
        for route in self.routes:
            if route.matches(alert):
                for receiver in route.receivers:
                    found.setdefault(receiver, route.name)
        return [(route, receiver) for receiver, route in found.items()]
