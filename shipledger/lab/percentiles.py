"""The two figures every latency benchmark reports."""

from __future__ import annotations


def p50_p99(values: list[float], digits: int = 1) -> dict[str, float]:
    """The median and the 99th percentile of `values` (nearest rank), rounded to `digits`."""
    ordered = sorted(values)
    return {
        "p50": round(ordered[len(ordered) // 2], digits),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], digits),
    }
