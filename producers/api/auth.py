"""API tokens and webhook secrets: one SQLite file (`Settings.resolved_auth_db`).

A token is `sl_<id>_<secret>`: the id finds the row, and only the SHA-256 of the whole token
is stored, compared in constant time. The token text is shown once, at creation.

The file holds webhook secrets in plain text: it is created owner-only (0600; its directory
0700 when created here) before SQLite opens it, so the `-wal` and `-shm` files SQLite makes
beside it are owner-only too, and nothing else in the process may open it: SQLite's POSIX
locks are per process, so any other open and close of the file in this process (a
ClickHouse `file()` read was one) drops the API's locks, and the next `shipledger tokens`
process then deletes the WAL the API still uses (a revoked token kept working). The query
path cannot reach it (docs/security.md).

Tenancy: a token belongs to one tenant and acts only on it; the tenant `*` (operators) acts
on every tenant. Scopes: `ingest` (write events), `read` (read events), `admin` (manage
tokens and secrets of its tenant; `*` for all). A token may also be limited to teams and
environments (RBAC): it then reads only those teams' and environments' rows
(`shipledger.schemas.scopes.RowScope`, the rule for rows without a team included).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from shipledger.durable import shared_sqlite
from shipledger.schemas.scopes import RowScope, scope_names

#: `pii:read`: reads show people's names instead of their pseudonyms (docs/privacy.md).
Scope = Literal["ingest", "read", "admin", "pii:read"]
PII_READ: Scope = "pii:read"
SCOPES: tuple[str, ...] = get_args(Scope)
ANY_TENANT = "*"
#: The name of the local read token each `up` makes for this machine's commands, + `<pid>)`.
LOCAL_TOKEN_NAME = "shipledger up (pid "  # noqa: S105 (a label, not a secret)
#: Shortest webhook secret accepted: a short one can be guessed offline from one signed body
#: (GitHub) or online (token schemes). `webhooks secret set` generates 43 characters.
MIN_WEBHOOK_SECRET = 16

_TOKEN_RE = re.compile(r"^sl_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tenant TEXT NOT NULL,
    scopes TEXT NOT NULL,
    token_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    teams TEXT NOT NULL DEFAULT '',
    environments TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS webhook_secrets (
    tenant TEXT NOT NULL,
    provider TEXT NOT NULL,
    secret TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (tenant, provider)
);
"""
#: Columns added to `tokens` after its first release: (name, definition), added to an older
#: file when it is opened (an old token has no team or environment scope: '' reads as none).
_TOKEN_COLUMNS_ADDED = (
    ("teams", "TEXT NOT NULL DEFAULT ''"),
    ("environments", "TEXT NOT NULL DEFAULT ''"),
)


class AuthError(Exception):
    """A request's credentials are missing, unknown, expired or revoked (HTTP 401)."""


@dataclass(frozen=True)
class TokenInfo:
    """One token's row, without its secret."""

    id: str
    name: str
    tenant: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    #: Teams and environments it is limited to (empty: all of its tenant's).
    teams: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()

    def state(self, now: float) -> str:
        """`active`, `expired` or `revoked`."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class Principal:
    """Who a verified token speaks for."""

    token_id: str
    tenant: str
    scopes: frozenset[str]
    #: Teams and environments the token reads only (empty: every one of its tenant's).
    teams: frozenset[str] = frozenset()
    environments: frozenset[str] = frozenset()

    def may_act_on(self, tenant: str) -> bool:
        """Whether this token may write or read `tenant`'s events."""
        return self.tenant in (ANY_TENANT, tenant)

    @property
    def own_tenant(self) -> str | None:
        """The one tenant this token is bound to; None for an operator's (every tenant)."""
        return None if self.tenant == ANY_TENANT else self.tenant

    def row_scope(self, tenant: str | None = None) -> RowScope:
        """The rows this token reads: its tenant's (an operator's: `tenant`, None for every
        tenant), within its teams and environments."""
        return RowScope(self.own_tenant or tenant, self.teams, self.environments)

    @property
    def sees_names(self) -> bool:
        """Whether this token's reads show people's names (scope `pii:read`), not pseudonyms."""
        return PII_READ in self.scopes

    def sees(self, tenant: str, team: str | None, environment: str | None) -> bool:
        """Whether a row or stream event of `tenant`, `team` and `environment` is this
        token's to read: the one check every read path (stream, page, SQL, alerts) makes."""
        return self.row_scope().admits(tenant, team, environment)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _names(stored: str) -> tuple[str, ...]:
    """A stored comma list of team or environment names ('' is none)."""
    return tuple(name for name in stored.split(",") if name)


def _check_tenant(tenant: str) -> str:
    tenant = tenant.strip()
    if not tenant or len(tenant) > 100:
        raise ValueError("tenant must be 1 to 100 characters")
    return tenant


def private_file(path: Path) -> None:
    """Make `path` exist owner-only (0600), its directory 0700 if created here; tighten an
    existing file (and its SQLite `-wal`/`-shm` files) that others could read."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if each.exists() and each.stat().st_mode & 0o077:
            each.chmod(0o600)


class AuthStore:
    """Tokens and webhook secrets in SQLite; safe to share between threads (one lock)."""

    def __init__(self, path: Path) -> None:
        if str(path) != ":memory:":  # SQLite's in-memory database: no file to protect
            private_file(path)
        self.path = path
        self._lock = threading.Lock()
        self._db = shared_sqlite(path, _SCHEMA)
        self._upgrade()

    def _upgrade(self) -> None:
        """Add the columns a file made by an older version lacks (idempotent; concurrent
        openers may race: a column another one just added is not an error)."""
        with self._cursor() as cur:
            have = {row[1] for row in cur.execute("PRAGMA table_info(tokens)")}
            for name, definition in _TOKEN_COLUMNS_ADDED:
                if name in have:
                    continue
                try:
                    cur.execute(f"ALTER TABLE tokens ADD COLUMN {name} {definition}")
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):
                        raise

    @contextmanager
    def _cursor(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cursor = self._db.cursor()
            try:
                yield cursor
            finally:
                cursor.close()

    # --- tokens ----------------------------------------------------------------------------
    def create_token(
        self,
        tenant: str,
        scopes: tuple[str, ...],
        *,
        name: str = "",
        expires_in_s: float | None = None,
        teams: tuple[str, ...] = (),
        environments: tuple[str, ...] = (),
    ) -> tuple[str, TokenInfo]:
        """A new token (its text, shown once) and its row; `teams` and `environments` (names
        or comma lists) limit what it reads. ValueError naming what is wrong."""
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise ValueError(
                f"scopes must be some of {', '.join(SCOPES)} (got {unknown or 'none'})"
            )
        team_names = tuple(sorted(scope_names(teams, "team")))
        environment_names = tuple(sorted(scope_names(environments, "environment")))
        token_id = secrets.token_hex(6)
        token = f"sl_{token_id}_{secrets.token_urlsafe(32)}"
        now = time.time()
        info = TokenInfo(
            id=token_id,
            name=name,
            tenant=_check_tenant(tenant),
            scopes=tuple(sorted(set(scopes))),
            created_at=now,
            expires_at=now + expires_in_s if expires_in_s is not None else None,
            revoked_at=None,
            teams=team_names,
            environments=environment_names,
        )
        with self._cursor() as cur:
            cur.execute(
                "INSERT INTO tokens (id, name, tenant, scopes, token_sha256, created_at, "
                "expires_at, teams, environments) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    info.id,
                    info.name,
                    info.tenant,
                    ",".join(info.scopes),
                    _digest(token),
                    info.created_at,
                    info.expires_at,
                    ",".join(info.teams),
                    ",".join(info.environments),
                ),
            )
        return token, info

    def list_tokens(self) -> list[TokenInfo]:
        """Every token, oldest first (no secrets: only their hashes are stored)."""
        with self._cursor() as cur:
            rows = cur.execute(
                "SELECT id, name, tenant, scopes, created_at, expires_at, revoked_at, teams, "
                "environments FROM tokens ORDER BY created_at"
            ).fetchall()
        return [
            TokenInfo(
                r[0],
                r[1],
                r[2],
                tuple(r[3].split(",")),
                r[4],
                r[5],
                r[6],
                _names(r[7]),
                _names(r[8]),
            )
            for r in rows
        ]

    def revoke(self, token_id: str) -> bool:
        """Revoke a token by id; False if there is no such (unrevoked) token."""
        with self._cursor() as cur:
            cur.execute(
                "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), token_id),
            )
            return cur.rowcount > 0

    def delete(self, token_id: str) -> bool:
        """Delete a token's row (it is refused as unknown from now on); False if none.
        For tokens that only live as long as a process (`up`'s local read token): revoking
        them instead would leave one revoked row per run in `tokens list`."""
        with self._cursor() as cur:
            cur.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
            return cur.rowcount > 0

    def verify(self, token: str) -> Principal:
        """The principal of a presented token; AuthError saying why it is refused."""
        match = _TOKEN_RE.match(token)
        if not match:
            raise AuthError("malformed API token (expected sl_<id>_<secret>)")
        with self._cursor() as cur:
            row = cur.execute(
                "SELECT tenant, scopes, token_sha256, expires_at, revoked_at, teams, "
                "environments FROM tokens WHERE id = ?",
                (match.group(1),),
            ).fetchone()
        # Compare even without a row, so an unknown id costs what a wrong secret does.
        stored = row[2] if row else "0" * 64
        if not hmac.compare_digest(_digest(token), stored) or row is None:
            raise AuthError("unknown API token")
        tenant, scopes, _, expires_at, revoked_at, teams, environments = row
        if revoked_at is not None:
            raise AuthError(f"API token {match.group(1)} was revoked")
        if expires_at is not None and expires_at <= time.time():
            raise AuthError(f"API token {match.group(1)} expired")
        return Principal(
            match.group(1),
            tenant,
            frozenset(scopes.split(",")),
            frozenset(_names(teams)),
            frozenset(_names(environments)),
        )

    # --- webhook secrets -------------------------------------------------------------------
    def set_webhook_secret(self, tenant: str, provider: str, secret: str) -> None:
        """Store (or replace) the secret that signs `provider`'s webhooks for `tenant`."""
        if len(secret.strip()) < MIN_WEBHOOK_SECRET:
            raise ValueError(
                f"webhook secret is {len(secret.strip())} characters: use at least "
                f"{MIN_WEBHOOK_SECRET} (or run without --stdin to generate one)"
            )
        with self._cursor() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO webhook_secrets VALUES (?, ?, ?, ?)",
                (_check_tenant(tenant), provider.strip().lower(), secret.strip(), time.time()),
            )

    def webhook_secret(self, tenant: str, provider: str) -> str | None:
        """The tenant's secret for `provider`, or None if none is set."""
        with self._cursor() as cur:
            row = cur.execute(
                "SELECT secret FROM webhook_secrets WHERE tenant = ? AND provider = ?",
                (tenant, provider.lower()),
            ).fetchone()
        return str(row[0]) if row else None

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
