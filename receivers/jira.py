"""Jira Cloud: an issue per alert, through REST API v3.

Create: `POST {url}/rest/api/3/issue` with basic authentication (`email:api-token`), JSON
`{"fields": {"project": {"key"}, "summary", "issuetype": {"name"}, "description", "labels"}}`
where the description is an Atlassian Document Format document (`{"type": "doc", "version":
1, "content": [...]}`: the alert's message, then its facts as a bullet list) and the labels
carry `shipledger` and `shipledger-<alert id>`, plus the receiver's own `labels` and `fields`
(e.g. `priority`, `components`). Jira answers 201 with `{"id", "key", "self"}`: the ticket
key is the issue key, the link `{url}/browse/{key}`.

Idempotency: Jira has no idempotency key for issue creation. Before creating, the engine
searches `GET {url}/rest/api/3/search/jql?jql=project = "<key>" AND labels =
"shipledger-<alert id>"` and takes the issue it finds. Jira's search is eventually
consistent (an issue created a moment ago may not be found yet), so the local record of
deliveries, not this search, is what stops an immediate replay; the search covers a record
lost with its machine.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shipledger.receivers import text
from shipledger.receivers.receiver import (
    Delivery,
    ReceiverKind,
    Target,
    Ticket,
    answer_ticket,
    basic_auth,
    found_under,
    json_request,
    not_ours,
    options_of,
)

_OURS = frozenset({"project", "summary", "issuetype", "description", "labels"})


class JiraOptions(BaseModel):
    """`project`: the project key; `issue_type` (default Task); more `labels`; `fields`:
    more fields of the issue, as Jira's create request takes them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,254}$")
    issue_type: str = Field(default="Task", min_length=1)
    labels: list[str] = Field(default_factory=list)
    fields: Annotated[dict[str, Any], not_ours(_OURS, "use the options above")] = Field(
        default_factory=dict
    )

    @field_validator("labels")
    @classmethod
    def _no_spaces(cls, value: list[str]) -> list[str]:
        bad = [label for label in value if not label or re.search(r"\s", label)]
        if bad:
            raise ValueError(f"Jira labels cannot be empty or contain spaces: {bad}")
        return value


def correlation_label(alert_id: str) -> str:
    """The label that names the alert on its issue (labels hold no whitespace)."""
    return "shipledger-" + re.sub(r"\s+", "-", alert_id)


def _text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def _paragraph(*content: dict[str, Any]) -> dict[str, Any]:
    return {"type": "paragraph", "content": list(content)}


def document(delivery: Delivery) -> dict[str, Any]:
    """The issue's description in Atlassian Document Format: the message, then the facts."""
    alert = delivery.alert
    items = [
        {
            "type": "listItem",
            "content": [
                _paragraph({**_text(f"{label}: "), "marks": [{"type": "strong"}]}, _text(value))
            ],
        }
        for label, value in text.facts(alert)
    ]
    return {
        "type": "doc",
        "version": 1,
        "content": [_paragraph(_text(alert.message)), {"type": "bulletList", "content": items}],
    }


def request(delivery: Delivery, target: Target) -> httpx.Request:
    """The issue of `delivery`."""
    options = options_of(target, JiraOptions)
    labels = ["shipledger", correlation_label(delivery.alert.alert_id), *options.labels]
    fields = {
        **options.fields,
        "project": {"key": options.project},
        "summary": text.summary(delivery.alert),
        "issuetype": {"name": options.issue_type},
        "description": document(delivery),
        "labels": labels,
    }
    return json_request("POST", f"{target.url}/rest/api/3/issue", body={"fields": fields})


def _ticket(issue: object, target: Target) -> Ticket:
    if not isinstance(issue, dict) or not issue.get("key"):
        raise ValueError("no issue key in the answer")
    key = str(issue["key"])
    return Ticket(key=key, url=f"{target.url}/browse/{key}")


def _jql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def find(delivery: Delivery, target: Target) -> httpx.Request:
    """The project's issues labelled with the alert id (enhanced JQL search)."""
    project = options_of(target, JiraOptions).project
    label = correlation_label(delivery.alert.alert_id)
    return json_request(
        "GET",
        f"{target.url}/rest/api/3/search/jql",
        params={
            "jql": f"project = {_jql_string(project)} AND labels = {_jql_string(label)}",
            "fields": "key",
            "maxResults": "1",
        },
    )


KIND = ReceiverKind(
    name="jira",
    options=JiraOptions,
    request=request,
    # The issue Jira created (`{"id", "key", "self"}`).
    read=answer_ticket(_ticket),
    find=find,
    # The first issue of the search (`{"issues": [...]}`).
    found=found_under("issues", _ticket, "its label"),
    auth=basic_auth,
)
