"""Policy keys for governance (per-kind rules, change-window tolerance, approved states,
service accounts, approval requirements), errors with line numbers, `shipledger policy check`."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from shipledger.policy_cli import policy as policy_command
from shipledger.processors.rules import Subject, judge
from shipledger.processors.step import process
from shipledger.schemas.policy import PolicyError, load_policy, parse_policy
from tests.kit import deployment_event

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "policy.example.yaml"
WEDNESDAY_NOON = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

KINDS = """
version: k-1
defaults:
  require_change_ticket: [prod]
  change_windows:
    prod: [{days: [mon, tue, wed, thu, fri], start: "08:00", end: "18:00"}]
  kinds:
    schema_migration:
      require_change_ticket: [prod, staging]
      change_windows:
        prod: [{days: [sat], start: "02:00", end: "06:00"}]
      change_window_tolerance: 15m
      severities: {missing_change_ticket: critical}
tenants:
  bank:
    severities: {missing_change_ticket: medium}
"""


def subject(environment: str, kind: str, change_id: str | None = None) -> Subject:
    return Subject(environment, kind, change_id, WEDNESDAY_NOON, "db", "retail")


def test_existing_policies_stay_valid_with_the_new_keys_defaulted() -> None:
    rules = load_policy(None).rules_for("any-tenant")
    assert rules.approved_states == ["approved", "scheduled"]
    assert rules.tolerance.total_seconds() == 0
    assert rules.kinds == {} and rules.approvals == [] and rules.service_accounts == []
    assert rules.for_kind("release") is rules
    assert load_policy(EXAMPLE).rules_for("bank", "release").timezone == "America/New_York"


def test_a_kind_sets_its_own_ticket_requirement_windows_and_severity() -> None:
    policy = parse_policy(KINDS)
    migration = policy.rules_for("retail", "schema_migration")
    assert migration.require_change_ticket == ["prod", "stage"]
    assert migration.change_window_tolerance == "15m"
    assert migration.severities["missing_change_ticket"] == "critical"
    assert migration.severities["freeze_violation"] == "critical"  # the rest is kept
    # A schema migration needs a ticket in stage too, and ships on Saturday nights only.
    assert [f.rule for f in judge(subject("stage", "schema_migration"), migration)] == [
        "missing_change_ticket"
    ]
    assert judge(subject("stage", "release"), policy.rules_for("retail", "release")) == []
    assert [f.rule for f in judge(subject("prod", "schema_migration", "CHG1"), migration)] == [
        "out_of_window"
    ]
    # A tenant's override is applied first, the kind's on top of it.
    assert policy.rules_for("bank").severities["missing_change_ticket"] == "medium"
    assert policy.rules_for("bank", "schema_migration").severities["missing_change_ticket"] == (
        "critical"
    )


def test_rules_are_worked_out_once_per_policy_tenant_and_kind() -> None:
    policy = parse_policy(KINDS)
    assert policy.rules_for("bank", "release") is policy.rules_for("bank", "release")
    assert policy.rules_for("retail") is policy.rules_for("other")  # no overrides: defaults
    assert policy.rules_for("bank") != policy.rules_for("retail")
    assert policy.rules_for("retail", "schema_migration") != policy.rules_for("retail")
    # Another policy (an update adopted) answers from its own file, and equality ignores it.
    updated = parse_policy(KINDS.replace("medium", "low"))
    assert updated.rules_for("bank").severities["missing_change_ticket"] == "low"
    assert parse_policy(KINDS) == policy


def test_the_stream_judges_with_the_kinds_rules() -> None:
    event = deployment_event(
        kind="schema_migration", environment="staging", occurred_at=WEDNESDAY_NOON
    )
    (alert,) = process(event, None, parse_policy(KINDS)).alerts
    assert (alert.rule, alert.severity) == ("missing_change_ticket", "critical")
    assert process(event, None, load_policy(None)).alerts == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\ndefaults: {change_window_tolerance: 1d}", "change_window_tolerance must"),
        ("version: 1\ndefaults: {change_window_tolerance: soon}", "got 'soon'"),
        ("version: 1\ndefaults: {kinds: {migration: {}}}", "defaults.kinds.migration"),
        ("version: 1\ndefaults: {approved_states: [approved, done]}", "approved_states.1"),
        ("version: 1\ndefaults: {approvals: [{name: x}]}", "approvals.0.group: Field required"),
        ("version: 1\ndefaults: {approvals: [{name: x, group: cab, count: 0}]}", "count"),
    ],
)
def test_bad_governance_keys_are_named(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(message)):
        parse_policy(text, "p.yaml")


def test_tolerance_zero_and_approval_requirements() -> None:
    policy = parse_policy(
        "version: 1\ndefaults:\n  change_window_tolerance: 0\n  approvals:\n"
        "    - {name: cab, group: cab, environments: [production], kinds: [release]}\n"
    )
    rules = policy.defaults
    assert rules.tolerance.total_seconds() == 0
    assert rules.approvals[0].environments == ["prod"]
    assert [r.name for r in rules.approvals_for("prod", "release")] == ["cab"]
    assert rules.approvals_for("prod", "hotfix") == []
    assert rules.approving_groups(["prod"]) == {"cab"} == rules.approving_groups([])
    assert rules.approving_groups(["dev"]) == frozenset()


BROKEN = """\
version: 3
defaults:
  timezone: Europe/Berlin
  change_windows:
    prod:
      - days: [mon]
        start: 9:00
        end: "17:00"
  kinds:
    schema_migraton:
      change_window_tolerance: 5m
tenants:
  bank:
    colour: red
"""


def test_errors_carry_line_numbers_in_file_order() -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(BROKEN, "p.yaml")
    assert [(p.line, p.path) for p in err.value.problems] == [
        (7, "defaults.change_windows.prod.0.start"),
        (10, "defaults.kinds.schema_migraton.[key]"),
        (14, "tenants.bank.colour"),
    ]
    text = str(err.value)
    assert "line 7: defaults.change_windows.prod.0.start: must be a quoted local time" in text
    assert "(got 540) (got 540)" not in text  # the value is quoted once
    with pytest.raises(PolicyError) as err:
        parse_policy("version: 1\ndefaults:\n  timezone: [UTC\n", "p.yaml")
    (problem,) = err.value.problems
    assert problem.line == 4 and "flow sequence" in problem.reason


def test_policy_check_command(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(policy_command, ["check", str(EXAMPLE)])
    assert ok.exit_code == 0, ok.output
    assert "valid policy 2026.11-1+" in ok.output
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    bad = runner.invoke(policy_command, ["check", str(broken)])
    assert bad.exit_code == 1
    lines = bad.stdout.splitlines()
    assert lines[0].startswith(f"{broken}:7: defaults.change_windows.prod.0.start: ")
    assert (
        lines[2] == f"{broken}:14: tenants.bank.colour: Extra inputs are not permitted (got 'red')"
    )
    assert "3 problem(s)" in bad.stderr
    missing = runner.invoke(policy_command, ["check", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2  # usage
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    unreadable = runner.invoke(policy_command, ["check", str(binary)])
    assert unreadable.exit_code == 1, unreadable.output
    assert isinstance(unreadable.exception, SystemExit)  # not a UnicodeDecodeError's traceback
    assert f"cannot read policy file {binary}: not UTF-8 (byte 0xff at 0)" in unreadable.stderr
