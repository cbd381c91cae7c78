"""Offline encode: tokens/s of the exported ONNX model vs SentenceTransformer.encode.

    python -m inference_image.bench offline [--texts 512] [--repeats 2] [--no-int8]

Same texts, same batch size (32), both sorted by length (ST sorts internally; the ONNX path
sorts as the server does), tokenization included on both sides; the best of ``--repeats``
runs. Also the cosine between the two outputs (they must agree to >= 0.9999), and the int8
dynamic-quantised ONNX variant (per-channel int8 MatMul weights; acceptable only if its
min cosine is >= 0.99).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from inference_image import MAX_TOKENS
from inference_image.bench.common import ensure_model, sentences
from inference_image.validation import cosine_rows, pad_batch, validation_texts


def corpus(n: int) -> list[str]:
    """A mix: short sentences, paragraphs, and long documents (truncated at 256)."""
    rng = random.Random(11)
    base = sentences(n)
    out = []
    for i, s in enumerate(base):
        k = rng.choice((1, 1, 1, 2, 4, 8, 16))  # sentence count: 6 .. ~400 tokens
        out.append(" ".join([s] + [base[(i + j * 31) % n] for j in range(1, k)]))
    return out


def onnx_encode(session, tok, texts: list[str], batch: int) -> np.ndarray:
    ids = [e.ids for e in tok.encode_batch(texts)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.empty((len(ids), 384), dtype=np.float32)
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        input_ids, mask = pad_batch([ids[i] for i in idx])
        out[idx] = session.run(["embeddings"], {"input_ids": input_ids,
                                                "attention_mask": mask})[0]
    return out


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _best(fn, repeats: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m inference_image.bench offline",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--texts", type=int, default=512)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    from inference_image.export import source_dir
    from inference_image.tokenizer import load_tokenizer

    model_dir = ensure_model()
    tok = load_tokenizer(model_dir / "tokenizer.json", truncate_at=MAX_TOKENS)
    texts = corpus(args.texts)
    texts += validation_texts()
    tokens = sum(len(e.ids) for e in tok.encode_batch(texts))
    print(f"[offline] {len(texts)} texts, {tokens} tokens (mean {tokens / len(texts):.0f}), "
          f"batch {args.batch}, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)

    st = SentenceTransformer(str(source_dir()), device="cpu")
    st.encode(texts[:64], batch_size=args.batch)
    t_st, ref = _best(lambda: st.encode(texts, batch_size=args.batch,
                                        normalize_embeddings=True, convert_to_numpy=True),
                      args.repeats)
    print(f"[offline] sentence-transformers: {tokens / t_st:8.0f} tokens/s ({t_st:.2f}s)",
          flush=True)

    session = _session(model_dir / "model.onnx")
    onnx_encode(session, tok, texts[:64], args.batch)
    t_onnx, emb = _best(lambda: onnx_encode(session, tok, texts, args.batch), args.repeats)
    cos = float(cosine_rows(emb, ref).min())
    print(f"[offline] ONNX Runtime fp32:     {tokens / t_onnx:8.0f} tokens/s ({t_onnx:.2f}s), "
          f"min cosine vs ST {cos:.7f}, speed-up {t_st / t_onnx:.2f}x", flush=True)
    result = {"texts": len(texts), "tokens": tokens, "batch": args.batch,
              "st_tokens_per_s": tokens / t_st, "onnx_tokens_per_s": tokens / t_onnx,
              "onnx_min_cosine": cos, "speedup": t_st / t_onnx}

    if not args.no_int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory() as tmp:
            q = Path(tmp) / "model.int8.onnx"
            quantize_dynamic(str(model_dir / "model.onnx"), str(q), weight_type=QuantType.QInt8,
                             per_channel=True, op_types_to_quantize=["MatMul"])
            qs = _session(q)
            onnx_encode(qs, tok, texts[:64], args.batch)
            t_q, emb_q = _best(lambda: onnx_encode(qs, tok, texts, args.batch), args.repeats)
        cos_q = float(cosine_rows(emb_q, ref).min())
        mean_q = float(cosine_rows(emb_q, ref).mean())
        verdict = "acceptable (>= 0.99)" if cos_q >= 0.99 else "REJECTED (< 0.99)"
        print(f"[offline] ONNX Runtime int8:     {tokens / t_q:8.0f} tokens/s ({t_q:.2f}s), "
              f"min cosine vs ST {cos_q:.5f} (mean {mean_q:.5f}): {verdict}", flush=True)
        result.update(int8_tokens_per_s=tokens / t_q, int8_min_cosine=cos_q,
                      int8_mean_cosine=mean_q)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
