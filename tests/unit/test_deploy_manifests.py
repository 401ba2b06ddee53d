"""The production deployment files (Dockerfile, deploy/compose, deploy/k8s; docs/deploy.md).

No Docker or cluster here: `make lint`'s check (tools/lint_deploy.py) validates them against
their schemas, and is shown here to fail, naming the file, on a copy broken in each way. The
rest reads the manifests: every command they run is a real `shipledger` command, every
long-running pod is probed, limited, non-root on a read-only root, and under a
PodDisruptionBudget; the policy ConfigMap is a valid policy."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from shipledger.cli import cli
from shipledger.schemas.policy import load_policy

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"


def run_check(root: Path) -> subprocess.CompletedProcess[str]:
    """`make lint`'s deployment check, on the files laid out under `root`."""
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "lint_deploy.py"), "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the deployment files."""
    shutil.copy2(ROOT / "Dockerfile", tmp_path / "Dockerfile")
    shutil.copytree(ROOT / "deploy" / "compose", tmp_path / "deploy" / "compose")
    shutil.copytree(K8S, tmp_path / "deploy" / "k8s")
    shutil.copy2(ROOT / "deploy" / "policy.example.yaml", tmp_path / "deploy")
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


Break = Callable[[Path], Path]
BREAKS: dict[str, Break] = {
    # A field Kubernetes does not know (strict validation).
    "k8s unknown field": lambda root: _broken(
        root / "deploy/k8s/worker.yaml", "  replicas: 4\n", "  replica: 4\n"
    ),
    # A wrong type: a port number given as a list.
    "k8s wrong type": lambda root: _broken(
        root / "deploy/k8s/api.yaml", "containerPort: 8470}", "containerPort: [8470]}"
    ),
    "compose unknown key": lambda root: _broken(
        root / "deploy/compose/compose.yaml", "    restart: unless-stopped\n", "    restarts: 1\n"
    ),
    # hadolint DL3003: `cd` in a RUN instead of WORKDIR.
    "Dockerfile lint": lambda root: _broken(
        root / "Dockerfile", "WORKDIR /src\n", "WORKDIR /src\nRUN cd /tmp && ls\n"
    ),
    "kustomization lists a missing file": lambda root: _removed(root / "deploy/k8s/sink.yaml"),
}


def _broken(path: Path, old: str, new: str) -> Path:
    _edit(path, old, new)
    return path


def _removed(path: Path) -> Path:
    path.unlink()
    return path.parent / "kustomization.yaml"


def test_the_deployment_files_pass_as_they_are(tree: Path) -> None:
    done = run_check(tree)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("kind", list(BREAKS))
def test_a_broken_file_fails_the_check_naming_it(tree: Path, kind: str) -> None:
    culprit = BREAKS[kind](tree)
    done = run_check(tree)
    assert done.returncode == 1
    assert str(culprit) in done.stdout + done.stderr


def test_an_unlisted_manifest_fails_the_check(tree: Path) -> None:
    shutil.copy2(tree / "deploy/k8s/sink.yaml", tree / "deploy/k8s/sink-2.yaml")
    done = run_check(tree)
    assert done.returncode == 1
    assert "does not list sink-2.yaml" in done.stderr


# --- what the manifests say --------------------------------------------------------------
def _documents() -> Iterator[dict[str, Any]]:
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        yield from (d for d in yaml.safe_load_all(path.read_text()) if d)


def _pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in _documents():
        spec = doc.get("spec", {})
        if doc["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            yield doc["metadata"]["name"], spec["template"]["spec"]


def _assert_real_command(args: list[str]) -> None:
    """`args` (after `shipledger`) name a command and options it has."""
    command: click.Command = cli
    ctx = click.Context(cli)
    for arg in args:
        if arg.startswith("-"):
            names = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
            assert arg in names, f"shipledger {' '.join(args)}: no option {arg}"
        else:
            assert isinstance(command, click.Group), f"shipledger {' '.join(args)}"
            found = command.get_command(ctx, arg)
            assert found is not None, f"shipledger {' '.join(args)}: no command {arg}"
            command = found


def test_every_pod_runs_a_real_command_non_root_on_a_read_only_root() -> None:
    specs = dict(_pod_specs())
    assert set(specs) == {
        "shipledger-api",
        "shipledger-worker",
        "shipledger-sink",
        "shipledger-topics",
        "shipledger-migrate",
        "shipledger-archive",
        "shipledger-escalator",
        "shipledger-jobs",
    }
    for name, pod in specs.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod.get("initContainers", []) + pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert {"requests", "limits"} <= set(container["resources"]), name
        for container in pod["containers"]:
            _assert_real_command(container["args"])


def test_long_running_pods_are_probed_and_budgeted() -> None:
    docs = list(_documents())
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(
            b["spec"]["selector"]["matchLabels"].items() <= labels.items() for b in budgets
        ), f"{name} has no PodDisruptionBudget"
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert {"readinessProbe", "livenessProbe"} <= set(container), name
    api = deployments["shipledger-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # One escalator: never two of them during a rollout. It starts at 0: the example policy
    # routes no alert (it would exit).
    escalator = deployments["shipledger-escalator"]["spec"]
    assert (escalator["replicas"], escalator["strategy"]["type"]) == (0, "Recreate")
    # The jobs run under a lease (shipledger.up.lease): a standby beside the holder, and a
    # rollout that starts the new pod before stopping an old one, so one is always there.
    jobs = deployments["shipledger-jobs"]["spec"]
    assert jobs["replicas"] == 2
    assert jobs["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # Sinks scale out (one chain lane per partition, docs/operations.md): a rollout never
    # leaves the ledger without one.
    sink = deployments["shipledger-sink"]["spec"]
    assert sink["replicas"] >= 2
    assert sink["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_probed_metrics_listen_where_the_kubelet_reaches_them() -> None:
    """A probe comes from the node to the pod's IP: /metrics bound to 127.0.0.1 (the
    settings' default) would fail every probe and restart the pod forever; the image binds
    it on every interface, on the port the container declares."""
    assert "SHIPLEDGER_METRICS_HOST=0.0.0.0" in (ROOT / "Dockerfile").read_text()
    (config,) = (d for d in _documents() if d["metadata"]["name"] == "shipledger-config")
    ports = {
        name: config["data"][f"SHIPLEDGER_{name.upper()}_METRICS_PORT"]
        for name in ("worker", "sink", "escalator", "jobs")
    }
    deployments = {d["metadata"]["name"]: d for d in _documents() if d["kind"] == "Deployment"}
    for name, port in ports.items():
        (container,) = deployments[f"shipledger-{name}"]["spec"]["template"]["spec"]["containers"]
        assert {"name": "metrics", "containerPort": int(port)} in container["ports"], name


def test_the_policy_configmap_is_a_valid_policy(tmp_path: Path) -> None:
    (configmap,) = (d for d in _documents() if d["metadata"]["name"] == "shipledger-policy")
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(configmap["data"]["policy.yaml"])
    assert load_policy(policy_file).version == "k8s-1"


def test_compose_runs_real_commands_with_healthchecks() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    ours = {n: s for n, s in services.items() if s.get("image", "").startswith("${SHIPLEDGER")}
    assert set(ours) == {
        "topics",
        "migrate",
        "archive",
        "api",
        "worker",
        "sink",
        "escalator",
        "jobs",
    }
    for service in ours.values():
        _assert_real_command(service["command"])
    for name in ("api", "worker", "sink", "escalator", "jobs", "kafka", "schema-registry"):
        assert "healthcheck" in services[name], name
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "healthcheck" in services["clickhouse"]
    for single in ("sink", "escalator", "jobs"):
        assert services[single]["deploy"]["replicas"] == 1, single
    assert services["escalator"]["profiles"] == ["escalation"]
