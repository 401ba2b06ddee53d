"""Checkly synthetic checks: the webhook alert channel's payload template of
docs/verification.md, one check result per notification.

Checkly renders the JSON template you give it with its Handlebars variables: ours carries
`{{ALERT_TYPE}}`, `{{ALERT_TITLE}}`, `{{CHECK_ID}}`, `{{CHECK_NAME}}`, `{{CHECK_TYPE}}`,
`{{CHECK_RESULT_ID}}`, `{{RESULT_LINK}}`, `{{STARTED_AT}}`, `{{RUN_LOCATION}}`,
`{{CHECK_ERROR_MESSAGE}}` and `{{TAGS}}`. A result is a `pipeline_finished` signal whose
outcome says how the check ran: a failure (`ALERT_FAILURE`, `ALERT_FAILURE_REMAIN`,
`ALERT_DEGRADED_FAILURE`) `failure`, a recovery (`ALERT_RECOVERY`,
`ALERT_DEGRADED_RECOVERY`) `success`, a degradation (`ALERT_DEGRADED`,
`ALERT_DEGRADED_REMAIN`, `ALERT_FAILURE_DEGRADED`) `degraded`; other types (`ALERT_SSL`,
`NO_ALERT`) are acknowledged and not recorded. `service` and `environment` come from the
check's `service:` and `env:` tags. Checkly does not sign its body: the channel's custom
header `X-Shipledger-Token` (or `Authorization: Bearer`) carries the secret. Event ids derive
from the check result id and the alert type: a retry is the same event.
"""

from __future__ import annotations

from shipledger.producers.webhooks import contract
from shipledger.producers.webhooks.datadog import tags_of
from shipledger.producers.webhooks.monitoring import environment_tag, verify_monitoring
from shipledger.producers.webhooks.payload import opt_str, parse_object, req_str, req_timestamp
from shipledger.producers.webhooks.result import Identified, Parsed, Request
from shipledger.schemas.family_models import CHECK_NAME

_OUTCOMES = {
    **dict.fromkeys(("ALERT_FAILURE", "ALERT_FAILURE_REMAIN", "ALERT_DEGRADED_FAILURE"), "failure"),
    **dict.fromkeys(("ALERT_RECOVERY", "ALERT_DEGRADED_RECOVERY"), "success"),
    **dict.fromkeys(
        ("ALERT_DEGRADED", "ALERT_DEGRADED_REMAIN", "ALERT_FAILURE_DEGRADED"), "degraded"
    ),
}


def verify(request: Request) -> None:
    """Check the token (`X-Shipledger-Token` in the channel's custom headers)."""
    verify_monitoring(request, "checkly")


def parse(request: Request) -> Parsed:
    """Map one Checkly alert notification."""
    data = parse_object(request.body)
    alert_type = req_str(data, "alert_type")
    result_id = req_str(data, "check_result_id")
    outcome = _OUTCOMES.get(alert_type)
    if outcome is None:
        return Parsed.of(alert_type, result_id, f"alert type {alert_type!r} is not recorded")
    name = req_str(data, "check_name")
    tags = tags_of(opt_str(data, "tags"))
    event = contract.signal(
        kind="pipeline_finished",
        occurred_at=req_timestamp(data, "started_at"),
        service=tags.get("service"),
        environment=environment_tag(tags),
        title=opt_str(data, "alert_title") or name,
        external_id=result_id,
        outcome=outcome,
        url=opt_str(data, "result_link"),
        attributes={
            CHECK_NAME: name,
            "checkly.alert_type": alert_type,
            "checkly.check_id": opt_str(data, "check_id"),
            "checkly.check_type": opt_str(data, "check_type"),
            "checkly.run_location": opt_str(data, "run_location"),
            "checkly.error": opt_str(data, "error_message"),
        },
    )
    identity = f"result:{result_id}:{alert_type}"
    return Parsed.of(alert_type, result_id, Identified(identity, [event]))
