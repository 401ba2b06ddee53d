"""Request authentication: HMAC signatures and shared-secret tokens, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from shipledger.producers.webhooks.result import Request, WebhookAuthError

#: Header carrying the shared secret for senders without a signature scheme of their own
#: (Argo CD notifications, CloudEvents/CDEvents, Jenkins).
SHARED_TOKEN_HEADER = "X-Shipledger-Token"  # noqa: S105 (a header name, not a secret)


#: Stands in for a secret that is not configured: nothing can match it (it is never shown), and
#: the check costs and answers what a wrong signature does, so a caller cannot tell a tenant
#: without a secret from a wrong guess.
_UNSET = secrets.token_bytes(32)


def secret_bytes(request: Request) -> bytes:
    """The tenant's secret for signature checks; fails closed: a provider without a
    configured secret accepts nothing."""
    return request.secret.encode() if request.secret else _UNSET


def verify_hmac_sha256(request: Request, provider: str, header: str) -> None:
    """Check `header` == ``sha256=<hex HMAC-SHA256(secret, raw body)>`` (GitHub's scheme)."""
    secret = secret_bytes(request)
    given = request.headers.get(header)
    if given is None:
        raise WebhookAuthError(f"missing {header} header (the webhook must have a secret)")
    scheme, _, digest = given.partition("=")
    if scheme != "sha256" or not digest:
        raise WebhookAuthError(f"{header} must look like 'sha256=<hex digest>'")
    expected = hmac.new(secret, request.body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), digest.lower().encode()):
        raise WebhookAuthError(
            f"{header} does not match the body signed with the tenant's {provider} secret"
        )


def verify_token(request: Request, provider: str, header: str) -> None:
    """Check that `header` carries the shared secret itself (GitLab's and our token scheme)."""
    secret = secret_bytes(request)
    given = request.headers.get(header)
    if given is None:
        raise WebhookAuthError(f"missing {header} header")
    if not hmac.compare_digest(given.encode(), secret):
        raise WebhookAuthError(f"{header} does not match the tenant's {provider} secret")
