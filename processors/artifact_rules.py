"""Artifact continuity rules: is the binary a deployment ships the one a known builder built?
Pure functions `(subject, builds, rules) -> list[Finding]`, no I/O, like `processors.rules`.

A build is an artifact event of action `published` (a registry webhook, `shipledger emit
--stage build`, `POST /v1/events`) from a trusted builder (`Rules.trusted_builders`; empty:
any). Only deployments to the environments of `Rules.require_artifact_digest` are judged:

- `artifact_digest_missing`: the deployment carries no sha256 `artifact_digest`;
- `artifact_digest_mismatch`: a trusted build of the deployment's artifact and version
  published a digest, and none of them is the deployed one (a binary substituted between
  build and deploy);
- `artifact_unknown`: no trusted build published the deployed digest, nor any digest for
  the artifact and version (never built by a known builder).

The stream (`processors.step`) and the pre-deploy gate (`processors.gate`) judge the same way;
the stream reads the builds from its enrichment view, the gate from the ledger.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from shipledger.processors.rules import Finding, Subject
from shipledger.schemas.family_models import ArtifactEvent
from shipledger.schemas.policy import Rules

#: The findings a build read late would change (a missing digest stays missing): before
#: raising one, a worker catches up with the artifacts topic (`processors.handler`).
BUILD_RULES = frozenset({"artifact_digest_mismatch", "artifact_unknown"})
#: How many published digests a mismatch's evidence lists at most.
_LISTED = 5


@dataclass(frozen=True)
class Built:
    """One build of an artifact, as its artifact event (action `published`) reported it."""

    artifact_name: str
    version: str | None
    digest: str | None
    builder: str | None
    provenance_url: str | None = None

    @classmethod
    def of(cls, event: ArtifactEvent) -> Built:
        """The build `event` (action `published`) reports."""
        return cls(
            event.artifact_name, event.version, event.digest, event.builder, event.provenance_url
        )


def judge_artifact(subject: Subject, builds: Collection[Built], rules: Rules) -> list[Finding]:
    """The artifact continuity finding (at most one) of a deployment; `builds`: at least
    every build of its artifact name at its version and every build of its digest (more is
    harmless)."""
    env = subject.environment
    if env not in rules.require_artifact_digest:
        return []
    what = f"{subject.service} deployed to {env}"
    digest = subject.artifact_digest
    if not digest:
        return [
            Finding(
                "artifact_digest_missing",
                f"{what} without an artifact digest: the binary cannot be traced to a build",
                {"environment": env, "required_for": ",".join(rules.require_artifact_digest)},
            )
        ]
    trusted = [b for b in builds if rules.trusts_builder(b.builder)]
    if any(b.digest == digest for b in trusted):
        return []
    evidence = {
        "digest": digest,
        "artifact_name": subject.artifact_name or "",
        "version": subject.version or "",
        "trusted_builders": ",".join(rules.trusted_builders),
    }
    published = sorted(
        {
            b.digest
            for b in trusted
            if b.digest
            and subject.artifact_name is not None
            and subject.version is not None
            and (b.artifact_name, b.version) == (subject.artifact_name, subject.version)
        }
    )
    if published:
        return [
            Finding(
                "artifact_digest_mismatch",
                f"{what} ships {digest}, but the build of {subject.artifact_name} "
                f"{subject.version} published {', '.join(published[:_LISTED])}: the binary "
                "changed between build and deploy",
                {**evidence, "built_digests": ",".join(published[:_LISTED])},
            )
        ]
    untrusted = sorted({b.builder or "?" for b in builds if b.digest == digest})
    return [
        Finding(
            "artifact_unknown",
            f"{what} ships {digest}, which no known builder published"
            + (f" (published by untrusted {', '.join(untrusted)})" if untrusted else ""),
            {**evidence, "untrusted_builders": ",".join(untrusted)},
        )
    ]
