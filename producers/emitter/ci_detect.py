"""Deployment metadata that CI systems already expose as environment variables.

`detect` is pure: the CLI passes `os.environ` in at its entry point, tests pass dicts. It returns
DeploymentEvent field values (strings only, empty values left out); flags given on the command
line override them. A URL-shaped repository loses its user-info (`https://user:token@host/x` ->
`https://host/x`): Jenkins' GIT_URL may carry credentials, and the ledger must not.

Variables used (names from each provider's reference of predefined variables):

- GitHub Actions: GITHUB_ACTIONS, GITHUB_SHA, GITHUB_TRIGGERING_ACTOR (who started this run
  attempt: differs from GITHUB_ACTOR on a re-run), GITHUB_ACTOR, GITHUB_REPOSITORY, GITHUB_RUN_ID,
  GITHUB_SERVER_URL, GITHUB_JOB, GITHUB_EVENT_NAME, GITHUB_REF_TYPE, GITHUB_REF_NAME.
- GitLab CI: GITLAB_CI, CI_COMMIT_SHA, GITLAB_USER_LOGIN, CI_PROJECT_PATH, CI_PIPELINE_ID,
  CI_PIPELINE_URL, CI_JOB_STAGE, CI_ENVIRONMENT_NAME, CI_COMMIT_TAG, CI_PIPELINE_SOURCE,
  CI_JOB_MANUAL.
- Jenkins: JENKINS_URL, GIT_COMMIT, BUILD_USER_ID (build-user-vars plugin), CHANGE_AUTHOR
  (multibranch change requests), JOB_NAME, BUILD_NUMBER, BUILD_URL, STAGE_NAME, GIT_URL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

GITHUB_ACTIONS = "github_actions"
GITLAB_CI = "gitlab_ci"
JENKINS = "jenkins"
CLI = "cli"

#: BUILD_USER_ID values the build-user-vars plugin sets when no person started the build.
_JENKINS_AUTOMATION_USERS = frozenset(
    {"timer", "scmChange", "branchIndexing", "remoteRequest", "genericWebhook"}
)

#: Where each mandatory field comes from in CI, for error messages.
DETECTED_FROM: dict[str, str] = {
    "commit_sha": "GITHUB_SHA, CI_COMMIT_SHA or GIT_COMMIT",
    "actor": "GITHUB_TRIGGERING_ACTOR/GITHUB_ACTOR, GITLAB_USER_LOGIN or "
    "BUILD_USER_ID/CHANGE_AUTHOR",
    "environment": "CI_ENVIRONMENT_NAME on GitLab",
}


#: `scheme://` at the start of a value: the value is a URL (scp-like `git@host:path` is not).
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _get(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def strip_credentials(repository: str) -> str:
    """`repository` without the user-info of a URL (`scheme://user:secret@host/path` ->
    `scheme://host/path`), and without its query and fragment, which can hold tokens too.

    Values that are not URLs (`owner/name`, `git@host:owner/name`) are returned unchanged.
    """
    scheme = _URL_SCHEME.match(repository)
    if scheme is None:
        return repository
    rest = repository[scheme.end() :]
    # The authority ends at the first "/"; "?" and "#" are not looked for there, since an
    # unencoded secret may contain them. The last "@" of the authority ends the user-info.
    authority, slash, path = rest.partition("/")
    host = authority.rpartition("@")[2]
    if slash:
        path = re.split(r"[?#]", path, maxsplit=1)[0]
    else:
        host = re.split(r"[?#]", host, maxsplit=1)[0]
    return f"{scheme.group()}{host}{slash}{path}"


def provider(env: Mapping[str, str]) -> str:
    """Which CI system runs us: github_actions, gitlab_ci, jenkins, or cli (none detected)."""
    if _get(env, "GITHUB_ACTIONS").lower() == "true":
        return GITHUB_ACTIONS
    if _get(env, "GITLAB_CI").lower() == "true":
        return GITLAB_CI
    if _get(env, "JENKINS_URL"):
        return JENKINS
    return CLI


def _github(env: Mapping[str, str]) -> dict[str, str]:
    out = {
        "commit_sha": _get(env, "GITHUB_SHA"),
        # A re-run keeps GITHUB_ACTOR (who started the first attempt); the person who
        # re-ran it, and so deploys now, is GITHUB_TRIGGERING_ACTOR.
        "actor": _get(env, "GITHUB_TRIGGERING_ACTOR") or _get(env, "GITHUB_ACTOR"),
        "repository": _get(env, "GITHUB_REPOSITORY"),
        "pipeline_run_id": _get(env, "GITHUB_RUN_ID"),
        "pipeline_stage": _get(env, "GITHUB_JOB"),
    }
    server = _get(env, "GITHUB_SERVER_URL").rstrip("/")
    if server and out["repository"] and out["pipeline_run_id"]:
        out["pipeline_run_url"] = (
            f"{server}/{out['repository']}/actions/runs/{out['pipeline_run_id']}"
        )
    if _get(env, "GITHUB_EVENT_NAME") == "workflow_dispatch":
        out["trigger"] = "manual"
    if _get(env, "GITHUB_REF_TYPE") == "tag":
        out["version"] = _get(env, "GITHUB_REF_NAME")
    return out


def _gitlab(env: Mapping[str, str]) -> dict[str, str]:
    out = {
        "commit_sha": _get(env, "CI_COMMIT_SHA"),
        # In a manual job GitLab sets this to the user who started the job, not the pipeline.
        "actor": _get(env, "GITLAB_USER_LOGIN"),
        "repository": _get(env, "CI_PROJECT_PATH"),
        "pipeline_run_id": _get(env, "CI_PIPELINE_ID"),
        "pipeline_run_url": _get(env, "CI_PIPELINE_URL"),
        "pipeline_stage": _get(env, "CI_JOB_STAGE"),
        "environment": _get(env, "CI_ENVIRONMENT_NAME"),
        "version": _get(env, "CI_COMMIT_TAG"),
    }
    if _get(env, "CI_PIPELINE_SOURCE") == "web" or _get(env, "CI_JOB_MANUAL") == "true":
        out["trigger"] = "manual"
    return out


def _jenkins(env: Mapping[str, str]) -> dict[str, str]:
    user = _get(env, "BUILD_USER_ID")
    person = user if user and user not in _JENKINS_AUTOMATION_USERS else ""
    job, number = _get(env, "JOB_NAME"), _get(env, "BUILD_NUMBER")
    out = {
        "commit_sha": _get(env, "GIT_COMMIT"),
        # A person who started the build, else the change author, else the automation's name.
        "actor": person or _get(env, "CHANGE_AUTHOR") or user,
        "repository": _get(env, "GIT_URL"),
        "pipeline_run_id": f"{job}#{number}" if job and number else number,
        "pipeline_run_url": _get(env, "BUILD_URL"),
        "pipeline_stage": _get(env, "STAGE_NAME"),
    }
    if person:
        out["trigger"] = "manual"
    return out


def detect(env: Mapping[str, str]) -> dict[str, str]:
    """DeploymentEvent fields auto-detected from the CI environment (always pipeline_provider)."""
    name = provider(env)
    found: dict[str, str] = {}
    if name == GITHUB_ACTIONS:
        found = _github(env)
    elif name == GITLAB_CI:
        found = _gitlab(env)
    elif name == JENKINS:
        found = _jenkins(env)
    out = {key: value for key, value in found.items() if value}
    if "repository" in out:
        out["repository"] = strip_credentials(out["repository"])
    out["pipeline_provider"] = name
    return out
