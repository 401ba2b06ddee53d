"""The pre-deploy gate: the stream's rules judged against the live state, now, pure.

Before a deployment starts, a pipeline asks whether it may (`shipledger gate`, `POST /v1/gate`).
The answer is what the stream would find if the deployment started now: the policy rules
(`processors.rules`: ticket, weekly windows, freezes, unknown environment), the change rules
against the change request as it stands now (`processors.change_rules`: unknown, not approved,
outside its window or scope, unattributed manual deploy), the approvals the policy requires
(`processors.approvals`, four eyes) and the artifact rules against the builds the ledger holds
(`processors.artifact_rules`: digest missing, mismatching its build, or never built by a
trusted builder). Every finding blocks, and every one is listed.
Break-glass (`emergency`) passes anyway, is recorded as such and raises a critical alert.

`Gatekeeper` is the `schemas.governance.Governance` the API is given: it holds the policy;
the API reads the change request's events and publishes what comes out.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from shipledger.fields import copied, picked
from shipledger.processors.approvals import missing_approvals
from shipledger.processors.artifact_rules import Built, judge_artifact
from shipledger.processors.change_rules import ChangeContext, judge_change
from shipledger.processors.changes import ChangeRequest, fold
from shipledger.processors.rules import Finding, Subject, judge
from shipledger.processors.step import alert_id
from shipledger.schemas.family_models import ArtifactEvent, ChangeEvent
from shipledger.schemas.governance import (
    BREAK_GLASS,
    MISSING_APPROVALS,
    ApprovalTarget,
    ArtifactInUse,
    GateDecision,
    GateOutcome,
    GateQuestion,
    GateReason,
)
from shipledger.schemas.models import Alert, new_id
from shipledger.schemas.policy import Policy, Rules
from shipledger.schemas.taxonomy import normalize_environment


def gate_findings(
    subject: Subject,
    request: ChangeRequest | None,
    rules: Rules,
    actor_known: bool = False,
    builds: Collection[Built] = (),
) -> list[Finding]:
    """Every finding against a deployment starting at `subject.occurred_at` under `request`
    (None: none reported) and `rules` (`Policy.rules_for(tenant, kind)`); `actor_known`:
    the directory knows the deployer (the caller looked them up, `shipledger.identities`);
    `builds`: the builds of its artifact name and digest (`processors.artifact_rules`)."""
    findings = judge(subject, rules) + judge_artifact(subject, builds, rules)
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


#: The rule of the alert a registry's deletion of a running artifact raises.
RUNNING_ARTIFACT_DELETED = "running_artifact_deleted"
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
        builds: Sequence[ArtifactEvent] = (),
    ) -> GateOutcome:
        """The gate's answer at `now` (see the module docstring); `builds`: the artifact
        events of its artifact name and digest (only the `published` ones count)."""
        tenant = question.tenant or "default"
        env = normalize_environment(question.environment, question.region)
        rules = self.policy.rules_for(tenant, question.kind)
        subject = Subject(
            environment=env.name,
            occurred_at=now,
            tenant=tenant,
            environment_known=env.known,
            artifact_digest=question.digest,
            **picked(question, *_DEPLOYMENT, "artifact_name", "version"),
        )
        reasons = [
            GateReason(
                severity=rules.severities.get(f.rule, "medium"),
                **picked(f, "rule", "message", "evidence"),
            )
            for f in gate_findings(
                subject,
                fold(events),
                rules,
                actor_known,
                [Built.of(b) for b in builds if b.action == "published"],
            )
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

    def rollback_reach(self, tenant: str) -> int:
        """The policy's `artifact_rollback_reach` for `tenant`."""
        return self.policy.rules_for(tenant).artifact_rollback_reach

    def deletion_alerts(
        self, deleted: ArtifactEvent, in_use: Sequence[ArtifactInUse], now: datetime
    ) -> list[Alert]:
        """One `running_artifact_deleted` alert per running deployment of `in_use` that ships
        the artifact a registry deleted (`deleted`): ids derive from the deletion event and
        the deployment, so a redelivered deletion raises nothing new."""
        return [
            _deletion_alert(self.policy, deleted, used, now)
            for used in in_use
            if used.running and used.tenant == deleted.tenant and used.ships(deleted)
        ]

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


def _deletion_alert(
    policy: Policy, deleted: ArtifactEvent, used: ArtifactInUse, now: datetime
) -> Alert:
    rule = RUNNING_ARTIFACT_DELETED
    what = deleted.digest or f"{deleted.artifact_name}:{deleted.version}"
    how = " by its retention policy" if deleted.action == "retention_deleted" else ""
    return Alert(
        alert_id=alert_id(f"{deleted.event_id}/{used.deployment_id}", rule),
        rule=rule,
        severity=policy.rules_for(used.tenant).severities.get(rule, "high"),
        message=(
            f"{deleted.registry or 'the registry'} deleted {what}{how} while {used.service} "
            f"runs it in {used.environment} "
            f"(deployment {used.deployment_id}): a restart or scale-out cannot pull it"
        ),
        evidence={
            "artifact_name": deleted.artifact_name,
            "version": deleted.version or "",
            "digest": deleted.digest or "",
            "registry": deleted.registry or "",
            "deletion_event_id": deleted.event_id,
            "deletion_action": deleted.action,
            "deployment_started_at": used.started_at.isoformat(),
        },
        policy_version=policy.full_version,
        event_id=deleted.event_id,
        **picked(used, "deployment_id", "tenant", "service", "environment", "region", "team"),
        # Who deleted it is the registry's to say (attributes); the alert names the channel.
        actor=deleted.source or "registry",
        occurred_at=deleted.occurred_at,
        detected_at=now,
    )
