"""The pre-deploy gate: the stream's rules judged against the live state, now, pure.

Before a deployment starts, a pipeline asks whether it may (`shipledger gate`, `POST /v1/gate`).
The answer is what the stream would find if the deployment started now: the policy rules
(`processors.rules`: ticket, weekly windows, freezes, unknown environment), the change rules
against the change request as it stands now (`processors.change_rules`: unknown, not approved,
outside its window or scope, unattributed manual deploy) and the approvals the policy requires
(`processors.approvals`, four eyes). Every finding blocks, and every one is listed.
Break-glass (`emergency`) passes anyway, is recorded as such and raises a critical alert.

`Gatekeeper` is the `schemas.governance.Governance` the API is given: it holds the policy;
the API reads the change request's events and publishes what comes out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from shipledger.fields import copied, picked
from shipledger.processors.approvals import missing_approvals
from shipledger.processors.change_rules import ChangeContext, judge_change
from shipledger.processors.changes import ChangeRequest, fold
from shipledger.processors.rules import Finding, Subject, judge
from shipledger.processors.step import alert_id
from shipledger.schemas.family_models import ChangeEvent
from shipledger.schemas.governance import (
    BREAK_GLASS,
    MISSING_APPROVALS,
    ApprovalTarget,
    GateDecision,
    GateOutcome,
    GateQuestion,
    GateReason,
)
from shipledger.schemas.models import Alert, new_id
from shipledger.schemas.policy import Policy, Rules
from shipledger.schemas.taxonomy import normalize_environment


def gate_findings(
    subject: Subject, request: ChangeRequest | None, rules: Rules, actor_known: bool = False
) -> list[Finding]:
    """Every finding against a deployment starting at `subject.occurred_at` under `request`
    (None: none reported) and `rules` (`Policy.rules_for(tenant, kind)`); `actor_known`:
    the directory knows the deployer (the caller looked them up, `shipledger.identities`)."""
    findings = judge(subject, rules)
    findings += judge_change(subject, ChangeContext(request, actor_known), rules)
    required = rules.approvals_for(subject.environment, subject.kind)
    approvals = request.approvals if request is not None else ()
    short = missing_approvals(required, approvals, subject.actor, subject.occurred_at)
    if short:
        findings.append(
            Finding(
                MISSING_APPROVALS,
                f"{subject.service} to {subject.environment} lacks approvals: "
                + "; ".join(s.message for s in short),
                {
                    "change_id": subject.change_id or "",
                    "requirements": ",".join(s.requirement for s in short),
                    "approvers": ",".join(a for s in short for a in s.approvers),
                },
            )
        )
    return findings


#: What a gate question says of the deployment, as the judged subject and the decision restate it.
_DEPLOYMENT = ("service", "kind", "change_id", "actor", "trigger")


class Gatekeeper:
    """The gate and the approval checks under one policy (`schemas.governance.Governance`)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    @property
    def policy_version(self) -> str:
        """The policy (version+digest) judging."""
        return self.policy.full_version

    def approval_target(self, tenant: str, events: Sequence[ChangeEvent]) -> ApprovalTarget | None:
        """Who may approve the change request `events` are about, and who raised it; None
        when no event of it reports the request itself (approvals alone do not)."""
        request = fold(events)
        if request is None or request.state is None:
            return None
        latest = request.revisions[-1]
        return copied(
            ApprovalTarget,
            request,
            system=latest.system,
            approving_groups=self.policy.rules_for(tenant).approving_groups(request.environments),
        )

    def decide(
        self,
        question: GateQuestion,
        events: Sequence[ChangeEvent],
        asked_by: str,
        now: datetime,
        actor_known: bool = False,
    ) -> GateOutcome:
        """The gate's answer at `now` (see the module docstring)."""
        tenant = question.tenant or "default"
        env = normalize_environment(question.environment, question.region)
        rules = self.policy.rules_for(tenant, question.kind)
        subject = Subject(
            environment=env.name,
            occurred_at=now,
            tenant=tenant,
            environment_known=env.known,
            **picked(question, *_DEPLOYMENT),
        )
        reasons = [
            GateReason(
                severity=rules.severities.get(f.rule, "medium"),
                **picked(f, "rule", "message", "evidence"),
            )
            for f in gate_findings(subject, fold(events), rules, actor_known)
        ]
        decision_id = new_id()
        alerts: tuple[Alert, ...] = ()
        if question.emergency:
            alerts = (self._break_glass(question, subject, env.region, reasons, decision_id),)
        verdict = "break_glass" if question.emergency else "blocked" if reasons else "allowed"
        decision = GateDecision(
            event_id=decision_id,
            tenant=tenant,
            region=env.region,
            occurred_at=now,
            environment=env.name,
            **picked(question, *_DEPLOYMENT, "source", "attributes", "digest", "deployment_id"),
            asked_by=asked_by,
            decision=verdict,
            reasons=reasons,
            emergency_reason=question.reason,
            alert_id=alerts[0].alert_id if alerts else None,
            policy_version=self.policy_version,
        )
        return GateOutcome(decision, alerts)

    def _break_glass(
        self,
        question: GateQuestion,
        subject: Subject,
        region: str | None,
        reasons: Sequence[GateReason],
        decision_id: str,
    ) -> Alert:
        """The critical alert of a break-glass pass: one per decision (a deterministic id)."""
        blocked_by = ",".join(r.rule for r in reasons)
        detail = f"it was blocked by {blocked_by}" if reasons else "no rule blocked it"
        return Alert(
            alert_id=alert_id(decision_id, BREAK_GLASS),
            rule=BREAK_GLASS,
            severity="critical",
            message=(
                f"{subject.service} to {subject.environment} passed the gate by break-glass "
                f"({detail}): {question.reason}"
            ),
            evidence={
                "reason": question.reason or "",
                "decision_id": decision_id,
                "blocked_by": blocked_by,
                "change_id": subject.change_id or "",
                "kind": subject.kind,
            },
            policy_version=self.policy_version,
            deployment_id=question.deployment_id or decision_id,
            event_id=decision_id,
            region=region,
            **picked(subject, "tenant", "service", "environment", "actor", "occurred_at"),
            detected_at=subject.occurred_at,
        )
