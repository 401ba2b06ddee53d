"""Pseudonyms, pure (`shipledger.privacy`): keys per tenant, sealed names, substitutions."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from shipledger.privacy import (
    PSEUDONYM,
    Mentions,
    PrivacyKey,
    PrivacyKeyError,
    names_shown,
    new_pseudonym,
    pseudonyms_in,
)
from shipledger.settings import Settings

SECRET = "correct horse battery staple, long enough"


def _key(secret: str = SECRET) -> PrivacyKey:
    key = PrivacyKey.from_settings(Settings(privacy_key=SecretStr(secret)))
    assert key is not None
    return key


def test_no_key_configured_means_privacy_off() -> None:
    assert PrivacyKey.from_settings(Settings()) is None


def test_a_key_file_is_read_and_a_short_or_missing_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "privacy.key"
    path.write_text(SECRET + "\n")
    assert PrivacyKey.from_settings(Settings(privacy_key_file=path)) == _key()
    path.write_text("short")
    with pytest.raises(PrivacyKeyError, match=r"SHIPLEDGER_PRIVACY_KEY_FILE.*at least 32"):
        PrivacyKey.from_settings(Settings(privacy_key_file=path))
    with pytest.raises(PrivacyKeyError, match="cannot read it"):
        PrivacyKey.from_settings(Settings(privacy_key_file=tmp_path / "absent"))
    # Raw random bytes, not their base64 (docs/privacy.md): was a UnicodeDecodeError.
    path.write_bytes(b"\xfd" * 48)
    with pytest.raises(PrivacyKeyError, match=r"KEY_FILE.*: not UTF-8 text \(byte 0xfd at 0\)"):
        PrivacyKey.from_settings(Settings(privacy_key_file=path))
    with pytest.raises(PrivacyKeyError, match="SHIPLEDGER_PRIVACY_KEY: at least 32"):
        PrivacyKey.from_settings(Settings(privacy_key=SecretStr("x" * 31)))


def test_the_hmac_is_per_tenant_and_per_key() -> None:
    key = _key()
    assert key.name_hmac("acme", "alice") == key.name_hmac("acme", "alice")
    assert key.name_hmac("acme", "alice") != key.name_hmac("bank", "alice")
    assert key.name_hmac("acme", "alice") != _key(SECRET + "!").name_hmac("acme", "alice")


def test_a_sealed_name_opens_only_for_its_tenant_pseudonym_and_key() -> None:
    key, pseudonym = _key(), new_pseudonym()
    sealed = key.seal("acme", pseudonym, "alice")
    assert "alice" not in sealed
    assert key.unseal("acme", pseudonym, sealed) == "alice"
    assert key.unseal("bank", pseudonym, sealed) is None
    assert key.unseal("acme", new_pseudonym(), sealed) is None
    assert _key(SECRET + "!").unseal("acme", pseudonym, sealed) is None


def test_pseudonyms_are_random_and_recognisable() -> None:
    a, b = new_pseudonym(), new_pseudonym()
    assert a != b and PSEUDONYM.fullmatch(a) and PSEUDONYM.fullmatch(b)


def test_names_are_shown_for_known_pseudonyms_anywhere_in_a_value() -> None:
    alice, erased = new_pseudonym(), new_pseudonym()
    value = {
        "actor": alice,
        "approvers": [alice, erased],
        "approvals": [(alice, "approved")],
        "message": f"approved by {alice}; {erased} does not count",
        "count": 3,
    }
    assert pseudonyms_in(value) == {alice, erased}
    assert names_shown(value, {alice: "alice"}) == {
        "actor": "alice",
        "approvers": ["alice", erased],
        "approvals": [("alice", "approved")],
        "message": f"approved by alice; {erased} does not count",
        "count": 3,
    }


def test_mentions_are_whole_names_longest_first() -> None:
    mentions = Mentions({"alice": "person-a", "alice@corp.example": "person-b", "bo": "person-c"})
    text = "alice@corp.example and alice (alice.smith, bob, malice) approved; bo did not"
    assert mentions.replaced(text) == (
        "person-b and person-a (alice.smith, bob, malice) approved; person-c did not"
    )
    assert Mentions({}).replaced("alice") == "alice"
