"""The one metrics recorder: prometheus-client underneath, read back the same way."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import generate_latest

from shipledger import metrics as m
from shipledger.processors.outputs import Outputs
from shipledger.schemas.letters import DeadLetter
from shipledger.settings import Settings
from tests.kit import SHA, sample_alert


def test_counters_and_timings_are_prometheus_samples() -> None:
    metrics = m.RecordingMetrics()
    metrics.increment(m.ROWS_INSERTED, 3, tags={"table": "alerts"})
    metrics.increment(m.ROWS_INSERTED, 2, tags={"table": "deployment_events"})
    metrics.increment(m.ESCALATION_ALERTS)
    metrics.timing(m.FLUSH_MS, 250.0)
    metrics.timing(m.FLUSH_MS, 125.0)
    metrics.set(m.JOBS_LEASE_HELD, 1)
    metrics.set(m.JOBS_LEASE_HELD, 0)
    assert metrics.total(m.ROWS_INSERTED) == 5
    assert metrics.by_tag(m.ROWS_INSERTED, "table") == {"alerts": 3, "deployment_events": 2}
    assert metrics.counters == {
        "escalation.alerts": 1,
        "sink.rows_inserted|table=alerts": 3,
        "sink.rows_inserted|table=deployment_events": 2,
    }
    summary = metrics.last_timing(m.FLUSH_MS)
    assert summary is not None and (summary.count, summary.last_ms) == (2, 125.0)
    assert summary.last_at > 0
    text = generate_latest(metrics.registry).decode()
    assert 'shipledger_sink_rows_inserted_total{table="alerts"} 3.0' in text
    assert "shipledger_sink_flush_seconds_count 2.0" in text
    assert "shipledger_sink_flush_last_seconds 0.125" in text
    assert "shipledger_jobs_lease_held 0.0" in text
    assert metrics.last_timing(m.INSERT_MS, {"table": "alerts"}) is None


def test_names_and_tags_must_be_declared() -> None:
    metrics = m.RecordingMetrics()
    with pytest.raises(KeyError, match="not a counter"):
        metrics.increment("sink.nonsense")
    with pytest.raises(KeyError, match="not a timing"):
        metrics.timing(m.ROWS_INSERTED, 1.0)
    with pytest.raises(KeyError, match="not a gauge"):
        metrics.set(m.ROWS_INSERTED, 1.0)
    with pytest.raises(ValueError, match=r"undeclared tags \['colour'\]"):
        metrics.increment(m.ROWS_INSERTED, tags={"table": "t", "colour": "red"})
    assert m.exposed_name(m.FLUSH_MS) == "shipledger_sink_flush_seconds"
    assert m.exposed_name(m.ALERTS_RAISED) == "shipledger_processors_alerts"


def test_lag_is_read_at_scrape_and_a_broker_error_leaves_it_out() -> None:
    metrics = m.RecordingMetrics()
    answers: list[dict[str, int] | Exception] = [{"t.raw": 7, "t.signals": 0}, OSError("down")]

    def read() -> dict[str, int]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    metrics.add_collector(m.LagCollector("t.processors", read))
    text = generate_latest(metrics.registry).decode()
    assert 'shipledger_consumer_lag{group="t.processors",topic="t.raw"} 7.0' in text
    assert "shipledger_consumer_lag{" not in generate_latest(metrics.registry).decode()


def test_served_on_an_ephemeral_port() -> None:
    metrics = m.RecordingMetrics()
    metrics.increment(m.API_EVENTS_PUBLISHED, 4, tags={"topic": "t.raw"})
    endpoint = m.serve(metrics, "127.0.0.1", 0, "test")
    assert endpoint is not None
    try:
        body = httpx.get(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=10).text
    finally:
        endpoint.stop()
    assert 'shipledger_api_events_published_total{topic="t.raw"} 4.0' in body
    assert m.serve(metrics, "127.0.0.1", None, "test") is None


def test_processor_outputs_count_what_they_send(settings: Settings) -> None:
    metrics = m.RecordingMetrics()
    outputs = Outputs(settings, "127.0.0.1:1", metrics, flush_timeout_s=0.1)
    alert = sample_alert(rule="suspect_deployment")
    outputs.send(outputs.encode(None, [alert]))
    letter = DeadLetter.rejecting(
        "processors", "bad", None, topic="p.deployments.raw", partition=0, offset=1, headers=None
    )
    outputs.dead_letter(b"k", SHA.encode(), letter.headers())
    topics = outputs.topics
    assert metrics.by_tag(m.PROCESSOR_EVENTS_OUT, "topic") == {topics.alerts: 1, topics.dlq: 1}
    assert metrics.by_tag(m.PROCESSOR_DEAD_LETTERED, "topic") == {"p.deployments.raw": 1}
    assert metrics.counters["processors.alerts|kind=alert,rule=suspect_deployment,severity=high"]
