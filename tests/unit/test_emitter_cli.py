"""`shipledger start/emit/run/flush` without a broker: exit codes, stdout/stderr contract, spool.

Kafka is a closed loopback port, so every event lands in the spool, where the tests read it.
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from shipledger.producers.emitter import cli as emitter_cli
from shipledger.producers.emitter.publisher import Publisher, PublishResult
from shipledger.producers.emitter.spool import Spool
from shipledger.schemas.models import DeploymentEvent
from shipledger.settings import Settings
from shipledger.up.broker import free_port
from tests.kit import META, SHA, SHIPLEDGER, CliEnv, invoke


@pytest.fixture
def env(
    settings: Settings, cli_env: CliEnv, use_env: Callable[[dict[str, str]], None]
) -> Iterator[dict[str, str]]:
    """os.environ as a CI job without Kafka would have it (a closed port)."""
    clean = cli_env(settings, f"127.0.0.1:{free_port()}")
    use_env(clean)
    yield clean


def _spooled(settings: Settings) -> list[DeploymentEvent]:
    return [DeploymentEvent.model_validate_json(p.read_bytes()) for p in Spool(settings).files()]


def test_start_prints_only_a_uuid(env: dict[str, str]) -> None:
    result = invoke("start")
    assert result.exit_code == 0
    assert str(uuid.UUID(result.stdout.strip())) == result.stdout.strip()
    assert result.stderr == ""


def test_missing_metadata_is_one_error_naming_each_field(env: dict[str, str]) -> None:
    result = invoke("emit", "started", "--service", "checkout")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("error:") == 1
    for field, flag in [
        ("environment", "--environment"),
        ("commit_sha", "--commit-sha"),
        ("actor", "--actor"),
    ]:
        assert re.search(rf"^\s+{field}\s+pass {flag} or set SHIPLEDGER_", result.stderr, re.M)
    assert not re.search(r"^\s+service\s", result.stderr, re.M)


def test_invalid_values_are_field_reason_lines(env: dict[str, str]) -> None:
    result = invoke(
        "emit", "started", *META[:-4], "--commit-sha", "abc", "--actor", "al", "--attr", "k=v"
    )
    assert result.exit_code == 2
    assert "  commit_sha: must be a full commit SHA" in result.stderr


def test_bad_attribute_and_event_type_are_usage_errors(env: dict[str, str]) -> None:
    assert invoke("emit", "started", *META, "--attr", "novalue").exit_code == 2
    assert invoke("emit", "deployed", *META).exit_code == 2


def test_emit_spools_when_kafka_is_down_and_exits_0(
    env: dict[str, str], settings: Settings
) -> None:
    result = invoke(
        "emit", "succeeded", *META, "--deployment-id", "dep-1", "--attr", "a=1", "--attr", "b=x=y"
    )
    assert result.exit_code == 0
    (event,) = _spooled(settings)
    assert result.stdout == f"{event.event_id}\n"  # stdout carries the id, nothing else
    assert "spooled to" in result.stderr and "shipledger flush" in result.stderr
    assert event.deployment_id == "dep-1"
    assert event.attributes == {"a": "1", "b": "x=y"}
    assert event.pipeline_provider == "cli"


def test_emit_strict_exits_1_without_spooling(env: dict[str, str], settings: Settings) -> None:
    """--strict with Kafka down: exit 1 and nothing spooled, so the retried CI step's event is
    the only one; without it: spooled, exit 0. One event either way."""
    strict = invoke("emit", "started", *META, "--strict")
    assert strict.exit_code == 1 and "not spooled" in strict.stderr
    assert _spooled(settings) == [] and strict.stdout == ""
    assert invoke("emit", "started", *META).exit_code == 0
    assert len(_spooled(settings)) == 1


def test_emit_blank_tenant_is_refused(env: dict[str, str], settings: Settings) -> None:
    result = invoke("emit", "started", *META, "--tenant", "")
    assert result.exit_code == 2 and "tenant" in result.stderr
    assert _spooled(settings) == []


def test_emit_event_over_the_size_limit_is_refused(
    env: dict[str, str], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPLEDGER_MAX_EVENT_BYTES", "2048")
    attrs = [a for i in range(3) for a in ("--attr", f"k{i}={'x' * 1000}")]
    result = invoke("emit", "started", *META, *attrs)
    assert result.exit_code == 2 and "over the limit of 2048" in result.stderr
    assert _spooled(settings) == []


def test_emit_control_characters_and_old_times_are_refused(
    env: dict[str, str], settings: Settings
) -> None:
    bad_name = invoke("emit", "started", *META, "--environment", "prod\nFAKE LOG LINE")
    assert bad_name.exit_code == 2 and "environment: control character" in bad_name.stderr
    old = invoke("emit", "started", *META, "--occurred-at", "0001-01-01T00:00:00Z")
    assert old.exit_code == 2 and "occurred_at" in old.stderr and "earliest" in old.stderr
    assert _spooled(settings) == []


def test_strict_from_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPLEDGER_STRICT", "true")
    assert invoke("emit", "started", *META).exit_code == 1
    assert invoke("emit", "started", *META, "--no-strict").exit_code == 0


def test_generated_deployment_id_is_shown_on_stderr(
    env: dict[str, str], settings: Settings
) -> None:
    result = invoke("emit", "started", *META)
    (event,) = _spooled(settings)
    assert event.deployment_id in result.stderr
    assert "shipledger start" in result.stderr
    assert event.deployment_id not in result.stdout


def test_ci_detection_fills_metadata_and_flags_win(
    env: dict[str, str], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        "GITLAB_CI": "true",
        "CI_COMMIT_SHA": SHA,
        "GITLAB_USER_LOGIN": "alice",
        "CI_ENVIRONMENT_NAME": "production",
        "CI_PIPELINE_SOURCE": "web",
        "SHIPLEDGER_SERVICE": "ledger",
        "SHIPLEDGER_DEPLOYMENT_ID": "dep-9",
    }.items():
        monkeypatch.setenv(key, value)
    assert invoke("emit", "started", "--environment", "prod-eu").exit_code == 0
    (event,) = _spooled(settings)
    assert (event.service, event.environment, event.actor) == ("ledger", "prod-eu", "alice")
    assert (event.pipeline_provider, event.trigger, event.deployment_id) == (
        "gitlab_ci",
        "manual",
        "dep-9",
    )


def test_run_reports_failure_and_keeps_the_exit_code(
    env: dict[str, str], settings: Settings
) -> None:
    result = invoke("run", *META, "--deployment-id", "d-run", "--", "sh", "-c", "exit 3")
    assert result.exit_code == 3
    started, finished = _spooled(settings)
    assert (started.event_type, finished.event_type) == ("started", "failed")
    assert finished.exit_code == 3
    assert finished.duration_ms is not None and finished.duration_ms >= 0
    assert started.deployment_id == finished.deployment_id == "d-run"
    assert started.event_id != finished.event_id


def test_run_success(env: dict[str, str], settings: Settings) -> None:
    assert invoke("run", *META, "true").exit_code == 0
    assert [e.event_type for e in _spooled(settings)] == ["started", "succeeded"]
    assert _spooled(settings)[1].exit_code == 0


def test_run_missing_command_is_127(env: dict[str, str], settings: Settings) -> None:
    assert invoke("run", *META, "--", "no-such-command-xyz").exit_code == 127
    finished = _spooled(settings)[1]
    assert finished.exit_code == 127
    assert finished.attributes["error"] == "command not found: no-such-command-xyz"


def test_run_validates_before_running(env: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = invoke("run", "--service", "x", "--", "touch", str(marker))
    assert result.exit_code == 2
    assert not marker.exists()


def test_run_outside_ci_takes_the_commit_from_git_and_the_actor_from_the_os(
    env: dict[str, str], settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run(
        [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    monkeypatch.chdir(repo)
    monkeypatch.setenv("USER", "laptop-user")
    result = invoke("run", "--service", "s", "--environment", "dev", "--", "true")
    assert result.exit_code == 0, result.stderr
    started, finished = _spooled(settings)
    assert (started.commit_sha, started.actor) == (head, "laptop-user")
    assert (finished.commit_sha, finished.actor) == (head, "laptop-user")
    assert "not in CI" in result.stderr and "git rev-parse HEAD" in result.stderr
    # Given values win; in CI, nothing is taken from the machine (detection names the field).
    assert invoke("run", *META, "true").exit_code == 0
    assert _spooled(settings)[-1].actor == "al"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    in_ci = invoke("run", "--service", "s", "--environment", "dev", "--", "true")
    assert in_ci.exit_code == 2 and "commit_sha" in in_ci.stderr


def test_run_strict_does_not_run_an_unrecorded_deploy(
    env: dict[str, str], settings: Settings, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    result = invoke("run", *META, "--strict", "--", "touch", str(marker))
    assert result.exit_code == 1
    assert not marker.exists()
    assert _spooled(settings) == []  # nothing started, so nothing to report later


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_forwards_signals_and_reports_the_interruption(
    settings: Settings, sig: signal.Signals, tmp_path: Path, cli_env: CliEnv
) -> None:
    env = cli_env(settings, f"127.0.0.1:{free_port()}")
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [SHIPLEDGER, "run", *META, "--", "sh", "-c", 'touch "$0" && exec sleep 30', ready],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # The command is up (a signal before it started would cancel it instead).
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.02)
        time.sleep(0.2)
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 128 + sig
    finally:
        proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    started, finished = _spooled(settings)
    assert started.event_type == "started"
    assert finished.event_type == "failed"
    assert finished.exit_code == 128 + sig
    assert finished.attributes["interrupted_by"] == sig.name
    assert finished.attributes["killed_by"] == sig.name
    assert finished.duration_ms is not None and finished.duration_ms >= 200


# --- run: a signal before the command starts, or after it ended ----------------------------------


def _signal_during_publish(monkeypatch: pytest.MonkeyPatch, sig: signal.Signals, call: int) -> None:
    """Deliver `sig` to this process while `run` publishes its `call`-th event (1 = started)."""
    calls = 0
    publish: Callable[..., PublishResult] = Publisher.publish

    def publish_then_signal(
        self: Publisher, events: Sequence[DeploymentEvent], **kwargs: Any
    ) -> PublishResult:
        nonlocal calls
        calls += 1
        if calls == call:
            signal.raise_signal(sig)  # the handler `run` installed runs before this returns
        return publish(self, events, **kwargs)

    monkeypatch.setattr(Publisher, "publish", publish_then_signal)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_run_signal_while_started_is_sent_cancels_the_command(
    env: dict[str, str],
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sig: signal.Signals,
) -> None:
    # As in a terminal, where Ctrl-C is not forwarded (the terminal sends it to the child).
    monkeypatch.setattr(emitter_cli, "_terminal_sends_sigint_to_child", lambda: True)
    _signal_during_publish(monkeypatch, sig, call=1)
    marker = tmp_path / "deployed"
    handler = signal.getsignal(sig)
    result = invoke("run", *META, "--attr", "k=v", "--", "touch", str(marker))
    assert result.exit_code == 128 + sig
    assert not marker.exists()
    started, cancelled = _spooled(settings)
    assert (started.event_type, cancelled.event_type) == ("started", "cancelled")
    assert cancelled.attributes == {"k": "v", "interrupted_by": sig.name}
    assert cancelled.exit_code is None
    assert cancelled.deployment_id == started.deployment_id
    assert "running command" not in result.stderr
    assert signal.getsignal(sig) is handler  # restored


def _signal_once_the_command_exited(monkeypatch: pytest.MonkeyPatch, sig: signal.Signals) -> None:
    """Deliver `sig` right after `run` reaped its command, before it decides the outcome."""
    wait = subprocess.Popen.wait

    def wait_then_signal(self: subprocess.Popen[bytes], timeout: float | None = None) -> int:
        code = wait(self, timeout)
        signal.raise_signal(sig)
        return code

    monkeypatch.setattr(subprocess.Popen, "wait", wait_then_signal)


@pytest.mark.parametrize("when", ["command exited", "finish sent"])
def test_run_signal_after_the_command_exited_0_is_still_a_success(
    env: dict[str, str], settings: Settings, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    if when == "command exited":
        _signal_once_the_command_exited(monkeypatch, signal.SIGTERM)
    else:
        _signal_during_publish(monkeypatch, signal.SIGTERM, call=2)
    assert invoke("run", *META, "--", "true").exit_code == 0
    finished = _spooled(settings)[1]
    assert finished.event_type == "succeeded"
    assert (finished.exit_code, finished.attributes) == (0, {})


def test_run_signal_after_a_failed_command_keeps_its_exit_code(
    env: dict[str, str], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _signal_once_the_command_exited(monkeypatch, signal.SIGINT)
    assert invoke("run", *META, "--", "sh", "-c", "exit 4").exit_code == 4
    finished = _spooled(settings)[1]
    assert (finished.event_type, finished.exit_code, finished.attributes) == ("failed", 4, {})


def _black_hole() -> socket.socket:
    """A listening loopback socket on a port the OS gave us, which never answers: Kafka
    clients connect, then wait for replies that never come (a hung broker)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(30)
    return sock


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C in a terminal"])
def test_run_interrupted_while_started_is_sent_does_not_run_the_command(
    settings: Settings, tmp_path: Path, how: str, cli_env: CliEnv
) -> None:
    """A signal during the `started` publish: the command never runs and the deployment is
    recorded as cancelled. Deterministic: the signal is sent once `run` is connected to the
    (hung) broker, so its handlers are in place and the publish lasts ~1 s more."""
    marker = tmp_path / "deployed"
    log = tmp_path / "stderr.log"
    with _black_hole() as broker:
        env = cli_env(settings, f"127.0.0.1:{broker.getsockname()[1]}")
        args = [SHIPLEDGER, "run", *META, "--", "touch", str(marker)]
        master = slave = -1
        if how == "SIGTERM":
            sig = signal.SIGTERM
            stdin: int = subprocess.DEVNULL
        else:
            # `setsid -c`: a session whose controlling terminal is a pty, as a shell gives.
            if shutil.which("setsid") is None:
                pytest.skip("needs setsid(1) from util-linux (Debian: apt-get install util-linux)")
            sig, (master, slave) = signal.SIGINT, pty.openpty()
            args, stdin = ["setsid", "-c", *args], slave
        with log.open("wb") as err:
            proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdin=stdin, stderr=err)
        try:
            conn, _ = broker.accept()
            with conn:
                if master < 0:
                    proc.send_signal(sig)
                else:
                    os.write(master, b"\x03")  # the terminal sends SIGINT to its foreground
                assert proc.wait(timeout=30) == 128 + sig, log.read_text()
        finally:
            proc.kill()
            proc.wait()
            for fd in (master, slave):
                if fd >= 0:
                    os.close(fd)
    assert not marker.exists()
    started, cancelled = _spooled(settings)
    assert (started.event_type, cancelled.event_type) == ("started", "cancelled")
    assert cancelled.attributes == {"interrupted_by": sig.name}
    assert "not running it" in log.read_text()


# --- run: a mistyped option is not a command ------------------------------------------------------


@pytest.mark.parametrize(
    "typo", [["--chnage-id", "CHG1"], ["--chnage-id=CHG1"], ["-x"]], ids=["spaced", "=", "short"]
)
def test_run_mistyped_option_is_a_usage_error(
    env: dict[str, str], settings: Settings, tmp_path: Path, typo: list[str]
) -> None:
    marker = tmp_path / "deployed"
    result = invoke("run", *META, *typo, "--", "touch", str(marker))
    assert result.exit_code == 2
    name = typo[0].partition("=")[0]
    assert f"no such option: {name}" in result.stderr.lower()
    assert not marker.exists()
    assert _spooled(settings) == []


def test_run_mistyped_option_suggests_the_right_one(env: dict[str, str]) -> None:
    result = invoke("run", *META, "--chnage-id", "CHG1", "--", "echo", "deployed")
    assert "--change-id" in result.stderr.partition("option: --chnage-id")[2]
    assert result.stdout == ""


def test_run_known_option_after_double_dash_is_a_usage_error(
    env: dict[str, str], settings: Settings
) -> None:
    result = invoke("run", *META, "--", "--change-id", "CHG1", "true")
    assert result.exit_code == 2
    assert "COMMAND cannot start with option --change-id" in result.stderr
    assert _spooled(settings) == []


@pytest.mark.parametrize("dashdash", [["--"], []], ids=["with --", "without --"])
def test_run_options_after_the_command_are_the_commands(
    env: dict[str, str], settings: Settings, tmp_path: Path, dashdash: list[str]
) -> None:
    out = tmp_path / "args"
    script = 'printf "%s\\n" "$@" > "$0"'
    args = ["sh", "-c", script, str(out), "--with-dashes", "--change-id", "CHG9", "-x"]
    result = invoke("run", *META, *dashdash, *args)
    assert result.exit_code == 0, result.stderr
    assert out.read_text().splitlines() == ["--with-dashes", "--change-id", "CHG9", "-x"]
    started, finished = _spooled(settings)
    assert finished.event_type == "succeeded"
    assert started.change_id is None and finished.change_id is None


# --- repository credentials -----------------------------------------------------------------------


def test_credentials_in_jenkins_git_url_never_reach_the_event(
    env: dict[str, str], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JENKINS_URL", "https://jenkins.example.com/")
    monkeypatch.setenv("GIT_URL", "https://bob:ghp_s3cr3tT0ken@github.com/acme/billing.git")
    result = invoke("emit", "started", *META)
    assert result.exit_code == 0
    (event,) = _spooled(settings)
    assert event.repository == "https://github.com/acme/billing.git"
    (spooled,) = Spool(settings).files()
    assert "s3cr3t" not in spooled.read_text() + result.stderr


def test_credentials_in_a_given_repository_are_stripped_too(
    env: dict[str, str], settings: Settings
) -> None:
    url = "https://ci:tok3n@gitlab.example.com/pay/ledger.git"
    assert invoke("emit", "started", *META, "--repository", url).exit_code == 0
    assert _spooled(settings)[0].repository == "https://gitlab.example.com/pay/ledger.git"


def test_flush_reports_what_remains(env: dict[str, str], settings: Settings) -> None:
    empty = invoke("flush")
    assert (empty.exit_code, empty.stdout.startswith("sent 0, 0 remaining")) == (0, True)
    invoke("emit", "started", *META)
    invoke("emit", "succeeded", *META)
    result = invoke("flush")
    assert result.exit_code == 1
    assert result.stdout.startswith("sent 0, 2 remaining")
    assert len(_spooled(settings)) == 2


def test_help_has_examples(env: dict[str, str]) -> None:
    for command in ("start", "emit", "run", "flush"):
        result = invoke(command, "--help")
        assert result.exit_code == 0
        assert "Example" in result.stdout, command


def test_invalid_settings_name_the_variable(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPLEDGER_EMIT_TIMEOUT_S", "soon")
    result = invoke("emit", "started", *META)
    assert result.exit_code == 2
    assert "SHIPLEDGER_EMIT_TIMEOUT_S: Input should be a valid number" in result.stderr
