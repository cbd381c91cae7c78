"""GPU benchmark, one command: ONNX Runtime CUDA fp32 / fp16 and TensorRT fp16 vs
sentence-transformers fp16 on the same GPU, plus a dense fp16 matmul ceiling.

    python -m inference_image.bench gpu [--batch 128] [--seq 128] [--seconds 5]

Needs an NVIDIA GPU with onnxruntime-gpu's CUDA libraries (the container image has them) and,
for the sentence-transformers and matmul rows, a CUDA build of torch. Without a GPU it prints
why and exits 0, so it can sit in any script. Every row reports tokens/s on a fixed
[batch, seq] input of real text and its min cosine against sentence-transformers fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from inference_image.bench.common import model_dir, sentences
from inference_image.validation import cosine_rows, pad_batch


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


def _timed(fn, seconds: float) -> float:
    fn()
    fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def _ort_row(name: str, path: Path, providers: list, feeds: dict, tokens: int,
             ref: np.ndarray, seconds: float) -> dict:
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=providers)
        used = sess.get_providers()[0]
        want = providers[0] if isinstance(providers[0], str) else providers[0][0]
        if used != want:
            return {"name": name, "skipped": f"fell back to {used}"}
        out = sess.run(["embeddings"], feeds)[0]
        dt = _timed(lambda: sess.run(["embeddings"], feeds), seconds)
    except Exception as exc:  # noqa: BLE001 - a row that cannot run is reported, not fatal
        return {"name": name, "skipped": f"{type(exc).__name__}: {exc}"[:300]}
    return {"name": name, "tokens_per_s": tokens / dt, "ms_per_batch": dt * 1000,
            "min_cosine": float(cosine_rows(out.astype(np.float32), ref).min())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inference_image.bench gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seq", type=int, default=128, help="tokens per item (text is repeated)")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    reason = _gpu_present()
    if reason:
        print(f"[gpu] skipped: {reason}")
        return 0

    from inference_image.tokenizer import load_tokenizer

    mdir = model_dir().resolve()
    onnx_path = mdir / "model.onnx"
    if not onnx_path.is_file():
        print(f"[gpu] no model at {onnx_path}; run python -m inference_image.export")
        return 1
    tok = load_tokenizer(mdir / "tokenizer.json", truncate_at=args.seq)
    base = sentences(args.batch)
    texts = [" ".join([s] * 40) for s in base]  # long enough to fill --seq after truncation
    ids = [e.ids for e in tok.encode_batch(texts)]
    input_ids, mask = pad_batch(ids)
    feeds = {"input_ids": input_ids, "attention_mask": mask}
    tokens = int(mask.sum())
    rows: list[dict] = []

    # reference: sentence-transformers fp32 (GPU if torch has CUDA, else CPU)
    ref = None
    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        from inference_image.export import source_dir

        device = "cuda" if torch.cuda.is_available() else "cpu"
        st = SentenceTransformer(str(source_dir()), device=device)
        st.max_seq_length = args.seq
        ref = st.encode(texts, batch_size=args.batch, normalize_embeddings=True)
        if device == "cuda":
            st.half()
            out16 = st.encode(texts, batch_size=args.batch, normalize_embeddings=True)
            dt = _timed(lambda: st.encode(texts, batch_size=args.batch), args.seconds)
            rows.append({"name": "sentence-transformers fp16 (torch CUDA)",
                         "tokens_per_s": tokens / dt, "ms_per_batch": dt * 1000,
                         "min_cosine": float(cosine_rows(out16, ref).min())})
            n = 8192
            a = torch.randn(n, n, device="cuda", dtype=torch.float16)
            b = torch.randn(n, n, device="cuda", dtype=torch.float16)

            def mm() -> None:
                a @ b
                torch.cuda.synchronize()

            dt = _timed(mm, 2.0)
            rows.append({"name": "ceiling: fp16 matmul 8192^3", "tflops": 2 * n**3 / dt / 1e12,
                         "model_tokens_per_s_at_ceiling":
                             2 * n**3 / dt / (2 * 6 * (4 * 384 * 384 + 2 * 384 * 1536 +
                                                       2 * args.seq * 384))})
        else:
            rows.append({"name": "sentence-transformers fp16", "skipped": "torch has no CUDA"})
    except ImportError as exc:
        rows.append({"name": "sentence-transformers", "skipped": str(exc)})
    if ref is None:  # no torch here: compare with the ONNX model on the CPU
        import onnxruntime as ort

        ref = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(
            ["embeddings"], feeds)[0]

    rows.append(_ort_row("ONNX Runtime CUDA fp32", onnx_path, ["CUDAExecutionProvider"],
                         feeds, tokens, ref, args.seconds))
    with tempfile.TemporaryDirectory() as tmp:
        fp16 = Path(tmp) / "model.fp16.onnx"
        try:
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            model16 = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
            onnx.save(model16, str(fp16))
            rows.append(_ort_row("ONNX Runtime CUDA fp16", fp16, ["CUDAExecutionProvider"],
                                 feeds, tokens, ref, args.seconds))
        except Exception as exc:  # noqa: BLE001
            rows.append({"name": "ONNX Runtime CUDA fp16", "skipped": str(exc)[:300]})
        trt = ("TensorrtExecutionProvider", {
            "trt_fp16_enable": True, "trt_engine_cache_enable": True,
            "trt_engine_cache_path": tmp,
            "trt_profile_min_shapes": "input_ids:1x1,attention_mask:1x1",
            "trt_profile_opt_shapes": f"input_ids:{args.batch}x{input_ids.shape[1]},"
                                      f"attention_mask:{args.batch}x{input_ids.shape[1]}",
            "trt_profile_max_shapes": f"input_ids:{args.batch}x256,"
                                      f"attention_mask:{args.batch}x256"})
        rows.append(_ort_row("ONNX Runtime TensorRT fp16", onnx_path, [trt], feeds, tokens,
                             ref, args.seconds))

    print(f"[gpu] batch {args.batch} x {input_ids.shape[1]} tokens ({tokens} real)")
    for r in rows:
        print("[gpu] " + json.dumps(r))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
