"""The one configuration object: every `SHIPLEDGER_*` environment variable lives here.

Built once at each entry point and passed down; nothing else reads the environment.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

LogFormat = Literal["json", "console"]

#: A region's name: what a tenant's policy names (`regions:`) and a ledger is configured for.
_REGION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def check_region(name: str) -> str:
    """`name` if it is a region name (lowercase letters, digits, `-`, `_`; at most 32), else
    ValueError (pydantic names the field it was given for)."""
    if not _REGION_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a region name (lowercase letters, digits, - and _)")
    return name


def chdb_path(url: str) -> Path | None:
    """The data directory of a `chdb:///<dir>` URL, or None for a server / in-memory chDB.
    Here, beside the setting it reads, so a command can tell an embedded ledger from a server
    without importing the ClickHouse client (`shipledger query` answered by a stack's API)."""
    parsed = urlparse(url)
    if parsed.scheme != "chdb" or parsed.netloc or parsed.path in ("", "/"):
        return None
    return Path(parsed.path)


class RegionalLedger(BaseModel):
    """One region's ledger (`Settings.regional_ledgers`): None is the default ledger's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str | None = None
    database: str | None = None


class Settings(BaseSettings):
    """shipledger configuration, read from `SHIPLEDGER_*` environment variables."""

    # `__` reaches into a mapping: SHIPLEDGER_RECEIVER_SECRETS__SNOW_PROD sets one secret.
    model_config = SettingsConfigDict(
        env_prefix="SHIPLEDGER_", frozen=True, extra="ignore", env_nested_delimiter="__"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment. No .env file or secrets dir is configured: their
        sources found nothing, yet walked every field (`Settings()` took 7 ms, now 2 ms, in
        every command's start-up)."""
        return init_settings, env_settings

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(
        default=Path(".shipledger"),
        description=(
            "Directory for the embedded stack: chDB data, spool, stack file, journal, tokens. "
            "Unset: commands use ./.shipledger if `up` runs there, else the one running "
            "`shipledger up` of this user, else ./.shipledger if it exists (`shipledger.locate`)."
        ),
    )
    stacks_dir: Path | None = Field(
        default=None,
        description=(
            "Where each running `up` leaves a pointer to its data dir, so that commands run "
            "from any directory find it. Unset: ~/.local/state/shipledger/stacks."
        ),
    )
    bootstrap_servers: str | None = Field(
        default=None,
        description=(
            "Kafka bootstrap servers (host:port,...). Unset: `up` starts an embedded Tansu "
            "broker, and clients use the one recorded by a running `up` in the data dir."
        ),
    )
    topic_prefix: str = Field(
        default="shipledger.",
        description="Prefix of every topic name: one namespace per shipledger environment.",
    )
    topic_partitions: int = Field(default=4, ge=1, description="Partitions per topic created.")
    schema_registry_url: str | None = Field(
        default=None,
        description=(
            "A Confluent-compatible Schema Registry (http(s)://[user:pw@]host:8081): messages "
            "are framed with its schema ids, registered under `<topic>-value`, and ids not "
            "ours are looked up there. Unset: the catalog's own ids (schemas/catalog.yaml)."
        ),
    )
    clickhouse_url: str | None = Field(
        default=None,
        description=(
            "ClickHouse DSN: `chdb:///path` (embedded, in-process) or `http://user:pw@host:8123`"
            " for a server. Unset: chDB in `<data_dir>/clickhouse`."
        ),
    )
    clickhouse_database: str = Field(default="shipledger", description="ClickHouse database.")
    # --- production deployment (issue 14: docs/deploy.md, docs/cluster.md) ----------------
    clickhouse_cluster: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description=(
            "A ClickHouse cluster (remote_servers) to create the ledger on: Replicated*MergeTree "
            "local tables ON CLUSTER behind Distributed tables sharded by cityHash64(tenant). "
            "Needs a server URL. Unset: plain tables on the one server."
        ),
    )
    #: Production Kafka (deploy/, docs/deploy.md): each topic on this many brokers.
    topic_replication_factor: int = Field(
        default=1,
        ge=1,
        description="Replicas of each topic created (`shipledger topics create`, the sink, `up`).",
    )
    policy_file: Path | None = Field(
        default=None,
        description="Policy YAML (windows, freezes, required fields). Unset: built-in default.",
    )
    policy_version: str | None = Field(
        default=None,
        description=(
            "The policy version (version+digest) a worker must find in its policy file, else it "
            "refuses to start: `up` sets it, so its workers judge under the policy its sink "
            "stamps with. Unset: any."
        ),
    )

    # --- emitter -----------------------------------------------------------------------
    deployment_id: str | None = Field(
        default=None, description="Deployment id shared by every stage of one pipeline."
    )
    tenant: str = Field(
        default="default", min_length=1, description="Tenant of emitted events (not blank)."
    )
    emit_timeout_s: float = Field(
        default=5.0, gt=0, description="How long `emit` waits for the broker before spooling."
    )
    spool_dir: Path | None = Field(
        default=None, description="Where unsent events wait. Unset: `<data_dir>/spool`."
    )
    strict: bool = Field(
        default=False,
        description=(
            "Fail the CI step (exit 1) when an event cannot be sent, without spooling it (the "
            "retried step sends it). Not strict: spool it and exit 0. One event either way."
        ),
    )

    # --- what every edge (API, uploads, webhooks, emitter) accepts ----------------------
    earliest_event_time: AwareDatetime = Field(
        default=datetime(2000, 1, 1, tzinfo=UTC),
        description=(
            "Events (occurred_at, approvals' decided_at) before this time are refused with a "
            "reason: a year-0001 or epoch-0 time is a bug at the source, not a deployment."
        ),
    )
    max_future_skew_s: float = Field(
        default=3600.0,
        ge=0,
        description="How far ahead of this machine's clock an event time may be (clock skew).",
    )
    max_event_bytes: int = Field(
        default=512 * 1024,
        ge=1024,
        description=(
            "Largest encoded event (Avro bytes). Kept below Kafka's message.max.bytes (1 MB by "
            "default) so an event that Kafka would refuse forever is refused up front (422)."
        ),
    )

    # --- durable acknowledgement (embedded stack) --------------------------------------
    journal_fsync: bool = Field(
        default=True,
        description=(
            "fdatasync the embedded stack's write-ahead journal before acknowledging (a 202, "
            "`emit` exit 0): acknowledged events then survive a power loss, not only a crash."
        ),
    )
    journal_compact_interval_s: float = Field(
        default=30.0,
        gt=0,
        description=("How often `up` deletes journal segments whose every event is in the ledger."),
    )

    # --- consumers ---------------------------------------------------------------------
    fetch_wait_ms: int = Field(
        default=10,
        ge=1,
        description=(
            "Max fetch wait of every consumer but the sink's (`sink_fetch_wait_ms`). Tansu does "
            "not answer a waiting fetch early, so end-to-end latency follows this value: keep "
            "it short on the embedded stack. The workers' enrichment feed keeps it too: a "
            "worker about to flag a deployment's build waits for the feed's next fetches "
            "(`artifact_catch_up_s`), each time (at 100 ms, 2,000 such events did not drain "
            "in 30 s)."
        ),
    )
    sink_fetch_wait_ms: int = Field(
        default=100,
        ge=1,
        description=(
            "Max fetch wait of the sink's consumer. Tansu spends ~0.3-0.5 ms of CPU on every "
            "fetch, empty or not, and answers one only when its wait is over: at the 10 ms of "
            "`fetch_wait_ms` the idle sink alone cost the broker ~7 % of a core. The sink holds "
            "rows up to `sink_batch_ms` before inserting anyway, so this adds at most its value "
            "to a row's delay to queryable, nothing to an alert's."
        ),
    )
    sink_fetch_min_bytes: int = Field(
        default=1 << 20,
        ge=1,
        description=(
            "Least bytes a fetch of the sink's consumer waits for, up to `sink_fetch_wait_ms`: "
            "under steady traffic the sink then fetches every `sink_fetch_wait_ms` instead of "
            "as soon as a message is there (90-140 small fetches/s at 1,000 events/s)."
        ),
    )
    session_timeout_s: float = Field(
        default=6.0, gt=0, description="Consumer group session timeout (short joins on Tansu)."
    )
    processor_batch_size: int = Field(default=500, ge=1, description="Faust take() batch size.")
    processor_batch_within_s: float = Field(
        default=0.01, gt=0, description="Faust take() max wait for a batch to fill."
    )
    sink_batch_size: int = Field(default=5000, ge=1, description="Rows per ClickHouse insert.")
    sink_batch_ms: int = Field(
        default=200, ge=1, description="Max age of a ClickHouse batch before it is flushed."
    )
    sink_insert_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description=(
            "Longest one ClickHouse write of the sink may take (dedup read + insert); past it "
            "the sink stops without committing instead of hanging."
        ),
    )
    dlq_max_invalid_ratio: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description=(
            "DLQ limit: a consumer (processors, sink) stops when more than this share of its "
            "last SHIPLEDGER_DLQ_WINDOW_MESSAGES messages was dead-lettered."
        ),
    )
    dlq_window_messages: int = Field(
        default=1000, ge=1, description="DLQ limit: how many recent messages the ratio covers."
    )
    dlq_min_invalid: int = Field(
        default=100,
        ge=1,
        description="DLQ limit: the ratio applies once the window holds this many dead letters.",
    )
    dlq_max_consecutive: int = Field(
        default=500, ge=1, description="DLQ limit: most dead letters in a row before stopping."
    )
    dlq_retention_days: int = Field(
        default=7,
        ge=1,
        description=(
            "How long the DLQ topic keeps a letter (its retention.ms when shipledger creates "
            "it; Kafka's default week) and so how old a ledger letter `up`'s restore writes "
            "back to the embedded broker's DLQ at most. Older letters stay in the ledger's "
            "dead_letters table."
        ),
    )
    producer_linger_ms: float = Field(
        default=2.0,
        ge=0,
        description=(
            "Producer batching linger. Each acknowledgement of the API and the gate waits for "
            "it. Tansu's CPU goes by produce requests (~0.3-0.5 ms each): an event-at-a-time "
            "producer at 1,000 events/s on 4 partitions sent ~450 requests/s at 2 ms, ~330 at "
            "10 ms and ~200 at 20 ms; 10 ms cut the broker's CPU per event of `make bench`'s "
            "latency phase by ~100 µs."
        ),
    )
    producer_queue_messages: int = Field(
        default=100_000,
        ge=1,
        description=(
            "Messages one producer queues locally before a produce waits for deliveries to "
            "make room (librdkafka queue.buffering.max.messages)."
        ),
    )

    # --- ingest API ---------------------------------------------------------------------
    api_host: str = Field(
        default="127.0.0.1",
        description="Interface the ingest API listens on (`shipledger api`, `shipledger up`).",
    )
    api_port: int = Field(
        default=8470, ge=0, le=65535, description="Port of the ingest API (0: any free port)."
    )
    auth_db: Path | None = Field(
        default=None,
        description="SQLite file of API tokens and webhook secrets. Unset: <data_dir>/auth.sqlite3",
    )
    api_max_body_bytes: int = Field(
        default=5 * 1024 * 1024, ge=1, description="Largest `POST /v1/events` body (413 above)."
    )
    api_max_batch_events: int = Field(
        default=1000, ge=1, description="Most events in one `POST /v1/events` request (413 above)."
    )
    api_max_upload_bytes: int = Field(
        default=2 * 1024 * 1024 * 1024,
        ge=1,
        description="Largest `POST /v1/uploads` file (413 above; the upload is streamed).",
    )
    api_body_idle_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a request body may send nothing before its end (408 after): "
        "a client that declares a body and never sends it does not hold its connection.",
    )
    api_upload_batch_lines: int = Field(
        default=500, ge=1, description="Upload lines published (and acknowledged) per batch."
    )
    api_rate_per_s: float = Field(
        default=50.0, gt=0, description="Requests per second allowed per API token (sustained)."
    )
    api_rate_burst: int = Field(
        default=100, ge=1, description="Requests per API token allowed in a burst above the rate."
    )
    api_refused_rate_per_s: float = Field(
        default=5.0,
        gt=0,
        description=(
            "Webhook requests refused authentication allowed per second per client address and "
            "provider (429 above), counted apart from the authenticated deliveries' rate."
        ),
    )
    api_refused_rate_burst: int = Field(
        default=20, ge=1, description="Burst of refused webhook requests per client and provider."
    )
    api_ack_timeout_s: float = Field(
        default=10.0, gt=0, description="How long a request waits for Kafka's acknowledgement."
    )
    api_url: str | None = Field(
        default=None,
        description="Base URL of the shipledger API that `shipledger gate` and `shipledger "
        "approve` ask (e.g. https://shipledger.example.org). Unset: the API of the `shipledger "
        "up` running on this machine.",
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="API token `shipledger gate` sends (`shipledger tokens create --scope "
        "ingest`: the pipeline's).",
    )

    # --- query and cold storage ------------------------------------------------------
    query_max_rows: int = Field(
        default=10_000, ge=1, description="Most rows `shipledger query` (and the API) returns."
    )
    query_timeout_s: float = Field(
        default=60.0, gt=0, description="ClickHouse max_execution_time of a read query."
    )
    query_max_memory_bytes: int = Field(
        default=1024**3,
        ge=1024**2,
        description="Memory one read query may use (ClickHouse max_memory_usage; 400 above).",
    )
    query_max_result_bytes: int = Field(
        default=64 * 1024**2,
        ge=1024,
        description="Bytes of result one read query may return (ClickHouse max_result_bytes).",
    )
    query_max_response_bytes: int = Field(
        default=64 * 1024**2,
        ge=1024,
        description="Largest JSON answer of `POST /v1/query` (400 above: select less).",
    )
    query_max_sql_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Longest SQL text of a read query (400 above)."
    )
    query_max_ast_elements: int = Field(
        default=20_000,
        ge=100,
        description="Syntax tree nodes of a read query (ClickHouse max_ast_elements).",
    )
    query_max_ast_depth: int = Field(
        default=300,
        ge=10,
        description="Nesting depth of a read query's syntax tree (ClickHouse max_ast_depth).",
    )
    query_max_threads: int = Field(
        default=2,
        ge=1,
        description="Threads one read query may use (ClickHouse max_threads): the pipeline "
        "shares the machine.",
    )
    query_max_concurrent_per_token: int = Field(
        default=2,
        ge=1,
        description="Read queries one API token may run at once (429 with Retry-After above).",
    )
    query_max_concurrent: int = Field(
        default=4,
        ge=1,
        description="Read queries the API runs at once, all tokens (503 with Retry-After above).",
    )
    cold_after_days: int = Field(
        default=90,
        ge=1,
        description=(
            "Embedded ClickHouse: rows older than this (by their time column) move from the hot "
            "tables to Parquet files under `<data_dir>/cold`, still queryable."
        ),
    )
    archive_interval_s: float = Field(
        default=3600.0,
        ge=0,
        description="How often `up` archives old rows to cold storage (0: only at start).",
    )

    # --- identity providers: who may approve a change request --------------------------
    oidc_issuer: str | None = Field(
        default=None,
        description="OIDC issuer whose bearer tokens identify approvers (https; http only on "
        "loopback). Its /.well-known/openid-configuration names the JWKS the tokens verify "
        "against.",
    )
    oidc_audience: str | None = Field(
        default=None,
        description="Audience (`aud`) approval tokens must carry: shipledger's client id at the "
        "issuer. Required with SHIPLEDGER_OIDC_ISSUER.",
    )
    oidc_username_claim: str = Field(
        default="preferred_username", description="Token claim holding the approver's name."
    )
    oidc_groups_claim: str = Field(
        default="groups", description="Token claim listing the approver's groups."
    )
    oidc_leeway_s: float = Field(
        default=30.0, ge=0, le=300, description="Clock skew allowed on exp, nbf and iat."
    )
    ldap_url: str | None = Field(
        default=None,
        description="LDAP server approvers authenticate against (ldaps://host, or ldap:// "
        "on a trusted network: the password travels in the bind).",
    )
    ldap_user_dn: str | None = Field(
        default=None,
        description="DN template of a user, bound with their password: "
        "`uid={username},ou=people,dc=example,dc=org`. Required with SHIPLEDGER_LDAP_URL.",
    )
    ldap_group_base: str | None = Field(
        default=None,
        description="Subtree searched for the user's groups (e.g. `ou=groups,dc=example,dc=org`)."
        " Required with SHIPLEDGER_LDAP_URL.",
    )
    ldap_group_filter: str = Field(
        default="(&(objectClass=groupOfNames)(member={user_dn}))",
        description="Filter finding the user's groups; `{user_dn}` and `{username}` are "
        "replaced (escaped). Their `cn` is the group name the policy's approvals name.",
    )
    identity_timeout_s: float = Field(
        default=5.0, gt=0, description="Connect and read timeout towards the identity providers."
    )

    # --- known identities: is a manual deployer a person the directory knows? ------------
    ldap_people_base: str | None = Field(
        default=None,
        description="Subtree searched for a manual deployer (e.g. `ou=people,dc=example,dc=org`)"
        " on the server of SHIPLEDGER_LDAP_URL; set, a deployer found there is a known identity "
        "to `unattributed_manual_deploy` (gate and stream). Unset: only the policy's "
        "`service_accounts` are known.",
    )
    ldap_people_filter: str = Field(
        default="(|(uid={actor})(mail={actor}))",
        description="Filter finding a deployer under SHIPLEDGER_LDAP_PEOPLE_BASE; `{actor}` is "
        "replaced (escaped) by the deployment's actor.",
    )
    ldap_bind_dn: str | None = Field(
        default=None,
        description="DN the deployer search binds as (a read-only service entry); unset: an "
        "anonymous search.",
    )
    ldap_bind_password: SecretStr | None = Field(
        default=None, description="Password of SHIPLEDGER_LDAP_BIND_DN."
    )
    identity_cache_s: float = Field(
        default=300.0, ge=0, description="How long a deployer the directory knows stays known."
    )
    identity_negative_cache_s: float = Field(
        default=60.0,
        ge=0,
        description="How long a deployer the directory does not know, or a failed lookup, is "
        "remembered before the directory is asked again.",
    )
    identity_cache_size: int = Field(
        default=10_000, ge=1, description="Deployers remembered at most (oldest dropped first)."
    )

    # --- escalation: alerts to ticketing systems and webhooks (shipledger.receivers) ----
    receiver_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description=(
            "Secrets of the policy's escalation receivers, by the name their `credentials:` "
            "gives (case-insensitive): `user:password` for ServiceNow, `email:api-token` for "
            "Jira, the signing secret of a webhook. One variable each "
            "(SHIPLEDGER_RECEIVER_SECRETS__SNOW_PROD=...) or one JSON object."
        ),
    )
    escalation_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Attempts per delivery to a receiver before the alert is dead-lettered.",
    )
    escalation_backoff_s: float = Field(
        default=1.0,
        gt=0,
        description=(
            "Backoff before the second attempt; doubles each attempt, with full jitter (a "
            "random wait up to it), capped by SHIPLEDGER_ESCALATION_BACKOFF_MAX_S."
        ),
    )
    escalation_backoff_max_s: float = Field(
        default=60.0, gt=0, description="Longest wait between two attempts (Retry-After too)."
    )
    escalation_timeout_s: float = Field(
        default=10.0, gt=0, description="Connect and read timeout of one request to a receiver."
    )
    escalation_concurrency: int = Field(
        default=4, ge=1, le=64, description="Deliveries the escalator runs at once."
    )
    escalation_fetch_wait_ms: int = Field(
        default=100,
        ge=1,
        le=1000,
        description=(
            "Max fetch wait of the escalator's consumer of the alerts topic. Tansu spends "
            "~0.5 ms of CPU on every fetch and answers one only when its wait is over: at the "
            "10 ms of `fetch_wait_ms` the idle escalator alone cost the broker ~5 % of a core. "
            "It adds at most this to an alert's way to its receivers, nothing to detection."
        ),
    )
    escalation_catch_up_s: float = Field(
        default=3600.0,
        ge=0,
        description=(
            "On the embedded broker, which forgets unread alerts in a crash: at start, the "
            "ledger's alerts detected this long before the last one escalated are looked at "
            "again, and the ones not escalated yet are delivered."
        ),
    )
    escalation_db: Path | None = Field(
        default=None,
        description=(
            "The escalator's local record of deliveries (SQLite): what it sent, so a replayed "
            "alert is not sent again. Unset: <data_dir>/escalations.sqlite3"
        ),
    )

    # --- incident triage and CMDB reconciliation (issue #12 points 7-8, docs/triage.md) ---
    triage_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="How often `up` looks for new PagerDuty/Opsgenie incidents to attach "
        "suspects to (0: never).",
    )
    triage_lookback_h: float = Field(
        default=24.0, gt=0, le=720, description="Hours before an incident its suspects are from."
    )
    triage_top: int = Field(
        default=5, ge=1, le=20, description="Suspects attached to an incident and its note."
    )
    pagerduty_api_url: str = Field(
        default="https://api.pagerduty.com", description="PagerDuty REST API (incident notes)."
    )
    pagerduty_api_token: SecretStr | None = Field(
        default=None, description="PagerDuty REST API token; unset: no note is posted."
    )
    pagerduty_from: str | None = Field(
        default=None, description="Email of the PagerDuty user the note is posted as (`From`)."
    )
    opsgenie_api_url: str = Field(
        default="https://api.opsgenie.com", description="Opsgenie API (alert notes)."
    )
    opsgenie_api_key: SecretStr | None = Field(
        default=None, description="Opsgenie API key (GenieKey); unset: no note is posted."
    )
    cmdb_export_file: Path | None = Field(
        default=None,
        description="ServiceNow CMDB export (CSV or JSON) `up` reconciles with the ledger "
        "every SHIPLEDGER_CMDB_INTERVAL_S; unset: never.",
    )
    cmdb_interval_s: float = Field(
        default=86400.0, gt=0, description="How often `up` reconciles SHIPLEDGER_CMDB_EXPORT_FILE."
    )

    # --- reconciliation against independent logs (issue #13 point 5, docs/reconcile.md) ---
    reconcile_mapping_file: Path | None = Field(
        default=None,
        description="Mapping of evidence (audit logs, CloudTrail, access logs) to tenant, "
        "service and environment that `shipledger reconcile` reads when --mapping is not given.",
    )
    reconcile_tolerance_s: float = Field(
        default=600.0,
        gt=0,
        description="How far apart an observed change and its ledger deployment may be and "
        "still match (beyond: a timing disagreement).",
    )
    reconcile_match_window_s: float = Field(
        default=3600.0,
        gt=0,
        description="How far apart they may be and still be the same change with a timing "
        "disagreement (beyond: unreported and unobserved).",
    )

    # --- live dashboard: `/` and the `/v1/stream` SSE stream (issue #8) ----------------
    stream_client_queue: int = Field(
        default=1000,
        ge=10,
        description="Events queued for one live-stream client; a client that falls further "
        "behind is dropped with a `dropped` event (it reconnects and reloads).",
    )
    stream_replay_events: int = Field(
        default=2000,
        ge=0,
        description="Recent stream events kept, so a client reconnecting with Last-Event-ID "
        "gets what it missed, and a page loading the dashboard's state gets what the sink has "
        "not stored in the ledger yet.",
    )
    stream_heartbeat_s: float = Field(
        default=15.0, gt=0, description="Idle seconds before the stream sends a keep-alive."
    )
    stream_health_interval_s: float = Field(
        default=2.0,
        gt=0,
        description="How often the stream checks that Kafka answers (and waits for it): the "
        "dashboard's 'stale since' banner appears this long after the broker stops answering.",
    )

    # --- anomaly correlation and pipeline metrics (live visibility, points 7 and 8) -------
    anomaly_horizon_s: float = Field(
        default=6 * 3600.0,
        gt=0,
        description=(
            "How far back each processors worker keeps deployments for the anomaly join "
            "(`suspect_deployment`): the most a policy's `suspect_window` can reach."
        ),
    )
    # --- post-deploy verification and drift (docs/verification.md) ----------------------
    verification_interval_s: float = Field(
        default=30.0,
        ge=0,
        description=(
            "How often `up` decides the verdicts of verification windows that closed (0: never;"
            " `shipledger verification run` decides them once). A window's verdict is written"
            " at most this long after it closed."
        ),
    )

    # --- artifact continuity (issue 12 point 3, docs/artifacts.md) ----------------------------
    artifact_catch_up_s: float = Field(
        default=2.0,
        ge=0,
        description=(
            "Before a worker raises artifact_digest_mismatch or artifact_unknown, how long it "
            "waits at most for its enrichment feed to read the artifacts topic to its current "
            "end (a build published just before the deploy is then seen); 0: no wait."
        ),
    )
    worker_progress_file: Path | None = Field(
        default=None,
        description=(
            "Where the processors worker writes how far it has acted on the enrichment topics "
            "(`processors.progress`). `up` sets one per worker it runs, and its drain waits for "
            "them; unset: not written."
        ),
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "Port of the processors worker's Prometheus `/metrics` (0: any free port, logged; "
            "unset: none); `up`'s worker i uses this port + i. The API serves `/metrics` on "
            "its own port."
        ),
    )
    sink_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "Port of the sink's Prometheus `/metrics` (0: any free port, logged; unset: none)."
        ),
    )
    # The two long-running processes a production deployment runs beside worker and sink
    # (`shipledger escalate run`, `shipledger jobs`): their /metrics are their health probes.
    escalator_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of `shipledger escalate run`'s Prometheus `/metrics` (unset: none).",
    )
    jobs_metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "Port of `shipledger jobs`'s Prometheus `/metrics`: runs and last run of each "
            "periodic job (unset: none)."
        ),
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Interface the worker's, the sink's, the escalator's and the jobs' "
        "`/metrics` listen on.",
    )

    # --- monthly compliance packs (`shipledger report`, docs/reports.md) -------------------
    report_signing_key: Path | None = Field(
        default=None,
        description=(
            "Ed25519 private key (PEM, from `shipledger report keygen`) that signs the "
            "manifest of every `shipledger report monthly` pack."
        ),
    )

    # --- change sets: commits and PRs per deployment (issue 12, docs/changes.md) ------------
    change_sets: bool = Field(
        default=True,
        description="Compute each terminal deployment's change set in the sink after its flush.",
    )
    change_sets_lookback_days: int = Field(
        default=90,
        ge=1,
        description="How far back the previous deployment and the source events are looked for.",
    )
    change_sets_max_commits: int = Field(
        default=1000, ge=1, description="Most commits a change set walks (and stores)."
    )

    # --- data sovereignty: one ledger per region (issue 13, docs/sovereignty.md) ------------
    region: str | None = Field(
        default=None,
        description=(
            "The region this process serves: its readers (API, `shipledger query`, reports, "
            "metrics) open that region's ledger of `regional_ledgers` only. Unset: the "
            "default ledger (`clickhouse_url`, `clickhouse_database`)."
        ),
    )
    regional_ledgers: dict[str, RegionalLedger] = Field(
        default_factory=dict,
        description=(
            "The ledger of each region, where the sink stores the rows of the tenants whose "
            "policy names that region (`regions:`): a ClickHouse `url` (unset: "
            "`clickhouse_url`) and `database` (unset: `<clickhouse_database>_<region>`, "
            "`-` as `_`). One "
            'JSON object (SHIPLEDGER_REGIONAL_LEDGERS=\'{"eu": {"database": "ledger_eu"}}\') '
            "or one variable each (SHIPLEDGER_REGIONAL_LEDGERS__EU__URL=...). Empty: one ledger."
        ),
    )

    @field_validator("regional_ledgers")
    @classmethod
    def _region_names(cls, value: dict[str, RegionalLedger]) -> dict[str, RegionalLedger]:
        for name in value:
            check_region(name)
        return value

    @model_validator(mode="after")
    def _region_has_ledger(self) -> Settings:
        if self.region is not None and self.region not in self.regional_ledgers:
            have = ", ".join(sorted(self.regional_ledgers)) or "none"
            raise ValueError(
                f"SHIPLEDGER_REGION={self.region!r} has no ledger in "
                f"SHIPLEDGER_REGIONAL_LEDGERS (configured: {have})"
            )
        return self

    def for_region(self, region: str | None) -> Settings:
        """These settings for a process of `region` (None: the default ledger's)."""
        return self.model_copy(update={"region": region})

    @property
    def ledger_database(self) -> str:
        """The ClickHouse database of this process's ledger (its region's, else the default)."""
        if self.region is None:
            return self.clickhouse_database
        return self.regional_ledgers[self.region].database or (
            f"{self.clickhouse_database}_{self.region.replace('-', '_')}"
        )

    @property
    def ledger_cold_dir(self) -> Path:
        """Where the embedded ledger of this process's region keeps its cold Parquet files
        (apart per region: a File table's glob would otherwise read another region's)."""
        if self.region is None:
            return self.data_dir / "cold"
        return self.data_dir / "regions" / self.region / "cold"

    # --- privacy: personal fields pseudonymised in the ledger (issue 13 point 7, docs/privacy.md)
    privacy_key: SecretStr | None = Field(
        default=None,
        description=(
            "Master secret of pseudonymisation (at least 32 characters): with it (or "
            "`privacy_key_file`) the sink stores personal fields as per-tenant pseudonyms and "
            "authorised readers see the names. Unset: names are stored as sent."
        ),
    )
    privacy_key_file: Path | None = Field(
        default=None,
        description="File holding the master secret instead of `privacy_key`.",
    )

    # --- logging -----------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info")
    log_format: LogFormat = Field(default="json", description="json (default) or console.")

    # --- secrets placeholder kept typed so logs never print them -------------------------
    sasl_password: SecretStr | None = Field(default=None, description="SASL password, if any.")
    sasl_username: str | None = Field(default=None, description="SASL username, if any.")

    # ------------------------------------------------------------------------------------
    def topic(self, name: str) -> str:
        """Full topic name for a logical topic (`deployments.raw`, `alerts`, ...)."""
        return f"{self.topic_prefix}{name}"

    @property
    def resolved_clickhouse_url(self) -> str:
        """The ClickHouse DSN of this process's ledger (`region`), defaulting to embedded chDB
        inside the data dir."""
        regional = self.regional_ledgers[self.region].url if self.region else None
        if regional or self.clickhouse_url:
            return regional or self.clickhouse_url or ""
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def resolved_auth_db(self) -> Path:
        """The API's token and webhook-secret store."""
        return self.auth_db or self.data_dir / "auth.sqlite3"

    @property
    def resolved_stacks_dir(self) -> Path:
        """The registry of this user's running stacks (`shipledger.stackfile`)."""
        return self.stacks_dir or Path.home() / ".local" / "state" / "shipledger" / "stacks"

    @property
    def resolved_escalation_db(self) -> Path:
        """The escalator's local record of deliveries."""
        return self.escalation_db or self.data_dir / "escalations.sqlite3"

    def receiver_secret(self, name: str) -> SecretStr | None:
        """The receiver secret called `name` (case-insensitive), if set."""
        wanted = name.casefold()
        return next((s for k, s in self.receiver_secrets.items() if k.casefold() == wanted), None)

    @property
    def journal_dir(self) -> Path:
        """Where the embedded stack's write-ahead journal lives (`shipledger.producers.journal`)."""
        return self.data_dir / "journal"

    @property
    def resolved_spool_dir(self) -> Path:
        """Directory of the emitter's spool."""
        return self.spool_dir or self.data_dir / "spool"

    def kafka_common(self, bootstrap: str) -> dict[str, Any]:
        """librdkafka settings shared by every confluent-kafka client."""
        conf: dict[str, Any] = {"bootstrap.servers": bootstrap}
        if self.sasl_username and self.sasl_password:
            conf.update(
                {
                    "security.protocol": "SASL_SSL",
                    "sasl.mechanisms": "PLAIN",
                    "sasl.username": self.sasl_username,
                    "sasl.password": self.sasl_password.get_secret_value(),
                }
            )
        return conf

    def kafka_consumer(self, bootstrap: str, group_id: str, client_id: str) -> dict[str, Any]:
        """librdkafka settings of a consumer in `group_id` that commits by hand what it has
        made durable (the sink, the escalator): earliest when the group has no offset, the
        short fetch wait and session of `fetch_wait_ms` and `session_timeout_s`."""
        session_ms = int(self.session_timeout_s * 1000)
        return {
            **self.kafka_common(bootstrap),
            "group.id": group_id,
            "client.id": client_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": self.fetch_wait_ms,
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, session_ms // 3),
        }

    def kafka_producer(self, bootstrap: str) -> dict[str, Any]:
        """librdkafka producer settings.

        murmur2_random is the Java client's partitioner, which Faust (aiokafka) also uses: a
        deployment's events, its table changelog and its records then share one partition.
        """
        return {
            **self.kafka_common(bootstrap),
            "partitioner": "murmur2_random",
            "linger.ms": self.producer_linger_ms,
            "queue.buffering.max.messages": self.producer_queue_messages,
            "acks": "all",
            "enable.idempotence": True,
        }

    def to_env(self) -> dict[str, str]:
        """These settings as `SHIPLEDGER_*` variables, so a child process rebuilds the same.

        The receivers' secrets stay out: only the escalator, which runs in `up`'s own
        process, needs them."""
        env: dict[str, str] = {}
        for name, value in self.model_dump(exclude_none=True, exclude={"receiver_secrets"}).items():
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"SHIPLEDGER_{name.upper()}"] = (
                json.dumps(value) if isinstance(value, dict | list) else str(value)
            )
        return env
