"""The dashboard's routes on an API apart from the ledger (`shipledger api` with a ClickHouse
server URL) while that server is down: the page is served, reads answer 503 saying why, and
the link tries the server again only after its pause."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shipledger.producers.api.app import create_app
from shipledger.producers.api.auth import AuthStore
from shipledger.producers.api.context import ApiContext
from shipledger.producers.api.ledger_link import LedgerLink
from shipledger.settings import Settings
from shipledger.sinks.ledger import reader
from tests.kit import own_settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, str, LedgerLink]]:
    settings = own_settings(tmp_path, clickhouse_url=f"http://127.0.0.1:{_closed_port()}")
    auth = AuthStore(settings.resolved_auth_db)
    token = auth.create_token("acme", ("read",))[0]
    link = LedgerLink(settings, retry_s=3600)
    try:
        with TestClient(create_app(ApiContext(settings=settings, auth=auth, ledger=link))) as c:
            yield c, token, link
    finally:
        link.close()
        auth.close()


def test_the_page_is_served_and_reads_say_the_ledger_is_down(
    api: tuple[TestClient, str, LedgerLink], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, token, _ = api
    page = client.get("/")
    assert page.status_code == 200 and "<title>shipledger" in page.text
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/static/index.html").status_code == 404  # only the listed assets
    headers = {"Authorization": f"Bearer {token}"}
    opens: list[Settings] = []
    real_open = reader.LedgerReader.open

    def counted(settings: Settings) -> AbstractContextManager[reader.LedgerReader]:
        opens.append(settings)
        return real_open(settings)

    monkeypatch.setattr(reader.LedgerReader, "open", counted)
    for path in ("/v1/dashboard/state", "/v1/topology"):
        answer = client.get(path, headers=headers)
        assert answer.status_code == 503, answer.text
        assert "ClickHouse" in answer.json()["error"] or "ledger" in answer.json()["error"]
    # POST /v1/query of the same API: 503 with Retry-After, not a 500.
    query = client.post("/v1/query", headers=headers, json={"sql": "SELECT 1"})
    assert query.status_code == 503 and query.headers["retry-after"] == "5"
    assert len(opens) == 1  # tried once; again only after the link's pause
    # No broker configured: no stream, said so.
    assert client.get("/v1/stream", headers=headers).status_code == 503
