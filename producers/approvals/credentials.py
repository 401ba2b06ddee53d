"""From a request's `Authorization` header to a verified person: `Bearer <OIDC token>` is
verified against the issuer (`oidc`), `Basic <username:password>` by an LDAP bind
(`directory`). Whichever providers the settings configure are accepted; blocking (both ask
their provider): run it in a worker thread from async code.

A password is accepted only over a channel that protects it: TLS (`https`, as the API sees it
through a proxy's forwarded headers) or a loopback client (the CLI on the API's host).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from shipledger.producers.approvals.directory import LdapConfig, LdapDirectory
from shipledger.producers.approvals.identity import Identity, IdentityRefused
from shipledger.producers.approvals.oidc import OidcConfig, OidcVerifier
from shipledger.settings import Settings


@dataclass(frozen=True)
class Authenticator:
    """The identity providers this API trusts (either may be absent)."""

    oidc: OidcVerifier | None = None
    ldap: LdapDirectory | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        """The providers the settings configure (ValueError naming a missing setting)."""
        oidc = OidcConfig.from_settings(settings)
        ldap = LdapConfig.from_settings(settings)
        return cls(
            oidc=OidcVerifier(oidc) if oidc else None,
            ldap=LdapDirectory(ldap) if ldap else None,
        )

    @property
    def schemes(self) -> list[str]:
        """The `Authorization` schemes accepted, for a 401's WWW-Authenticate."""
        return [name for name, on in (("Bearer", self.oidc), ("Basic", self.ldap)) if on]

    def identify(self, authorization: str | None, protected_channel: bool) -> Identity:
        """The person `authorization` proves; IdentityRefused saying why not (401: also when
        this API trusts no provider at all), IdentityUnavailable when one cannot answer (503)."""
        if self.oidc is None and self.ldap is None:
            raise IdentityRefused(
                "this API verifies no approvers: no identity provider is configured "
                "(SHIPLEDGER_OIDC_ISSUER, SHIPLEDGER_LDAP_URL)"
            )
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        scheme, credentials = scheme.lower(), credentials.strip()
        if scheme == "bearer" and self.oidc is not None:
            return self.oidc.verify(credentials)
        if scheme == "basic" and self.ldap is not None:
            if not protected_channel:
                raise IdentityRefused(
                    "LDAP passwords are accepted only over TLS or from this host (loopback)"
                )
            username, password = _basic(credentials)
            return self.ldap.authenticate(username, password)
        if scheme in ("bearer", "basic"):
            raise IdentityRefused(
                f"this API does not accept {scheme.title()} credentials "
                f"(it accepts: {', '.join(self.schemes)})"
            )
        raise IdentityRefused(
            "missing credentials: Authorization: "
            + " or ".join(
                s for on, s in ((self.oidc, "Bearer <OIDC token>"), (self.ldap, "Basic")) if on
            )
        )


def _basic(credentials: str) -> tuple[str, str]:
    """(username, password) of HTTP Basic credentials (RFC 7617, UTF-8)."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise IdentityRefused("malformed Basic credentials (base64 of username:password)") from None
    username, colon, password = decoded.partition(":")
    if not colon:
        raise IdentityRefused("malformed Basic credentials (base64 of username:password)")
    return username, password
