"""Chaos and late data: a change request approved after the deployment it covers, stored in the
ledger, then `shipledger up` killed (kill -9) before its worker judged the deployment again.

The embedded broker forgets the approval with the kill and the journal does not send it again
(the ledger holds it): the next start must still resolve the alert the deployment raised
without it, once (`up`'s restore writes the ledger's change events back, and a worker judges
again every deployment of the partitions it is assigned). The worker is stopped (SIGSTOP)
while the approval is stored, so the kill lands exactly between the sink and the re-judgement;
it is killed with `up` (a stopped process cannot act on the SIGTERM of its parent's death).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.integration.test_chaos import audit_clean, query_rows
from tests.integration.test_chaos_restarts import api_stack
from tests.kit import api_change, api_deployment, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ALERTS = (
    "SELECT kind, rule, count() FROM alerts "
    "WHERE deployment_id = 'dep-late' AND rule LIKE 'change%' "
    "GROUP BY kind, rule ORDER BY kind, rule"
)
STATE = "SELECT change_state FROM deployments WHERE deployment_id = 'dep-late'"


def test_an_approval_stored_before_a_kill_9_resolves_after_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _, env, headers, up = api_stack(data, tmp_path / "up.log")
    opened = api_change("l-open", "CHG-L", "opened", "2026-11-25T08:00:00+00:00")
    approved = api_change("l-approve", "CHG-L", "approved", "2026-11-25T09:45:00+00:00")
    (deployment,) = api_deployment("dep-late", "checkout", [("started", "2026-11-25T10:00:00Z")])
    deployment["change_id"] = "CHG-L"
    try:
        up.start()
        url = up.ready()

        def post(*events: dict[str, object]) -> None:
            answer = httpx.post(
                f"{url}/v1/events", json={"events": list(events)}, headers=headers, timeout=60
            )
            assert answer.status_code == 202, answer.text

        post(opened)
        wait_for(lambda: query_rows(env, "SELECT count() FROM change_events") == ["1"], "opened")
        post(deployment)
        wait_for(
            lambda: query_rows(env, ALERTS) == ["alert,change_not_approved,1"],
            "the deployment flagged",
            timeout_s=120,
        )
        worker = up.worker_pid()
        assert worker is not None
        os.kill(worker, signal.SIGSTOP)
        post(approved)
        wait_for(lambda: query_rows(env, "SELECT count() FROM change_events") == ["2"], "approval")
        up.kill()
        os.kill(worker, signal.SIGKILL)
        assert query_rows(env, ALERTS) == ["alert,change_not_approved,1"]  # not judged again

        up.start()
        up.ready()
        wait_for(
            lambda: (
                query_rows(env, ALERTS)
                == ["alert,change_not_approved,1", "resolution,change_not_approved,1"]
            ),
            "the alert resolved after the restart",
            timeout_s=120,
        )
        # The resolution and the deployment's new record version reach the ledger by two
        # topics, in no promised order.
        wait_for(lambda: query_rows(env, STATE) == ["approved"], "the record judged again")
        tail = up.stop()
    finally:
        up.kill_if_running()
    assert "shipledger stopped cleanly." in tail, tail
    assert query_rows(env, ALERTS) == [
        "alert,change_not_approved,1",
        "resolution,change_not_approved,1",
    ]
    audit_clean(data, env)
