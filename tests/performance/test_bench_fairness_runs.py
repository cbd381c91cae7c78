"""`make bench-fairness` starts and prints its scheduler part (no model: under a second), so
the script cannot rot between the runs that record its numbers in docs/BENCHMARKS.md. The
server part and `make bench-security` start the real server and the local stack: they are
run by hand (`BENCH_ARGS="--samples 20"`). No figure is asserted here."""

from __future__ import annotations

import json

from tests.performance import bench_fairness


def test_the_fairness_benchmark_prints_the_order_of_service(capsys):
    assert bench_fairness.main(["--scheduler-only"]) == 0
    report = capsys.readouterr().out
    assert "the bulk lane's slices" in report and "B 3 tokens" in report and "C 2,048 x 71 tokens" in report
    assert bench_fairness.main(["--scheduler-only", "--json"]) == 0
    slices = json.loads(capsys.readouterr().out)["order_of_service"]
    assert all(len(case) == 6 for case in slices.values())
