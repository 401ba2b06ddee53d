"""The policy's retention section: periods, classes, and which class a row gets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shipledger.schemas.policy import Retention, load_policy, parse_period, parse_policy
from shipledger.sinks.ledger.chain import (
    GENESIS,
    LANE,
    LEGACY_LANE,
    partition_lane,
    row_hash,
    stamp,
)

EXAMPLE = Path(__file__).parents[2] / "deploy" / "policy.example.yaml"


def retention() -> Retention:
    return Retention.model_validate(
        {
            "classes": {"sox": "7y", "hipaa": "6y", "short": "30d", "default": "1y"},
            "tenants": {"bank": "sox", "clinic": "hipaa", "lab": "short"},
            "environments": {"production": "sox", "dev": "short"},
        }
    )


def test_periods() -> None:
    assert parse_period("90d") == timedelta(days=90)
    assert parse_period("2w") == timedelta(days=14)
    assert parse_period("7y") == timedelta(days=7 * 366)  # never shorter than 7 calendar years
    for bad in ("7", "7 years", "0d", "-1d", "1m"):
        with pytest.raises(ValueError, match=r"retention period must be .* d, w, y"):
            parse_period(bad)


@pytest.mark.parametrize(
    ("tenant", "environments", "expected"),
    [
        ("acme", [], "default"),  # nothing applies
        ("bank", ["dev"], "sox"),  # tenant 7y beats environment 30d
        ("clinic", ["prod"], "sox"),  # environment 7y beats tenant 6y (prod = production)
        ("clinic", ["qa"], "hipaa"),
        ("lab", [], "short"),  # a tenant class applies even when it is shorter than default
        ("acme", ["dev", "prod-eu-west-1"], "sox"),  # several environments: the longest
    ],
)
def test_the_longest_applicable_class_wins(
    tenant: str, environments: list[str], expected: str
) -> None:
    assert retention().class_for(tenant, environments) == expected


def test_unknown_classes_and_bad_periods_are_named() -> None:
    with pytest.raises(ValueError) as err:
        parse_policy(
            "version: 1\nretention:\n  classes: {sox: 7 years, default: 1y}\n"
            "  tenants: {bank: pci}\n"
        )
    text = str(err.value)
    assert "class 'sox'" in text
    with pytest.raises(ValueError, match=r"tenants\.bank: unknown class 'pci'"):
        parse_policy("version: 1\nretention:\n  tenants: {bank: pci}\n")


def test_default_and_example_policies() -> None:
    assert load_policy(None).retention.class_for("anyone", ["prod"]) == "default"
    example = load_policy(EXAMPLE).retention
    assert example.class_for("clinic", ["dev"]) == "hipaa"
    assert example.class_for("shop", ["production"]) == "sox"


def test_stamping_chains_rows_per_tenant_and_class() -> None:
    now = datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC)
    rows: list[dict[str, Any]] = [
        {"tenant": "bank", "environment": "dev", "id": "1"},
        {"tenant": "acme", "environment": "dev", "id": "2"},
        {"tenant": "bank", "environment": "qa", "id": "3"},
    ]
    heads = stamp("t", rows, {}, retention(), now)
    assert set(heads) == {("t", "bank", "sox", ""), ("t", "acme", "short", "")}
    first, _, third = rows
    assert first["ledger_at"] == now.replace(microsecond=123000)
    assert (first["chain_seq"], first["prev_hash"], first["prev_retain_until"]) == (
        1,
        GENESIS,
        None,
    )
    assert (third["chain_seq"], third["prev_hash"]) == (2, first["row_hash"])
    assert third["prev_retain_until"] == first["retain_until"]
    assert first["retain_until"] - first["ledger_at"] == timedelta(days=7 * 366)
    assert third["row_hash"] == row_hash(third)
    # A later batch continues the chain; retain_until never decreases along it, even when
    # the clock goes back or a period shrinks.
    later: list[dict[str, Any]] = [{"tenant": "bank", "environment": "dev", "id": "4"}]
    shrunk = Retention.model_validate(
        {"classes": {"sox": "1y", "default": "1y"}, "tenants": {"bank": "sox"}}
    )
    stamp("t", later, heads, shrunk, now - timedelta(days=1))
    assert later[0]["chain_seq"] == 3
    assert later[0]["ledger_at"] == third["ledger_at"]
    assert later[0]["retain_until"] == third["retain_until"]


def test_each_lane_is_a_chain_of_its_own_and_the_legacy_lane_hashes_as_before() -> None:
    """Two sinks write two partitions' lanes of one (table, tenant, class): two chains, neither
    forked; a row of the legacy lane '' hashes as a row stamped before lanes existed."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    rows: list[dict[str, Any]] = [
        {"tenant": "acme", "id": "1", LANE: partition_lane(0)},
        {"tenant": "acme", "id": "2", LANE: partition_lane(1)},
        {"tenant": "acme", "id": "3", LANE: partition_lane(0)},
    ]
    heads = stamp("t", rows, {}, retention(), now)
    assert {key: head.seq for key, head in heads.items()} == {
        ("t", "acme", "default", "p0"): 2,
        ("t", "acme", "default", "p1"): 1,
    }
    assert [row["chain_seq"] for row in rows] == [1, 1, 2]
    assert rows[2]["prev_hash"] == rows[0]["row_hash"]
    assert row_hash({**rows[1], LANE: ""}) != rows[1]["row_hash"]  # the lane is hashed
    legacy = [{"tenant": "acme", "id": "4"}]
    stamp("t", legacy, {}, retention(), now)
    assert legacy[0][LANE] == LEGACY_LANE
    before_lanes = {k: v for k, v in legacy[0].items() if k != LANE}
    assert row_hash(before_lanes) == legacy[0]["row_hash"]


def test_a_late_column_is_hashed_only_when_set() -> None:
    """Rows stamped before `policy_version` existed read it back empty and hash as stamped;
    a stamped version is inside the hash."""
    now = datetime(2026, 11, 30, tzinfo=UTC)
    old = [{"tenant": "acme", "event_id": "e1"}]
    stamp("t", old, {}, retention(), now)
    assert "policy_version" not in old[0]
    assert row_hash({**old[0], "policy_version": ""}) == old[0]["row_hash"]
    new = [{"tenant": "acme", "event_id": "e1"}]
    stamp("t", new, {}, retention(), now, "3+abcd1234")
    assert new[0]["policy_version"] == "3+abcd1234"
    assert row_hash({**new[0], "policy_version": ""}) != new[0]["row_hash"]
