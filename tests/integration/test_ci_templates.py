"""The CI templates in deploy/ci/ against the real broker: the exact shell lines of the GitHub
composite action, the GitLab template and the Jenkins step (parsed out of the files) run the
shared script with each CI's own variables, as that CI would run them.

What cannot run here is the CI itself: GitHub's `${{ }}` expressions (only the `inputs.x ||
env.Y` form the action uses is evaluated), GitLab's `extends` merge and dotenv report, and
Jenkins' `withEnv`/`sh` are reproduced by small helpers below; the shell they run is real.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from shipledger.schemas.models import DeploymentEvent
from shipledger.schemas.topics import Topics
from shipledger.settings import Settings
from tests.kit import SHA, SHIPLEDGER, CliEnv, Consume

pytestmark = pytest.mark.integration

CI = Path(__file__).resolve().parents[2] / "deploy" / "ci"
SCRIPT = CI / "shipledger-step.sh"


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture
def base_env(settings: Settings, broker: str, topics: Topics, cli_env: CliEnv) -> dict[str, str]:
    return {**cli_env(settings, broker), "SHIPLEDGER_BIN": SHIPLEDGER}


def sh(lines: list[str], env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `lines` as a CI runner does: one shell, stop at the first failing line."""
    script = "set -e\n" + "\n".join(lines)
    return subprocess.run(
        ["sh", "-c", script], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=120
    )


def by_deployment(
    consume: Consume, broker: str, topic: str, expected: int
) -> dict[str, list[DeploymentEvent]]:
    out: dict[str, list[DeploymentEvent]] = {}
    for _, event, _ in consume(broker, topic, expected, settle_s=1.0):
        out.setdefault(event.deployment_id, []).append(event)
    assert sum(map(len, out.values())) == expected
    return out


def summary(events: list[DeploymentEvent]) -> list[tuple[str | None, str, str, int | None]]:
    """(stage, event type, kind, exit code) of each event, in order."""
    return [(e.pipeline_stage, e.event_type, e.kind, e.exit_code) for e in events]


#: What each test pipeline reports: a release whose deploy fails, then a rollback and an
#: emergency patch, each its own deployment.
RELEASE = [
    ("build", "started", "release", None),
    ("build", "succeeded", "release", 0),
    ("test", "started", "release", None),
    ("test", "succeeded", "release", 0),
    ("deploy", "started", "release", None),
    ("deploy", "failed", "release", 3),
    ("report", "failed", "release", None),
]
ROLLBACK = [
    ("rollback", "started", "rollback", None),
    ("rollback", "succeeded", "rollback", 0),
    ("report", "succeeded", "rollback", None),
]
PATCH = [
    ("hotfix", "started", "emergency_patch", None),
    ("hotfix", "succeeded", "emergency_patch", 0),
]
EXPECTED = len(RELEASE) + len(ROLLBACK) + len(PATCH)


def check_pipelines(deployments: dict[str, list[DeploymentEvent]]) -> None:
    assert sorted(map(summary, deployments.values())) == sorted([RELEASE, ROLLBACK, PATCH])
    (release,) = [e for e in deployments.values() if e[0].kind == "release"]
    assert release[-1].attributes == {"ci_status": release[-1].attributes["ci_status"]}
    assert {e.commit_sha for e in release} == {SHA}


# --- the shared script ---------------------------------------------------------------------


def test_the_script_rejects_unknown_commands_and_statuses(base_env: dict[str, str]) -> None:
    for args, message in (
        (["deploy"], "unknown command 'deploy'"),
        (["finish", "green"], "finish: unknown status 'green'"),
        (["run"], "run: no command line"),
    ):
        done = subprocess.run(
            ["sh", str(SCRIPT), *args], env=base_env, capture_output=True, text=True, check=False
        )
        assert (done.returncode, message in done.stderr) == (2, True), done.stderr


# --- GitHub Actions ------------------------------------------------------------------------

ACTION = CI / "github" / "action.yml"


def test_the_action_is_a_composite_action_with_its_inputs() -> None:
    action = load(ACTION)
    assert {"name", "description", "inputs", "outputs", "runs"} <= action.keys()
    assert action["runs"]["using"] == "composite"
    assert {"command", "run", "event-type", "status", "deployment-id", "kind"} <= set(
        action["inputs"]
    )
    for step in action["runs"]["steps"]:
        assert {"shell", "run"} <= step.keys()
    assert action["outputs"]["deployment-id"]["value"] == "${{ steps.step.outputs.deployment-id }}"
    inputs = set(action["inputs"])
    for value in action["runs"]["steps"][0]["env"].values():
        for name in re.findall(r"inputs\.([\w-]+)", value):
            assert name in inputs, f"env uses undeclared input {name}"


_EXPR = re.compile(r"^\$\{\{ inputs\.([\w-]+)(?: \|\| env\.(\w+))? \}\}$")


def github_job(
    job: str, inputs: dict[str, str], env: dict[str, str], tmp_path: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """Run the action's step as GitHub would in job `job`; returns it and its outputs."""
    action = load(ACTION)
    given = {name: spec.get("default", "") for name, spec in action["inputs"].items()}
    given.update(inputs)
    outputs = tmp_path / f"{job}.out"
    outputs.write_text("")
    run_env = {
        **env,
        "GITHUB_ACTIONS": "true",
        "GITHUB_SHA": SHA,
        "GITHUB_ACTOR": "octocat",
        "GITHUB_REPOSITORY": "acme/checkout",
        "GITHUB_RUN_ID": "4242",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_JOB": job,
        "GITHUB_ACTION_PATH": str(ACTION.parent),
        "GITHUB_OUTPUT": str(outputs),
    }
    (step,) = action["runs"]["steps"]
    for name, expression in step["env"].items():
        match = _EXPR.match(expression)
        assert match, f"{name}: expression the test cannot evaluate: {expression}"
        run_env[name] = given[match.group(1)] or env.get(match.group(2) or "", "")
    done = sh([step["run"]], run_env, tmp_path)
    pairs = [line.partition("=") for line in outputs.read_text().splitlines()]
    return done, {key: value for key, _, value in pairs}


def test_github_one_deployment_id_across_jobs_failure_rollback_and_patch(
    base_env: dict[str, str], broker: str, topics: Topics, consume: Consume, tmp_path: Path
) -> None:
    env = {**base_env, "SHIPLEDGER_SERVICE": "checkout"}  # workflow-level env
    target = {"environment": "prod"}

    def job(name: str, **inputs: str) -> subprocess.CompletedProcess[str]:
        return github_job(name, {**target, **inputs}, env, tmp_path)[0]

    done, outputs = github_job("start", {"command": "start"}, env, tmp_path)
    assert done.returncode == 0, done.stderr
    dep = outputs["deployment-id"]  # `needs.start.outputs.deployment-id` in later jobs
    assert done.stdout.strip() == dep
    for stage in ("build", "test"):
        assert job(stage, command="run", run="true", **{"deployment-id": dep}).returncode == 0
    failed = job("deploy", command="run", run="echo deploying; exit 3", **{"deployment-id": dep})
    assert failed.returncode == 3, failed.stderr  # the job fails as the command did
    assert "deploying" in failed.stdout
    report = job("report", command="finish", status="failure", **{"deployment-id": dep})
    assert report.returncode == 0, report.stderr

    done, outputs = github_job("start", {"command": "start"}, env, tmp_path)
    rollback = outputs["deployment-id"]
    assert rollback != dep
    ok = {"deployment-id": rollback, "kind": "rollback"}
    assert job("rollback", command="run", run="true", **ok).returncode == 0
    assert job("report", command="finish", status="success", **ok).returncode == 0
    patch = job("hotfix", command="run", run="true", kind="emergency_patch")
    assert patch.returncode == 0, patch.stderr  # no start: the CLI makes an id (and warns)

    deployments = by_deployment(consume, broker, topics.raw, EXPECTED)
    check_pipelines(deployments)
    assert [e.event_type for e in deployments[dep]][-1] == "failed"
    assert {e.pipeline_run_url for e in deployments[dep]} == {
        "https://github.com/acme/checkout/actions/runs/4242"
    }


# --- GitLab CI -----------------------------------------------------------------------------

GITLAB = CI / "gitlab" / "shipledger.gitlab-ci.yml"


def resolve(jobs: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Job `name` with its `extends` chain merged as GitLab does (hashes deeply, the rest
    replaced)."""
    job = dict(jobs[name])
    parent = job.pop("extends", None)
    if parent is None:
        return job
    merged = resolve(jobs, parent)
    for key, value in job.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def test_the_gitlab_template_has_hidden_jobs_to_extend() -> None:
    jobs = load(GITLAB)
    assert all(name.startswith(".") for name in jobs)  # nothing runs until extended
    for name in jobs:
        job = resolve(jobs, name)
        assert job["before_script"] and "SHIPLEDGER_STEP_SCRIPT" in job["variables"]
    start = resolve(jobs, ".shipledger:start")
    assert start["artifacts"]["reports"]["dotenv"] == start["variables"]["SHIPLEDGER_DOTENV"]
    assert resolve(jobs, ".shipledger:failed")["when"] == "on_failure"
    assert resolve(jobs, ".shipledger:succeeded")["when"] == "on_success"
    assert resolve(jobs, ".shipledger:rollback")["variables"]["SHIPLEDGER_KIND"] == "rollback"


def test_gitlab_one_deployment_id_across_jobs_failure_rollback_and_patch(
    base_env: dict[str, str], broker: str, topics: Topics, consume: Consume, tmp_path: Path
) -> None:
    jobs = load(GITLAB)
    dotenv: dict[str, str] = {}

    def job(template: str, stage: str, **variables: str) -> subprocess.CompletedProcess[str]:
        spec = resolve(jobs, template)
        env = {
            **base_env,
            "GITLAB_CI": "true",
            "CI_COMMIT_SHA": SHA,
            "GITLAB_USER_LOGIN": "gitlab-alice",
            "CI_PROJECT_PATH": "acme/checkout",
            "CI_PIPELINE_ID": "99",
            "CI_PIPELINE_URL": "https://gitlab.example.com/acme/checkout/-/pipelines/99",
            "CI_JOB_STAGE": stage,
            "CI_ENVIRONMENT_NAME": "prod",
            "SHIPLEDGER_SERVICE": "checkout",  # the project's variables
            **spec.get("variables", {}),
            "SHIPLEDGER_STEP_SCRIPT": str(SCRIPT),  # vendored into the repository
            **dotenv,
            **variables,
        }
        done = sh([*spec["before_script"], *spec["script"]], env, tmp_path)
        report = spec.get("artifacts", {}).get("reports", {}).get("dotenv")
        if report and done.returncode == 0:
            dotenv.clear()
            for line in (tmp_path / report).read_text().splitlines():
                key, _, value = line.partition("=")
                dotenv[key] = value
        return done

    def pipeline(*runs: tuple[str, str, str]) -> str:
        dotenv.clear()  # a new pipeline
        assert job(".shipledger:start", "start").returncode == 0
        for template, stage, line in runs:
            done = job(template, stage, SHIPLEDGER_STEP_RUN=line)
            assert done.returncode == 0, done.stderr
        return dotenv["SHIPLEDGER_DEPLOYMENT_ID"]

    dep = pipeline(
        (".shipledger:run", "build", "true"),
        (".shipledger:run", "test", "true"),
    )
    failed = job(".shipledger:run", "deploy", SHIPLEDGER_STEP_RUN="exit 3")
    assert failed.returncode == 3, failed.stderr
    assert job(".shipledger:failed", "report").returncode == 0  # on_failure runs now

    rollback = pipeline((".shipledger:rollback", "rollback", "true"))
    assert rollback != dep
    assert job(".shipledger:succeeded", "report", SHIPLEDGER_KIND="rollback").returncode == 0
    dotenv.clear()  # the patch pipeline has no start job
    assert job(".shipledger:emergency-patch", "hotfix", SHIPLEDGER_STEP_RUN="true").returncode == 0

    deployments = by_deployment(consume, broker, topics.raw, EXPECTED)
    check_pipelines(deployments)
    assert {e.actor for e in deployments[dep]} == {"gitlab-alice"}
    assert {e.environment for e in deployments[dep]} == {"prod"}  # from CI_ENVIRONMENT_NAME


# --- Jenkins -------------------------------------------------------------------------------

GROOVY = CI / "jenkins" / "vars" / "shipledgerDeploy.groovy"


def jenkins_lines() -> tuple[str, str, str]:
    """The step's three `sh` lines: fetch the script, `start`, any other command."""
    fetch, start, other = re.findall(r"(?<![\w.])sh(?: |\(script: )'([^']*)'", GROOVY.read_text())
    return fetch, start, other


def test_jenkins_one_deployment_id_across_stages_failure_rollback_and_patch(
    base_env: dict[str, str], broker: str, topics: Topics, consume: Consume, tmp_path: Path
) -> None:
    fetch, start_line, command_line = jenkins_lines()
    pipeline_env: dict[str, str] = {}

    def step(stage: str, **args: str) -> subprocess.CompletedProcess[str]:
        """shipledgerDeploy(args) in `stage`: withEnv(the args) { sh ... }."""
        args = {"SHIPLEDGER_STEP_COMMAND": "run", **args}  # the step's default command
        env = {
            **base_env,
            "JENKINS_URL": "https://jenkins.example.com/",
            "GIT_COMMIT": SHA,
            "BUILD_USER_ID": "jen",
            "JOB_NAME": "checkout/main",
            "BUILD_NUMBER": "7",
            "BUILD_URL": "https://jenkins.example.com/job/checkout/7/",
            "STAGE_NAME": stage,
            **pipeline_env,
            "SHIPLEDGER_SERVICE": "checkout",
            "SHIPLEDGER_ENVIRONMENT": "prod",
            "SHIPLEDGER_STEP_SCRIPT": str(SCRIPT),
            **args,
        }
        command = args["SHIPLEDGER_STEP_COMMAND"]
        done = sh([fetch, start_line if command == "start" else command_line], env, tmp_path)
        if command == "start" and done.returncode == 0:
            pipeline_env["SHIPLEDGER_DEPLOYMENT_ID"] = done.stdout.strip()  # env.X = id
        return done

    assert step("start", SHIPLEDGER_STEP_COMMAND="start").returncode == 0
    dep = pipeline_env["SHIPLEDGER_DEPLOYMENT_ID"]
    for stage in ("build", "test"):
        assert step(stage, SHIPLEDGER_STEP_RUN="true").returncode == 0
    assert step("deploy", SHIPLEDGER_STEP_RUN="exit 3").returncode == 3
    finish = {"SHIPLEDGER_STEP_COMMAND": "finish"}
    assert step("report", **finish, SHIPLEDGER_STEP_STATUS="FAILURE").returncode == 0

    pipeline_env.clear()
    assert step("start", SHIPLEDGER_STEP_COMMAND="start").returncode == 0
    rollback = {"SHIPLEDGER_KIND": "rollback"}
    assert step("rollback", **rollback, SHIPLEDGER_STEP_RUN="true").returncode == 0
    assert step("report", **rollback, **finish, SHIPLEDGER_STEP_STATUS="SUCCESS").returncode == 0
    pipeline_env.clear()
    patch = {"SHIPLEDGER_KIND": "emergency_patch", "SHIPLEDGER_STEP_RUN": "true"}
    assert step("hotfix", **patch).returncode == 0

    deployments = by_deployment(consume, broker, topics.raw, EXPECTED)
    check_pipelines(deployments)
    assert {e.pipeline_run_id for e in deployments[dep]} == {"checkout/main#7"}
