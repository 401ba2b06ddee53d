"""One delivery to one receiver, with retries: the part of delivery every kind shares.

An attempt asks the provider for a ticket an earlier attempt opened (the kind's `find`,
when it has one) and otherwise sends the kind's `request`; the answer decides:

- 2xx: delivered; the kind reads the ticket from it. An answer it cannot read still counts
  as delivered (with a note): the provider did act, and sending again would open a second
  ticket.
- a network error, 408, 425, 429 or 5xx: *transient*, tried again after a backoff: full
  jitter (a random wait up to `backoff_s * 2**(attempt-1)`, at most `backoff_max_s`; a
  `Retry-After` answer waits at least that long, within the same cap);
- any other status (400, 401, 403, 404, a redirect...): *refused*, not tried again (the
  request or the configuration is wrong, and repeating it cannot help).

A resolution (`Delivery.action == 'resolve'`) sends the kind's `resolve` instead, with no
lookup: closing twice is harmless at every provider that can close.

After `attempts` transient failures, or one refusal, the delivery has failed: the caller
dead-letters the alert. tenacity runs the loop; its waits go through `sleep`, which the
escalator makes return early (raising `Interrupted`) when it is asked to stop.
"""

from __future__ import annotations

import email.utils
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import tenacity

from shipledger.logging import get_logger
from shipledger.receivers.receiver import Delivery, ReceiverKind, Target, Ticket

_TRANSIENT_STATUS = frozenset({408, 425, 429})
_BODY_IN_REASON = 300

log = get_logger("escalation")


class Interrupted(Exception):
    """The escalator is stopping: the delivery was abandoned between two attempts."""


def sleeper(stop: threading.Event) -> Callable[[float], None]:
    """The wait between attempts: cut short, by Interrupted, when `stop` is set."""

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise Interrupted

    return sleep


class Transient(Exception):
    """An attempt that may succeed if repeated; `retry_after`: what the receiver asked for."""

    def __init__(self, reason: str, status: int | None, retry_after: float | None = None):
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after


class Refused(Exception):
    """An answer that repeating the request cannot change."""

    def __init__(self, reason: str, status: int | None):
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one delivery (SHIPLEDGER_ESCALATION_*)."""

    attempts: int
    backoff_s: float
    backoff_max_s: float
    timeout_s: float


@dataclass(frozen=True)
class Outcome:
    """How a delivery ended: `ticket` when delivered, else `reason`; `attempts` made and the
    last HTTP status (None: no answer)."""

    ticket: Ticket | None
    attempts: int
    status: int | None
    reason: str | None = None

    @property
    def delivered(self) -> bool:
        """Whether the receiver took it."""
        return self.ticket is not None


def retry_after(response: httpx.Response, now: datetime | None = None) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delta-seconds or an HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    seconds = value.strip()
    # ASCII digits: str.isdigit() also takes a superscript two, which float() refuses.
    if seconds.isascii() and seconds.isdigit():
        return float(seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def where(request: httpx.Request, secret_in_url: bool = False) -> str:
    """The method and path of `request` for a log line or a ledger row; only the host when
    the URL holds the receiver's secret (a Slack webhook), which is never written."""
    if secret_in_url:
        return f"{request.method} {request.url.host} (path withheld: it holds the secret)"
    return f"{request.method} {request.url.path}"


def classify(response: httpx.Response, secret_in_url: bool = False) -> None:
    """Raise Transient or Refused unless `response` is a 2xx."""
    if response.is_success:
        return
    status = response.status_code
    reason = f"HTTP {status} from {where(response.request, secret_in_url)}"
    body = response.text.strip()[:_BODY_IN_REASON]
    if body:
        reason += f": {body}"
    if status in _TRANSIENT_STATUS or status >= 500:
        raise Transient(reason, status, retry_after(response))
    raise Refused(reason, status)


class Deliverer:
    """Delivers with retries over one httpx client (thread-safe: the escalator runs several
    deliveries at once). `sleep(seconds)` waits between attempts and raises Interrupted to
    abandon; `kinds` are the receiver kinds by name."""

    def __init__(
        self,
        client: httpx.Client,
        retry: RetryPolicy,
        kinds: Mapping[str, ReceiverKind],
        sleep: Callable[[float], None],
    ) -> None:
        self._client = client
        self.retry = retry
        self._kinds = kinds
        self._sleep = sleep

    def _wait(self, state: tenacity.RetryCallState) -> float:
        jitter = tenacity.wait_random_exponential(
            multiplier=self.retry.backoff_s, max=self.retry.backoff_max_s
        )(state)
        error = state.outcome.exception() if state.outcome is not None else None
        asked = error.retry_after if isinstance(error, Transient) else None
        return min(self.retry.backoff_max_s, max(jitter, asked or 0.0))

    def deliver(self, delivery: Delivery, target: Target) -> Outcome:
        """Deliver `delivery` to `target` (see the module docstring). Raises Interrupted."""
        return self._retried(
            lambda: self._attempt(delivery, target),
            receiver=target.name,
            alert_id=delivery.alert.alert_id,
        )

    def post(self, request: httpx.Request, auth: httpx.Auth | None, **about: str) -> Outcome:
        """Send one request that is not an alert's delivery (a note on an incident), with the
        same retries; `about` names it in the retry log lines. Raises Interrupted."""

        def attempt() -> tuple[Ticket, int]:
            request.extensions["timeout"] = httpx.Timeout(self.retry.timeout_s).as_dict()
            try:
                response = self._client.send(request, auth=auth or httpx.USE_CLIENT_DEFAULT)
            except httpx.RequestError as exc:
                raise Transient(f"{type(exc).__name__} on {where(request)}: {exc}", None) from exc
            classify(response)
            return Ticket(note=response.text.strip()[:_BODY_IN_REASON]), response.status_code

        return self._retried(attempt, **about)

    def _retried(self, attempt: Callable[[], tuple[Ticket, int]], **about: str) -> Outcome:
        attempts = 0
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retry.attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(Transient),
            sleep=self._sleep,
            before_sleep=lambda state: log.warning(
                "escalation_retry",
                **about,
                attempt=state.attempt_number,
                error=str(state.outcome.exception() if state.outcome else ""),
            ),
            reraise=True,
        )
        try:
            for attempt_ in retrying:
                with attempt_:
                    attempts = attempt_.retry_state.attempt_number
                    ticket, status = attempt()
            return Outcome(ticket, attempts, status)
        except Transient as exc:
            reason = f"{attempts} attempt(s) failed, the last: {exc}"
            return Outcome(None, attempts, exc.status, reason)
        except Refused as exc:
            return Outcome(None, attempts, exc.status, f"refused: {exc}")

    def _send(self, request: httpx.Request, target: Target) -> httpx.Response:
        kind = self._kinds[target.kind]
        request.extensions["timeout"] = httpx.Timeout(self.retry.timeout_s).as_dict()
        try:
            response = self._client.send(
                request, auth=kind.auth(target) or httpx.USE_CLIENT_DEFAULT
            )
        except httpx.RequestError as exc:  # no answer: connect, timeout, protocol, decoding
            on = where(request, kind.secret_in_url)
            raise Transient(f"{type(exc).__name__} on {on}: {exc}", None) from exc
        classify(response, kind.secret_in_url)
        return response

    def _attempt(self, delivery: Delivery, target: Target) -> tuple[Ticket, int]:
        kind = self._kinds[target.kind]
        if delivery.action == "resolve":
            # Closing is idempotent at every provider that can close: no lookup first.
            if kind.resolve is None:
                raise Refused(f"a {kind.name} receiver cannot resolve an alert", None)
            response = self._send(_build(kind.resolve, delivery, target), target)
            return _read(kind, response, target), response.status_code
        if kind.find is not None and kind.found is not None:
            response = self._send(_build(kind.find, delivery, target), target)
            try:
                existing = kind.found(response, target)
            except ValueError as exc:  # not knowing is no licence to open a second ticket
                raise Transient(
                    f"search answer not understood: {exc}", response.status_code
                ) from exc
            if existing is not None:
                return existing, response.status_code
        response = self._send(_build(kind.request, delivery, target), target)
        return _read(kind, response, target), response.status_code


def _build(
    build: Callable[[Delivery, Target], httpx.Request], delivery: Delivery, target: Target
) -> httpx.Request:
    try:
        return build(delivery, target)
    except ValueError as exc:  # a receiver configured so that no request can be made
        raise Refused(f"not sent: {exc}", None) from exc


def _read(kind: ReceiverKind, response: httpx.Response, target: Target) -> Ticket:
    try:
        return kind.read(response, target)
    except ValueError as exc:  # the provider acted: sending again would open a second one
        return Ticket(note=f"answer not understood: {exc}")
