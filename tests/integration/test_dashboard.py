"""The live dashboard in a real browser: Debian's chromium driven by Playwright (`make
test-deps` installs it; Playwright's own browsers are never downloaded), on a stack of its
own broker (paused to test the outage banner), Faust worker, sink and chDB, and an API
serving the page.

The sink runs on a thread of this process (the stack's): a test holds its writes back with a
gate in front of its `flush` (it writes and commits once let go), so the ledger is behind the
stream for as long as the test needs, as it is for a moment under load; or it defers the
sink's commits, so the ledger holds rows the sink's offsets do not yet say it holds.
The API reads the ledger through a switch (a declared stand-in for an unreachable
ClickHouse server: chDB runs in process and cannot go away) so the ClickHouse outage can be
tested too. Every wait is for a condition, with a generous deadline.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from shipledger.producers.api.ledger_link import LedgerLink
from shipledger.producers.api.server import ApiServer
from shipledger.settings import Settings
from shipledger.sinks.ledger.reader import LedgerReader, LedgerUnavailable
from shipledger.sinks.sink import ClickHouseSink
from shipledger.up.broker import EmbeddedBroker
from shipledger.up.stack import Stack
from tests.kit import SHA, CliEnv, api_event, api_token, own_settings, run_shipledger, wait_for

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
#: Generous: the event goes through the CLI, the broker, the worker and the API's consumer.
DEADLINE_MS = 60_000


@dataclass
class SwitchedLedger(LedgerLink):
    """The API's `LedgerLink` over the stack's own reader, behind a switch: `down` makes every
    read fail as an unreachable ClickHouse server does."""

    def __init__(self, settings: Settings, reader: LedgerReader) -> None:
        super().__init__(settings)
        self.reader = reader
        self.down = False

    def _reads(self) -> LedgerReader:
        if self.down:
            raise LedgerUnavailable("stand-in: ClickHouse is unreachable")
        return self.reader


@dataclass
class Live:
    """The running pieces: the broker (to pause), the sink (to hold back), the API's URL,
    read tokens, the ledger switch, and how to run the CLI against this stack."""

    broker: EmbeddedBroker
    sink: ClickHouseSink
    settings: Settings
    url: str
    ledger: SwitchedLedger
    env: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)

    @contextmanager
    def sink_held(self) -> Iterator[None]:
        """The sink writes nothing until the block ends (its next `flush` waits at a gate,
        then writes and commits everything it consumed meanwhile)."""
        gate = threading.Event()
        flush = self.sink.flush

        def held() -> None:
            gate.wait()
            flush()

        self.sink.flush = held  # type: ignore[method-assign]
        try:
            yield
        finally:
            del self.sink.flush  # the method again, for the flush after the one that waits
            gate.set()

    @contextmanager
    def commits_deferred(self) -> Iterator[None]:
        """The sink writes but commits nothing until the block ends: its offsets are kept
        and committed with its first commit after the block."""
        kept: dict[tuple[str, int], int] = {}
        commit, released = self.sink._commit, threading.Event()

        def deferred(offsets: Mapping[tuple[str, int], int]) -> None:
            kept.update(offsets)
            if released.is_set():
                del self.sink._commit
                commit(kept)

        self.sink._commit = deferred  # type: ignore[method-assign]
        try:
            yield
        finally:
            released.set()

    def state(self, tenant: str) -> dict[str, Any]:
        """`GET /v1/dashboard/state` with a read token of `tenant`."""
        with httpx.Client(base_url=self.url, timeout=30) as client:
            headers = {"Authorization": f"Bearer {self.token(tenant)}"}
            answer = client.get("/v1/dashboard/state", headers=headers)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def stored(self, tenant: str, deployment: str) -> bool:
        """Whether the ledger's state (its timeline) has a record of `deployment`."""
        return any(d["deployment_id"] == deployment for d in self.state(tenant)["timeline"])

    def token(self, tenant: str) -> str:
        """A read token of `tenant` (`*`: every tenant), made once."""
        if tenant not in self.tokens:
            self.tokens[tenant] = api_token(self.settings, tenant, ("read",), name="browser")
        return self.tokens[tenant]

    def post(self, tenant: str, events: list[dict[str, object]]) -> None:
        """`POST /v1/events` of `events` with an ingest token of `tenant`."""
        token = api_token(self.settings, tenant, name="browser test")
        with httpx.Client(base_url=self.url, timeout=30) as client:
            answer = client.post(
                "/v1/events", json=events, headers={"Authorization": f"Bearer {token}"}
            )
        assert answer.status_code == 202, answer.text

    def emit(self, tenant: str, environment: str = "prod", service: str = "checkout") -> str:
        """`shipledger emit started` of a new deployment, as a CI job runs it; its id."""
        deployment = f"dep-{uuid.uuid4().hex[:10]}"
        done = run_shipledger(
            "emit", "started", "--deployment-id", deployment, "--service", service,
            "--environment", environment, "--commit-sha", SHA, "--actor", "alice",
            "--tenant", tenant, env=self.env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return deployment


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, cli_env: CliEnv) -> Iterator[Live]:
    """A broker of this module's own, a stack on it and an API serving the dashboard."""
    tmp = tmp_path_factory.mktemp("dashboard")
    settings = own_settings(tmp, sink_batch_ms=100, stream_health_interval_s=0.5)
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
        settings = settings.model_copy(update={"bootstrap_servers": broker.bootstrap})
        with Stack(settings, bootstrap=broker.bootstrap, log_dir=tmp / "logs") as stack:
            assert stack.store is not None and stack.sink is not None
            ledger = SwitchedLedger(settings, LedgerReader(stack.store))
            env = cli_env(settings, broker.bootstrap)
            with ApiServer(settings, broker.bootstrap, ledger) as api:
                yield Live(broker, stack.sink, settings, api.url, ledger, env)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless."""
    assert Path(CHROMIUM).exists(), "the browser tests need Debian's chromium: make test-deps"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def open_page(browser: Browser, live: Live, tenant: str, query: str = "") -> Page:
    """The dashboard signed in with a read token of `tenant`, its stream connected."""
    page = browser.new_page()
    page.on("pageerror", lambda error: print(f"page error: {error}"))
    page.on("console", lambda message: print(f"console: {message.text}"))
    page.set_default_timeout(DEADLINE_MS)
    page.goto(f"{live.url}/{query}")
    page.fill("#token", live.token(tenant))
    page.click("#login button")
    expect(page.locator("#conn")).to_have_attribute("data-open", "1", timeout=DEADLINE_MS)
    return page


def shown(page: Page, deployment: str) -> None:
    """Wait until `deployment` is on the timeline and in the grid."""
    expect(page.locator(f"#timeline li[data-deployment='{deployment}']")).to_have_count(
        1, timeout=DEADLINE_MS
    )
    expect(page.locator(f"#grid td[data-deployment='{deployment}']")).to_have_count(
        1, timeout=DEADLINE_MS
    )


def absent(page: Page, deployment: str) -> None:
    """`deployment` is nowhere on the page."""
    assert page.locator(f"[data-deployment='{deployment}']").count() == 0


def test_page_and_assets_are_served_without_a_token(live: Live) -> None:
    with httpx.Client(base_url=live.url, timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
        assert client.get("/static/../auth.sqlite3").status_code == 404
        assert client.get("/v1/stream").status_code == 401
        assert client.get("/v1/dashboard/state").status_code == 401


def test_an_event_emitted_by_the_cli_appears_live(browser: Browser, live: Live) -> None:
    page = open_page(browser, live, "acme")
    deployment = live.emit("acme")
    shown(page, deployment)
    expect(page.locator(f"#alerts li[data-deployment='{deployment}']").first).to_be_visible()
    # A new page starts from the ledger's state: the deployment is there too.
    again = open_page(browser, live, "acme")
    shown(again, deployment)
    page.close()
    again.close()


def test_filters_hold(browser: Browser, live: Live) -> None:
    everything = open_page(browser, live, "acme")
    dev_only = open_page(browser, live, "acme", "?environment=dev")
    in_prod = live.emit("acme", environment="prod")
    # The hub fans each batch out to every client at once: once the unfiltered page has it,
    # the filtered page's queue was offered it before anything emitted later.
    shown(everything, in_prod)
    in_dev = live.emit("acme", environment="dev")
    shown(dev_only, in_dev)
    absent(dev_only, in_prod)
    # Its first state, from the ledger, holds the filter too.
    dev_only.reload()
    shown(dev_only, in_dev)
    absent(dev_only, in_prod)
    # Changing the filter in the page reloads what it shows.
    dev_only.select_option("#f-environment", "")
    shown(dev_only, in_prod)
    everything.close()
    dev_only.close()


def _service(name: str, team: str, dependencies: list[str]) -> dict[str, object]:
    return {
        "family": "catalog",
        "event_id": str(uuid.uuid4()),
        "entity": "service",
        "action": "created",
        "name": name,
        "owner_team": team,
        "dependencies": dependencies,
    }


def test_team_filter_and_the_blast_radius_on_the_service_map(browser: Browser, live: Live) -> None:
    prefix = uuid.uuid4().hex[:6]
    web, api, db = (f"{prefix}-{name}" for name in ("web", "api", "db"))
    live.post(
        "acme",
        [_service(web, "front", [api]), _service(api, "back", [db]), _service(db, "back", [])],
    )

    def mapped() -> bool:
        with httpx.Client(base_url=live.url, timeout=30) as client:
            headers = {"Authorization": f"Bearer {live.token('acme')}"}
            nodes = client.get("/v1/topology", headers=headers).json()["nodes"]
        return any(n["service"] == db and n["blast_radius"] == [api, web] for n in nodes)

    wait_for(mapped, "the catalog in the ledger")
    everything = open_page(browser, live, "acme")
    back_only = open_page(browser, live, "acme", "?team=back")
    theirs, ours = api_event(service=web, team="front"), api_event(service=api, team="back")
    live.post("acme", [theirs])
    shown(everything, str(theirs["deployment_id"]))
    live.post("acme", [ours])
    shown(back_only, str(ours["deployment_id"]))
    absent(back_only, str(theirs["deployment_id"]))
    # The map: a deployment of db would hurt api and, through it, web.
    everything.goto(f"{live.url}/#topology")
    node = everything.locator(f"#map g.node[data-id='acme/{db}']")
    node.click()
    expect(everything.locator("#map g.node.blast")).to_have_count(2, timeout=DEADLINE_MS)
    expect(everything.locator("#blast")).to_contain_text(f"{api}, {web}")
    everything.close()
    back_only.close()


def test_a_token_sees_only_what_its_principal_sees(browser: Browser, live: Live) -> None:
    """`Principal.sees` on every event and row: a tenant's token today; the team and
    environment scopes of RBAC go through the same check."""
    operator = open_page(browser, live, "*")
    acme = open_page(browser, live, "acme")
    other = live.emit("globex")
    shown(operator, other)
    mine = live.emit("acme")
    shown(acme, mine)
    absent(acme, other)
    acme.reload()
    shown(acme, mine)
    absent(acme, other)
    state = live.state("acme")
    assert {row["tenant"] for row in state["current"] + state["timeline"]} == {"acme"}
    operator.close()
    acme.close()


def test_a_reload_shows_what_was_streamed_before_the_ledger_stored_it(
    browser: Browser, live: Live
) -> None:
    """The page's view is the ledger's state and everything streamed since, each once: a
    reload while the sink is behind (held here; under load, for a moment) still shows what
    the stream already carried, replayed from the state's position, and what both the
    ledger and the replay hold is shown once."""
    page = open_page(browser, live, "acme")
    other = open_page(browser, live, "globex")
    with live.commits_deferred():
        with live.sink_held():
            mine, theirs = live.emit("acme"), live.emit("globex")
            shown(page, mine)
            shown(other, theirs)
            assert not live.stored("acme", mine)  # streamed, not in the ledger
            page.reload()
            shown(page, mine)
            absent(page, theirs)  # the replay passes the same checks as the live stream
            other.reload()
            shown(other, theirs)
            absent(other, mine)
            assert live.state("acme")["stream"]["complete"] is True
        # In the ledger now, and replayed still (the sink's offsets do not say it is stored).
        wait_for(lambda: live.stored("acme", mine), "the record in the ledger")
        page.reload()
        # Drawn after the replay was applied (one chunk: the events the stream had queued).
        expect(page.locator("#conn")).to_have_attribute(
            "data-event", re.compile(r".+-\d+"), timeout=DEADLINE_MS
        )
        expect(page.locator(f"#timeline li[data-deployment='{mine}']")).to_have_count(1)
        shown(page, mine)
        absent(page, theirs)
    after = live.emit("acme")  # its flush commits what was deferred
    shown(page, after)
    expect(page.locator(f"#timeline li[data-deployment='{mine}']")).to_have_count(1)
    # The hub reads the sink's committed offsets: once the ledger has these, the position
    # moves past them (without the offsets it would stay before everything kept).
    wait_for(
        lambda: (
            live.stored("acme", after)
            and not live.state("acme")["stream"]["last_event_id"].endswith("-0")
        ),
        "a position past what the sink stored",
    )
    page.close()
    other.close()


def test_without_clickhouse_the_stream_goes_on(browser: Browser, live: Live) -> None:
    live.ledger.down = True
    try:
        page = open_page(browser, live, "acme")
        note = page.locator("#ledger-note")
        expect(note).to_be_visible(timeout=DEADLINE_MS)
        expect(note).to_contain_text("ClickHouse")
        deployment = live.emit("acme")
        shown(page, deployment)
    finally:
        live.ledger.down = False
    expect(note).to_be_hidden(timeout=DEADLINE_MS)  # it retries by itself
    page.close()


def test_without_kafka_the_ledgers_state_is_shown_stale_and_it_recovers(
    browser: Browser, live: Live
) -> None:
    before = live.emit("acme")
    page = open_page(browser, live, "acme")
    shown(page, before)
    banner = page.locator("#banner")
    expect(banner).to_be_hidden()
    pid = live.broker.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # the broker stops answering, connections stay open
    try:
        expect(banner).to_be_visible(timeout=DEADLINE_MS)
        expect(banner).to_contain_text("stale since")
        # A page opened now serves the ledger's last state, with the banner.
        fresh = open_page(browser, live, "acme")
        shown(fresh, before)
        expect(fresh.locator("#banner")).to_contain_text("stale since", timeout=DEADLINE_MS)
    finally:
        os.kill(pid, signal.SIGCONT)
    expect(banner).to_be_hidden(timeout=DEADLINE_MS)
    expect(fresh.locator("#banner")).to_be_hidden(timeout=DEADLINE_MS)
    after = live.emit("acme")
    shown(page, after)
    page.close()
    fresh.close()
