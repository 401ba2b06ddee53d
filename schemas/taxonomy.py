"""Normalization: the canonical environment taxonomy and region split. Pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

#: canonical environment -> names teams use for it
ENVIRONMENT_TAXONOMY: dict[str, tuple[str, ...]] = {
    "prod": ("prod", "production", "prd", "live", "prod1", "main"),
    "stage": ("stage", "staging", "stg", "preprod", "pre-prod", "pre-production", "uat"),
    "qa": ("qa", "test", "testing", "tst", "int", "integration"),
    "dev": ("dev", "development", "develop", "sandbox", "sbx"),
}
_CANONICAL: dict[str, str] = {
    alias: canonical for canonical, names in ENVIRONMENT_TAXONOMY.items() for alias in names
}
#: The aliases, longest first: a name is split at the longest known prefix (sorted once, not
#: per event).
_LONGEST_FIRST = sorted(_CANONICAL, key=len, reverse=True)
# Cloud region shapes: aws eu-west-1 (zone eu-west-1a), gcp europe-west4 / us-central1,
# azure westeurope.
_REGION_RE = re.compile(r"^[a-z]{2,}(?:-[a-z]+)*-?\d*[a-z]?$")


@dataclass(frozen=True)
class Environment:
    """A reported environment name resolved to its canonical name and region."""

    name: str
    region: str | None
    known: bool


# Asked once per event (or more) with a handful of distinct names: the answers are kept (an
# Environment is immutable), bounded, since names come from outside.
@lru_cache(maxsize=4096)
def normalize_environment(raw: str, region: str | None = None) -> Environment:
    """Map `production-eu-west-1` to (`prod`, `eu-west-1`); an explicit region wins.

    Unknown names are kept (lower-cased) and flagged `known=False` rather than guessed.
    """
    value = raw.strip().lower().replace("_", "-")
    if not value:
        raise ValueError("environment is empty")
    if value in _CANONICAL:
        return Environment(_CANONICAL[value], _clean_region(region), True)
    # Longest known prefix followed by a separator and a region-shaped rest.
    for alias in _LONGEST_FIRST:
        for sep in ("-", "."):
            prefix = alias + sep
            if value.startswith(prefix):
                rest = value[len(prefix) :]
                if _REGION_RE.match(rest):
                    return Environment(_CANONICAL[alias], _clean_region(region) or rest, True)
    return Environment(value, _clean_region(region), False)


def _clean_region(region: str | None) -> str | None:
    if region is None:
        return None
    region = region.strip().lower()
    return region or None
