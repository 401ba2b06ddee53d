"""Approvers identified by an OIDC bearer token, verified against the issuer's JWKS.

The issuer's `/.well-known/openid-configuration` names its key set (fetched on first use, then
cached by PyJWT's `PyJWKClient`, which refetches, at most every 30 s, when a token names a key
it has not seen: key rotation needs no restart). A token is accepted only when signed with an
asymmetric algorithm by one of those keys, issued by the configured issuer, for the configured
audience, and not expired (a small leeway for clock skew). Refusals name the first check that
failed.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

import jwt

from shipledger.fields import copied
from shipledger.producers.approvals.identity import (
    Identity,
    IdentityRefused,
    IdentityUnavailable,
    check_provider_url,
)
from shipledger.settings import Settings

#: Asymmetric algorithms only: an HS256 token "signed" with the issuer's public key (algorithm
#: confusion) and `none` are refused before any key is looked at.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud"]


@dataclass(frozen=True)
class OidcConfig:
    """Which tokens approve: issuer, audience, the claims naming the person and their groups."""

    issuer: str
    audience: str
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    leeway_s: float = 30.0
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        check_provider_url(self.issuer, "SHIPLEDGER_OIDC_ISSUER")

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcConfig | None:
        """The OIDC configuration, or None when no issuer is configured."""
        if not settings.oidc_issuer:
            return None
        if not settings.oidc_audience:
            raise ValueError("SHIPLEDGER_OIDC_AUDIENCE is required with SHIPLEDGER_OIDC_ISSUER")
        return copied(cls, settings, prefix="oidc_", timeout_s=settings.identity_timeout_s)


class OidcVerifier:
    """Verifies bearer tokens of one issuer. Thread-safe; keep one per process."""

    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self._keys: jwt.PyJWKClient | None = None  # built on first use: no I/O at start-up

    def verify(self, token: str) -> Identity:
        """The identity a bearer token vouches for; IdentityRefused saying why it is not
        accepted, IdentityUnavailable when the issuer cannot be asked."""
        cfg = self.config
        header, unverified = _peek(token)
        # Checked before any key lookup, so a token of another issuer reads as such rather
        # than as an unknown key. Nothing is trusted from it yet: this only refuses.
        if unverified.get("iss") != cfg.issuer:
            raise IdentityRefused(
                f"token was issued by {unverified.get('iss')!r}, not by {cfg.issuer}"
            )
        if header.get("alg") not in ALGORITHMS:
            raise IdentityRefused(f"token algorithm {header.get('alg')!r} is not accepted")
        key = self._signing_key(token, header)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=cfg.audience,
                issuer=cfg.issuer,
                leeway=cfg.leeway_s,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise IdentityRefused(f"token expired (exp {unverified.get('exp')})") from None
        except jwt.InvalidAudienceError:
            raise IdentityRefused(
                f"token is for audience {unverified.get('aud')!r}, not {cfg.audience!r}"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise IdentityRefused(f"token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise IdentityRefused("token signature does not verify with the issuer's key") from None
        except jwt.ImmatureSignatureError:
            raise IdentityRefused("token is not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidTokenError as exc:
            raise IdentityRefused(f"token refused: {exc}") from None
        return Identity(self._username(claims), self._groups(claims), f"oidc:{cfg.issuer}")

    def _signing_key(self, token: str, header: dict[str, Any]) -> jwt.PyJWK:
        try:
            return self._key_client().get_signing_key_from_jwt(token)
        except (jwt.PyJWKClientConnectionError, jwt.PyJWKSetError) as exc:
            raise IdentityUnavailable(f"cannot use the issuer's keys: {exc}") from exc
        except jwt.PyJWKClientError:
            raise IdentityRefused(
                f"token key {header.get('kid')!r} is not among the issuer's keys"
            ) from None

    def _key_client(self) -> jwt.PyJWKClient:
        if self._keys is None:
            jwks_uri = self._discover()
            self._keys = jwt.PyJWKClient(
                jwks_uri, cache_keys=True, lifespan=300, timeout=self.config.timeout_s
            )
        return self._keys

    def _discover(self) -> str:
        """The issuer's JWKS address from its discovery document."""
        url = f"{self.config.issuer.rstrip('/')}/.well-known/openid-configuration"
        try:
            # The scheme was checked (https, or http on loopback) when the config was built.
            with urllib.request.urlopen(url, timeout=self.config.timeout_s) as resp:  # noqa: S310
                doc = json.load(resp)
        except (OSError, ValueError) as exc:
            raise IdentityUnavailable(f"cannot read {url}: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("issuer") != self.config.issuer:
            found = doc.get("issuer") if isinstance(doc, dict) else None
            raise IdentityUnavailable(f"{url} names issuer {found!r}, not {self.config.issuer}")
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise IdentityUnavailable(f"{url} names no jwks_uri")
        try:
            return check_provider_url(jwks_uri, "the issuer's jwks_uri")
        except ValueError as exc:
            raise IdentityUnavailable(str(exc)) from exc

    def _username(self, claims: dict[str, Any]) -> str:
        name = claims.get(self.config.username_claim)
        if not isinstance(name, str) or not name.strip():
            raise IdentityRefused(f"token has no {self.config.username_claim!r} claim")
        return name.strip()

    def _groups(self, claims: dict[str, Any]) -> frozenset[str]:
        groups = claims.get(self.config.groups_claim, [])
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise IdentityRefused(
                f"token claim {self.config.groups_claim!r} is not a list of names"
            )
        return frozenset(groups)


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a token, unverified (to refuse early with a precise reason)."""
    if not token or not token.strip():
        raise IdentityRefused("no bearer token")
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise IdentityRefused("malformed token (not a signed JWT)") from None
    return header, claims
