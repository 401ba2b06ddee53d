"""CDEvents carried by CloudEvents over HTTP, binary or structured mode.

Binary mode: ``ce-*`` headers hold the CloudEvent attributes and the body is the CDEvent.
Structured mode (``Content-Type: application/cloudevents+json``): the body is the CloudEvent
envelope with the CDEvent in ``data`` (or ``data_base64``). CloudEvents has no signature
standard, so the shared secret travels in ``X-Shipledger-Token``. (source, id) identifies a
CloudEvent, and is the delivery id; event ids derive from the CDEvent's own
``context.source`` and ``context.id`` (the envelope's when the CDEvent has none), so a body
replayed under a new CloudEvent id is the same event.

CDEvents 0.5 renamed ``subject.content.url`` to ``uri``: both are read.

CDEvents do not carry a commit for services; producers put it in ``customData.commitSha``
or in the artifact purl's ``vcs_url`` qualifier (``git+https://host/repo@<full sha>``). Without
either, the deployment is recorded with `missing_metadata: ["commit_sha"]` and flagged.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable

from packageurl import PackageURL

from shipledger.webhooks import contract
from shipledger.webhooks.auth import SHARED_TOKEN_HEADER, verify_token
from shipledger.webhooks.payload import (
    JSONObject,
    bounded_id,
    full_sha,
    last_segment,
    opt_obj,
    opt_str,
    parse_object,
    req_str,
    req_timestamp,
)
from shipledger.webhooks.result import (
    Event,
    Identified,
    Parsed,
    Request,
    WebhookPayloadError,
)

#: A CDEvent mapper's events (identified by the CDEvent's context in `parse`), or why none.
_Outcome = list[Event] | str
_TYPE = re.compile(r"dev\.cdevents\.([a-z]+)\.([a-z]+)\.\S+")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_VCS_COMMIT = re.compile(r"@([0-9a-fA-F]{40}|[0-9a-fA-F]{64})$")
_STRUCTURED = "application/cloudevents+json"
_BATCH = "application/cloudevents-batch+json"


def verify(request: Request) -> None:
    """Check the shared secret header."""
    verify_token(request, "cdevents", SHARED_TOKEN_HEADER)


def parse(request: Request) -> Parsed:
    """Read the CloudEvent (either mode) and map the CDEvent it carries."""
    ce_type, ce_id, ce_source, data = _cloudevent(request)
    delivery = f"{ce_source}#{ce_id}"
    match = _TYPE.fullmatch(ce_type)
    if match is None:
        return Parsed.of(ce_type, delivery, f"CloudEvent type {ce_type!r} is not a CDEvent")
    mapper = _MAPPERS.get(match[1])
    if mapper is None:
        return Parsed.of(ce_type, delivery, f"CDEvent type {ce_type!r} is not recorded")
    outcome = mapper(data, match[2])
    if isinstance(outcome, str):
        return Parsed.of(ce_type, delivery, outcome)
    context_id = opt_str(data, "context.id")
    identity = f"{opt_str(data, 'context.source')}#{context_id}" if context_id else delivery
    return Parsed.of(ce_type, delivery, Identified(identity, outcome))


def _cloudevent(request: Request) -> tuple[str, str, str, JSONObject]:
    """(type, id, source, CDEvent) from a binary- or structured-mode request."""
    content_type = (request.headers.get("Content-Type") or "").lower()
    if content_type.startswith(_BATCH):
        raise WebhookPayloadError("batched CloudEvents are not supported: send one per request")
    if content_type.startswith(_STRUCTURED):
        envelope = parse_object(request.body, "CloudEvent")
        data: JSONObject | None = opt_obj(envelope, "data")
        encoded = opt_str(envelope, "data_base64")
        if data is None and encoded is not None:
            try:
                decoded = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise WebhookPayloadError("data_base64: not valid base64") from None
            data = parse_object(decoded, "data_base64")
        if data is None:
            raise WebhookPayloadError("data: required field is missing (the CDEvent)")
        return (
            req_str(envelope, "type"),
            req_str(envelope, "id"),
            req_str(envelope, "source"),
            data,
        )
    attributes = {name: request.headers.get(f"ce-{name}") for name in ("type", "id", "source")}
    if request.headers.get("ce-specversion") is None:
        raise WebhookPayloadError(
            "not a CloudEvent: send ce-* headers (binary mode) or Content-Type "
            f"{_STRUCTURED} (structured mode)"
        )
    for name, value in attributes.items():
        if value is None:
            raise WebhookPayloadError(f"ce-{name}: required CloudEvents header is missing")
    return (
        str(attributes["type"]),
        str(attributes["id"]),
        str(attributes["source"]),
        parse_object(request.body, "data"),
    )


def _uri(data: JSONObject, path: str) -> str | None:
    """`<path>.uri` (CDEvents 0.5), else `<path>.url` (0.4 and before)."""
    return opt_str(data, f"{path}.uri") or opt_str(data, f"{path}.url")


def _custom(data: JSONObject, key: str) -> str | None:
    # customData may also be a base64 string; only an object carries our keys.
    custom = data.get("customData")
    return opt_str(custom, key) if isinstance(custom, dict) else None


def _purl(value: str, path: str) -> PackageURL:
    try:
        return PackageURL.from_string(value)
    except ValueError as exc:
        raise WebhookPayloadError(f"{path}: not a valid purl ({exc})") from None


def _qualifier(purl: PackageURL, name: str) -> str | None:
    qualifiers = purl.qualifiers
    value = qualifiers.get(name) if isinstance(qualifiers, dict) else None
    return value or None


def _artifact_identity(purl: PackageURL) -> tuple[str, str | None, str | None]:
    """(name, version, digest): an OCI purl's version is its digest, its tag a qualifier."""
    name = f"{purl.namespace}/{purl.name}" if purl.namespace else purl.name
    version = purl.version
    checksum = _qualifier(purl, "checksum")
    digest = next(
        (c.lower() for c in [version or "", *(checksum or "").split(",")] if _DIGEST.fullmatch(c)),
        None,
    )
    if version is not None and version.lower() == digest:
        version = _qualifier(purl, "tag")
    return name, version, digest


def _vcs(purl: PackageURL | None) -> tuple[str | None, str | None]:
    """(repository, full commit) from the purl's ``vcs_url`` qualifier, when present."""
    vcs_url = _qualifier(purl, "vcs_url") if purl is not None else None
    if vcs_url is None:
        return None, None
    match = _VCS_COMMIT.search(vcs_url)
    repository = vcs_url[: match.start()] if match else vcs_url
    return repository.removeprefix("git+"), match[1].lower() if match else None


def _commit(data: JSONObject, purl: PackageURL | None) -> str | None:
    """`customData.commitSha`, else the commit in the purl's `vcs_url`; a full SHA or None."""
    commit = _custom(data, "commitSha") or _vcs(purl)[1]
    return full_sha(commit, "customData.commitSha") if commit else None


def _service(data: JSONObject, predicate: str) -> _Outcome:
    if predicate == "removed":
        # Not a deployment (nothing shipped, no commit) and not a catalog change (the service
        # still exists elsewhere): see docs/webhooks.md.
        return "service.removed is not recorded (no commit; not a deployment)"
    artifact_id = req_str(data, "subject.content.artifactId")
    purl = _purl(artifact_id, "subject.content.artifactId")
    name, version, digest = _artifact_identity(purl)
    vcs_repository = _vcs(purl)[0]
    # CDEvents service events carry no commit: a stock producer's deployment is recorded
    # without one and flagged (missing_metadata) rather than refused at a source nobody can
    # correct. `customData.commitSha` or a purl `vcs_url` ending in @<full sha> provide it.
    commit = _commit(data, purl)
    rollback = predicate == "rolledback"
    context_source = req_str(data, "context.source")
    return [
        contract.deployment(
            deployment_id=bounded_id("cdevents", context_source, req_str(data, "context.id")),
            event_type="rolled_back" if rollback else "succeeded",
            kind="rollback" if rollback else "release",
            service=last_segment(req_str(data, "subject.id")),
            environment=req_str(data, "subject.content.environment.id"),
            commit_sha=commit,
            actor=_custom(data, "actor") or context_source,
            repository=_custom(data, "repository") or vcs_repository,
            version=version,
            artifact_name=name,
            artifact_digest=digest,
            pipeline_provider="cdevents",
            occurred_at=req_timestamp(data, "context.timestamp"),
            attributes={
                "cdevents.type": req_str(data, "context.type"),
                "cdevents.subject_id": req_str(data, "subject.id"),
                "cdevents.artifact_id": artifact_id,
            },
        )
    ]


def _environment(data: JSONObject, predicate: str) -> _Outcome:
    actions: dict[str, contract.CatalogAction] = {
        "created": "created",
        "modified": "modified",
        "deleted": "removed",
    }
    if predicate not in actions:
        return f"environment.{predicate} is not recorded"
    return [
        contract.catalog(
            entity="environment",
            action=actions[predicate],
            name=opt_str(data, "subject.content.name") or req_str(data, "subject.id"),
            url=_uri(data, "subject.content"),
            occurred_at=req_timestamp(data, "context.timestamp"),
            attributes={"cdevents.subject_id": req_str(data, "subject.id")},
        )
    ]


def _change(data: JSONObject, predicate: str) -> _Outcome:
    if predicate != "merged":
        return f"change.{predicate} is not recorded: only merges are"
    subject_id = req_str(data, "subject.id")
    repository = opt_str(data, "subject.content.repository.id") or _custom(data, "repository")
    if repository is None:
        raise WebhookPayloadError("subject.content.repository.id: required field is missing")
    return [
        contract.source(
            kind="pull_request_merged",
            repository=repository,
            commit_sha=_commit(data, None),
            pull_request_number=int(subject_id) if subject_id.isdecimal() else None,
            merged_by=_custom(data, "actor"),
            occurred_at=req_timestamp(data, "context.timestamp"),
            attributes={
                "cdevents.change_id": subject_id,
                "cdevents.repository_source": opt_str(data, "subject.content.repository.source"),
            },
        )
    ]


def _artifact(data: JSONObject, predicate: str) -> _Outcome:
    if predicate != "published":
        return f"artifact.{predicate} is not recorded: only publications are"
    subject_id = req_str(data, "subject.id")
    purl = _purl(subject_id, "subject.id")
    name, version, digest = _artifact_identity(purl)
    return [
        contract.artifact(
            artifact_name=name,
            version=version,
            digest=digest,
            repository=_qualifier(purl, "repository_url") or _vcs(purl)[0],
            commit_sha=_commit(data, purl),
            builder=opt_str(data, "subject.content.user") or req_str(data, "context.source"),
            url=_qualifier(purl, "download_url"),
            occurred_at=req_timestamp(data, "context.timestamp"),
            attributes={
                "cdevents.purl": subject_id,
                "sbom": opt_str(data, "subject.content.sbom.uri"),
            },
        )
    ]


def _pipelinerun(data: JSONObject, predicate: str) -> _Outcome:
    if predicate != "finished":
        return f"pipelinerun.{predicate} is not recorded: only finished runs are"
    errors = opt_str(data, "subject.content.errors")
    return [
        contract.signal(
            kind="pipeline_finished",
            title=opt_str(data, "subject.content.pipelineName"),
            external_id=req_str(data, "subject.id"),
            outcome=opt_str(data, "subject.content.outcome"),
            url=_uri(data, "subject.content"),
            service=_custom(data, "service"),
            environment=_custom(data, "environment"),
            occurred_at=req_timestamp(data, "context.timestamp"),
            attributes={"cdevents.errors": errors[:1000] if errors else None},
        )
    ]


_MAPPERS: dict[str, Callable[[JSONObject, str], _Outcome]] = {
    "service": _service,
    "environment": _environment,
    "change": _change,
    "artifact": _artifact,
    "pipelinerun": _pipelinerun,
}
