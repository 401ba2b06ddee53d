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
from shipledger.producers.webhooks.payload import opt_str, req_str, req_timestamp
from shipledger.producers.webhooks.result import Event, Request
from shipledger.producers.webhooks.route import ByField, Typed
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


def _result(typed: Typed[str]) -> Event:
    data = typed.data
    name = req_str(data, "check_name")
    tags = tags_of(opt_str(data, "tags"))
    return contract.signal(
        kind="pipeline_finished",
        occurred_at=req_timestamp(data, "started_at"),
        service=tags.get("service"),
        environment=environment_tag(tags),
        title=opt_str(data, "alert_title") or name,
        external_id=typed.id,
        outcome=typed.kind,
        url=opt_str(data, "result_link"),
        attributes={
            CHECK_NAME: name,
            **typed.attributes(
                check_id=opt_str(data, "check_id"),
                check_type=opt_str(data, "check_type"),
                run_location=opt_str(data, "run_location"),
                error=opt_str(data, "error_message"),
            ),
        },
    )


#: How dispatch reads one Checkly alert notification (`route.ByField`).
ROUTE = ByField(
    "checkly", "alert_type", "check_result_id", "result:{id}:{event}", _OUTCOMES, _result
)
