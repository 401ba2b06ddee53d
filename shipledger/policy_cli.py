"""`shipledger policy`: work with policy files (`check` now; publishing and simulation later)."""

from __future__ import annotations

from pathlib import Path

import click

from shipledger.schemas.policy import PolicyCheck, PolicyError, load_policy


def _checks() -> list[PolicyCheck]:
    """The receivers' check of their options, where the receivers are installed (the
    emitter-only install checks the rest of the file)."""
    try:
        from shipledger.receivers.registry import policy_problems
    except ModuleNotFoundError:
        click.echo("note: receiver options not checked (pip install 'shipledger[pipeline]')")
        return []
    return [policy_problems]


@click.group(
    name="policy",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
def policy() -> None:
    """Policy as code: change windows, freezes, tickets, approvals and retention.

    \b
      shipledger policy check deploy/policy.example.yaml   # exit 0 valid, 1 invalid
    """


@policy.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check(file: Path) -> None:
    """Validate a policy FILE without starting anything.

    Prints one line per problem as `FILE:LINE: key.path: reason` (the form editors and CI
    annotations link to) and exits 1; prints the version and what the file sets, and exits
    0, when the file is valid.
    """
    try:
        loaded = load_policy(file, checks=_checks())
    except PolicyError as exc:
        for problem in exc.problems:
            where = f"{file}:{problem.line}" if problem.line else str(file)
            what = f"{problem.path}: {problem.reason}" if problem.path else problem.reason
            click.echo(f"{where}: {what}")
        click.echo(f"{len(exc.problems)} problem(s): {file} is not a valid policy", err=True)
        raise click.exceptions.Exit(1) from exc
    except ValueError as exc:  # unreadable file
        click.echo(str(exc), err=True)
        raise click.exceptions.Exit(1) from exc
    rules = loaded.defaults
    click.echo(f"{file}: valid policy {loaded.full_version}")
    click.echo(f"  tenants with overrides: {', '.join(loaded.tenants) or '-'}")
    click.echo(f"  kinds with their own rules: {', '.join(rules.kinds) or '-'}")
    click.echo(f"  approval requirements: {', '.join(r.name for r in rules.approvals) or '-'}")
    routes = [f"{r.name} -> {', '.join(r.receivers)}" for r in loaded.escalation.routes]
    click.echo(f"  escalation routes: {'; '.join(routes) or '-'}")
