"""Policy rules as pure functions, and policy validation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from shipledger.processors.rules import Subject, judge
from shipledger.schemas.policy import load_policy, parse_policy

POLICY = """
version: "2026.11"
defaults:
  timezone: Europe/Berlin
  require_change_ticket: [prod]
  change_windows:
    prod:
      - {days: [mon, tue, wed, thu], start: "09:00", end: "17:00"}
  window_exempt_kinds: [emergency_patch]
  freezes:
    - name: black-friday
      start: 2026-11-27T00:00:00+01:00
      end: 2026-11-30T00:00:00+01:00
      environments: [prod]
      exempt_kinds: [emergency_patch]
tenants:
  bank:
    timezone: America/New_York
    require_change_ticket: [prod, stage]
"""


def subject(when: str, **kw: str | None) -> Subject:
    base: dict[str, object] = {
        "environment": "prod",
        "kind": "release",
        "change_id": "CHG1",
        "service": "checkout",
        "tenant": "retail",
    }
    base.update(kw)
    return Subject(occurred_at=datetime.fromisoformat(when).astimezone(UTC), **base)  # type: ignore[arg-type]


def rules_fired(s: Subject) -> list[str]:
    policy = parse_policy(POLICY)
    return [f.rule for f in judge(s, policy.rules_for(s.tenant))]


def test_compliant_deployment_has_no_findings() -> None:
    # Wednesday 10:00 Berlin, with a ticket.
    assert rules_fired(subject("2026-11-25T10:00:00+01:00")) == []


def test_missing_change_ticket_only_where_required() -> None:
    assert rules_fired(subject("2026-11-25T10:00:00+01:00", change_id=None)) == [
        "missing_change_ticket"
    ]
    assert (
        rules_fired(subject("2026-11-25T10:00:00+01:00", change_id=None, environment="stage")) == []
    )
    assert rules_fired(
        subject("2026-11-25T10:00:00+01:00", change_id=None, environment="stage", tenant="bank")
    ) == ["missing_change_ticket"]


def test_out_of_window_uses_the_tenant_time_zone() -> None:
    # 08:30 UTC is 09:30 Berlin (inside) but 03:30 New York (outside).
    assert rules_fired(subject("2026-11-25T08:30:00+00:00")) == []
    assert rules_fired(subject("2026-11-25T08:30:00+00:00", tenant="bank")) == ["out_of_window"]
    # Window end is exclusive; Sunday has no window; emergency patches are exempt.
    assert rules_fired(subject("2026-11-25T17:00:00+01:00")) == ["out_of_window"]
    assert rules_fired(subject("2026-11-22T11:00:00+01:00")) == ["out_of_window"]
    assert rules_fired(subject("2026-11-22T11:00:00+01:00", kind="emergency_patch")) == []


def test_freeze_violation() -> None:
    # Friday 10:00 is outside the Mon-Thu window too.
    fired = rules_fired(subject("2026-11-27T10:00:00+01:00"))
    assert fired == ["out_of_window", "freeze_violation"]
    assert rules_fired(subject("2026-11-27T10:00:00+01:00", kind="emergency_patch")) == []
    assert rules_fired(subject("2026-11-30T10:00:00+01:00")) == []  # freeze end is exclusive


def test_findings_carry_evidence() -> None:
    policy = parse_policy(POLICY)
    s = subject("2026-11-27T10:00:00+01:00")
    (window, freeze) = judge(s, policy.rules_for("retail"))
    assert window.evidence["timezone"] == "Europe/Berlin"
    assert window.evidence["windows"] == "mon,tue,wed,thu 09:00-17:00"
    assert freeze.evidence["freeze"] == "black-friday"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\ndefaults: {timezone: Mars/Olympus}", "unknown time zone"),
        (
            "version: 1\ndefaults: {change_windows: {prod: [{days: [funday], start: '09:00', "
            "end: '10:00'}]}}",
            "funday",
        ),
        (
            "version: 1\ndefaults: {change_windows: {prod: [{days: [mon], start: '10:00', "
            "end: '09:00'}]}}",
            "must be after start",
        ),
        (
            "version: 1\ndefaults: {freezes: [{name: x, start: 2026-01-02T00:00:00, "
            "end: 2026-01-03T00:00:00}]}",
            "time zone offset",
        ),
        ("version: 1\ntenants: {bank: {colour: red}}", "tenants.bank"),
        ("- just a list", "expected a mapping"),
        ("version: 1\ndefaults: {unknown_key: 1}", "unknown_key"),
    ],
)
def test_bad_policy_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_policy(text, "p.yaml")


def test_policy_version_includes_content_digest(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    policy = load_policy(path)
    assert policy.full_version.startswith("2026.11+") and len(policy.digest) == 8
    assert load_policy(None).version == "default-2"
    with pytest.raises(ValueError, match="cannot read policy file"):
        load_policy(tmp_path / "missing.yaml")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("version: 1\n# d\u00e9ploiement\n".encode("latin-1"))
    # It was a UnicodeDecodeError's traceback from every command loading it.
    with pytest.raises(ValueError, match=r"policy file .*: not UTF-8 \(byte 0xe9 at 14\)"):
        load_policy(latin1)


def test_window_times_must_be_quoted_local_times() -> None:
    windows = "version: 1\ndefaults: {{change_windows: {{prod: [{{days: [mon], {}}}]}}}}"
    expected = r'change_windows.prod.0.start: must be a quoted local time "HH:MM" \(got 540\)'
    with pytest.raises(ValueError, match=expected):
        parse_policy(windows.format("start: 9:00, end: 17:00"), "p.yaml")
    with pytest.raises(ValueError, match="quoted local time"):
        parse_policy(windows.format("start: '09:00+02:00', end: '17:00'"), "p.yaml")


def test_policy_environment_names_are_canonical() -> None:
    policy = parse_policy(
        "version: 1\ndefaults:\n  require_change_ticket: [production]\n"
        "  change_windows: {live: [{days: [mon], start: '09:00', end: '10:00'}]}\n"
        "  freezes: [{name: f, start: 2026-01-01T00:00:00Z, end: 2026-01-02T00:00:00Z,"
        " environments: [prd]}]\n"
    )
    rules = policy.defaults
    assert rules.require_change_ticket == ["prod"]
    assert list(rules.change_windows) == ["prod"]
    assert rules.freezes[0].environments == ["prod"]


def test_tenant_severities_merge_rule_by_rule() -> None:
    policy = parse_policy("version: 1\ntenants: {bank: {severities: {out_of_window: low}}}")
    severities = policy.rules_for("bank").severities
    assert severities["out_of_window"] == "low"
    assert severities["freeze_violation"] == "critical"


def test_policy_errors_name_the_tenant_key() -> None:
    with pytest.raises(ValueError) as err:
        parse_policy("version: 1\ntenants: {bank: {colour: red}}", "p.yaml")
    assert "tenants.bank.colour: Extra inputs are not permitted" in str(err.value)
    assert "pydantic.dev" not in str(err.value)


def test_missing_metadata_is_flagged() -> None:
    """A third party's deployment without a commit is recorded, and judged for it."""
    compliant = subject("2026-11-25T10:00:00+01:00")
    flagged = Subject(**{**compliant.__dict__, "missing_metadata": ("commit_sha",)})
    assert rules_fired(flagged) == ["missing_metadata"]
    (finding,) = judge(flagged, parse_policy(POLICY).rules_for(flagged.tenant))
    assert finding.evidence["missing"] == "commit_sha" and "commit_sha" in finding.message


def test_unknown_environment_is_flagged_unless_the_policy_knows_it() -> None:
    unknown = subject("2026-11-25T10:00:00+01:00", environment="perf-lab")
    unknown = Subject(**{**unknown.__dict__, "environment_known": False})
    assert rules_fired(unknown) == ["unknown_environment"]
    policy = parse_policy(POLICY + "    known_environments: [perf-lab]\n")
    assert judge(unknown, policy.rules_for("bank")) == []


def test_the_example_policy_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "policy.example.yaml"
    policy = load_policy(example)
    assert policy.rules_for("bank").timezone == "America/New_York"
    assert policy.defaults.known_environments == ["perf", "dr"]
