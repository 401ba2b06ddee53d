"""Approvers identified by an LDAP bind with their own password, then their groups.

The bind proves the password (the directory checks it; nothing is stored here); the group
search runs on the user's own connection, so no service account is needed. The username is
escaped into the DN and the filter (no injection through `*)(uid=*`), and an empty password
is refused before any bind: LDAP treats a name with an empty password as an *anonymous* bind
that succeeds (RFC 4513 §5.1.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from shipledger.identities import ldap_connection
from shipledger.producers.approvals.identity import Identity, IdentityRefused, IdentityUnavailable
from shipledger.settings import Settings

_INVALID_CREDENTIALS = 49  # LDAP result code


@dataclass(frozen=True)
class LdapConfig:
    """Where users bind and where their groups are."""

    url: str
    user_dn: str
    group_base: str
    group_filter: str = "(&(objectClass=groupOfNames)(member={user_dn}))"
    timeout_s: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LdapConfig | None:
        """The LDAP configuration, or None when no server is configured."""
        if not settings.ldap_url:
            return None
        user_dn, group_base = settings.ldap_user_dn, settings.ldap_group_base
        if not user_dn or not group_base:
            raise ValueError(
                "SHIPLEDGER_LDAP_USER_DN and SHIPLEDGER_LDAP_GROUP_BASE are required with "
                "SHIPLEDGER_LDAP_URL"
            )
        return cls(
            url=settings.ldap_url,
            user_dn=user_dn,
            group_base=group_base,
            group_filter=settings.ldap_group_filter,
            timeout_s=settings.identity_timeout_s,
        )


class LdapDirectory:
    """Authenticates users against one LDAP server. One connection per call (approvals are
    rare); blocking: run it in a worker thread from async code."""

    def __init__(self, config: LdapConfig) -> None:
        self.config = config

    def authenticate(self, username: str, password: str) -> Identity:
        """The identity `username` proves with `password`, with its groups' names (`cn`);
        IdentityRefused for wrong credentials, IdentityUnavailable when the server fails."""
        cfg = self.config
        username = username.strip()
        if not username or not password:
            raise IdentityRefused("username and password are required")
        user_dn = cfg.user_dn.format(username=escape_rdn(username))
        with ldap_connection(
            cfg.url, user_dn, password, cfg.timeout_s, IdentityUnavailable
        ) as conn:
            if not conn.bind():
                if conn.result.get("result") == _INVALID_CREDENTIALS:
                    # Same answer for an unknown user and a wrong password: no user probing.
                    raise IdentityRefused("invalid username or password")
                raise IdentityUnavailable(f"LDAP bind failed: {conn.result.get('description')}")
            group_filter = cfg.group_filter.format(
                user_dn=escape_filter_chars(user_dn), username=escape_filter_chars(username)
            )
            if not conn.search(cfg.group_base, group_filter, attributes=["cn"]):
                failed = conn.result.get("result", 0) != 0  # 0 with no entries: no groups
                if failed:
                    raise IdentityUnavailable(
                        f"LDAP group search failed: {conn.result.get('description')}"
                    )
            groups = frozenset(str(name) for entry in conn.entries for name in entry.cn.values)
        return Identity(username, groups, f"ldap:{cfg.url}")
