"""Approvers verified by a real OpenLDAP server (Debian's slapd, started on a loopback port
with a throwaway directory) and a real OIDC issuer on loopback (discovery document and a JWKS
of RSA keys generated in the test), both fixtures of tests/conftest.py; then who may approve,
and whether approvals satisfy the policy. `make test-deps` installs slapd; a missing slapd
fails these tests, never skips them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shipledger.processors.approvals import missing_approvals
from shipledger.processors.changes import ApprovalRecord
from shipledger.producers.approvals.credentials import Authenticator
from shipledger.producers.approvals.directory import LdapConfig, LdapDirectory
from shipledger.producers.approvals.identity import (
    Identity,
    IdentityRefused,
    IdentityUnavailable,
    authorize_approval,
)
from shipledger.producers.approvals.oidc import OidcConfig, OidcVerifier
from shipledger.schemas.policy import parse_policy
from tests.identity_kit import Issuer, Slapd


@pytest.fixture(scope="module")
def directory(slapd: Slapd) -> LdapDirectory:
    return LdapDirectory(
        LdapConfig(url=slapd.url, user_dn=slapd.user_dn, group_base=slapd.group_base)
    )


def test_ldap_bind_gives_the_users_groups(directory: LdapDirectory, slapd: Slapd) -> None:
    assert directory.authenticate("carol", "carol-pw") == Identity(
        "carol", frozenset({"cab", "sre"}), f"ldap:{slapd.url}"
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


def test_ldap_down_is_unavailable_not_refused(unused_port: int) -> None:
    config = LdapConfig(
        url=f"ldap://127.0.0.1:{unused_port}", user_dn="uid={username},o=x", group_base="o=x"
    )
    with pytest.raises(IdentityUnavailable):
        LdapDirectory(config).authenticate("alice", "alice-pw")


@pytest.fixture
def verifier(issuer: Issuer) -> OidcVerifier:
    return OidcVerifier(OidcConfig(issuer=issuer.url, audience=issuer.audience))


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
        "algorithm 'HS256' is not accepted": _hs256(issuer, public_pem),
        "no 'exp' claim": issuer.token(exp=None),
        "no 'preferred_username' claim": issuer.token(preferred_username=None),
        "malformed token": "not.a.token",
        "no bearer token": "",
    }
    for reason, token in cases.items():
        with pytest.raises(IdentityRefused) as refused:
            verifier.verify(token)
        assert reason in refused.value.reason, (reason, refused.value.reason)


def _hs256(issuer: Issuer, secret: bytes) -> str:
    """An HS256 token keyed with the issuer's *public* key (algorithm confusion); PyJWT
    refuses to make one, so it is put together by hand."""
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    exp = int(time.time()) + 300
    claims = {"iss": issuer.url, "aud": issuer.audience, "exp": exp, "iat": exp - 300}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    signature = hmac.new(secret, header + b"." + payload, hashlib.sha256).digest()
    return b".".join([header, payload, base64.urlsafe_b64encode(signature).rstrip(b"=")]).decode()


def test_oidc_issuer_down_is_unavailable_not_refused(issuer: Issuer, unused_port: int) -> None:
    gone = OidcVerifier(
        OidcConfig(issuer=f"http://127.0.0.1:{unused_port}", audience=issuer.audience)
    )
    token = issuer.token(iss=gone.config.issuer)
    with pytest.raises(IdentityUnavailable):
        gone.verify(token)


def test_oidc_issuer_must_be_https_off_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        OidcConfig(issuer="http://idp.example.org", audience="shipledger")
    assert OidcConfig(issuer="https://idp.example.org", audience="shipledger")


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


# --- from an Authorization header to a person ----------------------------------------------


def test_authorization_headers_name_the_provider(
    directory: LdapDirectory, verifier: OidcVerifier, issuer: Issuer
) -> None:
    both = Authenticator(oidc=verifier, ldap=directory)
    basic = "Basic " + base64.b64encode(b"alice:alice-pw").decode()
    assert both.identify(basic, protected_channel=True).username == "alice"
    assert both.identify(f"bearer {issuer.token()}", protected_channel=False).groups == {"cab"}
    refusals = {
        (basic, False): "accepted only over TLS or from this host",
        ("Basic !!!", True): "malformed Basic credentials",
        ("Basic " + base64.b64encode(b"alice").decode(), True): "malformed Basic credentials",
        ("Negotiate abc", True): "missing credentials: Authorization: Bearer <OIDC token> or Basic",
        (None, True): "missing credentials",
    }
    for (header, protected), reason in refusals.items():
        with pytest.raises(IdentityRefused, match=reason):
            both.identify(header, protected_channel=protected)
    with pytest.raises(IdentityRefused, match=r"does not accept Bearer .*accepts: Basic"):
        Authenticator(ldap=directory).identify(f"Bearer {issuer.token()}", True)
    with pytest.raises(IdentityRefused, match="no identity provider is configured"):
        Authenticator().identify(basic, True)
