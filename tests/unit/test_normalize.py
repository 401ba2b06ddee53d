"""Environment taxonomy and region split."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipledger.schemas.taxonomy import Environment, normalize_environment


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("production", None, Environment("prod", None, True)),
        ("PRD", None, Environment("prod", None, True)),
        ("live", None, Environment("prod", None, True)),
        ("staging", None, Environment("stage", None, True)),
        ("preprod", None, Environment("stage", None, True)),
        ("stg", None, Environment("stage", None, True)),
        ("prod-eu-west-1", None, Environment("prod", "eu-west-1", True)),
        ("production-us-central1", None, Environment("prod", "us-central1", True)),
        ("prod_eu_west_1", None, Environment("prod", "eu-west-1", True)),
        ("staging.westeurope", None, Environment("stage", "westeurope", True)),
        ("prod-eu-west-1", "us-east-1", Environment("prod", "us-east-1", True)),
        ("dev", " ", Environment("dev", None, True)),
        ("perf-lab", None, Environment("perf-lab", None, False)),
    ],
)
def test_taxonomy(raw: str, region: str | None, expected: Environment) -> None:
    assert normalize_environment(raw, region) == expected


def test_empty_environment_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        normalize_environment("  ")


@given(st.text(min_size=1).filter(lambda s: s.strip()))
def test_never_crashes_and_is_lowercase(raw: str) -> None:
    env = normalize_environment(raw)
    assert env.name == env.name.lower()


def test_availability_zone_suffix_is_a_region() -> None:
    assert normalize_environment("prod-us-east-1a") == Environment("prod", "us-east-1a", True)
    assert normalize_environment("prod-2") == Environment("prod-2", None, False)
