"""Incident triage's scoring (`shipledger.suspects`): every part named, summed, explained."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shipledger.suspects import (
    WEIGHTS,
    Candidate,
    dependency_distances,
    note_text,
    rank,
    score,
)

AT = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _candidate(**changes: object) -> Candidate:
    fields: dict[str, object] = {
        "deployment_id": "d-1",
        "service": "checkout",
        "environment": "prod",
        "started_at": AT - timedelta(minutes=60),
        "status": "succeeded",
        "commit_sha": "a" * 40,
        "version": "1.2.3",
        "distance": 0,
    }
    fields.update(changes)
    return Candidate(**fields)  # type: ignore[arg-type]


def test_weights_sum_to_100() -> None:
    assert sum(WEIGHTS.values()) == 100


def test_every_part_is_named_and_the_score_is_their_sum() -> None:
    suspect = score(
        _candidate(
            commit_count=32,
            verdict="failed_verification",
            drift=("aws_s3_bucket.logs",),
            rolled_back_by="d-2",
        ),
        AT,
        "checkout",
    )
    names = [p.name for p in suspect.parts]
    assert names == list(WEIGHTS)
    assert suspect.score == round(sum(p.points for p in suspect.parts), 1)
    # An hour before: half the time points; everything else full.
    assert suspect.score == 100 - WEIGHTS["time_proximity"] / 2
    assert "deployed 60 min before the incident" in suspect.why
    assert "configuration drift: aws_s3_bucket.logs" in suspect.why
    assert "rolled back afterwards by d-2" in suspect.why
    assert suspect.to_json()["parts"][0] == {
        "name": "time_proximity",
        "points": 17.5,
        "weight": 35.0,
        "detail": "deployed 60 min before the incident",
    }


def test_unknown_inputs_score_nothing_and_say_so() -> None:
    suspect = score(_candidate(), AT, "checkout")
    details = {p.name: (p.points, p.detail) for p in suspect.parts}
    assert details["change_size"] == (0.0, "change size unknown")
    assert details["verification"] == (0.0, "no verification verdict")
    assert details["rollback"] == (0.0, "not rolled back")
    assert "change size" not in suspect.why  # only what earned points


def test_a_failed_deployment_without_a_verdict_counts_as_failed() -> None:
    part = score(_candidate(status="failed"), AT, "checkout").parts[3]
    assert (part.name, part.points, part.detail) == ("verification", 12.0, "deployment failed")


def test_a_rolled_back_status_is_a_rollback_without_a_name() -> None:
    part = score(_candidate(status="rolled_back", rolled_back_by=""), AT, "checkout").parts[5]
    assert (part.points, part.detail) == (10.0, "rolled back afterwards")


def test_distance_halves_per_hop_and_names_the_relation() -> None:
    parts = [score(_candidate(distance=d), AT, "checkout").parts[1] for d in (0, 1, 2)]
    assert [p.points for p in parts] == [20.0, 10.0, 6.7]
    assert parts[0].detail == "checkout itself"
    assert parts[1].detail == "a direct dependency of checkout"
    assert parts[2].detail == "a dependency of checkout, 2 hops away"


def test_rank_puts_the_likeliest_first_and_keeps_the_limit() -> None:
    old = _candidate(deployment_id="old", started_at=AT - timedelta(hours=20))
    recent_dep = _candidate(deployment_id="dep", distance=1, started_at=AT - timedelta(minutes=5))
    failed = _candidate(
        deployment_id="failed", status="failed", started_at=AT - timedelta(minutes=30)
    )
    ranked = rank([old, recent_dep, failed], AT, "checkout", limit=2)
    assert [s.candidate.deployment_id for s in ranked] == ["failed", "dep"]


def test_ties_at_the_limit_rank_the_same_in_any_read_order() -> None:
    twins = [_candidate(deployment_id=f"d-{n}") for n in (3, 1, 2)]
    for order in (twins, twins[::-1], twins[1:] + twins[:1]):
        ranked = rank(order, AT, "checkout", limit=2)
        assert [s.candidate.deployment_id for s in ranked] == ["d-1", "d-2"]


def test_dependency_distances_follow_the_catalog_with_cycles_and_depth() -> None:
    graph = {"checkout": ["payments", "cart"], "payments": ["ledger", "checkout"], "ledger": ["db"]}
    assert dependency_distances(graph, "checkout") == {
        "checkout": 0,
        "payments": 1,
        "cart": 1,
        "ledger": 2,
        "db": 3,
    }
    assert dependency_distances(graph, "checkout", max_depth=1) == {
        "checkout": 0,
        "payments": 1,
        "cart": 1,
    }
    assert dependency_distances({}, "lonely") == {"lonely": 0}


def test_the_note_lists_each_suspect_with_its_reasons() -> None:
    ranked = rank([_candidate(status="failed")], AT, "checkout", limit=5)
    text = note_text("checkout", AT, ranked)
    assert text.splitlines()[0].startswith("shipledger: recent changes suspected for checkout")
    assert "1. d-1 (checkout to prod, failed, commit aaaaaaaaaaaa): 49.5: " in text
    assert "deployment failed (+12)" in text
    assert note_text("checkout", AT, []).endswith("in the window).")
