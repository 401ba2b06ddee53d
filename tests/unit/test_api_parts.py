"""The ingest API's pure parts: tokens, limits, event preparation, upload parsing, CLI."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from shipledger.producers.api import events
from shipledger.producers.api.auth import AuthError, AuthStore, Principal
from shipledger.producers.api.cli import tokens, webhooks
from shipledger.producers.api.events import FieldError, Forbidden, Prepared, prepare, unwrap
from shipledger.producers.api.limits import RateLimiter, TooLarge, read_capped
from shipledger.producers.api.uploads import BadFormat, Record, records, upload_format
from shipledger.settings import Settings
from tests.kit import FAMILY_EVENTS

SHA = "ab" * 20
EVENT = {
    "deployment_id": "d1",
    "event_type": "started",
    "service": "checkout",
    "environment": "prod",
    "commit_sha": SHA,
    "actor": "alice",
}
ACME = Principal("t1", "acme", frozenset({"ingest"}))


async def _chunks(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _collect(fmt: str, data: bytes) -> list[Record]:
    return [r async for r in records(fmt, _chunks(data))]  # type: ignore[arg-type]


def test_tokens_are_hashed_and_checked(tmp_path: Path) -> None:
    store = AuthStore(tmp_path / "auth.sqlite3")
    try:
        token, info = store.create_token("acme", ("ingest", "read"), name="ci")
        raw = (tmp_path / "auth.sqlite3").read_bytes()
        assert token.encode() not in raw and token.split("_", 2)[2].encode() not in raw
        assert store.verify(token) == Principal(info.id, "acme", frozenset({"ingest", "read"}))
        with pytest.raises(AuthError, match="unknown"):
            store.verify(token[:-1] + ("A" if token[-1] != "A" else "B"))
        with pytest.raises(ValueError, match="scopes must be some of"):
            store.create_token("acme", ("write",))
        store.revoke(info.id)
        with pytest.raises(AuthError, match="revoked"):
            store.verify(token)
    finally:
        store.close()


def test_token_bucket() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") == 0.0
    assert limiter.acquire("a") == pytest.approx(0.5)
    assert limiter.acquire("b") == 0.0  # per key
    now[0] = 0.5
    assert limiter.acquire("a") == 0.0


def test_read_capped() -> None:
    assert asyncio.run(read_capped(_chunks(b"x" * 10), 10, "body")) == b"x" * 10
    with pytest.raises(TooLarge, match="body exceeds the limit of 9 bytes"):
        asyncio.run(read_capped(_chunks(b"x" * 10), 9, "body"))


def test_prepare_fills_tenant_and_a_stable_id() -> None:
    settings = Settings()
    timed = {**EVENT, "occurred_at": "2026-11-26T10:00:00Z"}
    first, again = (prepare(dict(timed), 0, ACME, settings, "api") for _ in range(2))
    assert isinstance(first, Prepared) and isinstance(again, Prepared)
    assert first.event_id == again.event_id and first.tenant == "acme"
    assert first.key == b"acme/d1" and first.topic == "shipledger.deployments.raw"
    untimed = prepare(dict(EVENT), 0, ACME, settings, "api")
    time.sleep(0.002)  # a body without a time is a new event each time it is sent
    later = prepare(dict(EVENT), 0, ACME, settings, "api")
    assert isinstance(untimed, Prepared) and isinstance(later, Prepared)
    assert untimed.event_id != later.event_id
    assert prepare({**EVENT, "family": "nope"}, 3, ACME, settings, "api") == [
        FieldError(
            3,
            "family",
            "unknown event family 'nope': known families are deployment, change, source, "
            "artifact, signal, catalog",
        )
    ]
    with pytest.raises(Forbidden, match="not 'globex'"):
        prepare({**EVENT, "tenant": "globex"}, 0, ACME, settings, "api")
    operator = Principal("t2", "*", frozenset({"ingest"}))
    made = prepare({**EVENT, "tenant": "globex"}, 0, operator, settings, "api")
    assert isinstance(made, Prepared) and made.tenant == "globex"


def test_prepare_many_answers_as_prepare_does_item_by_item() -> None:
    """A batch is validated per family in one call (`prepare_many`); whatever it holds, each
    item's answer is the one `prepare` gives it alone: valid events of every family in order,
    field errors by index, another tenant's event Forbidden, a family with one invalid
    event still preparing its valid ones."""
    settings = Settings()
    timed = {**EVENT, "occurred_at": "2026-11-26T10:00:00Z"}
    families = [
        {"family": name, **event, "occurred_at": timed["occurred_at"]}
        for name, event in sorted(FAMILY_EVENTS.items())
    ]
    batch: list[object] = [
        *families,
        dict(timed, deployment_id="d2"),
        {**timed, "commit_sha": "abc"},
        {**timed, "tenant": "globex"},
        {**timed, "family": "nope"},
        "not an object",
        {**timed, "occurred_at": "1999-01-01T00:00:00Z"},
        dict(timed, deployment_id="d3"),
    ]

    def alone(index: int, item: object) -> object:
        try:
            return prepare(item, index, ACME, settings, "api")
        except Forbidden as exc:
            return exc.error

    def together(result: object) -> object:
        return result.error if isinstance(result, Forbidden) else result

    many = [together(r) for r in events.prepare_many(batch, ACME, settings, "api")]
    assert many == [alone(index, item) for index, item in enumerate(batch)]
    assert sum(isinstance(r, Prepared) for r in many) == len(families) + 2
    valid_only = [dict(timed, deployment_id=f"d{i}") for i in range(3)]
    assert events.prepare_many(valid_only, ACME, settings, "api") == [
        prepare(item, index, ACME, settings, "api") for index, item in enumerate(valid_only)
    ]


def test_unwrap_shapes() -> None:
    assert unwrap({"a": 1}) == [{"a": 1}]
    assert unwrap([{"a": 1}]) == [{"a": 1}]
    assert unwrap({"events": [{"a": 1}]}) == [{"a": 1}]
    assert unwrap("x") is None


def test_upload_format() -> None:
    assert upload_format(None, "application/x-ndjson; charset=utf-8") == "ndjson"
    assert upload_format("csv", "application/x-ndjson") == "csv"
    with pytest.raises(BadFormat, match="Content-Type"):
        upload_format(None, "text/plain")


def test_ndjson_records_by_line() -> None:
    data = b'{"a": 1}\r\n\n{bad\n{"b": 2}'
    got = asyncio.run(_collect("ndjson", data))
    assert [(r.line, r.obj) for r in got] == [(1, {"a": 1}), (3, None), (4, {"b": 2})]
    assert got[1].error is not None and "not valid JSON" in got[1].error


def test_csv_records() -> None:
    data = b'\xef\xbb\xbfa,b,attributes.team,list\n1,"x\ny",t1,"[""p"",""q""]"\n2,,,\n3,4,5,6,7\n'
    got = asyncio.run(_collect("csv", data))
    assert got[0] == Record(
        2, {"a": "1", "b": "x\ny", "attributes": {"team": "t1"}, "list": ["p", "q"]}
    )
    assert got[1] == Record(4, {"a": "2"})
    assert got[2].line == 5 and got[2].error == "5 cells but the header names 4 columns"
    tail = asyncio.run(_collect("csv", b'a\n"open\n'))
    assert tail == [Record(2, None, "unterminated quoted cell at the end of the file")]


def test_tokens_and_secrets_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path)]
    made = runner.invoke(
        tokens, ["create", "--tenant", "acme", "--scope", "ingest", "--expires-in", "30d", *data]
    )
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[0]
    assert token.startswith("sl_")
    listed = runner.invoke(tokens, ["list", *data])
    assert token.split("_")[1] in listed.output and token not in listed.output
    assert "active" in listed.output
    assert runner.invoke(tokens, ["revoke", token.split("_")[1], *data]).exit_code == 0
    assert "revoked" in runner.invoke(tokens, ["list", *data]).output
    bad = runner.invoke(
        tokens, ["create", "--tenant", "a", "--scope", "ingest", "--expires-in", "soon", *data]
    )
    assert bad.exit_code == 2 and "lifetime must be a positive number" in bad.output
    secret = runner.invoke(
        webhooks, ["secret", "set", "--tenant", "acme", "--provider", "github", *data]
    )
    assert secret.exit_code == 0 and len(secret.stdout.strip()) > 30
    short = runner.invoke(
        webhooks,
        ["secret", "set", "--tenant", "acme", "--provider", "gitlab", "--stdin", *data],
        input="s3cret\n",
    )
    assert short.exit_code == 2 and "6 characters: use at least 16" in short.output
    piped = runner.invoke(
        webhooks,
        ["secret", "set", "--tenant", "acme", "--provider", "gitlab", "--stdin", *data],
        input="s3cret-s3cret-s3cret\n",
    )
    assert piped.exit_code == 0
    # A misspelt provider stored a secret no webhook route reads, and said it was set.
    typo = runner.invoke(
        webhooks, ["secret", "set", "--tenant", "acme", "--provider", "githb", *data]
    )
    assert typo.exit_code == 2 and "--provider" in typo.output and "github" in typo.output
    store = AuthStore(tmp_path / "auth.sqlite3")
    try:
        assert store.webhook_secret("acme", "gitlab") == "s3cret-s3cret-s3cret"
        assert store.webhook_secret("acme", "github") == secret.stdout.strip()
        assert store.webhook_secret("globex", "github") is None
        assert store.webhook_secret("acme", "githb") is None
    finally:
        store.close()
