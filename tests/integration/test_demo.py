"""`shipledger demo` end to end, as `make demo` runs it: its own embedded stack (Tansu, Faust,
chDB, the API, the escalator) and its stand-in ticketing system, every section read back from
ClickHouse. Checks the governance sections of issue 10: deployments shipped under rejected
change requests, the late-approval resolutions, the gate's refusal and break-glass pass with
its critical alert, and the escalation tickets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SHIPLEDGER = str(Path(sys.executable).parent / "shipledger")


def section(output: str, title: str) -> str:
    """The lines of `output` from the one starting with `title` to the next blank line."""
    start = output.index(title)
    end = output.find("\n\n", start)
    return output[start : end if end >= 0 else None]


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPLEDGER_")}
    data_dir = tmp_path_factory.mktemp("demo") / "run"
    done = subprocess.run(
        [SHIPLEDGER, "demo", "--data-dir", str(data_dir), "--timeout", "240"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=290,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_rejected_changes_and_late_approvals(demo_output: str) -> None:
    rejected = section(demo_output, "Shipped although the CAB had rejected")
    assert re.search(r"\bprod\s+CHG\d+\s+rejected\b", rejected), rejected
    resolved = section(demo_output, "Resolved by late data")
    assert len(re.findall(r"^  change_not_approved .*reported late\)$", resolved, re.M)) == 2


def test_gate_refuses_then_break_glass_passes(demo_output: str) -> None:
    asked = section(demo_output, "The pre-deploy gate")
    # Among the reasons, in any order: outside the bank's weekly window (the gate judges at the
    # real clock), out_of_window is listed too.
    reasons = r"(?:      - .*\n)*?"
    assert re.search(
        rf"^    blocked: .*\n{reasons}      - change_not_approved \(high\)", asked, re.M
    ), asked
    assert "    (exit 1)" in asked
    assert re.search(r"^    break-glass: .* recorded with critical alert", asked, re.M), asked
    assert "    (exit 0)" in asked
    decisions = section(demo_output, "The gate's answers (table `gate_decisions`")
    blocked = re.search(r"^  blocked\s+\S+\s+\S+\s+prod\s+(CHG\d+)\s+(.*)$", decisions, re.M)
    assert blocked is not None and "change_not_approved" in blocked.group(2), decisions
    glass = re.search(r"^  break_glass\s+.*INC-4711.*\s(\w{8})$", decisions, re.M)
    assert glass is not None, decisions
    alert = section(demo_output, "Break-glass raised a critical alert (table `alerts`)")
    assert re.search(rf"^  break_glass\s+critical\s+.*\s{glass.group(1)}\s", alert, re.M), alert


def test_escalation_tickets(demo_output: str) -> None:
    head = re.search(r"^Escalation: (\d+) alerts .*local stand-in", demo_output, re.M)
    assert head is not None, demo_output
    tickets = section(demo_output, "Escalation tickets, one per alert (table `escalations`")
    counts = {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^  (\w+)\s+\w+\s+tickets\s+(\d+)\s+DEMO-\d{4}", tickets, re.M)
    }
    assert sum(counts.values()) == int(head.group(1)), tickets
    assert counts.get("break_glass") == 1 and counts.get("change_not_approved", 0) >= 1, tickets
    assert "CLEAN:" in section(demo_output, "Ledger integrity")
