"""Reading a source's evidence files: the parser of each source, the observations mapped to
their targets, what could not be read or mapped, and the digest of what was read (the run's
identity: the same files give the same run)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipledger.reconcile import access_log, cloudtrail, k8s_audit
from shipledger.reconcile.compare import LedgerDeployment, Scope, Tolerances
from shipledger.reconcile.evidence import Entry, Malformed, Observation, Progress, read_lines
from shipledger.reconcile.mapping import Mapping, Target

Parser = Callable[[str, Iterable[tuple[int, str]]], Iterator[Entry]]
#: The parser of each source (`--source`).
PARSERS: dict[str, Parser] = {
    k8s_audit.SOURCE: k8s_audit.parse,
    cloudtrail.SOURCE: cloudtrail.parse,
    access_log.SOURCE: access_log.parse,
}


@dataclass
class Evidence:
    """What the files of one source said: `entries` read, the observations a rule mapped
    (with their targets), the `unmapped` ones (no rule took them), the malformed entries and
    the sha256 of each file's content (in the order given)."""

    entries: int = 0
    mapped: list[tuple[Observation, Target]] = field(default_factory=list)
    unmapped: list[Observation] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)


def read_evidence(
    source: str,
    paths: Sequence[Path],
    mapping: Mapping,
    tenant: str,
    progress: Callable[[Path], Progress] | None = None,
) -> Evidence:
    """Parse every file of `paths` as evidence of `source` and map what it observed (rules
    default to `tenant`); `progress(path)` is told the bytes read of that file."""
    parse = PARSERS[source]
    evidence = Evidence()
    for path in paths:
        digest = hashlib.sha256()
        lines = _hashed(read_lines(path, progress(path) if progress else None), digest)
        try:
            for entry in parse(str(path), lines):
                evidence.entries += 1
                _file(evidence, entry, source, mapping, tenant)
        except (OSError, EOFError) as exc:  # a truncated or corrupt .gz: what was read counts
            evidence.malformed.append(Malformed(path.name, f"cannot be read further: {exc}"))
        evidence.digests.append(digest.hexdigest())
    return evidence


def _file(evidence: Evidence, entry: Entry, source: str, mapping: Mapping, tenant: str) -> None:
    if isinstance(entry, Malformed):
        evidence.malformed.append(entry)
    elif entry is not None:
        target = mapping.target(entry, tenant)
        if target is not None:
            evidence.mapped.append((entry, target))
        elif source != access_log.SOURCE:  # a path no rule names is no deploy endpoint
            evidence.unmapped.append(entry)


def _hashed(lines: Iterable[tuple[int, str]], digest: Any) -> Iterator[tuple[int, str]]:
    """`lines`, each also fed to `digest` (the content read, whatever the compression)."""
    for number, line in lines:
        digest.update(line.encode("utf-8", errors="replace"))
        yield number, line


def run_id(
    scope: Scope,
    tolerances: Tolerances,
    mapping: Mapping,
    digests: Sequence[str],
    deployments: Sequence[LedgerDeployment],
) -> str:
    """The run's identity: sha256 of everything it compared (the files by content, in any
    order), so the same run twice is one run and a changed input is another."""
    inputs = {
        "scope": [scope.source, scope.tenant, scope.start.isoformat(), scope.end.isoformat()],
        "tolerances": [
            tolerances.tolerance.total_seconds(),
            tolerances.match_window.total_seconds(),
        ],
        "mapping": mapping.model_dump(mode="json"),
        "evidence": sorted(digests),
        "ledger": [
            [
                d.deployment_id,
                d.service,
                d.environment,
                d.team,
                d.status,
                d.started_at.isoformat(),
                d.ended_at.isoformat(),
            ]
            for d in sorted(deployments, key=lambda d: d.deployment_id)
        ],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
