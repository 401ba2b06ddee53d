"""A verified identity, the two ways verification fails, and who may approve a change.

`IdentityRefused` is the person's fault (bad password, expired token, not in the group,
approving their own change): 401/403 with its `reason`, nothing recorded. `IdentityUnavailable`
is ours (the directory or the issuer cannot be reached): 503, try again; never a refusal, so an
outage is not mistaken for a wrong password.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

from shipledger.schemas.policy import same_person


@dataclass(frozen=True)
class Identity:
    """A person as an identity provider vouched for them: name, groups, and which provider
    (`oidc:<issuer>`, `ldap:<url>`), recorded with their approval."""

    username: str
    groups: frozenset[str]
    verified_by: str


class IdentityRefused(ValueError):
    """Credentials or an approval refused; `reason` says why, safe to show the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IdentityUnavailable(RuntimeError):
    """The identity provider could not answer (network, timeout, bad discovery document)."""


def authorize_approval(
    identity: Identity,
    approving_groups: Collection[str],
    requested_by: str | None = None,
    deployer: str | None = None,
) -> tuple[str, ...]:
    """The groups `identity` approves a change request for: those of `approving_groups`
    (`Rules.approving_groups`) it belongs to. Refused when it belongs to none, or when the
    approver requested the change or deploys it (four eyes; `same_person`)."""
    for other, role in ((requested_by, "requested"), (deployer, "deploys")):
        if other and same_person(identity.username, other):
            raise IdentityRefused(
                f"{identity.username} {role} this change and cannot approve it (four eyes)"
            )
    if not approving_groups:
        return ()
    member = tuple(sorted(identity.groups & set(approving_groups)))
    if not member:
        raise IdentityRefused(
            f"{identity.username} is not in a group that approves this change "
            f"(needs one of: {', '.join(sorted(approving_groups))})"
        )
    return member


def check_provider_url(url: str, what: str) -> str:
    """`url` if it may carry credentials or keys: https, or http only to a loopback address
    (tests, a sidecar). ValueError naming `what` otherwise."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and is_loopback(host):
        return url
    raise ValueError(f"{what} must be an https:// URL (http:// only on loopback), got {url!r}")


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
