"""Approvers verified by a real OpenLDAP server (Debian's slapd, started here on a loopback
port with a throwaway directory) and a real OIDC issuer on loopback (discovery document and a
JWKS of RSA keys generated here); then who may approve, and whether approvals satisfy the
policy. `make test-deps` installs slapd; a missing slapd fails these tests, never skips them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shipledger.processors.approvals import missing_approvals
from shipledger.processors.changes import ApprovalRecord
from shipledger.producers.approvals.directory import LdapConfig, LdapDirectory
from shipledger.producers.approvals.identity import (
    Identity,
    IdentityRefused,
    IdentityUnavailable,
    authorize_approval,
)
from shipledger.producers.approvals.oidc import OidcConfig, OidcVerifier
from shipledger.schemas.policy import parse_policy

# --- a real slapd -------------------------------------------------------------------------

SUFFIX = "dc=example,dc=org"
SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")
#: user -> (password, groups)
PEOPLE = {
    "alice": ("alice-pw", ["cab"]),
    "bob": ("bob-pw", ["sre"]),
    "carol": ("carol-pw", ["cab", "sre"]),
    "dave": ("dave-pw", []),
    # Filter syntax in a name: unescaped, it would break (or widen) the group search.
    "pat(ops)*": ("pat-pw", ["sre"]),
}


def _ssha(password: str) -> str:
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _directory_ldif() -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups",
    ]
    for user, (password, _) in PEOPLE.items():
        entries.append(
            f"dn: uid={user},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {user}\n"
            f"cn: {user.title()}\nsn: {user.title()}\nuserPassword: {_ssha(password)}"
        )
    for group in ("cab", "sre"):
        members = "".join(
            f"\nmember: uid={user},ou=people,{SUFFIX}"
            for user, (_, groups) in PEOPLE.items()
            if group in groups
        )
        entries.append(
            f"dn: cn={group},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {group}{members}"
        )
    return "\n\n".join(entries) + "\n"


def _slapd_conf(workdir: Path) -> str:
    return f"""
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {workdir}/slapd.pid
argsfile {workdir}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 10485760
suffix "{SUFFIX}"
rootdn "cn=admin,{SUFFIX}"
rootpw {_ssha(uuid.uuid4().hex)}
directory {workdir}/db
access to attrs=userPassword by self read by anonymous auth by * none
access to * by users read by * none
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"slapd exited with {proc.returncode}: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"slapd did not listen on {port} within 30 s: {log.read_text()}")


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`ldap://127.0.0.1:<port>` of a slapd serving PEOPLE and the groups cab and sre."""
    if not SLAPD.exists() or not shutil.which("ldapadd"):
        pytest.fail("Debian's slapd and ldap-utils are needed: run `make test-deps` (as root)")
    workdir = tmp_path_factory.mktemp("slapd")
    (workdir / "db").mkdir()
    conf = workdir / "slapd.conf"
    conf.write_text(_slapd_conf(workdir))
    ldif = workdir / "directory.ldif"
    ldif.write_text(_directory_ldif())
    subprocess.run([SLAPADD, "-f", conf, "-l", ldif], check=True, capture_output=True)
    port = _free_port()
    log = workdir / "slapd.log"
    with log.open("wb") as out:
        # -d 0: stay in the foreground (no fork), so the test owns the process.
        proc = subprocess.Popen(
            [SLAPD, "-f", conf, "-h", f"ldap://127.0.0.1:{port}/", "-d", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, proc, log)
        yield f"ldap://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def directory(slapd: str) -> LdapDirectory:
    return LdapDirectory(
        LdapConfig(
            url=slapd,
            user_dn=f"uid={{username}},ou=people,{SUFFIX}",
            group_base=f"ou=groups,{SUFFIX}",
        )
    )


def test_ldap_bind_gives_the_users_groups(directory: LdapDirectory, slapd: str) -> None:
    assert directory.authenticate("carol", "carol-pw") == Identity(
        "carol", frozenset({"cab", "sre"}), f"ldap:{slapd}"
    )
    assert directory.authenticate("alice", "alice-pw").groups == {"cab"}
    assert directory.authenticate("dave", "dave-pw").groups == frozenset()


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [
        ("alice", "wrong", "invalid username or password"),
        ("mallory", "alice-pw", "invalid username or password"),  # no such user: same answer
        ("alice", "", "username and password are required"),  # would be an anonymous bind
        ("", "x", "username and password are required"),
        ("*", "alice-pw", "invalid username or password"),
        ("alice,ou=people", "alice-pw", "invalid username or password"),
    ],
)
def test_ldap_refuses_bad_credentials(
    directory: LdapDirectory, username: str, password: str, reason: str
) -> None:
    with pytest.raises(IdentityRefused) as refused:
        directory.authenticate(username, password)
    assert refused.value.reason == reason


def test_ldap_names_are_escaped(directory: LdapDirectory) -> None:
    """A name with filter syntax binds and finds its own groups, nobody else's."""
    assert directory.authenticate("pat(ops)*", "pat-pw").groups == {"sre"}


def test_ldap_down_is_unavailable_not_refused() -> None:
    config = LdapConfig(
        url=f"ldap://127.0.0.1:{_free_port()}", user_dn="uid={username},o=x", group_base="o=x"
    )
    with pytest.raises(IdentityUnavailable):
        LdapDirectory(config).authenticate("alice", "alice-pw")


# --- a real OIDC issuer -------------------------------------------------------------------

AUDIENCE = "shipledger"


class Issuer:
    """An OIDC issuer on loopback: discovery document and JWKS, RSA keys made here."""

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
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def token(
        self, kid: str | None = None, key: Any = None, alg: str = "RS256", **claims: Any
    ) -> str:
        now = datetime.now(UTC)
        body: dict[str, Any] = {
            "iss": self.url,
            "aud": AUDIENCE,
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


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    server = Issuer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def other_issuer() -> Iterator[Issuer]:
    server = Issuer()
    yield server
    server.close()


@pytest.fixture
def verifier(issuer: Issuer) -> OidcVerifier:
    return OidcVerifier(OidcConfig(issuer=issuer.url, audience=AUDIENCE))


def test_oidc_token_gives_the_person_and_groups(verifier: OidcVerifier, issuer: Issuer) -> None:
    identity = verifier.verify(issuer.token(groups=["cab", "sre"]))
    assert identity == Identity("alice", frozenset({"cab", "sre"}), f"oidc:{issuer.url}")


def test_oidc_refusals_name_the_reason(
    verifier: OidcVerifier, issuer: Issuer, other_issuer: Issuer
) -> None:
    past = datetime.now(UTC) - timedelta(hours=1)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        issuer.keys[issuer.kid]
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    cases = {
        "token expired": issuer.token(exp=past, iat=past - timedelta(minutes=5)),
        "is for audience 'someone-else'": issuer.token(aud="someone-else"),
        f"was issued by '{other_issuer.url}'": other_issuer.token(),
        "signature does not verify": issuer.token(key=stranger),
        "not among the issuer's keys": issuer.token(kid="nope", key=stranger),
        "algorithm 'HS256' is not accepted": _hs256(issuer.url, public_pem),
        "no 'exp' claim": issuer.token(exp=None),
        "no 'preferred_username' claim": issuer.token(preferred_username=None),
        "malformed token": "not.a.token",
        "no bearer token": "",
    }
    for reason, token in cases.items():
        with pytest.raises(IdentityRefused) as refused:
            verifier.verify(token)
        assert reason in refused.value.reason, (reason, refused.value.reason)


def _hs256(iss: str, secret: bytes) -> str:
    """An HS256 token keyed with the issuer's *public* key (algorithm confusion); PyJWT
    refuses to make one, so it is put together by hand."""
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    exp = int(time.time()) + 300
    claims = json.dumps({"iss": iss, "aud": AUDIENCE, "exp": exp, "iat": exp - 300}).encode()
    payload = base64.urlsafe_b64encode(claims).rstrip(b"=")
    signature = hmac.new(secret, header + b"." + payload, hashlib.sha256).digest()
    return b".".join([header, payload, base64.urlsafe_b64encode(signature).rstrip(b"=")]).decode()


def test_oidc_issuer_down_is_unavailable_not_refused(issuer: Issuer) -> None:
    gone = OidcVerifier(OidcConfig(issuer=f"http://127.0.0.1:{_free_port()}", audience=AUDIENCE))
    token = issuer.token(iss=gone.config.issuer)
    with pytest.raises(IdentityUnavailable):
        gone.verify(token)


def test_oidc_issuer_must_be_https_off_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        OidcConfig(issuer="http://idp.example.org", audience=AUDIENCE)
    assert OidcConfig(issuer="https://idp.example.org", audience=AUDIENCE)


# --- who may approve, and whether approvals suffice ---------------------------------------


def test_only_group_members_approve_and_never_their_own_change(
    directory: LdapDirectory,
) -> None:
    policy = parse_policy(
        "version: 1\ndefaults:\n  approvals:\n"
        "    - {name: prod-cab, group: cab, environments: [prod]}\n"
        "    - {name: stage-sre, group: sre, environments: [stage]}\n"
    )
    groups = policy.defaults.approving_groups(["prod"])
    assert groups == {"cab"}
    alice = directory.authenticate("alice", "alice-pw")
    assert authorize_approval(alice, groups, requested_by="bob") == ("cab",)
    bob = directory.authenticate("bob", "bob-pw")
    with pytest.raises(IdentityRefused, match="bob is not in a group that approves this change"):
        authorize_approval(bob, groups, requested_by="carol")
    with pytest.raises(IdentityRefused, match=r"alice requested this change.*four eyes"):
        authorize_approval(alice, groups, requested_by="ALICE@example.org")
    with pytest.raises(IdentityRefused, match="alice deploys this change"):
        authorize_approval(alice, groups, deployer="alice")


def test_approvals_satisfy_the_policy_per_deployment() -> None:
    policy = parse_policy(
        "version: 1\ndefaults:\n  approvals:\n"
        "    - {name: prod-cab, group: cab, environments: [prod], kinds: [release]}\n"
        "    - {name: prod-sre, group: sre, count: 2, environments: [prod]}\n"
    )
    start = datetime(2026, 11, 25, 10, tzinfo=UTC)
    before = start - timedelta(hours=1)

    def approval(
        who: str, *groups: str, at: datetime = before, decision: str = "approved"
    ) -> ApprovalRecord:
        return ApprovalRecord(who, decision, at, groups, "ldap:test")  # type: ignore[arg-type]

    rules = policy.defaults
    release = rules.approvals_for("prod", "release")
    assert [r.name for r in release] == ["prod-cab", "prod-sre"]
    assert [r.name for r in rules.approvals_for("prod", "config_change")] == ["prod-sre"]
    assert rules.approvals_for("stage", "release") == []

    good = [approval("alice", "cab"), approval("bob", "sre"), approval("carol", "cab", "sre")]
    assert missing_approvals(release, good, deployer="dave", at=start) == []
    # Four eyes: carol deploys, so her approval counts for neither group.
    (short,) = missing_approvals(release, good, deployer="carol@example.org", at=start)
    assert short.requirement == "prod-sre" and short.approvers == ("bob",)
    assert "carol does not count" in short.message
    # An approval after the start does not count; a later rejection withdraws one.
    late = [approval("alice", "cab", at=start + timedelta(minutes=1)), *good[1:]]
    assert missing_approvals(release, late, "dave", start) == []  # carol is in cab too
    withdrawn = [
        *good,
        approval("bob", "sre", at=start - timedelta(minutes=1), decision="rejected"),
    ]
    (short,) = missing_approvals(release, withdrawn, "dave", start)
    assert short.approvers == ("carol",)
    # One person under two spellings is one approver.
    twice = [approval("bob", "sre"), approval("BOB@example.org", "sre"), approval("alice", "cab")]
    (short,) = missing_approvals(release, twice, "dave", start)
    assert short.requirement == "prod-sre" and len(short.approvers) == 1
