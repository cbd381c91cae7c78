"""The benchmarks stay runnable: argument handling and the GPU script's clean skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference_image.bench.common import pct, sentences
from inference_image.bench.cpu import model_flops_per_token

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
