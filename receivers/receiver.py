"""What a kind of receiver is, and what the engine hands it. Pure types.

A kind (`ReceiverKind`) is a few pure functions: `request` builds the HTTP request that opens
a ticket (or pages) for a delivery (an alert for one receiver), `read` turns the receiver's 2xx
answer into a `Ticket`; `resolve`, when the provider can close what it opened, builds the
request that does so for a resolution (`Alert.kind == 'resolution'`, naming the alert it
resolves); `find` and `found`, when the provider can be asked, look up the ticket an
earlier attempt opened for the same alert (by the correlation key the request carries), so a
delivery repeated after a crash finds it instead of opening a second one. `auth` gives the
httpx authentication for a receiver's secret (basic, a signature computed per attempt).

The engine (`shipledger.receivers.engine`) does the rest for every kind: the HTTP client,
timeouts, which answers are worth retrying, backoff, the record of what was delivered.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, SecretStr

from shipledger.schemas.models import Alert, EscalationAction

OptionsT = TypeVar("OptionsT", bound=BaseModel)
_DELIVERY_NS = uuid.UUID("0b7d2f0e-5a4c-4f1e-9d3b-6c8a1e2f4b57")


def delivery_id(tenant: str, alert_id: str, receiver: str) -> str:
    """The id of the delivery of one alert to one receiver: the same for every replay of the
    alert, so it names the delivery in the local record, the ledger and a webhook's
    `webhook-id` (its receiver's idempotency key)."""
    return str(uuid.uuid5(_DELIVERY_NS, f"{tenant}/{alert_id}/{receiver}"))


@dataclass(frozen=True)
class Delivery:
    """One alert for one receiver, through the escalation route that matched it."""

    alert: Alert
    route: str
    receiver: str

    @property
    def id(self) -> str:
        """See `delivery_id`. A resolution is an alert of its own (its own deterministic
        id), so its delivery is another one than the trigger's: (alert, receiver, action)."""
        return delivery_id(self.alert.tenant, self.alert.alert_id, self.receiver)

    @property
    def action(self) -> EscalationAction:
        """`resolve` for a resolution, else `trigger`."""
        return "resolve" if self.alert.kind == "resolution" else "trigger"

    @property
    def subject(self) -> str:
        """The id of the alert the provider knows this by (its dedup key, alias, label): the
        alert's own, or for a resolution the alert it resolves."""
        return self.alert.resolves or self.alert.alert_id


class NoOptions(BaseModel):
    """The options of a kind that has none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Target:
    """A configured receiver: its name, kind, base URL (no trailing slash), its options as its
    kind validated them, and its secret (from the settings, by the policy's `credentials`)."""

    name: str
    kind: str
    url: str
    options: BaseModel
    secret: SecretStr | None


@dataclass(frozen=True)
class Ticket:
    """What a receiver answered: the ticket's key and link when it names them, and a note
    (how it was found, or why the answer could not be read)."""

    key: str | None = None
    url: str | None = None
    note: str | None = None


def no_auth(_target: Target) -> httpx.Auth | None:
    """No authentication (a receiver that needs none)."""
    return None


def basic_auth(target: Target) -> httpx.Auth | None:
    """HTTP basic authentication from a `user:password` secret."""
    if target.secret is None:
        return None
    user, _, password = target.secret.get_secret_value().partition(":")
    return httpx.BasicAuth(user, password)


class HeaderAuth(httpx.Auth):
    """Sets ``Authorization`` to a fixed value (a scheme and a key)."""

    def __init__(self, value: str) -> None:
        self._value = value

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._value
        yield request


def secret_header(scheme: str) -> Callable[[Target], httpx.Auth | None]:
    """The authentication `Authorization: <scheme> <secret>` (none without a secret)."""

    def auth(target: Target) -> httpx.Auth | None:
        if target.secret is None:
            return None
        return HeaderAuth(f"{scheme} {target.secret.get_secret_value()}")

    return auth


def no_ticket(_response: httpx.Response, _target: Target) -> Ticket:
    """The ticket of a receiver whose answer names none (chat, Alertmanager): just delivered."""
    return Ticket()


@dataclass(frozen=True, kw_only=True)
class ReceiverKind:
    """A kind of receiver (see the module docstring). `options` validates the receiver's own
    keys in the policy (none by default); `read` by default records no ticket;
    `needs_secret`: whether `credentials` must name a secret;
    `default_url`: the provider's public endpoint, used when the policy gives no `url`;
    `secret_in_url`: the request's URL holds the secret (its path is never logged)."""

    name: str
    options: type[BaseModel] = NoOptions
    request: Callable[[Delivery, Target], httpx.Request]
    read: Callable[[httpx.Response, Target], Ticket] = no_ticket
    find: Callable[[Delivery, Target], httpx.Request] | None = None
    found: Callable[[httpx.Response, Target], Ticket | None] | None = None
    auth: Callable[[Target], httpx.Auth | None] = no_auth
    needs_secret: bool = True
    resolve: Callable[[Delivery, Target], httpx.Request] | None = None
    default_url: str | None = None
    secret_in_url: bool = False


def not_ours(ours: frozenset[str], instead: str) -> AfterValidator:
    """The validator of a kind's `fields` option (more fields of the provider's record) that
    refuses the fields shipledger sets itself; `instead` says what sets them."""

    def check(value: dict[str, Any]) -> dict[str, Any]:
        taken = sorted(ours & set(value))
        if taken:
            raise ValueError(f"{', '.join(taken)}: set by shipledger ({instead})")
        return value

    return AfterValidator(check)


def options_of(target: Target, model: type[OptionsT]) -> OptionsT:
    """`target.options` as its kind's model `model` (validated when the target was built)."""
    if not isinstance(target.options, model):
        raise TypeError(f"receiver {target.name}: options are not {model.__name__}")
    return target.options


def json_answer(response: httpx.Response) -> dict[str, object]:
    """A JSON object answer; ValueError when the body is something else."""
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    return body


def answer_key(field: str) -> Callable[[httpx.Response, Target], Ticket]:
    """A `read` whose ticket key is the answer's top-level `field` (ValueError when the answer
    does not name it)."""

    def read(response: httpx.Response, _target: Target) -> Ticket:
        key = json_answer(response).get(field)
        if not key:
            raise ValueError(f"no {field} in the answer")
        return Ticket(key=str(key))

    return read


def answer_ticket(
    ticket: Callable[[object, Target], Ticket], under: str | None = None
) -> Callable[[httpx.Response, Target], Ticket]:
    """A `read` that makes the ticket with `ticket(record, target)` from the answer's record
    (the JSON object itself, or its value under `under`)."""

    def read(response: httpx.Response, target: Target) -> Ticket:
        body = json_answer(response)
        return ticket(body if under is None else body.get(under), target)

    return read


def secret_of(target: Target) -> str:
    """The receiver's secret as text (ValueError when it has none: the registry checks a kind
    that needs one has it, so this is a configuration built by hand)."""
    if target.secret is None:
        raise ValueError(f"receiver {target.name}: no secret configured")
    return target.secret.get_secret_value()


def json_request(
    method: str, url: str, *, params: Mapping[str, str] | None = None, body: object = None
) -> httpx.Request:
    """A request to a ticketing system's JSON API, asking for a JSON answer."""
    return httpx.Request(
        method, url, params=params, json=body, headers={"Accept": "application/json"}
    )


def found_under(
    listed_under: str, ticket: Callable[[object, Target], Ticket], how: str
) -> Callable[[httpx.Response, Target], Ticket | None]:
    """A `found` that reads the first record a search answered (the list under
    `listed_under`) as a ticket noted as found `how` rather than opened; None when the search
    found nothing."""

    def found(response: httpx.Response, target: Target) -> Ticket | None:
        records = json_answer(response).get(listed_under)
        if not isinstance(records, list) or not records:
            return None
        return replace(ticket(records[0], target), note=f"found by {how}: not opened again")

    return found
