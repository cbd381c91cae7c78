"""`make bench-gateway` runs end to end (a few samples each), so the script cannot rot between
the runs that record its numbers in docs/BENCHMARKS.md. Its figures are not asserted here."""

from __future__ import annotations

import os

from tests.performance import bench_gateway


def test_the_gateway_benchmark_runs_and_reports_every_measure(capsys):
    saved = dict(os.environ)  # the bench gives its own process the invoke function's environment
    try:
        assert bench_gateway.main(["--seconds", "0.3", "--iterations", "20", "--cold-runs", "1"]) == 0
    finally:
        os.environ.clear()
        os.environ.update(saved)
    report = capsys.readouterr().out
    for measure in ("admission (admit + settle)/s", "redis round trips/request         2", "handler p50",
                    "handler p99", "tokenize", "admit (Redis round trip 1)", "settle (Redis round trip 2)",
                    "cold import", "billed ms per 1 M requests", "resolver route added"):
        assert measure in report, measure
