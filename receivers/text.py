"""How an alert reads in a ticket: one summary line and the facts, for every kind. Pure."""

from __future__ import annotations

from shipledger.schemas.models import Alert

#: ServiceNow's short_description holds 160 characters, Jira's summary 255.
SUMMARY_MAX = 160


def clip(line: str, limit: int) -> str:
    """`line`, cut to at most `limit` characters (an ellipsis marks the cut)."""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def summary(alert: Alert, limit: int = SUMMARY_MAX) -> str:
    """One line: rule, severity, service and environment (at most `limit` characters); a
    resolution says so first."""
    line = (
        f"shipledger {alert.severity}: {alert.rule} - {alert.service} in {alert.environment}"
        f" ({alert.tenant})"
    )
    if alert.kind == "resolution":
        line = "RESOLVED " + line
    return clip(line, limit)


def facts(alert: Alert) -> list[tuple[str, str]]:
    """The alert's facts as (label, value), evidence last, in a stable order."""
    rows = [
        ("Rule", alert.rule),
        ("Severity", alert.severity),
        ("Tenant", alert.tenant),
        ("Service", alert.service),
        ("Environment", alert.environment),
        ("Region", alert.region or "-"),
        ("Deployment", alert.deployment_id),
        ("Actor", alert.actor),
        ("Occurred at", alert.occurred_at.isoformat()),
        ("Policy", alert.policy_version),
        ("Alert id", alert.alert_id),
    ]
    return rows + [(f"Evidence: {key}", value) for key, value in sorted(alert.evidence.items())]


def description(alert: Alert) -> str:
    """The message, then one `label: value` line per fact (plain text)."""
    lines = [alert.message, ""] + [f"{label}: {value}" for label, value in facts(alert)]
    return "\n".join(lines)


def clean(value: str | None, limit: int = 1000) -> str | None:
    """A receiver's text (a ticket key, an error body) fit for the ledger: control characters
    but tab and newline replaced, at most `limit` characters. Receivers answer what they like."""
    if value is None:
        return None
    kept = "".join(ch if ch.isprintable() or ch in "\t\n" else "?" for ch in value)
    return kept if len(kept) <= limit else kept[: limit - 1] + "…"
