"""Whether a manual deployer is a known identity: a person the configured directory knows.

`unattributed_manual_deploy` (processors.change_rules) flags a manual deployment to a
ticket-required environment by an actor who is neither a directory user nor a service account
the policy lists. The rule is pure and takes `actor_known`; this module answers it, for the
pre-deploy gate (the API) and the stream processors alike, with one LDAP search per actor
(SHIPLEDGER_LDAP_PEOPLE_BASE and _FILTER, bound as SHIPLEDGER_LDAP_BIND_DN or anonymously),
remembered for a while (`KnownIdentities`).

A directory that cannot answer (down, timeout, refused bind) must not raise a false alert: the
failure is logged and the actor counts as known, *not judged* (`actor_known` is True). The
failure is remembered like a negative answer, so a dead directory costs one timeout per actor
per SHIPLEDGER_IDENTITY_NEGATIVE_CACHE_S, not one per deployment. A deployment judged while the
directory was down is judged again if its change request changes later (re-judgement), by
then against a directory that may answer.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from shipledger.logging import get_logger
from shipledger.settings import Settings

log = get_logger("identities")


class LookupFailed(Exception):
    """The directory could not answer (not: the actor is unknown)."""


#: Whether the directory knows `actor`; raises LookupFailed when it cannot tell.
DirectoryLookup = Callable[[str], bool]


class KnownIdentities:
    """A directory lookup behind a bounded cache with separate lifetimes for known actors
    (`ttl_s`) and for unknown ones and failed lookups (`negative_ttl_s`). Thread-safe: the API
    asks from its thread pool."""

    def __init__(
        self,
        lookup: DirectoryLookup,
        ttl_s: float = 300.0,
        negative_ttl_s: float = 60.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._max_entries = max_entries
        self._clock = clock
        #: actor -> (answer, expires at); None: the lookup failed.
        self._cache: OrderedDict[str, tuple[bool | None, float]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> KnownIdentities | None:
        """The lookup the settings configure; None when no directory is configured for it
        (SHIPLEDGER_LDAP_URL and SHIPLEDGER_LDAP_PEOPLE_BASE)."""
        if not settings.ldap_url or not settings.ldap_people_base:
            return None
        return cls(
            ldap_lookup(settings),
            ttl_s=settings.identity_cache_s,
            negative_ttl_s=settings.identity_negative_cache_s,
            max_entries=settings.identity_cache_size,
        )

    def is_known(self, actor: str) -> bool | None:
        """True: the directory knows `actor`; False: it does not; None: it could not tell
        (the failure is logged and remembered for `negative_ttl_s`)."""
        actor = actor.strip()
        if not actor:
            return False
        now = self._clock()
        with self._lock:
            cached = self._cache.get(actor)
            if cached is not None and cached[1] > now:
                return cached[0]
        # Asked outside the lock: one slow lookup does not hold up the others' cache hits.
        answer: bool | None
        try:
            answer = self._lookup(actor)
        except LookupFailed as exc:
            log.warning("identity_lookup_failed", actor=actor, error=str(exc)[:300])
            answer = None
        ttl = self._ttl_s if answer else self._negative_ttl_s
        with self._lock:
            self._cache[actor] = (answer, self._clock() + ttl)
            self._cache.move_to_end(actor)
            while len(self._cache) > self._max_entries:
                self._cache.popitem(last=False)
        return answer


def actor_known(identities: KnownIdentities | None, actor: str) -> bool:
    """What `ChangeContext.actor_known` is for `actor`: whether the directory knows them,
    False without a directory (only the policy's service accounts are known then), True when
    the directory could not tell (not judged: see the module docstring)."""
    if identities is None:
        return False
    return identities.is_known(actor) is not False


@contextmanager
def ldap_connection(
    url: str,
    user: str | None,
    password: str | None,
    timeout_s: float,
    failed: Callable[[str], Exception],
) -> Iterator[ldap3.Connection]:
    """A read-only connection to the LDAP server `url` as `user`, not bound yet, within
    `timeout_s`; an LDAPException inside raises `failed(why)` instead. Unbound on the way out,
    and the socket of a failed connect closed too."""
    # ldap3 packs the receive timeout into SO_RCVTIMEO as whole seconds.
    timeout = max(1, math.ceil(timeout_s))
    server = ldap3.Server(url, connect_timeout=timeout, get_info=ldap3.NONE)
    conn = ldap3.Connection(
        server,
        user=user,
        password=password,
        read_only=True,
        receive_timeout=timeout,
        auto_bind=ldap3.AUTO_BIND_NONE,
    )
    try:
        yield conn
    except LDAPException as exc:
        raise failed(f"LDAP server {url}: {exc}") from exc
    finally:
        if not conn.closed:
            conn.unbind()
        elif conn.socket is not None:
            conn.socket.close()  # ldap3 leaves the socket of a failed connect open


def ldap_lookup(settings: Settings) -> DirectoryLookup:
    """A `DirectoryLookup` searching SHIPLEDGER_LDAP_PEOPLE_BASE for the actor, one
    connection per lookup (the cache makes them rare), within SHIPLEDGER_IDENTITY_TIMEOUT_S."""
    url, base = settings.ldap_url, settings.ldap_people_base
    if not url or not base:
        raise ValueError("SHIPLEDGER_LDAP_URL and SHIPLEDGER_LDAP_PEOPLE_BASE are required")
    password = settings.ldap_bind_password
    timeout_s = settings.identity_timeout_s
    people_filter = settings.ldap_people_filter

    def lookup(actor: str) -> bool:
        secret = password.get_secret_value() if password else None
        with ldap_connection(url, settings.ldap_bind_dn, secret, timeout_s, LookupFailed) as conn:
            if not conn.bind():
                raise LookupFailed(f"LDAP bind failed: {conn.result.get('description')}")
            found = conn.search(
                base,
                people_filter.format(actor=escape_filter_chars(actor)),
                attributes=[],
                size_limit=1,
            )
            code = conn.result.get("result", 0)
            # 0 with no entries: nobody of that name; 4 (size limit exceeded): somebody.
            if not found and code not in (0, 4):
                raise LookupFailed(f"LDAP search failed: {conn.result.get('description')}")
            return bool(conn.entries)

    return lookup
