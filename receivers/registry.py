"""The kinds of receiver by name, and the policy's receivers checked and configured with them.

`policy_problems` is the check every program that reads the `escalation:` section runs
(`shipledger policy check`, `up`, `shipledger escalate run`: `load_policy(path,
checks=[policy_problems])`): each receiver's kind exists, its options are valid for it, and
a kind that needs a secret has `credentials`. `targets` then pairs each receiver with its
secret from the settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from pydantic import SecretStr, ValidationError

from shipledger.receivers import alertmanager, jira, opsgenie, pagerduty, servicenow, slack, webhook
from shipledger.receivers.receiver import ReceiverKind, Target
from shipledger.schemas.policy import Policy

#: Every kind of receiver, by its `type:` in the policy. A new kind: its module, and a line here.
KINDS: Mapping[str, ReceiverKind] = {
    kind.name: kind
    for kind in (
        servicenow.KIND,
        jira.KIND,
        webhook.KIND,
        pagerduty.KIND,
        opsgenie.KIND,
        slack.KIND,
        alertmanager.KIND,
    )
}

Loc = tuple[str | int, ...]


class ReceiverConfigError(ValueError):
    """The policy's receivers cannot be used as configured (a secret is missing)."""


def policy_problems(
    policy: Policy, kinds: Mapping[str, ReceiverKind] = KINDS
) -> list[tuple[Loc, str]]:
    """(key path, reason) for every receiver of `policy` its kind refuses."""
    problems: list[tuple[Loc, str]] = []
    for name, config in policy.escalation.receivers.items():
        where: Loc = ("escalation", "receivers", name)
        kind = kinds.get(config.type)
        if kind is None:
            known = ", ".join(sorted(kinds))
            problems.append(((*where, "type"), f"unknown receiver type {config.type!r} ({known})"))
            continue
        try:
            kind.options.model_validate(config.options)
        except ValidationError as exc:
            problems += [((*where, *error["loc"]), _reason(error["msg"])) for error in exc.errors()]
        if config.url is None and kind.default_url is None:
            problems.append(((*where, "url"), f"type {kind.name} has no default: set `url:`"))
        if kind.needs_secret and config.credentials is None:
            problems.append(((*where, "credentials"), f"type {kind.name} needs `credentials:`"))
    return problems


def _reason(message: str) -> str:
    # Pydantic says "Extra inputs are not permitted" for an unknown option: say what it is.
    if message.startswith("Extra inputs"):
        return "unknown option for this receiver type"
    return message


def targets(
    policy: Policy,
    secret: Callable[[str], SecretStr | None],
    kinds: Mapping[str, ReceiverKind] = KINDS,
) -> dict[str, Target]:
    """Each receiver a route of `policy` uses, with its options and its secret (`secret(name)`:
    `Settings.receiver_secret`). ReceiverConfigError lists every problem (run
    `policy_problems` when loading the policy first: this assumes its kinds and options)."""
    used: Iterable[str] = dict.fromkeys(
        r for route in policy.escalation.routes for r in route.receivers
    )
    out: dict[str, Target] = {}
    missing: list[str] = []
    for name in used:
        config = policy.escalation.receivers[name]
        kind = kinds[config.type]
        value = secret(config.credentials) if config.credentials else None
        if config.credentials and value is None:
            missing.append(f"{name} (credentials {config.credentials!r})")
        out[name] = Target(
            name=name,
            kind=kind.name,
            url=config.url or kind.default_url or "",
            options=kind.options.model_validate(config.options),
            secret=value,
        )
    if missing:
        raise ReceiverConfigError(
            "no secret in SHIPLEDGER_RECEIVER_SECRETS for receiver(s) "
            + ", ".join(missing)
            + ": set SHIPLEDGER_RECEIVER_SECRETS__<NAME>=..."
        )
    return out
