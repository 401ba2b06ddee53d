"""CI metadata detection: one fixture environment per provider, as each CI system sets it."""

from __future__ import annotations

import pytest

from shipledger.producers.emitter.ci_detect import detect, provider, strip_credentials

SHA = "4f1d2c3b4a5968778695a4b3c2d1e0f9a8b7c6d5"

GITHUB = {
    "CI": "true",
    "GITHUB_ACTIONS": "true",
    "GITHUB_SHA": SHA,
    "GITHUB_ACTOR": "octocat",
    "GITHUB_REPOSITORY": "acme/checkout",
    "GITHUB_RUN_ID": "9876543210",
    "GITHUB_SERVER_URL": "https://github.com",
    "GITHUB_JOB": "deploy-prod",
    "GITHUB_EVENT_NAME": "push",
    "GITHUB_REF_TYPE": "branch",
    "GITHUB_REF_NAME": "main",
}

GITLAB = {
    "CI": "true",
    "GITLAB_CI": "true",
    "CI_COMMIT_SHA": SHA,
    "GITLAB_USER_LOGIN": "alice",
    "CI_PROJECT_PATH": "payments/ledger-api",
    "CI_PIPELINE_ID": "1234567",
    "CI_PIPELINE_URL": "https://gitlab.example.com/payments/ledger-api/-/pipelines/1234567",
    "CI_JOB_STAGE": "deploy",
    "CI_ENVIRONMENT_NAME": "production",
    "CI_COMMIT_TAG": "",
    "CI_PIPELINE_SOURCE": "push",
}

JENKINS = {
    "JENKINS_URL": "https://jenkins.example.com/",
    "GIT_COMMIT": SHA,
    "BUILD_USER_ID": "bob",
    "JOB_NAME": "billing/deploy",
    "BUILD_NUMBER": "42",
    "BUILD_URL": "https://jenkins.example.com/job/billing/job/deploy/42/",
    "STAGE_NAME": "Deploy to prod",
    "GIT_URL": "git@github.com:acme/billing.git",
}


@pytest.mark.parametrize(
    ("env", "found"),
    [
        (
            GITHUB,
            {
                "pipeline_provider": "github_actions",
                "commit_sha": SHA,
                "actor": "octocat",
                "repository": "acme/checkout",
                "pipeline_run_id": "9876543210",
                "pipeline_run_url": "https://github.com/acme/checkout/actions/runs/9876543210",
                "pipeline_stage": "deploy-prod",
            },
        ),
        (
            GITLAB,
            {
                "pipeline_provider": "gitlab_ci",
                "commit_sha": SHA,
                "actor": "alice",
                "repository": "payments/ledger-api",
                "pipeline_run_id": "1234567",
                "pipeline_run_url": GITLAB["CI_PIPELINE_URL"],
                "pipeline_stage": "deploy",
                "environment": "production",
            },
        ),
        (
            JENKINS,  # started by a person
            {
                "pipeline_provider": "jenkins",
                "commit_sha": SHA,
                "actor": "bob",
                "repository": "git@github.com:acme/billing.git",
                "pipeline_run_id": "billing/deploy#42",
                "pipeline_run_url": JENKINS["BUILD_URL"],
                "pipeline_stage": "Deploy to prod",
                "trigger": "manual",
            },
        ),
    ],
    ids=["github_actions", "gitlab_ci", "jenkins"],
)
def test_each_provider_reports_what_its_job_environment_says(
    env: dict[str, str], found: dict[str, str]
) -> None:
    assert detect(env) == found


def test_github_rerun_is_reported_as_the_person_who_reran_it() -> None:
    # A re-run keeps GITHUB_ACTOR (first attempt) and sets GITHUB_TRIGGERING_ACTOR.
    assert detect({**GITHUB, "GITHUB_TRIGGERING_ACTOR": "hubot"})["actor"] == "hubot"
    assert detect({**GITHUB, "GITHUB_TRIGGERING_ACTOR": " "})["actor"] == "octocat"


def test_github_manual_dispatch_on_a_tag() -> None:
    env = {
        **GITHUB,
        "GITHUB_EVENT_NAME": "workflow_dispatch",
        "GITHUB_REF_TYPE": "tag",
        "GITHUB_REF_NAME": "v2.3.0",
    }
    found = detect(env)
    assert found["trigger"] == "manual"
    assert found["version"] == "v2.3.0"


@pytest.mark.parametrize(
    "extra", [{"CI_PIPELINE_SOURCE": "web"}, {"CI_JOB_MANUAL": "true"}], ids=["web", "manual-job"]
)
def test_gitlab_manual(extra: dict[str, str]) -> None:
    assert detect({**GITLAB, **extra})["trigger"] == "manual"


def test_gitlab_tag_is_the_version() -> None:
    assert detect({**GITLAB, "CI_COMMIT_TAG": "1.8.0"})["version"] == "1.8.0"


@pytest.mark.parametrize(
    ("git_url", "repository"),
    [
        (
            "https://bob:ghp_s3cr3t@github.com/acme/billing.git",
            "https://github.com/acme/billing.git",
        ),
        ("https://x-token-auth:p@ss:w0rd@bitbucket.org/acme/b", "https://bitbucket.org/acme/b"),
        (
            "https://oauth2:glpat-abc@gitlab.example.com:8443/g/p",
            "https://gitlab.example.com:8443/g/p",
        ),
        (
            "https://token@host.example/acme/b.git?private_token=t#x",
            "https://host.example/acme/b.git",
        ),
        ("ssh://git@github.com/acme/billing.git", "ssh://github.com/acme/billing.git"),
        ("https://user:pw@[::1]:8080/r", "https://[::1]:8080/r"),
        ("HTTPS://u:t@github.com", "HTTPS://github.com"),
        ("https://github.com/acme/billing.git", "https://github.com/acme/billing.git"),
        ("git@github.com:acme/billing.git", "git@github.com:acme/billing.git"),
    ],
)
def test_jenkins_git_url_loses_its_credentials(git_url: str, repository: str) -> None:
    assert detect({**JENKINS, "GIT_URL": git_url})["repository"] == repository


def test_any_provider_repository_url_loses_its_credentials() -> None:
    gitlab = {**GITLAB, "CI_PROJECT_PATH": "https://ci:tok@gitlab.example.com/p/l"}
    assert detect(gitlab)["repository"] == "https://gitlab.example.com/p/l"


@pytest.mark.parametrize("value", ["acme/checkout", "payments/ledger-api", "git@h:o/r", ""])
def test_non_url_repositories_are_unchanged(value: str) -> None:
    assert strip_credentials(value) == value


def test_jenkins_automation_prefers_the_change_author() -> None:
    env = {**JENKINS, "BUILD_USER_ID": "scmChange", "CHANGE_AUTHOR": "carol"}
    found = detect(env)
    assert found["actor"] == "carol"
    assert "trigger" not in found
    # Without a change author the automation's name is the honest actor.
    del env["CHANGE_AUTHOR"]
    assert detect(env)["actor"] == "scmChange"


def test_jenkins_without_build_user_plugin() -> None:
    env = {k: v for k, v in JENKINS.items() if k != "BUILD_USER_ID"}
    assert "actor" not in detect(env)


def test_plain_shell_is_cli() -> None:
    assert detect({"HOME": "/root", "CI": "true"}) == {"pipeline_provider": "cli"}


def test_empty_values_are_absent() -> None:
    found = detect({"GITHUB_ACTIONS": "true", "GITHUB_SHA": "", "GITHUB_ACTOR": "  "})
    assert found == {"pipeline_provider": "github_actions"}


def test_provider_precedence_and_truthiness() -> None:
    assert provider({"GITHUB_ACTIONS": "false", "GITLAB_CI": "true"}) == "gitlab_ci"
    assert provider({"JENKINS_URL": ""}) == "cli"
