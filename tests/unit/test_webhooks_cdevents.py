"""CDEvents over CloudEvents (binary and structured mode) onto the contract families."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from shipledger.producers.webhooks import WebhookAuthError, WebhookPayloadError, dispatch
from tests.webhook_kit import SECRET, Check, Deliver, RawRequest, Sign

SERVICE_SHA = "5f3a1c9e8d7b6a5f4e3d2c1b0a9f8e7d6c5b4a39"
DIGEST = "sha256:0b31b1c02ff458ad9b7b81cbdf8f028bd54699fa151f221d1e8de6817db93427"


@pytest.mark.parametrize("fixture", ["service_deployed_binary", "service_upgraded_structured"])
def test_service_deployed_and_upgraded(
    deliver: Deliver, check_contract: Check, fixture: str
) -> None:
    result = deliver("cdevents", fixture)
    assert result.event_type.startswith("dev.cdevents.service.")
    assert result.delivery_id is not None and result.delivery_id.startswith("/tekton/prod-cluster#")
    [mapped] = result.events
    event = check_contract(mapped)
    assert (event["event_type"], event["kind"]) == ("succeeded", "release")
    assert (event["service"], event["environment"]) == ("payments", "production")
    assert event["commit_sha"] == SERVICE_SHA  # customData.commitSha
    # From the artifactId purl: an OCI purl's version is the digest, the tag a qualifier.
    assert (event["artifact_name"], event["artifact_digest"], event["version"]) == (
        "payments-api",
        DIGEST,
        "v2.4.0",
    )
    assert (event["actor"], event["repository"]) == (
        "release-bot",
        "https://github.com/acme/payments-api",
    )
    assert event["source"] == "webhook:cdevents"


def test_service_rolledback_commit_from_the_purl_vcs_url(
    deliver: Deliver, check_contract: Check
) -> None:
    [mapped] = deliver("cdevents", "service_rolledback_binary").events
    event = check_contract(mapped)
    assert (event["event_type"], event["kind"]) == ("rolled_back", "rollback")
    assert event["commit_sha"] == "e1d2c3b4a5968778695a4b3c2d1e0f9a8b7c6d5e"
    assert event["repository"] == "https://github.com/acme/payments-api"
    assert event["version"] == "v2.3.9"
    assert event["actor"] == "/tekton/prod-cluster"  # no customData.actor: the emitter


@pytest.mark.parametrize(
    "fixture", ["service_deployed_spec_example", "service_deployed_v05_spec_example"]
)
def test_spec_example_without_a_commit_is_recorded_and_flagged(
    deliver: Deliver, check_contract: Check, fixture: str
) -> None:
    """The spec's own example (0.4 and 0.5 shapes) carries no commit: a stock producer's
    deployment is recorded with the commit declared missing, not refused."""
    [mapped] = deliver("cdevents", fixture).events
    event = check_contract(mapped)
    assert event["commit_sha"] == "" and event["missing_metadata"] == ["commit_sha"]
    assert (event["service"], event["environment"]) == ("mySubject123", "test123")
    assert event["artifact_digest"] == DIGEST


def test_cdevents_05_uri_is_read_like_the_04_url(deliver: Deliver, check_contract: Check) -> None:
    """CDEvents 0.5 renamed subject.content.url to uri: both land in `url`."""
    [environment] = deliver("cdevents", "environment_created_v05_structured").events
    assert check_contract(environment)["url"] == "https://example.org/testEnv"
    [run] = deliver("cdevents", "pipelinerun_finished_v05_binary").events
    assert check_contract(run)["url"] == "https://www.example.com/mySubject123"


def test_replayed_cdevent_under_a_new_cloudevent_id_has_the_same_ids(
    webhook_request: RawRequest,
) -> None:
    """Ids come from the CDEvent's context.id, not the (unsigned) ce-id header."""
    headers, body = webhook_request("cdevents", "service_deployed_binary")
    first = dispatch("cdevents", headers, body, secret=SECRET, tenant="acme")
    headers["ce-id"] = "a-new-cloudevent-id"
    second = dispatch("cdevents", headers, body, secret=SECRET, tenant="acme")
    assert first.delivery_id != second.delivery_id
    assert first.events[0].event["event_id"] == second.events[0].event["event_id"]


@pytest.mark.parametrize(
    ("fixture", "action"),
    [("environment_created_structured", "created"), ("environment_modified_binary", "modified")],
)
def test_environment(deliver: Deliver, check_contract: Check, fixture: str, action: str) -> None:
    [mapped] = deliver("cdevents", fixture).events
    assert mapped.family == "catalog"
    event = check_contract(mapped)
    assert (event["entity"], event["action"], event["name"]) == (
        "environment",
        action,
        "prod-eu-west-1",
    )
    assert event["url"] == "https://k8s.eu-west-1.acme.example"


def test_environment_deleted_is_removed(deliver: Deliver, check_contract: Check) -> None:
    def deleted(envelope: dict[str, Any]) -> None:
        envelope["type"] = envelope["data"]["context"]["type"] = (
            "dev.cdevents.environment.deleted.0.2.0"
        )

    [mapped] = deliver("cdevents", "environment_created_structured", deleted).events
    assert check_contract(mapped)["action"] == "removed"


def test_change_merged(deliver: Deliver, check_contract: Check) -> None:
    [mapped] = deliver("cdevents", "change_merged_binary").events
    event = check_contract(mapped)
    assert (event["kind"], event["repository"]) == ("pull_request_merged", "acme/payments-api")
    assert (event["pull_request_number"], event["commit_sha"]) == (1347, SERVICE_SHA)
    assert event["merged_by"] == "octocat"


def test_artifact_published(deliver: Deliver, check_contract: Check) -> None:
    [mapped] = deliver("cdevents", "artifact_published_structured").events
    assert mapped.family == "artifact"
    event = check_contract(mapped)
    assert (event["artifact_name"], event["version"], event["digest"]) == (
        "payments-api",
        "v2.4.0",
        DIGEST,
    )
    assert event["repository"] == "ghcr.io/acme/payments-api"
    assert event["commit_sha"] == SERVICE_SHA  # from the vcs_url qualifier
    assert event["builder"] == "release-bot"
    assert event["attributes"]["sbom"].endswith("v2.4.0.spdx.json")


def test_artifact_published_golang_purl(deliver: Deliver, check_contract: Check) -> None:
    def golang(body: dict[str, Any]) -> None:
        body["data"]["subject"]["id"] = "pkg:golang/mygit.com/myorg/myapp@234fd47e07d1004f0aed9c"

    [mapped] = deliver("cdevents", "artifact_published_structured", golang).events
    event = check_contract(mapped)
    assert (event["artifact_name"], event["version"], event["digest"]) == (
        "mygit.com/myorg/myapp",
        "234fd47e07d1004f0aed9c",
        None,
    )


def test_pipelinerun_finished(deliver: Deliver, check_contract: Check) -> None:
    [mapped] = deliver("cdevents", "pipelinerun_finished_binary").events
    assert mapped.family == "signal"
    event = check_contract(mapped)
    assert (event["kind"], event["outcome"], event["title"]) == (
        "pipeline_finished",
        "failure",
        "payments-release",
    )
    assert event["external_id"] == "payments-release-run-8f2k1"


@pytest.mark.parametrize("fixture", ["service_removed_binary", "taskrun_started_binary"])
def test_ignored(deliver: Deliver, fixture: str) -> None:
    result = deliver("cdevents", fixture)
    assert result.events == [] and result.ignored


def test_not_a_cdevent_ignored(webhook_request: RawRequest) -> None:
    headers, body = webhook_request("cdevents", "taskrun_started_binary")
    headers["ce-type"] = "com.example.object.deleted.v2"
    result = dispatch("cdevents", headers, body, secret=SECRET, tenant="acme")
    assert result.ignored == "CloudEvent type 'com.example.object.deleted.v2' is not a CDEvent"


def test_structured_data_base64(webhook_request: RawRequest, check_contract: Check) -> None:
    headers, body = webhook_request("cdevents", "service_upgraded_structured")
    envelope = json.loads(body)
    envelope["data_base64"] = base64.b64encode(json.dumps(envelope.pop("data")).encode()).decode()
    result = dispatch(
        "cdevents", headers, json.dumps(envelope).encode(), secret=SECRET, tenant="acme"
    )
    assert check_contract(result.events[0])["commit_sha"] == SERVICE_SHA


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: h.pop("ce-specversion"), "not a CloudEvent"),
        (lambda h: h.pop("ce-id"), "ce-id: required"),
        (
            lambda h: h.update({"Content-Type": "application/cloudevents-batch+json"}),
            "batch: must be a non-empty JSON array",
        ),
        (lambda h: h.update({"ce-specversion": "0.1"}), "ce-\\* headers: not a valid CloudEvent"),
    ],
)
def test_bad_cloudevents(
    webhook_request: RawRequest, change: Callable[[dict[str, str]], object], message: str
) -> None:
    headers, body = webhook_request("cdevents", "service_deployed_binary")
    change(headers)
    with pytest.raises(WebhookPayloadError, match=message):
        dispatch("cdevents", headers, body, secret=SECRET, tenant="acme")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("time", [None, None], r"^CloudEvent\.time: must be a string, got list"),
        ("time", None, r"^CloudEvent\.time: must be a string, got NoneType"),
        ("time", "yesterday", r"^CloudEvent: unreadable CloudEvent"),
        ("datacontentencoding", 7, r"^CloudEvent\.datacontentencoding: must be a string"),
        ("specversion", {"a": 1}, r"^CloudEvent\.specversion: must be a string, got dict"),
        ("data_base64", ["x"], r"^CloudEvent\.data_base64: must be a string, got list"),
    ],
)
def test_structured_attributes_of_the_wrong_type_are_named(
    webhook_request: RawRequest, name: str, value: object, message: str
) -> None:
    """The SDK calls string methods on these unchecked: a list `time` was an AttributeError
    inside dateutil (found by the fuzz test in CI), not a 400."""
    headers, body = webhook_request("cdevents", "service_upgraded_structured")
    envelope = json.loads(body)
    envelope[name] = value
    with pytest.raises(WebhookPayloadError, match=message):
        dispatch("cdevents", headers, json.dumps(envelope).encode(), secret=SECRET, tenant="acme")


def test_bad_purl_named(deliver: Deliver) -> None:
    def bad(body: dict[str, Any]) -> None:
        body["subject"]["content"]["artifactId"] = "myapp:1.0"

    with pytest.raises(
        WebhookPayloadError, match=r"^subject\.content\.artifactId: not a valid purl"
    ):
        deliver("cdevents", "service_deployed_binary", bad)


def test_redelivery_and_token(webhook_request: RawRequest) -> None:
    headers, body = webhook_request("cdevents", "service_deployed_binary")
    ids = {
        dispatch("cdevents", headers, body, secret=SECRET, tenant="acme")
        .events[0]
        .event["event_id"]
        for _ in range(2)
    }
    assert len(ids) == 1
    headers["X-Shipledger-Token"] = "guess"
    with pytest.raises(WebhookAuthError):
        dispatch("cdevents", headers, body, secret=SECRET, tenant="acme")


def test_batched_mode_maps_each_cloudevent(webhook_request: RawRequest, sign: Sign) -> None:
    """A batch (`application/cloudevents-batch+json`) carries several CloudEvents: each is
    mapped as if sent alone (same event ids), those not recorded are skipped."""
    envelopes = []
    singles = []
    for name in ("service_upgraded_structured", "artifact_published_structured"):
        headers, body = webhook_request("cdevents", name)
        envelopes.append(json.loads(body))
        singles += dispatch("cdevents", headers, body, secret=SECRET, tenant="acme").events
    not_recorded = {**envelopes[0], "id": "x-1", "type": "com.example.object.deleted.v2"}
    batch = json.dumps([envelopes[0], not_recorded, envelopes[1]]).encode()
    headers = sign(
        "cdevents", {"Content-Type": "application/cloudevents-batch+json"}, batch, SECRET
    )
    result = dispatch("cdevents", headers, batch, secret=SECRET, tenant="acme")
    assert result.event_type == "batch of 3 CloudEvents"
    assert [m.event["event_id"] for m in result.events] == [m.event["event_id"] for m in singles]
    assert [m.family for m in result.events] == ["deployment", "artifact"]


def test_a_batch_of_nothing_recorded_is_ignored(sign: Sign) -> None:
    envelope = {
        "specversion": "1.0",
        "id": "1",
        "source": "/s",
        "type": "com.example.x",
        "data": {},
    }
    batch = json.dumps([envelope]).encode()
    headers = sign(
        "cdevents", {"Content-Type": "application/cloudevents-batch+json"}, batch, SECRET
    )
    result = dispatch("cdevents", headers, batch, secret=SECRET, tenant="acme")
    assert result.events == [] and result.ignored == (
        "CloudEvent type 'com.example.x' is not a CDEvent"
    )
