"""The `escalation:` section of the policy: receivers and routes validated (with line numbers,
by `shipledger policy check` too), secrets only by name, routes matched against alerts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from shipledger.cli import cli
from shipledger.policy_cli import policy as policy_command
from shipledger.receivers.registry import (
    ReceiverConfigError,
    policy_problems,
    targets,
)
from shipledger.schemas.policy import PolicyError, load_policy, parse_policy
from shipledger.settings import Settings
from shipledger.up.stack import Stack
from tests.kit import freeze_alert

REPO = Path(__file__).resolve().parents[2]

POLICY = """\
version: esc-1
escalation:
  receivers:
    snow:
      type: servicenow
      url: https://acme.service-now.com/
      credentials: snow_prod
      fields: {assignment_group: cab-ops}
    jira:
      type: jira
      url: https://acme.atlassian.net
      credentials: JIRA_BOT
      project: OPS
    hook:
      type: webhook
      url: https://hooks.example.org/shipledger
      credentials: hook
  routes:
    - name: prod-governance
      alert_rules: [freeze_violation, change_not_approved]
      min_severity: high
      environments: [production]
      receivers: [snow, hook]
    - name: bank-everything
      tenants: [bank]
      receivers: [jira, snow]
"""


def test_routes_send_each_alert_to_every_matching_receiver_once() -> None:
    escalation = parse_policy(POLICY).escalation
    assert escalation.routes[0].environments == ["prod"]  # canonical, like the rest of the file
    assert escalation.receivers["snow"].url == "https://acme.service-now.com"
    assert escalation.receivers["snow"].options == {"fields": {"assignment_group": "cab-ops"}}
    assert escalation.deliveries(freeze_alert()) == [
        ("prod-governance", "snow"),
        ("prod-governance", "hook"),
    ]
    # Below the minimum severity, another rule, another environment: not sent.
    assert escalation.deliveries(freeze_alert(severity="medium")) == []
    assert escalation.deliveries(freeze_alert(rule="out_of_window")) == []
    assert escalation.deliveries(freeze_alert(environment="stage")) == []
    # Two routes name snow: it is delivered once, recorded under the first route.
    assert escalation.deliveries(freeze_alert(tenant="bank")) == [
        ("prod-governance", "snow"),
        ("prod-governance", "hook"),
        ("bank-everything", "jira"),
    ]
    assert escalation.deliveries(freeze_alert(tenant="bank", severity="info", rule="x")) == [
        ("bank-everything", "jira"),
        ("bank-everything", "snow"),
    ]


def test_the_shipped_policies_stay_valid_and_the_example_escalation_is() -> None:
    assert load_policy(None).escalation.routes == []
    example = REPO / "deploy" / "policy.example.yaml"
    assert load_policy(example, checks=[policy_problems]).escalation.routes == []
    # Its escalation section is commented out (a copy must not page example.com): uncommented,
    # it is a valid policy.
    text = example.read_text()
    start = text.index("# escalation:")
    uncommented = text[:start] + "\n".join(
        line[2:] if line.startswith("# ") else line.lstrip("#")
        for line in text[start:].splitlines()
    )
    escalation = parse_policy(uncommented, checks=[policy_problems]).escalation
    assert [route.name for route in escalation.routes] == ["prod-change-violations", "bank-prod"]


@pytest.mark.parametrize(
    ("edit", "where", "reason"),
    [
        ("      receivers: [snow, hook]", "escalation.routes", "unknown receiver 'nope'"),
        ("      type: servicenow", "escalation.receivers.snow.type", "unknown receiver type"),
        ("      project: OPS", "escalation.receivers.jira.project", "String should match"),
        (
            "      credentials: hook",
            "escalation.receivers.hook.credentials",
            "needs `credentials:`",
        ),
        ("      credentials: JIRA_BOT", "escalation.receivers.jira", "secrets never go"),
        ("      url: https://acme.atlassian.net", "escalation.receivers.jira.url", "credentials"),
        ("      url: https://hooks.example.org/shipledger", "hook.url", "must use https"),
        ("      fields: {assignment_group: cab-ops}", "snow.fields", "set by shipledger"),
    ],
)
def test_a_bad_receiver_or_route_is_named_with_its_line(edit: str, where: str, reason: str) -> None:
    replacement = {
        "      receivers: [snow, hook]": "      receivers: [snow, nope]",
        "      type: servicenow": "      type: remedy",
        "      project: OPS": "      project: ops",
        "      credentials: hook": "",
        "      credentials: JIRA_BOT": "      credentials: JIRA_BOT\n      api_token: s3cr3t",
        "      url: https://acme.atlassian.net": "      url: https://bot:pw@acme.atlassian.net",
        "      url: https://hooks.example.org/shipledger": "      url: http://hooks.example.org/",
        "      fields: {assignment_group: cab-ops}": "      fields: {correlation_id: mine}",
    }[edit]
    text = POLICY.replace(edit, replacement)
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yaml", checks=[policy_problems])
    (problem,) = caught.value.problems
    assert where in problem.path and reason in problem.reason, problem
    assert problem.line is not None
    assert text.splitlines()[problem.line - 1].strip().split(":")[0] in problem.path, problem


def test_policy_check_validates_receivers_and_lists_routes(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(POLICY)
    done = CliRunner().invoke(policy_command, ["check", str(good)])
    assert done.exit_code == 0, done.output
    assert "escalation routes: prod-governance -> snow, hook; bank-everything -> jira, snow" in (
        done.output
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY.replace("      project: OPS", "      project: OPS\n      colour: red"))
    done = CliRunner().invoke(policy_command, ["check", str(bad)])
    assert done.exit_code == 1
    assert f"{bad}:14: escalation.receivers.jira.colour: unknown option" in done.output


def test_secrets_come_from_the_settings_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = parse_policy(POLICY, checks=[policy_problems])
    monkeypatch.setenv("SHIPLEDGER_RECEIVER_SECRETS__SNOW_PROD", "bot:pw")
    monkeypatch.setenv("SHIPLEDGER_RECEIVER_SECRETS__JIRA_BOT", "bot@example.org:token")
    settings = Settings()
    with pytest.raises(ReceiverConfigError, match=r"hook \(credentials 'hook'\)"):
        targets(policy, settings.receiver_secret)
    monkeypatch.setenv("SHIPLEDGER_RECEIVER_SECRETS__HOOK", "whsec_MDEyMzQ1Njc4OWFi")
    configured = targets(policy, Settings().receiver_secret)
    assert configured["snow"].secret == SecretStr("bot:pw")
    assert configured["jira"].options.model_dump()["project"] == "OPS"
    # Children of `up` (the Faust workers) never see them.
    assert not [k for k in Settings().to_env() if "SECRET" in k]


def test_escalate_run_and_up_refuse_a_receiver_without_its_secret(
    tmp_path: Path, use_env: Callable[[dict[str, str]], None]
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    use_env({"SHIPLEDGER_DATA_DIR": str(tmp_path), "SHIPLEDGER_POLICY_FILE": str(policy_file)})
    done = CliRunner().invoke(cli, ["escalate", "run", "--bootstrap", "127.0.0.1:1"])
    assert done.exit_code == 1
    assert "no secret in SHIPLEDGER_RECEIVER_SECRETS for receiver(s) snow" in done.output
    # `up` says the same before starting anything (no broker, no thread).
    with pytest.raises(ReceiverConfigError, match="SHIPLEDGER_RECEIVER_SECRETS__<NAME>"):
        Stack(Settings())
    # A policy without routes has nothing to deliver.
    policy_file.write_text("version: quiet-1\n")
    done = CliRunner().invoke(cli, ["escalate", "run", "--bootstrap", "127.0.0.1:1"])
    assert done.exit_code == 0 and "no escalation routes" in done.output
