"""The docs, tested: what README.md, docs/ and deploy/ tell a user to run must run.

- Every `sh` block says whether it is tested: `<!-- test -->` (optionally `expect "text"
  [within Ns]`, `exit N`, `in CI`, `install`) or `<!-- untested: why -->` on the line
  before it.
- Tested blocks run in order per file, each in a fresh bash (`set -euo pipefail`) started
  in that file's scratch directory, against one real `shipledger up` found through the
  registry of running stacks (no SHIPLEDGER_DATA_DIR: the discovery a user relies on is
  under test too). Variables a block sets reach the later blocks of its file. The default
  API address and `kafka.internal:9092` are replaced by the test stack's; `./deploy.sh`
  exists in the scratch directory. `install` blocks run in a fresh venv inside a clone of
  this repository.
- Every `shipledger ...` command written in the docs (inline or in any code block) names a
  real command with real options; every API path they mention is a route of the API.

`shipledger doctor` is checked here as well, against the running stack and against nothing.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from shipledger.cli import cli
from tests.kit import LONG_TEST_TIMEOUT_S

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOCS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "deploy").rglob("*.md")),
]
SHELLS = {"sh", "bash", "shell", "console"}
DEFAULT_API = "http://127.0.0.1:8470"
DOC_BROKER = "kafka.internal:9092"
#: What a GitHub Actions job would detect, for `<!-- test: in CI -->` blocks.
CI_VARIABLES = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_SHA": "89abcdef0123456789abcdef0123456789abcdef",
    "GITHUB_ACTOR": "docs-test",
    "GITHUB_REPOSITORY": "acme/checkout",
    "GITHUB_RUN_ID": "42",
    "GITHUB_SERVER_URL": "https://github.com",
}

_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<text>.*?)\s*-->\s*$")
_DIRECTIVE = re.compile(
    r"^test(?::\s*(?:(?P<install>install)|(?P<ci>in CI)|exit (?P<exit>\d+)|"
    r'expect "(?P<expect>[^"]+)"(?: within (?P<within>\d+)s)?))?$'
)


@dataclass(frozen=True)
class Block:
    """A fenced code block of a markdown file, with the marker comment before it."""

    path: Path
    line: int
    lang: str
    code: str
    marker: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


@dataclass(frozen=True)
class Directive:
    """How a `<!-- test ... -->` block is run and judged."""

    expect: str | None = None
    within_s: float = 0.0
    exit_code: int = 0
    install: bool = False
    #: Run with the variables of a GitHub Actions job (`CI_VARIABLES`).
    ci: bool = False


def blocks(path: Path) -> list[Block]:
    """Every fenced block of `path` (indented ones in lists too), dedented."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        before = next((line for line in reversed(lines[:i]) if line.strip()), "")
        marker = _MARKER.match(before)
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        code = textwrap.dedent("\n".join(lines[i + 1 : end]))
        found.append(Block(path, i + 1, fence["lang"], code, marker["text"] if marker else None))
        i = end + 1
    return found


def directive(block: Block) -> Directive | None:
    """The block's test directive, None for an untested block (ValueError if malformed)."""
    marker = block.marker or ""
    if marker.startswith("untested:") and marker.removeprefix("untested:").strip():
        return None
    match = _DIRECTIVE.match(marker)
    if match is None:
        raise ValueError(
            f"{block.where}: a {block.lang} block needs <!-- test -->, <!-- test: expect "
            f'"text" within 30s -->, <!-- test: exit N -->, <!-- test: in CI -->, '
            f"<!-- test: install --> or "
            f"<!-- untested: why --> on the line before it (found {marker!r})"
        )
    return Directive(
        expect=match["expect"],
        within_s=float(match["within"] or 0),
        exit_code=int(match["exit"] or 0),
        install=bool(match["install"]),
        ci=bool(match["ci"]),
    )


def shell_blocks() -> list[Block]:
    return [b for path in DOCS for b in blocks(path) if b.lang in SHELLS]


# --- every block says whether it runs ----------------------------------------------------------
def test_every_shell_block_says_whether_it_is_tested() -> None:
    problems = []
    for block in shell_blocks():
        try:
            directive(block)
        except ValueError as exc:
            problems.append(str(exc))
    assert not problems, "\n".join(problems)
    assert sum(directive(b) is not None for b in shell_blocks()) >= 10


# --- commands and options exist ----------------------------------------------------------------
_INLINE = re.compile(r"`([^`\n]+)`")
_COMMAND = re.compile(r"(?<![\w./$-])shipledger (?=[a-z])(?P<rest>[^\n]*)")
_STOP = {"|", "||", "&&", ";", ">", ">>", "<", "#", "2>&1", "&", "=", "...", "…"}


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, words after `shipledger`) of every command in inline code and code blocks."""
    found: list[tuple[str, list[str]]] = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        spans = [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in _INLINE.finditer(text)]
        spans += [(b.line, b.code) for b in blocks(path)]
        for line, span in spans:
            for match in _COMMAND.finditer(span):
                rest = match["rest"].replace("\\", " ")
                try:
                    words = shlex.split(rest, comments=True)
                except ValueError:
                    words = rest.split()
                found.append((f"{path.relative_to(REPO)}:{line}", words))
    return found


def _problem(words: list[str]) -> str | None:
    """What is wrong with `shipledger <words>`, or None."""
    command: click.Command = cli
    ctx = click.Context(cli)
    checked_name = False
    for word in words:
        word = word.strip("[](){},.:;'\"")
        if not word or word in _STOP or word.startswith(("$", "<", "'", '"')) or word == "--":
            if word in _STOP or word == "--":
                return None
            continue
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
            if name not in options | {"--help"}:
                return f"{command.name} has no option {name}"
            continue
        if word.startswith("-"):
            continue
        if isinstance(command, click.Group) and not checked_name:
            names = re.split(r"[/|]", word)  # `shipledger emit/run/flush`, `create|list`
            for name in names:
                if command.get_command(ctx, name) is None:
                    return f"no command {name!r} in `shipledger {command.name}`"
            if len(names) > 1:
                return None
            sub = command.get_command(ctx, word)
            assert sub is not None
            command = sub
            continue
        checked_name = True  # a positional argument: the options after it still count
    return None


def test_every_documented_command_and_option_exists() -> None:
    found = documented_commands()
    assert len(found) >= 100, len(found)
    problems = [
        f"{where}: shipledger {' '.join(words)}: {problem}"
        for where, words in found
        if (problem := _problem(words)) is not None
    ]
    assert not problems, "\n".join(problems)


# --- API paths exist ---------------------------------------------------------------------------
_PATH = re.compile(r"(?<![\w.])(/v1/[A-Za-z0-9_{}<>/$.-]*|/healthz|/readyz|/openapi\.json)")


def _is_placeholder(segment: str) -> bool:
    return segment.startswith(("{", "<", "$")) or segment in ("ID", "…", "...")


def test_every_documented_api_path_is_a_route() -> None:
    openapi = json.loads((REPO / "docs" / "openapi.json").read_text(encoding="utf-8"))
    # FastAPI serves the document itself and its docs page beside the API's routes.
    routes = [route.strip("/").split("/") for route in [*openapi["paths"], "/openapi.json"]]
    problems = []
    count = 0
    for path in DOCS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in _PATH.finditer(line):
                count += 1
                documented = match.group(1).rstrip(".,:;/").strip("/").split("/")
                if not any(
                    len(route) == len(documented)
                    and all(
                        a == b or _is_placeholder(a) or _is_placeholder(b)
                        for a, b in zip(route, documented, strict=True)
                    )
                    for route in routes
                ):
                    problems.append(f"{path.relative_to(REPO)}:{number}: {match.group(1)}")
    assert count >= 20, count
    assert not problems, "no such API route:\n" + "\n".join(problems)


# --- the blocks run against a real stack -------------------------------------------------------
@dataclass(frozen=True)
class Stack:
    api_url: str
    bootstrap: str
    env: dict[str, str]


def _user_env(tmp: Path, registry: Path) -> dict[str, str]:
    """A user's shell: no SHIPLEDGER_* set but the test's private registry, the venv on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPLEDGER_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["SHIPLEDGER_STACKS_DIR"] = str(registry)
    env["TMPDIR"] = str(tmp)
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`shipledger up` as `make up` runs it, registered in a private registry."""
    root = tmp_path_factory.mktemp("docs")
    registry = root / "stacks"
    data = root / "data"
    env = _user_env(root, registry)
    up_env = {
        **env,
        "SHIPLEDGER_DATA_DIR": str(data),
        "SHIPLEDGER_API_PORT": "0",  # tests run side by side: never the fixed port
        "SHIPLEDGER_TOPIC_PARTITIONS": "2",
    }
    log = root / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen(
            [BIN / "shipledger", "up"], env=up_env, cwd=root, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        stack_file = data / "stack.json"
        while not stack_file.exists():
            assert up.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "`shipledger up` did not start"
            time.sleep(0.2)
        info = json.loads(stack_file.read_text(encoding="utf-8"))
        yield Stack(info["api_url"], info["bootstrap"], env)
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=90)
    assert code == 0, log.read_text()[-3000:]


def _run(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _check(block: Block, rule: Directive, run: subprocess.CompletedProcess[str]) -> str | None:
    """Why the block's run does not meet its directive, or None."""
    output = run.stdout + run.stderr
    if run.returncode != rule.exit_code:
        return f"exit {run.returncode}, expected {rule.exit_code}"
    if rule.expect is not None and rule.expect not in output:
        return f"{rule.expect!r} not in the output"
    return None


def _run_block(block: Block, rule: Directive, cwd: Path, env: dict[str, str], state: Path) -> None:
    """Run one block (again until its `within` deadline), carrying variables through `state`."""
    script = (
        "set -euo pipefail\nset -a\n"
        f'[ -f "{state}" ] && . "{state}"\n'
        f"{block.code}\n"
        f"export -p | grep -vE '^declare -x (PWD|OLDPWD|SHLVL|_)=' > \"{state}.new\"\n"
        f'mv "{state}.new" "{state}"\n'
    )
    deadline = time.monotonic() + rule.within_s
    while True:
        run = _run(script, cwd, env)
        problem = _check(block, rule, run)
        if problem is None or time.monotonic() >= deadline:
            break
        time.sleep(1)  # the pipeline is asynchronous: the block is re-run until it holds
    assert problem is None, (
        f"{block.where}: {problem}\n--- block\n{block.code}\n--- stdout\n{run.stdout[-3000:]}"
        f"\n--- stderr\n{run.stderr[-3000:]}"
    )


def _stack_blocks() -> list[tuple[Path, list[Block]]]:
    per_file = []
    for path in DOCS:
        tested = [
            b for b in blocks(path) if b.lang in SHELLS and (d := directive(b)) and not d.install
        ]
        if tested:
            per_file.append((path, tested))
    return per_file


@pytest.mark.parametrize(
    "path", [p for p, _ in _stack_blocks()], ids=lambda p: str(p.relative_to(REPO))
)
def test_the_documented_commands_run_against_a_real_stack(
    stack: Stack, path: Path, tmp_path: Path
) -> None:
    (deploy := tmp_path / "deploy.sh").write_text("#!/bin/sh\necho deploying\n")
    deploy.chmod(0o755)
    state = tmp_path / ".state"
    env = {**stack.env, "TMPDIR": str(tmp_path)}
    for block in dict(_stack_blocks())[path]:
        rule = directive(block)
        assert rule is not None
        code = block.code.replace(DEFAULT_API, stack.api_url).replace(DOC_BROKER, stack.bootstrap)
        _run_block(
            Block(block.path, block.line, block.lang, code, block.marker),
            rule,
            tmp_path,
            {**env, **CI_VARIABLES} if rule.ci else env,
            state,
        )
    assert not (tmp_path / ".shipledger").exists(), "a command wrote a data dir where it ran"


@pytest.mark.timeout(LONG_TEST_TIMEOUT_S)
def test_the_install_commands_work(tmp_path: Path) -> None:
    """`install` blocks, each in a fresh venv inside a fresh clone of this repository."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the install blocks clone the repo; run in a git clone")
    install = [b for b in shell_blocks() if (d := directive(b)) and d.install]
    assert install
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    for index, block in enumerate(install):
        venv = tmp_path / f"venv{index}"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPLEDGER_")}
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.pop("VIRTUAL_ENV", None)
        run = _run("set -euo pipefail\n" + block.code, clone, env)
        assert run.returncode == 0, f"{block.where}\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
        assert (venv / "bin" / "shipledger").exists(), block.where
    shutil.rmtree(clone / "dist", ignore_errors=True)


# --- shipledger doctor -------------------------------------------------------------------------
def test_doctor_finds_nothing_wrong_with_a_running_stack(stack: Stack, tmp_path: Path) -> None:
    run = _run("shipledger doctor", tmp_path, stack.env)
    assert run.returncode == 0, run.stdout + run.stderr
    checks = {
        line.split()[1]: line.split()[0] for line in run.stdout.splitlines() if line[:4].strip()
    }
    expected = {"install", "stack", "broker", "ledger", "api", "tokens", "policy", "spool"}
    assert expected <= set(checks), run.stdout
    assert all(checks[c] == "ok" for c in expected - {"tokens"}), run.stdout
    assert stack.api_url in run.stdout
    assert not (tmp_path / ".shipledger").exists()


def test_doctor_with_nothing_running_says_what_to_do(tmp_path: Path) -> None:
    env = _user_env(tmp_path, tmp_path / "no-stacks")
    run = _run("shipledger doctor", tmp_path, env)
    assert run.returncode == 1, run.stdout + run.stderr
    failed = [line.split()[1] for line in run.stdout.splitlines() if line.startswith("FAIL")]
    assert {"stack", "broker", "ledger"} <= set(failed), run.stdout
    assert "fix: start it: `shipledger up`" in run.stdout
    assert "problem(s): " in run.stderr
    assert not (tmp_path / ".shipledger").exists()
