"""Pseudonyms of people, pure: the per-tenant keys, the keyed HMAC that finds a person's
lookup entry, the sealed (encrypted) name it holds, and the substitution of names by
pseudonyms and back in any value. No I/O: the ledger's lookup table is
`sinks.ledger.pseudonyms`; why it is built this way is docs/privacy.md.

A pseudonym is `person-` and 16 random hex digits, drawn once per (tenant, person): it is
not computed from the name, so once the lookup entry is destroyed nothing, not even the
tenant's key, links it back to the name (an HMAC of the name would be recomputed by anyone
holding the key). The entry is found by `HMAC(tenant key, name)`, and the name in it is
sealed with AES-GCM under the tenant's encryption key, bound to (tenant, pseudonym).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shipledger.settings import Settings

#: A pseudonym, wherever it stands in a value (a column, an alert's message).
PSEUDONYM = re.compile(r"\bperson-[0-9a-f]{16}\b")
#: Shortest master secret accepted: HKDF stretches nothing, the secret must be strong.
MIN_KEY_CHARS = 32
_NONCE_BYTES = 12


class PrivacyKeyError(ValueError):
    """The configured master secret is missing, unreadable or too short."""


def new_pseudonym() -> str:
    """A fresh random pseudonym."""
    return f"person-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class PrivacyKey:
    """The master secret (`SHIPLEDGER_PRIVACY_KEY` or `_KEY_FILE`) and what HKDF derives
    from it per tenant: one key for the HMAC, one for sealing names."""

    secret: bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> PrivacyKey | None:
        """The configured key; None when pseudonymisation is off (neither is set). Raises
        PrivacyKeyError naming the setting when the secret is unreadable or too short."""
        if settings.privacy_key is not None:
            text, where = settings.privacy_key.get_secret_value(), "SHIPLEDGER_PRIVACY_KEY"
        elif settings.privacy_key_file is not None:
            where = f"SHIPLEDGER_PRIVACY_KEY_FILE ({settings.privacy_key_file})"
            try:
                text = settings.privacy_key_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise PrivacyKeyError(f"{where}: cannot read it: {exc.strerror}") from None
            except UnicodeDecodeError as exc:  # raw random bytes rather than their base64
                raise PrivacyKeyError(
                    f"{where}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                    f"{exc.start}): write the key as text, e.g. base64 (docs/privacy.md)"
                ) from None
        else:
            return None
        if len(text) < MIN_KEY_CHARS:
            raise PrivacyKeyError(f"{where}: at least {MIN_KEY_CHARS} characters needed")
        return cls(text.encode("utf-8"))

    def _derive(self, purpose: str, tenant: str) -> bytes:
        return _derived(self.secret, purpose, tenant)

    def name_hmac(self, tenant: str, name: str) -> str:
        """Hex HMAC-SHA256 of `name` under the tenant's HMAC key: the lookup entry's key."""
        key = self._derive("hmac", tenant)
        return hmac.new(key, name.encode("utf-8"), hashlib.sha256).hexdigest()

    def seal(self, tenant: str, pseudonym: str, name: str) -> str:
        """`name` encrypted for the lookup entry of `pseudonym` (base64 nonce + ciphertext)."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = AESGCM(self._derive("seal", tenant)).encrypt(
            nonce, name.encode("utf-8"), _bound(tenant, pseudonym)
        )
        return base64.b64encode(nonce + sealed).decode("ascii")

    def unseal(self, tenant: str, pseudonym: str, sealed: str) -> str | None:
        """The name sealed for `pseudonym`; None when it does not open with this key (another
        master secret, or an entry copied to another pseudonym or tenant)."""
        raw = base64.b64decode(sealed)
        try:
            name = AESGCM(self._derive("seal", tenant)).decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _bound(tenant, pseudonym)
            )
        except InvalidTag:
            return None
        return name.decode("utf-8")


@lru_cache(maxsize=4096)
def _derived(secret: bytes, purpose: str, tenant: str) -> bytes:
    # Cached: the sink derives a tenant's keys for every name of every batch.
    info = f"shipledger privacy v1\x00{purpose}\x00{tenant}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def _bound(tenant: str, pseudonym: str) -> bytes:
    return f"{tenant}\x00{pseudonym}".encode()


def replace_strings(value: Any, change: Callable[[str], str]) -> Any:
    """`value` with `change` applied to every string in it (inside lists, tuples and map
    values; map keys and other types as they are)."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [replace_strings(v, change) for v in value]
    if isinstance(value, tuple):
        return tuple(replace_strings(v, change) for v in value)
    if isinstance(value, Mapping):
        return {k: replace_strings(v, change) for k, v in value.items()}
    return value


def names_shown(value: Any, names: Mapping[str, str]) -> Any:
    """`value` with every pseudonym of `names` (pseudonym -> name) replaced by its name; a
    pseudonym without one (erased, or of another tenant) stays."""
    return replace_strings(
        value, lambda text: PSEUDONYM.sub(lambda m: names.get(m.group(), m.group()), text)
    )


def pseudonyms_in(value: Any) -> set[str]:
    """Every pseudonym that appears in `value`."""
    found: set[str] = set()

    def collect(text: str) -> str:
        found.update(PSEUDONYM.findall(text))
        return text

    replace_strings(value, collect)
    return found


class Mentions:
    """Whole-word mentions of the names of `pseudonyms` (name -> pseudonym) in free text,
    longest names first (`alice@corp.example` before `alice`)."""

    def __init__(self, pseudonyms: Mapping[str, str]) -> None:
        self.pseudonyms = dict(pseudonyms)
        names = sorted((n for n in self.pseudonyms if n), key=len, reverse=True)
        self._pattern = (
            # Not inside a longer name: `alice` is not in `malice`, `alice.smith`, `corp\\alice`.
            re.compile(
                r"(?<![\w@\\-])(?<!\w\.)(?:" + "|".join(map(re.escape, names)) + r")(?![\w@-]|\.\w)"
            )
            if names
            else None
        )

    def replaced(self, text: str) -> str:
        """`text` with each mention replaced by its pseudonym."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(lambda m: self.pseudonyms[m.group()], text)
