"""Ed25519 keys of compliance packs: made by `shipledger report keygen`, read from files (PEM),
fingerprinted as `sha256:<hex of the raw public key>`."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class SigningKeyError(ValueError):
    """A key file that is missing, unreadable, or not an Ed25519 key of the expected kind."""


def generate_key(path: Path) -> Path:
    """Write a new private key to `path` (PEM, owner-only) and its public key beside it
    (`<path>.pub`); the public key's path. Refuses to overwrite either."""
    public_path = path.with_name(path.name + ".pub")
    for existing in (path, public_path):
        if existing.exists():
            raise SigningKeyError(f"--out: {existing} exists; a signing key is never overwritten")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created owner-only: the key must never be readable by others, even for an instant.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(private_pem)
    public_path.write_bytes(public_pem(key.public_key()))
    return public_path


def public_pem(key: Ed25519PublicKey) -> bytes:
    """The public key as PEM (SubjectPublicKeyInfo)."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(f"{what}: cannot read {path}: {exc.strerror}") from exc


def load_private_key(path: Path, what: str = "signing key") -> Ed25519PrivateKey:
    """The Ed25519 private key in PEM file `path` (`what` names the option in errors)."""
    pem = _read(path, what)
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"{what}: {path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{what}: {path} is not an Ed25519 key")
    return key


def load_public_key(path: Path, what: str = "--public-key") -> Ed25519PublicKey:
    """The Ed25519 public key in PEM file `path`."""
    pem = _read(path, what)
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"{what}: {path} is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{what}: {path} is not an Ed25519 public key")
    return key


def raw_public(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey) -> str:
    """`sha256:<hex>` of the raw public key: how a pack names its signer."""
    return "sha256:" + hashlib.sha256(raw_public(key)).hexdigest()


def public_from_base64(text: str) -> Ed25519PublicKey:
    """A public key from its raw bytes in base64 (as a manifest embeds it)."""
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError) as exc:
        raise SigningKeyError("the manifest's public_key.key is not a raw Ed25519 key") from exc


def signature_valid(key: Ed25519PublicKey, data: bytes, signature: bytes) -> bool:
    """Whether `signature` is `key`'s signature of `data`."""
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
