"""The receivers and the delivery engine, over real HTTP to the stand-in receivers
(tests/conftest.py `StandInReceivers`, which checks each provider's documented request
shape): tickets opened, transient failures retried with backoff, refusals and exhausted
retries failed, a lost answer not opening a second ticket; and a new kind of receiver is one
small module."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Protocol

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, SecretStr
from standardwebhooks import Webhook

from shipledger.receivers import servicenow, text, webhook
from shipledger.receivers.engine import Deliverer, Outcome, RetryPolicy
from shipledger.receivers.receiver import Delivery, ReceiverKind, Target, Ticket, delivery_id
from shipledger.receivers.registry import KINDS, policy_problems, targets
from shipledger.schemas.policy import PolicyError, parse_policy
from tests.kit import freeze_alert


class StandInReceivers(Protocol):
    """The `receivers` fixture (tests/conftest.py `StandInReceivers`: a stand-in for
    ServiceNow, Jira and a Standard Webhooks receiver, none can be reached from here)."""

    url: str
    secrets: dict[str, str]
    incidents: list[dict[str, Any]]
    issues: list[dict[str, Any]]
    hooks: dict[str, dict[str, Any]]
    problems: list[str]
    requests: list[tuple[str, str]]
    fail: dict[str, list[int]]
    always: dict[str, int]
    drop_answer: dict[str, int]


ALERT = freeze_alert(evidence={"freeze": "year-end", "change_id": "CHG0040001"})


def target(server: StandInReceivers, kind: str, **options: object) -> Target:
    url = server.url + ("/hooks/audit" if kind == "webhook" else "")
    return Target(
        name=f"my-{kind}",
        kind=kind,
        url=url,
        options=KINDS[kind].options.model_validate(options),
        secret=SecretStr(server.secrets[kind]),
    )


class Waits:
    """The engine's sleep, recorded instead of slept (the tests never wait)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=False) as c:
        yield c


def deliverer(client: httpx.Client, waits: Waits, attempts: int = 4) -> Deliverer:
    retry = RetryPolicy(attempts=attempts, backoff_s=0.5, backoff_max_s=4.0, timeout_s=5.0)
    return Deliverer(client, retry, KINDS, sleep=waits)


def deliver(client: httpx.Client, to: Target, waits: Waits | None = None, **kw: int) -> Outcome:
    return deliverer(client, waits or Waits(), **kw).deliver(
        Delivery(ALERT, "prod-governance", to.name), to
    )


def test_servicenow_incident_has_the_documented_shape(
    receivers: StandInReceivers, client: httpx.Client
) -> None:
    to = target(receivers, "servicenow", fields={"assignment_group": "cab-ops"})
    outcome = deliver(client, to)
    assert receivers.problems == []
    assert outcome == Outcome(
        Ticket(
            "INC0010001", f"{receivers.url}/incident.do?sys_id={receivers.incidents[0]['sys_id']}"
        ),
        attempts=1,
        status=201,
    )
    (incident,) = receivers.incidents
    body = incident["body"]
    assert body["correlation_id"] == ALERT.alert_id
    assert (body["urgency"], body["impact"]) == ("1", "1")  # critical: P1
    assert body["assignment_group"] == "cab-ops"
    assert body["short_description"] == text.summary(ALERT)
    assert "Evidence: change_id: CHG0040001" in body["description"]
    # First the lookup by correlation_id, then the create.
    assert receivers.requests == [
        ("GET", "/api/now/table/incident"),
        ("POST", "/api/now/table/incident"),
    ]


def test_a_change_task_goes_to_its_table(receivers: StandInReceivers, client: httpx.Client) -> None:
    to = target(receivers, "servicenow", table="change_task", fields={"change_request": "abc"})
    outcome = deliver(client, to)
    assert receivers.problems == [] and outcome.ticket is not None
    assert outcome.ticket.key == "CTASK0010001"
    assert receivers.incidents[0]["body"]["change_request"] == "abc"


def test_jira_issue_has_the_documented_shape(
    receivers: StandInReceivers, client: httpx.Client
) -> None:
    to = target(receivers, "jira", project="OPS", labels=["governance"])
    outcome = deliver(client, to)
    assert receivers.problems == []
    assert outcome.ticket == Ticket("OPS-1", f"{receivers.url}/browse/OPS-1")
    fields = receivers.issues[0]["body"]["fields"]
    assert fields["project"] == {"key": "OPS"} and fields["issuetype"] == {"name": "Task"}
    assert fields["labels"] == ["shipledger", f"shipledger-{ALERT.alert_id}", "governance"]
    assert fields["description"]["type"] == "doc"
    assert fields["description"]["content"][0]["content"][0]["text"] == ALERT.message


def test_the_webhook_is_signed_per_standard_webhooks(
    receivers: StandInReceivers, client: httpx.Client
) -> None:
    to = target(receivers, "webhook")
    outcome = deliver(client, to)
    assert receivers.problems == []  # the stand-in verified the signature with the library
    assert outcome.ticket is not None and outcome.ticket.key == "HOOK-1"
    (message,) = receivers.hooks.values()
    assert message["alert"]["alert_id"] == ALERT.alert_id
    assert list(receivers.hooks) == [delivery_id("retail", ALERT.alert_id, "my-webhook")]
    # The same message signed with another secret does not verify.
    request = webhook.request(Delivery(ALERT, "r", "my-webhook"), to)
    signed = webhook.StandardWebhookAuth("another secret").auth_flow(request)
    sent = next(signed)
    with pytest.raises(Exception, match="signature"):
        Webhook(receivers.secrets["webhook"]).verify(sent.content, dict(sent.headers))


def test_transient_failures_are_retried_with_capped_jittered_backoff(
    receivers: StandInReceivers, client: httpx.Client
) -> None:
    receivers.fail["/api/now/table/incident"] = [503, 429]  # the lookup, then the create
    waits = Waits()
    outcome = deliver(client, target(receivers, "servicenow"), waits)
    assert outcome.delivered and outcome.attempts == 3 and outcome.status == 201
    assert len(receivers.incidents) == 1
    # Full jitter: attempt n waits at most backoff * 2**(n-1), capped.
    assert len(waits.waits) == 2
    assert 0 <= waits.waits[0] <= 0.5 and 0 <= waits.waits[1] <= 1.0


def test_retry_after_is_honoured_within_the_cap(
    receivers: StandInReceivers, client: httpx.Client
) -> None:
    receivers.always["/rest/api/3/search/jql"] = 503
    waits = Waits()
    deliver(client, target(receivers, "jira", project="OPS"), waits, attempts=2)
    assert waits.waits and waits.waits[0] <= 0.5
    receivers.always.clear()

    def slow_down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "30"}, request=request)

    with httpx.Client(transport=httpx.MockTransport(slow_down)) as mocked:
        waits = Waits()
        outcome = deliver(mocked, target(receivers, "webhook"), waits, attempts=2)
    assert waits.waits == [4.0]  # asked 30 s, capped at backoff_max_s
    assert not outcome.delivered and outcome.status == 429


def test_a_retry_after_of_other_than_ascii_digits_is_ignored(
    receivers: StandInReceivers,
) -> None:
    """A receiver's Retry-After of a superscript two (str.isdigit() takes it, float() does
    not) once escaped the retries as a ValueError: it is no delay, as any unreadable one."""

    def odd(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={b"Retry-After": b"\xb2"}, request=request)

    with httpx.Client(transport=httpx.MockTransport(odd)) as mocked:
        waits = Waits()
        outcome = deliver(mocked, target(receivers, "webhook"), waits, attempts=2)
    assert len(waits.waits) == 1 and waits.waits[0] <= 0.5
    assert not outcome.delivered and outcome.status == 503


def test_a_refusal_is_not_retried(receivers: StandInReceivers, client: httpx.Client) -> None:
    to = target(receivers, "servicenow")
    bad = Target(to.name, to.kind, to.url, to.options, SecretStr("bot:wrong-password"))
    outcome = deliver(client, bad)
    assert not outcome.delivered and outcome.attempts == 1 and outcome.status == 401
    assert outcome.reason is not None and "refused: HTTP 401" in outcome.reason


def test_exhausted_retries_fail_with_the_last_reason(
    receivers: StandInReceivers, client: httpx.Client
) -> None:
    receivers.always["/rest/api/3/issue"] = 500
    outcome = deliver(client, target(receivers, "jira", project="OPS"), attempts=3)
    assert not outcome.delivered and outcome.attempts == 3 and outcome.status == 500
    assert outcome.reason is not None and outcome.reason.startswith("3 attempt(s) failed")
    assert receivers.issues == []


@pytest.mark.parametrize(
    ("kind", "path"), [("servicenow", "/api/now/table/incident"), ("jira", "/rest/api/3/issue")]
)
def test_an_answer_lost_after_the_ticket_was_opened_does_not_open_a_second(
    receivers: StandInReceivers, client: httpx.Client, kind: str, path: str
) -> None:
    receivers.drop_answer[path] = 1  # opened, then the connection dies before the 201
    options = {"project": "OPS"} if kind == "jira" else {}
    outcome = deliver(client, target(receivers, kind, **options))
    assert receivers.problems == []
    assert outcome.delivered and outcome.attempts == 2
    assert outcome.ticket is not None and outcome.ticket.note is not None
    assert "not opened again" in outcome.ticket.note
    assert len(receivers.incidents) + len(receivers.issues) == 1


def test_an_unreadable_answer_to_a_create_is_still_a_delivery(client: httpx.Client) -> None:
    def created(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"result": []}, request=request)
        return httpx.Response(201, text="<html>created</html>", request=request)

    to = Target("snow", "servicenow", "https://snow.example", servicenow.ServiceNowOptions(), None)
    with httpx.Client(transport=httpx.MockTransport(created)) as mocked:
        outcome = deliver(mocked, to)
    assert outcome.delivered and outcome.attempts == 1
    assert outcome.ticket is not None and outcome.ticket.key is None
    assert outcome.ticket.note is not None and "not understood" in outcome.ticket.note


# --- a new kind of receiver is one small module ---------------------------------------------
class ChatOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    channel: str


def chat_request(delivery: Delivery, to: Target) -> httpx.Request:
    channel = to.options.model_dump()["channel"]
    return httpx.Request(
        "POST", to.url, json={"channel": channel, "text": text.summary(delivery.alert)}
    )


def chat_read(response: httpx.Response, to: Target) -> Ticket:
    return Ticket(key=response.json().get("ts"))


#: What #11's Slack, PagerDuty or Opsgenie receiver would be: options, request, answer.
CHAT = ReceiverKind(
    name="chat", options=ChatOptions, request=chat_request, read=chat_read, needs_secret=False
)

CHAT_POLICY = """\
version: chat-1
escalation:
  receivers:
    ops-chat: {{type: chat, url: "{url}", channel: {channel}}}
  routes:
    - {{name: all, receivers: [ops-chat]}}
"""


def test_a_new_kind_of_receiver_is_one_small_module(client: httpx.Client) -> None:
    kinds = {**KINDS, "chat": CHAT}
    posted: list[dict[str, str]] = []

    def chat_service(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(200, json={"ok": True, "ts": "1733.0001"}, request=request)

    url = "https://chat.example.org/api/post"
    # Its options are checked with the rest of the policy, with their line.
    with pytest.raises(PolicyError, match=r"escalation.receivers.ops-chat.channel"):
        parse_policy(
            CHAT_POLICY.format(url=url, channel="[not, a, string]"),
            checks=[lambda p: policy_problems(p, kinds)],
        )
    policy = parse_policy(
        CHAT_POLICY.format(url=url, channel="ops"), checks=[lambda p: policy_problems(p, kinds)]
    )
    (to,) = targets(policy, lambda _name: None, kinds).values()
    with httpx.Client(transport=httpx.MockTransport(chat_service)) as mocked:
        retry = RetryPolicy(attempts=2, backoff_s=0.1, backoff_max_s=0.1, timeout_s=1.0)
        outcome = Deliverer(mocked, retry, kinds, sleep=Waits()).deliver(
            Delivery(ALERT, "all", "ops-chat"), to
        )
    assert outcome.ticket == Ticket(key="1733.0001")
    assert posted == [{"channel": "ops", "text": text.summary(ALERT)}]
