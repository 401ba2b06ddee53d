"""How an alert reads in a ticket: one summary line and the facts, for every kind. Pure."""

from __future__ import annotations

from shipledger.schemas.models import Alert

#: ServiceNow's short_description holds 160 characters, Jira's summary 255.
SUMMARY_MAX = 160


def summary(alert: Alert) -> str:
    """One line: rule, severity, service and environment (at most SUMMARY_MAX characters)."""
    line = (
        f"shipledger {alert.severity}: {alert.rule} - {alert.service} in {alert.environment}"
        f" ({alert.tenant})"
    )
    return line if len(line) <= SUMMARY_MAX else line[: SUMMARY_MAX - 1] + "…"


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
