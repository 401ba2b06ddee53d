"""What the unit and integration tests share: sample events, the `shipledger` command (run as
a CI job runs it, or in process), a wait on a running stack, and the types of the fixtures of
tests/conftest.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from click.testing import CliRunner, Result

from shipledger.cli import cli
from shipledger.schemas.models import DeploymentEvent
from shipledger.settings import Settings

if TYPE_CHECKING:
    from shipledger.up.stack import Stack

#: The commit of the sample events.
SHA = "0123456789abcdef0123456789abcdef01234567"
#: The metadata `shipledger emit/run` needs, as CLI options.
META = ["--service", "checkout", "--environment", "prod", "--commit-sha", SHA, "--actor", "al"]
#: The `shipledger` command installed beside this interpreter.
SHIPLEDGER = str(Path(sys.executable).with_name("shipledger"))
#: One valid payload per event family, as a producer would send it (every family has one).
FAMILY_EVENTS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "family_events.json").read_text()
)

#: The `cli_env` fixture: a CI job's environment for a broker.
CliEnv = Callable[[Settings, str], dict[str, str]]
#: The `consume` fixture: (broker, topic, expected, settle_s=, timeout_s=) -> messages.
Consume = Callable[..., list[tuple[bytes, DeploymentEvent, int]]]


def deployment_event(**fields: Any) -> DeploymentEvent:
    """A valid deployment event: deployment d-1 of checkout to prod started by alice at SHA,
    each of `fields` given instead (any field of the model)."""
    sample: dict[str, Any] = {
        "deployment_id": "d-1",
        "event_type": "started",
        "service": "checkout",
        "environment": "prod",
        "commit_sha": SHA,
        "actor": "alice",
    }
    return DeploymentEvent(**{**sample, **fields})


def own_settings(tmp: Path, **overrides: Any) -> Settings:
    """Settings of one test's own stack: a private data dir under `tmp`, a unique topic prefix
    (the tests share one broker), two partitions and any free API port; `overrides` on top."""
    mine: dict[str, Any] = {
        "data_dir": tmp / "data",
        # Unique per test: tmp_path names are truncated, so two tests can share a tail.
        "topic_prefix": f"t{uuid.uuid4().hex[:12]}.",
        "topic_partitions": 2,
        # Tests run side by side: never the fixed default port.
        "api_port": 0,
    }
    return Settings(**{**mine, **overrides})


def api_event(**fields: Any) -> dict[str, Any]:
    """A valid deployment event as the API takes it (JSON): a deployment of checkout to
    production started by alice at SHA, its id unique, each of `fields` given instead."""
    body: dict[str, Any] = {
        "deployment_id": f"dep-{uuid.uuid4().hex[:10]}",
        "event_type": "started",
        "service": "checkout",
        "environment": "production",
        "commit_sha": SHA,
        "actor": "alice",
    }
    return {**body, **fields}


def emit_options(event: DeploymentEvent) -> list[str]:
    """The `shipledger emit` options naming `event`'s deployment: its id, service, environment,
    commit, actor and tenant."""
    return [
        "--deployment-id", event.deployment_id, "--service", event.service,
        "--environment", event.environment, "--commit-sha", event.commit_sha,
        "--actor", event.actor, "--tenant", event.tenant,
    ]  # fmt: skip


def run_shipledger(
    *args: str, env: Mapping[str, str], cwd: Path | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """`shipledger *args` run as a CI job runs it: a child process with `env`, its output
    captured as text; the caller checks the exit code."""
    return subprocess.run(
        [SHIPLEDGER, *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def invoke(*args: str) -> Result:
    """`shipledger *args` run in this process by Click's runner; exceptions propagate."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def wait_for(cond: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll `cond` until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_until(
    stack: Stack,
    done: Callable[[], bool],
    what: str,
    timeout_s: float = 90,
    *,
    restart_workers: bool = False,
) -> None:
    """Poll `done` until it holds (failing with `what` after `timeout_s`), checking between
    polls that no component of `stack` died (with `restart_workers`: restarting an exited
    worker first, as `up` does)."""

    def alive_and_done() -> bool:
        if restart_workers:
            stack.supervise()
        else:
            stack.check()
        return done()

    wait_for(alive_and_done, what, timeout_s)
