"""CDEvents carried by CloudEvents over HTTP, in any of the HTTP binding's three modes, read
with the CloudEvents SDK (`cloudevents.core.bindings.http`).

Binary mode: ``ce-*`` headers hold the CloudEvent attributes and the body is the CDEvent.
Structured mode (``Content-Type: application/cloudevents+json``): the body is the CloudEvent
envelope with the CDEvent in ``data`` (or ``data_base64``). Batched mode (``Content-Type:
application/cloudevents-batch+json``): the body is a JSON array of such envelopes, each
mapped on its own (those not recorded are skipped). Bodies are read with the bounded JSON
reader first (`shipledger.schemas.untrusted`), so hostile JSON is a 400 before the SDK sees it.

CloudEvents has no signature standard, so the shared secret travels in ``X-Shipledger-Token``.
(source, id) identifies a CloudEvent, and is the delivery id; event ids derive from the
CDEvent's own ``context.source`` and ``context.id`` (the envelope's when the CDEvent has
none), so a body replayed under a new CloudEvent id is the same event.

CDEvents 0.5 renamed ``subject.content.url`` to ``uri``: both are read.

CDEvents do not carry a commit for services; producers put it in ``customData.commitSha``
or in the artifact purl's ``vcs_url`` qualifier (``git+https://host/repo@<full sha>``). Without
either, the deployment is recorded with `missing_metadata: ["commit_sha"]` and flagged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_binary, from_structured
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from packageurl import PackageURL

from shipledger.producers.webhooks import contract
from shipledger.producers.webhooks.auth import SHARED_TOKEN_HEADER, verify_token
from shipledger.producers.webhooks.payload import (
    JSONObject,
    bounded_id,
    full_sha,
    last_segment,
    opt_str,
    parse_object,
    req_str,
    req_timestamp,
    required,
)
from shipledger.producers.webhooks.result import (
    Event,
    Identified,
    Parsed,
    Request,
    WebhookPayloadError,
)
from shipledger.schemas.models import is_digest
from shipledger.schemas.untrusted import BadJSON, loads

#: A CDEvent mapper's events (identified by the CDEvent's context in `parse`), or why none.
_Outcome = list[Event] | str
#: Envelope attributes the CloudEvents JSON format reads as strings.
_STRING_ATTRIBUTES = (
    "specversion",
    "time",
    "datacontenttype",
    "datacontentencoding",
    "dataschema",
    "subject",
    "data_base64",
)
_TYPE = re.compile(r"dev\.cdevents\.([a-z]+)\.([a-z]+)\.\S+")
_VCS_COMMIT = re.compile(r"@([0-9a-fA-F]{40}|[0-9a-fA-F]{64})$")
_STRUCTURED = "application/cloudevents+json"
_BATCH = "application/cloudevents-batch+json"
_FORMAT = JSONFormat()


def verify(request: Request) -> None:
    """Check the shared secret header."""
    verify_token(request, "cdevents", SHARED_TOKEN_HEADER)


@dataclass(frozen=True)
class _CloudEvent:
    """What the mapping needs of one CloudEvent: its attributes and the CDEvent it carries."""

    type: str
    id: str
    source: str
    data: JSONObject

    @property
    def delivery(self) -> str:
        return f"{self.source}#{self.id}"


def parse(request: Request) -> Parsed:
    """Read the CloudEvent(s) (any mode) and map the CDEvents they carry."""
    events = _cloudevents(request)
    groups: list[Identified] = []
    skipped: list[str] = []
    for event in events:
        outcome = _map(event)
        if isinstance(outcome, str):
            skipped.append(outcome)
        else:
            groups.append(outcome)
    event_type = events[0].type if len(events) == 1 else f"batch of {len(events)} CloudEvents"
    delivery = events[0].delivery if len(events) == 1 else None
    if not groups:
        return Parsed.of(event_type, delivery, "; ".join(dict.fromkeys(skipped)))
    return Parsed(event_type=event_type, delivery_id=delivery, groups=groups)


def _map(event: _CloudEvent) -> Identified | str:
    """One CloudEvent's CDEvent as contract events, or why it is not recorded."""
    match = _TYPE.fullmatch(event.type)
    if match is None:
        return f"CloudEvent type {event.type!r} is not a CDEvent"
    mapper = _MAPPERS.get(match[1])
    if mapper is None:
        return f"CDEvent type {event.type!r} is not recorded"
    outcome = mapper(event.data, match[2])
    if isinstance(outcome, str):
        return outcome
    context_id = opt_str(event.data, "context.id")
    identity = (
        f"{opt_str(event.data, 'context.source')}#{context_id}" if context_id else event.delivery
    )
    return Identified(identity, outcome)


def _cloudevents(request: Request) -> list[_CloudEvent]:
    """The CloudEvents of a binary-, structured- or batched-mode request."""
    content_type = (request.headers.get("Content-Type") or "").lower()
    if content_type.startswith(_BATCH):
        try:
            batch = loads(request.body, "batch")
        except BadJSON as exc:
            raise WebhookPayloadError(str(exc)) from None
        if not isinstance(batch, list) or not batch:
            raise WebhookPayloadError("batch: must be a non-empty JSON array of CloudEvents")
        return [
            _structured(json.dumps(item).encode(), f"batch[{index}]")
            for index, item in enumerate(batch)
        ]
    if content_type.startswith(_STRUCTURED):
        return [_structured(request.body, "CloudEvent")]
    if request.headers.get("ce-specversion") is None:
        raise WebhookPayloadError(
            "not a CloudEvent: send ce-* headers (binary mode) or Content-Type "
            f"{_STRUCTURED} (structured mode) or {_BATCH} (batched mode)"
        )
    # The SDK makes up an id that is missing; the binding requires the sender's own.
    for name in ("id", "source", "type"):
        if request.headers.get(f"ce-{name}") is None:
            raise WebhookPayloadError(f"ce-{name}: required CloudEvents header is missing")
    parse_object(request.body, "data")  # bounded: the SDK's own JSON reader is not
    message = HTTPMessage(headers=request.headers.as_dict(), body=request.body)
    return [_read(lambda: from_binary(message, _FORMAT), "ce-* headers")]


def _structured(body: bytes, what: str) -> _CloudEvent:
    envelope = parse_object(body, what)  # bounded before the SDK reads it
    for name in ("id", "source", "type"):
        req_str(envelope, name)  # the SDK would make up a missing id
    # The SDK calls string methods on these without checking their type (a list `time`
    # raised AttributeError inside dateutil): they are strings or absent, or a 400 here.
    for name in _STRING_ATTRIBUTES:
        if name in envelope and not isinstance(envelope[name], str):
            raise WebhookPayloadError(
                f"{what}.{name}: must be a string, got {type(envelope[name]).__name__}"
            )
    if not isinstance(envelope.get("data", {}), dict):
        raise WebhookPayloadError(f"{what}.data: must be a JSON object (the CDEvent)")
    message = HTTPMessage(headers={"content-type": _STRUCTURED}, body=body)
    return _read(lambda: from_structured(message, _FORMAT), what)


def _read(read: Callable[[], BaseCloudEvent], what: str) -> _CloudEvent:
    """Run one SDK read; its refusals become WebhookPayloadError naming `what`."""
    try:
        event = read()
    except BaseCloudEventException as exc:
        raise WebhookPayloadError(f"{what}: not a valid CloudEvent ({exc})") from None
    except (ValueError, TypeError) as exc:  # base64, UTF-8 or JSON the SDK could not read
        raise WebhookPayloadError(f"{what}: unreadable CloudEvent ({exc})") from None
    data = event.get_data()
    if isinstance(data, bytes | str):  # data_base64, or a string body
        data = parse_object(data.encode() if isinstance(data, str) else data, f"{what}.data")
    if not isinstance(data, dict):
        raise WebhookPayloadError(f"{what}.data: required field is missing (the CDEvent)")
    return _CloudEvent(event.get_type(), event.get_id(), event.get_source(), data)


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
        (c.lower() for c in [version or "", *(checksum or "").split(",")] if is_digest(c)),
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
    repository = required(
        opt_str(data, "subject.content.repository.id") or _custom(data, "repository"),
        "subject.content.repository.id",
    )
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
