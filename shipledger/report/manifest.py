"""The signed manifest of a compliance pack, and its verification. Pure but for reading the
pack's own files.

`manifest.json` lists every file of the pack with its sha256, size, and the query (with its
parameters) that produced it, the ledger chain heads when it was generated, and the public key
of the signer (raw, base64, and its fingerprint). `manifest.json.sig` holds the Ed25519
signature of manifest.json's exact bytes, base64. So a changed byte in any file changes its
hash, which no longer matches the manifest; a changed manifest no longer matches the signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shipledger.report.signing import (
    SigningKeyError,
    fingerprint,
    public_from_base64,
    raw_public,
    signature_valid,
)

FORMAT = "shipledger-monthly-pack/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def file_entry(
    name: str,
    data: bytes,
    *,
    rows: int | None = None,
    query: str | None = None,
    parameters: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A manifest entry for file `name` with content `data` (rows and query for data files)."""
    entry: dict[str, Any] = {"name": name, "sha256": sha256_hex(data), "bytes": len(data)}
    if rows is not None:
        entry["rows"] = rows
    if query is not None:
        entry["query"] = query
        entry["parameters"] = parameters or {}
    return entry


def public_key_entry(key: Ed25519PublicKey) -> dict[str, str]:
    """How the manifest names its signer."""
    return {
        "algorithm": "ed25519",
        "key": base64.b64encode(raw_public(key)).decode("ascii"),
        "fingerprint": fingerprint(key),
    }


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The manifest as written: sorted keys, indented, one trailing newline."""
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def signature_text(key: Ed25519PrivateKey, manifest: bytes) -> bytes:
    """The content of manifest.json.sig: the signature of `manifest`, base64, newline."""
    return base64.b64encode(key.sign(manifest)) + b"\n"


def seal(pack: Path, manifest: dict[str, Any], key: Ed25519PrivateKey) -> None:
    """Write `manifest` (its files already in `pack`) and its signature by `key`."""
    raw = manifest_bytes(manifest)
    (pack / MANIFEST).write_bytes(raw)
    (pack / SIGNATURE).write_bytes(signature_text(key, raw))


@dataclass
class Verification:
    """What `verify_files` found: problems (the pack fails), notes (it does not)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    manifest: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """No problem found."""
        return not self.problems


def verify_files(pack: Path, trusted: Ed25519PublicKey | None = None) -> Verification:
    """Check the signature of `pack`'s manifest (against `trusted` when given, else only
    against the key the manifest embeds) and every listed file's hash. The chain heads are
    the caller's to check against the ledger (`Verification.manifest["chain_heads"]`)."""
    result = Verification()
    try:
        raw = (pack / MANIFEST).read_bytes()
    except OSError as exc:
        result.problems.append(f"{MANIFEST}: cannot read it in {pack}: {exc.strerror}")
        return result
    try:
        manifest = json.loads(raw)
        key_entry = manifest["public_key"]
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        result.problems.append(f"{MANIFEST}: not a {FORMAT} manifest")
        return result
    result.manifest = manifest
    _check_signature(pack, raw, key_entry, trusted, result)
    _check_files(pack, files, result)
    return result


def _check_signature(
    pack: Path,
    raw: bytes,
    key_entry: Any,
    trusted: Ed25519PublicKey | None,
    result: Verification,
) -> None:
    try:
        embedded = public_from_base64(str(key_entry["key"]))
    except (SigningKeyError, KeyError, TypeError) as exc:
        result.problems.append(f"{MANIFEST}: public_key: {exc}")
        return
    if key_entry.get("fingerprint") != fingerprint(embedded):
        result.problems.append(f"{MANIFEST}: public_key.fingerprint does not match its key")
    if trusted is not None and raw_public(trusted) != raw_public(embedded):
        result.problems.append(
            f"signature: the pack is signed by key {fingerprint(embedded)}, not by the given "
            f"public key {fingerprint(trusted)}"
        )
    elif trusted is None:
        result.notes.append(
            f"signed by key {fingerprint(embedded)} (embedded in the manifest; pass "
            "--public-key to check it is the key you trust)"
        )
    try:
        signature = base64.b64decode((pack / SIGNATURE).read_bytes().strip(), validate=True)
    except OSError as exc:
        result.problems.append(f"{SIGNATURE}: cannot read it: {exc.strerror}")
        return
    except ValueError:
        result.problems.append(f"{SIGNATURE}: not base64")
        return
    if not signature_valid(embedded, raw, signature):
        result.problems.append(
            f"signature: {SIGNATURE} is not a valid signature of {MANIFEST} "
            "(the manifest or the signature was changed)"
        )


def _check_files(pack: Path, files: list[Any], result: Verification) -> None:
    listed: set[str] = set()
    for entry in files:
        name = str(entry.get("name", "")) if isinstance(entry, dict) else ""
        if not name or "/" in name or "\\" in name or name.startswith("."):
            result.problems.append(f"{MANIFEST}: a file entry has no plain name: {entry!r}")
            continue
        listed.add(name)
        try:
            data = (pack / name).read_bytes()
        except OSError as exc:
            result.problems.append(f"{name}: listed in the manifest but unreadable: {exc.strerror}")
            continue
        if sha256_hex(data) != entry.get("sha256"):
            result.problems.append(
                f"{name}: sha256 {sha256_hex(data)} does not match the manifest's "
                f"{entry.get('sha256')} (the file was changed)"
            )
    extra = sorted(p.name for p in pack.iterdir() if p.name not in listed | {MANIFEST, SIGNATURE})
    if extra:
        result.notes.append(f"files not in the manifest (not covered): {', '.join(extra)}")
