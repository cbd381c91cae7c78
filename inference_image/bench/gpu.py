"""GPU readiness, one command (under 8 minutes on one H200):

    python -m inference_image.bench gpu [--seconds 3] [--no-serving] [--json FILE]

Prints, in order, everything the projection in docs/BENCHMARKS.md needs checking:

1. the machine: GPU name (nvidia-smi), onnxruntime version and its available providers,
   torch and CUDA;
2. provider honesty: the server's own start-up path (``OnnxSession.initialize``): the provider
   it actually kept, why others were refused, its min cosine against the export's reference
   vectors, and whether ``MAAS_REQUIRE_GPU=true`` would let /ping answer 200;
3. the model alone, per variant (the server's own session: TensorRT fp16 where the image has
   TensorRT, else CUDA fp32; CUDA fp32; CUDA fp16 converted here): tokens/s for requests of
   1, 32 and 2,048 sentences, each request cut into calls the way the batcher cuts it
   (length-sorted, <= 16,384 padded tokens and <= 256 items per call), and the min cosine
   against sentence-transformers fp32;
4. the peer: sentence-transformers fp16 on the same GPU, same requests: tokens/s and our
   best variant's ratio to it;
5. the serving path on this machine: the real server process (GPU, binary hop format) under
   closed-loop load with 1, 32 and 2,048 inputs per request: requests/s, tokens/s (from the
   server's own counter), p50/p99; and the null model's CPU time per request.

Needs onnxruntime-gpu with its CUDA libraries (the container image has them); the
sentence-transformers rows need a CUDA build of torch. Without a GPU it prints why and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from inference_image.bench.common import model_dir, sentences
from inference_image.bench.cpu import model_flops_per_token
from inference_image.validation import cosine_rows

SIZES = (1, 32, 2048)  # inputs per request
PROVIDER = "CUDAExecutionProvider"  # --on-cpu swaps in the CPU to check this script's logic
CALL_TOKENS = 16384  # the batcher's defaults: padded tokens and items per model call
CALL_ITEMS = 256


def _gpu_present() -> str | None:
    """None when a GPU can be used, else the reason it cannot."""
    if not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")):
        return "no NVIDIA device visible (/dev/nvidia*)"
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"this onnxruntime ({ort.__version__}) has no CUDA provider"
    return None


def _say(section: str, row: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    row = {"section": section, **row}
    rows.append(row)
    print(f"[gpu] {json.dumps(row)}", flush=True)


def _calls(ids: list[list[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The request cut as the batcher cuts it: sorted by length, <= CALL_TOKENS padded tokens
    and <= CALL_ITEMS items per call."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    calls, current = [], []
    for i in order:
        if current and ((len(current) + 1) * len(ids[i]) > CALL_TOKENS
                        or len(current) >= CALL_ITEMS):
            calls.append(current)
            current = []
        current.append(i)
    if current:
        calls.append(current)
    out = []
    for call in calls:
        width = max(len(ids[i]) for i in call)
        input_ids = np.zeros((len(call), width), dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for r, i in enumerate(call):
            input_ids[r, :len(ids[i])] = ids[i]
            mask[r, :len(ids[i])] = 1
        out.append((input_ids, mask))
    return out


def _rate(fn: Any, tokens: int, seconds: float) -> float:
    """tokens/s of ``fn`` (synchronous), after two warm-up runs."""
    fn()
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3:
        fn()
        n += 1
    return tokens * n / (time.perf_counter() - t0)


def _machine(rows: list[dict[str, Any]]) -> None:
    import onnxruntime as ort

    gpu = "unknown"
    if shutil.which("nvidia-smi"):
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
    info: dict[str, Any] = {"gpu": gpu, "onnxruntime": ort.__version__,
                            "available_providers": ort.get_available_providers(),
                            "cpu_cores": os.cpu_count()}
    try:
        import torch

        info.update(torch=torch.__version__, torch_cuda=torch.cuda.is_available())
    except ImportError:
        info["torch"] = None
    _say("machine", info, rows)


def _honesty(mdir: Path, rows: list[dict[str, Any]]) -> Any:
    """The server's own provider choice; returns its session (None when none was kept)."""
    from inference_image.server.session import GPU_PROVIDERS, OnnxSession

    session = OnnxSession(mdir, providers=os.environ.get("MAAS_PROVIDERS", ""))
    t0 = time.perf_counter()
    try:
        provider = session.initialize()
    except RuntimeError as exc:
        _say("provider", {"error": str(exc), "tried": session.tried}, rows)
        return None
    gpu_ok = provider in GPU_PROVIDERS and session.reference_cosine is not None
    _say("provider", {"kept": provider, "refused": session.tried,
                      "min_cosine_vs_reference": session.reference_cosine,
                      "start_up_s": round(time.perf_counter() - t0, 1),
                      "ping_with_MAAS_REQUIRE_GPU": 200 if gpu_ok else 503}, rows)
    return session


def _model_rows(mdir: Path, server: Any, workloads: dict[int, list[list[int]]],
                ref: dict[int, np.ndarray], args: argparse.Namespace,
                rows: list[dict[str, Any]]) -> dict[int, dict]:
    """tokens/s and cosine per variant: the server's own session (TensorRT fp16 where the
    image has TensorRT, else CUDA fp32), CUDA fp32, and CUDA fp16 (converted here)."""
    import onnxruntime as ort

    onnx_path = mdir / "model.onnx"
    runners: list[tuple[str, Any]] = []
    if server is not None:
        runners.append((f"server session ({server.provider})", server.execute))
    tmp = Path(tempfile.mkdtemp(prefix="maas-gpu-"))
    candidates: list[tuple[str, Path]] = []
    if server is None or server.provider != PROVIDER:
        candidates.append(("ORT CUDA fp32", onnx_path))
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        fp16 = tmp / "model.fp16.onnx"
        onnx.save(convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True),
                  str(fp16))
        candidates.append(("ORT CUDA fp16", fp16))
    except Exception as exc:  # noqa: BLE001 - a row that cannot run is reported
        _say("model", {"variant": "ORT CUDA fp16", "skipped": str(exc)[:300]}, rows)
    for name, path in candidates:
        try:
            sess = ort.InferenceSession(str(path), providers=[PROVIDER])
            if sess.get_providers()[0] != PROVIDER:
                _say("model", {"variant": name, "skipped": "fell back to the CPU"}, rows)
                continue
            runners.append((name, lambda a, m, sess=sess: sess.run(
                ["embeddings"], {"input_ids": a, "attention_mask": m})[0]))
        except Exception as exc:  # noqa: BLE001
            _say("model", {"variant": name, "skipped": f"{type(exc).__name__}: {exc}"[:300]},
                 rows)
    best: dict[int, dict] = {}
    for name, execute in runners:
        for n, ids in workloads.items():
            calls = _calls(ids)
            tokens = sum(map(len, ids))

            def run(calls: list = calls, execute: Any = execute) -> list[np.ndarray]:
                return [execute(a, m) for a, m in calls]

            order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
            outs = run()
            got = np.empty((len(ids), outs[0].shape[1]), dtype=np.float32)
            got[order] = np.concatenate(outs)
            rate = _rate(run, tokens, args.seconds)
            row = {"variant": name, "inputs_per_request": n, "tokens": tokens,
                   "model_calls": len(calls), "tokens_per_s": round(rate),
                   "min_cosine_vs_st_fp32": float(cosine_rows(got, ref[n]).min())}
            _say("model", row, rows)
            if row["min_cosine_vs_st_fp32"] >= 0.9999 and rate > best.get(n, {}).get(
                    "tokens_per_s", 0):
                best[n] = row
    shutil.rmtree(tmp, ignore_errors=True)
    return best


def _st_rows(st: Any, texts: dict[int, list[str]], workloads: dict[int, list[list[int]]],
             best: dict[int, dict], args: argparse.Namespace,
             rows: list[dict[str, Any]]) -> None:
    import torch

    st.half()
    for n, batch in texts.items():
        tokens = sum(map(len, workloads[n]))

        def run(batch: list[str] = batch) -> None:
            st.encode(batch, batch_size=min(len(batch), 256), convert_to_numpy=True)
            torch.cuda.synchronize()

        rate = _rate(run, tokens, args.seconds)
        ours = best.get(n)
        _say("peer", {"variant": "sentence-transformers fp16 (torch CUDA)",
                      "inputs_per_request": n, "tokens_per_s": round(rate),
                      "ours_best": ours and ours["variant"],
                      "ratio_ours_to_st_fp16": ours and round(ours["tokens_per_s"] / rate, 2)},
             rows)


def _serving_rows(mdir: Path, workloads: dict[int, list[list[int]]],
                  args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """The real server on this GPU under closed-loop load, binary hop format."""
    from gateway import wire
    from inference_image.bench.common import REPO, run_load
    from inference_image.bench.serving import _free_port

    port = _free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "MAAS_MODEL_DIR": str(mdir),
           "MAAS_LOG_LEVEL": "warning",
           "MAAS_REQUIRE_GPU": "true" if PROVIDER != "CPUExecutionProvider" else "false"}
    proc = subprocess.Popen([sys.executable, "-m", "inference_image.server"], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        deadline = time.monotonic() + 240  # a TensorRT engine build takes minutes
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                _say("serving", {"skipped": "the server did not answer /ping 200 with "
                                 "MAAS_REQUIRE_GPU=true"}, rows)
                return
            try:
                with urllib.request.urlopen(url + "/ping", timeout=1) as r:
                    ping = json.loads(r.read())
                    break
            except OSError:
                time.sleep(0.5)
        headers = {"Content-Type": wire.TOKEN_IDS_TYPE, "Accept": wire.EMBEDDINGS_TYPE,
                   wire.ATTRIBUTES_HEADER: "tenant=ten_bench;timeout_ms=20000"}
        for n, concurrency in zip(SIZES, (64, 32, 4), strict=True):
            body = [wire.encode_token_ids(workloads[n])]
            tokens0 = _server_tokens(url)
            t0 = time.perf_counter()
            result = run_load(url, "/invocations", body, concurrency, args.seconds, 1.0,
                              headers)
            elapsed = time.perf_counter() - t0  # warm-up included on both sides
            _say("serving", {"provider": ping.get("provider"), "inputs_per_request": n,
                             "concurrency": concurrency, "requests_per_s": round(result.rps),
                             "tokens_per_s": round((_server_tokens(url) - tokens0) / elapsed),
                             "p50_ms": round(_pct(result.latencies, 50) * 1000, 2),
                             "p99_ms": round(_pct(result.latencies, 99) * 1000, 2),
                             "errors": result.errors}, rows)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()


def _server_tokens(url: str) -> float:
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("maas_inference_tokens_total "):
                return float(line.split()[1])
    return 0.0


def _pct(values: list[float], q: float) -> float:
    from inference_image.bench.common import pct

    return pct(values, q)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inference_image.bench gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    p.add_argument("--no-serving", dest="serving", action="store_false")
    p.add_argument("--json", type=Path)
    p.add_argument("--on-cpu", action="store_true",
                   help="run every step on the CPU provider with small requests (checks this "
                        "script where there is no GPU; the numbers mean nothing)")
    args = p.parse_args(argv)

    global PROVIDER, SIZES
    if args.on_cpu:
        PROVIDER, SIZES = "CPUExecutionProvider", (1, 32, 128)
        os.environ["MAAS_PROVIDERS"] = "cpu"
    else:
        reason = _gpu_present()
        if reason:
            print(f"[gpu] skipped: {reason}")
            return 0
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    mdir = model_dir().resolve()
    if not (mdir / "model.onnx").is_file():
        print(f"[gpu] no model at {mdir}; run python -m inference_image.export")
        return 1
    _machine(rows)
    server = _honesty(mdir, rows)

    from inference_image.tokenizer import load_tokenizer

    tok = load_tokenizer(mdir / "tokenizer.json", truncate_at=256)
    texts = {n: sentences(n, seed=100 + n) for n in SIZES}
    workloads = {n: [e.ids for e in tok.encode_batch(batch)] for n, batch in texts.items()}
    for n, ids in workloads.items():
        tokens = sum(map(len, ids))
        _say("workload", {"inputs_per_request": n, "tokens": tokens,
                          "mean_tokens_per_input": round(tokens / n, 1),
                          "gflop_per_request": round(sum(model_flops_per_token(len(x))
                                                         for x in ids) / 1e9, 3)}, rows)

    st, ref = None, {}
    try:
        import torch
        from sentence_transformers import SentenceTransformer

        from inference_image.export import source_dir

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        device = "cuda" if torch.cuda.is_available() and not args.on_cpu else "cpu"
        st = SentenceTransformer(str(source_dir()), device=device)
        ref = {n: st.encode(batch, batch_size=256, normalize_embeddings=True)
               for n, batch in texts.items()}
        if device != "cuda":
            st = None
            _say("peer", {"skipped": "torch has no CUDA: no sentence-transformers fp16 row"},
                 rows)
    except ImportError as exc:
        _say("peer", {"skipped": f"{exc}; the reference is ONNX Runtime on the CPU"}, rows)
    if not ref:
        import onnxruntime as ort

        cpu = ort.InferenceSession(str(mdir / "model.onnx"), providers=["CPUExecutionProvider"])
        for n, ids in workloads.items():
            order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
            outs = [cpu.run(["embeddings"], {"input_ids": a, "attention_mask": m})[0]
                    for a, m in _calls(ids)]
            ref[n] = np.empty((len(ids), outs[0].shape[1]), dtype=np.float32)
            ref[n][order] = np.concatenate(outs)

    best = _model_rows(mdir, server, workloads, ref, args, rows)
    if server is not None:
        server.finalize()
    if st is not None:
        _st_rows(st, texts, workloads, best, args, rows)
    if args.serving:
        _serving_rows(mdir, workloads, args, rows)
        from inference_image.bench import null

        null.main(["--seconds", "2", "--formats", "binary"])
    print(f"[gpu] done in {time.perf_counter() - started:.0f} s; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
