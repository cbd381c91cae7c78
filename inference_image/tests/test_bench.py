"""The benchmarks stay runnable: argument handling and the GPU script's clean skip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference_image.bench.common import pct, sentences
from inference_image.bench.cpu import model_flops_per_token

# pytest-xdist (make test): the load and fault tests run one after another on one worker,
# never beside each other (tests/conftest.py, pytest_xdist_make_scheduler).
pytestmark = pytest.mark.xdist_group("heavy")

REPO = Path(__file__).resolve().parents[2]


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inference_image.bench", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_unknown_command_prints_usage() -> None:
    proc = _bench("nope")
    assert proc.returncode == 2 and "usage" in proc.stderr


@pytest.mark.skipif(os.path.exists("/dev/nvidiactl"), reason="a GPU is present")
def test_gpu_bench_skips_cleanly_without_a_gpu() -> None:
    proc = _bench("gpu")
    assert proc.returncode == 0
    assert "[gpu] skipped:" in proc.stdout


def test_helpers() -> None:
    assert sentences(5) == sentences(5) and len(set(sentences(50))) > 30
    assert pct([1.0, 2.0, 3.0], 50) == 2.0
    assert 21e6 < model_flops_per_token(16) < 23e6  # ~2 FLOPs per encoder weight per token


def test_null_model_bench_measures_the_serving_path() -> None:
    proc = _bench("null", "--seconds", "0.5", "--concurrency", "1", "--items", "1",
                  "--formats", "binary")
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "items=1" in x)
    assert "errors=0" in line and float(line.split("server CPU")[1].split()[0]) > 0


@pytest.mark.slow
def test_gpu_bench_runs_every_step_on_the_cpu() -> None:
    # The GPU script cannot run here; --on-cpu takes each of its steps on the CPU provider.
    proc = subprocess.run([sys.executable, "-m", "inference_image.bench", "gpu", "--on-cpu",
                           "--seconds", "0.2", "--no-serving"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(x.removeprefix("[gpu] ")) for x in proc.stdout.splitlines()
            if x.startswith("[gpu] {")]
    sections = {r["section"] for r in rows}
    assert {"machine", "provider", "workload", "model"} <= sections
    provider = next(r for r in rows if r["section"] == "provider")
    assert provider["kept"] == "CPUExecutionProvider"
    assert provider["ping_with_MAAS_REQUIRE_GPU"] == 503  # the CPU never passes for a GPU
    model = [r for r in rows if r["section"] == "model" and "tokens_per_s" in r]
    assert {r["inputs_per_request"] for r in model} == {1, 32, 128}
    assert all(r["min_cosine_vs_st_fp32"] >= 0.9999 for r in model)
