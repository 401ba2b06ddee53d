"""What the webhook tests share: the types of the webhook fixtures (tests/conftest.py,
tests/unit/conftest.py) and the secret their deliveries are signed with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shipledger.producers.webhooks import Mapped, WebhookResult

#: The secret `webhook_request` signs with.
SECRET = "whsec-0123456789"
#: `deliver(provider, fixture name, mutate=None, **dispatch kwargs)`: the fixture dispatched.
Deliver = Callable[..., WebhookResult]
#: `check_contract(mapped)`: the event validated by its family's model, as a dict.
Check = Callable[[Mapped], dict[str, Any]]
#: `webhook_request(provider, fixture name, mutate=None) -> (headers, body)`, signed.
RawRequest = Callable[..., tuple[dict[str, str], bytes]]
#: `sign(provider, headers, body, secret) -> headers` authenticated for that provider.
Sign = Callable[[str, dict[str, str], bytes, str], dict[str, str]]
#: Edits a fixture's JSON body in place before it is signed (`webhook_request`'s `mutate`).
Mutate = Callable[[dict[str, Any]], None]
