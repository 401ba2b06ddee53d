"""A stored deployment judged again because the change request it names changed, pure.

Change requests and approvals arrive late and out of order. When one changes (a new state, a
late approval, a rescheduled window), each deployment naming it is judged again by the change
rules (`processors.rejudge`) against the request as it stood at the deployment's start, and
the difference with the alerts that hold is emitted:

- a rule that fires and holds no alert: a new alert. Its id is the one the first judgement
  would have given (`alert_id(first event, rule)`), or, for a rule whose earlier alert was
  resolved, the next generation: an alert is never raised twice;
- an alert that no longer holds: a **resolution**, a new alert-topic row (`kind =
  'resolution'`) naming it in `resolves` with the reason; the alert itself is never edited;
- a new record version (`seq` + 1, same `event_count`) when the rules that hold or the change
  facts (state at the start, planned window, actual-versus-scheduled difference) changed.

Every id is deterministic, so emitting the same outcome again (a redone batch, a sweep after a
restart) adds nothing to the ledger.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from shipledger.fields import copied
from shipledger.processors.change_rules import CHANGE_RULE_NAMES
from shipledger.processors.enrichment import Lookups
from shipledger.processors.rejudge import Rejudgement, Resolution, rejudge
from shipledger.processors.rules import Finding, Subject
from shipledger.processors.step import (
    alert_id,
    build_alert,
    change_facts,
    judged_context,
    nobody_known,
    resolution_id,
)
from shipledger.schemas.models import Alert, DeploymentRecord
from shipledger.schemas.policy import Policy, Rules

_RECORD_NS = uuid.UUID("0c5b7e1d-6f4a-4e8b-9d2c-3a1f5e7b9c42")


@dataclass(frozen=True)
class Rejudged:
    """What a re-judgement emits: a new record version (None: nothing changed on it), the
    alerts raised and the resolutions of alerts that no longer hold."""

    record: DeploymentRecord | None = None
    alerts: tuple[Alert, ...] = ()
    resolutions: tuple[Alert, ...] = ()

    @property
    def empty(self) -> bool:
        """Whether there is nothing to emit."""
        return self.record is None and not self.alerts and not self.resolutions


def subject_of(record: DeploymentRecord) -> Subject:
    """What the change rules look at, from a stored record: the deployment as it started."""
    return copied(Subject, record, occurred_at=record.started_at)


def rejudge_stored(
    record: DeploymentRecord,
    judged_event: str,
    holding: Mapping[str, str],
    raised: Mapping[str, int],
    view: Lookups,
    policy: Policy,
    now: datetime,
    known_actor: Callable[[str], bool] = nobody_known,
) -> Rejudged:
    """Judge the deployment of `record` (latest version; first event `judged_event`) again
    against `view` and the directory `known_actor` asks. `holding`: change rule -> id of its
    alert that holds; `raised`: change rule -> how many alerts of it were raised so far (see
    the module docstring)."""
    rules = policy.rules_for(record.tenant, record.kind)
    request = view.change(record.tenant, record.change_id) if record.change_id else None
    subject = subject_of(record)
    verdict = rejudge(
        subject,
        [Finding(rule, "") for rule in holding],
        judged_context(subject, request, known_actor),
        rules,
    )
    alert_rules = _rules_that_hold(record, holding, verdict)
    facts = change_facts(record.started_at, request)
    current = {name: getattr(record, name) for name in facts}
    new: DeploymentRecord | None = None
    if alert_rules != record.alert_rules or facts != current:
        seq = record.seq + 1
        new = record.model_copy(
            update={
                "record_id": rejudged_record_id(record, seq, alert_rules, facts),
                "seq": seq,
                "alert_rules": alert_rules,
                "policy_version": policy.full_version,
                "updated_at": now,
                **facts,
            }
        )
    alerts = tuple(
        build_alert(
            f,
            rules,
            policy,
            record,
            judged_event,
            alert_id(judged_event, f.rule, raised.get(f.rule, 0) + 1),
            now,
        )
        for f in verdict.raised
    )
    resolutions = tuple(
        resolution(r, holding[r.rule], rules, policy, record, judged_event, now)
        for r in verdict.resolved
    )
    return Rejudged(new, alerts, resolutions)


def _rules_that_hold(
    record: DeploymentRecord, holding: Mapping[str, str], verdict: Rejudgement
) -> list[str]:
    """The record's rules after `verdict`: its other rules as they were, and of the change
    rules those whose alert holds, not those the record named. The two agree, except after a
    kill -9 that stored a re-judgement's alerts but not its record version (the sink writes
    table by table): the record then names a resolved rule and lacks the raised one, the
    alerts raise and resolve nothing more, and only this mends the record."""
    gone = {r.rule for r in verdict.resolved}
    holds = [rule for rule in holding if rule not in gone]
    holds += [f.rule for f in verdict.raised if f.rule not in holds]
    rules = [r for r in record.alert_rules if r not in CHANGE_RULE_NAMES or r in holds]
    return rules + [rule for rule in holds if rule not in rules]


def resolution(
    resolved: Resolution,
    resolved_id: str,
    rules: Rules,
    policy: Policy,
    record: DeploymentRecord,
    judged_event: str,
    now: datetime,
) -> Alert:
    """The resolution row of alert `resolved_id` (rule `resolved.rule`) and why."""
    finding = Finding(
        resolved.rule,
        f"{resolved.rule} no longer holds: {resolved.reason}",
        {"resolves": resolved_id, "reason": resolved.reason, "change_id": record.change_id or ""},
    )
    row = build_alert(finding, rules, policy, record, judged_event, resolution_id(resolved_id), now)
    return row.model_copy(update={"kind": "resolution", "resolves": resolved_id})


def rejudged_record_id(
    record: DeploymentRecord, seq: int, alert_rules: list[str], facts: Mapping[str, object]
) -> str:
    """The id of a record version made by a re-judgement: derived from what it says, so the
    same outcome emitted again is the same record."""
    content = json.dumps(
        [record.tenant, record.deployment_id, seq, alert_rules, facts], default=str
    )
    return str(uuid.uuid5(_RECORD_NS, content))
