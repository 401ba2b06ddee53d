"""How the loopback stand-ins (the demo's ticket system, the tests' registries, receivers,
identity provider and API stubs) answer a request: one body with its type and length."""

from __future__ import annotations

import json
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler


def answer(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: object,
    *,
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> None:
    """Send `status` and `body` (bytes as they are, anything else as JSON) with its
    Content-Type and Content-Length, then `headers`."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)
