"""The identity providers the approval tests run against (fixtures in tests/conftest.py): a
real slapd's directory and an OIDC issuer on loopback."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from shipledger.lab.answer import answer

SUFFIX = "dc=example,dc=org"
#: user -> (password, groups)
PEOPLE = {
    "alice": ("alice-pw", ["cab"]),
    "bob": ("bob-pw", ["sre"]),
    "carol": ("carol-pw", ["cab", "sre"]),
    "dave": ("dave-pw", []),
    # Filter syntax in a name: unescaped, it would break (or widen) the group search.
    "pat(ops)*": ("pat-pw", ["sre"]),
}
#: The read-only service entry the deployer lookup binds as (not a person: not in ou=people).
READER_DN = f"cn=shipledger-reader,ou=services,{SUFFIX}"
READER_PASSWORD = "reader-pw"


@dataclass(frozen=True)
class Slapd:
    """A running slapd: its URL and where its users and groups are (`PEOPLE`: user ->
    (password, groups); groups `cab` and `sre`), and the service entry that may search them."""

    url: str
    user_dn: str = f"uid={{username}},ou=people,{SUFFIX}"
    group_base: str = f"ou=groups,{SUFFIX}"
    people_base: str = f"ou=people,{SUFFIX}"
    reader_dn: str = READER_DN
    reader_password: str = READER_PASSWORD
    people: dict[str, tuple[str, list[str]]] = field(default_factory=lambda: dict(PEOPLE))

    def settings(self) -> dict[str, Any]:
        """The `Settings` fields (ldap_…) that point shipledger at this directory, searching it
        through the service entry."""
        return {
            "ldap_url": self.url,
            "ldap_user_dn": self.user_dn,
            "ldap_group_base": self.group_base,
            "ldap_people_base": self.people_base,
            "ldap_bind_dn": self.reader_dn,
            "ldap_bind_password": self.reader_password,
        }


class Issuer:
    """An OIDC issuer on loopback: discovery document and JWKS, RSA keys made here; its
    tokens are for `audience` and name alice of group cab unless told otherwise."""

    audience = "shipledger"

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.kid = self.add_key()
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add_key(self) -> str:
        kid = uuid.uuid4().hex[:8]
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks"}
                elif self.path == "/jwks":
                    body = issuer.jwks()
                else:
                    self.send_error(404)
                    return
                answer(self, 200, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def token(
        self, kid: str | None = None, key: Any = None, alg: str = "RS256", **claims: Any
    ) -> str:
        now = datetime.now(UTC)
        body: dict[str, Any] = {
            "iss": self.url,
            "aud": self.audience,
            "sub": "u-1",
            "preferred_username": "alice",
            "groups": ["cab"],
            "iat": now,
            "exp": now + timedelta(minutes=5),
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        kid = kid or self.kid
        return jwt.encode(body, key or self.keys[kid], algorithm=alg, headers={"kid": kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
