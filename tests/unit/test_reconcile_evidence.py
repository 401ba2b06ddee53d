"""Evidence parsers (`shipledger.reconcile`: Kubernetes audit log, CloudTrail, access log) on
the fixtures modelled on the providers' documented examples, malformed entries included, and
the mapping of what they observed: pure."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shipledger.reconcile import access_log, cloudtrail, k8s_audit
from shipledger.reconcile.evidence import Malformed, Observation, read_lines
from shipledger.reconcile.mapping import MappingError, Target, load_mapping, parse_mapping
from shipledger.reconcile.run import Parser, read_evidence

FIXTURES = Path(__file__).parent.parent / "fixtures" / "reconcile"
MAPPING = load_mapping(FIXTURES / "mapping.yaml")


def _entries(parse: Parser, name: str) -> list[Observation | Malformed | None]:
    return list(parse(name, read_lines(FIXTURES / name)))


def _kept(entries: list[Observation | Malformed | None]) -> list[Observation]:
    return [e for e in entries if isinstance(e, Observation)]


def _malformed(entries: list[Observation | Malformed | None]) -> list[tuple[str, str]]:
    return [(e.location, e.reason) for e in entries if isinstance(e, Malformed)]


def test_a_line_nested_too_deeply_is_malformed_not_a_crash() -> None:
    [entry] = k8s_audit.parse("a.log", [(1, "[" * 100_000)])
    assert entry == Malformed("a.log:1", "nested too deeply to read")


def test_k8s_audit_keeps_completed_successful_workload_writes() -> None:
    entries = _entries(k8s_audit.parse, "k8s-audit.log")
    kept = _kept(entries)
    assert [(o.location, o.action, o.workload, o.field("namespace")) for o in kept] == [
        ("k8s-audit.log:1", "patch deployments", "checkout-web", "shop-prod"),
        ("k8s-audit.log:5", "patch deployments", "payments", "shop-prod"),
        ("k8s-audit.log:6", "update deployments", "cart", "shop-prod"),
        ("k8s-audit.log:7", "patch deployments", "cart", "shop-prod"),
        ("k8s-audit.log:11", "patch daemonsets", "kube-proxy", "kube-system"),
        # A create names its object in the response, not the URL.
        ("k8s-audit.log:12", "create statefulsets", "ledger-db", "shop-prod"),
    ]
    first = kept[0]
    assert first.at == datetime(2026, 11, 30, 11, 2, 10, 123456, tzinfo=UTC)
    assert first.until == datetime(2026, 11, 30, 11, 2, 10, 140211, tzinfo=UTC)
    # Who made the change is not kept: the ledger has it as a pseudonym.
    assert all("alice" not in repr(o) and "argocd" not in repr(o) for o in kept)
    assert _malformed(entries) == [
        ("k8s-audit.log:9", "not JSON: Invalid control character at (column 155)"),
        ("k8s-audit.log:10", "objectRef.namespace: required"),
        ("k8s-audit.log:13", "requestReceivedTimestamp: not an ISO 8601 timestamp: "
                             "'30/Nov/2026 17:00'"),
    ]  # fmt: skip
    assert len(entries) == 13  # RequestReceived, status, get and the 409 are no change


def test_cloudtrail_keeps_ecs_and_lambda_deployments_without_error() -> None:
    entries = _entries(cloudtrail.parse, "cloudtrail.json")
    kept = _kept(entries)
    assert [(o.location, o.action, o.workload, o.fields) for o in kept] == [
        ("cloudtrail.json:Records[0]", "ecs:UpdateService", "checkout",
         (("file", "cloudtrail.json"), ("region", "us-east-1"), ("account", "123456789012"),
          ("cluster", "prod"), ("service", "checkout"))),
        ("cloudtrail.json:Records[1]", "lambda:UpdateFunctionCode20150331v2", "payments-prod",
         (("file", "cloudtrail.json"), ("region", "us-east-1"), ("account", "123456789012"),
          ("function", "payments-prod"))),
        ("cloudtrail.json:Records[2]", "lambda:PublishVersion20150331", "payments-prod",
         (("file", "cloudtrail.json"), ("region", "us-east-1"), ("account", "123456789012"),
          ("function", "payments-prod"))),
        ("cloudtrail.json:Records[6]", "ecs:CreateService", "search",
         (("file", "cloudtrail.json"), ("region", "us-east-1"), ("account", "123456789012"),
          ("cluster", "staging"), ("service", "search"))),
    ]  # fmt: skip
    assert kept[0].at == datetime(2026, 11, 30, 11, 1, tzinfo=UTC)
    assert _malformed(entries) == [
        ("cloudtrail.json:Records[5]", "eventTime: required, a timestamp")
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"Records": [', "not JSON"),
        ('{"records": []}', "Records: required, an array"),
        ("[" * 100_000, "nested too deeply"),
        ('{"Records": [{"eventSource": "ecs.amazonaws.com"}]}', "eventName: required"),
        (
            '{"Records": [{"eventSource": "lambda.amazonaws.com", "eventName": '
            '"UpdateFunctionCode20150331v2", "eventTime": "2026-11-30T09:31:00Z", '
            '"requestParameters": {}}]}',
            "requestParameters.functionName: required",
        ),
    ],
)
def test_cloudtrail_files_that_cannot_be_read_say_why(text: str, reason: str) -> None:
    entries = list(cloudtrail.parse("x.json", enumerate(text.splitlines(keepends=True), 1)))
    assert len(entries) == 1 and isinstance(entries[0], Malformed)
    assert reason in entries[0].reason


def test_access_log_keeps_successful_posts_and_puts() -> None:
    entries = _entries(access_log.parse, "access.log")
    kept = _kept(entries)
    assert [(o.location, o.at.isoformat(), o.field("method"), o.field("path")) for o in kept] == [
        ("access.log:1", "2026-11-30T11:02:00+00:00", "POST", "/api/deploy/checkout/prod"),
        ("access.log:3", "2026-11-30T11:04:00+00:00", "POST", "/login"),
        # +0100 is 11:04 UTC; the query string is no part of the path.
        ("access.log:4", "2026-11-30T11:04:00+00:00", "PUT", "/api/deploy/payments/prod"),
        # The Common Log Format (no referer, no agent) reads too.
        ("access.log:8", "2026-11-30T14:00:00+00:00", "POST", "/api/deploy/search/staging"),
    ]
    assert _malformed(entries) == [
        ("access.log:6", "not a Common/Combined Log Format line"),
        ("access.log:7", "time: not dd/Mon/yyyy:HH:MM:SS +zzzz: '31/Nov/2026:13:00:00 +0000'"),
    ]


def test_the_mapping_names_tenant_service_and_environment() -> None:
    evidence = read_evidence("access-log", [FIXTURES / "access.log"], MAPPING, "acme")
    assert [(o.location, t) for o, t in evidence.mapped] == [
        ("access.log:1", Target("acme", "checkout", "prod")),
        ("access.log:4", Target("acme", "payments", "prod")),
        ("access.log:8", Target("acme", "search", "staging")),
    ]
    assert evidence.unmapped == []  # /login is no deploy endpoint: not listed
    assert evidence.entries == 8 and len(evidence.malformed) == 2
    k8s = read_evidence("k8s-audit", [FIXTURES / "k8s-audit.log"], MAPPING, "acme")
    assert [t.service for _, t in k8s.mapped] == [
        "checkout", "payments", "cart", "cart", "ledger-db",
    ]  # fmt: skip
    assert [o.location for o in k8s.unmapped] == ["k8s-audit.log:11"]  # kube-system
    ecs = read_evidence("cloudtrail", [FIXTURES / "cloudtrail.json"], MAPPING, "acme")
    assert [(t.service, t.environment) for _, t in ecs.mapped] == [
        ("checkout", "prod"), ("payments", "prod"), ("payments", "prod"), ("search", "staging"),
    ]  # fmt: skip


def test_gzip_evidence_reads_like_plain_and_hashes_the_same(tmp_path: Path) -> None:
    packed = tmp_path / "cloudtrail.json.gz"
    packed.write_bytes(gzip.compress((FIXTURES / "cloudtrail.json").read_bytes()))
    plain = read_evidence("cloudtrail", [FIXTURES / "cloudtrail.json"], MAPPING, "acme")
    zipped = read_evidence("cloudtrail", [packed], MAPPING, "acme")
    assert [t for _, t in zipped.mapped] == [t for _, t in plain.mapped]
    assert zipped.digests == plain.digests
    broken = tmp_path / "broken.json.gz"
    broken.write_bytes(packed.read_bytes()[:40])
    cut = read_evidence("cloudtrail", [broken], MAPPING, "acme")
    assert [m.location for m in cut.malformed] == ["broken.json.gz"]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("rules: []", "rules: List should have at least 1 item"),
        ("rules: [{source: ftp, environment: prod}]", "rules.0.source"),
        ("rules: [{source: k8s-audit}]", "rules.0: environment: required unless path"),
        ("rules: [{source: k8s-audit, environment: p, match: {cluster: x}}]",
         "rules.0: match: unknown field 'cluster' for k8s-audit"),
        ("rules: [{source: access-log, environment: prod}]", "rules.0: path: required"),
        ("rules: [{source: access-log, environment: p, path: '/deploy/(?P<service>'}]",
         "rules.0: path: not a regular expression"),
        ("rules: [{source: access-log, environment: p, path: '^/deploy/'}]",
         "rules.0: service: required unless path has a (?P<service>...) group"),
        ("rules: [{source: cloudtrail, environment: p, path: x}]",
         "rules.0: path: only access-log rules have one"),
        ("rules: [{source: cloudtrail, environment: p}]\ncovers: [{services: [a]}]",
         "covers.0.environment"),
        ("- a list", "expected a mapping with 'rules'"),
    ],
)  # fmt: skip
def test_a_bad_mapping_names_the_field(text: str, field: str) -> None:
    with pytest.raises(MappingError) as raised:
        parse_mapping(text, "m.yaml")
    assert str(raised.value).startswith("m.yaml: ")
    assert field in str(raised.value)


def test_a_mapping_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    """It was a UnicodeDecodeError's traceback from `shipledger reconcile --mapping`."""
    path = tmp_path / "m.yaml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(MappingError, match=r"m\.yaml: cannot be read: not UTF-8 \(byte 0xff at 0"):
        load_mapping(path)
