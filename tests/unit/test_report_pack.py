"""The compliance pack's pure parts: CSV cells, month windows, charts, keys, the signed
manifest, and verification rejecting one changed byte anywhere."""

from __future__ import annotations

import json
import stat
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shipledger.cli import cli
from shipledger.report.charts import coverage_of, deployments_per_week, findings_by_rule, weeks
from shipledger.report.datafiles import cell, cells, csv_bytes
from shipledger.report.manifest import (
    FORMAT,
    MANIFEST,
    SIGNATURE,
    file_entry,
    public_key_entry,
    seal,
    verify_files,
)
from shipledger.report.signing import (
    SigningKeyError,
    fingerprint,
    generate_key,
    load_private_key,
    load_public_key,
)
from shipledger.sinks.ledger.reader import ChainHead, MonthError, month_window

FILES = {"deployments.csv": b"tenant,deployment_id\nretail,d1\n", "report.html": b"<html></html>"}


def _pack(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    pack = tmp_path / "pack"
    pack.mkdir()
    entries = []
    for name, data in FILES.items():
        (pack / name).write_bytes(data)
        entries.append(file_entry(name, data, rows=1, query="SELECT 1", parameters={"a": "b"}))
    manifest = {
        "format": FORMAT,
        "files": entries,
        "chain_heads": [],
        "public_key": public_key_entry(key.public_key()),
    }
    seal(pack, manifest, key)
    return pack


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_a_sealed_pack_verifies(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    pack = _pack(tmp_path, key)
    result = verify_files(pack, key.public_key())
    assert result.ok, result.problems
    untrusted = verify_files(pack)
    assert untrusted.ok and "pass --public-key" in untrusted.notes[0]


@pytest.mark.parametrize("name", [*FILES, MANIFEST, SIGNATURE])
def test_one_changed_byte_in_any_file_fails(
    tmp_path: Path, key: Ed25519PrivateKey, name: str
) -> None:
    pack = _pack(tmp_path, key)
    data = bytearray((pack / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (pack / name).write_bytes(bytes(data))
    result = verify_files(pack, key.public_key())
    assert not result.ok
    # A broken manifest may no longer parse: named either way.
    expected = (name,) if name in FILES else ("signature", MANIFEST)
    assert any(e in problem for e in expected for problem in result.problems), result.problems


def test_an_edited_manifest_fails_its_signature(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    pack = _pack(tmp_path, key)
    edited = (pack / MANIFEST).read_text().replace('"rows": 1', '"rows": 2', 1)
    (pack / MANIFEST).write_text(edited)
    (problem,) = verify_files(pack, key.public_key()).problems
    assert problem.startswith("signature: manifest.json.sig is not a valid signature")


def test_a_manifest_re_signed_by_another_key_fails_against_the_trusted_one(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    pack = _pack(tmp_path, key)
    forger = Ed25519PrivateKey.generate()
    manifest = json.loads((pack / MANIFEST).read_bytes())
    manifest["files"][0]["sha256"] = "0" * 64
    manifest["public_key"] = public_key_entry(forger.public_key())
    seal(pack, manifest, forger)
    problems = verify_files(pack, key.public_key()).problems
    assert any(fingerprint(key.public_key()) in p for p in problems)
    assert any("deployments.csv: sha256" in p for p in problems)


def test_missing_files_and_a_missing_signature_are_named(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    pack = _pack(tmp_path, key)
    (pack / "report.html").unlink()
    (pack / SIGNATURE).unlink()
    problems = verify_files(pack).problems
    assert any(p.startswith("report.html: listed") for p in problems)
    assert any(p.startswith(SIGNATURE) for p in problems)
    assert verify_files(tmp_path).problems[0].startswith(f"{MANIFEST}: cannot read")


def test_keygen_writes_an_owner_only_key_and_never_overwrites(tmp_path: Path) -> None:
    private = tmp_path / "k" / "report.pem"
    public = generate_key(private)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert fingerprint(load_private_key(private).public_key()) == fingerprint(
        load_public_key(public)
    )
    with pytest.raises(SigningKeyError, match="never overwritten"):
        generate_key(private)
    with pytest.raises(SigningKeyError, match="not a PEM public key"):
        load_public_key(private)
    with pytest.raises(SigningKeyError, match="cannot read"):
        load_private_key(tmp_path / "absent.pem")


def test_cells_are_stable() -> None:
    at = datetime(2026, 11, 25, 11, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert cell(at) == "2026-11-25T10:00:00.123Z"
    assert cell(datetime(2026, 11, 25, tzinfo=UTC)) == "2026-11-25T00:00:00.000Z"
    assert [cell(None), cell(True), cell(["a", "b"]), cell(3)] == ["", "true", "a;b", "3"]
    assert csv_bytes(["a", "b"], cells([("x,y", None)])) == b'a,b\n"x,y",\n'


def test_month_window_is_utc_and_names_the_field() -> None:
    assert month_window("2026-12") == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    for bad in ("2026-13", "2026-1", "november"):
        with pytest.raises(MonthError, match="month"):
            month_window(bad)
    # Years no date (or the ledger) holds: a ValueError traceback from `report monthly`.
    for bad in ("0000-01", "9999-12", "1899-12", "2300-01"):
        with pytest.raises(MonthError, match=rf"month: '{bad}' is not between 1900-01 and 2299-12"):
            month_window(bad)


def test_charts_are_reproducible_and_count_by_week() -> None:
    deployments = [
        {"started_at": "2026-11-02T10:00:00.000Z", "status": "succeeded"},
        {"started_at": "2026-11-08T23:59:59.000Z", "status": "failed"},
        {"started_at": "2026-11-09T00:00:00.000Z", "status": "succeeded"},
    ]
    mondays = weeks(date(2026, 11, 1), date(2026, 11, 30))
    assert mondays[0] == date(2026, 10, 26) and mondays[-1] == date(2026, 11, 30)
    svg = deployments_per_week(deployments, mondays)
    assert svg == deployments_per_week(deployments, mondays)
    assert 'id="chart-deployments-per-week"' in svg and "<script" not in svg
    findings = [{"rule": "r", "resolved": "true"}]
    assert findings_by_rule(findings) == findings_by_rule(findings)


def test_coverage_of_a_deployment() -> None:
    base = {"change_id": "CHG1", "change_state_now": "approved", "change_state_at_start": ""}
    assert coverage_of({**base, "change_id": ""}) == "no change request"
    assert coverage_of({**base, "change_state_now": ""}) == "unknown change request"
    assert coverage_of({**base, "change_state_at_start": "scheduled"}) == "approved at start"
    assert coverage_of({**base, "change_state_at_start": "opened"}) == "not approved at start"


def _cli(*args: str) -> Result:
    return CliRunner().invoke(cli, ["report", *args], catch_exceptions=False)


def test_the_command_line_is_checked_before_the_ledger(tmp_path: Path) -> None:
    key = tmp_path / "report.pem"
    assert _cli("keygen", "--out", str(key)).exit_code == 0
    again = _cli("keygen", "--out", str(key))
    assert again.exit_code == 2 and "never overwritten" in again.output
    common = ["monthly", "--out", str(tmp_path / "pack"), "--data-dir", str(tmp_path / "none")]
    bad_month = _cli(*common, "--month", "2026-13", "--key", str(key))
    assert bad_month.exit_code == 2 and "--month" in bad_month.output
    no_key = _cli(*common, "--month", "2026-11")
    assert no_key.exit_code == 2 and "SHIPLEDGER_REPORT_SIGNING_KEY" in no_key.output
    wrong_key = _cli(*common, "--month", "2026-11", "--key", str(key) + ".pub")
    assert wrong_key.exit_code == 2 and "not an unencrypted PEM private key" in wrong_key.output


def test_verify_offline_exit_codes(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    pack = _pack(tmp_path, key)
    ok = _cli("verify", str(pack), "--offline")
    assert ok.exit_code == 0 and "not checked (--offline)" in ok.output
    (pack / "report.html").write_bytes(b"<html>changed</html>")
    failed = _cli("verify", str(pack), "--offline")
    assert failed.exit_code == 1 and "FAILED report.html: sha256" in failed.output


def test_a_chain_head_round_trips_through_the_manifest_and_old_ones_are_legacy() -> None:
    """A pack names each head's lane; one made before chain lanes (migration 0023) names none:
    its heads are the legacy lane's."""
    head = ChainHead("alerts", "acme", "sox", 7, "ab" * 32, "p3")
    assert ChainHead.from_manifest(json.loads(json.dumps(head.to_manifest()))) == head
    old = {k: v for k, v in head.to_manifest().items() if k != "lane"}
    assert ChainHead.from_manifest(old).lane == ""
