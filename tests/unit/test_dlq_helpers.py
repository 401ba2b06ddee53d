"""Pure helpers of `shipledger dlq`: ids, headers, selection, formatting, payload display."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from shipledger.cli import cli
from shipledger.clients import reader_consumer, topic_partitions
from shipledger.dlq import (
    Letter,
    LetterId,
    describe_payload,
    format_table,
    paced,
    parse_letter_id,
    select_letters,
    truncate,
)
from shipledger.schemas.letters import header_text as parse_headers
from shipledger.schemas.letters import replay_headers
from shipledger.schemas.registry import AvroCodec
from shipledger.settings import Settings
from tests.kit import deployment_event


def letter(p: int, o: int, **headers: str) -> Letter:
    return Letter(LetterId(p, o), b"k", b"v", headers)


@pytest.mark.parametrize(("text", "want"), [("2:15", (2, 15)), (" 0:0 ", (0, 0))])
def test_parse_letter_id(text: str, want: tuple[int, int]) -> None:
    parsed = parse_letter_id(text)
    assert (parsed.partition, parsed.offset) == want
    assert str(parsed) == f"{want[0]}:{want[1]}"


@pytest.mark.parametrize(
    "text", ["", "2", "2:", ":15", "a:1", "1:2:3", "-1:4", "1:x", "\u00b2:1", "1:\u00b3"]
)
def test_parse_letter_id_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="PARTITION:OFFSET"):
        parse_letter_id(text)


def test_bad_id_is_a_usage_error_before_any_kafka() -> None:
    result = CliRunner().invoke(cli, ["dlq", "--bootstrap", "127.0.0.1:1", "show", "2-15"])
    assert result.exit_code == 2
    assert "'2-15' is not a letter id" in result.output
    assert "PARTITION:OFFSET" in result.output


def test_no_broker_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHIPLEDGER_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("SHIPLEDGER_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["dlq", "list"])
    assert result.exit_code == 2
    assert "no broker" in result.output and "--bootstrap" in result.output


def test_replay_needs_ids_or_all() -> None:
    result = CliRunner().invoke(cli, ["dlq", "--bootstrap", "127.0.0.1:1", "replay"])
    assert result.exit_code == 2
    assert "--all" in result.output


@pytest.mark.parametrize("rate", ["0", "-1", "fast", "nan", "inf"])
def test_a_bad_rate_is_a_usage_error_naming_it_before_any_kafka(rate: str) -> None:
    result = CliRunner().invoke(
        cli, ["dlq", "--bootstrap", "127.0.0.1:1", "replay", "--all", "--rate", rate]
    )
    assert result.exit_code == 2
    assert "--rate" in result.output


def test_a_broker_that_does_not_answer_is_a_clear_error(settings: Settings) -> None:
    """Not a traceback: `dlq list/show/replay` and `alerts tail` ask a topic's partitions
    through `topic_partitions`, which names the broker it could not reach."""
    consumer = reader_consumer(settings, "127.0.0.1:1", "test")
    try:
        with pytest.raises(
            click.ClickException, match=r"cannot reach the broker at 127\.0\.0\.1:1"
        ):
            topic_partitions(consumer, "127.0.0.1:1", "anything", 1.0)
    finally:
        consumer.close()


def test_parse_headers_list_dict_none_and_bad_utf8() -> None:
    assert parse_headers(None) == {}
    assert parse_headers([]) == {}
    assert parse_headers([("reason", b"bad"), ("field", None), ("stage", "sink")]) == {
        "reason": "bad",
        "field": "",
        "stage": "sink",
    }
    assert parse_headers({"reason": b"\xffx"}) == {"reason": "\ufffdx"}


def test_letter_properties_and_summary() -> None:
    x = letter(
        1,
        7,
        reason="commit_sha: too short",
        field="commit_sha",
        source_topic="p.deployments.raw",
        source_partition="0",
        source_offset="42",
        stage="processors",
    )
    assert x.letter.source == "p.deployments.raw/0/42"
    assert x.summary() == {
        "id": "1:7",
        "stage": "processors",
        "source_topic": "p.deployments.raw",
        "source_partition": 0,
        "source_offset": 42,
        "field": "commit_sha",
        "reason": "commit_sha: too short",
        "replayed_from": None,
    }
    bare = letter(0, 0)
    assert bare.source_topic is None
    assert bare.letter.source == "?/?/?"
    assert bare.summary()["source_offset"] is None


def test_select_by_id_and_stage() -> None:
    a, b, c = letter(0, 1, stage="processors"), letter(1, 1, stage="sink"), letter(1, 2)
    assert select_letters([a, b, c]) == [a, b, c]
    assert select_letters([a, b, c], stage="sink") == [b]
    assert select_letters([a, b, c], [LetterId(1, 2), LetterId(0, 1)]) == [a, c]
    assert select_letters([a, b, c], [LetterId(0, 1)], stage="sink") == []


def test_table_truncates_reasons() -> None:
    assert truncate("a  b\nc", 10) == "a b c"
    assert truncate("x" * 20, 10) == "x" * 9 + "…"
    table = format_table([letter(0, 3, reason="r" * 200, stage="sink", source_topic="t")])
    header, _rule, row = table.splitlines()
    assert header.split() == ["ID", "STAGE", "SOURCE", "FIELD", "REASON"]
    assert row.split()[:4] == ["0:3", "sink", "t/?/?", "-"]
    assert row.endswith("…") and len(row) < 120


def test_describe_payload_decodes_events_and_previews_junk() -> None:
    event = deployment_event(deployment_id="d", service="s", commit_sha="0f" * 20, actor="a")
    decoded, text = describe_payload(
        AvroCodec("io.shipledger.v1.DeploymentEvent").encode(event.to_avro())
    )
    assert decoded is not None and decoded["deployment_id"] == "d"
    assert json.loads(text)["commit_sha"] == "0f" * 20

    decoded, text = describe_payload(b"{not avro}" * 100)
    assert decoded is None
    assert "not a valid Avro" in text and "magic byte" in text
    assert "1000 bytes in all" in text and len(text) < 600
    assert describe_payload(None)[0] is None


def test_replay_headers_name_the_letter() -> None:
    assert replay_headers(str(letter(2, 15).id)) == (("replayed_from", b"2:15"),)


def test_a_replayed_letter_is_journaled_as_its_event() -> None:
    """`dlq replay` to an embedded stack journals what it sends; its letter id, should it be
    rejected again, names the replay (see shipledger.up.completeness)."""
    from shipledger.dlq import journal_entry
    from shipledger.schemas.letters import letter_id
    from shipledger.settings import Settings
    from shipledger.up.completeness import entry_letter_id

    settings = Settings()
    raw = settings.topic("deployments.raw")
    event = deployment_event(event_id="e-1", service="s", tenant="acme", actor="a")
    value = AvroCodec("io.shipledger.v1.DeploymentEvent").encode(event.to_avro())
    good = Letter(LetterId(1, 4), b"acme/d-1", value, {"source_topic": raw})
    entry = journal_entry(settings, good)
    assert (entry.family, entry.tenant, entry.event_id) == ("deployment", "acme", "e-1")
    assert entry_letter_id(entry) == letter_id(raw, b"acme/d-1", value, "1:4")
    garbage = Letter(LetterId(0, 2), b"globex/x", b"junk", {"source_topic": raw})
    entry = journal_entry(settings, garbage)
    assert (entry.family, entry.tenant, entry.event_id) == ("deployment", "globex", "")
    derived = Letter(LetterId(0, 3), b"k", b"v", {"source_topic": settings.topic("alerts")})
    assert journal_entry(settings, derived).family == ""  # not an event: not journaled


def test_a_paced_replay_sends_rate_letters_a_second_in_order() -> None:
    letters = [letter(0, n) for n in range(5)]
    assert paced(letters, None) == [(0.0, letters)]
    assert paced(letters, 2) == [(0.0, letters[:2]), (1.0, letters[2:4]), (2.0, letters[4:])]
    assert paced(letters, 0.5) == [(2.0 * n, [x]) for n, x in enumerate(letters)]
    assert paced([], 3) == [(0.0, [])]
