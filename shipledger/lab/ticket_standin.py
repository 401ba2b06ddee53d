"""A local stand-in for a ticketing system, run by `shipledger demo`: a loopback HTTP server
that takes the escalator's signed webhooks (`shipledger.receivers.webhook`) the way a bridge
to ServiceNow or Jira would, and answers each with a ticket key.

It is no real ticketing system: it checks the Standard Webhooks signature with the demo's
secret (401 otherwise), numbers tickets `DEMO-0001`, ... in arrival order and keeps them in
memory. The same `webhook-id` (a retry, a replay) gets the ticket it already has, as the spec
asks of a receiver. A resolution (`shipledger.alert.resolved`) closes the alert's ticket and
opens none.
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import WebhookVerificationError

from shipledger.closing import Running
from shipledger.lab.answer import answer
from shipledger.receivers.webhook import RESOLVED_TYPE, signer

#: The path the escalator posts to.
PATH = "/tickets"


class TicketStandIn(Running):
    """The stand-in, serving on 127.0.0.1 (any free port) from `start()` to `stop()`;
    `url` is the receiver URL for the policy, `tickets` maps each delivery id to its key,
    `closed` holds the alert ids whose resolution came."""

    def __init__(self, secret: str) -> None:
        self._webhook = signer(secret)
        self._lock = threading.Lock()
        self.tickets: dict[str, str] = {}
        self.closed: set[str] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ticket-standin", daemon=True
        )

    @property
    def url(self) -> str:
        """Where the escalator posts (`escalation.receivers.<name>.url`)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{PATH}"

    def open_ticket(
        self, body: bytes, headers: dict[str, str]
    ) -> tuple[HTTPStatus, dict[str, str]]:
        """The answer to one delivery: 201 with its ticket, 200 for a resolution (the alert
        it resolves is `closed`), or 401 when the signature fails."""
        try:
            self._webhook.verify(body, headers)
        except WebhookVerificationError as exc:
            return HTTPStatus.UNAUTHORIZED, {"error": f"signature: {exc}"}
        message = json.loads(body)
        if message.get("type") == RESOLVED_TYPE:  # a bridge would close the ticket: no new key
            with self._lock:
                self.closed.add(str(message["alert"]["resolves"]))
            return HTTPStatus.OK, {}
        delivery = headers["webhook-id"]
        with self._lock:
            key = self.tickets.setdefault(delivery, f"DEMO-{len(self.tickets) + 1:04d}")
        return HTTPStatus.CREATED, {"key": key, "url": f"{self.url}/{key}"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if self.path != PATH:
                    status, reply = HTTPStatus.NOT_FOUND, {"error": f"no {self.path} here"}
                else:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    status, reply = standin.open_ticket(body, headers)
                answer(self, status, reply)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the demo's terminal shows the ledger, not access logs."""

        return Handler

    def start(self) -> TicketStandIn:
        """Serve on a thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():  # shutdown() waits for a serve loop that must be running
            self._server.shutdown()
        self._server.server_close()
