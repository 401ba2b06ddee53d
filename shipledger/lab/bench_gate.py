"""The pre-deploy gate's latency for `shipledger bench --only gate`: `POST /v1/gate` through the
API of the embedded stack, as a pipeline asks it (one request at a time on a keep-alive
connection, from a client process of its own, so the client never competes with the server
for a GIL).

Each answer comes after everything a real one costs: the change request's events read from
the ledger, folded and judged with the stream's rules under the policy, and the decision
recorded (journal, then Kafka's ack). The change request asked about is reported first, like
a change system would, and approved in a window around now; so is the build the questions
deploy, like a CI would, which every answer looks up (the default policy requires a built
digest in prod).

`python -P -m shipledger.lab.bench_gate <url> <token> <requests> <out>` is the client: it
writes `{"seconds", "latencies_ms", "failures", "first_failure", "decisions"}` to `out`
(`bench.bench_gate` runs it).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import httpx

if TYPE_CHECKING:
    from shipledger.up.stack import Stack

#: The p99 the issue sets for the gate through the API.
TARGET_P99_MS = 100.0
#: The tenant whose token asks (and whose change request is asked about).
GATE_TENANT = "bench"
_CHANGE = "CHG-BENCH-1"
#: What the questions deploy: a build `seed` publishes, which the default policy's digest
#: rules (prod) look up for every answer.
_ARTIFACT = {
    "artifact_name": "registry.example.com/bench/checkout",
    "version": "1.0.0",
    "digest": "sha256:" + "c4" * 32,
}


def _question(index: int) -> dict[str, Any]:
    return {
        "service": "checkout",
        "environment": "production",
        "change_id": _CHANGE,
        "actor": "bench-bot",
        "deployment_id": f"bench-gate-{index}",
        **_ARTIFACT,
    }


def main(url: str, token: str, requests: int, out: Path) -> None:
    """Ask the gate `requests` times, one after the other; see the module docstring."""
    latencies: list[float] = []
    failures: list[str] = []
    decisions: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        start = time.perf_counter()
        for index in range(requests):
            sent = time.perf_counter()
            answer = client.post("/v1/gate", json=_question(index))
            elapsed = (time.perf_counter() - sent) * 1000
            if answer.status_code == 200:
                latencies.append(elapsed)
                decisions[answer.json()["decision"]] += 1
            else:
                failures.append(f"{answer.status_code} {answer.text[:200]}")
        seconds = time.perf_counter() - start
    result = {
        "seconds": seconds,
        "latencies_ms": latencies,
        "failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "decisions": dict(decisions),
    }
    out.write_text(json.dumps(result), encoding="utf-8")


def seed(stack: Stack, token: str) -> None:
    """The change request the gate is asked about and the build it deploys, reported and
    stored in the ledger."""
    assert stack.api is not None and stack.store is not None
    now = datetime.now(UTC)
    change = {
        "family": "change",
        "change_id": _CHANGE,
        "system": "servicenow",
        "state": "approved",
        "services": ["checkout"],
        "environments": ["prod"],
        "planned_start": (now - timedelta(hours=1)).isoformat(),
        "planned_end": (now + timedelta(hours=4)).isoformat(),
        "occurred_at": (now - timedelta(minutes=5)).isoformat(),
    }
    build = {
        "family": "artifact",
        **_ARTIFACT,
        "builder": "github-actions",
        "occurred_at": (now - timedelta(minutes=10)).isoformat(),
    }
    answer = httpx.post(
        stack.api.url + "/v1/events",
        json=[change, build],
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    if answer.status_code != 202:
        raise click.ClickException(f"seeding the change request failed: {answer.text[:300]}")
    store = stack.store
    deadline = time.monotonic() + 120
    while store.count("change_events") < 1 or store.count("artifact_events") < 1:
        if time.monotonic() > deadline:
            raise click.ClickException("the change request or the build did not reach the ledger")
        time.sleep(0.05)


def gate_markdown(gate: dict[str, Any]) -> list[str]:
    """The section of results.md."""
    latency = gate["request_to_decision"]
    met = "met" if gate["target_met"] else "NOT met"
    answers = ", ".join(f"{n} {d}" for d, n in sorted(gate["decisions"].items()))
    return [
        f"Pre-deploy gate (`POST /v1/gate`, {gate['requests']} questions one at a time on a "
        "keep-alive connection from a client process; each answer after the ledger read, the "
        f"judgement and Kafka's ack of the recorded decision; answers: {answers}): p50 "
        f"{latency['p50_ms']} ms, p99 {latency['p99_ms']} ms, max {latency['max_ms']} ms "
        f"(target p99 < {gate['target_p99_ms']:.0f} ms: {met}).",
        "",
    ]


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
