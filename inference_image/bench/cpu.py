"""This CPU: SIMD flags, an FP32 peak estimate, a measured matmul rate, the model's FLOPs.

    python -m inference_image.bench cpu
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from inference_image.bench.common import cpu_count

# MiniLM-L6-H384: 6 layers, hidden 384, FFN 1536; 2 FLOPs per multiply-add.
LAYERS, HIDDEN, FFN = 6, 384, 1536


def model_flops_per_token(seq_len: int) -> float:
    dense = 4 * HIDDEN * HIDDEN + 2 * HIDDEN * FFN  # Q, K, V, O + the two FFN matmuls
    attention = 2 * seq_len * HIDDEN  # QK^T and AV, per token
    return 2.0 * LAYERS * (dense + attention)


def cpu_info() -> dict:
    info: dict = {"machine": platform.machine(), "cores": cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    first = text.split("\n\n")[0]
    fields = dict(line.split(":", 1) for line in first.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    info.update(model=fields.get("model name"), family=fields.get("cpu family"),
                mhz=float(fields.get("cpu MHz", "0") or 0),
                flags={f: f in flags for f in ("avx2", "fma", "avx512f", "avx512_bf16",
                                               "avx512_vnni", "avx_vnni", "amx_tile")})
    # FP32 FLOPs per cycle per core: two FMA pipes × lanes × 2. AVX-512 is native 512-bit on
    # AMD family 26 (Zen 5) and Intel server cores; Zen 4 (family 25) runs it as 2×256.
    vendor_amd = "AMD" in (fields.get("vendor_id", "") + (info["model"] or ""))
    if info["flags"]["avx512f"] and not (vendor_amd and fields.get("cpu family") == "25"):
        per_cycle = 2 * 16 * 2
    elif info["flags"]["fma"] and info["flags"]["avx2"]:
        per_cycle = 2 * 8 * 2
    else:
        per_cycle = 8
    info["fp32_flops_per_cycle_per_core"] = per_cycle
    info["peak_fp32_gflops_estimate"] = per_cycle * info["mhz"] * 1e6 * info["cores"] / 1e9
    return info


def matmul_gflops(n: int = 2048, seconds: float = 3.0) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    best = 0.0
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def ort_matmul_gflops(m: int = 4096, k: int = 384, n: int = 1536, seconds: float = 3.0) -> float:
    """The shape the model spends its time in (tokens × 384 @ 384 × 1536), through ORT."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(2).standard_normal((k, n),
                                                                         dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    sess = ort.InferenceSession(onnx._serialize(model) if hasattr(onnx, "_serialize")
                                else model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).standard_normal((m, k), dtype=np.float32)
    sess.run(None, {"x": x})
    best = 0.0
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        sess.run(None, {"x": x})
        best = max(best, 2 * m * k * n / (time.perf_counter() - t0) / 1e9)
    return best


def model_tokens_per_s(batch: int = 32, seq: int = 128, seconds: float = 4.0) -> float | None:
    """The exported model through ONNX Runtime (CPU) on a full [batch, seq] input."""
    from inference_image.bench.common import model_dir

    path = model_dir() / "model.onnx"
    if not path.is_file():
        return None
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    ids = np.random.default_rng(4).integers(1000, 20000, (batch, seq), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    sess.run(None, feeds)
    best = float("inf")
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        sess.run(None, feeds)
        best = min(best, time.perf_counter() - t0)
    return batch * seq / best


def main(argv: list[str] | None = None) -> int:
    info = cpu_info()
    info["load_average_before"] = os.getloadavg()
    info["numpy_sgemm_2048_gflops"] = matmul_gflops()
    info["ort_matmul_4096x384x1536_gflops"] = ort_matmul_gflops()
    per_cycle = info.get("fp32_flops_per_cycle_per_core")
    if per_cycle:  # the VM reports the base clock; the measured rate shows the boost
        info["implied_clock_ghz_from_ort_matmul"] = (
            info["ort_matmul_4096x384x1536_gflops"] / (per_cycle * info["cores"]))
    tps = model_tokens_per_s()
    if tps is not None:
        info["model_onnx_tokens_per_s_32x128"] = tps
        info["model_onnx_gflops_32x128"] = tps * model_flops_per_token(128) / 1e9
        peak = info.get("peak_fp32_gflops_estimate")
        if peak:
            info["model_fraction_of_nominal_peak"] = info["model_onnx_gflops_32x128"] / peak
        info["model_fraction_of_ort_matmul_rate"] = (
            info["model_onnx_gflops_32x128"] / info["ort_matmul_4096x384x1536_gflops"])
    info["model_gflop_per_1k_tokens_at_len_16"] = model_flops_per_token(16) * 1e3 / 1e9
    info["model_gflop_per_1k_tokens_at_len_128"] = model_flops_per_token(128) * 1e3 / 1e9
    info["load_average"] = os.getloadavg()
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
