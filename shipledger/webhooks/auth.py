"""Request authentication: HMAC signatures and shared-secret tokens, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

from shipledger.webhooks.result import Request, WebhookAuthError

#: Header carrying the shared secret for senders without a signature scheme of their own
#: (Argo CD notifications, CloudEvents/CDEvents, Jenkins).
SHARED_TOKEN_HEADER = "X-Shipledger-Token"  # noqa: S105 (a header name, not a secret)


def _secret(request: Request, provider: str) -> bytes:
    # Fail closed: a provider without a configured secret accepts nothing.
    if not request.secret:
        raise WebhookAuthError(f"no webhook secret is configured for {provider}; refusing request")
    return request.secret.encode()


def verify_hmac_sha256(request: Request, provider: str, header: str) -> None:
    """Check `header` == ``sha256=<hex HMAC-SHA256(secret, raw body)>`` (GitHub's scheme)."""
    secret = _secret(request, provider)
    given = request.headers.get(header)
    if given is None:
        raise WebhookAuthError(f"missing {header} header (the webhook must have a secret)")
    scheme, _, digest = given.partition("=")
    if scheme != "sha256" or not digest:
        raise WebhookAuthError(f"{header} must look like 'sha256=<hex digest>'")
    expected = hmac.new(secret, request.body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), digest.lower().encode()):
        raise WebhookAuthError(f"{header} does not match the body signed with the secret")


def verify_token(request: Request, provider: str, header: str) -> None:
    """Check that `header` carries the shared secret itself (GitLab's and our token scheme)."""
    secret = _secret(request, provider)
    given = request.headers.get(header)
    if given is None:
        raise WebhookAuthError(f"missing {header} header")
    if not hmac.compare_digest(given.encode(), secret):
        raise WebhookAuthError(f"{header} does not match the configured secret")
