"""Outside CI (`shipledger run` on a laptop): the commit and the actor this machine can tell.

The CI detection (`ci_detect`) is pure and finds nothing here; this module asks git for the
commit checked out in the current directory and the OS for the user name. The caller says
what it used, so a value taken this way is never a surprise in the ledger.
"""

from __future__ import annotations

import getpass
import subprocess

from shipledger.schemas.models import is_full_sha


def git_head() -> str | None:
    """The full SHA of `git rev-parse HEAD` in the current directory, or None (no git, not a
    repository, no commit yet)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and is_full_sha(sha) else None


def os_user() -> str | None:
    """The OS user's login name (USER, LOGNAME, USERNAME or the password database), or None."""
    try:
        name = getpass.getuser().strip()
    except (OSError, KeyError, ImportError):  # no variable set and no passwd entry
        return None
    return name or None


def local_metadata(missing: set[str]) -> dict[str, tuple[str, str]]:
    """For each of `missing` among commit_sha and actor that this machine can tell: its value
    and where it came from (for the message that says so)."""
    found: dict[str, tuple[str, str]] = {}
    if "commit_sha" in missing and (sha := git_head()):
        found["commit_sha"] = (sha, "`git rev-parse HEAD`")
    if "actor" in missing and (user := os_user()):
        found["actor"] = (user, "the OS user")
    return found
