"""Registry webhooks (Harbor, Artifactory, GitHub Packages) mapped onto artifact events, from
fixtures copied from each provider's documented payloads (tests/fixtures/webhooks/README.md);
bad payloads are refused naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from shipledger.producers.webhooks import WebhookPayloadError
from shipledger.schemas.family_models import ArtifactEvent
from tests.webhook_kit import Deliver


def artifacts(deliver: Deliver, provider: str, name: str, **kwargs: Any) -> list[ArtifactEvent]:
    result = deliver(provider, name, **kwargs)
    assert result.ignored is None, result.ignored
    assert {m.family for m in result.events} == {"artifact"}
    return [ArtifactEvent.model_validate(m.event) for m in result.events]


#: The digest Artifactory's docker push names (its delete names it again).
ARTIFACTORY_DIGEST = "sha256:35c4a2c15539c6c1e4e5fa4e554dac323ad0107d8eb5c582d6ff386b383b7dce"


@pytest.mark.parametrize(
    ("provider", "fixture", "fields"),
    [
        (
            "harbor",
            "push_artifact",
            {
                "artifact_name": "harbor/alpine",
                "version": "3.8",
                "builder": "harbor-jobservice",  # its pusher
                "digest": "sha256:954b378c375d852eb3c63ab88978f640b4348b01c1b3456a024a81536dafbbf4",
                "registry": "localhost",
                "source": "webhook:harbor",
            },
        ),
        (
            "artifactory",
            "docker_pushed",
            {
                "artifact_name": "library/checkout",
                "version": "2.14.0",
                "builder": "ci-bot",
                "digest": ARTIFACTORY_DIGEST,
                "registry": "acme.jfrog.io",
            },
        ),
        (
            "github",
            "package_published",
            {
                "artifact_name": "codertocat/hello-world",
                "version": "nightly",
                "builder": "Codertocat",
                "digest": "sha256:3da1996a8115d7616457760d9920b815241d0a03b34cf5f04e9a0e9d8de37498",
                "commit_sha": "6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b",
            },
        ),
    ],
    ids=["harbor", "artifactory", "github"],
)
def test_a_pushed_or_published_package_is_a_build(
    deliver: Deliver, provider: str, fixture: str, fields: dict[str, str]
) -> None:
    [event] = artifacts(deliver, provider, fixture)
    assert event.action == "published"
    assert {name: getattr(event, name) for name in fields} == fields


def test_harbor_delete_and_retention(deliver: Deliver) -> None:
    [deleted] = artifacts(deliver, "harbor", "delete_artifact")
    assert (deleted.action, deleted.artifact_name, deleted.version, deleted.builder) == (
        "deleted",
        "harbor/alpine",
        "3.8",
        None,
    )
    assert deleted.digest is not None
    [retained] = artifacts(deliver, "harbor", "tag_retention")
    assert (retained.action, retained.artifact_name, retained.version, retained.digest) == (
        "retention_deleted",
        "harbor/alpine",
        "3.8",
        None,
    )
    assert retained.attributes["harbor.retention_policy_id"] == "2"


def test_harbor_redelivery_has_the_same_ids(deliver: Deliver) -> None:
    first = deliver("harbor", "delete_artifact").events[0].event["event_id"]
    assert deliver("harbor", "delete_artifact").events[0].event["event_id"] == first


def test_harbor_other_types_are_acknowledged_not_recorded(deliver: Deliver) -> None:
    result = deliver("harbor", "pull_artifact")
    assert result.events == []
    assert result.ignored == "event type 'PULL_ARTIFACT' is not recorded"


def test_artifactory_docker_deleted(deliver: Deliver) -> None:
    [deleted] = artifacts(deliver, "artifactory", "docker_deleted")
    assert (deleted.action, deleted.digest, deleted.builder) == (
        "deleted",
        ARTIFACTORY_DIGEST,
        None,
    )
    assert deliver("artifactory", "docker_promoted").ignored == (
        "event 'docker.promoted' is not recorded"
    )


def test_github_package_updated_is_not_recorded(deliver: Deliver) -> None:
    def updated(body: dict[str, Any]) -> None:
        body["action"] = "updated"

    result = deliver("github", "package_published", updated)
    assert result.ignored == "package action 'updated' is not recorded (only published)"


def _set(path: str, value: object) -> Any:
    def mutate(body: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = body
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DROP:
            del node[last]
        else:
            node[last] = value

    return mutate


_DROP = object()


@pytest.mark.parametrize(
    ("provider", "name", "path", "value", "named"),
    [
        ("harbor", "delete_artifact", "type", _DROP, "type"),
        ("harbor", "delete_artifact", "event_data.resources", [], "event_data.resources"),
        (
            "harbor",
            "delete_artifact",
            "event_data.resources.0.digest",
            "sha256:abc",
            "event_data.resources.0.digest",
        ),
        (
            "harbor",
            "delete_artifact",
            "event_data.repository.repo_full_name",
            _DROP,
            "event_data.repository.repo_full_name",
        ),
        (
            "harbor",
            "tag_retention",
            "event_data.retention.deleted_artifact.0.name_tag",
            "alpine",
            "event_data.retention.deleted_artifact.0.name_tag",
        ),
        ("harbor", "push_artifact", "occur_at", "yesterday", "occur_at"),
        ("artifactory", "docker_deleted", "data.sha256", "sample_checksum", "data.sha256"),
        ("artifactory", "docker_deleted", "data.image_name", _DROP, "data.image_name"),
        ("artifactory", "docker_deleted", "data", "x", "data"),
    ],
)
def test_bad_payloads_name_the_field(
    deliver: Deliver, provider: str, name: str, path: str, value: object, named: str
) -> None:
    with pytest.raises(WebhookPayloadError, match=rf"^{named}:"):
        deliver(provider, name, _set(path, value))
